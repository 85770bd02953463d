package llama

import "github.com/fungtrain/fungtrain/mlx"

// A batch KV cache holds the keys and values of many sequences in one
// (rows, kvHeads, capacity, headDim) buffer per layer. Every row writes its
// next position into the same column, so the sequences are right-aligned:
// row r's positions fill columns pad[r] .. length-1 and the columns before
// pad[r] are padding that the attention mask hides. One buffer per layer
// keeps a decode step at one graph per layer however many rows there are
// (what mlx-lm's BatchKVCache does too); the price is a copy of the cache
// when rows join or leave, which happens between decode steps.

// batchCache is one layer's keys and values for the rows of a batch.
type batchCache struct {
	keys, values *mlx.Array // (rows, kvHeads, capacity, headDim); nil when empty
}

// batchLayout is what every layer's cache shares: the filled length and each
// row's left padding.
type batchLayout struct {
	length int   // columns filled (padding included)
	pads   []int // per row: columns before its first position
}

// positions returns each row's position of the next column (its RoPE
// offset).
func (l *batchLayout) positions() []int32 {
	out := make([]int32, len(l.pads))
	for i, p := range l.pads {
		out[i] = int32(l.length - p)
	}
	return out
}

// padded reports whether any row has padding (then attention needs a mask).
func (l *batchLayout) padded() bool {
	for _, p := range l.pads {
		if p > 0 {
			return true
		}
	}
	return false
}

// mask returns the attention mask of a one-token step: (rows, 1, 1,
// length+1) booleans, true where row r may attend (column >= pad[r]).
func (l *batchLayout) mask() *mlx.Array {
	n := l.length + 1
	m := make([]bool, len(l.pads)*n)
	for r, p := range l.pads {
		for j := p; j < n; j++ {
			m[r*n+j] = true
		}
	}
	return mlx.FromBools(m, len(l.pads), 1, 1, n)
}

// update writes the step's keys and values (rows, kvHeads, 1, headDim) into
// column length and returns the keys and values of columns 0..length.
func (c *batchCache) update(k, v *mlx.Array, length int) (*mlx.Array, *mlx.Array) {
	B, H, L, D := k.Dim(0), k.Dim(1), k.Dim(2), k.Dim(3)
	Dv := v.Dim(3)
	if c.keys == nil || length+L > c.keys.Dim(2) {
		grow := ((L + cacheStep - 1) / cacheStep) * cacheStep
		nk := mlx.Zeros(k.Dtype(), B, H, grow, D)
		nv := mlx.Zeros(v.Dtype(), B, H, grow, Dv)
		if c.keys != nil && length > 0 {
			nk = mlx.Concatenate([]*mlx.Array{mlx.SliceAxis(c.keys, 2, 0, length), nk}, 2)
			nv = mlx.Concatenate([]*mlx.Array{mlx.SliceAxis(c.values, 2, 0, length), nv}, 2)
		}
		c.replace(nk, nv)
	}
	end := length + L
	nk := mlx.SliceUpdate(c.keys, k, []int{0, 0, length, 0}, []int{B, H, end, D}, nil)
	nv := mlx.SliceUpdate(c.values, v, []int{0, 0, length, 0}, []int{B, H, end, Dv}, nil)
	// Freeing the old buffers before evaluation lets MLX update in place.
	c.replace(nk, nv)
	return mlx.SliceAxis(c.keys, 2, 0, end), mlx.SliceAxis(c.values, 2, 0, end)
}

func (c *batchCache) replace(k, v *mlx.Array) {
	mlx.Detach(k, v)
	c.keys.Free()
	c.values.Free()
	c.keys, c.values = k, v
}

func (c *batchCache) free() { c.replace(nil, nil) }

// rowPart is a block of rows to assemble into a new cache: the first n
// columns of keys and values (nil when n is 0), placed after pad columns of
// padding.
type rowPart struct {
	keys, values *mlx.Array
	rows, n, pad int
}

// assemble builds a cache of length columns from parts stacked along the
// rows, with room for one more step. kvHeads, headDim and dt describe the
// buffers.
func assemble(parts []rowPart, length int, dt mlx.Dtype, kvHeads, headDim, valueDim int) (*mlx.Array, *mlx.Array) {
	capacity := ((length + 1 + cacheStep - 1) / cacheStep) * cacheStep
	build := func(pick func(rowPart) *mlx.Array, dim int) *mlx.Array {
		var rows []*mlx.Array
		for _, p := range parts {
			var cols []*mlx.Array
			if p.pad > 0 {
				cols = append(cols, mlx.Zeros(dt, p.rows, kvHeads, p.pad, dim))
			}
			if p.n > 0 {
				cols = append(cols, mlx.SliceAxis(pick(p), 2, 0, p.n))
			}
			if tail := capacity - p.pad - p.n; tail > 0 {
				cols = append(cols, mlx.Zeros(dt, p.rows, kvHeads, tail, dim))
			}
			rows = append(rows, mlx.Concatenate(cols, 2))
		}
		if len(rows) == 1 {
			return rows[0]
		}
		return mlx.Concatenate(rows, 0)
	}
	k := build(func(p rowPart) *mlx.Array { return p.keys }, headDim)
	v := build(func(p rowPart) *mlx.Array { return p.values }, valueDim)
	return k, v
}

package llama

import "github.com/fungtrain/fungtrain/mlx"

// cacheStep is how many positions a KV cache grows by at a time.
const cacheStep = 256

// KVCache holds one layer's keys and values for generation. Its buffers
// grow in steps of cacheStep positions and are written in place with
// slice updates; the arrays are long-lived and freed by Free.
type KVCache struct {
	Offset int // positions filled
	keys   *mlx.Array
	values *mlx.Array

	static bool       // fixed capacity (NewStaticCaches)
	Pos    *mlx.Array // static caches: the int32 position this step writes first
}

// NewCaches returns one empty cache per layer.
func (m *Model) NewCaches() []*KVCache {
	cs := make([]*KVCache, len(m.Layers))
	for i := range cs {
		cs[i] = &KVCache{}
	}
	return cs
}

// FreeCaches frees every cache.
func FreeCaches(cs []*KVCache) {
	for _, c := range cs {
		c.Free()
	}
}

// Free releases the cache buffers.
func (c *KVCache) Free() {
	c.keys.Free()
	c.values.Free()
	c.Pos.Free()
	c.keys, c.values, c.Pos, c.Offset = nil, nil, nil, 0
}

// Update appends k and v (B, kvHeads, L, D) and returns the keys and values
// of all positions so far.
func (c *KVCache) Update(k, v *mlx.Array) (*mlx.Array, *mlx.Array) {
	B, H, L, D := k.Dim(0), k.Dim(1), k.Dim(2), k.Dim(3)
	Dv := v.Dim(3)
	prev := c.Offset
	if c.keys == nil || prev+L > c.keys.Dim(2) {
		grow := ((L + cacheStep - 1) / cacheStep) * cacheStep
		nk := mlx.Zeros(k.Dtype(), B, H, grow, D)
		nv := mlx.Zeros(v.Dtype(), B, H, grow, Dv)
		if c.keys != nil {
			nk = mlx.Concatenate([]*mlx.Array{mlx.SliceAxis(c.keys, 2, 0, prev), nk}, 2)
			nv = mlx.Concatenate([]*mlx.Array{mlx.SliceAxis(c.values, 2, 0, prev), nv}, 2)
		}
		c.replace(nk, nv)
	}
	c.Offset += L
	nk := mlx.SliceUpdate(c.keys, k, []int{0, 0, prev, 0}, []int{B, H, c.Offset, D}, nil)
	nv := mlx.SliceUpdate(c.values, v, []int{0, 0, prev, 0}, []int{B, H, c.Offset, Dv}, nil)
	// Freeing the old buffers before evaluation lets MLX update in place.
	c.replace(nk, nv)
	return mlx.SliceAxis(c.keys, 2, 0, c.Offset), mlx.SliceAxis(c.values, 2, 0, c.Offset)
}

func (c *KVCache) replace(k, v *mlx.Array) {
	mlx.Detach(k, v)
	c.keys.Free()
	c.values.Free()
	c.keys, c.values = k, v
}

// State returns the cache buffers, to evaluate them after a step.
func (c *KVCache) State() []*mlx.Array {
	if c.keys == nil {
		return nil
	}
	return []*mlx.Array{c.keys, c.values}
}

// Fixed-capacity caches. NewStaticCaches allocates every position up front;
// a step writes its keys and values at Pos, an int32 scalar array, and
// attention reads all positions under a mask of those filled. Every decode
// step then has the same shapes and inputs, so it can be one compiled call
// (see Generate) instead of a graph of ~30 ops per layer built from Go.

// NewStaticCaches returns one fixed-capacity cache per layer, for batch 1,
// in dtype dt.
func (m *Model) NewStaticCaches(capacity int, dt mlx.Dtype) []*KVCache {
	c := m.Config
	cs := make([]*KVCache, len(m.Layers))
	for i := range cs {
		k := mlx.Zeros(dt, 1, c.NumKVHeads, capacity, c.HeadDim)
		v := mlx.Zeros(dt, 1, c.NumKVHeads, capacity, c.HeadDim)
		mlx.Detach(k, v)
		cs[i] = &KVCache{keys: k, values: v, static: true}
	}
	return cs
}

// writeAt stores k and v (1, kvHeads, L, D) of a fixed-capacity cache at
// positions Pos.. and returns the whole buffers, which replace the old ones
// (freed before evaluation, so MLX can update in place).
func (c *KVCache) writeAt(k, v *mlx.Array) (*mlx.Array, *mlx.Array) {
	start := mlx.Reshape(c.Pos, 1)
	c.replace(mlx.SliceUpdateAt(c.keys, k, start, []int{2}), mlx.SliceUpdateAt(c.values, v, start, []int{2}))
	return c.keys, c.values
}

// visible is the (L, capacity) mask of the positions each of L new queries
// at Pos.. may attend to: every filled position up to its own.
func (c *KVCache) visible(L int) *mlx.Array {
	capacity := c.keys.Dim(2)
	cols := mlx.Reshape(mlx.Arange(0, float64(capacity), 1, mlx.Int32), 1, capacity)
	rows := mlx.Reshape(mlx.Add(mlx.Arange(0, float64(L), 1, mlx.Int32), c.Pos), L, 1)
	return mlx.LessEqual(cols, rows)
}


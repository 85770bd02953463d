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

	// With copyOnWrite, the buffers the last update wrote stay referenced
	// until the next update, so that MLX never writes into them in place
	// (DecodeSettings.CopyCache).
	copyOnWrite          bool
	prevKeys, prevValues *mlx.Array
}

// NewCaches returns one empty cache per layer.
func (m *Model) NewCaches() []*KVCache {
	copyOnWrite := m.decode != nil && m.decode.settings.CopyCache
	cs := make([]*KVCache, len(m.Layers))
	for i := range cs {
		cs[i] = &KVCache{copyOnWrite: copyOnWrite}
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
	for _, a := range []*mlx.Array{c.keys, c.values, c.prevKeys, c.prevValues} {
		a.Free()
	}
	c.keys, c.values, c.prevKeys, c.prevValues, c.Offset = nil, nil, nil, nil, 0
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
	if c.copyOnWrite {
		c.prevKeys.Free()
		c.prevValues.Free()
		c.prevKeys, c.prevValues = c.keys, c.values
		c.keys, c.values = nil, nil
	}
	// Freeing the old buffers before evaluation lets MLX update in place
	// (when no queued work still reads them).
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

package lora

import (
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// trainForward is the model's forward pass as training runs it: the
// embedding, each block, the final norm — the model's own pieces in the
// model's order, so the hidden states equal llama.Model.Hidden's. With
// gradient checkpointing each block is called through a checkpointed
// closure, so its activations are recomputed in the backward pass instead
// of kept. The model knows nothing of this; lora wraps the blocks from
// outside.
type trainForward struct {
	model  *llama.Model
	layers [][]*Layer     // each block's adapters, in a fixed order
	ckpt   []*mlx.Closure // one per block with checkpointing, else nil
}

func newTrainForward(m *llama.Model, a *Adapters, checkpoint bool) *trainForward {
	f := &trainForward{model: m, layers: a.byBlock(len(m.Layers))}
	if checkpoint {
		for i := range m.Layers {
			f.ckpt = append(f.ckpt, mlx.NewClosure(f.blockFunc(i)))
		}
	}
	return f
}

// checkpointing reports whether blocks are recomputed in the backward pass.
func (f *trainForward) checkpointing() bool { return f.ckpt != nil }

// free releases the checkpoint closures. MLX may call one back in any
// backward pass of a graph that used it: free them only when training is
// over.
func (f *trainForward) free() {
	for _, c := range f.ckpt {
		c.Free()
	}
	f.ckpt = nil
}

// hidden returns the final normed hidden states (B, L, D) of ids (B, L).
func (f *trainForward) hidden(ids *mlx.Array) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	h := f.model.EmbedTokens(ids)
	for i, b := range f.model.Layers {
		if f.ckpt == nil {
			h = b.Forward(h, nil)
		} else {
			h = f.checkpointed(i, h)
		}
	}
	return s.Keep(f.model.FinalNorm(h))
}

// checkpointed runs block i on x through its checkpoint closure. The
// block's adapter parameters are passed through as inputs so their
// gradients survive the recomputation, and so are their dropout keys when
// the step passed them in, so the recomputation draws the same masks.
func (f *trainForward) checkpointed(i int, x *mlx.Array) *mlx.Array {
	a := blockArgs{x: x}
	for _, l := range f.layers[i] {
		a.params = append(a.params, l.Params()...)
		if l.key != nil {
			a.keys = append(a.keys, l.key)
		}
	}
	if len(a.keys) != len(f.layers[i]) {
		a.keys = nil // all or none: without keys, each layer derives its own from the seed
	}
	out, err := f.ckpt[i].Checkpoint(packBlock(a)...)
	if err != nil {
		return mlx.ErrorArray(err)
	}
	return out[0]
}

// blockFunc is block i's forward pass with its adapters' parameters (and
// keys) taken from the inputs (see packBlock).
func (f *trainForward) blockFunc(i int) mlx.Func {
	return func(in []*mlx.Array) ([]*mlx.Array, error) {
		layers := f.layers[i]
		a, err := unpackBlock(in, len(layers))
		if err != nil {
			return nil, err
		}
		for k, l := range layers {
			old, oldKey := l.Params(), l.key
			l.SetParams(a.params[2*k : 2*k+2])
			if a.keys != nil {
				l.key = a.keys[k]
			}
			defer func() { l.SetParams(old); l.key = oldKey }()
		}
		return []*mlx.Array{f.model.Layers[i].Forward(a.x, nil)}, nil
	}
}

package llama

import "github.com/fungtrain/fungtrain/mlx"

// The forward pass of one decode step of a batch: each row is one token of
// a different sequence at its own position, over the batch KV cache. It
// mirrors Attention.Forward and Block.Forward (model.go) when decoding,
// with the model's decode plan (decode.go: fused q/k/v and gate/up,
// transposed weights, compiled SwiGLU), per-row RoPE offsets when rows
// are at different positions, and a padding mask.

// stepInputs are the per-step arrays every layer shares.
type stepInputs struct {
	// offsets (rows,) int32 holds each row's position when they differ
	// (some row is padded); otherwise it is nil and every row is at offset.
	offsets *mlx.Array
	offset  int
	mask    *mlx.Array // (rows, 1, 1, length+1) bool, or nil when no row is padded
	length  int        // the column this step writes
}

// rope rotates x (rows, heads, 1, headDim) to each row's position.
func (in stepInputs) rope(x *mlx.Array, r mlx.RoPE) *mlx.Array {
	if in.offsets == nil {
		return mlx.Rope(x, r, in.offset)
	}
	return mlx.RopeOffsets(x, r, in.offsets)
}

// stepLayer is the layer a decode step runs in slot l: an adapter layer
// that no row of the step uses is its base Linear, so that the step can
// take the decode plan's fused and transposed paths.
func stepLayer(l Layer) Layer {
	if ml, ok := l.(*multiLoRA); ok && !ml.selected() {
		return ml.base
	}
	return l
}

func (a *Attention) forwardStep(x *mlx.Array, c *batchCache, in stepInputs) *mlx.Array {
	B, L := x.Dim(0), x.Dim(1)
	H, KV := a.nHeads, a.nKVHeads
	heads := func(y *mlx.Array, n int) *mlx.Array {
		return mlx.Transpose(mlx.Reshape(y, B, L, n, a.headDim), 0, 2, 1, 3)
	}
	var q, k, v *mlx.Array
	if Q, K, V := stepLayer(a.Q), stepLayer(a.K), stepLayer(a.V); a.qkv.usable(Q, K, V) {
		// One matmul for q, k and v, one RoPE for q and k (as project).
		all := heads(a.qkv.forward(x), H+2*KV)
		qk := in.rope(mlx.SliceAxis(all, 1, 0, H+KV), a.rope)
		q, k, v = mlx.SliceAxis(qk, 1, 0, H), mlx.SliceAxis(qk, 1, H, H+KV), mlx.SliceAxis(all, 1, H+KV, H+2*KV)
	} else {
		q = in.rope(heads(Q.Forward(x), H), a.rope)
		k = in.rope(heads(K.Forward(x), KV), a.rope)
		v = heads(V.Forward(x), KV)
	}
	k, v = c.update(k, v, in.length)
	o := mlx.ScaledDotProductAttention(q, k, v, a.scale, mlx.MaskNone, in.mask)
	o = mlx.Reshape(mlx.Transpose(o, 0, 2, 1, 3), B, L, H*a.headDim)
	return stepLayer(a.O).Forward(o)
}

// forwardStep applies the MLP with the decode plan (as MLP.forward),
// looking through adapter layers no row uses.
func (m *MLP) forwardStep(x *mlx.Array, plan *decodePlan) *mlx.Array {
	gate, up, down := stepLayer(m.Gate), stepLayer(m.Up), stepLayer(m.Down)
	if m.gateUp.usable(gate, up) {
		gu := m.gateUp.forward(x)
		last, n := gu.Ndim()-1, m.gateUp.splits[0]
		return down.Forward(plan.swiGLU(mlx.SliceAxis(gu, last, 0, n), mlx.SliceAxis(gu, last, n, gu.Dim(last))))
	}
	return down.Forward(plan.swiGLU(gate.Forward(x), up.Forward(x)))
}

func (b *Block) forwardStep(x *mlx.Array, c *batchCache, in stepInputs) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	h := mlx.Add(x, b.Attn.forwardStep(mlx.RMSNorm(x, b.InputNorm, b.eps), c, in))
	return s.Keep(mlx.Add(h, b.MLP.forwardStep(mlx.RMSNorm(h, b.PostNorm, b.eps), b.decode)))
}

// stepLogits runs one decode step for ids (rows, 1) and returns the
// next-token logits (rows, 1, vocab).
func (m *Model) stepLogits(ids *mlx.Array, caches []*batchCache, in stepInputs) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	h := m.EmbedTokens(ids)
	for i, b := range m.Layers {
		h = b.forwardStep(h, caches[i], in)
	}
	return s.Keep(m.Logits(m.FinalNorm(h)))
}

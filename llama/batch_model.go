package llama

import "github.com/fungtrain/fungtrain/mlx"

// The forward pass of one decode step of a batch: each row is one token of
// a different sequence at its own position, over the batch KV cache. It
// mirrors Attention.Forward and Block.Forward (model.go) with per-row RoPE
// offsets and a padding mask.

// stepInputs are the per-step arrays every layer shares.
type stepInputs struct {
	offsets *mlx.Array // (rows,) int32: each row's position
	mask    *mlx.Array // (rows, 1, 1, length+1) bool, or nil when no row is padded
	length  int        // the column this step writes
}

func (a *Attention) forwardStep(x *mlx.Array, c *batchCache, in stepInputs) *mlx.Array {
	B, L := x.Dim(0), x.Dim(1)
	heads := func(y *mlx.Array, n int) *mlx.Array {
		return mlx.Transpose(mlx.Reshape(y, B, L, n, a.headDim), 0, 2, 1, 3)
	}
	q := heads(a.Q.Forward(x), a.nHeads)
	k := heads(a.K.Forward(x), a.nKVHeads)
	v := heads(a.V.Forward(x), a.nKVHeads)
	q = mlx.RopeOffsets(q, a.rope, in.offsets)
	k = mlx.RopeOffsets(k, a.rope, in.offsets)
	k, v = c.update(k, v, in.length)
	o := mlx.ScaledDotProductAttention(q, k, v, a.scale, mlx.MaskNone, in.mask)
	o = mlx.Reshape(mlx.Transpose(o, 0, 2, 1, 3), B, L, a.nHeads*a.headDim)
	return a.O.Forward(o)
}

func (b *Block) forwardStep(x *mlx.Array, c *batchCache, in stepInputs) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	h := mlx.Add(x, b.Attn.forwardStep(mlx.RMSNorm(x, b.InputNorm, b.eps), c, in))
	return s.Keep(mlx.Add(h, b.MLP.Forward(mlx.RMSNorm(h, b.PostNorm, b.eps))))
}

// stepLogits runs one decode step for ids (rows, 1) and returns the
// next-token logits (rows, vocab).
func (m *Model) stepLogits(ids *mlx.Array, caches []*batchCache, in stepInputs) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	h := m.EmbedTokens(ids)
	for i, b := range m.Layers {
		h = b.forwardStep(h, caches[i], in)
	}
	h = mlx.RMSNorm(h, m.Norm, float32(m.Config.RMSNormEps))
	logits := m.Logits(h)
	return s.Keep(mlx.Reshape(logits, logits.Dim(0), logits.Dim(2)))
}

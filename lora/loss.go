package lora

import (
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// The loss chunk (training.loss_chunk) is how many positions one chunk of
// the cross-entropy covers; 0 computes it over the whole sequence at once.
// Chunks of 256 positions (131 MB of float32 logits with a 128k vocabulary)
// run the LM head and the loss under gradient checkpointing, so the whole
// logits never exist in the backward pass: on a 64k-vocabulary model this
// cut the step's peak by a third — but only with training.compile off;
// with the compiled step the peak stays (see docs/BENCHMARKS.md), so the
// default is 0.

// chunkedCE computes Σ weight·(logsumexp(logits) - logit[target]) in
// float32 without ever holding the whole (L, vocab) logits: each chunk of
// positions runs the LM head and the loss under gradient checkpointing, so
// its logits exist only while that chunk is computed, forward or backward.
type chunkedCE struct {
	model   *llama.Model
	closure *mlx.Closure
	chunk   int // 0: whole sequence, no checkpoint
}

func newChunkedCE(m *llama.Model, chunk int) *chunkedCE {
	c := &chunkedCE{model: m, chunk: chunk}
	c.closure = mlx.NewClosure(func(in []*mlx.Array) ([]*mlx.Array, error) {
		return []*mlx.Array{c.chunkSum(in[0], in[1], in[2])}, nil
	})
	return c
}

func (c *chunkedCE) free() { c.closure.Free() }

// chunkSum is the weighted cross-entropy sum of one chunk of hidden states,
// through MLX's fused cross-entropy on float32 logits: one kernel forward
// and one backward instead of a logsumexp, a gather and their gradients.
func (c *chunkedCE) chunkSum(h, targets, weights *mlx.Array) *mlx.Array {
	logits := mlx.AsType(c.model.Logits(h), mlx.Float32)
	// Targets and weights are data: the checkpoint's recomputation asks for
	// gradients of every input, and integer indices have none.
	targets, weights = mlx.StopGradient(targets), mlx.StopGradient(weights)
	return mlx.Sum(mlx.Multiply(mlx.CrossEntropy(logits, targets), weights), false)
}

// sum returns the loss sum for hidden states h (B, L, D). With grad false
// (evaluation) it skips checkpointing.
func (c *chunkedCE) sum(h, targets, weights *mlx.Array, grad bool) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	L := h.Dim(1)
	chunk := c.chunk
	if chunk == 0 {
		chunk, grad = L, false
	}
	var total *mlx.Array
	for start := 0; start < L; start += chunk {
		end := min(start+chunk, L)
		hc := mlx.SliceAxis(h, 1, start, end)
		tc := mlx.SliceAxis(targets, 1, start, end)
		wc := mlx.SliceAxis(weights, 1, start, end)
		var part *mlx.Array
		if grad {
			out, err := c.closure.Checkpoint(hc, tc, wc)
			if err != nil {
				return mlx.ErrorArray(err)
			}
			part = out[0]
		} else {
			part = c.chunkSum(hc, tc, wc)
		}
		if total == nil {
			total = part
		} else {
			total = mlx.Add(total, part)
		}
	}
	return s.Keep(total)
}

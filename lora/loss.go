package lora

import (
	"math"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// The training loss is Σ w·(logsumexp(z) - z[target]) over positions, with
// z = head(h) the logits of the final hidden states h. With a 128k
// vocabulary z is the largest thing in a training step: 0.5 GB of bf16 per
// 1024 positions, and autodiff keeps it, its float32 copy and their
// gradients alive between the forward and the backward pass (measured:
// 2.6 MB per position on the H100).
//
// fusedCE never holds z. Its forward pass works through the positions a
// chunk at a time and computes, for each chunk, both the loss and its
// gradient with respect to h,
//
//	∂loss/∂h = (w·(softmax(z) - onehot(target))) · W      (W: the head)
//
// then drops the chunk's logits. The backward pass only scales the stored
// gradient (B, L, D) — 1/400 of the logits' size — by the cotangent. The
// head is frozen, so nothing else needs a gradient. The arithmetic is the
// one autodiff does (MLX's cross-entropy kernel and the head's own vjp),
// in the same dtypes.

// evalLossChunk bounds evaluation's logits to this many positions at a time.
const evalLossChunk = 1024

// fusedCE is the LM head and the weighted cross-entropy as one function
// with a hand-written backward pass (see above).
type fusedCE struct {
	model  *llama.Model
	chunk  int  // positions per chunk; 0: all at once
	upcast bool // cast half-precision logits to float32 first (see crossEntropy)
	fn     *mlx.CustomVJP
}

// newFusedCE returns the loss of m in chunks of chunk positions, with its
// custom gradient when grad is set. Call it on the MLX thread.
func newFusedCE(m *llama.Model, chunk int, grad bool) *fusedCE {
	c := &fusedCE{model: m, chunk: chunk, upcast: !crossEntropyExactOnHalf()}
	if grad {
		c.fn = mlx.NewCustomVJP(3, c.forward, c.backward)
	}
	return c
}

func (c *fusedCE) free() {
	if c.fn != nil {
		c.fn.Free()
	}
}

// sumWithGrad returns Σ w·CE for hidden states h (B, L, D), targets and
// weights (B, L), differentiable with respect to h.
func (c *fusedCE) sumWithGrad(h, targets, weights *mlx.Array) *mlx.Array {
	out, err := c.fn.Call(h, targets, weights)
	if err != nil {
		return mlx.ErrorArray(err)
	}
	return out[0]
}

// forward returns the loss sum and its gradient with respect to h. Each
// chunk becomes one (n, D+1) float32 block — its positions' gradients and
// their losses side by side — so a chunk's loss and gradient come out of
// one array and its logits are consumed by one graph. (MLX still orders
// independent chunks breadth-first, up to MLX_BFS_MAX_WIDTH at a time; see
// docs/BENCHMARKS.md.)
func (c *fusedCE) forward(in []*mlx.Array) ([]*mlx.Array, error) {
	h, targets, weights := in[0], in[1], in[2]
	shape := h.Shape()
	n, d := shape[0]*shape[1], shape[2]
	h2, t2, w2 := mlx.Reshape(h, n, d), mlx.Reshape(targets, n), mlx.Reshape(weights, n)
	var blocks []*mlx.Array
	for start, size := range c.chunks(n) {
		hc := mlx.SliceAxis(h2, 0, start, start+size)
		tc := mlx.SliceAxis(t2, 0, start, start+size)
		wc := mlx.SliceAxis(w2, 0, start, start+size)
		loss, grad, err := c.chunkLossAndGrad(hc, tc, wc)
		if err != nil {
			return nil, err
		}
		blocks = append(blocks, mlx.Concatenate([]*mlx.Array{
			mlx.AsType(grad, mlx.Float32), mlx.Reshape(loss, size, 1)}, 1))
	}
	all := blocks[0]
	if len(blocks) > 1 {
		all = mlx.Concatenate(blocks, 0)
	}
	grad := mlx.AsType(mlx.Reshape(mlx.SliceAxis(all, 1, 0, d), shape...), h.Dtype())
	sum := mlx.Sum(mlx.SliceAxis(all, 1, d, d+1), false)
	return []*mlx.Array{sum, grad}, nil
}

// backward scales the stored gradient by the loss's cotangent. The
// gradient output is not itself differentiable, and targets and weights
// are data: their cotangents are zeros that MLX never evaluates.
func (c *fusedCE) backward(primals, cotangents, outputs []*mlx.Array) ([]*mlx.Array, error) {
	h, grad := primals[0], outputs[1]
	dh := mlx.Multiply(grad, mlx.AsType(cotangents[0], h.Dtype()))
	return []*mlx.Array{dh, zerosLike(primals[1]), zerosLike(primals[2])}, nil
}

// chunkLossAndGrad returns the per-position losses w·CE (n) of one chunk
// of hidden states hc (n, D) and their sum's gradient with respect to hc.
func (c *fusedCE) chunkLossAndGrad(hc, tc, wc *mlx.Array) (loss, grad *mlx.Array, err error) {
	f := func(in []*mlx.Array) ([]*mlx.Array, error) {
		return []*mlx.Array{mlx.Multiply(c.crossEntropy(in[0], tc), wc)}, nil
	}
	outs, vjps, err := mlx.Vjp(f, []*mlx.Array{hc}, []*mlx.Array{mlx.Ones(mlx.Float32, wc.Shape()...)})
	if err != nil {
		return nil, nil, err
	}
	return outs[0], vjps[0], nil
}

// crossEntropy is the float32 cross-entropy of the logits of h against
// targets. MLX's fused kernel (on the GPU) reads bf16/fp16 logits and
// accumulates in float32 itself, so they need no float32 copy; its
// fallback (on the CPU) computes in the logits' dtype, so there they are
// cast first.
func (c *fusedCE) crossEntropy(h, targets *mlx.Array) *mlx.Array {
	logits := c.model.Logits(h)
	if c.upcast && logits.Dtype() != mlx.Float32 {
		logits = mlx.AsType(logits, mlx.Float32)
	}
	return mlx.CrossEntropy(logits, targets)
}

// crossEntropyExactOnHalf reports whether MLX's cross-entropy of bf16
// logits is float32-accurate on the default device: logits 8, 8.0625,
// 8.125 and 8.1875 (exact in bf16) against target 0, whose loss bf16
// arithmetic gets wrong by up to 0.03.
func crossEntropyExactOnHalf() bool {
	s := mlx.NewScope()
	defer s.Close()
	z := []float64{8, 8.0625, 8.125, 8.1875}
	se := 0.0
	for _, v := range z {
		se += math.Exp(v - z[3])
	}
	want := z[3] + math.Log(se) - z[0]
	logits := mlx.AsType(mlx.FromFloat32s([]float32{8, 8.0625, 8.125, 8.1875}, 1, 4), mlx.BFloat16)
	got, err := mlx.CrossEntropy(logits, mlx.FromInt32s([]int32{0}, 1)).Item()
	return err == nil && math.Abs(got-want) < 1e-5
}

// sum returns Σ w·CE without gradients (evaluation), chunk by chunk.
func (c *fusedCE) sum(h, targets, weights *mlx.Array) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	shape := h.Shape()
	n, d := shape[0]*shape[1], shape[2]
	h2, t2, w2 := mlx.Reshape(h, n, d), mlx.Reshape(targets, n), mlx.Reshape(weights, n)
	var total *mlx.Array
	for start, size := range c.chunks(n) {
		part := mlx.Sum(mlx.Multiply(c.crossEntropy(mlx.SliceAxis(h2, 0, start, start+size),
			mlx.SliceAxis(t2, 0, start, start+size)), mlx.SliceAxis(w2, 0, start, start+size)), false)
		if total == nil {
			total = part
		} else {
			total = mlx.Add(total, part)
		}
	}
	return s.Keep(total)
}

// chunks yields (start, size) of the chunks covering n positions.
func (c *fusedCE) chunks(n int) func(yield func(int, int) bool) {
	return func(yield func(int, int) bool) {
		step := c.chunk
		if step <= 0 || step > n {
			step = n
		}
		for start := 0; start < n; start += step {
			if !yield(start, min(step, n-start)) {
				return
			}
		}
	}
}

func zerosLike(a *mlx.Array) *mlx.Array { return mlx.Zeros(a.Dtype(), a.Shape()...) }

package lora

import (
	"math"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// Layer adds a low-rank update to a frozen base linear layer:
//
//	y = base(x) + scale · (dropout(x) · A) · B
//
// with A (in, r) drawn from U(±1/√in), B (r, out) zero, both float32, so
// the adapted model starts equal to the base. scale is alpha/rank, as in
// PEFT (mlx-lm stores the scale itself; both are accepted when loading).
type Layer struct {
	Base    *llama.Linear
	A, B    *mlx.Array
	Scale   float32
	Dropout float64

	id       uint64 // distinguishes the dropout masks of different layers
	disabled bool   // run the base layer alone (for base-vs-adapter comparisons)
	training bool
	keySeed  uint64     // set per micro-batch while training
	key      *mlx.Array // this micro-batch's dropout key, when passed in as an input
}

func newLayer(base *llama.Linear, rank int, scale float32, dropout float64, id uint64, seed uint64) *Layer {
	in, out := base.InOut()
	bound := 1 / math.Sqrt(float64(in))
	key := mlx.RandomKey(seed*2654435761 + id)
	defer key.Free()
	a := mlx.Uniform(-bound, bound, mlx.Float32, key, in, rank)
	b := mlx.Zeros(mlx.Float32, rank, out)
	mlx.Detach(a, b)
	return &Layer{Base: base, A: a, B: b, Scale: scale, Dropout: dropout, id: id}
}

// Forward applies the adapted layer. The low-rank product runs in the
// activation dtype (A and B are cast; their gradients reach the float32
// parameters through the cast), as mixed-precision PEFT does: in bf16 this
// keeps no float32 copy of the activations for the backward pass.
func (l *Layer) Forward(x *mlx.Array) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	y := l.Base.Forward(x)
	if l.disabled {
		return s.Keep(y)
	}
	h := x
	if l.training && l.Dropout > 0 {
		key := l.key
		if key == nil {
			key = l.dropoutKey()
		}
		// A key is data: transforms that ask for gradients of every input
		// (checkpointing) must not differentiate the random bits.
		key = mlx.StopGradient(key)
		keep := mlx.Bernoulli(1-l.Dropout, key, x.Shape()...)
		h = mlx.MulScalar(mlx.Where(keep, x, mlx.Scalar(0, x.Dtype())), 1/(1-l.Dropout))
	}
	dt := x.Dtype()
	z := mlx.Matmul(mlx.Matmul(h, mlx.AsType(l.A, dt)), mlx.AsType(l.B, dt))
	return s.Keep(mlx.Add(y, mlx.AsType(mlx.MulScalar(z, float64(l.Scale)), y.Dtype())))
}

// dropoutKey is the key of this layer's dropout mask for the current
// micro-batch.
func (l *Layer) dropoutKey() *mlx.Array { return mlx.RandomKey(l.keySeed*1_000_003 + l.id) }

// Params returns A and B.
func (l *Layer) Params() []*mlx.Array { return []*mlx.Array{l.A, l.B} }

// SetParams installs A and B (used by transforms to trace through them).
func (l *Layer) SetParams(p []*mlx.Array) { l.A, l.B = p[0], p[1] }

// BaseLinear returns the wrapped layer.
func (l *Layer) BaseLinear() *llama.Linear { return l.Base }

// Delta is scale · (A·B)ᵀ, the change to the base weight (out, in).
func (l *Layer) Delta() *mlx.Array {
	return mlx.MulScalar(mlx.Transpose(mlx.Matmul(l.A, l.B)), float64(l.Scale))
}

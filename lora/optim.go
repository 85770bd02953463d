package lora

import (
	"fmt"
	"math"

	"github.com/fungtrain/fungtrain/mlx"
)

// AdamW is Adam with bias correction and decoupled weight decay:
//
//	m ← β1·m + (1-β1)·g        v ← β2·v + (1-β2)·g²
//	m̂ = m/(1-β1ᵗ)              v̂ = v/(1-β2ᵗ)
//	p ← p·(1 - lr·wd) - lr·m̂/(√v̂ + ε)
//
// Without bias correction (optimizer.bias_correction: false) m̂ = m and
// v̂ = v: MLX's optim.Adam and AdamW as mlx-lm uses them (their default).
// Its updates are (1-β1ᵗ)/√(1-β2ᵗ) times the corrected ones: with the
// usual betas 3.2× at the first step, 6.5× around the tenth, 3.2× at the
// hundredth, 1.26× at the thousandth, then 1.
//
// Its moments are long-lived arrays, one pair per parameter.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	BiasCorrection                 bool
	Step                           int // updates applied so far
	M, V                           []*mlx.Array
}

// NewAdamW returns an optimizer with zero moments shaped like params.
func NewAdamW(c OptimizerConfig, params []*mlx.Array) *AdamW {
	o := &AdamW{Beta1: c.Beta1, Beta2: c.Beta2, Eps: c.Eps, WeightDecay: c.WeightDecay, BiasCorrection: c.BiasCorrection}
	for _, p := range params {
		m, v := mlx.Zeros(mlx.Float32, p.Shape()...), mlx.Zeros(mlx.Float32, p.Shape()...)
		mlx.Detach(m, v)
		o.M, o.V = append(o.M, m), append(o.V, v)
	}
	return o
}

// Update returns the new parameters for grads at learning rate lr and
// replaces the moments. Call it inside a scope; the returned arrays and
// the new moments are detached (long-lived), the old moments freed. The
// trainer uses the compiled updateGraph, built from the same adamwStep.
func (o *AdamW) Update(params, grads []*mlx.Array, lr float64) []*mlx.Array {
	stepSize, invC2, decay := o.scalars(o.Step+1, lr)
	out := make([]*mlx.Array, len(params))
	for i, p := range params {
		np, m, v := o.adamwStep(p, grads[i], o.M[i], o.V[i], stepSize, invC2, decay)
		mlx.Detach(m, v, np)
		o.M[i].Free()
		o.V[i].Free()
		o.M[i], o.V[i] = m, v
		out[i] = np
	}
	o.Step++
	return out
}

// scalars are the per-update inputs of adamwStep for update number t
// (1-based): lr/(1-β1ᵗ), 1/(1-β2ᵗ) and 1-lr·wd; lr and 1 without bias
// correction.
func (o *AdamW) scalars(step int, lr float64) (stepSize, invC2, decay *mlx.Array) {
	t := float64(step)
	c1, c2 := 1-math.Pow(o.Beta1, t), 1-math.Pow(o.Beta2, t)
	if !o.BiasCorrection {
		c1, c2 = 1, 1
	}
	return mlx.Scalar(lr/c1, mlx.Float32), mlx.Scalar(1/c2, mlx.Float32), mlx.Scalar(1-lr*o.WeightDecay, mlx.Float32)
}

// adamwStep is the AdamW update of one parameter: new p, m and v.
func (o *AdamW) adamwStep(p, g, m, v, stepSize, invC2, decay *mlx.Array) (*mlx.Array, *mlx.Array, *mlx.Array) {
	m = mlx.Add(mlx.MulScalar(m, o.Beta1), mlx.MulScalar(g, 1-o.Beta1))
	v = mlx.Add(mlx.MulScalar(v, o.Beta2), mlx.MulScalar(mlx.Square(g), 1-o.Beta2))
	step := mlx.Divide(mlx.Multiply(m, stepSize), mlx.AddScalar(mlx.Sqrt(mlx.Multiply(v, invC2)), o.Eps))
	return mlx.Subtract(mlx.Multiply(p, decay), step), m, v
}

// State lists the moments (M then V) for evaluation and checkpoints.
func (o *AdamW) State() []*mlx.Array { return append(append([]*mlx.Array{}, o.M...), o.V...) }

// Free releases the moments.
func (o *AdamW) Free() {
	for _, a := range o.State() {
		a.Free()
	}
}

// globalNorm is the joint L2 norm of arrays.
func globalNorm(grads []*mlx.Array) *mlx.Array {
	var sq *mlx.Array
	for _, g := range grads {
		s := mlx.Sum(mlx.Square(g), false)
		if sq == nil {
			sq = s
		} else {
			sq = mlx.Add(sq, s)
		}
	}
	return mlx.Sqrt(sq)
}

// clipScale is min(1, maxNorm/norm), or 1 where maxNorm is not positive.
func clipScale(norm, maxNorm *mlx.Array) *mlx.Array {
	one := mlx.Scalar(1, mlx.Float32)
	clip := mlx.Minimum(one, mlx.Divide(maxNorm, mlx.AddScalar(norm, 1e-6)))
	return mlx.Where(mlx.Greater(maxNorm, mlx.Scalar(0, mlx.Float32)), clip, one)
}

// ClipByGlobalNorm scales grads so their joint L2 norm is at most maxNorm
// and returns the clipped grads and the norm before clipping.
func ClipByGlobalNorm(grads []*mlx.Array, maxNorm float64) ([]*mlx.Array, *mlx.Array) {
	norm := globalNorm(grads)
	if maxNorm <= 0 {
		return grads, norm
	}
	scale := clipScale(norm, mlx.Scalar(maxNorm, mlx.Float32))
	out := make([]*mlx.Array, len(grads))
	for i, g := range grads {
		out[i] = mlx.Multiply(g, scale)
	}
	return out, norm
}

// LearningRate is the schedule's rate for update number step (0-based) of
// total: linear warmup from 0, then constant or cosine decay to MinLR.
func LearningRate(s ScheduleConfig, peak float64, step, total int) float64 {
	if s.WarmupSteps > 0 && step < s.WarmupSteps {
		return peak * float64(step+1) / float64(s.WarmupSteps)
	}
	if s.Name != "cosine" {
		return peak
	}
	span := total - s.WarmupSteps
	if span <= 1 {
		return peak
	}
	progress := float64(step-s.WarmupSteps) / float64(span-1)
	progress = math.Min(math.Max(progress, 0), 1)
	return s.MinLR + (peak-s.MinLR)*0.5*(1+math.Cos(math.Pi*progress))
}

// updateGraph is the whole optimizer update — global-norm clipping,
// AdamW, and a guard that leaves everything unchanged
// when the gradient norm is not finite — as one graph, which the trainer
// compiles so an update is a handful of fused kernels instead of hundreds
// of small ones.
func (o *AdamW) updateGraph(a updateArgs) updateOut {
	norm := globalNorm(a.grads)
	scale := clipScale(norm, a.scalars.maxNorm)
	finite := mlx.LogicalNot(mlx.LogicalOr(mlx.IsNaN(norm), mlx.IsInf(norm)))
	n := len(a.params)
	u := updateOut{params: make([]*mlx.Array, n), m: make([]*mlx.Array, n), v: make([]*mlx.Array, n), gradNorm: norm, totals: a.totals}
	for i := 0; i < n; i++ {
		p, m, v := o.adamwStep(a.params[i], mlx.Multiply(a.grads[i], scale), a.m[i], a.v[i],
			a.scalars.stepSize, a.scalars.invC2, a.scalars.decay)
		u.params[i] = mlx.Where(finite, p, a.params[i])
		u.m[i] = mlx.Where(finite, m, a.m[i])
		u.v[i] = mlx.Where(finite, v, a.v[i])
	}
	return u
}

// updateScalars are the update's scalar inputs for update number step
// (1-based) at learning rate lr.
func (o *AdamW) updateScalars(step int, lr, maxNorm float64) updateScalars {
	stepSize, invC2, decay := o.scalars(step, lr)
	return updateScalars{stepSize: stepSize, invC2: invC2, decay: decay, maxNorm: mlx.Scalar(maxNorm, mlx.Float32)}
}

// adopt takes the evaluated outputs of an update: it detaches and keeps
// the new params and moments (the caller no longer owns them), replaces
// the moments, counts the step and returns the new params and the
// gradient norm. When the norm is not finite nothing changes, nothing is
// taken and an error is returned.
func (o *AdamW) adopt(u updateOut) ([]*mlx.Array, float64, error) {
	norm, err := u.gradNorm.Item()
	if err != nil {
		return nil, 0, err
	}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return nil, norm, fmt.Errorf("gradient norm is %v", norm)
	}
	mlx.Detach(u.params...)
	mlx.Detach(u.m...)
	mlx.Detach(u.v...)
	for i := range u.m {
		o.M[i].Free()
		o.V[i].Free()
		o.M[i], o.V[i] = u.m[i], u.v[i]
	}
	o.Step++
	return append([]*mlx.Array(nil), u.params...), norm, nil
}

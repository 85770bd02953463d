package lora

import (
	"errors"
	"fmt"
	"math"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// stepper makes optimizer steps. It owns the MLX functions a step runs —
// the loss and its gradients, the optimizer update, and, without
// accumulation, both fused into one call — their argument layout and the
// step queued ahead on the device.
//
// A step is made of three parts, each its own method:
//
//	computeGrads   the loss and gradients of one micro-batch
//	accumulate     the sum of the step's micro-batch gradients
//	applyUpdate    clipping and AdamW, replacing params and moments
//
// Without accumulation (one micro-batch per step) all three are one
// compiled call, and the next step is queued on the device before the
// current one is read (see run).
//
// The seams are where later work goes: several examples of a step as one
// micro-batch change what trainBatches.stepBatches returns; data-parallel
// training all-reduces the accumulated gradients between accumulate and
// applyUpdate (and so takes the unfused path); another optimizer rule is
// AdamW.updateGraph and its scalars.
type stepper struct {
	adapters *Adapters
	opt      *AdamW
	data     *trainBatches
	layout   stepLayout
	forward  *trainForward
	ce       *fusedCE
	seed     uint64  // the run's seed: with the cursor it fixes the dropout masks
	gradClip float64 // global-norm clip; 0: none

	lossAndGrad *mlx.ValueAndGrad // value and gradient of loss
	grads       *mlx.Closure      // lossAndGrad as a closure (compiled when configured)
	update      *mlx.Closure      // updateGraph, compiled
	fused       *mlx.Closure      // grads and update in one call; nil with accumulation

	ahead      *queuedStep // the next step, queued before the current one is read
	queuedUsed int         // queued steps that were used (tests)
}

// stepPlan is where one optimizer step stands in the run.
type stepPlan struct {
	cursor int     // global index of its first micro-batch
	done   int     // updates made before it: it is update number done+1
	lr     float64 // its learning rate
}

// stepResult is one optimizer step's outcome.
type stepResult struct {
	lossSum, counted float64
	tokens           int
	gradNorm         float64
}

// newStepper builds the step's functions for adapters a on model m.
// Call it on the MLX thread.
func newStepper(c TrainingConfig, m *llama.Model, a *Adapters, opt *AdamW, data *trainBatches, gradClip float64) (_ *stepper, err error) {
	s := &stepper{adapters: a, opt: opt, data: data, seed: c.Seed, gradClip: gradClip,
		layout:  stepLayout{params: len(a.Params())},
		forward: newTrainForward(m, a, c.GradCheckpoint),
		ce:      newFusedCE(m, c.LossChunk, true)}
	if a.Settings.Dropout > 0 {
		s.layout.keys = len(a.Names)
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.lossAndGrad, err = mlx.NewValueAndGrad(s.loss, s.layout.gradArgnums()...); err != nil {
		return nil, err
	}
	s.grads = mlx.NewClosure(s.gradsFunc)
	s.update = mlx.NewClosure(s.updateFunc)
	if err = s.update.Compile(false); err != nil {
		return nil, err
	}
	if c.GradAccumulation == 1 {
		s.fused = mlx.NewClosure(s.fusedFunc)
	}
	if c.Compile {
		for _, f := range []*mlx.Closure{s.grads, s.fused} {
			if f == nil {
				continue
			}
			if err = f.Compile(false); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// close frees the stepper's functions and any queued step.
func (s *stepper) close() {
	if s.ahead != nil {
		s.ahead.free()
		s.ahead = nil
	}
	s.fused.Free()
	s.update.Free()
	s.grads.Free()
	s.lossAndGrad.Free()
	s.forward.free()
	s.ce.free()
}

// loss is the function whose gradient training takes (see lossArgs): the
// masked cross-entropy of the micro-batch at the given params, divided by
// the step's count of loss tokens, and its sum.
func (s *stepper) loss(in []*mlx.Array) ([]*mlx.Array, error) {
	a, err := s.layout.unpackLoss(in)
	if err != nil {
		return nil, err
	}
	old := s.adapters.Params()
	s.adapters.SetParams(a.params)
	defer s.adapters.SetParams(old)
	if a.keys != nil {
		s.adapters.setKeys(a.keys)
		defer s.adapters.setKeys(nil)
	}
	b := a.batch
	sum := s.ce.sumWithGrad(s.forward.hidden(b.ids), b.targets, b.weights)
	return s.layout.packLossOut(lossOut{loss: mlx.Divide(sum, b.norm), sum: sum}), nil
}

func (s *stepper) gradsFunc(in []*mlx.Array) ([]*mlx.Array, error) {
	vals, grads, err := s.lossAndGrad.Call(in...)
	if err != nil {
		return nil, err
	}
	lo, err := s.layout.unpackLossOut(vals)
	if err != nil {
		return nil, err
	}
	return s.layout.packGrads(gradOut{lossOut: lo, grads: grads}), nil
}

func (s *stepper) updateFunc(in []*mlx.Array) ([]*mlx.Array, error) {
	a, err := s.layout.unpackUpdate(in)
	if err != nil {
		return nil, err
	}
	return s.layout.packUpdated(s.opt.updateGraph(a)), nil
}

// fusedFunc is a whole step without accumulation as one function, so a
// step is one compiled call and one wait for the device.
func (s *stepper) fusedFunc(in []*mlx.Array) ([]*mlx.Array, error) {
	a, err := s.layout.unpackFused(in)
	if err != nil {
		return nil, err
	}
	vals, grads, err := s.lossAndGrad.Call(s.layout.packLoss(a.loss)...)
	if err != nil {
		return nil, err
	}
	lo, err := s.layout.unpackLossOut(vals)
	if err != nil {
		return nil, err
	}
	u := s.opt.updateGraph(updateArgs{params: a.loss.params, grads: grads, m: a.m, v: a.v, scalars: a.scalars})
	return s.layout.packFusedOut(fusedOut{lossOut: lo, update: u}), nil
}

// lossArgs are the loss function's arguments for micro-batch b at params.
// With dropout on, the adapters' keys of the current micro-batch (see
// Adapters.SetTraining) are arguments too: as inputs, a compiled step
// draws new masks each time.
func (s *stepper) lossArgs(params []*mlx.Array, b microBatch) lossArgs {
	a := lossArgs{params: params, batch: b}
	if s.layout.keys > 0 {
		a.keys = s.adapters.dropoutKeys()
	}
	return a
}

// dropoutSeed seeds the dropout masks of micro-batch cursor: with the
// cursor it fixes all of a run's randomness, so a resumed run repeats it.
func (s *stepper) dropoutSeed(cursor int) uint64 {
	return s.seed*1_000_033 + uint64(cursor)
}

// queues reports whether run queues steps ahead (no accumulation).
func (s *stepper) queues() bool { return s.fused != nil }

// run makes the optimizer step p. Where the stepper queues steps ahead and
// next is not nil, step next is queued on the device before p's results
// are read; it is used by the following call if that call's plan and
// parameters are still the ones it was built from.
func (s *stepper) run(p stepPlan, next *stepPlan) (stepResult, error) {
	if s.fused != nil {
		return s.runFused(p, next)
	}
	return s.runAccumulated(p)
}

// runAccumulated makes step p from its micro-batches one at a time.
func (s *stepper) runAccumulated(p stepPlan) (stepResult, error) {
	batches := s.data.stepBatches(p.cursor)
	res := resultOf(batches)
	if res.counted == 0 {
		return res, errors.New("a training step has no loss tokens")
	}
	var acc []*mlx.Array
	defer func() { freeArrays(acc) }()
	for k, b := range batches {
		var sum float64
		var err error
		if acc, sum, err = s.accumulate(acc, p.cursor+k, b, res.counted); err != nil {
			return res, err
		}
		res.lossSum += sum
	}
	if err := finiteLoss(res); err != nil {
		return res, err
	}
	var err error
	res.gradNorm, err = s.applyUpdate(acc, p)
	return res, err
}

// computeGrads builds the loss and gradients of micro-batch b (global
// index cursor) at params, its loss normalised by the step's count of
// loss tokens. The arrays belong to the caller's scope and are not yet
// evaluated.
func (s *stepper) computeGrads(params []*mlx.Array, cursor int, b traindata.Batch, stepCounted float64) (gradOut, error) {
	s.adapters.SetTraining(true, s.dropoutSeed(cursor))
	defer s.adapters.SetTraining(false, 0)
	out, err := s.grads.Call(s.layout.packLoss(s.lossArgs(params, newMicroBatch(b, stepCounted)))...)
	if err != nil {
		return gradOut{}, err
	}
	return s.layout.unpackGrads(out)
}

// accumulate adds the gradients of micro-batch b to acc (nil before the
// first) and evaluates them with its loss sum. It returns the new sums,
// detached, and frees acc; on error acc is left as it was.
func (s *stepper) accumulate(acc []*mlx.Array, cursor int, b traindata.Batch, stepCounted float64) ([]*mlx.Array, float64, error) {
	sc := mlx.NewScope()
	defer sc.Close()
	g, err := s.computeGrads(s.adapters.Params(), cursor, b, stepCounted)
	if err != nil {
		return acc, 0, err
	}
	sums := g.grads
	if acc != nil {
		for i := range sums {
			sums[i] = mlx.Add(acc[i], sums[i])
		}
	}
	if err := mlx.Eval(append(sums, g.sum)...); err != nil {
		return acc, 0, err
	}
	sum, err := g.sum.Item()
	if err != nil {
		return acc, 0, err
	}
	sc.Keep(sums...)
	mlx.Detach(sums...)
	freeArrays(acc)
	return sums, sum, nil
}

// applyUpdate clips grads and applies AdamW for step p, replacing the
// adapters' parameters and the optimizer's moments, and returns the
// gradient norm before clipping. When the norm is not finite nothing
// changes and an error is returned.
func (s *stepper) applyUpdate(grads []*mlx.Array, p stepPlan) (float64, error) {
	sc := mlx.NewScope()
	defer sc.Close()
	old := s.adapters.Params()
	in := updateArgs{params: old, grads: grads, m: s.opt.M, v: s.opt.V, scalars: s.opt.updateScalars(p.done+1, p.lr, s.gradClip)}
	out, err := s.update.Call(s.layout.packUpdate(in)...)
	if err != nil {
		return 0, err
	}
	u, err := s.layout.unpackUpdated(out)
	if err != nil {
		return 0, err
	}
	if err := mlx.Eval(out...); err != nil {
		return 0, err
	}
	params, norm, err := s.opt.adopt(u)
	if err != nil {
		return norm, err
	}
	s.adapters.SetParams(params)
	freeArrays(old)
	return norm, nil
}

// resultOf counts a step's loss and input tokens.
func resultOf(batches []traindata.Batch) stepResult {
	var r stepResult
	for _, b := range batches {
		r.counted += float64(b.Counted)
		r.tokens += b.Tokens
	}
	return r
}

func finiteLoss(r stepResult) error {
	if loss := r.lossSum / r.counted; math.IsNaN(loss) || math.IsInf(loss, 0) {
		return fmt.Errorf("loss is %v", loss)
	}
	return nil
}

func freeArrays(as []*mlx.Array) {
	for _, a := range as {
		if a != nil {
			a.Free()
		}
	}
}

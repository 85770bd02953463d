package lora

import (
	"fmt"
	"math"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// stepper makes optimizer steps. It owns the MLX functions a step runs,
// their argument layout, and the steps queued on the device.
//
// A step is this rank's compute batches of the step's examples (see
// trainBatches.step), then the optimizer update:
//
//	one batch       fused: loss, gradients, the all-reduce across ranks
//	                and the update in one compiled call
//	several         accumulate: one compiled call per batch, each adding
//	                its loss sum and gradients to the step's; then update:
//	                the all-reduce and the update in one compiled call
//	none            update alone, with zero gradients (a rank whose share
//	                of the step is empty still joins its all-reduce)
//
// Nothing is read back on the host until the step is done: the calls are
// queued on the device one after another (at most two batches in flight,
// which bounds memory as a host sync per batch would, without leaving the
// device idle while the host builds the next graph), and the step's loss
// and gradient norm are read once, after the update. The next step is
// queued before that read (see run), so the device goes from one step to
// the next without waiting for the host.
type stepper struct {
	adapters *Adapters
	opt      *AdamW
	data     *trainBatches
	layout   stepLayout
	forward  *trainForward
	ce       *fusedCE
	seed     uint64  // the run's seed: with the cursor it fixes the dropout masks
	gradClip float64 // global-norm clip; 0: none
	group    *mlx.Group
	rankMean bool // weight each rank's per-token mean equally, as mlx-lm does (tests' negative control)

	lossAndGrad *mlx.ValueAndGrad // value and gradient of loss
	accumulate  *mlx.Closure      // accFunc
	update      *mlx.Closure      // updateFunc: all-reduce and AdamW
	fused       *mlx.Closure      // fusedFunc: a one-batch step in one call

	ahead      *queuedStep // the next step, queued before the current one is read
	queuedUsed int         // queued steps that were used (tests)
	flight     []inflight  // batches queued on the device and not yet waited for
	shapes     map[string]bool
}

// stepPlan is where one optimizer step stands in the run.
type stepPlan struct {
	cursor int     // global index of its first global micro-batch
	done   int     // updates made before it: it is update number done+1
	lr     float64 // its learning rate
}

// stepResult is one optimizer step's outcome, over all ranks.
type stepResult struct {
	lossSum, counted float64
	tokens           int
	gradNorm         float64
	stop             bool // some rank was asked to stop
}

// newStepper builds the step's functions for adapters a on model m; g is
// the group of ranks (nil: one process). Call it on the MLX thread.
func newStepper(c TrainingConfig, m *llama.Model, a *Adapters, opt *AdamW, data *trainBatches, gradClip float64, g *mlx.Group) (_ *stepper, err error) {
	s := &stepper{adapters: a, opt: opt, data: data, seed: c.Seed, gradClip: gradClip, group: g,
		layout:  stepLayout{params: len(a.Params())},
		forward: newTrainForward(m, a, c.GradCheckpoint),
		ce:      newFusedCE(m, c.LossChunk, true),
		shapes:  map[string]bool{}}
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
	s.accumulate = mlx.NewClosure(s.accFunc)
	s.update = mlx.NewClosure(s.updateFunc)
	s.fused = mlx.NewClosure(s.fusedFunc)
	if err = s.update.Compile(false); err != nil {
		return nil, err
	}
	if c.Compile {
		for _, f := range []*mlx.Closure{s.accumulate, s.fused} {
			if err = f.Compile(false); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// close waits for the work still queued, and frees the stepper's
// functions and any queued step.
func (s *stepper) close() {
	s.discardAhead()
	s.drain()
	s.fused.Free()
	s.update.Free()
	s.accumulate.Free()
	s.lossAndGrad.Free()
	s.forward.free()
	s.ce.free()
}

// loss is the function whose gradient training takes (see lossArgs): the
// masked cross-entropy of the batch at the given params, divided by the
// step's count of loss tokens, and its sum.
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

// accFunc adds a batch's loss sum and gradients to the step's so far.
func (s *stepper) accFunc(in []*mlx.Array) ([]*mlx.Array, error) {
	a, err := s.layout.unpackAcc(in)
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
	out := accOut{sum: mlx.Add(a.sum, lo.sum), grads: make([]*mlx.Array, len(grads))}
	for i, g := range grads {
		out.grads[i] = mlx.Add(a.grads[i], g)
	}
	return s.layout.packAccOut(out), nil
}

// updateFunc is the all-reduce across ranks and the optimizer update.
func (s *stepper) updateFunc(in []*mlx.Array) ([]*mlx.Array, error) {
	a, err := s.layout.unpackUpdate(in)
	if err != nil {
		return nil, err
	}
	a.grads, a.totals = reduceGraph(s.group, a.grads, a.totals, s.rankMean)
	return s.layout.packUpdated(s.opt.updateGraph(a)), nil
}

// fusedFunc is a whole one-batch step as one function, so that it is one
// compiled call and one wait for the device.
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
	grads, totals := reduceGraph(s.group, grads, stepTotals{sum: lo.sum, count: a.count, stop: a.stop}, s.rankMean)
	u := s.opt.updateGraph(updateArgs{params: a.loss.params, grads: grads, m: a.m, v: a.v, scalars: a.scalars, totals: totals})
	return s.layout.packUpdated(u), nil
}

// lossArgs are the loss function's arguments for batch b at params. With
// dropout on, the adapters' keys of the current batch (see
// Adapters.SetTraining) are arguments too: as inputs, a compiled step
// draws new masks each time.
func (s *stepper) lossArgs(params []*mlx.Array, b microBatch) lossArgs {
	a := lossArgs{params: params, batch: b}
	if s.layout.keys > 0 {
		a.keys = s.adapters.dropoutKeys()
	}
	return a
}

// dropoutSeed seeds the dropout masks of compute batch j of the step at
// cursor on this rank: with the cursor it fixes all of a run's
// randomness, so a resumed run repeats it. (Batch 0 on rank 0 keeps the
// seed of earlier versions, seed·1000033 + cursor.)
func (s *stepper) dropoutSeed(cursor, j int) uint64 {
	unit := uint64(j)
	if s.group != nil {
		unit += uint64(s.group.Rank()) << 16
	}
	return s.seed*1_000_033 + uint64(cursor) + unit<<32
}

// eval waits for arrays, with the group's bound when they may wait for a
// collective.
func (s *stepper) eval(as ...*mlx.Array) error {
	if s.group != nil && s.group.Size() > 1 {
		return s.group.Eval(as...)
	}
	return mlx.Eval(as...)
}

// asyncEval queues arrays on the device. Across ranks its error (MLX
// waits for earlier work when much is queued) may be a failed collective,
// and says so.
func (s *stepper) asyncEval(as ...*mlx.Array) error {
	err := mlx.AsyncEval(as...)
	if err != nil && s.group != nil && s.group.Size() > 1 {
		return fmt.Errorf("a collective on %s failed (has another rank stopped?): %w", s.group, err)
	}
	return err
}

// noteShape counts the distinct (function, rows, length) a step calls a
// compiled function with: each is one trace (and, on a fresh machine, its
// kernels).
func (s *stepper) noteShape(fn string, b traindata.Batch) {
	s.shapes[fmt.Sprintf("%s %dx%d", fn, b.B, b.L)] = true
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

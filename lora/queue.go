package lora

import (
	"errors"
	"fmt"
	"math"

	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// queuedStep is a step whose work is queued on the device; its outputs
// are long-lived until adopted or freed.
type queuedStep struct {
	plan stepPlan
	from []*mlx.Array // the params it starts from
	res  stepResult   // its token counts; the loss and norm come when it is read
	out  updateOut
}

// fits reports whether q was built for step p at params.
func (q *queuedStep) fits(p stepPlan, params []*mlx.Array) bool {
	if q.plan != p || len(params) != len(q.from) {
		return false
	}
	for i, a := range params {
		if a != q.from[i] {
			return false
		}
	}
	return true
}

// free releases the outputs that were not adopted.
func (q *queuedStep) free() {
	u := q.out
	for _, list := range [][]*mlx.Array{{u.gradNorm}, u.totals.list(), u.params, u.m, u.v} {
		freeArrays(list)
	}
	q.out = updateOut{}
}

// run makes the optimizer step p; stop is this rank's stop flag for the
// steps it builds now (see Trainer.Run). When next is not nil, step next
// is queued on the device before p's results are read; it is used by the
// following call if that call's plan and parameters are still the ones it
// was built from.
func (s *stepper) run(p stepPlan, next *stepPlan, stop bool) (stepResult, error) {
	q := s.ahead
	s.ahead = nil
	if q != nil && !q.fits(p, s.adapters.Params()) {
		s.discard(q)
		q = nil
	}
	if q != nil {
		s.queuedUsed++
	} else {
		var err error
		if q, err = s.queue(p, s.adapters.Params(), s.opt.M, s.opt.V, stop); err != nil {
			return stepResult{}, err
		}
	}
	if next != nil {
		u := q.out
		// An error here comes back when that step's turn comes.
		s.ahead, _ = s.queue(*next, u.params, u.m, u.v, stop)
	}
	res, err := s.finish(q)
	q.free()
	if err != nil {
		s.discardAhead()
	}
	return res, err
}

// discardAhead drops the step queued ahead, if any.
func (s *stepper) discardAhead() {
	if s.ahead != nil {
		s.discard(s.ahead)
		s.ahead = nil
	}
}

// discard drops a queued step. Across ranks it first waits for it: its
// all-reduce is already queued on every rank (they queue alike), and
// would otherwise pair with whatever collective this rank issues next.
func (s *stepper) discard(q *queuedStep) {
	if s.group != nil && s.group.Size() > 1 && q.out.gradNorm != nil {
		s.eval(s.layout.packUpdated(q.out)...) // its error, if any, is the next collective's too
	}
	q.free()
}

// queue builds step p from params and moments m, v (which may still be
// computing) and queues it without reading anything back.
func (s *stepper) queue(p stepPlan, params, m, v []*mlx.Array, stop bool) (*queuedStep, error) {
	d := s.data.step(p.cursor)
	if d.counted == 0 {
		return nil, errors.New("a training step has no loss tokens")
	}
	q := &queuedStep{plan: p, from: append([]*mlx.Array{}, params...),
		res: stepResult{counted: float64(d.counted), tokens: d.tokens}}
	norm := float64(d.counted)
	if s.rankMean {
		norm = float64(max(d.local, 1))
	}
	sc := mlx.NewScope()
	defer sc.Close()
	scalars := s.opt.updateScalars(p.done+1, p.lr, s.gradClip)
	count, flag := mlx.Scalar(float64(d.local), mlx.Float32), mlx.Scalar(0, mlx.Float32)
	if stop {
		flag = mlx.Scalar(1, mlx.Float32)
	}
	var out []*mlx.Array
	var err error
	if len(d.batches) == 1 {
		b := d.batches[0]
		s.noteShape("step", b)
		s.adapters.SetTraining(true, s.dropoutSeed(p.cursor, 0))
		in := fusedArgs{loss: s.lossArgs(params, newMicroBatch(b, norm)), m: m, v: v, scalars: scalars, count: count, stop: flag}
		out, err = s.fused.Call(s.layout.packFused(in)...)
		s.adapters.SetTraining(false, 0)
	} else {
		var acc accOut
		if acc, err = s.accumulateBatches(params, p.cursor, d.batches, norm); err != nil {
			return nil, err
		}
		in := updateArgs{params: params, grads: acc.grads, m: m, v: v, scalars: scalars,
			totals: stepTotals{sum: acc.sum, count: count, stop: flag}}
		out, err = s.update.Call(s.layout.packUpdate(in)...)
	}
	if err != nil {
		return nil, err
	}
	if q.out, err = s.layout.unpackUpdated(out); err != nil {
		return nil, err
	}
	if err := s.asyncEval(out...); err != nil {
		return nil, err
	}
	mlx.Detach(out...)
	if len(d.batches) == 1 {
		// The one batch is this step's whole work: the next batch queued
		// waits for it.
		err = s.dispatched(inflight{wait: func() error {
			if q.out.gradNorm == nil {
				return nil // discarded; nothing waits for it
			}
			return s.eval(q.out.gradNorm)
		}})
	}
	return q, err
}

// accumulateBatches queues one accumulate call per batch, from zero sums,
// and returns the step's loss sum and gradients (still computing; they
// belong to the last batch's entry in the flight list).
func (s *stepper) accumulateBatches(params []*mlx.Array, cursor int, batches []traindata.Batch, norm float64) (accOut, error) {
	acc := accOut{sum: mlx.Scalar(0, mlx.Float32), grads: make([]*mlx.Array, len(params))}
	for i, p := range params {
		acc.grads[i] = mlx.Zeros(mlx.Float32, p.Shape()...)
	}
	for j, b := range batches {
		s.noteShape("accumulate", b)
		out, err := s.accumulateOne(params, cursor, j, b, norm, acc)
		if err != nil {
			return acc, err
		}
		if acc, err = s.layout.unpackAccOut(out); err != nil {
			return acc, err
		}
		if err := s.dispatched(inflight{wait: func() error { return s.eval(out...) }, owned: out}); err != nil {
			return acc, err
		}
	}
	return acc, nil
}

// accumulateOne queues the accumulate call of batch j and returns its
// outputs, detached.
func (s *stepper) accumulateOne(params []*mlx.Array, cursor, j int, b traindata.Batch, norm float64, acc accOut) ([]*mlx.Array, error) {
	sc := mlx.NewScope()
	defer sc.Close()
	s.adapters.SetTraining(true, s.dropoutSeed(cursor, j))
	defer s.adapters.SetTraining(false, 0)
	in := accArgs{loss: s.lossArgs(params, newMicroBatch(b, norm)), sum: acc.sum, grads: acc.grads}
	out, err := s.accumulate.Call(s.layout.packAcc(in)...)
	if err != nil {
		return nil, err
	}
	if err := s.asyncEval(out...); err != nil {
		return nil, err
	}
	sc.KeepAll(out)
	mlx.Detach(out...)
	return out, nil
}

// inflight is a batch queued on the device: how to wait for it, and the
// arrays to free once it is done.
type inflight struct {
	wait  func() error
	owned []*mlx.Array
}

// dispatched records a batch just queued and waits for every earlier one:
// the device then holds at most the batch it runs and the one queued
// behind it, while the host builds the next.
func (s *stepper) dispatched(f inflight) error {
	s.flight = append(s.flight, f)
	var err error
	for len(s.flight) > 1 {
		first := s.flight[0]
		s.flight = s.flight[1:]
		if e := first.wait(); e != nil && err == nil {
			err = e
		}
		freeArrays(first.owned)
	}
	return err
}

// drain waits for every batch in flight and frees what they hold.
func (s *stepper) drain() {
	for _, f := range s.flight {
		f.wait()
		freeArrays(f.owned)
	}
	s.flight = nil
}

// finish waits for a queued step and adopts its update: the adopted
// arrays leave q.
func (s *stepper) finish(q *queuedStep) (stepResult, error) {
	res := q.res
	if err := s.eval(s.layout.packUpdated(q.out)...); err != nil {
		return res, err
	}
	t := q.out.totals
	var count, stop float64
	var err error
	for _, r := range []struct {
		a   *mlx.Array
		dst *float64
	}{{t.sum, &res.lossSum}, {t.count, &count}, {t.stop, &stop}} {
		if *r.dst, err = r.a.Item(); err != nil {
			return res, err
		}
	}
	res.stop = stop > 0
	if math.Abs(count-res.counted) > 1e-6*res.counted+0.5 { // float32 counts are exact below 2^24
		return res, fmt.Errorf("ranks disagree on the data: together they hold %v loss tokens of this step, "+
			"which every rank counts as %v (do all ranks have the same data files?)", count, res.counted)
	}
	if err := finiteLoss(res); err != nil {
		return res, err
	}
	old := s.adapters.Params()
	params, norm, err := s.opt.adopt(q.out)
	if err != nil {
		return res, err
	}
	q.out.params, q.out.m, q.out.v = nil, nil, nil
	res.gradNorm = norm
	s.adapters.SetParams(params)
	freeArrays(old)
	return res, nil
}

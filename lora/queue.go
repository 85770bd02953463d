package lora

import (
	"errors"

	"github.com/fungtrain/fungtrain/mlx"
)

// queuedStep is a fused step (no accumulation) whose graph is built and
// queued on the device; its outputs are long-lived until adopted or freed.
type queuedStep struct {
	plan stepPlan
	from []*mlx.Array // the params it starts from
	res  stepResult   // its token counts; the loss and norm come when it is read
	out  fusedOut
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
	u := q.out.update
	for _, list := range [][]*mlx.Array{{q.out.loss, q.out.sum, u.gradNorm}, u.params, u.m, u.v} {
		freeArrays(list)
	}
	q.out = fusedOut{}
}

// runFused makes step p with the fused function. Before waiting for it,
// step next (if not nil) is queued on top of its still-computing results,
// so the device goes from one step to the next without waiting for the
// host to read the loss and build the next graph.
func (s *stepper) runFused(p stepPlan, next *stepPlan) (stepResult, error) {
	q := s.ahead
	s.ahead = nil
	if q != nil && !q.fits(p, s.adapters.Params()) {
		q.free()
		q = nil
	}
	if q != nil {
		s.queuedUsed++
	} else {
		var err error
		if q, err = s.queue(p, s.adapters.Params(), s.opt.M, s.opt.V); err != nil {
			return stepResult{}, err
		}
	}
	if next != nil {
		u := q.out.update
		// An error here comes back when that step's turn comes.
		s.ahead, _ = s.queue(*next, u.params, u.m, u.v)
	}
	res, err := s.finish(q)
	q.free()
	if err != nil && s.ahead != nil {
		s.ahead.free()
		s.ahead = nil
	}
	return res, err
}

// queue builds step p from params and moments m, v (which may still be
// computing) and queues it without waiting.
func (s *stepper) queue(p stepPlan, params, m, v []*mlx.Array) (*queuedStep, error) {
	b := s.data.stepBatches(p.cursor)[0]
	if b.Counted == 0 {
		return nil, errors.New("a training step has no loss tokens")
	}
	q := &queuedStep{plan: p, from: append([]*mlx.Array{}, params...),
		res: stepResult{counted: float64(b.Counted), tokens: b.Tokens}}
	sc := mlx.NewScope()
	defer sc.Close()
	s.adapters.SetTraining(true, s.dropoutSeed(p.cursor))
	defer s.adapters.SetTraining(false, 0)
	in := fusedArgs{loss: s.lossArgs(params, newMicroBatch(b, q.res.counted)), m: m, v: v,
		scalars: s.opt.updateScalars(p.done+1, p.lr, s.gradClip)}
	out, err := s.fused.Call(s.layout.packFused(in)...)
	if err != nil {
		return nil, err
	}
	if q.out, err = s.layout.unpackFusedOut(out); err != nil {
		return nil, err
	}
	if err := mlx.AsyncEval(out...); err != nil {
		return nil, err
	}
	mlx.Detach(out...)
	return q, nil
}

// finish waits for a queued step and adopts its update: the adopted
// arrays leave q.
func (s *stepper) finish(q *queuedStep) (stepResult, error) {
	res := q.res
	if err := mlx.Eval(s.layout.packFusedOut(q.out)...); err != nil {
		return res, err
	}
	var err error
	if res.lossSum, err = q.out.sum.Item(); err != nil {
		return res, err
	}
	if err := finiteLoss(res); err != nil {
		return res, err
	}
	old := s.adapters.Params()
	params, norm, err := s.opt.adopt(q.out.update)
	if err != nil {
		return res, err
	}
	q.out.update.params, q.out.update.m, q.out.update.v = nil, nil, nil
	res.gradNorm = norm
	s.adapters.SetParams(params)
	freeArrays(old)
	return res, nil
}

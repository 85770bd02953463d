package lora

import (
	"fmt"

	"github.com/fungtrain/fungtrain/mlx"
)

// MLX's transforms (value-and-grad, compile, checkpoint) take and return
// flat lists of arrays. stepLayout is the one place that knows the order
// of those lists; the rest of the trainer works with the named structs
// below and packs or unpacks them here.
//
//	loss function    in:  params, dropout keys, ids, targets, weights, norm
//	                 out: loss, loss sum
//	gradients        in:  the loss function's
//	                 out: loss, loss sum, grads
//	accumulate       in:  the loss function's, then the sum and grads so far
//	                 out: sum and grads with this batch's added
//	update           in:  params, grads, M, V, the four update scalars, then
//	                      the step's totals (loss sum, count, stop)
//	                 out: params, M, V, gradient norm, the totals summed
//	                      over ranks
//	fused step       in:  the loss function's, M, V, the update scalars,
//	                      count and stop
//	                 out: the update's
//	checkpointed     in:  x, then A and B of each adapter of the block,
//	block                 then (when passed in) each adapter's dropout key
//	                 out: the block's output
type stepLayout struct {
	params int // trainable arrays: A and B of every adapter layer
	keys   int // dropout keys, one per adapter layer; 0 without dropout
}

// microBatch is one compute batch as arrays.
type microBatch struct {
	ids, targets, weights *mlx.Array // (B, L)
	// norm is the whole step's count of loss tokens (on all ranks). Every
	// batch's loss sum is divided by it, so that the gradients summed over
	// a step's batches and ranks are exactly the gradient of the step's
	// mean loss.
	norm *mlx.Array
}

// lossArgs are the loss function's arguments; its gradient is taken with
// respect to params.
type lossArgs struct {
	params []*mlx.Array
	keys   []*mlx.Array // nil without dropout
	batch  microBatch
}

// lossOut is the loss normalised by the step's token count, and its
// unnormalised sum.
type lossOut struct{ loss, sum *mlx.Array }

// gradOut is one batch's loss and the gradients of params.
type gradOut struct {
	lossOut
	grads []*mlx.Array
}

// accArgs are a batch's loss arguments and what the step has summed so
// far (zeros before its first batch).
type accArgs struct {
	loss  lossArgs
	sum   *mlx.Array
	grads []*mlx.Array
}

// accOut are the step's loss sum and gradients with a batch added.
type accOut struct {
	sum   *mlx.Array
	grads []*mlx.Array
}

// updateScalars are the per-update inputs of the fused update: the step
// size lr/(1-β1ᵗ), 1/(1-β2ᵗ) (both without the bias correction's divisor
// when it is off), the decay factor 1-lr·wd and the clip norm (0: none).
// As arrays, a compiled update serves every step.
type updateScalars struct{ stepSize, invC2, decay, maxNorm *mlx.Array }

// stepTotals are a step's float32 scalars that travel with its gradients
// in one all-reduce: this rank's loss sum and loss-token count, and its
// stop flag (1 when it was asked to stop). After the reduction they are
// the step's global sum, global count (which must equal the count every
// rank computed from the data) and the number of ranks asked to stop.
type stepTotals struct{ sum, count, stop *mlx.Array }

// updateArgs are the optimizer update's inputs.
type updateArgs struct {
	params, grads, m, v []*mlx.Array
	scalars             updateScalars
	totals              stepTotals
}

// updateOut is what an update makes: new params and moments, the
// gradient norm before clipping, and the reduced totals.
type updateOut struct {
	params, m, v []*mlx.Array
	gradNorm     *mlx.Array
	totals       stepTotals
}

// fusedArgs are a whole step's inputs when a rank runs it as one batch:
// the batch's loss arguments, the moments, the update scalars, and the
// count and stop flag (the loss sum comes from the batch).
type fusedArgs struct {
	loss        lossArgs
	m, v        []*mlx.Array
	scalars     updateScalars
	count, stop *mlx.Array
}

// blockArgs are a checkpointed block's inputs.
type blockArgs struct {
	x      *mlx.Array
	params []*mlx.Array // A and B of each of the block's adapters
	keys   []*mlx.Array // one per adapter, or nil
}

func (l stepLayout) packLoss(a lossArgs) []*mlx.Array {
	in := make([]*mlx.Array, 0, l.params+l.keys+4)
	in = append(append(in, a.params...), a.keys...)
	return append(in, a.batch.ids, a.batch.targets, a.batch.weights, a.batch.norm)
}

func (l stepLayout) unpackLoss(in []*mlx.Array) (lossArgs, error) {
	r := argReader{in: in}
	a := l.readLoss(&r)
	return a, r.done("loss function arguments")
}

func (l stepLayout) readLoss(r *argReader) lossArgs {
	a := lossArgs{params: r.take(l.params)}
	if l.keys > 0 {
		a.keys = r.take(l.keys)
	}
	a.batch = microBatch{ids: r.one(), targets: r.one(), weights: r.one(), norm: r.one()}
	return a
}

// gradArgnums are the positions of the loss function's arguments that
// gradients are taken of: the params.
func (l stepLayout) gradArgnums() []int {
	out := make([]int, l.params)
	for i := range out {
		out[i] = i
	}
	return out
}

func (l stepLayout) packLossOut(o lossOut) []*mlx.Array { return []*mlx.Array{o.loss, o.sum} }

func (l stepLayout) unpackLossOut(out []*mlx.Array) (lossOut, error) {
	r := argReader{in: out}
	o := lossOut{loss: r.one(), sum: r.one()}
	return o, r.done("loss function outputs")
}

func (l stepLayout) packGrads(g gradOut) []*mlx.Array {
	return append(l.packLossOut(g.lossOut), g.grads...)
}

func (l stepLayout) unpackGrads(out []*mlx.Array) (gradOut, error) {
	r := argReader{in: out}
	g := gradOut{lossOut: lossOut{loss: r.one(), sum: r.one()}, grads: r.take(l.params)}
	return g, r.done("gradient outputs")
}

func (l stepLayout) packAcc(a accArgs) []*mlx.Array {
	return append(append(l.packLoss(a.loss), a.sum), a.grads...)
}

func (l stepLayout) unpackAcc(in []*mlx.Array) (accArgs, error) {
	r := argReader{in: in}
	a := accArgs{loss: l.readLoss(&r), sum: r.one(), grads: r.take(l.params)}
	return a, r.done("accumulation arguments")
}

func (l stepLayout) packAccOut(o accOut) []*mlx.Array { return append([]*mlx.Array{o.sum}, o.grads...) }

func (l stepLayout) unpackAccOut(out []*mlx.Array) (accOut, error) {
	r := argReader{in: out}
	o := accOut{sum: r.one(), grads: r.take(l.params)}
	return o, r.done("accumulation outputs")
}

func (s updateScalars) list() []*mlx.Array {
	return []*mlx.Array{s.stepSize, s.invC2, s.decay, s.maxNorm}
}

func readScalars(r *argReader) updateScalars {
	return updateScalars{stepSize: r.one(), invC2: r.one(), decay: r.one(), maxNorm: r.one()}
}

func (t stepTotals) list() []*mlx.Array { return []*mlx.Array{t.sum, t.count, t.stop} }

func readTotals(r *argReader) stepTotals {
	return stepTotals{sum: r.one(), count: r.one(), stop: r.one()}
}

func (l stepLayout) packUpdate(a updateArgs) []*mlx.Array {
	in := make([]*mlx.Array, 0, 4*l.params+7)
	in = append(append(append(append(in, a.params...), a.grads...), a.m...), a.v...)
	return append(append(in, a.scalars.list()...), a.totals.list()...)
}

func (l stepLayout) unpackUpdate(in []*mlx.Array) (updateArgs, error) {
	r := argReader{in: in}
	a := updateArgs{params: r.take(l.params), grads: r.take(l.params), m: r.take(l.params), v: r.take(l.params)}
	a.scalars = readScalars(&r)
	a.totals = readTotals(&r)
	return a, r.done("update arguments")
}

func (l stepLayout) packUpdated(u updateOut) []*mlx.Array {
	out := make([]*mlx.Array, 0, 3*l.params+4)
	out = append(append(append(out, u.params...), u.m...), u.v...)
	return append(append(out, u.gradNorm), u.totals.list()...)
}

func (l stepLayout) unpackUpdated(out []*mlx.Array) (updateOut, error) {
	r := argReader{in: out}
	u := updateOut{params: r.take(l.params), m: r.take(l.params), v: r.take(l.params), gradNorm: r.one()}
	u.totals = readTotals(&r)
	return u, r.done("update outputs")
}

func (l stepLayout) packFused(a fusedArgs) []*mlx.Array {
	in := append(l.packLoss(a.loss), a.m...)
	in = append(in, a.v...)
	return append(append(in, a.scalars.list()...), a.count, a.stop)
}

func (l stepLayout) unpackFused(in []*mlx.Array) (fusedArgs, error) {
	r := argReader{in: in}
	a := fusedArgs{loss: l.readLoss(&r), m: r.take(l.params), v: r.take(l.params)}
	a.scalars = readScalars(&r)
	a.count, a.stop = r.one(), r.one()
	return a, r.done("fused step arguments")
}

// packBlock lays out a checkpointed block's inputs.
func packBlock(a blockArgs) []*mlx.Array {
	return append(append([]*mlx.Array{a.x}, a.params...), a.keys...)
}

// unpackBlock reads the inputs of a checkpointed block with n adapters:
// 1+2n of them, or 1+3n when their dropout keys are passed in.
func unpackBlock(in []*mlx.Array, n int) (blockArgs, error) {
	r := argReader{in: in}
	a := blockArgs{x: r.one(), params: r.take(2 * n)}
	if len(in) == 1+3*n && n > 0 {
		a.keys = r.take(n)
	}
	return a, r.done("checkpointed block arguments")
}

// argReader takes arrays off a flat list in order.
type argReader struct {
	in    []*mlx.Array
	short bool
}

func (r *argReader) take(n int) []*mlx.Array {
	if n > len(r.in) {
		r.short, n = true, len(r.in)
	}
	out := r.in[:n:n]
	r.in = r.in[n:]
	return out
}

func (r *argReader) one() *mlx.Array {
	if a := r.take(1); len(a) == 1 {
		return a[0]
	}
	return nil
}

// done reports a list that was shorter or longer than its layout.
func (r *argReader) done(what string) error {
	if r.short || len(r.in) != 0 {
		return fmt.Errorf("%s: the argument list does not match its layout (short %v, %d left over)", what, r.short, len(r.in))
	}
	return nil
}

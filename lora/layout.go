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
//	update           in:  params, grads, M, V, then the four update scalars
//	                 out: params, M, V, gradient norm
//	fused step       in:  the loss function's, then M, V and the update scalars
//	                 out: loss, loss sum, then the update's
//	checkpointed     in:  x, then A and B of each adapter of the block,
//	block                 then (when passed in) each adapter's dropout key
//	                 out: the block's output
type stepLayout struct {
	params int // trainable arrays: A and B of every adapter layer
	keys   int // dropout keys, one per adapter layer; 0 without dropout
}

// microBatch is one micro-batch as arrays.
type microBatch struct {
	ids, targets, weights *mlx.Array // (B, L)
	// norm is the whole step's count of loss tokens. Every micro-batch's
	// loss sum is divided by it, so that accumulated gradients are exactly
	// the gradient of the step's mean loss.
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

// gradOut is one micro-batch's loss and the gradients of params.
type gradOut struct {
	lossOut
	grads []*mlx.Array
}

// updateScalars are the per-update inputs of the fused update: the step
// size lr/(1-β1ᵗ), 1/(1-β2ᵗ), the decay factor 1-lr·wd and the clip norm
// (0: none). As arrays, a compiled update serves every step.
type updateScalars struct{ stepSize, invC2, decay, maxNorm *mlx.Array }

// updateArgs are the optimizer update's inputs.
type updateArgs struct {
	params, grads, m, v []*mlx.Array
	scalars             updateScalars
}

// updateOut is what an update makes: new params and moments, and the
// gradient norm before clipping.
type updateOut struct {
	params, m, v []*mlx.Array
	gradNorm     *mlx.Array
}

// fusedArgs are a whole step's inputs without accumulation: one
// micro-batch's loss arguments and the update's moments and scalars.
type fusedArgs struct {
	loss    lossArgs
	m, v    []*mlx.Array
	scalars updateScalars
}

// fusedOut is a fused step's loss and update.
type fusedOut struct {
	lossOut
	update updateOut
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

func (s updateScalars) list() []*mlx.Array {
	return []*mlx.Array{s.stepSize, s.invC2, s.decay, s.maxNorm}
}

func readScalars(r *argReader) updateScalars {
	return updateScalars{stepSize: r.one(), invC2: r.one(), decay: r.one(), maxNorm: r.one()}
}

func (l stepLayout) packUpdate(a updateArgs) []*mlx.Array {
	in := make([]*mlx.Array, 0, 4*l.params+4)
	in = append(append(append(append(in, a.params...), a.grads...), a.m...), a.v...)
	return append(in, a.scalars.list()...)
}

func (l stepLayout) unpackUpdate(in []*mlx.Array) (updateArgs, error) {
	r := argReader{in: in}
	a := updateArgs{params: r.take(l.params), grads: r.take(l.params), m: r.take(l.params), v: r.take(l.params)}
	a.scalars = readScalars(&r)
	return a, r.done("update arguments")
}

func (l stepLayout) packUpdated(u updateOut) []*mlx.Array {
	out := make([]*mlx.Array, 0, 3*l.params+1)
	out = append(append(append(out, u.params...), u.m...), u.v...)
	return append(out, u.gradNorm)
}

func (l stepLayout) readUpdated(r *argReader) updateOut {
	return updateOut{params: r.take(l.params), m: r.take(l.params), v: r.take(l.params), gradNorm: r.one()}
}

func (l stepLayout) unpackUpdated(out []*mlx.Array) (updateOut, error) {
	r := argReader{in: out}
	u := l.readUpdated(&r)
	return u, r.done("update outputs")
}

func (l stepLayout) packFused(a fusedArgs) []*mlx.Array {
	in := append(l.packLoss(a.loss), a.m...)
	in = append(in, a.v...)
	return append(in, a.scalars.list()...)
}

func (l stepLayout) unpackFused(in []*mlx.Array) (fusedArgs, error) {
	r := argReader{in: in}
	a := fusedArgs{loss: l.readLoss(&r), m: r.take(l.params), v: r.take(l.params)}
	a.scalars = readScalars(&r)
	return a, r.done("fused step arguments")
}

func (l stepLayout) packFusedOut(o fusedOut) []*mlx.Array {
	return append(l.packLossOut(o.lossOut), l.packUpdated(o.update)...)
}

func (l stepLayout) unpackFusedOut(out []*mlx.Array) (fusedOut, error) {
	r := argReader{in: out}
	o := fusedOut{lossOut: lossOut{loss: r.one(), sum: r.one()}}
	o.update = l.readUpdated(&r)
	return o, r.done("fused step outputs")
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

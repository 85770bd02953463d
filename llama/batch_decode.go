package llama

import (
	"fmt"
	"math"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

// The decode step of a Batch: one token for every row, sampled with each
// row's settings, and the bookkeeping of what each token means for its
// sequence (stop tokens, limits, constraints).

// pipelinable reports whether the next decode step can be built from the
// current one's tokens before they are read: every row is live and needs
// nothing from the host (no repetition penalty, no constraint), and no
// sequence waits to join.
func (b *Batch) pipelinable() bool {
	if b.m.decode != nil && b.m.decode.settings.Depth == 0 {
		return false // DecodeSettings.Depth 0: no overlap, as Generate
	}
	for _, r := range b.rows {
		if r.done || r.req.Sample.penalized() || r.req.Constraint != nil {
			return false
		}
	}
	for _, sq := range b.prefilling {
		if sq.prefilled >= len(sq.req.Prompt)-1 {
			return false
		}
	}
	return true
}

// decode runs one decode step over the rows and hands out its tokens.
// While the rows stay the same, the next step is built and queued before
// this one's tokens are read, so building it overlaps the computation.
func (b *Batch) decode() error {
	cur := b.inflight
	b.inflight = nil
	if cur == nil {
		live := false
		for _, r := range b.rows {
			live = live || !r.done
		}
		if !live {
			return nil
		}
		s := mlx.NewScope()
		last := make([]int32, len(b.rows))
		for i, r := range b.rows {
			last[i] = r.last
		}
		var err error
		cur, err = b.buildStep(mlx.FromInt32s(last, len(last), 1))
		s.Close()
		if err != nil {
			return err
		}
	}
	if b.pipelinable() {
		s := mlx.NewScope()
		next, err := b.buildStep(cur)
		s.Close()
		if err != nil {
			cur.Free()
			return err
		}
		b.inflight = next
	}
	ids, err := readTokens(cur)
	cur.Free()
	if err != nil {
		return err
	}
	now := time.Now()
	for i, r := range b.rows {
		b.accept(r, ids[i], now)
	}
	return nil
}

// buildStep builds and queues one decode step with the given inputs
// (rows, 1) and returns the sampled tokens (rows, 1), detached.
func (b *Batch) buildStep(inputs *mlx.Array) (*mlx.Array, error) {
	s := mlx.NewScope()
	defer s.Close()
	tokens, err := b.stepGraph(inputs)
	if err != nil {
		return nil, err
	}
	if err := mlx.AsyncEval(tokens); err != nil {
		return nil, err
	}
	b.layout.length++
	s.Keep(tokens)
	mlx.Detach(tokens)
	return tokens, nil
}

// stepGraph builds one decode step's graph (nothing is evaluated): the
// tokens (rows,) sampled after inputs (rows, 1). It writes the step's
// keys and values into the batch cache.
func (b *Batch) stepGraph(inputs *mlx.Array) (*mlx.Array, error) {
	adapters := make([]int, len(b.rows))
	for i, r := range b.rows {
		adapters[i] = r.req.Adapter
	}
	if err := b.opts.Adapters.Select(adapters); err != nil {
		return nil, err
	}
	// Rows at one position (none padded: always so for one row) rotate
	// by a plain offset, as Generate does, and attend without a mask.
	in := stepInputs{offset: b.layout.length, length: b.layout.length}
	if b.layout.padded() {
		in.offsets = mlx.FromInt32s(b.layout.positions(), len(b.rows))
		in.mask = b.layout.mask()
	}
	logits := b.m.stepLogits(inputs, b.caches, in)
	return b.sampleRows(logits), nil
}

// readTokens reads a step's tokens: uint32 from the batch's argmax, int32
// from per-row sampling. Reading in the array's own dtype queues no cast
// behind the step already in flight.
func readTokens(tokens *mlx.Array) ([]int32, error) {
	if tokens.Dtype() == mlx.Int32 {
		return tokens.Int32s()
	}
	u, err := tokens.Uint32s()
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(u))
	for i, v := range u {
		out[i] = int32(v)
	}
	return out, nil
}

// sampleRows draws each row's next token from logits (rows, 1, vocab) with
// its own settings and returns them as the next step's input (rows, 1).
// Plain greedy rows (no penalty, no constraint) take one argmax over the
// batch, uint32 as Generate's; otherwise the tokens are int32.
func (b *Batch) sampleRows(logits *mlx.Array) *mlx.Array {
	plain := true
	for _, r := range b.rows {
		if r.req.Sample.Temp > 0 || r.req.Sample.penalized() || r.req.Constraint != nil {
			plain = false
		}
	}
	if plain {
		return mlx.Argmax(logits, -1, false)
	}
	V := logits.Dim(2)
	out := make([]*mlx.Array, len(b.rows))
	for i, r := range b.rows {
		row := mlx.Reshape(mlx.SliceAxis(logits, 0, i, i+1), 1, V)
		if r.done {
			out[i] = mlx.Zeros(mlx.Int32, 1)
			continue
		}
		if r.req.Constraint != nil {
			row = mlx.Where(mlx.FromBools(b.allowed(r, V), 1, V), row, mlx.Scalar(math.Inf(-1), row.Dtype()))
		}
		out[i] = mlx.AsType(r.sampler.sample(row, r.history), mlx.Int32)
	}
	return mlx.Reshape(mlx.Concatenate(out, 0), len(out), 1)
}

// allowed returns the tokens a constrained row may sample next.
func (b *Batch) allowed(r *seqState, V int) []bool {
	if len(r.allowed) != V {
		r.allowed = make([]bool, V)
	}
	clear(r.allowed)
	r.req.Constraint.Allow(r.allowed, r.req.MaxTokens-r.generated)
	any := false
	for _, a := range r.allowed {
		if a {
			any = true
			break
		}
	}
	if !any || r.req.Constraint.Complete() {
		for id := range r.stop {
			if int(id) < V {
				r.allowed[id] = true
			}
		}
	}
	return r.allowed
}

// accept hands a decoded token to its sequence.
func (b *Batch) accept(r *seqState, id int32, now time.Time) {
	if r.done {
		return
	}
	if r.first.IsZero() {
		r.first = now
	}
	if r.stop[id] {
		b.finishStop(r, true)
		return
	}
	if c := r.req.Constraint; c != nil {
		if err := c.Accept(id); err != nil {
			b.finish(r, FinishError, fmt.Errorf("constrained decoding: %w", err))
			return
		}
	}
	r.generated++
	r.last = id
	if r.history != nil {
		r.history = append(r.history, id)
	}
	if r.req.Emit != nil && !r.req.Emit(id) {
		b.finishStop(r, false)
		return
	}
	if c := r.req.Constraint; c != nil && c.Closed() {
		b.finishStop(r, false)
		return
	}
	if r.generated >= r.req.MaxTokens {
		b.finish(r, FinishLength, nil)
	}
}

func (b *Batch) finishStop(r *seqState, token bool) {
	r.hitStop = token
	b.finish(r, FinishStop, nil)
}

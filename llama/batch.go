package llama

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

// Continuous batching. A Batch decodes many sequences together, one token
// each per decode step, each with its own prompt, position, sampling
// settings, stop tokens, token limit, adapter and optional constraint.
// Sequences join and leave between steps: a new sequence's prompt is
// prefilled on its own, a chunk at a time between decode steps (so a long
// prompt never stalls the others for more than one chunk), then its KV
// cache joins the batch cache; a finished sequence's row is dropped at the
// next step boundary.
//
// Prefill and the first decode step follow Generate exactly (the same
// chunks, the last prompt token fed as the first decode input), so a greedy
// sequence decodes the same tokens as Generate up to the rounding of
// batched matrix products.
//
// All methods run on the MLX thread.

// FinishReason says why a sequence ended.
type FinishReason string

const (
	FinishStop      FinishReason = "stop"      // a stop token, or Emit returned false
	FinishLength    FinishReason = "length"    // MaxTokens reached
	FinishCancelled FinishReason = "cancelled" // the request's context ended
	FinishError     FinishReason = "error"     // the batch failed
)

// TokenConstraint limits which tokens a sequence may generate (constrained
// decoding, such as JSON that matches a schema).
type TokenConstraint interface {
	// Allow sets allowed[id] for every token id that may come next, with
	// remaining tokens left before the limit (allowed is all false on
	// entry). Stop tokens are the batch's business: it allows them when
	// Complete.
	Allow(allowed []bool, remaining int)
	// Accept advances past a generated (non-stop) token.
	Accept(id int32) error
	// Complete reports whether the output so far is whole, so a stop token
	// may come next.
	Complete() bool
	// Closed reports whether nothing but a stop may come next; the batch
	// then ends the sequence without decoding another token.
	Closed() bool
}

// SeqRequest is one sequence for a Batch to generate.
type SeqRequest struct {
	Prompt    []int32
	MaxTokens int
	Sample    SampleOptions
	StopIDs   []int32
	// Adapter is the index of the adapter in BatchOptions.Adapters; 0 is
	// the base model.
	Adapter int
	// Constraint, if set, masks the tokens the sequence may sample.
	Constraint TokenConstraint
	// Ctx, if set, cancels the sequence when it ends.
	Ctx context.Context
	// Emit receives each generated token (stop tokens excluded); returning
	// false ends the sequence with FinishStop.
	Emit func(id int32) bool
	// Done is called once when the sequence ends.
	Done func(SeqResult)
}

// SeqResult is the outcome of one sequence.
type SeqResult struct {
	PromptTokens    int
	GeneratedTokens int
	Finish          FinishReason
	HitStopToken    bool  // ended with one of StopIDs
	Err             error // set for FinishCancelled and FinishError
	// Queued is the time from Add to the start of prefill, FirstToken the
	// time from Add to the first generated token, Total from Add to the end.
	Queued, FirstToken, Total time.Duration
}

// BatchOptions configure a Batch.
type BatchOptions struct {
	MaxBatch     int // sequences decoded together (default 16)
	PrefillChunk int // prompt tokens per prefill step (default 512, as Generate)
	Adapters     *AdapterSet
}

// Batch schedules sequences for continuous batching. It is not safe for
// concurrent use: one goroutine on the MLX thread drives it.
type Batch struct {
	m    *Model
	opts BatchOptions

	waiting    []*seqState // added, not yet prefilling
	prefilling []*seqState
	rows       []*seqState // the rows of the batch cache, in order
	layout     batchLayout
	caches     []*batchCache
	inflight   *mlx.Array // tokens (rows, 1) of a decode step not yet read
}

// seqState is one sequence's progress.
type seqState struct {
	req       SeqRequest
	stop      map[int32]bool
	sampler   *sampler
	history   []int32    // prompt and generated tokens, for the repetition penalty
	caches    []*KVCache // the prefill cache, until the sequence joins the batch
	prefilled int        // prompt tokens in caches (all but the last one at the end)
	last      int32      // the input of the next decode step
	generated int
	done      bool
	hitStop   bool   // ended on a stop token
	allowed   []bool // constraint scratch

	added, started, first time.Time
}

// NewBatch returns an empty batch over m.
func NewBatch(m *Model, opts BatchOptions) *Batch {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 16
	}
	if opts.PrefillChunk <= 0 {
		opts.PrefillChunk = 512
	}
	return &Batch{m: m, opts: opts}
}

// CheckRequest validates a request against the model: a non-empty prompt of
// vocabulary ids that fits the context with MaxTokens new tokens (an error
// wrapping ErrPromptTooLong says the numbers), sampling options in range,
// and a known adapter.
func (m *Model) CheckRequest(r SeqRequest, adapters *AdapterSet) error {
	if len(r.Prompt) == 0 {
		return errors.New("empty prompt")
	}
	if r.MaxTokens <= 0 {
		return fmt.Errorf("max tokens must be positive, got %d", r.MaxTokens)
	}
	if ctx := m.Config.MaxPositionEmbeddings; ctx > 0 && len(r.Prompt)+r.MaxTokens > ctx {
		return fmt.Errorf("%w: %d prompt tokens + %d new tokens exceed the model's context of %d",
			ErrPromptTooLong, len(r.Prompt), r.MaxTokens, ctx)
	}
	for _, id := range r.Prompt {
		if id < 0 || int(id) >= m.Config.VocabSize {
			return fmt.Errorf("prompt token id %d outside the vocabulary of %d", id, m.Config.VocabSize)
		}
	}
	if err := r.Sample.Validate(); err != nil {
		return err
	}
	n := 1
	if adapters != nil {
		n = len(adapters.names)
	}
	if r.Adapter < 0 || r.Adapter >= n {
		return fmt.Errorf("adapter %d: %d adapters are installed", r.Adapter, n-1)
	}
	return nil
}

// Add queues a sequence. An invalid request is refused with an error (and
// Done is not called).
func (b *Batch) Add(r SeqRequest) error {
	if err := b.m.CheckRequest(r, b.opts.Adapters); err != nil {
		return err
	}
	sq := &seqState{req: r, stop: map[int32]bool{}, sampler: newSampler(r.Sample), added: time.Now()}
	sq.sampler.promptLen = len(r.Prompt)
	for _, id := range r.StopIDs {
		sq.stop[id] = true
	}
	if r.Sample.penalized() {
		sq.history = append([]int32(nil), r.Prompt...)
	}
	b.waiting = append(b.waiting, sq)
	return nil
}

// Pending is the number of sequences not yet finished.
func (b *Batch) Pending() int {
	n := len(b.waiting) + len(b.prefilling)
	for _, r := range b.rows {
		if !r.done {
			n++
		}
	}
	return n
}

// Active is the number of sequences prefilling or decoding (at most
// MaxBatch).
func (b *Batch) Active() int { return b.Pending() - len(b.waiting) }

// Step does one round of work: it drops finished rows, starts queued
// sequences while there is room, prefills up to PrefillChunk prompt tokens,
// moves fully prefilled sequences into the batch and runs one decode step.
// An error from MLX ends every sequence with FinishError and is returned.
func (b *Batch) Step() error {
	// Prefill and decode take the model's decode plan, as Generate's do.
	if _, err := b.m.decodeSettings(); err != nil {
		return b.fail(err)
	}
	b.cancelEnded()
	if b.inflight == nil {
		b.compact()
	}
	b.admit()
	if err := b.prefill(); err != nil {
		return b.fail(err)
	}
	if b.inflight == nil {
		b.join()
	}
	if err := b.decode(); err != nil {
		return b.fail(err)
	}
	return nil
}

// Close ends every unfinished sequence (FinishCancelled) and frees the
// caches.
func (b *Batch) Close() {
	b.endAll(FinishCancelled, errors.New("batch closed"))
}

// Run steps until every sequence has finished.
func (b *Batch) Run() error {
	for b.Pending() > 0 {
		if err := b.Step(); err != nil {
			return err
		}
	}
	b.Release()
	return nil
}

// Release frees the batch cache (and a decode step still in flight) once
// every sequence has finished; it does nothing while any is pending.
func (b *Batch) Release() {
	if b.Pending() == 0 {
		b.dropRows()
	}
}

func (b *Batch) fail(err error) error {
	b.endAll(FinishError, err)
	return err
}

func (b *Batch) endAll(reason FinishReason, err error) {
	for _, list := range [][]*seqState{b.waiting, b.prefilling, b.rows} {
		for _, sq := range list {
			b.finish(sq, reason, err)
		}
	}
	b.waiting, b.prefilling = nil, nil
	b.dropRows()
}

func (b *Batch) dropRows() {
	b.inflight.Free()
	b.inflight = nil
	for _, c := range b.caches {
		c.free()
	}
	b.caches, b.rows = nil, nil
	b.layout = batchLayout{}
}

// finish ends a sequence (once) and reports it.
func (b *Batch) finish(sq *seqState, reason FinishReason, err error) {
	if sq.done {
		return
	}
	sq.done = true
	FreeCaches(sq.caches)
	sq.caches = nil
	now := time.Now()
	res := SeqResult{PromptTokens: len(sq.req.Prompt), GeneratedTokens: sq.generated, Finish: reason,
		Err: err, Total: now.Sub(sq.added)}
	if !sq.started.IsZero() {
		res.Queued = sq.started.Sub(sq.added)
	}
	if !sq.first.IsZero() {
		res.FirstToken = sq.first.Sub(sq.added)
	}
	res.HitStopToken = sq.hitStop
	if sq.req.Done != nil {
		sq.req.Done(res)
	}
}

// cancelEnded ends the sequences whose context is done.
func (b *Batch) cancelEnded() {
	ended := func(sq *seqState) bool {
		if sq.req.Ctx == nil || sq.req.Ctx.Err() == nil {
			return false
		}
		b.finish(sq, FinishCancelled, sq.req.Ctx.Err())
		return true
	}
	b.waiting = dropIf(b.waiting, ended)
	b.prefilling = dropIf(b.prefilling, ended)
	for _, r := range b.rows {
		if !r.done {
			ended(r)
		}
	}
}

func dropIf(list []*seqState, f func(*seqState) bool) []*seqState {
	out := list[:0]
	for _, sq := range list {
		if !f(sq) {
			out = append(out, sq)
		}
	}
	clear(list[len(out):])
	return out
}

// admit moves queued sequences to prefilling while there is room.
func (b *Batch) admit() {
	for len(b.waiting) > 0 && len(b.rows)+len(b.prefilling) < b.opts.MaxBatch {
		sq := b.waiting[0]
		b.waiting = b.waiting[1:]
		sq.started = time.Now()
		sq.caches = b.m.NewCaches()
		b.prefilling = append(b.prefilling, sq)
	}
}

// prefill runs prompt chunks of the prefilling sequences, oldest first, up
// to PrefillChunk tokens in all. Each piece ends where Generate's chunks
// end, so the caches hold the same values.
func (b *Batch) prefill() error {
	chunk := b.opts.PrefillChunk
	budget := chunk
	for _, sq := range b.prefilling {
		for budget > 0 {
			end := len(sq.req.Prompt) - 1
			if sq.prefilled >= end {
				break
			}
			n := min(end-sq.prefilled, chunk-sq.prefilled%chunk)
			if err := b.prefillPiece(sq, n); err != nil {
				return fmt.Errorf("prefill: %w", err)
			}
			budget -= n
		}
	}
	return nil
}

func (b *Batch) prefillPiece(sq *seqState, n int) error {
	s := mlx.NewScope()
	defer s.Close()
	if err := b.opts.Adapters.Select([]int{sq.req.Adapter}); err != nil {
		return err
	}
	ids := mlx.FromInt32s(sq.req.Prompt[sq.prefilled:sq.prefilled+n], 1, n)
	h := b.m.Hidden(ids, sq.caches)
	state := []*mlx.Array{h}
	for _, c := range sq.caches {
		state = append(state, c.State()...)
	}
	if err := mlx.AsyncEval(state...); err != nil {
		return err
	}
	sq.prefilled += n
	return nil
}

// compact drops the finished rows from the batch cache, and the padding
// columns no remaining row needs.
func (b *Batch) compact() {
	var keep []int32
	for i, r := range b.rows {
		if !r.done {
			keep = append(keep, int32(i))
		}
	}
	if len(keep) == len(b.rows) {
		return
	}
	if len(keep) == 0 {
		b.dropRows()
		return
	}
	s := mlx.NewScope()
	defer s.Close()
	trim := math.MaxInt
	rows := make([]*seqState, len(keep))
	pads := make([]int, len(keep))
	for i, k := range keep {
		rows[i], pads[i] = b.rows[k], b.layout.pads[k]
		trim = min(trim, pads[i])
	}
	idx := mlx.FromInt32s(keep, len(keep))
	for _, c := range b.caches {
		k := mlx.Take(mlx.SliceAxis(c.keys, 2, trim, c.keys.Dim(2)), idx, 0)
		v := mlx.Take(mlx.SliceAxis(c.values, 2, trim, c.values.Dim(2)), idx, 0)
		c.replace(k, v)
	}
	for i := range pads {
		pads[i] -= trim
	}
	b.rows, b.layout = rows, batchLayout{length: b.layout.length - trim, pads: pads}
}

// join moves the fully prefilled sequences into the batch cache. The new
// length is the longest of the batch and the joining prompts; shorter ones
// are padded on the left.
func (b *Batch) join() {
	var ready []*seqState
	b.prefilling = dropIf(b.prefilling, func(sq *seqState) bool {
		if sq.prefilled < len(sq.req.Prompt)-1 {
			return false
		}
		ready = append(ready, sq)
		return true
	})
	if len(ready) == 0 {
		return
	}
	s := mlx.NewScope()
	defer s.Close()
	T := b.layout.length
	newT := T
	for _, sq := range ready {
		newT = max(newT, sq.prefilled)
	}
	cfg := b.m.Config
	if b.caches == nil {
		b.caches = make([]*batchCache, len(b.m.Layers))
		for i := range b.caches {
			b.caches[i] = &batchCache{}
		}
	}
	for l, c := range b.caches {
		var parts []rowPart
		if len(b.rows) > 0 {
			parts = append(parts, rowPart{keys: c.keys, values: c.values, rows: len(b.rows), n: T, pad: newT - T})
		}
		for _, sq := range ready {
			pc := sq.caches[l]
			parts = append(parts, rowPart{keys: pc.keys, values: pc.values, rows: 1, n: sq.prefilled, pad: newT - sq.prefilled})
		}
		k, v := assemble(parts, newT, b.m.Dtype, cfg.NumKVHeads, cfg.HeadDim, cfg.HeadDim)
		c.replace(k, v)
	}
	for i := range b.layout.pads {
		b.layout.pads[i] += newT - T
	}
	for _, sq := range ready {
		FreeCaches(sq.caches)
		sq.caches = nil
		sq.last = sq.req.Prompt[len(sq.req.Prompt)-1]
		b.rows = append(b.rows, sq)
		b.layout.pads = append(b.layout.pads, newT-sq.prefilled)
	}
	b.layout.length = newT
}

// GenerateBatch generates every request in batches of up to opts.MaxBatch
// sequences, as a Batch does, and returns when all have finished.
func (m *Model) GenerateBatch(reqs []SeqRequest, opts BatchOptions) error {
	b := NewBatch(m, opts)
	defer b.Close()
	for i, r := range reqs {
		if err := b.Add(r); err != nil {
			return fmt.Errorf("generate batch: request %d: %w", i, err)
		}
	}
	return b.Run()
}

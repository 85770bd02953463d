package llama

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

// SampleOptions choose how the next token is drawn.
type SampleOptions struct {
	Temp              float64 // 0 means greedy
	TopP              float64 // nucleus sampling; 0 or 1 disables
	TopK              int     // 0 disables
	MinP              float64 // 0 disables
	RepetitionPenalty float64 // 0 or 1 disables
	RepetitionContext int     // how many recent tokens the penalty sees (default 20)
	Seed              uint64
}

// GenerateOptions configure Generate.
type GenerateOptions struct {
	MaxTokens    int
	Sample       SampleOptions
	StopIDs      []int32 // end-of-sequence token ids
	PrefillChunk int     // prompt tokens per prefill step (default 512)
}

// GenerateStats reports a generation's speed and outcome.
type GenerateStats struct {
	PromptTokens     int
	GeneratedTokens  int
	PromptTPS        float64 // prompt tokens per second of prefill
	GenerationTPS    float64 // tokens per second of decoding, after the first token
	PeakMemoryBytes  int64
	HitStop          bool // ended with a stop token
	PrefillSeconds   float64
	GenerationSecond float64
}

// ErrPromptTooLong is returned when the prompt does not fit the context.
var ErrPromptTooLong = errors.New("prompt too long")

// Generate runs the prompt through the model and decodes up to MaxTokens
// tokens, calling emit for each (the stop token excluded). emit returns
// false to stop early. Call it on the MLX thread.
func (m *Model) Generate(prompt []int32, opts GenerateOptions, emit func(id int32) bool) (GenerateStats, error) {
	var st GenerateStats
	st.PromptTokens = len(prompt)
	if len(prompt) == 0 {
		return st, errors.New("generate: empty prompt")
	}
	if ctx := m.Config.MaxPositionEmbeddings; ctx > 0 && len(prompt)+opts.MaxTokens > ctx {
		return st, fmt.Errorf("generate: %w: %d prompt tokens + %d new tokens exceed the model's context of %d",
			ErrPromptTooLong, len(prompt), opts.MaxTokens, ctx)
	}
	for _, id := range prompt {
		if id < 0 || int(id) >= m.Config.VocabSize {
			return st, fmt.Errorf("generate: prompt token id %d outside the vocabulary of %d", id, m.Config.VocabSize)
		}
	}
	chunk := opts.PrefillChunk
	if chunk <= 0 {
		chunk = 512
	}
	stop := map[int32]bool{}
	for _, id := range opts.StopIDs {
		stop[id] = true
	}
	caches := m.NewCaches()
	defer FreeCaches(caches)
	sampler := newSampler(opts.Sample)

	mlx.ResetPeakMemory()
	t0 := time.Now()
	// Prefill all but the last prompt token in chunks; the last one runs
	// as the first decode step's input.
	for start := 0; start < len(prompt)-1; start += chunk {
		end := min(start+chunk, len(prompt)-1)
		s := mlx.NewScope()
		ids := mlx.FromInt32s(prompt[start:end], 1, end-start)
		h := m.Hidden(ids, caches)
		var state []*mlx.Array
		for _, c := range caches {
			state = append(state, c.State()...)
		}
		err := mlx.Eval(append(state, h)...)
		s.Close()
		if err != nil {
			return st, fmt.Errorf("generate: prefill: %w", err)
		}
	}
	history := append([]int32(nil), prompt...)

	// step builds the graph for the token after input (a (1,1) array) and
	// starts computing it.
	step := func(input *mlx.Array) (*mlx.Array, error) {
		s := mlx.NewScope()
		defer s.Close()
		logits := m.Forward(input, caches)
		last := mlx.Reshape(mlx.SliceAxis(logits, 1, logits.Dim(1)-1, logits.Dim(1)), 1, -1)
		next := sampler.sample(last, history)
		next = mlx.Reshape(next, 1, 1)
		if err := mlx.AsyncEval(next); err != nil {
			return nil, err
		}
		return s.Keep(next), nil
	}
	first := mlx.FromInt32s(prompt[len(prompt)-1:], 1, 1)
	y, err := step(first)
	first.Free()
	if err != nil {
		return st, fmt.Errorf("generate: %w", err)
	}
	// Building step i+1 while step i computes hides the graph-building
	// time. The repetition penalty needs token i first, so it runs in order.
	pipelined := opts.Sample.RepetitionPenalty == 0 || opts.Sample.RepetitionPenalty == 1
	var tFirst time.Time
	for st.GeneratedTokens < opts.MaxTokens {
		var yNext *mlx.Array
		if pipelined && st.GeneratedTokens+1 < opts.MaxTokens {
			if yNext, err = step(y); err != nil {
				y.Free()
				return st, fmt.Errorf("generate: %w", err)
			}
		}
		v, err := y.Item()
		y.Free()
		if err != nil {
			yNext.Free()
			return st, fmt.Errorf("generate: %w", err)
		}
		id := int32(v)
		if st.GeneratedTokens == 0 {
			tFirst = time.Now()
			st.PrefillSeconds = tFirst.Sub(t0).Seconds()
		}
		if stop[id] {
			st.HitStop = true
			yNext.Free()
			break
		}
		st.GeneratedTokens++
		history = append(history, id)
		if !emit(id) || st.GeneratedTokens >= opts.MaxTokens {
			yNext.Free()
			break
		}
		if !pipelined {
			in := mlx.FromInt32s([]int32{id}, 1, 1)
			yNext, err = step(in)
			in.Free()
			if err != nil {
				return st, fmt.Errorf("generate: %w", err)
			}
		}
		y = yNext
	}
	end := time.Now()
	st.PeakMemoryBytes = mlx.PeakMemory()
	if st.PrefillSeconds > 0 {
		st.PromptTPS = float64(len(prompt)) / st.PrefillSeconds
	}
	if !tFirst.IsZero() {
		st.GenerationSecond = end.Sub(tFirst).Seconds()
		if n := st.GeneratedTokens - 1; n > 0 && st.GenerationSecond > 0 {
			st.GenerationTPS = float64(n) / st.GenerationSecond
		}
	}
	return st, nil
}

// sampler draws tokens on the device.
type sampler struct {
	opts SampleOptions
	step uint64
}

func newSampler(o SampleOptions) *sampler {
	if o.RepetitionContext <= 0 {
		o.RepetitionContext = 20
	}
	return &sampler{opts: o}
}

// sample returns the next token id (shape (1,)) for logits (1, V).
func (s *sampler) sample(logits *mlx.Array, history []int32) *mlx.Array {
	o := s.opts
	logits = mlx.AsType(logits, mlx.Float32)
	if o.RepetitionPenalty > 0 && o.RepetitionPenalty != 1 && len(history) > 0 {
		ctx := history[max(0, len(history)-o.RepetitionContext):]
		idx := mlx.FromInt32s(ctx, 1, len(ctx))
		picked := mlx.TakeAlongAxis(logits, idx, 1)
		p := mlx.Scalar(o.RepetitionPenalty, mlx.Float32)
		zero := mlx.Scalar(0, mlx.Float32)
		// Make repeated tokens less likely: shrink positive logits, grow
		// negative ones.
		adj := mlx.Where(mlx.Less(picked, zero), mlx.Multiply(picked, p), mlx.Divide(picked, p))
		logits = mlx.PutAlongAxis(logits, idx, adj, 1)
	}
	if o.Temp <= 0 {
		return mlx.Argmax(logits, -1, false)
	}
	negInf := mlx.Scalar(math.Inf(-1), mlx.Float32)
	logits = mlx.MulScalar(logits, 1/o.Temp)
	V := logits.Dim(1)
	if o.TopK > 0 && o.TopK < V {
		sorted := mlx.Sort(logits, -1)
		kth := mlx.SliceAxis(sorted, 1, V-o.TopK, V-o.TopK+1)
		logits = mlx.Where(mlx.Less(logits, kth), negInf, logits)
	}
	if o.MinP > 0 {
		probs := mlx.Softmax(logits, true, -1)
		floor := mlx.MulScalar(mlx.Max(probs, true, -1), o.MinP)
		logits = mlx.Where(mlx.Less(probs, floor), negInf, logits)
	}
	if o.TopP > 0 && o.TopP < 1 {
		probs := mlx.Softmax(logits, true, -1)
		order := mlx.Argsort(mlx.Negative(probs), -1)
		sortedP := mlx.TakeAlongAxis(probs, order, -1)
		before := mlx.Cumsum(sortedP, -1, false, false) // mass strictly before each token
		drop := mlx.GreaterEqual(before, mlx.Scalar(o.TopP, mlx.Float32))
		sortedLogits := mlx.TakeAlongAxis(logits, order, -1)
		sortedLogits = mlx.Where(drop, negInf, sortedLogits)
		logits = mlx.PutAlongAxis(logits, order, sortedLogits, -1)
	}
	key := mlx.RandomKey(o.Seed*7919 + s.step)
	s.step++
	return mlx.Categorical(logits, -1, key)
}

package llama

import (
	"errors"
	"fmt"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

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
	sampler.promptLen = len(prompt)

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
	pipelined := !opts.Sample.penalized()
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

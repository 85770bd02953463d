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
	// Host is where the decode phase's wall time went on the host.
	Host DecodeHostTime
}

// DecodeHostTime splits the decode phase (after the first token, as
// GenerationTPS counts it) by what the host thread was doing. With the next
// token queued before the current one is read, Wait is the device time the
// host could not hide: near zero when the host is the bottleneck.
type DecodeHostTime struct {
	Tokens       int     // decode steps timed
	BuildSeconds float64 // building the step's graph and freeing its handles (Go code and cgo calls into MLX)
	EvalSeconds  float64 // inside AsyncEval: MLX schedules and encodes the graph
	WaitSeconds  float64 // inside Item: waiting for the token to be computed
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
	settings, err := m.decodeSettings()
	if err != nil {
		return st, fmt.Errorf("generate: %w", err)
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
	var host hostClock
	step := func(input *mlx.Array) (*mlx.Array, error) {
		t := time.Now()
		s := mlx.NewScope()
		logits := m.Forward(input, caches)
		last := mlx.Reshape(mlx.SliceAxis(logits, 1, logits.Dim(1)-1, logits.Dim(1)), 1, -1)
		next := mlx.Reshape(sampler.sample(last, history), 1, 1)
		t = host.add(&host.build, t)
		err := mlx.AsyncEval(next)
		t = host.add(&host.eval, t)
		s.Keep(next)
		s.Close() // the step's handles; the graph holds what it needs
		host.add(&host.build, t)
		if err != nil {
			next.Free()
			return nil, err
		}
		return next, nil
	}
	// Steps are queued before the tokens they follow are read: the device
	// computes token i while the host builds and encodes the steps after
	// it. Greedy and seeded sampling build step i+1 on token i still on the
	// device; the repetition penalty needs token i on the host first, so
	// it runs one step at a time.
	ahead := settings.Depth
	if opts.Sample.penalized() {
		ahead = 0
	}
	var queue []*mlx.Array // steps built and not yet read, oldest first
	defer func() {
		for _, y := range queue {
			y.Free()
		}
	}()
	built := 0
	queueStep := func(input *mlx.Array) error {
		y, err := step(input)
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		queue = append(queue, y)
		built++
		return nil
	}
	first := mlx.FromInt32s(prompt[len(prompt)-1:], 1, 1)
	err = queueStep(first)
	first.Free()
	if err != nil {
		return st, err
	}
	var tFirst time.Time
	for len(queue) > 0 && st.GeneratedTokens < opts.MaxTokens {
		for len(queue) <= ahead && built < opts.MaxTokens {
			if err := queueStep(queue[len(queue)-1]); err != nil {
				return st, err
			}
		}
		t := time.Now()
		v, err := queue[0].Item()
		host.add(&host.wait, t)
		queue[0].Free()
		queue = queue[1:]
		if err != nil {
			return st, fmt.Errorf("generate: %w", err)
		}
		id := int32(v)
		if st.GeneratedTokens == 0 {
			tFirst = time.Now()
			st.PrefillSeconds = tFirst.Sub(t0).Seconds()
			// The decode phase starts now: what the host did before
			// belongs to the first token.
			host = hostClock{}
		}
		if stop[id] {
			st.HitStop = true
			break
		}
		st.GeneratedTokens++
		history = append(history, id)
		if !emit(id) || st.GeneratedTokens >= opts.MaxTokens {
			break
		}
		if len(queue) == 0 && built < opts.MaxTokens {
			in := mlx.FromInt32s([]int32{id}, 1, 1)
			err := queueStep(in)
			in.Free()
			if err != nil {
				return st, err
			}
		}
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
		st.Host = DecodeHostTime{Tokens: max(st.GeneratedTokens-1, 0), BuildSeconds: host.build.Seconds(),
			EvalSeconds: host.eval.Seconds(), WaitSeconds: host.wait.Seconds()}
	}
	return st, nil
}

// hostClock adds up where the host thread spends a decode step.
type hostClock struct{ build, eval, wait time.Duration }

// add adds the time since t to d and returns now.
func (hostClock) add(d *time.Duration, t time.Time) time.Time {
	now := time.Now()
	*d += now.Sub(t)
	return now
}

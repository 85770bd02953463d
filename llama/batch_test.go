package llama

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// nearTie is the largest top-2 logit gap (in logits) at which a batched
// greedy sequence may pick a different token than the one-at-a-time run:
// batched float32 matrix products round differently in the last bits
// (relative differences around 1e-6, a few 1e-5 in logits of magnitude 10
// to 30), so only a gap this small can flip an argmax.
const nearTie = 1e-2

// stepwise decodes prompt one token at a time with a KV cache, with
// Generate's chunks, greedily after the sampler's repetition penalty, and
// returns the tokens (ending before a stop id) and the top-2 logit gap of the
// step that chose each one.
func stepwise(m *Model, prompt []int32, opts GenerateOptions) ([]int32, []float64, error) {
	caches := m.NewCaches()
	defer FreeCaches(caches)
	chunk := opts.PrefillChunk
	for start := 0; start < len(prompt)-1; start += chunk {
		end := min(start+chunk, len(prompt)-1)
		s := mlx.NewScope()
		h := m.Hidden(mlx.FromInt32s(prompt[start:end], 1, end-start), caches)
		err := mlx.Eval(h)
		s.Close()
		if err != nil {
			return nil, nil, err
		}
	}
	smp := newSampler(opts.Sample)
	smp.promptLen = len(prompt)
	history := slices.Clone(prompt)
	in := prompt[len(prompt)-1]
	var out []int32
	var gaps []float64
	for len(out) < opts.MaxTokens {
		s := mlx.NewScope()
		logits := m.Forward(mlx.FromInt32s([]int32{in}, 1, 1), caches)
		row := smp.penalize(mlx.AsType(mlx.Reshape(logits, 1, -1), mlx.Float32), history)
		v, err := row.Float32s()
		s.Close()
		if err != nil {
			return nil, nil, err
		}
		best, second := -1, -1
		for i := range v {
			switch {
			case best < 0 || v[i] > v[best]:
				best, second = i, best
			case second < 0 || v[i] > v[second]:
				second = i
			}
		}
		id := int32(best)
		if slices.Contains(opts.StopIDs, id) {
			break
		}
		out = append(out, id)
		gaps = append(gaps, float64(v[best]-v[second]))
		history = append(history, id)
		in = id
	}
	return out, gaps, nil
}

// batchCase is one sequence of a batch test.
type batchCase struct {
	prompt    []int32
	maxTokens int
	sample    SampleOptions
	stopIDs   []int32
	adapter   int
}

// runBatch generates cases in one Batch and returns each one's tokens and
// result.
func runBatch(m *Model, cases []batchCase, opts BatchOptions) ([][]int32, []SeqResult, error) {
	toks := make([][]int32, len(cases))
	res := make([]SeqResult, len(cases))
	called := make([]int, len(cases))
	reqs := make([]SeqRequest, len(cases))
	for i, c := range cases {
		reqs[i] = SeqRequest{Prompt: c.prompt, MaxTokens: c.maxTokens, Sample: c.sample, StopIDs: c.stopIDs, Adapter: c.adapter,
			Emit: func(id int32) bool { toks[i] = append(toks[i], id); return true },
			Done: func(r SeqResult) { res[i] = r; called[i]++ }}
	}
	if err := m.GenerateBatch(reqs, opts); err != nil {
		return nil, nil, err
	}
	for i, n := range called {
		if n != 1 {
			return nil, nil, fmt.Errorf("sequence %d: Done called %d times", i, n)
		}
	}
	return toks, res, nil
}

// compareGreedy checks a batched greedy sequence against the one-at-a-time
// tokens: equal, or equal up to a first difference at a near tie of the
// one-at-a-time run.
func compareGreedy(t *testing.T, name string, got, want []int32, gaps []float64) {
	t.Helper()
	for k := range min(len(got), len(want)) {
		if got[k] != want[k] {
			if gaps[k] >= nearTie {
				t.Errorf("%s: token %d is %d batched but %d one at a time, where the top-2 gap was %.4g (not a near tie, tolerance %g)\n batched %v\n one at a time %v",
					name, k, got[k], want[k], gaps[k], nearTie, got, want)
			} else {
				t.Logf("%s: first difference at token %d, a near tie (gap %.3g)", name, k, gaps[k])
			}
			return
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d tokens batched, %d one at a time\n batched %v\n one at a time %v", name, len(got), len(want), got, want)
	}
}

// checkBatchAgainstGenerate runs cases through one Batch and one at a time
// through Generate, and compares every sequence: greedy ones by
// compareGreedy, sampled ones exactly (the same seed draws the same keys).
// It runs on the MLX thread, so hard failures are returned, not t.Fatal.
// With reference set, each one-at-a-time run happens between reference(c)
// and the function it returns (to install what the case's adapter does).
func checkBatchAgainstGenerate(t *testing.T, m *Model, cases []batchCase, opts BatchOptions, reference ...func(batchCase) func()) ([][]int32, error) {
	t.Helper()
	got, res, err := runBatch(m, cases, opts)
	if err != nil {
		return nil, err
	}
	differs := 0
	for i, c := range cases {
		name := fmt.Sprintf("sequence %d (%d prompt tokens, %+v)", i, len(c.prompt), c.sample)
		gopts := GenerateOptions{MaxTokens: c.maxTokens, Sample: c.sample, StopIDs: c.stopIDs, PrefillChunk: opts.PrefillChunk}
		restore := func() {}
		if len(reference) > 0 {
			restore = reference[0](c)
		}
		want, st, err := generateIDs(m, c.prompt, gopts)
		if err != nil {
			restore()
			return nil, err
		}
		r := res[i]
		if r.GeneratedTokens != len(got[i]) || r.PromptTokens != len(c.prompt) {
			t.Errorf("%s: result counts %d prompt, %d generated tokens; emitted %d", name, r.PromptTokens, r.GeneratedTokens, len(got[i]))
		}
		wantFinish := FinishLength
		if st.HitStop {
			wantFinish = FinishStop
		}
		if slices.Equal(got[i], want) && (r.Finish != wantFinish || r.HitStopToken != st.HitStop || r.Err != nil) {
			t.Errorf("%s: finish %s (stop token %v, err %v), want %s (stop token %v)", name, r.Finish, r.HitStopToken, r.Err, wantFinish, st.HitStop)
		}
		if c.sample.Temp > 0 || slices.Equal(got[i], want) {
			restore()
			if !slices.Equal(got[i], want) {
				t.Errorf("%s: sampled batched %v, one at a time %v", name, got[i], want)
			}
			continue
		}
		differs++
		ref, gaps, err := stepwise(m, c.prompt, gopts)
		restore()
		if err != nil {
			return nil, err
		}
		if !slices.Equal(ref, want) {
			return nil, fmt.Errorf("%s: the stepwise reference %v differs from Generate %v", name, ref, want)
		}
		compareGreedy(t, name, got[i], want, gaps)
	}
	t.Logf("%d of %d sequences differ from one-at-a-time generation", differs, len(cases))
	return got, nil
}

// peakyRandomModel is a random GQA Llama (tiny shape: 4 query and 2 KV heads)
// whose weights are scaled up from N(0, 0.02) so that attention and logits
// are sharp: greedy choices then have clear margins instead of the near-flat
// logits of a fresh init.
func peakyRandomModel(t *testing.T) *Model {
	t.Helper()
	cfg, err := ShapeConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	var m *Model
	doMLX(t, func() error {
		w, err := RandomWeights(cfg, mlx.Float32, 5)
		if err != nil {
			return err
		}
		for k, a := range w {
			f := 6.0
			if k == "model.embed_tokens.weight" {
				f = 40
			}
			if a.Ndim() == 2 {
				w[k] = mlx.MulScalar(a, f)
				mlx.Detach(w[k])
				a.Free()
			}
		}
		m, err = build(cfg, w, LoadOptions{Dtype: "f32"})
		return err
	})
	t.Cleanup(func() { mlx.Do(func() error { m.Free(); return nil }) })
	return m
}

func randomPrompt(seed, n, vocab int) []int32 {
	p := make([]int32, n)
	x := uint32(seed*2654435761 + 1)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = int32(x % uint32(vocab))
	}
	return p
}

// TestBatchRandomLlama runs sequences of many prompt lengths (one token to
// several prefill chunks) and settings through a batch smaller than their
// number, so sequences join as others leave and prefill interleaves with
// decoding, and compares each with Generate.
func TestBatchRandomLlama(t *testing.T) {
	m := peakyRandomModel(t)
	V := m.Config.VocabSize
	greedy := SampleOptions{}
	cases := []batchCase{
		{prompt: randomPrompt(1, 1, V), maxTokens: 14, sample: greedy},
		{prompt: randomPrompt(2, 23, V), maxTokens: 9, sample: greedy},
		{prompt: randomPrompt(3, 5, V), maxTokens: 20, sample: SampleOptions{RepetitionPenalty: 1.5, RepetitionContext: 8}},
		{prompt: randomPrompt(4, 40, V), maxTokens: 12, sample: SampleOptions{Temp: 0.9, TopK: 40, TopP: 0.9, Seed: 3}},
		{prompt: randomPrompt(5, 2, V), maxTokens: 16, sample: greedy},
		{prompt: randomPrompt(6, 17, V), maxTokens: 18, sample: SampleOptions{Temp: 1.2, MinP: 0.05, Seed: 9}},
		{prompt: randomPrompt(7, 9, V), maxTokens: 11, sample: greedy},
		{prompt: randomPrompt(9, 4, V), maxTokens: 16, sample: SampleOptions{FrequencyPenalty: 0.8, PresencePenalty: 0.5}},
		{prompt: randomPrompt(8, 31, V), maxTokens: 7, sample: SampleOptions{Temp: 0.7, Seed: 1}},
	}
	// A stop id that the one-at-a-time run reaches mid-way.
	doMLX(t, func() error {
		want, _, err := generateIDs(m, cases[6].prompt, GenerateOptions{MaxTokens: 11, PrefillChunk: 8})
		if err != nil {
			return err
		}
		cases[6].stopIDs = []int32{want[5]}
		return nil
	})
	doMLX(t, func() error {
		before := mlx.LiveArrays()
		if _, err := checkBatchAgainstGenerate(t, m, cases, BatchOptions{MaxBatch: 3, PrefillChunk: 8}); err != nil {
			return err
		}
		if after := mlx.LiveArrays(); after != before {
			t.Errorf("live arrays %d after the batch, %d before", after, before)
		}
		// The near-tie reference decodes what Generate decodes.
		for _, c := range cases[:3] {
			gopts := GenerateOptions{MaxTokens: c.maxTokens, Sample: c.sample, PrefillChunk: 8}
			want, _, err := generateIDs(m, c.prompt, gopts)
			if err != nil {
				return err
			}
			ref, gaps, err := stepwise(m, c.prompt, gopts)
			if err != nil {
				return err
			}
			if !slices.Equal(ref, want) || len(gaps) != len(ref) || slices.Min(gaps) <= 0 {
				t.Errorf("stepwise %v (gaps %v), Generate %v", ref, gaps, want)
			}
		}
		return nil
	})
}

// TestBatchSmolLM2 compares batched greedy decoding of chat prompts with
// Generate on SmolLM2 in float32.
func TestBatchSmolLM2(t *testing.T) {
	withSmolLM2(t, func(b *Bundle) error {
		questions := []string{
			"What is the capital of France?",
			"Name three primary colors.",
			"Why is the sky blue? Answer in one sentence, please.",
			"What is 2+2?",
		}
		var cases []batchCase
		for i, q := range questions {
			ids, _, err := b.Tokenizer.EncodeChat([]Message{{Role: "user", Content: q}}, true)
			if err != nil {
				return err
			}
			cases = append(cases, batchCase{prompt: ids, maxTokens: 5 + 2*i, stopIDs: b.StopIDs})
		}
		cases[1].sample = SampleOptions{RepetitionPenalty: 1.3}
		_, err := checkBatchAgainstGenerate(t, b.Model, cases, BatchOptions{MaxBatch: 3, PrefillChunk: 16})
		return err
	})
}

// TestBatchCheckRequest checks the refusals of Add.
func TestBatchCheckRequest(t *testing.T) {
	m := peakyRandomModel(t)
	ctx := m.Config.MaxPositionEmbeddings
	for _, c := range []struct {
		name string
		req  SeqRequest
		want string
	}{
		{"empty", SeqRequest{MaxTokens: 1}, "empty prompt"},
		{"no tokens", SeqRequest{Prompt: []int32{1}}, "max tokens must be positive"},
		{"too long", SeqRequest{Prompt: make([]int32, ctx-3), MaxTokens: 4}, fmt.Sprintf("%d prompt tokens + 4 new tokens exceed the model's context of %d", ctx-3, ctx)},
		{"bad id", SeqRequest{Prompt: []int32{1, 5000}, MaxTokens: 1}, "prompt token id 5000 outside the vocabulary of 1024"},
		{"bad temp", SeqRequest{Prompt: []int32{1}, MaxTokens: 1, Sample: SampleOptions{Temp: -1}}, "temperature must be"},
		{"bad top-p", SeqRequest{Prompt: []int32{1}, MaxTokens: 1, Sample: SampleOptions{TopP: 1.5}}, "top_p must be in [0, 1]"},
		{"no adapters", SeqRequest{Prompt: []int32{1}, MaxTokens: 1, Adapter: 1}, "adapter 1: 0 adapters are installed"},
	} {
		err := m.CheckRequest(c.req, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if err := m.CheckRequest(SeqRequest{Prompt: make([]int32, ctx-4), MaxTokens: 4}, nil); err != nil {
		t.Errorf("a request that exactly fills the context: %v", err)
	}
}

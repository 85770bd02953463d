package llama

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// Tests on SmolLM2-135M-Instruct (Q4_1 GGUF), a real pretrained
// Llama-architecture model, and on random tiny models. The CPU is slow
// (about 100 prompt and 10 generated tokens per second for SmolLM2 on two
// cores with OpenBLAS linked, as build.sh does; several times slower at
// prefill without it), so the generations are short.

// withSmolLM2 opens the SmolLM2 bundle on the MLX thread, runs f, closes it,
// and checks that closing freed every array Open made.
func withSmolLM2(t *testing.T, f func(b *Bundle) error) {
	t.Helper()
	path := requireAsset(t, smolLM2GGUF)
	doMLX(t, func() error {
		before := mlx.LiveArrays()
		b, err := Open(path, LoadOptions{})
		if err != nil {
			return err
		}
		ferr := f(b)
		b.Close()
		if after := mlx.LiveArrays(); after != before && ferr == nil {
			return fmt.Errorf("live arrays %d after Bundle.Close, %d before Open", after, before)
		}
		return ferr
	})
}

// generateIDs runs Model.Generate and collects the emitted ids.
func generateIDs(m *Model, prompt []int32, opts GenerateOptions) ([]int32, GenerateStats, error) {
	var out []int32
	st, err := m.Generate(prompt, opts, func(id int32) bool {
		out = append(out, id)
		return true
	})
	return out, st, err
}

// greedyNoCache decodes n tokens greedily by running the whole sequence
// through the model, without a KV cache, at every step.
func greedyNoCache(m *Model, prompt []int32, n int) ([]int32, error) {
	seq := slices.Clone(prompt)
	var out []int32
	for range n {
		s := mlx.NewScope()
		logits := m.Forward(mlx.FromInt32s(seq, 1, len(seq)), nil)
		last := mlx.Reshape(mlx.SliceAxis(logits, 1, len(seq)-1, len(seq)), -1)
		v, err := mlx.Argmax(last, 0, false).Item()
		s.Close()
		if err != nil {
			return nil, err
		}
		seq = append(seq, int32(v))
		out = append(out, int32(v))
	}
	return out, nil
}

func TestSmolLM2Bundle(t *testing.T) {
	withSmolLM2(t, func(b *Bundle) error {
		c := b.Model.Config
		if c.NumLayers != 30 || c.HiddenSize != 576 || c.NumHeads != 9 || c.NumKVHeads != 3 || c.VocabSize != 49152 || !c.TieWordEmbeddings {
			t.Errorf("config %+v", *c)
		}
		if b.Tokenizer.VocabSize() != 49152 {
			t.Errorf("tokenizer vocab %d, want 49152", b.Tokenizer.VocabSize())
		}
		imEnd, ok := b.Tokenizer.TokenID("<|im_end|>")
		if !ok || !b.IsStop(imEnd) {
			t.Errorf("<|im_end|> (id %d, found %v) is not a stop id; stop ids %v", imEnd, ok, b.StopIDs)
		}
		if b.IsStop(1000) {
			t.Errorf("an ordinary token is a stop id: %v", b.StopIDs)
		}
		ct, err := b.ChatTemplate()
		if err != nil {
			return err
		}
		if ct.Format != ChatFormatChatML {
			t.Errorf("chat format %q, want chatml", ct.Format)
		}
		ids, err := b.EncodePrompt([]Message{{Role: "user", Content: "Hi"}}, true)
		if err != nil {
			return err
		}
		want := "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
		if got := b.Tokenizer.Decode(ids); got != want {
			t.Errorf("chat prompt decodes to %q, want %q", got, want)
		}
		return nil
	})
}

// TestSmolLM2Answers asks factual questions and checks the greedy answer
// contains the expected word. Only questions the model gets right are kept;
// each generation stops as soon as the word appears.
func TestSmolLM2Answers(t *testing.T) {
	cases := []struct {
		q    string
		want string // a regexp
	}{
		{"What is the capital of France?", `\bParis\b`},
		{"What is 2+2?", `\b4\b`},
		{"What is the chemical symbol for gold?", `\bAu\b`},
		{"What is the opposite of hot?", `\b[Cc]old\b`},
		{"Who wrote Romeo and Juliet?", `\bShakespeare\b`},
	}
	withSmolLM2(t, func(b *Bundle) error {
		for _, tc := range cases {
			re := regexp.MustCompile(tc.want)
			ids, err := b.EncodePrompt([]Message{{Role: "user", Content: tc.q}}, true)
			if err != nil {
				return err
			}
			dec := b.Tokenizer.NewStreamDecoder()
			var text strings.Builder
			_, err = b.Model.Generate(ids, GenerateOptions{MaxTokens: 20, StopIDs: b.StopIDs}, func(id int32) bool {
				text.WriteString(dec.Add(id))
				return !re.MatchString(text.String())
			})
			if err != nil {
				return err
			}
			text.WriteString(dec.Flush())
			t.Logf("%q -> %q", tc.q, text.String())
			if !re.MatchString(text.String()) {
				t.Errorf("%q: answer %q does not match %s", tc.q, text.String(), tc.want)
			}
		}
		return nil
	})
}

func TestSmolLM2RoundTrip(t *testing.T) {
	withSmolLM2(t, func(b *Bundle) error {
		for _, s := range []string{
			"The quick brown fox jumps over the lazy dog.",
			"  leading spaces, tabs\tand\nnewlines\n\n",
			"Unicode: café, naïve, Привет мир, 日本語のテキスト, emoji 🦙🚀 and math ∑x².",
			"code: func main() { fmt.Println(\"hi\") } // 12345 + 678",
			"<|im_start|>user\nspecial tokens<|im_end|>",
		} {
			ids, err := b.Tokenizer.Encode(s, false)
			if err != nil {
				return err
			}
			if got := b.Tokenizer.Decode(ids); got != s {
				t.Errorf("Decode(Encode(%q)) = %q", s, got)
			}
			dec := b.Tokenizer.NewStreamDecoder()
			var sb strings.Builder
			for _, id := range ids {
				sb.WriteString(dec.Add(id))
			}
			sb.WriteString(dec.Flush())
			if sb.String() != s {
				t.Errorf("streamed decode of %q = %q", s, sb.String())
			}
		}
		return nil
	})
}

// TestSmolLM2CacheMatchesRecompute checks that KV-cached greedy decoding
// gives the same tokens as recomputing the whole sequence without a cache
// at every step, and that chunked prefill gives the same tokens as one-shot
// prefill.
func TestSmolLM2CacheMatchesRecompute(t *testing.T) {
	withSmolLM2(t, func(b *Bundle) error {
		prompt, err := b.Tokenizer.Encode("The three primary colors are", true)
		if err != nil {
			return err
		}
		const n = 24
		cached, _, err := generateIDs(b.Model, prompt, GenerateOptions{MaxTokens: n})
		if err != nil {
			return err
		}
		t.Logf("cached: %q", b.Tokenizer.Decode(cached))
		if len(cached) != n {
			t.Fatalf("generated %d tokens, want %d", len(cached), n)
		}
		ref, err := greedyNoCache(b.Model, prompt, n)
		if err != nil {
			return err
		}
		if !slices.Equal(cached, ref) {
			t.Errorf("cached greedy %v\nrecomputed    %v", cached, ref)
		}
		// The same check in one pass: a causal forward pass over
		// prompt+generated tokens gives at every position the logits of
		// recomputing the prefix that ends there.
		seq := append(slices.Clone(prompt), cached...)
		s := mlx.NewScope()
		logits := b.Model.Forward(mlx.FromInt32s(seq, 1, len(seq)), nil)
		am, err := mlx.Argmax(logits, -1, false).Int32s()
		s.Close()
		if err != nil {
			return err
		}
		if onePass := am[len(prompt)-1 : len(seq)-1]; !slices.Equal(cached, onePass) {
			t.Errorf("cached greedy %v\none-pass      %v", cached, onePass)
		}

		long, err := b.Tokenizer.Encode("Paris is the capital and largest city of France. It is known for the Eiffel Tower, the Louvre and", true)
		if err != nil {
			return err
		}
		oneShot, _, err := generateIDs(b.Model, long, GenerateOptions{MaxTokens: 6})
		if err != nil {
			return err
		}
		chunked, _, err := generateIDs(b.Model, long, GenerateOptions{MaxTokens: 6, PrefillChunk: 5})
		if err != nil {
			return err
		}
		if !slices.Equal(oneShot, chunked) {
			t.Errorf("prefill in chunks of 5: %v, one-shot: %v", chunked, oneShot)
		}
		return nil
	})
}

// TestTinyCacheMatchesRecompute is the cache and chunked-prefill check on a
// random tiny model, with a prompt that spans several chunks and a cache
// that grows past its first step.
func TestTinyCacheMatchesRecompute(t *testing.T) {
	cfg, err := ShapeConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	doMLX(t, func() error {
		m, err := NewRandomModel(cfg, mlx.Float32, 3)
		if err != nil {
			return err
		}
		defer m.Free()
		prompt := make([]int32, 250)
		for i := range prompt {
			prompt[i] = int32((i*131 + 7) % cfg.VocabSize)
		}
		const n = 24 // crosses the cache's 256-position step
		cached, st, err := generateIDs(m, prompt, GenerateOptions{MaxTokens: n})
		if err != nil {
			return err
		}
		if st.GeneratedTokens != n || len(cached) != n {
			t.Fatalf("generated %d tokens (stats %d), want %d", len(cached), st.GeneratedTokens, n)
		}
		ref, err := greedyNoCache(m, prompt, n)
		if err != nil {
			return err
		}
		if !slices.Equal(cached, ref) {
			t.Errorf("cached greedy %v\nrecomputed    %v", cached, ref)
		}
		for _, chunk := range []int{1, 5, 64} {
			got, _, err := generateIDs(m, prompt, GenerateOptions{MaxTokens: n, PrefillChunk: chunk})
			if err != nil {
				return err
			}
			if !slices.Equal(got, cached) {
				t.Errorf("prefill chunk %d: %v, one-shot %v", chunk, got, cached)
			}
		}
		return nil
	})
}

// TestSmolLM2Sampling checks seeded sampling is reproducible, top-k 1 is
// greedy, and a repetition penalty changes a repetitive continuation.
func TestSmolLM2Sampling(t *testing.T) {
	withSmolLM2(t, func(b *Bundle) error {
		prompt, err := b.Tokenizer.Encode("Once upon a time, in a small village,", true)
		if err != nil {
			return err
		}
		const n = 12
		greedy, _, err := generateIDs(b.Model, prompt, GenerateOptions{MaxTokens: n})
		if err != nil {
			return err
		}
		hot := SampleOptions{Temp: 1.5, Seed: 42}
		s1, _, err := generateIDs(b.Model, prompt, GenerateOptions{MaxTokens: n, Sample: hot})
		if err != nil {
			return err
		}
		s2, _, err := generateIDs(b.Model, prompt, GenerateOptions{MaxTokens: n, Sample: hot})
		if err != nil {
			return err
		}
		t.Logf("greedy %q\nsampled %q", b.Tokenizer.Decode(greedy), b.Tokenizer.Decode(s1))
		if !slices.Equal(s1, s2) {
			t.Errorf("same seed, different samples: %v vs %v", s1, s2)
		}
		if slices.Equal(s1, greedy) {
			t.Errorf("temperature 1.5 sampling equals greedy decoding: %v", s1)
		}
		other := hot
		other.Seed = 43
		s3, _, err := generateIDs(b.Model, prompt, GenerateOptions{MaxTokens: n, Sample: other})
		if err != nil {
			return err
		}
		if slices.Equal(s1, s3) {
			t.Errorf("seeds 42 and 43 gave the same samples: %v", s1)
		}
		topK1, _, err := generateIDs(b.Model, prompt, GenerateOptions{MaxTokens: n, Sample: SampleOptions{Temp: 1, TopK: 1, Seed: 7}})
		if err != nil {
			return err
		}
		if !slices.Equal(topK1, greedy) {
			t.Errorf("top-k 1 %v, greedy %v", topK1, greedy)
		}

		rep, err := b.Tokenizer.Encode("one two one two one two one two one two one two one", true)
		if err != nil {
			return err
		}
		plain, _, err := generateIDs(b.Model, rep, GenerateOptions{MaxTokens: 8})
		if err != nil {
			return err
		}
		penal, _, err := generateIDs(b.Model, rep, GenerateOptions{MaxTokens: 8, Sample: SampleOptions{RepetitionPenalty: 1.8}})
		if err != nil {
			return err
		}
		t.Logf("repetitive prompt: plain %q, penalty 1.8 %q", b.Tokenizer.Decode(plain), b.Tokenizer.Decode(penal))
		if slices.Equal(plain, penal) {
			t.Errorf("repetition penalty 1.8 did not change the output %q", b.Tokenizer.Decode(plain))
		}
		return nil
	})
}

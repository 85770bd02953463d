package serve

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// writeAdapter saves an mlx-lm format adapter for SmolLM2 with random,
// non-zero B factors, so it changes the answers.
func writeAdapter(t *testing.T, dir string, seed uint64, keys []string) {
	t.Helper()
	err := mlx.Do(func() error {
		b, err := llama.Open(repoPath(t, smolLM2), llama.LoadOptions{})
		if err != nil {
			return err
		}
		defer b.Close()
		a, err := lora.Apply(b.Model, lora.Settings{Rank: 4, Alpha: 8, NumLayers: -1, Keys: keys}, seed)
		if err != nil {
			return err
		}
		defer a.Remove()
		for i, n := range a.Names {
			l := a.Layers[n]
			k := mlx.RandomKey(seed*1000 + uint64(i))
			nb := mlx.Normal(0, 0.3, mlx.Float32, k, l.B.Shape()...)
			k.Free()
			mlx.Detach(nb)
			l.B.Free()
			l.B = nb
		}
		return a.Save(dir)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestServeAdapters serves SmolLM2 with two adapters; requests for the base
// model and each adapter, the same prompts, run concurrently in one batch,
// and each answer equals the one-at-a-time answer with that adapter alone
// loaded.
func TestServeAdapters(t *testing.T) {
	dirA, dirB := filepath.Join(t.TempDir(), "fung"), filepath.Join(t.TempDir(), "other")
	writeAdapter(t, dirA, 1, []string{"self_attn.q_proj", "self_attn.v_proj"})
	writeAdapter(t, dirB, 2, []string{"self_attn.v_proj", "mlp.down_proj"})
	prompts := []string{"What breaks a fast?", "Name a green vegetable."}
	models := []struct{ name, dir string }{{"", ""}, {"fung", dirA}, {"other", dirB}}
	var reqs []refRequest
	for _, p := range prompts {
		for _, m := range models {
			reqs = append(reqs, refRequest{messages: []llama.Message{{Role: "user", Content: p}}, maxTokens: 8, adapter: m.dir})
		}
	}
	refs := references(t, reqs)
	if refs[0].text == refs[1].text || refs[0].text == refs[2].text || refs[1].text == refs[2].text {
		t.Fatalf("the adapters do not change the answer: %q, %q, %q", refs[0].text, refs[1].text, refs[2].text)
	}
	s := startServer(t, RunOptions{Adapters: []AdapterSpec{{Name: "fung", Dir: dirA}, {Name: "other", Dir: dirB}}})
	c := goClient(s, "")
	list, err := c.ListModels(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Models {
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []string{"SmolLM2-135M-Instruct.Q4_1.gguf", "fung", "other"}) {
		t.Errorf("models %q", ids)
	}
	answers := make([]string, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.CreateChatCompletion(t.Context(), openai.ChatCompletionRequest{
				Model:     models[i%len(models)].name,
				Messages:  []openai.ChatCompletionMessage{{Role: "user", Content: reqs[i].messages[0].Content}},
				MaxTokens: 8,
			})
			if err == nil {
				answers[i] = resp.Choices[0].Message.Content
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range reqs {
		name := fmt.Sprintf("prompt %q, model %q", reqs[i].messages[0].Content, models[i%len(models)].name)
		if errs[i] != nil {
			t.Errorf("%s: %v", name, errs[i])
			continue
		}
		checkAnswer(t, name, answers[i], refs[i])
	}
}

func TestParseAdapterSpec(t *testing.T) {
	for _, c := range []struct {
		in        string
		name, dir string
		wantErr   bool
	}{
		{"runs/fung", "fung", "runs/fung", false},
		{"runs/fung/", "fung", "runs/fung/", false},
		{"a=runs/x", "a", "runs/x", false},
		{"=runs/x", "", "", true},
		{"a=", "", "", true},
	} {
		sp, err := ParseAdapterSpec(c.in)
		if (err != nil) != c.wantErr || (!c.wantErr && (sp.Name != c.name || sp.Dir != c.dir)) {
			t.Errorf("%q: %+v, %v", c.in, sp, err)
		}
	}
}

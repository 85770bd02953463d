package lora

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// TestLoadSplitErrors: malformed or unusable training data is refused at
// load with the file and line.
func TestLoadSplitErrors(t *testing.T) {
	enc := wordEncoder{vocab: 1024}
	good := `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}`
	cases := []struct {
		name, content string
		want          []string
	}{
		{"malformed JSON", good + "\n" + good + "\n" + `{"messages": [{"role": "user"` + "\n" + good + "\n", []string{"train.jsonl line 3", "malformed JSON"}},
		{"empty", "", []string{"the train split is empty"}},
		{"blank lines only", "\n  \n\n", []string{"the train split is empty"}},
		{"no known format", good + "\n" + `{"input": "x", "output": "y"}` + "\n", []string{"line 2", `want "messages", "prompt" and "completion", or "text"`}},
		{"bad role", `{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}`, []string{"line 1", `role "robot"`}},
		{"ends with the user", `{"messages": [{"role": "user", "content": "hi"}]}`, []string{"line 1", "the last message must be the assistant's answer"}},
		{"prompt without completion", good + "\n\n" + `{"prompt": "hi"}` + "\n", []string{"line 3"}},
		{"answer truncated away", `{"messages": [{"role": "user", "content": "` + strings.Repeat("w ", 40) + `"}, {"role": "assistant", "content": "ok"}]}`, []string{"line 1", "no tokens to train on", "16 tokens"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "train.jsonl", tc.content)
			_, err := traindata.LoadSplit(traindata.Config{Dir: dir, MaskPrompt: true, MaxSeqLength: 16}, "train", enc)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	_, err := traindata.LoadSplit(traindata.Config{Dir: t.TempDir(), MaxSeqLength: 16}, "valid", enc)
	if err == nil || !strings.Contains(err.Error(), "load valid split") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// TestLoadSplitTokens: the loss mask, formats, system prompt and
// truncation of LoadSplit, on the test encoder's exact ids.
func TestLoadSplitTokens(t *testing.T) {
	enc := wordEncoder{vocab: 1024}
	w := enc.word
	dir := t.TempDir()
	writeFile(t, dir, "train.jsonl", strings.Join([]string{
		`{"messages": [{"role": "user", "content": "is tea ok"}, {"role": "assistant", "content": "yes it is"}], "id": 7}`,
		`{"prompt": "is tea ok", "completion": "yes it is"}`,
		`{"text": "tea is ok"}`,
		`{"messages": [{"role": "user", "content": "a b c d e f g h"}, {"role": "assistant", "content": "one two three four five six"}]}`,
	}, "\n")+"\n")
	s, err := traindata.LoadSplit(traindata.Config{Dir: dir, MaskPrompt: true, MaxSeqLength: 14}, "train", enc)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(v ...int32) string { return fmt.Sprint(v) }
	chat := ids(tokBOS, tokUser, w("is"), w("tea"), w("ok"), tokEOS, tokAssistant, w("yes"), w("it"), w("is"), tokEOS)
	mask := "[false false false false false false false true true true true]"
	for i := 0; i < 2; i++ {
		ex := s.Examples[i]
		if fmt.Sprint(ex.Tokens) != chat || fmt.Sprint(ex.Counted) != mask || ex.Line != i+1 {
			t.Errorf("example %d: tokens %v counted %v line %d\nwant %v %v", i, ex.Tokens, ex.Counted, ex.Line, chat, mask)
		}
	}
	if ex := s.Examples[2]; fmt.Sprint(ex.Tokens) != ids(tokBOS, w("tea"), w("is"), w("ok"), tokEOS) ||
		fmt.Sprint(ex.Counted) != "[false true true true true]" {
		t.Errorf("text example: %v %v", ex.Tokens, ex.Counted)
	}
	// 21 tokens cut to 14: BOS user a..h EOS assistant one two.
	if ex := s.Examples[3]; len(ex.Tokens) != 14 || fmt.Sprint(ex.Counted[11:]) != "[false true true]" || s.Truncated != 1 {
		t.Errorf("truncated example: %d tokens, counted %v, truncated %d", len(ex.Tokens), ex.Counted, s.Truncated)
	}
	if len(s.SHA256) != 64 || s.Path != filepath.Join(dir, "train.jsonl") {
		t.Errorf("split path %q sha %q", s.Path, s.SHA256)
	}
	// Without mask_prompt every token after the first counts; a system
	// prompt is prepended when an example has none.
	s, err = traindata.LoadSplit(traindata.Config{Dir: dir, MaxSeqLength: 64, SystemPrompt: "be brief"}, "train", enc)
	if err != nil {
		t.Fatal(err)
	}
	ex := s.Examples[0]
	want := ids(tokBOS, tokSystem, w("be"), w("brief"), tokEOS, tokUser, w("is"), w("tea"), w("ok"), tokEOS, tokAssistant, w("yes"), w("it"), w("is"), tokEOS)
	if fmt.Sprint(ex.Tokens) != want {
		t.Errorf("with a system prompt: %v, want %v", ex.Tokens, want)
	}
	for i, c := range ex.Counted {
		if c != (i > 0) {
			t.Errorf("mask_prompt off: token %d counted %v", i, c)
		}
	}
}

// TestAdapterPlacementErrors: more LoRA layers than the model has, bad
// keys, and double application are refused before training.
func TestAdapterPlacementErrors(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs[:2])
	var errs []error
	var applied int
	out := filepath.Join(t.TempDir(), "run")
	doMLX(t, func() error {
		m, err := tinyModel(2, 1)
		if err != nil {
			return err
		}
		defer m.Free()
		cfg := testConfig(out)
		cfg.LoRA.NumLayers = 3
		_, err = NewTrainer(cfg, m, train, train, tokPad, RunMetadata{}, quietLog())
		errs = append(errs, err)
		cfg.LoRA.NumLayers = -1
		cfg.LoRA.Keys = []string{"self_attn.qproj"}
		_, err = NewTrainer(cfg, m, train, train, tokPad, RunMetadata{}, quietLog())
		errs = append(errs, err)
		a, err := Apply(m, Settings{Rank: 2, Alpha: 4, NumLayers: -1, Keys: []string{"self_attn.q_proj"}}, 1)
		if err != nil {
			return err
		}
		applied = len(a.Names)
		// A failed Apply leaves the model as it was: v is wrapped before q
		// fails, and must be unwrapped again.
		live := mlx.LiveArrays()
		_, err = Apply(m, Settings{Rank: 2, Alpha: 4, NumLayers: 1, Keys: []string{"self_attn.v_proj", "self_attn.q_proj"}}, 1)
		errs = append(errs, err)
		if _, ok := m.Layers[1].Attn.V.(*llama.Linear); !ok {
			t.Errorf("after a failed Apply, layer 1 v_proj is %T", m.Layers[1].Attn.V)
		}
		if n := mlx.LiveArrays() - live; n != 0 {
			t.Errorf("a failed Apply left %d arrays alive", n)
		}
		a.Remove()
		for _, l := range m.Layers {
			if _, ok := l.Attn.Q.(*llama.Linear); !ok {
				return fmt.Errorf("Remove left %T in place of the base layer", l.Attn.Q)
			}
		}
		// An adapter for more layers than this model has.
		dir := t.TempDir()
		writeFile(t, dir, "adapter_config.json", `{"fine_tune_type": "lora", "num_layers": 4, "lora_parameters": {"rank": 2, "dropout": 0, "scale": 2, "keys": ["self_attn.q_proj"]}}`)
		_, err = Load(m, dir)
		errs = append(errs, err)
		writeFile(t, dir, "adapter_config.json", `{"fine_tune_type": "dora", "num_layers": 1, "lora_parameters": {"rank": 2, "dropout": 0, "scale": 2}}`)
		_, err = Load(m, dir)
		errs = append(errs, err)
		_, err = Load(m, filepath.Join(dir, "missing"))
		errs = append(errs, err)
		return nil
	})
	if applied != 2 {
		t.Errorf("num_layers -1 adapted %d layers, want 2", applied)
	}
	wants := []string{
		"lora.num_layers is 3 but the model has only 2 layers",
		`unknown module "self_attn.qproj"`,
		"already has an adapter",
		"adapter_config.json: num_layers is 4 but the model has only 2 layers",
		`fine_tune_type "dora" unsupported`,
		"load adapter",
	}
	for i, w := range wants {
		if errs[i] == nil || !strings.Contains(errs[i].Error(), w) {
			t.Errorf("case %d: error %v, want one containing %q", i, errs[i], w)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("NewTrainer errors created the output directory")
	}
}

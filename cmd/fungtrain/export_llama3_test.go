package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/internal/gguf"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// llama3TestConfig is a Llama-3-shaped model small enough for the CPU: Llama
// 3.2's vocabulary, rope theta and llama3 RoPE scaling, GQA, tied
// embeddings, with a hidden size of 64 in 2 layers.
func llama3TestConfig() *llama.Config {
	bos := 128000
	return &llama.Config{ModelType: "llama", Architectures: []string{"LlamaForCausalLM"},
		HiddenSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, HeadDim: 16, IntermediateSize: 128,
		VocabSize: 128256, RMSNormEps: 1e-5, RopeTheta: 500000, TieWordEmbeddings: true, MaxPositionEmbeddings: 131072,
		RopeScaling: &llama.RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
		BOSTokenID:  &bos, EOSTokenID: llama.IntList{128001, 128008, 128009}, TorchDtype: "float32"}
}

// writeLlama3TestModel writes a random float32 HF checkpoint of cfg with the
// real Llama 3 tokenizer. The attention weights are scaled up (q, k ×10;
// v, o ×10) so that attention is peaked and RoPE shapes the logits: with
// N(0, 0.02) weights attention is nearly uniform and RoPE barely matters.
func writeLlama3TestModel(t *testing.T, dir string, cfg *llama.Config) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	err := mlx.Do(func() error {
		w, err := llama.RandomWeights(cfg, mlx.Float32, 3)
		if err != nil {
			return err
		}
		s := mlx.NewScope()
		defer s.Close()
		for k, a := range w {
			for _, m := range []string{"q_proj", "k_proj", "v_proj", "o_proj"} {
				if strings.HasSuffix(k, "self_attn."+m+".weight") {
					w[k] = mlx.MulScalar(a, 10)
				}
			}
		}
		return mlx.SaveSafetensors(filepath.Join(dir, "model.safetensors"), w, map[string]string{"format": "pt"})
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, "config.json"), b); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		data, err := os.ReadFile(cliAsset(t, "third_party/llama3-tokenizer/"+name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// withoutTensor rewrites a GGUF file without one tensor (and with the
// same metadata), for negative controls.
func withoutTensor(t *testing.T, src, dst, drop string) {
	t.Helper()
	info, err := gguf.ReadInfo(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	for _, k := range info.Keys {
		if err := w.Set(k, info.Metadata[k]); err != nil {
			t.Fatal(err)
		}
	}
	found := false
	for _, ti := range info.Tensors {
		if ti.Name == drop {
			found = true
			continue
		}
		data, err := info.ReadTensor(f, ti)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTensorBytes(ti.Name, ti.Type, ti.Shape(), data); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatalf("%s has no tensor %s", src, drop)
	}
	if err := w.WriteFile(dst); err != nil {
		t.Fatal(err)
	}
}

// longLlama3Prompt is a chat of about 700 tokens: a system prompt and a
// user message made of the sample data's answers.
func longLlama3Prompt(t *testing.T) []llama.Message {
	t.Helper()
	b, err := os.ReadFile(cliAsset(t, "examples/fung-sample/valid.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if i >= 5 {
			break
		}
		var ex struct {
			Messages []llama.Message `json:"messages"`
		}
		if err := json.Unmarshal([]byte(line), &ex); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, ex.Messages[len(ex.Messages)-1].Content)
	}
	return []llama.Message{
		{Role: "system", Content: "You are a physician who teaches patients about fasting, insulin, diet and weight."},
		{Role: "user", Content: "Summarise these notes:\n\n" + strings.Join(parts, "\n\n")},
	}
}

// TestExportGGUFLlama3RopeScaling exports a Llama-3-shaped random model
// with llama3 RoPE scaling and the real Llama 3 tokenizer, and runs the
// file in llama.cpp: the same token ids as fungtrain for a long chat
// prompt, and the same logits at positions across it within float32
// tolerance. The negative control, the same file without rope_freqs (so
// llama.cpp rotates with unscaled frequencies), lands far outside that
// tolerance: the test can tell whether the scaling reached llama.cpp.
func TestExportGGUFLlama3RopeScaling(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "llama3-tiny")
	cfg := llama3TestConfig()
	writeLlama3TestModel(t, src, cfg)
	out := filepath.Join(dir, "llama3-tiny-f32.gguf")
	if _, errOut, err := runCLI(t, "export", "gguf", "--model", src, "--out", out, "--type", "f32"); err != nil {
		t.Fatalf("export: %v\n%s", err, errOut)
	}
	noRope := filepath.Join(dir, "llama3-tiny-norope.gguf")
	withoutTensor(t, out, noRope, "rope_freqs.weight")

	b := openModel(t, src, "")
	var ids []int32
	var text string
	err := mlx.Do(func() error {
		var err error
		ids, err = b.EncodePrompt(longLlama3Prompt(t), true)
		text = b.Tokenizer.Decode(ids)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) < 600 {
		t.Fatalf("prompt of %d tokens; the test wants a long one", len(ids))
	}
	var rows []int
	for p := 0; p < len(ids); p += 41 {
		rows = append(rows, p)
	}
	rows = append(rows, len(ids)-1)
	want := modelRows(t, b.Model, ids, rows)

	nCtx := len(ids) + 16
	got, ans := llamaCpp(t, out, nCtx, cfg.VocabSize, true, []cppPrompt{{IDs: ids, Rows: rows}}, []string{text})
	if !equalIDs(ans.Tokens[0], ids) {
		t.Errorf("llama.cpp tokenizes the %d-token prompt differently: first difference at %d", len(ids), firstDiff(ans.Tokens[0], ids))
	}
	if ans.Meta.BOS != 128000 {
		t.Errorf("llama.cpp's BOS is %d, want 128000", ans.Meta.BOS)
	}
	ctl, _ := llamaCpp(t, noRope, nCtx, cfg.VocabSize, true, []cppPrompt{{IDs: ids, Rows: rows}}, nil)
	st := compareRows(want, got[0])
	cs := compareRows(want, ctl[0])
	t.Logf("%d-token prompt, %d positions: llama.cpp vs fungtrain: %v", len(ids), len(rows), st)
	t.Logf("control without rope_freqs: %v", cs)
	// Both run float32 weights, activations and KV cache: only summation
	// order differs (measured: max 4.4e-6 on logits up to ~0.5).
	const tol = 1e-4
	if st.maxAbs > tol || st.top1Same != st.rows {
		t.Errorf("llama.cpp's logits differ from fungtrain's: %v (tolerance %g)", st, tol)
	}
	// Measured: max 0.34, with half the argmaxes changed.
	if cs.maxAbs < 1000*tol {
		t.Errorf("the control without rope_freqs is within %g of fungtrain (%v): the test cannot see RoPE scaling", cs.maxAbs, cs)
	}
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func firstDiff(a, b []int32) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/internal/gguf"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// peftBundleEnv names a directory to write the PEFT check bundle into
// (bench/peft_prepare.sh sets it); without it the bundle goes to a
// temporary directory and only the checks this machine can run are made.
const peftBundleEnv = "FUNGTRAIN_PEFT_BUNDLE"

// peftExpect is the bundle's expect.json, read by bench/peft_check.py.
type peftExpect struct {
	Prompts []peftPrompt `json:"prompts"`
	// Greedy are fungtrain's greedy continuation ids of prompt 0 with the
	// adapter, and GreedyPrompt that prompt.
	Greedy []int32 `json:"greedy"`
	// Tolerances for the GPU check (float32 on both sides).
	LogitTol float64 `json:"logit_tol"`
	Text     string  `json:"text"`
}

type peftPrompt struct {
	IDs []int32 `json:"ids"`
	// Logits is a raw little-endian float32 file of len(IDs) rows of Vocab:
	// fungtrain's logits of the base model with the adapter.
	Logits string `json:"logits"`
	Vocab  int    `json:"vocab"`
}

// TestPEFTCheckBundle prepares what bench/peft_check.py checks on a machine
// with PyTorch, transformers and PEFT: an HF-format base (a small random
// Llama with SmolLM2's vocabulary and tokenizer files from its GGUF), a
// trained-shape adapter on every linear layer exported as PEFT, the base
// fused with it by fungtrain fuse (float32), and fungtrain's logits and
// greedy tokens with the adapter. Here it checks what needs no PyTorch:
// fungtrain reads its PEFT export back to the same logits, the fused
// directory gives the adapter's logits, and transformers' tokenizer reports
// the same special tokens on the fused directory as on the base.
func TestPEFTCheckBundle(t *testing.T) {
	out := os.Getenv(peftBundleEnv)
	if out == "" {
		out = t.TempDir()
	}
	base, ad, peft, fused := filepath.Join(out, "base"), filepath.Join(out, "adapter"), filepath.Join(out, "peft"), filepath.Join(out, "fused")
	for _, d := range []string{base, ad, peft, fused} {
		os.RemoveAll(d)
	}
	writePEFTBase(t, base)
	writeAdapter(t, base, ad, lora.Settings{Rank: 8, Alpha: 16, NumLayers: 2, Keys: []string{"all-linear"}})
	if _, errOut, err := runCLI(t, "export", "peft", "--adapter", ad, "--out", peft, "--base-model", "base"); err != nil {
		t.Fatalf("export peft: %v\n%s", err, errOut)
	}
	if _, errOut, err := runCLI(t, "fuse", "--model", base, "--adapter", ad, "--out", fused, "--dtype", "f32"); err != nil {
		t.Fatalf("fuse: %v\n%s", err, errOut)
	}

	withAdapter := openModel(t, base, ad)
	withPEFT := openModel(t, base, peft)
	fusedB := openModel(t, fused, "")
	exp := peftExpect{LogitTol: 2e-3, Text: tokText}
	chats := sampleChats(t, "valid", 2)
	for i, chat := range chats {
		var ids []int32
		if err := mlx.Do(func() error {
			var err error
			ids, err = withAdapter.EncodePrompt(chat[:2], true)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		rows := make([]int, len(ids))
		for j := range rows {
			rows[j] = j
		}
		want := modelRows(t, withAdapter.Model, ids, rows)
		if st := compareRows(want, modelRows(t, withPEFT.Model, ids, rows)); st.maxAbs != 0 {
			t.Errorf("prompt %d: logits with the PEFT export differ from the adapter's: %v", i, st)
		}
		st := compareRows(want, modelRows(t, fusedB.Model, ids, rows))
		t.Logf("prompt %d (%d tokens): fused directory vs base + adapter: %v", i, len(ids), st)
		if st.maxAbs > 1e-4 {
			t.Errorf("prompt %d: the fused model's logits differ from the adapter's: %v", i, st)
		}
		name := filepath.Join(out, "logits"+string(rune('0'+i))+".f32")
		writeF32Rows(t, name, want)
		exp.Prompts = append(exp.Prompts, peftPrompt{IDs: ids, Logits: filepath.Base(name), Vocab: len(want[0])})
	}
	if err := mlx.Do(func() error {
		opts := llama.GenerateOptions{MaxTokens: 12}
		_, err := withAdapter.Model.Generate(exp.Prompts[0].IDs, opts, func(id int32) bool {
			exp.Greedy = append(exp.Greedy, id)
			return true
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(exp, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(out, "expect.json"), b); err != nil {
		t.Fatal(err)
	}

	var ans hfAnswer
	runPython(t, repoPath("cmd/fungtrain/testdata/hf_dir.py"), map[string]any{"dirs": []string{base, fused}, "text": tokText}, &ans)
	if s, f := ans.Dirs[0], ans.Dirs[1]; s.specials() != f.specials() || f.BOS == nil || !equalIDs(s.IDs, f.IDs) {
		t.Errorf("transformers: base %s, fused %s", s.specials(), f.specials())
	}
	t.Logf("bundle in %s", out)
}

// writePEFTBase writes the small random base model: SmolLM2's vocabulary
// (49152) and tokenizer files (from its GGUF, as fuse writes them), hidden
// size 64, 2 layers, float32.
func writePEFTBase(t *testing.T, dir string) {
	t.Helper()
	info, err := gguf.ReadInfo(cliAsset(t, smolLM2))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := llama.ConfigFromGGUF(info)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HiddenSize, cfg.NumLayers, cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim, cfg.IntermediateSize = 64, 2, 4, 2, 16, 128
	if err := mlx.Do(func() error { return llama.WriteRandomModel(dir, cfg, mlx.Float32, 77) }); err != nil {
		t.Fatal(err)
	}
	tj, err := llama.GGUFTokenizerJSON(info)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := llama.GGUFTokenizerConfig(info)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tokenizer.json": tj, "tokenizer_config.json": tc} {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), data); err != nil {
			t.Fatal(err)
		}
	}
}

// writeF32Rows writes rows as raw little-endian float32.
func writeF32Rows(t *testing.T, path string, rows [][]float32) {
	t.Helper()
	var b []byte
	for _, r := range rows {
		for _, x := range r {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	if err := atomicfile.WriteFile(path, b); err != nil {
		t.Fatal(err)
	}
}

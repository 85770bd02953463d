package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// hfDir is what testdata/hf_dir.py reports of a model directory, as
// transformers loads it.
type hfDir struct {
	Class      string  `json:"class"`
	BOS        *string `json:"bos"`
	EOS        *string `json:"eos"`
	Pad        *string `json:"pad"`
	Unk        *string `json:"unk"`
	BOSID      *int    `json:"bos_id"`
	EOSID      *int    `json:"eos_id"`
	IDs        []int32 `json:"ids"`
	RMSNormEps float64 `json:"rms_norm_eps"`
	GenEOS     any     `json:"gen_eos"`
	GenBOS     any     `json:"gen_bos"`
}

func (d hfDir) specials() string {
	s := func(p *string) string {
		if p == nil {
			return "None"
		}
		return *p
	}
	return fmt.Sprintf("bos %s eos %s pad %s unk %s", s(d.BOS), s(d.EOS), s(d.Pad), s(d.Unk))
}

type hfAnswer struct {
	Dirs []hfDir `json:"dirs"`
	GGUF struct {
		BOS, EOS, Pad, Unk *string
	} `json:"gguf"`
}

const tokText = "Fasting for 16 hours lowers insulin. <|im_start|> 日本語 🦙"

// TestFuseGGUFCompleteHFDir fuses SmolLM2's GGUF (no adapter) into an HF
// directory and loads it with transformers: the tokenizer reports the
// special tokens the GGUF names (read by gguf-py) and tokenizes like
// fungtrain, the config's rms_norm_eps is 1e-05 (not float32's
// 9.999999747378752e-06), and generation_config.json has the eos id.
func TestFuseGGUFCompleteHFDir(t *testing.T) {
	src := cliAsset(t, smolLM2)
	out := filepath.Join(t.TempDir(), "fused")
	if _, errOut, err := runCLI(t, "fuse", "--model", src, "--out", out); err != nil {
		t.Fatalf("fuse: %v\n%s", err, errOut)
	}
	if _, _, err := runCLI(t, "fuse", "--model", src, "--out", out); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("fusing into an existing model without --force: %v", err)
	}
	var ans hfAnswer
	runPython(t, repoPath("cmd/fungtrain/testdata/hf_dir.py"), map[string]any{"dirs": []string{out}, "text": tokText, "gguf": src}, &ans)
	d := ans.Dirs[0]
	g := ans.GGUF
	want := hfDir{BOS: g.BOS, EOS: g.EOS, Pad: g.Pad, Unk: g.Unk}
	t.Logf("transformers on the fused directory: %s; the GGUF: %s", d.specials(), want.specials())
	if d.specials() != want.specials() || d.BOS == nil || *d.BOS != "<|im_start|>" {
		t.Errorf("transformers reports %s, the GGUF %s", d.specials(), want.specials())
	}
	if d.RMSNormEps != 1e-05 {
		t.Errorf("rms_norm_eps %v, want 1e-05", d.RMSNormEps)
	}
	if fmt.Sprint(d.GenEOS) != "2" || fmt.Sprint(d.GenBOS) != "1" {
		t.Errorf("generation config eos %v bos %v, want 2 and 1", d.GenEOS, d.GenBOS)
	}
	b := openModel(t, src, "")
	var ids []int32
	if err := mlx.Do(func() error {
		var err error
		ids, err = b.Tokenizer.Encode(tokText, true)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !equalIDs(ids, d.IDs) {
		t.Errorf("transformers tokenizes %q as %v, fungtrain as %v", tokText, d.IDs, ids)
	}
}

// TestFuseHFCompleteDir fuses an HF-format model with the Llama 3
// tokenizer: transformers reports the same special tokens and ids on the
// fused directory as on the source, config.json keeps the source's keys and
// numbers as written, and generation_config.json carries the stop ids.
func TestFuseHFCompleteDir(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	cfg := llama3TestConfig()
	writeLlama3TestModel(t, src, cfg)
	// The source's own spelling of its numbers, and a key fungtrain does not know.
	raw, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), `"rms_norm_eps": 0.00001`, `"rms_norm_eps": 1e-05, "pretraining_tp": 1`, 1)
	if text == string(raw) {
		t.Fatalf("config.json has no rms_norm_eps 0.00001:\n%s", raw)
	}
	if err := os.WriteFile(filepath.Join(src, "config.json"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "fused")
	if _, errOut, err := runCLI(t, "fuse", "--model", src, "--out", out, "--dtype", "f32"); err != nil {
		t.Fatalf("fuse: %v\n%s", err, errOut)
	}
	fused, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"rms_norm_eps": 1e-05`, `"pretraining_tp": 1`, `"rope_theta": 500000`, `"torch_dtype": "float32"`, `"factor": 32`} {
		if !strings.Contains(string(fused), want) {
			t.Errorf("fused config.json lacks %s:\n%s", want, fused)
		}
	}
	var ans hfAnswer
	runPython(t, repoPath("cmd/fungtrain/testdata/hf_dir.py"), map[string]any{"dirs": []string{src, out}, "text": tokText}, &ans)
	s, f := ans.Dirs[0], ans.Dirs[1]
	t.Logf("source: %s, fused: %s", s.specials(), f.specials())
	if s.specials() != f.specials() || !equalIDs(s.IDs, f.IDs) || f.BOS == nil {
		t.Errorf("transformers: source %s %v, fused %s %v", s.specials(), s.IDs, f.specials(), f.IDs)
	}
	if fmt.Sprint(f.GenEOS) != "[128001 128008 128009]" || fmt.Sprint(f.GenBOS) != "128000" {
		t.Errorf("generation config eos %v bos %v", f.GenEOS, f.GenBOS)
	}
}

package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/eval"
)

// firstLines copies the first n lines of src to dst.
func firstLines(t *testing.T, src, dst string, n int) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for i := 0; i < n && sc.Scan(); i++ {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	if err := os.WriteFile(dst, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEvalSmolLM2WithAdapter trains a small adapter on SmolLM2 with a few
// sample pairs, then evaluates base and adapter in one run: both sides get
// a loss, a perplexity and scored answers, and the adapter, trained on the
// very examples it is evaluated on, has the lower loss.
func TestEvalSmolLM2WithAdapter(t *testing.T) {
	model := cliAsset(t, smolLM2)
	sample := cliAsset(t, "examples/fung-sample")
	dataDir := t.TempDir()
	for _, split := range []string{"train", "valid", "test"} {
		firstLines(t, filepath.Join(sample, "train.jsonl"), filepath.Join(dataDir, split+".jsonl"), 2)
	}
	run := filepath.Join(t.TempDir(), "run")
	cfg := filepath.Join(t.TempDir(), "run.yaml")
	yaml := "model:\n  path: " + model + "\ndata:\n  dir: " + dataDir + "\n  max_seq_length: 256\n" +
		"lora:\n  rank: 8\n  num_layers: 4\noptimizer:\n  lr: 0.002\ntraining:\n  grad_accumulation: 1\n  max_steps: 6\n  report_every: 3\n  save_every: 0\n" +
		"eval:\n  every: 0\noutput:\n  dir: " + run + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runCLI(t, "train", "--config", cfg); err != nil {
		t.Fatalf("train: %v\n%s", err, stderr)
	}
	stdout, stderr, err := runCLI(t, "eval", "--model", model, "--adapter", run, "--data", dataDir,
		"--split", "test", "--n", "1", "--max-tokens", "12")
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "test loss: base") || !strings.Contains(stdout, "adapter") {
		t.Errorf("eval printed %q", stdout)
	}
	res, err := eval.ReadJSON(filepath.Join(run, "eval.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, a := res.Loss.Base, res.Loss.Adapter
	if b == nil || a == nil {
		t.Fatalf("losses: base %v adapter %v", b, a)
	}
	if b.Tokens == 0 || b.Tokens != a.Tokens || b.Loss <= 0 || b.Perplexity <= 1 {
		t.Errorf("base loss %+v, adapter loss %+v", *b, *a)
	}
	if !(a.Loss < b.Loss) {
		t.Errorf("the adapter, trained on these examples, has loss %.4f, not below the base's %.4f", a.Loss, b.Loss)
	}
	if len(res.Samples) != 1 || res.Samples[0].Base == nil || res.Samples[0].Adapter == nil {
		t.Fatalf("samples: %+v", res.Samples)
	}
	s := res.Samples[0]
	if s.Base.Tokens == 0 || s.Adapter.Tokens == 0 || s.Base.Tokens > 12 || s.Adapter.Tokens > 12 {
		t.Errorf("generated %d and %d tokens (max 12)", s.Base.Tokens, s.Adapter.Tokens)
	}
	if res.Summary.Base == nil || res.Summary.Adapter == nil || res.Summary.Base.N != 1 {
		t.Errorf("summary: %+v", res.Summary)
	}
	if _, err := os.Stat(filepath.Join(run, "eval.md")); err != nil {
		t.Error(err)
	}
}

// TestEvalBatchedEqualsOneByOne evaluates the base model on three held-out
// questions with their answers decoded together (--batch 3) and one at a
// time (--batch 1): the answers, token counts and EOS flags are the same.
func TestEvalBatchedEqualsOneByOne(t *testing.T) {
	model := cliAsset(t, smolLM2)
	sample := cliAsset(t, "examples/fung-sample")
	dataDir := t.TempDir()
	firstLines(t, filepath.Join(sample, "test.jsonl"), filepath.Join(dataDir, "test.jsonl"), 3)
	results := map[string]*eval.Result{}
	for _, batch := range []string{"3", "1"} {
		out := filepath.Join(t.TempDir(), "b"+batch)
		if _, stderr, err := runCLI(t, "eval", "--model", model, "--data", dataDir, "--n", "3", "--max-tokens", "10",
			"--batch", batch, "--out", out); err != nil {
			t.Fatalf("eval --batch %s: %v\n%s", batch, err, stderr)
		}
		res, err := eval.ReadJSON(filepath.Join(out, "eval.json"))
		if err != nil {
			t.Fatal(err)
		}
		results[batch] = res
	}
	b, one := results["3"], results["1"]
	if len(b.Samples) != 3 || len(one.Samples) != 3 {
		t.Fatalf("samples: %d batched, %d one by one", len(b.Samples), len(one.Samples))
	}
	for i := range b.Samples {
		g, w := b.Samples[i].Base, one.Samples[i].Base
		if g.Text != w.Text || g.Tokens != w.Tokens || g.HitEOS != w.HitEOS || g.Tokens == 0 {
			t.Errorf("question %d: batched %q (%d tokens, eos %v), one by one %q (%d tokens, eos %v)",
				i, g.Text, g.Tokens, g.HitEOS, w.Text, w.Tokens, w.HitEOS)
		}
	}
	if _, _, err := runCLI(t, "eval", "--model", model, "--data", dataDir, "--batch", "0"); err == nil || !strings.Contains(err.Error(), "--batch must be at least 1") {
		t.Errorf("--batch 0: %v", err)
	}
}

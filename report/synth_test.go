package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/eval"
)

// synthOpts shapes a synthetic run directory.
type synthOpts struct {
	steps      int  // train steps, one train line every 5 steps
	evalEvery  int  // 0: no eval lines
	noSummary  bool // omit summary.json
	noMetadata bool // omit run_metadata.json
	noConfig   bool // omit config.yaml
	withEval   bool // write eval.json
	extraLines []string
}

// writeSyntheticRun writes a plausible run directory the way the trainer
// does (docs/RUN_FORMAT.md): a decaying loss with noise, warmup plus cosine
// lr, throughput and memory, a few validation points, summary, metadata and
// config. It returns the directory.
func writeSyntheticRun(t *testing.T, o synthOpts) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run-smollm2-lora")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 11, 20, 9, 30, 0, 0, time.UTC)
	var lines []string
	add := func(v map[string]any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	warmup, peakLR := math.Min(20, float64(o.steps)/5), 2e-4
	lr := func(step int) float64 {
		s := float64(step)
		if s < warmup {
			return peakLR * s / warmup
		}
		return peakLR * 0.5 * (1 + math.Cos(math.Pi*(s-warmup)/(float64(o.steps)-warmup)))
	}
	valLoss := func(step int) float64 { return 1.55 + 0.95*math.Exp(-float64(step)/60) }
	if o.evalEvery > 0 {
		add(map[string]any{"type": "eval", "step": 0, "val_loss": valLoss(0), "val_ppl": math.Exp(valLoss(0)),
			"val_tokens": 5000, "time": start.Format(time.RFC3339)})
	}
	tokens := 0
	for step := 5; step <= o.steps; step += 5 {
		tokens += 5 * 820
		loss := 1.4 + 1.1*math.Exp(-float64(step)/45) + 0.06*math.Sin(float64(step)*0.7)
		add(map[string]any{
			"type": "train", "step": step, "epoch": float64(step) / 40, "loss": loss, "lr": lr(step),
			"it_per_sec": 1.1 + 0.1*math.Sin(float64(step)), "tokens_per_sec": 850 + 40*math.Sin(float64(step)/9),
			"trained_tokens": tokens, "peak_memory_gb": 1.9 + 0.1*math.Min(float64(step)/50, 1),
			"active_memory_gb": 1.2 + 0.05*math.Sin(float64(step)/7),
			"time":             start.Add(time.Duration(step) * time.Second).Format(time.RFC3339),
			"grad_norm":        0.8, // unknown field, must be tolerated
		})
		if o.evalEvery > 0 && step%o.evalEvery == 0 {
			add(map[string]any{"type": "eval", "step": step, "val_loss": valLoss(step), "val_ppl": math.Exp(valLoss(step)),
				"val_tokens": 5000, "time": start.Add(time.Duration(step) * time.Second).Format(time.RFC3339)})
		}
	}
	lines = append(lines, o.extraLines...)
	writeFile(t, filepath.Join(dir, MetricsFile), strings.Join(lines, "\n")+"\n")

	if !o.noSummary {
		writeJSON(t, filepath.Join(dir, SummaryFile), map[string]any{
			"final_train_loss": 1.52, "final_val_loss": valLoss(o.steps), "best_val_loss": valLoss(o.steps),
			"best_step": o.steps, "steps": o.steps, "trained_tokens": tokens, "seconds": 212.5,
			"tokens_per_sec": 851.2, "peak_memory_gb": 2.0, "initial_val_loss": valLoss(0),
		})
	}
	if !o.noMetadata {
		writeJSON(t, filepath.Join(dir, MetadataFile), map[string]any{
			"timestamp": start.Format(time.RFC3339), "seed": 42,
			"config": map[string]any{
				"model": "models/SmolLM2-135M-Instruct", "data": "data/sample", "seed": 42,
				"lora":     map[string]any{"rank": 8, "alpha": 16, "dropout": 0.05, "targets": []any{"q_proj", "v_proj"}},
				"training": map[string]any{"iters": o.steps, "batch_size": 4, "learning_rate": 2e-4, "warmup": 20, "schedule": "cosine"},
			},
			"data_sha256":       map[string]any{"train.jsonl": strings.Repeat("ab", 32), "valid.jsonl": strings.Repeat("cd", 32)},
			"model_sha256":      strings.Repeat("0f", 32),
			"fungtrain_version": "v0.1.0-test", "git_commit": "abc1234", "mlx_version": "0.29.1",
			"backend": "cpu", "device": "cpu",
		})
	}
	if !o.noConfig {
		writeFile(t, filepath.Join(dir, ConfigFile), fmt.Sprintf(
			"# resolved config\nmodel: models/SmolLM2-135M-Instruct\ndata: data/sample\nseed: 42\nlora:\n  rank: 8\n  alpha: 16\ntraining:\n  iters: %d\n  learning_rate: 2.0e-4\n", o.steps))
	}
	if o.withEval {
		if err := syntheticEval().WriteJSON(filepath.Join(dir, EvalFile)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// syntheticEval builds an eval result with awkward answers: markdown,
// HTML-looking text that must be escaped, a refusal and a meta-reference.
func syntheticEval() *eval.Result {
	type qa struct{ id, q, ref, base, adapter string }
	cases := []qa{
		{"test-1", "What is compound interest?",
			"**Compound interest** is interest on interest:\n\n- you earn on the principal\n- and on past interest",
			"In this video, the speaker explains that compound interest is when interest is added to the principal.",
			"**Compound interest** is interest on interest:\n\n- you earn on the principal\n- and on the interest already earned"},
		{"test-2", "Should I use <script> tags in emails?",
			"No. Most mail clients strip `<script>` tags, so keep emails to plain HTML and CSS.",
			"I'm sorry, but I can't help with that request.",
			"No. Mail clients strip <script>alert('x')</script> tags & block them, so use plain HTML."},
		{"test-3", "Why sleep eight hours?",
			"Sleep consolidates memory and restores mood.\n\nMost adults need seven to nine hours.",
			"Sleep is important for many reasons. It helps the body recover, and the brain to",
			"Sleep consolidates memory and restores mood.\n\nMost adults need about eight hours."},
	}
	res := &eval.Result{Model: "models/SmolLM2-135M-Instruct", Adapter: "runs/run-smollm2-lora/adapters", Split: "test",
		N: len(cases), Created: "2025-11-20T10:00:00Z", Generation: map[string]any{"max_tokens": 256.0, "temperature": 0.0}}
	res.Loss.Base = &eval.LossStats{Loss: 2.41, Perplexity: math.Exp(2.41), Tokens: 4210}
	res.Loss.Adapter = &eval.LossStats{Loss: 1.62, Perplexity: math.Exp(1.62), Tokens: 4210}
	for i, c := range cases {
		gen := func(text string, eos bool) *eval.ScoredGeneration {
			return &eval.ScoredGeneration{
				Generation: eval.Generation{Text: text, Tokens: len(strings.Fields(text)) * 4 / 3, HitEOS: eos, Seconds: 0.8},
				Scores:     eval.Score(text, c.ref, eos),
			}
		}
		res.Samples = append(res.Samples, eval.Sample{ID: c.id, Question: c.q, Reference: c.ref,
			Base: gen(c.base, i != 2), Adapter: gen(c.adapter, true)})
	}
	res.Summary = eval.Summarize(res.Samples)
	return res
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(b))
}

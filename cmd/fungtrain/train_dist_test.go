package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// adapterTensors reads dir/adapters.safetensors as float64 per tensor.
func adapterTensors(t *testing.T, dir string) map[string][]float64 {
	t.Helper()
	out := map[string][]float64{}
	err := mlx.Do(func() error {
		m, _, err := mlx.LoadSafetensors(filepath.Join(dir, "adapters.safetensors"))
		if err != nil {
			return err
		}
		for k, a := range m {
			v, err := a.Float32s()
			if err != nil {
				return err
			}
			for _, x := range v {
				out[k] = append(out[k], float64(x))
			}
			a.Free()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// adapterGap returns the largest |difference| between two adapters and
// the largest |value| of their lora_b tensors (which start at zero, so
// this is how far training moved them).
func adapterGap(t *testing.T, got, ref map[string][]float64) (diff, moved float64) {
	t.Helper()
	if len(got) != len(ref) || len(ref) == 0 {
		t.Fatalf("adapters with %d and %d tensors", len(got), len(ref))
	}
	for k, r := range ref {
		g := got[k]
		if len(g) != len(r) {
			t.Fatalf("tensor %s: %d values, want %d", k, len(g), len(r))
		}
		for i := range r {
			diff = math.Max(diff, math.Abs(g[i]-r[i]))
			if strings.HasSuffix(k, "lora_b") {
				moved = math.Max(moved, math.Abs(r[i]))
			}
		}
	}
	return diff, moved
}

// metricLosses lists the (type, step, loss or val loss) records of a run.
func metricLosses(t *testing.T, out string) []cliMetric {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []cliMetric
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r cliMetric
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

// writeRunYAML writes a run config from YAML text.
func writeRunYAML(t *testing.T, y string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// smolData writes the first n train and m valid examples of
// examples/fung-sample into a new data directory.
func smolData(t *testing.T, n, m int) string {
	t.Helper()
	dir := t.TempDir()
	for split, k := range map[string]int{"train": n, "valid": m} {
		b, err := os.ReadFile(cliAsset(t, filepath.Join("examples", "fung-sample", split+".jsonl")))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(b), "\n")
		if err := os.WriteFile(filepath.Join(dir, split+".jsonl"), []byte(strings.Join(lines[:k], "")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestTrainAcrossRanks: `fungtrain launch -n 2 -- train` (two ranks over
// the loopback ring, batch 1 each) ends with the adapter, train losses and
// validation losses of `fungtrain train` with batch 2, within 1e-4 of how
// far training moved the adapter, on SmolLM2 with the sample data (whose
// examples hold different numbers of answer tokens) with accumulation 2,
// and on the tiny random Llama without accumulation. Only rank 0 writes;
// run_metadata.json records the backend, world size and each rank's
// device.
func TestTrainAcrossRanks(t *testing.T) {
	tinyModel, tinyData := trainFixture(t)
	cases := []struct {
		name, model, data        string
		maxSeq, accum, evalEvery int
		lr                       float64
		records                  int // in metrics.jsonl
	}{
		// SmolLM2's LoRA gradients are small: with ε = 1 (see below) an
		// update is about lr·g, so lr is large. Its validation passes
		// would double the test's time: the tiny model covers them.
		{"SmolLM2, accumulation 2", cliAsset(t, smolLM2), smolData(t, 8, 2), 96, 2, 0, 0.5, 2},
		{"tiny Llama, no accumulation", tinyModel, tinyData, 32, 1, 2, 2e-2, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "ranks")
			// AdamW's ε is 1: with 1e-8 an update is about lr·sign(g),
			// which hides the gradient's size, which is what the
			// ranks' weighting could get wrong.
			cfg := writeRunYAML(t, fmt.Sprintf(`model: {path: %q}
data: {dir: %q, max_seq_length: %d}
lora: {num_layers: 2, dropout: 0}
optimizer: {lr: %g, eps: 1.0}
training: {batch_size: 1, grad_accumulation: %d, max_steps: 2, report_every: 1, save_every: 2}
eval: {every: %d, max_batches: 2}
output: {dir: %q}
`, tc.model, tc.data, tc.maxSeq, tc.lr, tc.accum, tc.evalEvery, out))
			stdout, stderr, err := runCLI(t, "launch", "-n", "2", "--", "train", "--config", cfg)
			if err != nil {
				t.Fatalf("launch: %v\n%s\n%s", err, stdout, stderr)
			}
			if !strings.Contains(stdout, "[rank 0] done: 2 steps") || strings.Contains(stdout, "[rank 1] done") {
				t.Errorf("launch output:\n%s", stdout)
			}
			ref := filepath.Join(t.TempDir(), "one")
			if _, stderr, err := runCLI(t, "train", "--config", cfg, "--set", "training.batch_size=2", "--set", "output.dir="+ref); err != nil {
				t.Fatalf("train: %v\n%s", err, stderr)
			}
			diff, moved := adapterGap(t, adapterTensors(t, out), adapterTensors(t, ref))
			t.Logf("2 ranks × batch 1 vs 1 process × batch 2: max |adapter difference| %.3g; the adapter moved up to %.3g", diff, moved)
			if moved < 1e-4 || diff > 1e-4*moved {
				t.Errorf("adapters differ by %g (moved %g)", diff, moved)
			}
			got, want := metricLosses(t, out), metricLosses(t, ref)
			if len(got) != len(want) || len(got) != tc.records {
				t.Fatalf("metrics: %d records from the ranks, %d from one process, want %d: %+v", len(got), len(want), tc.records, got)
			}
			for i := range got {
				d := math.Max(math.Abs(got[i].Loss-want[i].Loss), math.Abs(got[i].ValLoss-want[i].ValLoss))
				if got[i].Type != want[i].Type || got[i].Step != want[i].Step || d > 1e-5 {
					t.Errorf("metrics record %d: %+v, one process %+v", i, got[i], want[i])
				}
			}
			var meta lora.RunMetadata
			b, _ := os.ReadFile(filepath.Join(out, "run_metadata.json"))
			if err := json.Unmarshal(b, &meta); err != nil {
				t.Fatal(err)
			}
			d := meta.Distributed
			if d == nil || d.Backend != "ring" || d.WorldSize != 2 || d.RankBatch != 1 || d.GlobalBatch != 2 || len(d.Devices) != 2 ||
				!strings.HasPrefix(d.Devices[0], "cpu") || !strings.HasPrefix(d.Devices[1], "cpu") {
				t.Errorf("run_metadata.json distributed: %+v", d)
			}
		})
	}
}

// TestTrainAcrossRanksInterruptAndReshard: SIGINT to `fungtrain launch`
// (which sends SIGTERM to both ranks) stops both ranks after the same
// step: each exits 0 and rank 0 saves a checkpoint. That checkpoint (2
// ranks × batch 1) resumes in one process only with batch 2, the same
// global batch, and is refused with batch 1 with a message that says so;
// resumed with batch 2 it ends with the adapter of an uninterrupted
// one-process run.
func TestTrainAcrossRanksInterruptAndReshard(t *testing.T) {
	model, dataDir := trainFixture(t)
	out := filepath.Join(t.TempDir(), "run")
	const epochs = 60 // 240 steps of 2 examples
	cfg := trainConfig(t, model, dataDir, out, epochs)
	sets := []string{"--set", "eval.every=0", "--set", "training.save_every=0", "--set", "training.grad_accumulation=1",
		"--set", "training.batch_size=1", "--set", "optimizer.eps=1", "--set", "lora.dropout=0"}
	child, childOut := startCLIAfterSteps(t, out, 3, 2*time.Minute,
		append([]string{"launch", "-n", "2", "--", "train", "--config", cfg}, sets...)...)
	if err := child.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := child.Wait()
	t.Logf("launch after SIGINT: %v\n%s", err, lastLines(childOut.String(), 6))
	for _, want := range []string{"[rank 0] interrupted: resume with: fungtrain train --resume " + out, "launch: interrupted"} {
		if !strings.Contains(childOut.String(), want) {
			t.Errorf("launch output lacks %q", want)
		}
	}
	if strings.Contains(childOut.String(), "launch: rank") {
		t.Errorf("a rank failed instead of stopping cleanly:\n%s", childOut.String())
	}
	ck, err := lora.LatestCheckpoint(out)
	if err != nil {
		t.Fatalf("no checkpoint after the interrupt: %v", err)
	}
	stopped := latestTrainStep(t, out)
	t.Logf("stopped at step %d of %d (%s)", stopped, 2*epochs*2, filepath.Base(ck))
	if filepath.Base(ck) != fmt.Sprintf("step-%07d", stopped) || stopped >= 2*epochs*2 {
		t.Fatalf("checkpoint %s, last logged step %d", ck, stopped)
	}

	_, _, err = runCLI(t, "train", "--resume", out)
	if err == nil || !strings.Contains(err.Error(), "resume with a batch size of 2 per rank") {
		t.Errorf("resume with 1 rank × batch 1: %v", err)
	}
	if stdout, stderr, err := runCLI(t, "train", "--resume", out, "--set", "training.batch_size=2"); err != nil {
		t.Fatalf("resume with 1 rank × batch 2: %v\n%s", err, stderr)
	} else if !strings.Contains(stdout, fmt.Sprintf("done: %d steps", 2*epochs*2)) {
		t.Errorf("resume: %s", stdout)
	}
	ref := filepath.Join(t.TempDir(), "ref")
	refSets := append(append([]string{}, sets...), "--set", "training.batch_size=2", "--set", "output.dir="+ref)
	if _, stderr, err := runCLI(t, append([]string{"train", "--config", cfg}, refSets...)...); err != nil {
		t.Fatalf("reference: %v\n%s", err, stderr)
	}
	diff, moved := adapterGap(t, adapterTensors(t, out), adapterTensors(t, ref))
	t.Logf("2 ranks, interrupted at step %d, resumed as 1 rank × batch 2 vs uninterrupted: max |adapter difference| %.3g (moved %.3g)", stopped, diff, moved)
	if diff > 1e-4*moved {
		t.Errorf("adapters differ by %g (moved %g)", diff, moved)
	}
}

// latestTrainStep is the last train step in out/metrics.jsonl.
func latestTrainStep(t *testing.T, out string) int {
	t.Helper()
	last := -1
	for _, r := range metricLosses(t, out) {
		if r.Type == "train" {
			last = r.Step
		}
	}
	return last
}

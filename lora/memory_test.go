package lora

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// TestNoMemoryGrowth: over 30 training steps (dropout on, accumulation 2,
// evals every 10 steps, checkpoints every 5, the best adapter saved), the
// live-array count is the same at every step after a 3-step warm-up and
// MLX's active memory stays flat; afterwards everything the run made is
// freed and the GC backstop never had to free a forgotten array.
//
// That holds as stated with training.sequential. With steps queued ahead
// (the default), a step followed by another has that step queued on the
// device when it is logged and one before an evaluation or checkpoint has
// not: the live-array count is the same within each kind, and active
// memory is flat over the second (over the first it depends on how far
// the device has got with the queued step when the host logs).
func TestNoMemoryGrowth(t *testing.T) {
	for _, sequential := range []bool{true, false} {
		t.Run(map[bool]string{true: "sequential", false: "queued"}[sequential], func(t *testing.T) {
			testNoMemoryGrowth(t, sequential)
		})
	}
}

func testNoMemoryGrowth(t *testing.T, sequential bool) {
	cfg := resumeSetup(t)
	cfg.Training.MaxSteps = 30
	cfg.Training.SaveEvery = 5
	cfg.Eval.Every = 10
	cfg.Training.Sequential = sequential
	type sample struct {
		step   int
		live   int64
		active int64
	}
	var samples []sample
	log := slog.New(hookHandler{level: slog.LevelInfo, fn: func(r slog.Record) {
		if step, _ := attrInt(r, "step"); r.Message == "train" {
			samples = append(samples, sample{step, mlx.LiveArrays(), mlx.ActiveMemory()})
		}
	}})
	settleForgotten(t)
	forgotten := mlx.ForgottenArrays()
	var before, after int64
	doMLX(t, func() error { before = mlx.LiveArrays(); return nil })
	if _, err := runTraining(context.Background(), cfg, "", log, nil); err != nil {
		t.Fatal(err)
	}
	doMLX(t, func() error { after = mlx.LiveArrays(); return nil })
	if len(samples) != 30 {
		t.Fatalf("%d samples, want 30", len(samples))
	}
	const warm = 3
	// kind: whether a step is queued behind the one logged.
	kind := func(step int) bool {
		return !sequential && step%cfg.Training.SaveEvery != 0 && step%cfg.Eval.Every != 0 && step != 30
	}
	for _, queued := range []bool{false, true} {
		var ref *sample
		var minA, maxA int64
		for _, s := range samples[warm:] {
			if kind(s.step) != queued {
				continue
			}
			if ref == nil {
				ref, minA, maxA = &s, s.active, s.active
			}
			if s.live != ref.live {
				t.Errorf("step %d: %d live arrays, step %d had %d", s.step, s.live, ref.step, ref.live)
			}
			minA, maxA = min(minA, s.active), max(maxA, s.active)
		}
		if ref == nil {
			continue
		}
		t.Logf("steps with a step queued behind them %v: live arrays: step 1 %d, steps %d-30 %d; active memory: %d..%d bytes (spread %d); live arrays before the run %d, after %d",
			queued, samples[0].live, warm+1, ref.live, minA, maxA, maxA-minA, before, after)
		if !queued && maxA-minA > 64<<10 {
			t.Errorf("active memory varies by %d bytes after warm-up (> 64 KiB)", maxA-minA)
		}
	}
	if after != before {
		t.Errorf("%d arrays alive after the run and cleanup, %d before", after, before)
	}
	settleForgotten(t)
	if n := mlx.ForgottenArrays() - forgotten; n != 0 {
		t.Errorf("the GC backstop freed %d forgotten arrays", n)
	}
}

// settleForgotten lets the GC find unreachable arrays and the MLX owner
// thread free them, so ForgottenArrays is up to date.
func settleForgotten(t *testing.T) {
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	for range 2 { // the owner drains after each job
		doMLX(t, func() error { return nil })
	}
}

// TestGradCheckpointSavesMemory: with training.grad_checkpoint each block
// is recomputed in the backward pass instead of keeping its activations,
// so a training step over 4 sequences of 256 tokens on an 8-layer tiny
// model (adapters on every linear layer) peaks well below the same step
// without it: the peak above the memory in use before the step is less
// than 75% of the plain step's. (Measured: 50%, 68.6 vs 137.6 MiB.)
func TestGradCheckpointSavesMemory(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	split := &traindata.Split{Name: "synthetic"}
	for range 4 {
		ex := traindata.Example{Tokens: make([]int32, 257), Counted: make([]bool, 257)}
		for j := range ex.Tokens {
			ex.Tokens[j], ex.Counted[j] = int32(firstWord+rng.IntN(1024-firstWord)), j > 0
		}
		split.Examples = append(split.Examples, ex)
	}
	stepPeak := func(checkpoint bool) int64 {
		var peak int64
		cfg := testConfig(t.TempDir())
		cfg.LoRA.NumLayers, cfg.LoRA.Keys = -1, []string{"all-linear"}
		cfg.Training.BatchSize, cfg.Training.GradAccumulation, cfg.Training.MaxSteps = 4, 1, 3
		cfg.Training.GradCheckpoint, cfg.Training.Sequential = checkpoint, true
		doMLX(t, func() error {
			m, err := tinyModel(8, 6)
			if err != nil {
				return err
			}
			defer m.Free()
			tr, err := NewTrainer(cfg, m, split, split, tokPad, RunMetadata{}, quietLog())
			if err != nil {
				return err
			}
			defer tr.Close()
			defer tr.Adapters.Remove()
			if _, err := tr.Step(); err != nil { // traces the compiled step
				return err
			}
			before := mlx.ActiveMemory()
			mlx.ResetPeakMemory()
			if _, err := tr.Step(); err != nil {
				return err
			}
			peak = mlx.PeakMemory() - before
			return nil
		})
		return peak
	}
	plain, ckpt := stepPeak(false), stepPeak(true)
	t.Logf("step peak above the memory in use: %.2f MiB plain, %.2f MiB with gradient checkpointing (%.0f%%)",
		float64(plain)/(1<<20), float64(ckpt)/(1<<20), 100*float64(ckpt)/float64(plain))
	if plain <= 0 || float64(ckpt) > 0.75*float64(plain) {
		t.Errorf("gradient checkpointing peaks at %d bytes above the memory in use, the plain step at %d", ckpt, plain)
	}
}

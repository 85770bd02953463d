package lora

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

// TestNoMemoryGrowth: over 30 training steps (dropout on, accumulation 2,
// evals every 10 steps, checkpoints every 5, the best adapter saved), the
// live-array count is the same at every step after a 3-step warm-up and
// MLX's active memory stays flat; afterwards everything the run made is
// freed and the GC backstop never had to free a forgotten array.
func TestNoMemoryGrowth(t *testing.T) {
	cfg := resumeSetup(t)
	cfg.Training.MaxSteps = 30
	cfg.Training.SaveEvery = 5
	cfg.Eval.Every = 10
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
	ref := samples[warm]
	minA, maxA := ref.active, ref.active
	for _, s := range samples[warm:] {
		if s.live != ref.live {
			t.Errorf("step %d: %d live arrays, step %d had %d", s.step, s.live, ref.step, ref.live)
		}
		minA, maxA = min(minA, s.active), max(maxA, s.active)
	}
	t.Logf("live arrays: step 1 %d, steps %d-30 %d; active memory steps %d-30: %d..%d bytes (spread %d); live arrays before the run %d, after %d",
		samples[0].live, warm+1, ref.live, warm+1, minA, maxA, maxA-minA, before, after)
	if maxA-minA > 64<<10 {
		t.Errorf("active memory varies by %d bytes after warm-up (> 64 KiB)", maxA-minA)
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

package lora

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// finiteValues fails unless every value is finite, and returns the count.
func finiteValues(t *testing.T, vals map[string][]float64) int {
	t.Helper()
	n := 0
	for k, v := range vals {
		for _, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Errorf("%s holds %v", k, x)
				return n
			}
			n++
		}
	}
	return n
}

// TestNaNLossStopsWithLastGoodCheckpoint: a parameter poisoned with NaN
// right after the step-2 checkpoint is saved makes step 3's loss NaN; Run
// stops with an error naming step 3 and the checkpoint directory, and the
// step-2 checkpoint is intact: latest names it, its adapter equals the
// values saved, all finite, and it restores.
func TestNaNLossStopsWithLastGoodCheckpoint(t *testing.T) {
	cfg := resumeSetup(t)
	cfg.Training.SaveEvery = 1
	cfg.Eval.Every = 0
	var tr *Trainer
	var saved map[string][]float64
	poisoned := false
	log := slog.New(hookHandler{level: slog.LevelDebug, fn: func(r slog.Record) {
		if r.Message != "checkpoint saved" || tr.state.Step != 2 || poisoned {
			return
		}
		// On the MLX thread, inside Run: remember the values, then poison
		// one entry of the first B.
		saved = map[string][]float64{}
		vals, err := readFloats(tr.Adapters.Params()...)
		if err != nil {
			t.Error(err)
			return
		}
		for i, n := range tr.Adapters.ParamNames() {
			saved[n] = vals[i]
		}
		l := tr.Adapters.Layers[tr.Adapters.Names[0]]
		v, err := l.B.Float32s()
		if err != nil {
			t.Error(err)
			return
		}
		v[3] = float32(math.NaN())
		nb := mlx.FromFloat32s(v, l.B.Shape()...)
		mlx.Detach(nb)
		l.B.Free()
		l.B = nb
		poisoned = true
	}})
	_, err := runTraining(context.Background(), cfg, "", log, func(x *Trainer) error { tr = x; return nil })
	if err == nil || !poisoned {
		t.Fatalf("Run with a NaN parameter: err %v (poisoned %v)", err, poisoned)
	}
	t.Logf("error: %v", err)
	for _, want := range []string{"step 3", "NaN", filepath.Join(cfg.Output.Dir, "checkpoints")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if got := latestStep(cfg.Output.Dir); got != 2 {
		t.Fatalf("latest checkpoint is at step %d, want 2", got)
	}
	if _, err := os.Stat(filepath.Join(cfg.Output.Dir, "checkpoints", "step-0000003")); err == nil {
		t.Error("a checkpoint of the NaN step was written")
	}
	ck, err := LatestCheckpoint(cfg.Output.Dir)
	if err != nil {
		t.Fatal(err)
	}
	got := adapterValues(t, ck)
	n := finiteValues(t, got)
	if d := compareAdapters(t, got, saved); d != 0 {
		t.Errorf("the step-2 checkpoint differs from the values at step 2 by %g", d)
	}
	// It restores, and training from it proceeds with a finite loss.
	cfg2 := cfg
	cfg2.Training.MaxSteps = 3
	if _, err := runTraining(context.Background(), cfg2, ck, quietLog(), nil); err != nil {
		t.Errorf("resume from the last good checkpoint: %v", err)
	}
	t.Logf("step-2 checkpoint: %d finite values, equal to the trainer's at step 2; resuming from it trains step 3", n)
}

// TestHugeLearningRateStops: lr 1e30 blows the adapters up after one
// update; the next step's loss is not finite and Run stops naming step 2,
// keeping the step-1 checkpoint (finite values) as latest.
func TestHugeLearningRateStops(t *testing.T) {
	cfg := resumeSetup(t)
	cfg.Training.SaveEvery = 1
	cfg.Eval.Every = 0
	cfg.Optimizer.LR = 1e30
	cfg.Schedule = ScheduleConfig{Name: "constant"}
	_, err := runTraining(context.Background(), cfg, "", quietLog(), nil)
	if err == nil {
		t.Fatal("training with lr 1e30 succeeded")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "step 2") || !(strings.Contains(err.Error(), "NaN") || strings.Contains(err.Error(), "Inf")) {
		t.Errorf("error %q should name step 2 and a NaN or Inf loss", err)
	}
	if errors.Is(err, ErrInterrupted) {
		t.Error("a NaN stop is reported as an interrupt")
	}
	if got := latestStep(cfg.Output.Dir); got != 1 {
		t.Errorf("latest checkpoint at step %d, want 1", got)
	}
	ck, err := LatestCheckpoint(cfg.Output.Dir)
	if err != nil {
		t.Fatal(err)
	}
	vals := adapterValues(t, ck)
	finiteValues(t, vals)
	big := 0.0
	for _, v := range vals {
		big = math.Max(big, maxAbs(v))
	}
	t.Logf("step-1 checkpoint's largest adapter value: %.3g", big)
}

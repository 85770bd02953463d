package lora

import (
	"context"
	"log/slog"
	"math"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// TestOverfitEightExamples: a 2-layer tiny model with rank-8 LoRA on all
// linear layers and lr 1e-2 memorises 8 short Q&A pairs (batch 8): the
// masked training loss (answers only) falls below 0.05 within 60 steps,
// and an eval pass over the same data (no dropout) agrees.
//
// The model's final norm gain is raised from 1 to 8: a random tiny model
// (N(0, 0.02) tied embeddings, unit gain) has logits of at most about 2.6
// in size, so over a vocab of 1024 its loss cannot fall below about 4.4
// whatever the adapters learn (measured: it plateaus at 4.41).
func TestOverfitEightExamples(t *testing.T) {
	dir := t.TempDir()
	train := loadSplit(t, dir, "train", trainPairs)
	var losses []float64
	var initial, final float64
	doMLX(t, func() error {
		m, err := tinyModel(2, 21)
		if err != nil {
			return err
		}
		defer m.Free()
		gain := mlx.MulScalar(m.Norm, 8)
		if err := mlx.Eval(gain); err != nil {
			return err
		}
		mlx.Detach(gain)
		m.Norm.Free()
		m.Norm = gain

		cfg := testConfig(t.TempDir())
		cfg.LoRA.Keys = []string{"all-linear"}
		cfg.LoRA.Rank, cfg.LoRA.Alpha = 8, 16
		cfg.Optimizer.LR = 1e-2
		cfg.Training.BatchSize, cfg.Training.GradAccumulation = 8, 1
		cfg.Training.MaxSteps = 60
		log := slog.New(hookHandler{level: slog.LevelInfo, fn: func(r slog.Record) {
			if r.Message != "train" {
				return
			}
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "loss" {
					losses = append(losses, a.Value.Float64())
				}
				return true
			})
		}})
		tr, err := NewTrainer(cfg, m, train, train, tokPad, RunMetadata{}, log)
		if err != nil {
			return err
		}
		defer tr.Close()
		defer tr.Adapters.Remove()
		if initial, _, err = tr.Evaluate(train, 0); err != nil {
			return err
		}
		if _, err := tr.Run(context.Background()); err != nil {
			return err
		}
		final, _, err = tr.Evaluate(train, 0)
		return err
	})
	if len(losses) != 60 {
		t.Fatalf("%d train reports, want 60", len(losses))
	}
	first := -1
	for i, l := range losses {
		if l < 0.05 && first < 0 {
			first = i + 1
		}
	}
	t.Logf("train loss: before %.4f, step 1 %.4f, step 10 %.4f, step 30 %.5f, step 60 %.5f; first below 0.05 at step %d; eval on the train set after %.5f",
		initial, losses[0], losses[9], losses[29], losses[59], first, final)
	if initial < 5 {
		t.Errorf("initial loss %v: the random model already knows the data?", initial)
	}
	if math.Abs(losses[0]-initial) > 1e-4 {
		t.Errorf("step 1 loss %v differs from the eval before training %v (B = 0, dropout 0)", losses[0], initial)
	}
	if first < 0 || losses[59] >= 0.05 || final >= 0.05 {
		t.Errorf("not memorised: last train loss %v, eval %v (want < 0.05)", losses[59], final)
	}
}

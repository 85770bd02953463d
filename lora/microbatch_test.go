package lora

import (
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/fungtrain/fungtrain/traindata"
)

// microStep makes one update of batch 1 × accumulation 8 over train with
// the given training.micro_batch and auto token budget, and returns the
// parameter change, the gradient norm, and the step's compute batches
// (rows × length) as the stepper called its compiled functions.
func microStep(t *testing.T, train *traindata.Split, mb MicroBatch, budget int, dropout float64) (delta []float64, gradNorm float64, shapes []string) {
	cfg := testConfig(t.TempDir())
	cfg.LoRA.Keys = []string{"all-linear"}
	cfg.LoRA.Dropout = dropout
	// ε = 1 makes AdamW's first update lr·g/(|g|+1), which carries the
	// gradient's size (see oneStep).
	cfg.Optimizer.LR, cfg.Optimizer.Eps, cfg.Optimizer.GradClip = 1, 1, 0
	cfg.Training.BatchSize, cfg.Training.GradAccumulation, cfg.Training.MaxSteps = 1, 8, 1
	cfg.Training.MicroBatch, cfg.Training.MicroBatchTokens = mb, budget
	withTinyTrainer(t, cfg, train, func(tr *Trainer) error {
		if err := setRandomB(tr.Adapters, 0.05, 2); err != nil {
			return err
		}
		before, err := readFloats(tr.Adapters.Params()...)
		if err != nil {
			return err
		}
		res, err := tr.trainStep(LearningRate(cfg.Schedule, cfg.Optimizer.LR, 0, 1))
		if err != nil {
			return err
		}
		after, err := readFloats(tr.Adapters.Params()...)
		if err != nil {
			return err
		}
		for i := range after {
			for j := range after[i] {
				delta = append(delta, after[i][j]-before[i][j])
			}
		}
		gradNorm = res.gradNorm
		for s := range tr.stepper.shapes {
			shapes = append(shapes, s)
		}
		sort.Strings(shapes)
		return nil
	})
	return delta, gradNorm, shapes
}

// TestMicroBatchesSameUpdate: one update of batch 1 × accumulation 8 over
// 8 examples of different lengths is the same, within float tolerance,
// whether the 8 run one at a time (micro_batch 1, the plain accumulation),
// 2 or 3 at a time, packed by a 64-token budget, or all together (auto
// with the default budget: one batch, the fused one-call step). Negative
// control: averaging the compute batches' own means (mlx-lm's
// accumulation) instead of weighting by tokens moves the gradient far
// beyond that tolerance. With dropout on, the grouping changes the masks
// (they are drawn per compute batch), so the updates differ.
func TestMicroBatchesSameUpdate(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs)
	ref, refNorm, refShapes := microStep(t, train, 1, 0, 0)
	scale := maxAbs(ref)
	t.Logf("micro_batch 1: compute batches %v, largest update %.3g", refShapes, scale)
	if len(refShapes) == 0 || refShapes[0][:10] != "accumulate" {
		t.Fatalf("micro_batch 1 ran %v, want accumulate calls", refShapes)
	}
	cases := []struct {
		mb     MicroBatch
		budget int
		fused  bool // the whole window as one batch
	}{
		{2, 0, false},
		{3, 0, false},
		{MicroBatchAuto, 64, false},
		{MicroBatchAuto, 0, true},
	}
	for _, c := range cases {
		d, norm, shapes := microStep(t, train, c.mb, c.budget, 0)
		diff := maxAbsDiff(d, ref)
		t.Logf("micro_batch %v (budget %d): compute batches %v; max |update difference| %.3g (%.2g of the largest); grad norm %.7g vs %.7g",
			c.mb, c.budget, shapes, diff, diff/scale, norm, refNorm)
		if diff > 1e-5*scale || math.Abs(norm-refNorm) > 1e-5*refNorm {
			t.Errorf("micro_batch %v: update differs by %g, grad norm %v vs %v", c.mb, diff, norm, refNorm)
		}
		if fused := len(shapes) == 1 && shapes[0][:4] == "step"; fused != c.fused {
			t.Errorf("micro_batch %v: compute batches %v; want one fused step: %v", c.mb, shapes, c.fused)
		}
	}

	// Control: mlx-lm's accumulation, the mean of the compute batches'
	// per-token means, for micro_batch 3.
	var exact, averaged []float64
	cfg := testConfig(t.TempDir())
	cfg.LoRA.Keys = []string{"all-linear"}
	cfg.Training.BatchSize, cfg.Training.GradAccumulation, cfg.Training.MicroBatch = 1, 8, 3
	withTinyTrainer(t, cfg, train, func(tr *Trainer) error {
		if err := setRandomB(tr.Adapters, 0.05, 2); err != nil {
			return err
		}
		step := tr.data.step(0)
		var counts []int
		for _, b := range step.batches {
			counts = append(counts, b.Counted)
			g, err := batchGradients(tr, b)
			if err != nil {
				return err
			}
			if exact == nil {
				exact, averaged = make([]float64, len(g)), make([]float64, len(g))
			}
			for k, x := range g {
				exact[k] += x / float64(step.counted)
				averaged[k] += x / float64(b.Counted) / float64(len(step.batches))
			}
		}
		t.Logf("micro_batch 3: loss tokens per compute batch %v", counts)
		return nil
	})
	gap := maxAbsDiff(exact, averaged) / maxAbs(exact)
	t.Logf("averaging the compute batches' means would move the gradient by %.3g of its largest entry", gap)
	if gap < 1e-2 {
		t.Errorf("the compute batches' token counts are too alike for this test to tell weightings apart (gap %g)", gap)
	}

	// Dropout: the masks depend on the grouping.
	d1, _, _ := microStep(t, train, 1, 0, 0.2)
	dAll, _, _ := microStep(t, train, MicroBatchAuto, 0, 0.2)
	moved := maxAbsDiff(dAll, d1) / maxAbs(d1)
	t.Logf("dropout 0.2: one at a time vs all together differ by %.3g of the largest update (other masks)", moved)
	if moved < 1e-3 {
		t.Errorf("with dropout, grouping changed the update by only %g: are masks drawn per batch?", moved)
	}
	if fmt.Sprint(d1) == fmt.Sprint(ref) {
		t.Errorf("dropout did not change the update")
	}
}

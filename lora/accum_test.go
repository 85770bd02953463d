package lora

import (
	"fmt"
	"math"
	"testing"

	"github.com/fungtrain/fungtrain/traindata"
)

// oneStep trains one optimizer update over train with the given batch
// size and accumulation, from the same model and adapters (B random), and
// returns the parameter change and the gradient norm.
//
// AdamW's first update is lr·g/(|g|+ε) per entry, which for ε ≪ |g| is
// lr·sign(g) and would hide any error in the size of g; ε = 1 makes it
// lr·g/(|g|+1), within 9% of lr·g (|g| < 0.09 here), so the update
// carries the gradient's size.
func oneStep(t *testing.T, train *traindata.Split, batch, accum int, gradCheckpoint bool, dropout float64) (delta []float64, gradNorm float64) {
	return oneStepWith(t, train, batch, accum, gradCheckpoint, dropout, 0)
}

// withTinyTrainer runs f on the MLX thread with a trainer for cfg on a
// fresh two-layer tiny model (seed 9), and frees everything afterwards.
func withTinyTrainer(t *testing.T, cfg RunConfig, train *traindata.Split, f func(tr *Trainer) error) {
	doMLX(t, func() error {
		m, err := tinyModel(2, 9)
		if err != nil {
			return err
		}
		defer m.Free()
		tr, err := NewTrainer(cfg, m, train, train, tokPad, RunMetadata{}, quietLog())
		if err != nil {
			return err
		}
		defer tr.Close()
		defer tr.Adapters.Remove()
		return f(tr)
	})
}

// oneStepWith is oneStep with a loss chunk (training.loss_chunk).
func oneStepWith(t *testing.T, train *traindata.Split, batch, accum int, gradCheckpoint bool, dropout float64, lossChunk int) (delta []float64, gradNorm float64) {
	cfg := testConfig(t.TempDir())
	cfg.LoRA.Keys = []string{"all-linear"}
	cfg.Optimizer.LR, cfg.Optimizer.Eps, cfg.Optimizer.GradClip = 1, 1, 0
	cfg.Training.BatchSize, cfg.Training.GradAccumulation, cfg.Training.MaxSteps = batch, accum, 1
	cfg.Training.GradCheckpoint = gradCheckpoint
	cfg.Training.LossChunk = lossChunk
	cfg.LoRA.Dropout = dropout
	withTinyTrainer(t, cfg, train, func(tr *Trainer) error {
		if tr.stepper.forward.checkpointing() != gradCheckpoint {
			return fmt.Errorf("block checkpointing is %v", tr.stepper.forward.checkpointing())
		}
		if err := setRandomB(tr.Adapters, 0.05, 2); err != nil {
			return err
		}
		before, err := readFloats(tr.Adapters.Params()...)
		if err != nil {
			return err
		}
		lr := LearningRate(cfg.Schedule, cfg.Optimizer.LR, 0, 1)
		res, err := tr.trainStep(lr)
		if err != nil {
			return err
		}
		if tr.state.Cursor != accum || tr.state.Step != 1 {
			return fmt.Errorf("after one step: cursor %d step %d, want %d and 1", tr.state.Cursor, tr.state.Step, accum)
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
		return nil
	})
	return delta, gradNorm
}

// TestAccumulationIsExact: one update from 4 examples of different
// lengths (so batches are padded differently) is the same whether made as
// batch 1 × accumulation 4, batch 2 × 2, or batch 4 × 1, within float
// tolerance; while weighting each micro-batch's mean loss equally (the
// usual inexact accumulation) would change it far beyond that tolerance.
func TestAccumulationIsExact(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs[:4])
	var counts []int
	for _, ex := range train.Examples {
		n := 0
		for _, c := range ex.Counted {
			if c {
				n++
			}
		}
		counts = append(counts, n)
	}
	t.Logf("loss tokens per example: %v; lengths: %d %d %d %d", counts,
		len(train.Examples[0].Tokens), len(train.Examples[1].Tokens), len(train.Examples[2].Tokens), len(train.Examples[3].Tokens))

	ref, refNorm := oneStep(t, train, 4, 1, false, 0)
	scale := maxAbs(ref)
	if scale < 1e-4 {
		t.Fatalf("the update is only %g in size", scale)
	}
	for _, c := range [][2]int{{1, 4}, {2, 2}} {
		d, norm := oneStep(t, train, c[0], c[1], false, 0)
		diff := maxAbsDiff(d, ref)
		t.Logf("batch %d × accumulation %d vs batch 4 × 1: max |update difference| %.3g (relative to the largest update %.3g: %.2g); grad norm %.7g vs %.7g",
			c[0], c[1], diff, scale, diff/scale, norm, refNorm)
		if diff > 1e-5*scale {
			t.Errorf("batch %d × %d: update differs by %g (%.2g of the largest update)", c[0], c[1], diff, diff/scale)
		}
		if math.Abs(norm-refNorm) > 1e-5*refNorm {
			t.Errorf("batch %d × %d: gradient norm %v, batch 4 × 1 %v", c[0], c[1], norm, refNorm)
		}
	}

	// What equal weighting of per-example means would give, as a measure
	// of how much the tolerance above can tell apart: the gradient of
	// mean_i(loss_i) vs the gradient of Σ loss / Σ tokens.
	var exact, naive []float64
	doMLX(t, func() error {
		m, err := tinyModel(2, 9)
		if err != nil {
			return err
		}
		defer m.Free()
		cfg := testConfig(t.TempDir())
		cfg.LoRA.Keys = []string{"all-linear"}
		tr, err := NewTrainer(cfg, m, train, train, tokPad, RunMetadata{}, quietLog())
		if err != nil {
			return err
		}
		defer tr.Close()
		defer tr.Adapters.Remove()
		if err := setRandomB(tr.Adapters, 0.05, 2); err != nil {
			return err
		}
		total := 0
		for _, c := range counts {
			total += c
		}
		for i := range train.Examples {
			g, err := batchGradients(tr, traindata.MakeBatch(train.Examples, []int{i}, tokPad))
			if err != nil {
				return err
			}
			if exact == nil {
				exact, naive = make([]float64, len(g)), make([]float64, len(g))
			}
			for k, x := range g {
				exact[k] += x / float64(total)
				naive[k] += x / float64(counts[i]) / float64(len(counts))
			}
		}
		return nil
	})
	gap := maxAbsDiff(exact, naive) / maxAbs(exact)
	t.Logf("equal weighting of per-example means would move the gradient by %.3g of its largest entry", gap)
	if gap < 1e-2 {
		t.Errorf("the examples' token counts %v are too alike for this test to tell weightings apart (gap %g)", counts, gap)
	}
}

// TestGradCheckpointSameUpdate: with gradient checkpointing (each block
// recomputed in the backward pass, adapter parameters passed through) the
// update equals the one without, at batch 2 × accumulation 2, with and
// without dropout (the recomputation must draw the same masks).
func TestGradCheckpointSameUpdate(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs[:4])
	for _, dropout := range []float64{0, 0.2} {
		ref, refNorm := oneStep(t, train, 2, 2, false, dropout)
		got, norm := oneStep(t, train, 2, 2, true, dropout)
		diff := maxAbsDiff(got, ref)
		t.Logf("dropout %g: checkpointed vs plain: max |update difference| %.3g of %.3g; grad norm %.7g vs %.7g", dropout, diff, maxAbs(ref), norm, refNorm)
		if diff > 1e-5*maxAbs(ref) || math.Abs(norm-refNorm) > 1e-5*refNorm {
			t.Errorf("dropout %g: gradient checkpointing changes the update by %g (grad norm %v vs %v)", dropout, diff, norm, refNorm)
		}
	}
}

// TestQueuedStepsSameAsSequential: steps queued ahead of their turn (the
// default without accumulation) give bit-identical adapters, moments,
// losses and gradient norms to steps run one after the other, over five
// steps with dropout and a cosine schedule, with an evaluation between
// steps. With evaluations every 2 steps configured, no step is queued
// across them.
func TestQueuedStepsSameAsSequential(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs[:6])
	evalEvery := 0
	run := func(sequential bool) (params [][]float64, log []float64) {
		cfg := testConfig(t.TempDir())
		cfg.Eval.Every = evalEvery
		cfg.Training.BatchSize, cfg.Training.GradAccumulation, cfg.Training.MaxSteps = 2, 1, 5
		cfg.LoRA.Dropout = 0.1
		cfg.Schedule = ScheduleConfig{Name: "cosine", WarmupSteps: 1}
		cfg.Optimizer.LR = 0.05
		cfg.Training.Sequential = sequential
		withTinyTrainer(t, cfg, train, func(tr *Trainer) error {
			for i := 0; i < 5; i++ {
				st, err := tr.Step()
				if err != nil {
					return err
				}
				if i == 2 {
					v, _, err := tr.Evaluate(train, 0)
					if err != nil {
						return err
					}
					log = append(log, v)
				}
				log = append(log, st.Loss)
			}
			want := map[bool]int{true: 0, false: 4}[sequential]
			if evalEvery == 2 && !sequential {
				want = 2 // queued after steps 1 and 3, not after 2 and 4
			}
			if tr.stepper.queuedUsed != want {
				return fmt.Errorf("sequential %v: %d queued steps used, want %d", sequential, tr.stepper.queuedUsed, want)
			}
			var err error
			params, err = readFloats(append(tr.Adapters.Params(), tr.Opt.State()...)...)
			return err
		})
		return params, log
	}
	seqParams, seqLog := run(true)
	qParams, qLog := run(false)
	evalEvery = 2
	run(false)
	for i := range seqLog {
		if seqLog[i] != qLog[i] {
			t.Errorf("loss %d: %v queued, %v sequential", i, qLog[i], seqLog[i])
		}
	}
	for i := range seqParams {
		if d := maxAbsDiff(qParams[i], seqParams[i]); d != 0 || len(qParams[i]) == 0 {
			t.Errorf("array %d differs by %g between queued and sequential steps", i, d)
		}
	}
	t.Logf("losses %v", qLog)
}

package lora

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/fungtrain/fungtrain/internal/progress"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// ErrInterrupted is returned when a run stopped on a signal after saving
// a checkpoint.
var ErrInterrupted = errors.New("training interrupted; checkpoint saved")

// Run trains until the last step, ctx is cancelled (then it saves a
// checkpoint and returns ErrInterrupted), or the loss stops being finite
// (then the last good checkpoint is kept and an error returned).
//
// Across ranks, a rank whose ctx is cancelled sets its stop flag in the
// steps it builds from then on; the flags are summed with the gradients,
// so every rank sees the same step as the last, and rank 0 saves the
// checkpoint. (A rank that stopped alone would leave the others waiting
// at their next collective.)
func (t *Trainer) Run(ctx context.Context) (*Summary, error) {
	if t.state.Step >= t.totalSteps {
		// Nothing to train; going on would rewrite the run's records
		// (summary.json without its final losses).
		return nil, fmt.Errorf("the run in %s already finished (step %d of %d); nothing to resume", t.out, t.state.Step, t.totalSteps)
	}
	if err := t.syncRanks(); err != nil {
		return nil, err
	}
	if err := AgreeOnError(t.group, t.start()); err != nil {
		return nil, err
	}
	defer t.metrics.close()
	if t.state.Step == 0 && math.IsNaN(t.state.InitialVal) && t.Cfg.Eval.Every > 0 {
		v, err := t.evaluate()
		if err != nil {
			return nil, err
		}
		t.state.InitialVal = v
	}
	bar := progress.New(t.progressOut(), "train", t.totalSteps)
	bar.Add(t.state.Step)
	defer bar.Finish()
	runStart, secondsBefore := time.Now(), t.state.Seconds
	elapsed := func() float64 { return secondsBefore + time.Since(runStart).Seconds() }
	t.window.restart(time.Now())
	for t.state.Step < t.totalSteps {
		if t.stopping(ctx) {
			t.stepper.discardAhead()
			t.state.Seconds = elapsed()
			if err := t.saveCheckpoint(); err != nil {
				return nil, fmt.Errorf("save checkpoint on interrupt: %w", err)
			}
			t.Log.Info("interrupted; checkpoint saved", "step", t.state.Step, "dir", t.out)
			return nil, errors.Join(ErrInterrupted, t.barrier())
		}
		lr := t.learningRate(t.state.Step)
		res, err := t.makeStep(lr, ctx.Err() != nil)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w (the last good checkpoint is in %s)", t.state.Step+1, err, checkpointsDir(t.out))
		}
		t.state.TrainSeconds += t.window.add(res, time.Now())
		t.state.TrainedTokens += int64(res.counted)
		t.state.InputTokens += int64(res.tokens)
		bar.Add(1)
		step := t.state.Step
		last := step == t.totalSteps
		if step%t.Cfg.Training.ReportEvery == 0 || last {
			t.report(lr, res.gradNorm)
		}
		paused := false
		if every(t.Cfg.Eval.Every, step) || (last && t.Cfg.Eval.Every > 0) {
			if err := t.evaluateAndKeepBest(); err != nil {
				return nil, err
			}
			paused = true
		}
		t.state.Seconds = elapsed()
		if every(t.Cfg.Training.SaveEvery, step) || last {
			if err := t.saveCheckpoint(); err != nil {
				return nil, err
			}
			paused = true
		}
		if paused {
			// The time of an evaluation or a checkpoint is not a step's.
			t.window.restart(time.Now())
		}
	}
	t.Log.Info("compiled shapes", "distinct", len(t.stepper.shapes))
	sum := t.summary()
	if t.writes() {
		if err := t.Adapters.Save(t.out); err != nil {
			return nil, err
		}
		if err := writeJSON(filepath.Join(t.out, "summary.json"), sum); err != nil {
			return nil, err
		}
	}
	return sum, t.barrier()
}

// stopping reports whether the run stops before its next step: alone,
// when ctx is cancelled; across ranks, when the last step reported that
// some rank's was (see Run).
func (t *Trainer) stopping(ctx context.Context) bool {
	if t.WorldSize() > 1 {
		return t.stopSeen
	}
	return ctx.Err() != nil
}

// progressOut is where the progress bar goes: stderr on rank 0, nowhere
// (nil) on the others.
func (t *Trainer) progressOut() *os.File {
	if t.writes() {
		return os.Stderr
	}
	return nil
}

// every reports whether step is a positive multiple of n (n > 0).
func every(n, step int) bool { return n > 0 && step%n == 0 }

// start prepares the run directory — stale temporary files of a killed
// run removed, metrics.jsonl opened, config.yaml and run_metadata.json
// written — and logs what the run will do.
func (t *Trainer) start() error {
	mlx.ResetPeakMemory()
	if !t.writes() {
		return nil
	}
	if err := os.MkdirAll(t.out, 0o755); err != nil {
		return err
	}
	removed, err := removeStaleTemps(t.out)
	if err != nil {
		return err
	}
	if len(removed) > 0 {
		t.Log.Info("removed temporary files of an interrupted save", "paths", removed)
	}
	if t.metrics, err = openMetrics(filepath.Join(t.out, "metrics.jsonl"), t.state.Step); err != nil {
		return err
	}
	if err := t.writeRecords(); err != nil {
		t.metrics.close()
		return err
	}
	traindata.LogSplit(t.Log, t.Train, t.Cfg.Training.BatchSize)
	t.Log.Info("training", "trainable_params", t.Adapters.NumParams(), "adapted_layers", len(t.Adapters.Names),
		"steps", t.totalSteps, "start_step", t.state.Step, "batches_per_epoch", t.data.perEpoch,
		"grad_accumulation", t.Cfg.Training.GradAccumulation, "micro_batch", t.Cfg.Training.MicroBatch.String(),
		"ranks", t.WorldSize(), "global_batch", t.shardSpec().GlobalBatch())
	return nil
}

// evaluate measures the validation loss and records it.
func (t *Trainer) evaluate() (float64, error) {
	loss, n, err := t.Evaluate(t.Valid, t.Cfg.Eval.MaxBatches)
	if err != nil {
		return 0, fmt.Errorf("evaluate at step %d: %w", t.state.Step, err)
	}
	t.lastValLoss = loss
	t.metrics.write(map[string]any{"type": "eval", "step": t.state.Step, "val_loss": loss,
		"val_ppl": math.Exp(loss), "val_tokens": n, "time": time.Now().UTC().Format(time.RFC3339)})
	t.Log.Info("eval", "step", t.state.Step, "val_loss", round4(loss), "val_ppl", round4(math.Exp(loss)), "tokens", n)
	return loss, nil
}

// evaluateAndKeepBest evaluates and saves the adapters to best/ when the
// validation loss is the lowest so far.
func (t *Trainer) evaluateAndKeepBest() error {
	v, err := t.evaluate()
	if err != nil {
		return err
	}
	if v < t.state.BestValLoss {
		t.state.BestValLoss, t.state.BestStep = v, t.state.Step
		if t.writes() {
			return t.Adapters.Save(filepath.Join(t.out, "best"))
		}
	}
	return nil
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

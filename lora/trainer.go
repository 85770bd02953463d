package lora

import (
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// Trainer fine-tunes adapters on a model. Create it with NewTrainer and
// call Run on the MLX thread.
type Trainer struct {
	Cfg      RunConfig
	Model    *llama.Model
	Adapters *Adapters
	Opt      *AdamW
	Train    *traindata.Split
	Valid    *traindata.Split
	PadID    int32
	Meta     RunMetadata
	Log      *slog.Logger

	stepper    *stepper
	data       *trainBatches
	group      *mlx.Group // the ranks training together; nil: one process
	totalSteps int
	out        string
	oldLimit   int64 // MLX's memory limit before the trainer set one; -1 when unchanged
	stopSeen   bool  // a step reported that some rank was asked to stop

	// Resumable state.
	state TrainState

	// What Run reports.
	window                     reportWindow
	lastTrainLoss, lastValLoss float64
	metrics                    *metricsWriter
	peakMem                    int64
}

// TrainState is what a checkpoint records besides adapters and moments.
type TrainState struct {
	Step          int     `json:"step"`          // optimizer updates done
	Cursor        int     `json:"cursor"`        // micro-batches consumed
	Seed          uint64  `json:"seed"`          // the run's seed; with Cursor it fixes all randomness
	BestValLoss   float64 `json:"best_val_loss"` // +Inf before any eval
	BestStep      int     `json:"best_step"`     //
	InitialVal    float64 `json:"initial_val_loss"`
	TrainedTokens int64   `json:"trained_tokens"` // loss-counted tokens so far
	InputTokens   int64   `json:"input_tokens"`   // non-padding tokens so far
	Seconds       float64 `json:"seconds"`        // wall time so far, evaluations and checkpoints included
	TrainSeconds  float64 `json:"train_seconds"`  // time in training steps alone
}

// TrainerOption changes how NewTrainer sets a trainer up.
type TrainerOption func(*Trainer)

// WithGroup trains data-parallel across the ranks of g (nil or one rank:
// alone). Every rank runs the same config on the same data; rank r takes
// its share of each global batch of size·batch_size examples, and only
// rank 0 writes the run directory. Run starts by giving every rank rank
// 0's adapters, optimizer state and progress (after a Restore on rank 0).
func WithGroup(g *mlx.Group) TrainerOption { return func(t *Trainer) { t.group = g } }

// NewTrainer prepares a run: adapters on the model (fresh from the seed),
// the optimizer and the step's functions. On error the model is left as
// it was.
func NewTrainer(cfg RunConfig, m *llama.Model, train, valid *traindata.Split, padID int32, meta RunMetadata, log *slog.Logger, opts ...TrainerOption) (_ *Trainer, err error) {
	if err := cfg.LoRA.Validate(len(m.Layers)); err != nil {
		return nil, err
	}
	tc := cfg.Training
	t := &Trainer{Cfg: cfg, Model: m, Train: train, Valid: valid, PadID: padID, Meta: meta, Log: log,
		out: cfg.Output.Dir, oldLimit: -1,
		state: TrainState{Seed: tc.Seed, BestValLoss: math.Inf(1), InitialVal: math.NaN()}}
	for _, o := range opts {
		o(t)
	}
	t.data = newTrainBatches(train, tc, cfg.Data.MaxSeqLength, t.shardSpec(), t.Rank(), padID)
	ad, err := Apply(m, cfg.LoRA, cfg.Training.Seed)
	if err != nil {
		return nil, err
	}
	t.Adapters = ad
	t.Opt = NewAdamW(cfg.Optimizer, ad.Params())
	defer func() {
		if err != nil {
			t.Close()
			ad.Remove()
		}
	}()
	t.totalSteps = tc.MaxSteps
	if t.totalSteps == 0 {
		t.totalSteps = (t.data.perEpoch*tc.Epochs + tc.GradAccumulation - 1) / tc.GradAccumulation
	}
	if t.stepper, err = newStepper(tc, m, ad, t.Opt, t.data, cfg.Optimizer.GradClip, t.group); err != nil {
		return nil, err
	}
	if tc.MemoryLimitGB > 0 {
		t.oldLimit = mlx.SetMemoryLimit(int64(tc.MemoryLimitGB * (1 << 30)))
	}
	return t, nil
}

// Close frees the trainer's arrays (not the model's base weights or the
// adapters) and restores MLX's memory limit.
func (t *Trainer) Close() {
	if t.oldLimit >= 0 {
		mlx.SetMemoryLimit(t.oldLimit)
		t.oldLimit = -1
	}
	if t.stepper != nil {
		t.stepper.close()
		t.stepper = nil
	}
	t.Opt.Free()
}

// TotalSteps is the number of optimizer updates the run makes.
func (t *Trainer) TotalSteps() int { return t.totalSteps }

// State returns the resumable state.
func (t *Trainer) State() TrainState { return t.state }

// StepStats describe one optimizer update, for benchmarks.
type StepStats struct {
	Loss    float64 // mean loss over the counted tokens
	Counted int     // loss-counted tokens
	Tokens  int     // non-padding input tokens
}

// Step runs one optimizer update at the schedule's learning rate, as Run
// does, without evaluation, reports or checkpoints.
func (t *Trainer) Step() (StepStats, error) {
	res, err := t.trainStep(t.learningRate(t.state.Step))
	if err != nil {
		return StepStats{}, err
	}
	return StepStats{Loss: res.lossSum / res.counted, Counted: int(res.counted), Tokens: res.tokens}, nil
}

// learningRate is the schedule's rate for update number done+1.
func (t *Trainer) learningRate(done int) float64 {
	return LearningRate(t.Cfg.Schedule, t.Cfg.Optimizer.LR, done, t.totalSteps)
}

// trainStep makes the next optimizer update at learning rate lr and
// advances the state past it.
func (t *Trainer) trainStep(lr float64) (stepResult, error) { return t.makeStep(lr, false) }

// makeStep is trainStep with this rank's stop flag for the steps it
// builds (see Run).
func (t *Trainer) makeStep(lr float64, stop bool) (stepResult, error) {
	p := stepPlan{cursor: t.state.Cursor, done: t.state.Step, lr: lr}
	var next *stepPlan
	if t.queueAfter(p.done + 1) {
		next = &stepPlan{cursor: p.cursor + t.data.accum, done: p.done + 1, lr: t.learningRate(p.done + 1)}
	}
	res, err := t.stepper.run(p, next, stop)
	if err != nil {
		return res, err
	}
	t.state.Cursor += t.data.accum
	t.state.Step++
	t.stopSeen = t.stopSeen || res.stop
	return res, nil
}

// queueAfter reports whether the step after update number done may be
// queued on the device before that update is read: not after the last
// step, not with training.sequential, and not across an evaluation or
// checkpoint, whose work would otherwise wait behind it (and be counted
// as evaluation time).
func (t *Trainer) queueAfter(done int) bool {
	return done < t.totalSteps && !t.Cfg.Training.Sequential &&
		!every(t.Cfg.Eval.Every, done) && !every(t.Cfg.Training.SaveEvery, done)
}

// Evaluate returns the mean cross-entropy over the counted tokens of a
// split (or its first maxBatches length-sorted batches, the same ones every
// time) and the token count. Across ranks, each rank evaluates every
// size-th batch and the sums are added exactly, so every rank gets the
// same value.
func (t *Trainer) Evaluate(split *traindata.Split, maxBatches int) (float64, int, error) {
	sum, count, err := evalSums(t.Model, split, t.Cfg.Eval.BatchSize, maxBatches, t.PadID, t.Rank(), t.WorldSize())
	if err != nil {
		return 0, 0, err
	}
	if t.WorldSize() > 1 {
		all, err := t.group.SumFloat64s([]float64{sum, float64(count)})
		if err != nil {
			return 0, 0, fmt.Errorf("sum the ranks' validation losses: %w", err)
		}
		sum, count = all[0], int(all[1])
	}
	if count == 0 {
		return 0, 0, errors.New("evaluation has no loss tokens")
	}
	return sum / float64(count), count, nil
}

// EvaluateLoss is the masked mean cross-entropy of model over split.
func EvaluateLoss(m *llama.Model, split *traindata.Split, batchSize, maxBatches int, padID int32) (float64, int, error) {
	sum, count, err := evalSums(m, split, batchSize, maxBatches, padID, 0, 1)
	if err != nil {
		return 0, 0, err
	}
	if count == 0 {
		return 0, 0, errors.New("evaluation has no loss tokens")
	}
	return sum / float64(count), count, nil
}

// evalSums is the masked cross-entropy sum and loss-token count of model
// over the batches i ≡ rank (mod size) of split's first maxBatches.
func evalSums(m *llama.Model, split *traindata.Split, batchSize, maxBatches int, padID int32, rank, size int) (float64, int, error) {
	// A fixed order, by length and not shuffled, so every eval sees the
	// same subset.
	groups := traindata.LengthGroups(split.Examples, batchSize)
	if maxBatches > 0 && len(groups) > maxBatches {
		groups = groups[:maxBatches]
	}
	total, count := 0.0, 0
	ce := newFusedCE(m, evalLossChunk, false)
	for i := rank; i < len(groups); i += size {
		b := traindata.MakeBatch(split.Examples, groups[i], padID)
		s := mlx.NewScope()
		ids, targets, weights := batchArrays(b)
		sum, err := ce.sum(m.Hidden(ids, nil), targets, weights).Item()
		s.Close()
		if err != nil {
			return 0, 0, err
		}
		total += sum
		count += b.Counted
	}
	return total, count, nil
}

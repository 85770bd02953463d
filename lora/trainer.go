package lora

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/fungtrain/fungtrain/internal/progress"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// ErrInterrupted is returned when a run stopped on a signal after saving
// a checkpoint.
var ErrInterrupted = errors.New("training interrupted; checkpoint saved")

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

	vag        *mlx.ValueAndGrad
	step       *mlx.Closure // vag, compiled when configured
	update     *fusedUpdate // clip + AdamW, compiled
	stepUpdate *mlx.Closure // vag and the update in one call, when there is no accumulation
	ahead      *queuedStep  // the next step, queued before the current one is read
	sequential bool         // never queue ahead (training.sequential)
	aheadUsed  int          // queued steps that were used (tests)
	oldLimit   int64        // MLX's memory limit before the run; -1 when unchanged
	useKeys    bool         // dropout keys are step inputs
	ce         *fusedCE
	out        string
	totalSteps int
	perEpoch   int
	groups     map[int][][]int // per-epoch batch order, cached

	// Resumable state.
	state TrainState

	// Progress within the report window.
	winSum, winCount           float64
	winTokens, winSteps        int
	winSeconds                 float64 // time in training steps since the last report
	runStart                   time.Time
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

// NewTrainer prepares a run: adapters on the model (fresh from the seed),
// the optimizer and the value-and-grad function.
func NewTrainer(cfg RunConfig, m *llama.Model, train, valid *traindata.Split, padID int32, meta RunMetadata, log *slog.Logger) (*Trainer, error) {
	if err := cfg.LoRA.Validate(len(m.Layers)); err != nil {
		return nil, err
	}
	ad, err := Apply(m, cfg.LoRA, cfg.Training.Seed)
	if err != nil {
		return nil, err
	}
	m.Checkpointing = cfg.Training.GradCheckpoint
	t := &Trainer{Cfg: cfg, Model: m, Adapters: ad, Train: train, Valid: valid, PadID: padID, Meta: meta, Log: log,
		out: cfg.Output.Dir, groups: map[int][][]int{}, oldLimit: -1}
	t.Opt = NewAdamW(cfg.Optimizer, ad.Params())
	t.state = TrainState{Seed: cfg.Training.Seed, BestValLoss: math.Inf(1), InitialVal: math.NaN()}
	t.perEpoch = len(traindata.Batches(train.Examples, cfg.Training.BatchSize, 0, cfg.Training.Seed))
	t.totalSteps = cfg.Training.MaxSteps
	if t.totalSteps == 0 {
		t.totalSteps = (t.perEpoch*cfg.Training.Epochs + cfg.Training.GradAccumulation - 1) / cfg.Training.GradAccumulation
	}
	t.ce = newFusedCE(m, cfg.Training.LossChunk, true)
	nParams := len(ad.Params())
	t.useKeys = cfg.LoRA.Dropout > 0
	t.vag, err = mlx.NewValueAndGrad(t.lossFunc(nParams), argRange(nParams)...)
	if err != nil {
		ad.Remove()
		t.Opt.Free()
		t.ce.free()
		return nil, err
	}
	t.step = mlx.NewClosure(func(in []*mlx.Array) ([]*mlx.Array, error) {
		vals, grads, err := t.vag.Call(in...)
		return append(vals, grads...), err
	})
	if t.update, err = newFusedUpdate(t.Opt, nParams); err != nil {
		t.Close()
		ad.Remove()
		return nil, err
	}
	if cfg.Training.GradAccumulation == 1 {
		t.stepUpdate = mlx.NewClosure(t.stepAndUpdate(nParams))
	}
	if cfg.Training.Compile {
		for _, c := range []*mlx.Closure{t.step, t.stepUpdate} {
			if c == nil {
				continue
			}
			if err := c.Compile(false); err != nil {
				t.Close()
				ad.Remove()
				return nil, err
			}
		}
	}
	t.sequential = cfg.Training.Sequential
	if cfg.Training.MemoryLimitGB > 0 {
		t.oldLimit = mlx.SetMemoryLimit(int64(cfg.Training.MemoryLimitGB * (1 << 30)))
	}
	return t, nil
}

// stepAndUpdate is a whole step without accumulation as one function: the
// loss and gradients of one micro-batch and the optimizer update they
// make, so a step is one compiled call and one wait for the device. Its
// inputs are stepInputs', then M, V and the update's four scalars; its
// outputs are the loss, its sum, then the update's (new params, M, V and
// the gradient norm).
func (t *Trainer) stepAndUpdate(nParams int) mlx.Func {
	return func(in []*mlx.Array) ([]*mlx.Array, error) {
		nStep := len(in) - 2*nParams - 4
		vals, grads, err := t.vag.Call(in[:nStep]...)
		if err != nil {
			return nil, err
		}
		upd := append(append([]*mlx.Array{}, in[:nParams]...), grads...)
		upd = append(upd, in[nStep:]...)
		return append(vals, t.Opt.updateGraph(nParams, upd)...), nil
	}
}

func argRange(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// Close frees the trainer's arrays (not the model's base weights) and
// restores MLX's memory limit.
func (t *Trainer) Close() {
	if t.oldLimit >= 0 {
		mlx.SetMemoryLimit(t.oldLimit)
		t.oldLimit = -1
	}
	if t.ahead != nil {
		t.ahead.free()
		t.ahead = nil
	}
	if t.update != nil {
		t.update.free()
	}
	t.stepUpdate.Free()
	t.step.Free()
	t.vag.Free()
	t.Opt.Free()
	t.ce.free()
}

// TotalSteps is the number of optimizer updates the run makes.
func (t *Trainer) TotalSteps() int { return t.totalSteps }

// State returns the resumable state.
func (t *Trainer) State() TrainState { return t.state }

// lossFunc builds the function whose gradient training takes. Its inputs
// are the adapter parameters, the layers' dropout keys (when dropout is on:
// as inputs, a compiled step draws new masks each time), then ids (B, L),
// targets (B, L), weights (B, L) and the step's count of loss tokens; its
// outputs are the loss
// normalised by that count, and the unnormalised sum. Normalising every
// micro-batch by the whole step's count makes accumulated gradients equal
// the gradient of the step's mean loss exactly.
func (t *Trainer) lossFunc(nParams int) mlx.Func {
	return func(in []*mlx.Array) ([]*mlx.Array, error) {
		old := t.Adapters.Params()
		t.Adapters.SetParams(in[:nParams])
		defer t.Adapters.SetParams(old)
		rest := in[nParams:]
		if t.useKeys {
			n := len(t.Adapters.Names)
			t.Adapters.setKeys(rest[:n])
			defer t.Adapters.setKeys(nil)
			rest = rest[n:]
		}
		ids, targets, weights, norm := rest[0], rest[1], rest[2], rest[3]
		sum := t.maskedCrossEntropySum(ids, targets, weights)
		return []*mlx.Array{mlx.Divide(sum, norm), sum}, nil
	}
}

// stepInputs lays out the inputs of lossFunc for parameters params and a
// micro-batch.
func (t *Trainer) stepInputs(params []*mlx.Array, ids, targets, weights, norm *mlx.Array) []*mlx.Array {
	in := append([]*mlx.Array{}, params...)
	if t.useKeys {
		in = append(in, t.Adapters.dropoutKeys()...)
	}
	return append(in, ids, targets, weights, norm)
}

// dropoutSeed seeds the dropout masks of micro-batch cursor: with the
// cursor it fixes all of a run's randomness, so a resumed run repeats it.
func (t *Trainer) dropoutSeed(cursor int) uint64 {
	return t.state.Seed*1_000_033 + uint64(cursor)
}

// maskedCrossEntropySum is Σ weight·(logsumexp(logits) - logit[target]),
// computed in float32, chunk by chunk (see fusedCE).
func (t *Trainer) maskedCrossEntropySum(ids, targets, weights *mlx.Array) *mlx.Array {
	return t.ce.sumWithGrad(t.Model.Hidden(ids, nil), targets, weights)
}

// batchArrays turns a batch into MLX arrays.
func batchArrays(b traindata.Batch) (ids, targets, weights *mlx.Array) {
	return mlx.FromInt32s(b.Inputs, b.B, b.L), mlx.FromInt32s(b.Targets, b.B, b.L), mlx.FromFloat32s(b.Weights, b.B, b.L)
}

// microBatch returns the example indices of global micro-batch g.
func (t *Trainer) microBatch(g int) []int {
	epoch, i := g/t.perEpoch, g%t.perEpoch
	gs, ok := t.groups[epoch]
	if !ok {
		gs = traindata.Batches(t.Train.Examples, t.Cfg.Training.BatchSize, epoch, t.Cfg.Training.Seed)
		t.groups = map[int][][]int{epoch: gs} // keep one epoch cached
	}
	return gs[i]
}

// padTo is the multiple batch lengths are rounded up to: with a compiled
// step each new shape costs a trace, so shapes are kept few.
func (t *Trainer) padTo() int {
	if t.Cfg.Training.Compile {
		return 32
	}
	return 1
}

// stepResult is one optimizer update's outcome.
type stepResult struct {
	lossSum, counted float64
	tokens           int
	gradNorm         float64
}

// trainStep runs one optimizer update over GradAccumulation micro-batches.
func (t *Trainer) trainStep(lr float64) (stepResult, error) {
	if t.stepUpdate != nil {
		return t.singleStep(lr)
	}
	accum := t.Cfg.Training.GradAccumulation
	var res stepResult
	batches := make([]traindata.Batch, accum)
	for k := range batches {
		batches[k] = traindata.MakeBatchPadded(t.Train.Examples, t.microBatch(t.state.Cursor+k), t.PadID, t.padTo())
		res.counted += float64(batches[k].Counted)
		res.tokens += batches[k].Tokens
	}
	if res.counted == 0 {
		return res, errors.New("a training step has no loss tokens")
	}
	var acc []*mlx.Array
	freeAcc := func() {
		for _, a := range acc {
			a.Free()
		}
	}
	for k, b := range batches {
		s := mlx.NewScope()
		t.Adapters.SetTraining(true, t.dropoutSeed(t.state.Cursor+k))
		ids, targets, weights := batchArrays(b)
		norm := mlx.Scalar(res.counted, mlx.Float32)
		outs, err := t.step.Call(t.stepInputs(t.Adapters.Params(), ids, targets, weights, norm)...)
		if err != nil {
			s.Close()
			freeAcc()
			return res, err
		}
		vals, grads := outs[:2], outs[2:]
		if acc != nil {
			for i := range grads {
				grads[i] = mlx.Add(acc[i], grads[i])
			}
		}
		if err := mlx.Eval(append(grads, vals[1])...); err != nil {
			s.Close()
			freeAcc()
			return res, err
		}
		sum, err := vals[1].Item()
		freeAcc()
		s.Keep(grads...)
		mlx.Detach(grads...)
		acc = grads
		s.Close()
		if err != nil {
			freeAcc()
			return res, err
		}
		res.lossSum += sum
	}
	t.Adapters.SetTraining(false, 0)
	defer freeAcc()
	if loss := res.lossSum / res.counted; math.IsNaN(loss) || math.IsInf(loss, 0) {
		return res, fmt.Errorf("loss is %v", loss)
	}
	old := t.Adapters.Params()
	params, gn, err := t.update.apply(t.Opt, old, acc, lr, t.Cfg.Optimizer.GradClip)
	if err != nil {
		return res, err
	}
	res.gradNorm = gn
	t.Adapters.SetParams(params)
	for _, p := range old {
		p.Free()
	}
	t.state.Cursor += accum
	t.state.Step++
	return res, nil
}

// queuedStep is a step without accumulation whose graph is built and
// queued on the device; its outputs (loss, loss sum, then the update's new
// params, M, V and gradient norm) are long-lived until adopted or freed.
type queuedStep struct {
	cursor int          // the micro-batch it trains on
	step   int          // updates done before it
	lr     float64      // its learning rate
	from   []*mlx.Array // the params it starts from
	res    stepResult
	out    []*mlx.Array
}

// fits reports whether q was built for the trainer's current state.
func (q *queuedStep) fits(t *Trainer, lr float64) bool {
	params := t.Adapters.Params()
	if q.cursor != t.state.Cursor || q.step != t.state.Step || q.lr != lr || len(params) != len(q.from) {
		return false
	}
	for i, p := range params {
		if p != q.from[i] {
			return false
		}
	}
	return true
}

// free releases the outputs the trainer has not adopted.
func (q *queuedStep) free() {
	for _, a := range q.out {
		if a != nil {
			a.Free()
		}
	}
}

// queueStep builds update number step+1 on micro-batch cursor from params
// and moments m, v (which may still be computing) and queues it without
// waiting.
func (t *Trainer) queueStep(cursor, step int, lr float64, params, m, v []*mlx.Array) (*queuedStep, error) {
	b := traindata.MakeBatchPadded(t.Train.Examples, t.microBatch(cursor), t.PadID, t.padTo())
	if b.Counted == 0 {
		return nil, errors.New("a training step has no loss tokens")
	}
	q := &queuedStep{cursor: cursor, step: step, lr: lr, from: append([]*mlx.Array{}, params...),
		res: stepResult{counted: float64(b.Counted), tokens: b.Tokens}}
	s := mlx.NewScope()
	defer s.Close()
	t.Adapters.SetTraining(true, t.dropoutSeed(cursor))
	defer t.Adapters.SetTraining(false, 0)
	ids, targets, weights := batchArrays(b)
	in := t.stepInputs(params, ids, targets, weights, mlx.Scalar(q.res.counted, mlx.Float32))
	in = append(append(append(in, m...), v...), t.Opt.updateScalars(step+1, lr, t.Cfg.Optimizer.GradClip)...)
	out, err := t.stepUpdate.Call(in...)
	if err != nil {
		return nil, err
	}
	if err := mlx.AsyncEval(out...); err != nil {
		return nil, err
	}
	mlx.Detach(out...)
	q.out = out
	return q, nil
}

// singleStep is trainStep without accumulation: one compiled call computes
// the loss, the gradients and the update. Before waiting for it, the next
// step is queued on top of its (still computing) results, so the device
// goes from one step to the next without waiting for the host to read the
// loss and build the next graph. The queued step is used only if the
// trainer's state is still the one it was built from.
func (t *Trainer) singleStep(lr float64) (stepResult, error) {
	q := t.ahead
	t.ahead = nil
	if q != nil && !q.fits(t, lr) {
		q.free()
		q = nil
	}
	if q != nil {
		t.aheadUsed++
	}
	if q == nil {
		var err error
		if q, err = t.queueStep(t.state.Cursor, t.state.Step, lr, t.Adapters.Params(), t.Opt.M, t.Opt.V); err != nil {
			return stepResult{}, err
		}
	}
	n := len(t.Adapters.Params())
	if t.state.Step+1 < t.totalSteps && !t.sequential && !t.pausesAfter(t.state.Step+1) {
		nextLR := LearningRate(t.Cfg.Schedule, t.Cfg.Optimizer.LR, t.state.Step+1, t.totalSteps)
		u := q.out[2:]
		// An error here comes back when that step's turn comes.
		t.ahead, _ = t.queueStep(t.state.Cursor+1, t.state.Step+1, nextLR, u[:n], u[n:2*n], u[2*n:3*n])
	}
	res, err := t.finishStep(q, n)
	q.free()
	if err != nil && t.ahead != nil {
		t.ahead.free()
		t.ahead = nil
	}
	return res, err
}

// pausesAfter reports whether Run evaluates or saves a checkpoint after
// update number step: the next step is not queued across that pause, whose
// work would otherwise wait behind it (and be counted as evaluation time).
func (t *Trainer) pausesAfter(step int) bool {
	every := func(n int) bool { return n > 0 && step%n == 0 }
	return every(t.Cfg.Eval.Every) || every(t.Cfg.Training.SaveEvery)
}

// finishStep waits for a queued step and adopts its update. On success the
// adopted arrays are cleared from q.out.
func (t *Trainer) finishStep(q *queuedStep, n int) (stepResult, error) {
	res := q.res
	if err := mlx.Eval(q.out...); err != nil {
		return res, err
	}
	var err error
	if res.lossSum, err = q.out[1].Item(); err != nil {
		return res, err
	}
	if loss := res.lossSum / res.counted; math.IsNaN(loss) || math.IsInf(loss, 0) {
		return res, fmt.Errorf("loss is %v", loss)
	}
	old := t.Adapters.Params()
	params, gn, err := t.Opt.adopt(n, q.out[2:])
	if err != nil {
		return res, err
	}
	clear(q.out[2 : 2+3*n]) // adopted: no longer q's to free
	res.gradNorm = gn
	t.Adapters.SetParams(params)
	for _, p := range old {
		p.Free()
	}
	t.state.Cursor++
	t.state.Step++
	return res, nil
}

// Evaluate returns the mean cross-entropy over the counted tokens of a
// split (or its first maxBatches length-sorted batches, the same ones every
// time) and the token count.
func (t *Trainer) Evaluate(split *traindata.Split, maxBatches int) (float64, int, error) {
	return EvaluateLoss(t.Model, split, t.Cfg.Eval.BatchSize, maxBatches, t.PadID)
}

// EvaluateLoss is the masked mean cross-entropy of model over split.
func EvaluateLoss(m *llama.Model, split *traindata.Split, batchSize, maxBatches int, padID int32) (float64, int, error) {
	// A fixed order, by length and not shuffled, so every eval sees the
	// same subset.
	groups := traindata.LengthGroups(split.Examples, batchSize)
	if maxBatches > 0 && len(groups) > maxBatches {
		groups = groups[:maxBatches]
	}
	total, count := 0.0, 0
	ce := newFusedCE(m, evalLossChunk, false)
	for _, g := range groups {
		b := traindata.MakeBatch(split.Examples, g, padID)
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
	if count == 0 {
		return 0, 0, errors.New("evaluation has no loss tokens")
	}
	return total / float64(count), count, nil
}

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

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

// Run trains until the last step, ctx is cancelled (then it saves a
// checkpoint and returns ErrInterrupted), or the loss stops being finite
// (then the last good checkpoint is kept and an error returned).
func (t *Trainer) Run(ctx context.Context) (*Summary, error) {
	if t.state.Step >= t.totalSteps {
		// Nothing to train; going on would rewrite the run's records
		// (summary.json without its final losses).
		return nil, fmt.Errorf("the run in %s already finished (step %d of %d); nothing to resume", t.out, t.state.Step, t.totalSteps)
	}
	if err := os.MkdirAll(t.out, 0o755); err != nil {
		return nil, err
	}
	var err error
	if t.metrics, err = openMetrics(filepath.Join(t.out, "metrics.jsonl"), t.state.Step); err != nil {
		return nil, err
	}
	defer t.metrics.close()
	if err := t.writeRecords(); err != nil {
		return nil, err
	}
	cfg := t.Cfg
	traindata.LogSplit(t.Log, t.Train, cfg.Training.BatchSize)
	t.Log.Info("training", "trainable_params", t.Adapters.NumParams(), "adapted_layers", len(t.Adapters.Names),
		"steps", t.totalSteps, "start_step", t.state.Step, "batches_per_epoch", t.perEpoch,
		"grad_accumulation", cfg.Training.GradAccumulation)
	mlx.ResetPeakMemory()
	if t.state.Step == 0 && math.IsNaN(t.state.InitialVal) && cfg.Eval.Every > 0 {
		v, err := t.evaluate()
		if err != nil {
			return nil, err
		}
		t.state.InitialVal = v
	}
	bar := progress.New(os.Stderr, "train", t.totalSteps)
	bar.Add(t.state.Step)
	defer bar.Finish()
	t.runStart = time.Now()
	secondsBefore := t.state.Seconds
	for t.state.Step < t.totalSteps {
		if ctx.Err() != nil {
			t.state.Seconds = secondsBefore + time.Since(t.runStart).Seconds()
			if err := t.saveCheckpoint(); err != nil {
				return nil, fmt.Errorf("save checkpoint on interrupt: %w", err)
			}
			t.Log.Info("interrupted; checkpoint saved", "step", t.state.Step, "dir", t.out)
			return nil, ErrInterrupted
		}
		lr := LearningRate(cfg.Schedule, cfg.Optimizer.LR, t.state.Step, t.totalSteps)
		stepStart := time.Now()
		res, err := t.trainStep(lr)
		stepSeconds := time.Since(stepStart).Seconds()
		t.state.TrainSeconds += stepSeconds
		t.winSeconds += stepSeconds
		if err != nil {
			return nil, fmt.Errorf("step %d: %w (the last good checkpoint is in %s)", t.state.Step+1, err, filepath.Join(t.out, "checkpoints"))
		}
		t.state.TrainedTokens += int64(res.counted)
		t.state.InputTokens += int64(res.tokens)
		t.winSum += res.lossSum
		t.winCount += res.counted
		t.winTokens += res.tokens
		t.winSteps++
		bar.Add(1)
		step := t.state.Step
		if step%cfg.Training.ReportEvery == 0 || step == t.totalSteps {
			t.report(lr, res.gradNorm)
		}
		if cfg.Eval.Every > 0 && (step%cfg.Eval.Every == 0 || step == t.totalSteps) {
			v, err := t.evaluate()
			if err != nil {
				return nil, err
			}
			if v < t.state.BestValLoss {
				t.state.BestValLoss, t.state.BestStep = v, step
				if err := t.Adapters.Save(filepath.Join(t.out, "best")); err != nil {
					return nil, err
				}
			}
		}
		t.state.Seconds = secondsBefore + time.Since(t.runStart).Seconds()
		if (cfg.Training.SaveEvery > 0 && step%cfg.Training.SaveEvery == 0) || step == t.totalSteps {
			if err := t.saveCheckpoint(); err != nil {
				return nil, err
			}
		}
	}
	if err := t.Adapters.Save(t.out); err != nil {
		return nil, err
	}
	sum := t.summary()
	if err := writeJSON(filepath.Join(t.out, "summary.json"), sum); err != nil {
		return nil, err
	}
	return sum, nil
}

// report writes a train line. Rates are over the time spent in training
// steps since the last report, so evaluations and checkpoints in between do
// not dilute them.
func (t *Trainer) report(lr, gradNorm float64) {
	el := t.winSeconds
	loss := t.winSum / t.winCount
	t.lastTrainLoss = loss
	peak := mlx.PeakMemory()
	t.peakMem = max(t.peakMem, peak)
	gb := func(b int64) float64 { return math.Round(float64(b)/1e7) / 100 }
	rate := func(n float64) float64 {
		if el <= 0 {
			return 0
		}
		return n / el
	}
	rec := map[string]any{"type": "train", "step": t.state.Step,
		"epoch": float64(t.state.Cursor) / float64(t.perEpoch),
		"loss":  loss, "lr": lr, "grad_norm": gradNorm,
		"it_per_sec":             rate(float64(t.winSteps)),
		"tokens_per_sec":         rate(float64(t.winTokens)),
		"trained_tokens_per_sec": rate(t.winCount),
		"trained_tokens":         t.state.TrainedTokens,
		"peak_memory_gb":         float64(peak) / 1e9, "active_memory_gb": float64(mlx.ActiveMemory()) / 1e9,
		"time": time.Now().UTC().Format(time.RFC3339)}
	t.metrics.write(rec)
	t.Log.Info("train", "step", t.state.Step, "loss", round4(loss), "lr", lr, "it_per_sec", round4(rate(float64(t.winSteps))),
		"tokens_per_sec", math.Round(rate(float64(t.winTokens))), "trained_tokens", t.state.TrainedTokens, "peak_mem_gb", gb(peak))
	t.winSum, t.winCount, t.winTokens, t.winSteps, t.winSeconds = 0, 0, 0, 0, 0
}

// Summary is summary.json.
type Summary struct {
	FinalTrainLoss float64 `json:"final_train_loss"`
	FinalValLoss   float64 `json:"final_val_loss"`
	InitialValLoss float64 `json:"initial_val_loss"`
	BestValLoss    float64 `json:"best_val_loss"`
	BestStep       int     `json:"best_step"`
	Steps          int     `json:"steps"`
	TrainedTokens  int64   `json:"trained_tokens"`
	InputTokens    int64   `json:"input_tokens"`
	Seconds        float64 `json:"seconds"`                // wall time, evaluations included
	TrainSeconds   float64 `json:"train_seconds"`          // time in training steps
	TokensPerSec   float64 `json:"tokens_per_sec"`         // input tokens per training second
	TrainedPerSec  float64 `json:"trained_tokens_per_sec"` // loss-counted tokens per training second
	PeakMemoryGB   float64 `json:"peak_memory_gb"`
	TrainableParam int     `json:"trainable_params"`
}

func (t *Trainer) summary() *Summary {
	s := &Summary{FinalTrainLoss: t.lastTrainLoss, FinalValLoss: t.lastValLoss, InitialValLoss: t.state.InitialVal,
		BestValLoss: t.state.BestValLoss, BestStep: t.state.BestStep, Steps: t.state.Step,
		TrainedTokens: t.state.TrainedTokens, InputTokens: t.state.InputTokens, Seconds: t.state.Seconds,
		TrainSeconds: t.state.TrainSeconds,
		PeakMemoryGB: float64(max(t.peakMem, mlx.PeakMemory())) / 1e9, TrainableParam: t.Adapters.NumParams()}
	if s.TrainSeconds > 0 {
		s.TokensPerSec = float64(s.InputTokens) / s.TrainSeconds
		s.TrainedPerSec = float64(s.TrainedTokens) / s.TrainSeconds
	}
	for _, p := range []*float64{&s.FinalValLoss, &s.InitialValLoss, &s.BestValLoss} {
		if math.IsInf(*p, 0) || math.IsNaN(*p) {
			*p = 0
		}
	}
	return s
}

// StepStats describe one optimizer update, for benchmarks.
type StepStats struct {
	Loss    float64 // mean loss over the counted tokens
	Counted int     // loss-counted tokens
	Tokens  int     // non-padding input tokens
}

// Step runs one optimizer update at the schedule's learning rate, as Run
// does, without evaluation, reports or checkpoints.
func (t *Trainer) Step() (StepStats, error) {
	lr := LearningRate(t.Cfg.Schedule, t.Cfg.Optimizer.LR, t.state.Step, t.totalSteps)
	res, err := t.trainStep(lr)
	if err != nil {
		return StepStats{}, err
	}
	return StepStats{Loss: res.lossSum / res.counted, Counted: int(res.counted), Tokens: res.tokens}, nil
}

package lora

import (
	"math"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

// reportWindow gathers the steps since the last train line.
//
// A step's time runs from the completion of the step before it to its
// own, so a window's time is the time between the completions of the
// steps it counts. Measuring the host's call instead would be wrong with
// the next step queued on the device ahead of its call: its work overlaps
// the host's report of the one before, and a step finished during a slow
// report would seem to take no time. The clock restarts after an
// evaluation or a checkpoint (restart), whose time is no step's: no step
// is queued across them.
type reportWindow struct {
	lossSum, counted float64
	tokens, steps    int
	seconds          float64
	since            time.Time // completion of the last step, or the restart
}

// restart starts timing the next step at now.
func (w *reportWindow) restart(now time.Time) { w.since = now }

// add counts a step that completed at done and returns its time.
func (w *reportWindow) add(r stepResult, done time.Time) float64 {
	sec := done.Sub(w.since).Seconds()
	w.since = done
	w.lossSum += r.lossSum
	w.counted += r.counted
	w.tokens += r.tokens
	w.steps++
	w.seconds += sec
	return sec
}

// rate is n per second of the window (0 for an empty window).
func (w *reportWindow) rate(n float64) float64 {
	if w.seconds <= 0 {
		return 0
	}
	return n / w.seconds
}

// report writes a train line for the window and starts a new one.
func (t *Trainer) report(lr, gradNorm float64) {
	w := &t.window
	loss := w.lossSum / w.counted
	t.lastTrainLoss = loss
	peak := mlx.PeakMemory()
	t.peakMem = max(t.peakMem, peak)
	gb := func(b int64) float64 { return math.Round(float64(b)/1e7) / 100 }
	itPerSec, tokensPerSec := w.rate(float64(w.steps)), w.rate(float64(w.tokens))
	t.metrics.write(map[string]any{"type": "train", "step": t.state.Step,
		"epoch": t.data.epochAt(t.state.Cursor),
		"loss":  loss, "lr": lr, "grad_norm": gradNorm,
		"it_per_sec":             itPerSec,
		"tokens_per_sec":         tokensPerSec,
		"trained_tokens_per_sec": w.rate(w.counted),
		"trained_tokens":         t.state.TrainedTokens,
		"peak_memory_gb":         float64(peak) / 1e9, "active_memory_gb": float64(mlx.ActiveMemory()) / 1e9,
		"time": time.Now().UTC().Format(time.RFC3339)})
	t.Log.Info("train", "step", t.state.Step, "loss", round4(loss), "lr", lr, "it_per_sec", round4(itPerSec),
		"tokens_per_sec", math.Round(tokensPerSec), "trained_tokens", t.state.TrainedTokens, "peak_mem_gb", gb(peak))
	*w = reportWindow{since: w.since}
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
	PeakMemoryGB   float64 `json:"peak_memory_gb"`         // the largest of the ranks'
	TrainableParam int     `json:"trainable_params"`
}

func (t *Trainer) summary() *Summary {
	s := &Summary{FinalTrainLoss: t.lastTrainLoss, FinalValLoss: t.lastValLoss, InitialValLoss: t.state.InitialVal,
		BestValLoss: t.state.BestValLoss, BestStep: t.state.BestStep, Steps: t.state.Step,
		TrainedTokens: t.state.TrainedTokens, InputTokens: t.state.InputTokens, Seconds: t.state.Seconds,
		TrainSeconds: t.state.TrainSeconds,
		PeakMemoryGB: t.maxOverRanks(float64(max(t.peakMem, mlx.PeakMemory()))) / 1e9, TrainableParam: t.Adapters.NumParams()}
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

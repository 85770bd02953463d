package bench

import (
	"math"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

func TestPerSecondAndGiB(t *testing.T) {
	cases := []struct {
		count   int
		seconds float64
		want    float64
	}{
		{1024, 0.5, 2048},
		{10 * 1024, 0.43, 23813.953488372093},
		{7, 0, 0}, // no time: no rate, never Inf
		{0, 2, 0},
	}
	for _, c := range cases {
		if got := PerSecond(c.count, c.seconds); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("PerSecond(%d, %g) = %g, want %g", c.count, c.seconds, got, c.want)
		}
	}
	if got := GiB(3 << 30); got != 3 {
		t.Errorf("GiB(3<<30) = %g", got)
	}
	if got := GiB(1536 << 20); got != 1.5 {
		t.Errorf("GiB(1536 MiB) = %g", got)
	}
	if got := maxRSSBytes(2048); got != 2048*1024 {
		t.Errorf("maxRSSBytes(2048 KiB) = %d", got)
	}
	if MaxRSS() <= 0 {
		t.Errorf("MaxRSS() = %d, want a positive size", MaxRSS())
	}
}

// TestSyntheticSplitCounts: seq inputs per example, and the targets of the
// prompt share are not counted.
func TestSyntheticSplitCounts(t *testing.T) {
	cases := []struct {
		seq         int
		promptFrac  float64
		wantCounted int
	}{
		{16, 0, 16},
		{16, 0.5, 8},
		{10, 0.25, 8}, // prompt = int(2.5) = 2 targets
	}
	for _, c := range cases {
		s := SyntheticSplit(3, c.seq, 50, c.promptFrac, 1)
		if len(s.Examples) != 3 {
			t.Fatalf("%d examples", len(s.Examples))
		}
		for _, ex := range s.Examples {
			if len(ex.Tokens) != c.seq+1 {
				t.Fatalf("example has %d tokens, want %d", len(ex.Tokens), c.seq+1)
			}
			n := 0
			for i, on := range ex.Counted {
				if on {
					n++
				}
				if i == 0 && on {
					t.Fatal("the first token is never a target")
				}
			}
			if n != c.wantCounted {
				t.Errorf("seq %d prompt %.2f: %d counted targets, want %d", c.seq, c.promptFrac, n, c.wantCounted)
			}
			for _, id := range ex.Tokens {
				if id < 0 || id >= 50 {
					t.Fatalf("token %d outside the vocabulary", id)
				}
			}
		}
	}
}

// TestTrainCountsTokens: the reported rates over all and over counted
// tokens stand in the ratio of counted to all targets, and the step count
// and shape are as asked. Timing itself is not asserted.
func TestTrainCountsTokens(t *testing.T) {
	var r *TrainResult
	err := mlx.Do(func() error {
		var err error
		r, err = Train(Options{Shape: "tiny", Dtype: "f32", Seq: 16, Batch: 2, Steps: 2, Warmup: 1,
			LoRA: lora.DefaultSettings(), Seed: 3, PromptFrac: 0.25})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Steps != 2 || r.Batch != 2 || r.Seq != 16 || r.LoRALayers != 4 {
		t.Errorf("result describes %d steps, batch %d, seq %d, %d layers", r.Steps, r.Batch, r.Seq, r.LoRALayers)
	}
	// 16 inputs per row, 12 counted (targets 5..16).
	if ratio := r.CountedTokensPerSec / r.TokensPerSec; math.Abs(ratio-12.0/16) > 1e-9 {
		t.Errorf("counted/all rate ratio %g, want 0.75", ratio)
	}
	// Per layer: q (128×6 + 6×128) and v (128×6 + 6×64), on 4 layers.
	if want := 4 * ((128*6 + 6*128) + (128*6 + 6*64)); r.TrainableParams != want {
		t.Errorf("trainable params %d, want %d", r.TrainableParams, want)
	}
	if r.FinalLoss <= 0 || math.IsNaN(r.FinalLoss) {
		t.Errorf("final loss %v", r.FinalLoss)
	}
	if r.PeakMemoryGiB <= 0 || r.WeightsGiB <= 0 || r.ForwardPeakGiB < r.WeightsGiB {
		t.Errorf("memory figures: peak %g, weights %g, forward %g", r.PeakMemoryGiB, r.WeightsGiB, r.ForwardPeakGiB)
	}
}

// TestRunConfigOverrides: the bench flags become run-config overrides and
// --set values are applied after them (the later one wins); unknown keys
// and bad values are errors naming the key.
func TestRunConfigOverrides(t *testing.T) {
	o := Options{Batch: 2, GradAccum: 8, LossChunk: 256, LoRA: lora.DefaultSettings(), Seed: 7, Warmup: 2, Steps: 3}
	cfg, err := RunConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Training.BatchSize != 2 || cfg.Training.GradAccumulation != 8 || cfg.Training.MaxSteps != 6 ||
		cfg.Training.Seed != 7 || cfg.Eval.Every != 0 || cfg.Training.SaveEvery != 0 || cfg.Data.MaxSeqLength != 1024 {
		t.Errorf("config from flags: %+v, data %+v", cfg.Training, cfg.Data.Config)
	}
	o.Sets = []string{"training.grad_accumulation=4", "training.loss_chunk=64", "data.max_seq_length=512", "lora.rank=3"}
	if cfg, err = RunConfig(o); err != nil {
		t.Fatal(err)
	}
	if cfg.Training.GradAccumulation != 4 || cfg.Training.LossChunk != 64 || cfg.Data.MaxSeqLength != 512 || cfg.LoRA.Rank != 3 {
		t.Errorf("--set did not win: %+v, rank %d, max_seq_length %d", cfg.Training, cfg.LoRA.Rank, cfg.Data.MaxSeqLength)
	}
	for set, want := range map[string]string{
		"training.bogus=1":           "unknown key training.bogus",
		"training.batch_size=two":    "training.batch_size",
		"training.grad_accumulation": "want section.key=value",
	} {
		o.Sets = []string{set}
		if _, err := RunConfig(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v, want an error containing %q", set, err, want)
		}
	}
}

// TestTrainRealWorkload: with a length distribution and accumulation, one
// optimizer step is grad-accum examples: on examples of 100 tokens with
// a 30-token prompt, 4 × 99 input tokens and 4 × 70 loss-counted ones per
// step, so the rates stand in those ratios to the step rate. MFU is
// tokens/s × FLOPs per token over the peak, the attention context that of
// 99-input sequences, and a --set reaches the trainer.
func TestTrainRealWorkload(t *testing.T) {
	var r *TrainResult
	err := mlx.Do(func() error {
		var err error
		r, err = Train(Options{Shape: "tiny", Dtype: "f32", Batch: 1, GradAccum: 8, Steps: 2, Warmup: 1,
			Lengths: "mean:100,max:100,min:100,prompt:0.3,n:6", LoRA: lora.DefaultSettings(), Seed: 3,
			PeakTFLOPs: 0.5, Sets: []string{"training.grad_accumulation=4"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.GradAccum != 4 || r.Training.GradAccumulation != 4 || r.Seq != 0 || len(r.Sets) != 1 {
		t.Errorf("result: accumulation %d, seq %d, sets %v", r.GradAccum, r.Seq, r.Sets)
	}
	if got := r.TokensPerSec / r.StepsPerSec; math.Abs(got-4*99) > 1e-6 {
		t.Errorf("%g input tokens per optimizer step, want 396", got)
	}
	if got := r.CountedTokensPerSec / r.StepsPerSec; math.Abs(got-4*70) > 1e-6 {
		t.Errorf("%g counted tokens per optimizer step, want 280", got)
	}
	if math.Abs(r.StepSeconds*r.StepsPerSec-1) > 1e-9 {
		t.Errorf("step seconds %g and steps/s %g disagree", r.StepSeconds, r.StepsPerSec)
	}
	if r.Lengths.MeanAttention != 50 || r.Lengths.MeanTokens != 100 {
		t.Errorf("lengths %+v: 99 inputs attend (99+1)/2 = 50 positions on average", r.Lengths)
	}
	if want := r.TokensPerSec * r.FLOPsPerToken.Total / 0.5e12; math.Abs(r.MFU-want) > 1e-12 || r.MFU <= 0 {
		t.Errorf("MFU %g, want %g", r.MFU, want)
	}
	if !(r.LoadSeconds > 0 && r.FirstStepSeconds > r.LoadSeconds && r.FirstStepUnix > 1.7e9) {
		t.Errorf("cold start: load %g s, first step %g s (unix %f)", r.LoadSeconds, r.FirstStepSeconds, r.FirstStepUnix)
	}
}

// TestTrainWindowSpansItsSteps: the trainer queues a step ahead, so the
// timed window must start right after the last warm-up step; a one-step
// window then takes about as long per step as a longer one (before the fix
// the queued step finished before the clock started and one measured step
// took microseconds), and the peak covers training.
func TestTrainWindowSpansItsSteps(t *testing.T) {
	perStep := map[int]float64{}
	for _, steps := range []int{1, 4} {
		var r *TrainResult
		err := mlx.Do(func() error {
			var err error
			r, err = Train(Options{Shape: "tiny", Dtype: "f32", Seq: 128, Batch: 4, Steps: steps, Warmup: 2,
				LoRA: lora.DefaultSettings(), Seed: 5})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		perStep[steps] = r.StepSeconds
		if r.PeakMemoryGiB <= r.WeightsGiB {
			t.Errorf("%d steps: training peak %g GiB, not above the weights' %g", steps, r.PeakMemoryGiB, r.WeightsGiB)
		}
	}
	if ratio := perStep[1] / perStep[4]; ratio < 0.3 {
		t.Errorf("one measured step took %.6f s, %.2f× a step of a 4-step window (%.6f s): the window misses work",
			perStep[1], ratio, perStep[4])
	}
}

package llama

import (
	"fmt"
	"math"

	"github.com/fungtrain/fungtrain/mlx"
)

// SampleOptions choose how the next token is drawn.
type SampleOptions struct {
	Temp              float64 // 0 means greedy
	TopP              float64 // nucleus sampling; 0 or 1 disables
	TopK              int     // 0 disables
	MinP              float64 // 0 disables
	RepetitionPenalty float64 // 0 or 1 disables
	RepetitionContext int     // how many recent tokens the penalty sees (default 20)
	// FrequencyPenalty and PresencePenalty are OpenAI's: each token's
	// logit is lowered by FrequencyPenalty times the number of times it was
	// generated so far, plus PresencePenalty if it was generated at all
	// (the prompt does not count). 0 disables; in [-2, 2].
	FrequencyPenalty float64
	PresencePenalty  float64
	Seed             uint64
}

// Validate checks the ranges of the options; the error names the field.
func (o SampleOptions) Validate() error {
	switch {
	case o.Temp < 0 || math.IsNaN(o.Temp) || math.IsInf(o.Temp, 0):
		return fmt.Errorf("temperature must be a finite number >= 0, got %g", o.Temp)
	case o.TopP < 0 || o.TopP > 1 || math.IsNaN(o.TopP):
		return fmt.Errorf("top_p must be in [0, 1], got %g", o.TopP)
	case o.MinP < 0 || o.MinP > 1 || math.IsNaN(o.MinP):
		return fmt.Errorf("min_p must be in [0, 1], got %g", o.MinP)
	case o.TopK < 0:
		return fmt.Errorf("top_k must be >= 0, got %d", o.TopK)
	case o.RepetitionPenalty < 0 || math.IsNaN(o.RepetitionPenalty) || math.IsInf(o.RepetitionPenalty, 0):
		return fmt.Errorf("repetition_penalty must be a finite number >= 0, got %g", o.RepetitionPenalty)
	case o.FrequencyPenalty < -2 || o.FrequencyPenalty > 2 || math.IsNaN(o.FrequencyPenalty):
		return fmt.Errorf("frequency_penalty must be in [-2, 2], got %g", o.FrequencyPenalty)
	case o.PresencePenalty < -2 || o.PresencePenalty > 2 || math.IsNaN(o.PresencePenalty):
		return fmt.Errorf("presence_penalty must be in [-2, 2], got %g", o.PresencePenalty)
	case o.RepetitionContext < 0:
		return fmt.Errorf("repetition context must be >= 0, got %d", o.RepetitionContext)
	}
	return nil
}

// penalized reports whether a penalty is on, which makes each token depend
// on the previous one read back from the device.
func (o SampleOptions) penalized() bool {
	return (o.RepetitionPenalty > 0 && o.RepetitionPenalty != 1) || o.FrequencyPenalty != 0 || o.PresencePenalty != 0
}

// sampler draws tokens on the device.
type sampler struct {
	opts      SampleOptions
	step      uint64
	promptLen int // history's first promptLen tokens are the prompt
}

func newSampler(o SampleOptions) *sampler {
	if o.RepetitionContext <= 0 {
		o.RepetitionContext = 20
	}
	return &sampler{opts: o}
}

// sample returns the next token id (shape (1,)) for logits (1, V).
func (s *sampler) sample(logits *mlx.Array, history []int32) *mlx.Array {
	o := s.opts
	if o.Temp <= 0 && !o.penalized() {
		// Widening to float32 is exact, so the argmax of the logits as
		// they are is the same token, one kernel sooner.
		return mlx.Argmax(logits, -1, false)
	}
	logits = s.penalize(mlx.AsType(logits, mlx.Float32), history)
	if o.Temp <= 0 {
		return mlx.Argmax(logits, -1, false)
	}
	negInf := mlx.Scalar(math.Inf(-1), mlx.Float32)
	logits = mlx.MulScalar(logits, 1/o.Temp)
	V := logits.Dim(1)
	if o.TopK > 0 && o.TopK < V {
		sorted := mlx.Sort(logits, -1)
		kth := mlx.SliceAxis(sorted, 1, V-o.TopK, V-o.TopK+1)
		logits = mlx.Where(mlx.Less(logits, kth), negInf, logits)
	}
	if o.MinP > 0 {
		probs := mlx.Softmax(logits, true, -1)
		floor := mlx.MulScalar(mlx.Max(probs, true, -1), o.MinP)
		logits = mlx.Where(mlx.Less(probs, floor), negInf, logits)
	}
	if o.TopP > 0 && o.TopP < 1 {
		probs := mlx.Softmax(logits, true, -1)
		order := mlx.Argsort(mlx.Negative(probs), -1)
		sortedP := mlx.TakeAlongAxis(probs, order, -1)
		before := mlx.Cumsum(sortedP, -1, false, false) // mass strictly before each token
		drop := mlx.GreaterEqual(before, mlx.Scalar(o.TopP, mlx.Float32))
		sortedLogits := mlx.TakeAlongAxis(logits, order, -1)
		sortedLogits = mlx.Where(drop, negInf, sortedLogits)
		logits = mlx.PutAlongAxis(logits, order, sortedLogits, -1)
	}
	key := mlx.RandomKey(o.Seed*7919 + s.step)
	s.step++
	return mlx.Categorical(logits, -1, key)
}

// penalize applies the penalties to float32 logits (1, V): the repetition
// penalty to the tokens among the last RepetitionContext of history
// (positive logits shrink, negative ones grow), then the frequency and
// presence penalties to the generated tokens.
func (s *sampler) penalize(logits *mlx.Array, history []int32) *mlx.Array {
	o := s.opts
	if o.RepetitionPenalty > 0 && o.RepetitionPenalty != 1 && len(history) > 0 {
		ctx := history[max(0, len(history)-o.RepetitionContext):]
		idx := mlx.FromInt32s(ctx, 1, len(ctx))
		picked := mlx.TakeAlongAxis(logits, idx, 1)
		p := mlx.Scalar(o.RepetitionPenalty, mlx.Float32)
		zero := mlx.Scalar(0, mlx.Float32)
		adj := mlx.Where(mlx.Less(picked, zero), mlx.Multiply(picked, p), mlx.Divide(picked, p))
		logits = mlx.PutAlongAxis(logits, idx, adj, 1)
	}
	if (o.FrequencyPenalty != 0 || o.PresencePenalty != 0) && len(history) > s.promptLen {
		counts := map[int32]int{}
		var ids []int32
		for _, id := range history[s.promptLen:] {
			if counts[id] == 0 {
				ids = append(ids, id)
			}
			counts[id]++
		}
		sub := make([]float32, len(ids))
		for i, id := range ids {
			sub[i] = float32(float64(counts[id])*o.FrequencyPenalty + o.PresencePenalty)
		}
		idx := mlx.FromInt32s(ids, 1, len(ids))
		picked := mlx.TakeAlongAxis(logits, idx, 1)
		logits = mlx.PutAlongAxis(logits, idx, mlx.Subtract(picked, mlx.FromFloat32s(sub, 1, len(sub))), 1)
	}
	return logits
}

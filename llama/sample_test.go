package llama

import (
	"math"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// TestPenalize checks the penalties against a float64 computation of their
// definitions: the repetition penalty (mlx-lm's) over the last
// RepetitionContext tokens of prompt and answer, then OpenAI's frequency and
// presence penalties over the generated tokens only.
func TestPenalize(t *testing.T) {
	logits := []float64{2, -1, 3, 0.5, -2, 1}
	prompt := []int32{0, 1, 4}
	generated := []int32{2, 2, 3, 2}
	for _, o := range []SampleOptions{
		{RepetitionPenalty: 1.5, RepetitionContext: 3},
		{FrequencyPenalty: 0.5, PresencePenalty: 0.25},
		{RepetitionPenalty: 1.2, RepetitionContext: 20, FrequencyPenalty: -0.4, PresencePenalty: 1},
		{},
	} {
		history := append(append([]int32(nil), prompt...), generated...)
		want := append([]float64(nil), logits...)
		if o.RepetitionPenalty != 0 {
			seen := map[int32]bool{}
			for _, id := range history[max(0, len(history)-o.RepetitionContext):] {
				if seen[id] {
					continue
				}
				seen[id] = true
				if want[id] < 0 {
					want[id] *= o.RepetitionPenalty
				} else {
					want[id] /= o.RepetitionPenalty
				}
			}
		}
		count := map[int32]int{}
		for _, id := range generated {
			count[id]++
		}
		for id, n := range count {
			want[id] -= float64(n)*o.FrequencyPenalty + o.PresencePenalty
		}
		doMLX(t, func() error {
			s := mlx.NewScope()
			defer s.Close()
			smp := newSampler(o)
			smp.promptLen = len(prompt)
			f := make([]float32, len(logits))
			for i, v := range logits {
				f[i] = float32(v)
			}
			got, err := smp.penalize(mlx.FromFloat32s(f, 1, len(f)), history).Float32s()
			if err != nil {
				return err
			}
			for i := range want {
				if math.Abs(float64(got[i])-want[i]) > 1e-6 {
					t.Errorf("%+v: logit %d is %g, want %g", o, i, got[i], want[i])
				}
			}
			return nil
		})
	}
}

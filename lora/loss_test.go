package lora

import (
	"fmt"
	"math"
	"testing"

	"github.com/fungtrain/fungtrain/data"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// refMaskedCE computes Σ w·(logsumexp(logits) - logit[target]) and Σ w in
// float64 from the base model's logits, one example at a time (no padding),
// with the weights data.MakeBatch gives each example.
func refMaskedCE(m *llama.Model, examples []data.Example) (sum, count float64, err error) {
	for i := range examples {
		b := data.MakeBatch(examples, []int{i}, tokPad)
		s := mlx.NewScope()
		logits, err := m.Forward(mlx.FromInt32s(b.Inputs, 1, b.L), nil).Float32s()
		s.Close()
		if err != nil {
			return 0, 0, err
		}
		V := len(logits) / b.L
		for j := 0; j < b.L; j++ {
			w := float64(b.Weights[j])
			if w == 0 {
				continue
			}
			row := logits[j*V : (j+1)*V]
			mx := math.Inf(-1)
			for _, x := range row {
				mx = math.Max(mx, float64(x))
			}
			z := 0.0
			for _, x := range row {
				z += math.Exp(float64(x) - mx)
			}
			sum += w * (mx + math.Log(z) - float64(row[b.Targets[j]]))
			count += w
		}
	}
	return sum, count, nil
}

// TestStep0LossMatchesIndependentCE: with B = 0, the trainer's validation
// loss (padded batches of 4) equals the masked cross-entropy computed
// independently in float64 from the base model's logits, and mlx-lm's
// cross-entropy on the same model, ids, targets and weights.
func TestStep0LossMatchesIndependentCE(t *testing.T) {
	modelDir := writeTinyModelDir(t, 2, 11)
	valid := loadSplit(t, t.TempDir(), "valid", append(append([]qa{}, validPairs...), trainPairs...))
	var refSum, refCount, evalLoss, directLoss float64
	var evalCount int
	var all data.Batch
	doMLX(t, func() error {
		m, err := llama.LoadModel(modelDir, llama.LoadOptions{Dtype: "f32"})
		if err != nil {
			return err
		}
		defer m.Free()
		if refSum, refCount, err = refMaskedCE(m, valid.Examples); err != nil {
			return err
		}
		cfg := testConfig(t.TempDir())
		cfg.LoRA.Keys = []string{"all-linear"}
		cfg.Eval.BatchSize = 4
		tr, err := NewTrainer(cfg, m, valid, valid, tokPad, RunMetadata{}, quietLog())
		if err != nil {
			return err
		}
		defer tr.Close()
		defer tr.Adapters.Remove()
		for _, n := range tr.Adapters.Names {
			v, err := tr.Adapters.Layers[n].B.Float32s()
			if err != nil {
				return err
			}
			for _, x := range v {
				if x != 0 {
					return fmt.Errorf("%s: B is not zero at init", n)
				}
			}
		}
		if evalLoss, evalCount, err = tr.Evaluate(valid, 0); err != nil {
			return err
		}
		idx := make([]int, len(valid.Examples))
		for i := range idx {
			idx[i] = i
		}
		all = data.MakeBatch(valid.Examples, idx, tokPad)
		directLoss, _, err = EvaluateLoss(m, valid, len(idx), 0, tokPad)
		return err
	})
	ref := refSum / refCount
	t.Logf("reference (float64, unpadded) %.7f over %v tokens; trainer eval (batches of 4) %.7f over %d; one padded batch %.7f",
		ref, refCount, evalLoss, evalCount, directLoss)
	if float64(evalCount) != refCount {
		t.Errorf("eval counted %d tokens, reference %v", evalCount, refCount)
	}
	if math.Abs(ref-math.Log(1024)) > 0.5 {
		t.Errorf("reference loss %v is far from ln(1024) for a random model", ref)
	}
	for name, v := range map[string]float64{"Trainer.Evaluate": evalLoss, "EvaluateLoss (one batch)": directLoss} {
		if rel := math.Abs(v-ref) / ref; rel > 1e-5 {
			t.Errorf("%s = %.7f, reference %.7f (relative error %.2g > 1e-5)", name, v, ref, rel)
		}
	}

	// mlx-lm's cross-entropy on the same padded batch.
	rows := func(b data.Batch, f func(k int) any) [][]any {
		out := make([][]any, b.B)
		for r := range out {
			for j := 0; j < b.L; j++ {
				out[r] = append(out[r], f(r*b.L+j))
			}
		}
		return out
	}
	in := map[string]any{
		"inputs":  rows(all, func(k int) any { return all.Inputs[k] }),
		"targets": rows(all, func(k int) any { return all.Targets[k] }),
		"weights": rows(all, func(k int) any { return all.Weights[k] }),
	}
	var res struct{ Sum, Count, Loss float64 }
	mlxlm(t, in, &res, "loss", modelDir)
	t.Logf("mlx-lm: %.7f over %v tokens", res.Loss, res.Count)
	if res.Count != refCount {
		t.Errorf("mlx-lm counted %v tokens, reference %v", res.Count, refCount)
	}
	if rel := math.Abs(res.Loss-evalLoss) / evalLoss; rel > 1e-5 {
		t.Errorf("fungtrain %.7f vs mlx-lm %.7f: relative error %.2g > 1e-5", evalLoss, res.Loss, rel)
	}
}

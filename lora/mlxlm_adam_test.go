package lora

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// mlxlmBatch is a batch in mlx-lm's training format: token rows (inputs
// and the last target) and, per row, (offset, length) such that its loss
// mask offset ≤ step ≤ length (steps counted from 1) is ours.
type mlxlmBatch struct {
	Tokens  [][]int32 `json:"tokens"`
	Lengths [][2]int  `json:"lengths"`
}

// toMLXLM converts b; each row's loss weights must be one contiguous run
// of ones (an answer at the end of a single-turn chat).
func toMLXLM(b traindata.Batch) (mlxlmBatch, error) {
	var out mlxlmBatch
	for r := range b.B {
		// Position j's input is token j and its target token j+1.
		row := append([]int32{b.Inputs[r*b.L]}, b.Targets[r*b.L:(r+1)*b.L]...)
		first, last := -1, -1
		for j, w := range b.Weights[r*b.L : (r+1)*b.L] {
			if w != 0 {
				if first < 0 {
					first = j
				}
				if last >= 0 && last != j-1 {
					return out, fmt.Errorf("row %d: the loss weights are not one run", r)
				}
				last = j
			}
		}
		out.Tokens = append(out.Tokens, row)
		out.Lengths = append(out.Lengths, [2]int{first + 1, last + 1})
	}
	return out, nil
}

// TestAdamMatchesMLXLM: fungtrain with optimizer.bias_correction false and
// `mlx_lm lora`'s training (its default optimizer, MLX's Adam without bias
// correction, and its own loss function), both starting from one adapter
// that mlx-lm made (random lora_b), dropout 0, on the same 20 batches of 2
// (no accumulation), give the same loss curve to float tolerance.
// Negative control: fungtrain with bias correction (the default) departs
// from mlx-lm's curve by far more.
func TestAdamMatchesMLXLM(t *testing.T) {
	const steps, lr, tol = 20, 1e-2, 1e-4
	modelDir := writeTinyModelDir(t, 4, 29)
	adapterDir := filepath.Join(t.TempDir(), "adapter")
	loraParams := map[string]any{"rank": 4, "dropout": 0.0, "scale": 2.0, "keys": []string{"self_attn.q_proj", "self_attn.v_proj"}}
	var made mlxlmLogits
	mlxlm(t, map[string]any{"num_layers": 2, "lora_parameters": loraParams, "seed": 3, "ids": interopIDs}, &made, "make-adapter", modelDir, adapterDir)
	train := loadSplit(t, t.TempDir(), "train", trainPairs)

	run := func(biasCorrection bool) (losses []float64, batches []mlxlmBatch) {
		cfg := testConfig(t.TempDir())
		cfg.LoRA = Settings{Rank: 4, Scale: 2, Dropout: 0, NumLayers: 2, Keys: []string{"self_attn.q_proj", "self_attn.v_proj"}}
		cfg.Optimizer.LR, cfg.Optimizer.WeightDecay, cfg.Optimizer.GradClip = lr, 0, 0
		cfg.Optimizer.BiasCorrection = biasCorrection
		cfg.Training.BatchSize, cfg.Training.GradAccumulation, cfg.Training.MaxSteps = 2, 1, steps
		doMLX(t, func() error {
			m, err := llama.LoadModel(modelDir, llama.LoadOptions{Dtype: "f32"})
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
			if err := loadAdapterWeights(tr.Adapters, filepath.Join(adapterDir, "adapters.safetensors")); err != nil {
				return err
			}
			for range steps {
				d := tr.data.step(tr.state.Cursor)
				if len(d.batches) != 1 {
					return fmt.Errorf("step at %d has %d compute batches", tr.state.Cursor, len(d.batches))
				}
				b, err := toMLXLM(d.batches[0])
				if err != nil {
					return err
				}
				batches = append(batches, b)
				st, err := tr.Step()
				if err != nil {
					return err
				}
				losses = append(losses, st.Loss)
			}
			return nil
		})
		return losses, batches
	}
	got, batches := run(false)
	var ref struct {
		Losses []float64 `json:"losses"`
	}
	mlxlm(t, map[string]any{"lr": lr, "batches": batches}, &ref, "train", modelDir, adapterDir)
	if len(ref.Losses) != steps {
		t.Fatalf("mlx-lm made %d steps", len(ref.Losses))
	}
	corrected, _ := run(true)
	worst, control := 0.0, 0.0
	for i := range got {
		worst = math.Max(worst, math.Abs(got[i]-ref.Losses[i]))
		control = math.Max(control, math.Abs(corrected[i]-ref.Losses[i]))
	}
	t.Logf("losses, fungtrain without bias correction: %.6f", got)
	t.Logf("losses, mlx-lm:                            %.6f", ref.Losses)
	t.Logf("losses, fungtrain with bias correction:    %.6f", corrected)
	t.Logf("max |loss difference| over %d updates: %.3g (with bias correction: %.3g)", steps, worst, control)
	if got[steps-1] > got[0]-0.05 {
		t.Errorf("the loss went from %v to %v: training barely moved, so the curves test little", got[0], got[steps-1])
	}
	if worst > tol {
		t.Errorf("fungtrain's loss curve departs from mlx-lm's by %g (> %g)", worst, tol)
	}
	if control < 10*tol {
		t.Errorf("with bias correction the curve is only %g from mlx-lm's: the test cannot tell the rules apart", control)
	}
}

// loadAdapterWeights sets the adapters' parameters from an mlx-lm
// adapters.safetensors (MLX thread).
func loadAdapterWeights(a *Adapters, path string) error {
	w, _, err := mlx.LoadSafetensors(path)
	if err != nil {
		return err
	}
	defer freeMap(w)
	names := a.ParamNames()
	params := make([]*mlx.Array, len(names))
	for i, n := range names {
		p, ok := w[n]
		if !ok {
			freeArrays(params[:i])
			return fmt.Errorf("%s has no %s", path, n)
		}
		delete(w, n)
		mlx.Detach(p)
		params[i] = p
	}
	if len(w) != 0 {
		freeArrays(params)
		return fmt.Errorf("%s has %d tensors the adapters lack", path, len(w))
	}
	freeArrays(a.Params())
	a.SetParams(params)
	return mlx.Eval(params...)
}

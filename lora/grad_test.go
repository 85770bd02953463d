package lora

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// fdEps is the finite-difference step: at 1e-2 the float32 forward's
// rounding (about 3e-8 in the loss) costs ~1e-6 in a quotient and the
// truncation error is as small; 3e-3 is noise-bound (6e-6), 3e-2
// truncation-bound (9e-6).
const fdEps = 1e-2

type gradProbe struct {
	param    string
	index    int
	grad, fd float64
}

// gradientProbes compares the trainer's gradient with central differences
// on two random entries of every A and B of a 2-layer tiny model with
// adapters on q, v, gate and down, B ~ N(0, 0.05), with the given dropout
// (its masks held fixed), over dense or 4-bit quantized base layers.
func gradientProbes(t *testing.T, train *traindata.Split, dropout float64, quantized bool) []gradProbe {
	var probes []gradProbe
	doMLX(t, func() error {
		m, err := tinyModel(2, 3)
		if err != nil {
			return err
		}
		defer m.Free()
		if quantized {
			if err := quantizeLinears(m); err != nil {
				return err
			}
		}
		cfg := testConfig(t.TempDir())
		cfg.LoRA.Keys = []string{"self_attn.q_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.down_proj"}
		cfg.LoRA.Dropout = dropout
		tr, err := NewTrainer(cfg, m, train, train, tokPad, RunMetadata{}, quietLog())
		if err != nil {
			return err
		}
		defer tr.Close()
		defer tr.Adapters.Remove()
		if err := setRandomB(tr.Adapters, 0.05, 1); err != nil {
			return err
		}
		tr.Adapters.SetTraining(dropout > 0, 12345) // the same masks for every evaluation
		defer tr.Adapters.SetTraining(false, 0)
		idx := make([]int, len(train.Examples))
		for i := range idx {
			idx[i] = i
		}
		b := traindata.MakeBatch(train.Examples, idx, tokPad)
		ids, targets, weights := batchArrays(b)
		norm := mlx.Scalar(float64(b.Counted), mlx.Float32)
		mlx.Detach(ids, targets, weights, norm)
		defer func() { ids.Free(); targets.Free(); weights.Free(); norm.Free() }()

		s := mlx.NewScope()
		defer s.Close()
		mb := microBatch{ids: ids, targets: targets, weights: weights, norm: norm}
		_, grads, err := tr.stepper.lossAndGrad.Call(tr.stepper.layout.packLoss(tr.stepper.lossArgs(tr.Adapters.Params(), mb))...)
		if err != nil {
			return err
		}
		g, err := readFloats(grads...)
		if err != nil {
			return err
		}
		// The loss at the current parameters, reduced in float64 from the
		// float32 logits: a float32 mean of values near ln(1024) moves in
		// steps of 5e-7, too coarse for a difference quotient.
		loss := func() (float64, error) {
			s := mlx.NewScope()
			defer s.Close()
			logits, err := tr.Model.Forward(ids, nil).Float32s()
			if err != nil {
				return 0, err
			}
			return ce64(logits, b), nil
		}
		params := tr.Adapters.Params()
		names := tr.Adapters.ParamNames()
		// at is the loss with entry k of parameter pi moved by delta.
		at := func(pi, k int, delta float64) (float64, error) {
			orig := params[pi]
			v, err := orig.Float32s()
			if err != nil {
				return 0, err
			}
			v[k] += float32(delta)
			p := mlx.FromFloat32s(v, orig.Shape()...)
			all := append([]*mlx.Array{}, params...)
			all[pi] = p
			tr.Adapters.SetParams(all)
			defer tr.Adapters.SetParams(params)
			defer p.Free()
			return loss()
		}
		rng := rand.New(rand.NewPCG(7, 8))
		for pi := range params {
			for range 2 {
				k := rng.IntN(params[pi].Size())
				hi, err := at(pi, k, fdEps)
				if err != nil {
					return err
				}
				lo, err := at(pi, k, -fdEps)
				if err != nil {
					return err
				}
				probes = append(probes, gradProbe{names[pi], k, g[pi][k], (hi - lo) / (2 * fdEps)})
			}
		}
		return nil
	})
	return probes
}

// TestGradientsMatchFiniteDifferences: the gradients the trainer takes
// (its value-and-grad over the masked mean cross-entropy of a padded
// batch) match central finite differences on random A and B entries of
// q, v, gate and down adapters in both layers, with dropout 0, with
// dropout 0.3 (fixed masks), and over 4-bit quantized bases (QLoRA).
// Tolerance: |g - fd| <= 3e-6 + 5e-3·|fd|.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs)
	byDropout := map[float64][]gradProbe{}
	for _, c := range []struct {
		dropout   float64
		quantized bool
	}{{0, false}, {0.3, false}, {0, true}} {
		dropout := c.dropout
		t.Run(fmt.Sprintf("dropout=%g,quantized=%v", dropout, c.quantized), func(t *testing.T) {
			probes := gradientProbes(t, train, dropout, c.quantized)
			if !c.quantized {
				byDropout[dropout] = probes
			}
			if len(probes) != 32 {
				t.Fatalf("%d probes, want 32", len(probes))
			}
			worstRel, worstRel3, worstAbs, zero := 0.0, 0.0, 0.0, 0
			for _, p := range probes {
				d := math.Abs(p.grad - p.fd)
				rel := d / math.Abs(p.fd)
				t.Logf("%-40s[%5d] grad %+.6e fd %+.6e rel %.1e", p.param, p.index, p.grad, p.fd, rel)
				if math.Abs(p.fd) >= 1e-4 {
					worstRel = math.Max(worstRel, rel)
				}
				if math.Abs(p.fd) >= 1e-3 {
					worstRel3 = math.Max(worstRel3, rel)
				}
				worstAbs = math.Max(worstAbs, d)
				if d > 3e-6+5e-3*math.Abs(p.fd) {
					t.Errorf("%s[%d]: gradient %.6e, finite difference %.6e", p.param, p.index, p.grad, p.fd)
				}
				if p.grad == 0 {
					zero++
				}
			}
			if zero > 0 {
				t.Errorf("%d probed gradients are exactly 0", zero)
			}
			t.Logf("max |grad - fd| %.3g; max relative error where |fd| >= 1e-4: %.3g, where |fd| >= 1e-3: %.3g", worstAbs, worstRel, worstRel3)
		})
	}
	// The dropout masks were really applied: the same entries' gradients
	// differ between the two runs.
	same := 0
	for i, p := range byDropout[0] {
		if q := byDropout[0.3]; i < len(q) && math.Abs(p.grad-q[i].grad) < 1e-3*math.Abs(p.grad) {
			same++
		}
	}
	if same > 4 {
		t.Errorf("%d of %d probed gradients are the same with dropout 0.3 as with 0", same, len(byDropout[0]))
	}
}

// ce64 is the batch's weighted mean cross-entropy, in float64, from its
// logits (B·L rows of V).
func ce64(logits []float32, b traindata.Batch) float64 {
	V := len(logits) / (b.B * b.L)
	sum, count := 0.0, 0.0
	for k, w := range b.Weights {
		if w == 0 {
			continue
		}
		row := logits[k*V : (k+1)*V]
		mx := math.Inf(-1)
		for _, x := range row {
			mx = math.Max(mx, float64(x))
		}
		z := 0.0
		for _, x := range row {
			z += math.Exp(float64(x) - mx)
		}
		sum += float64(w) * (mx + math.Log(z) - float64(row[b.Targets[k]]))
		count += float64(w)
	}
	return sum / count
}

// quantizeLinears replaces every block linear of m by its 4-bit affine
// quantization (group 32), as a QLoRA base (MLX thread).
func quantizeLinears(m *llama.Model) error {
	for _, b := range m.Layers {
		for _, p := range llama.ModulePaths {
			slot, err := b.Module(p)
			if err != nil {
				return err
			}
			l := (*slot).(*llama.Linear)
			q, err := mlx.Quantize(l.Weight, 32, 4)
			if err != nil {
				return err
			}
			mlx.Detach(q.Weight, q.Scales, q.Biases)
			l.Weight.Free()
			l.Weight, l.Q = nil, &q
		}
	}
	return nil
}

package lora

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// TestFusedCEMatchesFloat64 checks the fused LM head + cross-entropy —
// its loss and its gradient with respect to the hidden states — against a
// float64 computation of Σ w·(logsumexp(z) - z[t]) and of
// (w·(softmax(z) - onehot(t)))·W, for several chunk sizes (one chunk, a
// short last chunk, one position per chunk), compiled and not.
func TestFusedCEMatchesFloat64(t *testing.T) {
	doMLX(t, func() error {
		m, err := tinyModel(1, 3)
		if err != nil {
			return err
		}
		defer m.Free()
		head := m.Embed
		if m.LMHead != nil {
			head = m.LMHead.Weight
		}
		W, err := head.Float64s()
		if err != nil {
			return err
		}
		V, D := head.Dim(0), head.Dim(1)
		const B, L = 2, 5
		r := rand.New(rand.NewSource(9))
		hv := make([]float32, B*L*D)
		for i := range hv {
			hv[i] = float32(r.NormFloat64())
		}
		tv := make([]int32, B*L)
		wv := make([]float32, B*L)
		for i := range tv {
			tv[i] = int32(r.Intn(V))
			wv[i] = float32(r.Intn(3)) * 0.5 // 0, 0.5 or 1: masked positions too
		}

		// The float64 reference.
		wantSum := 0.0
		wantGrad := make([]float64, B*L*D)
		for p := 0; p < B*L; p++ {
			z := make([]float64, V)
			mx := math.Inf(-1)
			for v := range V {
				for k := range D {
					z[v] += float64(hv[p*D+k]) * W[v*D+k]
				}
				mx = math.Max(mx, z[v])
			}
			se := 0.0
			for _, zv := range z {
				se += math.Exp(zv - mx)
			}
			lse := mx + math.Log(se)
			w := float64(wv[p])
			wantSum += w * (lse - z[tv[p]])
			for v := range V {
				g := math.Exp(z[v] - lse)
				if v == int(tv[p]) {
					g--
				}
				for k := range D {
					wantGrad[p*D+k] += w * g * W[v*D+k]
				}
			}
		}

		for _, chunk := range []int{0, 3, 1, 64} {
			for _, compiled := range []bool{false, true} {
				if err := checkFusedCE(m, chunk, compiled, hv, tv, wv, B, L, D, wantSum, wantGrad); err != nil {
					t.Errorf("chunk %d, compiled %v: %v", chunk, compiled, err)
				}
			}
		}
		return nil
	})
}

func checkFusedCE(m *llama.Model, chunk int, compiled bool, hv []float32, tv []int32, wv []float32, B, L, D int, wantSum float64, wantGrad []float64) error {
	s := mlx.NewScope()
	defer s.Close()
	ce := newFusedCE(m, chunk, true)
	defer ce.free()
	// The loss is scaled by 3 after the fused function, so the backward
	// pass must scale the stored gradient by its cotangent.
	vg, err := mlx.NewValueAndGrad(func(in []*mlx.Array) ([]*mlx.Array, error) {
		return []*mlx.Array{mlx.MulScalar(ce.sumWithGrad(in[0], in[1], in[2]), 3)}, nil
	}, 0)
	if err != nil {
		return err
	}
	defer vg.Free()
	step := mlx.NewClosure(func(in []*mlx.Array) ([]*mlx.Array, error) {
		vals, grads, err := vg.Call(in...)
		return append(vals, grads...), err
	})
	defer step.Free()
	if compiled {
		if err := step.Compile(false); err != nil {
			return err
		}
	}
	out, err := step.Call(mlx.FromFloat32s(hv, B, L, D), mlx.FromInt32s(tv, B, L), mlx.FromFloat32s(wv, B, L))
	if err != nil {
		return err
	}
	sum, err := out[0].Item()
	if err != nil {
		return err
	}
	if math.Abs(sum-3*wantSum) > 1e-5*math.Abs(3*wantSum) {
		return fmt.Errorf("loss %.9g, want %.9g", sum, 3*wantSum)
	}
	got, err := out[1].Float64s()
	if err != nil {
		return err
	}
	scale := 0.0
	for i := range got {
		scale = math.Max(scale, math.Abs(wantGrad[i]))
	}
	for i := range got {
		if d := math.Abs(got[i] - 3*wantGrad[i]); d > 1e-5*3*scale {
			return fmt.Errorf("grad[%d] = %.9g, want %.9g", i, got[i], 3*wantGrad[i])
		}
	}
	// Evaluation's forward-only sum agrees.
	eval, err := ce.sum(mlx.FromFloat32s(hv, B, L, D), mlx.FromInt32s(tv, B, L), mlx.FromFloat32s(wv, B, L)).Item()
	if err != nil {
		return err
	}
	if math.Abs(eval-wantSum) > 1e-5*math.Abs(wantSum) {
		return fmt.Errorf("evaluation loss %.9g, want %.9g", eval, wantSum)
	}
	return nil
}

// TestChunkedLossSameUpdate: a training step with the loss in chunks of 3
// positions (several per sequence, the last one short) makes the same
// update and gradient norm as with the whole batch at once.
func TestChunkedLossSameUpdate(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs[:4])
	ref, refNorm := oneStepWith(t, train, 4, 1, false, 0, 0)
	got, norm := oneStepWith(t, train, 4, 1, false, 0, 3)
	scale := maxAbs(ref)
	diff := maxAbsDiff(got, ref)
	t.Logf("chunked vs whole: max |update difference| %.3g of %.3g; grad norm %.7g vs %.7g", diff, scale, norm, refNorm)
	if scale == 0 || diff > 1e-5*scale {
		t.Errorf("chunked loss changes the update by %g (largest update %g)", diff, scale)
	}
	if math.Abs(norm-refNorm) > 1e-5*refNorm {
		t.Errorf("chunked loss gradient norm %v, whole %v", norm, refNorm)
	}
}

package mlx

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

func TestRMSNorm(t *testing.T) {
	r := rand.New(rand.NewSource(30))
	const eps = 1e-5
	for _, dt := range floatDtypes {
		for _, withWeight := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/weight=%v", dt, withWeight), func(t *testing.T) {
				x := genTensor(r, func(r *rand.Rand) float64 { return 2*r.NormFloat64() + 0.3 }, dt, 2, 3, 64)
				var w []float64
				if withWeight {
					w = genTensor(r, genNormal, dt, 64).data
				}
				inMLX(t, func() error {
					var wa *Array
					if withWeight {
						wa = arr(w, dt, 64)
					}
					got := RMSNorm(arr(x.data, dt, x.shape...), wa, eps)
					if got.Dtype() != dt {
						t.Errorf("dtype %s, want %s", got.Dtype(), dt)
					}
					tl := dtypeTol[dt]
					if dt == Float32 {
						tl = tol{2e-6, 1e-5} // a mean, an rsqrt and a product
					}
					if err := check(got, rmsNormRef(x, w, eps), tl.atol, tl.rtol); err != nil {
						t.Error(err)
					}
					return nil
				})
			})
		}
	}
}

func TestRope(t *testing.T) {
	const B, H, L, D = 2, 3, 6, 16
	type ropeCase struct {
		name        string
		dims        int
		traditional bool
		base        float64
		scale       float64
		offset      int
		customInv   bool
	}
	var cases []ropeCase
	for _, trad := range []bool{false, true} {
		cases = append(cases,
			ropeCase{"base", D, trad, 10000, 1, 0, false},
			ropeCase{"base-offset", D, trad, 10000, 1, 5, false},
			ropeCase{"base500k-offset-scale", D, trad, 500000, 0.5, 37, false},
			ropeCase{"partial-dims", 8, trad, 10000, 1, 3, false},
			ropeCase{"freqs", D, trad, 0, 1, 0, true},
			ropeCase{"freqs-offset", D, trad, 0, 1, 11, true},
		)
	}
	for _, dt := range []Dtype{Float32, BFloat16} {
		for i, c := range cases {
			t.Run(fmt.Sprintf("%s/%s/traditional=%v", dt, c.name, c.traditional), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(40 + i)))
				x := genTensor(r, genNormal, dt, B, H, L, D)
				inv := ropeInvFreq(c.base, c.dims)
				cfg := RoPE{Dims: c.dims, Traditional: c.traditional, Base: float32(c.base), Scale: float32(c.scale)}
				inMLX(t, func() error {
					if c.customInv {
						// Custom inverse frequencies, as llama3 scaling makes
						// them: irregular, not a power series.
						inv = make([]float64, c.dims/2)
						for j := range inv {
							inv[j] = roundTo(math.Exp(-float64(j)*0.9)*(0.5+r.Float64()), Float32)
						}
						// MLX's freqs are the reciprocals of the inverse
						// frequencies: θ = position / freqs[i].
						freqs := make([]float64, len(inv))
						for j, v := range inv {
							freqs[j] = 1 / v
						}
						cfg.Freqs = arr(freqs, Float32, len(freqs))
					}
					got := Rope(arr(x.data, dt, x.shape...), cfg, c.offset)
					want := ropeRef(x, c.dims, c.traditional, inv, c.scale, c.offset)
					// float32: angles up to ~50 rad lose ~50·2^-24 in the
					// argument; bf16 rounds the output once.
					tl := tol{2e-5, 2e-5}
					if dt == BFloat16 {
						tl = dtypeTol[dt]
					}
					if err := check(got, want, tl.atol, tl.rtol); err != nil {
						t.Error(err)
					}
					return nil
				})
			})
		}
	}
	// The default Scale (0) means 1, and rotating by -offset after +offset
	// is checked through the reference above; here: offset 0 leaves
	// position 0 unchanged.
	inMLX(t, func() error {
		r := rand.New(rand.NewSource(49))
		x := randTensor(r, 1, 1, 1, 8)
		return check(Rope(f32(x), RoPE{Dims: 8, Base: 10000}, 0), x, 0, 0)
	})
}

func TestSDPA(t *testing.T) {
	type sdpaCase struct {
		name           string
		h, hk, lq, lk  int
		causal         bool
		mask           []int // additive mask shape, nil for none
		boolMask       bool
		scaleOverwrite float64
	}
	const B, D = 2, 16
	cases := []sdpaCase{
		{name: "plain", h: 4, hk: 4, lq: 5, lk: 5},
		{name: "causal", h: 4, hk: 4, lq: 6, lk: 6, causal: true},
		{name: "causal-gqa", h: 4, hk: 2, lq: 6, lk: 6, causal: true},
		{name: "causal-gqa-mqa-decode", h: 4, hk: 1, lq: 2, lk: 7, causal: true},
		{name: "causal-lq<lk", h: 2, hk: 2, lq: 3, lk: 8, causal: true},
		{name: "additive-mask-broadcast", h: 4, hk: 2, lq: 5, lk: 7, mask: []int{1, 1, 5, 7}},
		{name: "additive-mask-full", h: 4, hk: 4, lq: 5, lk: 5, mask: []int{B, 4, 5, 5}},
		{name: "bool-mask", h: 4, hk: 2, lq: 5, lk: 6, mask: []int{B, 1, 5, 6}, boolMask: true},
		{name: "scale-1", h: 2, hk: 1, lq: 4, lk: 4, causal: true, scaleOverwrite: 1},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(int64(50 + i)))
			q := randTensor(r, B, c.h, c.lq, D)
			k := randTensor(r, B, c.hk, c.lk, D)
			v := randTensor(r, B, c.hk, c.lk, D)
			scale := 1 / math.Sqrt(D)
			if c.scaleOverwrite != 0 {
				scale = c.scaleOverwrite
			}
			inMLX(t, func() error {
				var mask *Array
				var maskRef *tensor
				if c.mask != nil {
					m := newTensor(c.mask...)
					if c.boolMask {
						bs := make([]bool, len(m.data))
						for j := range bs {
							bs[j] = j%5 != 3 // some keys masked, never a whole row
							if !bs[j] {
								m.data[j] = math.Inf(-1)
							}
						}
						mask = FromBools(bs, c.mask...)
					} else {
						for j := range m.data {
							m.data[j] = roundTo(2*r.NormFloat64(), Float32)
						}
						mask = f32(m)
					}
					maskRef = &m
				}
				mode := MaskNone
				if c.causal {
					mode = MaskCausal
				}
				got := ScaledDotProductAttention(f32(q), f32(k), f32(v), float32(scale), mode, mask)
				if err := check(got, sdpaRef(q, k, v, scale, c.causal, maskRef), 1e-5, 1e-5); err != nil {
					t.Error(err)
				}
				return nil
			})
		})
	}
}

func TestCrossEntropy(t *testing.T) {
	r := rand.New(rand.NewSource(60))
	const V = 11
	logits := mapRef(randTensor(r, 3, 4, V), func(v float64) float64 { return roundTo(3*v, Float32) })
	targets := make([]int, 12)
	for i := range targets {
		targets[i] = r.Intn(V)
	}
	want := newTensor(3, 4)
	for i := range targets {
		lane := logits.data[i*V : i*V+V]
		want.data[i] = logsumexpF(lane) - lane[targets[i]]
	}
	inMLX(t, func() error {
		got := CrossEntropy(f32(logits), intsShaped(targets, 3, 4))
		if err := check(got, want, 1e-5, 1e-5); err != nil {
			t.Errorf("float32: %v", err)
		}
		// And it matches the composite -log_softmax gathered at the target.
		comp := Negative(Squeeze(TakeAlongAxis(LogSoftmax(f32(logits), -1), ExpandDims(intsShaped(targets, 3, 4), -1), -1), -1))
		if err := check(comp, want, 1e-5, 1e-5); err != nil {
			t.Errorf("composite: %v", err)
		}
		bl := genTensor(r, genNormal, BFloat16, 3, 4, V)
		for i := range targets {
			lane := bl.data[i*V : i*V+V]
			want.data[i] = logsumexpF(lane) - lane[targets[i]]
		}
		if err := check(CrossEntropy(arr(bl.data, BFloat16, bl.shape...), intsShaped(targets, 3, 4)), want, 2e-2, 1.6e-2); err != nil {
			t.Errorf("bfloat16: %v", err)
		}
		return nil
	})
}

// unpackQuantized rebuilds W from MLX's affine format: element j of a row
// is bits-wide at bit (j mod (32/bits))·bits of word j/(32/bits), and
// w = scale·q + bias per group.
func unpackQuantized(q Quantized, rows, cols int) (tensor, []float64, error) {
	words, err := q.Weight.Uint32s()
	if err != nil {
		return tensor{}, nil, err
	}
	scales, err := q.Scales.Float64s()
	if err != nil {
		return tensor{}, nil, err
	}
	biases, err := q.Biases.Float64s()
	if err != nil {
		return tensor{}, nil, err
	}
	per := 32 / q.Bits
	wpr := cols / per
	groups := cols / q.GroupSize
	out := newTensor(rows, cols)
	mask := uint32(1)<<q.Bits - 1
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			w := words[i*wpr+j/per]
			qv := float64((w >> (uint(j%per) * uint(q.Bits))) & mask)
			g := i*groups + j/q.GroupSize
			out.data[i*cols+j] = scales[g]*qv + biases[g]
		}
	}
	return out, scales, nil
}

func TestQuantize(t *testing.T) {
	const rows, cols = 8, 128
	for _, gs := range []int{32, 64} {
		for _, bits := range []int{4, 8} {
			t.Run(fmt.Sprintf("gs%d/bits%d", gs, bits), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(gs*10 + bits)))
				w := randTensor(r, rows, cols)
				inMLX(t, func() error {
					q, err := Quantize(f32(w), gs, bits)
					if err != nil {
						return err
					}
					if !equalInts(q.Weight.Shape(), []int{rows, cols * bits / 32}) || q.Weight.Dtype() != Uint32 ||
						!equalInts(q.Scales.Shape(), []int{rows, cols / gs}) || !equalInts(q.Biases.Shape(), []int{rows, cols / gs}) {
						t.Errorf("shapes: weight %v %s scales %v biases %v", q.Weight.Shape(), q.Weight.Dtype(), q.Scales.Shape(), q.Biases.Shape())
					}
					deq := Dequantize(q)
					unpacked, _, err := unpackQuantized(q, rows, cols)
					if err != nil {
						return err
					}
					if err := check(deq, unpacked, 1e-6, 1e-6); err != nil {
						t.Errorf("Dequantize vs unpacked bits: %v", err)
					}
					// Each element is within one quantization step
					// (group max-min)/(2^bits-1) of the original, and the
					// mean error is about a quarter step.
					dv, err := deq.Float64s()
					if err != nil {
						return err
					}
					nb := float64(int(1)<<bits - 1)
					sumErr, sumStep := 0.0, 0.0
					for g := 0; g < rows*cols/gs; g++ {
						grp := w.data[g*gs : g*gs+gs]
						step := (maxF(grp) - minF(grp)) / nb
						for j := range grp {
							e := math.Abs(dv[g*gs+j] - grp[j])
							if e > step*(1+1e-5) {
								t.Errorf("group %d element %d: error %.3g > step %.3g", g, j, e, step)
								return nil
							}
							sumErr += e
							sumStep += step
						}
					}
					if sumErr > 0.35*sumStep {
						t.Errorf("mean error %.3g steps, want about 0.25", sumErr/sumStep)
					}
					return nil
				})
			})
		}
	}
}

func TestQuantizedMatmul(t *testing.T) {
	for _, gs := range []int{32, 64} {
		for _, bits := range []int{4, 8} {
			for _, transpose := range []bool{true, false} {
				t.Run(fmt.Sprintf("gs%d/bits%d/transpose=%v", gs, bits, transpose), func(t *testing.T) {
					r := rand.New(rand.NewSource(int64(gs + bits*3 + len(fmt.Sprint(transpose)))))
					// transpose: W is (N, K), y = x·Wᵀ; else W is (K, N), y = x·W.
					K, N := 128, 64
					wShape := []int{N, K}
					if !transpose {
						wShape = []int{K, N}
					}
					w := randTensor(r, wShape...)
					x := randTensor(r, 2, 3, K)
					inMLX(t, func() error {
						q, err := Quantize(f32(w), gs, bits)
						if err != nil {
							return err
						}
						dq, err := values(Dequantize(q), wShape)
						if err != nil {
							return err
						}
						wd := tensor{wShape, dq}
						if transpose {
							wd = transposeRef(wd, []int{1, 0})
						}
						got := QuantizedMatmul(f32(x), q, transpose)
						if err := checkMatmul(t, got, matmulRef(x, wd), absMatmulRef(x, wd), Float32); err != nil {
							t.Error(err)
						}
						// And it agrees with the float matmul within the
						// quantization error (a sanity bound: 4-bit is coarse).
						return nil
					})
				})
			}
		}
	}
}

package mlx

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// composite is the small attention block of the gradient tests:
// matmul → rms_norm → rope → sdpa (causal, GQA 2:1) → matmul →
// log-softmax → mean negative log-likelihood of targets.
//
// inputs: x (1, L, 8), wq (8, 16), wk (8, 8), wv (8, 8), wo (16, V), g (8);
// targets (1, L) int32 is captured.
func composite(targets *Array) Func {
	return func(in []*Array) ([]*Array, error) {
		x, wq, wk, wv, wo, g := in[0], in[1], in[2], in[3], in[4], in[5]
		L := x.Dim(1)
		heads := func(a *Array, h int) *Array {
			return Transpose(Reshape(a, 1, L, h, 8), 0, 2, 1, 3)
		}
		rope := RoPE{Dims: 8, Base: 10000}
		q := Rope(RMSNorm(heads(Matmul(x, wq), 2), g, 1e-5), rope, 2)
		k := Rope(RMSNorm(heads(Matmul(x, wk), 1), g, 1e-5), rope, 2)
		v := heads(Matmul(x, wv), 1)
		o := ScaledDotProductAttention(q, k, v, float32(1/math.Sqrt(8)), MaskCausal, nil)
		o = Reshape(Transpose(o, 0, 2, 1, 3), 1, L, 16)
		logp := LogSoftmax(Matmul(o, wo), -1)
		nll := Negative(TakeAlongAxis(logp, ExpandDims(targets, -1), -1))
		return []*Array{Mean(nll, false)}, nil
	}
}

// fdCheck compares analytic gradients with central differences
// (f(x+h) - f(x-h)) / 2h, in float32, for up to perParam random elements
// of each input. f is re-run forward through MLX for every difference.
func fdCheck(t *testing.T, f Func, inputs []tensor, grads []*Array, h, atol, rtol float64, perParam int, r *rand.Rand) error {
	loss := func(in []tensor) (float64, error) {
		s := NewScope()
		defer s.Close()
		arrs := make([]*Array, len(in))
		for i, x := range in {
			arrs[i] = f32(x)
		}
		out, err := f(arrs)
		if err != nil {
			return 0, err
		}
		return out[0].Item()
	}
	worstRatio := 0.0
	defer func() { t.Logf("worst |fd-g|/(atol+rtol|fd|) = %.3f", worstRatio) }()
	for p, x := range inputs {
		g, err := values(grads[p], x.shape)
		if err != nil {
			return fmt.Errorf("grad %d: %w", p, err)
		}
		idx := r.Perm(len(x.data))
		if len(idx) > perParam {
			idx = idx[:perParam]
		}
		var dot, ng, nf float64
		for _, i := range idx {
			orig := x.data[i]
			x.data[i] = float64(float32(orig + h))
			up, err := loss(inputs)
			if err != nil {
				return err
			}
			hUp := x.data[i] - orig
			x.data[i] = float64(float32(orig - h))
			down, err := loss(inputs)
			if err != nil {
				return err
			}
			hDown := orig - x.data[i]
			x.data[i] = orig
			fd := (up - down) / (hUp + hDown)
			if math.Abs(fd-g[i]) > atol+rtol*math.Abs(fd) {
				t.Errorf("input %d element %d: analytic %.6g, finite difference %.6g", p, i, g[i], fd)
			}
			worstRatio = math.Max(worstRatio, math.Abs(fd-g[i])/(atol+rtol*math.Abs(fd)))
			dot += fd * g[i]
			ng += g[i] * g[i]
			nf += fd * fd
		}
		if cos := dot / math.Sqrt(ng*nf); ng > 0 && cos < 0.999 {
			t.Errorf("input %d: cosine(analytic, fd) = %.5f", p, cos)
		}
		if ng == 0 {
			t.Errorf("input %d: all sampled gradients are zero", p)
		}
	}
	return nil
}

func TestCompositeGradFD(t *testing.T) {
	r := rand.New(rand.NewSource(70))
	const L, V = 5, 11
	scaled := func(sc float64, shape ...int) tensor {
		return mapRef(randTensor(r, shape...), func(v float64) float64 { return roundTo(sc*v, Float32) })
	}
	inputs := []tensor{
		scaled(1, 1, L, 8),
		scaled(0.5, 8, 16),
		scaled(0.5, 8, 8),
		scaled(0.5, 8, 8),
		scaled(0.7, 16, V),
		mapRef(scaled(0.2, 8), func(v float64) float64 { return roundTo(1+v, Float32) }),
	}
	tg := make([]int, L)
	for i := range tg {
		tg[i] = r.Intn(V)
	}
	inMLX(t, func() error {
		targets := intsShaped(tg, 1, L)
		Detach(targets)
		defer targets.Free()
		f := composite(targets)
		vg, err := NewValueAndGrad(f, 0, 1, 2, 3, 4, 5)
		if err != nil {
			return err
		}
		defer vg.Free()
		arrs := make([]*Array, len(inputs))
		for i, x := range inputs {
			arrs[i] = f32(x)
		}
		vals, grads, err := vg.Call(arrs...)
		if err != nil {
			return err
		}
		if len(vals) != 1 || len(grads) != len(inputs) {
			return fmt.Errorf("%d values, %d grads", len(vals), len(grads))
		}
		loss, err := vals[0].Item()
		if err != nil {
			return err
		}
		direct, err := f(arrs)
		if err != nil {
			return err
		}
		dl, err := direct[0].Item()
		if err != nil {
			return err
		}
		if math.Abs(loss-dl) > 1e-6 || loss < 1 || loss > 10 {
			t.Errorf("loss %v, direct forward %v", loss, dl)
		}
		// h = 3e-3: float32 rounding of a loss near 2.5 contributes about
		// 2.5·6e-8/6e-3 ≈ 3e-5 to the difference quotient, truncation
		// (h²·f'''/6) about the same.
		return fdCheck(t, f, inputs, grads, 3e-3, 5e-4, 2e-2, 24, r)
	})
}

func TestQuantizedMatmulGradFD(t *testing.T) {
	for _, transpose := range []bool{true, false} {
		t.Run(fmt.Sprintf("transpose=%v", transpose), func(t *testing.T) {
			r := rand.New(rand.NewSource(71))
			K, N := 64, 32
			wShape := []int{N, K}
			if !transpose {
				wShape = []int{K, N}
			}
			w := randTensor(r, wShape...)
			x := mapRef(randTensor(r, 3, K), func(v float64) float64 { return roundTo(0.3*v, Float32) })
			c := randTensor(r, 3, N)
			inMLX(t, func() error {
				q, err := Quantize(f32(w), 32, 4)
				if err != nil {
					return err
				}
				ca := f32(c)
				Detach(ca, q.Weight, q.Scales, q.Biases)
				defer ca.Free()
				defer q.Free()
				// loss = Σ c·tanh(x·Wq); dloss/dx = ((1 - tanh²)·c)·Wqᵀ.
				f := func(in []*Array) ([]*Array, error) {
					return []*Array{Sum(Multiply(ca, Tanh(QuantizedMatmul(in[0], q, transpose))), false)}, nil
				}
				vg, err := NewValueAndGrad(f, 0)
				if err != nil {
					return err
				}
				defer vg.Free()
				_, grads, err := vg.Call(f32(x))
				if err != nil {
					return err
				}
				// Analytic reference in float64 from the dequantized W.
				dq, err := values(Dequantize(q), wShape)
				if err != nil {
					return err
				}
				wd := tensor{wShape, dq} // y = x·wd (K, N)
				if transpose {
					wd = transposeRef(wd, []int{1, 0})
				}
				y := matmulRef(x, wd)
				dy := zipRef(func(v []float64) float64 { return (1 - math.Tanh(v[0])*math.Tanh(v[0])) * v[1] }, y, c)
				want := matmulRef(dy, transposeRef(wd, []int{1, 0}))
				if err := check(grads[0], want, 1e-5, 1e-4); err != nil {
					t.Errorf("vs analytic: %v", err)
				}
				return fdCheck(t, f, []tensor{x}, grads, 3e-3, 5e-4, 2e-2, 48, r)
			})
		})
	}
}

func TestVjp(t *testing.T) {
	r := rand.New(rand.NewSource(72))
	x, y := randTensor(r, 4, 3), randTensor(r, 4, 3)
	c1, c2 := randTensor(r, 4, 3), randTensor(r, 4, 3)
	inMLX(t, func() error {
		f := func(in []*Array) ([]*Array, error) {
			return []*Array{Multiply(in[0], in[1]), Sin(in[0])}, nil
		}
		outs, vjps, err := Vjp(f, []*Array{f32(x), f32(y)}, []*Array{f32(c1), f32(c2)})
		if err != nil {
			return err
		}
		if len(outs) != 2 || len(vjps) != 2 {
			return fmt.Errorf("%d outs, %d vjps", len(outs), len(vjps))
		}
		mul := func(v []float64) float64 { return v[0] * v[1] }
		if err := check(outs[0], zipRef(mul, x, y), 1e-6, 1e-6); err != nil {
			t.Errorf("out 0: %v", err)
		}
		if err := check(outs[1], mapRef(x, math.Sin), 1e-6, 1e-6); err != nil {
			t.Errorf("out 1: %v", err)
		}
		// d/dx = c1·y + c2·cos(x); d/dy = c1·x.
		dx := zipRef(func(v []float64) float64 { return v[0]*v[1] + v[2]*math.Cos(v[3]) }, c1, y, c2, x)
		if err := check(vjps[0], dx, 1e-6, 1e-5); err != nil {
			t.Errorf("vjp x: %v", err)
		}
		if err := check(vjps[1], zipRef(mul, c1, x), 1e-6, 1e-6); err != nil {
			t.Errorf("vjp y: %v", err)
		}
		return nil
	})
}

func TestCheckpointSameGradients(t *testing.T) {
	r := rand.New(rand.NewSource(73))
	x := randTensor(r, 4, 8)
	w1 := mapRef(randTensor(r, 8, 8), func(v float64) float64 { return roundTo(0.4*v, Float32) })
	w2 := mapRef(randTensor(r, 8, 8), func(v float64) float64 { return roundTo(0.4*v, Float32) })
	inMLX(t, func() error {
		// A block: silu(x·w1)·w2 + x, applied twice.
		block := func(in []*Array) ([]*Array, error) {
			return []*Array{Add(Matmul(Silu(Matmul(in[0], in[1])), in[2]), in[0])}, nil
		}
		cl := NewClosure(block)
		defer cl.Free()
		calls := 0
		counting := NewClosure(func(in []*Array) ([]*Array, error) { calls++; return block(in) })
		defer counting.Free()
		loss := func(ckpt bool) Func {
			return func(in []*Array) ([]*Array, error) {
				h := in[0]
				for range 2 {
					var out []*Array
					var err error
					if ckpt {
						out, err = counting.Checkpoint(h, in[1], in[2])
					} else {
						out, err = cl.Call(h, in[1], in[2])
					}
					if err != nil {
						return nil, err
					}
					h = out[0]
				}
				return []*Array{Sum(Square(h), false)}, nil
			}
		}
		var results [2][]*Array
		var losses [2]float64
		for i, ckpt := range []bool{false, true} {
			vg, err := NewValueAndGrad(loss(ckpt), 0, 1, 2)
			if err != nil {
				return err
			}
			vals, grads, err := vg.Call(f32(x), f32(w1), f32(w2))
			vg.Free()
			if err != nil {
				return err
			}
			results[i] = grads
			if losses[i], err = vals[0].Item(); err != nil {
				return err
			}
		}
		if math.Abs(losses[0]-losses[1]) > 1e-6*math.Abs(losses[0]) {
			t.Errorf("loss %v with checkpointing, %v without", losses[1], losses[0])
		}
		for i := range results[0] {
			want, err := results[0][i].Float64s()
			if err != nil {
				return err
			}
			if err := check(results[1][i], tensor{results[0][i].Shape(), want}, 1e-6, 1e-5); err != nil {
				t.Errorf("grad %d: %v", i, err)
			}
		}
		// The checkpointed block ran forward twice (two layers), then again
		// in the backward pass to recompute its intermediates.
		if calls < 4 {
			t.Errorf("checkpointed block ran %d times, want ≥ 4 (forward + recompute)", calls)
		}
		return nil
	})
}

func TestCompileSameOutputs(t *testing.T) {
	r := rand.New(rand.NewSource(74))
	fn := func(in []*Array) ([]*Array, error) {
		a := Add(Multiply(Exp(in[0]), in[1]), Sin(in[0]))
		return []*Array{a, Sum(Square(a), false, -1)}, nil
	}
	ref := func(x, y tensor) (tensor, tensor) {
		a := zipRef(func(v []float64) float64 { return math.Exp(v[0])*v[1] + math.Sin(v[0]) }, x, y)
		return a, reduceRef(mapRef(a, func(v float64) float64 { return v * v }), []int{-1}, false, sumF)
	}
	for _, shapeless := range []bool{false, true} {
		t.Run(fmt.Sprintf("shapeless=%v", shapeless), func(t *testing.T) {
			inMLX(t, func() error {
				traced := 0
				cl := NewClosure(func(in []*Array) ([]*Array, error) { traced++; return fn(in) })
				defer cl.Free()
				if err := cl.Compile(shapeless); err != nil {
					return err
				}
				for i, shape := range [][]int{{3, 5}, {3, 5}, {2, 7}} {
					x, y := randTensor(r, shape...), randTensor(r, shape...)
					out, err := cl.Call(f32(x), f32(y))
					if err != nil {
						return err
					}
					direct, err := fn([]*Array{f32(x), f32(y)})
					if err != nil {
						return err
					}
					wa, ws := ref(x, y)
					for j, w := range []tensor{wa, ws} {
						if err := check(out[j], w, 1e-5, 1e-5); err != nil {
							t.Errorf("call %d output %d vs reference: %v", i, j, err)
						}
						dv, err := direct[j].Float64s()
						if err != nil {
							return err
						}
						if err := check(out[j], tensor{w.shape, dv}, 1e-5, 1e-6); err != nil {
							t.Errorf("call %d output %d vs uncompiled: %v", i, j, err)
						}
					}
				}
				// The Go function is traced once per shape (shapeless: once).
				want := 2
				if shapeless {
					want = 1
				}
				if traced != want {
					t.Errorf("traced %d times, want %d", traced, want)
				}
				return nil
			})
		})
	}
}

// TestCustomVJP checks that MLX differentiates through the hand-written vjp
// and not through the forward function: the forward is x·y summed, and the
// vjp claims d/dx = 3·cot·y (a deliberate factor 3) and d/dy = cot·x², so the
// gradients can only come from it. Compiled and uncompiled agree.
func TestCustomVJP(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	x, y := randTensor(r, 3, 4), randTensor(r, 3, 4)
	inMLX(t, func() error {
		fn := NewCustomVJP(2,
			func(in []*Array) ([]*Array, error) {
				return []*Array{Sum(Multiply(in[0], in[1]), false)}, nil
			},
			func(primals, cots, outs []*Array) ([]*Array, error) {
				if len(cots) != 1 || len(outs) != 1 {
					return nil, fmt.Errorf("%d cotangents, %d outputs", len(cots), len(outs))
				}
				return []*Array{
					Multiply(MulScalar(primals[1], 3), cots[0]),
					Multiply(Square(primals[0]), cots[0]),
				}, nil
			})
		defer fn.Free()
		loss := func(in []*Array) ([]*Array, error) {
			out, err := fn.Call(in[0], in[1])
			if err != nil {
				return nil, err
			}
			return []*Array{MulScalar(out[0], 2)}, nil
		}
		wantLoss := 2 * sumF(zipRef(func(v []float64) float64 { return v[0] * v[1] }, x, y).data)
		wantX := mapRef(y, func(v float64) float64 { return 6 * v })
		wantY := mapRef(x, func(v float64) float64 { return 2 * v * v })
		for _, compiled := range []bool{false, true} {
			vg, err := NewValueAndGrad(loss, 0, 1)
			if err != nil {
				return err
			}
			step := NewClosure(func(in []*Array) ([]*Array, error) {
				vals, grads, err := vg.Call(in...)
				return append(vals, grads...), err
			})
			if compiled {
				if err := step.Compile(false); err != nil {
					return err
				}
			}
			out, err := step.Call(f32(x), f32(y))
			if err != nil {
				return err
			}
			got, err := out[0].Item()
			if err != nil {
				return err
			}
			if math.Abs(got-wantLoss) > 1e-5*math.Abs(wantLoss)+1e-6 {
				t.Errorf("compiled %v: loss %v, want %v", compiled, got, wantLoss)
			}
			if err := check(out[1], wantX, 1e-5, 1e-5); err != nil {
				t.Errorf("compiled %v: grad x: %v", compiled, err)
			}
			if err := check(out[2], wantY, 1e-5, 1e-5); err != nil {
				t.Errorf("compiled %v: grad y: %v", compiled, err)
			}
			step.Free()
			vg.Free()
		}

		// A vjp that returns the wrong number of cotangents is an error.
		bad := NewCustomVJP(1,
			func(in []*Array) ([]*Array, error) { return []*Array{Sum(in[0], false)}, nil },
			func(p, c, o []*Array) ([]*Array, error) { return []*Array{c[0], c[0]}, nil })
		defer bad.Free()
		_, _, err := Vjp(func(in []*Array) ([]*Array, error) { return bad.Call(in[0]) },
			[]*Array{f32(x)}, []*Array{Scalar(1, Float32)})
		if err == nil {
			return errors.New("a vjp with two cotangents for one primal: no error")
		}
		return errMentions(err, "2 cotangents for 1 primals")
	})
}

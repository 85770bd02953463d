package mlx

import (
	"testing"
)

// TestBadArgumentsAreErrors: bad arguments come back as errors that name
// the op, never as a crash. The first group crashed the process (SIGFPE in
// MLX, or a panic on a freed cgo handle) before the binding checked them.
func TestBadArgumentsAreErrors(t *testing.T) {
	vagErr := func(f Func, argnum int, inputs ...*Array) error {
		vg, err := NewValueAndGrad(f, argnum)
		if err != nil {
			return err
		}
		defer vg.Free()
		_, _, err = vg.Call(inputs...)
		return err
	}
	sum := func(in []*Array) ([]*Array, error) { return []*Array{Sum(in[0], false)}, nil }
	freedClosure := func() *Closure {
		c := NewClosure(sum)
		c.Free()
		return c
	}
	cases := []struct {
		name, word string
		f          func() error
	}{
		{"Quantize group 0", "group size 0", func() error { _, err := Quantize(Zeros(Float32, 4, 64), 0, 4); return err }},
		{"Quantize group -32", "group size -32", func() error { _, err := Quantize(Zeros(Float32, 4, 64), -32, 4); return err }},
		{"Slice stride 0", "zero stride", func() error { return Eval(Slice(Zeros(Float32, 4), []int{0}, []int{4}, []int{0})) }},
		{"SliceUpdate stride 0", "zero stride", func() error {
			return Eval(SliceUpdate(Zeros(Float32, 4), Zeros(Float32, 2), []int{0}, []int{4}, []int{0}))
		}},
		{"Closure.Call after Free", "freed", func() error { _, err := freedClosure().Call(Zeros(Float32, 2)); return err }},
		{"Closure.Checkpoint after Free", "freed", func() error { _, err := freedClosure().Checkpoint(Zeros(Float32, 2)); return err }},
		{"Closure.Compile after Free", "freed", func() error { return freedClosure().Compile(false) }},

		{"Quantize bits 7", "bits", func() error { _, err := Quantize(Zeros(Float32, 4, 64), 32, 7); return err }},
		{"Quantize 1-D", "quantize", func() error { _, err := Quantize(Zeros(Float32, 64), 32, 4); return err }},
		{"Dequantize group 0", "group_size", func() error {
			return Eval(Dequantize(Quantized{Zeros(Uint32, 4, 8), Zeros(Float32, 4, 2), Zeros(Float32, 4, 2), 0, 4}))
		}},
		{"Split 0", "split", func() error { _, err := Split(Zeros(Float32, 4), 0, 0); return err }},
		{"Arange step 0", "arange", func() error { return Eval(Arange(0, 5, 0, Float32)) }},
		{"Zeros negative", "negative", func() error { return Eval(Zeros(Float32, -1, 2)) }},
		{"Rope odd dims", "rope", func() error { return Eval(Rope(Zeros(Float32, 1, 1, 2, 8), RoPE{Dims: 7, Base: 10000}, 0)) }},
		{"Rope freqs size", "freqs", func() error {
			return Eval(Rope(Zeros(Float32, 1, 1, 2, 8), RoPE{Dims: 8, Freqs: Ones(Float32, 3)}, 0))
		}},
		{"RMSNorm weight size", "rms_norm", func() error { return Eval(RMSNorm(Zeros(Float32, 2, 8), Ones(Float32, 5), 1e-5)) }},
		{"SDPA heads", "n_kv_heads", func() error {
			return Eval(ScaledDotProductAttention(Zeros(Float32, 1, 3, 2, 8), Zeros(Float32, 1, 2, 2, 8), Zeros(Float32, 1, 2, 2, 8), 1, MaskNone, nil))
		}},
		{"SDPA mask mode", "mask_mode", func() error {
			q := Zeros(Float32, 1, 2, 2, 8)
			return Eval(ScaledDotProductAttention(q, q, q, 1, "bogus", nil))
		}},
		{"CrossEntropy float targets", "cross_entropy", func() error { return Eval(CrossEntropy(Zeros(Float32, 2, 5), Zeros(Float32, 2))) }},
		{"Take float indices", "take", func() error { return Eval(Take(Zeros(Float32, 2), Zeros(Float32, 1), 0)) }},
		{"Uniform int", "uniform", func() error { return Eval(Uniform(0, 1, Int32, nil, 4)) }},
		{"Normal bad key", "normal", func() error { return Eval(Normal(0, 1, Float32, Zeros(Float32, 3), 4)) }},
		{"AsType bad dtype", "dtype code 99", func() error { return Eval(AsType(Zeros(Float32, 2), Dtype(99))) }},
		{"Matmul int", "matmul", func() error { return Eval(Matmul(Zeros(Int32, 2, 3), Zeros(Int32, 3, 2))) }},
		{"ValueAndGrad argnum", "valueandgrad", func() error { return vagErr(sum, 3, Zeros(Float32, 2)) }},
		{"ValueAndGrad non-scalar", "valueandgrad", func() error {
			return vagErr(func(in []*Array) ([]*Array, error) { return in, nil }, 0, Zeros(Float32, 2))
		}},
		{"Vjp cotangent shape", "vjp", func() error {
			_, _, err := Vjp(func(in []*Array) ([]*Array, error) { return in, nil }, []*Array{Zeros(Float32, 2)}, []*Array{Zeros(Float32, 3)})
			return err
		}},
		{"Item of empty", "item", func() error { _, err := Zeros(Float32, 0).Item(); return err }},
	}
	for _, c := range cases {
		inMLX(t, func() error {
			if e := errMentions(c.f(), c.word); e != nil {
				t.Errorf("%s: %v", c.name, e)
			}
			return nil
		})
	}
	// Zero strides are refused, negative ones still work: a[3:0:-1].
	inMLX(t, func() error {
		return checkExact(Slice(Arange(0, 5, 1, Float32), []int{3}, []int{0}, []int{-1}), []int{3}, []float64{3, 2, 1})
	})
}

package mlx

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sort"
	"testing"
)

// Tolerances by dtype, for results that MLX rounds once to the output dtype
// (elementwise ops, reductions accumulated in float32, fused kernels):
//
//	float32:  atol 1e-6, rtol 2e-6 (transcendentals are float32-accurate)
//	float16:  atol 1e-3, rtol 2·2^-11·2 ≈ 2e-3 (two half-ulps: input and output rounding)
//	bfloat16: atol 8e-3, rtol 2·2^-8·2 ≈ 1.6e-2
//
// References are computed in float64 from the inputs after rounding them
// to the dtype, so input rounding is not counted twice.
type tol struct{ atol, rtol float64 }

var dtypeTol = map[Dtype]tol{
	Float32:  {1e-6, 2e-6},
	Float16:  {1e-3, 2e-3},
	BFloat16: {8e-3, 1.6e-2},
}

var floatDtypes = []Dtype{Float32, Float16, BFloat16}

type gen func(r *rand.Rand) float64

var (
	genNormal   gen = func(r *rand.Rand) float64 { return r.NormFloat64() }
	genPositive gen = func(r *rand.Rand) float64 { return 0.1 + 3.9*r.Float64() }
	genAway     gen = func(r *rand.Rand) float64 { // |x| in [0.5, 2.5)
		v := 0.5 + 2*r.Float64()
		if r.Intn(2) == 0 {
			return -v
		}
		return v
	}
	genBase gen = func(r *rand.Rand) float64 { return 0.5 + 1.5*r.Float64() }
	genExp  gen = func(r *rand.Rand) float64 { return -2 + 4*r.Float64() }
)

func genTensor(r *rand.Rand, g gen, dt Dtype, shape ...int) tensor {
	t := newTensor(shape...)
	for i := range t.data {
		t.data[i] = roundTo(g(r), dt)
	}
	return t
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// TestElementwise checks every elementwise op in float32, float16 and
// bfloat16, with broadcasting in the binary ops (shapes (3,4,5) and (4,1)).
func TestElementwise(t *testing.T) {
	type ewCase struct {
		name  string
		gens  []gen
		op    func(in []*Array) *Array
		ref   func(v []float64) float64
		scale float64 // extra tolerance factor (ops with cancellation or large outputs)
	}
	unary := func(name string, g gen, op func(*Array) *Array, ref func(float64) float64) ewCase {
		return ewCase{name: name, gens: []gen{g}, op: func(in []*Array) *Array { return op(in[0]) },
			ref: func(v []float64) float64 { return ref(v[0]) }}
	}
	binary := func(name string, g1, g2 gen, op func(a, b *Array) *Array, ref func(a, b float64) float64) ewCase {
		return ewCase{name: name, gens: []gen{g1, g2}, op: func(in []*Array) *Array { return op(in[0], in[1]) },
			ref: func(v []float64) float64 { return ref(v[0], v[1]) }}
	}
	cases := []ewCase{
		binary("Add", genNormal, genNormal, Add, func(a, b float64) float64 { return a + b }),
		binary("Subtract", genNormal, genNormal, Subtract, func(a, b float64) float64 { return a - b }),
		binary("Multiply", genNormal, genNormal, Multiply, func(a, b float64) float64 { return a * b }),
		binary("Divide", genNormal, genAway, Divide, func(a, b float64) float64 { return a / b }),
		binary("Power", genBase, genExp, Power, math.Pow),
		binary("Maximum", genNormal, genNormal, Maximum, math.Max),
		binary("Minimum", genNormal, genNormal, Minimum, math.Min),
		binary("FloorDivide", genNormal, genAway, FloorDivide, func(a, b float64) float64 { return math.Floor(a / b) }),
		binary("Remainder", genNormal, genAway, Remainder, func(a, b float64) float64 { return a - b*math.Floor(a/b) }),
		binary("Equal", genNormal, genNormal, Equal, func(a, b float64) float64 { return b2f(a == b) }),
		binary("NotEqual", genNormal, genNormal, NotEqual, func(a, b float64) float64 { return b2f(a != b) }),
		binary("Less", genNormal, genNormal, Less, func(a, b float64) float64 { return b2f(a < b) }),
		binary("LessEqual", genNormal, genNormal, LessEqual, func(a, b float64) float64 { return b2f(a <= b) }),
		binary("Greater", genNormal, genNormal, Greater, func(a, b float64) float64 { return b2f(a > b) }),
		binary("GreaterEqual", genNormal, genNormal, GreaterEqual, func(a, b float64) float64 { return b2f(a >= b) }),
		unary("Sqrt", genPositive, Sqrt, math.Sqrt),
		unary("Rsqrt", genPositive, Rsqrt, func(x float64) float64 { return 1 / math.Sqrt(x) }),
		unary("Exp", genNormal, Exp, math.Exp),
		unary("Log", genPositive, Log, math.Log),
		unary("Log1p", genPositive, Log1p, math.Log1p),
		unary("Negative", genNormal, Negative, func(x float64) float64 { return -x }),
		unary("Abs", genNormal, Abs, math.Abs),
		unary("Square", genNormal, Square, func(x float64) float64 { return x * x }),
		unary("Sigmoid", genNormal, Sigmoid, sigmoid),
		unary("Silu", genNormal, Silu, func(x float64) float64 { return x * sigmoid(x) }),
		unary("Sin", genNormal, Sin, math.Sin),
		unary("Cos", genNormal, Cos, math.Cos),
		unary("Tanh", genNormal, Tanh, math.Tanh),
		unary("Erf", genNormal, Erf, math.Erf),
		unary("Floor", genNormal, Floor, math.Floor),
		unary("StopGradient", genNormal, StopGradient, func(x float64) float64 { return x }),
		unary("Contiguous", genNormal, Contiguous, func(x float64) float64 { return x }),
		unary("IsNaN", genNormal, IsNaN, func(float64) float64 { return 0 }),
		unary("IsInf", genNormal, IsInf, func(float64) float64 { return 0 }),
		unary("AddScalar", genNormal, func(a *Array) *Array { return AddScalar(a, 1.5) }, func(x float64) float64 { return x + 1.5 }),
		unary("MulScalar", genNormal, func(a *Array) *Array { return MulScalar(a, -0.75) }, func(x float64) float64 { return -0.75 * x }),
		{name: "Where", gens: []gen{genNormal, genNormal, genNormal},
			op:  func(in []*Array) *Array { return Where(Greater(in[0], Scalar(0, in[0].Dtype())), in[1], in[2]) },
			ref: func(v []float64) float64 { return map[bool]float64{true: v[1], false: v[2]}[v[0] > 0] }},
		{name: "Clip", gens: []gen{genNormal, genNormal, genNormal},
			op: func(in []*Array) *Array {
				lo := Minimum(in[1], in[2])
				return Clip(in[0], lo, Maximum(in[1], in[2]))
			},
			ref: func(v []float64) float64 {
				return math.Min(math.Max(v[0], math.Min(v[1], v[2])), math.Max(v[1], v[2]))
			}},
		{name: "ClipLow", gens: []gen{genNormal, genNormal},
			op:  func(in []*Array) *Array { return Clip(in[0], in[1], nil) },
			ref: func(v []float64) float64 { return math.Max(v[0], v[1]) }},
		{name: "ClipHigh", gens: []gen{genNormal, genNormal},
			op:  func(in []*Array) *Array { return Clip(in[0], nil, in[1]) },
			ref: func(v []float64) float64 { return math.Min(v[0], v[1]) }},
	}
	shapes := [][]int{{3, 4, 5}, {4, 1}, {4, 5}}
	for _, dt := range floatDtypes {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%s", c.name, dt), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(len(c.name)*131 + int(dt))))
				inMLX(t, func() error {
					ins := make([]tensor, len(c.gens))
					arrs := make([]*Array, len(c.gens))
					for i, g := range c.gens {
						ins[i] = genTensor(r, g, dt, shapes[i]...)
						arrs[i] = arr(ins[i].data, dt, ins[i].shape...)
					}
					got := c.op(arrs)
					if err := got.Err(); err != nil {
						return err
					}
					want := zipRef(c.ref, ins...)
					tl := dtypeTol[dt]
					isBool := got.Dtype() == Bool
					if isBool {
						tl = tol{0, 0}
					} else if got.Dtype() != dt {
						t.Errorf("dtype %s, want %s", got.Dtype(), dt)
					}
					if c.name == "FloorDivide" || c.name == "Remainder" {
						// floor(a/b) flips where a/b is within rounding of an
						// integer; skip those elements.
						for i := range want.data {
							v := zipRef(func(v []float64) float64 { return v[0] / v[1] }, ins...).data[i]
							if math.Abs(v-math.Round(v)) < 1e-2 {
								want.data[i] = math.NaN()
							}
						}
						gotv, err := values(got, want.shape)
						if err != nil {
							return err
						}
						for i := range gotv {
							if math.IsNaN(want.data[i]) {
								gotv[i] = math.NaN()
							}
						}
						if c.name == "Remainder" {
							tl.atol *= 4 // a - b·floor(a/b) rounds at the scale of a
						}
						if err := closeTo(gotv, want.data, tl.atol, tl.rtol); err != nil {
							t.Error(err)
						}
						return nil
					}
					if err := check(got, want, tl.atol, tl.rtol); err != nil {
						t.Error(err)
					}
					return nil
				})
			})
		}
	}
}

func TestLogicalOps(t *testing.T) {
	inMLX(t, func() error {
		a := []bool{true, false, true, false, true, true}
		b := []bool{true, true, false, false, false, true}
		A, B := FromBools(a, 2, 3), FromBools(b, 2, 3)
		want := func(f func(x, y bool) bool) []float64 {
			out := make([]float64, len(a))
			for i := range a {
				out[i] = b2f(f(a[i], b[i]))
			}
			return out
		}
		for _, c := range []struct {
			name string
			got  *Array
			want []float64
		}{
			{"LogicalAnd", LogicalAnd(A, B), want(func(x, y bool) bool { return x && y })},
			{"LogicalOr", LogicalOr(A, B), want(func(x, y bool) bool { return x || y })},
			{"LogicalNot", LogicalNot(A), want(func(x, _ bool) bool { return !x })},
			{"All", All(A, false, 0), []float64{0, 0, 1}},
			{"Any", Any(B, false, 1), []float64{1, 1}},
			{"AnyNone", Any(FromBools([]bool{false, false}, 2), false), []float64{0}},
			{"AllAll", All(FromBools([]bool{true, true}, 2), false), []float64{1}},
		} {
			shape := []int{2, 3}
			switch c.name {
			case "All":
				shape = []int{3}
			case "Any":
				shape = []int{2}
			case "AllAll", "AnyNone":
				shape = []int{}
			}
			if c.got.Dtype() != Bool {
				t.Errorf("%s: dtype %s, want bool", c.name, c.got.Dtype())
			}
			if err := checkExact(c.got, shape, c.want); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
		// NaN and Inf detection on real NaN/Inf values.
		x := FromFloat32s([]float32{1, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}, 4)
		if err := checkExact(IsNaN(x), []int{4}, []float64{0, 1, 0, 0}); err != nil {
			t.Errorf("IsNaN: %v", err)
		}
		if err := checkExact(IsInf(x), []int{4}, []float64{0, 0, 1, 1}); err != nil {
			t.Errorf("IsInf: %v", err)
		}
		return nil
	})
}

func TestSoftmax(t *testing.T) {
	for _, dt := range floatDtypes {
		for _, axis := range []int{-1, 0, 1} {
			t.Run(fmt.Sprintf("%s/axis%d", dt, axis), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(axis + 7*int(dt))))
				x := genTensor(r, func(r *rand.Rand) float64 { return 3 * r.NormFloat64() }, dt, 3, 5, 7)
				inMLX(t, func() error {
					a := arr(x.data, dt, x.shape...)
					tl := dtypeTol[dt]
					for _, precise := range []bool{false, true} {
						if err := check(Softmax(a, precise, axis), alongAxis(x, axis, softmaxLane), tl.atol, tl.rtol); err != nil {
							t.Errorf("Softmax(precise=%v): %v", precise, err)
						}
					}
					// log-softmax values reach about -15: tolerance on the
					// absolute scale of the inputs.
					if err := check(LogSoftmax(a, axis), alongAxis(x, axis, logSoftmaxLane), tl.atol*10, tl.rtol); err != nil {
						t.Errorf("LogSoftmax: %v", err)
					}
					return nil
				})
			})
		}
	}
	// Softmax over two axes at once.
	inMLX(t, func() error {
		r := rand.New(rand.NewSource(3))
		x := randTensor(r, 2, 3, 4)
		want := transposeRef(x, []int{0, 1, 2})
		for b := 0; b < 2; b++ {
			softmaxLane(want.data[b*12 : b*12+12])
		}
		return check(Softmax(f32(x), false, 1, 2), want, 1e-6, 2e-6)
	})
}

func TestReductions(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	x := randTensor(r, 3, 4, 5)
	pos := mapRef(randTensor(r, 3, 4, 5), func(v float64) float64 { return 0.8 + 0.1*v })
	type red struct {
		name   string
		op     func(a *Array, keep bool, axes ...int) *Array
		ref    func([]float64) float64
		in     tensor
		argIdx bool
	}
	reds := []red{
		{"Sum", Sum, sumF, x, false},
		{"Mean", Mean, meanF, x, false},
		{"Max", Max, maxF, x, false},
		{"Min", Min, minF, x, false},
		{"LogSumExp", LogSumExp, logsumexpF, x, false},
		{"Prod", Prod, prodF, pos, false},
		{"Argmax", func(a *Array, keep bool, axes ...int) *Array { return Argmax(a, axes[0], keep) }, argmaxF, x, true},
		{"Argmin", func(a *Array, keep bool, axes ...int) *Array { return Argmin(a, axes[0], keep) }, argminF, x, true},
	}
	axesSets := [][]int{{}, {0}, {1}, {-1}, {0, 2}, {1, 2}}
	for _, c := range reds {
		for _, axes := range axesSets {
			if c.argIdx && len(axes) != 1 {
				continue
			}
			for _, keep := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/axes%v/keep=%v", c.name, axes, keep), func(t *testing.T) {
					inMLX(t, func() error {
						got := c.op(f32(c.in), keep, axes...)
						want := reduceRef(c.in, axes, keep, c.ref)
						if c.argIdx {
							if got.Dtype() != Uint32 {
								t.Errorf("dtype %s, want uint32", got.Dtype())
							}
							if err := checkExact(got, want.shape, want.data); err != nil {
								t.Error(err)
							}
							return nil
						}
						if err := check(got, want, 1e-5, 1e-5); err != nil {
							t.Error(err)
						}
						return nil
					})
				})
			}
		}
	}
	// bf16 and f16 sums accumulate in float32 and round once.
	for _, dt := range []Dtype{Float16, BFloat16} {
		inMLX(t, func() error {
			xd := genTensor(r, genNormal, dt, 8, 64)
			tl := dtypeTol[dt]
			if err := check(Sum(arr(xd.data, dt, 8, 64), false, 1), reduceRef(xd, []int{1}, false, sumF), tl.atol*8, tl.rtol); err != nil {
				t.Errorf("Sum %s: %v", dt, err)
			}
			if err := check(Mean(arr(xd.data, dt, 8, 64), true, 1), reduceRef(xd, []int{1}, true, meanF), tl.atol, tl.rtol); err != nil {
				t.Errorf("Mean %s: %v", dt, err)
			}
			return nil
		})
	}
}

func TestCumsum(t *testing.T) {
	r := rand.New(rand.NewSource(12))
	x := randTensor(r, 4, 6)
	for _, axis := range []int{0, 1, -1} {
		for _, reverse := range []bool{false, true} {
			for _, inclusive := range []bool{false, true} {
				name := fmt.Sprintf("axis%d/reverse=%v/inclusive=%v", axis, reverse, inclusive)
				inMLX(t, func() error {
					if err := check(Cumsum(f32(x), axis, reverse, inclusive), cumsumRef(x, axis, reverse, inclusive), 1e-5, 1e-5); err != nil {
						t.Errorf("%s: %v", name, err)
					}
					return nil
				})
			}
		}
	}
}

func TestMatmul(t *testing.T) {
	r := rand.New(rand.NewSource(13))
	cases := []struct{ a, b []int }{
		{[]int{5, 7}, []int{7, 3}},
		{[]int{2, 5, 32}, []int{2, 32, 6}},
		{[]int{2, 3, 4, 16}, []int{16, 5}},
		{[]int{3, 1, 4, 8}, []int{1, 2, 8, 5}},
	}
	for _, dt := range floatDtypes {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%v@%v", dt, c.a, c.b), func(t *testing.T) {
				a, b := genTensor(r, genNormal, dt, c.a...), genTensor(r, genNormal, dt, c.b...)
				inMLX(t, func() error {
					got := Matmul(arr(a.data, dt, a.shape...), arr(b.data, dt, b.shape...))
					return checkMatmul(t, got, matmulRef(a, b), absMatmulRef(a, b), dt)
				})
			})
		}
	}
}

// checkMatmul bounds |got - want| by the output rounding (rtol·|want|) plus
// accumulation error on the scale of Σ|a||b|: float32 1e-6, float16 2e-3,
// bfloat16 1.6e-2 (MLX accumulates low precision products in float32, so
// the accumulation term is mostly the final rounding).
func checkMatmul(t *testing.T, got *Array, want, scale tensor, dt Dtype) error {
	gv, err := values(got, want.shape)
	if err != nil {
		return err
	}
	acc := map[Dtype]float64{Float32: 1e-6, Float16: 2e-3, BFloat16: 1.6e-2}[dt]
	for i := range gv {
		bound := acc*scale.data[i] + 1e-7
		if d := math.Abs(gv[i] - want.data[i]); d > bound {
			t.Errorf("element %d: got %.7g want %.7g (|diff| %.3g > %.3g)", i, gv[i], want.data[i], d, bound)
			return nil
		}
	}
	return nil
}

func TestAddmm(t *testing.T) {
	r := rand.New(rand.NewSource(14))
	for _, dt := range floatDtypes {
		for _, cShape := range [][]int{{4, 6}, {6}} {
			a, b := genTensor(r, genNormal, dt, 4, 9), genTensor(r, genNormal, dt, 9, 6)
			c := genTensor(r, genNormal, dt, cShape...)
			alpha, beta := 0.5, -2.0
			inMLX(t, func() error {
				got := Addmm(arr(c.data, dt, c.shape...), arr(a.data, dt, a.shape...), arr(b.data, dt, b.shape...), float32(alpha), float32(beta))
				ab := matmulRef(a, b)
				want := zipRef(func(v []float64) float64 { return alpha*v[0] + beta*v[1] }, ab, c)
				scale := zipRef(func(v []float64) float64 { return math.Abs(alpha)*v[0] + math.Abs(beta*v[1]) }, absMatmulRef(a, b), c)
				if err := checkMatmul(t, got, want, scale, dt); err != nil {
					t.Errorf("%s c%v: %v", dt, cShape, err)
				}
				return nil
			})
		}
	}
}

func TestShapeOps(t *testing.T) {
	r := rand.New(rand.NewSource(15))
	x := randTensor(r, 2, 3, 4)
	inMLX(t, func() error {
		a := f32(x)
		type sc struct {
			name string
			got  *Array
			want tensor
		}
		y := randTensor(r, 2, 5, 4)
		z := randTensor(r, 2, 1, 4)
		cases := []sc{
			{"Reshape", Reshape(a, 4, 6), reshapeRef(x, 4, 6)},
			{"Reshape-1", Reshape(a, -1, 3), reshapeRef(x, 8, 3)},
			{"Transpose", Transpose(a, 2, 0, 1), transposeRef(x, []int{2, 0, 1})},
			{"TransposeReverse", Transpose(a), transposeRef(x, []int{2, 1, 0})},
			{"SwapAxes", SwapAxes(a, 0, 2), transposeRef(x, []int{2, 1, 0})},
			{"SwapAxesNeg", SwapAxes(a, -1, -2), transposeRef(x, []int{0, 2, 1})},
			{"ExpandDims", ExpandDims(a, 1), reshapeRef(x, 2, 1, 3, 4)},
			{"ExpandDims2", ExpandDims(a, 0, -1), reshapeRef(x, 1, 2, 3, 4, 1)},
			{"Squeeze", Squeeze(Reshape(a, 2, 1, 3, 1, 4), 1), reshapeRef(x, 2, 3, 1, 4)},
			{"SqueezeAll", Squeeze(Reshape(a, 2, 1, 3, 1, 4)), reshapeRef(x, 2, 3, 4)},
			{"BroadcastTo", BroadcastTo(f32(z), 3, 2, 5, 4), broadcastRef(z, []int{3, 2, 5, 4})},
			{"Concatenate", Concatenate([]*Array{a, f32(y), f32(z)}, 1), concatRef([]tensor{x, y, z}, 1)},
			{"ConcatenateNeg", Concatenate([]*Array{a, a}, -1), concatRef([]tensor{x, x}, -1)},
			{"Stack", Stack([]*Array{a, Negative(a)}, 1),
				concatRef([]tensor{reshapeRef(x, 2, 1, 3, 4), reshapeRef(mapRef(x, func(v float64) float64 { return -v }), 2, 1, 3, 4)}, 1)},
			{"Slice", Slice(a, []int{0, 1, 0}, []int{2, 3, 4}, nil), sliceRef(x, []int{0, 1, 0}, []int{2, 3, 4}, []int{1, 1, 1})},
			{"SliceStrided", Slice(a, []int{1, 0, 1}, []int{2, 3, 4}, []int{1, 2, 2}), sliceRef(x, []int{1, 0, 1}, []int{2, 3, 4}, []int{1, 2, 2})},
			{"SliceAxis", SliceAxis(a, -1, 1, 3), sliceRef(x, []int{0, 0, 1}, []int{2, 3, 3}, []int{1, 1, 1})},
		}
		upd := randTensor(r, 1, 2, 2)
		cases = append(cases, sc{"SliceUpdate", SliceUpdate(a, f32(upd), []int{1, 0, 1}, []int{2, 3, 4}, []int{1, 2, 2}),
			sliceUpdateRef(x, upd, []int{1, 0, 1}, []int{1, 2, 2})})
		for _, c := range cases {
			if err := check(c.got, c.want, 0, 0); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
		// Split into equal sections and at indices.
		parts, err := Split(a, 2, 2)
		if err != nil {
			return err
		}
		if len(parts) != 2 {
			t.Errorf("Split: %d parts", len(parts))
		}
		for i, p := range parts {
			if err := check(p, sliceRef(x, []int{0, 0, 2 * i}, []int{2, 3, 2*i + 2}, []int{1, 1, 1}), 0, 0); err != nil {
				t.Errorf("Split part %d: %v", i, err)
			}
		}
		parts, err = SplitAt(a, []int{1, 3}, 2)
		if err != nil {
			return err
		}
		bounds := []int{0, 1, 3, 4}
		if len(parts) != 3 {
			t.Errorf("SplitAt: %d parts", len(parts))
		}
		for i, p := range parts {
			if err := check(p, sliceRef(x, []int{0, 0, bounds[i]}, []int{2, 3, bounds[i+1]}, []int{1, 1, 1}), 0, 0); err != nil {
				t.Errorf("SplitAt part %d: %v", i, err)
			}
		}
		// Shape, Dim, Ndim, Size, NBytes report.
		if !equalInts(a.Shape(), []int{2, 3, 4}) || a.Dim(-1) != 4 || a.Dim(0) != 2 || a.Ndim() != 3 || a.Size() != 24 || a.NBytes() != 96 {
			t.Errorf("metadata: shape %v dim(-1) %d ndim %d size %d nbytes %d", a.Shape(), a.Dim(-1), a.Ndim(), a.Size(), a.NBytes())
		}
		return nil
	})
}

func TestGatherScatter(t *testing.T) {
	r := rand.New(rand.NewSource(16))
	x := randTensor(r, 4, 5)
	inMLX(t, func() error {
		a := f32(x)
		// Take along axis 0 with 2-D indices: out shape (2, 3, 5).
		idx := []int{3, 0, 2, 2, 1, 3}
		want := newTensor(2, 3, 5)
		for i, row := range idx {
			copy(want.data[i*5:], x.data[row*5:row*5+5])
		}
		if err := check(Take(a, intsShaped(idx, 2, 3), 0), want, 0, 0); err != nil {
			t.Errorf("Take axis 0: %v", err)
		}
		// Take along axis 1: out shape (4, 3).
		cols := []int{4, 0, 4}
		want = newTensor(4, 3)
		for i := 0; i < 4; i++ {
			for j, c := range cols {
				want.data[i*3+j] = x.at(i, c)
			}
		}
		if err := check(Take(a, ints(cols...), 1), want, 0, 0); err != nil {
			t.Errorf("Take axis 1: %v", err)
		}
		// TakeFlat on the flattened array.
		flat := []int{19, 0, 7}
		if err := check(TakeFlat(a, ints(flat...)), tensor{[]int{3}, []float64{x.data[19], x.data[0], x.data[7]}}, 0, 0); err != nil {
			t.Errorf("TakeFlat: %v", err)
		}
		// TakeAlongAxis: one index per row (the pattern of gathering
		// target log-probs).
		tgt := []int{1, 4, 0, 2}
		want = newTensor(4, 1)
		for i, c := range tgt {
			want.data[i] = x.at(i, c)
		}
		if err := check(TakeAlongAxis(a, intsShaped(tgt, 4, 1), 1), want, 0, 0); err != nil {
			t.Errorf("TakeAlongAxis: %v", err)
		}
		// TakeAlongAxis on axis 0 with broadcasting indices (1, 5).
		rows := []int{3, 1, 0, 2, 3}
		want = newTensor(1, 5)
		for j, rr := range rows {
			want.data[j] = x.at(rr, j)
		}
		if err := check(TakeAlongAxis(a, intsShaped(rows, 1, 5), 0), want, 0, 0); err != nil {
			t.Errorf("TakeAlongAxis axis 0: %v", err)
		}
		// PutAlongAxis: two distinct columns per row.
		pidx := []int{0, 3, 4, 1, 2, 2 + 1, 1, 0}
		vals := randTensor(r, 4, 2)
		want = tensor{shape: x.shape, data: append([]float64{}, x.data...)}
		for i := 0; i < 4; i++ {
			for j := 0; j < 2; j++ {
				want.data[i*5+pidx[i*2+j]] = vals.at(i, j)
			}
		}
		if err := check(PutAlongAxis(a, intsShaped(pidx, 4, 2), f32(vals), 1), want, 0, 0); err != nil {
			t.Errorf("PutAlongAxis: %v", err)
		}
		return nil
	})
}

func TestConstruction(t *testing.T) {
	inMLX(t, func() error {
		if err := checkExact(Arange(0, 5, 1, Int32), []int{5}, []float64{0, 1, 2, 3, 4}); err != nil {
			t.Errorf("Arange int32: %v", err)
		}
		a := Arange(-1, 1, 0.25, Float32)
		if a.Dtype() != Float32 {
			t.Errorf("Arange dtype %s", a.Dtype())
		}
		if err := checkExact(a, []int{8}, []float64{-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75}); err != nil {
			t.Errorf("Arange float: %v", err)
		}
		if err := checkExact(Arange(10, 2, -3, Int32), []int{3}, []float64{10, 7, 4}); err != nil {
			t.Errorf("Arange negative step: %v", err)
		}
		for _, dt := range []Dtype{Float32, Float16, BFloat16, Int32, Uint32, Bool} {
			z, o := Zeros(dt, 2, 3), Ones(dt, 3)
			if z.Dtype() != dt || o.Dtype() != dt {
				t.Errorf("Zeros/Ones dtype %s, %s want %s", z.Dtype(), o.Dtype(), dt)
			}
			if err := checkExact(z, []int{2, 3}, make([]float64, 6)); err != nil {
				t.Errorf("Zeros %s: %v", dt, err)
			}
			if err := checkExact(o, []int{3}, []float64{1, 1, 1}); err != nil {
				t.Errorf("Ones %s: %v", dt, err)
			}
		}
		if err := checkExact(Full(-2.5, Float32, 2, 2), []int{2, 2}, []float64{-2.5, -2.5, -2.5, -2.5}); err != nil {
			t.Errorf("Full: %v", err)
		}
		if err := checkExact(Full(-3.140625, BFloat16, 1), []int{1}, []float64{roundTo(-3.140625, BFloat16)}); err != nil {
			t.Errorf("Full bf16: %v", err)
		}
		// Integer fills beyond float32's exact range stay exact.
		if v, err := Full(123456789, Int32, 2).Int32s(); err != nil || !slices.Equal(v, []int32{123456789, 123456789}) {
			t.Errorf("Full int32 large: %v, %v", v, err)
		}
		if v, err := Scalar(16777217, Int32).Item(); err != nil || v != 16777217 {
			t.Errorf("Scalar int32 16777217: %v, %v", v, err)
		}
		if v, err := Scalar(-7, Int64).Item(); err != nil || v != -7 {
			t.Errorf("Scalar int64: %v, %v", v, err)
		}
		if v, err := Scalar(0.1, Float32).Item(); err != nil || v != float64(float32(0.1)) {
			t.Errorf("Scalar f32: %v, %v", v, err)
		}
		// tril/triu on a non-square random matrix and a batch.
		r := rand.New(rand.NewSource(17))
		x := randTensor(r, 2, 4, 6)
		for _, k := range []int{-1, 0, 2} {
			if err := check(Tril(f32(x), k), triRef(x, k, false), 0, 0); err != nil {
				t.Errorf("Tril k=%d: %v", k, err)
			}
			if err := check(Triu(f32(x), k), triRef(x, k, true), 0, 0); err != nil {
				t.Errorf("Triu k=%d: %v", k, err)
			}
		}
		return nil
	})
}

func TestSortArgsortArgpartition(t *testing.T) {
	r := rand.New(rand.NewSource(18))
	x := randTensor(r, 5, 9)
	inMLX(t, func() error {
		a := f32(x)
		for _, axis := range []int{0, 1, -1} {
			want := alongAxis(x, axis, func(l []float64) { sort.Float64s(l) })
			if err := check(Sort(a, axis), want, 0, 0); err != nil {
				t.Errorf("Sort axis %d: %v", axis, err)
			}
			wantIdx := alongAxis(x, axis, func(l []float64) {
				idx := make([]int, len(l))
				for i := range idx {
					idx[i] = i
				}
				sort.Slice(idx, func(i, j int) bool { return l[idx[i]] < l[idx[j]] })
				for i, v := range idx {
					l[i] = float64(v)
				}
			})
			as := Argsort(a, axis)
			if as.Dtype() != Uint32 {
				t.Errorf("Argsort dtype %s", as.Dtype())
			}
			if err := check(as, wantIdx, 0, 0); err != nil {
				t.Errorf("Argsort axis %d: %v", axis, err)
			}
		}
		// ArgPartition: the kth element is in sorted position, those before
		// are not larger, those after not smaller, and the indices are a
		// permutation of each row.
		for _, kth := range []int{0, 3, 8} {
			p := ArgPartition(a, kth, 1)
			idx, err := p.Int32s()
			if err != nil {
				return err
			}
			if !equalInts(p.Shape(), []int{5, 9}) {
				t.Errorf("ArgPartition shape %v", p.Shape())
			}
			for row := 0; row < 5; row++ {
				ri := idx[row*9 : row*9+9]
				seen := map[int32]bool{}
				for _, v := range ri {
					seen[v] = true
				}
				if len(seen) != 9 {
					t.Errorf("ArgPartition row %d: %v is not a permutation", row, ri)
					continue
				}
				lane := append([]float64{}, x.data[row*9:row*9+9]...)
				sorted := append([]float64{}, lane...)
				sort.Float64s(sorted)
				pivot := lane[ri[kth]]
				if pivot != sorted[kth] {
					t.Errorf("ArgPartition row %d kth %d: pivot %g, want %g", row, kth, pivot, sorted[kth])
				}
				for j, v := range ri {
					if (j < kth && lane[v] > pivot) || (j > kth && lane[v] < pivot) {
						t.Errorf("ArgPartition row %d kth %d: position %d holds %g against pivot %g", row, kth, j, lane[v], pivot)
					}
				}
			}
		}
		return nil
	})
}

func TestAsType(t *testing.T) {
	r := rand.New(rand.NewSource(19))
	x := mapRef(randTensor(r, 3, 7), func(v float64) float64 { return 4 * v })
	inMLX(t, func() error {
		a := f32(x)
		for _, dt := range []Dtype{Float16, BFloat16, Float32} {
			c := AsType(a, dt)
			if c.Dtype() != dt {
				t.Errorf("AsType dtype %s want %s", c.Dtype(), dt)
			}
			if err := check(c, tensor{x.shape, roundAll(roundAll(x.data, Float32), dt)}, 0, 0); err != nil {
				t.Errorf("AsType %s: %v", dt, err)
			}
		}
		// Float to int truncates toward zero.
		if err := check(AsType(a, Int32), mapRef(x, func(v float64) float64 { return math.Trunc(float64(float32(v))) }), 0, 0); err != nil {
			t.Errorf("AsType int32: %v", err)
		}
		if err := check(AsType(a, Bool), mapRef(x, func(v float64) float64 { return b2f(v != 0) }), 0, 0); err != nil {
			t.Errorf("AsType bool: %v", err)
		}
		// Raw readers agree with the converting ones.
		h := AsType(a, Float16)
		hv, err := h.Float16s()
		if err != nil {
			return err
		}
		bv, err := AsType(a, BFloat16).BF16s()
		if err != nil {
			return err
		}
		for i := range hv {
			if float64(hv[i].Float32()) != roundTo(x.data[i], Float16) || float64(bv[i].Float32()) != roundTo(x.data[i], BFloat16) {
				t.Errorf("element %d: f16 %v bf16 %v from %v", i, hv[i].Float32(), bv[i].Float32(), x.data[i])
				break
			}
		}
		iv, err := AsType(Abs(a), Uint32).Uint32s()
		if err != nil {
			return err
		}
		for i, v := range iv {
			if float64(v) != math.Trunc(math.Abs(float64(float32(x.data[i])))) {
				t.Errorf("uint32 element %d: %d from %v", i, v, x.data[i])
				break
			}
		}
		raw, err := FromInt32s([]int32{1, -2}, 2).Bytes()
		if err != nil {
			return err
		}
		if !slices.Equal(raw, []byte{1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff}) {
			t.Errorf("Bytes: %v", raw)
		}
		if v, err := Sum(FromInt32s([]int32{40000, 50000}, 2), false).Item(); err != nil || v != 90000 {
			t.Errorf("Item of int sum: %v %v", v, err)
		}
		return nil
	})
}

func TestStopGradient(t *testing.T) {
	r := rand.New(rand.NewSource(20))
	x := randTensor(r, 6)
	inMLX(t, func() error {
		// f(x) = Σ x·sg(x): the gradient is sg(x) = x, not 2x; and
		// g(x) = Σ sg(x)² has zero gradient.
		vg, err := NewValueAndGrad(func(in []*Array) ([]*Array, error) {
			sg := StopGradient(in[0])
			f := Sum(Multiply(in[0], sg), false)
			g := Sum(Square(sg), false)
			return []*Array{Add(f, MulScalar(g, 0)), g}, nil
		}, 0)
		if err != nil {
			return err
		}
		defer vg.Free()
		vals, grads, err := vg.Call(f32(x))
		if err != nil {
			return err
		}
		ss := 0.0
		for _, v := range x.data {
			ss += v * v
		}
		if err := check(vals[1], tensor{[]int{}, []float64{ss}}, 1e-5, 1e-5); err != nil {
			t.Errorf("value: %v", err)
		}
		if err := check(grads[0], x, 1e-6, 1e-6); err != nil {
			t.Errorf("gradient through x·sg(x): %v", err)
		}
		vg2, err := NewValueAndGrad(func(in []*Array) ([]*Array, error) {
			return []*Array{Sum(Square(StopGradient(in[0])), false)}, nil
		}, 0)
		if err != nil {
			return err
		}
		defer vg2.Free()
		_, grads, err = vg2.Call(f32(x))
		if err != nil {
			return err
		}
		if err := check(grads[0], newTensor(6), 0, 0); err != nil {
			t.Errorf("gradient of sg(x)²: %v", err)
		}
		return nil
	})
}

package mlx

import (
	"math"
	"slices"
	"testing"

	"github.com/x448/float16"
)

func TestArrayRoundTrips(t *testing.T) {
	inMLX(t, func() error {
		u := FromUint32s([]uint32{0, 7, math.MaxUint32}, 3)
		if u.Dtype() != Uint32 {
			t.Errorf("FromUint32s dtype %s", u.Dtype())
		}
		if v, err := u.Uint32s(); err != nil || !slices.Equal(v, []uint32{0, 7, math.MaxUint32}) {
			t.Errorf("Uint32s: %v %v", v, err)
		}
		if v, err := u.Int64s(); err != nil || !slices.Equal(v, []int64{0, 7, math.MaxUint32}) {
			t.Errorf("Int64s of uint32: %v %v", v, err)
		}
		if v, err := FromInt32s([]int32{-5, math.MaxInt32}, 2).Int64s(); err != nil || !slices.Equal(v, []int64{-5, math.MaxInt32}) {
			t.Errorf("Int64s of int32: %v %v", v, err)
		}
		b := FromBools([]bool{true, false, true}, 3)
		if v, err := b.Bools(); err != nil || !slices.Equal(v, []bool{true, false, true}) {
			t.Errorf("Bools: %v %v", v, err)
		}
		if v, err := Greater(FromFloat32s([]float32{1, -1}, 2), Zeros(Float32)).Bools(); err != nil || !slices.Equal(v, []bool{true, false}) {
			t.Errorf("Bools of a comparison: %v %v", v, err)
		}
		// Float16 and bfloat16 builders keep the bits.
		h := []float16.Float16{float16.Fromfloat32(1.5), float16.Fromfloat32(-0.333), float16.Inf(-1)}
		if v, err := FromFloat16s(h, 3).Float16s(); err != nil || !slices.Equal(v, h) {
			t.Errorf("Float16s: %v %v", v, err)
		}
		bf := []BF16{ToBF16(3.14159), ToBF16(-1e-3), ToBF16(float32(math.Inf(1)))}
		if v, err := FromBF16s(bf, 3).BF16s(); err != nil || !slices.Equal(v, bf) {
			t.Errorf("BF16s: %v %v", v, err)
		}
		// ToBF16 rounds to nearest even and keeps NaN a NaN.
		for _, c := range []struct {
			in   float32
			want uint16
		}{
			{1, 0x3f80},
			{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even stays
			{math.Float32frombits(0x3f818000), 0x3f82}, // tie, odd rounds up
			{math.Float32frombits(0x3f808001), 0x3f81}, // above the tie
		} {
			if got := ToBF16(c.in); uint16(got) != c.want {
				t.Errorf("ToBF16(%#x) = %#x, want %#x", math.Float32bits(c.in), uint16(got), c.want)
			}
		}
		if f := ToBF16(float32(math.NaN())).Float32(); f == f {
			t.Errorf("ToBF16(NaN) = %v", f)
		}
		// A 0-d array.
		s := FromFloat32s([]float32{2.5})
		if s.Ndim() != 0 || len(s.Shape()) != 0 || s.Shape() == nil || s.Size() != 1 {
			t.Errorf("scalar: ndim %d shape %v size %d", s.Ndim(), s.Shape(), s.Size())
		}
		if v, err := s.Item(); err != nil || v != 2.5 {
			t.Errorf("scalar item %v %v", v, err)
		}
		// AsyncEval then Eval; KeepAll.
		inner := NewScope()
		parts := []*Array{AddScalar(s, 1), MulScalar(s, 2)}
		if err := AsyncEval(parts...); err != nil {
			return err
		}
		inner.KeepAll(parts)
		inner.Close()
		for i, want := range []float64{3.5, 5} {
			if v, err := parts[i].Item(); err != nil || v != want {
				t.Errorf("kept part %d: %v %v", i, v, err)
			}
		}
		return nil
	})
}

func TestDtypes(t *testing.T) {
	for _, c := range []struct {
		dt    Dtype
		name  string
		size  int
		float bool
	}{
		{Bool, "bool", 1, false}, {Uint8, "uint8", 1, false}, {Uint32, "uint32", 4, false},
		{Int32, "int32", 4, false}, {Int64, "int64", 8, false}, {Float16, "float16", 2, true},
		{BFloat16, "bfloat16", 2, true}, {Float32, "float32", 4, true},
	} {
		if c.dt.String() != c.name || c.dt.Size() != c.size || c.dt.IsFloat() != c.float {
			t.Errorf("%d: %s size %d float %v", int(c.dt), c.dt, c.dt.Size(), c.dt.IsFloat())
		}
		if got, err := ParseDtype(c.name); err != nil || got != c.dt {
			t.Errorf("ParseDtype(%q) = %v, %v", c.name, got, err)
		}
	}
	for s, want := range map[string]Dtype{"bf16": BFloat16, "f16": Float16, "fp16": Float16, "f32": Float32, "fp32": Float32} {
		if got, err := ParseDtype(s); err != nil || got != want {
			t.Errorf("ParseDtype(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseDtype("float8"); err == nil {
		t.Errorf("ParseDtype(float8) succeeded")
	}
	// The Go codes match MLX's dtypes: each round-trips through an array.
	inMLX(t, func() error {
		for _, dt := range []Dtype{Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Float16, BFloat16, Float32} {
			a := AsType(FromFloat32s([]float32{1, 0}, 2), dt)
			if a.Dtype() != dt || a.NBytes() != 2*dt.Size() {
				t.Errorf("AsType to %s gives %s, %d bytes", dt, a.Dtype(), a.NBytes())
			}
			if err := checkExact(a, []int{2}, []float64{1, 0}); err != nil {
				t.Errorf("%s: %v", dt, err)
			}
		}
		return nil
	})
}

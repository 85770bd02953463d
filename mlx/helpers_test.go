package mlx

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/x448/float16"
)

// inMLX runs f on the MLX owner thread inside a scope. f must not call
// t.Fatal, t.FailNow or the skip helpers (they would end the owner goroutine); it reports
// soft failures with t.Errorf and hard ones by returning an error.
func inMLX(t testing.TB, f func() error) {
	t.Helper()
	err := Do(func() error {
		s := NewScope()
		defer s.Close()
		return f()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tensor is a float64 row-major reference array.
type tensor struct {
	shape []int
	data  []float64
}

func newTensor(shape ...int) tensor {
	return tensor{shape: append([]int{}, shape...), data: make([]float64, numel(shape))}
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func strides(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// index splits flat index i into coordinates of shape.
func unravel(i int, shape []int) []int {
	c := make([]int, len(shape))
	for d := len(shape) - 1; d >= 0; d-- {
		c[d] = i % shape[d]
		i /= shape[d]
	}
	return c
}

func ravel(c, shape []int) int {
	i := 0
	for d := range shape {
		i = i*shape[d] + c[d]
	}
	return i
}

func (t tensor) at(c ...int) float64 { return t.data[ravel(c, t.shape)] }

// randNormal returns n standard normal values.
func randNormal(r *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64()
	}
	return v
}

// randUniform returns n values in [lo, hi).
func randUniform(r *rand.Rand, n int, lo, hi float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = lo + (hi-lo)*r.Float64()
	}
	return v
}

// randTensor is a standard normal tensor of float32-representable values.
func randTensor(r *rand.Rand, shape ...int) tensor {
	return tensor{shape: append([]int{}, shape...), data: roundAll(randNormal(r, numel(shape)), Float32)}
}

// roundTo rounds v to the nearest value representable in dt.
func roundTo(v float64, dt Dtype) float64 {
	switch dt {
	case Float16:
		return float64(float16.Fromfloat32(float32(v)).Float32())
	case BFloat16:
		return float64(ToBF16(float32(v)).Float32())
	case Float32:
		return float64(float32(v))
	}
	return v
}

func roundAll(v []float64, dt Dtype) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = roundTo(x, dt)
	}
	return out
}

// arr builds an MLX array of dtype dt from float64 data (rounded to dt).
func arr(data []float64, dt Dtype, shape ...int) *Array {
	switch dt {
	case Float16:
		v := make([]float16.Float16, len(data))
		for i, x := range data {
			v[i] = float16.Fromfloat32(float32(x))
		}
		return FromFloat16s(v, shape...)
	case BFloat16:
		v := make([]BF16, len(data))
		for i, x := range data {
			v[i] = ToBF16(float32(x))
		}
		return FromBF16s(v, shape...)
	case Int32:
		v := make([]int32, len(data))
		for i, x := range data {
			v[i] = int32(x)
		}
		return FromInt32s(v, shape...)
	}
	v := make([]float32, len(data))
	for i, x := range data {
		v[i] = float32(x)
	}
	a := FromFloat32s(v, shape...)
	if dt != Float32 {
		return AsType(a, dt)
	}
	return a
}

func f32(t tensor) *Array { return arr(t.data, Float32, t.shape...) }

func ints(v ...int) *Array {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return FromInt32s(out, len(v))
}

func intsShaped(v []int, shape ...int) *Array {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return FromInt32s(out, shape...)
}

// values reads a as float64 and checks its shape.
func values(a *Array, shape []int) ([]float64, error) {
	if err := a.Err(); err != nil {
		return nil, err
	}
	if !equalInts(a.Shape(), shape) {
		return nil, fmt.Errorf("shape %v, want %v", a.Shape(), shape)
	}
	return a.Float64s()
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// closeTo reports the first element where |got-want| > atol + rtol*|want|.
func closeTo(got, want []float64, atol, rtol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d values, want %d", len(got), len(want))
	}
	worst, wi := 0.0, -1
	for i := range got {
		d := math.Abs(got[i] - want[i])
		if math.IsNaN(got[i]) != math.IsNaN(want[i]) || (!math.IsNaN(want[i]) && !(d <= atol+rtol*math.Abs(want[i]))) {
			if wi < 0 || d > worst {
				worst, wi = d, i
			}
		}
	}
	if wi >= 0 {
		return fmt.Errorf("element %d: got %.8g, want %.8g (|diff| %.3g > atol %.3g + rtol %.3g·|want|)",
			wi, got[wi], want[wi], worst, atol, rtol)
	}
	return nil
}

// check compares a with a float64 reference.
func check(a *Array, want tensor, atol, rtol float64) error {
	got, err := values(a, want.shape)
	if err != nil {
		return err
	}
	return closeTo(got, want.data, atol, rtol)
}

// checkExact compares integer-valued results exactly.
func checkExact(a *Array, shape []int, want []float64) error {
	return check(a, tensor{shape: shape, data: want}, 0, 0)
}

// errMentions asserts that err is not nil and mentions every word.
func errMentions(err error, words ...string) error {
	if err == nil {
		return errors.New("no error")
	}
	for _, w := range words {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(w)) {
			return fmt.Errorf("error %q does not mention %q", err, w)
		}
	}
	return nil
}

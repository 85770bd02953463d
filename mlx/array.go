package mlx

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/x448/float16"
)

// Array is a handle to an MLX array. It is either valid, freed, or holds the
// error of the op that should have produced it.
type Array struct {
	c       C.fgt_array
	shape   []int // cached on first query: an array's shape never changes
	err     error
	scope   *Scope
	cleanup runtime.Cleanup
}

var liveArrays atomic.Int64

// LiveArrays is the number of arrays created and not yet freed.
func LiveArrays() int64 { return liveArrays.Load() }

// Forgotten arrays reclaimed by the GC backstop wait here until the owner
// thread frees them.
var forgotten struct {
	sync.Mutex
	ptrs  []C.fgt_array
	total int64
}

// ForgottenArrays is how many arrays the GC backstop has had to free: each
// one is a missing Free or Scope. Tests assert it stays zero.
func ForgottenArrays() int64 {
	forgotten.Lock()
	defer forgotten.Unlock()
	return forgotten.total
}

func drainForgotten() {
	forgotten.Lock()
	ptrs := forgotten.ptrs
	forgotten.ptrs = nil
	forgotten.Unlock()
	for _, p := range ptrs {
		C.fgt_array_free(p)
		liveArrays.Add(-1)
	}
}

func newArray(c C.fgt_array) *Array {
	a := &Array{c: c}
	liveArrays.Add(1)
	a.cleanup = runtime.AddCleanup(a, func(p C.fgt_array) {
		forgotten.Lock()
		forgotten.ptrs = append(forgotten.ptrs, p)
		forgotten.total++
		forgotten.Unlock()
	}, c)
	// Arrays are only ever created on the owner thread (the shim refuses
	// other threads), so the scope stack needs no lock.
	if n := len(owner.scopes); n > 0 {
		s := owner.scopes[n-1]
		a.scope = s
		s.arrays = append(s.arrays, a)
	}
	return a
}

func errArray(err error) *Array { return &Array{err: err} }

// ErrorArray returns an array that carries err, so code that builds graphs
// in expression form can report a failure through the graph.
func ErrorArray(err error) *Array { return errArray(err) }

// Free releases the array now. Freeing twice, or freeing an error array,
// does nothing.
func (a *Array) Free() {
	if a == nil || a.c == nil {
		return
	}
	a.cleanup.Stop()
	C.fgt_array_free(a.c)
	a.c = nil
	a.scope = nil
	liveArrays.Add(-1)
}

// Err is the error this array carries, if any: the first failed op in the
// graph that produced it, or use after Free.
func (a *Array) Err() error {
	switch {
	case a == nil:
		return errors.New("mlx: nil array")
	case a.err != nil:
		return a.err
	case a.c == nil:
		return errors.New("mlx: use of a freed array")
	}
	return nil
}

// Valid reports whether the array holds data (no error, not freed).
func (a *Array) Valid() bool { return a != nil && a.err == nil && a.c != nil }

// Ndim is the number of dimensions (0 for an invalid array).
func (a *Array) Ndim() int {
	if !a.Valid() {
		return 0
	}
	return len(a.dims())
}

// dims returns the cached shape, fetching it in one call the first time.
// Callers must not modify it.
func (a *Array) dims() []int {
	if a.shape == nil {
		var buf [16]C.int
		n := int(C.fgt_array_shape_n(a.c, &buf[0], 16))
		shape := make([]int, n)
		if n > len(buf) {
			big := make([]C.int, n)
			C.fgt_array_shape(a.c, &big[0])
			for i, v := range big {
				shape[i] = int(v)
			}
		} else {
			for i := range shape {
				shape[i] = int(buf[i])
			}
		}
		a.shape = shape
	}
	return a.shape
}

// Shape is the array's shape (nil for an invalid array).
func (a *Array) Shape() []int {
	if !a.Valid() {
		return nil
	}
	return append([]int{}, a.dims()...)
}

// Dim is the size of axis i; negative i counts from the end.
func (a *Array) Dim(i int) int {
	if !a.Valid() {
		return 0
	}
	s := a.dims()
	if i < 0 {
		i += len(s)
	}
	if i < 0 || i >= len(s) {
		return 0
	}
	return s[i]
}

// Dtype is the element type.
func (a *Array) Dtype() Dtype {
	if !a.Valid() {
		return -1
	}
	return Dtype(C.fgt_array_dtype(a.c))
}

// Size is the number of elements.
func (a *Array) Size() int {
	if !a.Valid() {
		return 0
	}
	return int(C.fgt_array_size(a.c))
}

// NBytes is the size of the array's data in bytes.
func (a *Array) NBytes() int {
	if !a.Valid() {
		return 0
	}
	return int(C.fgt_array_nbytes(a.c))
}

func (a *Array) String() string {
	if err := a.Err(); err != nil {
		return "array(error: " + err.Error() + ")"
	}
	return fmt.Sprintf("array(shape=%v, dtype=%s)", a.Shape(), a.Dtype())
}

func cInts(v []int) (*C.int, C.int) {
	if len(v) == 0 {
		return nil, 0
	}
	out := make([]C.int, len(v))
	for i, x := range v {
		out[i] = C.int(x)
	}
	return &out[0], C.int(len(v))
}

func checkShape(shape []int, n int) error {
	size := 1
	for _, d := range shape {
		if d < 0 || d > math.MaxInt32 {
			return fmt.Errorf("mlx: bad dimension %d in shape %v", d, shape)
		}
		size *= d
	}
	if size != n {
		return fmt.Errorf("mlx: %d values do not fill shape %v (%d elements)", n, shape, size)
	}
	return nil
}

func fromData(ptr unsafe.Pointer, n int, shape []int, dt Dtype) *Array {
	if err := checkShape(shape, n); err != nil {
		return errArray(err)
	}
	cs, nd := cInts(shape)
	var out C.fgt_array
	if C.fgt_array_from_data(ptr, cs, nd, C.int(dt), &out) != 0 {
		return errArray(fmt.Errorf("mlx: new %s array %v: %w", dt, shape, lastError()))
	}
	return newArray(out)
}

func slicePtr[T any](v []T) unsafe.Pointer {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Pointer(&v[0])
}

// FromFloat32s builds a float32 array of the given shape (a scalar when shape
// is empty). The data is copied.
func FromFloat32s(v []float32, shape ...int) *Array {
	return fromData(slicePtr(v), len(v), shape, Float32)
}

// FromInt32s builds an int32 array.
func FromInt32s(v []int32, shape ...int) *Array { return fromData(slicePtr(v), len(v), shape, Int32) }

// FromUint32s builds a uint32 array.
func FromUint32s(v []uint32, shape ...int) *Array {
	return fromData(slicePtr(v), len(v), shape, Uint32)
}

// FromBools builds a bool array.
func FromBools(v []bool, shape ...int) *Array { return fromData(slicePtr(v), len(v), shape, Bool) }

// FromFloat16s builds a float16 array.
func FromFloat16s(v []float16.Float16, shape ...int) *Array {
	return fromData(slicePtr(v), len(v), shape, Float16)
}

// BF16 is a bfloat16 value: the top 16 bits of a float32.
type BF16 uint16

// ToBF16 rounds f to the nearest bfloat16, ties to even.
func ToBF16(f float32) BF16 {
	b := math.Float32bits(f)
	if f != f { // NaN stays NaN
		return BF16(b>>16 | 0x40)
	}
	b += 0x7fff + (b>>16)&1
	return BF16(b >> 16)
}

// Float32 widens a bfloat16 value.
func (b BF16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// FromBF16s builds a bfloat16 array.
func FromBF16s(v []BF16, shape ...int) *Array { return fromData(slicePtr(v), len(v), shape, BFloat16) }

// Scalar builds a 0-d array of dtype dt holding v.
func Scalar(v float64, dt Dtype) *Array {
	var out C.fgt_array
	if C.fgt_array_scalar(C.double(v), C.int(dt), &out) != 0 {
		return errArray(fmt.Errorf("mlx: scalar: %w", lastError()))
	}
	return newArray(out)
}

func read[T any](a *Array, dt Dtype) ([]T, error) {
	if err := a.Err(); err != nil {
		return nil, err
	}
	src := a
	if a.Dtype() != dt {
		src = AsType(a, dt)
		defer src.Free()
		if err := src.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]T, src.Size())
	if C.fgt_array_read(src.c, slicePtr(out), C.size_t(len(out)*dt.Size())) != 0 {
		return nil, fmt.Errorf("mlx: read %s: %w", a, lastError())
	}
	return out, nil
}

// Float32s evaluates the array and returns its elements as float32, in
// row-major order, converting from its dtype if needed.
func (a *Array) Float32s() ([]float32, error) { return read[float32](a, Float32) }

// Float64s is Float32s widened to float64 (MLX computes it in float32).
func (a *Array) Float64s() ([]float64, error) {
	f, err := a.Float32s()
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v)
	}
	return out, nil
}

// Int32s returns the elements as int32.
func (a *Array) Int32s() ([]int32, error) { return read[int32](a, Int32) }

// Uint32s returns the elements as uint32.
func (a *Array) Uint32s() ([]uint32, error) { return read[uint32](a, Uint32) }

// Int64s returns the elements as int64.
func (a *Array) Int64s() ([]int64, error) { return read[int64](a, Int64) }

// Bools returns the elements as bool.
func (a *Array) Bools() ([]bool, error) { return read[bool](a, Bool) }

// Float16s returns the elements as float16.
func (a *Array) Float16s() ([]float16.Float16, error) { return read[float16.Float16](a, Float16) }

// BF16s returns the elements as bfloat16.
func (a *Array) BF16s() ([]BF16, error) { return read[BF16](a, BFloat16) }

// Item returns the value of a one-element array as float64. It reads the
// array in its own dtype, so no new op is queued behind pending work.
func (a *Array) Item() (float64, error) {
	if err := a.Err(); err != nil {
		return 0, err
	}
	if n := a.Size(); n != 1 {
		return 0, fmt.Errorf("mlx: item of an array with %d elements", n)
	}
	switch a.Dtype() {
	case Float32:
		v, err := read[float32](a, Float32)
		return first(v, err)
	case Int32:
		v, err := read[int32](a, Int32)
		return first(v, err)
	case Uint32:
		v, err := read[uint32](a, Uint32)
		return first(v, err)
	case Int64:
		v, err := read[int64](a, Int64)
		return first(v, err)
	}
	v, err := a.Float32s()
	return first(v, err)
}

func first[T float32 | int32 | uint32 | int64](v []T, err error) (float64, error) {
	if err != nil {
		return 0, err
	}
	return float64(v[0]), nil
}

// Bytes returns the raw row-major bytes of the array in its own dtype.
func (a *Array) Bytes() ([]byte, error) {
	if err := a.Err(); err != nil {
		return nil, err
	}
	out := make([]byte, a.NBytes())
	if C.fgt_array_read(a.c, slicePtr(out), C.size_t(len(out))) != 0 {
		return nil, fmt.Errorf("mlx: read %s: %w", a, lastError())
	}
	return out, nil
}

func shapeString(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ",") + ")"
}

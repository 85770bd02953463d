package mlx

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// The Dtype values (dtype.go) are shim.h's dtype codes. Each line indexes a
// one-element array with the difference, so a mismatch fails to compile.
var (
	_ = [1]struct{}{}[Bool-C.FGT_BOOL]
	_ = [1]struct{}{}[Uint8-C.FGT_UINT8]
	_ = [1]struct{}{}[Uint16-C.FGT_UINT16]
	_ = [1]struct{}{}[Uint32-C.FGT_UINT32]
	_ = [1]struct{}{}[Uint64-C.FGT_UINT64]
	_ = [1]struct{}{}[Int8-C.FGT_INT8]
	_ = [1]struct{}{}[Int16-C.FGT_INT16]
	_ = [1]struct{}{}[Int32-C.FGT_INT32]
	_ = [1]struct{}{}[Int64-C.FGT_INT64]
	_ = [1]struct{}{}[Float16-C.FGT_FLOAT16]
	_ = [1]struct{}{}[BFloat16-C.FGT_BFLOAT16]
	_ = [1]struct{}{}[Float32-C.FGT_FLOAT32]
	_ = [1]struct{}{}[Float64-C.FGT_FLOAT64]
	_ = [1]struct{}{}[Complex64-C.FGT_COMPLEX64]
)

// inputsErr returns the first error among the inputs of op name.
func inputsErr(name string, inputs ...*Array) error {
	for _, x := range inputs {
		if x == nil {
			return fmt.Errorf("mlx.%s: nil array", name)
		}
		if x.err != nil {
			return x.err
		}
		if x.c == nil {
			return fmt.Errorf("mlx.%s: use of a freed array", name)
		}
	}
	return nil
}

func result(name string, rc C.int, out C.fgt_array) *Array {
	if rc != 0 {
		return errArray(fmt.Errorf("mlx.%s: %w", name, lastError()))
	}
	return newArray(out)
}

func vecResult(name string, rc C.int, v C.fgt_vec) ([]*Array, error) {
	if rc != 0 {
		return nil, fmt.Errorf("mlx.%s: %w", name, lastError())
	}
	return takeVec(v), nil
}

// takeVec wraps the arrays of a shim vector and frees the vector itself.
func takeVec(v C.fgt_vec) []*Array {
	if v.n == 0 {
		C.fgt_vec_release(v)
		return nil
	}
	ptrs := unsafe.Slice(v.data, int(v.n))
	out := make([]*Array, len(ptrs))
	for i, p := range ptrs {
		out[i] = newArray(p)
	}
	C.fgt_vec_release(v)
	return out
}

func cArrays(as []*Array) *C.fgt_array {
	if len(as) == 0 {
		return nil
	}
	p := (*C.fgt_array)(C.malloc(C.size_t(len(as)) * C.size_t(unsafe.Sizeof(C.fgt_array(nil)))))
	s := unsafe.Slice(p, len(as))
	for i, a := range as {
		s[i] = a.c
	}
	return p
}

func cOpt(a *Array) C.fgt_array {
	if a == nil {
		return nil
	}
	return a.c
}

// Unary op codes: shim.h's enum fgt_unary_opcode.
const (
	opSqrt         = C.FGT_OP_SQRT
	opRsqrt        = C.FGT_OP_RSQRT
	opExp          = C.FGT_OP_EXP
	opLog          = C.FGT_OP_LOG
	opNegative     = C.FGT_OP_NEGATIVE
	opAbs          = C.FGT_OP_ABS
	opSigmoid      = C.FGT_OP_SIGMOID
	opStopGradient = C.FGT_OP_STOP_GRADIENT
	opSquare       = C.FGT_OP_SQUARE
	opSin          = C.FGT_OP_SIN
	opCos          = C.FGT_OP_COS
	opTanh         = C.FGT_OP_TANH
	opFloor        = C.FGT_OP_FLOOR
	opLogicalNot   = C.FGT_OP_LOGICAL_NOT
	opErf          = C.FGT_OP_ERF
	opSilu         = C.FGT_OP_SILU
	opLog1p        = C.FGT_OP_LOG1P
	opIsNaN        = C.FGT_OP_ISNAN
	opIsInf        = C.FGT_OP_ISINF
	opContiguous   = C.FGT_OP_CONTIGUOUS
)

var unaryNames = [...]string{
	opSqrt:         "Sqrt",
	opRsqrt:        "Rsqrt",
	opExp:          "Exp",
	opLog:          "Log",
	opNegative:     "Negative",
	opAbs:          "Abs",
	opSigmoid:      "Sigmoid",
	opStopGradient: "StopGradient",
	opSquare:       "Square",
	opSin:          "Sin",
	opCos:          "Cos",
	opTanh:         "Tanh",
	opFloor:        "Floor",
	opLogicalNot:   "LogicalNot",
	opErf:          "Erf",
	opSilu:         "Silu",
	opLog1p:        "Log1p",
	opIsNaN:        "IsNaN",
	opIsInf:        "IsInf",
	opContiguous:   "Contiguous",
}

func unary(op int, a *Array) *Array {
	if err := inputsErr(unaryNames[op], a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result(unaryNames[op], C.fgt_unary(C.int(op), a.c, &out), out)
}

// Sqrt is the elementwise square root.
func Sqrt(a *Array) *Array { return unary(opSqrt, a) }

// Rsqrt is the elementwise reciprocal square root.
func Rsqrt(a *Array) *Array { return unary(opRsqrt, a) }

// Exp is the elementwise exponential.
func Exp(a *Array) *Array { return unary(opExp, a) }

// Log is the elementwise natural logarithm.
func Log(a *Array) *Array { return unary(opLog, a) }

// Negative is -a.
func Negative(a *Array) *Array { return unary(opNegative, a) }

// Abs is |a|.
func Abs(a *Array) *Array { return unary(opAbs, a) }

// Sigmoid is 1/(1+exp(-a)).
func Sigmoid(a *Array) *Array { return unary(opSigmoid, a) }

// StopGradient returns a with no gradient flowing through it.
func StopGradient(a *Array) *Array { return unary(opStopGradient, a) }

// Square is a*a.
func Square(a *Array) *Array { return unary(opSquare, a) }

// Sin is the elementwise sine.
func Sin(a *Array) *Array { return unary(opSin, a) }

// Cos is the elementwise cosine.
func Cos(a *Array) *Array { return unary(opCos, a) }

// Tanh is the elementwise hyperbolic tangent.
func Tanh(a *Array) *Array { return unary(opTanh, a) }

// Floor rounds down.
func Floor(a *Array) *Array { return unary(opFloor, a) }

// LogicalNot is !a.
func LogicalNot(a *Array) *Array { return unary(opLogicalNot, a) }

// Erf is the error function.
func Erf(a *Array) *Array { return unary(opErf, a) }

// Silu is a*sigmoid(a), the SwiGLU gate activation.
func Silu(a *Array) *Array { return unary(opSilu, a) }

// Log1p is log(1+a).
func Log1p(a *Array) *Array { return unary(opLog1p, a) }

// IsNaN marks NaN elements.
func IsNaN(a *Array) *Array { return unary(opIsNaN, a) }

// IsInf marks infinite elements.
func IsInf(a *Array) *Array { return unary(opIsInf, a) }

// Contiguous returns a row-contiguous copy when a is not already one.
func Contiguous(a *Array) *Array { return unary(opContiguous, a) }

// Binary op codes: shim.h's enum fgt_binary_opcode.
const (
	opAdd          = C.FGT_OP_ADD
	opSubtract     = C.FGT_OP_SUBTRACT
	opMultiply     = C.FGT_OP_MULTIPLY
	opDivide       = C.FGT_OP_DIVIDE
	opPower        = C.FGT_OP_POWER
	opMaximum      = C.FGT_OP_MAXIMUM
	opMinimum      = C.FGT_OP_MINIMUM
	opMatmul       = C.FGT_OP_MATMUL
	opEqual        = C.FGT_OP_EQUAL
	opNotEqual     = C.FGT_OP_NOT_EQUAL
	opLess         = C.FGT_OP_LESS
	opLessEqual    = C.FGT_OP_LESS_EQUAL
	opGreater      = C.FGT_OP_GREATER
	opGreaterEqual = C.FGT_OP_GREATER_EQUAL
	opLogicalAnd   = C.FGT_OP_LOGICAL_AND
	opLogicalOr    = C.FGT_OP_LOGICAL_OR
	opFloorDivide  = C.FGT_OP_FLOOR_DIVIDE
	opRemainder    = C.FGT_OP_REMAINDER
)

var binaryNames = [...]string{
	opAdd:          "Add",
	opSubtract:     "Subtract",
	opMultiply:     "Multiply",
	opDivide:       "Divide",
	opPower:        "Power",
	opMaximum:      "Maximum",
	opMinimum:      "Minimum",
	opMatmul:       "Matmul",
	opEqual:        "Equal",
	opNotEqual:     "NotEqual",
	opLess:         "Less",
	opLessEqual:    "LessEqual",
	opGreater:      "Greater",
	opGreaterEqual: "GreaterEqual",
	opLogicalAnd:   "LogicalAnd",
	opLogicalOr:    "LogicalOr",
	opFloorDivide:  "FloorDivide",
	opRemainder:    "Remainder",
}

func binary(op int, a, b *Array) *Array {
	if err := inputsErr(binaryNames[op], a, b); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result(binaryNames[op], C.fgt_binary(C.int(op), a.c, b.c, &out), out)
}

// Add is a+b with broadcasting.
func Add(a, b *Array) *Array { return binary(opAdd, a, b) }

// Subtract is a-b.
func Subtract(a, b *Array) *Array { return binary(opSubtract, a, b) }

// Multiply is a*b.
func Multiply(a, b *Array) *Array { return binary(opMultiply, a, b) }

// Divide is a/b.
func Divide(a, b *Array) *Array { return binary(opDivide, a, b) }

// Power is a**b.
func Power(a, b *Array) *Array { return binary(opPower, a, b) }

// Maximum is the elementwise maximum.
func Maximum(a, b *Array) *Array { return binary(opMaximum, a, b) }

// Minimum is the elementwise minimum.
func Minimum(a, b *Array) *Array { return binary(opMinimum, a, b) }

// Matmul is the matrix product, batched over leading axes.
func Matmul(a, b *Array) *Array { return binary(opMatmul, a, b) }

// Equal is a==b.
func Equal(a, b *Array) *Array { return binary(opEqual, a, b) }

// NotEqual is a!=b.
func NotEqual(a, b *Array) *Array { return binary(opNotEqual, a, b) }

// Less is a<b.
func Less(a, b *Array) *Array { return binary(opLess, a, b) }

// LessEqual is a<=b.
func LessEqual(a, b *Array) *Array { return binary(opLessEqual, a, b) }

// Greater is a>b.
func Greater(a, b *Array) *Array { return binary(opGreater, a, b) }

// GreaterEqual is a>=b.
func GreaterEqual(a, b *Array) *Array { return binary(opGreaterEqual, a, b) }

// LogicalAnd is a&&b.
func LogicalAnd(a, b *Array) *Array { return binary(opLogicalAnd, a, b) }

// LogicalOr is a||b.
func LogicalOr(a, b *Array) *Array { return binary(opLogicalOr, a, b) }

// FloorDivide is floor(a/b).
func FloorDivide(a, b *Array) *Array { return binary(opFloorDivide, a, b) }

// Remainder is a mod b.
func Remainder(a, b *Array) *Array { return binary(opRemainder, a, b) }

// Reduction op codes: shim.h's enum fgt_reduce_opcode.
const (
	opSum       = C.FGT_OP_SUM
	opMean      = C.FGT_OP_MEAN
	opMax       = C.FGT_OP_MAX
	opMin       = C.FGT_OP_MIN
	opLogSumExp = C.FGT_OP_LOGSUMEXP
	opArgmax    = C.FGT_OP_ARGMAX
	opArgmin    = C.FGT_OP_ARGMIN
	opProd      = C.FGT_OP_PROD
	opAll       = C.FGT_OP_ALL
	opAny       = C.FGT_OP_ANY
)

var reduceNames = [...]string{
	opSum:       "Sum",
	opMean:      "Mean",
	opMax:       "Max",
	opMin:       "Min",
	opLogSumExp: "LogSumExp",
	opArgmax:    "Argmax",
	opArgmin:    "Argmin",
	opProd:      "Prod",
	opAll:       "All",
	opAny:       "Any",
}

func reduce(op int, a *Array, axes []int, all, keepdims bool) *Array {
	if err := inputsErr(reduceNames[op], a); err != nil {
		return errArray(err)
	}
	ax, n := cInts(axes)
	var out C.fgt_array
	return result(reduceNames[op], C.fgt_reduce(C.int(op), a.c, ax, n, cBool(all), cBool(keepdims), &out), out)
}

func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Sum reduces over axes (all axes when none are given).
func Sum(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opSum, a, axes, len(axes) == 0, keepdims)
}

// Mean reduces over axes (all axes when none are given).
func Mean(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opMean, a, axes, len(axes) == 0, keepdims)
}

// Max reduces over axes (all axes when none are given).
func Max(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opMax, a, axes, len(axes) == 0, keepdims)
}

// Min reduces over axes (all axes when none are given).
func Min(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opMin, a, axes, len(axes) == 0, keepdims)
}

// Prod reduces over axes (all axes when none are given).
func Prod(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opProd, a, axes, len(axes) == 0, keepdims)
}

// All is true where every element over axes is true.
func All(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opAll, a, axes, len(axes) == 0, keepdims)
}

// Any is true where some element over axes is true.
func Any(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opAny, a, axes, len(axes) == 0, keepdims)
}

// LogSumExp is log(sum(exp(a))) over axes, computed stably.
func LogSumExp(a *Array, keepdims bool, axes ...int) *Array {
	return reduce(opLogSumExp, a, axes, len(axes) == 0, keepdims)
}

// Argmax is the index of the maximum along axis.
func Argmax(a *Array, axis int, keepdims bool) *Array {
	return reduce(opArgmax, a, []int{axis}, false, keepdims)
}

// Argmin is the index of the minimum along axis.
func Argmin(a *Array, axis int, keepdims bool) *Array {
	return reduce(opArgmin, a, []int{axis}, false, keepdims)
}

func axisOp(op int, name string, a *Array, axis int) *Array {
	if err := inputsErr(name, a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result(name, C.fgt_axis_op(C.int(op), a.c, C.int(axis), &out), out)
}

// Sort sorts along axis.
func Sort(a *Array, axis int) *Array { return axisOp(C.FGT_OP_SORT, "Sort", a, axis) }

// Argsort returns the indices that sort a along axis.
func Argsort(a *Array, axis int) *Array { return axisOp(C.FGT_OP_ARGSORT, "Argsort", a, axis) }

// LogSoftmax is a - logsumexp(a) along axis.
func LogSoftmax(a *Array, axis int) *Array {
	return axisOp(C.FGT_OP_LOG_SOFTMAX, "LogSoftmax", a, axis)
}

// Softmax along axes, with precise=true accumulating in float32.
func Softmax(a *Array, precise bool, axes ...int) *Array {
	if err := inputsErr("Softmax", a); err != nil {
		return errArray(err)
	}
	if len(axes) == 0 {
		axes = []int{-1}
	}
	ax, n := cInts(axes)
	var out C.fgt_array
	return result("Softmax", C.fgt_softmax(a.c, ax, n, cBool(precise), &out), out)
}

// Where selects a where cond is true, b elsewhere.
func Where(cond, a, b *Array) *Array {
	if err := inputsErr("Where", cond, a, b); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Where", C.fgt_where(cond.c, a.c, b.c, &out), out)
}

// Clip limits a to [lo, hi]; either bound may be nil.
func Clip(a, lo, hi *Array) *Array {
	in := []*Array{a}
	if lo != nil {
		in = append(in, lo)
	}
	if hi != nil {
		in = append(in, hi)
	}
	if err := inputsErr("Clip", in...); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Clip", C.fgt_clip(a.c, cOpt(lo), cOpt(hi), &out), out)
}

// Linear is x·wᵀ (+ bias when not nil): a linear layer with w stored
// (out, in), in one call.
func Linear(x, w, bias *Array) *Array {
	in := []*Array{x, w}
	if bias != nil {
		in = append(in, bias)
	}
	if err := inputsErr("Linear", in...); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Linear", C.fgt_linear(x.c, w.c, cOpt(bias), &out), out)
}

// Addmm is alpha*(a@b) + beta*c.
func Addmm(c, a, b *Array, alpha, beta float32) *Array {
	if err := inputsErr("Addmm", c, a, b); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Addmm", C.fgt_addmm(c.c, a.c, b.c, C.float(alpha), C.float(beta), &out), out)
}

// AsType converts a to dtype dt.
func AsType(a *Array, dt Dtype) *Array {
	if err := inputsErr("AsType", a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("AsType", C.fgt_astype(a.c, C.int(dt), &out), out)
}

// Reshape gives a a new shape with the same number of elements; one
// dimension may be -1.
func Reshape(a *Array, shape ...int) *Array {
	if err := inputsErr("Reshape", a); err != nil {
		return errArray(err)
	}
	s, n := cInts(shape)
	var out C.fgt_array
	return result("Reshape", C.fgt_reshape(a.c, s, n, &out), out)
}

// Transpose permutes the axes (reverses them when perm is empty).
func Transpose(a *Array, perm ...int) *Array {
	if err := inputsErr("Transpose", a); err != nil {
		return errArray(err)
	}
	p, n := cInts(perm)
	var out C.fgt_array
	return result("Transpose", C.fgt_transpose(a.c, p, n, &out), out)
}

// SwapAxes swaps two axes.
func SwapAxes(a *Array, ax1, ax2 int) *Array {
	if err := inputsErr("SwapAxes", a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("SwapAxes", C.fgt_swapaxes(a.c, C.int(ax1), C.int(ax2), &out), out)
}

// ExpandDims inserts axes of size one.
func ExpandDims(a *Array, axes ...int) *Array {
	if err := inputsErr("ExpandDims", a); err != nil {
		return errArray(err)
	}
	p, n := cInts(axes)
	var out C.fgt_array
	return result("ExpandDims", C.fgt_expand_dims(a.c, p, n, &out), out)
}

// Squeeze removes axes of size one (all of them when none are given).
func Squeeze(a *Array, axes ...int) *Array {
	if err := inputsErr("Squeeze", a); err != nil {
		return errArray(err)
	}
	p, n := cInts(axes)
	var out C.fgt_array
	return result("Squeeze", C.fgt_squeeze(a.c, p, n, &out), out)
}

// BroadcastTo broadcasts a to shape.
func BroadcastTo(a *Array, shape ...int) *Array {
	if err := inputsErr("BroadcastTo", a); err != nil {
		return errArray(err)
	}
	p, n := cInts(shape)
	var out C.fgt_array
	return result("BroadcastTo", C.fgt_broadcast_to(a.c, p, n, &out), out)
}

func joinOp(name string, as []*Array, axis int, stack bool) *Array {
	if len(as) == 0 {
		return errArray(fmt.Errorf("mlx.%s: no arrays", name))
	}
	if err := inputsErr(name, as...); err != nil {
		return errArray(err)
	}
	p := cArrays(as)
	defer C.free(unsafe.Pointer(p))
	var out C.fgt_array
	var rc C.int
	if stack {
		rc = C.fgt_stack(p, C.int(len(as)), C.int(axis), &out)
	} else {
		rc = C.fgt_concatenate(p, C.int(len(as)), C.int(axis), &out)
	}
	return result(name, rc, out)
}

// Concatenate joins arrays along an existing axis.
func Concatenate(as []*Array, axis int) *Array { return joinOp("Concatenate", as, axis, false) }

// Stack joins arrays along a new axis.
func Stack(as []*Array, axis int) *Array { return joinOp("Stack", as, axis, true) }

// Split cuts a into n equal parts along axis.
func Split(a *Array, n, axis int) ([]*Array, error) {
	if err := inputsErr("Split", a); err != nil {
		return nil, err
	}
	var v C.fgt_vec
	return vecResult("Split", C.fgt_split_sections(a.c, C.int(n), C.int(axis), &v), v)
}

// SplitAt cuts a along axis at the given indices.
func SplitAt(a *Array, indices []int, axis int) ([]*Array, error) {
	if err := inputsErr("SplitAt", a); err != nil {
		return nil, err
	}
	p, n := cInts(indices)
	var v C.fgt_vec
	return vecResult("SplitAt", C.fgt_split_indices(a.c, p, n, C.int(axis), &v), v)
}

func sliceArgs(name string, a *Array, start, stop, strides []int) ([]int, error) {
	nd := a.Ndim()
	if len(start) != nd || len(stop) != nd {
		return nil, fmt.Errorf("mlx.%s: start %v and stop %v must have one entry per axis of %s", name, start, stop, shapeString(a.Shape()))
	}
	if strides == nil {
		strides = make([]int, nd)
		for i := range strides {
			strides[i] = 1
		}
	}
	if len(strides) != nd {
		return nil, fmt.Errorf("mlx.%s: strides %v must have one entry per axis", name, strides)
	}
	for _, st := range strides {
		if st == 0 {
			// MLX divides by it unchecked (SIGFPE).
			return nil, fmt.Errorf("mlx.%s: zero stride in %v", name, strides)
		}
	}
	return strides, nil
}

// Slice takes a[start:stop:strides] (strides nil means 1 on every axis).
func Slice(a *Array, start, stop, strides []int) *Array {
	if err := inputsErr("Slice", a); err != nil {
		return errArray(err)
	}
	strides, err := sliceArgs("Slice", a, start, stop, strides)
	if err != nil {
		return errArray(err)
	}
	s0, n := cInts(start)
	s1, _ := cInts(stop)
	s2, _ := cInts(strides)
	var out C.fgt_array
	return result("Slice", C.fgt_slice(a.c, s0, s1, s2, n, &out), out)
}

// SliceAxis takes a[start:stop] along one axis.
func SliceAxis(a *Array, axis, start, stop int) *Array {
	shape := a.Shape()
	if axis < 0 {
		axis += len(shape)
	}
	if axis < 0 || axis >= len(shape) {
		if err := inputsErr("SliceAxis", a); err != nil {
			return errArray(err)
		}
		return errArray(fmt.Errorf("mlx.SliceAxis: axis %d out of range for shape %v", axis, shape))
	}
	lo := make([]int, len(shape))
	hi := append([]int(nil), shape...)
	lo[axis], hi[axis] = start, stop
	return Slice(a, lo, hi, nil)
}

// SliceUpdate returns src with src[start:stop:strides] replaced by update.
func SliceUpdate(src, update *Array, start, stop, strides []int) *Array {
	if err := inputsErr("SliceUpdate", src, update); err != nil {
		return errArray(err)
	}
	strides, err := sliceArgs("SliceUpdate", src, start, stop, strides)
	if err != nil {
		return errArray(err)
	}
	s0, n := cInts(start)
	s1, _ := cInts(stop)
	s2, _ := cInts(strides)
	var out C.fgt_array
	return result("SliceUpdate", C.fgt_slice_update(src.c, update.c, s0, s1, s2, n, &out), out)
}

// Take gathers elements of a at indices along axis.
func Take(a, indices *Array, axis int) *Array {
	if err := inputsErr("Take", a, indices); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Take", C.fgt_take(a.c, indices.c, C.int(axis), 1, &out), out)
}

// TakeFlat gathers elements of the flattened a.
func TakeFlat(a, indices *Array) *Array {
	if err := inputsErr("TakeFlat", a, indices); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("TakeFlat", C.fgt_take(a.c, indices.c, 0, 0, &out), out)
}

// TakeAlongAxis gathers a[..., indices, ...] along axis, index by index.
func TakeAlongAxis(a, indices *Array, axis int) *Array {
	if err := inputsErr("TakeAlongAxis", a, indices); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("TakeAlongAxis", C.fgt_take_along_axis(a.c, indices.c, C.int(axis), &out), out)
}

// PutAlongAxis scatters values into a at indices along axis.
func PutAlongAxis(a, indices, values *Array, axis int) *Array {
	if err := inputsErr("PutAlongAxis", a, indices, values); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("PutAlongAxis", C.fgt_put_along_axis(a.c, indices.c, values.c, C.int(axis), &out), out)
}

// ArgPartition returns indices that partition a around its kth element.
func ArgPartition(a *Array, kth, axis int) *Array {
	if err := inputsErr("ArgPartition", a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("ArgPartition", C.fgt_argpartition(a.c, C.int(kth), C.int(axis), &out), out)
}

// Cumsum is the cumulative sum along axis.
func Cumsum(a *Array, axis int, reverse, inclusive bool) *Array {
	if err := inputsErr("Cumsum", a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Cumsum", C.fgt_cumsum(a.c, C.int(axis), cBool(reverse), cBool(inclusive), &out), out)
}

// Arange is [start, stop) with step, in dtype dt.
func Arange(start, stop, step float64, dt Dtype) *Array {
	var out C.fgt_array
	return result("Arange", C.fgt_arange(C.double(start), C.double(stop), C.double(step), C.int(dt), &out), out)
}

// Full is an array of shape filled with v.
func Full(v float64, dt Dtype, shape ...int) *Array {
	val := Scalar(v, dt)
	defer val.Free()
	if err := val.Err(); err != nil {
		return errArray(err)
	}
	s, n := cInts(shape)
	var out C.fgt_array
	return result("Full", C.fgt_full(s, n, val.c, C.int(dt), &out), out)
}

// Zeros is Full(0).
func Zeros(dt Dtype, shape ...int) *Array { return Full(0, dt, shape...) }

// Ones is Full(1).
func Ones(dt Dtype, shape ...int) *Array { return Full(1, dt, shape...) }

// Tril zeroes the elements above diagonal k.
func Tril(a *Array, k int) *Array {
	if err := inputsErr("Tril", a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Tril", C.fgt_tri(a.c, C.int(k), 0, &out), out)
}

// Triu zeroes the elements below diagonal k.
func Triu(a *Array, k int) *Array {
	if err := inputsErr("Triu", a); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Triu", C.fgt_tri(a.c, C.int(k), 1, &out), out)
}

// AddScalar is a + v, with v in a's dtype.
func AddScalar(a *Array, v float64) *Array {
	s := Scalar(v, a.Dtype())
	defer s.Free()
	return Add(a, s)
}

// MulScalar is a * v, with v in a's dtype.
func MulScalar(a *Array, v float64) *Array {
	s := Scalar(v, a.Dtype())
	defer s.Free()
	return Multiply(a, s)
}

// ---- Batched generation (serve, issue 13) ----------------------------------
// Ops for decoding many sequences in one batch, each at its own position.

// RopeOffsets is Rope with one starting position per batch row: offsets is
// an integer array of shape (B,) for x of shape (B, ..., L, D), and row b's
// positions are offsets[b], offsets[b]+1, ... along L.
func RopeOffsets(x *Array, r RoPE, offsets *Array) *Array {
	in := []*Array{x, offsets}
	if r.Freqs != nil {
		in = append(in, r.Freqs)
	}
	if err := inputsErr("RopeOffsets", in...); err != nil {
		return errArray(err)
	}
	scale := r.Scale
	if scale == 0 {
		scale = 1
	}
	var out C.fgt_array
	rc := C.fgt_rope(x.c, C.int(r.Dims), cBool(r.Traditional), C.float(r.Base), cBool(r.Freqs == nil),
		C.float(scale), 0, offsets.c, cOpt(r.Freqs), &out)
	return result("RopeOffsets", rc, out)
}

package mlx

/*
#include "shim.h"
*/
import "C"

import "fmt"

// Quantized is an affine-quantized matrix: W ≈ scales·q + biases per group
// of GroupSize elements along the last axis.
type Quantized struct {
	Weight, Scales, Biases *Array
	GroupSize, Bits        int
}

// Quantize quantizes w (rows, cols) with the given group size and bits.
func Quantize(w *Array, groupSize, bits int) (Quantized, error) {
	if err := inputsErr("Quantize", w); err != nil {
		return Quantized{}, err
	}
	if groupSize <= 0 {
		// MLX divides by it unchecked (SIGFPE).
		return Quantized{}, fmt.Errorf("mlx.Quantize: group size %d must be positive", groupSize)
	}
	var v C.fgt_vec
	parts, err := vecResult("Quantize", C.fgt_quantize(w.c, C.int(groupSize), C.int(bits), &v), v)
	if err != nil {
		return Quantized{}, err
	}
	if len(parts) != 3 {
		for _, p := range parts {
			p.Free()
		}
		return Quantized{}, fmt.Errorf("mlx.Quantize: got %d outputs, want 3", len(parts))
	}
	return Quantized{Weight: parts[0], Scales: parts[1], Biases: parts[2], GroupSize: groupSize, Bits: bits}, nil
}

// Dequantize rebuilds the floating-point matrix.
func Dequantize(q Quantized) *Array {
	in := []*Array{q.Weight, q.Scales}
	if q.Biases != nil {
		in = append(in, q.Biases)
	}
	if err := inputsErr("Dequantize", in...); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Dequantize", C.fgt_dequantize(q.Weight.c, q.Scales.c, cOpt(q.Biases), C.int(q.GroupSize), C.int(q.Bits), &out), out)
}

// QuantizedMatmul is x·Wᵀ (transpose true, the Linear layout) or x·W.
func QuantizedMatmul(x *Array, q Quantized, transpose bool) *Array {
	in := []*Array{x, q.Weight, q.Scales}
	if q.Biases != nil {
		in = append(in, q.Biases)
	}
	if err := inputsErr("QuantizedMatmul", in...); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	rc := C.fgt_quantized_matmul(x.c, q.Weight.c, q.Scales.c, cOpt(q.Biases), cBool(transpose), C.int(q.GroupSize), C.int(q.Bits), &out)
	return result("QuantizedMatmul", rc, out)
}

// Free frees the three arrays.
func (q Quantized) Free() {
	q.Weight.Free()
	q.Scales.Free()
	q.Biases.Free()
}

package mlx

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import "unsafe"

// RMSNorm is x / sqrt(mean(x²) + eps) * weight over the last axis; weight
// may be nil.
func RMSNorm(x, weight *Array, eps float32) *Array {
	in := []*Array{x}
	if weight != nil {
		in = append(in, weight)
	}
	if err := inputsErr("RMSNorm", in...); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("RMSNorm", C.fgt_rms_norm(x.c, cOpt(weight), C.float(eps), &out), out)
}

// RoPE configures rotary position embeddings for Rope.
type RoPE struct {
	Dims        int     // number of leading feature dims to rotate
	Traditional bool    // rotate interleaved pairs (GGUF layout) instead of halves (HF layout)
	Base        float32 // used when Freqs is nil
	Scale       float32 // position scale, 1 for none
	// Freqs optionally replaces Base with custom frequencies, one per
	// rotated pair (Dims/2): position p turns pair i by p/Freqs[i]. These
	// are the reciprocals of HF's inv_freq (for llama3 scaling, pass
	// 1/inv_freq), as in mlx-lm. Checked by TestRope.
	Freqs *Array
}

// Rope applies rotary embeddings to x of shape (..., L, D), with positions
// offset, offset+1, ... along L.
func Rope(x *Array, r RoPE, offset int) *Array {
	in := []*Array{x}
	if r.Freqs != nil {
		in = append(in, r.Freqs)
	}
	if err := inputsErr("Rope", in...); err != nil {
		return errArray(err)
	}
	scale := r.Scale
	if scale == 0 {
		scale = 1
	}
	var out C.fgt_array
	rc := C.fgt_rope(x.c, C.int(r.Dims), cBool(r.Traditional), C.float(r.Base), cBool(r.Freqs == nil),
		C.float(scale), C.int(offset), nil, cOpt(r.Freqs), &out)
	return result("Rope", rc, out)
}

// Attention masks for ScaledDotProductAttention.
const (
	MaskNone   = ""
	MaskCausal = "causal"
)

// ScaledDotProductAttention is softmax(q·kᵀ·scale + mask)·v over
// (B, heads, L, D) inputs; k and v may have fewer heads than q (GQA). mode is
// MaskNone or MaskCausal; mask, if not nil, is an additive or boolean mask
// (then mode must be MaskNone).
func ScaledDotProductAttention(q, k, v *Array, scale float32, mode string, mask *Array) *Array {
	in := []*Array{q, k, v}
	if mask != nil {
		in = append(in, mask)
		mode = "array"
	}
	if err := inputsErr("ScaledDotProductAttention", in...); err != nil {
		return errArray(err)
	}
	cm := C.CString(mode)
	defer C.free(unsafe.Pointer(cm))
	var out C.fgt_array
	return result("ScaledDotProductAttention", C.fgt_sdpa(q.c, k.c, v.c, C.float(scale), cm, cOpt(mask), &out), out)
}

// CrossEntropy is MLX's fused per-position cross-entropy of logits (..., V)
// against integer targets (...).
func CrossEntropy(logits, targets *Array) *Array {
	if err := inputsErr("CrossEntropy", logits, targets); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("CrossEntropy", C.fgt_cross_entropy(logits.c, targets.c, &out), out)
}

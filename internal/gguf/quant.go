package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Encoders from float32 to the tensor types fungtrain writes, with the
// rounding of llama.cpp's reference code (ggml-quants.c, gguf-py's
// quants.py), and decoders back to float32 for the same types plus Q4_1.
//
//   - F16: IEEE half precision, round to nearest even (overflow to ±Inf).
//   - BF16: the top 16 bits of the float32, round to nearest even; NaNs
//     stay NaN (quiet).
//   - Q8_0: blocks of 32 values; d = max|x|/127 stored as float16, then
//     32 int8 q = round(x/d), rounding halves away from zero. x ≈ d·q.
//   - Q4_0: blocks of 32 values; m is the value of largest magnitude,
//     d = m/-8 stored as float16, q = min(15, trunc(x/d + 8.5)); byte j
//     holds q[j] in its low and q[j+16] in its high nibble. x ≈ d·(q-8).
//   - Q4_1 (decode only): float16 d and m, then nibbles as Q4_0; x ≈ d·q+m.

// Encodable reports whether Encode writes type t.
func Encodable(t TensorType) bool {
	switch t {
	case F32, F16, BF16, Q8_0, Q4_0:
		return true
	}
	return false
}

// EncodedSize is the number of bytes n values take in type t, or an error
// when n is not a whole number of blocks.
func EncodedSize(t TensorType, n int) (int, error) {
	ti, ok := tensorTypes[t]
	if !ok {
		return 0, fmt.Errorf("unknown tensor type %d", uint32(t))
	}
	if int64(n)%ti.blockSize != 0 {
		return 0, fmt.Errorf("%d values are not whole %s blocks of %d", n, t, ti.blockSize)
	}
	return int(int64(n) / ti.blockSize * ti.typeSize), nil
}

// Encode appends src encoded as type t to dst.
func Encode(dst []byte, t TensorType, src []float32) ([]byte, error) {
	size, err := EncodedSize(t, len(src))
	if err != nil {
		return dst, err
	}
	if !Encodable(t) {
		return dst, fmt.Errorf("cannot encode %s (F32, F16, BF16, Q8_0 and Q4_0 can be written)", t)
	}
	n := len(dst)
	dst = append(dst, make([]byte, size)...)
	out := dst[n:]
	le := binary.LittleEndian
	switch t {
	case F32:
		for i, x := range src {
			le.PutUint32(out[4*i:], math.Float32bits(x))
		}
	case F16:
		for i, x := range src {
			le.PutUint16(out[2*i:], uint16(float16.Fromfloat32(x)))
		}
	case BF16:
		for i, x := range src {
			le.PutUint16(out[2*i:], bf16Bits(x))
		}
	case Q8_0:
		for b := 0; b < len(src)/32; b++ {
			quantizeQ8_0(out[34*b:34*b+34], src[32*b:32*b+32])
		}
	case Q4_0:
		for b := 0; b < len(src)/32; b++ {
			quantizeQ4_0(out[18*b:18*b+18], src[32*b:32*b+32])
		}
	}
	return dst, nil
}

// bf16Bits rounds x to bfloat16 (nearest even); a NaN stays a quiet NaN.
func bf16Bits(x float32) uint16 {
	u := math.Float32bits(x)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// roundAway rounds half away from zero (C's roundf).
func roundAway(x float32) float32 { return float32(math.Round(float64(x))) }

func quantizeQ8_0(out []byte, x []float32) {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(out, uint16(float16.Fromfloat32(d)))
	for j, v := range x {
		out[2+j] = byte(int8(roundAway(v * id)))
	}
}

func quantizeQ4_0(out []byte, x []float32) {
	var amax, m float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, m = a, v
		}
	}
	d := m / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(out, uint16(float16.Fromfloat32(d)))
	q := func(v float32) byte {
		// Two separate float32 roundings, as in C without a fused
		// multiply-add: the product, then the sum.
		s := float32(v*id) + 8.5
		return byte(min(15, int8(s)))
	}
	for j := 0; j < 16; j++ {
		out[2+j] = q(x[j]) | q(x[j+16])<<4
	}
}

// Decode turns n values of type t (F32, F16, BF16, Q8_0, Q4_0 or Q4_1)
// back into float32.
func Decode(t TensorType, src []byte, n int) ([]float32, error) {
	size, err := EncodedSize(t, n)
	if err != nil {
		return nil, err
	}
	if len(src) != size {
		return nil, fmt.Errorf("decode %s: %d bytes for %d values, want %d", t, len(src), n, size)
	}
	le := binary.LittleEndian
	half := func(b []byte) float32 { return float16.Frombits(le.Uint16(b)).Float32() }
	out := make([]float32, n)
	switch t {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(src[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = half(src[2*i:])
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(le.Uint16(src[2*i:])) << 16)
		}
	case Q8_0:
		for b := 0; b < n/32; b++ {
			blk := src[34*b:]
			d := half(blk)
			for j := 0; j < 32; j++ {
				out[32*b+j] = d * float32(int8(blk[2+j]))
			}
		}
	case Q4_0, Q4_1:
		bs := int(t.TypeSize())
		for b := 0; b < n/32; b++ {
			blk := src[bs*b:]
			d := half(blk)
			if t == Q4_0 { // x = (q-8)·d, as ggml computes it
				for j, q := range blk[2:18] {
					out[32*b+j] = float32(int(q&15)-8) * d
					out[32*b+j+16] = float32(int(q>>4)-8) * d
				}
				continue
			}
			m := half(blk[2:])
			for j, q := range blk[4:20] {
				out[32*b+j] = float32(q&15)*d + m
				out[32*b+j+16] = float32(q>>4)*d + m
			}
		}
	default:
		return nil, fmt.Errorf("cannot decode %s (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 can be read)", t)
	}
	return out, nil
}

package gguf

import "fmt"

// mlxTypes are the tensor types MLX's GGUF loader reads: plain types
// directly, Q4_0, Q4_1 and Q8_0 as affine (weight, scales, biases) triples,
// the other block types converted to float16 by its gguflib. The IQ and
// ternary families are missing from gguflib and would be read wrongly.
var mlxTypes = map[TensorType]bool{
	F32: true, F16: true, BF16: true, F64: true, I8: true, I16: true, I32: true, I64: true,
	Q4_0: true, Q4_1: true, Q5_0: true, Q5_1: true, Q8_0: true, Q8_1: true,
	Q2_K: true, Q3_K: true, Q4_K: true, Q5_K: true, Q6_K: true, Q8_K: true,
}

// CheckMLX reports whether MLX's GGUF loader can be given this file. MLX
// parses GGUF with gguflib, which trusts every length and offset: a
// truncated or corrupt file makes it read past the end of its mapping and
// the process dies with SIGSEGV. ReadInfo has already checked every length,
// count and tensor extent; CheckMLX adds what gguflib itself cannot take:
// a general.alignment that is not a uint32, nested metadata arrays, and
// tensor types it does not know.
func (g *Info) CheckMLX() error {
	if v, ok := g.Metadata["general.alignment"]; ok && v.Type != TypeUint32 {
		return fmt.Errorf("gguf %s: general.alignment is %s, want uint32", g.Path, v.Type)
	}
	for _, k := range g.Keys {
		if a, ok := g.Metadata[k].V.(Array); ok && a.Elem == TypeArray {
			return fmt.Errorf("gguf %s: metadata key %q is an array of arrays, which MLX's GGUF loader does not read", g.Path, k)
		}
	}
	for _, t := range g.Tensors {
		if !mlxTypes[t.Type] {
			return fmt.Errorf("gguf %s: tensor %q has type %s, which MLX's GGUF loader does not read", g.Path, t.Name, t.Type)
		}
	}
	return nil
}

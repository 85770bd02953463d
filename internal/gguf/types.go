// Package gguf reads, validates and writes GGUF files, the single-file model
// format of llama.cpp and ollama (versions 2 and 3, little-endian).
//
// The reader parses the header (metadata key/values and tensor infos) in
// pure Go and never reads tensor data; every length in the file is checked
// against the bytes that remain before anything is allocated, so a corrupt
// or truncated file is an error naming the file and offset, never a panic
// or a huge allocation. CheckMLX adds the limits of MLX's own GGUF loader,
// which trusts the file. The writer (Writer) lays out a file as llama.cpp's
// gguf-py does, and quant.go holds the F16, BF16, Q8_0 and Q4_0 encoders.
package gguf

import "fmt"

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// DefaultAlignment is the tensor-data alignment when the file has no
// general.alignment key.
const DefaultAlignment = 32

// MaxDims is GGML_MAX_DIMS: a tensor has at most 4 dimensions.
const MaxDims = 4

// maxArrayDepth bounds nested arrays (the format allows arrays of arrays).
const maxArrayDepth = 8

// ValueType is the type tag of a metadata value.
type ValueType uint32

// The GGUF metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64",
}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// fixedSize is the encoded size of a scalar of this type, or 0 for strings,
// arrays and unknown types.
func (t ValueType) fixedSize() int64 {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

func (t ValueType) isInt() bool {
	switch t {
	case TypeUint8, TypeInt8, TypeUint16, TypeInt16,
		TypeUint32, TypeInt32, TypeUint64, TypeInt64:
		return true
	}
	return false
}

func (t ValueType) isFloat() bool { return t == TypeFloat32 || t == TypeFloat64 }

// Value is one metadata value. Scalars are held as the Go type matching
// the tag (uint8, int8, uint16, int16, uint32, int32, float32, bool, string,
// uint64, int64, float64); arrays as a Array.
type Value struct {
	Type ValueType
	V    any
}

// Array is an array value: the element type and the elements as a typed
// slice ([]string, []uint32, []int32, []float32, ..., or []Array for
// nested arrays).
type Array struct {
	Elem ValueType
	Len  int
	V    any
}

// TensorType is a tensor's element type (enum ggml_type).
type TensorType uint32

// The ggml tensor types. Numbers 4, 5 and 31-33 are retired in ggml.
const (
	F32     TensorType = 0
	F16     TensorType = 1
	Q4_0    TensorType = 2
	Q4_1    TensorType = 3
	Q5_0    TensorType = 6
	Q5_1    TensorType = 7
	Q8_0    TensorType = 8
	Q8_1    TensorType = 9
	Q2_K    TensorType = 10
	Q3_K    TensorType = 11
	Q4_K    TensorType = 12
	Q5_K    TensorType = 13
	Q6_K    TensorType = 14
	Q8_K    TensorType = 15
	IQ2_XXS TensorType = 16
	IQ2_XS  TensorType = 17
	IQ3_XXS TensorType = 18
	IQ1_S   TensorType = 19
	IQ4_NL  TensorType = 20
	IQ3_S   TensorType = 21
	IQ2_S   TensorType = 22
	IQ4_XS  TensorType = 23
	I8      TensorType = 24
	I16     TensorType = 25
	I32     TensorType = 26
	I64     TensorType = 27
	F64     TensorType = 28
	IQ1_M   TensorType = 29
	BF16    TensorType = 30
	TQ1_0   TensorType = 34
	TQ2_0   TensorType = 35
	MXFP4   TensorType = 39
)

// typeInfo is a type's name, elements per block and bytes per block.
type typeInfo struct {
	name      string
	blockSize int64
	typeSize  int64
}

var tensorTypes = map[TensorType]typeInfo{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 18},
	Q4_1:    {"Q4_1", 32, 20},
	Q5_0:    {"Q5_0", 32, 22},
	Q5_1:    {"Q5_1", 32, 24},
	Q8_0:    {"Q8_0", 32, 34},
	Q8_1:    {"Q8_1", 32, 36},
	Q2_K:    {"Q2_K", 256, 84},
	Q3_K:    {"Q3_K", 256, 110},
	Q4_K:    {"Q4_K", 256, 144},
	Q5_K:    {"Q5_K", 256, 176},
	Q6_K:    {"Q6_K", 256, 210},
	Q8_K:    {"Q8_K", 256, 292},
	IQ2_XXS: {"IQ2_XXS", 256, 66},
	IQ2_XS:  {"IQ2_XS", 256, 74},
	IQ3_XXS: {"IQ3_XXS", 256, 98},
	IQ1_S:   {"IQ1_S", 256, 50},
	IQ4_NL:  {"IQ4_NL", 32, 18},
	IQ3_S:   {"IQ3_S", 256, 110},
	IQ2_S:   {"IQ2_S", 256, 82},
	IQ4_XS:  {"IQ4_XS", 256, 136},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", 256, 56},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", 256, 54},
	TQ2_0:   {"TQ2_0", 256, 66},
	MXFP4:   {"MXFP4", 32, 17},
}

func (t TensorType) String() string {
	if ti, ok := tensorTypes[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// BlockSize is the number of elements in one quantization block (1 for
// plain types), or 0 for an unknown type.
func (t TensorType) BlockSize() int64 { return tensorTypes[t].blockSize }

// TypeSize is the number of bytes of one block, or 0 for an unknown type.
func (t TensorType) TypeSize() int64 { return tensorTypes[t].typeSize }

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name string
	// Dims are in ggml order: Dims[0] is the innermost (contiguous)
	// dimension. The row-major shape used by HF/MLX is Shape().
	Dims []uint64
	Type TensorType
	// Offset is relative to the start of the tensor data section
	// (Info.DataOffset); it is a multiple of the alignment.
	Offset uint64
	// Size is the tensor's size in bytes.
	Size uint64
}

// Shape is the row-major shape (ggml Dims reversed), e.g. [vocab, hidden]
// for token_embd.weight.
func (ti TensorInfo) Shape() []int64 {
	s := make([]int64, len(ti.Dims))
	for i, d := range ti.Dims {
		s[len(ti.Dims)-1-i] = int64(d)
	}
	return s
}

// Elements is the number of elements of the tensor.
func (ti TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range ti.Dims {
		n *= d
	}
	return n
}

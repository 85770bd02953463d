package mlx

import "fmt"

// Dtype is an array element type. The values match the shim's codes.
type Dtype int

// The element types of MLX arrays.
const (
	Bool      Dtype = 0
	Uint8     Dtype = 1
	Uint32    Dtype = 2
	Int32     Dtype = 3
	Int64     Dtype = 4
	Float16   Dtype = 5
	BFloat16  Dtype = 6
	Float32   Dtype = 7
	Uint16    Dtype = 8
	Int8      Dtype = 9
	Int16     Dtype = 10
	Uint64    Dtype = 11
	Float64   Dtype = 12
	Complex64 Dtype = 13
)

var dtypeNames = map[Dtype]string{
	Bool: "bool", Uint8: "uint8", Uint16: "uint16", Uint32: "uint32", Uint64: "uint64",
	Int8: "int8", Int16: "int16", Int32: "int32", Int64: "int64",
	Float16: "float16", BFloat16: "bfloat16", Float32: "float32", Float64: "float64",
	Complex64: "complex64",
}

func (d Dtype) String() string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// Size is the number of bytes of one element.
func (d Dtype) Size() int {
	switch d {
	case Bool, Uint8, Int8:
		return 1
	case Uint16, Int16, Float16, BFloat16:
		return 2
	case Uint32, Int32, Float32:
		return 4
	case Uint64, Int64, Float64, Complex64:
		return 8
	}
	return 0
}

// IsFloat reports whether d is a floating-point type.
func (d Dtype) IsFloat() bool {
	return d == Float16 || d == BFloat16 || d == Float32 || d == Float64
}

// ParseDtype parses a dtype name such as "bf16", "bfloat16", "f32" or "float16".
func ParseDtype(s string) (Dtype, error) {
	switch s {
	case "bf16", "bfloat16":
		return BFloat16, nil
	case "f16", "fp16", "float16":
		return Float16, nil
	case "f32", "fp32", "float32":
		return Float32, nil
	}
	for d, n := range dtypeNames {
		if n == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("unknown dtype %q (want bf16, f16 or f32)", s)
}

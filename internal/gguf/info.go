package gguf

import (
	"fmt"
	"strings"
)

// Has reports whether the metadata has key.
func (g *Info) Has(key string) bool {
	_, ok := g.Metadata[key]
	return ok
}

// Value returns the raw value of key.
func (g *Info) Value(key string) (Value, bool) {
	v, ok := g.Metadata[key]
	return v, ok
}

func (g *Info) get(key string) (Value, error) {
	v, ok := g.Metadata[key]
	if !ok {
		return v, fmt.Errorf("gguf %s: metadata key %q not found", g.Path, key)
	}
	return v, nil
}

func (g *Info) typeErr(key string, v Value, want string) error {
	got := v.Type.String()
	if a, ok := v.V.(Array); ok {
		got = "array of " + a.Elem.String()
	}
	return fmt.Errorf("gguf %s: metadata key %q is %s, want %s", g.Path, key, got, want)
}

// String returns the string value of key.
func (g *Info) String(key string) (string, error) {
	v, err := g.get(key)
	if err != nil {
		return "", err
	}
	s, ok := v.V.(string)
	if !ok {
		return "", g.typeErr(key, v, "string")
	}
	return s, nil
}

// Uint returns an integer value of key (of any integer type) as uint64.
func (g *Info) Uint(key string) (uint64, error) {
	v, err := g.get(key)
	if err != nil {
		return 0, err
	}
	if !v.Type.isInt() {
		return 0, g.typeErr(key, v, "an unsigned integer")
	}
	u, err := v.asUint()
	if err != nil {
		return 0, fmt.Errorf("gguf %s: metadata key %q %v", g.Path, key, err)
	}
	return u, nil
}

// Int returns an integer value of key (of any integer type) as int64.
func (g *Info) Int(key string) (int64, error) {
	v, err := g.get(key)
	if err != nil {
		return 0, err
	}
	if !v.Type.isInt() {
		return 0, g.typeErr(key, v, "an integer")
	}
	i, err := v.asInt()
	if err != nil {
		return 0, fmt.Errorf("gguf %s: metadata key %q %v", g.Path, key, err)
	}
	return i, nil
}

// Float returns a float value of key as float64. Integer values are accepted
// too, since some converters write e.g. rope.freq_base as an integer.
func (g *Info) Float(key string) (float64, error) {
	v, err := g.get(key)
	if err != nil {
		return 0, err
	}
	switch x := v.V.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	if v.Type.isInt() {
		i, err := v.asInt()
		if err == nil {
			return float64(i), nil
		}
		u, _ := v.asUint()
		return float64(u), nil
	}
	return 0, g.typeErr(key, v, "a float")
}

// Bool returns the bool value of key.
func (g *Info) Bool(key string) (bool, error) {
	v, err := g.get(key)
	if err != nil {
		return false, err
	}
	b, ok := v.V.(bool)
	if !ok {
		return false, g.typeErr(key, v, "bool")
	}
	return b, nil
}

func (g *Info) array(key, want string) (Array, error) {
	v, err := g.get(key)
	if err != nil {
		return Array{}, err
	}
	a, ok := v.V.(Array)
	if !ok {
		return Array{}, g.typeErr(key, v, want)
	}
	return a, nil
}

// Strings returns the string-array value of key.
func (g *Info) Strings(key string) ([]string, error) {
	a, err := g.array(key, "an array of strings")
	if err != nil {
		return nil, err
	}
	s, ok := a.V.([]string)
	if !ok {
		return nil, g.typeErr(key, Value{TypeArray, a}, "an array of strings")
	}
	return s, nil
}

// Ints returns an integer-array value of key (any integer element type) as
// []int64.
func (g *Info) Ints(key string) ([]int64, error) {
	a, err := g.array(key, "an array of integers")
	if err != nil {
		return nil, err
	}
	if !a.Elem.isInt() {
		return nil, g.typeErr(key, Value{TypeArray, a}, "an array of integers")
	}
	out := make([]int64, a.Len)
	for i := range out {
		v, err := arrayScalar(a, i).asInt()
		if err != nil {
			return nil, fmt.Errorf("gguf %s: metadata key %q: element %d %v", g.Path, key, i, err)
		}
		out[i] = v
	}
	return out, nil
}

// Floats returns a float-array value of key (float32, float64 or integer
// elements) as []float64.
func (g *Info) Floats(key string) ([]float64, error) {
	a, err := g.array(key, "an array of floats")
	if err != nil {
		return nil, err
	}
	if !a.Elem.isFloat() && !a.Elem.isInt() {
		return nil, g.typeErr(key, Value{TypeArray, a}, "an array of floats")
	}
	out := make([]float64, a.Len)
	for i := range out {
		switch x := arrayScalar(a, i).V.(type) {
		case float32:
			out[i] = float64(x)
		case float64:
			out[i] = x
		default:
			v, err := arrayScalar(a, i).asInt()
			if err != nil {
				return nil, fmt.Errorf("gguf %s: metadata key %q: element %d %v", g.Path, key, i, err)
			}
			out[i] = float64(v)
		}
	}
	return out, nil
}

// arrayScalar returns element i of a scalar array as a Value.
func arrayScalar(a Array, i int) Value {
	var x any
	switch s := a.V.(type) {
	case []uint8:
		x = s[i]
	case []int8:
		x = s[i]
	case []uint16:
		x = s[i]
	case []int16:
		x = s[i]
	case []uint32:
		x = s[i]
	case []int32:
		x = s[i]
	case []uint64:
		x = s[i]
	case []int64:
		x = s[i]
	case []float32:
		x = s[i]
	case []float64:
		x = s[i]
	case []bool:
		x = s[i]
	case []string:
		x = s[i]
	case []Array:
		x = s[i]
	}
	return Value{a.Elem, x}
}

// Architecture returns general.architecture (e.g. "llama").
func (g *Info) Architecture() (string, error) {
	return g.String("general.architecture")
}

// ArchKey prefixes suffix with the file's architecture, e.g.
// ArchKey("block_count") is "llama.block_count" for a Llama GGUF. Without a
// general.architecture key it uses "llama".
func (g *Info) ArchKey(suffix string) string {
	arch, err := g.Architecture()
	if err != nil || arch == "" {
		arch = "llama"
	}
	return arch + "." + strings.TrimPrefix(suffix, ".")
}

// Tensor returns the info of the named tensor.
func (g *Info) Tensor(name string) (TensorInfo, bool) {
	i, ok := g.tensorIndex[name]
	if !ok {
		return TensorInfo{}, false
	}
	return g.Tensors[i], true
}

// TensorDataOffset is the absolute file offset of a tensor's data.
func (g *Info) TensorDataOffset(ti TensorInfo) int64 {
	return g.DataOffset + int64(ti.Offset)
}

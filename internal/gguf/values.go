package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Metadata values: how the parser reads each type, and conversions.

// value reads a value of type typ for key.
func (p *parser) value(typ ValueType, key string, depth int) (Value, error) {
	what := fmt.Sprintf("value of metadata key %q", key)
	switch typ {
	case TypeUint8:
		v, err := p.u8(what)
		return Value{typ, v}, err
	case TypeInt8:
		v, err := p.u8(what)
		return Value{typ, int8(v)}, err
	case TypeUint16:
		v, err := p.u16(what)
		return Value{typ, v}, err
	case TypeInt16:
		v, err := p.u16(what)
		return Value{typ, int16(v)}, err
	case TypeUint32:
		v, err := p.u32(what)
		return Value{typ, v}, err
	case TypeInt32:
		v, err := p.u32(what)
		return Value{typ, int32(v)}, err
	case TypeFloat32:
		v, err := p.u32(what)
		return Value{typ, math.Float32frombits(v)}, err
	case TypeBool:
		at := p.off
		v, err := p.u8(what)
		if err != nil {
			return Value{}, err
		}
		if v > 1 {
			return Value{}, p.errorf(at, "metadata key %q: bool value is %d, want 0 or 1", key, v)
		}
		return Value{typ, v == 1}, nil
	case TypeString:
		v, err := p.str(what)
		return Value{typ, v}, err
	case TypeUint64:
		v, err := p.u64(what)
		return Value{typ, v}, err
	case TypeInt64:
		v, err := p.u64(what)
		return Value{typ, int64(v)}, err
	case TypeFloat64:
		v, err := p.u64(what)
		return Value{typ, math.Float64frombits(v)}, err
	case TypeArray:
		a, err := p.array(key, depth)
		return Value{typ, a}, err
	}
	return Value{}, p.errorf(p.off-4, "metadata key %q has unknown value type %d", key, uint32(typ))
}

func (p *parser) array(key string, depth int) (Array, error) {
	if depth >= maxArrayDepth {
		return Array{}, p.errorf(p.off, "metadata key %q: arrays nested deeper than %d", key, maxArrayDepth)
	}
	at := p.off
	et, err := p.u32(fmt.Sprintf("array element type of metadata key %q", key))
	if err != nil {
		return Array{}, err
	}
	elem := ValueType(et)
	n, err := p.u64(fmt.Sprintf("array length of metadata key %q", key))
	if err != nil {
		return Array{}, err
	}
	// Bound the length by the bytes left: a string is at least 8 bytes (its
	// length), an array at least 12 (type and length).
	minSize := elem.fixedSize()
	switch elem {
	case TypeString:
		minSize = 8
	case TypeArray:
		minSize = 12
	}
	if minSize == 0 {
		return Array{}, p.errorf(at, "metadata key %q: array of unknown element type %d", key, et)
	}
	if n > uint64(p.remaining()/minSize) {
		return Array{}, p.errorf(at, "metadata key %q: array of %d %s elements cannot fit in the %d bytes left in the file (corrupt or truncated)",
			key, n, elem, p.remaining())
	}
	count := int(n)
	arr := Array{Elem: elem, Len: count}
	what := fmt.Sprintf("array element of metadata key %q", key)
	switch elem {
	case TypeString:
		v := make([]string, 0, capHint(uint64(count)))
		for range count {
			s, err := p.str(what)
			if err != nil {
				return arr, err
			}
			v = append(v, s)
		}
		arr.V = v
	case TypeArray:
		v := make([]Array, 0, capHint(uint64(count)))
		for range count {
			a, err := p.array(key, depth+1)
			if err != nil {
				return arr, err
			}
			v = append(v, a)
		}
		arr.V = v
	default:
		raw := make([]byte, int64(count)*minSize)
		if err := p.read(raw, fmt.Sprintf("array data of metadata key %q", key)); err != nil {
			return arr, err
		}
		arr.V, err = decodeScalars(elem, raw, count)
		if err != nil {
			return arr, p.errorf(at, "metadata key %q: %v", key, err)
		}
	}
	return arr, nil
}

// decodeScalars turns count little-endian scalars of type t into a typed slice.
func decodeScalars(t ValueType, raw []byte, count int) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return raw, nil
	case TypeInt8:
		v := make([]int8, count)
		for i := range v {
			v[i] = int8(raw[i])
		}
		return v, nil
	case TypeBool:
		v := make([]bool, count)
		for i := range v {
			if raw[i] > 1 {
				return nil, fmt.Errorf("bool element %d is %d, want 0 or 1", i, raw[i])
			}
			v[i] = raw[i] == 1
		}
		return v, nil
	case TypeUint16:
		v := make([]uint16, count)
		for i := range v {
			v[i] = le.Uint16(raw[2*i:])
		}
		return v, nil
	case TypeInt16:
		v := make([]int16, count)
		for i := range v {
			v[i] = int16(le.Uint16(raw[2*i:]))
		}
		return v, nil
	case TypeUint32:
		v := make([]uint32, count)
		for i := range v {
			v[i] = le.Uint32(raw[4*i:])
		}
		return v, nil
	case TypeInt32:
		v := make([]int32, count)
		for i := range v {
			v[i] = int32(le.Uint32(raw[4*i:]))
		}
		return v, nil
	case TypeFloat32:
		v := make([]float32, count)
		for i := range v {
			v[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return v, nil
	case TypeUint64:
		v := make([]uint64, count)
		for i := range v {
			v[i] = le.Uint64(raw[8*i:])
		}
		return v, nil
	case TypeInt64:
		v := make([]int64, count)
		for i := range v {
			v[i] = int64(le.Uint64(raw[8*i:]))
		}
		return v, nil
	case TypeFloat64:
		v := make([]float64, count)
		for i := range v {
			v[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return v, nil
	}
	return nil, fmt.Errorf("unsupported array element type %s", t)
}

// asUint converts an integer value to uint64, failing for negatives and
// non-integers.
func (v Value) asUint() (uint64, error) {
	switch x := v.V.(type) {
	case uint8:
		return uint64(x), nil
	case uint16:
		return uint64(x), nil
	case uint32:
		return uint64(x), nil
	case uint64:
		return x, nil
	case int8, int16, int32, int64:
		i, _ := v.asInt()
		if i < 0 {
			return 0, fmt.Errorf("is negative (%d)", i)
		}
		return uint64(i), nil
	}
	return 0, fmt.Errorf("is %s, want an integer", v.Type)
}

// asInt converts an integer value to int64.
func (v Value) asInt() (int64, error) {
	switch x := v.V.(type) {
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint8, uint16, uint32, uint64:
		u, _ := v.asUint()
		if u > math.MaxInt64 {
			return 0, fmt.Errorf("is %d, too large for int64", u)
		}
		return int64(u), nil
	}
	return 0, fmt.Errorf("is %s, want an integer", v.Type)
}

// String renders a value for messages and dumps; long arrays are shortened.
func (v Value) String() string {
	if a, ok := v.V.(Array); ok {
		return fmt.Sprintf("[%d x %s]", a.Len, a.Elem)
	}
	return fmt.Sprint(v.V)
}

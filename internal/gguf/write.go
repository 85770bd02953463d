package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
)

// Writer builds a GGUF version 3 file: the header, the metadata in the
// order it was set, the tensor infos in the order the tensors were added,
// then each tensor's data, every one padded to the alignment (the layout of
// llama.cpp's gguf-py writer). Tensor data is produced by a callback when
// the file is written, so a model never has to be in memory twice.
type Writer struct {
	keys      []string
	values    map[string]Value
	tensors   []tensorEntry
	names     map[string]bool
	alignment uint64
	onTensor  func(name string)
}

type tensorEntry struct {
	info  TensorInfo
	write func(io.Writer) error
}

// NewWriter returns an empty writer with the default alignment.
func NewWriter() *Writer {
	return &Writer{values: map[string]Value{}, names: map[string]bool{}, alignment: DefaultAlignment}
}

// Set adds a metadata key. Keys are written in the order they are first
// set; setting a key again is an error. general.alignment must be a uint32
// power of two and sets the alignment of the tensor data.
func (w *Writer) Set(key string, v Value) error {
	if key == "" {
		return errors.New("gguf writer: empty metadata key")
	}
	if _, dup := w.values[key]; dup {
		return fmt.Errorf("gguf writer: metadata key %q set twice", key)
	}
	if err := CheckValue(v); err != nil {
		return fmt.Errorf("gguf writer: metadata key %q: %w", key, err)
	}
	if key == "general.alignment" {
		a, ok := v.V.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf writer: general.alignment must be a uint32 power of two, got %v (%s)", v.V, v.Type)
		}
		w.alignment = uint64(a)
	}
	w.keys = append(w.keys, key)
	w.values[key] = v
	return nil
}

// OnTensor sets a function called after each tensor's data is written (for
// a progress bar).
func (w *Writer) OnTensor(f func(name string)) { w.onTensor = f }

// Keys lists the metadata keys set so far, in order.
func (w *Writer) Keys() []string { return append([]string(nil), w.keys...) }

// AddTensor adds a tensor of row-major shape (outermost dimension first, as
// in MLX and PyTorch; the file stores them innermost first). write is called
// once, when the file is written, and must write exactly the tensor's size
// in bytes.
func (w *Writer) AddTensor(name string, typ TensorType, shape []int64, write func(io.Writer) error) error {
	if name == "" {
		return errors.New("gguf writer: empty tensor name")
	}
	if w.names[name] {
		return fmt.Errorf("gguf writer: tensor %q added twice", name)
	}
	if len(shape) == 0 || len(shape) > MaxDims {
		return fmt.Errorf("gguf writer: tensor %q has %d dimensions (want 1 to %d)", name, len(shape), MaxDims)
	}
	ti, known := tensorTypes[typ]
	if !known {
		return fmt.Errorf("gguf writer: tensor %q has unknown type %d", name, uint32(typ))
	}
	info := TensorInfo{Name: name, Type: typ, Dims: make([]uint64, len(shape))}
	elems := uint64(1)
	for i, d := range shape {
		if d <= 0 || uint64(d) > math.MaxInt64/elems {
			return fmt.Errorf("gguf writer: tensor %q has shape %v", name, shape)
		}
		info.Dims[len(shape)-1-i] = uint64(d)
		elems *= uint64(d)
	}
	if info.Dims[0]%uint64(ti.blockSize) != 0 {
		return fmt.Errorf("gguf writer: tensor %q: rows of %d elements are not whole %s blocks of %d", name, info.Dims[0], typ, ti.blockSize)
	}
	info.Size = elems / uint64(ti.blockSize) * uint64(ti.typeSize)
	w.names[name] = true
	w.tensors = append(w.tensors, tensorEntry{info: info, write: write})
	return nil
}

// AddTensorBytes adds a tensor whose encoded data is in hand.
func (w *Writer) AddTensorBytes(name string, typ TensorType, shape []int64, data []byte) error {
	if err := w.AddTensor(name, typ, shape, func(out io.Writer) error {
		_, err := out.Write(data)
		return err
	}); err != nil {
		return err
	}
	if got, want := uint64(len(data)), w.tensors[len(w.tensors)-1].info.Size; got != want {
		w.tensors = w.tensors[:len(w.tensors)-1]
		delete(w.names, name)
		return fmt.Errorf("gguf writer: tensor %q: %d bytes of data, want %d for %s %v", name, got, want, typ, shape)
	}
	return nil
}

// Tensors lists the infos of the tensors added so far, with the offsets they
// will have in the data section.
func (w *Writer) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(w.tensors))
	var off uint64
	for i, t := range w.tensors {
		out[i] = t.info
		out[i].Dims = append([]uint64(nil), t.info.Dims...)
		out[i].Offset = off
		off += padTo(t.info.Size, w.alignment)
	}
	return out
}

func padTo(n, align uint64) uint64 { return (n + align - 1) / align * align }

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// WriteTo writes the file to out.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	cw := &countWriter{w: out}
	bw := bufio.NewWriterSize(cw, 1<<20)
	e := &encoder{w: bw}
	e.u32(Magic)
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.keys)))
	for _, k := range w.keys {
		e.str(k)
		e.value(w.values[k])
	}
	infos := w.Tensors()
	for _, ti := range infos {
		e.str(ti.Name)
		e.u32(uint32(len(ti.Dims)))
		for _, d := range ti.Dims {
			e.u64(d)
		}
		e.u32(uint32(ti.Type))
		e.u64(ti.Offset)
	}
	if e.err != nil {
		return cw.n, fmt.Errorf("gguf writer: %w", e.err)
	}
	start := int64(bw.Buffered()) + cw.n
	e.pad(uint64(start), w.alignment)
	for i, t := range w.tensors {
		if e.err != nil {
			break
		}
		tw := &countWriter{w: bw}
		if err := t.write(tw); err != nil {
			return cw.n, fmt.Errorf("gguf writer: tensor %q: %w", t.info.Name, err)
		}
		if uint64(tw.n) != t.info.Size {
			return cw.n, fmt.Errorf("gguf writer: tensor %q: wrote %d bytes, want %d for %s %v", t.info.Name, tw.n, t.info.Size, t.info.Type, infos[i].Shape())
		}
		e.pad(t.info.Size, w.alignment)
		if w.onTensor != nil {
			w.onTensor(t.info.Name)
		}
	}
	if e.err == nil {
		e.err = bw.Flush()
	}
	if e.err != nil {
		return cw.n, fmt.Errorf("gguf writer: %w", e.err)
	}
	return cw.n, nil
}

// WriteFile writes the file to path atomically: readers see no file or the
// whole file, never a partial one.
func (w *Writer) WriteFile(path string) error {
	return atomicfile.Write(path, func(out io.Writer) error {
		_, err := w.WriteTo(out)
		return err
	})
}

// encoder writes little-endian GGUF values, keeping the first error.
type encoder struct {
	w   io.Writer
	buf [8]byte
	err error
}

func (e *encoder) write(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *encoder) u8(v uint8)   { e.buf[0] = v; e.write(e.buf[:1]) }
func (e *encoder) u16(v uint16) { binary.LittleEndian.PutUint16(e.buf[:], v); e.write(e.buf[:2]) }
func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.buf[:], v); e.write(e.buf[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.buf[:], v); e.write(e.buf[:8]) }

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		_, e.err = io.WriteString(e.w, s)
	}
}

// pad writes zeros after n bytes up to the next multiple of align.
func (e *encoder) pad(n, align uint64) {
	var zeros [64]byte
	for k := padTo(n, align) - n; k > 0; {
		m := min(k, uint64(len(zeros)))
		e.write(zeros[:m])
		k -= m
	}
}

func (e *encoder) value(v Value) {
	e.u32(uint32(v.Type))
	e.payload(v.Type, v.V)
}

// payload writes a value without its type tag (arrays: element type,
// length, elements).
func (e *encoder) payload(t ValueType, x any) {
	switch v := x.(type) {
	case uint8:
		e.u8(v)
	case int8:
		e.u8(uint8(v))
	case bool:
		if v {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case uint16:
		e.u16(v)
	case int16:
		e.u16(uint16(v))
	case uint32:
		e.u32(v)
	case int32:
		e.u32(uint32(v))
	case float32:
		e.u32(math.Float32bits(v))
	case uint64:
		e.u64(v)
	case int64:
		e.u64(uint64(v))
	case float64:
		e.u64(math.Float64bits(v))
	case string:
		e.str(v)
	case Array:
		e.u32(uint32(v.Elem))
		e.u64(uint64(v.Len))
		s := reflect.ValueOf(v.V)
		for i := 0; i < v.Len; i++ {
			e.payload(v.Elem, s.Index(i).Interface())
		}
	default:
		e.err = fmt.Errorf("cannot encode %T as %s", x, t)
	}
}

// goTypes is the Go type that holds a scalar of each value type.
var goTypes = map[ValueType]reflect.Type{
	TypeUint8: reflect.TypeFor[uint8](), TypeInt8: reflect.TypeFor[int8](),
	TypeUint16: reflect.TypeFor[uint16](), TypeInt16: reflect.TypeFor[int16](),
	TypeUint32: reflect.TypeFor[uint32](), TypeInt32: reflect.TypeFor[int32](),
	TypeFloat32: reflect.TypeFor[float32](), TypeBool: reflect.TypeFor[bool](),
	TypeString: reflect.TypeFor[string](), TypeArray: reflect.TypeFor[Array](),
	TypeUint64: reflect.TypeFor[uint64](), TypeInt64: reflect.TypeFor[int64](),
	TypeFloat64: reflect.TypeFor[float64](),
}

// CheckValue reports whether v is well formed: its Go value has the type its
// tag names, and an array's V is a slice of Len elements of its Elem type
// ([]Array for nested arrays, at most 8 deep).
func CheckValue(v Value) error { return checkValue(v.Type, v.V, 0) }

func checkValue(t ValueType, x any, depth int) error {
	want, ok := goTypes[t]
	if !ok {
		return fmt.Errorf("unknown value type %d", uint32(t))
	}
	if x == nil || reflect.TypeOf(x) != want {
		return fmt.Errorf("value of type %s holds %T, want %s", t, x, want)
	}
	a, ok := x.(Array)
	if !ok {
		return nil
	}
	if depth >= maxArrayDepth {
		return fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
	}
	elem, ok := goTypes[a.Elem]
	if !ok {
		return fmt.Errorf("array of unknown element type %d", uint32(a.Elem))
	}
	s := reflect.ValueOf(a.V)
	if a.V == nil || s.Kind() != reflect.Slice || s.Type().Elem() != elem {
		return fmt.Errorf("array of %s holds %T, want []%s", a.Elem, a.V, elem)
	}
	if s.Len() != a.Len {
		return fmt.Errorf("array says %d elements but holds %d", a.Len, s.Len())
	}
	if a.Elem == TypeArray {
		for i := range a.Len {
			if err := checkValue(TypeArray, s.Index(i).Interface(), depth+1); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	}
	return nil
}

// Value constructors for the common types.

// String is a string value.
func String(s string) Value { return Value{TypeString, s} }

// Uint32 is a uint32 value.
func Uint32(v uint32) Value { return Value{TypeUint32, v} }

// Int32 is an int32 value.
func Int32(v int32) Value { return Value{TypeInt32, v} }

// Float32 is a float32 value.
func Float32(v float32) Value { return Value{TypeFloat32, v} }

// Bool is a bool value.
func Bool(v bool) Value { return Value{TypeBool, v} }

// Strings is an array of strings.
func Strings(v []string) Value { return Value{TypeArray, Array{TypeString, len(v), v}} }

// Int32s is an array of int32.
func Int32s(v []int32) Value { return Value{TypeArray, Array{TypeInt32, len(v), v}} }

// Float32s is an array of float32.
func Float32s(v []float32) Value { return Value{TypeArray, Array{TypeFloat32, len(v), v}} }

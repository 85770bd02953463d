package llama

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
)

// This file is a pure-Go reader for the header of a GGUF file (versions 2
// and 3): the metadata key/values and the tensor infos. It never reads the
// tensor data itself; MLX loads the weights. Every length read from the file
// is checked against the bytes that remain before anything is allocated, so a
// corrupt or truncated file gives an error naming the file and the offset
// instead of a panic or a huge allocation.

// ggufMagic is "GGUF" read as a little-endian uint32.
const ggufMagic = 0x46554747

// GGUFDefaultAlignment is the tensor-data alignment when the file has no
// general.alignment key.
const GGUFDefaultAlignment = 32

// ggufMaxDims is GGML_MAX_DIMS: a tensor has at most 4 dimensions.
const ggufMaxDims = 4

// ggufMaxArrayDepth bounds nested arrays (the format allows arrays of arrays).
const ggufMaxArrayDepth = 8

// GGUFValueType is the type tag of a metadata value.
type GGUFValueType uint32

// The GGUF metadata value types.
const (
	GGUFTypeUint8   GGUFValueType = 0
	GGUFTypeInt8    GGUFValueType = 1
	GGUFTypeUint16  GGUFValueType = 2
	GGUFTypeInt16   GGUFValueType = 3
	GGUFTypeUint32  GGUFValueType = 4
	GGUFTypeInt32   GGUFValueType = 5
	GGUFTypeFloat32 GGUFValueType = 6
	GGUFTypeBool    GGUFValueType = 7
	GGUFTypeString  GGUFValueType = 8
	GGUFTypeArray   GGUFValueType = 9
	GGUFTypeUint64  GGUFValueType = 10
	GGUFTypeInt64   GGUFValueType = 11
	GGUFTypeFloat64 GGUFValueType = 12
)

var ggufTypeNames = [...]string{
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64",
}

func (t GGUFValueType) String() string {
	if int(t) < len(ggufTypeNames) {
		return ggufTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// fixedSize is the encoded size of a scalar of this type, or 0 for strings,
// arrays and unknown types.
func (t GGUFValueType) fixedSize() int64 {
	switch t {
	case GGUFTypeUint8, GGUFTypeInt8, GGUFTypeBool:
		return 1
	case GGUFTypeUint16, GGUFTypeInt16:
		return 2
	case GGUFTypeUint32, GGUFTypeInt32, GGUFTypeFloat32:
		return 4
	case GGUFTypeUint64, GGUFTypeInt64, GGUFTypeFloat64:
		return 8
	}
	return 0
}

func (t GGUFValueType) isInt() bool {
	switch t {
	case GGUFTypeUint8, GGUFTypeInt8, GGUFTypeUint16, GGUFTypeInt16,
		GGUFTypeUint32, GGUFTypeInt32, GGUFTypeUint64, GGUFTypeInt64:
		return true
	}
	return false
}

func (t GGUFValueType) isFloat() bool { return t == GGUFTypeFloat32 || t == GGUFTypeFloat64 }

// GGUFValue is one metadata value. Scalars are held as the Go type matching
// the tag (uint8, int8, uint16, int16, uint32, int32, float32, bool, string,
// uint64, int64, float64); arrays as a GGUFArray.
type GGUFValue struct {
	Type GGUFValueType
	V    any
}

// GGUFArray is an array value: the element type and the elements as a typed
// slice ([]string, []uint32, []int32, []float32, ..., or []GGUFArray for
// nested arrays).
type GGUFArray struct {
	Elem GGUFValueType
	Len  int
	V    any
}

// GGMLType is a tensor's element type (enum ggml_type).
type GGMLType uint32

// The ggml tensor types. Numbers 4, 5 and 31-33 are retired in ggml.
const (
	GGMLTypeF32     GGMLType = 0
	GGMLTypeF16     GGMLType = 1
	GGMLTypeQ4_0    GGMLType = 2
	GGMLTypeQ4_1    GGMLType = 3
	GGMLTypeQ5_0    GGMLType = 6
	GGMLTypeQ5_1    GGMLType = 7
	GGMLTypeQ8_0    GGMLType = 8
	GGMLTypeQ8_1    GGMLType = 9
	GGMLTypeQ2_K    GGMLType = 10
	GGMLTypeQ3_K    GGMLType = 11
	GGMLTypeQ4_K    GGMLType = 12
	GGMLTypeQ5_K    GGMLType = 13
	GGMLTypeQ6_K    GGMLType = 14
	GGMLTypeQ8_K    GGMLType = 15
	GGMLTypeIQ2_XXS GGMLType = 16
	GGMLTypeIQ2_XS  GGMLType = 17
	GGMLTypeIQ3_XXS GGMLType = 18
	GGMLTypeIQ1_S   GGMLType = 19
	GGMLTypeIQ4_NL  GGMLType = 20
	GGMLTypeIQ3_S   GGMLType = 21
	GGMLTypeIQ2_S   GGMLType = 22
	GGMLTypeIQ4_XS  GGMLType = 23
	GGMLTypeI8      GGMLType = 24
	GGMLTypeI16     GGMLType = 25
	GGMLTypeI32     GGMLType = 26
	GGMLTypeI64     GGMLType = 27
	GGMLTypeF64     GGMLType = 28
	GGMLTypeIQ1_M   GGMLType = 29
	GGMLTypeBF16    GGMLType = 30
	GGMLTypeTQ1_0   GGMLType = 34
	GGMLTypeTQ2_0   GGMLType = 35
	GGMLTypeMXFP4   GGMLType = 39
)

// ggmlTypeInfo is a type's name, elements per block and bytes per block.
type ggmlTypeInfo struct {
	name      string
	blockSize int64
	typeSize  int64
}

var ggmlTypes = map[GGMLType]ggmlTypeInfo{
	GGMLTypeF32:     {"F32", 1, 4},
	GGMLTypeF16:     {"F16", 1, 2},
	GGMLTypeQ4_0:    {"Q4_0", 32, 18},
	GGMLTypeQ4_1:    {"Q4_1", 32, 20},
	GGMLTypeQ5_0:    {"Q5_0", 32, 22},
	GGMLTypeQ5_1:    {"Q5_1", 32, 24},
	GGMLTypeQ8_0:    {"Q8_0", 32, 34},
	GGMLTypeQ8_1:    {"Q8_1", 32, 36},
	GGMLTypeQ2_K:    {"Q2_K", 256, 84},
	GGMLTypeQ3_K:    {"Q3_K", 256, 110},
	GGMLTypeQ4_K:    {"Q4_K", 256, 144},
	GGMLTypeQ5_K:    {"Q5_K", 256, 176},
	GGMLTypeQ6_K:    {"Q6_K", 256, 210},
	GGMLTypeQ8_K:    {"Q8_K", 256, 292},
	GGMLTypeIQ2_XXS: {"IQ2_XXS", 256, 66},
	GGMLTypeIQ2_XS:  {"IQ2_XS", 256, 74},
	GGMLTypeIQ3_XXS: {"IQ3_XXS", 256, 98},
	GGMLTypeIQ1_S:   {"IQ1_S", 256, 50},
	GGMLTypeIQ4_NL:  {"IQ4_NL", 32, 18},
	GGMLTypeIQ3_S:   {"IQ3_S", 256, 110},
	GGMLTypeIQ2_S:   {"IQ2_S", 256, 82},
	GGMLTypeIQ4_XS:  {"IQ4_XS", 256, 136},
	GGMLTypeI8:      {"I8", 1, 1},
	GGMLTypeI16:     {"I16", 1, 2},
	GGMLTypeI32:     {"I32", 1, 4},
	GGMLTypeI64:     {"I64", 1, 8},
	GGMLTypeF64:     {"F64", 1, 8},
	GGMLTypeIQ1_M:   {"IQ1_M", 256, 56},
	GGMLTypeBF16:    {"BF16", 1, 2},
	GGMLTypeTQ1_0:   {"TQ1_0", 256, 54},
	GGMLTypeTQ2_0:   {"TQ2_0", 256, 66},
	GGMLTypeMXFP4:   {"MXFP4", 32, 17},
}

func (t GGMLType) String() string {
	if ti, ok := ggmlTypes[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// BlockSize is the number of elements in one quantization block (1 for
// plain types), or 0 for an unknown type.
func (t GGMLType) BlockSize() int64 { return ggmlTypes[t].blockSize }

// TypeSize is the number of bytes of one block, or 0 for an unknown type.
func (t GGMLType) TypeSize() int64 { return ggmlTypes[t].typeSize }

// GGUFTensorInfo describes one tensor of a GGUF file.
type GGUFTensorInfo struct {
	Name string
	// Dims are in ggml order: Dims[0] is the innermost (contiguous)
	// dimension. The row-major shape used by HF/MLX is Shape().
	Dims []uint64
	Type GGMLType
	// Offset is relative to the start of the tensor data section
	// (GGUFInfo.DataOffset); it is a multiple of the alignment.
	Offset uint64
	// Size is the tensor's size in bytes.
	Size uint64
}

// Shape is the row-major shape (ggml Dims reversed), e.g. [vocab, hidden]
// for token_embd.weight.
func (ti GGUFTensorInfo) Shape() []int64 {
	s := make([]int64, len(ti.Dims))
	for i, d := range ti.Dims {
		s[len(ti.Dims)-1-i] = int64(d)
	}
	return s
}

// Elements is the number of elements of the tensor.
func (ti GGUFTensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range ti.Dims {
		n *= d
	}
	return n
}

// GGUFInfo is everything in a GGUF file except the tensor data.
type GGUFInfo struct {
	Path    string
	Version uint32
	// Keys lists the metadata keys in file order.
	Keys     []string
	Metadata map[string]GGUFValue
	Tensors  []GGUFTensorInfo
	// Alignment is general.alignment, or GGUFDefaultAlignment.
	Alignment uint64
	// DataOffset is the absolute file offset of the tensor data section.
	DataOffset int64
	// FileSize is the size of the file in bytes.
	FileSize int64

	tensorIndex map[string]int
}

// ReadGGUFInfo reads the header, metadata and tensor infos of a GGUF file.
func ReadGGUFInfo(path string) (*GGUFInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("gguf %s: is a directory, not a GGUF file", path)
	}
	return ParseGGUF(bufio.NewReaderSize(f, 1<<20), st.Size(), path)
}

// ParseGGUF parses a GGUF header from r, which holds size bytes in all; name
// is used in errors. ReadGGUFInfo is the usual entry point.
func ParseGGUF(r io.Reader, size int64, name string) (*GGUFInfo, error) {
	p := &ggufParser{r: r, size: size, name: name}
	info, err := p.parse()
	if err != nil {
		return nil, err
	}
	return info, nil
}

type ggufParser struct {
	r    io.Reader
	size int64
	name string
	off  int64
	buf  [8]byte
}

// errorf builds an error naming the file and the offset where the problem is.
func (p *ggufParser) errorf(at int64, format string, args ...any) error {
	return fmt.Errorf("gguf %s: offset %d: %s", p.name, at, fmt.Sprintf(format, args...))
}

func (p *ggufParser) remaining() int64 { return p.size - p.off }

// need fails unless n more bytes remain in the file.
func (p *ggufParser) need(n int64, what string) error {
	if n < 0 || n > p.remaining() {
		return p.errorf(p.off, "truncated file: %s needs %d bytes but only %d remain (file size %d)",
			what, n, max(p.remaining(), 0), p.size)
	}
	return nil
}

func (p *ggufParser) read(b []byte, what string) error {
	if err := p.need(int64(len(b)), what); err != nil {
		return err
	}
	if _, err := io.ReadFull(p.r, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return p.errorf(p.off, "truncated file while reading %s", what)
		}
		return p.errorf(p.off, "reading %s: %v", what, err)
	}
	p.off += int64(len(b))
	return nil
}

func (p *ggufParser) u8(what string) (uint8, error) {
	if err := p.read(p.buf[:1], what); err != nil {
		return 0, err
	}
	return p.buf[0], nil
}

func (p *ggufParser) u16(what string) (uint16, error) {
	if err := p.read(p.buf[:2], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(p.buf[:2]), nil
}

func (p *ggufParser) u32(what string) (uint32, error) {
	if err := p.read(p.buf[:4], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(p.buf[:4]), nil
}

func (p *ggufParser) u64(what string) (uint64, error) {
	if err := p.read(p.buf[:8], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p.buf[:8]), nil
}

func (p *ggufParser) str(what string) (string, error) {
	at := p.off
	n, err := p.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(p.remaining()) {
		return "", p.errorf(at, "%s has length %d but only %d bytes remain in the file (corrupt or truncated)",
			what, n, p.remaining())
	}
	b := make([]byte, n)
	if err := p.read(b, what); err != nil {
		return "", err
	}
	return string(b), nil
}

func (p *ggufParser) parse() (*GGUFInfo, error) {
	magic, err := p.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != ggufMagic {
		var m [4]byte
		binary.LittleEndian.PutUint32(m[:], magic)
		return nil, p.errorf(0, "not a GGUF file: magic is %q, want \"GGUF\"", m[:])
	}
	version, err := p.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, p.errorf(4, "GGUF version 1 is not supported (only versions 2 and 3); reconvert the model")
	case version&0xffff == 0 && version != 0:
		return nil, p.errorf(4, "GGUF version field is %#x: a big-endian GGUF file, which is not supported", version)
	default:
		return nil, p.errorf(4, "unsupported GGUF version %d (supported: 2, 3)", version)
	}
	at := p.off
	nTensors, err := p.u64("tensor count")
	if err != nil {
		return nil, err
	}
	// A tensor info is at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
	if nTensors > uint64(p.remaining()/24) {
		return nil, p.errorf(at, "tensor count %d is impossible for a file of %d bytes (corrupt header)", nTensors, p.size)
	}
	at = p.off
	nKV, err := p.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// A key/value is at least 8 (key length) + 4 (type) + 1 (value) bytes.
	if nKV > uint64(p.remaining()/13) {
		return nil, p.errorf(at, "metadata count %d is impossible for a file of %d bytes (corrupt header)", nKV, p.size)
	}

	info := &GGUFInfo{
		Path:        p.name,
		Version:     version,
		Keys:        make([]string, 0, nKV),
		Metadata:    make(map[string]GGUFValue, nKV),
		Tensors:     make([]GGUFTensorInfo, 0, nTensors),
		FileSize:    p.size,
		tensorIndex: make(map[string]int, nTensors),
	}
	for i := uint64(0); i < nKV; i++ {
		at := p.off
		key, err := p.str(fmt.Sprintf("metadata key #%d", i))
		if err != nil {
			return nil, err
		}
		if _, dup := info.Metadata[key]; dup {
			return nil, p.errorf(at, "duplicate metadata key %q", key)
		}
		typ, err := p.u32(fmt.Sprintf("type of metadata key %q", key))
		if err != nil {
			return nil, err
		}
		v, err := p.value(GGUFValueType(typ), key, 0)
		if err != nil {
			return nil, err
		}
		info.Keys = append(info.Keys, key)
		info.Metadata[key] = v
	}

	info.Alignment = GGUFDefaultAlignment
	if v, ok := info.Metadata["general.alignment"]; ok {
		a, err := v.asUint()
		if err != nil || a == 0 || a&(a-1) != 0 || a > 1<<30 {
			return nil, fmt.Errorf("gguf %s: general.alignment must be a positive power of two, got %v (%s)", p.name, v.V, v.Type)
		}
		info.Alignment = a
	}

	for i := uint64(0); i < nTensors; i++ {
		at := p.off
		name, err := p.str(fmt.Sprintf("name of tensor #%d", i))
		if err != nil {
			return nil, err
		}
		if _, dup := info.tensorIndex[name]; dup {
			return nil, p.errorf(at, "duplicate tensor name %q", name)
		}
		nd, err := p.u32(fmt.Sprintf("dimension count of tensor %q", name))
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > ggufMaxDims {
			return nil, p.errorf(p.off-4, "tensor %q has %d dimensions (must be 1 to %d)", name, nd, ggufMaxDims)
		}
		ti := GGUFTensorInfo{Name: name, Dims: make([]uint64, nd)}
		elems := uint64(1)
		for d := range ti.Dims {
			dimAt := p.off
			n, err := p.u64(fmt.Sprintf("dimension %d of tensor %q", d, name))
			if err != nil {
				return nil, err
			}
			if n == 0 || n > uint64(p.size)*256 || elems > math.MaxInt64/n {
				return nil, p.errorf(dimAt, "tensor %q: dimension %d is %d, impossible for a file of %d bytes", name, d, n, p.size)
			}
			ti.Dims[d] = n
			elems *= n
		}
		if elems > uint64(p.size)*256 {
			return nil, p.errorf(at, "tensor %q: %d elements (dims %v) is impossible for a file of %d bytes", name, elems, ti.Dims, p.size)
		}
		typ, err := p.u32(fmt.Sprintf("type of tensor %q", name))
		if err != nil {
			return nil, err
		}
		ti.Type = GGMLType(typ)
		tinfo, known := ggmlTypes[ti.Type]
		if !known {
			return nil, p.errorf(p.off-4, "tensor %q has unknown ggml type %d", name, typ)
		}
		if ti.Dims[0]%uint64(tinfo.blockSize) != 0 {
			return nil, p.errorf(p.off-4, "tensor %q: innermost dimension %d is not a multiple of the %s block size %d",
				name, ti.Dims[0], ti.Type, tinfo.blockSize)
		}
		ti.Size = elems / uint64(tinfo.blockSize) * uint64(tinfo.typeSize)
		offAt := p.off
		ti.Offset, err = p.u64(fmt.Sprintf("data offset of tensor %q", name))
		if err != nil {
			return nil, err
		}
		if ti.Offset%info.Alignment != 0 {
			return nil, p.errorf(offAt, "tensor %q: data offset %d is not a multiple of the alignment %d", name, ti.Offset, info.Alignment)
		}
		info.tensorIndex[name] = len(info.Tensors)
		info.Tensors = append(info.Tensors, ti)
	}

	// The tensor data starts at the next multiple of the alignment.
	a := int64(info.Alignment)
	info.DataOffset = (p.off + a - 1) / a * a
	if len(info.Tensors) > 0 && info.DataOffset > p.size {
		return nil, p.errorf(p.off, "truncated file: tensor data would start at offset %d but the file has %d bytes", info.DataOffset, p.size)
	}
	dataLen := uint64(max(p.size-info.DataOffset, 0))
	for _, ti := range info.Tensors {
		if ti.Offset > dataLen || ti.Size > dataLen-ti.Offset {
			return nil, fmt.Errorf("gguf %s: tensor %q (%s, dims %v) needs bytes [%d, %d) of the data section, which has only %d bytes (truncated file?)",
				p.name, ti.Name, ti.Type, ti.Dims, int64(ti.Offset)+info.DataOffset, int64(ti.Offset+ti.Size)+info.DataOffset, dataLen)
		}
	}
	return info, nil
}

// value reads a value of type typ for key.
func (p *ggufParser) value(typ GGUFValueType, key string, depth int) (GGUFValue, error) {
	what := fmt.Sprintf("value of metadata key %q", key)
	switch typ {
	case GGUFTypeUint8:
		v, err := p.u8(what)
		return GGUFValue{typ, v}, err
	case GGUFTypeInt8:
		v, err := p.u8(what)
		return GGUFValue{typ, int8(v)}, err
	case GGUFTypeUint16:
		v, err := p.u16(what)
		return GGUFValue{typ, v}, err
	case GGUFTypeInt16:
		v, err := p.u16(what)
		return GGUFValue{typ, int16(v)}, err
	case GGUFTypeUint32:
		v, err := p.u32(what)
		return GGUFValue{typ, v}, err
	case GGUFTypeInt32:
		v, err := p.u32(what)
		return GGUFValue{typ, int32(v)}, err
	case GGUFTypeFloat32:
		v, err := p.u32(what)
		return GGUFValue{typ, math.Float32frombits(v)}, err
	case GGUFTypeBool:
		at := p.off
		v, err := p.u8(what)
		if err != nil {
			return GGUFValue{}, err
		}
		if v > 1 {
			return GGUFValue{}, p.errorf(at, "metadata key %q: bool value is %d, want 0 or 1", key, v)
		}
		return GGUFValue{typ, v == 1}, nil
	case GGUFTypeString:
		v, err := p.str(what)
		return GGUFValue{typ, v}, err
	case GGUFTypeUint64:
		v, err := p.u64(what)
		return GGUFValue{typ, v}, err
	case GGUFTypeInt64:
		v, err := p.u64(what)
		return GGUFValue{typ, int64(v)}, err
	case GGUFTypeFloat64:
		v, err := p.u64(what)
		return GGUFValue{typ, math.Float64frombits(v)}, err
	case GGUFTypeArray:
		a, err := p.array(key, depth)
		return GGUFValue{typ, a}, err
	}
	return GGUFValue{}, p.errorf(p.off-4, "metadata key %q has unknown value type %d", key, uint32(typ))
}

func (p *ggufParser) array(key string, depth int) (GGUFArray, error) {
	if depth >= ggufMaxArrayDepth {
		return GGUFArray{}, p.errorf(p.off, "metadata key %q: arrays nested deeper than %d", key, ggufMaxArrayDepth)
	}
	at := p.off
	et, err := p.u32(fmt.Sprintf("array element type of metadata key %q", key))
	if err != nil {
		return GGUFArray{}, err
	}
	elem := GGUFValueType(et)
	n, err := p.u64(fmt.Sprintf("array length of metadata key %q", key))
	if err != nil {
		return GGUFArray{}, err
	}
	// Bound the length by the bytes left: a string is at least 8 bytes (its
	// length), an array at least 12 (type and length).
	minSize := elem.fixedSize()
	switch elem {
	case GGUFTypeString:
		minSize = 8
	case GGUFTypeArray:
		minSize = 12
	}
	if minSize == 0 {
		return GGUFArray{}, p.errorf(at, "metadata key %q: array of unknown element type %d", key, et)
	}
	if n > uint64(p.remaining()/minSize) {
		return GGUFArray{}, p.errorf(at, "metadata key %q: array of %d %s elements cannot fit in the %d bytes left in the file (corrupt or truncated)",
			key, n, elem, p.remaining())
	}
	count := int(n)
	arr := GGUFArray{Elem: elem, Len: count}
	what := fmt.Sprintf("array element of metadata key %q", key)
	switch elem {
	case GGUFTypeString:
		v := make([]string, count)
		for i := range v {
			if v[i], err = p.str(what); err != nil {
				return arr, err
			}
		}
		arr.V = v
	case GGUFTypeArray:
		v := make([]GGUFArray, count)
		for i := range v {
			if v[i], err = p.array(key, depth+1); err != nil {
				return arr, err
			}
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
func decodeScalars(t GGUFValueType, raw []byte, count int) (any, error) {
	le := binary.LittleEndian
	switch t {
	case GGUFTypeUint8:
		return raw, nil
	case GGUFTypeInt8:
		v := make([]int8, count)
		for i := range v {
			v[i] = int8(raw[i])
		}
		return v, nil
	case GGUFTypeBool:
		v := make([]bool, count)
		for i := range v {
			if raw[i] > 1 {
				return nil, fmt.Errorf("bool element %d is %d, want 0 or 1", i, raw[i])
			}
			v[i] = raw[i] == 1
		}
		return v, nil
	case GGUFTypeUint16:
		v := make([]uint16, count)
		for i := range v {
			v[i] = le.Uint16(raw[2*i:])
		}
		return v, nil
	case GGUFTypeInt16:
		v := make([]int16, count)
		for i := range v {
			v[i] = int16(le.Uint16(raw[2*i:]))
		}
		return v, nil
	case GGUFTypeUint32:
		v := make([]uint32, count)
		for i := range v {
			v[i] = le.Uint32(raw[4*i:])
		}
		return v, nil
	case GGUFTypeInt32:
		v := make([]int32, count)
		for i := range v {
			v[i] = int32(le.Uint32(raw[4*i:]))
		}
		return v, nil
	case GGUFTypeFloat32:
		v := make([]float32, count)
		for i := range v {
			v[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return v, nil
	case GGUFTypeUint64:
		v := make([]uint64, count)
		for i := range v {
			v[i] = le.Uint64(raw[8*i:])
		}
		return v, nil
	case GGUFTypeInt64:
		v := make([]int64, count)
		for i := range v {
			v[i] = int64(le.Uint64(raw[8*i:]))
		}
		return v, nil
	case GGUFTypeFloat64:
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
func (v GGUFValue) asUint() (uint64, error) {
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
func (v GGUFValue) asInt() (int64, error) {
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
func (v GGUFValue) String() string {
	if a, ok := v.V.(GGUFArray); ok {
		return fmt.Sprintf("[%d x %s]", a.Len, a.Elem)
	}
	return fmt.Sprint(v.V)
}

// Has reports whether the metadata has key.
func (g *GGUFInfo) Has(key string) bool {
	_, ok := g.Metadata[key]
	return ok
}

// Value returns the raw value of key.
func (g *GGUFInfo) Value(key string) (GGUFValue, bool) {
	v, ok := g.Metadata[key]
	return v, ok
}

func (g *GGUFInfo) get(key string) (GGUFValue, error) {
	v, ok := g.Metadata[key]
	if !ok {
		return v, fmt.Errorf("gguf %s: metadata key %q not found", g.Path, key)
	}
	return v, nil
}

func (g *GGUFInfo) typeErr(key string, v GGUFValue, want string) error {
	got := v.Type.String()
	if a, ok := v.V.(GGUFArray); ok {
		got = "array of " + a.Elem.String()
	}
	return fmt.Errorf("gguf %s: metadata key %q is %s, want %s", g.Path, key, got, want)
}

// String returns the string value of key.
func (g *GGUFInfo) String(key string) (string, error) {
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
func (g *GGUFInfo) Uint(key string) (uint64, error) {
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
func (g *GGUFInfo) Int(key string) (int64, error) {
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
func (g *GGUFInfo) Float(key string) (float64, error) {
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
func (g *GGUFInfo) Bool(key string) (bool, error) {
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

func (g *GGUFInfo) array(key, want string) (GGUFArray, error) {
	v, err := g.get(key)
	if err != nil {
		return GGUFArray{}, err
	}
	a, ok := v.V.(GGUFArray)
	if !ok {
		return GGUFArray{}, g.typeErr(key, v, want)
	}
	return a, nil
}

// Strings returns the string-array value of key.
func (g *GGUFInfo) Strings(key string) ([]string, error) {
	a, err := g.array(key, "an array of strings")
	if err != nil {
		return nil, err
	}
	s, ok := a.V.([]string)
	if !ok {
		return nil, g.typeErr(key, GGUFValue{GGUFTypeArray, a}, "an array of strings")
	}
	return s, nil
}

// Ints returns an integer-array value of key (any integer element type) as
// []int64.
func (g *GGUFInfo) Ints(key string) ([]int64, error) {
	a, err := g.array(key, "an array of integers")
	if err != nil {
		return nil, err
	}
	if !a.Elem.isInt() {
		return nil, g.typeErr(key, GGUFValue{GGUFTypeArray, a}, "an array of integers")
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
func (g *GGUFInfo) Floats(key string) ([]float64, error) {
	a, err := g.array(key, "an array of floats")
	if err != nil {
		return nil, err
	}
	if !a.Elem.isFloat() && !a.Elem.isInt() {
		return nil, g.typeErr(key, GGUFValue{GGUFTypeArray, a}, "an array of floats")
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

// arrayScalar returns element i of a scalar array as a GGUFValue.
func arrayScalar(a GGUFArray, i int) GGUFValue {
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
	case []GGUFArray:
		x = s[i]
	}
	return GGUFValue{a.Elem, x}
}

// Architecture returns general.architecture (e.g. "llama").
func (g *GGUFInfo) Architecture() (string, error) {
	return g.String("general.architecture")
}

// ArchKey prefixes suffix with the file's architecture, e.g.
// ArchKey("block_count") is "llama.block_count" for a Llama GGUF. Without a
// general.architecture key it uses "llama".
func (g *GGUFInfo) ArchKey(suffix string) string {
	arch, err := g.Architecture()
	if err != nil || arch == "" {
		arch = "llama"
	}
	return arch + "." + strings.TrimPrefix(suffix, ".")
}

// Tensor returns the info of the named tensor.
func (g *GGUFInfo) Tensor(name string) (GGUFTensorInfo, bool) {
	i, ok := g.tensorIndex[name]
	if !ok {
		return GGUFTensorInfo{}, false
	}
	return g.Tensors[i], true
}

// TensorDataOffset is the absolute file offset of a tensor's data.
func (g *GGUFInfo) TensorDataOffset(ti GGUFTensorInfo) int64 {
	return g.DataOffset + int64(ti.Offset)
}

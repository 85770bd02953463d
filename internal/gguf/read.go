package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// Info is everything in a GGUF file except the tensor data.
type Info struct {
	Path    string
	Version uint32
	// Keys lists the metadata keys in file order.
	Keys     []string
	Metadata map[string]Value
	Tensors  []TensorInfo
	// Alignment is general.alignment, or DefaultAlignment.
	Alignment uint64
	// DataOffset is the absolute file offset of the tensor data section.
	DataOffset int64
	// FileSize is the size of the file in bytes.
	FileSize int64

	tensorIndex map[string]int
}

// ReadInfo reads the header, metadata and tensor infos of a GGUF file.
func ReadInfo(path string) (*Info, error) {
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
	return Parse(bufio.NewReaderSize(f, 1<<20), st.Size(), path)
}

// Parse parses a GGUF header from r, which holds size bytes in all; name
// is used in errors. ReadInfo is the usual entry point.
func Parse(r io.Reader, size int64, name string) (*Info, error) {
	p := &parser{r: r, size: size, name: name}
	info, err := p.parse()
	if err != nil {
		return nil, err
	}
	return info, nil
}

// capHint bounds a preallocation by a count read from the file: counts are
// already checked against the bytes left, but a slice of strings or arrays
// costs more memory per element than the file spends, so larger slices grow
// as their elements are actually read.
func capHint(n uint64) int { return int(min(n, 1<<12)) }

type parser struct {
	r    io.Reader
	size int64
	name string
	off  int64
	buf  [8]byte
}

// errorf builds an error naming the file and the offset where the problem is.
func (p *parser) errorf(at int64, format string, args ...any) error {
	return fmt.Errorf("gguf %s: offset %d: %s", p.name, at, fmt.Sprintf(format, args...))
}

func (p *parser) remaining() int64 { return p.size - p.off }

// need fails unless n more bytes remain in the file.
func (p *parser) need(n int64, what string) error {
	if n < 0 || n > p.remaining() {
		return p.errorf(p.off, "truncated file: %s needs %d bytes but only %d remain (file size %d)",
			what, n, max(p.remaining(), 0), p.size)
	}
	return nil
}

func (p *parser) read(b []byte, what string) error {
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

func (p *parser) u8(what string) (uint8, error) {
	if err := p.read(p.buf[:1], what); err != nil {
		return 0, err
	}
	return p.buf[0], nil
}

func (p *parser) u16(what string) (uint16, error) {
	if err := p.read(p.buf[:2], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(p.buf[:2]), nil
}

func (p *parser) u32(what string) (uint32, error) {
	if err := p.read(p.buf[:4], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(p.buf[:4]), nil
}

func (p *parser) u64(what string) (uint64, error) {
	if err := p.read(p.buf[:8], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p.buf[:8]), nil
}

func (p *parser) str(what string) (string, error) {
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

func (p *parser) parse() (*Info, error) {
	magic, err := p.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != Magic {
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

	info := &Info{
		Path:        p.name,
		Version:     version,
		Keys:        make([]string, 0, capHint(nKV)),
		Metadata:    make(map[string]Value, capHint(nKV)),
		Tensors:     make([]TensorInfo, 0, capHint(nTensors)),
		FileSize:    p.size,
		tensorIndex: make(map[string]int, capHint(nTensors)),
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
		v, err := p.value(ValueType(typ), key, 0)
		if err != nil {
			return nil, err
		}
		info.Keys = append(info.Keys, key)
		info.Metadata[key] = v
	}

	info.Alignment = DefaultAlignment
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
		if nd == 0 || nd > MaxDims {
			return nil, p.errorf(p.off-4, "tensor %q has %d dimensions (must be 1 to %d)", name, nd, MaxDims)
		}
		ti := TensorInfo{Name: name, Dims: make([]uint64, nd)}
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
		ti.Type = TensorType(typ)
		tinfo, known := tensorTypes[ti.Type]
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

// ReadTensor reads the encoded bytes of tensor ti from r, the file g was
// read from.
func (g *Info) ReadTensor(r io.ReaderAt, ti TensorInfo) ([]byte, error) {
	b := make([]byte, ti.Size)
	if _, err := r.ReadAt(b, g.TensorDataOffset(ti)); err != nil {
		return nil, fmt.Errorf("gguf %s: tensor %q: read %d bytes at offset %d: %w", g.Path, ti.Name, ti.Size, g.TensorDataOffset(ti), err)
	}
	return b, nil
}

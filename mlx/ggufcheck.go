package mlx

import (
	"bufio"
	bin "encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
)

// checkGGUF walks a GGUF file's header, metadata and tensor table with
// bounds checks before MLX sees it. MLX parses GGUF with gguflib, which
// trusts every length and offset in the file: a truncated or corrupt file
// makes it read past the end of its mapping and the process dies with
// SIGSEGV. checkGGUF turns those files into errors. It reads only the
// header and tables, never the tensor data.
func checkGGUF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	s := &ggufScan{r: bufio.NewReaderSize(f, 1<<16), size: st.Size()}
	return s.check()
}

type ggufScan struct {
	r    *bufio.Reader
	off  int64
	size int64
}

var errGGUFTruncated = errors.New("gguf: file truncated or corrupt (a length or count runs past the end of the file)")

func (s *ggufScan) need(n uint64) error {
	if n > uint64(s.size-s.off) {
		return errGGUFTruncated
	}
	return nil
}

func (s *ggufScan) read(n int) ([]byte, error) {
	if err := s.need(uint64(n)); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, errGGUFTruncated
	}
	s.off += int64(n)
	return b, nil
}

func (s *ggufScan) skip(n uint64) error {
	if err := s.need(n); err != nil {
		return err
	}
	if _, err := s.r.Discard(int(n)); err != nil {
		return errGGUFTruncated
	}
	s.off += int64(n)
	return nil
}

func (s *ggufScan) u32() (uint32, error) {
	b, err := s.read(4)
	if err != nil {
		return 0, err
	}
	return bin.LittleEndian.Uint32(b), nil
}

func (s *ggufScan) u64() (uint64, error) {
	b, err := s.read(8)
	if err != nil {
		return 0, err
	}
	return bin.LittleEndian.Uint64(b), nil
}

// str reads a GGUF string; with keep false it skips the bytes.
func (s *ggufScan) str(keep bool) (string, error) {
	n, err := s.u64()
	if err != nil {
		return "", err
	}
	if !keep || n > 1<<16 {
		return "", s.skip(n)
	}
	b, err := s.read(int(n))
	return string(b), err
}

// GGUF metadata value types and their sizes (0 for string and array).
var ggufValueSize = map[uint32]uint64{
	0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 0, 9: 0, 10: 8, 11: 8, 12: 8,
}

// ggml tensor types: elements per block and bytes per block. Types not
// listed (the IQ and ternary families) are refused: MLX cannot convert
// them either.
var ggmlBlock = map[uint32][2]uint64{
	0: {1, 4}, 1: {1, 2}, 2: {32, 18}, 3: {32, 20}, 6: {32, 22}, 7: {32, 24},
	8: {32, 34}, 9: {32, 36}, 10: {256, 84}, 11: {256, 110}, 12: {256, 144},
	13: {256, 176}, 14: {256, 210}, 15: {256, 292},
	24: {1, 1}, 25: {1, 2}, 26: {1, 4}, 27: {1, 8}, 28: {1, 8}, 30: {1, 2},
}

func (s *ggufScan) value(typ uint32, depth int) error {
	size, ok := ggufValueSize[typ]
	if !ok {
		return fmt.Errorf("gguf: unknown metadata value type %d", typ)
	}
	switch typ {
	case 8:
		_, err := s.str(false)
		return err
	case 9:
		if depth > 0 {
			return errors.New("gguf: nested metadata arrays are not supported")
		}
		et, err := s.u32()
		if err != nil {
			return err
		}
		n, err := s.u64()
		if err != nil {
			return err
		}
		if es := ggufValueSize[et]; es > 0 {
			hi, lo := bits.Mul64(n, es)
			if hi != 0 {
				return errGGUFTruncated
			}
			return s.skip(lo)
		}
		if n > uint64(s.size-s.off)/8 { // a string takes at least 8 bytes
			return errGGUFTruncated
		}
		for range n {
			if err := s.value(et, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return s.skip(size)
}

func (s *ggufScan) check() error {
	magic, err := s.read(4)
	if err != nil {
		return err
	}
	if string(magic) != "GGUF" {
		return fmt.Errorf("gguf: bad magic %q (not a GGUF file)", magic)
	}
	version, err := s.u32()
	if err != nil {
		return err
	}
	if version != 2 && version != 3 {
		return fmt.Errorf("gguf: unsupported version %d (want 2 or 3)", version)
	}
	nt, err := s.u64()
	if err != nil {
		return err
	}
	nkv, err := s.u64()
	if err != nil {
		return err
	}
	// Every metadata pair takes at least 13 bytes and every tensor entry
	// at least 24: counts beyond that cannot be right.
	if nkv > uint64(s.size)/13 || nt > uint64(s.size)/24 {
		return errGGUFTruncated
	}
	align := uint64(32)
	for range nkv {
		key, err := s.str(true)
		if err != nil {
			return err
		}
		typ, err := s.u32()
		if err != nil {
			return err
		}
		if key == "general.alignment" {
			if typ != 4 {
				return fmt.Errorf("gguf: general.alignment has value type %d, want uint32", typ)
			}
			a, err := s.u32()
			if err != nil {
				return err
			}
			if a == 0 || a&(a-1) != 0 {
				return fmt.Errorf("gguf: general.alignment %d is not a power of two", a)
			}
			align = uint64(a)
			continue
		}
		if err := s.value(typ, 0); err != nil {
			return err
		}
	}
	type span struct{ off, n uint64 }
	spans := make([]span, 0, nt)
	for i := range nt {
		if _, err := s.str(false); err != nil {
			return err
		}
		nd, err := s.u32()
		if err != nil {
			return err
		}
		if nd == 0 || nd > 4 {
			return fmt.Errorf("gguf: tensor %d has %d dimensions", i, nd)
		}
		elems := uint64(1)
		var ne0 uint64
		for d := range nd {
			n, err := s.u64()
			if err != nil {
				return err
			}
			if d == 0 {
				ne0 = n
			}
			hi, lo := bits.Mul64(elems, n)
			if hi != 0 || lo > uint64(s.size)*8 {
				return errGGUFTruncated
			}
			elems = lo
		}
		typ, err := s.u32()
		if err != nil {
			return err
		}
		blk, ok := ggmlBlock[typ]
		if !ok {
			return fmt.Errorf("gguf: tensor %d has unsupported ggml type %d", i, typ)
		}
		if ne0%blk[0] != 0 {
			return fmt.Errorf("gguf: tensor %d: row of %d elements is not a whole number of %d-element blocks", i, ne0, blk[0])
		}
		off, err := s.u64()
		if err != nil {
			return err
		}
		spans = append(spans, span{off, elems / blk[0] * blk[1]})
	}
	data := (uint64(s.off) + align - 1) / align * align
	for i, sp := range spans {
		end := data + sp.off + sp.n
		if sp.off > uint64(s.size) || end < data || end > uint64(s.size) {
			return fmt.Errorf("gguf: tensor %d (bytes %d..%d of the data) runs past the end of the file (%d bytes): truncated or corrupt", i, sp.off, sp.off+sp.n, s.size)
		}
	}
	return nil
}

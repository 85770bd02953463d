package mlx

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unsafe"

	"github.com/fungtrain/fungtrain/internal/gguf"
)

func splitBlob(p *C.char, n C.size_t) []string {
	if p == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(p))
	if n == 0 {
		return nil
	}
	b := C.GoBytes(unsafe.Pointer(p), C.int(n))
	parts := bytes.Split(b[:len(b)-1], []byte{0})
	out := make([]string, len(parts))
	for i, s := range parts {
		out[i] = string(s)
	}
	return out
}

func toMap(names []string, arrays []*Array) map[string]*Array {
	m := make(map[string]*Array, len(names))
	for i, n := range names {
		m[n] = arrays[i]
	}
	return m
}

// LoadSafetensors opens a .safetensors file. The arrays are lazy: their data
// is read from disk when they are first evaluated. The caller owns them.
func LoadSafetensors(path string) (map[string]*Array, map[string]string, error) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var v C.fgt_vec
	var names, meta *C.char
	var nl, ml C.size_t
	if C.fgt_load_safetensors(cp, &v, &names, &nl, &meta, &ml) != 0 {
		return nil, nil, fmt.Errorf("load safetensors %s: %w", path, lastError())
	}
	arrays := takeVec(v)
	kv := splitBlob(meta, ml)
	md := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	return toMap(splitBlob(names, nl), arrays), md, nil
}

// SaveSafetensors writes arrays and string metadata to path atomically: it
// writes a temporary file in the same directory, then renames it.
func SaveSafetensors(path string, arrays map[string]*Array, metadata map[string]string) error {
	names := make([]string, 0, len(arrays))
	for n := range arrays {
		if strings.IndexByte(n, 0) >= 0 {
			return fmt.Errorf("save safetensors %s: tensor name %q contains NUL", path, n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	list := make([]*Array, len(names))
	for i, n := range names {
		list[i] = arrays[n]
		if err := list[i].Err(); err != nil {
			return fmt.Errorf("save safetensors %s: tensor %s: %w", path, n, err)
		}
	}
	var nb, mb bytes.Buffer
	for _, n := range names {
		nb.WriteString(n)
		nb.WriteByte(0)
	}
	keys := slices.Sorted(maps.Keys(metadata))
	for _, k := range keys {
		mb.WriteString(k)
		mb.WriteByte(0)
		mb.WriteString(metadata[k])
		mb.WriteByte(0)
	}
	// MLX appends ".safetensors" to names that lack it, so the temporary
	// name keeps that suffix.
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.tmp-%d.safetensors", filepath.Base(path), os.Getpid()))
	cp := C.CString(tmp)
	defer C.free(unsafe.Pointer(cp))
	pa := cArrays(list)
	defer C.free(unsafe.Pointer(pa))
	cn := C.CString(nb.String() + "\x00")
	defer C.free(unsafe.Pointer(cn))
	meta := mb.Bytes()
	var cm *C.char
	if len(meta) > 0 {
		cm = (*C.char)(C.CBytes(meta))
		defer C.free(unsafe.Pointer(cm))
	}
	if C.fgt_save_safetensors(cp, pa, cn, C.int(len(list)), cm, C.size_t(len(meta))) != 0 {
		os.Remove(tmp)
		return fmt.Errorf("save safetensors %s: %w", path, lastError())
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save safetensors %s: %w", path, err)
	}
	return nil
}

// GGUFFile is what LoadGGUF returns: the tensors (quantized Q4_0, Q4_1 and
// Q8_0 tensors come as NAME.weight plus NAME.scales and NAME.biases, group
// size 32), string metadata (string lists joined with "\x01"), and numeric
// metadata as arrays. The caller owns every array.
type GGUFFile struct {
	Tensors     map[string]*Array
	Strings     map[string]string
	NumericMeta map[string]*Array
}

// LoadGGUF loads a GGUF file through MLX. The file's header and tables are
// read and checked first (gguf.ReadInfo, then CheckMLX), so a truncated or
// corrupt file is an error, not a crash inside MLX's parser. MLX converts
// BF16 tensors to float16 (values past ±65504 become ±Inf), so fungtrain's
// model loader reads GGUF tensors itself (llama.LoadModel); this binding
// remains for inspecting files MLX's way.
func LoadGGUF(path string) (*GGUFFile, error) {
	info, err := gguf.ReadInfo(path)
	if err != nil {
		return nil, fmt.Errorf("load gguf: %w", err)
	}
	if err := info.CheckMLX(); err != nil {
		return nil, fmt.Errorf("load gguf: %w", err)
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var v, mv C.fgt_vec
	var names, meta, mnames *C.char
	var nl, ml, mnl C.size_t
	if C.fgt_load_gguf(cp, &v, &names, &nl, &meta, &ml, &mv, &mnames, &mnl) != 0 {
		return nil, fmt.Errorf("load gguf %s: %w", path, lastError())
	}
	f := &GGUFFile{
		Tensors:     toMap(splitBlob(names, nl), takeVec(v)),
		Strings:     map[string]string{},
		NumericMeta: toMap(splitBlob(mnames, mnl), takeVec(mv)),
	}
	kv := splitBlob(meta, ml)
	for i := 0; i+1 < len(kv); i += 2 {
		f.Strings[kv[i]] = kv[i+1]
	}
	return f, nil
}

// Free frees every array of the file.
func (f *GGUFFile) Free() {
	for _, a := range f.Tensors {
		a.Free()
	}
	for _, a := range f.NumericMeta {
		a.Free()
	}
}

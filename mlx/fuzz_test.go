package mlx

import (
	"bytes"
	bin "encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unicode/utf8"
)

// stHeaderEntry is one tensor of a safetensors header, as the format's
// specification describes it; the fuzz target's own reading of the file.
type stHeaderEntry struct {
	Dtype   string  `json:"dtype"`
	Shape   []int64 `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

var stDtypeSize = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}

// stExpected reads file the way the safetensors specification says, for
// the fuzz oracle: the tensors it holds, and the raw bytes of each. ok is
// false when the file does not follow the specification exactly.
func stExpected(file []byte) (entries map[string]stHeaderEntry, raw map[string][]byte, ok bool) {
	if len(file) < 8 {
		return nil, nil, false
	}
	n := bin.LittleEndian.Uint64(file)
	if n > uint64(len(file)-8) {
		return nil, nil, false
	}
	var header map[string]json.RawMessage
	if !utf8.Valid(file[8:8+n]) || json.Unmarshal(file[8:8+n], &header) != nil || hasDuplicateKeys(file[8:8+n]) {
		return nil, nil, false
	}
	data := file[8+n:]
	entries, raw = map[string]stHeaderEntry{}, map[string][]byte{}
	for name, msg := range header {
		if name == "__metadata__" {
			var meta map[string]string
			if json.Unmarshal(msg, &meta) != nil {
				return nil, nil, false
			}
			continue
		}
		e, ok := stEntry(msg)
		if !ok || len(e.Offsets) != 2 {
			return nil, nil, false
		}
		size, known := stDtypeSize[e.Dtype]
		if !known {
			return nil, nil, false
		}
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && size > math.MaxInt32/d) {
				return nil, nil, false
			}
			size *= d
		}
		begin, end := e.Offsets[0], e.Offsets[1]
		if begin < 0 || end < begin || end > int64(len(data)) || end-begin != size {
			return nil, nil, false
		}
		entries[name], raw[name] = e, data[begin:end]
	}
	return entries, raw, true
}

// stEntry reads one tensor's entry by its exact keys: the specification's
// names are case-sensitive (encoding/json's struct decoding is not, and
// would take "dtYpe" for "dtype").
func stEntry(msg []byte) (stHeaderEntry, bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(msg, &fields) != nil || hasDuplicateKeys(msg) {
		return stHeaderEntry{}, false
	}
	var e stHeaderEntry
	for key, dst := range map[string]any{"dtype": &e.Dtype, "shape": &e.Shape, "data_offsets": &e.Offsets} {
		raw, ok := fields[key]
		if !ok || string(bytes.TrimSpace(raw)) == "null" || json.Unmarshal(raw, dst) != nil {
			return stHeaderEntry{}, false
		}
	}
	return e, true
}

// hasDuplicateKeys reports whether the top-level JSON object in b names a
// key twice (the specification's keys are unique; readers differ on which
// one wins).
func hasDuplicateKeys(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return true
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		key, isKey := tok.(string)
		if err != nil || !isKey || seen[key] {
			return true
		}
		seen[key] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return true
		}
	}
	return false
}

// FuzzLoadSafetensors loads arbitrary bytes as a safetensors file and reads
// every tensor. The process must never crash or hang: the load or the read
// fails with an error, or every tensor comes back. When the file follows
// the specification (checked by stExpected, independently of MLX), MLX must
// accept it and return exactly its tensors, shapes and bytes. No array may
// outlive the call.
func FuzzLoadSafetensors(f *testing.F) {
	header := func(h string) []byte {
		return append(bin.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	}
	f32 := bin.LittleEndian.AppendUint32(bin.LittleEndian.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-2))
	// Seeds: the files of TestSafetensorsCorrupt and well-formed ones.
	f.Add(append(header(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`), f32...))
	f.Add(append(header(`{"__metadata__":{"format":"mlx"},"a":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[],"data_offsets":[4,5]}}`), 1, 2, 3, 4, 5))
	f.Add(append(header(`{"w":{"dtype":"F32","shape":[40],"data_offsets":[0,160]}}`), make([]byte, 16)...))
	f.Add(append(header(`{"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}}`), make([]byte, 16)...))
	f.Add(append(header(`{"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}`), make([]byte, 8)...))
	f.Add(append(header(`{"w":{"dtype":"F32",`), make([]byte, 8)...))
	f.Add(append(bin.LittleEndian.AppendUint64(nil, 1<<40), `{"w":{}}`...))
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3, 4, 5})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file []byte) {
		path := filepath.Join(dir, "fuzz.safetensors")
		if err := os.WriteFile(path, file, 0o644); err != nil {
			t.Fatal(err)
		}
		entries, raw, wellFormed := stExpected(file)
		var problems []string
		err := Do(func() error {
			base := LiveArrays()
			defer func() {
				if n := LiveArrays() - base; n != 0 {
					problems = append(problems, fmt.Sprintf("%d arrays outlive the call", n))
				}
			}()
			arrays, _, err := LoadSafetensors(path)
			if err != nil {
				if wellFormed {
					problems = append(problems, fmt.Sprintf("a well-formed file is refused: %v", err))
				}
				return nil
			}
			defer func() {
				for _, a := range arrays {
					a.Free()
				}
			}()
			for _, name := range slices.Sorted(func(yield func(string) bool) {
				for n := range arrays {
					if !yield(n) {
						return
					}
				}
			}) {
				a := arrays[name]
				if int64(a.NBytes()) > int64(len(file)) {
					// Reading it would need more memory than the file holds:
					// the header lies, and the load should have said so.
					problems = append(problems, fmt.Sprintf("tensor %s claims %d bytes, the file has %d", name, a.NBytes(), len(file)))
					continue
				}
				got, err := a.Bytes()
				if !wellFormed {
					continue // an error or data, as long as nothing crashes
				}
				e, listed := entries[name]
				switch {
				case !listed:
					problems = append(problems, fmt.Sprintf("tensor %s is not in the header", name))
				case err != nil:
					problems = append(problems, fmt.Sprintf("tensor %s of a well-formed file: %v", name, err))
				case fmt.Sprint(a.Shape()) != fmt.Sprint(e.Shape):
					problems = append(problems, fmt.Sprintf("tensor %s has shape %v, the header says %v", name, a.Shape(), e.Shape))
				case e.Dtype != "BOOL" && !bytes.Equal(got, raw[name]):
					problems = append(problems, fmt.Sprintf("tensor %s reads %x, the file holds %x", name, got, raw[name]))
				}
			}
			if wellFormed && len(arrays) != len(entries) {
				problems = append(problems, fmt.Sprintf("%d tensors loaded, the header has %d", len(arrays), len(entries)))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Error(p)
		}
	})
}

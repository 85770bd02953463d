package gguf

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// kv is one metadata entry for a test file.
type kv struct {
	Key string
	V   Value
}

// tensorSpec is one tensor for a test file: row-major shape, data zeros
// unless given.
type tensorSpec struct {
	Name  string
	Type  TensorType
	Shape []int64
	Data  []byte
}

// encode writes a GGUF file with the Writer into a byte slice.
func encode(t testing.TB, kvs []kv, tensors []tensorSpec) []byte {
	t.Helper()
	w := NewWriter()
	for _, e := range kvs {
		if err := w.Set(e.Key, e.V); err != nil {
			t.Fatal(err)
		}
	}
	for _, ts := range tensors {
		data := ts.Data
		if data == nil {
			n := int64(1)
			for _, d := range ts.Shape {
				n *= d
			}
			data = make([]byte, n/ts.Type.BlockSize()*ts.Type.TypeSize())
		}
		if err := w.AddTensorBytes(ts.Name, ts.Type, ts.Shape, data); err != nil {
			t.Fatal(err)
		}
	}
	var b bytesBuffer
	if _, err := w.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.b
}

type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }

// writeFile writes b to a file in a fresh temp directory.
func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// asset returns the path of a test asset under the repository root.
func asset(t testing.TB, rel string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test asset %s is missing (%v): run ./build.sh test (or ./build.sh setup) to fetch the test assets", rel, err)
	}
	return p
}

const smolLM2 = "third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf"

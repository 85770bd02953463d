package llama

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/fungtrain/fungtrain/internal/gguf"
)

// ggufTestKV is one metadata entry for a test GGUF file.
type ggufTestKV struct {
	Key string
	V   any // uint8..float64, bool, string, []string, []int32, []uint32, []float32, []bool, [][]string, or a gguf.Value
}

// ggufTestTensor is one tensor for a test GGUF file; its data is zeros of
// the right size. Dims are in GGUF order (innermost first).
type ggufTestTensor struct {
	Name string
	Dims []uint64
	Type GGMLType
}

// ggufValue wraps a Go value as a GGUF metadata value.
func ggufValue(t testing.TB, v any) gguf.Value {
	arr := func(e gguf.ValueType, n int, x any) gguf.Value {
		return gguf.Value{Type: gguf.TypeArray, V: gguf.Array{Elem: e, Len: n, V: x}}
	}
	switch x := v.(type) {
	case gguf.Value:
		return x
	case uint8:
		return gguf.Value{Type: gguf.TypeUint8, V: x}
	case int8:
		return gguf.Value{Type: gguf.TypeInt8, V: x}
	case uint16:
		return gguf.Value{Type: gguf.TypeUint16, V: x}
	case int16:
		return gguf.Value{Type: gguf.TypeInt16, V: x}
	case uint32:
		return gguf.Uint32(x)
	case int32:
		return gguf.Int32(x)
	case float32:
		return gguf.Float32(x)
	case bool:
		return gguf.Bool(x)
	case string:
		return gguf.String(x)
	case uint64:
		return gguf.Value{Type: gguf.TypeUint64, V: x}
	case int64:
		return gguf.Value{Type: gguf.TypeInt64, V: x}
	case float64:
		return gguf.Value{Type: gguf.TypeFloat64, V: x}
	case []string:
		return gguf.Strings(x)
	case []int32:
		return gguf.Int32s(x)
	case []uint32:
		return arr(gguf.TypeUint32, len(x), x)
	case []float32:
		return gguf.Float32s(x)
	case []bool:
		return arr(gguf.TypeBool, len(x), x)
	case [][]string:
		inner := make([]gguf.Array, len(x))
		for i, s := range x {
			inner[i] = gguf.Array{Elem: gguf.TypeString, Len: len(s), V: s}
		}
		return arr(gguf.TypeArray, len(inner), inner)
	}
	t.Fatalf("ggufValue: unsupported value type %T", v)
	return gguf.Value{}
}

// writeTestGGUF encodes a GGUF file (zeroed tensor data) into a byte slice
// with internal/gguf's writer.
func writeTestGGUF(t testing.TB, kvs []ggufTestKV, tensors []ggufTestTensor) []byte {
	t.Helper()
	w := gguf.NewWriter()
	for _, kv := range kvs {
		if err := w.Set(kv.Key, ggufValue(t, kv.V)); err != nil {
			t.Fatalf("writeTestGGUF: %v", err)
		}
	}
	for _, tn := range tensors {
		shape := make([]int64, len(tn.Dims))
		n := uint64(1)
		for i, d := range tn.Dims {
			shape[len(tn.Dims)-1-i] = int64(d)
			n *= d
		}
		data := make([]byte, n/uint64(tn.Type.BlockSize())*uint64(tn.Type.TypeSize()))
		if err := w.AddTensorBytes(tn.Name, tn.Type, shape, data); err != nil {
			t.Fatalf("writeTestGGUF: %v", err)
		}
	}
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		t.Fatalf("writeTestGGUF: %v", err)
	}
	return b.Bytes()
}

// writeTestGGUFFile writes writeTestGGUF's bytes into a temp file.
func writeTestGGUFFile(t testing.TB, kvs []ggufTestKV, tensors []ggufTestTensor) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.gguf")
	if err := os.WriteFile(path, writeTestGGUF(t, kvs, tensors), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// repoRoot is the repository root (the parent of this package's directory).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source file")
	}
	return filepath.Dir(filepath.Dir(file))
}

// requireAsset returns the path of a test asset under the repository root and
// fails the test, telling how to fetch it, when it is missing.
func requireAsset(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test asset %s is missing (%v): run ./build.sh test (or ./build.sh setup) to fetch the test assets", rel, err)
	}
	return p
}

const (
	smolLM2GGUF     = "third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf"
	llama3TokDir    = "third_party/llama3-tokenizer"
	llama3TokJSON   = llama3TokDir + "/tokenizer.json"
	llama3TokConfig = llama3TokDir + "/tokenizer_config.json"
)

package llama

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// ggufTestKV is one metadata entry for the test-only GGUF writer.
type ggufTestKV struct {
	Key string
	V   any // uint8..float64, bool, string, []string, []int32, []uint32, []float32, []bool, [][]string
}

// ggufTestTensor is one tensor for the test-only GGUF writer; its data is
// zeros of the right size.
type ggufTestTensor struct {
	Name string
	Dims []uint64
	Type GGMLType
}

// writeTestGGUF encodes a minimal GGUF v3 file (header, metadata, tensor
// infos, zeroed tensor data) into a byte slice.
func writeTestGGUF(t testing.TB, kvs []ggufTestKV, tensors []ggufTestTensor) []byte {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) {
		if err := binary.Write(&b, le, v); err != nil {
			t.Fatalf("writeTestGGUF: %v", err)
		}
	}
	str := func(s string) {
		w(uint64(len(s)))
		b.WriteString(s)
	}
	w(uint32(ggufMagic))
	w(uint32(3))
	w(uint64(len(tensors)))
	w(uint64(len(kvs)))
	var value func(v any)
	value = func(v any) {
		switch x := v.(type) {
		case uint8:
			w(uint32(GGUFTypeUint8))
			w(x)
		case int8:
			w(uint32(GGUFTypeInt8))
			w(x)
		case uint16:
			w(uint32(GGUFTypeUint16))
			w(x)
		case int16:
			w(uint32(GGUFTypeInt16))
			w(x)
		case uint32:
			w(uint32(GGUFTypeUint32))
			w(x)
		case int32:
			w(uint32(GGUFTypeInt32))
			w(x)
		case float32:
			w(uint32(GGUFTypeFloat32))
			w(x)
		case bool:
			w(uint32(GGUFTypeBool))
			w(x)
		case string:
			w(uint32(GGUFTypeString))
			str(x)
		case uint64:
			w(uint32(GGUFTypeUint64))
			w(x)
		case int64:
			w(uint32(GGUFTypeInt64))
			w(x)
		case float64:
			w(uint32(GGUFTypeFloat64))
			w(x)
		case []string:
			w(uint32(GGUFTypeArray))
			w(uint32(GGUFTypeString))
			w(uint64(len(x)))
			for _, s := range x {
				str(s)
			}
		case []int32:
			w(uint32(GGUFTypeArray))
			w(uint32(GGUFTypeInt32))
			w(uint64(len(x)))
			w(x)
		case []uint32:
			w(uint32(GGUFTypeArray))
			w(uint32(GGUFTypeUint32))
			w(uint64(len(x)))
			w(x)
		case []float32:
			w(uint32(GGUFTypeArray))
			w(uint32(GGUFTypeFloat32))
			w(uint64(len(x)))
			w(x)
		case []bool:
			w(uint32(GGUFTypeArray))
			w(uint32(GGUFTypeBool))
			w(uint64(len(x)))
			w(x)
		case [][]string:
			w(uint32(GGUFTypeArray))
			w(uint32(GGUFTypeArray))
			w(uint64(len(x)))
			for _, inner := range x {
				w(uint32(GGUFTypeString))
				w(uint64(len(inner)))
				for _, s := range inner {
					str(s)
				}
			}
		default:
			t.Fatalf("writeTestGGUF: unsupported value type %T", v)
		}
	}
	align := uint64(GGUFDefaultAlignment)
	for _, kv := range kvs {
		str(kv.Key)
		value(kv.V)
		if kv.Key == "general.alignment" {
			align = uint64(kv.V.(uint32))
		}
	}
	var offset uint64
	sizes := make([]uint64, len(tensors))
	for i, tn := range tensors {
		str(tn.Name)
		w(uint32(len(tn.Dims)))
		n := uint64(1)
		for _, d := range tn.Dims {
			w(d)
			n *= d
		}
		w(uint32(tn.Type))
		w(offset)
		sizes[i] = n / uint64(tn.Type.BlockSize()) * uint64(tn.Type.TypeSize())
		offset += (sizes[i] + align - 1) / align * align
	}
	pad := func() {
		for uint64(b.Len())%align != 0 {
			b.WriteByte(0)
		}
	}
	if len(tensors) > 0 {
		pad()
		for _, s := range sizes {
			b.Write(make([]byte, s))
			pad()
		}
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

func TestGGUFWriterRoundTrip(t *testing.T) {
	kvs := []ggufTestKV{
		{"general.architecture", "llama"},
		{"general.alignment", uint32(64)},
		{"u8", uint8(7)}, {"i8", int8(-7)}, {"u16", uint16(65535)}, {"i16", int16(-300)},
		{"u32", uint32(4000000000)}, {"i32", int32(-5)}, {"f32", float32(1.5)}, {"b", true},
		{"u64", uint64(math.MaxUint64)}, {"i64", int64(math.MinInt64)}, {"f64", 2.25},
		{"strs", []string{"a", "", "ü"}}, {"ints", []int32{1, -2, 3}}, {"uints", []uint32{9}},
		{"floats", []float32{0.5, -1}}, {"bools", []bool{true, false}},
		{"nested", [][]string{{"x", "y"}, {}}},
	}
	tensors := []ggufTestTensor{
		{"a", []uint64{64, 3}, GGMLTypeQ4_1},
		{"b", []uint64{5}, GGMLTypeF32},
		{"c", []uint64{256, 2}, GGMLTypeQ6_K},
	}
	path := writeTestGGUFFile(t, kvs, tensors)
	g, err := ReadGGUFInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	if g.Version != 3 || g.Alignment != 64 || g.DataOffset%64 != 0 {
		t.Fatalf("version %d alignment %d data offset %d", g.Version, g.Alignment, g.DataOffset)
	}
	if len(g.Keys) != len(kvs) || g.Keys[0] != "general.architecture" || g.Keys[len(kvs)-1] != "nested" {
		t.Fatalf("keys %v", g.Keys)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	u, err := g.Uint("u32")
	check("u32", u, uint64(4000000000))
	check("u32 err", err, nil)
	u, _ = g.Uint("u64")
	check("u64", u, uint64(math.MaxUint64))
	u, _ = g.Uint("u8")
	check("u8", u, 7)
	i, _ := g.Int("i16")
	check("i16", i, -300)
	i, _ = g.Int("i64")
	check("i64", i, int64(math.MinInt64))
	f, _ := g.Float("f32")
	check("f32", f, 1.5)
	f, _ = g.Float("f64")
	check("f64", f, 2.25)
	f, _ = g.Float("u16")
	check("float of u16", f, 65535)
	bv, _ := g.Bool("b")
	check("b", bv, true)
	s, _ := g.Strings("strs")
	check("strs", fmt.Sprintf("%q", s), `["a" "" "ü"]`)
	is, _ := g.Ints("ints")
	check("ints", is, []int64{1, -2, 3})
	is, _ = g.Ints("uints")
	check("uints", is, []int64{9})
	fs, _ := g.Floats("floats")
	check("floats", fs, []float64{0.5, -1})
	arch, _ := g.Architecture()
	check("arch", arch, "llama")
	check("archkey", g.ArchKey("block_count"), "llama.block_count")
	nested, ok := g.Value("nested")
	if !ok || nested.V.(GGUFArray).Len != 2 || nested.V.(GGUFArray).V.([]GGUFArray)[0].V.([]string)[1] != "y" {
		t.Errorf("nested = %v", nested.V)
	}

	// Typed getters name the key in their errors.
	for _, c := range []struct {
		err  error
		want string
	}{
		{func() error { _, err := g.Uint("missing.key"); return err }(), `metadata key "missing.key" not found`},
		{func() error { _, err := g.Uint("i8"); return err }(), `metadata key "i8" is negative`},
		{func() error { _, err := g.String("u8"); return err }(), `metadata key "u8" is uint8, want string`},
		{func() error { _, err := g.Strings("ints"); return err }(), `metadata key "ints" is array of int32, want an array of strings`},
		{func() error { _, err := g.Int("u64"); return err }(), `metadata key "u64" is 18446744073709551615, too large`},
		{func() error { _, err := g.Float("strs"); return err }(), `metadata key "strs" is array of string, want a float`},
		{func() error { _, err := g.Bool("f32"); return err }(), `metadata key "f32" is float32, want bool`},
	} {
		if c.err == nil || !bytes.Contains([]byte(c.err.Error()), []byte(c.want)) {
			t.Errorf("error %v, want it to contain %q", c.err, c.want)
		}
	}

	if len(g.Tensors) != 3 {
		t.Fatalf("tensors %v", g.Tensors)
	}
	a, ok := g.Tensor("a")
	if !ok || a.Type != GGMLTypeQ4_1 || a.Size != 3*2*20 || fmt.Sprint(a.Shape()) != "[3 64]" || a.Elements() != 192 {
		t.Errorf("tensor a = %+v shape %v", a, a.Shape())
	}
	c, _ := g.Tensor("c")
	if c.Size != 2*210 || c.Type.String() != "Q6_K" || c.Offset%64 != 0 {
		t.Errorf("tensor c = %+v", c)
	}
	if g.TensorDataOffset(c)+int64(c.Size) > g.FileSize {
		t.Errorf("tensor c data past the end of the file")
	}
}

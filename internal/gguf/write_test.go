package gguf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// roundTripKVs has one key of every value type, arrays of several element
// types and a nested array.
var roundTripKVs = []kv{
	{"general.architecture", String("llama")},
	{"general.alignment", Uint32(64)},
	{"u8", Value{TypeUint8, uint8(7)}}, {"i8", Value{TypeInt8, int8(-7)}},
	{"u16", Value{TypeUint16, uint16(65535)}}, {"i16", Value{TypeInt16, int16(-300)}},
	{"u32", Uint32(4000000000)}, {"i32", Int32(-5)}, {"f32", Float32(1.5)}, {"b", Bool(true)},
	{"u64", Value{TypeUint64, uint64(math.MaxUint64)}}, {"i64", Value{TypeInt64, int64(math.MinInt64)}},
	{"f64", Value{TypeFloat64, 2.25}},
	{"strs", Strings([]string{"a", "", "ü"})}, {"ints", Int32s([]int32{1, -2, 3})},
	{"uints", Value{TypeArray, Array{TypeUint32, 1, []uint32{9}}}},
	{"floats", Float32s([]float32{0.5, -1})}, {"bools", Value{TypeArray, Array{TypeBool, 2, []bool{true, false}}}},
	{"nested", Value{TypeArray, Array{TypeArray, 2, []Array{{TypeString, 2, []string{"x", "y"}}, {TypeString, 0, []string{}}}}}},
}

func TestWriteReadRoundTrip(t *testing.T) {
	kvs := roundTripKVs
	tensors := []tensorSpec{
		{Name: "a", Type: Q4_1, Shape: []int64{3, 64}},
		{Name: "b", Type: F32, Shape: []int64{5}},
		{Name: "c", Type: Q6_K, Shape: []int64{2, 256}},
	}
	g, err := ReadInfo(writeFile(t, "rt.gguf", encode(t, kvs, tensors)))
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
	if !ok || nested.V.(Array).Len != 2 || nested.V.(Array).V.([]Array)[0].V.([]string)[1] != "y" {
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
	if !ok || a.Type != Q4_1 || a.Size != 3*2*20 || fmt.Sprint(a.Shape()) != "[3 64]" || a.Elements() != 192 {
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

// TestWriteValuesAndData checks that every value reads back deeply equal
// (Go type included) and that tensor data lands at the offsets the header
// gives, padded to the alignment.
func TestWriteValuesAndData(t *testing.T) {
	tensors := []tensorSpec{
		{Name: "x", Type: F32, Shape: []int64{3}, Data: []byte("0123456789ab")},
		{Name: "y", Type: F16, Shape: []int64{2, 3}, Data: []byte("ABCDEFGHIJKL")},
		{Name: "z", Type: Q8_0, Shape: []int64{32}, Data: bytes.Repeat([]byte{7}, 34)},
	}
	file := encode(t, roundTripKVs, tensors)
	g, err := Parse(bytes.NewReader(file), int64(len(file)), "mem.gguf")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range roundTripKVs {
		if got := g.Metadata[e.Key]; !reflect.DeepEqual(got, e.V) {
			t.Errorf("%s: read %#v, wrote %#v", e.Key, got, e.V)
		}
	}
	for i, ts := range tensors {
		ti := g.Tensors[i]
		if ti.Name != ts.Name || ti.Type != ts.Type || fmt.Sprint(ti.Shape()) != fmt.Sprint(ts.Shape) {
			t.Errorf("tensor %d: %+v, want %s %s %v", i, ti, ts.Name, ts.Type, ts.Shape)
		}
		off := g.TensorDataOffset(ti)
		if off%64 != 0 {
			t.Errorf("tensor %s at offset %d, not 64-aligned", ti.Name, off)
		}
		if got := file[off : off+int64(ti.Size)]; !bytes.Equal(got, ts.Data) {
			t.Errorf("tensor %s data %q, want %q", ti.Name, got, ts.Data)
		}
	}
	if len(file)%64 != 0 {
		t.Errorf("file of %d bytes: the last tensor is not padded to the alignment", len(file))
	}
}

func TestWriterErrors(t *testing.T) {
	cases := []struct {
		name string
		do   func(w *Writer) error
		want string
	}{
		{"empty key", func(w *Writer) error { return w.Set("", String("x")) }, "empty metadata key"},
		{"duplicate key", func(w *Writer) error { w.Set("a", String("x")); return w.Set("a", String("y")) }, `"a" set twice`},
		{"mistyped scalar", func(w *Writer) error { return w.Set("a", Value{TypeUint32, int32(1)}) }, "holds int32, want uint32"},
		{"mistyped array", func(w *Writer) error { return w.Set("a", Value{TypeArray, Array{TypeInt32, 1, []uint32{1}}}) }, "holds []uint32"},
		{"array length", func(w *Writer) error { return w.Set("a", Value{TypeArray, Array{TypeString, 3, []string{"x"}}}) }, "says 3 elements but holds 1"},
		{"unknown type", func(w *Writer) error { return w.Set("a", Value{ValueType(99), 1}) }, "unknown value type 99"},
		{"bad alignment", func(w *Writer) error { return w.Set("general.alignment", Uint32(24)) }, "power of two"},
		{"alignment type", func(w *Writer) error { return w.Set("general.alignment", Value{TypeUint64, uint64(32)}) }, "uint32 power of two"},
		{"duplicate tensor", func(w *Writer) error {
			w.AddTensorBytes("t", F32, []int64{1}, make([]byte, 4))
			return w.AddTensorBytes("t", F32, []int64{1}, make([]byte, 4))
		}, `"t" added twice`},
		{"partial block", func(w *Writer) error { return w.AddTensorBytes("t", Q8_0, []int64{2, 16}, make([]byte, 68)) }, "not whole Q8_0 blocks"},
		{"no dims", func(w *Writer) error { return w.AddTensorBytes("t", F32, nil, nil) }, "0 dimensions"},
		{"zero dim", func(w *Writer) error { return w.AddTensorBytes("t", F32, []int64{4, 0}, nil) }, "shape [4 0]"},
		{"data size", func(w *Writer) error { return w.AddTensorBytes("t", F16, []int64{4}, make([]byte, 7)) }, "7 bytes of data, want 8"},
		{"callback size", func(w *Writer) error {
			w.AddTensor("t", F32, []int64{2}, func(out io.Writer) error { _, err := out.Write(make([]byte, 5)); return err })
			_, err := w.WriteTo(io.Discard)
			return err
		}, `tensor "t": wrote 5 bytes, want 8`},
		{"callback error", func(w *Writer) error {
			w.AddTensor("t", F32, []int64{2}, func(io.Writer) error { return errors.New("boom") })
			_, err := w.WriteTo(io.Discard)
			return err
		}, `tensor "t": boom`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.do(NewWriter())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestWriteFileAtomic: a failed write leaves no file behind and never a
// partial one; a good write replaces the old file whole.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	w := NewWriter()
	w.Set("general.architecture", String("llama"))
	w.AddTensor("t", F32, []int64{2}, func(io.Writer) error { return errors.New("disk on fire") })
	if err := w.WriteFile(path); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("error %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a failed write left %v", entries)
	}
	good := encode(t, goodKVs, goodTensors)
	w = NewWriter()
	for _, e := range goodKVs {
		w.Set(e.Key, e.V)
	}
	w.AddTensorBytes("w", Q8_0, []int64{4, 32}, make([]byte, 4*34))
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, good) {
		t.Errorf("WriteFile wrote %d bytes, WriteTo %d", len(b), len(good))
	}
}

func TestCheckMLX(t *testing.T) {
	cases := []struct {
		name    string
		kvs     []kv
		tensors []tensorSpec
		want    string
	}{
		{"good", goodKVs, goodTensors, ""},
		{"alignment not uint32", []kv{{"general.alignment", Value{TypeUint64, uint64(32)}}}, nil, "general.alignment is uint64, want uint32"},
		{"nested array", roundTripKVs[2:], nil, `"nested" is an array of arrays`},
		{"IQ type", goodKVs, []tensorSpec{{Name: "q", Type: IQ4_NL, Shape: []int64{32}}}, `tensor "q" has type IQ4_NL`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var file []byte
			if c.name == "alignment not uint32" {
				// The writer refuses it: write another key, then rename it
				// (the key's text starts at offset 32).
				file = encode(t, []kv{{"general.alignmenX", Value{TypeUint64, uint64(32)}}}, nil)
				file[32+16] = 't'
			} else {
				file = encode(t, c.kvs, c.tensors)
			}
			g, err := Parse(bytes.NewReader(file), int64(len(file)), c.name+".gguf")
			if err != nil {
				t.Fatal(err)
			}
			err = g.CheckMLX()
			if c.want == "" {
				if err != nil {
					t.Errorf("CheckMLX: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.name+".gguf") {
				t.Errorf("error %v, want it to name the file and contain %q", err, c.want)
			}
		})
	}
}

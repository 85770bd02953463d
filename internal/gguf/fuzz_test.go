package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"testing"
)

// Fuzz targets. Short runs (a minute each):
//
//	go test -run '^$' -fuzz FuzzRead -fuzztime 1m ./internal/gguf
//	go test -run '^$' -fuzz FuzzWriteRead -fuzztime 1m ./internal/gguf
//
// Inputs that fail are saved under testdata/fuzz/<target>/ and replayed by
// every plain go test run.

// readSeeds are the bad-input test files plus valid ones.
func readSeeds(t testing.TB) [][]byte {
	good := encode(t, goodKVs, goodTensors)
	le := binary.LittleEndian
	mutate := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	return [][]byte{
		good,
		encode(t, roundTripKVs, []tensorSpec{{Name: "a", Type: Q4_1, Shape: []int64{3, 64}}, {Name: "c", Type: Q6_K, Shape: []int64{2, 256}}}),
		nil,
		[]byte("PK\x03\x04 this is a zip file........"),
		mutate(func(b []byte) { le.PutUint32(b[4:], 1) }),
		mutate(func(b []byte) { binary.BigEndian.PutUint32(b[4:], 3) }),
		mutate(func(b []byte) { le.PutUint64(b[16:], 1<<60) }),
		mutate(func(b []byte) { le.PutUint64(b[8:], 1<<40) }),
		mutate(func(b []byte) { le.PutUint64(b[24:], 1<<62) }),
		mutate(func(b []byte) { le.PutUint32(b[52:], 77) }),
		mutate(func(b []byte) { le.PutUint64(b[56:], 1<<50) }),
		good[:70],
		good[:len(good)-150],
		good[:len(good)-40],
	}
}

// FuzzRead: arbitrary bytes give an error or a parse whose tensors lie
// inside the file, whose values are well formed and re-encode to the same
// metadata; never a panic, and memory in proportion to the input.
func FuzzRead(f *testing.F) {
	for _, s := range readSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g, err := Parse(bytes.NewReader(data), int64(len(data)), "fuzz.gguf")
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64*uint64(len(data))+4<<20 {
			t.Fatalf("parsing %d bytes allocated %d bytes", len(data), alloc)
		}
		if err != nil {
			return
		}
		if len(g.Keys) != len(g.Metadata) {
			t.Fatalf("%d keys, %d metadata entries", len(g.Keys), len(g.Metadata))
		}
		for _, k := range g.Keys {
			if err := CheckValue(g.Metadata[k]); err != nil {
				t.Fatalf("key %q: parsed value is malformed: %v", k, err)
			}
		}
		for _, ti := range g.Tensors {
			end := g.TensorDataOffset(ti) + int64(ti.Size)
			if end > int64(len(data)) || g.TensorDataOffset(ti) < g.DataOffset {
				t.Fatalf("tensor %q spans [%d, %d) of a %d-byte file", ti.Name, g.TensorDataOffset(ti), end, len(data))
			}
		}
		_ = g.CheckMLX()
		if v, ok := g.Metadata["general.alignment"]; ok && v.Type != TypeUint32 {
			return // the writer only writes uint32 alignments
		}
		w := NewWriter()
		for _, k := range g.Keys {
			if err := w.Set(k, g.Metadata[k]); err != nil {
				t.Fatalf("re-encode key %q: %v", k, err)
			}
		}
		var b bytes.Buffer
		if _, err := w.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		g2, err := Parse(bytes.NewReader(b.Bytes()), int64(b.Len()), "again.gguf")
		if err != nil {
			t.Fatalf("re-encoded metadata does not parse: %v", err)
		}
		if !reflect.DeepEqual(g.Keys, g2.Keys) || !equalMetadata(g.Metadata, g2.Metadata) {
			t.Fatalf("metadata changed through write and read")
		}
	})
}

// equalMetadata compares values, treating NaN floats as equal bit patterns.
func equalMetadata(a, b map[string]Value) bool {
	return fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

// FuzzWriteRead: metadata and tensors built from the fuzz input are written
// and read back equal: every key, value (with its Go type), tensor name,
// type, shape, offset and data byte.
func FuzzWriteRead(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x08hello\x09\x08\x02ab\x00\x01\x05\x02\x11\x22"))
	f.Add(bytes.Repeat([]byte{0x9d, 0x41, 0x07, 0xff, 0x00, 0x20}, 40))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &byteSource{b: data}
		w := NewWriter()
		var kvs []kv
		for i := range int(src.u8() % 12) {
			e := kv{fmt.Sprintf("k%d.%s", i, src.str(8)), src.value(0)}
			if src.u8()%8 == 0 {
				e = kv{"general.alignment", Uint32(1 << (src.u8() % 9))}
			}
			if err := w.Set(e.Key, e.V); err != nil {
				if e.Key == "general.alignment" {
					continue // set twice
				}
				t.Fatalf("set %q: %v", e.Key, err)
			}
			kvs = append(kvs, e)
		}
		types := []TensorType{F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K, I8}
		var tensors []tensorSpec
		for i := range int(src.u8() % 5) {
			typ := types[int(src.u8())%len(types)]
			shape := make([]int64, 1+int(src.u8()%3))
			for d := range shape {
				shape[d] = 1 + int64(src.u8()%4)
			}
			shape[len(shape)-1] *= typ.BlockSize()
			n := int64(1)
			for _, d := range shape {
				n *= d
			}
			ts := tensorSpec{Name: fmt.Sprintf("t%d.%s", i, src.str(6)), Type: typ, Shape: shape, Data: make([]byte, n/typ.BlockSize()*typ.TypeSize())}
			for j := range ts.Data {
				ts.Data[j] = src.u8()
			}
			if err := w.AddTensorBytes(ts.Name, ts.Type, ts.Shape, ts.Data); err != nil {
				t.Fatal(err)
			}
			tensors = append(tensors, ts)
		}
		var b bytes.Buffer
		if _, err := w.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		file := b.Bytes()
		g, err := Parse(bytes.NewReader(file), int64(len(file)), "rt.gguf")
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		if len(g.Keys) != len(kvs) {
			t.Fatalf("%d keys, wrote %d", len(g.Keys), len(kvs))
		}
		for i, e := range kvs {
			if g.Keys[i] != e.Key || fmt.Sprintf("%#v", g.Metadata[e.Key]) != fmt.Sprintf("%#v", e.V) {
				t.Fatalf("key %d: read %q = %#v, wrote %q = %#v", i, g.Keys[i], g.Metadata[g.Keys[i]], e.Key, e.V)
			}
		}
		if len(g.Tensors) != len(tensors) {
			t.Fatalf("%d tensors, wrote %d", len(g.Tensors), len(tensors))
		}
		for i, ts := range tensors {
			ti := g.Tensors[i]
			if ti.Name != ts.Name || ti.Type != ts.Type || fmt.Sprint(ti.Shape()) != fmt.Sprint(ts.Shape) || ti.Offset%g.Alignment != 0 {
				t.Fatalf("tensor %d: read %+v, wrote %s %s %v", i, ti, ts.Name, ts.Type, ts.Shape)
			}
			off := g.TensorDataOffset(ti)
			if !bytes.Equal(file[off:off+int64(ti.Size)], ts.Data) {
				t.Fatalf("tensor %s: data differs", ts.Name)
			}
		}
	})
}

// byteSource turns fuzz bytes into choices; past the end it gives zeros.
type byteSource struct {
	b []byte
	i int
}

func (s *byteSource) u8() uint8 {
	if s.i >= len(s.b) {
		return 0
	}
	s.i++
	return s.b[s.i-1]
}

func (s *byteSource) u64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(s.u8())
	}
	return v
}

func (s *byteSource) str(maxLen int) string {
	n := int(s.u8()) % (maxLen + 1)
	out := make([]byte, n)
	for i := range out {
		out[i] = s.u8()
	}
	return string(out)
}

// value builds a value of a type the input picks; arrays nest at most 3 deep.
func (s *byteSource) value(depth int) Value {
	t := ValueType(s.u8() % 13)
	if t == TypeArray && depth >= 3 {
		t = TypeString
	}
	if t == TypeArray {
		a := s.array(depth + 1)
		return Value{TypeArray, a}
	}
	return Value{t, s.scalar(t)}
}

func (s *byteSource) scalar(t ValueType) any {
	u := s.u64()
	switch t {
	case TypeUint8:
		return uint8(u)
	case TypeInt8:
		return int8(u)
	case TypeUint16:
		return uint16(u)
	case TypeInt16:
		return int16(u)
	case TypeUint32:
		return uint32(u)
	case TypeInt32:
		return int32(u)
	case TypeFloat32:
		return math.Float32frombits(uint32(u))
	case TypeBool:
		return u&1 == 1
	case TypeString:
		return s.str(16)
	case TypeUint64:
		return u
	case TypeInt64:
		return int64(u)
	case TypeFloat64:
		return math.Float64frombits(u)
	}
	panic("unreachable")
}

func (s *byteSource) array(depth int) Array {
	elem := ValueType(s.u8() % 13)
	if elem == TypeArray && depth >= 3 {
		elem = TypeUint8
	}
	n := int(s.u8() % 6)
	sl := reflect.MakeSlice(reflect.SliceOf(goTypes[elem]), n, n)
	for i := range n {
		var x any
		if elem == TypeArray {
			x = s.array(depth + 1)
		} else {
			x = s.scalar(elem)
		}
		sl.Index(i).Set(reflect.ValueOf(x))
	}
	return Array{elem, n, sl.Interface()}
}

package gguf

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
)

// Tests against gguf-py, llama.cpp's own Python GGUF package (its
// converter quantizes with the same code), run from the test venv.

// ref runs testdata/gguf_ref.py.
func ref(t *testing.T, req, out any) {
	t.Helper()
	in, _ := json.Marshal(req)
	cmd := exec.Command(testenv.Python(t), filepath.Join("testdata", "gguf_ref.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("gguf_ref.py %v: %v\n%s", req, err, stderr.String())
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 64-bit integers exactly
	if err := dec.Decode(out); err != nil {
		t.Fatalf("gguf_ref.py answer: %v", err)
	}
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// encodeInputs are blocks of 32 values: random normals at several scales,
// and blocks that probe the rounding rules: an all-zero block, a single
// value, exact rounding ties of Q8_0 (d = 1), float16 overflow and
// subnormals, bfloat16 ties, infinities (and, for the float types, NaN).
func encodeInputs(withNaN bool) []float32 {
	r := rand.New(rand.NewSource(7))
	var v []float32
	for _, scale := range []float64{1, 0.02, 300, 1e-6} {
		for range 4 * 64 {
			v = append(v, float32(r.NormFloat64()*scale))
		}
	}
	block := func(f func(i int) float32) {
		for i := range 32 {
			v = append(v, f(i))
		}
	}
	block(func(int) float32 { return 0 })
	block(func(i int) float32 { return map[bool]float32{true: -3.75}[i == 5] })
	block(func(i int) float32 { // max 127, so d = 1 and q = round(x): ties at .5
		if i == 0 {
			return 127
		}
		return float32(i-16) + 0.5
	})
	block(func(i int) float32 { return float32(i-16) * 4096 })                             // past float16's range
	block(func(i int) float32 { return float32(i+1) * 1e-7 })                              // float16 subnormals
	block(func(i int) float32 { return -float32(i) / 8 })                                  // Q4_0 max magnitude negative
	block(func(i int) float32 { return math.Float32frombits(0x3f808000 + uint32(i)<<16) }) // bfloat16 ties
	if withNaN {
		block(func(i int) float32 {
			switch i % 4 {
			case 0:
				return float32(math.Inf(1))
			case 1:
				return float32(math.Inf(-1))
			case 2:
				return float32(math.NaN())
			}
			return 1.5
		})
	}
	return v
}

// TestEncodeMatchesGGUFPy: F16, BF16, Q8_0 and Q4_0 encodings are byte for
// byte gguf-py's quantize.
func TestEncodeMatchesGGUFPy(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []TensorType{F16, BF16, Q8_0, Q4_0} {
		t.Run(typ.String(), func(t *testing.T) {
			src := encodeInputs(typ.BlockSize() == 1)
			in, out := filepath.Join(dir, typ.String()+".f32"), filepath.Join(dir, typ.String()+".out")
			os.WriteFile(in, f32Bytes(src), 0o644)
			var ok any
			ref(t, map[string]any{"op": "quantize", "type": typ.String(), "in": in, "cols": 32, "out": out}, &ok)
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Encode(nil, typ, src)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d bytes, gguf-py %d", len(got), len(want))
			}
			bs := int(typ.TypeSize())
			diff := 0
			for b := 0; b < len(got)/bs; b++ {
				if !bytes.Equal(got[b*bs:(b+1)*bs], want[b*bs:(b+1)*bs]) {
					if diff++; diff <= 3 {
						n := int(typ.BlockSize())
						t.Errorf("block %d (values %v): fungtrain %x, gguf-py %x", b, src[b*n:(b+1)*n], got[b*bs:(b+1)*bs], want[b*bs:(b+1)*bs])
					}
				}
			}
			t.Logf("%d values, %d blocks differ", len(src), diff)
		})
	}
}

// TestDecodeMatchesGGUFPy: decoding F16, BF16, Q8_0, Q4_0 and Q4_1 bytes
// (random, with finite float16 scales) gives gguf-py's dequantized values.
func TestDecodeMatchesGGUFPy(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewSource(8))
	for _, typ := range []TensorType{F16, BF16, Q8_0, Q4_0, Q4_1} {
		t.Run(typ.String(), func(t *testing.T) {
			n := 8 * 64
			raw := make([]byte, n/int(typ.BlockSize())*int(typ.TypeSize()))
			r.Read(raw)
			// Finite values: clear the top exponent bit of every 16-bit float.
			switch typ {
			case F16, BF16:
				for i := 1; i < len(raw); i += 2 {
					raw[i] &= 0x3f
				}
			default:
				bs := int(typ.TypeSize())
				for b := 0; b < len(raw)/bs; b++ {
					raw[b*bs+1] &= 0x3f
					if typ == Q4_1 {
						raw[b*bs+3] &= 0x3f
					}
				}
			}
			in, out := filepath.Join(dir, typ.String()+".raw"), filepath.Join(dir, typ.String()+".f32")
			os.WriteFile(in, raw, 0o644)
			var ok any
			ref(t, map[string]any{"op": "dequantize", "type": typ.String(), "in": in, "cols": 64, "out": out}, &ok)
			wb, _ := os.ReadFile(out)
			got, err := Decode(typ, raw, n)
			if err != nil {
				t.Fatal(err)
			}
			if len(wb) != 4*n {
				t.Fatalf("gguf-py gave %d bytes", len(wb))
			}
			for i, g := range got {
				w := math.Float32frombits(binary.LittleEndian.Uint32(wb[4*i:]))
				if g != w {
					t.Fatalf("value %d: %g, gguf-py %g", i, g, w)
				}
			}
		})
	}
}

// TestWriterReadByGGUFPy: gguf-py's GGUFReader reads a file from the Writer
// with every key, its value types and value, and every tensor's type,
// shape and bytes.
func TestWriterReadByGGUFPy(t *testing.T) {
	r := rand.New(rand.NewSource(9))
	var tensors []tensorSpec
	for i, typ := range []TensorType{F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K} {
		shape := []int64{int64(2 + i%3), 2 * typ.BlockSize()}
		if i == 0 {
			shape = []int64{7}
		}
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		data := make([]byte, n/typ.BlockSize()*typ.TypeSize())
		r.Read(data)
		tensors = append(tensors, tensorSpec{Name: fmt.Sprintf("blk.%d.t_%s", i, typ), Type: typ, Shape: shape, Data: data})
	}
	path := writeFile(t, "all.gguf", encode(t, roundTripKVs, tensors))
	var got struct {
		Fields map[string]struct {
			Types []string `json:"types"`
			Value any      `json:"value"`
		} `json:"fields"`
		Tensors []struct {
			Name  string  `json:"name"`
			Type  string  `json:"type"`
			Shape []int64 `json:"shape"`
			Hex   string  `json:"hex"`
		} `json:"tensors"`
	}
	ref(t, map[string]any{"op": "read", "path": path}, &got)
	pyType := map[ValueType]string{TypeUint8: "UINT8", TypeInt8: "INT8", TypeUint16: "UINT16", TypeInt16: "INT16",
		TypeUint32: "UINT32", TypeInt32: "INT32", TypeFloat32: "FLOAT32", TypeBool: "BOOL", TypeString: "STRING",
		TypeArray: "ARRAY", TypeUint64: "UINT64", TypeInt64: "INT64", TypeFloat64: "FLOAT64"}
	for _, e := range roundTripKVs {
		f, ok := got.Fields[e.Key]
		if !ok {
			t.Errorf("gguf-py has no key %s", e.Key)
			continue
		}
		want := []string{pyType[e.V.Type]}
		for a, isArr := e.V.V.(Array); isArr; a, isArr = nestedFirst(a) {
			want = append(want, pyType[a.Elem])
		}
		if strings.Join(f.Types, ",") != strings.Join(want, ",") {
			t.Errorf("%s: gguf-py types %v, want %v", e.Key, f.Types, want)
		}
		if e.Key == "nested" {
			continue // gguf-py's contents() does not walk arrays of arrays
		}
		wantV, _ := json.Marshal(jsonValue(e.V.V))
		var want2 any
		dec := json.NewDecoder(bytes.NewReader(wantV))
		dec.UseNumber()
		dec.Decode(&want2)
		if !sameJSON(f.Value, want2) {
			t.Errorf("%s: gguf-py value %v, want %s", e.Key, f.Value, wantV)
		}
	}
	if len(got.Tensors) != len(tensors) {
		t.Fatalf("gguf-py lists %d tensors, want %d", len(got.Tensors), len(tensors))
	}
	for i, ts := range tensors {
		g := got.Tensors[i]
		ggufShape := make([]int64, len(ts.Shape))
		for j, d := range ts.Shape {
			ggufShape[len(ts.Shape)-1-j] = d
		}
		if g.Name != ts.Name || g.Type != ts.Type.String() || fmt.Sprint(g.Shape) != fmt.Sprint(ggufShape) || g.Hex != hex.EncodeToString(ts.Data) {
			t.Errorf("tensor %d: gguf-py %s %s %v (data equal %v), want %s %s %v", i, g.Name, g.Type, g.Shape, g.Hex == hex.EncodeToString(ts.Data), ts.Name, ts.Type, ggufShape)
		}
	}
}

// nestedFirst steps into an array of arrays (gguf-py lists the element
// types of the first element).
func nestedFirst(a Array) (Array, bool) {
	if inner, ok := a.V.([]Array); ok && len(inner) > 0 {
		return inner[0], true
	}
	return Array{}, false
}

// jsonValue is a value as gguf-py's contents() gives it, as JSON.
func jsonValue(x any) any {
	switch v := x.(type) {
	case Array:
		if inner, ok := v.V.([]Array); ok {
			out := make([]any, len(inner))
			for i, a := range inner {
				out[i] = jsonValue(a)
			}
			return out
		}
		if b, ok := v.V.([]uint8); ok {
			out := make([]int, len(b))
			for i, x := range b {
				out[i] = int(x)
			}
			return out
		}
		return v.V
	case float32:
		return float64(v)
	}
	return x
}

// sameJSON compares decoded JSON values, numbers by their exact value
// ("1.0" equals "1").
func sameJSON(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		ra, okA := new(big.Rat).SetString(string(x))
		rb, okB := new(big.Rat).SetString(string(y))
		return okA && okB && ra.Cmp(rb) == 0
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

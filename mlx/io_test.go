package mlx

import (
	"bytes"
	bin "encoding/binary"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/x448/float16"

	"github.com/fungtrain/fungtrain/internal/gguf"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// stFixture builds one array of each round-trip dtype with random values,
// and the raw little-endian bytes each should hold.
func stFixture(r *rand.Rand) (map[string]*Array, map[string][]byte, map[string][]int, map[string]Dtype) {
	arrays := map[string]*Array{}
	raw := map[string][]byte{}
	shapes := map[string][]int{}
	dtypes := map[string]Dtype{}
	var buf bytes.Buffer
	bf := make([]BF16, 12)
	for i := range bf {
		bf[i] = ToBF16(float32(r.NormFloat64()))
	}
	bin.Write(&buf, bin.LittleEndian, bf)
	arrays["model.layers.0.weight"], raw["model.layers.0.weight"] = FromBF16s(bf, 3, 4), append([]byte{}, buf.Bytes()...)
	shapes["model.layers.0.weight"], dtypes["model.layers.0.weight"] = []int{3, 4}, BFloat16
	buf.Reset()
	hf := make([]float16.Float16, 5)
	for i := range hf {
		hf[i] = float16.Fromfloat32(float32(r.NormFloat64()))
	}
	bin.Write(&buf, bin.LittleEndian, hf)
	arrays["norm.f16"], raw["norm.f16"] = FromFloat16s(hf, 5), append([]byte{}, buf.Bytes()...)
	shapes["norm.f16"], dtypes["norm.f16"] = []int{5}, Float16
	buf.Reset()
	f := make([]float32, 12)
	for i := range f {
		f[i] = float32(r.NormFloat64())
	}
	f[3] = float32(math.Inf(-1))
	f[4] = -0.0
	bin.Write(&buf, bin.LittleEndian, f)
	arrays["lora_a"], raw["lora_a"] = FromFloat32s(f, 2, 3, 2), append([]byte{}, buf.Bytes()...)
	shapes["lora_a"], dtypes["lora_a"] = []int{2, 3, 2}, Float32
	buf.Reset()
	iv := make([]int32, 7)
	for i := range iv {
		iv[i] = int32(r.Uint32())
	}
	bin.Write(&buf, bin.LittleEndian, iv)
	arrays["step"], raw["step"] = FromInt32s(iv, 7), append([]byte{}, buf.Bytes()...)
	shapes["step"], dtypes["step"] = []int{7}, Int32
	return arrays, raw, shapes, dtypes
}

func TestSafetensorsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "adapters.safetensors")
	r := rand.New(rand.NewSource(80))
	meta := map[string]string{"format": "mlx", "fungtrain.step": "1200", "note": "ünïcode, \"quotes\" and spaces"}
	inMLX(t, func() error {
		arrays, raw, shapes, dtypes := stFixture(r)
		if err := SaveSafetensors(path, arrays, meta); err != nil {
			return err
		}
		if names := listDir(t, dir); !slices.Equal(names, []string{"adapters.safetensors"}) {
			t.Errorf("directory after save: %v (a temporary file was left behind?)", names)
		}
		got, md, err := LoadSafetensors(path)
		if err != nil {
			return err
		}
		if len(got) != len(arrays) {
			t.Errorf("loaded %d tensors, want %d", len(got), len(arrays))
		}
		for name, want := range raw {
			a := got[name]
			if a == nil {
				t.Errorf("tensor %s missing", name)
				continue
			}
			if a.Dtype() != dtypes[name] || !equalInts(a.Shape(), shapes[name]) {
				t.Errorf("%s: %s %v, want %s %v", name, a.Dtype(), a.Shape(), dtypes[name], shapes[name])
			}
			b, err := a.Bytes()
			if err != nil {
				return err
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%s: bytes differ after the round trip", name)
			}
		}
		for k, v := range meta {
			if md[k] != v {
				t.Errorf("metadata %q = %q, want %q", k, md[k], v)
			}
		}
		// Overwrite with other contents: the file is replaced, no temporary
		// file remains.
		f := FromFloat32s([]float32{1.5, -2.25}, 2)
		if err := SaveSafetensors(path, map[string]*Array{"only": f}, nil); err != nil {
			return err
		}
		if names := listDir(t, dir); !slices.Equal(names, []string{"adapters.safetensors"}) {
			t.Errorf("directory after overwrite: %v", names)
		}
		got, md, err = LoadSafetensors(path)
		if err != nil {
			return err
		}
		if len(got) != 1 || got["only"] == nil {
			t.Errorf("after overwrite: %d tensors", len(got))
		} else if err := checkExact(got["only"], []int{2}, []float64{1.5, -2.25}); err != nil {
			t.Errorf("after overwrite: %v", err)
		}
		if md["format"] != "" && md["format"] != "mlx" {
			t.Errorf("metadata after overwrite without metadata: %v", md)
		}
		// A failing save (an error array) leaves the old file as it was.
		before, _ := os.ReadFile(path)
		bad := Reshape(f, 3)
		err = SaveSafetensors(path, map[string]*Array{"bad": bad, "ok": f}, nil)
		if e := errMentions(err, "reshape", path); e != nil {
			t.Errorf("save with an error array: %v", e)
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(before, after) {
			t.Errorf("a failed save changed the existing file")
		}
		if names := listDir(t, dir); !slices.Equal(names, []string{"adapters.safetensors"}) {
			t.Errorf("directory after a failed save: %v", names)
		}
		// A directory that does not exist.
		missing := filepath.Join(dir, "no", "such", "dir", "x.safetensors")
		if e := errMentions(SaveSafetensors(missing, map[string]*Array{"ok": f}, nil), missing); e != nil {
			t.Errorf("save into a missing directory: %v", e)
		}
		return nil
	})
}

// writeSafetensors writes a safetensors file from a raw JSON header and data.
func writeSafetensors(t *testing.T, path, header string, data []byte) {
	t.Helper()
	var b bytes.Buffer
	bin.Write(&b, bin.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSafetensorsCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	inMLX(t, func() error {
		a := FromFloat32s([]float32{1, 2, 3, 4, 5, 6, 7, 8}, 2, 4)
		return SaveSafetensors(good, map[string]*Array{"w": a, "v": AddScalar(a, 1)}, map[string]string{"k": "v"})
	})
	full, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	hlen := int(bin.LittleEndian.Uint64(full))
	r := rand.New(rand.NewSource(81))
	garbage := make([]byte, 200)
	r.Read(garbage)
	files := map[string][]byte{
		"empty":            {},
		"garbage":          garbage,
		"short-length":     full[:5],
		"truncated-header": full[:8+hlen/2],
		"truncated-data":   full[:len(full)-9],
		"header-only":      full[:8+hlen],
		"huge-header-len":  append(bin.LittleEndian.AppendUint64(nil, 1<<40), full[8:]...),
	}
	for name, content := range files {
		p := filepath.Join(dir, name+".safetensors")
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Offsets that point past the end of the data, and a shape that does
	// not match its byte range.
	writeSafetensors(t, filepath.Join(dir, "offsets-past-end.safetensors"),
		`{"w":{"dtype":"F32","shape":[40],"data_offsets":[0,160]}}`, make([]byte, 16))
	writeSafetensors(t, filepath.Join(dir, "shape-mismatch.safetensors"),
		`{"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}}`, make([]byte, 16))
	writeSafetensors(t, filepath.Join(dir, "bad-dtype.safetensors"),
		`{"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8))
	writeSafetensors(t, filepath.Join(dir, "not-json.safetensors"), `{"w":{"dtype":"F32",`, make([]byte, 8))
	names := append(slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	}), "offsets-past-end", "shape-mismatch", "bad-dtype", "not-json", "does-not-exist")
	for _, name := range names {
		p := filepath.Join(dir, name+".safetensors")
		t.Run(name, func(t *testing.T) {
			inMLX(t, func() error {
				arrays, _, err := LoadSafetensors(p)
				if err == nil {
					// Loading is lazy: the error may only come when the data
					// is read. It must come then.
					for _, a := range arrays {
						if _, err = a.Float32s(); err != nil {
							break
						}
					}
				}
				if e := errMentions(err, p); e != nil {
					t.Errorf("%v", e)
				}
				t.Logf("%v", err)
				return nil
			})
		})
	}
}

// ggufWriter writes a minimal GGUF v3 file: header, metadata, tensor infos,
// padding to the alignment, tensor data.
type ggufWriter struct {
	kv      bytes.Buffer
	nkv     int
	infos   bytes.Buffer
	data    bytes.Buffer
	ntensor int
	align   int
}

const (
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufString  = 8
	ggufArray   = 9

	ggmlF32  = 0
	ggmlF16  = 1
	ggmlQ4_0 = 2
	ggmlQ4_1 = 3
	ggmlQ8_0 = 8
)

func ggufStr(b *bytes.Buffer, s string) {
	bin.Write(b, bin.LittleEndian, uint64(len(s)))
	b.WriteString(s)
}

func (g *ggufWriter) key(k string, typ uint32) {
	ggufStr(&g.kv, k)
	bin.Write(&g.kv, bin.LittleEndian, typ)
	g.nkv++
}

func (g *ggufWriter) String(k, v string) { g.key(k, ggufString); ggufStr(&g.kv, v) }
func (g *ggufWriter) Uint32(k string, v uint32) {
	g.key(k, ggufUint32)
	bin.Write(&g.kv, bin.LittleEndian, v)
}
func (g *ggufWriter) Float32(k string, v float32) {
	g.key(k, ggufFloat32)
	bin.Write(&g.kv, bin.LittleEndian, v)
}
func (g *ggufWriter) Strings(k string, v []string) {
	g.key(k, ggufArray)
	bin.Write(&g.kv, bin.LittleEndian, uint32(ggufString))
	bin.Write(&g.kv, bin.LittleEndian, uint64(len(v)))
	for _, s := range v {
		ggufStr(&g.kv, s)
	}
}
func (g *ggufWriter) Int32s(k string, v []int32) {
	g.key(k, ggufArray)
	bin.Write(&g.kv, bin.LittleEndian, uint32(ggufInt32))
	bin.Write(&g.kv, bin.LittleEndian, uint64(len(v)))
	bin.Write(&g.kv, bin.LittleEndian, v)
}

// Tensor adds a tensor of row-major shape; GGUF stores the dimensions
// fastest-varying first (ne[0] = last axis).
func (g *ggufWriter) Tensor(name string, shape []int, typ uint32, raw []byte) {
	ggufStr(&g.infos, name)
	bin.Write(&g.infos, bin.LittleEndian, uint32(len(shape)))
	for i := len(shape) - 1; i >= 0; i-- {
		bin.Write(&g.infos, bin.LittleEndian, uint64(shape[i]))
	}
	bin.Write(&g.infos, bin.LittleEndian, typ)
	for g.data.Len()%g.align != 0 {
		g.data.WriteByte(0)
	}
	bin.Write(&g.infos, bin.LittleEndian, uint64(g.data.Len()))
	g.data.Write(raw)
	g.ntensor++
}

func (g *ggufWriter) Bytes() []byte {
	var b bytes.Buffer
	b.WriteString("GGUF")
	bin.Write(&b, bin.LittleEndian, uint32(3))
	bin.Write(&b, bin.LittleEndian, uint64(g.ntensor))
	bin.Write(&b, bin.LittleEndian, uint64(g.nkv))
	b.Write(g.kv.Bytes())
	b.Write(g.infos.Bytes())
	for b.Len()%g.align != 0 {
		b.WriteByte(0)
	}
	b.Write(g.data.Bytes())
	return b.Bytes()
}

func le[T any](v []T) []byte {
	var b bytes.Buffer
	bin.Write(&b, bin.LittleEndian, v)
	return b.Bytes()
}

// ggufFixture is a small GGUF file and the values it should load as.
type ggufFixture struct {
	file               []byte
	f32, f16, q8, q4_1 tensor
	// |scale·q| + |bias| per element of the quantized tensors, in MLX's
	// affine form (Q8_0: q+128 and bias -128·d): the float16 rounding
	// scale of their dequantized values.
	q8mag, q4mag tensor
}

func makeGGUF(r *rand.Rand) ggufFixture {
	var fx ggufFixture
	g := &ggufWriter{align: 32}
	g.String("general.architecture", "llama")
	g.Uint32("general.alignment", 32)
	g.Uint32("llama.block_count", 3)
	g.Float32("llama.rope.freq_base", 500000.5)
	g.Strings("tokenizer.ggml.tokens", []string{"<s>", "hello", "wörld", ""})
	g.Int32s("tokenizer.ggml.token_type", []int32{3, 1, 1, -2})
	g.String("tokenizer.chat_template", "{{ messages }}")

	fx.f32 = randTensor(r, 2, 3)
	f := make([]float32, 6)
	for i, v := range fx.f32.data {
		f[i] = float32(v)
	}
	g.Tensor("token_embd.weight", []int{2, 3}, ggmlF32, le(f))

	fx.f16 = genTensor(r, genNormal, Float16, 5)
	h := make([]float16.Float16, 5)
	for i, v := range fx.f16.data {
		h[i] = float16.Fromfloat32(float32(v))
	}
	g.Tensor("output_norm.weight", []int{5}, ggmlF16, le(h))

	// Q8_0, shape (2, 32): per block of 32, an f16 scale d and 32 int8;
	// w = d·q.
	fx.q8, fx.q8mag = newTensor(2, 32), newTensor(2, 32)
	var q8 bytes.Buffer
	for blk := 0; blk < 2; blk++ {
		d := float16.Fromfloat32(float32(0.01 + 0.05*r.Float64()))
		bin.Write(&q8, bin.LittleEndian, d)
		for j := 0; j < 32; j++ {
			q := int8(r.Intn(255) - 127)
			q8.WriteByte(byte(q))
			fx.q8.data[blk*32+j] = float64(d.Float32()) * float64(q)
			fx.q8mag.data[blk*32+j] = float64(d.Float32()) * (float64(q) + 128 + 128)
		}
	}
	g.Tensor("blk.0.attn_q.weight", []int{2, 32}, ggmlQ8_0, q8.Bytes())

	// Q4_1, shape (1, 64): per block, f16 d and m, then 16 bytes whose low
	// nibbles are elements 0..15 and high nibbles 16..31; w = d·q + m.
	fx.q4_1, fx.q4mag = newTensor(1, 64), newTensor(1, 64)
	var q4 bytes.Buffer
	for blk := 0; blk < 2; blk++ {
		d := float16.Fromfloat32(float32(0.02 + 0.1*r.Float64()))
		m := float16.Fromfloat32(float32(-0.5 * r.Float64()))
		bin.Write(&q4, bin.LittleEndian, d)
		bin.Write(&q4, bin.LittleEndian, m)
		var qs [32]int
		for j := range qs {
			qs[j] = r.Intn(16)
			fx.q4_1.data[blk*32+j] = float64(d.Float32())*float64(qs[j]) + float64(m.Float32())
			fx.q4mag.data[blk*32+j] = float64(d.Float32())*float64(qs[j]) - float64(m.Float32())
		}
		for j := 0; j < 16; j++ {
			q4.WriteByte(byte(qs[j] | qs[j+16]<<4))
		}
	}
	g.Tensor("blk.0.ffn_up.weight", []int{1, 64}, ggmlQ4_1, q4.Bytes())
	fx.file = g.Bytes()
	return fx
}

func TestGGUFLoad(t *testing.T) {
	r := rand.New(rand.NewSource(82))
	fx := makeGGUF(r)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(path, fx.file, 0o644); err != nil {
		t.Fatal(err)
	}
	inMLX(t, func() error {
		f, err := LoadGGUF(path)
		if err != nil {
			return err
		}
		defer f.Free()
		tn := func(name string) *Array {
			a := f.Tensors[name]
			if a == nil {
				t.Errorf("tensor %s missing (have %v)", name, slices.Sorted(func(y func(string) bool) {
					for k := range f.Tensors {
						if !y(k) {
							return
						}
					}
				}))
				return FromFloat32s(nil, 0)
			}
			return a
		}
		// MLX reverses GGUF's dimension order back to row-major.
		emb := tn("token_embd.weight")
		if emb.Dtype() != Float32 {
			t.Errorf("token_embd dtype %s", emb.Dtype())
		}
		if err := check(emb, fx.f32, 0, 0); err != nil {
			t.Errorf("token_embd: %v", err)
		}
		nrm := tn("output_norm.weight")
		if nrm.Dtype() != Float16 {
			t.Errorf("output_norm dtype %s", nrm.Dtype())
		}
		if err := check(nrm, fx.f16, 0, 0); err != nil {
			t.Errorf("output_norm: %v", err)
		}
		// Quantized tensors come as MLX affine triples (group size 32) in
		// float16: each dequantized value is within float16 rounding of
		// the terms that make it, 2^-10·(|scale·q| + |bias|).
		for _, qc := range []struct {
			name      string
			bits      int
			want, mag tensor
		}{{"blk.0.attn_q", 8, fx.q8, fx.q8mag}, {"blk.0.ffn_up", 4, fx.q4_1, fx.q4mag}} {
			q := Quantized{Weight: tn(qc.name + ".weight"), Scales: tn(qc.name + ".scales"), Biases: tn(qc.name + ".biases"), GroupSize: 32, Bits: qc.bits}
			if q.Weight.Dtype() != Uint32 || q.Scales.Dtype() != Float16 {
				t.Errorf("%s: weight %s scales %s", qc.name, q.Weight.Dtype(), q.Scales.Dtype())
			}
			got, err := values(Dequantize(q), qc.want.shape)
			if err != nil {
				return err
			}
			for i := range got {
				if d := math.Abs(got[i] - qc.want.data[i]); d > 0x1p-10*qc.mag.data[i]+1e-6 {
					t.Errorf("%s element %d: dequantized %.6g, want %.6g", qc.name, i, got[i], qc.want.data[i])
					break
				}
			}
		}
		if len(f.Tensors) != 8 {
			t.Errorf("%d tensors, want 8", len(f.Tensors))
		}
		for k, want := range map[string]string{
			"general.architecture":    "llama",
			"tokenizer.chat_template": "{{ messages }}",
			"tokenizer.ggml.tokens":   "<s>\x01hello\x01wörld\x01",
		} {
			if got, ok := f.Strings[k]; !ok || got != want {
				t.Errorf("metadata %s = %q, want %q", k, got, want)
			}
		}
		num := func(k string) *Array {
			a := f.NumericMeta[k]
			if a == nil {
				t.Errorf("numeric metadata %s missing", k)
				return FromFloat32s(nil, 0)
			}
			return a
		}
		if v, err := num("llama.block_count").Item(); err != nil || v != 3 {
			t.Errorf("llama.block_count = %v, %v", v, err)
		}
		if v, err := num("llama.rope.freq_base").Item(); err != nil || v != 500000.5 {
			t.Errorf("llama.rope.freq_base = %v, %v", v, err)
		}
		if v, err := num("tokenizer.ggml.token_type").Int32s(); err != nil || !slices.Equal(v, []int32{3, 1, 1, -2}) {
			t.Errorf("tokenizer.ggml.token_type = %v, %v", v, err)
		}
		return nil
	})
}

func TestGGUFCorrupt(t *testing.T) {
	r := rand.New(rand.NewSource(83))
	fx := makeGGUF(r)
	dir := t.TempDir()
	badMagic := append([]byte("GGUX"), fx.file[4:]...)
	badVersion := append([]byte{}, fx.file...)
	bin.LittleEndian.PutUint32(badVersion[4:], 99)
	hugeCount := append([]byte{}, fx.file...)
	bin.LittleEndian.PutUint64(hugeCount[16:], 1<<40) // metadata kv count
	garbage := make([]byte, 300)
	r.Read(garbage)
	hugeKey := append([]byte{}, fx.file...)
	bin.LittleEndian.PutUint64(hugeKey[24:], 1<<40) // length of the first key
	small := func(edit func(g *ggufWriter)) []byte {
		g := &ggufWriter{align: 32}
		g.String("general.architecture", "llama")
		edit(g)
		return g.Bytes()
	}
	cases := map[string][]byte{
		"huge-key-length": hugeKey,
		"zero-alignment":  small(func(g *ggufWriter) { g.Uint32("general.alignment", 0) }),
		"huge-dims": small(func(g *ggufWriter) {
			g.Tensor("x", []int{1 << 20, 1 << 20, 1 << 20}, ggmlF32, make([]byte, 64))
		}),
		"unknown-tensor-type": small(func(g *ggufWriter) { g.Tensor("x", []int{4}, 77, make([]byte, 64)) }),
		"partial-block":       small(func(g *ggufWriter) { g.Tensor("x", []int{2, 16}, ggmlQ8_0, make([]byte, 68)) }),
		"empty":               {},
		"garbage":             garbage,
		"bad-magic":           badMagic,
		"bad-version":         badVersion,
		"huge-kv-count":       hugeCount,
		"truncated-20":        fx.file[:20],
		"truncated-kv":        fx.file[:120],
		"truncated-mid":       fx.file[:len(fx.file)/2],
		"truncated-data":      fx.file[:len(fx.file)-10],
	}
	for _, name := range append(slices.Sorted(func(y func(string) bool) {
		for k := range cases {
			if !y(k) {
				return
			}
		}
	}), "does-not-exist") {
		p := filepath.Join(dir, name+".gguf")
		if c, ok := cases[name]; ok {
			if err := os.WriteFile(p, c, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Run(name, func(t *testing.T) {
			inMLX(t, func() error {
				f, err := LoadGGUF(p)
				if err == nil {
					defer f.Free()
					for _, a := range f.Tensors {
						if _, err = a.Float32s(); err != nil {
							break
						}
					}
				}
				if e := errMentions(err, p); e != nil {
					t.Errorf("%v", e)
				}
				t.Logf("%v", err)
				return nil
			})
		})
	}
}

// TestGGUFRealFile loads the SmolLM2 GGUF that the llama tests use: the
// header check must accept real files.
func TestGGUFRealFile(t *testing.T) {
	p := "../third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf"
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test asset %s is missing (%v): run ./build.sh test to fetch it", p, err)
	}
	if info, err := gguf.ReadInfo(p); err != nil {
		t.Fatalf("gguf.ReadInfo refuses a real file: %v", err)
	} else if err := info.CheckMLX(); err != nil {
		t.Fatalf("CheckMLX refuses a real file: %v", err)
	}
	inMLX(t, func() error {
		f, err := LoadGGUF(p)
		if err != nil {
			return err
		}
		defer f.Free()
		emb := f.Tensors["token_embd.weight"]
		// Q4_1 or Q8_0 (this file keeps its embeddings in 8 bits): uint32
		// words of 8 or 4 values, one scale per 32 values.
		if emb == nil || emb.Dim(0) != 49152 || (emb.Dim(1) != 576*4/32 && emb.Dim(1) != 576*8/32) || emb.Dtype() != Uint32 ||
			!equalInts(f.Tensors["token_embd.scales"].Shape(), []int{49152, 576 / 32}) {
			t.Errorf("token_embd: %v", emb)
		}
		if f.Strings["general.architecture"] != "llama" {
			t.Errorf("general.architecture %q", f.Strings["general.architecture"])
		}
		return nil
	})
}

func TestShapeErrors(t *testing.T) {
	inMLX(t, func() error {
		a := Zeros(Float32, 2, 3)
		b := Zeros(Float32, 4, 5)
		cases := []struct {
			got  *Array
			word string
		}{
			{Matmul(a, b), "matmul"},
			{Reshape(a, 4, 2), "reshape"},
			{BroadcastTo(a, 4, 3, 2), "broadcast"},
			{Add(a, b), "add"},
			{Concatenate([]*Array{a, b}, 0), "concatenate"},
			{Concatenate(nil, 0), "concatenate"},
			{Stack([]*Array{a, b}, 0), "stack"},
			{Transpose(a, 0, 0), "transpose"},
			{Slice(a, []int{0}, []int{1}, nil), "slice"},
			{SliceAxis(a, 5, 0, 1), "sliceaxis"},
			{Take(a, FromFloat32s([]float32{0}, 1), 0), "take"},
			{Squeeze(a, 0), "squeeze"},
			{Addmm(Zeros(Float32, 7), a, b, 1, 1), "addmm"},
			{FromFloat32s([]float32{1, 2, 3}, 2, 2), "shape"},
			{Softmax(a, false, 5), "softmax"},
			{Sum(a, false, 3), "sum"},
			{Argmax(a, 7, false), "argmax"},
			{SliceUpdate(a, b, []int{0, 0}, []int{1, 1}, nil), "sliceupdate"},
			{ScaledDotProductAttention(Zeros(Float32, 1, 2, 3, 8), Zeros(Float32, 1, 2, 3, 4), Zeros(Float32, 1, 2, 3, 4), 1, MaskNone, nil), "scaleddotproductattention"},
			{QuantizedMatmul(a, Quantized{Weight: Zeros(Uint32, 4, 1), Scales: Zeros(Float32, 4, 1), Biases: Zeros(Float32, 4, 1), GroupSize: 32, Bits: 4}, true), "quantizedmatmul"},
		}
		for i, c := range cases {
			if e := errMentions(c.got.Err(), c.word); e != nil {
				t.Errorf("case %d (%s): %v", i, c.word, e)
			}
			if c.got.Valid() || c.got.Shape() != nil || c.got.Size() != 0 {
				t.Errorf("case %d (%s): an error array reports shape %v size %d", i, c.word, c.got.Shape(), c.got.Size())
			}
		}
		if _, err := Split(a, 4, 1); errMentions(err, "split") != nil {
			t.Errorf("Split 3 into 4: %v", err)
		}
		if _, err := Quantize(Zeros(Float32, 2, 30), 32, 4); errMentions(err, "quantize") != nil {
			t.Errorf("Quantize 30 columns in groups of 32: %v", err)
		}
		if err := Eval(Reshape(a, 7)); errMentions(err, "reshape") != nil {
			t.Errorf("Eval of an error array: %v", err)
		}
		if _, err := Reshape(a, 7).Float32s(); errMentions(err, "reshape") != nil {
			t.Errorf("reading an error array: %v", err)
		}
		if !strings.Contains(Reshape(a, 7).String(), "error") {
			t.Errorf("String of an error array: %s", Reshape(a, 7))
		}
		return nil
	})
}

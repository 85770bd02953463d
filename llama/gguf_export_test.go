package llama

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fungtrain/fungtrain/internal/gguf"
	"github.com/fungtrain/fungtrain/mlx"
)

// exportGGUF loads the model in dir (float32 activations, quantized
// weights kept as they are) and writes it as GGUF of type typ.
func exportGGUF(t *testing.T, dir string, typ gguf.TensorType) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	doMLX(t, func() error {
		m, err := LoadModel(dir, LoadOptions{Dtype: "f32", Dequantize: "no"})
		if err != nil {
			return err
		}
		defer m.Free()
		return WriteGGUF(m, path, GGUFExportOptions{Type: typ, Name: "test"})
	})
	return path
}

// TestExportGGUFReloadLogits: fungtrain loads its own GGUF exports and gives
// the logits of the model before export: bit for bit when the export type
// holds the weights exactly (F32 of float32, F16 of float16, BF16 of
// bfloat16 weights, F32 of a dequantized 4-bit checkpoint), within the
// rounding of the type otherwise. The tiny shape has llama3 RoPE scaling
// (rope_freqs), GQA and tied embeddings; one case unties the head and adds
// attention biases, whose q/k rows are permuted like the weights.
func TestExportGGUFReloadLogits(t *testing.T) {
	ids := []int32{1, 17, 300, 42, 9, 511, 0, 256, 128, 64, 3, 77, 5, 200, 31, 8}
	tied := smallConfig(t)
	untied := smallConfig(t)
	untied.TieWordEmbeddings = false
	untied.AttentionBias = true
	write := func(cfg *Config, dt mlx.Dtype) string {
		dir := t.TempDir()
		doMLX(t, func() error { return WriteRandomModel(dir, cfg, dt, 21) })
		return dir
	}
	f32 := write(tied, mlx.Float32)
	qdir, deqdir := writeQuantizedModel(t, write(untied, mlx.Float32), 32, 4)
	cases := []struct {
		name   string
		src    string
		ref    string // the model whose logits the export must give
		typ    gguf.TensorType
		maxRel float64 // 0: bit for bit
	}{
		{"f32 as F32", f32, f32, gguf.F32, 0},
		{"f16 as F16", write(tied, mlx.Float16), "", gguf.F16, 0},
		{"bf16 as BF16", write(tied, mlx.BFloat16), "", gguf.BF16, 0},
		{"untied with biases as F32", write(untied, mlx.Float32), "", gguf.F32, 0},
		{"4-bit checkpoint as F32", qdir, deqdir, gguf.F32, 1e-6},
		{"f32 as F16", f32, f32, gguf.F16, 2e-3},
		{"f32 as BF16", f32, f32, gguf.BF16, 2e-2},
		{"f32 as Q8_0", f32, f32, gguf.Q8_0, 0.03},
		{"f32 as Q4_0", f32, f32, gguf.Q4_0, 0.35},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := c.ref
			if ref == "" {
				ref = c.src
			}
			want, _ := modelLogits(t, ref, ids, "yes")
			path := exportGGUF(t, c.src, c.typ)
			got, _ := modelLogits(t, path, ids, "yes")
			d, rel := maxAbsDiff32(got, want), relErr(got, want)
			t.Logf("max |Δlogit| %.3g, relative %.3g", d, rel)
			if c.maxRel == 0 && d != 0 || rel > c.maxRel {
				t.Errorf("logits after export differ: max %g, relative %g (allowed %g)", d, rel, c.maxRel)
			}
		})
	}
}

// TestExportGGUFLayout checks the file against llama.cpp's Llama 3.x
// layout: the general.* and llama.* keys and their types, rope_freqs
// (F32, head_dim/2, llama.cpp's factors), no output.weight when tied, 1-D
// tensors in F32, matrices in the chosen type, and under Q4_0 the tied
// embedding (which computes the logits) in Q8_0.
func TestExportGGUFLayout(t *testing.T) {
	cfg := smallConfig(t)
	dir := t.TempDir()
	doMLX(t, func() error { return WriteRandomModel(dir, cfg, mlx.Float32, 5) })
	for _, typ := range []gguf.TensorType{gguf.F16, gguf.Q4_0} {
		t.Run(typ.String(), func(t *testing.T) {
			g, err := gguf.ReadInfo(exportGGUF(t, dir, typ))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"general.architecture":                   "string llama",
				"general.name":                           "string test",
				"general.file_type":                      fmt.Sprintf("uint32 %d", map[gguf.TensorType]int{gguf.F16: 1, gguf.Q4_0: 2}[typ]),
				"general.quantization_version":           "uint32 2",
				"general.alignment":                      "uint32 32",
				"llama.block_count":                      "uint32 2",
				"llama.context_length":                   "uint32 64",
				"llama.embedding_length":                 "uint32 128",
				"llama.feed_forward_length":              "uint32 384",
				"llama.attention.head_count":             "uint32 4",
				"llama.attention.head_count_kv":          "uint32 2",
				"llama.rope.freq_base":                   "float32 500000",
				"llama.attention.layer_norm_rms_epsilon": "float32 1e-05",
				"llama.vocab_size":                       "uint32 512",
				"llama.rope.dimension_count":             "uint32 32",
			}
			for k, w := range want {
				v, ok := g.Value(k)
				if got := fmt.Sprintf("%s %v", v.Type, v.V); !ok || got != w {
					t.Errorf("%s = %q, want %q", k, got, w)
				}
			}
			if _, ok := g.Tensor("output.weight"); ok {
				t.Errorf("tied embeddings, but the file has output.weight")
			}
			emb, _ := g.Tensor("token_embd.weight")
			wantEmb := typ
			if typ == gguf.Q4_0 {
				wantEmb = gguf.Q8_0
			}
			if emb.Type != wantEmb || fmt.Sprint(emb.Shape()) != "[512 128]" {
				t.Errorf("token_embd.weight %s %v, want %s [512 128]", emb.Type, emb.Shape(), wantEmb)
			}
			q, _ := g.Tensor("blk.1.attn_q.weight")
			k, _ := g.Tensor("blk.1.attn_k.weight")
			if q.Type != typ || fmt.Sprint(q.Shape()) != "[128 128]" || fmt.Sprint(k.Shape()) != "[64 128]" {
				t.Errorf("attn_q %s %v, attn_k %v", q.Type, q.Shape(), k.Shape())
			}
			n1 := 0
			for _, ti := range g.Tensors {
				if len(ti.Dims) == 1 {
					n1++
					if ti.Type != gguf.F32 {
						t.Errorf("1-D tensor %s is %s, want F32", ti.Name, ti.Type)
					}
				}
			}
			if n1 != 2*2+2 {
				t.Errorf("%d 1-D tensors, want 6 (2 norms per layer, output_norm, rope_freqs)", n1)
			}
			rf, ok := g.Tensor("rope_freqs.weight")
			if !ok || fmt.Sprint(rf.Shape()) != "[16]" {
				t.Fatalf("rope_freqs.weight %v, want 16 factors", rf)
			}
			// llama.cpp's factors for Llama 3 scaling (factor 32, low 1,
			// high 4, 8192): 1 for wavelengths under 2048, 32 above 8192,
			// 1/((1-s)/32 + s) between, s = (8192/λ - 1)/3.
			f := readRopeFreqs(t, g)
			for i, got := range f {
				lambda := 2 * math.Pi * math.Pow(500000, float64(2*i)/32)
				want := 1.0
				switch {
				case lambda > 8192:
					want = 32
				case lambda >= 2048:
					s := (8192/lambda - 1) / 3
					want = 1 / ((1-s)/32 + s)
				}
				if d := float64(got) - want; d > 1e-5*want || d < -1e-5*want {
					t.Errorf("rope_freqs[%d] = %g, want %g", i, got, want)
				}
			}
		})
	}
}

// readRopeFreqs decodes a file's rope_freqs.weight.
func readRopeFreqs(t *testing.T, g *gguf.Info) []float32 {
	t.Helper()
	f, err := os.Open(g.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ti, _ := g.Tensor("rope_freqs.weight")
	raw, err := g.ReadTensor(f, ti)
	if err != nil {
		t.Fatal(err)
	}
	v, err := gguf.Decode(ti.Type, raw, int(ti.Elements()))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

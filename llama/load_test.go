package llama

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// smallConfig is a 2-layer GQA Llama whose linear input sizes are all
// multiples of 128, so every weight can be quantized with groups of 64.
func smallConfig(t *testing.T) *Config {
	t.Helper()
	c, err := ShapeConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	c.NumLayers = 2
	c.VocabSize = 512
	c.IntermediateSize = 384
	c.MaxPositionEmbeddings = 64
	return c
}

// writeSmallModel writes a random f32 checkpoint of cfg to a temp dir.
func writeSmallModel(t *testing.T, cfg *Config) string {
	t.Helper()
	dir := t.TempDir()
	doMLX(t, func() error { return WriteRandomModel(dir, cfg, mlx.Float32, 11) })
	return dir
}

// rewriteTensors loads dir's model.safetensors, lets edit change the map
// (arrays it removes or replaces are freed here), and writes it back.
func rewriteTensors(t *testing.T, dir string, edit func(ts map[string]*mlx.Array)) {
	t.Helper()
	path := filepath.Join(dir, "model.safetensors")
	doMLX(t, func() error {
		ts, _, err := mlx.LoadSafetensors(path)
		if err != nil {
			return err
		}
		orig := map[*mlx.Array]bool{}
		for _, a := range ts {
			orig[a] = true
		}
		edit(ts)
		err = mlx.SaveSafetensors(path, ts, map[string]string{"format": "mlx"})
		for a := range orig {
			a.Free()
		}
		for _, a := range ts {
			a.Free()
		}
		return err
	})
}

// loadErr loads path with LoadModel and Open and returns both errors; a
// successful load is freed.
func loadErrs(t *testing.T, path string) (loadErr, openErr error) {
	t.Helper()
	doMLX(t, func() error {
		before := mlx.LiveArrays()
		m, err := LoadModel(path, LoadOptions{})
		if err == nil {
			m.Free()
		}
		loadErr = err
		b, err := Open(path, LoadOptions{})
		if err == nil {
			b.Close()
		}
		openErr = err
		if after := mlx.LiveArrays(); after != before {
			return fmt.Errorf("a failed load leaked %d arrays", after-before)
		}
		return nil
	})
	return loadErr, openErr
}

func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one containing %q", what, parts)
		return
	}
	t.Logf("%s: %v", what, err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not contain %q", what, err, p)
		}
	}
}

func TestLoadMissingTensor(t *testing.T) {
	dir := writeSmallModel(t, smallConfig(t))
	rewriteTensors(t, dir, func(ts map[string]*mlx.Array) {
		ts["model.layers.1.mlp.up_proj.weight"].Free()
		delete(ts, "model.layers.1.mlp.up_proj.weight")
	})
	err, _ := loadErrs(t, dir)
	wantErr(t, "missing tensor", err, dir, "missing tensor model.layers.1.mlp.up_proj.weight")
}

func TestLoadWrongShape(t *testing.T) {
	dir := writeSmallModel(t, smallConfig(t))
	rewriteTensors(t, dir, func(ts map[string]*mlx.Array) {
		ts["model.layers.0.self_attn.k_proj.weight"] = mlx.Zeros(mlx.Float32, 128, 128)
	})
	err, _ := loadErrs(t, dir)
	wantErr(t, "wrong shape", err, dir, "tensor model.layers.0.self_attn.k_proj.weight has shape [128 128], want [64 128]")
}

func TestLoadUnexpectedTensor(t *testing.T) {
	dir := writeSmallModel(t, smallConfig(t))
	rewriteTensors(t, dir, func(ts map[string]*mlx.Array) {
		ts["model.layers.0.self_attn.rotary_emb.inv_freq"] = mlx.Zeros(mlx.Float32, 16) // ignored
		ts["model.layers.5.mlp.up_proj.weight"] = mlx.Zeros(mlx.Float32, 4, 4)
	})
	err, _ := loadErrs(t, dir)
	wantErr(t, "extra tensor", err, "unexpected tensors", "model.layers.5.mlp.up_proj.weight")
}

func TestLoadTruncatedSafetensors(t *testing.T) {
	dir := writeSmallModel(t, smallConfig(t))
	path := filepath.Join(dir, "model.safetensors")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{st.Size() / 2, st.Size() - 1, 20, 0} {
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		err, _ := loadErrs(t, dir)
		wantErr(t, fmt.Sprintf("truncated to %d bytes", size), err, "model.safetensors")
	}
}

func TestLoadUnknownArchitecture(t *testing.T) {
	dir := writeSmallModel(t, smallConfig(t))
	cfgPath := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	raw["model_type"] = "mistral"
	raw["architectures"] = []string{"MistralForCausalLM"}
	b, _ = json.Marshal(raw)
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	loadErr, openErr := loadErrs(t, dir)
	wantErr(t, "config.json model_type mistral", loadErr, `unsupported architecture "mistral"`, "config.json")
	wantErr(t, "Open, model_type mistral", openErr, `unsupported architecture "mistral"`)

	// A GGUF of another architecture; its tensors are supported types, so
	// the architecture is what is reported.
	path := writeTestGGUFFile(t, []ggufTestKV{
		{"general.architecture", "gpt2"},
		{"gpt2.block_count", uint32(1)},
		{"tokenizer.ggml.model", "gpt2"},
	}, []ggufTestTensor{{"token_embd.weight", []uint64{64, 32}, GGMLTypeF32}})
	loadErr, openErr = loadErrs(t, path)
	wantErr(t, "GGUF architecture gpt2", loadErr, `unsupported GGUF architecture "gpt2"`, "test.gguf")
	wantErr(t, "Open, GGUF architecture gpt2", openErr, `unsupported GGUF architecture "gpt2"`, "test.gguf")
}

func TestLoadUnsupportedGGUFType(t *testing.T) {
	kvs := []ggufTestKV{
		{"general.architecture", "llama"},
		{"llama.block_count", uint32(1)},
		{"llama.embedding_length", uint32(256)},
		{"llama.feed_forward_length", uint32(512)},
		{"llama.attention.head_count", uint32(4)},
		{"llama.attention.head_count_kv", uint32(2)},
		{"llama.vocab_size", uint32(64)},
	}
	path := writeTestGGUFFile(t, kvs, []ggufTestTensor{
		{"token_embd.weight", []uint64{256, 64}, GGMLTypeQ8_0},
		{"blk.0.attn_q.weight", []uint64{256, 256}, GGMLTypeQ4_K},
	})
	loadErr, openErr := loadErrs(t, path)
	wantErr(t, "Q4_K tensor", loadErr, "blk.0.attn_q.weight", "Q4_K", "test.gguf")
	if openErr == nil {
		t.Errorf("Open of a GGUF with a Q4_K tensor: no error")
	}
}

func TestLoadNotAModel(t *testing.T) {
	dir := t.TempDir()
	err, openErr := loadErrs(t, dir)
	wantErr(t, "empty directory", err, "config.json")
	wantErr(t, "Open, empty directory", openErr, "config.json")
	txt := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(txt, []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	err, _ = loadErrs(t, txt)
	wantErr(t, "a text file", err, "notes.txt", "not a directory or a .gguf file")
	err, _ = loadErrs(t, filepath.Join(dir, "missing"))
	wantErr(t, "a missing path", err, "missing", "no such file")
}

func TestPromptTooLong(t *testing.T) {
	cfg := smallConfig(t) // context 64
	doMLX(t, func() error {
		m, err := NewRandomModel(cfg, mlx.Float32, 1)
		if err != nil {
			return err
		}
		defer m.Free()
		prompt := make([]int32, 70)
		_, err = m.Generate(prompt, GenerateOptions{MaxTokens: 4}, func(int32) bool { return true })
		if !errors.Is(err, ErrPromptTooLong) {
			return fmt.Errorf("70-token prompt, context 64: error %v, want ErrPromptTooLong", err)
		}
		wantErr(t, "prompt too long", err, "prompt too long", "70 prompt tokens", "context of 64")
		// A prompt that fits, with room to generate, is fine.
		out, _, err := generateIDs(m, prompt[:60], GenerateOptions{MaxTokens: 4})
		if err != nil || len(out) != 4 {
			return fmt.Errorf("60-token prompt + 4 tokens in a context of 64: %v, %d tokens", err, len(out))
		}
		return nil
	})
}

// writeQuantizedModel writes an MLX-community-style quantized copy of the
// dense checkpoint in src (every linear weight and the embedding as
// .weight/.scales/.biases, config.json with a quantization block) to a new
// dir, and a dense checkpoint of the dequantized weights to another.
func writeQuantizedModel(t *testing.T, src string, groupSize, bits int) (qdir, deqdir string) {
	t.Helper()
	qdir, deqdir = t.TempDir(), t.TempDir()
	cfgBytes, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(cfgBytes, &raw); err != nil {
		t.Fatal(err)
	}
	doMLX(t, func() error {
		ts, _, err := mlx.LoadSafetensors(filepath.Join(src, "model.safetensors"))
		if err != nil {
			return err
		}
		defer freeAll(ts)
		s := mlx.NewScope()
		defer s.Close()
		q, deq := map[string]*mlx.Array{}, map[string]*mlx.Array{}
		for name, a := range ts {
			base, ok := strings.CutSuffix(name, ".weight")
			if !ok || a.Ndim() != 2 {
				q[name], deq[name] = a, a
				continue
			}
			qw, err := mlx.Quantize(a, groupSize, bits)
			if err != nil {
				return fmt.Errorf("quantize %s: %w", name, err)
			}
			q[base+".weight"], q[base+".scales"], q[base+".biases"] = qw.Weight, qw.Scales, qw.Biases
			deq[name] = mlx.Dequantize(qw)
		}
		if err := mlx.SaveSafetensors(filepath.Join(qdir, "model.safetensors"), q, map[string]string{"format": "mlx"}); err != nil {
			return err
		}
		return mlx.SaveSafetensors(filepath.Join(deqdir, "model.safetensors"), deq, map[string]string{"format": "mlx"})
	})
	if err := os.WriteFile(filepath.Join(deqdir, "config.json"), cfgBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	raw["quantization"] = map[string]any{"group_size": groupSize, "bits": bits}
	b, _ := json.MarshalIndent(raw, "", "  ")
	if err := os.WriteFile(filepath.Join(qdir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return qdir, deqdir
}

// modelLogits loads dir and returns its logits for ids, and whether the
// loaded model is quantized.
func modelLogits(t *testing.T, dir string, ids []int32, dequantize string) (logits []float32, quantized bool) {
	t.Helper()
	doMLX(t, func() error {
		before := mlx.LiveArrays()
		m, err := LoadModel(dir, LoadOptions{Dtype: "f32", Dequantize: dequantize})
		if err != nil {
			return err
		}
		quantized = m.EmbedQ != nil && BaseLinear(m.Layers[0].MLP.Down).Q != nil
		s := mlx.NewScope()
		logits, err = m.Forward(mlx.FromInt32s(ids, 1, len(ids)), nil).Float32s()
		s.Close()
		m.Free()
		if after := mlx.LiveArrays(); after != before && err == nil {
			return fmt.Errorf("load (dequantize %q) and free leaked %d arrays", dequantize, after-before)
		}
		return err
	})
	return logits, quantized
}

// TestMLXQuantizedCheckpoint loads 4- and 8-bit MLX-community-layout
// checkpoints of a random model, kept quantized and dequantized at load, and
// checks their logits: equal (to float tolerance) to the dense model of the
// dequantized weights and to mlx-lm's on the same quantized directory, and
// close to the original dense model.
func TestMLXQuantizedCheckpoint(t *testing.T) {
	cfg := smallConfig(t)
	cfg.TieWordEmbeddings = false
	dense := writeSmallModel(t, cfg)
	ids := []int32{1, 17, 300, 42, 9, 511, 0, 256, 128, 64, 3, 77}
	ref, _ := modelLogits(t, dense, ids, "")
	for _, tc := range []struct {
		bits    int
		maxRelE float64 // bound on ||quantized - dense|| / ||dense||
	}{{4, 0.35}, {8, 0.03}} {
		t.Run(fmt.Sprintf("q%d-g64", tc.bits), func(t *testing.T) {
			qdir, deqdir := writeQuantizedModel(t, dense, 64, tc.bits)
			got, quantized := modelLogits(t, qdir, ids, "no")
			if !quantized {
				t.Fatalf("%s loaded as a dense model with Dequantize no", qdir)
			}
			deq, _ := modelLogits(t, deqdir, ids, "")
			if d := maxAbsDiff32(got, deq); d > 1e-4 {
				t.Errorf("quantized logits differ from the dequantized dense model's by %g", d)
			}
			atLoad, quantized := modelLogits(t, qdir, ids, "yes")
			if quantized {
				t.Errorf("%s stayed quantized with Dequantize yes", qdir)
			}
			if d := maxAbsDiff32(atLoad, deq); d > 1e-4 {
				t.Errorf("logits of the checkpoint dequantized at load differ from the dequantized dense model's by %g", d)
			}
			rel := relErr(got, ref)
			t.Logf("relative error vs the dense model: %.4f", rel)
			if rel > tc.maxRelE {
				t.Errorf("quantized logits are %.3f (relative) from the dense model's, want <= %g", rel, tc.maxRelE)
			}
			want, shape := mlxlmLogits(t, qdir, ids, "")
			if len(want) != len(got) {
				t.Fatalf("mlx-lm gave %d logits (shape %v), fungtrain %d", len(want), shape, len(got))
			}
			maxDiff := 0.0
			for i := range want {
				maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
			}
			t.Logf("max |logit diff| vs mlx-lm on the %d-bit checkpoint = %.3g", tc.bits, maxDiff)
			if maxDiff > 1e-4 {
				t.Errorf("logits differ from mlx-lm's by %g (> 1e-4)", maxDiff)
			}
		})
	}
}

func maxAbsDiff32(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

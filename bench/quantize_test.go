package bench

import (
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// quantRef runs bench/testdata/quant_ref.py with args and stdin JSON.
func quantRef(t testing.TB, in, out any, args ...string) {
	t.Helper()
	cmd := exec.Command(testenv.Python(t), append([]string{filepath.Join(testenv.RepoRoot(), "bench", "testdata", "quant_ref.py")}, args...)...)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = strings.NewReader(string(b))
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("quant_ref.py %v: %v\n%s", args, err, stderr.String())
	}
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("parse quant_ref.py output: %v", err)
	}
}

func doMLX(t testing.TB, f func() error) {
	t.Helper()
	if err := mlx.Do(f); err != nil {
		t.Fatal(err)
	}
}

// denseTiny writes the tiny shape with random float32 weights.
func denseTiny(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dense")
	cfg, err := llama.ShapeConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	doMLX(t, func() error { return llama.WriteRandomModel(dir, cfg, mlx.Float32, 5) })
	return dir
}

// TestGGUFBytesMatchLlamaCpp: every tensor of a GGUF file WriteGGUF (the
// export gguf path) makes
// is byte for byte what llama.cpp's gguf-py quantizer makes of the same
// weights (q/k rows permuted by llama.cpp's own permute), the metadata
// is the config's, and rope_freqs are llama.cpp's llama3 factors. The
// permutation is checked to matter (negative control).
func TestGGUFBytesMatchLlamaCpp(t *testing.T) {
	dense := denseTiny(t)
	cfg, err := llama.LoadConfig(filepath.Join(dense, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ typ, ggml string }{{"q8_0", "Q8_0"}, {"q4_0", "Q4_0"}} {
		t.Run(c.typ, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), c.typ+".gguf")
			doMLX(t, func() error { return WriteGGUF(dense, path, c.typ) })
			var ref struct {
				Metadata map[string]any `json:"metadata"`
				Tensors  map[string]struct {
					Type  string `json:"type"`
					Equal bool   `json:"equal"`
				} `json:"tensors"`
				RopeFreqs        []float64 `json:"rope_freqs"`
				RopeFreqsRef     []float64 `json:"rope_freqs_ref"`
				QEqualUnpermuted bool      `json:"q_equal_unpermuted"`
			}
			quantRef(t, nil, &ref, "gguf", path, dense)
			if want := 2 + 9*cfg.NumLayers; len(ref.Tensors) != want {
				t.Errorf("%d tensors besides rope_freqs, want %d", len(ref.Tensors), want)
			}
			for name, tt := range ref.Tensors {
				want := c.ggml
				switch {
				case strings.HasSuffix(name, "norm.weight"):
					want = "F32"
				case name == "token_embd.weight" && c.typ == "q4_0":
					want = "Q8_0" // the tied logit matrix: the exporter keeps it at 8 bits under q4_0
				}
				if tt.Type != want || !tt.Equal {
					t.Errorf("%s: type %s (want %s), bytes equal to gguf-py's: %v", name, tt.Type, want, tt.Equal)
				}
			}
			if ref.QEqualUnpermuted {
				t.Error("blk.0.attn_q equals the unpermuted quantization: the check cannot see the permutation")
			}
			for key, want := range map[string]float64{"llama.block_count": 4, "llama.embedding_length": 128,
				"llama.feed_forward_length": 352, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
				"llama.rope.dimension_count": 32, "llama.vocab_size": 1024, "llama.rope.freq_base": 500000} {
				if got, _ := ref.Metadata[key].(float64); got != want {
					t.Errorf("metadata %s = %v, want %v", key, ref.Metadata[key], want)
				}
			}
			if len(ref.RopeFreqs) != 16 || len(ref.RopeFreqsRef) != 16 {
				t.Fatalf("rope_freqs %d values, reference %d, want 16", len(ref.RopeFreqs), len(ref.RopeFreqsRef))
			}
			for i := range ref.RopeFreqs {
				if d := math.Abs(ref.RopeFreqs[i] - ref.RopeFreqsRef[i]); d > 1e-5*ref.RopeFreqsRef[i] {
					t.Errorf("rope_freqs[%d] = %g, llama.cpp's %g", i, ref.RopeFreqs[i], ref.RopeFreqsRef[i])
				}
			}
		})
	}
}

// TestQuantizeMLXMatchesMLXLM: mlx-lm loads the 4-bit checkpoint
// QuantizeMLX writes and computes the same logits as fungtrain on it with
// the weights kept quantized; the dense model's logits differ by far more
// (negative control: the check sees quantization).
func TestQuantizeMLXMatchesMLXLM(t *testing.T) {
	dense := denseTiny(t)
	q4 := filepath.Join(t.TempDir(), "q4")
	doMLX(t, func() error { return QuantizeMLX(dense, q4, 4, 32) })
	ids := []int32{1, 17, 300, 5, 999, 42, 7, 128, 64, 3}
	logitsOf := func(dir string) []float32 {
		var out []float32
		doMLX(t, func() error {
			m, err := llama.LoadModel(dir, llama.LoadOptions{Dtype: "f32", Dequantize: "no"})
			if err != nil {
				return err
			}
			defer m.Free()
			s := mlx.NewScope()
			defer s.Close()
			out, err = m.Forward(mlx.FromInt32s(ids, 1, len(ids)), nil).Float32s()
			return err
		})
		return out
	}
	got, denseLogits := logitsOf(q4), logitsOf(dense)
	var ref struct {
		Shape  []int     `json:"shape"`
		Logits []float64 `json:"logits"`
	}
	quantRef(t, map[string]any{"ids": ids}, &ref, "logits", q4)
	if len(ref.Logits) != len(got) || len(got) != len(ids)*1024 {
		t.Fatalf("%d logits from fungtrain, %d from mlx-lm, want %d", len(got), len(ref.Logits), len(ids)*1024)
	}
	maxDiff, maxDense := 0.0, 0.0
	for i := range got {
		maxDiff = max(maxDiff, math.Abs(float64(got[i])-ref.Logits[i]))
		maxDense = max(maxDense, math.Abs(float64(denseLogits[i])-ref.Logits[i]))
	}
	t.Logf("max |fungtrain - mlx-lm| %.3g on the 4-bit checkpoint; dense vs 4-bit %.3g", maxDiff, maxDense)
	if maxDiff > 1e-4 {
		t.Errorf("fungtrain and mlx-lm logits on the 4-bit checkpoint differ by up to %g", maxDiff)
	}
	if maxDense < 100*max(maxDiff, 1e-6) {
		t.Errorf("dense logits are within %g of the 4-bit ones: the comparison cannot see quantization", maxDense)
	}
}

// TestQuantizedBasesTrain: LoRA trains end to end on an MLX 4-bit
// checkpoint and on GGUF Q4_0 and Q8_0 files with the base kept quantized
// (Dequantize "no", the GPU path, here on the CPU): the result names the
// quantization, the weights take less memory than dense ones, and the
// losses equal those of the same base dequantized at load.
func TestQuantizedBasesTrain(t *testing.T) {
	dense := denseTiny(t)
	dir := t.TempDir()
	cases := []struct {
		name, path, want string
		make             func(string) error
	}{
		{"mlx 4-bit", filepath.Join(dir, "q4"), "4-bit, group 32", func(p string) error { return QuantizeMLX(dense, p, 4, 32) }},
		{"gguf q4_0", filepath.Join(dir, "q4_0.gguf"), "4-bit, group 32", func(p string) error { return WriteGGUF(dense, p, "q4_0") }},
		{"gguf q8_0", filepath.Join(dir, "q8_0.gguf"), "8-bit, group 32", func(p string) error { return WriteGGUF(dense, p, "q8_0") }},
	}
	train := func(model, deq string) *TrainResult {
		var r *TrainResult
		doMLX(t, func() error {
			var err error
			r, err = Train(Options{Model: model, Dtype: "f32", Dequantize: deq, Batch: 1, GradAccum: 2, Steps: 2, Warmup: 1,
				Lengths: "mean:40,max:64,min:24,n:8", LoRA: lora.DefaultSettings(), Seed: 3, PeakTFLOPs: 1})
			return err
		})
		return r
	}
	base := train(dense, "no")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doMLX(t, func() error { return c.make(c.path) })
			kept, expanded := train(c.path, "no"), train(c.path, "yes")
			if kept.Quantized != c.want || expanded.Quantized != "" {
				t.Errorf("quantized %q kept, %q dequantized; want %q and dense", kept.Quantized, expanded.Quantized, c.want)
			}
			if kept.WeightsGiB >= 0.6*base.WeightsGiB {
				t.Errorf("quantized weights %.4f GiB, dense %.4f GiB", kept.WeightsGiB, base.WeightsGiB)
			}
			if d := math.Abs(kept.FinalLoss - expanded.FinalLoss); math.IsNaN(kept.FinalLoss) || d > 1e-4*expanded.FinalLoss {
				t.Errorf("loss %v kept quantized, %v dequantized", kept.FinalLoss, expanded.FinalLoss)
			}
		})
	}
}

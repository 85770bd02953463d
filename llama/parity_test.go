package llama

import (
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/mlx"
)

// repoRoot is the repository root, found from this source file.
func rootDir(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func mlxlmLogits(t *testing.T, dir string, ids []int32, adapter string) ([]float64, []int) {
	t.Helper()
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	args := []string{filepath.Join(rootDir(t), "llama", "testdata", "mlxlm_logits.py"), dir, strings.Join(parts, ",")}
	if adapter != "" {
		args = append(args, adapter)
	}
	cmd := exec.Command(testenv.Python(t), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mlx-lm reference failed: %v\n%s", err, stderr.String())
	}
	var res struct {
		Shape  []int     `json:"shape"`
		Logits []float64 `json:"logits"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("parse mlx-lm output: %v", err)
	}
	return res.Logits, res.Shape
}

func doMLX(t testing.TB, f func() error) {
	t.Helper()
	if err := mlx.Do(f); err != nil {
		t.Fatal(err)
	}
}

// TestParityWithMLXLM compares fungtrain's logits with mlx-lm's on small
// random HF-format Llamas that cover GQA, llama3 rope scaling, linear
// scaling, tied and untied heads, and attention bias.
func TestParityWithMLXLM(t *testing.T) {
	base := func() *Config {
		c, _ := ShapeConfig("tiny")
		c.VocabSize = 512
		c.NumLayers = 2
		return c
	}
	cases := []struct {
		name string
		edit func(c *Config)
	}{
		{"gqa-llama3-tied", func(c *Config) {}},
		{"untied-no-scaling", func(c *Config) { c.TieWordEmbeddings = false; c.RopeScaling = nil; c.RopeTheta = 10000 }},
		{"mha-linear-scaling", func(c *Config) {
			c.NumKVHeads = c.NumHeads
			c.RopeScaling = &RopeScaling{RopeType: "linear", Factor: 2}
		}},
		{"attention-bias", func(c *Config) { c.AttentionBias = true }},
	}
	ids := []int32{1, 17, 300, 42, 9, 511, 0, 256, 128, 64, 3, 77}
	worst := 0.0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.edit(cfg)
			dir := t.TempDir()
			var got []float32
			var shape []int
			doMLX(t, func() error {
				if err := WriteRandomModel(dir, cfg, mlx.Float32, 7); err != nil {
					return err
				}
				m, err := LoadModel(dir, LoadOptions{Dtype: "f32"})
				if err != nil {
					return err
				}
				defer m.Free()
				s := mlx.NewScope()
				defer s.Close()
				logits := m.Forward(mlx.FromInt32s(ids, 1, len(ids)), nil)
				shape = logits.Shape()
				got, err = logits.Float32s()
				return err
			})
			want, wshape := mlxlmLogits(t, dir, ids, "")
			if fmt.Sprint(shape) != fmt.Sprint(wshape) {
				t.Fatalf("shape %v, mlx-lm %v", shape, wshape)
			}
			t.Logf("first logits: fungtrain %v, mlx-lm %v", got[:3], want[:3])
			maxDiff := 0.0
			for i := range want {
				maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
			}
			worst = math.Max(worst, maxDiff)
			t.Logf("max |logit diff| vs mlx-lm = %.3g", maxDiff)
			if maxDiff > 1e-4 {
				t.Fatalf("logits differ from mlx-lm by %g (> 1e-4)", maxDiff)
			}
		})
	}
	t.Logf("largest logit difference over all parity cases: %.3g", worst)
}

package lora

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

var interopIDs = []int32{1, 17, 300, 42, 9, 1000, 0, 256, 128, 64, 3, 77}

// logitsOf runs m on interopIDs and reads the logits back (MLX thread).
func logitsOf(m *llama.Model) ([]float64, []int, error) {
	s := mlx.NewScope()
	defer s.Close()
	l := m.Forward(mlx.FromInt32s(interopIDs, 1, len(interopIDs)), nil)
	v, err := readFloats(mlx.AsType(l, mlx.Float32))
	if err != nil {
		return nil, nil, err
	}
	return v[0], l.Shape(), nil
}

type mlxlmLogits struct {
	Shape   []int     `json:"shape"`
	Logits  []float64 `json:"logits"`
	Tensors []string  `json:"tensors"`
}

// TestSavedAdapterLoadsInMLXLM: an adapter saved by fungtrain (B set to
// random values so it matters) loads in mlx-lm through load_adapters and
// gives fungtrain's adapted logits. The adapter config carries dropout 0.1,
// which mlx-lm must treat as inactive at inference.
func TestSavedAdapterLoadsInMLXLM(t *testing.T) {
	modelDir := writeTinyModelDir(t, 4, 13)
	cases := []Settings{
		{Rank: 4, Alpha: 8, Dropout: 0.1, NumLayers: 3, Keys: []string{"self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj", "mlp.down_proj"}},
		{Rank: 6, Alpha: 8, Dropout: 0, NumLayers: -1, Keys: []string{"all-linear"}},
	}
	for i, s := range cases {
		t.Run(fmt.Sprintf("rank%d-layers%d", s.Rank, s.NumLayers), func(t *testing.T) {
			adapterDir := filepath.Join(t.TempDir(), "adapter")
			var base, adapted []float64
			var shape []int
			doMLX(t, func() error {
				m, err := llama.LoadModel(modelDir, llama.LoadOptions{Dtype: "f32"})
				if err != nil {
					return err
				}
				defer m.Free()
				if base, _, err = logitsOf(m); err != nil {
					return err
				}
				a, err := Apply(m, s, uint64(i))
				if err != nil {
					return err
				}
				defer a.Remove()
				if err := setRandomB(a, 0.05, uint64(i)+5); err != nil {
					return err
				}
				if err := a.Save(adapterDir); err != nil {
					return err
				}
				adapted, shape, err = logitsOf(m)
				return err
			})
			var cfg map[string]any
			b, err := os.ReadFile(filepath.Join(adapterDir, "adapter_config.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			lp := cfg["lora_parameters"].(map[string]any)
			if cfg["fine_tune_type"] != "lora" || lp["rank"] != float64(s.Rank) || lp["scale"] != s.Alpha/float64(s.Rank) {
				t.Errorf("adapter_config.json %s", b)
			}
			var ref mlxlmLogits
			mlxlm(t, map[string]any{"ids": interopIDs}, &ref, "logits", modelDir, adapterDir)
			if fmt.Sprint(ref.Shape) != fmt.Sprint(shape) {
				t.Fatalf("mlx-lm logits shape %v, fungtrain %v", ref.Shape, shape)
			}
			effect := maxAbsDiff(adapted, base)
			diff := maxAbsDiff(adapted, ref.Logits)
			t.Logf("adapter moves the logits by up to %.3g; fungtrain vs mlx-lm max |logit diff| %.3g", effect, diff)
			if effect < 1e-2 {
				t.Errorf("the adapter barely changes the logits (%g); the comparison would not test it", effect)
			}
			if diff > 1e-4 {
				t.Errorf("fungtrain and mlx-lm logits differ by %g (> 1e-4)", diff)
			}
		})
	}
}

// TestMLXLMAdapterLoadsInFungtrain: adapters made by mlx-lm the way
// `mlx_lm lora` makes them (its adapter_config.json with all its training
// arguments; lora_parameters without keys, its default, and with keys)
// load with lora.Load and give mlx-lm's logits.
func TestMLXLMAdapterLoadsInFungtrain(t *testing.T) {
	modelDir := writeTinyModelDir(t, 4, 17)
	cases := []struct {
		name      string
		numLayers int
		params    map[string]any
		wantKeys  int // adapted modules per layer
	}{
		// mlx-lm's own default lora_parameters: no keys, which mlx-lm
		// takes as every linear layer of the block.
		{"default-no-keys", 2, map[string]any{"rank": 8, "dropout": 0.0, "scale": 20.0}, 7},
		{"q-v-keys", 3, map[string]any{"rank": 4, "dropout": 0.05, "scale": 10.0, "keys": []string{"self_attn.q_proj", "self_attn.v_proj"}}, 2},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			adapterDir := filepath.Join(t.TempDir(), "adapter")
			var ref mlxlmLogits
			mlxlm(t, map[string]any{"num_layers": tc.numLayers, "lora_parameters": tc.params, "seed": i + 1, "ids": interopIDs}, &ref, "make-adapter", modelDir, adapterDir)
			if want := 2 * tc.numLayers * tc.wantKeys; len(ref.Tensors) != want {
				t.Fatalf("mlx-lm wrote %d tensors, want %d: %v", len(ref.Tensors), want, ref.Tensors)
			}
			var got, base []float64
			var names []string
			var scale float32
			var leaked int64
			doMLX(t, func() error {
				m, err := llama.LoadModel(modelDir, llama.LoadOptions{Dtype: "f32"})
				if err != nil {
					return err
				}
				defer m.Free()
				if base, _, err = logitsOf(m); err != nil {
					return err
				}
				live := mlx.LiveArrays()
				a, err := Load(m, adapterDir)
				if err != nil {
					return err
				}
				names = a.ParamNames()
				scale = a.Layers[a.Names[0]].Scale
				got, _, err = logitsOf(m)
				a.Remove()
				leaked = mlx.LiveArrays() - live
				return err
			})
			if leaked != 0 {
				t.Errorf("Load then Remove left %d arrays alive", leaked)
			}
			if strings.Join(names, ",") != strings.Join(ref.Tensors, ",") {
				t.Errorf("fungtrain adapted %v\nmlx-lm saved      %v", names, ref.Tensors)
			}
			if want := float32(tc.params["scale"].(float64)); scale != want {
				t.Errorf("scale %v, want mlx-lm's %v", scale, want)
			}
			effect := maxAbsDiff(ref.Logits, base)
			diff := maxAbsDiff(got, ref.Logits)
			t.Logf("adapter moves the logits by up to %.3g; fungtrain vs mlx-lm max |logit diff| %.3g", effect, diff)
			if effect < 1e-2 {
				t.Errorf("the adapter barely changes the logits (%g)", effect)
			}
			if diff > 1e-4 {
				t.Errorf("fungtrain and mlx-lm logits differ by %g (> 1e-4)", diff)
			}
		})
	}
}

// TestFuseMatchesUnfused: Adapters.Fuse gives the same logits as the
// unfused adapted model, for dense and for 4-bit quantized bases (QLoRA:
// the fused weight is the dequantized base plus the update), removes the
// adapters, and leaves no arrays behind.
func TestFuseMatchesUnfused(t *testing.T) {
	for _, quantized := range []bool{false, true} {
		t.Run(fmt.Sprintf("quantized=%v", quantized), func(t *testing.T) {
			var unfused, fused, base []float64
			var leaked int64
			doMLX(t, func() error {
				live := mlx.LiveArrays()
				m, err := tinyModel(2, 23)
				if err != nil {
					return err
				}
				if quantized {
					if err := quantizeLinears(m); err != nil {
						return err
					}
				}
				if base, _, err = logitsOf(m); err != nil {
					return err
				}
				a, err := Apply(m, Settings{Rank: 4, Alpha: 8, NumLayers: 2, Keys: []string{"all-linear"}}, 1)
				if err != nil {
					return err
				}
				if err := setRandomB(a, 0.05, 3); err != nil {
					return err
				}
				if unfused, _, err = logitsOf(m); err != nil {
					return err
				}
				if err := a.Fuse(); err != nil {
					return err
				}
				for _, b := range m.Layers {
					for _, p := range llama.ModulePaths {
						slot, _ := b.Module(p)
						l, ok := (*slot).(*llama.Linear)
						if !ok || l.Q != nil || l.Weight == nil {
							return fmt.Errorf("after Fuse, %s is %T (quantized %v), want a dense Linear", p, *slot, ok && l.Q != nil)
						}
					}
				}
				if fused, _, err = logitsOf(m); err != nil {
					return err
				}
				m.Free()
				leaked = mlx.LiveArrays() - live
				return nil
			})
			effect := maxAbsDiff(unfused, base)
			diff := maxAbsDiff(fused, unfused)
			t.Logf("adapter moves the logits by up to %.3g; fused vs unfused max |logit diff| %.3g", effect, diff)
			if effect < 1e-2 {
				t.Errorf("the adapter barely changes the logits (%g)", effect)
			}
			if diff > 1e-5*math.Max(1, maxAbs(unfused)) {
				t.Errorf("fused logits differ from unfused by %g", diff)
			}
			if leaked != 0 {
				t.Errorf("%d arrays left alive after Fuse and Free", leaked)
			}
		})
	}
}

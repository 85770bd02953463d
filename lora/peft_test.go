package lora

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// peftFile is a tensor as testdata/peft_ref.py reads or writes it.
type peftFile struct {
	Dtype string    `json:"dtype,omitempty"`
	Shape []int     `json:"shape"`
	Data  []float64 `json:"data"`
}

// peftRead reads a PEFT directory with the safetensors package.
func peftRead(t *testing.T, dir string) (cfg map[string]any, tensors map[string]peftFile) {
	t.Helper()
	var out struct {
		Config  map[string]any      `json:"config"`
		Tensors map[string]peftFile `json:"tensors"`
	}
	pyRef(t, map[string]any{"op": "read", "dir": dir}, &out)
	return out.Config, out.Tensors
}

// pyRef runs testdata/peft_ref.py.
func pyRef(t *testing.T, req, out any) {
	t.Helper()
	runScript(t, filepath.Join(testenv.RepoRoot(), "lora", "testdata", "peft_ref.py"), req, out)
}

// runScript runs a Python script of the test venv with a JSON request on
// stdin and decodes its JSON answer into out.
func runScript(t *testing.T, script string, req, out any) {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Python(t), script)
	cmd.Stdin = bytes.NewReader(b)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(script), err, stderr.String())
	}
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("%s: answer: %v", filepath.Base(script), err)
	}
}

// layerValues returns each layer's A (in, r) and B (r, out) values.
func layerValues(t *testing.T, a *Adapters) map[string][2][]float64 {
	t.Helper()
	out := map[string][2][]float64{}
	for _, n := range a.Names {
		v, err := readFloats(a.Layers[n].A, a.Layers[n].B)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = [2][]float64{v[0], v[1]}
	}
	return out
}

// transpose2 transposes a rows×cols row-major matrix.
func transpose2(v []float64, rows, cols int) []float64 {
	out := make([]float64, len(v))
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			out[j*rows+i] = v[i*cols+j]
		}
	}
	return out
}

// TestExportPEFTFormat exports a fungtrain adapter as PEFT and reads it with
// the safetensors package: PEFT's tensor names, float32, A as (r, in) and B
// as (out, r) holding the transposes of fungtrain's values, and the
// adapter_config.json values PEFT needs. Loading the export back gives the
// original adapter bit for bit, and the same logits.
func TestExportPEFTFormat(t *testing.T) {
	dir, out := filepath.Join(t.TempDir(), "run"), filepath.Join(t.TempDir(), "peft")
	s := Settings{Rank: 4, Alpha: 8, Dropout: 0.05, NumLayers: 2, Keys: []string{"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"}}
	var orig map[string][2][]float64
	var logits []float64
	doMLX(t, func() error {
		m, err := tinyModel(4, 1)
		if err != nil {
			return err
		}
		defer m.Free()
		a, err := Apply(m, s, 3)
		if err != nil {
			return err
		}
		if err := setRandomB(a, 0.1, 5); err != nil {
			return err
		}
		orig = layerValues(t, a)
		if logits, _, err = logitsOf(m); err != nil {
			return err
		}
		if err := a.Save(dir); err != nil {
			return err
		}
		return ExportPEFT(dir, out, PEFTOptions{BaseModel: "org/base"})
	})

	cfg, tensors := peftRead(t, out)
	for k, want := range map[string]string{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": "4", "lora_alpha": "8", "lora_dropout": "0.05",
		"target_modules": "[q_proj v_proj down_proj]", "layers_to_transform": "[2 3]", "layers_pattern": "layers",
		"base_model_name_or_path": "org/base", "bias": "none", "use_rslora": "false", "use_dora": "false", "fan_in_fan_out": "false",
	} {
		if got := fmt.Sprint(cfg[k]); got != want {
			t.Errorf("adapter_config.json %s = %s, want %s", k, got, want)
		}
	}
	if len(tensors) != 2*len(orig) {
		t.Errorf("%d tensors, want %d", len(tensors), 2*len(orig))
	}
	c := tinyConfig(4)
	dims := map[string][2]int{ // in, out
		"self_attn.q_proj": {c.HiddenSize, c.NumHeads * c.HeadDim},
		"self_attn.v_proj": {c.HiddenSize, c.NumKVHeads * c.HeadDim},
		"mlp.down_proj":    {c.IntermediateSize, c.HiddenSize},
	}
	for name, ab := range orig {
		path := name[strings.IndexByte(name[len("model.layers."):], '.')+len("model.layers.")+1:]
		in, outDim := dims[path][0], dims[path][1]
		for i, part := range []string{"lora_A", "lora_B"} {
			pn := "base_model.model." + name + "." + part + ".weight"
			tf, ok := tensors[pn]
			if !ok {
				t.Errorf("no tensor %s", pn)
				continue
			}
			want := []int{4, in}
			src := transpose2(ab[0], in, 4)
			if i == 1 {
				want, src = []int{outDim, 4}, transpose2(ab[1], 4, outDim)
			}
			if tf.Dtype != "float32" || !slices.Equal(tf.Shape, want) {
				t.Errorf("%s: %s %v, want float32 %v", pn, tf.Dtype, tf.Shape, want)
			} else if d := maxAbsDiff(tf.Data, src); d != 0 {
				t.Errorf("%s differs from the transposed fungtrain tensor by %g", pn, d)
			}
		}
	}

	doMLX(t, func() error {
		m, err := tinyModel(4, 1)
		if err != nil {
			return err
		}
		defer m.Free()
		a, err := Load(m, out)
		if err != nil {
			return err
		}
		if a.Settings.EffectiveScale() != 2 || a.Settings.NumLayers != 2 || !slices.Equal(a.Settings.Keys, s.Keys) || a.Settings.Dropout != 0.05 {
			t.Errorf("imported settings %+v", a.Settings)
		}
		back := layerValues(t, a)
		for n, ab := range orig {
			if maxAbsDiff(back[n][0], ab[0]) != 0 || maxAbsDiff(back[n][1], ab[1]) != 0 {
				t.Errorf("%s: A or B changed through export and import", n)
			}
		}
		got, _, err := logitsOf(m)
		if err != nil {
			return err
		}
		if d := maxAbsDiff(got, logits); d != 0 {
			t.Errorf("logits with the re-imported adapter differ by %g", d)
		}
		return nil
	})
}

// writePEFT writes a PEFT adapter (with the safetensors package) for a tiny
// model of nLayers: random A and B for targets in layers, and the config
// with extra keys set. It returns each tensor's values by PEFT name.
func writePEFT(t *testing.T, dir string, r int, alpha float64, layers []int, targets []string, extra map[string]any) map[string]peftFile {
	t.Helper()
	c := tinyConfig(4)
	dims := map[string][2]int{
		"self_attn.q_proj": {c.HiddenSize, c.NumHeads * c.HeadDim}, "self_attn.k_proj": {c.HiddenSize, c.NumKVHeads * c.HeadDim},
		"self_attn.v_proj": {c.HiddenSize, c.NumKVHeads * c.HeadDim}, "self_attn.o_proj": {c.NumHeads * c.HeadDim, c.HiddenSize},
		"mlp.gate_proj": {c.HiddenSize, c.IntermediateSize}, "mlp.up_proj": {c.HiddenSize, c.IntermediateSize},
		"mlp.down_proj": {c.IntermediateSize, c.HiddenSize},
	}
	rng := rand.New(rand.NewSource(int64(r*100 + len(layers))))
	random := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(float32(rng.NormFloat64() * 0.1))
		}
		return v
	}
	tensors := map[string]peftFile{}
	var short []string
	for _, p := range targets {
		short = append(short, p[strings.LastIndexByte(p, '.')+1:])
		for _, l := range layers {
			base := fmt.Sprintf("base_model.model.model.layers.%d.%s", l, p)
			in, out := dims[p][0], dims[p][1]
			tensors[base+".lora_A.weight"] = peftFile{Shape: []int{r, in}, Data: random(r * in)}
			tensors[base+".lora_B.weight"] = peftFile{Shape: []int{out, r}, Data: random(out * r)}
		}
	}
	cfg := map[string]any{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
		"target_modules": short, "bias": "none", "base_model_name_or_path": "test/tiny"}
	for k, v := range extra {
		cfg[k] = v
	}
	var ok map[string]any
	pyRef(t, map[string]any{"op": "write", "dir": dir, "config": cfg, "tensors": tensors}, &ok)
	return tensors
}

// TestLoadPEFT loads PEFT adapters written by the safetensors package and
// checks each layer's weight update against scale·B·A computed here in
// float64 from the file's values: scale alpha/r, and alpha/√r with
// use_rslora; a tensor name with PEFT's adapter name ("default") in it
// reads the same.
func TestLoadPEFT(t *testing.T) {
	cases := []struct {
		name  string
		r     int
		alpha float64
		extra map[string]any
		scale float64
	}{
		{"alpha over r", 4, 8, nil, 2},
		{"rslora", 4, 8, map[string]any{"use_rslora": true}, 8 / 2.0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			targets := []string{"self_attn.q_proj", "mlp.up_proj"}
			tensors := writePEFT(t, dir, c.r, c.alpha, []int{2, 3}, targets, c.extra)
			doMLX(t, func() error {
				m, err := tinyModel(4, 2)
				if err != nil {
					return err
				}
				defer m.Free()
				a, err := Load(m, dir)
				if err != nil {
					return err
				}
				if math.Abs(a.Settings.EffectiveScale()-c.scale) > 1e-12 || a.Settings.NumLayers != 2 || !slices.Equal(a.Settings.Keys, targets) {
					t.Errorf("settings %+v (scale %g), want scale %g, 2 layers, keys %v", a.Settings, a.Settings.EffectiveScale(), c.scale, targets)
				}
				for _, n := range a.Names {
					A := tensors["base_model.model."+n+".lora_A.weight"]
					B := tensors["base_model.model."+n+".lora_B.weight"]
					r, in, out := A.Shape[0], A.Shape[1], B.Shape[0]
					want := make([]float64, out*in)
					for i := 0; i < out; i++ {
						for j := 0; j < in; j++ {
							var s float64
							for k := 0; k < r; k++ {
								s += B.Data[i*r+k] * A.Data[k*in+j]
							}
							want[i*in+j] = c.scale * s
						}
					}
					got, err := readFloats(a.Layers[n].Delta())
					if err != nil {
						return err
					}
					if d := maxAbsDiff(got[0], want); d > 1e-6*maxAbs(want) {
						t.Errorf("%s: update differs from scale·B·A by %g", n, d)
					}
				}
				return nil
			})
		})
	}
	// PEFT may keep the adapter's name in tensor names.
	dir := t.TempDir()
	tensors := writePEFT(t, dir, 2, 4, []int{3}, []string{"self_attn.v_proj"}, nil)
	renamed := map[string]peftFile{}
	for k, v := range tensors {
		renamed[strings.Replace(k, ".weight", ".default.weight", 1)] = v
	}
	var ok map[string]any
	pyRef(t, map[string]any{"op": "write", "dir": dir, "config": map[string]any{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": []string{"v_proj"}}, "tensors": renamed}, &ok)
	doMLX(t, func() error {
		m, err := tinyModel(4, 2)
		if err != nil {
			return err
		}
		defer m.Free()
		a, err := Load(m, dir)
		if err != nil {
			return err
		}
		if len(a.Names) != 1 || a.Names[0] != "model.layers.3.self_attn.v_proj" {
			t.Errorf("adapted %v", a.Names)
		}
		return nil
	})
}

// TestLoadPEFTBadInput: PEFT adapters fungtrain cannot run exactly are
// refused with an error naming the file and the reason.
func TestLoadPEFTBadInput(t *testing.T) {
	q := []string{"self_attn.q_proj"}
	cases := []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"IA3", func(d string) { writePEFT(t, d, 4, 8, []int{3}, q, map[string]any{"peft_type": "IA3"}) }, `peft_type "IA3" is not supported`},
		{"DoRA", func(d string) { writePEFT(t, d, 4, 8, []int{3}, q, map[string]any{"use_dora": true}) }, "DoRA"},
		{"bias", func(d string) { writePEFT(t, d, 4, 8, []int{3}, q, map[string]any{"bias": "all"}) }, `bias "all"`},
		{"rank pattern", func(d string) {
			writePEFT(t, d, 4, 8, []int{3}, q, map[string]any{"rank_pattern": map[string]int{"q_proj": 8}})
		}, "rank_pattern"},
		{"modules to save", func(d string) {
			writePEFT(t, d, 4, 8, []int{3}, q, map[string]any{"modules_to_save": []string{"lm_head"}})
		}, "modules_to_save"},
		{"zero alpha", func(d string) { writePEFT(t, d, 4, 0, []int{3}, q, nil) }, "lora_alpha must be positive"},
		{"pickle only", func(d string) {
			writePEFT(t, d, 4, 8, []int{3}, q, nil)
			os.Rename(filepath.Join(d, "adapter_model.safetensors"), filepath.Join(d, "adapter_model.bin"))
		}, "adapter_model.bin"},
		{"first layers", func(d string) { writePEFT(t, d, 4, 8, []int{0, 1}, q, nil) }, "last N"},
		{"uneven layers", func(d string) {
			ts := writePEFT(t, d, 4, 8, []int{2, 3}, []string{"self_attn.q_proj", "self_attn.v_proj"}, nil)
			delete(ts, "base_model.model.model.layers.2.self_attn.v_proj.lora_A.weight")
			delete(ts, "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight")
			var ok any
			pyRef(t, map[string]any{"op": "write", "dir": d, "config": map[string]any{"peft_type": "LORA", "r": 4, "lora_alpha": 8}, "tensors": ts}, &ok)
		}, "same layers"},
		{"deeper base", func(d string) { writePEFT(t, d, 4, 8, []int{6, 7}, q, nil) }, "another base model"},
		{"embedding", func(d string) {
			ts := writePEFT(t, d, 4, 8, []int{3}, q, nil)
			ts["base_model.model.model.embed_tokens.lora_embedding_A"] = peftFile{Shape: []int{4, 8}, Data: make([]float64, 32)}
			var ok any
			pyRef(t, map[string]any{"op": "write", "dir": d, "config": map[string]any{"peft_type": "LORA", "r": 4, "lora_alpha": 8}, "tensors": ts}, &ok)
		}, "not a LoRA A/B weight"},
		{"rank mismatch", func(d string) { writePEFT(t, d, 4, 8, []int{3}, q, map[string]any{"r": 5}) }, "rank 4 is not r = 5"},
		{"another base", func(d string) {
			ts := writePEFT(t, d, 4, 8, []int{3}, q, nil)
			ts["base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"] = peftFile{Shape: []int{4, 96}, Data: make([]float64, 4*96)}
			var ok any
			pyRef(t, map[string]any{"op": "write", "dir": d, "config": map[string]any{"peft_type": "LORA", "r": 4, "lora_alpha": 8}, "tensors": ts}, &ok)
		}, "another base model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "peft-"+strings.ReplaceAll(c.name, " ", "-"))
			c.setup(dir)
			doMLX(t, func() error {
				m, err := tinyModel(4, 2)
				if err != nil {
					return err
				}
				defer m.Free()
				before := mlx.LiveArrays()
				_, err = Load(m, dir)
				if err == nil {
					t.Fatal("no error")
				}
				t.Logf("%v", err)
				if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
					t.Errorf("error %q: want it to name %s and contain %q", err, dir, c.want)
				}
				if after := mlx.LiveArrays(); after != before {
					t.Errorf("a refused adapter leaked %d arrays", after-before)
				}
				for _, b := range m.Layers {
					if _, plain := b.Attn.Q.(*llama.Linear); !plain {
						t.Errorf("a refused adapter left a layer wrapped")
					}
				}
				return nil
			})
		})
	}
}

package lora

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// TestDefaultsAreTheMissions: the defaults are rank 6, alpha 8 (scale
// 8/6), dropout 0.1, the last 12 layers, q and v, lr 1e-5, batch 1,
// accumulation 8, max_seq_length 1024, 2 epochs, eval every 50, seed 42;
// AdamW β 0.9/0.999, ε 1e-8; prompts masked. A config file that gives
// only the model and data gets exactly these.
func TestDefaultsAreTheMissions(t *testing.T) {
	path := writeFile(t, t.TempDir(), "run.yaml", "model:\n  path: /models/m\ndata:\n  dir: /data/d\n")
	cfg, err := LoadRunConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultRunConfig()
	want.Model.Path, want.Data.Dir = "/models/m", "/data/d"
	if fmt.Sprintf("%+v", cfg) != fmt.Sprintf("%+v", want) {
		t.Errorf("loaded %+v\nwant   %+v", cfg, want)
	}
	l, o, tr := cfg.LoRA, cfg.Optimizer, cfg.Training
	checks := []struct {
		name      string
		got, want any
	}{
		{"lora.rank", l.Rank, 6}, {"lora.alpha", l.Alpha, 8.0}, {"lora.dropout", l.Dropout, 0.1},
		{"lora.num_layers", l.NumLayers, 12}, {"lora.keys", strings.Join(l.Keys, ","), "self_attn.q_proj,self_attn.v_proj"},
		{"scale", l.EffectiveScale(), 8.0 / 6}, {"optimizer.lr", o.LR, 1e-5}, {"optimizer.beta1", o.Beta1, 0.9},
		{"optimizer.beta2", o.Beta2, 0.999}, {"optimizer.eps", o.Eps, 1e-8}, {"training.batch_size", tr.BatchSize, 1},
		{"training.grad_accumulation", tr.GradAccumulation, 8}, {"data.max_seq_length", cfg.Data.MaxSeqLength, 1024},
		{"training.epochs", tr.Epochs, 2}, {"eval.every", cfg.Eval.Every, 50}, {"training.seed", tr.Seed, uint64(42)},
		{"data.mask_prompt", cfg.Data.MaskPrompt, true}, {"schedule.name", cfg.Schedule.Name, "constant"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// Config YAML round trip: the resolved config reloads to itself.
	y, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadRunConfig(writeFile(t, t.TempDir(), "resolved.yaml", string(y)), nil)
	if err != nil {
		t.Fatalf("the resolved config does not reload: %v\n%s", err, y)
	}
	if fmt.Sprintf("%+v", again) != fmt.Sprintf("%+v", cfg) {
		t.Errorf("resolved config reloads as %+v", again)
	}
}

// TestOverrides: section.key=value overrides beat the file and reach lists
// and nested data keys (bad ones: TestBadOverrides).
func TestOverrides(t *testing.T) {
	path := writeFile(t, t.TempDir(), "run.yaml", `model:
  path: /models/m
data:
  dir: /data/d
lora:
  rank: 4
optimizer:
  lr: 1.0e-4
`)
	cfg, err := LoadRunConfig(path, []string{"lora.rank=8", "optimizer.lr=3e-4", "lora.keys=[self_attn.q_proj, mlp.down_proj]",
		"training.seed=7", "data.mask_prompt=false", "schedule.name=cosine", "schedule.warmup_steps=10", "output.dir=/tmp/o"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LoRA.Rank != 8 || cfg.Optimizer.LR != 3e-4 || strings.Join(cfg.LoRA.Keys, ",") != "self_attn.q_proj,mlp.down_proj" ||
		cfg.Training.Seed != 7 || cfg.Data.MaskPrompt || cfg.Schedule.Name != "cosine" || cfg.Schedule.WarmupSteps != 10 ||
		cfg.Output.Dir != "/tmp/o" {
		t.Errorf("overrides not applied: %+v", cfg)
	}
	if cfg.LoRA.Alpha != 8 || cfg.Training.GradAccumulation != 8 {
		t.Errorf("untouched keys changed: alpha %v accumulation %d", cfg.LoRA.Alpha, cfg.Training.GradAccumulation)
	}
	// Overrides alone (no file) work too.
	cfg, err = LoadRunConfig("", []string{"model.path=/m", "data.dir=/d", "lora.keys=[all-linear]"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.LoRA.ResolvedKeys()) != 7 {
		t.Errorf("all-linear resolves to %v", cfg.LoRA.ResolvedKeys())
	}
}

// TestLearningRate checks the schedule against hand-computed values:
// warmup is linear from peak/W at step 0 to peak at step W-1; cosine then
// decays from peak at step W to min_lr at the last step (total-1).
func TestLearningRate(t *testing.T) {
	cases := []struct {
		s           ScheduleConfig
		peak        float64
		step, total int
		want        float64
	}{
		{ScheduleConfig{Name: "constant"}, 1e-5, 0, 100, 1e-5},
		{ScheduleConfig{Name: "constant"}, 1e-5, 99, 100, 1e-5},
		{ScheduleConfig{Name: "constant", WarmupSteps: 4}, 1e-3, 0, 100, 2.5e-4},
		{ScheduleConfig{Name: "constant", WarmupSteps: 4}, 1e-3, 2, 100, 7.5e-4},
		{ScheduleConfig{Name: "constant", WarmupSteps: 4}, 1e-3, 3, 100, 1e-3},
		{ScheduleConfig{Name: "constant", WarmupSteps: 4}, 1e-3, 50, 100, 1e-3},
		// cosine, warmup 2, total 12: progress (step-2)/9, so steps 3, 6,
		// 7 are 20°, 80° and 100° along the half cosine:
		// 1e-4 + 9e-4·(1+cos θ)/2 with cos 20° = 0.9396926, cos 80° =
		// 0.1736482, cos 100° = -0.1736482.
		{ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}, 1e-3, 0, 12, 5e-4},
		{ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}, 1e-3, 1, 12, 1e-3},
		{ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}, 1e-3, 2, 12, 1e-3},
		{ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}, 1e-3, 3, 12, 9.7286168e-4},
		{ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}, 1e-3, 6, 12, 6.2814168e-4},
		{ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}, 1e-3, 7, 12, 4.7185832e-4},
		{ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}, 1e-3, 11, 12, 1e-4},
		// No warmup: cosine from peak at step 0 to 0 at step 4 (90° at 2).
		{ScheduleConfig{Name: "cosine"}, 2e-4, 0, 5, 2e-4},
		{ScheduleConfig{Name: "cosine"}, 2e-4, 2, 5, 1e-4},
		{ScheduleConfig{Name: "cosine"}, 2e-4, 4, 5, 0},
	}
	for _, c := range cases {
		got := LearningRate(c.s, c.peak, c.step, c.total)
		if math.Abs(got-c.want) > 1e-10*math.Max(1, c.want)+1e-12 {
			t.Errorf("%+v peak %g step %d/%d: lr %.10g, want %.10g", c.s, c.peak, c.step, c.total, got, c.want)
		}
	}
}

// TestAdamWAgainstFloat64 runs three AdamW updates (weight decay 0.1) on
// fixed gradients and compares with a float64 implementation of
// p ← p(1 - lr·wd) - lr·m̂/(√v̂ + ε), m̂ = m/(1-β1ᵗ), v̂ = v/(1-β2ᵗ), and,
// with optimizer.bias_correction false, of the same with m̂ = m, v̂ = v
// (MLX's optim.Adam default, as mlx-lm trains). Each must also differ
// from the other rule's reference far beyond the tolerance.
func TestAdamWAgainstFloat64(t *testing.T) {
	p0 := []float64{0.5, -0.25, 1.5, 0, -2, 0.125}
	grads := [][]float64{
		{0.1, -0.2, 0.3, 0.0, 1e-3, -5},
		{-0.1, -0.2, 0.05, 0.2, 1e-3, 4},
		{0.3, 0.1, -0.3, 0.2, -2e-3, 0.5},
	}
	lrs := []float64{1e-2, 5e-3, 1e-3}
	reference := func(c OptimizerConfig) []float64 {
		ref := append([]float64{}, p0...)
		m, v := make([]float64, 6), make([]float64, 6)
		for s, g := range grads {
			tt := float64(s + 1)
			for i := range ref {
				m[i] = c.Beta1*m[i] + (1-c.Beta1)*g[i]
				v[i] = c.Beta2*v[i] + (1-c.Beta2)*g[i]*g[i]
				mh, vh := m[i]/(1-math.Pow(c.Beta1, tt)), v[i]/(1-math.Pow(c.Beta2, tt))
				if !c.BiasCorrection {
					mh, vh = m[i], v[i]
				}
				ref[i] = ref[i]*(1-lrs[s]*c.WeightDecay) - lrs[s]*mh/(math.Sqrt(vh)+c.Eps)
			}
		}
		return ref
	}
	relErr := func(got, ref []float64) float64 {
		worst := 0.0
		for i := range ref {
			worst = math.Max(worst, math.Abs(got[i]-ref[i])/math.Max(math.Abs(ref[i]), 1e-3))
		}
		return worst
	}
	for _, bias := range []bool{true, false} {
		c := OptimizerConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, BiasCorrection: bias}
		ref := reference(c)
		other := c
		other.BiasCorrection = !bias
		var got []float64
		var step int
		doMLX(t, func() error {
			f32 := func(x []float64) *mlx.Array {
				v := make([]float32, len(x))
				for i := range x {
					v[i] = float32(x[i])
				}
				return mlx.FromFloat32s(v, 2, 3)
			}
			p := f32(p0)
			mlx.Detach(p)
			o := NewAdamW(c, []*mlx.Array{p})
			defer o.Free()
			for s, g := range grads {
				sc := mlx.NewScope()
				np := o.Update([]*mlx.Array{p}, []*mlx.Array{f32(g)}, lrs[s])
				err := mlx.Eval(append(np, o.State()...)...)
				sc.Close()
				if err != nil {
					return err
				}
				p.Free()
				p = np[0]
			}
			defer p.Free()
			step = o.Step
			r, err := readFloats(p)
			got = r[0]
			return err
		})
		if step != 3 {
			t.Errorf("optimizer step %d, want 3", step)
		}
		worst, control := relErr(got, ref), relErr(got, reference(other))
		t.Logf("bias correction %v: AdamW after 3 steps: %v\nfloat64 reference:   %v\nmax relative error %.2g (%.2g from the other rule's reference)",
			bias, got, ref, worst, control)
		if worst > 1e-6 {
			t.Errorf("bias correction %v: AdamW differs from the float64 reference by %g (relative)", bias, worst)
		}
		if control < 1e-2 {
			t.Errorf("bias correction %v: the other rule's reference is only %g away; the test cannot tell them apart", bias, control)
		}
	}
}

// TestClipByGlobalNorm: gradients (3, 4) and (12) have global norm 13;
// clipping to 1 scales them by 1/13, to 26 or 0 (off) leaves them.
func TestClipByGlobalNorm(t *testing.T) {
	for _, c := range []struct {
		max   float64
		scale float64
	}{{1, 1 / 13.0}, {6.5, 0.5}, {26, 1}, {0, 1}} {
		var norm float64
		var out [][]float64
		doMLX(t, func() error {
			s := mlx.NewScope()
			defer s.Close()
			g, n := ClipByGlobalNorm([]*mlx.Array{mlx.FromFloat32s([]float32{3, 4}, 2), mlx.FromFloat32s([]float32{12}, 1, 1)}, c.max)
			var err error
			if norm, err = n.Item(); err != nil {
				return err
			}
			out, err = readFloats(g...)
			return err
		})
		if math.Abs(norm-13) > 1e-6 {
			t.Errorf("max %g: norm %v, want 13", c.max, norm)
		}
		want := []float64{3 * c.scale, 4 * c.scale, 12 * c.scale}
		got := append(out[0], out[1]...)
		if d := maxAbsDiff(got, want); d > 1e-6 {
			t.Errorf("max %g: clipped %v, want %v", c.max, got, want)
		}
	}
}

// TestDataSectionsOfOthers: the dataset pipeline's sub-sections under data:
// pass when the caller names them, are kept as written, and any other key
// there is an error naming it.
func TestDataSectionsOfOthers(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "run.yaml", "model:\n  path: /m\ndata:\n  dir: /d\n  llm:\n    model: gpt-x\n")
	cfg, err := LoadRunConfig(path, nil, "llm", "work_dir")
	if err != nil {
		t.Fatal(err)
	}
	llm, ok := cfg.Data.Pipeline["llm"].(map[string]any)
	if !ok || llm["model"] != "gpt-x" {
		t.Errorf("data.llm kept as %#v, want map with model gpt-x", cfg.Data.Pipeline["llm"])
	}
	if _, err := LoadRunConfig(path, nil); err == nil || !strings.Contains(err.Error(), "unknown key data.llm") {
		t.Errorf("without naming llm: err = %v, want unknown key data.llm", err)
	}
	typo := writeFile(t, dir, "typo.yaml", "model:\n  path: /m\ndata:\n  dir: /d\n  max_seq_lenght: 9\n")
	if _, err := LoadRunConfig(typo, nil, "llm"); err == nil || !strings.Contains(err.Error(), "unknown key data.max_seq_lenght") {
		t.Errorf("typo: err = %v, want unknown key data.max_seq_lenght", err)
	}
}

// floatKeys lists the dotted keys of every float setting of the run
// config, found through the YAML tags.
func floatKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		key := prefix + name
		if strings.Contains(opts, "inline") {
			key = strings.TrimSuffix(prefix, ".")
		}
		switch f.Type.Kind() {
		case reflect.Struct:
			keys = append(keys, floatKeys(f.Type, strings.TrimSuffix(key, ".")+".")...)
		case reflect.Float64:
			keys = append(keys, key)
		}
	}
	return keys
}

// TestNonFiniteSettings: every float setting set to .inf, -.inf or .nan is
// refused at load, naming the key and its line (a comparison such as
// lr > 0 lets +Inf and NaN through; the run then failed much later, writing
// its metadata). The same values through --set name the override.
func TestNonFiniteSettings(t *testing.T) {
	keys := floatKeys(reflect.TypeFor[RunConfig](), "")
	for _, k := range []string{"optimizer.lr", "optimizer.beta1", "optimizer.beta2", "optimizer.eps", "optimizer.weight_decay",
		"optimizer.grad_clip", "schedule.min_lr", "training.memory_limit_gb", "training.dist_timeout", "lora.alpha", "lora.dropout", "lora.scale"} {
		if !slices.Contains(keys, k) {
			t.Fatalf("float keys %v miss %s", keys, k)
		}
	}
	dir := t.TempDir()
	for _, key := range keys {
		section, name, _ := strings.Cut(key, ".")
		for _, v := range []struct{ yaml, shown string }{{".inf", "+Inf"}, {"-.inf", "-Inf"}, {".nan", "NaN"}} {
			t.Run(key+"="+v.yaml, func(t *testing.T) {
				body := configBase + section + ":\n  " + name + ": " + v.yaml + "\n"
				if section == "data" {
					body = configBase + "  " + name + ": " + v.yaml + "\n"
				}
				path := writeFile(t, dir, key+v.yaml+".yaml", body)
				want := fmt.Sprintf("%s:6: %s must be a finite number, got %s", path, key, v.shown)
				if _, err := LoadRunConfig(path, nil); err == nil || err.Error() != want {
					t.Errorf("error\n%v\nwant\n%s", err, want)
				}
				set := key + "=" + v.yaml
				want = fmt.Sprintf("--set %s: %s must be a finite number, got %s", set, key, v.shown)
				if _, err := LoadRunConfig("", []string{"model.path=/m", "data.dir=/d", set}); err == nil || err.Error() != want {
					t.Errorf("error\n%v\nwant\n%s", err, want)
				}
			})
		}
	}
}

// TestSettingsValidate: the LoRA settings the trainer and Apply check
// directly (not through a config file) refuse non-finite and out-of-range
// values, one line per problem.
func TestSettingsValidate(t *testing.T) {
	ok := DefaultSettings()
	cases := []struct {
		name string
		edit func(s *Settings)
		want string
	}{
		{"defaults", func(*Settings) {}, ""},
		{"NaN dropout", func(s *Settings) { s.Dropout = math.NaN() }, "lora.dropout must be a finite number, got NaN"},
		{"infinite alpha", func(s *Settings) { s.Alpha = math.Inf(1) }, "lora.alpha must be a finite number, got +Inf"},
		{"infinite scale", func(s *Settings) { s.Scale = math.Inf(-1) }, "lora.scale must be a finite number, got -Inf"},
		{"scale beyond float32", func(s *Settings) { s.Scale = 1e39 }, "lora.scale 1e+39 is too large for float32"},
		{"alpha/rank beyond float32", func(s *Settings) { s.Alpha = 1e300 }, "lora.alpha 1e+300 over rank 6 is too large a scale for float32"},
		{"negative scale", func(s *Settings) { s.Scale = -2 }, "lora.scale must be positive (0: alpha/rank), got -2"},
		{"dropout 1", func(s *Settings) { s.Dropout = 1 }, "lora.dropout must be in [0, 1), got 1"},
		{"two problems", func(s *Settings) { s.Rank, s.NumLayers = 0, -3 },
			"lora.rank must be positive, got 0\nlora.num_layers must be positive or -1 (all), got -3"},
		{"more layers than the model", func(s *Settings) { s.NumLayers = 30 }, "lora.num_layers is 30 but the model has only 28 layers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			s.Keys = slices.Clone(ok.Keys)
			tc.edit(&s)
			err := s.Validate(28)
			if (err == nil) != (tc.want == "") || (err != nil && err.Error() != tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// adapterFile names the adapter config in badAdapterConfigs' errors.
const adapterFile = "dir/adapter_config.json"

// adapterParams is an adapter_config.json with the given lora_parameters.
func adapterParams(p string) []byte {
	return []byte("{\"num_layers\": 4,\n \"lora_parameters\": {" + p + "}}")
}

// badAdapterConfigs are bad adapter_config.json files (for a model of 16
// layers) and the whole error each gives;
// FuzzAdapterConfig starts from them too.
var badAdapterConfigs = []struct {
	name string
	json []byte
	want string
}{
	{"overflowing scale", adapterParams(`"rank": 8, "scale": 1e999`), adapterFile + ":2: lora_parameters.scale: want a number, got number 1e999"},
	{"scale beyond float32", adapterParams(`"rank": 8, "scale": 1e39`), adapterFile + ": lora_parameters.scale 1e+39 is too large for float32"},
	{"negative scale", adapterParams(`"rank": 8, "scale": -2`), adapterFile + ": lora_parameters.scale must be positive (0: alpha/rank), got -2"},
	{"dropout 1.5", adapterParams(`"rank": 8, "scale": 2, "dropout": 1.5`), adapterFile + ": lora_parameters.dropout must be in [0, 1), got 1.5"},
	{"string rank", adapterParams(`"rank": "8", "scale": 2`), adapterFile + ":2: lora_parameters.rank: want an integer, got string"},
	{"no scale", adapterParams(`"rank": 8`), adapterFile + ": lora_parameters.scale is missing"},
	{"no rank", adapterParams(`"scale": 2`), adapterFile + ": lora_parameters.rank must be positive, got 0"},
	{"too many layers", []byte(`{"num_layers": 40, "lora_parameters": {"rank": 8, "scale": 2}}`),
		adapterFile + ": num_layers is 40 but the model has only 16 layers"},
	{"unknown module", adapterParams(`"rank": 8, "scale": 2, "keys": ["attn.q"]`),
		adapterFile + `: lora_parameters.keys has unknown module "attn.q" (want all-linear or some of ` + strings.Join(llama.ModulePaths, ", ") + ")"},
	{"DoRA", []byte(`{"fine_tune_type": "dora", "lora_parameters": {"rank": 8, "scale": 2}}`), adapterFile + `: fine_tune_type "dora" unsupported (want lora)`},
	{"NaN literal", adapterParams(`"rank": 8, "scale": NaN`), adapterFile + ":2: invalid JSON: invalid character 'N' looking for beginning of value"},
	{"trailing comma", adapterParams(`"rank": 8,`), adapterFile + ":2: invalid JSON: invalid character '}' looking for beginning of object key string"},
	{"not an object", []byte(`[1, 2]`), adapterFile + ":1: want a JSON object, got array"},
}

// TestAdapterConfigErrors: adapter_config.json (fungtrain's or mlx-lm's)
// is read into settings, and a bad one is refused naming the file, the
// line for JSON errors, and the JSON key.
func TestAdapterConfigErrors(t *testing.T) {
	s, err := parseAdapterConfig(adapterFile, []byte(`{"fine_tune_type": "lora", "num_layers": 4, "model": "x",
  "lora_parameters": {"rank": 8, "dropout": 0.05, "scale": 20.0, "keys": ["self_attn.q_proj"]}}`), 16)
	if err != nil {
		t.Fatal(err)
	}
	if s.Rank != 8 || s.Dropout != 0.05 || s.EffectiveScale() != 20 || s.NumLayers != 4 || !slices.Equal(s.Keys, []string{"self_attn.q_proj"}) {
		t.Errorf("settings %+v", s)
	}
	for _, tc := range badAdapterConfigs {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseAdapterConfig(adapterFile, tc.json, 16); err == nil || err.Error() != tc.want {
				t.Errorf("error\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
}

// TestStepSettings: training.micro_batch takes auto or a count,
// micro_batch_tokens a budget (0: data.max_seq_length), dist_timeout
// seconds, optimizer.bias_correction a boolean; each survives config.yaml
// (YAML) and a checkpoint's state.json (JSON) unchanged, and the defaults
// are auto, max_seq_length, 600 s and bias correction on.
func TestStepSettings(t *testing.T) {
	cases := []struct {
		name     string
		yaml     string
		mb       MicroBatch
		tokens   int // the auto budget the run uses
		timeout  float64
		bias     bool
		resolved string // in config.yaml
	}{
		{"defaults", "", MicroBatchAuto, 1024, 600, true, "micro_batch: auto"},
		{"auto", "training:\n  micro_batch: auto\n", MicroBatchAuto, 1024, 600, true, "micro_batch: auto"},
		{"a count", "training:\n  micro_batch: 4\n", 4, 1024, 600, true, "micro_batch: 4"},
		{"a budget", "training:\n  micro_batch_tokens: 4096\n", MicroBatchAuto, 4096, 600, true, "micro_batch_tokens: 4096"},
		{"budget from max_seq_length", "data:\n  dir: /d\n  max_seq_length: 2048\n", MicroBatchAuto, 2048, 600, true, "micro_batch: auto"},
		{"timeout", "training:\n  dist_timeout: 90.5\n", MicroBatchAuto, 1024, 90.5, true, "dist_timeout: 90.5"},
		{"mlx-lm's Adam", "optimizer:\n  bias_correction: false\n", MicroBatchAuto, 1024, 600, false, "bias_correction: false"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := configBase + tc.yaml
			if strings.HasPrefix(tc.yaml, "data:") {
				body = "model:\n  path: /models/m\n" + tc.yaml
			}
			cfg, err := LoadRunConfig(writeFile(t, t.TempDir(), "run.yaml", body), nil)
			if err != nil {
				t.Fatal(err)
			}
			tr := cfg.Training
			if tr.MicroBatch != tc.mb || tr.microBatchTokens(cfg.Data.MaxSeqLength) != tc.tokens || tr.DistTimeout != tc.timeout ||
				cfg.Optimizer.BiasCorrection != tc.bias {
				t.Errorf("micro_batch %v, budget %d, dist_timeout %v, bias_correction %v", tr.MicroBatch, tr.microBatchTokens(cfg.Data.MaxSeqLength),
					tr.DistTimeout, cfg.Optimizer.BiasCorrection)
			}
			y, err := cfg.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(y), tc.resolved) {
				t.Errorf("config.yaml lacks %q:\n%s", tc.resolved, y)
			}
			again, err := LoadRunConfig(writeFile(t, t.TempDir(), "resolved.yaml", string(y)), nil)
			if err != nil || fmt.Sprintf("%+v", again) != fmt.Sprintf("%+v", cfg) {
				t.Errorf("config.yaml reloads as %+v (%v)", again, err)
			}
			j, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var back RunConfig
			if err := json.Unmarshal(j, &back); err != nil || fmt.Sprintf("%+v", back) != fmt.Sprintf("%+v", cfg) {
				t.Errorf("JSON %s reloads as %+v (%v)", j, back, err)
			}
		})
	}
	// A checkpoint written before these settings existed keeps their
	// defaults (bias correction on), not Go's zero values.
	dir := t.TempDir()
	writeFile(t, dir, "state.json", `{"step": 3, "config": {"optimizer": {"name": "adamw", "lr": 0.001}}}`)
	st, err := readCheckpointState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Config.Optimizer.BiasCorrection || st.Config.Training.DistTimeout != 600 || st.WorldSize != 1 || st.RankBatch != 1 {
		t.Errorf("an old checkpoint reads as bias_correction %v, dist_timeout %v, %d rank(s) × %d",
			st.Config.Optimizer.BiasCorrection, st.Config.Training.DistTimeout, st.WorldSize, st.RankBatch)
	}
}

// TestResumeOverrides: a resumed run takes --set for the settings that
// change how steps run and not what they compute, checked like any
// override, and refuses every other key with a message that lists them.
func TestResumeOverrides(t *testing.T) {
	cfg, err := LoadRunConfig(writeFile(t, t.TempDir(), "run.yaml", configBase), nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		set  string
		want string // error; "" when accepted
		ok   func(RunConfig) bool
	}{
		{"training.batch_size=4", "", func(c RunConfig) bool { return c.Training.BatchSize == 4 }},
		{"training.micro_batch=2", "", func(c RunConfig) bool { return c.Training.MicroBatch == 2 }},
		{"training.micro_batch_tokens=512", "", func(c RunConfig) bool { return c.Training.MicroBatchTokens == 512 }},
		{"training.dist_timeout=30", "", func(c RunConfig) bool { return c.Training.DistTimeout == 30 }},
		{"training.sequential=true", "", func(c RunConfig) bool { return c.Training.Sequential }},
		{"training.memory_limit_gb=8", "", func(c RunConfig) bool { return c.Training.MemoryLimitGB == 8 }},
		{"lora.rank=2", "--set lora.rank=2: --set cannot change a resumed run's lora.rank; its config comes from the checkpoint " +
			"(a resumed run takes --set only for " + strings.Join(ResumableKeys, ", ") + ")", nil},
		{"optimizer.lr=1", "--set optimizer.lr=1: --set cannot change a resumed run's optimizer.lr", nil},
		{"training.micro_batch=0", `--set training.micro_batch=0: training.micro_batch: want auto or a positive integer, got "0"`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.set, func(t *testing.T) {
			got, err := cfg.WithResumeOverrides([]string{tc.set})
			if tc.want == "" {
				if err != nil || !tc.ok(got) {
					t.Errorf("%+v, %v", got.Training, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
}

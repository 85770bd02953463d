package lora

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// PEFT (Hugging Face's adapter library, also written by Unsloth) keeps a
// LoRA adapter as adapter_config.json (peft_type LORA, r, lora_alpha,
// target_modules, ...) and adapter_model.safetensors with tensors named
// base_model.model.model.layers.N.<module path>.lora_A.weight (r, in) and
// .lora_B.weight (out, r), scaled by lora_alpha/r (lora_alpha/√r with
// use_rslora). fungtrain's own format is mlx-lm's: model.layers.N.<module
// path>.lora_a (in, r) and .lora_b (r, out) with the scale itself. Load
// reads either; ExportPEFT writes PEFT's.

// peftWeights is PEFT's weights file.
const peftWeights = "adapter_model.safetensors"

// peftConfig is the part of PEFT's adapter_config.json that fungtrain reads
// and writes.
type peftConfig struct {
	PEFTType          string          `json:"peft_type"`
	TaskType          string          `json:"task_type"`
	BaseModel         string          `json:"base_model_name_or_path"`
	R                 int             `json:"r"`
	LoraAlpha         float64         `json:"lora_alpha"`
	LoraDropout       float64         `json:"lora_dropout"`
	TargetModules     json.RawMessage `json:"target_modules"`
	LayersToTransform json.RawMessage `json:"layers_to_transform"`
	LayersPattern     json.RawMessage `json:"layers_pattern"`
	Bias              string          `json:"bias"`
	UseRSLoRA         bool            `json:"use_rslora"`
	UseDoRA           bool            `json:"use_dora"`
	FanInFanOut       bool            `json:"fan_in_fan_out"`
	ModulesToSave     json.RawMessage `json:"modules_to_save"`
	RankPattern       map[string]any  `json:"rank_pattern"`
	AlphaPattern      map[string]any  `json:"alpha_pattern"`
	InferenceMode     bool            `json:"inference_mode"`
	InitLoraWeights   bool            `json:"init_lora_weights"`
	Revision          *string         `json:"revision"`
}

// isPEFTConfig reports whether adapter_config.json bytes are PEFT's: they
// carry peft_type, which mlx-lm's never do.
func isPEFTConfig(b []byte) bool {
	var probe struct {
		PEFTType *string `json:"peft_type"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.PEFTType != nil
}

// IsPEFT reports whether dir holds a PEFT adapter.
func IsPEFT(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	return err == nil && isPEFTConfig(b)
}

// peftName matches a PEFT LoRA tensor name; PEFT may keep the adapter's
// name ("default") before "weight".
var peftName = regexp.MustCompile(`^base_model\.model\.model\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$`)

// readPEFT reads a PEFT LoRA adapter from dir (cfg is its
// adapter_config.json) as fungtrain settings and mlx-lm-named tensors, for a
// model of nLayers blocks. The caller owns the tensors.
func readPEFT(dir string, cfg []byte, nLayers int) (Settings, map[string]*mlx.Array, error) {
	cfgPath := filepath.Join(dir, "adapter_config.json")
	var pc peftConfig
	if err := json.Unmarshal(cfg, &pc); err != nil {
		return Settings{}, nil, fmt.Errorf("parse %s: %w", cfgPath, err)
	}
	bad := func(format string, args ...any) (Settings, map[string]*mlx.Array, error) {
		return Settings{}, nil, fmt.Errorf("%s: %s", cfgPath, fmt.Sprintf(format, args...))
	}
	switch {
	case pc.PEFTType != "LORA":
		return bad("peft_type %q is not supported (fungtrain reads LORA adapters)", pc.PEFTType)
	case pc.UseDoRA:
		return bad("use_dora is set: DoRA adapters are not supported")
	case pc.Bias != "" && pc.Bias != "none":
		return bad("bias %q: adapters that train biases are not supported (want none)", pc.Bias)
	case pc.FanInFanOut:
		return bad("fan_in_fan_out is set, which Llama's linear layers never need")
	case len(pc.RankPattern) > 0 || len(pc.AlphaPattern) > 0:
		return bad("rank_pattern/alpha_pattern give modules their own rank or alpha, which fungtrain does not support")
	case pc.R <= 0:
		return bad("r must be positive, got %d", pc.R)
	case pc.LoraAlpha <= 0:
		return bad("lora_alpha must be positive, got %g", pc.LoraAlpha)
	}
	if s := strings.TrimSpace(string(pc.ModulesToSave)); s != "" && s != "null" && s != "[]" {
		return bad("modules_to_save %s: adapters that also train whole modules are not supported", s)
	}
	wPath := filepath.Join(dir, peftWeights)
	if _, err := os.Stat(wPath); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, "adapter_model.bin")); err == nil {
			return Settings{}, nil, fmt.Errorf("%s: only adapter_model.bin (a PyTorch pickle) is there; fungtrain reads adapter_model.safetensors (save with safe_serialization=True)", dir)
		}
	}
	raw, _, err := mlx.LoadSafetensors(wPath)
	if err != nil {
		return Settings{}, nil, err
	}
	tensors := map[string]*mlx.Array{}
	fail := func(err error) (Settings, map[string]*mlx.Array, error) {
		freeTensors(raw)
		freeTensors(tensors)
		return Settings{}, nil, err
	}
	layersOf := map[string]map[int]bool{}
	names := slices.Sorted(maps.Keys(raw))
	for _, n := range names {
		t := raw[n]
		mm := peftName.FindStringSubmatch(n)
		if mm == nil {
			return fail(fmt.Errorf("%s: tensor %s is not a LoRA A/B weight of a decoder layer (base_model.model.model.layers.N.<module>.lora_A.weight)", wPath, n))
		}
		layer, _ := strconv.Atoi(mm[1])
		path := mm[2]
		if !slicesContains(llama.ModulePaths, path) {
			return fail(fmt.Errorf("%s: tensor %s adapts %s, which is not one of %s", wPath, n, path, strings.Join(llama.ModulePaths, ", ")))
		}
		if t.Ndim() != 2 {
			return fail(fmt.Errorf("%s: tensor %s has shape %v, want a matrix", wPath, n, t.Shape()))
		}
		if rank := map[string]int{"A": t.Dim(0), "B": t.Dim(1)}[mm[3]]; rank != pc.R {
			return fail(fmt.Errorf("%s: tensor %s has shape %v, whose rank %d is not r = %d", wPath, n, t.Shape(), rank, pc.R))
		}
		if layersOf[path] == nil {
			layersOf[path] = map[int]bool{}
		}
		layersOf[path][layer] = true
		// PEFT stores A as (r, in) and B as (out, r); mlx-lm the transposes.
		name := fmt.Sprintf("model.layers.%d.%s.lora_%s", layer, path, strings.ToLower(mm[3]))
		tensors[name] = mlx.Transpose(t)
		mlx.Detach(tensors[name])
	}
	freeTensors(raw)
	if len(tensors) == 0 {
		return fail(fmt.Errorf("%s holds no LoRA tensors", wPath))
	}
	var keys []string
	var layers []int
	for _, p := range llama.ModulePaths {
		set := layersOf[p]
		if set == nil {
			continue
		}
		keys = append(keys, p)
		var ls []int
		for l := range set {
			ls = append(ls, l)
		}
		sort.Ints(ls)
		if layers == nil {
			layers = ls
		} else if fmt.Sprint(ls) != fmt.Sprint(layers) {
			return fail(fmt.Errorf("%s: %s is adapted in layers %v but %s in layers %v; fungtrain adapts the same layers for every module", wPath, keys[0], layers, p, ls))
		}
	}
	// fungtrain places adapters on the last N blocks.
	if last := layers[len(layers)-1]; last != nLayers-1 || layers[0] != nLayers-len(layers) {
		if last >= nLayers {
			return fail(fmt.Errorf("%s: the adapter has layer %d but the model has %d layers: an adapter for another base model", wPath, last, nLayers))
		}
		return fail(fmt.Errorf("%s: the adapter covers layers %v; fungtrain places adapters on the last N of the model's %d layers", wPath, layers, nLayers))
	}
	scale := pc.LoraAlpha / float64(pc.R)
	if pc.UseRSLoRA {
		scale = pc.LoraAlpha / math.Sqrt(float64(pc.R))
	}
	s := Settings{Rank: pc.R, Alpha: pc.LoraAlpha, Scale: scale, Dropout: pc.LoraDropout, NumLayers: len(layers), Keys: keys}
	return s, tensors, nil
}

func slicesContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// PEFTOptions tune ExportPEFT.
type PEFTOptions struct {
	// BaseModel is base_model_name_or_path; empty takes the model path of
	// the run that trained the adapter (its config.yaml), if any.
	BaseModel string
}

// ExportPEFT converts the adapter in dir (fungtrain or mlx-lm format; a
// PEFT adapter is rewritten as read) into a PEFT adapter directory out:
// adapter_model.safetensors with PEFT's names and orientation, in float32,
// and adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r,
// lora_alpha = scale·r, lora_dropout, target_modules, layers_to_transform,
// base_model_name_or_path). Call it on the MLX thread.
func ExportPEFT(dir, out string, opts PEFTOptions) error {
	s, tensors, err := readAdapterFiles(dir)
	if err != nil {
		return err
	}
	defer freeTensors(tensors)
	layerSet := map[int]bool{}
	peft := map[string]*mlx.Array{}
	sc := mlx.NewScope()
	defer sc.Close()
	for name, t := range tensors {
		rest, ok := strings.CutPrefix(name, "model.layers.")
		dot := strings.IndexByte(rest, '.')
		if !ok || dot < 0 {
			return fmt.Errorf("export peft: %s: tensor %s is not model.layers.N.<module>.lora_a/b", dir, name)
		}
		layer, err := strconv.Atoi(rest[:dot])
		if err != nil {
			return fmt.Errorf("export peft: %s: tensor %s: %w", dir, name, err)
		}
		layerSet[layer] = true
		base, part, _ := strings.Cut(rest[dot+1:], ".lora_")
		peft[fmt.Sprintf("base_model.model.model.layers.%d.%s.lora_%s.weight", layer, base, strings.ToUpper(part))] =
			mlx.AsType(mlx.Transpose(t), mlx.Float32)
	}
	var layers []int
	for l := range layerSet {
		layers = append(layers, l)
	}
	sort.Ints(layers)
	var targets []string
	for _, k := range s.ResolvedKeys() {
		targets = append(targets, k[strings.LastIndexByte(k, '.')+1:])
	}
	scale := s.EffectiveScale()
	alpha := scale * float64(s.Rank)
	if s.Alpha > 0 && math.Abs(s.Alpha/float64(s.Rank)-scale) <= 1e-6*scale {
		alpha = s.Alpha // the alpha the run was configured with, exactly
	}
	base := opts.BaseModel
	if base == "" {
		base = runModelPath(dir)
	}
	cfg := peftConfig{
		PEFTType: "LORA", TaskType: "CAUSAL_LM", BaseModel: base, R: s.Rank, LoraAlpha: alpha,
		LoraDropout: s.Dropout, Bias: "none", InferenceMode: true, InitLoraWeights: true,
		RankPattern: map[string]any{}, AlphaPattern: map[string]any{},
		LayersPattern: json.RawMessage(`"layers"`), ModulesToSave: json.RawMessage(`null`),
	}
	cfg.TargetModules, _ = json.Marshal(targets)
	cfg.LayersToTransform, _ = json.Marshal(layers)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("export peft: %w", err)
	}
	if err := mlx.SaveSafetensors(filepath.Join(out, peftWeights), peft, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("export peft: %w", err)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(out, "adapter_config.json"), append(b, '\n'))
}

// readAdapterFiles reads an adapter directory without a model: its
// settings and its tensors in mlx-lm names and orientation (PEFT adapters
// converted). The caller owns the tensors.
func readAdapterFiles(dir string) (Settings, map[string]*mlx.Array, error) {
	cfgPath := filepath.Join(dir, "adapter_config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return Settings{}, nil, fmt.Errorf("read adapter: %w", err)
	}
	if isPEFTConfig(b) {
		// Without a model, the layer count that puts the adapter's layers
		// last is the one to check against.
		return readPEFT(dir, b, peftLayerCount(dir))
	}
	var cfg adapterConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Settings{}, nil, fmt.Errorf("parse %s: %w", cfgPath, err)
	}
	p := cfg.LoraParameters
	s := Settings{Rank: p.Rank, Dropout: p.Dropout, NumLayers: cfg.NumLayers, Keys: p.Keys, Scale: p.Scale, Alpha: cfg.Alpha}
	if s.Scale == 0 && s.Alpha == 0 {
		return Settings{}, nil, fmt.Errorf("%s: lora_parameters.scale is missing", cfgPath)
	}
	if s.Rank <= 0 {
		return Settings{}, nil, fmt.Errorf("%s: lora_parameters.rank must be positive, got %d", cfgPath, s.Rank)
	}
	wPath := filepath.Join(dir, "adapters.safetensors")
	tensors, _, err := mlx.LoadSafetensors(wPath)
	if err != nil {
		return Settings{}, nil, err
	}
	if len(s.Keys) == 0 {
		s.Keys = keysOf(tensors)
	}
	for name, t := range tensors {
		if !strings.HasSuffix(name, ".lora_a") && !strings.HasSuffix(name, ".lora_b") || t.Ndim() != 2 {
			freeTensors(tensors)
			return Settings{}, nil, fmt.Errorf("%s: tensor %s (shape %v) is not a LoRA A/B matrix", wPath, name, t.Shape())
		}
	}
	if len(tensors) == 0 {
		return Settings{}, nil, fmt.Errorf("%s holds no LoRA tensors", wPath)
	}
	return s, tensors, nil
}

// peftLayerCount is one more than the highest layer a PEFT adapter's
// tensors name, read from the safetensors header without loading data.
func peftLayerCount(dir string) int {
	f, err := os.Open(filepath.Join(dir, peftWeights))
	if err != nil {
		return 0
	}
	defer f.Close()
	var size [8]byte
	if _, err := io.ReadFull(f, size[:]); err != nil {
		return 0
	}
	n := binary.LittleEndian.Uint64(size[:])
	if n > 1<<26 {
		return 0
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return 0
	}
	var hdr map[string]json.RawMessage
	if json.Unmarshal(b, &hdr) != nil {
		return 0
	}
	top := 0
	for name := range hdr {
		if m := peftName.FindStringSubmatch(name); m != nil {
			l, _ := strconv.Atoi(m[1])
			top = max(top, l+1)
		}
	}
	return top
}

// runModelPath is the model.path of the run that wrote the adapter in dir
// (its config.yaml, or the parent run's for best/ and checkpoints), or "".
func runModelPath(dir string) string {
	for _, p := range []string{filepath.Join(dir, "config.yaml"), filepath.Join(dir, "..", "config.yaml")} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var rc struct {
			Model struct {
				Path string `yaml:"path"`
			} `yaml:"model"`
		}
		if yaml.Unmarshal(b, &rc) == nil && rc.Model.Path != "" {
			return rc.Model.Path
		}
	}
	return ""
}

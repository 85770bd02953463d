package lora

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// Adapters are the LoRA layers installed in a model.
type Adapters struct {
	Settings Settings
	Names    []string // sorted mlx-lm names, "model.layers.N.<path>"
	Layers   map[string]*Layer
	model    *llama.Model
}

func firstLayer(s Settings, n int) int {
	if s.NumLayers < 0 {
		return 0
	}
	return n - s.NumLayers
}

// Apply wraps the configured layers of m with fresh adapters drawn from seed.
func Apply(m *llama.Model, s Settings, seed uint64) (*Adapters, error) {
	if err := s.Validate(len(m.Layers)); err != nil {
		return nil, err
	}
	a := &Adapters{Settings: s, Layers: map[string]*Layer{}, model: m}
	scale := float32(s.EffectiveScale())
	var id uint64
	for i := firstLayer(s, len(m.Layers)); i < len(m.Layers); i++ {
		for _, key := range s.ResolvedKeys() {
			slot, err := m.Layers[i].Module(key)
			if err != nil {
				a.Remove()
				return nil, err
			}
			base, ok := (*slot).(*llama.Linear)
			if !ok {
				a.Remove() // unwrap the layers wrapped so far
				return nil, fmt.Errorf("layer %d %s already has an adapter", i, key)
			}
			id++
			l := newLayer(base, s.Rank, scale, s.Dropout, id, seed)
			*slot = l
			name := fmt.Sprintf("model.layers.%d.%s", i, key)
			a.Layers[name] = l
			a.Names = append(a.Names, name)
		}
	}
	sort.Strings(a.Names)
	if err := mlx.Eval(a.Params()...); err != nil {
		a.Remove()
		return nil, fmt.Errorf("init adapters: %w", err)
	}
	return a, nil
}

// Params lists every trainable array: A then B of each layer, in name order.
func (a *Adapters) Params() []*mlx.Array {
	var out []*mlx.Array
	for _, n := range a.Names {
		out = append(out, a.Layers[n].Params()...)
	}
	return out
}

// ParamNames names Params entries: NAME.lora_a and NAME.lora_b.
func (a *Adapters) ParamNames() []string {
	var out []string
	for _, n := range a.Names {
		out = append(out, n+".lora_a", n+".lora_b")
	}
	return out
}

// SetParams installs params in Params order.
func (a *Adapters) SetParams(p []*mlx.Array) {
	for i, n := range a.Names {
		a.Layers[n].SetParams(p[2*i : 2*i+2])
	}
}

// NumParams is the number of trainable parameters.
func (a *Adapters) NumParams() int {
	n := 0
	for _, p := range a.Params() {
		n += p.Size()
	}
	return n
}

// SetTraining switches dropout on or off; seed picks this micro-batch's
// dropout masks.
func (a *Adapters) SetTraining(on bool, seed uint64) {
	for _, l := range a.Layers {
		l.training, l.keySeed = on, seed
	}
}

// SetEnabled switches the adapters on or off without removing them, so
// one loaded model can answer as the base and as the adapted model.
func (a *Adapters) SetEnabled(on bool) {
	for _, l := range a.Layers {
		l.disabled = !on
	}
}

// dropoutKeys returns the current micro-batch's dropout key of every layer,
// in name order, for passing into a compiled step.
func (a *Adapters) dropoutKeys() []*mlx.Array {
	keys := make([]*mlx.Array, len(a.Names))
	for i, n := range a.Names {
		keys[i] = a.Layers[n].dropoutKey()
	}
	return keys
}

// setKeys installs dropout keys (nil to derive them from the seed again).
func (a *Adapters) setKeys(keys []*mlx.Array) {
	for i, n := range a.Names {
		if keys == nil {
			a.Layers[n].key = nil
		} else {
			a.Layers[n].key = keys[i]
		}
	}
}

// byBlock lists the adapter layers of each of a model's n blocks, in name
// order.
func (a *Adapters) byBlock(n int) [][]*Layer {
	out := make([][]*Layer, n)
	for _, name := range a.Names {
		i, _ := splitName(name)
		out[i] = append(out[i], a.Layers[name])
	}
	return out
}

// Remove restores the base layers and frees the adapter parameters.
func (a *Adapters) Remove() {
	for _, n := range a.Names {
		l := a.Layers[n]
		i, key := splitName(n)
		if slot, err := a.model.Layers[i].Module(key); err == nil {
			*slot = l.Base
		}
		l.A.Free()
		l.B.Free()
	}
	a.Layers, a.Names = nil, nil
}

func splitName(n string) (int, string) {
	var i int
	rest := strings.TrimPrefix(n, "model.layers.")
	dot := strings.IndexByte(rest, '.')
	fmt.Sscanf(rest[:dot], "%d", &i)
	return i, rest[dot+1:]
}

// adapterConfig is mlx-lm's adapter_config.json, plus alpha for PEFT users.
type adapterConfig struct {
	FineTuneType   string         `json:"fine_tune_type"`
	NumLayers      int            `json:"num_layers"`
	LoraParameters loraParameters `json:"lora_parameters"`
	Alpha          float64        `json:"alpha,omitempty"`
}

type loraParameters struct {
	Rank    int      `json:"rank"`
	Dropout float64  `json:"dropout"`
	Scale   float64  `json:"scale"`
	Keys    []string `json:"keys"`
}

// Save writes adapters.safetensors and adapter_config.json to dir in
// mlx-lm's format, atomically.
func (a *Adapters) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tensors := map[string]*mlx.Array{}
	for i, name := range a.ParamNames() {
		tensors[name] = a.Params()[i]
	}
	if err := mlx.SaveSafetensors(filepath.Join(dir, "adapters.safetensors"), tensors, nil); err != nil {
		return err
	}
	s := a.Settings
	numLayers := s.NumLayers
	if numLayers < 0 {
		numLayers = len(a.model.Layers)
	}
	cfg := adapterConfig{FineTuneType: "lora", NumLayers: numLayers, Alpha: s.Alpha,
		LoraParameters: loraParameters{Rank: s.Rank, Dropout: s.Dropout, Scale: s.EffectiveScale(), Keys: s.ResolvedKeys()}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "adapter_config.json"), append(b, '\n'))
}

// Load reads an adapter directory written by fungtrain, mlx-lm or PEFT
// (detected from adapter_config.json's peft_type, see peft.go) and installs
// it in m.
func Load(m *llama.Model, dir string) (*Adapters, error) {
	cfgPath := filepath.Join(dir, "adapter_config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("load adapter: %w", err)
	}
	if isPEFTConfig(b) {
		s, tensors, err := readPEFT(dir, b, len(m.Layers))
		if err != nil {
			return nil, err
		}
		return install(m, s, tensors, cfgPath, filepath.Join(dir, peftWeights))
	}
	s, err := parseAdapterConfig(cfgPath, b, len(m.Layers))
	if err != nil {
		return nil, err
	}
	wPath := filepath.Join(dir, "adapters.safetensors")
	tensors, _, err := mlx.LoadSafetensors(wPath)
	if err != nil {
		return nil, err
	}
	if len(s.Keys) == 0 {
		// mlx-lm's default lora_parameters have no keys; it then adapts
		// every linear layer of the block (older versions used q and v).
		// The tensors say which it was.
		s.Keys = keysOf(tensors)
		if len(s.Keys) == 0 {
			freeTensors(tensors)
			return nil, fmt.Errorf("%s: lora_parameters.keys is missing and %s has no model.layers.N.<module>.lora_a tensors", cfgPath, wPath)
		}
	}
	return install(m, s, tensors, cfgPath, wPath)
}

func freeTensors(tensors map[string]*mlx.Array) {
	for _, t := range tensors {
		t.Free()
	}
}

// install checks settings s against m, applies adapters and sets their A
// and B from tensors (mlx-lm names and orientation: NAME.lora_a (in, r),
// NAME.lora_b (r, out)), which it frees. cfgPath and wPath name the files
// in errors.
func install(m *llama.Model, s Settings, tensors map[string]*mlx.Array, cfgPath, wPath string) (*Adapters, error) {
	defer freeTensors(tensors)
	if err := s.Validate(len(m.Layers)); err != nil {
		return nil, fmt.Errorf("%s: %w (an adapter for another base model?)", cfgPath, err)
	}
	a, err := Apply(m, s, 0)
	if err != nil {
		return nil, err
	}
	for _, name := range a.Names {
		l := a.Layers[name]
		for _, part := range []struct {
			suffix string
			dst    **mlx.Array
		}{{".lora_a", &l.A}, {".lora_b", &l.B}} {
			t, ok := tensors[name+part.suffix]
			if !ok {
				a.Remove()
				if top := topLayer(tensors); top >= len(m.Layers) {
					return nil, fmt.Errorf("%s: missing tensor %s; the adapter has layer %d but the model has %d layers: an adapter for another base model", wPath, name+part.suffix, top, len(m.Layers))
				}
				return nil, fmt.Errorf("%s: missing tensor %s", wPath, name+part.suffix)
			}
			if want := (*part.dst).Shape(); fmt.Sprint(t.Shape()) != fmt.Sprint(want) {
				a.Remove()
				return nil, fmt.Errorf("%s: tensor %s has shape %v, but this model needs %v: the adapter was trained for another base model", wPath, name+part.suffix, t.Shape(), want)
			}
			(*part.dst).Free()
			*part.dst = mlx.AsType(t, mlx.Float32)
			mlx.Detach(*part.dst)
			t.Free()
			delete(tensors, name+part.suffix)
		}
	}
	if len(tensors) > 0 {
		extra := slices.Sorted(maps.Keys(tensors))
		slog.Warn("adapter has tensors for layers it does not configure; ignored", "file", wPath, "tensors", extra)
	}
	if err := mlx.Eval(a.Params()...); err != nil {
		a.Remove()
		return nil, fmt.Errorf("load %s: %w", wPath, err)
	}
	return a, nil
}

// topLayer is the highest N of the model.layers.N.* tensors, or -1.
func topLayer(tensors map[string]*mlx.Array) int {
	top := -1
	for name := range tensors {
		if rest, ok := strings.CutPrefix(name, "model.layers."); ok {
			var n int
			if _, err := fmt.Sscanf(rest, "%d.", &n); err == nil {
				top = max(top, n)
			}
		}
	}
	return top
}

// keysOf lists the module paths (in ModulePaths order) that have
// model.layers.N.<path>.lora_a tensors.
func keysOf(tensors map[string]*mlx.Array) []string {
	seen := map[string]bool{}
	for name := range tensors {
		rest, ok := strings.CutPrefix(name, "model.layers.")
		path, ok2 := strings.CutSuffix(rest, ".lora_a")
		if !ok || !ok2 {
			continue
		}
		if dot := strings.IndexByte(path, '.'); dot > 0 {
			seen[path[dot+1:]] = true
		}
	}
	var keys []string
	for _, p := range llama.ModulePaths {
		if seen[p] {
			keys = append(keys, p)
		}
	}
	return keys
}

// Fuse merges every adapter into its base weight (W + scale·(A·B)ᵀ, in the
// model dtype; quantized bases are dequantized first) and removes the
// adapters.
func (a *Adapters) Fuse() error {
	for _, n := range a.Names {
		l := a.Layers[n]
		base := l.Base
		s := mlx.NewScope()
		w := mlx.Add(base.Dense(mlx.Float32), l.Delta())
		w = mlx.AsType(w, a.model.Dtype)
		err := mlx.Eval(w)
		if err == nil {
			s.Keep(w)
			mlx.Detach(w)
		}
		s.Close()
		if err != nil {
			return fmt.Errorf("fuse %s: %w", n, err)
		}
		if base.Q != nil {
			base.Q.Free()
			base.Q = nil
		} else {
			base.Weight.Free()
		}
		base.Weight = w
	}
	a.Remove()
	return nil
}

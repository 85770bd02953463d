package llama

import (
	"encoding/json"

	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fungtrain/fungtrain/mlx"
)

// LoadOptions tune model loading.
type LoadOptions struct {
	// Dtype is the activation and dense-weight dtype: "auto" (float32 on
	// the CPU, the checkpoint's own dtype on a GPU), "bf16", "f16" or "f32".
	Dtype string
	// Dequantize selects whether quantized weights are expanded to dense
	// at load: "auto" (on the CPU, whose quantized kernels are far slower
	// than its dense ones; never on a GPU), "yes" or "no".
	Dequantize string
	// ChatFormat forces the chat template's format instead of recognising
	// it from the model's template: "" or "auto" (recognise), "llama3" or
	// "chatml". Open passes it to the tokenizer.
	ChatFormat string
}

// tokenizerOptions turns the options that concern the tokenizer into
// TokenizerOptions.
func (o LoadOptions) tokenizerOptions() ([]TokenizerOption, error) {
	if o.ChatFormat == "" {
		return nil, nil
	}
	f, err := ParseChatFormat(o.ChatFormat)
	if err != nil {
		return nil, fmt.Errorf("chat format: %w", err)
	}
	return []TokenizerOption{WithChatFormat(f)}, nil
}

func (o LoadOptions) dequantize() (bool, error) {
	switch o.Dequantize {
	case "", "auto":
		return mlx.DefaultDevice() == mlx.CPU, nil
	case "yes", "true":
		return true, nil
	case "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("dequantize %q: want auto, yes or no", o.Dequantize)
}

func (o LoadOptions) dtype(stored mlx.Dtype) (mlx.Dtype, error) {
	switch o.Dtype {
	case "", "auto":
		if mlx.DefaultDevice() == mlx.CPU || !stored.IsFloat() {
			return mlx.Float32, nil
		}
		return stored, nil
	}
	return mlx.ParseDtype(o.Dtype)
}

// LoadModel loads a model from a directory of HF or MLX-community
// safetensors, or from a single .gguf file. Call it on the MLX thread.
func LoadModel(path string, opts LoadOptions) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	if !st.IsDir() {
		if strings.HasSuffix(strings.ToLower(path), ".gguf") {
			return loadGGUFModel(path, opts)
		}
		return nil, fmt.Errorf("load model %s: not a directory or a .gguf file", path)
	}
	cfg, err := LoadConfig(filepath.Join(path, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	files, err := WeightFiles(path)
	if err != nil {
		return nil, err
	}
	tensors := map[string]*mlx.Array{}
	for _, f := range files {
		ts, _, err := mlx.LoadSafetensors(f)
		if err != nil {
			freeAll(tensors)
			return nil, err
		}
		for k, v := range ts {
			tensors[k] = v
		}
	}
	m, err := build(cfg, tensors, opts)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return m, nil
}

// WeightFiles lists a model directory's safetensors files: the shards named
// by model.safetensors.index.json, else model.safetensors, else every
// *.safetensors file.
func WeightFiles(dir string) ([]string, error) {
	idx := filepath.Join(dir, "model.safetensors.index.json")
	if b, err := os.ReadFile(idx); err == nil {
		var index struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &index); err != nil {
			return nil, fmt.Errorf("parse %s: %w", idx, err)
		}
		seen := map[string]bool{}
		var files []string
		for _, f := range index.WeightMap {
			if !seen[f] {
				seen[f] = true
				files = append(files, filepath.Join(dir, f))
			}
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: empty weight_map", idx)
		}
		return files, nil
	}
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err == nil {
		return []string{single}, nil
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	var out []string
	for _, f := range files {
		if !strings.HasPrefix(filepath.Base(f), "adapters") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("load model %s: no model.safetensors, index or *.safetensors files", dir)
	}
	return out, nil
}

func freeAll(m map[string]*mlx.Array) {
	for _, a := range m {
		a.Free()
	}
}

// builder assembles a Model from HF-named tensors, checking each one.
type builder struct {
	cfg     *Config
	tensors map[string]*mlx.Array
	dtype   mlx.Dtype
	used    map[string]bool
}

func (b *builder) take(name string, shape ...int) (*mlx.Array, error) {
	a, ok := b.tensors[name]
	if !ok {
		return nil, fmt.Errorf("missing tensor %s", name)
	}
	if got := a.Shape(); !equalShape(got, shape) {
		return nil, fmt.Errorf("tensor %s has shape %v, want %v", name, got, shape)
	}
	b.used[name] = true
	return b.convert(a), nil
}

// convert casts floating tensors to the model dtype, freeing the original
// before it is ever evaluated, so no second copy is materialised.
func (b *builder) convert(a *mlx.Array) *mlx.Array {
	if !a.Dtype().IsFloat() || a.Dtype() == b.dtype {
		return a
	}
	c := mlx.AsType(a, b.dtype)
	mlx.Detach(c)
	a.Free()
	return c
}

func (b *builder) linear(prefix string, out, in int, bias bool) (*Linear, error) {
	l := &Linear{}
	if _, ok := b.tensors[prefix+".scales"]; ok {
		q, err := b.quantized(prefix, out, in)
		if err != nil {
			return nil, err
		}
		l.Q = q
	} else {
		w, err := b.take(prefix+".weight", out, in)
		if err != nil {
			return nil, err
		}
		l.Weight = w
	}
	if bias {
		bb, err := b.take(prefix+".bias", out)
		if err != nil {
			return nil, err
		}
		l.Bias = bb
	}
	return l, nil
}

func (b *builder) quantized(prefix string, out, in int) (*mlx.Quantized, error) {
	w, okw := b.tensors[prefix+".weight"]
	s := b.tensors[prefix+".scales"]
	bi, okb := b.tensors[prefix+".biases"]
	if !okw || !okb {
		return nil, fmt.Errorf("quantized tensor %s needs .weight, .scales and .biases", prefix)
	}
	gs, bits := 0, 0
	if q := b.cfg.Quantization; q != nil {
		gs, bits = q.GroupSize, q.Bits
	}
	if gs == 0 && s.Dim(1) > 0 {
		gs = in / s.Dim(1)
	}
	if bits == 0 && in > 0 {
		bits = w.Dim(1) * 32 / in
	}
	if gs <= 0 || in%gs != 0 {
		return nil, fmt.Errorf("tensor %s.scales has shape %v: cannot infer a group size for %d inputs", prefix, s.Shape(), in)
	}
	if w.Dtype() != mlx.Uint32 {
		return nil, fmt.Errorf("tensor %s.weight is %s, want packed uint32", prefix, w.Dtype())
	}
	checks := []struct {
		name  string
		a     *mlx.Array
		shape []int
	}{
		{prefix + ".weight", w, []int{out, in * bits / 32}},
		{prefix + ".scales", s, []int{out, in / gs}},
		{prefix + ".biases", bi, []int{out, in / gs}},
	}
	for _, c := range checks {
		if got := c.a.Shape(); !equalShape(got, c.shape) {
			return nil, fmt.Errorf("tensor %s has shape %v, want %v (%d-bit, group %d)", c.name, got, c.shape, bits, gs)
		}
		b.used[c.name] = true
	}
	return &mlx.Quantized{Weight: w, Scales: b.convert(s), Biases: b.convert(bi), GroupSize: gs, Bits: bits}, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ignorable tensors appear in some checkpoints and carry nothing we need.
func ignorable(name string) bool {
	return strings.HasSuffix(name, "rotary_emb.inv_freq")
}

func build(cfg *Config, tensors map[string]*mlx.Array, opts LoadOptions) (m *Model, err error) {
	stored := mlx.Float32
	if e, ok := tensors["model.embed_tokens.weight"]; ok {
		if s, ok := tensors["model.embed_tokens.scales"]; ok {
			stored = s.Dtype()
		} else {
			stored = e.Dtype()
		}
	}
	dt, err := opts.dtype(stored)
	if err != nil {
		freeAll(tensors)
		return nil, err
	}
	deq, err := opts.dequantize()
	if err != nil {
		freeAll(tensors)
		return nil, err
	}
	b := &builder{cfg: cfg, tensors: tensors, dtype: dt, used: map[string]bool{}}
	m = &Model{Config: cfg, Dtype: dt}
	// The error returns below set m to nil before this cleanup runs, so it
	// frees the partial model through its own reference.
	partial := m
	defer func() {
		if err != nil {
			// Free whatever was not converted into the model, then the model.
			for k, a := range b.tensors {
				if !b.used[k] {
					a.Free()
				}
			}
			partial.Free()
			m = nil
		}
	}()
	D, V, I := cfg.HiddenSize, cfg.VocabSize, cfg.IntermediateSize
	qo, kvo := cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	if _, ok := tensors["model.embed_tokens.scales"]; ok {
		if m.EmbedQ, err = b.quantized("model.embed_tokens", V, D); err != nil {
			return nil, err
		}
	} else if m.Embed, err = b.take("model.embed_tokens.weight", V, D); err != nil {
		return nil, err
	}
	for i := 0; i < cfg.NumLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		blk := &Block{}
		m.Layers = append(m.Layers, blk)
		specs := []struct {
			dst     *Layer
			name    string
			out, in int
			bias    bool
		}{
			{&blk.Attn.Q, "self_attn.q_proj", qo, D, cfg.AttentionBias},
			{&blk.Attn.K, "self_attn.k_proj", kvo, D, cfg.AttentionBias},
			{&blk.Attn.V, "self_attn.v_proj", kvo, D, cfg.AttentionBias},
			{&blk.Attn.O, "self_attn.o_proj", D, qo, cfg.AttentionBias},
			{&blk.MLP.Gate, "mlp.gate_proj", I, D, cfg.MLPBias},
			{&blk.MLP.Up, "mlp.up_proj", I, D, cfg.MLPBias},
			{&blk.MLP.Down, "mlp.down_proj", D, I, cfg.MLPBias},
		}
		for _, s := range specs {
			l, err := b.linear(p+s.name, s.out, s.in, s.bias)
			if err != nil {
				return nil, err
			}
			*s.dst = l
		}
		if blk.InputNorm, err = b.take(p+"input_layernorm.weight", D); err != nil {
			return nil, err
		}
		if blk.PostNorm, err = b.take(p+"post_attention_layernorm.weight", D); err != nil {
			return nil, err
		}
		if deq {
			for _, s := range specs {
				(*s.dst).(*Linear).dequantizeInPlace(dt)
			}
		}
		// Materialise layer by layer so that dtype conversion never holds
		// two copies of the whole model.
		if err := mlx.Eval(m.layerArrays(blk)...); err != nil {
			return nil, fmt.Errorf("load layer %d: %w", i, err)
		}
	}
	if deq && m.EmbedQ != nil {
		m.Embed = denseOf(m.EmbedQ, dt)
		m.EmbedQ.Free()
		m.EmbedQ = nil
	}
	if m.Norm, err = b.take("model.norm.weight", D); err != nil {
		return nil, err
	}
	_, hasHead := tensors["lm_head.weight"]
	if !cfg.TieWordEmbeddings || hasHead {
		if m.LMHead, err = b.linear("lm_head", V, D, false); err != nil {
			return nil, err
		}
	}
	if deq && m.LMHead != nil {
		m.LMHead.dequantizeInPlace(dt)
	}
	var extra []string
	for k := range tensors {
		if !b.used[k] && !ignorable(k) {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		if len(extra) > 5 {
			extra = append(extra[:5], "...")
		}
		return nil, fmt.Errorf("unexpected tensors in checkpoint: %s", strings.Join(extra, ", "))
	}
	for k, a := range tensors {
		if ignorable(k) {
			a.Free()
		}
	}
	m.initAttention()
	if err := mlx.Eval(m.Arrays()...); err != nil {
		return nil, fmt.Errorf("load weights: %w", err)
	}
	return m, nil
}

func (m *Model) layerArrays(b *Block) []*mlx.Array {
	out := []*mlx.Array{b.InputNorm, b.PostNorm}
	for _, p := range ModulePaths {
		l, _ := b.Module(p)
		if lin := baseLinear(*l); lin != nil {
			out = append(out, lin.arrays()...)
		}
	}
	return out
}

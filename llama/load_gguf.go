package llama

import (
	"fmt"
	"math"
	"strings"

	"github.com/fungtrain/fungtrain/mlx"
)

// ggufNames maps llama.cpp tensor names (per block after "blk.N.") to HF
// module names.
var ggufNames = map[string]string{
	"attn_q":      "self_attn.q_proj",
	"attn_k":      "self_attn.k_proj",
	"attn_v":      "self_attn.v_proj",
	"attn_output": "self_attn.o_proj",
	"ffn_gate":    "mlp.gate_proj",
	"ffn_up":      "mlp.up_proj",
	"ffn_down":    "mlp.down_proj",
	"attn_norm":   "input_layernorm",
	"ffn_norm":    "post_attention_layernorm",
}

// ConfigFromGGUF builds a Config from a GGUF file's llama.* metadata.
func ConfigFromGGUF(info *GGUFInfo) (*Config, error) {
	arch, err := info.Architecture()
	if err != nil {
		return nil, err
	}
	if arch != "llama" {
		return nil, fmt.Errorf("unsupported GGUF architecture %q: fungtrain runs llama models", arch)
	}
	c := &Config{ModelType: "llama", Architectures: []string{"LlamaForCausalLM"}, RopeTheta: 10000, RMSNormEps: 1e-5}
	ints := []struct {
		key string
		dst *int
		opt bool
	}{
		{"block_count", &c.NumLayers, false},
		{"embedding_length", &c.HiddenSize, false},
		{"feed_forward_length", &c.IntermediateSize, false},
		{"attention.head_count", &c.NumHeads, false},
		{"attention.head_count_kv", &c.NumKVHeads, true},
		{"context_length", &c.MaxPositionEmbeddings, true},
		{"rope.dimension_count", &c.HeadDim, true},
		{"vocab_size", &c.VocabSize, true},
	}
	for _, f := range ints {
		key := info.ArchKey(f.key)
		if !info.Has(key) && f.opt {
			continue
		}
		v, err := info.Uint(key)
		if err != nil {
			return nil, err
		}
		*f.dst = int(v)
	}
	if key := info.ArchKey("attention.layer_norm_rms_epsilon"); info.Has(key) {
		if c.RMSNormEps, err = info.Float(key); err != nil {
			return nil, err
		}
	}
	if key := info.ArchKey("rope.freq_base"); info.Has(key) {
		if c.RopeTheta, err = info.Float(key); err != nil {
			return nil, err
		}
	}
	if c.VocabSize == 0 {
		toks, err := info.Strings("tokenizer.ggml.tokens")
		if err != nil {
			return nil, fmt.Errorf("GGUF has neither %s nor tokenizer.ggml.tokens: %w", info.ArchKey("vocab_size"), err)
		}
		c.VocabSize = len(toks)
	}
	_, hasOutput := info.Tensor("output.weight")
	c.TieWordEmbeddings = !hasOutput
	if eos, err := info.Uint("tokenizer.ggml.eos_token_id"); err == nil {
		c.EOSTokenID = IntList{int(eos)}
	}
	if bos, err := info.Uint("tokenizer.ggml.bos_token_id"); err == nil {
		v := int(bos)
		c.BOSTokenID = &v
	}
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// unpermuteRows undoes llama.cpp's q/k row permutation: the converter
// interleaves the two rotary halves of every head so that GGUF runs
// interleaved ("traditional") RoPE. Restoring the HF row order lets GGUF
// models run the same RoPE as HF checkpoints, and makes adapters trained on
// either interchangeable. Row i of head h at HF position j*half+k comes from
// GGUF row 2k+j.
func unpermuteRows(a *mlx.Array, heads int) *mlx.Array {
	rows := a.Dim(0)
	hd := rows / heads
	half := hd / 2
	idx := make([]int32, rows)
	for h := 0; h < heads; h++ {
		for j := 0; j < 2; j++ {
			for k := 0; k < half; k++ {
				idx[h*hd+j*half+k] = int32(h*hd + 2*k + j)
			}
		}
	}
	perm := mlx.FromInt32s(idx, rows)
	defer perm.Free()
	out := mlx.Take(a, perm, 0)
	mlx.Detach(out)
	a.Free()
	return out
}

func loadGGUFModel(path string, opts LoadOptions) (*Model, error) {
	info, err := ReadGGUFInfo(path)
	if err != nil {
		return nil, err
	}
	for _, t := range info.Tensors {
		switch t.Type {
		case GGMLTypeF32, GGMLTypeF16, GGMLTypeBF16, GGMLTypeQ4_0, GGMLTypeQ4_1, GGMLTypeQ8_0:
		default:
			return nil, fmt.Errorf("load model %s: tensor %s has GGML type %s; fungtrain loads F32, F16, BF16, Q4_0, Q4_1 and Q8_0", path, t.Name, t.Type)
		}
	}
	cfg, err := ConfigFromGGUF(info)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	f, err := mlx.LoadGGUF(path)
	if err != nil {
		return nil, err
	}
	for _, a := range f.NumericMeta {
		a.Free()
	}
	tensors := map[string]*mlx.Array{}
	var ropeFactors *mlx.Array
	for name, a := range f.Tensors {
		hf, err := hfName(name)
		if err != nil {
			a.Free()
			freeAll(tensors)
			return nil, fmt.Errorf("load model %s: %w", path, err)
		}
		if hf == "rope_freqs" {
			ropeFactors = a
			continue
		}
		tensors[hf] = a
	}
	for i := 0; i < cfg.NumLayers; i++ {
		for _, proj := range []struct {
			name  string
			heads int
		}{{"self_attn.q_proj", cfg.NumHeads}, {"self_attn.k_proj", cfg.NumKVHeads}} {
			for _, part := range []string{".weight", ".scales", ".biases", ".bias"} {
				k := fmt.Sprintf("model.layers.%d.%s%s", i, proj.name, part)
				if a, ok := tensors[k]; ok {
					tensors[k] = unpermuteRows(a, proj.heads)
				}
			}
		}
	}
	m, err := build(cfg, tensors, opts)
	if err != nil {
		ropeFactors.Free()
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	if ropeFactors != nil {
		// Llama 3.1+ GGUFs carry the llama3 scaling as per-dimension factors
		// of the rotation period.
		if err := m.applyRopeFactors(ropeFactors); err != nil {
			m.Free()
			return nil, fmt.Errorf("load model %s: rope_freqs: %w", path, err)
		}
	}
	return m, nil
}

func (m *Model) applyRopeFactors(factors *mlx.Array) error {
	defer factors.Free()
	f, err := factors.Float32s()
	if err != nil {
		return err
	}
	c := m.Config
	if len(f) != c.HeadDim/2 {
		return fmt.Errorf("has %d factors, want %d", len(f), c.HeadDim/2)
	}
	periods := make([]float32, len(f))
	for i := range periods {
		base := math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		periods[i] = float32(base) * f[i]
	}
	m.freqs.Free()
	m.freqs = mlx.FromFloat32s(periods, len(periods))
	mlx.Detach(m.freqs)
	for _, b := range m.Layers {
		b.Attn.rope.Freqs = m.freqs
	}
	return mlx.Eval(m.freqs)
}

func hfName(g string) (string, error) {
	switch {
	case g == "token_embd.weight" || strings.HasPrefix(g, "token_embd."):
		return "model.embed_tokens" + strings.TrimPrefix(g, "token_embd"), nil
	case strings.HasPrefix(g, "output_norm."):
		return "model.norm" + strings.TrimPrefix(g, "output_norm"), nil
	case strings.HasPrefix(g, "output."):
		return "lm_head" + strings.TrimPrefix(g, "output"), nil
	case strings.HasPrefix(g, "rope_freqs."):
		return "rope_freqs", nil
	case strings.HasPrefix(g, "blk."):
		rest := strings.TrimPrefix(g, "blk.")
		dot := strings.IndexByte(rest, '.')
		if dot < 0 {
			break
		}
		layer, tail := rest[:dot], rest[dot+1:]
		dot = strings.IndexByte(tail, '.')
		if dot < 0 {
			break
		}
		mod, suffix := tail[:dot], tail[dot:]
		if hf, ok := ggufNames[mod]; ok {
			return "model.layers." + layer + "." + hf + suffix, nil
		}
	}
	return "", fmt.Errorf("unknown GGUF tensor %s", g)
}

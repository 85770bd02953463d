package llama

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/mlx"
)

// RandomWeights returns HF-named random weights for cfg: N(0, 0.02) for
// matrices and ones for norms, in dtype dt, drawn from seed. The caller owns
// the arrays.
func RandomWeights(cfg *Config, dt mlx.Dtype, seed uint64) (map[string]*mlx.Array, error) {
	// Each tensor draws from key derived from (seed, index), so the
	// weights do not depend on map or loop order.
	n := uint64(0)
	next := func() *mlx.Array {
		n++
		return mlx.RandomKey(seed*1_000_003 + n)
	}
	normal := func(shape ...int) *mlx.Array {
		k := next()
		defer k.Free()
		return mlx.Normal(0, 0.02, dt, k, shape...)
	}
	D, V, I := cfg.HiddenSize, cfg.VocabSize, cfg.IntermediateSize
	qo, kvo := cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	w := map[string]*mlx.Array{
		"model.embed_tokens.weight": normal(V, D),
		"model.norm.weight":         mlx.Ones(dt, D),
	}
	if !cfg.TieWordEmbeddings {
		w["lm_head.weight"] = normal(V, D)
	}
	for i := 0; i < cfg.NumLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		w[p+"self_attn.q_proj.weight"] = normal(qo, D)
		w[p+"self_attn.k_proj.weight"] = normal(kvo, D)
		w[p+"self_attn.v_proj.weight"] = normal(kvo, D)
		w[p+"self_attn.o_proj.weight"] = normal(D, qo)
		w[p+"mlp.gate_proj.weight"] = normal(I, D)
		w[p+"mlp.up_proj.weight"] = normal(I, D)
		w[p+"mlp.down_proj.weight"] = normal(D, I)
		w[p+"input_layernorm.weight"] = mlx.Ones(dt, D)
		w[p+"post_attention_layernorm.weight"] = mlx.Ones(dt, D)
		if cfg.AttentionBias {
			for _, m := range []string{"q_proj", "k_proj", "v_proj", "o_proj"} {
				out := kvo
				switch m {
				case "q_proj":
					out = qo
				case "o_proj":
					out = D
				}
				w[p+"self_attn."+m+".bias"] = normal(out)
			}
		}
	}
	for k, a := range w {
		if err := a.Err(); err != nil {
			freeAll(w)
			return nil, fmt.Errorf("random weight %s: %w", k, err)
		}
	}
	return w, nil
}

// NewRandomModel builds a random-init model of cfg in memory.
func NewRandomModel(cfg *Config, dt mlx.Dtype, seed uint64) (*Model, error) {
	w, err := RandomWeights(cfg, dt, seed)
	if err != nil {
		return nil, err
	}
	name := "f32"
	switch dt {
	case mlx.BFloat16:
		name = "bf16"
	case mlx.Float16:
		name = "f16"
	}
	return build(cfg, w, LoadOptions{Dtype: name})
}

// WriteRandomModel writes a random-init HF-format checkpoint (config.json
// and model.safetensors) of cfg to dir.
func WriteRandomModel(dir string, cfg *Config, dt mlx.Dtype, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	w, err := RandomWeights(cfg, dt, seed)
	if err != nil {
		return err
	}
	defer freeAll(w)
	c := *cfg
	c.TorchDtype = map[mlx.Dtype]string{mlx.BFloat16: "bfloat16", mlx.Float16: "float16", mlx.Float32: "float32"}[dt]
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return err
	}
	if err := mlx.SaveSafetensors(filepath.Join(dir, "model.safetensors"), w, map[string]string{"format": "mlx"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'))
}

package llama

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/mlx"
)

// SaveModel writes m as an HF-format checkpoint (config.json and
// model.safetensors, HF tensor names, the model's dtype). Quantized weights
// are written dequantized. Call it on the MLX thread.
func SaveModel(m *Model, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s := mlx.NewScope()
	defer s.Close()
	dt := m.Dtype
	w := map[string]*mlx.Array{}
	dense := func(l *Linear) *mlx.Array {
		if l.Q != nil {
			return l.Dense(dt)
		}
		return l.Weight
	}
	if m.EmbedQ != nil {
		w["model.embed_tokens.weight"] = mlx.AsType(mlx.Dequantize(*m.EmbedQ), dt)
	} else {
		w["model.embed_tokens.weight"] = m.Embed
	}
	w["model.norm.weight"] = m.Norm
	if m.LMHead != nil {
		w["lm_head.weight"] = dense(m.LMHead)
	}
	for i, b := range m.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		w[p+"input_layernorm.weight"] = b.InputNorm
		w[p+"post_attention_layernorm.weight"] = b.PostNorm
		for _, path := range ModulePaths {
			slot, _ := b.Module(path)
			lin := baseLinear(*slot)
			if lin == nil {
				return fmt.Errorf("save model: layer %d %s is not a linear layer", i, path)
			}
			if _, adapted := (*slot).(*Linear); !adapted {
				return fmt.Errorf("save model: layer %d %s still has an adapter; fuse it first", i, path)
			}
			w[p+path+".weight"] = dense(lin)
			if lin.Bias != nil {
				w[p+path+".bias"] = lin.Bias
			}
		}
	}
	cfg := *m.Config
	cfg.Quantization = nil
	cfg.TieWordEmbeddings = m.LMHead == nil
	cfg.TorchDtype = map[mlx.Dtype]string{mlx.BFloat16: "bfloat16", mlx.Float16: "float16", mlx.Float32: "float32"}[dt]
	if len(cfg.Architectures) == 0 {
		cfg.Architectures = []string{"LlamaForCausalLM"}
	}
	if err := mlx.SaveSafetensors(filepath.Join(dir, "model.safetensors"), w, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	b, err := json.MarshalIndent(&cfg, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'))
}

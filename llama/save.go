package llama

import (
	"bytes"
	"encoding/json"
	"errors"
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

// SaveHF writes a bundle as a complete HF model directory, one that
// transformers loads with its tokenizer and generation settings:
//
//   - model.safetensors and config.json (SaveModel); from a model directory,
//     config.json keeps the source's keys and numbers as written, with only
//     the dtype, the tied-embedding flag and the quantization block changed;
//   - the tokenizer files: copied from a model directory; from a GGUF file,
//     tokenizer.json (GGUFTokenizerJSON), tokenizer_config.json with the
//     special tokens (GGUFTokenizerConfig) and special_tokens_map.json;
//   - generation_config.json: copied, or written with the bos id and the
//     ids that end generation.
//
// Call it on the MLX thread.
func SaveHF(b *Bundle, dir string) error {
	if err := SaveModel(b.Model, dir); err != nil {
		return err
	}
	if b.GGUF == nil {
		if err := mergeSourceConfig(b.Model, b.Path, dir); err != nil {
			return err
		}
	}
	if err := saveTokenizerFiles(b, dir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "generation_config.json")); err == nil {
		return nil
	}
	gen := map[string]any{"_from_model_config": true}
	if bos := b.Tokenizer.BOS(); bos >= 0 {
		gen["bos_token_id"] = bos
	}
	switch len(b.StopIDs) {
	case 0:
	case 1:
		gen["eos_token_id"] = b.StopIDs[0]
	default:
		gen["eos_token_id"] = b.StopIDs
	}
	return writeJSON(filepath.Join(dir, "generation_config.json"), gen)
}

// writeJSON writes v as indented JSON (no HTML escaping) atomically.
func writeJSON(path string, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, buf.Bytes())
}

// mergeSourceConfig rewrites dir/config.json as the source directory's
// config.json (numbers kept as their text) with the fields the saved
// weights change: the dtype, tie_word_embeddings and no quantization.
func mergeSourceConfig(m *Model, src, dir string) error {
	path := filepath.Join(src, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read source config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	cfg := map[string]any{}
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	dt := map[mlx.Dtype]string{mlx.BFloat16: "bfloat16", mlx.Float16: "float16", mlx.Float32: "float32"}[m.Dtype]
	cfg["torch_dtype"] = dt
	if _, ok := cfg["dtype"]; ok {
		cfg["dtype"] = dt
	}
	cfg["tie_word_embeddings"] = m.LMHead == nil
	delete(cfg, "quantization")
	delete(cfg, "quantization_config")
	return writeJSON(filepath.Join(dir, "config.json"), cfg)
}

// hfTokenizerFiles are the tokenizer files a model directory may carry.
var hfTokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "generation_config.json"}

func saveTokenizerFiles(b *Bundle, dir string) error {
	if b.GGUF == nil {
		for _, name := range hfTokenizerFiles {
			data, err := os.ReadFile(filepath.Join(b.Path, name))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := atomicfile.WriteFile(filepath.Join(dir, name), data); err != nil {
				return err
			}
		}
		return nil
	}
	tj, err := GGUFTokenizerJSON(b.GGUF)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "tokenizer.json"), tj); err != nil {
		return err
	}
	tc, err := GGUFTokenizerConfig(b.GGUF)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tc); err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(tc, &cfg); err != nil {
		return err
	}
	special := map[string]any{}
	for _, k := range []string{"bos_token", "eos_token", "unk_token", "pad_token"} {
		if v, ok := cfg[k]; ok {
			special[k] = v
		}
	}
	return writeJSON(filepath.Join(dir, "special_tokens_map.json"), special)
}

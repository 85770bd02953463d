package bench

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// `fungtrain bench quantize` makes the quantized bases QLoRA is measured
// on from a dense checkpoint (e.g. one `fungtrain init-model` wrote), on
// the machine that measures, with no Python: an MLX-community directory
// (QuantizeMLX) or a llama.cpp GGUF file in Q4_0 or Q8_0 (WriteGGUF).

// tokenizerFiles are copied along with the weights when present.
var tokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"}

// quantizable says whether tensor name is a matrix MLX-community
// checkpoints store quantized: the embedding, the projections and an
// untied LM head (what mlx-lm's nn.quantize converts: Linear and
// Embedding layers).
func quantizable(name string) bool {
	if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
		return true
	}
	for _, p := range llama.ModulePaths {
		if strings.HasPrefix(name, "model.layers.") && strings.HasSuffix(name, "."+p+".weight") {
			return true
		}
	}
	return false
}

// loadDense reads a dense HF-format model directory: its config (as
// written, to carry every field over) and its tensors (lazy). Call it on
// the MLX thread.
func loadDense(dir string) (map[string]any, *llama.Config, map[string]*mlx.Array, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("quantize: %w", err)
	}
	var cfgMap map[string]any
	if err := json.Unmarshal(raw, &cfgMap); err != nil {
		return nil, nil, nil, fmt.Errorf("quantize: %s: %w", filepath.Join(dir, "config.json"), err)
	}
	cfg, err := llama.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("quantize: %w", err)
	}
	if cfg.Quantization != nil {
		return nil, nil, nil, fmt.Errorf("quantize: %s is already quantized (%d-bit); start from a dense checkpoint", dir, cfg.Quantization.Bits)
	}
	files, err := llama.WeightFiles(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	tensors := map[string]*mlx.Array{}
	for _, f := range files {
		ts, _, err := mlx.LoadSafetensors(f)
		if err != nil {
			freeMap(tensors)
			return nil, nil, nil, err
		}
		for k, v := range ts {
			tensors[k] = v
		}
	}
	return cfgMap, cfg, tensors, nil
}

func freeMap(m map[string]*mlx.Array) {
	for _, a := range m {
		a.Free()
	}
}

// QuantizeMLX writes the dense checkpoint in src as an MLX-community
// quantized checkpoint in dst: each quantizable matrix as .weight (packed
// uint32), .scales and .biases in the source dtype (MLX's affine
// quantization), config.json with "quantization": {group_size, bits}, the
// other tensors and the tokenizer files as they are. Call it on the MLX
// thread.
func QuantizeMLX(src, dst string, bits, groupSize int) error {
	cfgMap, _, tensors, err := loadDense(src)
	if err != nil {
		return err
	}
	defer freeMap(tensors)
	out := map[string]*mlx.Array{}
	defer freeMap(out)
	names := slices.Sorted(maps.Keys(tensors))
	for _, name := range names {
		w := tensors[name]
		if !quantizable(name) {
			out[name] = w
			delete(tensors, name)
			continue
		}
		if shape := w.Shape(); len(shape) != 2 || shape[1]%groupSize != 0 {
			return fmt.Errorf("quantize %s: shape %v: want a matrix whose rows are a multiple of the group size %d", name, shape, groupSize)
		}
		q, err := mlx.Quantize(w, groupSize, bits)
		if err != nil {
			return fmt.Errorf("quantize %s: %w", name, err)
		}
		prefix := strings.TrimSuffix(name, ".weight")
		out[name], out[prefix+".scales"], out[prefix+".biases"] = q.Weight, q.Scales, q.Biases
		// One matrix at a time: the dense source is freed once its
		// quantized form exists.
		if err := mlx.Eval(q.Weight, q.Scales, q.Biases); err != nil {
			return fmt.Errorf("quantize %s: %w", name, err)
		}
		w.Free()
		delete(tensors, name)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if err := mlx.SaveSafetensors(filepath.Join(dst, "model.safetensors"), out, map[string]string{"format": "mlx"}); err != nil {
		return err
	}
	q := map[string]any{"group_size": groupSize, "bits": bits}
	cfgMap["quantization"], cfgMap["quantization_config"] = q, q
	b, err := json.MarshalIndent(cfgMap, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dst, "config.json"), append(b, '\n')); err != nil {
		return err
	}
	return copyTokenizerFiles(src, dst)
}

func copyTokenizerFiles(src, dst string) error {
	for _, f := range tokenizerFiles {
		b, err := os.ReadFile(filepath.Join(src, f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(dst, f), b); err != nil {
			return err
		}
	}
	return nil
}

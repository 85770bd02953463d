package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newFuseCmd) }

func newFuseCmd() *cobra.Command {
	var model, adapter, out, dtype string
	cmd := &cobra.Command{
		Use:   "fuse --model M --adapter A --out DIR",
		Short: "Merge an adapter into its base model and write an HF-format model",
		Long: `Merge a LoRA adapter into the base weights (W + scale·(A·B)ᵀ) and write
an HF-format model directory: config.json, model.safetensors and the
tokenizer files. Quantized bases are dequantized; --dtype picks the output
dtype (bf16 by default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" || adapter == "" || out == "" {
				return fmt.Errorf("fuse: --model, --adapter and --out are required")
			}
			if err := resolveModelArg(cmd.Context(), &model); err != nil {
				return err
			}
			err := mlx.Do(func() error {
				m, err := llama.LoadModel(model, llama.LoadOptions{Dtype: dtype, Dequantize: "yes"})
				if err != nil {
					return err
				}
				defer m.Free()
				ad, err := lora.Load(m, adapter)
				if err != nil {
					return err
				}
				if err := ad.Fuse(); err != nil {
					return err
				}
				return llama.SaveModel(m, out)
			})
			if err != nil {
				return err
			}
			if err := copyTokenizerFiles(model, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote fused model to %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "base model directory or .gguf file")
	cmd.Flags().StringVar(&adapter, "adapter", "", "adapter directory")
	cmd.Flags().StringVar(&out, "out", "", "output directory")
	cmd.Flags().StringVar(&dtype, "dtype", "bf16", "output dtype: bf16, f16 or f32")
	return cmd
}

// copyTokenizerFiles copies a model directory's tokenizer files, or writes
// the tokenizer.json a GGUF file's metadata describes.
func copyTokenizerFiles(model, out string) error {
	st, err := os.Stat(model)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		info, err := llama.ReadGGUFInfo(model)
		if err != nil {
			return err
		}
		tj, err := llama.GGUFTokenizerJSON(info)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(out, "tokenizer.json"), tj); err != nil {
			return err
		}
		cfg := map[string]any{}
		if tmpl, err := info.String("tokenizer.chat_template"); err == nil {
			cfg["chat_template"] = tmpl
		}
		b, _ := json.MarshalIndent(cfg, "", "  ")
		return atomicfile.WriteFile(filepath.Join(out, "tokenizer_config.json"), b)
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json", "chat_template.jinja"} {
		src, err := os.Open(filepath.Join(model, name))
		if err != nil {
			continue
		}
		b, err := io.ReadAll(src)
		src.Close()
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(out, name), b); err != nil {
			return err
		}
	}
	return nil
}

package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newFuseCmd) }

func newFuseCmd() *cobra.Command {
	var model, adapter, out, dtype string
	var force bool
	cmd := &cobra.Command{
		Use:   "fuse --model M [--adapter A] --out DIR",
		Short: "Merge an adapter into its base model and write an HF-format model",
		Long: `Merge a LoRA adapter (fungtrain, mlx-lm or PEFT format) into the base
weights (W + scale·(A·B)ᵀ) and write a complete HF-format model directory
that transformers loads: config.json, model.safetensors, the tokenizer
files with their special tokens, and generation_config.json. Without
--adapter the base model is converted as is (a GGUF file to an HF
directory, for example). Quantized bases are dequantized; --dtype picks the
output dtype (bf16 by default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" || out == "" {
				return fmt.Errorf("fuse: --model and --out are required")
			}
			if !force {
				for _, name := range []string{"config.json", "model.safetensors"} {
					if _, err := os.Stat(filepath.Join(out, name)); err == nil {
						return fmt.Errorf("fuse: %s already exists (pass --force to overwrite)", filepath.Join(out, name))
					}
				}
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("fuse: %w", err)
			}
			if err := resolveModelArg(cmd.Context(), &model); err != nil {
				return err
			}
			err := mlx.Do(func() error {
				b, err := llama.Open(model, llama.LoadOptions{Dtype: dtype, Dequantize: "yes"})
				if err != nil {
					return err
				}
				defer b.Close()
				if adapter != "" {
					ad, err := lora.Load(b.Model, adapter)
					if err != nil {
						return err
					}
					if err := ad.Fuse(); err != nil {
						return err
					}
				}
				return llama.SaveHF(b, out)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote fused model to %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "base model directory or .gguf file")
	cmd.Flags().StringVar(&adapter, "adapter", "", "adapter directory (fungtrain, mlx-lm or PEFT); none converts the base model")
	cmd.Flags().StringVar(&out, "out", "", "output directory")
	cmd.Flags().StringVar(&dtype, "dtype", "bf16", "output dtype: bf16, f16 or f32")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite a model already in --out")
	return cmd
}

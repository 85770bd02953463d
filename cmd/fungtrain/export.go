package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/internal/gguf"
	"github.com/fungtrain/fungtrain/internal/progress"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newExportCmd) }

func newExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write a model or adapter for other tools: GGUF (llama.cpp, ollama, LM Studio) or PEFT",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newExportGGUFCmd(), newExportPEFTCmd())
	return cmd
}

type exportGGUFFlags struct {
	model, adapter, out, typ, name string
	force                          bool
}

func newExportGGUFCmd() *cobra.Command {
	var f exportGGUFFlags
	cmd := &cobra.Command{
		Use:   "gguf --model PATH [--adapter DIR] --out FILE.gguf [--type f16|bf16|q8_0|q4_0]",
		Short: "Write the base model, or the base with an adapter merged, as a GGUF file",
		Long: `export gguf writes a GGUF file in the layout llama.cpp's converter gives
Llama 3.x models, for llama.cpp, ollama and LM Studio: the llama.*
hyperparameters, the tokenizer (gpt2 BPE with its merges, pre-tokenizer,
special tokens and chat template), llama3 RoPE scaling as rope_freqs, q/k
weights in llama.cpp's row order, and no output.weight for tied embeddings.

--adapter (fungtrain, mlx-lm or PEFT format) is merged into the weights
first. --type sets the type of the weight matrices: f16, bf16 (rounded to
nearest even), q8_0 or q4_0 (blocks of 32, llama.cpp's layouts; under q4_0
the matrix that computes the logits is q8_0), or f32; norms stay f32. The
default, auto, is bf16 for a bf16 model and f16 otherwise. A quantized
source is dequantized first. The file is written atomically; an existing
--out is refused without --force.`,
		Example: `  fungtrain export gguf --model third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter runs/demo --out demo.gguf --type q8_0
  ollama create demo -f Modelfile     # Modelfile: FROM ./demo.gguf
  llama-cli -m demo.gguf -cnv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runExportGGUF(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "base model: an HF or MLX-community directory or a .gguf file (required)")
	fl.StringVar(&f.adapter, "adapter", "", "adapter directory to merge (fungtrain, mlx-lm or PEFT)")
	fl.StringVar(&f.out, "out", "", "output .gguf file (required)")
	fl.StringVar(&f.typ, "type", "auto", "weight type: auto, f16, bf16, q8_0, q4_0 or f32")
	fl.StringVar(&f.name, "name", "", "general.name (default: the source model's name)")
	fl.BoolVar(&f.force, "force", false, "overwrite --out if it exists")
	return cmd
}

// checkOut refuses an output file that exists (without force), a
// directory, or a path whose directory does not exist.
func checkOut(out string, force bool) error {
	if st, err := os.Stat(out); err == nil {
		if st.IsDir() {
			return fmt.Errorf("%s is a directory; give a file name", out)
		}
		if !force {
			return fmt.Errorf("%s already exists (pass --force to overwrite)", out)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if dir := filepath.Dir(out); dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("the directory of %s does not exist", out)
		}
	}
	return nil
}

func runExportGGUF(cmd *cobra.Command, f exportGGUFFlags) error {
	if f.model == "" || f.out == "" {
		return errors.New("export gguf: --model and --out are required")
	}
	var typ gguf.TensorType
	auto := f.typ == "auto" || f.typ == ""
	if !auto {
		var err error
		if typ, err = llama.ParseGGUFType(f.typ); err != nil {
			return fmt.Errorf("export gguf: --type: %w", err)
		}
	}
	if err := checkOut(f.out, f.force); err != nil {
		return fmt.Errorf("export gguf: --out: %w", err)
	}
	t0 := time.Now()
	var nTensors int
	err := mlx.Do(func() error {
		b, err := llama.Open(f.model, llama.LoadOptions{Dequantize: "no"})
		if err != nil {
			return err
		}
		defer b.Close()
		if auto {
			typ = autoGGUFType(b)
		}
		if f.adapter != "" {
			ad, err := lora.Load(b.Model, f.adapter)
			if err != nil {
				return fmt.Errorf("--adapter: %w", err)
			}
			if err := ad.Fuse(); err != nil {
				return err
			}
		}
		tok, err := llama.TokenizerGGUFKeys(b)
		if err != nil {
			return err
		}
		w, err := llama.NewGGUFWriter(b.Model, llama.GGUFExportOptions{Type: typ, Name: sourceName(b, f.name), Tokenizer: tok})
		if err != nil {
			return err
		}
		nTensors = len(w.Tensors())
		bar := progress.New(os.Stderr, "export", nTensors)
		defer bar.Finish()
		w.OnTensor(func(string) { bar.Add(1) })
		if err := w.WriteFile(f.out); err != nil {
			return fmt.Errorf("export gguf: write %s: %w", f.out, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	st, _ := os.Stat(f.out)
	slog.Info("GGUF written", "file", f.out, "type", typ, "tensors", nTensors, "bytes", st.Size(), "seconds", time.Since(t0).Seconds())
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %d tensors)\n", f.out, typ, nTensors)
	return nil
}

// autoGGUFType is bf16 for a model stored in bf16, f16 otherwise.
func autoGGUFType(b *llama.Bundle) gguf.TensorType {
	if b.GGUF != nil {
		n := map[gguf.TensorType]int{}
		for _, t := range b.GGUF.Tensors {
			n[t.Type]++
		}
		if n[gguf.BF16] > n[gguf.F16] {
			return gguf.BF16
		}
		return gguf.F16
	}
	raw, err := os.ReadFile(filepath.Join(b.Path, "config.json"))
	if err == nil {
		var c struct {
			TorchDtype string `json:"torch_dtype"`
			Dtype      string `json:"dtype"`
		}
		if json.Unmarshal(raw, &c) == nil && (c.TorchDtype == "bfloat16" || c.Dtype == "bfloat16") {
			return gguf.BF16
		}
	}
	return gguf.F16
}

// sourceName is general.name for the export: the flag, the source GGUF's
// own name, or the model directory's name.
func sourceName(b *llama.Bundle, flag string) string {
	if flag != "" {
		return flag
	}
	if b.GGUF != nil {
		if n, err := b.GGUF.String("general.name"); err == nil && n != "" {
			return n
		}
	}
	return strings.TrimSuffix(filepath.Base(filepath.Clean(b.Path)), ".gguf")
}

func newExportPEFTCmd() *cobra.Command {
	var adapter, out, base string
	var force bool
	cmd := &cobra.Command{
		Use:   "peft --adapter DIR --out DIR2",
		Short: "Write an adapter in PEFT's format (Hugging Face PEFT, Unsloth)",
		Long: `export peft converts a fungtrain (or mlx-lm) LoRA adapter into a PEFT
adapter directory: adapter_model.safetensors with PEFT's tensor names
(base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight (r, in),
lora_B.weight (out, r)) and adapter_config.json (peft_type LORA, r,
lora_alpha = scale × r, target_modules, layers_to_transform, lora_dropout,
task_type CAUSAL_LM, base_model_name_or_path). Load it with
PeftModel.from_pretrained(base, DIR2). Every fungtrain command's --adapter
also reads PEFT adapters.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if adapter == "" || out == "" {
				return errors.New("export peft: --adapter and --out are required")
			}
			for _, name := range []string{"adapter_config.json", "adapter_model.safetensors"} {
				if _, err := os.Stat(filepath.Join(out, name)); err == nil && !force {
					return fmt.Errorf("export peft: %s already exists (pass --force to overwrite)", filepath.Join(out, name))
				}
			}
			err := mlx.Do(func() error { return lora.ExportPEFT(adapter, out, lora.PEFTOptions{BaseModel: base}) })
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote PEFT adapter to %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&adapter, "adapter", "", "adapter directory (required)")
	cmd.Flags().StringVar(&out, "out", "", "output directory (required)")
	cmd.Flags().StringVar(&base, "base-model", "", "base_model_name_or_path (default: the training run's model.path)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an adapter already in --out")
	return cmd
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/bench"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newBenchCmd) }

// benchFlags are the flags of the modes other than train and generate.
type benchFlags struct {
	keys, out, to string
	bits, group   int
	asJSON        bool
}

func newBenchCmd() *cobra.Command {
	var o bench.Options
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench train|generate|lengths|quantize [--shape tiny|llama-3.2-1b|llama-3.2-3b | --model PATH]",
		Short: "Measure training or generation speed and memory; prepare benchmark inputs",
		Long: `Measure LoRA training (tokens/sec over all and over loss-counted tokens,
optimizer steps/sec, model FLOP utilisation, MLX peak memory, the process's
max RSS, and the cold start: seconds to the first optimizer step) or
generation (prefill and decode tokens/sec). With no --model, a random-init
model of the named shape is built in memory.

Training uses the mission's run config (LoRA rank 6, alpha 8, dropout 0.1 on
q and v of the last 12 layers; batch 1) on random token ids. By default each
example is --seq tokens; --lengths lays them out like a real dataset instead:
a dataset directory (its train split tokenized with --tokenizer or the
model's tokenizer, prompts masked), a lengths file written by
'bench lengths --out', or a spec such as mean:290,max:1024. --grad-accum sets
the micro-batches per optimizer step, and --set section.key=value overrides
any run-config key (applied last), so trainer settings can be measured
without new flags. --steps and --warmup count optimizer steps.

MFU is achieved FLOP/s over --peak-tflops (default 989, the dense bf16 peak
of an H100/H200 SXM). The FLOP count per token is 2 per weight forward
(projections and LM head), 2 per weight backward from the first adapted
block up (activation gradients only: the base is frozen), attention
(4·heads·head_dim per attended position forward, twice that backward in the
adapted blocks) and the adapters (see bench/flops.go).

'bench lengths' prints a length distribution's summary and writes it with
--out (JSON) for the anchors in bench/. 'bench quantize' writes a quantized
copy of a dense --model: --to mlx (MLX-community layout, --bits, --group-size)
or --to q4_0|q8_0 (a GGUF file).`,
		Example: `  fungtrain bench train --shape llama-3.2-3b --seq 1024 --steps 20
  fungtrain bench train --model /tmp/rand3b --lengths examples/fung-sample --tokenizer third_party/llama3-tokenizer --grad-accum 8 --steps 20 --warmup 5
  fungtrain bench train --shape tiny --dtype f32 --lengths mean:290,max:1024 --set training.loss_chunk=128
  fungtrain bench lengths --lengths examples/fung-sample --tokenizer third_party/llama3-tokenizer --out bench/lengths/fung-sample.json
  fungtrain bench quantize --model /tmp/rand3b --to mlx --bits 4 --group-size 64 --out /tmp/rand3b-4bit`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"train", "generate", "lengths", "quantize"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch f.keys {
			case "qv":
				o.LoRA.Keys = []string{"self_attn.q_proj", "self_attn.v_proj"}
			case "all":
				o.LoRA.Keys = []string{"all-linear"}
			default:
				return fmt.Errorf("--lora-keys %q: want qv or all", f.keys)
			}
			// NaN fails every comparison, so it is named first.
			if v := o.MemLimitGB; math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return fmt.Errorf("--memory-limit-gb %g: want a finite number of GiB, 0 or more (0: MLX's default)", v)
			}
			switch args[0] {
			case "train", "generate":
			case "lengths":
				return runBenchLengths(cmd, o, f)
			case "quantize":
				return runBenchQuantize(cmd, o, f)
			default:
				return fmt.Errorf("bench %q: want train, generate, lengths or quantize", args[0])
			}
			if args[0] == "train" {
				mlx.UseTrainingBuffers()
			}
			if err := resolveModelArg(cmd.Context(), &o.Model); err != nil {
				return err
			}
			if err := resolveTokenizerArg(cmd.Context(), &o.Tokenizer); err != nil {
				return fmt.Errorf("--tokenizer: %w", err)
			}
			if o.Tokenizer == "" && o.Model != "" {
				o.Tokenizer = o.Model
			}
			var res any
			err := mlx.Do(func() error {
				var err error
				if args[0] == "train" {
					res, err = bench.Train(o)
				} else {
					res, err = bench.Generate(cmd.Context(), o)
				}
				return err
			})
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), res, f.asJSON)
		},
	}
	o.LoRA = lora.DefaultSettings()
	fl := cmd.Flags()
	fl.StringVar(&o.Shape, "shape", "tiny", "model shape: tiny, llama-3.2-1b or llama-3.2-3b")
	fl.IntVar(&o.Layers, "layers", 0, "keep only this many transformer layers of the shape (0: all)")
	fl.StringVar(&o.Model, "model", "", "measure this model (directory or .gguf) instead of a random-init shape")
	fl.StringVar(&o.Dtype, "dtype", "bf16", "dtype: bf16, f16 or f32")
	fl.StringVar(&o.Dequantize, "dequantize", "auto", "expand a quantized --model to dense at load: auto (on the CPU only), yes or no")
	fl.IntVar(&o.Seq, "seq", 1024, "sequence length (training without --lengths) or prompt length (generation)")
	fl.IntVar(&o.Batch, "batch", 1, "batch size (training.batch_size)")
	fl.IntVar(&o.GradAccum, "grad-accum", 1, "micro-batches per optimizer step (training.grad_accumulation)")
	fl.StringVar(&o.Lengths, "lengths", "", "example lengths: a dataset directory, a lengths file, or mean:N,max:N[,min:N,prompt:F,n:N,seed:N]")
	fl.StringVar(&o.Tokenizer, "tokenizer", "", "tokenizer for a dataset --lengths (default: the --model directory's)")
	fl.StringArrayVar(&o.Sets, "set", nil, "override a run-config key, e.g. --set training.loss_chunk=128 (repeatable, applied last)")
	fl.IntVar(&o.Steps, "steps", 10, "measured optimizer steps (training) or generated tokens (generation)")
	fl.IntVar(&o.Warmup, "warmup", 2, "unmeasured warm-up steps")
	fl.StringVar(&f.keys, "lora-keys", "qv", "LoRA targets: qv or all")
	fl.IntVar(&o.LoRA.NumLayers, "lora-layers", 12, "LoRA on the last N layers")
	fl.IntVar(&o.LoRA.Rank, "rank", 6, "LoRA rank")
	fl.BoolVar(&o.GradCkpt, "grad-checkpoint", false, "recompute block activations in the backward pass")
	fl.BoolVar(&o.NoCompile, "no-compile", false, "trace the training step every time instead of compiling it")
	fl.IntVar(&o.LossChunk, "loss-chunk", lora.DefaultRunConfig().Training.LossChunk, "positions per chunk of the fused LM head + cross-entropy (0: all at once)")
	fl.Float64Var(&o.MemLimitGB, "memory-limit-gb", 0, "MLX memory limit during training in GiB (0: MLX's default)")
	fl.BoolVar(&o.Sequential, "sequential", false, "do not queue the next step before reading the current one")
	fl.Float64Var(&o.PromptFrac, "prompt-fraction", 0, "share of each --seq sequence that is prompt (not loss-counted)")
	fl.Float64Var(&o.PeakTFLOPs, "peak-tflops", bench.DefaultPeakTFLOPs, "the device's dense peak in TFLOP/s, for MFU (default: H100/H200 SXM bf16)")
	fl.Uint64Var(&o.Seed, "seed", 42, "seed for weights and data")
	fl.StringVar(&f.out, "out", "", "lengths: write the distribution here (JSON); quantize: the output directory or .gguf file")
	fl.StringVar(&f.to, "to", "mlx", "quantize: mlx (MLX-community layout), q4_0 or q8_0 (GGUF)")
	fl.IntVar(&f.bits, "bits", 4, "quantize --to mlx: bits per weight")
	fl.IntVar(&f.group, "group-size", 64, "quantize --to mlx: weights per scale and bias")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON")
	return cmd
}

// runBenchLengths resolves --lengths, prints its summary and writes it.
func runBenchLengths(cmd *cobra.Command, o bench.Options, f benchFlags) error {
	if o.Lengths == "" {
		return fmt.Errorf("bench lengths: --lengths is required (a dataset directory, a lengths file or mean:N,max:N)")
	}
	if err := resolveTokenizerArg(cmd.Context(), &o.Tokenizer); err != nil {
		return fmt.Errorf("--tokenizer: %w", err)
	}
	if o.Tokenizer == "" {
		o.Tokenizer = o.Model
	}
	cfg, err := bench.RunConfig(o)
	if err != nil {
		return err
	}
	p, err := bench.ResolveLengths(o.Lengths, o.Tokenizer, cfg.Data.Config)
	if err != nil {
		return err
	}
	if f.out != "" {
		if err := p.WriteFile(f.out); err != nil {
			return err
		}
	}
	st := p.Stats()
	if f.asJSON {
		return printResult(cmd.OutOrStdout(), st, true)
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: %d examples, mean %.1f tokens, max %d, %.1f%% of targets loss-counted, mean attended context %.1f\n",
		p.Source, st.Examples, st.MeanTokens, st.MaxTokens, 100*st.CountedShare, st.MeanAttention)
	return err
}

// runBenchQuantize writes a quantized copy of --model.
func runBenchQuantize(cmd *cobra.Command, o bench.Options, f benchFlags) error {
	if o.Model == "" || f.out == "" {
		return fmt.Errorf("bench quantize: --model (a dense model directory) and --out are required")
	}
	if err := resolveModelArg(cmd.Context(), &o.Model); err != nil {
		return err
	}
	err := mlx.Do(func() error {
		if f.to == "mlx" {
			return bench.QuantizeMLX(o.Model, f.out, f.bits, f.group)
		}
		return bench.WriteGGUF(o.Model, f.out, f.to)
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), f.out)
	return err
}

func printResult(w io.Writer, res any, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return printTable(w, res)
}

func printTable(w io.Writer, res any) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	switch r := res.(type) {
	case *bench.TrainResult:
		base := r.Dtype
		if r.Quantized != "" {
			base = r.Quantized + " base, " + r.Dtype
		}
		fmt.Fprintf(tw, "model\t%s (%s, %s)\n", r.Shape, base, r.Backend)
		data := fmt.Sprintf("seq %d", r.Seq)
		if r.LengthsSource != "" {
			data = r.LengthsSource
		}
		fmt.Fprintf(tw, "data\t%s: mean %.1f tokens, max %d, %.1f%% of targets loss-counted\n",
			data, r.Lengths.MeanTokens, r.Lengths.MaxTokens, 100*r.Lengths.CountedShare)
		fmt.Fprintf(tw, "config\tbatch %d x accumulation %d, LoRA r%d on %s of the last %d layers (%d params), grad checkpoint %v, compiled %v\n",
			r.Batch, r.GradAccum, r.Rank, r.LoRAKeys, r.LoRALayers, r.TrainableParams, r.GradCheckpoint, r.Compiled)
		if len(r.Sets) > 0 {
			fmt.Fprintf(tw, "overrides\t%s\n", strings.Join(r.Sets, " "))
		}
		fmt.Fprintf(tw, "memory options\tloss chunk %d, MLX memory limit %s, sequential %v, MLX environment %v\n",
			r.LossChunk, limitText(r.MemoryLimitGiB), r.Sequential, r.MLXEnv)
		fmt.Fprintf(tw, "steps\t%d optimizer steps measured after %d warm-up\n", r.Steps, r.Warmup)
		fmt.Fprintf(tw, "cold start\t%.2f s to the model loaded, %.2f s to the first optimizer step\n", r.LoadSeconds, r.FirstStepSeconds)
		fmt.Fprintf(tw, "step time\t%.3f s (%.2f optimizer steps/s)\n", r.StepSeconds, r.StepsPerSec)
		fmt.Fprintf(tw, "tokens/sec\t%.1f (all), %.1f (loss-counted)\n", r.TokensPerSec, r.CountedTokensPerSec)
		fmt.Fprintf(tw, "utilisation\t%.3g GFLOP/token, %.3g TFLOP/s, MFU %.1f%% of %g TFLOP/s\n",
			r.FLOPsPerToken.Total/1e9, r.AchievedTFLOPs, 100*r.MFU, r.PeakTFLOPs)
		fmt.Fprintf(tw, "peak memory\t%.2f GiB (MLX), %.2f GiB (max RSS)\n", r.PeakMemoryGiB, r.MaxRSSGiB)
		fmt.Fprintf(tw, "memory split\t%.2f GiB weights, %.2f GiB peak of a forward pass without gradients\n", r.WeightsGiB, r.ForwardPeakGiB)
		fmt.Fprintf(tw, "final loss\t%.4f\n", r.FinalLoss)
	case *bench.GenResult:
		fmt.Fprintf(tw, "model\t%s (%s, %s)\n", r.Shape, r.Dtype, r.Backend)
		fmt.Fprintf(tw, "prefill\t%d tokens, %.1f tokens/sec\n", r.PromptTokens, r.PrefillPerSec)
		fmt.Fprintf(tw, "decode\t%d tokens, %.1f tokens/sec\n", r.GeneratedTokens, r.DecodePerSec)
		fmt.Fprintf(tw, "decode host\t%.3f ms/token building the graph, %.3f in MLX's eval, %.3f waiting for the device\n",
			r.DecodeBuildMS, r.DecodeEvalMS, r.DecodeWaitMS)
		fmt.Fprintf(tw, "peak memory\t%.2f GiB (MLX), %.2f GiB (max RSS)\n", r.PeakMemoryGiB, r.MaxRSSGiB)
	}
	return tw.Flush()
}

func limitText(gib float64) string {
	if gib <= 0 {
		return "default"
	}
	return fmt.Sprintf("%.2f GiB", gib)
}

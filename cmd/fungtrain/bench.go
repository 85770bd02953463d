package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/bench"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newBenchCmd) }

func newBenchCmd() *cobra.Command {
	var o bench.Options
	var keys string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bench train|generate [--shape tiny|llama-3.2-1b|llama-3.2-3b | --model PATH]",
		Short: "Measure training or generation tokens/sec and peak memory",
		Long: `Measure LoRA training (tokens/sec over all and over loss-counted tokens,
step time, MLX peak memory and the process's max RSS) or generation (prefill
and decode tokens/sec). With no --model, a random-init model of the named
shape is built in memory. Training uses the mission's LoRA config (rank 6,
alpha 8, dropout 0.1, the last 12 layers, q and v) on random sequences of
--seq tokens; warm-up steps are excluded.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"train", "generate"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch keys {
			case "qv":
				o.LoRA.Keys = []string{"self_attn.q_proj", "self_attn.v_proj"}
			case "all":
				o.LoRA.Keys = []string{"all-linear"}
			default:
				return fmt.Errorf("--lora-keys %q: want qv or all", keys)
			}
			if args[0] == "train" {
				mlx.UseTrainingBuffers()
			}
			if err := resolveModelArg(cmd.Context(), &o.Model); err != nil {
				return err
			}
			var res any
			err := mlx.Do(func() error {
				var err error
				switch args[0] {
				case "train":
					res, err = bench.Train(o)
				case "generate":
					res, err = bench.Generate(cmd.Context(), o)
				default:
					err = fmt.Errorf("bench %q: want train or generate", args[0])
				}
				return err
			})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return printTable(cmd.OutOrStdout(), res)
		},
	}
	o.LoRA = lora.DefaultSettings()
	fl := cmd.Flags()
	fl.StringVar(&o.Shape, "shape", "tiny", "model shape: tiny, llama-3.2-1b or llama-3.2-3b")
	fl.IntVar(&o.Layers, "layers", 0, "keep only this many transformer layers of the shape (0: all)")
	fl.StringVar(&o.Model, "model", "", "measure this model instead of a random-init shape")
	fl.StringVar(&o.Dtype, "dtype", "bf16", "dtype: bf16, f16 or f32")
	fl.IntVar(&o.Seq, "seq", 1024, "sequence length (training) or prompt length (generation)")
	fl.IntVar(&o.Batch, "batch", 1, "batch size")
	fl.IntVar(&o.Steps, "steps", 10, "measured steps (training) or generated tokens (generation)")
	fl.IntVar(&o.Warmup, "warmup", 2, "unmeasured warm-up steps")
	fl.StringVar(&keys, "lora-keys", "qv", "LoRA targets: qv or all")
	fl.IntVar(&o.LoRA.NumLayers, "lora-layers", 12, "LoRA on the last N layers")
	fl.IntVar(&o.LoRA.Rank, "rank", 6, "LoRA rank")
	fl.BoolVar(&o.GradCkpt, "grad-checkpoint", false, "recompute block activations in the backward pass")
	fl.BoolVar(&o.NoCompile, "no-compile", false, "trace the training step every time instead of compiling it")
	fl.IntVar(&o.LossChunk, "loss-chunk", lora.DefaultRunConfig().Training.LossChunk, "positions per chunk of the fused LM head + cross-entropy (0: all at once)")
	fl.Float64Var(&o.MemLimitGB, "memory-limit-gb", 0, "MLX memory limit during training in GiB (0: MLX's default)")
	fl.BoolVar(&o.Sequential, "sequential", false, "do not queue the next step before reading the current one")
	fl.Float64Var(&o.PromptFrac, "prompt-fraction", 0, "share of each sequence that is prompt (not loss-counted)")
	fl.Uint64Var(&o.Seed, "seed", 42, "seed for weights and data")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printTable(w io.Writer, res any) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	switch r := res.(type) {
	case *bench.TrainResult:
		fmt.Fprintf(tw, "model\t%s (%s, %s)\n", r.Shape, r.Dtype, r.Backend)
		fmt.Fprintf(tw, "config\tseq %d, batch %d, LoRA r%d on %s of the last %d layers (%d params), grad checkpoint %v, compiled %v\n",
			r.Seq, r.Batch, r.Rank, r.LoRAKeys, r.LoRALayers, r.TrainableParams, r.GradCheckpoint, r.Compiled)
		fmt.Fprintf(tw, "memory options\tloss chunk %d, MLX memory limit %s, sequential %v, MLX environment %v\n",
			r.LossChunk, limitText(r.MemoryLimitGiB), r.Sequential, r.MLXEnv)
		fmt.Fprintf(tw, "steps\t%d measured after %d warm-up\n", r.Steps, r.Warmup)
		fmt.Fprintf(tw, "step time\t%.3f s\n", r.StepSeconds)
		fmt.Fprintf(tw, "tokens/sec\t%.1f (all), %.1f (loss-counted)\n", r.TokensPerSec, r.CountedTokensPerSec)
		fmt.Fprintf(tw, "peak memory\t%.2f GiB (MLX), %.2f GiB (max RSS)\n", r.PeakMemoryGiB, r.MaxRSSGiB)
		fmt.Fprintf(tw, "memory split\t%.2f GiB weights, %.2f GiB peak of a forward pass without gradients\n", r.WeightsGiB, r.ForwardPeakGiB)
		fmt.Fprintf(tw, "final loss\t%.4f\n", r.FinalLoss)
	case *bench.GenResult:
		fmt.Fprintf(tw, "model\t%s (%s, %s)\n", r.Shape, r.Dtype, r.Backend)
		fmt.Fprintf(tw, "prefill\t%d tokens, %.1f tokens/sec\n", r.PromptTokens, r.PrefillPerSec)
		fmt.Fprintf(tw, "decode\t%d tokens, %.1f tokens/sec\n", r.GeneratedTokens, r.DecodePerSec)
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

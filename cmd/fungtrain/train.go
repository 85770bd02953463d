package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/data"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

func init() { subcommands = append(subcommands, newTrainCmd) }

type trainFlags struct {
	config string
	resume string
	sets   []string
}

func newTrainCmd() *cobra.Command {
	var f trainFlags
	cmd := &cobra.Command{
		Use:   "train --config run.yaml [--set section.key=value ...]",
		Short: "Fine-tune LoRA adapters",
		Long: `Fine-tune LoRA adapters on a model, as configured by a YAML run file
(sections model, data, lora, optimizer, schedule, training, eval, output).
Any key can be overridden with --set section.key=value. The run directory
gets metrics.jsonl, summary.json, run_metadata.json, config.yaml, the final
adapters, the best adapters (best/) and checkpoints (checkpoints/).
--resume RUN_DIR continues a run exactly from its latest checkpoint.
SIGINT or SIGTERM saves a checkpoint and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			mlx.UseTrainingBuffers()
			return runTrain(cmd, f)
		},
	}
	cmd.Flags().StringVar(&f.config, "config", "", "YAML run config")
	cmd.Flags().StringVar(&f.resume, "resume", "", "run directory (or checkpoint) to resume")
	cmd.Flags().StringArrayVar(&f.sets, "set", nil, "override a config key, e.g. --set lora.rank=8 (repeatable)")
	return cmd
}

// loadTrainConfig resolves the config of a new or resumed run.
func loadTrainConfig(f trainFlags) (lora.RunConfig, string, error) {
	if f.resume == "" {
		if f.config == "" {
			return lora.RunConfig{}, "", errors.New("train: --config is required (or --resume RUN_DIR)")
		}
		cfg, err := lora.LoadRunConfig(f.config, f.sets, data.SectionKeys()...)
		return cfg, "", err
	}
	ck, err := lora.LatestCheckpoint(f.resume)
	if err != nil {
		return lora.RunConfig{}, "", err
	}
	cfg, err := lora.ReadCheckpointConfig(ck)
	if err != nil {
		return cfg, "", err
	}
	if len(f.sets) > 0 {
		return cfg, "", errors.New("train: --set cannot change a resumed run; its config comes from the checkpoint")
	}
	return cfg, ck, nil
}

func runTrain(cmd *cobra.Command, f trainFlags) error {
	cfg, ck, err := loadTrainConfig(f)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.Default()
	model, err := resolveModel(ctx, pinnedModel(cfg.Model.Path, resumeDir(ck, cfg.Output.Dir)))
	if err != nil {
		return err
	}
	var summary *lora.Summary
	err = mlx.Do(func() error {
		var tokOpts []llama.TokenizerOption
		if cfg.Model.ChatFormat != "" {
			cf, err := llama.ParseChatFormat(cfg.Model.ChatFormat)
			if err != nil {
				return fmt.Errorf("model.chat_format: %w", err)
			}
			tokOpts = append(tokOpts, llama.WithChatFormat(cf))
		}
		b, err := llama.Open(model.Path, llama.LoadOptions{Dtype: cfg.Model.Dtype}, tokOpts...)
		if err != nil {
			return err
		}
		defer b.Close()
		train, err := traindata.LoadSplit(cfg.Data.Config, "train", b.Tokenizer)
		if err != nil {
			return err
		}
		valid, err := traindata.LoadSplit(cfg.Data.Config, "valid", b.Tokenizer)
		if err != nil {
			return err
		}
		meta, err := lora.NewRunMetadata(cfg, lora.Build{Version: version, Commit: commit},
			lora.ModelSource{Path: model.Path, Repo: model.Repo, Commit: model.Commit}, train, valid)
		if err != nil {
			return err
		}
		if ck != "" {
			meta.MarkResumed(cfg.Output.Dir)
		}
		tr, err := lora.NewTrainer(cfg, b.Model, train, valid, padID(b), meta, log)
		if err != nil {
			return err
		}
		defer tr.Close()
		if ck != "" {
			if err := tr.Restore(ck); err != nil {
				return err
			}
			log.Info("resuming", "checkpoint", ck, "step", tr.State().Step)
		}
		summary, err = tr.Run(ctx)
		return err
	})
	if errors.Is(err, lora.ErrInterrupted) {
		fmt.Fprintf(cmd.ErrOrStderr(), "interrupted: resume with: fungtrain train --resume %s\n", cfg.Output.Dir)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "done: %d steps in %.1fs (%.1fs training), %.0f tokens/s, peak memory %.2f GB\n",
		summary.Steps, summary.Seconds, summary.TrainSeconds, summary.TokensPerSec, summary.PeakMemoryGB)
	if cfg.Eval.Every > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "val loss: %.4f -> %.4f (best %.4f at step %d)\n",
			summary.InitialValLoss, summary.FinalValLoss, summary.BestValLoss, summary.BestStep)
	} else {
		fmt.Fprintln(cmd.OutOrStdout(), "val loss: not evaluated (eval.every is 0)")
	}
	fmt.Fprintf(cmd.OutOrStdout(), "adapters: %s\n", cfg.Output.Dir)
	return nil
}

// padID picks the token used to pad batches: it never counts in the loss,
// so any valid id works; the first stop id keeps it recognisable.
func padID(b *llama.Bundle) int32 {
	if len(b.StopIDs) > 0 {
		return b.StopIDs[0]
	}
	return 0
}

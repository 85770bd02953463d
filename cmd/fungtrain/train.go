package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/data"
	"github.com/fungtrain/fungtrain/hub"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

func init() { subcommands = append(subcommands, newTrainCmd) }

type trainFlags struct {
	config string
	resume string
	force  bool
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
--resume RUN_DIR continues a run exactly from its latest checkpoint, with
the config, data and model it started with (--config is refused).
A new run does not start in an output.dir that holds a finished run
(summary.json) unless --force is given: --force removes that run's
adapters, summary.json, best/ and checkpoints/ and trains from scratch.
SIGINT or SIGTERM saves a checkpoint and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			mlx.UseTrainingBuffers()
			return runTrain(cmd, f)
		},
	}
	cmd.Flags().StringVar(&f.config, "config", "", "YAML run config")
	cmd.Flags().StringVar(&f.resume, "resume", "", "run directory (or checkpoint) to resume")
	cmd.Flags().BoolVar(&f.force, "force", false, "start over in an output.dir that holds a finished run, replacing it")
	cmd.Flags().StringArrayVar(&f.sets, "set", nil, "override a config key, e.g. --set lora.rank=8 (repeatable)")
	return cmd
}

// checkTrainFlags refuses flags that do not go together; every rank
// checks them before it joins the others.
func checkTrainFlags(f trainFlags) error {
	switch {
	case f.resume != "" && f.config != "":
		return fmt.Errorf("train: --resume %s takes the run's config from its checkpoint, so --config %s would be ignored: "+
			"give --resume alone (with --set only for %s), or --config alone for a new run",
			f.resume, f.config, strings.Join(lora.ResumableKeys, ", "))
	case f.resume != "" && f.force:
		return fmt.Errorf("train: --force starts a new run over and --resume %s continues one: give one of them", f.resume)
	}
	return nil
}

// loadTrainConfig resolves the config of a new or resumed run on this
// process alone.
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
	cfg, err = cfg.WithResumeOverrides(f.sets, data.SectionKeys()...)
	if err != nil {
		return cfg, "", fmt.Errorf("train: %w", err)
	}
	return cfg, ck, nil
}

// trainSetup is what every rank must agree on before it loads anything:
// the config, the checkpoint to resume (read by rank 0 only) and the
// model to load.
type trainSetup struct {
	Config     lora.RunConfig `json:"config"`
	Checkpoint string         `json:"checkpoint"`
	Model      string         `json:"model"`
	Err        string         `json:"err,omitempty"`
}

// joinAndLoadConfig loads the run's config and, when the environment asks
// for a group of ranks (fungtrain launch, mlx.launch), joins it. A new
// run reads its config on every rank before joining, so a bad file fails
// at once; a resumed run joins first and takes rank 0's config and
// checkpoint, so that only rank 0 needs the run directory.
func joinAndLoadConfig(f trainFlags) (g *mlx.Group, st trainSetup, err error) {
	if f.resume == "" {
		if st.Config, _, err = loadTrainConfig(f); err != nil {
			return nil, st, err
		}
	}
	if mlx.DistributedRequested() {
		err = mlx.Do(func() (err error) {
			g, err = mlx.InitDistributed(distributedConfig("", mlx.DefaultInitTimeout))
			return err
		})
		if err != nil {
			return nil, st, fmt.Errorf("train: join the ranks: %w", err)
		}
		defer func() {
			if err != nil {
				mlx.Do(func() error { g.Free(); return nil })
				g = nil
			}
		}()
	}
	if f.resume != "" {
		if g == nil || g.Rank() == 0 {
			st.Config, st.Checkpoint, err = loadTrainConfig(f)
			if err != nil {
				st.Err = err.Error()
			}
			st.Model = pinnedModel(st.Config.Model.Path, resumeDir(st.Checkpoint, st.Config.Output.Dir))
		}
		if g != nil {
			err = mlx.Do(func() error { return shareSetup(g, &st) })
			if err != nil {
				return nil, st, err
			}
		}
		if st.Err != "" {
			return nil, st, errors.New(st.Err)
		}
	} else {
		st.Model = st.Config.Model.Path
	}
	if g != nil {
		g.SetTimeout(time.Duration(st.Config.Training.DistTimeout * float64(time.Second)))
	}
	return g, st, nil
}

// shareSetup replaces st on every rank by rank 0's.
func shareSetup(g *mlx.Group, st *trainSetup) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if b, err = lora.BroadcastBytes(g, b); err != nil {
		return fmt.Errorf("train: get rank 0's config: %w", err)
	}
	*st = trainSetup{Config: lora.DefaultRunConfig()}
	if err := json.Unmarshal(b, st); err != nil {
		return fmt.Errorf("train: rank 0's config: %w", err)
	}
	if g.Rank() != 0 && st.Err != "" {
		st.Err = "rank 0: " + st.Err
	}
	return nil
}

func runTrain(cmd *cobra.Command, f trainFlags) error {
	if err := checkTrainFlags(f); err != nil {
		return err
	}
	g, st, err := joinAndLoadConfig(f)
	if err != nil {
		return err
	}
	if g != nil {
		defer mlx.Do(func() error { g.Free(); return nil })
	}
	cfg, ck := st.Config, st.Checkpoint
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.Default()
	if g != nil && g.Rank() != 0 {
		// Rank 0 reports for all; the others say only what goes wrong.
		log = slog.New(quietHandler{slog.Default().Handler()})
	}
	if ck == "" && (g == nil || g.Rank() == 0) {
		err = lora.PrepareNewRunDir(cfg.Output.Dir, f.force, log)
	}
	if g != nil {
		err = mlx.Do(func() error { return lora.AgreeOnError(g, err) })
	}
	if err != nil {
		return err
	}
	model, err := resolveModel(ctx, st.Model)
	if g != nil {
		err = mlx.Do(func() error { return lora.AgreeOnError(g, err) })
	}
	if err != nil {
		return err
	}
	var summary *lora.Summary
	err = mlx.Do(func() error {
		tr, closeAll, err := setUpTrainer(g, cfg, model, ck, log)
		defer closeAll()
		if err != nil {
			return err
		}
		summary, err = tr.Run(ctx)
		return err
	})
	if errors.Is(err, lora.ErrInterrupted) {
		if g == nil || g.Rank() == 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "interrupted: resume with: fungtrain train --resume %s\n", cfg.Output.Dir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if g != nil && g.Rank() != 0 {
		return nil
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

// setUpTrainer loads the model, tokenizer and data and makes the trainer,
// restoring checkpoint ck on rank 0 when it is set (MLX thread). Across
// ranks every phase ends with the ranks agreeing on its outcome, so that
// a rank that fails alone stops all of them with its error. closeAll
// frees what was made, whatever the error.
func setUpTrainer(g *mlx.Group, cfg lora.RunConfig, model hub.Model, ck string, log *slog.Logger) (tr *lora.Trainer, closeAll func(), err error) {
	var closers []func()
	closeAll = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	agree := func(err error) error { return lora.AgreeOnError(g, err) }
	var tokOpts []llama.TokenizerOption
	if cfg.Model.ChatFormat != "" {
		cf, err := llama.ParseChatFormat(cfg.Model.ChatFormat)
		if err != nil {
			return nil, closeAll, agree(fmt.Errorf("model.chat_format: %w", err))
		}
		tokOpts = append(tokOpts, llama.WithChatFormat(cf))
	}
	b, err := llama.Open(model.Path, llama.LoadOptions{Dtype: cfg.Model.Dtype}, tokOpts...)
	if err = agree(err); err != nil {
		if b != nil {
			b.Close()
		}
		return nil, closeAll, err
	}
	closers = append(closers, func() { b.Close() })
	train, err := traindata.LoadSplit(cfg.Data.Config, "train", b.Tokenizer)
	var valid *traindata.Split
	if err == nil {
		valid, err = traindata.LoadSplit(cfg.Data.Config, "valid", b.Tokenizer)
	}
	var meta lora.RunMetadata
	if err == nil {
		meta, err = lora.NewRunMetadata(cfg, lora.Build{Version: version, Commit: commit},
			lora.ModelSource{Path: model.Path, Repo: model.Repo, Commit: model.Commit}, train, valid)
	}
	if err = agree(err); err != nil {
		return nil, closeAll, err
	}
	if err := lora.CheckRanksAgree(g, meta); err != nil {
		return nil, closeAll, err
	}
	if meta.Distributed, err = lora.DescribeRanks(g, cfg, rankDevice()); err != nil {
		return nil, closeAll, err
	}
	if ck != "" && (g == nil || g.Rank() == 0) {
		err = meta.CheckResumeInputs(cfg.Output.Dir, cfg.Data.Dir, model.Path)
	}
	if err = agree(err); err != nil {
		return nil, closeAll, err
	}
	if ck != "" {
		meta.MarkResumed(cfg.Output.Dir)
	}
	tr, err = lora.NewTrainer(cfg, b.Model, train, valid, padID(b), meta, log, lora.WithGroup(g))
	if err = agree(err); err != nil {
		return nil, closeAll, err
	}
	closers = append(closers, tr.Close)
	if ck != "" && (g == nil || g.Rank() == 0) {
		err = tr.Restore(ck)
		if err == nil {
			log.Info("resuming", "checkpoint", ck, "step", tr.State().Step)
		}
	}
	if err = agree(err); err != nil {
		return nil, closeAll, err
	}
	return tr, closeAll, nil
}

// quietHandler passes on warnings and errors only.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

// padID picks the token used to pad batches: it never counts in the loss,
// so any valid id works; the first stop id keeps it recognisable.
func padID(b *llama.Bundle) int32 {
	if len(b.StopIDs) > 0 {
		return b.StopIDs[0]
	}
	return 0
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/fungtrain/fungtrain/data"
	"github.com/fungtrain/fungtrain/internal/progress"
)

func init() { subcommands = append(subcommands, newDataCmd) }

// dataFlags are the flags shared by every `fungtrain data` subcommand.
type dataFlags struct {
	config  string
	workDir string
}

// llmFlags override the llm: section for the stages that call the model.
type llmFlags struct {
	model, baseURL string
	concurrency    int
	stream         bool
	force          bool
	maxFailed      string
}

func newDataCmd() *cobra.Command {
	df := &dataFlags{}
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Build a fine-tuning dataset: transcripts, questions, answers, chat JSONL",
		Long: `The dataset pipeline, one stage per subcommand:

  transcripts  fetch transcripts (transcript API, YouTube channels, local files)
  questions    ask the LLM which questions each video answers
  answers      answer each question from the full transcript
  build        quality filter, dedup, split by video, write train/valid/test JSONL
  augment      add question paraphrases and short answers to a split
  stats        statistics of JSONL files

Every stage is resumable and idempotent. Settings come from the data: section
of the YAML run file (--config) and from flags; see docs/DATA.md.

Each stage prints a one-line summary on stdout. Exit codes: 0 done (items that
failed are retried by a rerun), 1 error, 3 the stage produced nothing (its
output holds no record), 4 more items failed than --max-failed allows.`,
	}
	cmd.PersistentFlags().StringVar(&df.config, "config", "", "YAML run file whose data: section configures the pipeline")
	cmd.PersistentFlags().StringVar(&df.workDir, "work-dir", "", "directory of the intermediate files (data.work_dir)")
	cmd.AddCommand(
		newDataTranscriptsCmd(df),
		newDataQuestionsCmd(df),
		newDataAnswersCmd(df),
		newDataBuildCmd(df),
		newDataAugmentCmd(df),
		newDataStatsCmd(df),
	)
	return cmd
}

// loadPipelineConfig reads the pipeline settings from the data: section of
// the YAML run file at path, over the defaults. Unknown keys inside the
// pipeline sub-sections are errors; the training keys directly under data:
// and the other top-level sections are left alone, except that data.dir,
// when set, is the default of data.build.out_dir, so that `fungtrain train`
// finds what `fungtrain data build` writes. An empty path gives the
// defaults.
func loadPipelineConfig(path string) (data.PipelineConfig, error) {
	if path == "" {
		return data.DefaultPipelineConfig(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return data.PipelineConfig{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := data.DecodePipelineYAML(b, path)
	if err != nil {
		return cfg, err
	}
	if cfg.Build.OutDir == "" {
		var top struct {
			Data struct {
				Dir string `yaml:"dir"`
			} `yaml:"data"`
		}
		if yaml.Unmarshal(b, &top) == nil && top.Data.Dir != "" {
			cfg.Build.OutDir = top.Data.Dir
		}
	}
	return cfg, nil
}

// setup loads the config, applies the shared flags and validates.
func (df *dataFlags) setup(cmd *cobra.Command, apply func(*data.PipelineConfig)) (data.PipelineConfig, error) {
	cfg, err := loadPipelineConfig(df.config)
	if err != nil {
		return cfg, err
	}
	if df.workDir != "" {
		cfg.WorkDir = df.workDir
	}
	if apply != nil {
		apply(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		if df.config != "" {
			return cfg, fmt.Errorf("%s: %w", df.config, err)
		}
		return cfg, err
	}
	return cfg, nil
}

// dataEnv returns the environment of a stage: the default slog logger, a
// progress bar when stderr is a terminal, and one shared HTTP client.
func dataEnv(cmd *cobra.Command) data.Env {
	var errFile *os.File
	if f, ok := cmd.ErrOrStderr().(*os.File); ok && isTerminal(f) {
		errFile = f
	}
	return data.Env{
		Logger: slog.Default(),
		Progress: func(label string, total int) *progress.Bar {
			if errFile == nil {
				return nil
			}
			return progress.New(errFile, label, total)
		},
		HTTPClient: data.NewHTTPClient(),
	}
}

// signalContext ends on SIGINT or SIGTERM, so a stage stops cleanly and a
// rerun continues where it stopped.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

func addLLMFlags(cmd *cobra.Command, lf *llmFlags) {
	cmd.Flags().StringVar(&lf.model, "llm-model", "", "chat model (data.llm.model)")
	cmd.Flags().StringVar(&lf.baseURL, "llm-base-url", "", "OpenAI-compatible base URL, e.g. http://localhost:8080/v1 (data.llm.base_url)")
	cmd.Flags().IntVar(&lf.concurrency, "concurrency", 0, "requests in flight (default data.llm.concurrency, 20)")
	cmd.Flags().BoolVar(&lf.stream, "stream", false, "use streamed completions (data.llm.stream)")
	cmd.Flags().BoolVar(&lf.force, "force", false, "discard the stage's journal and redo every item")
	addMaxFailedFlag(cmd, &lf.maxFailed)
}

func (lf *llmFlags) apply(cmd *cobra.Command, cfg *data.PipelineConfig) {
	if lf.model != "" {
		cfg.LLM.Model = lf.model
	}
	if lf.baseURL != "" {
		cfg.LLM.BaseURL = lf.baseURL
	}
	if lf.concurrency > 0 {
		cfg.LLM.Concurrency = lf.concurrency
		cfg.Questions.Concurrency, cfg.Answers.Concurrency, cfg.Augment.Concurrency = 0, 0, 0
	}
	if cmd.Flags().Changed("stream") {
		cfg.LLM.Stream = lf.stream
	}
}

func newDataTranscriptsCmd(df *dataFlags) *cobra.Command {
	var (
		videosFile, dir string
		channels        []string
		retryFailed     bool
		maxVideos       int
		maxFailed       string
	)
	cmd := &cobra.Command{
		Use:   "transcripts [VIDEO_URL_OR_ID...]",
		Short: "Fetch transcripts into {work_dir}/transcripts.jsonl",
		Long: `Fetch transcripts through the transcript API (videos given as arguments,
--videos-file or data.transcripts.videos; channels listed through the YouTube
Data API with --channel), or read local .txt/.srt/.vtt/.json files (--dir).
Records are appended to transcripts.jsonl; ids already there are skipped, and
permanent failures (not found, private, members-only) are recorded in
transcripts.failures.jsonl and skipped on later runs unless --retry-failed.

Prints a one-line summary. Exits 3 when transcripts.jsonl holds no
transcript, 4 when more inputs failed than --max-failed allows.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, err := parseFailLimit(maxFailed)
			if err != nil {
				return err
			}
			cfg, err := df.setup(cmd, func(c *data.PipelineConfig) {
				c.Transcripts.Videos = append(c.Transcripts.Videos, args...)
				if videosFile != "" {
					c.Transcripts.VideosFile = videosFile
				}
				if dir != "" {
					c.Transcripts.LocalDir = dir
				}
				if len(channels) > 0 {
					c.YouTube.Channels = channels
				}
				if maxVideos > 0 {
					c.YouTube.MaxVideos = maxVideos
				}
			})
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			rep, err := data.FetchTranscripts(ctx, cfg, dataEnv(cmd), data.TranscriptOptions{RetryFailed: retryFailed})
			if err != nil {
				return err
			}
			return summarizeStage(cmd.OutOrStdout(), transcriptsOutcome(rep), limit)
		},
	}
	cmd.Flags().StringVar(&videosFile, "videos-file", "", "file with one video URL or id per line (data.transcripts.videos_file)")
	cmd.Flags().StringVar(&dir, "dir", "", "directory of local .txt/.srt/.vtt/.json transcripts (data.transcripts.local_dir)")
	cmd.Flags().StringSliceVar(&channels, "channel", nil, "YouTube channel id or @handle to list, repeatable (data.youtube.channels)")
	cmd.Flags().IntVar(&maxVideos, "max-videos", 0, "videos taken per channel, 0 for all (data.youtube.max_videos)")
	cmd.Flags().BoolVar(&retryFailed, "retry-failed", false, "retry the videos recorded as permanent failures")
	addMaxFailedFlag(cmd, &maxFailed)
	return cmd
}

func newDataQuestionsCmd(df *dataFlags) *cobra.Command {
	lf := &llmFlags{}
	var maxQuestions int
	cmd := &cobra.Command{
		Use:   "questions",
		Short: "Ask the LLM which questions each transcript answers ({work_dir}/questions.jsonl)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, err := parseFailLimit(lf.maxFailed)
			if err != nil {
				return err
			}
			cfg, err := df.setup(cmd, func(c *data.PipelineConfig) {
				lf.apply(cmd, c)
				if maxQuestions > 0 {
					c.Questions.MaxQuestions = maxQuestions
				}
			})
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			rep, err := data.GenerateQuestions(ctx, cfg, dataEnv(cmd), data.StageOptions{Force: lf.force})
			if err != nil {
				return err
			}
			return summarizeStage(cmd.OutOrStdout(), llmStageOutcome(rep), limit)
		},
	}
	addLLMFlags(cmd, lf)
	cmd.Flags().IntVar(&maxQuestions, "max-questions", 0, "questions kept per video (data.questions.max_questions)")
	return cmd
}

func newDataAnswersCmd(df *dataFlags) *cobra.Command {
	lf := &llmFlags{}
	cmd := &cobra.Command{
		Use:   "answers",
		Short: "Answer every question from the full transcript ({work_dir}/answers.jsonl)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, err := parseFailLimit(lf.maxFailed)
			if err != nil {
				return err
			}
			cfg, err := df.setup(cmd, func(c *data.PipelineConfig) { lf.apply(cmd, c) })
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			rep, err := data.GenerateAnswers(ctx, cfg, dataEnv(cmd), data.StageOptions{Force: lf.force})
			if err != nil {
				return err
			}
			return summarizeStage(cmd.OutOrStdout(), llmStageOutcome(rep), limit)
		},
	}
	addLLMFlags(cmd, lf)
	return cmd
}

func newDataBuildCmd(df *dataFlags) *cobra.Command {
	lf := &llmFlags{}
	var (
		outDir, systemPrompt, fromTranscripts string
		threshold, minScore                   float64
		seed                                  uint64
		noDedup                               bool
	)
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Filter, deduplicate and split the answers into train/valid/test JSONL",
		Long: `Score every question/answer pair, drop those under data.build.quality.min_score,
remove exact and near duplicate questions, split by video (80/10/10, seed 42 by
default) and write train.jsonl, valid.jsonl and test.jsonl in mlx-lm's chat
format to --out (data.build.out_dir, else data.dir, else {work_dir}/dataset).

With --from-transcripts DIR the whole chain runs first on the local transcripts
in DIR: transcripts, questions and answers (through the LLM), then build.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, err := parseFailLimit(lf.maxFailed)
			if err != nil {
				return err
			}
			cfg, err := df.setup(cmd, func(c *data.PipelineConfig) {
				lf.apply(cmd, c)
				if outDir != "" {
					c.Build.OutDir = outDir
				}
				if cmd.Flags().Changed("system-prompt") {
					c.Build.SystemPrompt = systemPrompt
				}
				if cmd.Flags().Changed("dedup-threshold") {
					c.Build.Dedup.Threshold = threshold
				}
				if cmd.Flags().Changed("min-score") {
					c.Build.Quality.MinScore = minScore
				}
				if cmd.Flags().Changed("seed") {
					c.Build.Split.Seed = seed
				}
				if noDedup {
					c.Build.Dedup.Disabled = true
				}
				if fromTranscripts != "" {
					c.Transcripts.LocalDir = fromTranscripts
					c.Transcripts.Videos, c.Transcripts.VideosFile, c.YouTube.Channels = nil, "", nil
				}
			})
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			env, out := dataEnv(cmd), cmd.OutOrStdout()
			if fromTranscripts != "" {
				// Each stage's summary is printed; the chain stops at the
				// first that produced nothing or failed too much.
				tr, err := data.FetchTranscripts(ctx, cfg, env, data.TranscriptOptions{})
				if err != nil {
					return err
				}
				if err := summarizeStage(out, transcriptsOutcome(tr), limit); err != nil {
					return err
				}
				qr, err := data.GenerateQuestions(ctx, cfg, env, data.StageOptions{Force: lf.force})
				if err != nil {
					return err
				}
				if err := summarizeStage(out, llmStageOutcome(qr), limit); err != nil {
					return err
				}
				ar, err := data.GenerateAnswers(ctx, cfg, env, data.StageOptions{Force: lf.force})
				if err != nil {
					return err
				}
				if err := summarizeStage(out, llmStageOutcome(ar), limit); err != nil {
					return err
				}
			}
			rep, err := data.Build(ctx, cfg, env)
			return summarizeBuild(out, rep, err)
		},
	}
	addLLMFlags(cmd, lf)
	cmd.Flags().StringVar(&outDir, "out", "", "output directory of train/valid/test.jsonl (data.build.out_dir)")
	cmd.Flags().StringVar(&systemPrompt, "system-prompt", "", "system turn of every example (data.build.system_prompt)")
	cmd.Flags().Float64Var(&threshold, "dedup-threshold", 0, "near-duplicate Jaccard threshold (data.build.dedup.threshold)")
	cmd.Flags().BoolVar(&noDedup, "no-dedup", false, "keep duplicates (data.build.dedup.disabled)")
	cmd.Flags().Float64Var(&minScore, "min-score", 0, "quality cut-off (data.build.quality.min_score)")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "split seed (data.build.split.seed)")
	cmd.Flags().StringVar(&fromTranscripts, "from-transcripts", "", "run transcripts, questions and answers on this directory of local transcripts first")
	return cmd
}

func newDataAugmentCmd(df *dataFlags) *cobra.Command {
	lf := &llmFlags{}
	var (
		splits       []string
		paraphrases  int
		shortAnswers bool
	)
	cmd := &cobra.Command{
		Use:   "augment",
		Short: "Add question paraphrases and short-answer variants to the split files",
		Long: `Read {work_dir}/pairs.jsonl (written by build) and, for every pair in the
chosen splits (train by default), ask the LLM for question paraphrases and a
short answer. The split files are rewritten with each example followed by its
variants, marked with a "variant" field; a variant stays in its source's split.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, err := parseFailLimit(lf.maxFailed)
			if err != nil {
				return err
			}
			cfg, err := df.setup(cmd, func(c *data.PipelineConfig) {
				lf.apply(cmd, c)
				if len(splits) > 0 {
					c.Augment.Splits = splits
				}
				if cmd.Flags().Changed("paraphrases") {
					c.Augment.Paraphrases = paraphrases
				}
				if cmd.Flags().Changed("short-answers") {
					c.Augment.ShortAnswers = shortAnswers
				}
			})
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			rep, err := data.Augment(ctx, cfg, dataEnv(cmd), data.StageOptions{Force: lf.force})
			if err != nil {
				return err
			}
			return summarizeStage(cmd.OutOrStdout(), llmStageOutcome(&rep.StageReport), limit)
		},
	}
	addLLMFlags(cmd, lf)
	cmd.Flags().StringSliceVar(&splits, "splits", nil, "splits to augment (data.augment.splits, default train)")
	cmd.Flags().IntVar(&paraphrases, "paraphrases", 0, "question paraphrases per pair (data.augment.paraphrases)")
	cmd.Flags().BoolVar(&shortAnswers, "short-answers", true, "add a short-answer variant per pair (data.augment.short_answers)")
	return cmd
}

func newDataStatsCmd(df *dataFlags) *cobra.Command {
	var (
		asJSON    bool
		modelPath string
	)
	cmd := &cobra.Command{
		Use:   "stats FILE...",
		Short: "Statistics of chat, answers, pairs or questions JSONL files",
		Long: `Counts, character lengths (and token lengths with --model), formatting rates,
questions per video (for files with video ids) and duplicate questions, per file
and, for several files, in total (a duplicate across split files is a leak).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := df.setup(cmd, nil)
			if err != nil {
				return err
			}
			var tc data.TokenCounter
			if modelPath != "" {
				if err := resolveModelArg(cmd.Context(), &modelPath); err != nil {
					return err
				}
				if tc, err = tokenCounterFor(modelPath); err != nil {
					return err
				}
			}
			st, err := data.ComputeStats(args, tc, cfg.Build.Dedup, slog.Default())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return st.WriteTable(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&modelPath, "model", "", "model directory whose tokenizer counts tokens")
	return cmd
}

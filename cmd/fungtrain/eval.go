package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/eval"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

func init() { subcommands = append(subcommands, newEvalCmd) }

type evalFlags struct {
	model, adapter, dataDir, split, out, dtype, chatFormat string
	n, maxTokens, batch                                    int
	stops                                                  []string
	temp                                                   float64
	seed                                                   uint64
	judge                                                  bool
	judgeURL, judgeModel, judgeKeyEnv                      string
}

func newEvalCmd() *cobra.Command {
	var f evalFlags
	cmd := &cobra.Command{
		Use:   "eval --model M [--adapter A] --data DIR [--split test] [--n N] [--judge]",
		Short: "Score a model, and an adapter beside it, on held-out data",
		Long: `Compute loss and perplexity over a split, then generate answers to N
held-out questions with the base model and with the adapter (paired per
question, greedy unless --temp is set; --batch of them decoded together, with
the same answers as one by one) and score each for length, formatting,
EOS, refusals, meta-references and ROUGE-L against the reference. --judge adds
an LLM-judge score through an OpenAI-compatible endpoint. Writes eval.json and
eval.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runEval(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "model directory or .gguf file (required)")
	fl.StringVar(&f.adapter, "adapter", "", "adapter directory (fungtrain or mlx-lm format)")
	fl.StringVar(&f.dataDir, "data", "", "data directory with SPLIT.jsonl (required)")
	fl.StringVar(&f.split, "split", "test", "split to evaluate")
	fl.IntVar(&f.n, "n", 5, "held-out questions to generate answers for (0: none)")
	fl.IntVar(&f.maxTokens, "max-tokens", 384, "max tokens per answer")
	fl.IntVar(&f.batch, "batch", 16, "answers generated together in one batch (1: one at a time)")
	fl.StringArrayVar(&f.stops, "stop", nil, "end an answer where it contains this string (repeatable)")
	fl.Float64Var(&f.temp, "temp", 0, "sampling temperature (0: greedy)")
	fl.Uint64Var(&f.seed, "seed", 42, "sampling seed")
	fl.StringVar(&f.out, "out", "", "output directory (default: the adapter directory, or the current one)")
	fl.StringVar(&f.dtype, "dtype", "auto", "activation dtype: auto, bf16, f16 or f32")
	fl.StringVar(&f.chatFormat, "chat-format", "", "override chat template detection: llama3 or chatml")
	fl.BoolVar(&f.judge, "judge", false, "add an LLM-judge score")
	fl.StringVar(&f.judgeURL, "judge-url", "http://127.0.0.1:8080/v1", "judge endpoint (OpenAI-compatible)")
	fl.StringVar(&f.judgeModel, "judge-model", "gpt-4o-mini", "judge model")
	fl.StringVar(&f.judgeKeyEnv, "judge-key-env", "OPENAI_API_KEY", "environment variable holding the judge API key")
	return cmd
}

// readQuestions reads the first n chat examples of a split as questions,
// through the training data's schema (traindata.ReadFile); text examples
// have no question and are skipped.
func readQuestions(path string, n int) ([]eval.Question, error) {
	var qs []eval.Question
	if n <= 0 {
		return nil, nil
	}
	err := traindata.ReadFile(path, func(rec traindata.Record) error {
		if rec.Messages == nil {
			return nil
		}
		msgs := make([]eval.Message, len(rec.Messages))
		for i, m := range rec.Messages {
			msgs[i] = eval.Message{Role: m.Role, Content: m.Content}
		}
		q, err := eval.QuestionFromChat(fmt.Sprintf("%s:%d", filepath.Base(path), rec.Line), msgs)
		if err != nil {
			return err
		}
		if qs = append(qs, q); len(qs) == n {
			return traindata.ErrStop
		}
		return nil
	})
	return qs, err
}

// modelGenerator answers with a loaded model; before each answer it turns
// the adapter on or off, so one model serves both sides.
type modelGenerator struct {
	b       *llama.Bundle
	ad      *lora.Adapters
	enabled bool
	opts    llama.GenerateOptions
	stops   []string
}

// encode renders a question with the chat template, with the adapter
// switched to this side.
func (g *modelGenerator) encode(messages []eval.Message) ([]int32, error) {
	if g.ad != nil {
		g.ad.SetEnabled(g.enabled)
	}
	msgs := make([]llama.Message, len(messages))
	for i, m := range messages {
		msgs[i] = llama.Message{Role: m.Role, Content: m.Content}
	}
	ids, _, err := g.b.Tokenizer.EncodeChat(msgs, true)
	return ids, err
}

// answer collects one answer's text through the stop strings.
type answer struct {
	text   strings.Builder
	stream *llama.TextStream
	tokens int
}

// add takes a generated token and reports whether the answer goes on.
func (a *answer) add(id int32) bool {
	piece, hit := a.stream.Add(id)
	a.text.WriteString(piece)
	a.tokens++
	return !hit
}

func (a *answer) generation(hitStop bool, seconds float64) eval.Generation {
	a.text.WriteString(a.stream.Finish())
	return eval.Generation{Text: a.text.String(), Tokens: a.tokens, HitEOS: hitStop || a.stream.Stopped(), Seconds: seconds}
}

func (g *modelGenerator) Generate(ctx context.Context, messages []eval.Message) (eval.Generation, error) {
	if err := ctx.Err(); err != nil {
		return eval.Generation{}, err
	}
	ids, err := g.encode(messages)
	if err != nil {
		return eval.Generation{}, err
	}
	a := &answer{stream: g.b.Tokenizer.NewTextStream(g.stops)}
	t0 := time.Now()
	st, err := g.b.Model.Generate(ids, g.opts, func(id int32) bool { return a.add(id) && ctx.Err() == nil })
	if err != nil {
		return eval.Generation{}, err
	}
	return a.generation(st.HitStop, time.Since(t0).Seconds()), nil
}

// batchGenerator is a modelGenerator that answers all questions in
// batches of up to size sequences.
type batchGenerator struct {
	*modelGenerator
	size int
}

func (g *batchGenerator) GenerateBatch(ctx context.Context, prompts [][]eval.Message) ([]eval.Generation, error) {
	answers := make([]*answer, len(prompts))
	results := make([]llama.SeqResult, len(prompts))
	reqs := make([]llama.SeqRequest, len(prompts))
	for i, p := range prompts {
		ids, err := g.encode(p)
		if err != nil {
			return nil, fmt.Errorf("question %d: %w", i, err)
		}
		a := &answer{stream: g.b.Tokenizer.NewTextStream(g.stops)}
		answers[i] = a
		reqs[i] = llama.SeqRequest{Prompt: ids, MaxTokens: g.opts.MaxTokens, Sample: g.opts.Sample, StopIDs: g.opts.StopIDs,
			Ctx: ctx, Emit: a.add, Done: func(r llama.SeqResult) { results[i] = r }}
	}
	t0 := time.Now()
	if err := g.b.Model.GenerateBatch(reqs, llama.BatchOptions{MaxBatch: g.size}); err != nil {
		return nil, err
	}
	share := time.Since(t0).Seconds() / float64(len(prompts))
	out := make([]eval.Generation, len(prompts))
	for i, r := range results {
		if r.Err != nil {
			return nil, fmt.Errorf("question %d: %w", i, r.Err)
		}
		out[i] = answers[i].generation(r.HitStopToken, share)
	}
	return out, nil
}

func runEval(cmd *cobra.Command, f evalFlags) error {
	if f.model == "" || f.dataDir == "" {
		return fmt.Errorf("eval: --model and --data are required")
	}
	if f.batch < 1 {
		return fmt.Errorf("eval: --batch must be at least 1, got %d", f.batch)
	}
	splitPath := filepath.Join(f.dataDir, f.split+".jsonl")
	questions, err := readQuestions(splitPath, f.n)
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	out := f.out
	if out == "" {
		out = f.adapter
		if out == "" {
			out = "."
		}
	}
	var judge eval.Grader
	judgeModel := ""
	if f.judge {
		j, err := eval.NewJudge(eval.JudgeConfig{BaseURL: f.judgeURL, Model: f.judgeModel, APIKeyEnv: f.judgeKeyEnv}, nil)
		if err != nil {
			return err
		}
		judge, judgeModel = j, f.judgeModel
	}
	modelDir := f.model
	if err := resolveModelArg(cmd.Context(), &modelDir); err != nil {
		return err
	}
	var res *eval.Result
	err = mlx.Do(func() error {
		b, err := llama.Open(modelDir, llama.LoadOptions{Dtype: f.dtype, ChatFormat: f.chatFormat})
		if err != nil {
			return err
		}
		defer b.Close()
		var ad *lora.Adapters
		if f.adapter != "" {
			if ad, err = lora.Load(b.Model, f.adapter); err != nil {
				return err
			}
		}
		split, err := traindata.LoadSplit(traindata.Config{Dir: f.dataDir, MaskPrompt: true, MaxSeqLength: 4096}, f.split, b.Tokenizer)
		if err != nil {
			return err
		}
		lossOf := func(enabled bool) (*eval.LossStats, error) {
			if ad != nil {
				ad.SetEnabled(enabled)
			}
			l, n, err := lora.EvaluateLoss(b.Model, split, 1, 0, padID(b))
			if err != nil {
				return nil, err
			}
			return &eval.LossStats{Loss: l, Perplexity: math.Exp(l), Tokens: n}, nil
		}
		gen := llama.GenerateOptions{MaxTokens: f.maxTokens, StopIDs: b.StopIDs,
			Sample: llama.SampleOptions{Temp: f.temp, Seed: f.seed}}
		side := func(enabled bool) eval.Generator {
			g := &modelGenerator{b: b, ad: ad, enabled: enabled, opts: gen, stops: f.stops}
			if f.batch > 1 {
				return &batchGenerator{modelGenerator: g, size: f.batch}
			}
			return g
		}
		base := side(false)
		var adapter eval.Generator
		if ad != nil {
			adapter = side(true)
		}
		generation := map[string]any{"max_tokens": f.maxTokens, "temp": f.temp, "seed": f.seed, "batch": f.batch}
		if len(f.stops) > 0 {
			generation["stop"] = f.stops
		}
		res, err = eval.RunPaired(cmd.Context(), questions, base, adapter, eval.Options{
			Model: f.model, Adapter: f.adapter, Split: f.split, Judge: judge, JudgeModel: judgeModel,
			Generation: generation, Logger: slog.Default()})
		if err != nil {
			return err
		}
		if res.Loss.Base, err = lossOf(false); err != nil {
			return err
		}
		if ad != nil {
			if res.Loss.Adapter, err = lossOf(true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	jsonPath, mdPath := filepath.Join(out, "eval.json"), filepath.Join(out, "eval.md")
	if err := res.WriteJSON(jsonPath); err != nil {
		return err
	}
	if err := res.WriteMarkdown(mdPath); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "%s loss: base %.4f (ppl %.2f)", f.split, res.Loss.Base.Loss, res.Loss.Base.Perplexity)
	if res.Loss.Adapter != nil {
		fmt.Fprintf(w, ", adapter %.4f (ppl %.2f)", res.Loss.Adapter.Loss, res.Loss.Adapter.Perplexity)
	}
	fmt.Fprintf(w, "\nwrote %s and %s\n", jsonPath, mdPath)
	return nil
}

package eval

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Generation is the output of one generation call.
type Generation struct {
	// Text is the generated answer, without special tokens.
	Text string `json:"text"`
	// Tokens is the number of generated tokens.
	Tokens int `json:"tokens"`
	// HitEOS is true when generation stopped at an end-of-sequence token and
	// false when it ran out at the max-token limit.
	HitEOS bool `json:"hit_eos"`
	// Seconds is the wall time of the generation; for answers generated in
	// a batch, this answer's share of the batch's wall time (so the seconds
	// of a side add up to its wall time).
	Seconds float64 `json:"seconds"`
}

// Generator generates an assistant answer to a chat prompt. Implementations
// decide the sampling (greedy or seeded) and the max-token limit.
type Generator interface {
	Generate(ctx context.Context, messages []Message) (Generation, error)
}

// BatchGenerator is a Generator that can also answer many prompts at once
// (a batched model). [RunPaired] hands it all the questions of its side in
// one call; the answers must be those Generate would give one by one.
type BatchGenerator interface {
	Generator
	// GenerateBatch answers every prompt; the result has one Generation
	// per prompt, in order.
	GenerateBatch(ctx context.Context, prompts [][]Message) ([]Generation, error)
}

// GeneratorFunc adapts a function to [Generator].
type GeneratorFunc func(ctx context.Context, messages []Message) (Generation, error)

// Generate calls f.
func (f GeneratorFunc) Generate(ctx context.Context, messages []Message) (Generation, error) {
	return f(ctx, messages)
}

// Question is one held-out prompt with its reference answer.
type Question struct {
	// ID identifies the question in the split (for example "test-17").
	ID string `json:"id"`
	// Messages is the prompt: system and user turns, without the reference.
	Messages []Message `json:"messages"`
	// Reference is the reference assistant answer.
	Reference string `json:"reference"`
}

// UserText returns the content of the last user message, which is how a
// question is shown in reports; it is empty when there is none.
func (q Question) UserText() string {
	for i := len(q.Messages) - 1; i >= 0; i-- {
		if q.Messages[i].Role == "user" {
			return q.Messages[i].Content
		}
	}
	return ""
}

// QuestionFromChat turns a chat example whose last message is the assistant's
// answer into a Question: the earlier messages are the prompt and the last
// one the reference. It fails when the last message is not from the
// assistant or no user message precedes it.
func QuestionFromChat(id string, messages []Message) (Question, error) {
	n := len(messages)
	if n == 0 || messages[n-1].Role != "assistant" {
		return Question{}, fmt.Errorf("eval: example %s: last message is not the assistant's answer", id)
	}
	q := Question{ID: id, Messages: append([]Message(nil), messages[:n-1]...), Reference: messages[n-1].Content}
	if q.UserText() == "" {
		return Question{}, fmt.Errorf("eval: example %s: no user message before the answer", id)
	}
	return q, nil
}

// ScoredGeneration is one generation together with its scores.
type ScoredGeneration struct {
	Generation
	Scores Scores `json:"scores"`
	// Judge is the LLM-judge score; nil when no judge ran or it failed.
	Judge *JudgeScore `json:"judge,omitempty"`
	// JudgeError says why the judge gave no score, when it was asked to.
	JudgeError string `json:"judge_error,omitempty"`
}

// Sample is one question with the paired base and adapter answers. Either
// side is nil when that model was not evaluated.
type Sample struct {
	ID        string            `json:"id"`
	Question  string            `json:"question"`
	Reference string            `json:"reference"`
	Base      *ScoredGeneration `json:"base,omitempty"`
	Adapter   *ScoredGeneration `json:"adapter,omitempty"`
}

// LossStats is the mean token loss of one model over a split.
type LossStats struct {
	// Loss is the mean cross-entropy per target token, in nats.
	Loss float64 `json:"loss"`
	// Perplexity is exp(Loss).
	Perplexity float64 `json:"perplexity"`
	// Tokens is the number of target tokens the mean is over.
	Tokens int `json:"tokens"`
}

// Loss holds the loss of the base model and of the adapter over the split.
// It is filled by the caller of [RunPaired]; nil means not computed.
type Loss struct {
	Base    *LossStats `json:"base,omitempty"`
	Adapter *LossStats `json:"adapter,omitempty"`
}

// SideSummary aggregates the scores of one side (base or adapter). Rates are
// fractions in [0, 1]; means are over the N samples of that side.
type SideSummary struct {
	N               int     `json:"n"`
	MeanRougeL      float64 `json:"mean_rouge_l"`
	MeanLengthRatio float64 `json:"mean_length_ratio"`
	MeanWords       float64 `json:"mean_words"`
	// FormatRate is the fraction of answers whose formatting matches the
	// reference's ([Scores.FormatMatch]).
	FormatRate float64 `json:"format_rate"`
	// BoldRate and ListRate are the fractions of answers with bold and with
	// at least one list item.
	BoldRate    float64 `json:"bold_rate"`
	ListRate    float64 `json:"list_rate"`
	EOSRate     float64 `json:"eos_rate"`
	RefusalRate float64 `json:"refusal_rate"`
	// MetaRefRate is the fraction of answers with at least one
	// meta-reference.
	MetaRefRate float64 `json:"meta_ref_rate"`
	// MeanJudge is the mean judge score over the JudgeN answers that got
	// one; nil when none did.
	MeanJudge *float64 `json:"mean_judge,omitempty"`
	JudgeN    int      `json:"judge_n"`
	// TokensPerSec is total generated tokens over total generation seconds.
	TokensPerSec float64 `json:"tokens_per_sec"`
}

// Summary aggregates a [Result] per side; a side is nil when it was not run.
type Summary struct {
	Base    *SideSummary `json:"base,omitempty"`
	Adapter *SideSummary `json:"adapter,omitempty"`
}

// Result is the outcome of an evaluation run: what was evaluated, the loss,
// every sample and the summary. It is what eval.json holds.
type Result struct {
	// Model is the base model path or name; Adapter the adapter path, empty
	// when only the base model was evaluated.
	Model   string `json:"model"`
	Adapter string `json:"adapter,omitempty"`
	// Split is the data split the questions came from ("test", "valid").
	Split string `json:"split"`
	// N is the number of questions.
	N int `json:"n"`
	// Created is when the run finished, RFC 3339.
	Created string `json:"created,omitempty"`
	// Generation describes the sampling settings, as given by the caller.
	Generation map[string]any `json:"generation,omitempty"`
	// JudgeModel is the judge's model name when a judge ran.
	JudgeModel string   `json:"judge_model,omitempty"`
	Loss       Loss     `json:"loss"`
	Samples    []Sample `json:"samples"`
	Summary    Summary  `json:"summary"`
}

// Grader scores an answer with an LLM judge. [*Judge] implements it.
type Grader interface {
	Grade(ctx context.Context, question, reference, answer string) (*JudgeScore, error)
}

// Options configure [RunPaired]. All fields are optional.
type Options struct {
	// Model, Adapter and Split are recorded in the result.
	Model, Adapter, Split string
	// Generation is recorded in the result (max tokens, temperature, seed...).
	Generation map[string]any
	// Judge, when set, grades every answer. A judge failure is recorded in
	// the sample and logged; it does not fail the run.
	Judge Grader
	// JudgeModel is recorded in the result when Judge is set.
	JudgeModel string
	// Logger receives progress; nil means slog.Default().
	Logger *slog.Logger
	// Now returns the time recorded as Result.Created; nil means time.Now.
	Now func() time.Time
}

// RunPaired generates an answer to every question with base and with
// adapter, paired per question (base first), or all of a side's answers in
// one call when its generator is a [BatchGenerator], scores both against the
// reference and summarizes. Either generator may be nil to evaluate one
// side only, but not both. A generation error stops the run and is returned
// wrapped with the question's ID; so does a cancelled ctx. The loss fields
// of the result are left for the caller to fill.
func RunPaired(ctx context.Context, questions []Question, base, adapter Generator, opts Options) (*Result, error) {
	if base == nil && adapter == nil {
		return nil, errors.New("eval: RunPaired needs a base or an adapter generator")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	res := &Result{
		Model:      opts.Model,
		Adapter:    opts.Adapter,
		Split:      opts.Split,
		N:          len(questions),
		Generation: opts.Generation,
		Samples:    make([]Sample, 0, len(questions)),
	}
	if opts.Judge != nil {
		res.JudgeModel = opts.JudgeModel
	}
	sides := []struct {
		name    string
		gen     Generator
		answers []Generation // precomputed by a BatchGenerator
	}{{name: "base", gen: base}, {name: "adapter", gen: adapter}}
	for i := range sides {
		bg, ok := sides[i].gen.(BatchGenerator)
		if !ok || len(questions) == 0 {
			continue
		}
		prompts := make([][]Message, len(questions))
		for j, q := range questions {
			prompts[j] = append([]Message(nil), q.Messages...)
		}
		log.Info("eval generating", "side", sides[i].name, "questions", len(questions))
		answers, err := bg.GenerateBatch(ctx, prompts)
		if err != nil {
			return nil, fmt.Errorf("eval: %s answers: %w", sides[i].name, err)
		}
		if len(answers) != len(questions) {
			return nil, fmt.Errorf("eval: %s answers: %d answers for %d questions", sides[i].name, len(answers), len(questions))
		}
		sides[i].answers = answers
	}
	for i, q := range questions {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eval: stopped before question %d (%s): %w", i, q.ID, err)
		}
		s := Sample{ID: q.ID, Question: q.UserText(), Reference: q.Reference}
		dst := []**ScoredGeneration{&s.Base, &s.Adapter}
		for k, side := range sides {
			if side.gen == nil {
				continue
			}
			var pre *Generation
			if side.answers != nil {
				pre = &side.answers[i]
			}
			sg, err := generateAndScore(ctx, side.gen, pre, q, s.Question, opts.Judge, log)
			if err != nil {
				return nil, fmt.Errorf("eval: question %d (%s), %s: %w", i, q.ID, side.name, err)
			}
			*dst[k] = sg
			log.Debug("eval generation", "question", q.ID, "side", side.name,
				"tokens", sg.Tokens, "hit_eos", sg.HitEOS, "rouge_l", sg.Scores.RougeL.F1)
		}
		res.Samples = append(res.Samples, s)
		log.Info("eval progress", "done", i+1, "total", len(questions))
	}
	res.Summary = Summarize(res.Samples)
	res.Created = now().UTC().Format(time.RFC3339)
	return res, nil
}

// generateAndScore generates an answer (unless pre holds it already) and
// scores it.
func generateAndScore(ctx context.Context, g Generator, pre *Generation, q Question, question string, judge Grader, log *slog.Logger) (*ScoredGeneration, error) {
	var gen Generation
	if pre != nil {
		gen = *pre
	} else {
		msgs := make([]Message, len(q.Messages))
		copy(msgs, q.Messages)
		var err error
		if gen, err = g.Generate(ctx, msgs); err != nil {
			return nil, err
		}
	}
	sg := &ScoredGeneration{Generation: gen, Scores: Score(gen.Text, q.Reference, gen.HitEOS)}
	if judge != nil {
		js, err := judge.Grade(ctx, question, q.Reference, gen.Text)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			sg.JudgeError = err.Error()
			log.Warn("eval judge failed", "question", q.ID, "err", err)
		} else {
			sg.Judge = js
		}
	}
	return sg, nil
}

// Summarize aggregates samples per side. A side with no samples is nil.
func Summarize(samples []Sample) Summary {
	var base, adapter []*ScoredGeneration
	for _, s := range samples {
		if s.Base != nil {
			base = append(base, s.Base)
		}
		if s.Adapter != nil {
			adapter = append(adapter, s.Adapter)
		}
	}
	return Summary{Base: summarizeSide(base), Adapter: summarizeSide(adapter)}
}

func summarizeSide(gs []*ScoredGeneration) *SideSummary {
	if len(gs) == 0 {
		return nil
	}
	var s SideSummary
	var judgeSum, secs float64
	tokens := 0
	rate := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, g := range gs {
		sc := g.Scores
		s.MeanRougeL += sc.RougeL.F1
		s.MeanLengthRatio += sc.LengthRatio
		s.MeanWords += float64(sc.Words)
		s.FormatRate += rate(sc.FormatMatch)
		s.BoldRate += rate(sc.Format.HasBold())
		s.ListRate += rate(sc.Format.HasList())
		s.EOSRate += rate(sc.HitEOS)
		s.RefusalRate += rate(sc.Refusal)
		s.MetaRefRate += rate(len(sc.MetaRefs) > 0)
		if g.Judge != nil {
			judgeSum += g.Judge.Score
			s.JudgeN++
		}
		tokens += g.Tokens
		secs += g.Seconds
	}
	n := float64(len(gs))
	s.N = len(gs)
	for _, p := range []*float64{&s.MeanRougeL, &s.MeanLengthRatio, &s.MeanWords, &s.FormatRate,
		&s.BoldRate, &s.ListRate, &s.EOSRate, &s.RefusalRate, &s.MetaRefRate} {
		*p /= n
	}
	if s.JudgeN > 0 {
		m := judgeSum / float64(s.JudgeN)
		s.MeanJudge = &m
	}
	if secs > 0 {
		s.TokensPerSec = float64(tokens) / secs
	}
	return &s
}

package eval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// JudgeConfig configures a [Judge]. It is meant to be part of the resolved
// config; it holds the NAME of the environment variable with the API key,
// never the key itself.
type JudgeConfig struct {
	// BaseURL is the OpenAI-compatible API root, e.g.
	// "http://127.0.0.1:8080/v1".
	BaseURL string `json:"base_url" yaml:"base_url"`
	// Model is the judge model name sent in each request.
	Model string `json:"model" yaml:"model"`
	// APIKeyEnv names the environment variable holding the API key. Empty
	// means the endpoint needs no key.
	APIKeyEnv string `json:"api_key_env,omitempty" yaml:"api_key_env,omitempty"`
	// MaxAttempts bounds the requests per answer (first try included);
	// 0 means 3.
	MaxAttempts int `json:"max_attempts,omitempty" yaml:"max_attempts,omitempty"`
	// Timeout bounds each request; 0 means 60 s.
	Timeout time.Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// Backoff is the wait before the second attempt, doubled for each later
	// one; 0 means 1 s.
	Backoff time.Duration `json:"backoff,omitempty" yaml:"backoff,omitempty"`
	// JSONMode asks the server for response_format json_object. Not every
	// OpenAI-compatible server supports it, so it is off by default; the
	// prompt asks for JSON either way and the answer is validated.
	JSONMode bool `json:"json_mode,omitempty" yaml:"json_mode,omitempty"`
}

// JudgeScore is an LLM judge's verdict on one answer.
type JudgeScore struct {
	// Style is how well the answer matches the reference's tone, length and
	// formatting, 1 to 10.
	Style int `json:"style"`
	// Faithfulness is how well the answer agrees with the reference's
	// content without contradicting or inventing, 1 to 10.
	Faithfulness int `json:"faithfulness"`
	// Score is the mean of Style and Faithfulness.
	Score float64 `json:"score"`
	// Reason is the judge's one-sentence justification, truncated.
	Reason string `json:"reason,omitempty"`
	// Attempts is how many requests it took.
	Attempts int `json:"attempts"`
}

// Judge grades answers through an OpenAI-compatible chat completions API.
// It is safe for sequential use; the API key is held only inside the
// client and never logged or written.
type Judge struct {
	client      *openai.Client
	model       string
	maxAttempts int
	timeout     time.Duration
	backoff     time.Duration
	jsonMode    bool
}

// NewJudge builds a Judge from cfg, reading the API key from the
// environment variable cfg.APIKeyEnv. httpClient may be nil.
func NewJudge(cfg JudgeConfig, httpClient *http.Client) (*Judge, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("eval: judge base_url is empty")
	}
	if cfg.Model == "" {
		return nil, errors.New("eval: judge model is empty")
	}
	key := ""
	if cfg.APIKeyEnv != "" {
		key = os.Getenv(cfg.APIKeyEnv)
		if key == "" {
			return nil, fmt.Errorf("eval: judge api_key_env: environment variable %s is empty or unset", cfg.APIKeyEnv)
		}
	}
	oc := openai.DefaultConfig(key)
	oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if httpClient != nil {
		oc.HTTPClient = httpClient
	}
	j := &Judge{
		client:      openai.NewClientWithConfig(oc),
		model:       cfg.Model,
		maxAttempts: cfg.MaxAttempts,
		timeout:     cfg.Timeout,
		backoff:     cfg.Backoff,
		jsonMode:    cfg.JSONMode,
	}
	if j.maxAttempts <= 0 {
		j.maxAttempts = 3
	}
	if j.timeout <= 0 {
		j.timeout = 60 * time.Second
	}
	if j.backoff <= 0 {
		j.backoff = time.Second
	}
	return j, nil
}

// Model returns the judge model name.
func (j *Judge) Model() string { return j.model }

const judgeSystemPrompt = `You are a strict evaluator of answers produced by a fine-tuned assistant.
Compare the ANSWER with the REFERENCE answer to the QUESTION and rate two things, each an integer from 1 (worst) to 10 (best):
- "style": how closely the answer matches the reference's voice, length and formatting (bold, lists, paragraphs). Mentions of "the transcript", "the video" or "the speaker" are bad style.
- "faithfulness": how well the answer agrees with the reference's content, without contradicting it or inventing facts.
Reply with only a JSON object, no other text: {"style": <1-10>, "faithfulness": <1-10>, "reason": "<one short sentence>"}`

// maxReasonRunes bounds the stored judge reason.
const maxReasonRunes = 300

// Grade asks the judge to score answer against reference for question.
// Server errors (5xx, 429), transport errors and replies that are not a
// valid verdict are retried up to the configured attempts with doubling
// backoff; other client errors (4xx) are returned at once.
func (j *Judge) Grade(ctx context.Context, question, reference, answer string) (*JudgeScore, error) {
	req := openai.ChatCompletionRequest{
		Model: j.model,
		Messages: []openai.ChatCompletionMessage{
			{Role: openai.ChatMessageRoleSystem, Content: judgeSystemPrompt},
			{Role: openai.ChatMessageRoleUser, Content: "QUESTION:\n" + question +
				"\n\nREFERENCE:\n" + reference + "\n\nANSWER:\n" + answer},
		},
		MaxTokens: 300,
	}
	if j.jsonMode {
		req.ResponseFormat = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject}
	}
	var errs []error
	wait := j.backoff
	for attempt := 1; attempt <= j.maxAttempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("eval: judge: %w (after %d attempts: %w)", ctx.Err(), attempt-1, errors.Join(errs...))
			case <-t.C:
			}
			wait *= 2
		}
		score, retry, err := j.once(ctx, req)
		if err == nil {
			score.Attempts = attempt
			return score, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("eval: judge %s: %w", j.model, errors.Join(errs...))
}

// once makes one request and reports whether a failure is worth retrying.
func (j *Judge) once(ctx context.Context, req openai.ChatCompletionRequest) (*JudgeScore, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	resp, err := j.client.CreateChatCompletion(ctx, req)
	if err != nil {
		return nil, retryable(err), err
	}
	if len(resp.Choices) == 0 {
		return nil, true, errors.New("reply has no choices")
	}
	s, err := ParseJudgeReply(resp.Choices[0].Message.Content)
	if err != nil {
		return nil, true, err
	}
	return s, false, nil
}

// retryable reports whether err from the client is a server-side or
// transport failure (worth retrying) rather than a client error such as a
// bad key or an unknown model.
func retryable(err error) bool {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		return apiErr.HTTPStatusCode >= 500 || apiErr.HTTPStatusCode == http.StatusTooManyRequests
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		return reqErr.HTTPStatusCode >= 500 || reqErr.HTTPStatusCode == http.StatusTooManyRequests
	}
	return true
}

// ParseJudgeReply extracts and validates a verdict from a judge's reply. It
// accepts the JSON object alone or surrounded by text (such as a ```json
// fence); style and faithfulness must be integers from 1 to 10.
func ParseJudgeReply(content string) (*JudgeScore, error) {
	start, end := strings.Index(content, "{"), strings.LastIndex(content, "}")
	if start < 0 || end < start {
		return nil, fmt.Errorf("reply has no JSON object: %q", clip(content, 120))
	}
	var raw struct {
		Style        *float64 `json:"style"`
		Faithfulness *float64 `json:"faithfulness"`
		Reason       string   `json:"reason"`
	}
	if err := json.Unmarshal([]byte(content[start:end+1]), &raw); err != nil {
		return nil, fmt.Errorf("reply is not valid JSON: %w: %q", err, clip(content, 120))
	}
	style, err := rating("style", raw.Style)
	if err != nil {
		return nil, err
	}
	faith, err := rating("faithfulness", raw.Faithfulness)
	if err != nil {
		return nil, err
	}
	return &JudgeScore{
		Style:        style,
		Faithfulness: faith,
		Score:        float64(style+faith) / 2,
		Reason:       clip(strings.TrimSpace(raw.Reason), maxReasonRunes),
	}, nil
}

func rating(name string, v *float64) (int, error) {
	if v == nil {
		return 0, fmt.Errorf("reply lacks %q", name)
	}
	if *v != math.Trunc(*v) || *v < 1 || *v > 10 {
		return 0, fmt.Errorf("reply %q = %v, want an integer from 1 to 10", name, *v)
	}
	return int(*v), nil
}

// clip returns s cut to at most n runes, with "…" when cut.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

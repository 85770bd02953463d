package data

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	openai "github.com/sashabaranov/go-openai"
)

// llmClient wraps go-openai with the retry policy of the pipeline:
//   - HTTP faults (network errors, timeouts, cut bodies, 429, 5xx) are
//     retried by the retryDoer under the client;
//   - unusable replies (malformed JSON, failed validation, empty content, a
//     stream cut before its finish reason) are retried here, at most
//     llm.max_invalid_retries times;
//   - a server that rejects response_format json_schema (HTTP 400/422) is
//     asked again with json_object, then with plain prompting, and the mode
//     that worked is kept for the rest of the stage.
type llmClient struct {
	client *openai.Client
	cfg    LLMConfig
	doer   *retryDoer
	red    *redactor
	log    *slog.Logger

	mu   sync.Mutex
	mode string // current JSON mode

	calls        atomic.Int64
	invalidRetry atomic.Int64
}

func newLLMClient(cfg LLMConfig, env Env, log *slog.Logger) (*llmClient, error) {
	if cfg.Model == "" {
		return nil, errors.New("data.llm.model is empty")
	}
	if cfg.BaseURL == "" {
		return nil, errors.New("data.llm.base_url is empty")
	}
	key, err := env.apiKey(cfg.APIKeyEnv, "llm.api_key_env", false)
	if err != nil {
		return nil, err
	}
	if key == "" && cfg.APIKeyEnv != "" {
		log.Warn("no LLM API key: the environment variable is not set; sending requests without one", "env", cfg.APIKeyEnv)
	}
	red := newRedactor(key)
	doer := newRetryDoer("llm", cfg.HTTP, env, red)
	oc := openai.DefaultConfig(key)
	oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	oc.HTTPClient = doer
	mode := cfg.JSONMode
	if mode == JSONModeAuto || mode == "" {
		mode = JSONModeSchema
	}
	return &llmClient{client: openai.NewClientWithConfig(oc), cfg: cfg, doer: doer, red: red, log: log, mode: mode}, nil
}

// llmStats are the request figures of a stage, for its report.
type llmStats struct {
	Calls          int64  `json:"llm_calls"`
	InvalidRetries int64  `json:"llm_invalid_reply_retries"`
	HTTPAttempts   int64  `json:"http_attempts"`
	HTTPRetries    int64  `json:"http_retries"`
	JSONMode       string `json:"json_mode,omitempty"`
}

func (l *llmClient) stats(json bool) llmStats {
	s := llmStats{Calls: l.calls.Load(), InvalidRetries: l.invalidRetry.Load(),
		HTTPAttempts: l.doer.attempts.Load(), HTTPRetries: l.doer.retries.Load()}
	if json {
		s.JSONMode = l.currentMode()
	}
	return s
}

func (l *llmClient) currentMode() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode
}

// lowerMode records that mode worked where the current one was rejected.
func (l *llmClient) lowerMode(mode string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if modeRank(mode) > modeRank(l.mode) {
		l.log.Info("the server rejected the stricter response_format; using a looser one from now on", "from", l.mode, "to", mode)
		l.mode = mode
	}
}

func modeRank(m string) int {
	switch m {
	case JSONModeSchema:
		return 0
	case JSONModeObject:
		return 1
	}
	return 2
}

func nextMode(m string) string {
	switch m {
	case JSONModeSchema:
		return JSONModeObject
	case JSONModeObject:
		return JSONModePrompt
	}
	return ""
}

// errInvalidReply marks a reply that is retried as unusable.
var errInvalidReply = errors.New("unusable reply")

// FailureKind tells how an item failed, for reports.
type failureClass string

const (
	failTransient failureClass = "transient" // HTTP retries spent; rerun to retry
	failInvalid   failureClass = "invalid"   // unusable replies every time
	failRejected  failureClass = "rejected"  // the server refused the request (4xx)
)

// llmError is the error of an item that failed.
type llmError struct {
	class failureClass
	err   error
}

func (e *llmError) Error() string { return string(e.class) + ": " + e.err.Error() }
func (e *llmError) Unwrap() error { return e.err }

func httpStatusOf(err error) int {
	var ae *openai.APIError
	if errors.As(err, &ae) {
		return ae.HTTPStatusCode
	}
	var re *openai.RequestError
	if errors.As(err, &re) {
		return re.HTTPStatusCode
	}
	return 0
}

// classify turns an error of one completion into what to do about it.
func (l *llmClient) classify(ctx context.Context, err error) (retryInvalid bool, out error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	var te *transportError
	switch status := httpStatusOf(err); {
	case errors.As(err, &te):
		return false, &llmError{failTransient, l.red.err(err)}
	case status != 0 && retryableStatus(status):
		return false, &llmError{failTransient, l.red.err(err)}
	case status != 0:
		return false, &llmError{failRejected, l.red.err(err)}
	}
	return true, l.red.err(err)
}

func isFormatRejection(err error) bool {
	switch httpStatusOf(err) {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusUnsupportedMediaType, http.StatusNotImplemented:
		return true
	}
	return false
}

// completion is one reply.
type completion struct {
	content string
	finish  openai.FinishReason
}

// complete sends one request, streamed or not.
func (l *llmClient) complete(ctx context.Context, msgs []openai.ChatCompletionMessage, rf *openai.ChatCompletionResponseFormat) (completion, error) {
	l.calls.Add(1)
	req := openai.ChatCompletionRequest{
		Model:          l.cfg.Model,
		Messages:       msgs,
		Temperature:    l.cfg.Temperature,
		MaxTokens:      l.cfg.MaxTokens,
		Seed:           l.cfg.Seed,
		ResponseFormat: rf,
	}
	if !l.cfg.Stream {
		resp, err := l.client.CreateChatCompletion(ctx, req)
		if err != nil {
			return completion{}, err
		}
		if len(resp.Choices) == 0 {
			return completion{}, fmt.Errorf("%w: no choices", errInvalidReply)
		}
		c := resp.Choices[0]
		return completion{content: c.Message.Content, finish: c.FinishReason}, nil
	}
	stream, err := l.client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return completion{}, err
	}
	defer stream.Close()
	var sb strings.Builder
	var finish openai.FinishReason
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return completion{}, fmt.Errorf("%w: stream: %v", errInvalidReply, err)
		}
		for _, ch := range chunk.Choices {
			if ch.Index != 0 {
				continue
			}
			sb.WriteString(ch.Delta.Content)
			if ch.FinishReason != "" {
				finish = ch.FinishReason
			}
		}
	}
	if finish == "" {
		return completion{}, fmt.Errorf("%w: stream ended without a finish reason (%d characters received)", errInvalidReply, sb.Len())
	}
	return completion{content: sb.String(), finish: finish}, nil
}

// jsonSchemaNote is added to the system prompt when the server cannot
// enforce the schema itself.
const jsonSchemaNote = "\n\nReply with only a JSON object, no other text, matching this JSON schema:\n"

// chatJSON asks for a JSON reply matching schema and hands the JSON text to
// parse, which validates it. Unusable replies are retried.
func (l *llmClient) chatJSON(ctx context.Context, system, user, schemaName string, schema json.RawMessage, parse func([]byte) error) error {
	mode := l.currentMode()
	var lastErr error
	for try := 0; try <= l.cfg.MaxInvalidRetries; {
		sys := system
		var rf *openai.ChatCompletionResponseFormat
		switch mode {
		case JSONModeSchema:
			rf = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONSchema,
				JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{Name: schemaName, Schema: schema, Strict: true}}
		case JSONModeObject:
			rf = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject}
			sys += jsonSchemaNote + string(schema)
		default:
			sys += jsonSchemaNote + string(schema)
		}
		msgs := []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleSystem, Content: sys}, {Role: openai.ChatMessageRoleUser, Content: user}}
		c, err := l.complete(ctx, msgs, rf)
		if err != nil {
			if ctx.Err() == nil && isFormatRejection(err) && l.cfg.JSONMode == JSONModeAuto && nextMode(mode) != "" {
				l.log.Debug("response_format rejected; trying a looser one", "mode", mode, "error", l.red.str(err.Error()))
				mode = nextMode(mode)
				continue // not an unusable reply: try does not advance
			}
			retry, cerr := l.classify(ctx, err)
			if !retry {
				return cerr
			}
			lastErr = cerr
		} else if c.finish == openai.FinishReasonLength {
			lastErr = fmt.Errorf("%w: reply cut at max_tokens", errInvalidReply)
		} else if err := parse(extractJSON(c.content)); err != nil {
			lastErr = fmt.Errorf("%w: %v", errInvalidReply, err)
		} else {
			if mode != l.currentMode() {
				l.lowerMode(mode)
			}
			return nil
		}
		try++
		if try <= l.cfg.MaxInvalidRetries {
			l.invalidRetry.Add(1)
			l.log.Debug("unusable reply, retrying", "try", try, "error", l.red.str(lastErr.Error()))
		}
	}
	return &llmError{failInvalid, fmt.Errorf("no usable reply in %d tries: %w", l.cfg.MaxInvalidRetries+1, lastErr)}
}

// chatText asks for free text and hands it to check, which returns the
// cleaned text or an error that makes the reply unusable. The reply is
// flagged truncated when the server stopped at max_tokens.
func (l *llmClient) chatText(ctx context.Context, system, user string, check func(string) (string, error)) (string, bool, error) {
	var lastErr error
	for try := 0; try <= l.cfg.MaxInvalidRetries; try++ {
		if try > 0 {
			l.invalidRetry.Add(1)
			l.log.Debug("unusable reply, retrying", "try", try, "error", l.red.str(lastErr.Error()))
		}
		var msgs []openai.ChatCompletionMessage
		if system != "" {
			msgs = append(msgs, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleSystem, Content: system})
		}
		msgs = append(msgs, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: user})
		c, err := l.complete(ctx, msgs, nil)
		if err != nil {
			retry, cerr := l.classify(ctx, err)
			if !retry {
				return "", false, cerr
			}
			lastErr = cerr
			continue
		}
		text, err := check(c.content)
		if err != nil {
			lastErr = fmt.Errorf("%w: %v", errInvalidReply, err)
			continue
		}
		return text, c.finish == openai.FinishReasonLength, nil
	}
	return "", false, &llmError{failInvalid, fmt.Errorf("no usable reply in %d tries: %w", l.cfg.MaxInvalidRetries+1, lastErr)}
}

// extractJSON strips code fences and text around the outermost JSON object.
func extractJSON(s string) []byte {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "```") {
		s = strings.TrimPrefix(s, "```")
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		s = strings.TrimSuffix(strings.TrimSpace(s), "```")
	}
	if json.Valid([]byte(s)) {
		return []byte(s)
	}
	if i, j := strings.IndexByte(s, '{'), strings.LastIndexByte(s, '}'); i >= 0 && j > i {
		return []byte(s[i : j+1])
	}
	return []byte(s)
}

// stripFences removes a code fence wrapped around a whole markdown reply.
func stripFences(s string) string {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "```") || !strings.HasSuffix(t, "```") || len(t) < 6 {
		return t
	}
	first, rest, ok := strings.Cut(t, "\n")
	if !ok {
		return t
	}
	lang := strings.TrimSpace(strings.TrimPrefix(first, "```"))
	if lang != "" && lang != "markdown" && lang != "md" {
		return t
	}
	return strings.TrimSpace(strings.TrimSuffix(rest, "```"))
}

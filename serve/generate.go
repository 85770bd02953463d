package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	crand "crypto/rand"

	"github.com/fungtrain/fungtrain/llama"
)

// genParams are a request's checked generation settings.
type genParams struct {
	adapter      int
	model        string
	maxTokens    int
	explicitMax  bool
	sample       llama.SampleOptions
	stops        []string
	stream       bool
	includeUsage bool
	constraint   llama.TokenConstraint
}

// refusedFields are OpenAI fields serve does not implement; a request that
// sets one to anything but its default gets a 400 naming it.
func refusedField(f *samplingFields) (string, string) {
	for _, c := range []struct {
		name string
		raw  json.RawMessage
		why  string
	}{
		{"logprobs", f.Logprobs, "log probabilities are not returned"},
		{"top_logprobs", f.TopLogprobs, "log probabilities are not returned"},
		{"logit_bias", f.LogitBias, "logit_bias is not supported"},
		{"tools", f.Tools, "tool calls are not supported"},
		{"functions", f.Functions, "function calls are not supported"},
		{"echo", f.Echo, "echo is not supported"},
		{"suffix", f.Suffix, "suffix (insertion) is not supported"},
	} {
		if !isDefault(c.raw) {
			return c.name, c.why
		}
	}
	if tc := strings.TrimSpace(string(f.ToolChoice)); !isDefault(f.ToolChoice) && tc != `"none"` {
		return "tool_choice", "tool calls are not supported"
	}
	if bo := strings.TrimSpace(string(f.BestOf)); !isDefault(f.BestOf) && bo != "1" {
		return "best_of", "best_of is not supported: send one request per completion (they are batched together)"
	}
	return "", ""
}

// params checks the generation settings of a request; on failure it has
// answered the request and returns nil.
func (s *Server) params(w http.ResponseWriter, b *Backend, f *samplingFields) *genParams {
	if name, why := refusedField(f); name != "" {
		badRequest(w, name, name+": "+why)
		return nil
	}
	if f.N != nil && *f.N != 1 {
		badRequest(w, "n", fmt.Sprintf("n = %d: only n = 1 is supported; send one request per completion (concurrent requests are batched together)", *f.N))
		return nil
	}
	p := &genParams{stream: f.Stream, model: f.Model}
	if f.StreamOptions != nil {
		p.includeUsage = f.StreamOptions.IncludeUsage
	}
	idx, ok := s.adapterIndex(b, f.Model)
	if !ok {
		names := append([]string{s.opts.ModelID}, b.Adapters[1:]...)
		writeError(w, http.StatusNotFound, "invalid_request_error", "model", "model_not_found",
			fmt.Sprintf("the model %q does not exist; this server has %s", f.Model, strings.Join(quoteAll(names), ", ")))
		return nil
	}
	p.adapter = idx
	if p.model == "" {
		p.model = s.opts.ModelID
	}
	switch {
	case f.MaxCompletionTokens != nil:
		p.maxTokens, p.explicitMax = *f.MaxCompletionTokens, true
	case f.MaxTokens != nil:
		p.maxTokens, p.explicitMax = *f.MaxTokens, true
	}
	if p.explicitMax && p.maxTokens < 1 {
		param := "max_tokens"
		if f.MaxCompletionTokens != nil {
			param = "max_completion_tokens"
		}
		badRequest(w, param, fmt.Sprintf("%s must be at least 1, got %d", param, p.maxTokens))
		return nil
	}
	o := s.opts.Sample
	setF := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	setF(&o.Temp, f.Temperature)
	setF(&o.TopP, f.TopP)
	setF(&o.MinP, f.MinP)
	setF(&o.RepetitionPenalty, f.RepetitionPenalty)
	setF(&o.FrequencyPenalty, f.FrequencyPenalty)
	setF(&o.PresencePenalty, f.PresencePenalty)
	if f.TopK != nil {
		o.TopK = *f.TopK
	}
	if f.RepetitionContext != nil {
		o.RepetitionContext = *f.RepetitionContext
	}
	if f.Seed != nil {
		o.Seed = uint64(*f.Seed)
	} else {
		var r [8]byte
		_, _ = crand.Read(r[:])
		o.Seed = binary.LittleEndian.Uint64(r[:])
	}
	if err := o.Validate(); err != nil {
		param, _, _ := strings.Cut(err.Error(), " ")
		badRequest(w, param, err.Error())
		return nil
	}
	p.sample = o
	stops, err := parseStops(f.Stop)
	if err != nil {
		badRequest(w, "stop", err.Error())
		return nil
	}
	p.stops = stops
	if rf := f.ResponseFormat; rf != nil {
		c, status, msg := s.constraint(b, rf)
		if status != 0 {
			writeError(w, status, "invalid_request_error", "response_format", "", msg)
			return nil
		}
		p.constraint = c
	}
	return p
}

// constraint builds the constraint of a response_format.
func (s *Server) constraint(b *Backend, rf *responseFormat) (llama.TokenConstraint, int, string) {
	var schema json.RawMessage
	switch rf.Type {
	case "", "text":
		return nil, 0, ""
	case "json_object":
	case "json_schema":
		if rf.JSONSchema == nil || len(bytes.TrimSpace(rf.JSONSchema.Schema)) == 0 {
			return nil, http.StatusBadRequest, "response_format: json_schema needs json_schema.schema"
		}
		schema = rf.JSONSchema.Schema
	default:
		return nil, http.StatusBadRequest, fmt.Sprintf("response_format: type %q is not supported (want text, json_object or json_schema)", rf.Type)
	}
	if b.Constraints == nil {
		return nil, http.StatusBadRequest, "response_format: constrained decoding is not available on this server"
	}
	c, err := b.Constraints.JSON(schema)
	if err != nil {
		return nil, http.StatusBadRequest, "response_format: " + err.Error()
	}
	return c, 0, ""
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// fitContext sets the token limit against the model's context; on failure
// it has answered the request.
func (s *Server) fitContext(w http.ResponseWriter, b *Backend, p *genParams, promptTokens int) bool {
	ctx := b.Engine.Model().Config.MaxPositionEmbeddings
	if ctx <= 0 {
		if !p.explicitMax {
			p.maxTokens = s.opts.MaxTokens
		}
		return true
	}
	if promptTokens >= ctx {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "messages", "context_length_exceeded",
			fmt.Sprintf("the prompt has %d tokens, but the model's context is %d tokens (and at least one token must be generated)", promptTokens, ctx))
		return false
	}
	if !p.explicitMax {
		p.maxTokens = min(s.opts.MaxTokens, ctx-promptTokens)
		return true
	}
	if promptTokens+p.maxTokens > ctx {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "max_tokens", "context_length_exceeded",
			fmt.Sprintf("the prompt has %d tokens and max_tokens is %d: %d tokens exceed the model's context of %d tokens; lower max_tokens to at most %d",
				promptTokens, p.maxTokens, promptTokens+p.maxTokens, ctx, ctx-promptTokens))
		return false
	}
	return true
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	b := s.ready(w)
	if b == nil {
		return
	}
	var req chatRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	p := s.params(w, b, &req.samplingFields)
	if p == nil {
		return
	}
	if len(req.Messages) == 0 {
		badRequest(w, "messages", "messages must be a non-empty list")
		return
	}
	msgs := make([]llama.Message, len(req.Messages))
	for i, m := range req.Messages {
		text, err := m.text()
		if err != nil {
			badRequest(w, fmt.Sprintf("messages[%d].content", i), fmt.Sprintf("messages[%d]: %v", i, err))
			return
		}
		role := m.Role
		if role == "developer" {
			role = "system"
		}
		switch role {
		case "system", "user", "assistant":
		default:
			badRequest(w, fmt.Sprintf("messages[%d].role", i), fmt.Sprintf("messages[%d]: role %q is not supported (want system, developer, user or assistant)", i, m.Role))
			return
		}
		msgs[i] = llama.Message{Role: role, Content: text}
	}
	ids, _, err := b.Tokenizer.EncodeChat(msgs, true)
	if err != nil {
		badRequest(w, "messages", "cannot render the messages with the model's chat template: "+err.Error())
		return
	}
	s.generate(w, r, b, ids, p, true)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	b := s.ready(w)
	if b == nil {
		return
	}
	var req completionRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	p := s.params(w, b, &req.samplingFields)
	if p == nil {
		return
	}
	ids, err := s.completionPrompt(b, req.Prompt)
	if err != nil {
		badRequest(w, "prompt", err.Error())
		return
	}
	s.generate(w, r, b, ids, p, false)
}

// completionPrompt encodes a completions prompt: a string (or a list of
// one), or token ids (or a list of one list of them).
func (s *Server) completionPrompt(b *Backend, raw json.RawMessage) ([]int32, error) {
	raw = bytes.TrimSpace(raw)
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		if text == "" {
			return nil, errors.New("prompt is empty")
		}
		return b.Tokenizer.Encode(text, true)
	}
	var texts []string
	if err := json.Unmarshal(raw, &texts); err == nil {
		if len(texts) != 1 || texts[0] == "" {
			return nil, fmt.Errorf("prompt: a list of %d strings; only one non-empty prompt per request is supported", len(texts))
		}
		return b.Tokenizer.Encode(texts[0], true)
	}
	var ids []int32
	if err := json.Unmarshal(raw, &ids); err == nil && len(ids) > 0 {
		return ids, nil
	}
	var lists [][]int32
	if err := json.Unmarshal(raw, &lists); err == nil && len(lists) == 1 && len(lists[0]) > 0 {
		return lists[0], nil
	}
	return nil, errors.New("prompt must be a non-empty string or a list of token ids")
}

// generate runs one sequence and answers with it, streamed or whole.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, b *Backend, ids []int32, p *genParams, chat bool) {
	info := infoOf(r.Context())
	info.model, info.promptTokens = p.model, len(ids)
	if !s.fitContext(w, b, p, len(ids)) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	j := newJob(b.Tokenizer, p.stops)
	err := b.Engine.Submit(j.request(llama.SeqRequest{Prompt: ids, MaxTokens: p.maxTokens, Sample: p.sample,
		StopIDs: b.StopIDs, Adapter: p.adapter, Constraint: p.constraint, Ctx: ctx}))
	switch {
	case errors.Is(err, llama.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limit_error", "", "queue_full",
			fmt.Sprintf("the server is busy: %v; retry later", err))
		return
	case errors.Is(err, llama.ErrEngineStopped):
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "shutting_down", "the server is shutting down")
		return
	case err != nil:
		badRequest(w, "", err.Error())
		return
	}
	out := &responder{w: w, id: newID("chatcmpl-"), created: time.Now().Unix(), model: p.model, chat: chat,
		stream: p.stream, includeUsage: p.includeUsage, promptTokens: len(ids)}
	if !chat {
		out.id = newID("cmpl-")
	}
	if p.stream {
		if err := out.start(); err != nil {
			return
		}
	}
	for {
		text, done, res, err := j.next(ctx)
		if err != nil {
			info.completion, info.finish = j.generated(), string(llama.FinishCancelled)
			s.ended(out, r, err)
			return
		}
		if text != "" {
			if err := out.delta(text); err != nil {
				return // the client went away: ctx ends the sequence
			}
		}
		if !done {
			continue
		}
		finish := string(res.Finish)
		if f, ok := p.constraint.(interface{ Forced() bool }); ok && f.Forced() {
			// The token limit cut the answer short (and the constraint
			// closed the JSON in the tokens left).
			finish = string(llama.FinishLength)
		}
		info.completion, info.finish = res.GeneratedTokens, finish
		switch res.Finish {
		case llama.FinishStop, llama.FinishLength:
			_ = out.end(finish, res.GeneratedTokens)
		case llama.FinishCancelled:
			s.ended(out, r, ctx.Err())
		default:
			out.fail(http.StatusInternalServerError, "server_error", fmt.Sprintf("generation failed: %v", res.Err))
		}
		return
	}
}

// ended answers a request whose context ended: nothing when the client
// went away, a timeout error otherwise.
func (s *Server) ended(out *responder, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	if err == nil {
		out.fail(http.StatusServiceUnavailable, "server_error", "the server is shutting down; the request was cancelled")
		return
	}
	msg := fmt.Sprintf("the request timed out after %s", s.opts.RequestTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		msg = fmt.Sprintf("the request ended: %v", err)
	}
	out.fail(http.StatusGatewayTimeout, "timeout", msg)
}

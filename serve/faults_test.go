package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/fungtrain/fungtrain/llama"
)

// rawPost posts body as is and returns the status, a header and the body.
func rawPost(t *testing.T, url, key string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// openStream starts a streamed chat request and returns a reader of its
// events; cancel disconnects.
func openStream(t *testing.T, url, key string, body map[string]any) (*http.Response, *bufio.Reader, context.CancelFunc) {
	t.Helper()
	body["stream"] = true
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", bytes.NewReader(b))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("stream: %v", err)
	}
	return resp, bufio.NewReader(resp.Body), cancel
}

// readContentEvents reads SSE events until n content deltas have come.
func readContentEvents(r *bufio.Reader, n int) error {
	got := 0
	for got < n {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("after %d content events: %w", got, err)
		}
		if strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
			got++
		}
	}
	return nil
}

// TestServeFaults sends a server (with a key, a small batch, queue and body
// limit) requests that must fail, each with its own 4xx, and checks that it
// goes on answering correctly: malformed JSON, an unknown model, prompts
// and limits beyond the context, an oversized body, a missing and a wrong
// key, unsupported fields, a full queue, and clients that disconnect
// mid-stream.
func TestServeFaults(t *testing.T) {
	const key = "sk-test-9f8e7d6c5b4a"
	q := []llama.Message{{Role: "user", Content: "What is the capital of France?"}}
	refs := references(t, []refRequest{{messages: q, maxTokens: 6}})
	s := startServer(t, RunOptions{
		Engine: llama.EngineOptions{QueueSize: 1, Batch: llama.BatchOptions{MaxBatch: 1}},
		Server: Options{APIKey: key, MaxBodyBytes: 64 << 10},
	})
	chat := s.url + "/v1/chat/completions"
	good := func() {
		t.Helper()
		var resp openai.ChatCompletionResponse
		status, err := postJSON(chat, key, map[string]any{"messages": q, "max_tokens": 6}, &resp)
		if err != nil || status != 200 || len(resp.Choices) != 1 {
			t.Fatalf("good request: status %d, %v, %+v", status, err, resp)
		}
		checkAnswer(t, "good request", resp.Choices[0].Message.Content, refs[0])
	}
	msg := func(text string) []byte {
		b, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": text}}, "max_tokens": 4})
		return b
	}
	for _, c := range []struct {
		name   string
		key    string
		body   []byte
		status int
		want   string
	}{
		{"no key", "", msg("hi"), 401, "missing or wrong API key"},
		{"wrong key", "sk-wrong", msg("hi"), 401, "missing or wrong API key"},
		{"malformed JSON", key, []byte(`{"messages": [{"role": "user", "content": "hi"}`), 400, "not valid JSON"},
		{"wrong type", key, []byte(`{"messages": "hi"}`), 400, "field messages"},
		{"no messages", key, []byte(`{"max_tokens": 3}`), 400, "messages must be a non-empty list"},
		{"unknown model", key, []byte(`{"model": "llama-9000", "messages": [{"role": "user", "content": "hi"}]}`), 404, `the model \"llama-9000\" does not exist`},
		{"bad role", key, []byte(`{"messages": [{"role": "tool", "content": "hi"}]}`), 400, `role \"tool\" is not supported`},
		{"n", key, []byte(`{"n": 3, "messages": [{"role": "user", "content": "hi"}]}`), 400, `"param":"n"`},
		{"logprobs", key, []byte(`{"logprobs": true, "messages": [{"role": "user", "content": "hi"}]}`), 400, `"param":"logprobs"`},
		{"top_p", key, []byte(`{"top_p": 2, "messages": [{"role": "user", "content": "hi"}]}`), 400, "top_p must be in [0, 1]"},
		{"frequency_penalty", key, []byte(`{"frequency_penalty": 3, "messages": [{"role": "user", "content": "hi"}]}`), 400, "frequency_penalty must be in [-2, 2]"},
		{"max_tokens 0", key, []byte(`{"max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}`), 400, "max_tokens must be at least 1"},
		{"max_tokens beyond the context", key, []byte(`{"max_tokens": 9000, "messages": [{"role": "user", "content": "hi"}]}`), 400,
			"the prompt has 31 tokens and max_tokens is 9000: 9031 tokens exceed the model's context of 8192 tokens"},
		{"prompt beyond the context", key, msg(strings.Repeat("fast ", 9000)), 400, "tokens, but the model's context is 8192 tokens"},
		{"oversized body", key, msg(strings.Repeat("x", 70<<10)), 413, "larger than the limit of 65536 bytes"},
		{"response_format type", key, []byte(`{"response_format": {"type": "yaml"}, "messages": [{"role": "user", "content": "hi"}]}`), 400, `type \"yaml\" is not supported`},
	} {
		status, _, body := rawPost(t, chat, c.key, c.body)
		if status != c.status || !strings.Contains(body, c.want) || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: status %d %s, want %d and %q", c.name, status, body, c.status, c.want)
		}
	}
	if status, _, body := rawPost(t, s.url+"/v1/models", key, nil); status != 405 && status != 404 {
		t.Errorf("POST /v1/models: %d %s", status, body)
	}
	good()

	// Queue: one sequence decodes (batch of 1), one waits, the third is
	// refused with 429 and Retry-After.
	long := map[string]any{"messages": []map[string]string{{"role": "user", "content": "Write a long story about a dragon."}}, "max_tokens": 2000}
	resp1, r1, cancel1 := openStream(t, s.url, key, long)
	if err := readContentEvents(r1, 2); err != nil {
		t.Fatalf("first stream: %v", err)
	}
	resp2, r2, cancel2 := openStream(t, s.url, key, long)
	time.Sleep(300 * time.Millisecond) // let the second request reach the queue
	status, hdr, body := rawPost(t, chat, key, msg("hi"))
	if status != 429 || hdr.Get("Retry-After") == "" || !strings.Contains(body, "queue is full") {
		t.Errorf("full queue: status %d (Retry-After %q) %s, want 429", status, hdr.Get("Retry-After"), body)
	}
	// The first client disconnects mid-stream: its sequence is cancelled
	// and the waiting one starts.
	cancel1()
	resp1.Body.Close()
	if err := readContentEvents(r2, 2); err != nil {
		t.Fatalf("second stream after the first disconnected: %v", err)
	}
	cancel2()
	resp2.Body.Close()
	// Both cancelled sequences leave the batch: a new request is answered
	// (it would wait for 2000-token stories otherwise).
	done := make(chan struct{})
	go func() { defer close(done); good() }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("a request after two disconnects was not answered in 90 s")
	}
	logs := s.logs.String()
	if strings.Count(logs, "finish=cancelled") < 2 {
		t.Errorf("the disconnected streams are not logged as cancelled:\n%s", logs)
	}
	if strings.Contains(logs, key) {
		t.Errorf("the API key appears in the log")
	}
	for _, want := range []string{"status=401", "status=404", "status=413", "status=429", "prompt_tokens=31", "completion_tokens="} {
		if !strings.Contains(logs, want) {
			t.Errorf("access log lacks %q", want)
		}
	}
}

// TestServeTimeoutAndShutdown checks the request timeout (504), then a
// shutdown: a request in flight finishes within the deadline, new ones are
// refused, and a request beyond the deadline is cancelled.
func TestServeTimeoutAndShutdown(t *testing.T) {
	s := startServer(t, RunOptions{Server: Options{RequestTimeout: 4 * time.Second}})
	chat := s.url + "/v1/chat/completions"
	long := map[string]any{"messages": []map[string]string{{"role": "user", "content": "Write a long story about a dragon."}}, "max_tokens": 4000}
	var e struct {
		Error apiError `json:"error"`
	}
	status, err := postJSON(chat, "", long, &e)
	if err != nil || status != 504 || !strings.Contains(e.Error.Message, "timed out after 4s") {
		t.Errorf("timeout: status %d, %v, %+v", status, err, e)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	// A streamed request of 12 tokens is running when the server is told
	// to stop: it completes.
	s1 := startServer(t, RunOptions{ShutdownTimeout: 2 * time.Minute})
	resp, r, cancel := openStream(t, s1.url, "", map[string]any{"messages": []map[string]string{{"role": "user", "content": "Count to twenty."}},
		"max_tokens": 12})
	defer cancel()
	if err := readContentEvents(r, 1); err != nil {
		t.Fatal(err)
	}
	s1.cancel()
	s1.cancel = nil
	rest, _ := io.ReadAll(r)
	resp.Body.Close()
	if !strings.Contains(string(rest), `"finish_reason":"length"`) || !strings.HasSuffix(strings.TrimSpace(string(rest)), "data: [DONE]") {
		t.Errorf("the request in flight did not finish: %s", rest)
	}
	select {
	case err := <-s1.done:
		if err != nil {
			t.Errorf("Run returned %v after shutdown", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Run did not return after shutdown")
	}
	if _, err := http.Get(s1.url + "/health"); err == nil {
		t.Error("the server still accepts connections after shutdown")
	}

	// With a short deadline, a long request is cancelled and Run returns.
	s2 := startServer(t, RunOptions{ShutdownTimeout: time.Second})
	resp2, r2, cancel2 := openStream(t, s2.url, "", long)
	defer cancel2()
	if err := readContentEvents(r2, 1); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s2.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	io.ReadAll(r2)
	resp2.Body.Close()
	if d := time.Since(t0); d > 30*time.Second {
		t.Errorf("shutdown with a 1 s deadline took %s", d)
	}
	if !strings.Contains(s2.logs.String(), "cancelling the requests still running") {
		t.Errorf("no cancellation logged:\n%s", s2.logs.String())
	}
}

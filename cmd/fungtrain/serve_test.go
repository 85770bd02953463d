package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestServeCLI runs fungtrain generate, then fungtrain serve with a key
// from the environment, asks the server the same question through
// go-openai and gets generate's answer; SIGTERM then stops the server and
// the command returns no error (exit status 0).
func TestServeCLI(t *testing.T) {
	model := cliAsset(t, smolLM2)
	want, stderr, err := runCLI(t, "generate", "--model", model, "--prompt", "What is the capital of France?", "--max-tokens", "12")
	if err != nil {
		t.Fatalf("generate: %v\n%s", err, stderr)
	}
	want = strings.TrimSuffix(want, "\n")

	const keyEnv = "FUNGTRAIN_TEST_SERVE_KEY"
	t.Setenv(keyEnv, "sk-cli-test")
	base, done, errb := startServeCLI(t, "--model", model, "--api-key-env", keyEnv, "--max-batch", "4", "--log-format", "json")
	cfg := openai.DefaultConfig(os.Getenv(keyEnv))
	cfg.BaseURL = base + "/v1"
	resp, err := openai.NewClientWithConfig(cfg).CreateChatCompletion(t.Context(), openai.ChatCompletionRequest{
		Messages:  []openai.ChatCompletionMessage{{Role: "user", Content: "What is the capital of France?"}},
		MaxTokens: 12,
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got := resp.Choices[0].Message.Content; got != want {
		t.Errorf("served answer %q, fungtrain generate's %q", got, want)
	}
	stopServe(t, done)
	if strings.Contains(errb.String(), "sk-cli-test") {
		t.Error("the API key appears in the log")
	}
	// The access log, as JSON lines.
	found := false
	for line := range strings.Lines(errb.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if rec["msg"] == "http request" && rec["path"] == "/v1/chat/completions" && rec["method"] == "POST" &&
			rec["status"] == 200.0 && rec["prompt_tokens"] == 37.0 && rec["completion_tokens"] != nil && rec["latency_ms"] != nil {
			found = true
		}
	}
	if !found {
		t.Errorf("no JSON access log record of the chat request:\n%s", errb.String())
	}
}

func TestServeFlagErrors(t *testing.T) {
	model := cliAsset(t, smolLM2)
	t.Setenv("FUNGTRAIN_EMPTY_KEY", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, "--model is required"},
		{[]string{"serve", "--model", "/nonexistent/model"}, "no such file"},
		{[]string{"serve", "--model", model, "--max-batch", "0"}, "--max-batch must be at least 1"},
		{[]string{"serve", "--model", model, "--adapter", "x="}, "want DIR or NAME=DIR"},
		{[]string{"serve", "--model", model, "--api-key-env", "FUNGTRAIN_EMPTY_KEY"}, "FUNGTRAIN_EMPTY_KEY: the environment variable is empty"},
		{[]string{"serve", "--model", model, "--chat-format", "alpaca"}, "unknown chat format"},
	} {
		_, _, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

// startServeCLI runs `fungtrain serve ARGS --port P` in-process on a free
// port and waits until /health answers 200. It returns the base URL, the
// channel the command's error arrives on, and its log.
func startServeCLI(t *testing.T, args ...string) (string, chan error, *strings.Builder) {
	t.Helper()
	port := freePort(t)
	done := make(chan error, 1)
	var out strings.Builder
	errb := &strings.Builder{}
	var mu sync.Mutex
	go func() {
		root := newRootCmd()
		root.SetArgs(append(append([]string{"serve"}, args...), "--port", strconv.Itoa(port)))
		root.SetOut(&out)
		root.SetErr(lockedWriter{&mu, errb})
		done <- root.ExecuteContext(context.Background())
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base, done, errb
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not ready after 3 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stopServe sends SIGTERM (the serve command catches it) and waits for
// the command to return.
func stopServe(t *testing.T, done chan error) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("serve did not stop after SIGTERM")
	}
}

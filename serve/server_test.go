package serve

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNotReady checks the answers of a server whose model is still
// loading: /health 503 {"status":"loading"} with Retry-After, the key
// checked before anything else, generation 503, unknown routes 404; and
// the access log as JSON lines without the key.
func TestNotReady(t *testing.T) {
	var logs bytes.Buffer
	s := New(Options{APIKey: "sk-unit", Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	do := func(method, path, key string) (int, http.Header, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for _, c := range []struct {
		method, path, key string
		status            int
		want              string
	}{
		{"GET", "/health", "", 503, `{"status":"loading"}`},
		{"POST", "/v1/chat/completions", "", 401, "missing or wrong API key"},
		{"POST", "/v1/chat/completions", "sk-wrong", 401, "invalid_api_key"},
		{"POST", "/v1/chat/completions", "sk-unit", 503, "the model is still loading"},
		{"GET", "/v1/models", "sk-unit", 503, "loading"},
		{"GET", "/v2/nothing", "", 404, "no route for GET /v2/nothing"},
	} {
		status, hdr, body := do(c.method, c.path, c.key)
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s %s (key %q): %d %s, want %d and %q", c.method, c.path, c.key, status, body, c.status, c.want)
		}
		if status == 503 && hdr.Get("Retry-After") == "" && c.path == "/health" {
			t.Errorf("%s: 503 without Retry-After", c.path)
		}
	}
	n := 0
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if rec["msg"] == "http request" && rec["method"] != nil && rec["path"] != nil && rec["status"] != nil && rec["latency_ms"] != nil {
			n++
		}
	}
	if n != 6 || strings.Contains(logs.String(), "sk-unit") {
		t.Errorf("%d access log records of 6 (or the key is logged):\n%s", n, logs.String())
	}
}

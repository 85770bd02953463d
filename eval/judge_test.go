package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const testKey = "sk-test-SECRET-123"

// fakeOpenAI is an OpenAI-compatible chat completions server that answers
// each request with the next scripted reply.
type fakeOpenAI struct {
	t       *testing.T
	mu      sync.Mutex
	replies []func(w http.ResponseWriter)
	reqs    []map[string]any
	auth    []string
}

func (f *fakeOpenAI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, "not found: "+r.URL.Path, http.StatusNotFound)
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		f.t.Errorf("request body: %v", err)
	}
	f.reqs = append(f.reqs, body)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	if len(f.replies) == 0 {
		http.Error(w, `{"error":{"message":"script exhausted","type":"test"}}`, http.StatusInternalServerError)
		return
	}
	reply := f.replies[0]
	f.replies = f.replies[1:]
	reply(w)
}

func (f *fakeOpenAI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

func status(code int, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}
}

func completion(content string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": "c1", "object": "chat.completion", "model": "judge-1",
			"choices": []any{map[string]any{
				"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": content},
			}},
		})
	}
}

func newTestJudge(t *testing.T, replies ...func(http.ResponseWriter)) (*Judge, *fakeOpenAI) {
	t.Helper()
	fake := &fakeOpenAI{t: t, replies: replies}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Setenv("FUNGTRAIN_TEST_JUDGE_KEY", testKey)
	j, err := NewJudge(JudgeConfig{
		BaseURL: srv.URL + "/v1/", Model: "judge-1", APIKeyEnv: "FUNGTRAIN_TEST_JUDGE_KEY",
		MaxAttempts: 4, Backoff: time.Millisecond, Timeout: 5 * time.Second,
	}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return j, fake
}

func TestJudgeRetriesThenSucceeds(t *testing.T) {
	j, fake := newTestJudge(t,
		status(500, `{"error":{"message":"overloaded","type":"server_error"}}`),
		status(200, `{"choices": [`),                   // malformed HTTP body
		completion("I think it is good."),              // no JSON verdict
		completion(`{"style": 11, "faithfulness": 5}`), // out of range
		completion("```json\n{\"style\": 7, \"faithfulness\": 9, \"reason\": \"Close to the reference.\"}\n```"),
	)
	j.maxAttempts = 5
	s, err := j.Grade(context.Background(), "What is compounding?", "Growth on growth.", "Growth on **growth**.")
	if err != nil {
		t.Fatal(err)
	}
	want := JudgeScore{Style: 7, Faithfulness: 9, Score: 8, Reason: "Close to the reference.", Attempts: 5}
	if *s != want {
		t.Errorf("score = %+v, want %+v", *s, want)
	}
	if fake.count() != 5 {
		t.Errorf("requests = %d, want 5", fake.count())
	}
	req := fake.reqs[0]
	if req["model"] != "judge-1" {
		t.Errorf("model = %v", req["model"])
	}
	msgs, _ := json.Marshal(req["messages"])
	for _, want := range []string{"What is compounding?", "Growth on growth.", "Growth on **growth**.", "faithfulness"} {
		if !bytes.Contains(msgs, []byte(want)) {
			t.Errorf("request messages lack %q: %s", want, msgs)
		}
	}
	for i, a := range fake.auth {
		if a != "Bearer "+testKey {
			t.Errorf("request %d Authorization = %q", i, a)
		}
	}
}

func TestJudgeGivesUpAfterMaxAttempts(t *testing.T) {
	j, fake := newTestJudge(t,
		status(500, `oops`),
		status(502, `bad gateway`),
		completion(`{"style": "high"}`),
		status(503, `{"error":{"message":"busy","type":"server_error"}}`),
		completion(`{"style": 5, "faithfulness": 5}`), // never reached
	)
	_, err := j.Grade(context.Background(), "q", "r", "a")
	if err == nil {
		t.Fatal("want error")
	}
	if fake.count() != 4 {
		t.Errorf("requests = %d, want 4 (MaxAttempts)", fake.count())
	}
	for _, want := range []string{"attempt 1", "attempt 4", "500", "busy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), testKey) {
		t.Error("error contains the API key")
	}
}

func TestJudgeClientErrorNotRetried(t *testing.T) {
	j, fake := newTestJudge(t,
		status(401, `{"error":{"message":"invalid api key","type":"auth"}}`),
		completion(`{"style": 5, "faithfulness": 5}`),
	)
	_, err := j.Grade(context.Background(), "q", "r", "a")
	if err == nil || !strings.Contains(err.Error(), "invalid api key") {
		t.Errorf("err = %v", err)
	}
	if fake.count() != 1 {
		t.Errorf("requests = %d, want 1", fake.count())
	}
}

func TestJudgeContextCancelStopsRetries(t *testing.T) {
	j, fake := newTestJudge(t, status(500, "x"), status(500, "x"), status(500, "x"), status(500, "x"))
	j.backoff = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := j.Grade(ctx, "q", "r", "a")
	if err == nil || time.Since(start) > 10*time.Second {
		t.Errorf("err = %v after %v", err, time.Since(start))
	}
	if fake.count() != 1 {
		t.Errorf("requests = %d, want 1", fake.count())
	}
}

func TestJudgeInRunPairedNeverLeaksKey(t *testing.T) {
	j, _ := newTestJudge(t,
		completion(`{"style": 8, "faithfulness": 6, "reason": "ok"}`),
		status(400, `{"error":{"message":"bad request","type":"invalid"}}`),
	)
	var logs bytes.Buffer
	base, _ := testGenerators()
	res, err := RunPaired(context.Background(), testQuestions(), base, nil, Options{
		Judge: j, JudgeModel: j.Model(), Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Samples[0].Base.Judge; got == nil || got.Score != 7 {
		t.Errorf("q1 judge = %+v", got)
	}
	if res.Samples[1].Base.JudgeError == "" {
		t.Error("q2 judge error not recorded")
	}
	if m := res.Summary.Base.MeanJudge; m == nil || *m != 7 || res.Summary.Base.JudgeN != 1 {
		t.Errorf("summary judge = %v n=%d", m, res.Summary.Base.JudgeN)
	}
	path := filepath.Join(t.TempDir(), "eval.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	written, _ := os.ReadFile(path)
	for name, text := range map[string]string{"logs": logs.String(), "json": string(written), "markdown": res.Markdown()} {
		if strings.Contains(text, testKey) {
			t.Errorf("%s contain the API key", name)
		}
	}
}

func TestNewJudgeConfigErrors(t *testing.T) {
	t.Setenv("FUNGTRAIN_TEST_EMPTY_KEY", "")
	tests := []struct {
		cfg  JudgeConfig
		want string
	}{
		{JudgeConfig{Model: "m"}, "base_url"},
		{JudgeConfig{BaseURL: "http://127.0.0.1:1/v1"}, "model"},
		{JudgeConfig{BaseURL: "http://127.0.0.1:1/v1", Model: "m", APIKeyEnv: "FUNGTRAIN_TEST_EMPTY_KEY"},
			"FUNGTRAIN_TEST_EMPTY_KEY is empty or unset"},
	}
	for _, tt := range tests {
		if _, err := NewJudge(tt.cfg, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewJudge(%+v) err = %v, want mention of %q", tt.cfg, err, tt.want)
		}
	}
	if _, err := NewJudge(JudgeConfig{BaseURL: "http://127.0.0.1:1/v1", Model: "m"}, nil); err != nil {
		t.Errorf("keyless judge: %v", err)
	}
}

func TestParseJudgeReply(t *testing.T) {
	tests := []struct {
		in      string
		want    *JudgeScore
		wantErr string
	}{
		{`{"style": 4, "faithfulness": 7, "reason": " fine "}`, &JudgeScore{Style: 4, Faithfulness: 7, Score: 5.5, Reason: "fine"}, ""},
		{"Verdict: {\"style\": 10, \"faithfulness\": 1}", &JudgeScore{Style: 10, Faithfulness: 1, Score: 5.5}, ""},
		{`{"style": 4.0, "faithfulness": 7}`, &JudgeScore{Style: 4, Faithfulness: 7, Score: 5.5}, ""},
		{`no json`, nil, "no JSON object"},
		{`{"style": 4, "faithfulness": }`, nil, "not valid JSON"},
		{`{"style": 4}`, nil, `lacks "faithfulness"`},
		{`{"style": 0, "faithfulness": 5}`, nil, "from 1 to 10"},
		{`{"style": 4.5, "faithfulness": 5}`, nil, "from 1 to 10"},
		{`{"style": "4", "faithfulness": 5}`, nil, "not valid JSON"},
	}
	for _, tt := range tests {
		got, err := ParseJudgeReply(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseJudgeReply(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || *got != *tt.want {
			t.Errorf("ParseJudgeReply(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	long := fmt.Sprintf(`{"style": 5, "faithfulness": 5, "reason": %q}`, strings.Repeat("x", 400))
	if got, err := ParseJudgeReply(long); err != nil || len([]rune(got.Reason)) != maxReasonRunes+1 {
		t.Errorf("long reason: %v, %d runes", err, len([]rune(got.Reason)))
	}
}

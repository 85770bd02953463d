package data

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// Secrets used by the fakes; the tests check that none leaks.
const (
	llmKey        = "sk-test-SECRET-llm-9f8e7d6c"
	transcriptKey = "sup-SECRET-transcripts-4b3a"
	youtubeKey    = "yt-SECRET-youtube-77aa"
)

// fault is what a fake does instead of answering normally.
type fault int

const (
	faultNone         fault = iota
	fault429                // 429 with Retry-After: 1
	fault500                // 500
	faultHang               // no answer until the client gives up
	faultMalformed          // 200 with a cut JSON document
	faultTruncated          // Content-Length larger than the body, then close
	faultBadContent         // (LLM) a well-formed reply whose content is unusable
	faultStreamCut          // (LLM, streaming) stream closed before the finish reason
	fault400EchoKey         // (LLM) 400 whose message echoes the API key
	fault503LongWait        // 503 with a Retry-After far above max_retry_after
	faultEmptyChoices       // (LLM) 200 with no choices
)

// writeFault writes f; it reports false for faultNone and the LLM-only
// faults, which the caller handles.
func writeFault(w http.ResponseWriter, r *http.Request, f fault) bool {
	switch f {
	case fault429:
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":{"message":"rate limited"}}`, http.StatusTooManyRequests)
	case fault500:
		http.Error(w, `{"error":{"message":"internal"}}`, http.StatusInternalServerError)
	case fault503LongWait:
		w.Header().Set("Retry-After", "86400")
		http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusServiceUnavailable)
	case faultHang:
		// Drain the body so the server notices when the client hangs up.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	case faultMalformed:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"content": "cut in the mid`))
	case faultTruncated:
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("no hijacker")
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"partial\": \"")
		buf.Flush()
		conn.Close()
	default:
		return false
	}
	return true
}

// ---------------------------------------------------------------------------
// Fake transcript API (Supadata-style) and YouTube Data API.

type fakeVideo struct {
	text   string
	status int    // non-200: answered with this status
	msg    string // error message for status
	async  bool   // answer 202 with a job id first
}

type fakeTranscriptAPI struct {
	mu       sync.Mutex
	srv      *httptest.Server
	videos   map[string]fakeVideo // by video id
	attempts map[string]int       // by video id
	polls    map[string]int
	requests int
	// faultFor picks a fault for the nth (1-based) request of a video.
	faultFor func(id string, n int) fault
	// onRequest runs before each transcript request (test hook).
	onRequest func(n int)
	// YouTube: channel -> uploads ids, served 2 per page.
	channels map[string][]string
	ytReqs   int
}

// set changes the fake under its lock.
func (f *fakeTranscriptAPI) set(fn func(f *fakeTranscriptAPI)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// snap returns a copy of the counters.
func (f *fakeTranscriptAPI) snap() (attempts, polls map[string]int, ytReqs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.attempts), maps.Clone(f.polls), f.ytReqs
}

var ytIDInURL = regexp.MustCompile(`v=([A-Za-z0-9_-]{11})`)

func newFakeTranscriptAPI(t *testing.T) *fakeTranscriptAPI {
	f := &fakeTranscriptAPI{videos: map[string]fakeVideo{}, attempts: map[string]int{}, polls: map[string]int{}, channels: map[string][]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/transcript", f.transcript)
	mux.HandleFunc("/v1/transcript/{job}", f.job)
	mux.HandleFunc("/yt/channels", f.ytChannels)
	mux.HandleFunc("/yt/playlistItems", f.ytPlaylist)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTranscriptAPI) transcript(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("x-api-key") != transcriptKey {
		http.Error(w, `{"error":"unauthorized","message":"Invalid API key"}`, http.StatusUnauthorized)
		return
	}
	if r.URL.Query().Get("text") != "true" {
		http.Error(w, `{"message":"text=true expected"}`, http.StatusBadRequest)
		return
	}
	m := ytIDInURL.FindStringSubmatch(r.URL.Query().Get("url"))
	if m == nil {
		http.Error(w, `{"message":"bad url"}`, http.StatusBadRequest)
		return
	}
	id := m[1]
	f.mu.Lock()
	f.requests++
	f.attempts[id]++
	n, total := f.attempts[id], f.requests
	v, ok := f.videos[id]
	hook, faultFor := f.onRequest, f.faultFor
	f.mu.Unlock()
	if hook != nil {
		hook(total)
	}
	if faultFor != nil && writeFault(w, r, faultFor(id, n)) {
		return
	}
	switch {
	case !ok:
		http.Error(w, `{"error":"not-found","message":"Video not found"}`, http.StatusNotFound)
	case v.status != 0:
		http.Error(w, `{"message":"`+v.msg+`"}`, v.status)
	case v.async:
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]string{"jobId": "job-" + id})
	default:
		json.NewEncoder(w).Encode(map[string]any{"content": v.text, "lang": "en", "availableLangs": []string{"en"}})
	}
}

func (f *fakeTranscriptAPI) job(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("x-api-key") != transcriptKey {
		http.Error(w, `{"message":"Invalid API key"}`, http.StatusUnauthorized)
		return
	}
	id := strings.TrimPrefix(r.PathValue("job"), "job-")
	f.mu.Lock()
	f.polls[id]++
	n := f.polls[id]
	v := f.videos[id]
	f.mu.Unlock()
	if n < 2 {
		json.NewEncoder(w).Encode(map[string]string{"status": "active"})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"status": "completed", "content": v.text, "lang": "en"})
}

func (f *fakeTranscriptAPI) ytChannels(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.ytReqs++
	n := f.ytReqs
	f.mu.Unlock()
	if r.URL.Query().Get("key") != youtubeKey {
		http.Error(w, `{"error":{"message":"API key not valid"}}`, http.StatusBadRequest)
		return
	}
	if n == 1 { // the first request hits a 500 and must be retried
		http.Error(w, `{"error":{"message":"backend error"}}`, http.StatusInternalServerError)
		return
	}
	id := r.URL.Query().Get("id")
	if id == "" {
		id = r.URL.Query().Get("forHandle")
	}
	if _, ok := f.channels[id]; !ok {
		json.NewEncoder(w).Encode(map[string]any{"items": []any{}})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"items": []any{map[string]any{
		"contentDetails": map[string]any{"relatedPlaylists": map[string]string{"uploads": "UU-" + id}}}}})
}

func (f *fakeTranscriptAPI) ytPlaylist(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("key") != youtubeKey {
		http.Error(w, `{"error":{"message":"API key not valid"}}`, http.StatusBadRequest)
		return
	}
	ids := f.channels[strings.TrimPrefix(q.Get("playlistId"), "UU-")]
	start := 0
	if tok := q.Get("pageToken"); tok != "" {
		fmt.Sscanf(tok, "p%d", &start)
	}
	end := min(start+2, len(ids))
	var items []any
	for _, id := range ids[start:end] {
		items = append(items, map[string]any{"contentDetails": map[string]string{"videoId": id}})
	}
	resp := map[string]any{"items": items}
	if end < len(ids) {
		resp["nextPageToken"] = fmt.Sprintf("p%d", end)
	}
	json.NewEncoder(w).Encode(resp)
}

// ---------------------------------------------------------------------------
// Fake OpenAI-compatible chat server.

type fakeLLM struct {
	mu           sync.Mutex
	srv          *httptest.Server
	attempts     map[string]int // by kind + subject
	requests     int
	modes        map[string]int // response_format types seen
	inflight     int
	maxInflight  int
	streamed     int
	rejectSchema bool
	delay        time.Duration
	// faultFor picks a fault for the nth (1-based) request of a subject.
	faultFor  func(kind, subject string, n int) fault
	onRequest func(n int)
}

var (
	questionMarkRE = regexp.MustCompile(`QUESTION: ([^?]+\?)`)
	questionLineRE = regexp.MustCompile(`(?m)^Question: (.+)$`)
)

func newFakeLLM(t *testing.T) *fakeLLM {
	f := &fakeLLM{attempts: map[string]int{}, modes: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLLM) url() string { return f.srv.URL + "/v1" }

// set changes the fake under its lock.
func (f *fakeLLM) set(fn func(f *fakeLLM)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

type fakeLLMStats struct {
	requests, maxInflight, streamed int
	attempts, modes                 map[string]int
}

// snap returns a copy of the counters.
func (f *fakeLLM) snap() fakeLLMStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeLLMStats{requests: f.requests, maxInflight: f.maxInflight, streamed: f.streamed,
		attempts: maps.Clone(f.attempts), modes: maps.Clone(f.modes)}
}

// promptKind tells the stages apart by their default system prompts.
func promptKind(system string) string {
	switch {
	case strings.Contains(system, "List the distinct questions"):
		return "questions"
	case strings.Contains(system, "Answer the viewer's question"):
		return "answers"
	case strings.Contains(system, "You rewrite patient questions"):
		return "paraphrase"
	case strings.Contains(system, "You condense answers"):
		return "short"
	}
	return "unknown"
}

func (f *fakeLLM) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+llmKey {
		http.Error(w, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}`, http.StatusUnauthorized)
		return
	}
	var req openai.ChatCompletionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	system, user := "", ""
	for _, m := range req.Messages {
		switch m.Role {
		case "system":
			system = m.Content
		case "user":
			user = m.Content
		}
	}
	kind := promptKind(system)
	subject := user
	if m := questionLineRE.FindStringSubmatch(user); m != nil {
		subject = m[1]
	} else if m := questionMarkRE.FindStringSubmatch(user); m != nil {
		subject = m[1] // first question of a transcript names the video
	}
	mode := "none"
	if req.ResponseFormat != nil {
		mode = string(req.ResponseFormat.Type)
	}
	f.mu.Lock()
	f.requests++
	f.attempts[kind+"|"+subject]++
	n, total := f.attempts[kind+"|"+subject], f.requests
	f.modes[mode]++
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	if req.Stream {
		f.streamed++
	}
	hook, delay, rejectSchema, faultFor := f.onRequest, f.delay, f.rejectSchema, f.faultFor
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if hook != nil {
		hook(total)
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if rejectSchema && mode == "json_schema" {
		http.Error(w, `{"error":{"message":"response_format json_schema is not supported by this server","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	flt := faultNone
	if faultFor != nil {
		flt = faultFor(kind, subject, n)
	}
	if writeFault(w, r, flt) {
		return
	}
	switch flt {
	case fault400EchoKey:
		http.Error(w, `{"error":{"message":"Request rejected for key `+llmKey+`: context too long","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	case faultEmptyChoices:
		json.NewEncoder(w).Encode(map[string]any{"id": "x", "object": "chat.completion", "choices": []any{}})
		return
	}
	content, finish := fakeReply(kind, user)
	if flt == faultBadContent {
		content = "Sure! Here are the questions you asked for: (not JSON)"
		if kind == "answers" || kind == "short" {
			content = "   "
		}
	}
	if req.Stream {
		f.stream(w, content, finish, flt == faultStreamCut)
		return
	}
	json.NewEncoder(w).Encode(openai.ChatCompletionResponse{ID: "c1", Object: "chat.completion", Model: req.Model,
		Choices: []openai.ChatCompletionChoice{{Index: 0, Message: openai.ChatCompletionMessage{Role: "assistant", Content: content},
			FinishReason: openai.FinishReason(finish)}}})
}

func (f *fakeLLM) stream(w http.ResponseWriter, content, finish string, cut bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	runes := []rune(content)
	parts := []string{string(runes[:len(runes)/3]), string(runes[len(runes)/3 : 2*len(runes)/3]), string(runes[2*len(runes)/3:])}
	for i, p := range parts {
		if cut && i == 2 {
			return // the connection ends without finish reason or [DONE]
		}
		chunk := map[string]any{"id": "s1", "object": "chat.completion.chunk",
			"choices": []any{map[string]any{"index": 0, "delta": map[string]string{"content": p}, "finish_reason": nil}}}
		b, _ := json.Marshal(chunk)
		fmt.Fprintf(w, "data: %s\n\n", b)
		fl.Flush()
	}
	last := map[string]any{"id": "s1", "object": "chat.completion.chunk",
		"choices": []any{map[string]any{"index": 0, "delta": map[string]string{}, "finish_reason": finish}}}
	b, _ := json.Marshal(last)
	fmt.Fprintf(w, "data: %s\n\ndata: [DONE]\n\n", b)
	fl.Flush()
}

// fakeReply is the deterministic reply of each kind of request.
func fakeReply(kind, user string) (string, string) {
	switch kind {
	case "questions":
		qs := []string{}
		for _, m := range questionMarkRE.FindAllStringSubmatch(user, -1) {
			qs = append(qs, m[1])
		}
		b, _ := json.Marshal(map[string]any{"questions": qs})
		return string(b), "stop"
	case "answers":
		q := ""
		if m := questionLineRE.FindStringSubmatch(user); m != nil {
			q = m[1]
		}
		low := strings.ToLower(q)
		switch {
		case strings.Contains(low, "refuse"):
			return "I'm sorry, but I cannot answer that from what I covered.", "stop"
		case strings.Contains(low, "truncate"):
			return "**Short version:** this answer goes on and on about " + q + " and then it stops in the middle of a", "length"
		case strings.Contains(low, "meta"):
			return "In this video I explain " + q + " at length, so watch the video to the end for every detail about it.\n\nThat is all.", "stop"
		}
		return fmt.Sprintf("**%s** is something I see every week in my clinic.\n\nHere is what I tell my patients:\n\n- Start gently and build up over a few weeks.\n- Keep a short diary of what makes it better or worse.\n\nMost people improve when they stay consistent (answer to: %s).", q, q), "stop"
	case "paraphrase":
		q := ""
		if m := questionLineRE.FindStringSubmatch(user); m != nil {
			q = m[1]
		}
		b, _ := json.Marshal(map[string]any{"paraphrases": []string{"In other words, " + q, "Put simply, " + q}})
		return string(b), "stop"
	case "short":
		return "In short: start gently, keep a diary and stay consistent.", "stop"
	}
	return "unknown request", "stop"
}

// ---------------------------------------------------------------------------
// Shared helpers.

// testEnv returns an Env whose sleeps are recorded, not slept, and whose
// logs go to buf.
type sleepLog struct {
	mu     sync.Mutex
	sleeps []time.Duration
}

func (s *sleepLog) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.sleeps = append(s.sleeps, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepLog) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.sleeps...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testEnv(logs *syncBuffer, sl *sleepLog) Env {
	return Env{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Getenv: func(k string) string {
			return map[string]string{"LLM_KEY": llmKey, "TRANSCRIPT_KEY": transcriptKey, "YT_KEY": youtubeKey}[k]
		},
		sleep:  sl.sleep,
		jitter: func() float64 { return 0.5 },
	}
}

// testConfig points every endpoint at the fakes, with short timeouts and
// small retry bounds so the suite stays fast.
func testConfig(t *testing.T, api *fakeTranscriptAPI, llm *fakeLLM) PipelineConfig {
	cfg := DefaultPipelineConfig()
	cfg.WorkDir = filepath.Join(t.TempDir(), "work")
	fast := HTTPConfig{Timeout: 400 * time.Millisecond, MaxRetries: 3, BackoffBase: 10 * time.Millisecond,
		BackoffMax: 100 * time.Millisecond, MaxRetryAfter: 10 * time.Second}
	cfg.Transcripts.HTTP, cfg.YouTube.HTTP, cfg.LLM.HTTP = fast, fast, fast
	cfg.Transcripts.API.APIKeyEnv = "TRANSCRIPT_KEY"
	cfg.Transcripts.API.PollInterval = time.Millisecond
	cfg.YouTube.APIKeyEnv = "YT_KEY"
	cfg.LLM.APIKeyEnv = "LLM_KEY"
	cfg.LLM.Model = "fake-model"
	cfg.LLM.MaxInvalidRetries = 2
	cfg.Transcripts.MinChars = 50
	if api != nil {
		cfg.Transcripts.API.BaseURL = api.srv.URL + "/v1"
		cfg.YouTube.BaseURL = api.srv.URL + "/yt"
	}
	if llm != nil {
		cfg.LLM.BaseURL = llm.url()
	}
	return cfg
}

// filler pads a transcript past the minimum length.
const filler = "Today I want to walk you through what I tell my patients in clinic every single week, step by step. "

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readLines[T any](t *testing.T, path string) []T {
	t.Helper()
	out, err := readJSONL[T](path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertNoSecrets fails if a secret appears in the logs or in any file
// under the given directories.
func assertNoSecrets(t *testing.T, logs string, dirs ...string) {
	t.Helper()
	secrets := []string{llmKey, transcriptKey, youtubeKey}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("secret %q appears in the logs", s)
		}
	}
	files := 0
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			files++
			b, _ := os.ReadFile(p)
			for _, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("secret %q appears in %s", s, p)
				}
			}
			return nil
		})
	}
	if files == 0 {
		t.Errorf("no output files checked for secrets in %v", dirs)
	}
}

// pick maps s to 0..n-1 deterministically, to spread faults over subjects.
func pick(s string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(s))
	return int(h.Sum32() % uint32(n))
}

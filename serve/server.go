package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fungtrain/fungtrain/llama"
)

// Options configure a Server.
type Options struct {
	// ModelID is the id of the base model in /v1/models and the "model"
	// field that selects it (besides "" and ModelAliases).
	ModelID      string
	ModelAliases []string
	// MaxTokens is the completion limit of a request that gives none
	// (lowered to what the context leaves).
	MaxTokens int
	// Sample holds the sampling settings of requests that give none
	// (temperature, top_p, top_k, min_p and the penalties; the seed is
	// ignored), as llama.cpp's server takes them from its command line.
	Sample llama.SampleOptions
	// RequestTimeout bounds a request from arrival to its last token.
	RequestTimeout time.Duration
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	// APIKey, when not empty, is the bearer token every /v1 request must
	// carry.
	APIKey string
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.MaxTokens <= 0 {
		o.MaxTokens = 512
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Minute
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 8 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Backend is what a ready server generates with.
type Backend struct {
	Engine    *llama.Engine
	Tokenizer *llama.Tokenizer
	StopIDs   []int32
	// Adapters are the adapter names by index (index 0, the base model, is
	// ""), as the engine's AdapterSet has them.
	Adapters []string
	// Constraints builds response_format constraints; nil refuses them.
	Constraints ConstraintFactory
}

// ConstraintFactory builds the token constraint of a response_format.
type ConstraintFactory interface {
	// JSON returns a constraint to any JSON value (schema nil) or to JSON
	// matching schema; an unsupported schema is an error that names what
	// is unsupported.
	JSON(schema json.RawMessage) (llama.TokenConstraint, error)
}

// Server answers the OpenAI-compatible API. Its handler serves /health
// (503 until SetBackend) at once; generation goes through the Backend's
// engine.
type Server struct {
	opts     Options
	log      *slog.Logger
	backend  atomic.Pointer[Backend]
	draining atomic.Bool
	created  int64
}

// New returns a server that is not ready yet.
func New(opts Options) *Server {
	opts.defaults()
	return &Server{opts: opts, log: opts.Logger, created: time.Now().Unix()}
}

// SetBackend makes the server ready.
func (s *Server) SetBackend(b *Backend) { s.backend.Store(b) }

// Drain makes the server refuse new generation requests (503) while the
// ones in flight finish.
func (s *Server) Drain() { s.draining.Store(true) }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("GET /v1/models", s.authed(s.models))
	mux.Handle("POST /v1/chat/completions", s.authed(s.chatCompletions))
	mux.Handle("POST /v1/completions", s.authed(s.completions))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "not_found", "no route for "+r.Method+" "+r.URL.Path)
	})
	return s.accessLog(mux)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.backend.Load() == nil {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	b := s.ready(w)
	if b == nil {
		return
	}
	list := modelList{Object: "list", Data: []modelEntry{{ID: s.opts.ModelID, Object: "model", Created: s.created, OwnedBy: "fungtrain"}}}
	for _, name := range b.Adapters[1:] {
		list.Data = append(list.Data, modelEntry{ID: name, Object: "model", Created: s.created, OwnedBy: "fungtrain", Parent: s.opts.ModelID})
	}
	writeJSON(w, http.StatusOK, list)
}

// ready returns the backend, or answers 503 when the model is loading or
// the server is shutting down.
func (s *Server) ready(w http.ResponseWriter) *Backend {
	b := s.backend.Load()
	switch {
	case b == nil:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "loading", "the model is still loading")
		return nil
	case s.draining.Load():
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "shutting_down", "the server is shutting down")
		return nil
	}
	return b
}

// adapterIndex resolves a request's "model" field.
func (s *Server) adapterIndex(b *Backend, model string) (int, bool) {
	if model == "" || model == s.opts.ModelID {
		return 0, true
	}
	for _, a := range s.opts.ModelAliases {
		if model == a {
			return 0, true
		}
	}
	for i, name := range b.Adapters {
		if i > 0 && name == model {
			return i, true
		}
	}
	return 0, false
}

// authed checks the bearer key when one is set. The key is compared in
// constant time and never logged.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	if s.opts.APIKey == "" {
		return h
	}
	want := []byte("Bearer " + s.opts.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fungtrain"`)
			writeError(w, http.StatusUnauthorized, "invalid_request_error", "", "invalid_api_key",
				"missing or wrong API key: send the key as an Authorization: Bearer header")
			return
		}
		h(w, r)
	})
}

// requestInfo is what a handler reports to the access log.
type requestInfo struct {
	model                    string
	promptTokens, completion int
	finish                   string
}

type infoKey struct{}

func infoOf(ctx context.Context) *requestInfo {
	if ri, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog logs every request: method, path, status, tokens and latency.
// A client that went away before the answer is logged with status 499.
func (s *Server) accessLog(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		ri := &requestInfo{}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), infoKey{}, ri)))
		status := sw.status
		if status == 0 {
			status = 499 // nothing written: the client went away
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status,
			"latency_ms", time.Since(t0).Milliseconds()}
		if ri.model != "" {
			attrs = append(attrs, "model", ri.model, "prompt_tokens", ri.promptTokens, "completion_tokens", ri.completion)
		}
		if ri.finish != "" {
			attrs = append(attrs, "finish", ri.finish)
		}
		s.log.Info("http request", attrs...)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, typ, param, code, msg string) {
	e := apiError{Message: msg, Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	writeJSON(w, status, map[string]apiError{"error": e})
}

// badRequest answers 400 naming the offending field.
func badRequest(w http.ResponseWriter, param, msg string) {
	writeError(w, http.StatusBadRequest, "invalid_request_error", param, "", msg)
}

// decodeBody reads a JSON body within the size limit; it answers the
// error itself and returns false on failure.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "", "request_too_large",
				"the request body is larger than the limit of "+strconv.FormatInt(s.opts.MaxBodyBytes, 10)+" bytes")
		case errors.As(err, &se):
			badRequest(w, "", "the request body is not valid JSON: "+err.Error()+" (at byte "+strconv.FormatInt(se.Offset, 10)+")")
		case errors.As(err, &te):
			badRequest(w, te.Field, "field "+te.Field+": expected "+te.Type.String()+", got a JSON "+te.Value)
		default:
			badRequest(w, "", "the request body is not valid JSON: "+err.Error())
		}
		return false
	}
	if dec.More() {
		badRequest(w, "", "the request body has data after the JSON object")
		return false
	}
	return true
}

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// fingerprint is the system_fingerprint of every response.
const fingerprint = "fungtrain"

// trimModelPath turns a model path into an id: its last path element.
func trimModelPath(p string) string {
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	return p
}

package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fungtrain/fungtrain/internal/progress"
)

// Env carries what the stages need from their caller. The zero value works:
// default logger, os.Getenv, no progress bar, a fresh http.Client.
type Env struct {
	// Logger receives the stage logs; nil means slog.Default().
	Logger *slog.Logger
	// Getenv reads the API keys; nil means os.Getenv.
	Getenv func(string) string
	// Progress makes a progress bar; nil means none. A nil *progress.Bar is
	// a valid no-op bar.
	Progress func(label string, total int) *progress.Bar
	// HTTPClient is shared by every request of a stage, so connections are
	// reused; nil means a new client with default transport settings. Its
	// Timeout should be 0: the timeout per attempt comes from HTTPConfig.
	HTTPClient *http.Client

	// Test hooks.
	sleep  func(context.Context, time.Duration) error
	jitter func() float64
}

func (e Env) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.Default()
}

func (e Env) getenv(k string) string {
	if e.Getenv != nil {
		return e.Getenv(k)
	}
	return os.Getenv(k)
}

func (e Env) bar(label string, total int) *progress.Bar {
	if e.Progress == nil {
		return nil
	}
	return e.Progress(label, total)
}

func (e Env) httpClient() *http.Client {
	if e.HTTPClient != nil {
		return e.HTTPClient
	}
	return NewHTTPClient()
}

// NewHTTPClient returns a client meant to be shared by a whole run: it keeps
// enough idle connections per host for the LLM concurrency, so connections
// are reused rather than reopened. It has no overall timeout; the retry
// layer sets one per attempt.
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: t}
}

// apiKey reads the key named by envName. Both the variable's name and where
// in the config it came from are in the error; the value never is.
func (e Env) apiKey(envName, key string, required bool) (string, error) {
	if envName == "" {
		if required {
			return "", fmt.Errorf("data.%s is empty: name the environment variable that holds the API key", key)
		}
		return "", nil
	}
	v := strings.TrimSpace(e.getenv(envName))
	if v == "" && required {
		return "", fmt.Errorf("environment variable %s (data.%s) is not set", envName, key)
	}
	return v, nil
}

// redactor hides secrets in strings and errors that may be logged or
// written to reports.
type redactor struct{ forms []string }

const redacted = "[REDACTED]"

func newRedactor(secrets ...string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		if len(s) < 4 { // too short to be a key; replacing it would garble text
			continue
		}
		r.forms = append(r.forms, s, url.QueryEscape(s), url.PathEscape(s))
	}
	return r
}

func (r *redactor) add(secrets ...string) {
	r.forms = append(r.forms, newRedactor(secrets...).forms...)
}

func (r *redactor) str(s string) string {
	if r == nil {
		return s
	}
	for _, f := range r.forms {
		s = strings.ReplaceAll(s, f, redacted)
	}
	return s
}

// err returns an error whose message has no secret. errors.Is and As still
// see the original chain except for *url.Error, which is rebuilt with a
// redacted URL.
func (r *redactor) err(err error) error {
	if err == nil || r == nil || len(r.forms) == 0 {
		return err
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		c := *ue
		c.URL = r.str(ue.URL)
		if c.Err != nil {
			c.Err = r.err(c.Err)
		}
		if err == error(ue) {
			return &c
		}
	}
	msg := err.Error()
	if clean := r.str(msg); clean != msg {
		return &redactedError{msg: clean, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// retryDoer sends requests through one shared http.Client with a timeout
// per attempt, a rate limit, and bounded retries with exponential backoff
// and jitter on network errors, timeouts, cut bodies, 429 and 5xx,
// honouring Retry-After. It implements go-openai's HTTPDoer.
//
// Except for event streams, the body is read completely inside Do, so a body
// cut short is retried like a network error.
type retryDoer struct {
	name    string
	client  *http.Client
	cfg     HTTPConfig
	limiter *Limiter
	log     *slog.Logger
	red     *redactor
	sleep   func(context.Context, time.Duration) error
	jitter  func() float64

	attempts atomic.Int64
	retries  atomic.Int64
}

func newRetryDoer(name string, cfg HTTPConfig, env Env, red *redactor) *retryDoer {
	d := &retryDoer{
		name:    name,
		client:  env.httpClient(),
		cfg:     cfg,
		limiter: NewLimiter(cfg.RatePerSec, cfg.Burst),
		log:     env.logger(),
		red:     red,
		sleep:   env.sleep,
		jitter:  env.jitter,
	}
	if d.sleep == nil {
		d.sleep = sleepCtx
	}
	if d.jitter == nil {
		d.jitter = rand.Float64
	}
	return d
}

// Do sends req, retrying as configured. The returned response, if any, is
// the last one received; its status may still be an error status once the
// retries are spent.
func (d *retryDoer) Do(req *http.Request) (*http.Response, error) {
	resp, _, err := d.do(req)
	return resp, err
}

// do is Do that also returns the number of attempts made.
func (d *retryDoer) do(req *http.Request) (_ *http.Response, attempts int, _ error) {
	ctx := req.Context()
	if req.Body != nil && req.GetBody == nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("%s: read request body: %w", d.name, err)
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	stream := strings.Contains(req.Header.Get("Accept"), "text/event-stream")
	for attempt := 0; ; attempt++ {
		if err := d.limiter.Wait(ctx); err != nil {
			return nil, attempt, err
		}
		r := req.Clone(ctx)
		if attempt > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, attempt, fmt.Errorf("%s: rewind request body: %w", d.name, err)
			}
			r.Body = body
		}
		d.attempts.Add(1)
		resp, err := d.once(r, stream)
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, attempt + 1, ctx.Err()
		}
		wait, retry := d.shouldRetry(resp, err, attempt)
		if !retry || attempt >= d.cfg.MaxRetries {
			if err != nil {
				if attempt > 0 {
					err = fmt.Errorf("%s: giving up after %d attempts: %w", d.name, attempt+1, err)
				}
				return nil, attempt + 1, &transportError{err: d.red.err(err)}
			}
			return resp, attempt + 1, nil
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		d.retries.Add(1)
		d.log.Warn("retrying request", "api", d.name, "path", req.URL.Path, "status", status,
			"error", errString(d.red.err(err)), "attempt", attempt+1, "wait", wait.Round(time.Millisecond))
		if err := d.sleep(ctx, wait); err != nil {
			return nil, attempt + 1, err
		}
	}
}

// once sends one attempt under the per-attempt timeout. Unless the reply is
// a successful event stream, the body is read here.
func (d *retryDoer) once(r *http.Request, stream bool) (*http.Response, error) {
	actx, cancel := context.WithTimeout(r.Context(), d.cfg.Timeout)
	resp, err := d.client.Do(r.WithContext(actx))
	if err != nil {
		cancel()
		return nil, err
	}
	if stream && resp.StatusCode < 300 {
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
		return resp, nil
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	if rerr != nil {
		return nil, fmt.Errorf("read %d response body (cut after %d bytes): %w", resp.StatusCode, len(b), rerr)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	return resp, nil
}

// shouldRetry decides on a retry and its wait.
func (d *retryDoer) shouldRetry(resp *http.Response, err error, attempt int) (time.Duration, bool) {
	if err != nil {
		return d.backoff(attempt), true
	}
	if !retryableStatus(resp.StatusCode) {
		return 0, false
	}
	if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		if ra > d.cfg.MaxRetryAfter {
			d.log.Warn("not retrying: server asks to wait longer than max_retry_after", "api", d.name,
				"status", resp.StatusCode, "retry_after", ra, "max_retry_after", d.cfg.MaxRetryAfter)
			return 0, false
		}
		return ra, true
	}
	return d.backoff(attempt), true
}

// backoff is base*2^attempt capped at BackoffMax, with "equal jitter": half
// fixed, half random.
func (d *retryDoer) backoff(attempt int) time.Duration {
	b := d.cfg.BackoffBase
	for range attempt {
		b *= 2
		if d.cfg.BackoffMax > 0 && b >= d.cfg.BackoffMax {
			b = d.cfg.BackoffMax
			break
		}
	}
	if d.cfg.BackoffMax > 0 {
		b = min(b, d.cfg.BackoffMax)
	}
	return b/2 + time.Duration(d.jitter()*float64(b/2))
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported, http.StatusNetworkAuthenticationRequired:
		return false
	}
	return code >= 500 && code <= 599
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n < 0 {
			return 0, true
		}
		return time.Duration(n * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// transportError is a request that failed without a usable HTTP response
// once the retries were spent.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

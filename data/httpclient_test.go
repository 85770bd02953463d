package data

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 2 ", 2 * time.Second, true},
		{"0.25", 250 * time.Millisecond, true},
		{"-3", 0, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"soon", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestBackoffDoublesWithJitterAndCap(t *testing.T) {
	cfg := HTTPConfig{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second}
	for _, tc := range []struct {
		jitter  float64
		attempt int
		want    time.Duration
	}{
		{0, 0, 50 * time.Millisecond},
		{1, 0, 100 * time.Millisecond},
		{0.5, 1, 150 * time.Millisecond},
		{0, 3, 400 * time.Millisecond},
		{1, 4, time.Second},
		{1, 60, time.Second}, // no overflow
		{0, 60, 500 * time.Millisecond},
	} {
		d := &retryDoer{cfg: cfg, jitter: func() float64 { return tc.jitter }}
		if got := d.backoff(tc.attempt); got != tc.want {
			t.Errorf("backoff(attempt %d, jitter %g) = %v, want %v", tc.attempt, tc.jitter, got, tc.want)
		}
	}
}

func TestLimiterReserve(t *testing.T) {
	l := NewLimiter(10, 2) // 10/s, burst 2
	t0 := time.Unix(1000, 0)
	waits := []time.Duration{
		l.reserve(t0), l.reserve(t0), l.reserve(t0), l.reserve(t0),
	}
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond}
	for i := range want {
		if diff := waits[i] - want[i]; diff < -time.Microsecond || diff > time.Microsecond {
			t.Errorf("reserve #%d wait = %v, want %v", i+1, waits[i], want[i])
		}
	}
	// After 1s the bucket is full again (capped at the burst).
	if w := l.reserve(t0.Add(time.Second)); w != 0 {
		t.Errorf("wait after refill = %v, want 0", w)
	}
	if w := l.reserve(t0.Add(time.Second)); w != 0 {
		t.Errorf("second wait after refill = %v, want 0", w)
	}
	if w := l.reserve(t0.Add(time.Second)); w < 99*time.Millisecond || w > 101*time.Millisecond {
		t.Errorf("third wait after refill = %v, want 100ms", w)
	}
	if NewLimiter(0, 5) != nil {
		t.Error("NewLimiter(0) should be nil (no limit)")
	}
	var nl *Limiter
	if err := nl.Wait(context.Background()); err != nil {
		t.Errorf("nil limiter Wait = %v", err)
	}
}

func TestLimiterWaitRealTime(t *testing.T) {
	l := NewLimiter(200, 1)
	start := time.Now()
	for range 5 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 18*time.Millisecond {
		t.Errorf("5 requests at 200/s burst 1 took %v, want at least 20ms", el)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on a cancelled context = %v", err)
	}
}

// scriptServer answers with the given sequence of behaviours, one per
// request, repeating the last.
func scriptServer(t *testing.T, script ...fault) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		f := script[min(i, len(script)-1)]
		if writeFault(w, r, f) {
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, `{"ok":true,"echo":%q}`, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestRetryDoer(t *testing.T) {
	cfg := HTTPConfig{Timeout: 300 * time.Millisecond, MaxRetries: 3, BackoffBase: 10 * time.Millisecond,
		BackoffMax: 80 * time.Millisecond, MaxRetryAfter: 30 * time.Second}
	tests := []struct {
		name       string
		script     []fault
		wantStatus int // 0: an error is expected
		wantReqs   int64
		wantSleeps []time.Duration
	}{
		{"ok first time", []fault{faultNone}, 200, 1, nil},
		{"429 honours Retry-After", []fault{fault429, faultNone}, 200, 2, []time.Duration{time.Second}},
		{"500 then ok", []fault{fault500, fault500, faultNone}, 200, 3, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}},
		{"500 forever is bounded", []fault{fault500}, 500, 4, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}},
		{"timeout then ok", []fault{faultHang, faultNone}, 200, 2, []time.Duration{10 * time.Millisecond}},
		{"truncated body then ok", []fault{faultTruncated, faultNone}, 200, 2, []time.Duration{10 * time.Millisecond}},
		{"truncated forever", []fault{faultTruncated}, 0, 4, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}},
		{"Retry-After above the maximum is not waited", []fault{fault503LongWait, faultNone}, 503, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, n := scriptServer(t, tc.script...)
			var sl sleepLog
			var logs syncBuffer
			env := testEnv(&logs, &sl)
			env.jitter = func() float64 { return 1 } // backoff = full base*2^n
			d := newRetryDoer("test", cfg, env, newRedactor())
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/x", strings.NewReader("payload"))
			resp, err := d.Do(req)
			if tc.wantStatus == 0 {
				if err == nil {
					t.Fatalf("want an error, got status %d", resp.StatusCode)
				}
				var te *transportError
				if !errors.As(err, &te) || !strings.Contains(err.Error(), "giving up after 4 attempts") {
					t.Errorf("error = %v, want a transportError after 4 attempts", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if resp.StatusCode != tc.wantStatus {
					t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
				}
				if tc.wantStatus == 200 {
					b, _ := io.ReadAll(resp.Body)
					if string(b) != `{"ok":true,"echo":"payload"}` {
						t.Errorf("body = %s: the request body was not replayed", b)
					}
				}
			}
			if got := n.Load(); got != tc.wantReqs {
				t.Errorf("server saw %d requests, want %d", got, tc.wantReqs)
			}
			if got := sl.all(); fmt.Sprint(got) != fmt.Sprint(tc.wantSleeps) {
				t.Errorf("sleeps = %v, want %v", got, tc.wantSleeps)
			}
			if d.attempts.Load() != tc.wantReqs || d.retries.Load() != tc.wantReqs-1 {
				t.Errorf("counters attempts=%d retries=%d, want %d and %d", d.attempts.Load(), d.retries.Load(), tc.wantReqs, tc.wantReqs-1)
			}
		})
	}
}

func TestRetryDoerStopsOnCancel(t *testing.T) {
	srv, n := scriptServer(t, fault500)
	ctx, cancel := context.WithCancel(context.Background())
	env := Env{sleep: func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }}
	d := newRetryDoer("test", HTTPConfig{Timeout: time.Second, MaxRetries: 5, BackoffBase: time.Millisecond}, env, nil)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if _, err := d.Do(req); !errors.Is(err, context.Canceled) {
		t.Errorf("Do = %v, want context.Canceled", err)
	}
	if n.Load() != 1 {
		t.Errorf("requests = %d, want 1", n.Load())
	}
}

func TestRedactorHidesKeyInURLErrors(t *testing.T) {
	secret := "k3y-SECRET/+="
	red := newRedactor(secret)
	d := newRetryDoer("yt", HTTPConfig{Timeout: 50 * time.Millisecond, MaxRetries: 1, BackoffBase: time.Millisecond},
		Env{sleep: func(ctx context.Context, _ time.Duration) error { return nil }}, red)
	// Nothing listens on this port of the loopback address.
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/channels?key="+strings.ReplaceAll(secret, "/", "%2F")+"&id=x", nil)
	_, err := d.Do(req)
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	if strings.Contains(msg, "SECRET") {
		t.Errorf("secret in error: %s", msg)
	}
	if !strings.Contains(msg, redacted) || !strings.Contains(msg, "127.0.0.1:1") {
		t.Errorf("error lost its context: %s", msg)
	}
	if got := red.str("key " + secret + " and " + "k3y-SECRET%2F%2B%3D"); got != "key [REDACTED] and [REDACTED]" {
		t.Errorf("str = %q", got)
	}
}

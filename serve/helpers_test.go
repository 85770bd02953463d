package serve

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// Tests run fungtrain serve in-process on loopback with SmolLM2-135M
// (float32 on the CPU) and talk to it with clients nobody here wrote:
// go-openai and the openai Python package. The server's engine holds the
// MLX thread while it runs, so reference answers are computed before a
// server starts.

const smolLM2 = "third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf"

// nearTie is the largest top-2 logit gap at which a batched greedy answer
// may pick another token than the one-at-a-time run (see llama's
// batch_test.go: batched float32 products round differently in the last
// bits).
const nearTie = 1e-2

func repoPath(t testing.TB, rel string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test asset %s is missing (%v): run ./build.sh setup to fetch the test assets", rel, err)
	}
	return p
}

// syncBuffer is a log sink safe for concurrent writes.
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

// testServer is a server started by startServer.
type testServer struct {
	url    string // http://127.0.0.1:PORT
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startServer runs Run on a free loopback port and waits until /health
// answers 200. The server stops at the end of the test.
func startServer(t *testing.T, o RunOptions) *testServer {
	t.Helper()
	if o.ModelPath == "" {
		o.ModelPath = repoPath(t, smolLM2)
	}
	o.Addr = "127.0.0.1:0"
	logs := &syncBuffer{}
	o.Server.Logger = slog.New(slog.NewTextHandler(logs, nil))
	addr := make(chan net.Addr, 1)
	o.Listening = func(a net.Addr) { addr <- a }
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- Run(ctx, o) }()
	select {
	case a := <-addr:
		s.url = "http://" + a.String()
	case err := <-s.done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("serve stopped before it was ready: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready after 3 minutes\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop cancels the server's context and waits for Run to return.
func (s *testServer) stop() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		return err
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("serve did not stop within 2 minutes")
	}
}

// refRequest is one request to compute a one-at-a-time reference for.
type refRequest struct {
	messages  []llama.Message // chat; or
	prompt    string          // a raw completion prompt
	maxTokens int
	sample    llama.SampleOptions
	stops     []string
	adapter   string // an adapter directory to load for this request
}

// reference is the one-at-a-time answer to a refRequest.
type reference struct {
	promptTokens int
	ids          []int32
	gaps         []float64 // greedy: the top-2 logit gap before each token
	prefixes     []string  // the text of ids[:k+1]
	text         string    // through the stop strings
	finish       string
}

// references computes the one-at-a-time answers with llama's Generate (the
// code path of fungtrain generate) on the MLX thread; for greedy requests it
// also decodes step by step to record the top-2 gaps, and checks both runs
// agree.
func references(t *testing.T, reqs []refRequest) []reference {
	t.Helper()
	out := make([]reference, len(reqs))
	err := mlx.Do(func() error {
		b, err := llama.Open(repoPath(t, smolLM2), llama.LoadOptions{})
		if err != nil {
			return err
		}
		defer b.Close()
		for i, rq := range reqs {
			var ids []int32
			if rq.messages != nil {
				ids, _, err = b.Tokenizer.EncodeChat(rq.messages, true)
			} else {
				ids, err = b.Tokenizer.Encode(rq.prompt, true)
			}
			if err != nil {
				return err
			}
			r := reference{promptTokens: len(ids)}
			var ad *lora.Adapters
			if rq.adapter != "" {
				if ad, err = lora.Load(b.Model, rq.adapter); err != nil {
					return err
				}
			}
			ts := b.Tokenizer.NewTextStream(rq.stops)
			var sb strings.Builder
			st, err := b.Model.Generate(ids, llama.GenerateOptions{MaxTokens: rq.maxTokens, Sample: rq.sample, StopIDs: b.StopIDs},
				func(id int32) bool {
					r.ids = append(r.ids, id)
					piece, hit := ts.Add(id)
					sb.WriteString(piece)
					return !hit
				})
			if err != nil {
				return err
			}
			sb.WriteString(ts.Finish())
			r.text = sb.String()
			r.finish = "length"
			if st.HitStop || ts.Stopped() {
				r.finish = "stop"
			}
			for k := range r.ids {
				r.prefixes = append(r.prefixes, b.Tokenizer.Decode(r.ids[:k+1]))
			}
			if rq.sample.Temp == 0 && rq.sample.RepetitionPenalty == 0 {
				steps, gaps, err := greedySteps(b, ids, len(r.ids))
				if err != nil {
					return err
				}
				if ad != nil {
					ad.Remove()
					ad = nil
				}
				if !slices.Equal(steps, r.ids) {
					return fmt.Errorf("request %d: step-by-step greedy %v differs from Generate %v", i, steps, r.ids)
				}
				r.gaps = gaps
			}
			if ad != nil {
				ad.Remove()
			}
			out[i] = r
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// greedySteps decodes n tokens greedily one at a time with a KV cache and
// returns them with the top-2 logit gap of each step.
func greedySteps(b *llama.Bundle, prompt []int32, n int) ([]int32, []float64, error) {
	m := b.Model
	caches := m.NewCaches()
	defer llama.FreeCaches(caches)
	var ids []int32
	var gaps []float64
	// As Generate: the prompt but its last token fills the cache, the last
	// token is the first step's input.
	if len(prompt) > 1 {
		s := mlx.NewScope()
		err := mlx.Eval(m.Hidden(mlx.FromInt32s(prompt[:len(prompt)-1], 1, len(prompt)-1), caches))
		s.Close()
		if err != nil {
			return nil, nil, err
		}
	}
	in := prompt[len(prompt)-1:]
	for range n {
		s := mlx.NewScope()
		logits := m.Forward(mlx.FromInt32s(in, 1, len(in)), caches)
		last := mlx.Reshape(mlx.SliceAxis(logits, 1, len(in)-1, len(in)), -1)
		v, err := last.Float32s()
		s.Close()
		if err != nil {
			return nil, nil, err
		}
		best, second := -1, -1
		for i := range v {
			switch {
			case best < 0 || v[i] > v[best]:
				best, second = i, best
			case second < 0 || v[i] > v[second]:
				second = i
			}
		}
		ids = append(ids, int32(best))
		gaps = append(gaps, float64(v[best]-v[second]))
		in = []int32{int32(best)}
	}
	return ids, gaps, nil
}

// checkAnswer compares a served answer with its reference: the same text,
// or, for a greedy request, the same up to a first different token that was
// a near tie in the one-at-a-time run.
func checkAnswer(t *testing.T, name, got string, ref reference) {
	t.Helper()
	if got == ref.text {
		return
	}
	if ref.gaps == nil {
		t.Errorf("%s: answer %q, want %q", name, got, ref.text)
		return
	}
	for k, p := range ref.prefixes {
		if !strings.HasPrefix(got, p) {
			if ref.gaps[k] >= nearTie {
				t.Errorf("%s: answer %q departs from %q at token %d, where the top-2 gap was %.4g (not a near tie, tolerance %g)",
					name, got, ref.text, k, ref.gaps[k], nearTie)
			} else {
				t.Logf("%s: departs from the one-at-a-time answer at token %d, a near tie (gap %.3g)", name, k, ref.gaps[k])
			}
			return
		}
	}
	t.Errorf("%s: answer %q, want %q", name, got, ref.text)
}

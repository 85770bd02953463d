package serve

import (
	"context"
	"strings"
	"sync"

	"github.com/fungtrain/fungtrain/llama"
)

// job carries one sequence's text from the engine (on the MLX thread) to
// its HTTP handler. The engine side never blocks: text is appended under a
// lock and the handler is woken through a one-slot channel.
type job struct {
	text *llama.TextStream

	mu      sync.Mutex
	pending strings.Builder
	done    bool
	tokens  int  // generated so far
	stopped bool // a stop string ended the text
	res     llama.SeqResult
	wake    chan struct{}
}

func newJob(tok *llama.Tokenizer, stops []string) *job {
	return &job{text: tok.NewTextStream(stops), wake: make(chan struct{}, 1)}
}

func (j *job) signal() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// emit takes a generated token (engine side); false ends the sequence at a
// stop string.
func (j *job) emit(id int32) bool {
	piece, hit := j.text.Add(id)
	j.mu.Lock()
	j.pending.WriteString(piece)
	j.tokens++
	j.stopped = hit
	j.mu.Unlock()
	j.signal()
	return !hit
}

// finish records the end of the sequence (engine side).
func (j *job) finish(r llama.SeqResult) {
	tail := j.text.Finish()
	j.mu.Lock()
	j.pending.WriteString(tail)
	j.res, j.done = r, true
	j.mu.Unlock()
	j.signal()
}

// request fills the callbacks of r.
func (j *job) request(r llama.SeqRequest) llama.SeqRequest {
	r.Emit, r.Done = j.emit, j.finish
	return r
}

// next waits for new text or the end of the sequence and returns the text
// since the last call, whether the sequence ended (with its result), or
// ctx's error.
func (j *job) next(ctx context.Context) (text string, done bool, res llama.SeqResult, err error) {
	for {
		j.mu.Lock()
		text, done, res = j.pending.String(), j.done, j.res
		j.pending.Reset()
		j.mu.Unlock()
		if text != "" || done {
			return text, done, res, nil
		}
		select {
		case <-j.wake:
		case <-ctx.Done():
			return "", false, res, ctx.Err()
		}
	}
}

// generated is the number of tokens generated so far.
func (j *job) generated() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.tokens
}

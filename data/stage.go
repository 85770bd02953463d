package data

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// StageOptions are per-run switches of the LLM stages.
type StageOptions struct {
	// Force discards the stage's journal and redoes every item.
	Force bool
}

// ItemFailure is an item a stage could not finish. It is not journaled, so
// a rerun tries it again.
type ItemFailure struct {
	ID string `json:"id"`
	// Class is transient (HTTP retries spent), invalid (unusable replies
	// every time) or rejected (the server refused the request).
	Class  string `json:"class"`
	Reason string `json:"reason"`
}

// StageReport is written to {stage}.report.json by the LLM stages.
type StageReport struct {
	Stage         string        `json:"stage"`
	Items         int           `json:"items"`
	AlreadyDone   int           `json:"already_done"`
	Generated     int           `json:"generated"`
	Failed        []ItemFailure `json:"failed"`
	Output        string        `json:"output"`
	OutputRecords int           `json:"output_records"`
	Interrupted   bool          `json:"interrupted,omitempty"`
	llmStats
}

// breaker stops an LLM stage that cannot succeed: at once when the server
// rejects the API key (401 or 403), and after limit transient failures in a
// row (an endpoint that is down), instead of spending every item's retries.
type breaker struct {
	mu          sync.Mutex
	consecutive int
	limit       int
	keyEnv      string
}

func newBreaker(conc int, keyEnv string) *breaker {
	return &breaker{limit: max(2*conc, 10), keyEnv: keyEnv}
}

// record notes the outcome of an item and returns an error when the stage
// should stop.
func (b *breaker) record(err error, red *redactor) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		b.consecutive = 0
		return nil
	}
	if s := httpStatusOf(err); s == http.StatusUnauthorized || s == http.StatusForbidden {
		return fmt.Errorf("the LLM server rejected the request (HTTP %d; is the key in %s right?): %w", s, b.keyEnv, red.err(err))
	}
	var le *llmError
	if errors.As(err, &le) && le.class == failTransient {
		b.consecutive++
		if b.consecutive >= b.limit {
			return fmt.Errorf("stopping: %d requests in a row failed after their retries; last error: %w", b.consecutive, red.err(err))
		}
	} else {
		b.consecutive = 0
	}
	return nil
}

// stageRun is what an LLM stage's workers share: the client (nil when
// nothing is left to do), the redactor for its errors, the circuit breaker,
// and the report they fill under one lock.
type stageRun struct {
	llm *llmClient
	red *redactor
	brk *breaker
	rep *StageReport
	log *slog.Logger
	mu  sync.Mutex
}

// startStage prepares the workers of a stage with todo items at
// concurrency conc; on error it closes the stage's journal j.
func startStage(cfg LLMConfig, env Env, log *slog.Logger, rep *StageReport, j *journal, todo, conc int) (*stageRun, error) {
	r := &stageRun{red: newRedactor(), brk: newBreaker(conc, cfg.APIKeyEnv), rep: rep, log: log}
	if todo > 0 {
		llm, err := newLLMClient(cfg, env, log)
		if err != nil {
			j.close()
			return nil, err
		}
		r.llm, r.red = llm, llm.red
	}
	return r, nil
}

// failed handles an item the LLM could not do. A cancelled run or a
// tripped breaker ends the stage (the error is returned); otherwise the
// failure of item id is logged with msg and attrs, reported, and the stage
// goes on.
func (r *stageRun) failed(ctx context.Context, id string, err error, msg string, attrs ...any) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ferr := r.brk.record(err, r.red); ferr != nil {
		return ferr
	}
	f := failureOf(id, err, r.red)
	r.log.Warn(msg, append(attrs, "class", f.Class, "reason", f.Reason)...)
	r.mu.Lock()
	r.rep.Failed = append(r.rep.Failed, f)
	r.mu.Unlock()
	return nil
}

// succeeded journals an item's entry e, then runs keep under the lock and
// counts the item.
func (r *stageRun) succeeded(j *journal, e any, keep func()) error {
	r.brk.record(nil, r.red)
	if err := j.append(e); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	keep()
	r.rep.Generated++
	return nil
}

// failureOf describes an item error for a report.
func failureOf(id string, err error, red *redactor) ItemFailure {
	class := string(failInvalid)
	var le *llmError
	if errors.As(err, &le) {
		class = string(le.class)
	}
	return ItemFailure{ID: id, Class: class, Reason: red.str(err.Error())}
}

func sortFailures(f []ItemFailure) {
	slices.SortFunc(f, func(a, b ItemFailure) int { return strings.Compare(a.ID, b.ID) })
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

func concurrencyOf(stage int, llm LLMConfig) int {
	if stage > 0 {
		return stage
	}
	return llm.Concurrency
}

// finishStage closes an LLM stage's journal, records the client's request
// figures in its report, and folds the journal's error into the run's.
func finishStage(ctx context.Context, rep *StageReport, j *journal, llm *llmClient, jsonMode bool, runErr error) error {
	cerr := j.close()
	if llm != nil {
		rep.llmStats = llm.stats(jsonMode)
	}
	if runErr != nil {
		rep.Interrupted = ctx.Err() != nil
		return errors.Join(runErr, cerr)
	}
	return cerr
}

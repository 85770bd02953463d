package llama

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/fungtrain/fungtrain/mlx"
)

// Engine serves concurrent callers (a server's request handlers) with one
// Batch driven on the MLX thread: Submit queues a sequence from any
// goroutine, and Run, on the MLX thread, admits queued sequences whenever
// the batch has room and steps the batch. A sequence's Emit and Done
// callbacks run on the MLX thread: they must not block.
type Engine struct {
	m       *Model
	opts    EngineOptions
	submit  chan SeqRequest
	stopped atomic.Bool
}

// EngineOptions configure an Engine.
type EngineOptions struct {
	Batch BatchOptions
	// QueueSize is how many sequences may wait for a place in the batch;
	// Submit refuses more with ErrQueueFull (default 64).
	QueueSize int
	Logger    *slog.Logger
}

// ErrQueueFull is returned by Submit when the queue is full.
var ErrQueueFull = errors.New("the request queue is full")

// ErrEngineStopped is returned by Submit after Run has returned.
var ErrEngineStopped = errors.New("the engine has stopped")

// NewEngine returns an engine over m; call Run to start it.
func NewEngine(m *Model, opts EngineOptions) *Engine {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 64
	}
	if opts.Batch.MaxBatch <= 0 {
		opts.Batch.MaxBatch = 16
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Engine{m: m, opts: opts, submit: make(chan SeqRequest, opts.QueueSize)}
}

// Model is the engine's model.
func (e *Engine) Model() *Model { return e.m }

// Adapters is the engine's adapter set (nil when none is installed).
func (e *Engine) Adapters() *AdapterSet { return e.opts.Batch.Adapters }

// Queued is the number of submitted sequences not yet taken into the batch.
func (e *Engine) Queued() int { return len(e.submit) }

// Submit checks a request and queues it without blocking. It fails with the
// check's error, or with ErrQueueFull. Once Submit succeeds, Done is called
// exactly once.
func (e *Engine) Submit(r SeqRequest) error {
	if err := e.m.CheckRequest(r, e.opts.Batch.Adapters); err != nil {
		return err
	}
	if e.stopped.Load() {
		return ErrEngineStopped
	}
	select {
	case e.submit <- r:
		return nil
	default:
		return ErrQueueFull
	}
}

// Run drives the batch on the MLX thread until ctx ends, then cancels every
// sequence still running or queued (their Done reports FinishCancelled).
// A failed step fails the sequences in the batch, is logged, and the
// engine goes on with the next ones.
func (e *Engine) Run(ctx context.Context) error {
	return mlx.Do(func() error {
		b := NewBatch(e.m, e.opts.Batch)
		defer func() {
			e.stopped.Store(true)
			b.Close()
			e.drain()
		}()
		for {
			if b.Pending() == 0 {
				b.Release()
				mlx.ClearCache()
				select {
				case r := <-e.submit:
					e.add(b, r)
				case <-ctx.Done():
					return nil
				}
			}
			if ctx.Err() != nil {
				return nil
			}
			for b.Pending() < e.opts.Batch.MaxBatch {
				select {
				case r := <-e.submit:
					e.add(b, r)
					continue
				default:
				}
				break
			}
			if err := b.Step(); err != nil {
				e.opts.Logger.Error("generation step failed; its sequences end with an error", "err", err)
			}
		}
	})
}

func (e *Engine) add(b *Batch, r SeqRequest) {
	if err := b.Add(r); err != nil && r.Done != nil {
		r.Done(SeqResult{PromptTokens: len(r.Prompt), Finish: FinishError, Err: fmt.Errorf("engine: %w", err)})
	}
}

// drain ends the queued sequences after Run stops.
func (e *Engine) drain() {
	for {
		select {
		case r := <-e.submit:
			if r.Done != nil {
				r.Done(SeqResult{PromptTokens: len(r.Prompt), Finish: FinishCancelled, Err: errors.New("the engine stopped")})
			}
		default:
			return
		}
	}
}

package llama

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestEngine submits sequences from many goroutines to an engine running
// on the MLX thread: each gets Generate's tokens; a full queue refuses with
// ErrQueueFull; a cancelled context ends its sequence; stopping the engine
// ends what is queued and refuses new sequences.
func TestEngine(t *testing.T) {
	m := peakyRandomModel(t)
	V := m.Config.VocabSize
	const n = 10
	prompts := make([][]int32, n)
	want := make([][]int32, n)
	doMLX(t, func() error {
		for i := range prompts {
			prompts[i] = randomPrompt(100+i, 3+5*i, V)
			var err error
			if want[i], _, err = generateIDs(m, prompts[i], GenerateOptions{MaxTokens: 6 + i}); err != nil {
				return err
			}
		}
		return nil
	})
	e := NewEngine(m, EngineOptions{QueueSize: n, Batch: BatchOptions{MaxBatch: 4}})
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- e.Run(ctx) }()

	got := make([][]int32, n)
	results := make([]SeqResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			done := make(chan struct{})
			err := e.Submit(SeqRequest{Prompt: prompts[i], MaxTokens: 6 + i,
				Emit: func(id int32) bool { got[i] = append(got[i], id); return true },
				Done: func(r SeqResult) { results[i] = r; close(done) }})
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				wg.Done()
				return
			}
			<-done
			wg.Done()
		}()
	}
	wg.Wait()
	for i := range n {
		if !slices.Equal(got[i], want[i]) || results[i].Finish != FinishLength || results[i].GeneratedTokens != len(want[i]) {
			t.Errorf("sequence %d: %v (%+v), want %v", i, got[i], results[i], want[i])
		}
	}

	// A long sequence whose context is cancelled after a few tokens.
	cctx, cancel := context.WithCancel(context.Background())
	tokens := make(chan int32, 1000)
	done := make(chan SeqResult, 1)
	if err := e.Submit(SeqRequest{Prompt: prompts[0], MaxTokens: 3000, Ctx: cctx,
		Emit: func(id int32) bool { tokens <- id; return true }, Done: func(r SeqResult) { done <- r }}); err != nil {
		t.Fatal(err)
	}
	<-tokens
	<-tokens
	cancel()
	select {
	case r := <-done:
		if r.Finish != FinishCancelled || !errors.Is(r.Err, context.Canceled) || r.GeneratedTokens >= 3000 {
			t.Errorf("cancelled sequence: %+v", r)
		}
	case <-time.After(time.Minute):
		t.Fatal("a cancelled sequence did not end")
	}

	// Errors of Submit: a bad request, then a full queue behind a batch of
	// long sequences (whose Emit holds the engine until the end, so the
	// queue cannot drain).
	if err := e.Submit(SeqRequest{Prompt: []int32{int32(V)}, MaxTokens: 1}); err == nil {
		t.Error("a token outside the vocabulary was accepted")
	}
	var ends sync.WaitGroup
	block := make(chan struct{})
	var endResults []SeqResult
	var mu sync.Mutex
	submitted, full := 0, 0
	for range 4 + n + 5 {
		ends.Add(1)
		err := e.Submit(SeqRequest{Prompt: prompts[1], MaxTokens: 2000,
			Emit: func(int32) bool { <-block; return true },
			Done: func(r SeqResult) { mu.Lock(); endResults = append(endResults, r); mu.Unlock(); ends.Done() }})
		switch {
		case errors.Is(err, ErrQueueFull):
			full++
			ends.Done()
		case err != nil:
			t.Fatal(err)
		default:
			submitted++
		}
	}
	if full == 0 {
		t.Errorf("%d submitted to a queue of %d behind a batch of 4, none refused", submitted, n)
	}
	// Stop the engine: every sequence still running or queued ends.
	stop()
	close(block)
	ends.Wait()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	for _, r := range endResults {
		if r.Finish != FinishCancelled {
			t.Errorf("after stop: %+v", r)
		}
	}
	if err := e.Submit(SeqRequest{Prompt: prompts[0], MaxTokens: 1}); !errors.Is(err, ErrEngineStopped) {
		t.Errorf("submit after stop: %v", err)
	}
}

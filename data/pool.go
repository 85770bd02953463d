package data

import (
	"context"
	"fmt"
	"sync"
)

// runPool calls work for 0..n-1 with up to conc calls at once and hands
// the results to commit in index order, from the calling goroutine (so
// commit needs no lock). An error from work or commit stops the run: the
// context work sees is cancelled, and results not yet committed are
// dropped, so a stopped run leaves a prefix of the input order.
func runPool[R any](ctx context.Context, conc, n int, work func(context.Context, int) (R, error), commit func(int, R) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type item struct {
		i   int
		r   R
		err error
	}
	jobs := make(chan int)
	results := make(chan item)
	var wg sync.WaitGroup
	for range max(min(conc, n), 1) {
		wg.Go(func() {
			for i := range jobs {
				r, err := work(ctx, i)
				select {
				case results <- item{i, r, err}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	go func() {
		defer close(jobs)
		for i := range n {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	pending := map[int]R{}
	next := 0
	var firstErr error
	for it := range results {
		if firstErr != nil {
			continue
		}
		if it.err != nil {
			firstErr = it.err
			cancel()
			continue
		}
		pending[it.i] = it.r
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			if err := commit(next, r); err != nil {
				firstErr = err
				cancel()
				break
			}
			next++
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if next < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("internal error: %d of %d results committed", next, n)
	}
	return nil
}

// forEach is runPool for work that keeps its own results (under its own
// lock) and needs no ordered commit. Item failures that should not stop the
// run must be handled inside work.
func forEach(ctx context.Context, conc, n int, work func(context.Context, int) error) error {
	return runPool(ctx, conc, n, func(ctx context.Context, i int) (struct{}, error) {
		return struct{}{}, work(ctx, i)
	}, func(int, struct{}) error { return nil })
}

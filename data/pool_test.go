package data

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunPool: results are committed in index order whatever order the
// work finishes in, no more than conc calls run at once, an error stops the
// run leaving a prefix committed, and a cancelled context is returned.
func TestRunPool(t *testing.T) {
	// Later indices finish first: item i sleeps (n-i) units.
	const n = 24
	delay := func(i int) time.Duration { return time.Duration(n-i) * 200 * time.Microsecond }
	for _, conc := range []int{1, 4, 100} {
		t.Run(fmt.Sprintf("conc %d", conc), func(t *testing.T) {
			var inflight, peak atomic.Int32
			var committed []int
			err := runPool(context.Background(), conc, n, func(ctx context.Context, i int) (string, error) {
				cur := inflight.Add(1)
				for {
					p := peak.Load()
					if cur <= p || peak.CompareAndSwap(p, cur) {
						break
					}
				}
				time.Sleep(delay(i))
				inflight.Add(-1)
				return fmt.Sprint("r", i), nil
			}, func(i int, r string) error {
				if r != fmt.Sprint("r", i) {
					t.Errorf("commit %d got %q", i, r)
				}
				committed = append(committed, i)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(committed, firstN(n)) {
				t.Errorf("committed %v", committed)
			}
			if p := int(peak.Load()); p > min(conc, n) || (conc > 1 && p < 2) {
				t.Errorf("peak concurrency %d with conc %d", p, conc)
			}
		})
	}

	// An error from work at item 10 stops the run: what is committed is a
	// prefix of the items before it, and the error is returned.
	boom := errors.New("boom")
	var committed []int
	err := runPool(context.Background(), 4, 100, func(ctx context.Context, i int) (int, error) {
		if i == 10 {
			return 0, boom
		}
		return i, nil
	}, func(i, r int) error { committed = append(committed, i); return nil })
	if !errors.Is(err, boom) || len(committed) > 10 || !slices.Equal(committed, firstN(len(committed))) {
		t.Errorf("work error: %v, committed %v", err, committed)
	}
	// So does an error from commit.
	committed = nil
	err = runPool(context.Background(), 3, 50, func(ctx context.Context, i int) (int, error) { return i, nil },
		func(i, r int) error {
			if i == 5 {
				return boom
			}
			committed = append(committed, i)
			return nil
		})
	if !errors.Is(err, boom) || !slices.Equal(committed, firstN(5)) {
		t.Errorf("commit error: %v, committed %v", err, committed)
	}

	// A cancelled parent context ends the run with its error.
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	err = forEach(ctx, 2, 1000, func(ctx context.Context, i int) error {
		if calls.Add(1) == 5 {
			cancel()
		}
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || calls.Load() > 10 {
		t.Errorf("cancelled: %v after %d calls", err, calls.Load())
	}

	// forEach visits every index once.
	var mu sync.Mutex
	seen := map[int]int{}
	if err := forEach(context.Background(), 5, 37, func(ctx context.Context, i int) error {
		mu.Lock()
		seen[i]++
		mu.Unlock()
		return nil
	}); err != nil || len(seen) != 37 {
		t.Errorf("forEach: %v, %d indices", err, len(seen))
	}
	for i, c := range seen {
		if c != 1 {
			t.Errorf("index %d visited %d times", i, c)
		}
	}
	if err := forEach(context.Background(), 5, 0, func(context.Context, int) error { return boom }); err != nil {
		t.Errorf("no items: %v", err)
	}
}

func firstN(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

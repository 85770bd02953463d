package lora

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

// soakEnv turns TestSoak on. It is a one-off measurement recorded in
// docs/BENCHMARKS.md (Soak), not part of CI:
//
//	FUNGTRAIN_SOAK=1 go test -count=1 -timeout 0 -v -run TestSoak ./lora
//
// FUNGTRAIN_SOAK_STEPS (default 10000) and FUNGTRAIN_SOAK_ACCUM (a comma
// list of gradient accumulations, default 1,8) change the runs.
const soakEnv = "FUNGTRAIN_SOAK"

// TestSoak trains a 4-layer tiny model on the CPU for 10,000 optimizer
// steps of batch 1, once without gradient accumulation (each step one
// fused call, the next queued ahead) and once with accumulation 8 (the
// mission's default), with dropout on, evaluations every 2,000 steps and
// checkpoints every 500. Every 500 steps, right after a checkpoint (so no
// step is queued then), it samples MLX's live arrays and active memory,
// its buffer cache, the Go heap and the process's resident set. After the
// first sample, live arrays must not change, active memory must stay
// within 64 KiB, and the resident set may not grow by more than 5% +
// 16 MiB; no array may outlive the run.
func TestSoak(t *testing.T) {
	if os.Getenv(soakEnv) == "" {
		t.Skipf("a soak of many steps; set %s=1 to run it", soakEnv)
	}
	steps := 10000
	if s := os.Getenv(soakEnv + "_STEPS"); s != "" {
		var err error
		if steps, err = strconv.Atoi(s); err != nil || steps < 1000 {
			t.Fatalf("%s_STEPS=%q: want an integer of at least 1000", soakEnv, s)
		}
	}
	accums := []int{1, 8}
	if s := os.Getenv(soakEnv + "_ACCUM"); s != "" {
		accums = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("%s_ACCUM=%q: want a comma list of positive integers", soakEnv, s)
			}
			accums = append(accums, n)
		}
	}
	for _, accum := range accums {
		t.Run(fmt.Sprintf("accumulation=%d", accum), func(t *testing.T) { soak(t, steps, accum) })
	}
}

type soakSample struct {
	step               int
	seconds            float64 // since the run started
	live               int64
	active, cache, rss int64
	goHeap             uint64
	itPerSec, loss     float64
}

func soak(t *testing.T, steps, accum int) {
	cfg := resumeSetup(t)
	cfg.Training.MaxSteps = steps
	cfg.Training.BatchSize, cfg.Training.GradAccumulation = 1, accum
	cfg.Training.ReportEvery = 500
	cfg.Training.SaveEvery = 500
	cfg.Eval.Every = 2000
	var samples []soakSample
	var start time.Time
	log := slog.New(hookHandler{level: slog.LevelInfo, fn: func(r slog.Record) {
		if r.Message != "train" {
			return
		}
		s := soakSample{seconds: time.Since(start).Seconds(), live: mlx.LiveArrays(), active: mlx.ActiveMemory(),
			cache: mlx.CacheMemory(), rss: residentBytes()}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.goHeap = ms.HeapAlloc
		s.step, _ = attrInt(r, "step")
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "it_per_sec":
				s.itPerSec = a.Value.Float64()
			case "loss":
				s.loss = a.Value.Float64()
			}
			return true
		})
		samples = append(samples, s)
	}})
	start = time.Now()
	if _, err := runTraining(context.Background(), cfg, "", log, nil); err != nil {
		t.Fatal(err)
	}
	if len(samples) != steps/500 {
		t.Fatalf("%d samples, want %d", len(samples), steps/500)
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	t.Logf("accumulation %d, %d steps in %.0fs", accum, steps, time.Since(start).Seconds())
	t.Logf("| step | elapsed s | it/s | loss | live arrays | MLX active MiB | MLX cache MiB | Go heap MiB | RSS MiB |")
	t.Logf("|---|---|---|---|---|---|---|---|---|")
	for _, s := range samples {
		t.Logf("| %d | %.0f | %.1f | %.4f | %d | %.3f | %.2f | %.2f | %.1f |", s.step, s.seconds, s.itPerSec, s.loss,
			s.live, mib(s.active), mib(s.cache), float64(s.goHeap)/(1<<20), mib(s.rss))
	}
	ref := samples[0]
	minA, maxA := ref.active, ref.active
	for _, s := range samples[1:] {
		if s.live != ref.live {
			t.Errorf("step %d: %d live arrays, step %d had %d", s.step, s.live, ref.step, ref.live)
		}
		minA, maxA = min(minA, s.active), max(maxA, s.active)
	}
	if maxA-minA > 64<<10 {
		t.Errorf("MLX active memory varies by %d bytes between steps %d and %d (> 64 KiB)", maxA-minA, ref.step, steps)
	}
	last := samples[len(samples)-1]
	if ref.rss > 0 && float64(last.rss) > 1.05*float64(ref.rss)+16<<20 {
		t.Errorf("resident set grew from %.1f MiB at step %d to %.1f MiB at step %d", mib(ref.rss), ref.step, mib(last.rss), last.step)
	}
}

// residentBytes is the process's resident set size now (Linux; 0 where
// /proc is missing).
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

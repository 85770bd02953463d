package lora

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// TestReportRatesMatchWallTime: with report_every 1 and every report
// slowed down (as a slow disk's fsync of metrics.jsonl would), each train
// line's it_per_sec agrees with the wall time between it and the line
// before, within a factor of 1.5: a step's time runs from the completion
// of the step before it to its own, whether the next step was queued on
// the device ahead of the report (the default without accumulation) or
// not. (Measured inside the host's step calls, as before, a queued step
// that finished during the report took no time at all.)
func TestReportRatesMatchWallTime(t *testing.T) {
	cases := []struct {
		name       string
		accum      int
		sequential bool
	}{
		{"queued", 1, false},
		{"sequential", 1, true},
		{"accumulation 2", 2, false},
	}
	const delay = 150 * time.Millisecond
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := resumeSetup(t)
			cfg.Eval.Every, cfg.Training.SaveEvery = 0, 0
			cfg.Training.GradAccumulation, cfg.Training.Sequential = tc.accum, tc.sequential
			cfg.Training.MaxSteps = 10
			type line struct {
				step int
				at   time.Time
				rate float64
			}
			var lines []line
			log := slog.New(hookHandler{level: slog.LevelInfo, fn: func(r slog.Record) {
				if r.Message != "train" {
					return
				}
				l := line{at: time.Now()}
				l.step, _ = attrInt(r, "step")
				r.Attrs(func(a slog.Attr) bool {
					if a.Key == "it_per_sec" {
						l.rate = a.Value.Float64()
					}
					return true
				})
				lines = append(lines, l)
				time.Sleep(delay)
			}})
			if _, err := runTraining(context.Background(), cfg, "", log, nil); err != nil {
				t.Fatal(err)
			}
			if len(lines) != cfg.Training.MaxSteps {
				t.Fatalf("%d train lines, want %d", len(lines), cfg.Training.MaxSteps)
			}
			for i := 1; i < len(lines); i++ {
				gap := lines[i].at.Sub(lines[i-1].at).Seconds()
				claimed := lines[i].rate * gap // steps the rate claims for the gap; one happened
				t.Logf("step %2d: %8.2f it/s, %.3fs since the last line: rate × gap = %.2f", lines[i].step, lines[i].rate, gap, claimed)
				if claimed > 1.5 || claimed < 1/1.5 {
					t.Errorf("step %d: %.2f it/s claims %.2f steps in the %.3fs since the last line, which had one", lines[i].step, lines[i].rate, claimed, gap)
				}
			}
		})
	}
}

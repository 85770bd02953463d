package lora

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestStaleCheckpointTempsRemoved: what a kill during a save leaves (a
// checkpoints/.tmp-step-* directory with part of a checkpoint, temporary
// copies of checkpoints/latest, metrics.jsonl and best/'s adapters) is
// removed when a run starts and when it resumes; complete checkpoints,
// latest and files of other names stay.
func TestStaleCheckpointTempsRemoved(t *testing.T) {
	// orphans writes what a killed save leaves, and a file that is not ours.
	orphans := func(t *testing.T, out string) []string {
		t.Helper()
		root := filepath.Join(out, "checkpoints")
		dirTmp := filepath.Join(root, ".tmp-step-0000003-2718281")
		writeFile(t, dirTmp, "adapters.safetensors", "partial")
		writeFile(t, root, "notes.txt", "kept")
		return []string{dirTmp,
			writeFile(t, root, ".latest.tmp-314159", "step-00"),
			writeFile(t, out, ".metrics.jsonl.tmp-1618", `{"type":"tr`),
			writeFile(t, filepath.Join(out, "best"), ".adapters.safetensors.tmp-577.safetensors", "partial")}
	}
	entries := func(root string) []string {
		es, _ := os.ReadDir(root)
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}
	cases := []struct {
		name   string
		resume bool
	}{{"new run", false}, {"resume", true}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := resumeSetup(t)
			cfg.Training.MaxSteps, cfg.Eval.Every, cfg.Training.SaveEvery = 4, 0, 0
			root := filepath.Join(cfg.Output.Dir, "checkpoints")
			ck := ""
			if tc.resume {
				// Interrupt at step 2: the only checkpoint is step 2's.
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				log := slog.New(hookHandler{level: slog.LevelInfo, fn: func(r slog.Record) {
					if step, _ := attrInt(r, "step"); r.Message == "train" && step == 2 {
						cancel()
					}
				}})
				if _, err := runTraining(ctx, cfg, "", log, nil); !errors.Is(err, ErrInterrupted) {
					t.Fatalf("interrupted run: %v", err)
				}
				var err error
				if ck, err = LatestCheckpoint(cfg.Output.Dir); err != nil {
					t.Fatal(err)
				}
			}
			stale := orphans(t, cfg.Output.Dir)
			if _, err := runTraining(context.Background(), cfg, ck, quietLog(), nil); err != nil {
				t.Fatal(err)
			}
			for _, p := range stale {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s is still there after the run", p)
				}
			}
			got := entries(root)
			want := []string{"latest", "notes.txt", "step-0000004"}
			if tc.resume {
				want = []string{"latest", "notes.txt", "step-0000002", "step-0000004"}
			}
			t.Logf("checkpoints/ after the run: %v", got)
			if !slices.Equal(got, want) {
				t.Errorf("checkpoints/ holds %v, want %v", got, want)
			}
		})
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// copyDir copies the files of a flat directory into a new temporary one.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestTrainFlagConflicts: --config and --force do not go with --resume,
// and the error names both flags.
func TestTrainFlagConflicts(t *testing.T) {
	run := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--resume", run, "--config", "x.yaml"}, "train: --resume " + run + " takes the run's config from its checkpoint, so --config x.yaml would be ignored: " +
			"give --resume alone (with --set only for " + strings.Join(lora.ResumableKeys, ", ") + "), or --config alone for a new run"},
		{[]string{"--resume", run, "--force"}, "train: --force starts a new run over and --resume " + run + " continues one: give one of them"},
		// Control: --resume alone gets as far as looking for a checkpoint.
		{[]string{"--resume", run}, "resume " + run + ": no checkpoint found"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args[2:], " "), func(t *testing.T) {
			_, _, err := runCLI(t, append([]string{"train"}, tc.args...)...)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
}

// TestTrainIntoFinishedRun: a new run into the output.dir of a finished
// run is refused and leaves it alone; --force replaces it (the old
// checkpoints and best/ go); a run with checkpoints but no summary.json
// starts over, as before, with a warning that says how to resume it.
func TestTrainIntoFinishedRun(t *testing.T) {
	model, dataDir := trainFixture(t)
	cases := []struct {
		name    string
		prepare func(out string) // after a finished run of 2 steps
		flags   []string
		wantErr string // prefix; "" for success
		wantLog string
		// what the run directory holds afterwards
		steps       string // summary.json's steps
		checkpoints string
		best        bool
	}{
		{"finished", nil, nil,
			"output.dir OUT holds a finished run of 2 steps (its summary.json); a new run there would overwrite it: " +
				"set another output.dir, or pass --force to start over and replace it", "",
			`"steps": 2`, "latest step-0000001 step-0000002", true},
		{"finished --force", nil, []string{"--force"}, "", "--force: removed the finished run in output.dir; starting over",
			`"steps": 1`, "latest step-0000001", false},
		{"unfinished", func(out string) { os.Remove(filepath.Join(out, "summary.json")) }, nil, "",
			"to continue that run instead: fungtrain train --resume OUT", `"steps": 1`, "latest step-0000001 step-0000002", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			cfg := trainConfig(t, model, dataDir, out, 1)
			if _, stderr, err := runCLI(t, "train", "--config", cfg, "--set", "training.save_every=1"); err != nil {
				t.Fatalf("first run: %v\n%s", err, stderr)
			}
			if tc.prepare != nil {
				tc.prepare(out)
			}
			adapterBefore := sha256File(t, filepath.Join(out, "adapters.safetensors"))
			args := append([]string{"train", "--config", cfg, "--set", "training.max_steps=1", "--set", "eval.every=0"}, tc.flags...)
			_, stderr, err := runCLI(t, args...)
			want := strings.ReplaceAll(tc.wantErr, "OUT", out)
			switch {
			case want == "" && err != nil:
				t.Fatalf("second run: %v\n%s", err, stderr)
			case want != "" && (err == nil || err.Error() != want):
				t.Fatalf("error\n%v\nwant\n%s", err, want)
			}
			if w := strings.ReplaceAll(tc.wantLog, "OUT", out); !strings.Contains(stderr, w) {
				t.Errorf("log lacks %q:\n%s", w, stderr)
			}
			sum, _ := os.ReadFile(filepath.Join(out, "summary.json"))
			if !strings.Contains(string(sum), tc.steps) {
				t.Errorf("summary.json %s, want %s", sum, tc.steps)
			}
			entries, _ := os.ReadDir(filepath.Join(out, "checkpoints"))
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if strings.Join(names, " ") != tc.checkpoints {
				t.Errorf("checkpoints/ holds %v, want %s", names, tc.checkpoints)
			}
			if _, err := os.Stat(filepath.Join(out, "best")); (err == nil) != tc.best {
				t.Errorf("best/ exists: %v, want %v", err == nil, tc.best)
			}
			if unchanged := sha256File(t, filepath.Join(out, "adapters.safetensors")) == adapterBefore; unchanged != (want != "") {
				t.Errorf("adapters.safetensors unchanged: %v, want %v", unchanged, want != "")
			}
		})
	}
}

// TestTrainResumeChangedInputs: resuming checks the train and valid
// splits and the model against the hashes in run_metadata.json and names
// the file that changed, with both hashes; test.jsonl, which is not
// trained on, may change.
func TestTrainResumeChangedInputs(t *testing.T) {
	model, dataDir := trainFixture(t)
	otherWeights := filepath.Join(t.TempDir(), "other")
	shape, err := llama.ShapeConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	shape.NumLayers = 2
	if err := mlx.Do(func() error { return llama.WriteRandomModel(otherWeights, shape, mlx.Float32, 5) }); err != nil {
		t.Fatal(err)
	}
	appendLine := func(file string) func(model, data string) string {
		return func(model, data string) string {
			p := filepath.Join(data, file)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, append(b, []byte(`{"text": "fasting lowers insulin"}`+"\n")...), 0o644)
			return p
		}
	}
	cases := []struct {
		name string
		edit func(model, data string) string // returns the file changed
		what string                          // how the error names it; "" for no error of this kind
	}{
		{"train.jsonl", appendLine("train.jsonl"), "data file DATA/train.jsonl"},
		{"valid.jsonl", appendLine("valid.jsonl"), "data file DATA/valid.jsonl"},
		{"model weights", func(model, data string) string {
			p := filepath.Join(model, "model.safetensors")
			b, _ := os.ReadFile(filepath.Join(otherWeights, "model.safetensors"))
			os.WriteFile(p, b, 0o644)
			return p
		}, "model MODEL (model.safetensors)"},
		{"test.jsonl", appendLine("test.jsonl"), ""},
		{"nothing", func(model, data string) string { return "" }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			model, data := copyDir(t, model), copyDir(t, dataDir)
			out := filepath.Join(t.TempDir(), "run")
			if _, stderr, err := runCLI(t, "train", "--config", trainConfig(t, model, data, out, 1)); err != nil {
				t.Fatalf("train: %v\n%s", err, stderr)
			}
			changed := tc.edit(model, data)
			meta := readMetadata(t, out)
			was := meta.DataSHA256[filepath.Base(changed)]
			if strings.HasPrefix(tc.what, "model") {
				was = meta.ModelSHA256
			}
			_, _, err := runCLI(t, "train", "--resume", out)
			want := "the run in " + out + " already finished (step 2 of 2); nothing to resume"
			if tc.what != "" {
				what := strings.NewReplacer("DATA", data, "MODEL", model).Replace(tc.what)
				want = "resume " + out + ": " + what + " changed since the run started: its sha256 is " + sha256File(t, changed) +
					", " + filepath.Join(out, "run_metadata.json") + " recorded " + was +
					"; a resumed run must train on the data and model it started with"
			}
			if err == nil || err.Error() != want {
				t.Errorf("error\n%v\nwant\n%s", err, want)
			}
		})
	}
}

func readMetadata(t *testing.T, out string) lora.RunMetadata {
	t.Helper()
	var m lora.RunMetadata
	readJSON(t, filepath.Join(out, "run_metadata.json"), &m)
	return m
}

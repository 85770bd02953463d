package lora

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// finishedRunFiles are what a finished run leaves in its run directory
// besides the records every start rewrites (config.yaml,
// run_metadata.json, metrics.jsonl): a new run there with --force
// removes them, so nothing of the old run is mistaken for the new one's.
var finishedRunFiles = []string{"summary.json", "adapters.safetensors", "adapter_config.json", "best", "checkpoints"}

// PrepareNewRunDir decides whether a new run (not a resumed one) may
// start in out. A finished run there (its summary.json written) is
// refused unless force is set; then its files are removed. A run with
// checkpoints but no summary.json (interrupted or killed) is started
// over, as before, with a warning that says how to continue it instead.
func PrepareNewRunDir(out string, force bool, log *slog.Logger) error {
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	switch {
	case err == nil && !force:
		var sum Summary
		steps := "finished run"
		if json.Unmarshal(b, &sum) == nil && sum.Steps > 0 {
			steps = fmt.Sprintf("finished run of %d steps", sum.Steps)
		}
		return fmt.Errorf("output.dir %s holds a %s (its summary.json); a new run there would overwrite it: "+
			"set another output.dir, or pass --force to start over and replace it", out, steps)
	case err == nil:
		for _, f := range finishedRunFiles {
			if err := os.RemoveAll(filepath.Join(out, f)); err != nil {
				return fmt.Errorf("--force: remove the finished run's %s: %w", f, err)
			}
		}
		log.Warn("--force: removed the finished run in output.dir; starting over", "dir", out)
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("output.dir %s: %w", out, err)
	}
	if ck, err := LatestCheckpoint(out); err == nil {
		log.Warn("output.dir holds checkpoints of an unfinished run; this new run starts over and replaces them "+
			"(to continue that run instead: fungtrain train --resume "+out+")", "dir", out, "checkpoint", filepath.Base(ck))
	}
	return nil
}

// CheckResumeInputs compares the data and model a resumed run has now
// (m, from NewRunMetadata) with those recorded in dir/run_metadata.json
// when the run started, and names the first that changed: the train and
// valid splits (dataDir/NAME; test.jsonl is not trained on) and the
// model's weights (modelPath). A run directory without run_metadata.json,
// or a hash it does not record, is not checked.
func (m RunMetadata) CheckResumeInputs(dir, dataDir, modelPath string) error {
	path := filepath.Join(dir, "run_metadata.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("resume %s: %w", dir, err)
	}
	var old RunMetadata
	if err := json.Unmarshal(b, &old); err != nil {
		return fmt.Errorf("resume %s: parse %s: %w", dir, path, err)
	}
	changed := func(what, was, now string) error {
		return fmt.Errorf("resume %s: %s changed since the run started: its sha256 is %s, %s recorded %s; "+
			"a resumed run must train on the data and model it started with", dir, what, now, path, was)
	}
	names := slices.Sorted(maps.Keys(old.DataSHA256))
	for _, name := range names {
		now, ok := m.DataSHA256[name]
		if name == "test.jsonl" || !ok || now == old.DataSHA256[name] {
			continue
		}
		return changed("data file "+filepath.Join(dataDir, name), old.DataSHA256[name], now)
	}
	if old.ModelSHA256 != "" && old.ModelSHA256 != m.ModelSHA256 {
		what := "model " + modelPath
		if of := m.ModelHashOf; of != "" && of != filepath.Base(modelPath) {
			what += " (" + of + ")"
		}
		return changed(what, old.ModelSHA256, m.ModelSHA256)
	}
	return nil
}

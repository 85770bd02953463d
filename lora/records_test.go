package lora

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sha256Of is the hex SHA-256 of a file, computed here from its bytes.
func sha256Of(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestRunMetadata: NewRunMetadata records the seed, the build it was
// given, and the SHA-256 of each split, of test.jsonl beside them and of
// the model's weight file; a missing model is an error naming it.
// MarkResumed keeps the original start time and earlier resumes of the
// run directory's run_metadata.json and adds this one.
func TestRunMetadata(t *testing.T) {
	modelDir := writeTinyModelDir(t, 1, 2)
	dataDir := t.TempDir()
	train := loadSplit(t, dataDir, "train", trainPairs)
	valid := loadSplit(t, dataDir, "valid", validPairs)
	writeFile(t, dataDir, "test.jsonl", chatJSONL(validPairs[:1]))
	cfg := testConfig(t.TempDir())
	cfg.Model.Path, cfg.Data.Dir = modelDir, dataDir
	cfg.Training.Seed = 1234

	meta, err := NewRunMetadata(cfg, Build{Version: "v9.9.9", Commit: "abc1234"}, ModelSource{}, train, valid)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, f := range []string{"train.jsonl", "valid.jsonl", "test.jsonl"} {
		want[f] = sha256Of(t, filepath.Join(dataDir, f))
	}
	for f, sum := range want {
		if meta.DataSHA256[f] != sum {
			t.Errorf("data_sha256[%s] = %q, want %q", f, meta.DataSHA256[f], sum)
		}
	}
	if len(meta.DataSHA256) != len(want) {
		t.Errorf("data_sha256 has %d entries, want %d: %v", len(meta.DataSHA256), len(want), meta.DataSHA256)
	}
	if got := sha256Of(t, filepath.Join(modelDir, "model.safetensors")); meta.ModelSHA256 != got || meta.ModelHashOf != "model.safetensors" {
		t.Errorf("model hash %q of %q, want %q of model.safetensors", meta.ModelSHA256, meta.ModelHashOf, got)
	}
	if meta.Seed != 1234 || meta.FungtrainVersion != "v9.9.9" || meta.GitCommit != "abc1234" || meta.MLXVersion == "" ||
		meta.Backend == "" || meta.Device == "" || meta.Config.Output.Dir != cfg.Output.Dir || meta.Resumed != nil {
		t.Errorf("metadata %+v", meta)
	}

	// A resume of a run started at T0 and resumed once at T1.
	runDir := t.TempDir()
	old := RunMetadata{Timestamp: "2026-01-01T00:00:00Z", Resumed: []string{"2026-01-02T00:00:00Z"}}
	b, _ := json.Marshal(old)
	writeFile(t, runDir, "run_metadata.json", string(b))
	now := meta.Timestamp
	meta.MarkResumed(runDir)
	if meta.Timestamp != old.Timestamp || !slices.Equal(meta.Resumed, []string{old.Resumed[0], now}) {
		t.Errorf("after MarkResumed: timestamp %q, resumed %v; want %q and [%s %s]", meta.Timestamp, meta.Resumed, old.Timestamp, old.Resumed[0], now)
	}
	// Without earlier metadata, the resume is the only record.
	fresh, err := NewRunMetadata(cfg, Build{}, ModelSource{}, train)
	if err != nil {
		t.Fatal(err)
	}
	fresh.MarkResumed(t.TempDir())
	if !slices.Equal(fresh.Resumed, []string{fresh.Timestamp}) {
		t.Errorf("resume without run_metadata.json: resumed %v, want [%s]", fresh.Resumed, fresh.Timestamp)
	}

	cfg.Model.Path = filepath.Join(t.TempDir(), "missing")
	if _, err := NewRunMetadata(cfg, Build{}, ModelSource{}, train); err == nil || !strings.Contains(err.Error(), "hash model") || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing model: %v", err)
	}
}

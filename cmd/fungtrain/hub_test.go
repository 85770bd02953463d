package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/hub"
	"github.com/fungtrain/fungtrain/hub/hubtest"
	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/lora"
)

const hubSecret = "hf_CmdTestSecretToken42"

// dirFiles reads the regular files of a model directory, for the fake Hub.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.Type().IsRegular() {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = b
		}
	}
	return files
}

// hubEnv points the hub package at fh and a fresh cache, with token as
// HF_TOKEN; it returns the cache directory.
func hubEnv(t *testing.T, fh *hubtest.Hub, token string) string {
	t.Helper()
	home := t.TempDir()
	cache := filepath.Join(home, "hub")
	t.Setenv("HF_ENDPOINT", fh.URL)
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_TOKEN", token)
	t.Setenv("HF_HUB_OFFLINE", "")
	return cache
}

// fakeModelHub serves the train fixture's tiny model as the gated
// repository org/tiny; it returns the Hub, the local model and data dirs.
func fakeModelHub(t *testing.T) (fh *hubtest.Hub, model, dataDir string) {
	t.Helper()
	model, dataDir = trainFixture(t)
	fh = hubtest.New()
	t.Cleanup(fh.Close)
	fh.SetToken(hubSecret)
	fh.AddRepo("org/tiny", dirFiles(t, model)).Gated = true
	return fh, model, dataDir
}

// TestPullCLI: fungtrain pull prints the snapshot; offline it answers from
// the cache with no request; a gated model without a token gets a message
// that says what to do; the token never shows in the debug log.
func TestPullCLI(t *testing.T) {
	fh, model, _ := fakeModelHub(t)
	cache := hubEnv(t, fh, hubSecret)
	out, errOut, err := runCLI(t, "--log-level", "debug", "pull", "org/tiny")
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, errOut)
	}
	snap := filepath.Join(cache, "models--org--tiny", "snapshots", fh.Commit("org/tiny", "main"))
	if strings.TrimSpace(out) != snap {
		t.Errorf("pull printed %q, want %s", out, snap)
	}
	for name, want := range dirFiles(t, model) {
		if b, err := os.ReadFile(filepath.Join(snap, name)); err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s differs from the Hub's (%v)", name, err)
		}
	}
	if strings.Contains(errOut, hubSecret) || !strings.Contains(errOut, "msg=pulled") || !strings.Contains(errOut, "token=HF_TOKEN") {
		t.Errorf("debug log shows the token, or lacks the summary or the token's source:\n%s", errOut)
	}

	fh.ResetRequests()
	t.Setenv("HF_HUB_OFFLINE", "1")
	out, errOut, err = runCLI(t, "pull", "org/tiny@main")
	if err != nil || strings.TrimSpace(out) != snap || len(fh.Requests()) != 0 {
		t.Errorf("offline pull: %q, %v, %d requests\n%s", out, err, len(fh.Requests()), errOut)
	}
	t.Setenv("HF_HUB_OFFLINE", "")

	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_HUB_CACHE", t.TempDir())
	_, _, err = runCLI(t, "pull", "org/tiny")
	if err == nil || !strings.Contains(err.Error(), "accept its licence at "+fh.URL+"/org/tiny") || !strings.Contains(err.Error(), "set HF_TOKEN") {
		t.Errorf("gated without a token: %v", err)
	}
	for _, tc := range []struct{ args, want string }{
		{"pull tiny", "not a repository id"},
		{"pull org/tiny@v1 --revision v2", "--revision says v2"},
		{"pull org/tiny --workers 0", "--workers must be positive"},
	} {
		if _, _, err := runCLI(t, strings.Fields(tc.args)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestTrainFromHub trains with model.path: org/tiny (a gated repository,
// HF_TOKEN set) and compares with the same run on the local directory:
// the same validation losses; run_metadata.json records the repository
// and commit and the model's hash; no file of the run holds the token.
func TestTrainFromHub(t *testing.T) {
	fh, model, dataDir := fakeModelHub(t)
	hubEnv(t, fh, hubSecret)
	runs := map[string]string{}
	for _, m := range []string{"org/tiny", model} {
		out := filepath.Join(t.TempDir(), "run")
		if _, errOut, err := runCLI(t, "train", "--config", trainConfig(t, m, dataDir, out, 1)); err != nil {
			t.Fatalf("train with model %s: %v\n%s", m, err, errOut)
		}
		runs[m] = out
	}
	var hubSum, localSum lora.Summary
	readJSON(t, filepath.Join(runs["org/tiny"], "summary.json"), &hubSum)
	readJSON(t, filepath.Join(runs[model], "summary.json"), &localSum)
	if hubSum.Steps != 2 || hubSum.InitialValLoss != localSum.InitialValLoss || hubSum.FinalValLoss != localSum.FinalValLoss {
		t.Errorf("from the Hub: %d steps, val loss %v -> %v; from the directory: %v -> %v", hubSum.Steps,
			hubSum.InitialValLoss, hubSum.FinalValLoss, localSum.InitialValLoss, localSum.FinalValLoss)
	}
	var meta lora.RunMetadata
	readJSON(t, filepath.Join(runs["org/tiny"], "run_metadata.json"), &meta)
	if meta.ModelRepo != "org/tiny" || meta.ModelCommit != fh.Commit("org/tiny", "main") || meta.Config.Model.Path != "org/tiny" ||
		meta.ModelSHA256 != sha256File(t, filepath.Join(model, "model.safetensors")) {
		t.Errorf("run_metadata: repo %q commit %q path %q sha %q", meta.ModelRepo, meta.ModelCommit, meta.Config.Model.Path, meta.ModelSHA256)
	}
	filepath.WalkDir(runs["org/tiny"], func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(hubSecret)) {
				t.Errorf("%s holds the token", p)
			}
		}
		return nil
	})
	if b, _ := os.ReadFile(filepath.Join(runs["org/tiny"], "config.yaml")); !strings.Contains(string(b), "path: org/tiny") {
		t.Errorf("config.yaml does not keep model.path org/tiny:\n%s", b)
	}
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// TestGenerateFromHFClientCache: huggingface_hub (the real client)
// downloads org/tiny; fungtrain generate --model org/tiny with
// HF_HUB_OFFLINE=1 loads it from that cache with no request and generates
// what it generates from the directory itself.
func TestGenerateFromHFClientCache(t *testing.T) {
	// A tokenizer with a word for each of the tiny shape's 1024 ids, so
	// that every generated token prints.
	words := append([]string{}, trainWords...)
	for i := len(words); i < 1023; i++ {
		words = append(words, fmt.Sprintf("w%d", i))
	}
	model := filepath.Join(t.TempDir(), "tiny")
	if _, errOut, err := runCLI(t, "init-model", "--shape", "tiny", "--out", model, "--dtype", "f32", "--seed", "9",
		"--tokenizer", writeWordTokenizer(t, t.TempDir(), words)); err != nil {
		t.Fatalf("init-model: %v\n%s", err, errOut)
	}
	fh := hubtest.New()
	t.Cleanup(fh.Close)
	fh.AddRepo("org/tiny", dirFiles(t, model))
	cache := hubEnv(t, fh, "")
	py := testenv.Python(t)
	req, _ := json.Marshal(map[string]any{"op": "snapshot", "repo": "org/tiny", "allow": hub.ModelPatterns})
	cmd := exec.Command(py, cliAsset(t, "hub/testdata/hf_client.py"))
	cmd.Env = append(os.Environ(), "HF_HUB_DISABLE_TELEMETRY=1", "HF_HUB_DISABLE_PROGRESS_BARS=1", "HF_HUB_DISABLE_XET=1")
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("huggingface_hub snapshot_download: %v\n%s", err, stderr.String())
	}
	var snap struct{ Path string }
	if err := json.Unmarshal(stdout.Bytes(), &snap); err != nil || !strings.HasPrefix(snap.Path, cache) {
		t.Fatalf("huggingface_hub answered %q (%v), want a path under %s", stdout.String(), err, cache)
	}

	fh.ResetRequests()
	t.Setenv("HF_HUB_OFFLINE", "1")
	gen := func(m string) string {
		out, errOut, err := runCLI(t, "generate", "--model", m, "--prompt", "fasting insulin sugar", "--no-chat-template", "--max-tokens", "8")
		if err != nil {
			t.Fatalf("generate --model %s: %v\n%s", m, err, errOut)
		}
		return out
	}
	fromHub, fromDir := gen("org/tiny"), gen(model)
	if fromHub != fromDir || len(strings.Fields(fromHub)) != 8 {
		t.Errorf("generated %q from the cache, %q from the directory", fromHub, fromDir)
	}
	if n := len(fh.Requests()); n != 0 {
		t.Errorf("offline generate made %d requests", n)
	}
	if _, _, err := runCLI(t, "generate", "--model", "org/absent", "--prompt", "x", "--no-chat-template"); err == nil ||
		!strings.Contains(err.Error(), "HF_HUB_OFFLINE is set") || !strings.Contains(err.Error(), "fungtrain pull org/absent") {
		t.Errorf("offline, a model not in the cache: %v", err)
	}
}

// TestPinnedModel: a resumed run loads the commit its first run recorded.
func TestPinnedModel(t *testing.T) {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	run := t.TempDir()
	b, _ := json.Marshal(lora.RunMetadata{ModelRepo: "org/model", ModelCommit: commit})
	os.WriteFile(filepath.Join(run, "run_metadata.json"), b, 0o644)
	tests := []struct{ arg, dir, want string }{
		{"org/model", run, "org/model@" + commit},
		{"org/model@main", run, "org/model@" + commit},
		{"org/model", "", "org/model"}, // a new run
		{"org/other", run, "org/other"},
		{"./local/model", run, "./local/model"},
		{"org/model", t.TempDir(), "org/model"}, // no metadata
	}
	for _, tc := range tests {
		if got := pinnedModel(tc.arg, tc.dir); got != tc.want {
			t.Errorf("pinnedModel(%q, %q) = %q, want %q", tc.arg, tc.dir, got, tc.want)
		}
	}
	if resumeDir("", run) != "" || resumeDir("ck", run) != run {
		t.Error("resumeDir")
	}
}

// TestInitModelTokenizerFromHub: init-model --tokenizer ORG/NAME takes the
// repository's tokenizer files and none of its weights.
func TestInitModelTokenizerFromHub(t *testing.T) {
	tokDir := t.TempDir()
	writeWordTokenizer(t, tokDir, trainWords)
	files := dirFiles(t, tokDir)
	files["model.safetensors"] = bytes.Repeat([]byte{1}, 1<<20)
	fh := hubtest.New()
	t.Cleanup(fh.Close)
	fh.AddRepo("org/tok", files)
	hubEnv(t, fh, "")
	out := filepath.Join(t.TempDir(), "m")
	if _, errOut, err := runCLI(t, "init-model", "--shape", "tiny", "--out", out, "--tokenizer", "org/tok"); err != nil {
		t.Fatalf("init-model: %v\n%s", err, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(out, "tokenizer.json")); err != nil || !bytes.Equal(b, files["tokenizer.json"]) {
		t.Errorf("tokenizer.json differs from the repository's (%v)", err)
	}
	if n := fh.Count("", "model.safetensors"); n != 0 {
		t.Errorf("the weights were requested %d times", n)
	}
}

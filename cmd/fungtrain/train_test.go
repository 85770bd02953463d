package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// cliChildEnv, when set, holds the JSON argument list of a fungtrain
// command that the test binary runs (see TestMain) instead of the tests;
// it exits as main does (0, 1, or the code an error carries).
const cliChildEnv = "FUNGTRAIN_CLI_CHILD_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(cliChildEnv); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		root := newRootCmd()
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(exitCode(err))
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var trainWords = strings.Fields(`fasting insulin sugar water coffee tea weight fat eat food hours
	start slowly lose low keep meals snacks whole protein eggs salt the a is and of to in for`)

// trainFixture writes a 2-layer tiny float32 model with a word-level
// tokenizer, and text-format train/valid/test splits; it returns the
// model and data directories.
func trainFixture(t *testing.T) (model, dataDir string) {
	t.Helper()
	model = filepath.Join(t.TempDir(), "model")
	cfg, err := llama.ShapeConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NumLayers = 2
	if err := mlx.Do(func() error { return llama.WriteRandomModel(model, cfg, mlx.Float32, 4) }); err != nil {
		t.Fatal(err)
	}
	writeWordTokenizer(t, model, trainWords)
	dataDir = t.TempDir()
	line := func(i, n int) string {
		w := make([]string, n)
		for k := range w {
			w[k] = trainWords[(i*7+k*3)%len(trainWords)]
		}
		b, _ := json.Marshal(map[string]string{"text": strings.Join(w, " ")})
		return string(b) + "\n"
	}
	var train, valid, test strings.Builder
	for i := range 8 {
		train.WriteString(line(i, 5+i*2))
	}
	for i := range 3 {
		valid.WriteString(line(20+i, 6+i*3))
	}
	test.WriteString(line(40, 9))
	for name, s := range map[string]string{"train.jsonl": train.String(), "valid.jsonl": valid.String(), "test.jsonl": test.String()} {
		if err := os.WriteFile(filepath.Join(dataDir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return model, dataDir
}

// trainConfig writes a run config for the fixture: LoRA on all linear
// layers of both blocks, batch 2 × accumulation 2 over 8 examples for the
// given epochs (2 steps an epoch), evals and checkpoints every 2 steps.
func trainConfig(t *testing.T, model, dataDir, out string, epochs int) string {
	t.Helper()
	y := fmt.Sprintf(`# fixture run
model:
  path: %s
data:
  dir: %s
  max_seq_length: 32
lora:
  num_layers: 2
  keys: [all-linear]
optimizer:
  lr: 1.0e-3
training:
  batch_size: 2
  grad_accumulation: 2
  epochs: %d
  report_every: 1
  save_every: 2
eval:
  every: 2
output:
  dir: %s
`, model, dataDir, epochs, out)
	p := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type cliMetric struct {
	Type    string  `json:"type"`
	Step    int     `json:"step"`
	Loss    float64 `json:"loss"`
	ValLoss float64 `json:"val_loss"`
}

func cliMetrics(t *testing.T, out string) (train, eval []int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r cliMetric
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("metrics.jsonl: %v: %q", err, sc.Text())
		}
		switch r.Type {
		case "train":
			train = append(train, r.Step)
		case "eval":
			eval = append(eval, r.Step)
		}
	}
	return train, eval
}

func seq(from, to int) string {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return fmt.Sprint(s)
}

// TestTrainCLI runs `fungtrain train --config` on the fixture and checks
// the run directory: the summary line, metrics.jsonl (each step once),
// summary.json, run_metadata.json (seed, data and model hashes, versions),
// config.yaml (reloads to the same config), the final and best adapters
// (loadable) and the checkpoints; then --set overrides and --resume.
func TestTrainCLI(t *testing.T) {
	model, dataDir := trainFixture(t)
	out := filepath.Join(t.TempDir(), "run")
	cfgPath := trainConfig(t, model, dataDir, out, 2)
	stdout, stderr, err := runCLI(t, "train", "--config", cfgPath)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, stderr)
	}
	t.Logf("stdout:\n%s", stdout)
	if !strings.Contains(stdout, "done: 4 steps") || !strings.Contains(stdout, "adapters: "+out) {
		t.Errorf("stdout %q", stdout)
	}
	for _, want := range []string{"trainable_params=", "padding_fraction=", "msg=eval", "msg=train"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, stderr)
		}
	}
	train, eval := cliMetrics(t, out)
	if fmt.Sprint(train) != seq(1, 4) || fmt.Sprint(eval) != "[0 2 4]" {
		t.Errorf("metrics: train steps %v, eval steps %v", train, eval)
	}

	var sum lora.Summary
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	// 2 layers × (q 128 + k 64 + v 64 + o 128 + gate 352 + up 352 + down
	// 128 outputs, and the matching inputs) at rank 6.
	const params = 2 * 6 * ((128 + 128) + (128 + 64) + (128 + 64) + (128 + 128) + (128 + 352) + (128 + 352) + (352 + 128))
	if sum.Steps != 4 || sum.TrainableParam != params || sum.TrainedTokens <= 0 || sum.InputTokens < sum.TrainedTokens ||
		sum.TokensPerSec <= 0 || math.Abs(sum.InitialValLoss-math.Log(1024)) > 0.5 || sum.FinalValLoss <= 0 || sum.BestValLoss > sum.FinalValLoss {
		t.Errorf("summary.json: %s", b)
	}

	var meta lora.RunMetadata
	b, err = os.ReadFile(filepath.Join(out, "run_metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"train.jsonl", "valid.jsonl", "test.jsonl"} {
		if got, want := meta.DataSHA256[f], sha256File(t, filepath.Join(dataDir, f)); got != want {
			t.Errorf("run_metadata data_sha256[%s] = %q, want %q", f, got, want)
		}
	}
	if meta.ModelSHA256 != sha256File(t, filepath.Join(model, "model.safetensors")) || meta.Seed != 42 || meta.MLXVersion == "" ||
		meta.Backend == "" || meta.Device == "" || meta.Timestamp == "" || meta.TrainableParams != params || meta.Config.Output.Dir != out {
		t.Errorf("run_metadata.json: %s", b)
	}

	want, err := lora.LoadRunConfig(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := lora.LoadRunConfig(filepath.Join(out, "config.yaml"), nil)
	if err != nil {
		t.Fatalf("config.yaml does not reload: %v", err)
	}
	if fmt.Sprintf("%+v", resolved) != fmt.Sprintf("%+v", want) {
		t.Errorf("config.yaml reloads as %+v\nwant %+v", resolved, want)
	}
	for _, f := range []string{"adapters.safetensors", "adapter_config.json", "best/adapters.safetensors", "checkpoints/step-0000004/state.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("run directory lacks %s", f)
		}
	}
	if ck, err := lora.LatestCheckpoint(out); err != nil || filepath.Base(ck) != "step-0000004" {
		t.Errorf("latest checkpoint %q (%v), want step-0000004", ck, err)
	}
	entries, _ := os.ReadDir(filepath.Join(out, "checkpoints"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "latest step-0000002 step-0000004" {
		t.Errorf("checkpoints/ holds %v, want the last two and latest", names)
	}
	// The final adapter loads onto the model.
	if err := mlx.Do(func() error {
		m, err := llama.LoadModel(model, llama.LoadOptions{Dtype: "f32"})
		if err != nil {
			return err
		}
		defer m.Free()
		a, err := lora.Load(m, out)
		if err != nil {
			return err
		}
		defer a.Remove()
		if a.NumParams() != params {
			return fmt.Errorf("loaded adapter has %d parameters, want %d", a.NumParams(), params)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// --set overrides the file.
	out2 := filepath.Join(t.TempDir(), "run2")
	stdout, stderr, err = runCLI(t, "train", "--config", cfgPath, "--set", "training.max_steps=1", "--set", "output.dir="+out2, "--set", "eval.every=0")
	if err != nil {
		t.Fatalf("train --set: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "done: 1 steps") || !strings.Contains(stdout, "adapters: "+out2) {
		t.Errorf("train --set: stdout %q", stdout)
	}
	// Resuming a finished run is refused and leaves its records alone.
	summaryBefore, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if _, _, err = runCLI(t, "train", "--resume", out); err == nil || !strings.Contains(err.Error(), "already finished (step 4 of 4)") {
		t.Errorf("train --resume of a finished run: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(out, "summary.json")); string(after) != string(summaryBefore) {
		t.Errorf("resuming a finished run rewrote summary.json:\n%s\nwas\n%s", after, summaryBefore)
	}
	if train, eval := cliMetrics(t, out); fmt.Sprint(train) != seq(1, 4) || fmt.Sprint(eval) != "[0 2 4]" {
		t.Errorf("after resume: train steps %v, eval steps %v", train, eval)
	}
	if _, _, err := runCLI(t, "train", "--resume", out, "--set", "lora.rank=2"); err == nil || !strings.Contains(err.Error(), "--set cannot change a resumed run") {
		t.Errorf("--resume with --set: %v", err)
	}
	if _, _, err := runCLI(t, "train", "--resume", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no checkpoint found") {
		t.Errorf("--resume of a directory without checkpoints: %v", err)
	}
}

// TestTrainCLIBadInput: bad input is caught before training starts, with
// a clear error, and no run records are written.
func TestTrainCLIBadInput(t *testing.T) {
	model, dataDir := trainFixture(t)
	copyData := func(edit func(dir string)) string {
		d := t.TempDir()
		for _, f := range []string{"train.jsonl", "valid.jsonl", "test.jsonl"} {
			b, _ := os.ReadFile(filepath.Join(dataDir, f))
			os.WriteFile(filepath.Join(d, f), b, 0o644)
		}
		edit(d)
		return d
	}
	malformed := copyData(func(d string) {
		b, _ := os.ReadFile(filepath.Join(d, "train.jsonl"))
		lines := strings.SplitAfter(string(b), "\n")
		lines[2] = `{"text": "fasting is", ` + "\n"
		os.WriteFile(filepath.Join(d, "train.jsonl"), []byte(strings.Join(lines, "")), 0o644)
	})
	emptyValid := copyData(func(d string) { os.WriteFile(filepath.Join(d, "valid.jsonl"), []byte("\n\n"), 0o644) })
	noTrain := copyData(func(d string) { os.Remove(filepath.Join(d, "train.jsonl")) })
	badRecord := copyData(func(d string) {
		os.WriteFile(filepath.Join(d, "valid.jsonl"), []byte(`{"text": "eat food"}`+"\n"+`{"question": "x"}`+"\n"), 0o644)
	})
	unknownKey := filepath.Join(t.TempDir(), "unknown.yaml")
	b, _ := os.ReadFile(trainConfig(t, model, dataDir, "x", 1))
	os.WriteFile(unknownKey, []byte(strings.Replace(string(b), "  lr: 1.0e-3\n", "  lr: 1.0e-3\n  learning_rate: 1.0e-3\n", 1)), 0o644)

	cases := []struct {
		name  string
		model string
		data  string
		cfg   string // a config file instead of the fixture's
		sets  []string
		want  []string
	}{
		{"malformed JSONL", model, malformed, "", nil, []string{"train.jsonl line 3", "malformed JSON"}},
		{"empty split", model, emptyValid, "", nil, []string{"valid.jsonl", "the valid split is empty"}},
		{"missing split", model, noTrain, "", nil, []string{"load train split", "train.jsonl", "no such file"}},
		{"record of no known format", model, badRecord, "", nil, []string{"valid.jsonl line 2", `want "messages"`}},
		{"unknown config key", model, dataDir, unknownKey, nil, []string{"unknown.yaml:12: unknown key optimizer.learning_rate (did you mean optimizer.lr?)"}},
		{"negative lr", model, dataDir, "", []string{"optimizer.lr=-1e-4"}, []string{"optimizer.lr must be positive, got -0.0001"}},
		{"unknown override key", model, dataDir, "", []string{"training.epoch=3"}, []string{"--set training.epoch=3: unknown key training.epoch (did you mean training.epochs?)"}},
		{"missing model", filepath.Join(t.TempDir(), "no-model"), dataDir, "", nil, []string{"open model", "no-model", "no such file"}},
		{"more LoRA layers than the model has", model, dataDir, "", []string{"lora.num_layers=3"}, []string{"lora.num_layers is 3 but the model has only 2 layers"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			cfg := tc.cfg
			if cfg == "" {
				cfg = trainConfig(t, tc.model, tc.data, out, 1)
			}
			args := []string{"train", "--config", cfg}
			for _, s := range tc.sets {
				args = append(args, "--set", s)
			}
			_, stderr, err := runCLI(t, args...)
			if err == nil {
				t.Fatalf("train succeeded\n%s", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("the run directory was created before the error")
			}
		})
	}
	if _, _, err := runCLI(t, "train"); err == nil || !strings.Contains(err.Error(), "--config is required") {
		t.Errorf("train without --config: %v", err)
	}
}

// TestTrainCLISIGINT: SIGINT to a training `fungtrain train` (a child
// process) makes it save a checkpoint and exit 0 with a resume hint;
// `train --resume` then finishes the run with each step logged once.
func TestTrainCLISIGINT(t *testing.T) {
	model, dataDir := trainFixture(t)
	out := filepath.Join(t.TempDir(), "run")
	const epochs = 60 // 120 steps
	cfgPath := trainConfig(t, model, dataDir, out, epochs)
	child, childOut := startCLIAfterSteps(t, out, 3, 60*time.Second,
		"train", "--config", cfgPath, "--set", "eval.every=0", "--set", "training.save_every=0")
	if err := child.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := child.Wait()
	t.Logf("child output:\n%s", lastLines(childOut.String(), 4))
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("after SIGINT the child exited with %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(childOut.String(), "interrupted: resume with: fungtrain train --resume "+out) {
		t.Errorf("no resume hint in the child's output")
	}
	ck, err := lora.LatestCheckpoint(out)
	if err != nil {
		t.Fatalf("no checkpoint after SIGINT: %v", err)
	}
	var st struct {
		Step int `json:"step"`
	}
	b, _ := os.ReadFile(filepath.Join(ck, "state.json"))
	json.Unmarshal(b, &st)
	t.Logf("interrupted at step %d of %d", st.Step, epochs*2)
	if st.Step < 3 || st.Step >= epochs*2 {
		t.Fatalf("checkpoint at step %d, want one in [3, %d)", st.Step, epochs*2)
	}
	if _, err := os.Stat(filepath.Join(out, "summary.json")); err == nil {
		t.Error("the interrupted run wrote summary.json")
	}
	stdout, stderr, err := runCLI(t, "train", "--resume", out)
	if err != nil {
		t.Fatalf("train --resume: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, fmt.Sprintf("done: %d steps", epochs*2)) {
		t.Errorf("resume stdout %q", stdout)
	}
	if train, _ := cliMetrics(t, out); fmt.Sprint(train) != seq(1, epochs*2) {
		t.Errorf("train steps after resume: %v", train)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// startCLIAfterSteps runs the CLI with args in a child process (this test
// binary, through cliChildEnv) and returns once out/metrics.jsonl holds
// steps train lines, failing the test after timeout. The child's stdout
// and stderr go to the returned buffer.
func startCLIAfterSteps(t *testing.T, out string, steps int, timeout time.Duration, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	js, _ := json.Marshal(args)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), cliChildEnv+"="+string(js))
	var childOut bytes.Buffer
	child.Stdout, child.Stderr = &childOut, &childOut
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
		if bytes.Count(b, []byte(`"type":"train"`)) >= steps {
			return child, &childOut
		}
		if time.Now().After(deadline) {
			child.Process.Kill()
			child.Wait()
			t.Fatalf("no %d train steps after %v:\n%s", steps, timeout, childOut.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

package lora

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// childEnv, when set, names a JSON run config: the test binary then trains
// it (see TestMain) instead of running tests. childDelayEnv slows each step
// so the parent can kill the child mid-run.
//
// With MLX_RANK and MLX_HOSTFILE set (as fungtrain launch and mlx.launch
// set them) the child joins the ring first and trains as one rank of the
// group; childCkEnv names a checkpoint to resume, and childRankMeanEnv
// weights the ranks' per-token means equally, as mlx-lm does.
const (
	childEnv         = "FUNGTRAIN_LORA_CHILD"
	childDelayEnv    = "FUNGTRAIN_LORA_CHILD_DELAY"
	childCkEnv       = "FUNGTRAIN_LORA_CHILD_CHECKPOINT"
	childRankMeanEnv = "FUNGTRAIN_LORA_CHILD_RANKMEAN"
)

func childMain() int {
	b, err := os.ReadFile(os.Getenv(childEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var cfg RunConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	delay, _ := time.ParseDuration(os.Getenv(childDelayEnv))
	log := slog.New(hookHandler{level: slog.LevelInfo, fn: func(r slog.Record) {
		if r.Message == "train" {
			time.Sleep(delay)
		}
	}})
	var g *mlx.Group
	if mlx.DistributedRequested() {
		err := mlx.Do(func() (err error) {
			g, err = mlx.InitDistributed(mlx.DistributedConfig{Backend: "any", Strict: true, InitTimeout: time.Minute,
				Timeout: time.Duration(cfg.Training.DistTimeout * float64(time.Second))})
			return err
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	var edit func(*Trainer) error
	if os.Getenv(childRankMeanEnv) != "" {
		edit = func(tr *Trainer) error { tr.stepper.rankMean = true; return nil }
	}
	sum, err := runTrainingOn(context.Background(), g, cfg, os.Getenv(childCkEnv), log, edit)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	fmt.Printf("done: %d steps\n", sum.Steps)
	return 0
}

// runTraining loads the model and data of cfg, restores checkpoint ck if
// set, and runs the trainer. edit, if set, is called on the trainer before
// Run (on the MLX thread). It fails if any array outlives the run.
func runTraining(ctx context.Context, cfg RunConfig, ck string, log *slog.Logger, edit func(*Trainer) error) (sum *Summary, err error) {
	return runTrainingOn(ctx, nil, cfg, ck, log, edit)
}

// runTrainingOn is runTraining as one rank of g (nil: alone); only rank 0
// restores the checkpoint.
func runTrainingOn(ctx context.Context, g *mlx.Group, cfg RunConfig, ck string, log *slog.Logger, edit func(*Trainer) error) (sum *Summary, err error) {
	var live int64
	if err := mlx.Do(func() error { live = mlx.LiveArrays(); return nil }); err != nil {
		return nil, err
	}
	defer func() {
		var n int64
		mlx.Do(func() error { n = mlx.LiveArrays() - live; return nil })
		if n != 0 {
			err = errors.Join(err, fmt.Errorf("runTraining: %d arrays outlived the run", n))
		}
	}()
	err = mlx.Do(func() error {
		m, err := llama.LoadModel(cfg.Model.Path, llama.LoadOptions{Dtype: "f32"})
		if err != nil {
			return err
		}
		defer m.Free()
		enc := wordEncoder{vocab: m.Config.VocabSize}
		train, err := traindata.LoadSplit(cfg.Data.Config, "train", enc)
		if err != nil {
			return err
		}
		valid, err := traindata.LoadSplit(cfg.Data.Config, "valid", enc)
		if err != nil {
			return err
		}
		tr, err := NewTrainer(cfg, m, train, valid, tokPad, RunMetadata{Seed: cfg.Training.Seed}, log, WithGroup(g))
		if err != nil {
			return err
		}
		defer tr.Close()
		defer tr.Adapters.Remove()
		if ck != "" && tr.Rank() == 0 {
			err = tr.Restore(ck)
		}
		if err := AgreeOnError(g, err); err != nil {
			return err
		}
		if edit != nil {
			if err := edit(tr); err != nil {
				return err
			}
		}
		sum, err = tr.Run(ctx)
		return err
	})
	return sum, err
}

// resumeSetup writes a 4-layer tiny model and the train/valid data, and
// returns a config with dropout on, a warmup+cosine schedule, batch 2 with
// accumulation 2 (12 steps over 6 epochs), evals every 3 steps and
// checkpoints every 2.
func resumeSetup(t *testing.T) RunConfig {
	t.Helper()
	modelDir := writeTinyModelDir(t, 4, 5)
	dataDir := t.TempDir()
	writeFile(t, dataDir, "train.jsonl", chatJSONL(trainPairs))
	writeFile(t, dataDir, "valid.jsonl", chatJSONL(validPairs))
	c := testConfig(filepath.Join(t.TempDir(), "run"))
	c.Model.Path, c.Data.Dir = modelDir, dataDir
	c.Data.MaxSeqLength = 64
	c.LoRA.Dropout = 0.1
	c.LoRA.NumLayers = 3
	c.LoRA.Keys = []string{"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"}
	c.Optimizer.LR = 1e-3
	c.Optimizer.WeightDecay = 0.01
	c.Schedule = ScheduleConfig{Name: "cosine", WarmupSteps: 2, MinLR: 1e-4}
	c.Training.BatchSize, c.Training.GradAccumulation, c.Training.Epochs = 2, 2, 6
	c.Training.SaveEvery = 2
	c.Eval.Every, c.Eval.BatchSize = 3, 2
	return c
}

// adapterValues reads dir/adapters.safetensors as float64 per tensor.
func adapterValues(t *testing.T, dir string) map[string][]float64 {
	t.Helper()
	out := map[string][]float64{}
	doMLX(t, func() error {
		m, _, err := mlx.LoadSafetensors(filepath.Join(dir, "adapters.safetensors"))
		if err != nil {
			return err
		}
		defer freeMap(m)
		for k, a := range m {
			v, err := readFloats(a)
			if err != nil {
				return err
			}
			out[k] = v[0]
		}
		return nil
	})
	return out
}

// compareAdapters returns the largest |difference| between two adapter
// files' values, failing when their tensor sets differ.
func compareAdapters(t *testing.T, a, b map[string][]float64) float64 {
	t.Helper()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("adapter tensor counts %d and %d", len(a), len(b))
	}
	worst := 0.0
	for k, v := range a {
		w, ok := b[k]
		if !ok {
			t.Fatalf("tensor %s missing from the second adapter", k)
		}
		worst = max(worst, maxAbsDiff(v, w))
	}
	return worst
}

// metricsRecord is one metrics.jsonl line.
type metricsRecord struct {
	Type    string  `json:"type"`
	Step    int     `json:"step"`
	Loss    float64 `json:"loss"`
	ValLoss float64 `json:"val_loss"`
}

func readMetrics(t *testing.T, dir string) []metricsRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []metricsRecord
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		var r metricsRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("metrics.jsonl line %d: %v: %q", n, err, sc.Text())
		}
		out = append(out, r)
	}
	return out
}

// checkMetricsHistory checks that the run's metrics hold each train step
// 1..steps and each eval step once, in order, with the same losses as
// the reference run's metrics.
func checkMetricsHistory(t *testing.T, got, ref []metricsRecord, steps int) {
	t.Helper()
	var trainSteps, evalSteps []int
	for _, r := range got {
		switch r.Type {
		case "train":
			trainSteps = append(trainSteps, r.Step)
		case "eval":
			evalSteps = append(evalSteps, r.Step)
		default:
			t.Errorf("metrics record of type %q", r.Type)
		}
	}
	want := make([]int, steps)
	for i := range want {
		want[i] = i + 1
	}
	if fmt.Sprint(trainSteps) != fmt.Sprint(want) {
		t.Errorf("train records at steps %v, want each of %v once", trainSteps, want)
	}
	if fmt.Sprint(evalSteps) != "[0 3 6 9 12]" {
		t.Errorf("eval records at steps %v, want [0 3 6 9 12]", evalSteps)
	}
	if len(got) != len(ref) {
		t.Fatalf("%d metrics records, uninterrupted run has %d", len(got), len(ref))
	}
	worst := 0.0
	for i := range got {
		if got[i].Type != ref[i].Type || got[i].Step != ref[i].Step {
			t.Fatalf("record %d is %s@%d, uninterrupted run has %s@%d", i, got[i].Type, got[i].Step, ref[i].Type, ref[i].Step)
		}
		worst = max(worst, abs(got[i].Loss-ref[i].Loss), abs(got[i].ValLoss-ref[i].ValLoss))
	}
	t.Logf("max |loss difference| between the resumed and uninterrupted metrics: %.3g", worst)
	if worst > 1e-5 {
		t.Errorf("resumed losses differ from the uninterrupted run's by %g", worst)
	}
}

func abs(x float64) float64 { return max(x, -x) }

// latestStep reads OUT/checkpoints/latest as a step number (-1 if absent).
func latestStep(out string) int {
	b, err := os.ReadFile(filepath.Join(out, "checkpoints", "latest"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(b)), "step-"))
	if err != nil {
		return -1
	}
	return n
}

// lastTrainStep is the step of the last complete train record in
// OUT/metrics.jsonl (-1 if none).
func lastTrainStep(out string) int {
	b, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	last := -1
	for _, line := range strings.Split(string(b), "\n") {
		var r metricsRecord
		if json.Unmarshal([]byte(line), &r) == nil && r.Type == "train" {
			last = r.Step
		}
	}
	return last
}

// TestResumeAfterSIGKILL: a child process trains, is killed with SIGKILL
// once a checkpoint at step >= 4 exists, and the run is resumed in-process
// from its latest checkpoint; the final adapter equals an uninterrupted
// run's (dropout on, so the RNG state is restored too), and metrics.jsonl
// holds each step once with the uninterrupted run's losses.
func TestResumeAfterSIGKILL(t *testing.T) {
	cfg := resumeSetup(t)
	ref := cfg
	ref.Output.Dir = filepath.Join(t.TempDir(), "ref")
	if _, err := runTraining(context.Background(), ref, "", quietLog(), nil); err != nil {
		t.Fatal(err)
	}

	cfgFile := filepath.Join(t.TempDir(), "cfg.json")
	b, _ := json.Marshal(cfg)
	writeFile(t, filepath.Dir(cfgFile), filepath.Base(cfgFile), string(b))
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+cfgFile, childDelayEnv+"=150ms")
	var childErr bytes.Buffer
	child.Stdout, child.Stderr = &childErr, &childErr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill once a checkpoint at step >= k exists and metrics.jsonl already
	// has a train record past it, which the resumed run must not repeat.
	const k = 4
	deadline := time.Now().Add(90 * time.Second)
	for latestStep(cfg.Output.Dir) < k || lastTrainStep(cfg.Output.Dir) <= latestStep(cfg.Output.Dir) {
		if time.Now().After(deadline) {
			child.Process.Kill()
			child.Wait()
			t.Fatalf("no checkpoint at step >= %d after 90s; child output:\n%s", k, childErr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := child.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v\n%s", err, childErr.String())
	}
	if _, err := os.Stat(filepath.Join(cfg.Output.Dir, "summary.json")); err == nil {
		t.Fatal("the child finished before it was killed; the test did not interrupt anything")
	}
	ck, err := LatestCheckpoint(cfg.Output.Dir)
	if err != nil {
		t.Fatal(err)
	}
	killedAt, lastLogged := latestStep(cfg.Output.Dir), lastTrainStep(cfg.Output.Dir)
	t.Logf("killed the child with its latest checkpoint at step %d and metrics logged through step %d", killedAt, lastLogged)
	if lastLogged <= killedAt {
		t.Errorf("the killed run logged through step %d, not past its checkpoint at %d", lastLogged, killedAt)
	}
	ckCfg, err := ReadCheckpointConfig(ck)
	if err != nil {
		t.Fatal(err)
	}
	if ckCfg.LoRA.Dropout != 0.1 || ckCfg.Training.Seed != cfg.Training.Seed {
		t.Errorf("checkpoint config %+v does not match the run's", ckCfg)
	}
	sum, err := runTraining(context.Background(), ckCfg, ck, quietLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Steps != 12 {
		t.Errorf("resumed run ended at step %d, want 12", sum.Steps)
	}
	diff := compareAdapters(t, adapterValues(t, cfg.Output.Dir), adapterValues(t, ref.Output.Dir))
	t.Logf("max |adapter difference| resumed (from step %d) vs uninterrupted: %.3g", killedAt, diff)
	if diff > 1e-6 {
		t.Errorf("resumed adapter differs from the uninterrupted run's by %g (> 1e-6)", diff)
	}
	checkMetricsHistory(t, readMetrics(t, cfg.Output.Dir), readMetrics(t, ref.Output.Dir), 12)

	// Control: dropout matters, so equality above needed the RNG restored.
	noDrop := ref
	noDrop.LoRA.Dropout = 0
	noDrop.Output.Dir = filepath.Join(t.TempDir(), "nodrop")
	if _, err := runTraining(context.Background(), noDrop, "", quietLog(), nil); err != nil {
		t.Fatal(err)
	}
	ctl := compareAdapters(t, adapterValues(t, noDrop.Output.Dir), adapterValues(t, ref.Output.Dir))
	t.Logf("control: dropout 0 vs 0.1 adapters differ by %.3g", ctl)
	if ctl < 1e-4 {
		t.Errorf("dropout changes the adapter by only %g; the resume test would not see a lost RNG state", ctl)
	}
}

// TestInterruptSavesCheckpoint: cancelling Run's context (what SIGINT and
// SIGTERM do in the CLI) makes Run return ErrInterrupted after saving a
// checkpoint of the last completed step; resuming from it gives the
// uninterrupted run's adapter.
func TestInterruptSavesCheckpoint(t *testing.T) {
	cfg := resumeSetup(t)
	cfg.Training.SaveEvery = 0 // only the interrupt saves
	ref := cfg
	ref.Output.Dir = filepath.Join(t.TempDir(), "ref")
	if _, err := runTraining(context.Background(), ref, "", quietLog(), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(hookHandler{level: slog.LevelInfo, fn: func(r slog.Record) {
		if step, _ := attrInt(r, "step"); r.Message == "train" && step == 5 {
			cancel()
		}
	}})
	_, err := runTraining(ctx, cfg, "", log, nil)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Run after cancel: %v, want ErrInterrupted", err)
	}
	if got := latestStep(cfg.Output.Dir); got != 5 {
		t.Fatalf("latest checkpoint at step %d, want 5", got)
	}
	ck, err := LatestCheckpoint(cfg.Output.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"adapters.safetensors", "adapter_config.json", "optimizer.safetensors", "state.json"} {
		if _, err := os.Stat(filepath.Join(ck, f)); err != nil {
			t.Errorf("checkpoint lacks %s: %v", f, err)
		}
	}
	var st checkpointState
	b, _ := os.ReadFile(filepath.Join(ck, "state.json"))
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Step != 5 || st.Cursor != 10 || st.OptimizerStep != 5 {
		t.Errorf("state.json step %d cursor %d optimizer step %d, want 5, 10, 5", st.Step, st.Cursor, st.OptimizerStep)
	}
	if _, err := runTraining(context.Background(), cfg, ck, quietLog(), nil); err != nil {
		t.Fatal(err)
	}
	diff := compareAdapters(t, adapterValues(t, cfg.Output.Dir), adapterValues(t, ref.Output.Dir))
	t.Logf("max |adapter difference| interrupted at 5 and resumed vs uninterrupted: %.3g", diff)
	if diff > 1e-6 {
		t.Errorf("adapter differs by %g (> 1e-6)", diff)
	}
	checkMetricsHistory(t, readMetrics(t, cfg.Output.Dir), readMetrics(t, ref.Output.Dir), 12)
}

package lora

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/internal/lockedbuf"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// Data-parallel training, tested with real processes over MLX's ring on
// loopback: each rank is this test binary acting as a training child (see
// childMain), joined through MLX_RANK and MLX_HOSTFILE as fungtrain launch
// and mlx.launch set them.

// distTolerance bounds the difference between the adapters of 2 ranks
// with batch b and of one process with batch 2b, relative to how far
// training moved them: the two sum the same float32 gradients in another
// order (a rank's share, then the all-reduce). Measured: 7e-7 (see the
// test's log); mlx-lm's equal weighting of the ranks' means is off by
// 2.3e-2.
const distTolerance = 1e-4

// rankProc is one rank's process.
type rankProc struct {
	rank     int
	cmd      *exec.Cmd
	out      *lockedbuf.Buffer
	done     chan struct{}
	exit     error
	exitedAt time.Time
}

// ringHostfile writes a ring hostfile for n ranks on free loopback ports.
func ringHostfile(t *testing.T, n int) string {
	t.Helper()
	var hosts [][]string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		hosts = append(hosts, []string{l.Addr().String()})
	}
	for _, l := range ls {
		l.Close()
	}
	b, _ := json.Marshal(hosts)
	return writeFile(t, t.TempDir(), "hosts.json", string(b))
}

// startRanks starts n ranks training cfg, each in its own working
// directory (cfg's output.dir is relative: only rank 0 may write it).
// env is added to every rank's environment.
func startRanks(t *testing.T, cfg RunConfig, n int, env ...string) (procs []*rankProc, cwds []string) {
	t.Helper()
	b, _ := json.Marshal(cfg)
	cfgFile := writeFile(t, t.TempDir(), "cfg.json", string(b))
	hostfile := ringHostfile(t, n)
	for r := range n {
		p := &rankProc{rank: r, out: &lockedbuf.Buffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(os.Args[0], "-test.run=^$")
		p.cmd.Dir = t.TempDir()
		p.cmd.Env = append(os.Environ(), childEnv+"="+cfgFile, mlx.EnvRank+"="+strconv.Itoa(r), mlx.EnvHostfile+"="+hostfile)
		p.cmd.Env = append(p.cmd.Env, env...)
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			p.exit = p.cmd.Wait()
			p.exitedAt = time.Now()
			close(p.done)
		}()
		procs = append(procs, p)
		cwds = append(cwds, p.cmd.Dir)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return procs, cwds
}

// waitRanks waits for every rank to exit 0.
func waitRanks(t *testing.T, procs []*rankProc) {
	t.Helper()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Minute):
			t.Fatalf("rank %d still running after 5 minutes:\n%s", p.rank, p.out)
		}
		if p.exit != nil {
			t.Fatalf("rank %d: %v\n%s", p.rank, p.exit, p.out)
		}
	}
}

// distSetup writes a 4-layer tiny model and the train/valid data, and
// returns a config: dropout 0, batch 2 per rank, 4 steps, evaluations and
// checkpoints every 2 steps, output.dir relative ("run").
//
// AdamW's ε is 1: with the usual 1e-8 an update is about lr·sign(g) and
// hides the size of the gradient, which is what the weighting of the
// ranks changes; with ε = 1 it is lr·m/(√v+1), within a few percent of
// lr·m for these gradients (as in TestAccumulationIsExact).
func distSetup(t *testing.T) RunConfig {
	t.Helper()
	c := resumeSetup(t)
	c.LoRA.Dropout = 0
	c.Optimizer.Eps, c.Optimizer.LR, c.Optimizer.WeightDecay = 1, 0.05, 0
	c.Training.BatchSize, c.Training.GradAccumulation, c.Training.Epochs, c.Training.MaxSteps = 2, 1, 0, 4
	c.Training.SaveEvery, c.Eval.Every, c.Eval.BatchSize = 2, 2, 1
	c.Training.DistTimeout = 60
	c.Output.Dir = "run"
	return c
}

// oneProcess trains cfg with world × its batch in this process and returns
// the run directory.
func oneProcess(t *testing.T, cfg RunConfig, world int) string {
	t.Helper()
	cfg.Training.BatchSize *= world
	cfg.Output.Dir = filepath.Join(t.TempDir(), "ref")
	if _, err := runTraining(context.Background(), cfg, "", quietLog(), nil); err != nil {
		t.Fatal(err)
	}
	return cfg.Output.Dir
}

// movement is how far training moved the adapter of run: the largest
// |final - initial| over A (B starts at zero, A from the seed).
func adapterMovement(t *testing.T, final, start map[string][]float64) float64 {
	t.Helper()
	return compareAdapters(t, final, start)
}

// unequalShares checks that the 2 ranks' shares of some step of cfg hold
// different numbers of loss tokens, so that token weighting and equal
// weighting of the ranks' means differ.
func unequalShares(t *testing.T, cfg RunConfig, split *traindata.Split) {
	t.Helper()
	spec := traindata.ShardSpec{WorldSize: 2, RankBatch: cfg.Training.BatchSize}
	var counts [][2]int
	unequal := false
	for g := range 2 {
		global := spec.GlobalBatches(split.Examples, 0, cfg.Training.Seed)[g]
		var c [2]int
		for r := range 2 {
			c[r], _ = traindata.Counts(split.Examples, traindata.Shard(global, r, 2))
		}
		counts = append(counts, c)
		unequal = unequal || c[0] != c[1]
	}
	t.Logf("loss tokens of rank 0 and rank 1 in the first global batches: %v", counts)
	if !unequal {
		t.Fatalf("the ranks hold equal loss-token counts %v; the test could not tell weightings apart", counts)
	}
}

// TestDistributedMatchesOneProcess: two ranks over the loopback ring with
// batch 2 each end with the adapter of one process with batch 4, within
// distTolerance of how far training moved it, without and with gradient
// accumulation (and with auto micro-batches packing an accumulation
// window), on shares with unequal loss-token counts; the train and
// validation losses in metrics.jsonl agree too, and rank 1 writes nothing.
// Negative control (without accumulation, where the ranks' counts differ
// at every step): weighting each rank's per-token mean equally (mlx-lm's
// data parallelism) misses the one-process adapter by far more.
func TestDistributedMatchesOneProcess(t *testing.T) {
	base := distSetup(t)
	train := loadSplit(t, t.TempDir(), "train", trainPairs)
	unequalShares(t, base, train)
	for _, accum := range []int{1, 2} {
		t.Run(fmt.Sprintf("accumulation %d", accum), func(t *testing.T) {
			cfg := base
			cfg.Training.GradAccumulation = accum
			refDir := oneProcess(t, cfg, 2)
			ref := adapterValues(t, refDir)
			start := initialAdapter(t, cfg)
			moved := adapterMovement(t, ref, start)

			procs, cwds := startRanks(t, cfg, 2)
			waitRanks(t, procs)
			runDir := filepath.Join(cwds[0], "run")
			diff := compareAdapters(t, adapterValues(t, runDir), ref)
			t.Logf("2 ranks × batch 2 vs 1 process × batch 4: max |adapter difference| %.3g, %.2g of the movement %.3g",
				diff, diff/moved, moved)
			if diff > distTolerance*moved {
				t.Errorf("the 2-rank adapter differs from the one-process adapter by %g (%.2g of the movement; tolerance %g)",
					diff, diff/moved, distTolerance)
			}
			checkSameLosses(t, readMetrics(t, runDir), readMetrics(t, refDir))
			if _, err := os.Stat(filepath.Join(cwds[1], "run")); err == nil {
				t.Errorf("rank 1 wrote a run directory")
			}
			for _, f := range []string{"adapters.safetensors", "summary.json", "best/adapters.safetensors", "checkpoints/latest"} {
				if _, err := os.Stat(filepath.Join(runDir, f)); err != nil {
					t.Errorf("rank 0's run directory lacks %s", f)
				}
			}

			if accum != 1 {
				// Here each step is a whole epoch, and the ranks' shares
				// of an epoch hold equal counts (28 and 28).
				return
			}
			procs, cwds = startRanks(t, cfg, 2, childRankMeanEnv+"=1")
			waitRanks(t, procs)
			ctl := compareAdapters(t, adapterValues(t, filepath.Join(cwds[0], "run")), ref)
			t.Logf("control: equal weighting of the ranks' means (mlx-lm) misses by %.3g, %.2g of the movement", ctl, ctl/moved)
			if ctl < 10*distTolerance*moved {
				t.Errorf("equal weighting of the ranks' means is only %g off; the tolerance cannot tell it from token weighting", ctl)
			}
		})
	}
}

// initialAdapter is the adapter a run of cfg starts from.
func initialAdapter(t *testing.T, cfg RunConfig) map[string][]float64 {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "init")
	doMLX(t, func() error {
		m, err := llama.LoadModel(cfg.Model.Path, llama.LoadOptions{Dtype: "f32"})
		if err != nil {
			return err
		}
		defer m.Free()
		a, err := Apply(m, cfg.LoRA, cfg.Training.Seed)
		if err != nil {
			return err
		}
		defer a.Remove()
		return a.Save(dir)
	})
	return adapterValues(t, dir)
}

// checkSameLosses checks that two runs logged the same train and eval
// records with losses within 1e-5.
func checkSameLosses(t *testing.T, got, ref []metricsRecord) {
	t.Helper()
	if len(got) != len(ref) {
		t.Fatalf("%d metrics records, the one-process run has %d", len(got), len(ref))
	}
	worst := 0.0
	for i := range got {
		if got[i].Type != ref[i].Type || got[i].Step != ref[i].Step {
			t.Fatalf("record %d is %s@%d, the one-process run has %s@%d", i, got[i].Type, got[i].Step, ref[i].Type, ref[i].Step)
		}
		worst = max(worst, abs(got[i].Loss-ref[i].Loss), abs(got[i].ValLoss-ref[i].ValLoss))
	}
	t.Logf("max |loss difference| over %d metrics records: %.3g", len(got), worst)
	if worst > 1e-5 {
		t.Errorf("losses differ from the one-process run's by %g", worst)
	}
}

// TestDistributedKillAndResume: kill -9 of rank 1 in the middle of a
// 2-rank run makes rank 0 exit with an error that says a collective
// failed, well within the collective bound (training.dist_timeout, 60 s
// here); resuming both ranks from the last checkpoint ends with the
// adapter of an uninterrupted run, and metrics.jsonl holds each step once.
func TestDistributedKillAndResume(t *testing.T) {
	cfg := distSetup(t)
	cfg.Training.MaxSteps, cfg.Training.SaveEvery, cfg.Eval.Every = 12, 2, 0
	refDir := oneProcess(t, cfg, 2)

	procs, cwds := startRanks(t, cfg, 2, childDelayEnv+"=150ms")
	out := filepath.Join(cwds[0], "run")
	deadline := time.Now().Add(2 * time.Minute)
	for latestStep(out) < 4 || lastTrainStep(out) <= latestStep(out) {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint at step >= 4 after 2 minutes:\n%s\n%s", procs[0].out, procs[1].out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	killedAt := time.Now()
	if err := procs[1].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-procs[0].done:
	case <-time.After(time.Duration(cfg.Training.DistTimeout) * time.Second):
		t.Fatalf("rank 0 still running %gs after rank 1 was killed", cfg.Training.DistTimeout)
	}
	took := procs[0].exitedAt.Sub(killedAt)
	msg := lastLines(procs[0].out.String(), 3)
	t.Logf("rank 0 exited %v after rank 1 was killed (%v):\n%s", took.Round(time.Millisecond), procs[0].exit, msg)
	if procs[0].exit == nil || !strings.Contains(msg, "collective") {
		t.Errorf("rank 0 ended with %v and %q; want an error naming the failed collective", procs[0].exit, msg)
	}
	if took > 10*time.Second {
		t.Errorf("rank 0 took %v to stop", took)
	}
	if _, err := os.Stat(filepath.Join(out, "summary.json")); err == nil {
		t.Fatal("the run finished before rank 1 was killed; the test interrupted nothing")
	}
	ck, err := LatestCheckpoint(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resuming from %s", ck)
	resumed := cfg
	resumed.Output.Dir = out // rank 0's run directory; rank 1 never reads it
	procs, _ = startRanks(t, resumed, 2, childCkEnv+"="+ck)
	waitRanks(t, procs)
	ref := adapterValues(t, refDir)
	moved := adapterMovement(t, ref, initialAdapter(t, cfg))
	diff := compareAdapters(t, adapterValues(t, out), ref)
	t.Logf("resumed 2-rank run vs uninterrupted one-process run: max |adapter difference| %.3g, %.2g of the movement", diff, diff/moved)
	if diff > distTolerance*moved {
		t.Errorf("the resumed adapter differs by %g (%.2g of the movement)", diff, diff/moved)
	}
	var steps []int
	for _, r := range readMetrics(t, out) {
		if r.Type == "train" {
			steps = append(steps, r.Step)
		}
	}
	if fmt.Sprint(steps) != "[1 2 3 4 5 6 7 8 9 10 11 12]" {
		t.Errorf("train records at steps %v, want each of 1..12 once", steps)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

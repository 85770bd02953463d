package lora

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// Checkpoints live in OUT/checkpoints/step-NNNNNNN/ with adapters (mlx-lm
// format), optimizer.safetensors (the AdamW moments) and state.json. Each
// is written to a temporary directory and renamed into place; then the
// file OUT/checkpoints/latest names it. A kill at any moment leaves the
// previous checkpoint intact.
const keepCheckpoints = 2

// checkpointState is state.json.
type checkpointState struct {
	TrainState
	OptimizerStep int       `json:"optimizer_step"`
	TotalSteps    int       `json:"total_steps"`
	Config        RunConfig `json:"config"`
	// The ranks that wrote it (absent before distributed training: one
	// rank with the config's batch size). The cursor counts global
	// micro-batches of WorldSize × RankBatch examples.
	WorldSize int `json:"world_size,omitempty"`
	RankBatch int `json:"rank_batch,omitempty"`
}

func checkpointsDir(out string) string { return filepath.Join(out, "checkpoints") }

// saveCheckpoint writes a checkpoint of the current step (rank 0 only;
// every rank holds the same state).
func (t *Trainer) saveCheckpoint() error {
	if !t.writes() {
		return nil
	}
	root := checkpointsDir(t.out)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	name := fmt.Sprintf("step-%07d", t.state.Step)
	tmp, err := os.MkdirTemp(root, ".tmp-"+name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := t.Adapters.Save(tmp); err != nil {
		return err
	}
	moments := map[string]*mlx.Array{}
	names := t.Adapters.ParamNames()
	for i, n := range names {
		moments[n+".m"] = t.Opt.M[i]
		moments[n+".v"] = t.Opt.V[i]
	}
	if err := mlx.SaveSafetensors(filepath.Join(tmp, "optimizer.safetensors"), moments, nil); err != nil {
		return err
	}
	st := checkpointState{TrainState: t.state, OptimizerStep: t.Opt.Step, TotalSteps: t.totalSteps, Config: t.Cfg,
		WorldSize: t.WorldSize(), RankBatch: t.Cfg.Training.BatchSize}
	if err := writeJSON(filepath.Join(tmp, "state.json"), st.encoded()); err != nil {
		return err
	}
	final := filepath.Join(root, name)
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("publish checkpoint %s: %w", final, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(root, "latest"), []byte(name+"\n")); err != nil {
		return err
	}
	t.Log.Debug("checkpoint saved", "dir", final)
	return pruneCheckpoints(root, name)
}

// removeStaleTemps removes what an interrupted save leaves in a run
// directory: temporary checkpoint directories (checkpoints/.tmp-step-*)
// and files written atomically (.NAME.tmp-*) in the run directory, best/
// and checkpoints/. A kill during a save leaves them; nothing else
// removes them, and a checkpoint directory holds a copy of the adapters
// and the moments. It returns the paths removed.
func removeStaleTemps(out string) ([]string, error) {
	var removed []string
	for _, dir := range []string{out, filepath.Join(out, "best"), checkpointsDir(out)} {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("clean %s: %w", dir, err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") || !strings.Contains(e.Name(), ".tmp-") {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if err := os.RemoveAll(p); err != nil {
				return removed, fmt.Errorf("remove stale %s: %w", p, err)
			}
			removed = append(removed, p)
		}
	}
	return removed, nil
}

func pruneCheckpoints(root, latest string) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var steps []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "step-") {
			steps = append(steps, e.Name())
		}
	}
	sort.Strings(steps)
	for len(steps) > keepCheckpoints {
		if steps[0] != latest {
			if err := os.RemoveAll(filepath.Join(root, steps[0])); err != nil {
				return err
			}
		}
		steps = steps[1:]
	}
	return nil
}

// LatestCheckpoint returns the newest complete checkpoint of a run
// directory (or dir itself when it is a checkpoint).
func LatestCheckpoint(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
		return dir, nil
	}
	b, err := os.ReadFile(filepath.Join(checkpointsDir(dir), "latest"))
	if err != nil {
		return "", fmt.Errorf("resume %s: no checkpoint found (%w)", dir, err)
	}
	ck := filepath.Join(checkpointsDir(dir), strings.TrimSpace(string(b)))
	if _, err := os.Stat(filepath.Join(ck, "state.json")); err != nil {
		return "", fmt.Errorf("resume %s: checkpoint %s is incomplete: %w", dir, ck, err)
	}
	return ck, nil
}

// ReadCheckpointConfig returns the run config a checkpoint was saved with.
func ReadCheckpointConfig(ck string) (RunConfig, error) {
	st, err := readCheckpointState(ck)
	return st.Config, err
}

// readCheckpointState reads ck/state.json. Settings that the checkpoint's
// version of fungtrain did not have keep their defaults.
func readCheckpointState(ck string) (checkpointState, error) {
	st := checkpointState{Config: DefaultRunConfig()}
	path := filepath.Join(ck, "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parse %s: %w", path, err)
	}
	st.decode()
	if st.WorldSize == 0 {
		st.WorldSize, st.RankBatch = 1, st.Config.Training.BatchSize
	}
	return st, nil
}

// Restore loads a checkpoint into the trainer: adapter weights, optimizer
// moments and step, and the data cursor, so training continues exactly.
// Across ranks only rank 0 restores (Run then gives every rank its
// state); a checkpoint resumes with any number of ranks that keeps its
// global batch, and is refused otherwise.
func (t *Trainer) Restore(ck string) error {
	st, err := readCheckpointState(ck)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	saved := traindata.ShardSpec{WorldSize: st.WorldSize, RankBatch: st.RankBatch}
	if err := traindata.CheckReshard(saved, t.shardSpec()); err != nil {
		return fmt.Errorf("restore %s: %w", ck, err)
	}
	load := func(file string) (map[string]*mlx.Array, error) {
		m, _, err := mlx.LoadSafetensors(filepath.Join(ck, file))
		return m, err
	}
	weights, err := load("adapters.safetensors")
	if err != nil {
		return err
	}
	moments, err := load("optimizer.safetensors")
	if err != nil {
		freeMap(weights)
		return err
	}
	defer freeMap(weights)
	defer freeMap(moments)
	names := t.Adapters.ParamNames()
	params := make([]*mlx.Array, len(names))
	for i, n := range names {
		w, m, v := weights[n], moments[n+".m"], moments[n+".v"]
		if w == nil || m == nil || v == nil {
			for _, p := range params[:i] {
				p.Free()
			}
			return fmt.Errorf("restore %s: missing tensors for %s", ck, n)
		}
		delete(weights, n)
		delete(moments, n+".m")
		delete(moments, n+".v")
		mlx.Detach(w, m, v)
		params[i] = w
		t.Opt.M[i].Free()
		t.Opt.V[i].Free()
		t.Opt.M[i], t.Opt.V[i] = m, v
	}
	for _, p := range t.Adapters.Params() {
		p.Free()
	}
	t.Adapters.SetParams(params)
	if err := mlx.Eval(append(params, t.Opt.State()...)...); err != nil {
		return fmt.Errorf("restore %s: %w", ck, err)
	}
	t.Opt.Step = st.OptimizerStep
	t.state = st.TrainState
	return nil
}

func freeMap(m map[string]*mlx.Array) {
	for _, a := range m {
		a.Free()
	}
}

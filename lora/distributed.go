package lora

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// Data-parallel training (see docs/DISTRIBUTED.md): every rank runs the
// same trainer on the same data; each takes its share of every global
// batch, the gradients are summed in the step's all-reduce (reduce.go),
// and rank 0 alone writes the run directory. This file holds what the
// trainer does differently with more than one rank.

// Rank is this process's rank in the group it trains with (0 alone).
func (t *Trainer) Rank() int {
	if t.group == nil {
		return 0
	}
	return t.group.Rank()
}

// WorldSize is the number of ranks training together (1 alone).
func (t *Trainer) WorldSize() int {
	if t.group == nil {
		return 1
	}
	return t.group.Size()
}

// writes reports whether this rank writes the run directory (rank 0).
func (t *Trainer) writes() bool { return t.Rank() == 0 }

func (t *Trainer) shardSpec() traindata.ShardSpec {
	return traindata.ShardSpec{WorldSize: t.WorldSize(), RankBatch: t.Cfg.Training.BatchSize}
}

// syncRanks gives every rank rank 0's adapters, optimizer moments and
// step, and training state (after a Restore on rank 0 only, or fresh on
// every rank): the all-sum of rank 0's values with zeros is exact.
func (t *Trainer) syncRanks() error {
	if t.WorldSize() == 1 {
		return nil
	}
	st := checkpointState{TrainState: t.state, OptimizerStep: t.Opt.Step}
	b, err := json.Marshal(st.encoded())
	if err != nil {
		return err
	}
	if b, err = BroadcastBytes(t.group, b); err != nil {
		return fmt.Errorf("share rank 0's training state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("rank 0's training state: %w", err)
	}
	st.decode()
	params, err := broadcastArrays(t.group, t.Adapters.Params())
	if err != nil {
		return err
	}
	t.Adapters.SetParams(params)
	if t.Opt.M, err = broadcastArrays(t.group, t.Opt.M); err != nil {
		return err
	}
	if t.Opt.V, err = broadcastArrays(t.group, t.Opt.V); err != nil {
		return err
	}
	t.state, t.Opt.Step = st.TrainState, st.OptimizerStep
	return nil
}

// DistributedInfo is run_metadata.json's record of the ranks a run
// trained on.
type DistributedInfo struct {
	Backend     string   `json:"backend"`
	WorldSize   int      `json:"world_size"`
	RankBatch   int      `json:"rank_batch"`   // training.batch_size: examples per rank in a global micro-batch
	GlobalBatch int      `json:"global_batch"` // world_size × rank_batch
	Devices     []string `json:"devices"`      // each rank's device and host, in rank order
}

// DescribeRanks gathers every rank's device (its own description on each
// rank) into the run's distributed record. With no group it returns nil.
func DescribeRanks(g *mlx.Group, cfg RunConfig, device string) (*DistributedInfo, error) {
	if g == nil || g.Size() == 1 {
		return nil, nil
	}
	all, err := g.GatherBytes([]byte(device))
	if err != nil {
		return nil, fmt.Errorf("gather the ranks' devices: %w", err)
	}
	d := &DistributedInfo{Backend: g.Backend(), WorldSize: g.Size(), RankBatch: cfg.Training.BatchSize,
		GlobalBatch: g.Size() * cfg.Training.BatchSize}
	for _, b := range all {
		d.Devices = append(d.Devices, string(b))
	}
	return d, nil
}

// CheckRanksAgree checks that every rank runs the same fungtrain and MLX,
// the same config, on the same data and model (meta as each rank made
// it), and returns an error naming the first rank and setting that
// differs from rank 0's. Every rank gets the same answer.
func CheckRanksAgree(g *mlx.Group, meta RunMetadata) error {
	if g == nil || g.Size() == 1 {
		return nil
	}
	mine := rankFingerprint(meta)
	b, err := json.Marshal(mine)
	if err != nil {
		return err
	}
	all, err := g.GatherBytes(b)
	if err != nil {
		return fmt.Errorf("compare the ranks' set-up: %w", err)
	}
	var ref map[string]string
	if err := json.Unmarshal(all[0], &ref); err != nil {
		return fmt.Errorf("rank 0's set-up: %w", err)
	}
	for r := 1; r < len(all); r++ {
		var other map[string]string
		if err := json.Unmarshal(all[r], &other); err != nil {
			return fmt.Errorf("rank %d's set-up: %w", r, err)
		}
		if k := firstDifference(ref, other); k != "" {
			return fmt.Errorf("rank %d differs from rank 0 in %s (%q there, %q on rank 0): "+
				"every rank must run the same build with the same config, data and model", r, k, other[k], ref[k])
		}
	}
	return nil
}

// rankFingerprint is what must be equal on every rank.
func rankFingerprint(meta RunMetadata) map[string]string {
	cfg, _ := json.Marshal(meta.Config)
	sum := sha256.Sum256(cfg)
	f := map[string]string{
		"fungtrain version": meta.FungtrainVersion, "git commit": meta.GitCommit, "MLX version": meta.MLXVersion,
		"backend": meta.Backend, "config (its SHA-256)": hex.EncodeToString(sum[:]), "the model's SHA-256": meta.ModelSHA256,
	}
	for name, h := range meta.DataSHA256 {
		f["the SHA-256 of "+name] = h
	}
	return f
}

func firstDifference(a, b map[string]string) string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	sorted := slices.Sorted(maps.Keys(keys))
	for _, k := range sorted {
		if a[k] != b[k] {
			return k
		}
	}
	return ""
}

// maxOverRanks is the largest of each rank's v (v alone without a group).
func (t *Trainer) maxOverRanks(v float64) float64 {
	if t.WorldSize() == 1 {
		return v
	}
	all, err := t.group.MaxFloat64s([]float64{v})
	if err != nil {
		return v
	}
	return all[0]
}

// barrier waits for every rank (nothing alone).
func (t *Trainer) barrier() error {
	if t.WorldSize() == 1 {
		return nil
	}
	return t.group.Barrier()
}

// encoded is s with +Inf and NaN (which JSON cannot hold) as -1.
func (s checkpointState) encoded() checkpointState {
	if math.IsInf(s.BestValLoss, 0) {
		s.BestValLoss = -1 // none yet
	}
	if math.IsNaN(s.InitialVal) {
		s.InitialVal = -1
	}
	return s
}

// decode undoes encoded.
func (s *checkpointState) decode() {
	if s.BestValLoss < 0 {
		s.BestValLoss = math.Inf(1)
	}
	if s.InitialVal < 0 {
		s.InitialVal = math.NaN()
	}
}

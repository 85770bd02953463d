package traindata

import (
	"errors"
	"fmt"
)

// Data parallelism: N ranks train one model, each on its share of the same
// global batch. Every rank loads the same data and computes the same
// global batch order (same seed, same length buckets); rank r trains on
// Shard(global, r, N). Summing the ranks' gradients of their loss sums,
// each divided by the global count of loss tokens, gives exactly the
// gradient of one process's per-token mean over the global batch.

// ShardSpec is how a run splits its data across ranks.
type ShardSpec struct {
	WorldSize int // number of ranks
	RankBatch int // examples per rank in one micro-batch (training.batch_size)
}

// Validate checks that the spec can split batches.
func (s ShardSpec) Validate() error {
	if s.WorldSize < 1 {
		return fmt.Errorf("world size %d: want at least 1 rank", s.WorldSize)
	}
	if s.RankBatch < 1 {
		return fmt.Errorf("batch size %d per rank: want at least 1", s.RankBatch)
	}
	return nil
}

// GlobalBatch is the number of examples in one global micro-batch: N ranks
// with batch b train like one process with batch N·b.
func (s ShardSpec) GlobalBatch() int { return s.WorldSize * s.RankBatch }

// GlobalBatches is epoch's order of global micro-batches, the same on
// every rank: Batches with the global batch size.
func (s ShardSpec) GlobalBatches(examples []Example, epoch int, seed uint64) [][]int {
	return Batches(examples, s.GlobalBatch(), epoch, seed)
}

// Shard is rank's share of a global micro-batch: its positions rank,
// rank+worldSize, rank+2·worldSize, ... A global batch is length-sorted,
// so every rank gets examples of every length in the bucket, the shares
// differ in size by at most one, and each share stays length-sorted.
// A global batch with fewer examples than ranks (the end of an epoch)
// leaves some shares empty: those ranks still take part in the step's
// collectives, with zero loss tokens. The shares of all ranks together are
// exactly the global batch.
func Shard(global []int, rank, worldSize int) []int {
	if worldSize < 1 || rank < 0 || rank >= worldSize {
		return nil
	}
	out := make([]int, 0, (len(global)+worldSize-1-rank)/worldSize)
	for i := rank; i < len(global); i += worldSize {
		out = append(out, global[i])
	}
	return out
}

// Counts is what MakeBatch would count for the examples at idx, without
// building the batch: the loss-counted targets and the non-padding input
// positions. Padding never counts, so the counts of shards add up to the
// counts of their global batch.
func Counts(examples []Example, idx []int) (counted, tokens int) {
	for _, i := range idx {
		ex := examples[i]
		tokens += max(len(ex.Tokens)-1, 0)
		for j := 1; j < len(ex.Counted); j++ {
			if ex.Counted[j] {
				counted++
			}
		}
	}
	return counted, tokens
}

// TokenWeighting is one optimizer step's loss normalisation on one rank.
// Every rank divides its loss sum by Global, the loss tokens of the whole
// step on all ranks (all micro-batches when accumulating), so that the sum
// over ranks of their gradients is the gradient of the global per-token
// mean. mlx-lm instead averages the ranks' per-token means with equal
// weight 1/N, which is another loss when ranks hold different numbers of
// loss tokens.
type TokenWeighting struct {
	Local  int // this rank's loss tokens in the step
	Global int // loss tokens in the step over all ranks
}

// StepWeighting computes rank's weighting for the step made of the global
// micro-batches globals (GradAccumulation of them). Every rank can count
// the whole step from the data it shares with the others, so Global needs
// no communication; a trainer cross-checks it against the all-sum of the
// ranks' Local counts, which catches ranks that disagree on the data.
func StepWeighting(examples []Example, globals [][]int, rank, worldSize int) TokenWeighting {
	var w TokenWeighting
	for _, g := range globals {
		local, _ := Counts(examples, Shard(g, rank, worldSize))
		all, _ := Counts(examples, g)
		w.Local += local
		w.Global += all
	}
	return w
}

// Norm is the divisor of this rank's loss sum: the global count.
func (w TokenWeighting) Norm() float64 { return float64(w.Global) }

// RankWeight is the weight of this rank's per-token mean in the global
// mean, Local/Global (0 for a rank with no loss tokens).
func (w TokenWeighting) RankWeight() float64 {
	if w.Global == 0 {
		return 0
	}
	return float64(w.Local) / float64(w.Global)
}

// GlobalMean is the per-token mean loss of a step from every rank's loss
// sum and loss-token count (as gathered after the step).
func GlobalMean(lossSums []float64, counts []int) (float64, error) {
	if len(lossSums) != len(counts) {
		return 0, fmt.Errorf("%d loss sums for %d counts", len(lossSums), len(counts))
	}
	sum, n := 0.0, 0
	for r := range lossSums {
		sum += lossSums[r]
		n += counts[r]
	}
	if n == 0 {
		return 0, errors.New("a training step has no loss tokens on any rank")
	}
	return sum / float64(n), nil
}

// CheckReshard decides whether a checkpoint written with saved can resume
// with now. The data cursor counts global micro-batches, and the global
// batches are made with GlobalBatch examples, so a run resumes exactly
// with any world size that keeps the global batch (2 ranks × 4 → 4 ranks
// × 2, or 1 × 8); another global batch would train on other batches.
func CheckReshard(saved, now ShardSpec) error {
	if err := now.Validate(); err != nil {
		return err
	}
	if saved.GlobalBatch() != now.GlobalBatch() {
		return fmt.Errorf("the checkpoint was written by %d rank(s) with batch %d (global batch %d); "+
			"%d rank(s) with batch %d make a global batch of %d, so the run would not resume exactly: "+
			"resume with a batch size of %s per rank",
			saved.WorldSize, saved.RankBatch, saved.GlobalBatch(), now.WorldSize, now.RankBatch, now.GlobalBatch(),
			perRank(saved.GlobalBatch(), now.WorldSize))
	}
	return nil
}

func perRank(global, ranks int) string {
	if global%ranks != 0 {
		return fmt.Sprintf("%d/%d (not a whole number: use a world size that divides %d)", global, ranks, global)
	}
	return fmt.Sprint(global / ranks)
}

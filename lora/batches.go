package lora

import (
	"slices"

	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// A global optimizer step is a set of examples: GradAccumulation global
// micro-batches of WorldSize·BatchSize examples each, in the order
// traindata.Batches gives (length buckets, shuffled per epoch from the
// seed). Each rank takes its share of every global micro-batch
// (traindata.Shard) and runs its examples of the step as one or more
// compute batches: sorted by length and packed (see pack), so that short
// examples of an accumulation window run together. Every loss sum is
// divided by the step's global count of loss tokens, so the gradient is
// exactly that of the whole step however the examples are grouped.

// trainBatches is the run's data order, addressed by a global micro-batch
// index — the cursor that checkpoints record. The order is a function of
// the seed, the epoch and the global batch alone, so a resumed run (with
// any world size that keeps the global batch) sees the same steps.
type trainBatches struct {
	split    *traindata.Split
	spec     traindata.ShardSpec
	rank     int
	accum    int // global micro-batches per optimizer step
	seed     uint64
	padID    int32
	buckets  bool // pad lengths to lengthBucket (compiled steps), else to the longest row
	rows     int  // training.micro_batch: rows per compute batch; 0: auto
	budget   int  // auto: rows × padded length ≤ budget
	minRows  int  // auto never runs fewer rows together than training.batch_size
	perEpoch int  // global micro-batches per epoch

	epoch  int     // the epoch whose order is cached
	groups [][]int // its global micro-batches' example indices
}

func newTrainBatches(split *traindata.Split, c TrainingConfig, maxSeqLength int, spec traindata.ShardSpec, rank int, padID int32) *trainBatches {
	d := &trainBatches{split: split, spec: spec, rank: rank, accum: c.GradAccumulation, seed: c.Seed, padID: padID,
		buckets: c.Compile, rows: int(c.MicroBatch), budget: c.microBatchTokens(maxSeqLength), minRows: c.BatchSize}
	d.groups = spec.GlobalBatches(split.Examples, 0, c.Seed)
	d.perEpoch = len(d.groups)
	return d
}

// global returns the example indices of global micro-batch g.
func (d *trainBatches) global(g int) []int {
	if epoch := g / d.perEpoch; epoch != d.epoch {
		d.epoch, d.groups = epoch, d.spec.GlobalBatches(d.split.Examples, epoch, d.seed)
	}
	return d.groups[g%d.perEpoch]
}

// stepData is one optimizer step as this rank runs it.
type stepData struct {
	batches []traindata.Batch // this rank's compute batches, longest first (none for an empty share)
	counted int               // loss tokens of the whole step on all ranks: every loss sum's divisor
	tokens  int               // non-padding input tokens of the whole step on all ranks
	local   int               // this rank's loss tokens (cross-checked against counted after the step)
}

// step returns the step whose first global micro-batch is cursor.
func (d *trainBatches) step(cursor int) stepData {
	var s stepData
	var mine []int
	for k := range d.accum {
		g := d.global(cursor + k)
		counted, tokens := traindata.Counts(d.split.Examples, g)
		s.counted += counted
		s.tokens += tokens
		mine = append(mine, traindata.Shard(g, d.rank, d.spec.WorldSize)...)
	}
	s.local, _ = traindata.Counts(d.split.Examples, mine)
	for _, rows := range d.pack(mine) {
		// rows[0] is the longest: padding to a multiple of its padded
		// length pads to exactly that length.
		longest := len(d.split.Examples[rows[0]].Tokens) - 1
		s.batches = append(s.batches, traindata.MakeBatchPadded(d.split.Examples, rows, d.padID, d.padLength(longest)))
	}
	return s
}

// pack groups examples into compute batches: sorted by length, longest
// first (ties in index order), and cut into consecutive runs of rows.
// With a fixed training.micro_batch each run has that many rows (the last
// fewer); with auto a run grows while rows × padded length stays within
// the token budget, and is never smaller than training.batch_size rows
// (so a step without accumulation stays one batch). The first batch is
// the longest, so a step's peak memory is reached at once.
func (d *trainBatches) pack(idx []int) [][]int {
	ex := d.split.Examples
	sorted := slices.Clone(idx)
	slices.SortStableFunc(sorted, func(a, b int) int { return len(ex[b].Tokens) - len(ex[a].Tokens) })
	var out [][]int
	for start := 0; start < len(sorted); {
		n := d.rows
		if n == 0 {
			// The first row is the longest, so it sets the padded length.
			n = max(d.minRows, d.budget/max(1, d.padLength(len(ex[sorted[start]].Tokens)-1)))
		}
		end := min(start+max(n, 1), len(sorted))
		out = append(out, sorted[start:end])
		start = end
	}
	return out
}

// padLength is the length a compute batch whose longest row has n
// positions is padded to: n itself, or with compiled steps the next
// length bucket, so that a compiled step sees few distinct shapes.
func (d *trainBatches) padLength(n int) int {
	if !d.buckets {
		return n
	}
	return lengthBucket(n)
}

// lengthBucket is the smallest of 32, 40, 48, 56, 64, 80, 96, 112, 128,
// 160, ... (m·2^k with m in 4..7: four lengths per doubling) that is at
// least n. Padding costs at most a quarter of a batch (and about a tenth
// on average), and lengths up to 1024 take 21 shapes, up to 4096 29.
func lengthBucket(n int) int {
	if n <= 32 {
		return 32
	}
	step := 8 // the spacing between buckets in [32·2^k, 64·2^k) is 8·2^k
	for base := 32; ; base *= 2 {
		if n <= 2*base {
			return (n + step - 1) / step * step
		}
		step *= 2
	}
}

// epochAt is how many epochs cursor global micro-batches are.
func (d *trainBatches) epochAt(cursor int) float64 { return float64(cursor) / float64(d.perEpoch) }

// batchArrays turns a batch into MLX arrays.
func batchArrays(b traindata.Batch) (ids, targets, weights *mlx.Array) {
	return mlx.FromInt32s(b.Inputs, b.B, b.L), mlx.FromInt32s(b.Targets, b.B, b.L), mlx.FromFloat32s(b.Weights, b.B, b.L)
}

// newMicroBatch is b as arrays, its loss normalised by the step's count
// of loss tokens.
func newMicroBatch(b traindata.Batch, stepCounted float64) microBatch {
	ids, targets, weights := batchArrays(b)
	return microBatch{ids: ids, targets: targets, weights: weights, norm: mlx.Scalar(stepCounted, mlx.Float32)}
}

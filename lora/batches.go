package lora

import (
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// trainBatches is the run's data order: the training split in
// length-bucketed, shuffled micro-batches (traindata.Batches), epoch
// after epoch, addressed by a global micro-batch index — the cursor that
// checkpoints record. The order is a function of the seed and the epoch
// alone, so a resumed run sees the same batches.
type trainBatches struct {
	split     *traindata.Split
	batchSize int
	accum     int // micro-batches per optimizer step
	seed      uint64
	padID     int32
	padTo     int
	perEpoch  int

	epoch  int     // the epoch whose order is cached
	groups [][]int // its micro-batches' example indices
}

func newTrainBatches(split *traindata.Split, c TrainingConfig, padID int32) *trainBatches {
	d := &trainBatches{split: split, batchSize: c.BatchSize, accum: c.GradAccumulation, seed: c.Seed, padID: padID, padTo: 1}
	if c.Compile {
		// With a compiled step each new shape costs a trace, so shapes are
		// kept few.
		d.padTo = 32
	}
	d.groups = traindata.Batches(split.Examples, c.BatchSize, 0, c.Seed)
	d.perEpoch = len(d.groups)
	return d
}

// indices returns the example indices of micro-batch g.
func (d *trainBatches) indices(g int) []int {
	if epoch := g / d.perEpoch; epoch != d.epoch {
		d.epoch, d.groups = epoch, traindata.Batches(d.split.Examples, d.batchSize, epoch, d.seed)
	}
	return d.groups[g%d.perEpoch]
}

// stepBatches returns the micro-batches of the optimizer step whose first
// micro-batch is cursor.
func (d *trainBatches) stepBatches(cursor int) []traindata.Batch {
	out := make([]traindata.Batch, d.accum)
	for k := range out {
		out[k] = traindata.MakeBatchPadded(d.split.Examples, d.indices(cursor+k), d.padID, d.padTo)
	}
	return out
}

// epochAt is how many epochs cursor micro-batches are.
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

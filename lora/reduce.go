package lora

import (
	"errors"
	"fmt"

	"github.com/fungtrain/fungtrain/mlx"
)

// The collectives of data-parallel training. A step's gradients travel in
// as few all-reduces as their size allows: every gradient and the step's
// three totals flattened into float32 buffers of at most reduceBufferBytes,
// one all-sum each, split back afterwards. A LoRA adapter of a 3B model
// is about 2 MB, so a step is one all-reduce.

// reduceBufferBytes bounds one all-reduce buffer (64 MiB).
const reduceBufferBytes = 64 << 20

// reduceGraph returns grads and totals summed over the ranks of g (as
// graph nodes: it runs inside the compiled update). Without a group, or
// with one rank, they come back as they are. With rankMean set, the
// summed gradients are divided by the number of ranks: mlx-lm's weighting
// of each rank's own per-token mean, which tests use as the inexact
// reference that token weighting must beat.
func reduceGraph(g *mlx.Group, grads []*mlx.Array, t stepTotals, rankMean bool) ([]*mlx.Array, stepTotals) {
	if g == nil || g.Size() == 1 {
		return grads, t
	}
	parts := append(append([]*mlx.Array{}, grads...), t.list()...)
	summed := allSumFlat(g, parts)
	out := summed[:len(grads)]
	if rankMean {
		for i := range out {
			out[i] = mlx.MulScalar(out[i], 1/float64(g.Size()))
		}
	}
	rest := summed[len(grads):]
	return out, stepTotals{sum: rest[0], count: rest[1], stop: rest[2]}
}

// allSumFlat all-sums arrays (float32, any shapes) over g in buffers of
// at most reduceBufferBytes and returns the sums in the same shapes.
func allSumFlat(g *mlx.Group, arrays []*mlx.Array) []*mlx.Array {
	out := make([]*mlx.Array, 0, len(arrays))
	for start := 0; start < len(arrays); {
		end, bytes := start, 0
		for end < len(arrays) && (end == start || bytes+4*arrays[end].Size() <= reduceBufferBytes) {
			bytes += 4 * arrays[end].Size()
			end++
		}
		out = append(out, allSumBuffer(g, arrays[start:end])...)
		start = end
	}
	return out
}

// allSumBuffer all-sums arrays as one flat buffer.
func allSumBuffer(g *mlx.Group, arrays []*mlx.Array) []*mlx.Array {
	flat := make([]*mlx.Array, len(arrays))
	var cuts []int
	n := 0
	for i, a := range arrays {
		flat[i] = mlx.Reshape(mlx.AsType(a, mlx.Float32), a.Size())
		n += a.Size()
		if i < len(arrays)-1 {
			cuts = append(cuts, n)
		}
	}
	buf := flat[0]
	if len(flat) > 1 {
		buf = mlx.Concatenate(flat, 0)
	}
	sum := g.AllSum(buf)
	pieces := []*mlx.Array{sum}
	if len(cuts) > 0 {
		var err error
		if pieces, err = mlx.SplitAt(sum, cuts, 0); err != nil {
			out := make([]*mlx.Array, len(arrays))
			for i := range out {
				out[i] = mlx.ErrorArray(err)
			}
			return out
		}
	}
	out := make([]*mlx.Array, len(arrays))
	for i, a := range arrays {
		out[i] = mlx.Reshape(pieces[i], a.Shape()...)
	}
	return out
}

// broadcastArrays replaces each of arrays (long-lived, float32) by rank
// 0's value on every rank: an all-sum of rank 0's values with zeros from
// the others, which is exact. The old arrays are freed and the new ones
// detached.
func broadcastArrays(g *mlx.Group, arrays []*mlx.Array) ([]*mlx.Array, error) {
	if g == nil || g.Size() == 1 || len(arrays) == 0 {
		return arrays, nil
	}
	s := mlx.NewScope()
	defer s.Close()
	in := make([]*mlx.Array, len(arrays))
	for i, a := range arrays {
		in[i] = a
		if g.Rank() != 0 {
			in[i] = mlx.Zeros(mlx.Float32, a.Shape()...)
		}
	}
	out := allSumFlat(g, in)
	if err := g.Eval(out...); err != nil {
		return nil, fmt.Errorf("share rank 0's adapters and optimizer state: %w", err)
	}
	s.KeepAll(out)
	mlx.Detach(out...)
	freeArrays(arrays)
	return out, nil
}

// AgreeOnError makes every rank of g return the same outcome for a phase
// that each rank ran on its own (loading the config, the model, the data,
// a checkpoint): nil when every rank succeeded, else an error naming the
// first rank that failed and its message. Without it a rank that fails
// alone would leave the others waiting at their next collective. With no
// group it returns err.
func AgreeOnError(g *mlx.Group, err error) error {
	if g == nil || g.Size() == 1 {
		return err
	}
	var msg []byte
	if err != nil {
		msg = []byte(err.Error())
		if len(msg) > 64<<10 {
			msg = msg[:64<<10]
		}
	}
	all, gerr := g.GatherBytes(msg)
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	for r, m := range all {
		if len(m) == 0 {
			continue
		}
		if r == g.Rank() {
			return err
		}
		return fmt.Errorf("rank %d: %s", r, m)
	}
	return nil
}

// BroadcastBytes returns rank 0's b on every rank (the others' b are
// ignored). With no group it returns b.
func BroadcastBytes(g *mlx.Group, b []byte) ([]byte, error) {
	if g == nil || g.Size() == 1 {
		return b, nil
	}
	if g.Rank() != 0 {
		b = nil
	}
	all, err := g.GatherBytes(b)
	if err != nil {
		return nil, err
	}
	return all[0], nil
}

package mlx

import (
	"fmt"
	"math"
)

// Collectives over host values (token counts, losses, timings, run
// metadata). They move the values' bits with an all-gather, never through
// float arithmetic on the device, and reduce on the host in rank order: the
// results are exact for integers and identical, bit for bit, on every rank.
// Each is one bounded Group.Eval. Call them on the MLX thread.

// GatherUint64s returns every rank's vals in rank order. All ranks must
// pass the same number of values.
func (g *Group) GatherUint64s(vals []uint64) ([][]uint64, error) {
	if g.size == 1 {
		return [][]uint64{append([]uint64{}, vals...)}, nil
	}
	if len(vals) == 0 {
		return make([][]uint64, g.size), nil
	}
	words := make([]uint32, 2*len(vals))
	for i, v := range vals {
		words[2*i], words[2*i+1] = uint32(v), uint32(v>>32)
	}
	s := NewScope()
	defer s.Close()
	all := g.AllGather(FromUint32s(words, len(words)))
	if err := g.Eval(all); err != nil {
		return nil, fmt.Errorf("gather %d values: %w", len(vals), err)
	}
	got, err := all.Uint32s()
	if err != nil {
		return nil, err
	}
	if len(got) != g.size*len(words) {
		return nil, fmt.Errorf("mlx: gather of %d values on %s returned %d words, want %d", len(vals), g, len(got), g.size*len(words))
	}
	out := make([][]uint64, g.size)
	for r := range out {
		out[r] = make([]uint64, len(vals))
		for i := range vals {
			w := got[r*len(words)+2*i:]
			out[r][i] = uint64(w[0]) | uint64(w[1])<<32
		}
	}
	return out, nil
}

// GatherFloat64s returns every rank's vals in rank order, exactly.
func (g *Group) GatherFloat64s(vals []float64) ([][]float64, error) {
	bits := make([]uint64, len(vals))
	for i, v := range vals {
		bits[i] = math.Float64bits(v)
	}
	all, err := g.GatherUint64s(bits)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(all))
	for r, row := range all {
		out[r] = make([]float64, len(row))
		for i, b := range row {
			out[r][i] = math.Float64frombits(b)
		}
	}
	return out, nil
}

// SumFloat64s is the sum over ranks of each of vals, added in rank order
// in float64.
func (g *Group) SumFloat64s(vals []float64) ([]float64, error) {
	all, err := g.GatherFloat64s(vals)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(vals))
	for _, row := range all {
		for i, v := range row {
			out[i] += v
		}
	}
	return out, nil
}

// MaxFloat64s is the maximum over ranks of each of vals.
func (g *Group) MaxFloat64s(vals []float64) ([]float64, error) {
	all, err := g.GatherFloat64s(vals)
	if err != nil {
		return nil, err
	}
	out := append([]float64{}, all[0]...)
	for _, row := range all[1:] {
		for i, v := range row {
			out[i] = math.Max(out[i], v)
		}
	}
	return out, nil
}

// SumInts is the exact sum over ranks of each of vals.
func (g *Group) SumInts(vals []int64) ([]int64, error) {
	bits := make([]uint64, len(vals))
	for i, v := range vals {
		bits[i] = uint64(v)
	}
	all, err := g.GatherUint64s(bits)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(vals))
	for _, row := range all {
		for i, v := range row {
			out[i] += int64(v)
		}
	}
	return out, nil
}

// GatherBytes returns every rank's b in rank order; the ranks' lengths may
// differ (up to 1 MiB each). Run metadata (each rank's device) and
// consistency checks (every rank trains the same config on the same data)
// use it.
func (g *Group) GatherBytes(b []byte) ([][]byte, error) {
	const limit = 1 << 20
	if len(b) > limit {
		return nil, fmt.Errorf("mlx: gather of %d bytes: at most %d", len(b), limit)
	}
	lens, err := g.GatherUint64s([]uint64{uint64(len(b))})
	if err != nil {
		return nil, err
	}
	longest := 0
	for _, l := range lens {
		longest = max(longest, int(l[0]))
	}
	words := make([]uint64, (longest+7)/8)
	for i, c := range b {
		words[i/8] |= uint64(c) << (8 * (i % 8))
	}
	all, err := g.GatherUint64s(words)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(all))
	for r, row := range all {
		out[r] = make([]byte, lens[r][0])
		for i := range out[r] {
			out[r][i] = byte(row[i/8] >> (8 * (i % 8)))
		}
	}
	return out, nil
}

// Barrier returns once every rank has reached it (or fails within the
// group's timeout).
func (g *Group) Barrier() error {
	n, err := g.SumInts([]int64{1})
	if err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	if n[0] != int64(g.size) {
		return fmt.Errorf("mlx: barrier on %s counted %d ranks", g, n[0])
	}
	return nil
}

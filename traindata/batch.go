package traindata

import (
	"math/rand/v2"
	"sort"
)

// Batch is a padded training batch, flattened row-major (B rows of L).
// Inputs[i] predicts Targets[i]; Weights[i] is 1 where the target counts
// in the loss and 0 elsewhere, padding included.
type Batch struct {
	B, L    int
	Inputs  []int32
	Targets []int32
	Weights []float32
	Counted int // loss-counted targets
	Tokens  int // non-padding input positions
}

// LengthGroups sorts example indices by length (stably) and cuts them into
// consecutive groups of batchSize, so each group pads little.
func LengthGroups(examples []Example, batchSize int) [][]int {
	idx := make([]int, len(examples))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return len(examples[idx[a]].Tokens) < len(examples[idx[b]].Tokens) })
	var groups [][]int
	for start := 0; start < len(idx); start += batchSize {
		groups = append(groups, idx[start:min(start+batchSize, len(idx))])
	}
	return groups
}

// Batches is LengthGroups with the order of the groups shuffled for each
// epoch from the seed.
func Batches(examples []Example, batchSize int, epoch int, seed uint64) [][]int {
	groups := LengthGroups(examples, batchSize)
	rng := rand.New(rand.NewPCG(seed, uint64(epoch)+1))
	rng.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
	return groups
}

// MakeBatch pads the examples at idx to the longest one (minus the final
// token, which is only a target) and builds inputs, targets and weights.
func MakeBatch(examples []Example, idx []int, padID int32) Batch {
	return MakeBatchPadded(examples, idx, padID, 1)
}

// MakeBatchPadded is MakeBatch with the length rounded up to a multiple of
// padTo, so that a compiled step sees few distinct shapes.
func MakeBatchPadded(examples []Example, idx []int, padID int32, padTo int) Batch {
	L := 0
	for _, i := range idx {
		L = max(L, len(examples[i].Tokens)-1)
	}
	if padTo > 1 {
		L = (L + padTo - 1) / padTo * padTo
	}
	b := Batch{B: len(idx), L: L}
	b.Inputs = make([]int32, b.B*L)
	b.Targets = make([]int32, b.B*L)
	b.Weights = make([]float32, b.B*L)
	for r, i := range idx {
		ex := examples[i]
		n := len(ex.Tokens) - 1
		for j := 0; j < L; j++ {
			k := r*L + j
			if j >= n {
				b.Inputs[k], b.Targets[k] = padID, padID
				continue
			}
			b.Inputs[k], b.Targets[k] = ex.Tokens[j], ex.Tokens[j+1]
			b.Tokens++
			if ex.Counted[j+1] {
				b.Weights[k] = 1
				b.Counted++
			}
		}
	}
	return b
}

// PaddingFraction is the share of padded positions over the batches.
func PaddingFraction(examples []Example, groups [][]int) float64 {
	total, real := 0, 0
	for _, g := range groups {
		L := 0
		for _, i := range g {
			L = max(L, len(examples[i].Tokens)-1)
			real += len(examples[i].Tokens) - 1
		}
		total += L * len(g)
	}
	if total == 0 {
		return 0
	}
	return 1 - float64(real)/float64(total)
}

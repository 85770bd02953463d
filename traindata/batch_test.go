package traindata

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// handExamples: lengths 5, 3 and 2, with the first one or two tokens
// not counted.
func handExamples() []Example {
	return []Example{
		{Tokens: []int32{10, 11, 12, 13, 14}, Counted: []bool{false, false, true, true, true}},
		{Tokens: []int32{20, 21, 22}, Counted: []bool{false, true, true}},
		{Tokens: []int32{30, 31}, Counted: []bool{false, true}},
	}
}

// TestMakeBatch checks a padded batch entry by entry: inputs drop each
// example's last token, targets its first, rows are padded to the longest
// (L = 4), and weights are 1 exactly where the target is counted.
func TestMakeBatch(t *testing.T) {
	b := MakeBatch(handExamples(), []int{0, 1, 2}, 0)
	if b.B != 3 || b.L != 4 {
		t.Fatalf("B %d L %d, want 3 and 4", b.B, b.L)
	}
	want := struct {
		inputs, targets []int32
		weights         []float32
	}{
		inputs:  []int32{10, 11, 12, 13, 20, 21, 0, 0, 30, 0, 0, 0},
		targets: []int32{11, 12, 13, 14, 21, 22, 0, 0, 31, 0, 0, 0},
		weights: []float32{0, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0},
	}
	if !slices.Equal(b.Inputs, want.inputs) || !slices.Equal(b.Targets, want.targets) || !slices.Equal(b.Weights, want.weights) {
		t.Errorf("inputs %v\ntargets %v\nweights %v\nwant %v", b.Inputs, b.Targets, b.Weights, want)
	}
	if b.Counted != 6 || b.Tokens != 7 {
		t.Errorf("counted %d tokens %d, want 6 and 7", b.Counted, b.Tokens)
	}
	// Row order follows idx.
	b = MakeBatch(handExamples(), []int{2, 0}, 0)
	if !slices.Equal(b.Inputs, []int32{30, 0, 0, 0, 10, 11, 12, 13}) || !slices.Equal(b.Weights, []float32{1, 0, 0, 0, 0, 1, 1, 1}) {
		t.Errorf("batch [2 0]: inputs %v weights %v", b.Inputs, b.Weights)
	}
}

// TestPaddingNeverCounted: a padding position gets weight 0 even when the
// pad id is a real, counted token id and every real target counts; the
// weights sum to the real targets exactly.
func TestPaddingNeverCounted(t *testing.T) {
	ex := []Example{
		{Tokens: []int32{5, 6, 7, 8, 9, 7}, Counted: []bool{true, true, true, true, true, true}},
		{Tokens: []int32{7, 7}, Counted: []bool{true, true}},
		{Tokens: []int32{3}, Counted: []bool{true}}, // nothing to predict
	}
	b := MakeBatch(ex, []int{0, 1, 2}, 7)
	sum := float32(0)
	for r := 0; r < b.B; r++ {
		n := len(ex[[]int{0, 1, 2}[r]].Tokens) - 1
		for j := 0; j < b.L; j++ {
			w := b.Weights[r*b.L+j]
			sum += w
			if j >= n && w != 0 {
				t.Errorf("row %d position %d is padding but has weight %v", r, j, w)
			}
			if j < n && w != 1 {
				t.Errorf("row %d position %d is a counted target but has weight %v", r, j, w)
			}
		}
	}
	if sum != 6 || b.Counted != 6 || b.Tokens != 6 {
		t.Errorf("weights sum %v, counted %d, tokens %d; want 6 each (5 + 1 + 0 targets)", sum, b.Counted, b.Tokens)
	}
}

// TestPaddingFraction by hand: one batch of all three pads to 3×4 = 12
// positions for 4+2+1 = 7 real ones (5/12 padding); batches {0} and
// {1, 2} need 4 + 2·2 = 8 positions (1/8).
func TestPaddingFraction(t *testing.T) {
	ex := handExamples()
	for _, c := range []struct {
		groups [][]int
		want   float64
	}{
		{[][]int{{0, 1, 2}}, 5.0 / 12},
		{[][]int{{0}, {1, 2}}, 1.0 / 8},
		{[][]int{{0}, {1}, {2}}, 0},
		{nil, 0},
	} {
		if got := PaddingFraction(ex, c.groups); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("groups %v: padding fraction %v, want %v", c.groups, got, c.want)
		}
	}
}

// mixedExamples has n examples of random lengths 5..200.
func mixedExamples(n int) []Example {
	rng := rand.New(rand.NewPCG(3, 4))
	ex := make([]Example, n)
	for i := range ex {
		l := 5 + rng.IntN(196)
		ex[i] = Example{Tokens: make([]int32, l), Counted: make([]bool, l)}
	}
	return ex
}

// TestBatchesBucketByLength: every example is in exactly one batch per
// epoch; batches are consecutive runs of the length-sorted examples (the
// last one short), so their padding is far below that of batching in file
// order; the batch order is shuffled differently each epoch, the same for
// the same seed and epoch, and differently for another seed.
func TestBatchesBucketByLength(t *testing.T) {
	ex := mixedExamples(67)
	const bs = 8
	g0 := Batches(ex, bs, 0, 42)
	if len(g0) != 9 {
		t.Fatalf("%d batches, want 9 (8 of 8 and one of 3)", len(g0))
	}
	seen := map[int]int{}
	short := 0
	for _, g := range g0 {
		for _, i := range g {
			seen[i]++
		}
		if len(g) != bs {
			short++
			if len(g) != 3 {
				t.Errorf("a batch of %d", len(g))
			}
		}
	}
	if len(seen) != 67 || short != 1 {
		t.Errorf("%d distinct examples, %d short batches", len(seen), short)
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("example %d in %d batches", i, n)
		}
	}
	// Sorted by their shortest member, each batch's longest example is no
	// longer than the next batch's shortest.
	sorted := slices.Clone(g0)
	span := func(g []int) (lo, hi int) {
		lo, hi = math.MaxInt, 0
		for _, i := range g {
			lo, hi = min(lo, len(ex[i].Tokens)), max(hi, len(ex[i].Tokens))
		}
		return
	}
	sort.Slice(sorted, func(a, b int) bool { la, _ := span(sorted[a]); lb, _ := span(sorted[b]); return la < lb })
	for k := 0; k+1 < len(sorted); k++ {
		_, hi := span(sorted[k])
		lo, _ := span(sorted[k+1])
		if hi > lo {
			t.Errorf("batch %v (longest %d) overlaps the next (shortest %d)", sorted[k], hi, lo)
		}
	}
	var fileOrder [][]int
	for s := 0; s < len(ex); s += bs {
		var g []int
		for i := s; i < min(s+bs, len(ex)); i++ {
			g = append(g, i)
		}
		fileOrder = append(fileOrder, g)
	}
	bucketed, unsorted := PaddingFraction(ex, g0), PaddingFraction(ex, fileOrder)
	t.Logf("padding fraction: length buckets %.4f, file order %.4f", bucketed, unsorted)
	if !(bucketed < unsorted/3) {
		t.Errorf("bucketed padding %v is not far below file-order padding %v", bucketed, unsorted)
	}

	key := func(gs [][]int) string { return fmt.Sprint(gs) }
	if key(Batches(ex, bs, 0, 42)) != key(g0) {
		t.Error("the same seed and epoch give a different order")
	}
	g1 := Batches(ex, bs, 1, 42)
	if key(g1) == key(g0) {
		t.Error("epochs 0 and 1 have the same batch order")
	}
	if key(Batches(ex, bs, 0, 43)) == key(g0) {
		t.Error("seeds 42 and 43 give the same batch order")
	}
	// Epochs reorder the same batches.
	set := func(gs [][]int) []string {
		var out []string
		for _, g := range gs {
			out = append(out, fmt.Sprint(g))
		}
		sort.Strings(out)
		return out
	}
	if !slices.Equal(set(g0), set(g1)) {
		t.Error("epoch 1's batches are not epoch 0's, reordered")
	}
	// Orders across 6 epochs are (almost surely) all distinct.
	orders := map[string]bool{}
	for e := range 6 {
		orders[key(Batches(ex, bs, e, 42))] = true
	}
	if len(orders) != 6 {
		t.Errorf("%d distinct orders over 6 epochs", len(orders))
	}
}

// TestFileSHA256 checks the digest against FIPS 180-2's "abc" vector and
// that a missing file is an error naming it.
func TestFileSHA256(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "abc.jsonl")
	if err := os.WriteFile(p, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("FileSHA256(abc) = %s, want %s", got, want)
	}
	if _, err := FileSHA256(filepath.Join(dir, "missing.jsonl")); err == nil || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Errorf("missing file: error %v, want one naming it", err)
	}
}

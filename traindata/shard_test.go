package traindata

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
)

// countedExamples has n examples of random lengths 2..120 whose first
// tokens (a random prompt) are not counted.
func countedExamples(n int, seed uint64) []Example {
	rng := rand.New(rand.NewPCG(seed, 9))
	ex := make([]Example, n)
	for i := range ex {
		l := 2 + rng.IntN(119)
		ex[i] = Example{Tokens: make([]int32, l), Counted: make([]bool, l), Line: i + 1}
		prompt := 1 + rng.IntN(l-1)
		for j := prompt; j < l; j++ {
			ex[i].Counted[j] = true
		}
	}
	return ex
}

// sampleExamples is the sample data's train split through the real
// Llama 3 tokenizer, with the prompt masked: real, unequal counts.
func sampleExamples(t *testing.T) []Example {
	t.Helper()
	tok, err := llama.LoadTokenizer(filepath.Join("..", "third_party", "llama3-tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	s, err := LoadSplit(Config{Dir: filepath.Join("..", "examples", "fung-sample"), MaskPrompt: true, MaxSeqLength: 1024}, "train", tok)
	if err != nil {
		t.Fatal(err)
	}
	return s.Examples
}

// TestShard: for every world size and global batch (fewer examples than
// ranks included), the shares are disjoint, together exactly the global
// batch, within one of each other in size, length-sorted, and their counts
// (MakeBatch's, padding never counted) add up to the global batch's.
func TestShard(t *testing.T) {
	sets := map[string][]Example{"random": countedExamples(53, 1), "fung-sample, Llama 3 tokenizer": sampleExamples(t)}
	for name, ex := range sets {
		for _, n := range []int{1, 2, 3, 4, 7} {
			for _, b := range []int{1, 2, 3} {
				spec := ShardSpec{WorldSize: n, RankBatch: b}
				for _, g := range spec.GlobalBatches(ex, 0, 42) {
					if err := checkShards(ex, g, n); err != nil {
						t.Fatalf("%s, %d ranks × %d, global batch %v: %v", name, n, b, g, err)
					}
				}
			}
		}
	}
}

func checkShards(ex []Example, g []int, n int) error {
	var union []int
	sizes := map[int]bool{}
	wantC, wantT := Counts(ex, g)
	if full := MakeBatch(ex, g, 0); full.Counted != wantC || full.Tokens != wantT {
		return fmt.Errorf("Counts %d/%d, MakeBatch %d/%d", wantC, wantT, full.Counted, full.Tokens)
	}
	sumC, sumT := 0, 0
	for r := range n {
		s := Shard(g, r, n)
		union = append(union, s...)
		sizes[len(s)] = true
		for k := 1; k < len(s); k++ {
			if len(ex[s[k-1]].Tokens) > len(ex[s[k]].Tokens) {
				return fmt.Errorf("rank %d's share %v is not length-sorted", r, s)
			}
		}
		c, tk := Counts(ex, s)
		if len(s) > 0 {
			if lb := MakeBatchPadded(ex, s, 0, 32); lb.Counted != c || lb.Tokens != tk {
				return fmt.Errorf("rank %d: Counts %d/%d, its padded batch %d/%d", r, c, tk, lb.Counted, lb.Tokens)
			}
		}
		sumC, sumT = sumC+c, sumT+tk
	}
	if len(sizes) > 2 {
		return fmt.Errorf("share sizes %v differ by more than one", sizes)
	}
	slices.Sort(union)
	want := slices.Sorted(slices.Values(g))
	if !slices.Equal(union, want) {
		return fmt.Errorf("union of shares %v, want %v", union, want)
	}
	if sumC != wantC || sumT != wantT {
		return fmt.Errorf("shares count %d loss / %d input tokens, the global batch %d / %d", sumC, sumT, wantC, wantT)
	}
	return nil
}

// TestShardBadRank: a rank outside the group gets nothing (not a panic).
func TestShardBadRank(t *testing.T) {
	for _, c := range []struct{ rank, n int }{{-1, 2}, {2, 2}, {0, 0}} {
		if s := Shard([]int{1, 2, 3}, c.rank, c.n); len(s) != 0 {
			t.Errorf("rank %d of %d got %v", c.rank, c.n, s)
		}
	}
}

// TestTokenWeighting: on a toy model whose per-token loss is (θ - y)², the
// ranks' gradients with token weighting sum to the gradient of one process
// over the global batch (float64, to 1e-12), with gradient accumulation
// and unequal counts per rank; averaging the ranks' per-token means with
// equal weight (mlx-lm) does not, unless the counts are equal.
func TestTokenWeighting(t *testing.T) {
	ex := sampleExamples(t)
	rng := rand.New(rand.NewPCG(5, 6))
	// y[i][j]: the toy target of token j of example i.
	y := make([][]float64, len(ex))
	for i := range ex {
		y[i] = make([]float64, len(ex[i].Tokens))
		for j := range y[i] {
			y[i][j] = rng.NormFloat64()
		}
	}
	const theta = 0.3
	unequalSteps := 0
	// gradSum is Σ over the loss tokens of idx of d/dθ (θ-y)².
	gradSum := func(idx []int) float64 {
		s := 0.0
		for _, i := range idx {
			for j := 1; j < len(ex[i].Counted); j++ {
				if ex[i].Counted[j] {
					s += 2 * (theta - y[i][j])
				}
			}
		}
		return s
	}
	for _, c := range []struct{ n, b, accum int }{{2, 2, 1}, {2, 2, 3}, {3, 1, 2}, {4, 2, 1}} {
		spec := ShardSpec{WorldSize: c.n, RankBatch: c.b}
		gs := spec.GlobalBatches(ex, 1, 42)
		for step := 0; step+c.accum <= len(gs) && step < 6*c.accum; step += c.accum {
			globals := gs[step : step+c.accum]
			var all []int
			for _, g := range globals {
				all = append(all, g...)
			}
			counted, _ := Counts(ex, all)
			oneProcess := gradSum(all) / float64(counted)
			weighted, equal := 0.0, 0.0
			localCounts := map[int]bool{}
			sumLocal := 0
			for r := range c.n {
				w := StepWeighting(ex, globals, r, c.n)
				if w.Global != counted {
					t.Fatalf("rank %d: global count %d, want %d", r, w.Global, counted)
				}
				var mine []int
				for _, g := range globals {
					mine = append(mine, Shard(g, r, c.n)...)
				}
				weighted += gradSum(mine) / w.Norm()
				if w.Local > 0 {
					equal += gradSum(mine) / float64(w.Local) / float64(c.n)
				}
				localCounts[w.Local] = true
				sumLocal += w.Local
			}
			if sumLocal != counted {
				t.Errorf("%+v step %d: local counts add to %d, want %d", c, step, sumLocal, counted)
			}
			if d := math.Abs(weighted - oneProcess); d > 1e-12 {
				t.Errorf("%+v step %d: token-weighted gradient %.15g, one process %.15g", c, step, weighted, oneProcess)
			}
			if len(localCounts) > 1 {
				unequalSteps++
			}
			if len(localCounts) > 1 && math.Abs(equal-oneProcess) < 1e-9 {
				t.Errorf("%+v step %d: unequal counts %v, yet the equal-weight mean matches one process", c, step, localCounts)
			}
		}
	}
	if unequalSteps < 10 {
		t.Errorf("only %d steps had unequal counts per rank: the test does not exercise them", unequalSteps)
	}
}

func TestGlobalMean(t *testing.T) {
	m, err := GlobalMean([]float64{6, 1.5, 0}, []int{4, 1, 0})
	if err != nil || m != 7.5/5 {
		t.Errorf("GlobalMean = %v, %v; want 1.5", m, err)
	}
	if _, err := GlobalMean([]float64{0, 0}, []int{0, 0}); err == nil || !strings.Contains(err.Error(), "no loss tokens") {
		t.Errorf("no tokens: %v", err)
	}
	if _, err := GlobalMean([]float64{1}, []int{1, 2}); err == nil {
		t.Error("mismatched lengths: no error")
	}
	if w := (TokenWeighting{Local: 3, Global: 12}); w.RankWeight() != 0.25 || w.Norm() != 12 {
		t.Errorf("%+v: weight %v, norm %v", w, w.RankWeight(), w.Norm())
	}
}

// TestCheckReshard: a checkpoint resumes with any world size that keeps
// the global batch; any other is refused, saying which batch would work.
func TestCheckReshard(t *testing.T) {
	cases := []struct {
		saved, now ShardSpec
		want       []string // nil: accepted
	}{
		{ShardSpec{2, 4}, ShardSpec{2, 4}, nil},
		{ShardSpec{2, 4}, ShardSpec{4, 2}, nil},
		{ShardSpec{2, 4}, ShardSpec{1, 8}, nil},
		{ShardSpec{1, 8}, ShardSpec{8, 1}, nil},
		{ShardSpec{2, 4}, ShardSpec{4, 4}, []string{"global batch 8", "global batch of 16", "batch size of 2 per rank"}},
		{ShardSpec{2, 4}, ShardSpec{3, 4}, []string{"global batch 8", "8/3", "not a whole number"}},
		{ShardSpec{2, 4}, ShardSpec{0, 4}, []string{"world size 0"}},
		{ShardSpec{2, 4}, ShardSpec{2, 0}, []string{"batch size 0"}},
	}
	for _, c := range cases {
		err := CheckReshard(c.saved, c.now)
		if c.want == nil {
			if err != nil {
				t.Errorf("%+v → %+v: %v", c.saved, c.now, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v → %+v: accepted", c.saved, c.now)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v → %+v: %q does not say %q", c.saved, c.now, err, w)
			}
		}
	}
	// The premise: the same global batch gives the same global batches.
	ex := countedExamples(40, 2)
	if fmt.Sprint(ShardSpec{2, 4}.GlobalBatches(ex, 3, 7)) != fmt.Sprint(ShardSpec{4, 2}.GlobalBatches(ex, 3, 7)) {
		t.Error("2×4 and 4×2 order their global batches differently")
	}
}

package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/traindata"
)

func TestParseLengthSpec(t *testing.T) {
	cases := []struct {
		in      string
		want    LengthSpec
		wantErr string
	}{
		{in: "mean:290,max:1024", want: LengthSpec{Mean: 290, Max: 1024, Min: 16, Prompt: 0.2, N: 160, Seed: 1}},
		{in: "max:64, mean:40,min:24,prompt:0.5,n:8,seed:9", want: LengthSpec{Mean: 40, Max: 64, Min: 24, Prompt: 0.5, N: 8, Seed: 9}},
		{in: "mean:290", wantErr: "mean and max are required"},
		{in: "mean:290,max:1024,mean:3", wantErr: "mean is given twice"},
		{in: "mean:290,max:1024,avg:3", wantErr: `unknown key "avg"`},
		{in: "mean:x,max:1024", wantErr: `mean: want a number, got "x"`},
		{in: "mean:NaN,max:1024", wantErr: "mean: want a number"},
		{in: "mean:2000,max:1024", wantErr: "mean 2000 is outside [min 16, max 1024]"},
		{in: "mean:20,max:10,min:16", wantErr: "max 10 is below min 16"},
		{in: "mean:20,max:64,min:1", wantErr: "min must be at least 2"},
		{in: "mean:20,max:64,prompt:1", wantErr: "prompt must be in [0, 1)"},
		{in: "mean:20,max:64,n:0", wantErr: "n must be at least 1"},
		{in: "mean=20", wantErr: "is not key:value"},
	}
	for _, c := range cases {
		got, err := ParseLengthSpec(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseLengthSpec(%q) error %v, want one containing %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseLengthSpec(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// TestSpecProfile: the drawn lengths have the asked mean (within 3% on
// 4000 examples), stay in [min, max], keep at least one prompt token and
// one target, and depend on the seed alone.
func TestSpecProfile(t *testing.T) {
	for _, spec := range []LengthSpec{
		{Mean: 290, Max: 1024, Min: 16, Prompt: 0.2, N: 4000, Seed: 1},
		{Mean: 100, Max: 400, Min: 4, Prompt: 0, N: 4000, Seed: 2},
	} {
		p := spec.Profile()
		if err := p.Validate("spec"); err != nil {
			t.Fatal(err)
		}
		st := p.Stats()
		if st.Examples != spec.N || math.Abs(st.MeanTokens-spec.Mean) > 0.03*spec.Mean || st.MaxTokens > spec.Max {
			t.Errorf("%+v: %+v", spec, st)
		}
		for _, e := range p.Examples {
			if e[0] < spec.Min || e[1] < 1 || e[1] > max(1, int(spec.Prompt*float64(e[0]))) {
				t.Fatalf("%+v: example %v", spec, e)
			}
		}
		if again := spec.Profile(); !equalProfiles(p, again) {
			t.Errorf("%+v: two draws differ", spec)
		}
	}
}

func equalProfiles(a, b *LengthProfile) bool {
	if len(a.Examples) != len(b.Examples) {
		return false
	}
	for i := range a.Examples {
		if a.Examples[i] != b.Examples[i] {
			return false
		}
	}
	return true
}

// TestStatsByHand: the summary of a two-example profile, computed by hand.
func TestStatsByHand(t *testing.T) {
	p := &LengthProfile{Examples: [][2]int{{5, 2}, {3, 1}}}
	st := p.Stats()
	// inputs 4 and 2; counted 3 and 2; attended (4·5/2 + 2·3/2)/6 = 13/6.
	want := Stats{Examples: 2, MeanTokens: 4, MaxTokens: 5, CountedShare: 5.0 / 6, MeanAttention: 13.0 / 6}
	if math.Abs(st.CountedShare-want.CountedShare) > 1e-12 || math.Abs(st.MeanAttention-want.MeanAttention) > 1e-12 {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	st.CountedShare, st.MeanAttention = want.CountedShare, want.MeanAttention
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
}

// TestProfileOfSample: the profile of examples/fung-sample's train split
// (the Llama 3 tokenizer, prompts masked) keeps each example's token and
// loss-token counts; the split it lays out has the same counts; and the
// committed bench/lengths file (what the GPU run uses) is that profile.
func TestProfileOfSample(t *testing.T) {
	root := testenv.RepoRoot()
	tok, err := llama.LoadTokenizer(filepath.Join(root, "third_party", "llama3-tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	split, err := traindata.LoadSplit(traindata.Config{Dir: filepath.Join(root, "examples", "fung-sample"), MaskPrompt: true, MaxSeqLength: 1024}, "train", tok)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ProfileOf(split, "sample")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Examples) != 160 {
		t.Fatalf("%d examples, want 160", len(p.Examples))
	}
	laid := p.Split(128256, 0, 1)
	for i, ex := range split.Examples {
		counted := 0
		for _, c := range ex.Counted {
			if c {
				counted++
			}
		}
		e := p.Examples[i]
		lc := 0
		for _, c := range laid.Examples[i].Counted {
			if c {
				lc++
			}
		}
		if e[0] != len(ex.Tokens) || e[0]-e[1] != counted || len(laid.Examples[i].Tokens) != e[0] || lc != counted {
			t.Fatalf("example %d: profile %v, laid out %d tokens %d counted; split %d tokens %d counted",
				i, e, len(laid.Examples[i].Tokens), lc, len(ex.Tokens), counted)
		}
	}
	st := p.Stats()
	if st.MeanTokens < 250 || st.MeanTokens > 320 {
		t.Errorf("mean %g tokens: the sample data averages about 290", st.MeanTokens)
	}
	committed, err := ReadProfile(filepath.Join(root, "bench", "lengths", "fung-sample-llama3.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !equalProfiles(committed, p) {
		t.Error("bench/lengths/fung-sample-llama3.json is not the sample's profile: regenerate it with bench lengths --out")
	}
}

// TestResolveLengths: each form of --lengths, the cut to max_seq_length,
// and clear errors.
func TestResolveLengths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "l.json")
	if err := (&LengthProfile{Source: "hand", Examples: [][2]int{{10, 3}, {2000, 100}, {1500, 1200}}}).WriteFile(file); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"examples": [[10, 10]]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := traindata.Config{MaskPrompt: true, MaxSeqLength: 1024}
	p, err := ResolveLengths(file, "", cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int{{10, 3}, {1024, 100}, {1024, 1023}}
	for i := range want {
		if p.Examples[i] != want[i] {
			t.Errorf("example %d: %v, want %v (cut to 1024 tokens, one target left)", i, p.Examples[i], want[i])
		}
	}
	if p, err := ResolveLengths("", "", cfg); p != nil || err != nil {
		t.Errorf("empty --lengths: %v, %v", p, err)
	}
	errs := []struct{ arg, tok, want string }{
		{bad, "", "example 1 is [10, 10]"},
		{dir, "", "needs a tokenizer"},
		{"nosuchthing", "", "not a dataset directory, a lengths file or a spec"},
		{"mean:5,max:4", "", "max 4 is below min 16"},
	}
	for _, c := range errs {
		if _, err := ResolveLengths(c.arg, c.tok, cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ResolveLengths(%q): %v, want an error containing %q", c.arg, err, c.want)
		}
	}
}

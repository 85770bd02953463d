package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/traindata"
)

// A LengthProfile is the shape of a training set without its text: each
// example's token count and how many of its leading tokens are prompt
// (not loss-counted). fungtrain and the anchors (bench/mlxlm_anchor.py,
// bench/peft_anchor.py) train on random token ids laid out by the same
// profile, so they do the same work: the same sequence lengths, the same
// loss-counted tokens, the same padding to each batch's longest example.
type LengthProfile struct {
	// Source says where the lengths came from (a dataset, a spec).
	Source string `json:"source"`
	// Examples are [tokens, prompt] pairs: the targets of tokens
	// prompt..tokens-1 count in the loss (prompt ≥ 1: the first token is
	// never a target).
	Examples [][2]int `json:"examples"`
	// TailMasks is false when some example's loss tokens were not one
	// run at its end (several assistant turns); its prompt is then
	// tokens minus the counted tokens, which keeps the counts.
	TailMasks bool `json:"tail_masks"`
}

// ProfileOf reads the lengths and loss masks of a tokenized split.
func ProfileOf(s *traindata.Split, source string) (*LengthProfile, error) {
	if len(s.Examples) == 0 {
		return nil, fmt.Errorf("lengths of %s: no examples", source)
	}
	p := &LengthProfile{Source: source, TailMasks: true}
	for _, ex := range s.Examples {
		n, counted, first := len(ex.Tokens), 0, -1
		for i, c := range ex.Counted {
			if c {
				counted++
				if first < 0 {
					first = i
				}
			}
		}
		if counted == 0 || n < 2 {
			return nil, fmt.Errorf("lengths of %s: the example at line %d has no loss tokens", source, ex.Line)
		}
		if first+counted != n {
			p.TailMasks = false
		}
		p.Examples = append(p.Examples, [2]int{n, n - counted})
	}
	return p, nil
}

// Stats summarise a profile: example count, mean and largest token count,
// loss-counted share of the targets, and the mean attended context per
// input token under causal attention (Σ n(n+1)/2 / Σ n over each example's
// n = tokens-1 inputs), which sets the attention FLOPs.
type Stats struct {
	Examples      int     `json:"examples"`
	MeanTokens    float64 `json:"mean_tokens"`
	MaxTokens     int     `json:"max_tokens"`
	CountedShare  float64 `json:"counted_share"`
	MeanAttention float64 `json:"mean_attended_context"`
}

// Stats computes the profile's summary.
func (p *LengthProfile) Stats() Stats {
	var st Stats
	var tokens, inputs, counted, attended float64
	for _, e := range p.Examples {
		n := float64(e[0] - 1)
		tokens += float64(e[0])
		inputs += n
		counted += float64(e[0] - e[1])
		attended += n * (n + 1) / 2
		st.MaxTokens = max(st.MaxTokens, e[0])
	}
	st.Examples = len(p.Examples)
	if st.Examples > 0 {
		st.MeanTokens = tokens / float64(st.Examples)
		st.CountedShare = counted / inputs
		st.MeanAttention = attended / inputs
	}
	return st
}

// Split lays random token ids in [0, vocab) out by the profile, copies
// enough times to fill at least minExamples (the order of the copies is
// the trainer's business: it shuffles by length bucket).
func (p *LengthProfile) Split(vocab, minExamples int, seed uint64) *traindata.Split {
	rng := rand.New(rand.NewPCG(seed, 29))
	s := &traindata.Split{Name: "lengths", Path: p.Source}
	for len(s.Examples) < max(minExamples, len(p.Examples)) {
		for _, e := range p.Examples {
			ex := traindata.Example{Tokens: make([]int32, e[0]), Counted: make([]bool, e[0]), Line: len(s.Examples) + 1}
			for j := range ex.Tokens {
				ex.Tokens[j] = int32(rng.IntN(vocab))
				ex.Counted[j] = j >= e[1]
			}
			s.Examples = append(s.Examples, ex)
		}
	}
	return s
}

// Validate checks every example: at least 2 tokens, a prompt of at least 1
// and at most tokens-1 (one counted target or more).
func (p *LengthProfile) Validate(where string) error {
	if len(p.Examples) == 0 {
		return fmt.Errorf("%s: no examples", where)
	}
	for i, e := range p.Examples {
		if e[0] < 2 || e[1] < 1 || e[1] >= e[0] {
			return fmt.Errorf("%s: example %d is [%d, %d]: want [tokens ≥ 2, 1 ≤ prompt < tokens]", where, i+1, e[0], e[1])
		}
	}
	return nil
}

// WriteFile writes the profile as JSON, atomically.
func (p *LengthProfile) WriteFile(path string) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'))
}

// ReadProfile reads a profile written by WriteFile.
func ReadProfile(path string) (*LengthProfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read lengths: %w", err)
	}
	var p LengthProfile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("read lengths %s: %w", path, err)
	}
	return &p, p.Validate(path)
}

// LengthSpec is a synthetic length distribution, written
// "mean:290,max:1024" with optional min:N (default 16), prompt:F (the
// prompt's share of each example, default 0.2), n:N examples (default
// 160) and seed:N.
type LengthSpec struct {
	Mean, Prompt float64
	Min, Max, N  int
	Seed         uint64
}

// ParseLengthSpec reads a spec such as "mean:290,max:1024,prompt:0.25".
func ParseLengthSpec(s string) (LengthSpec, error) {
	spec := LengthSpec{Min: 16, Prompt: 0.2, N: 160, Seed: 1}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return spec, fmt.Errorf("lengths %q: %q is not key:value (keys: mean, max, min, prompt, n, seed)", s, part)
		}
		if seen[k] {
			return spec, fmt.Errorf("lengths %q: %s is given twice", s, k)
		}
		seen[k] = true
		var err error
		switch k {
		case "mean", "prompt":
			var f float64
			if f, err = strconv.ParseFloat(v, 64); err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
				err = errors.New("not finite")
			}
			if k == "mean" {
				spec.Mean = f
			} else {
				spec.Prompt = f
			}
		case "max", "min", "n":
			var n int
			n, err = strconv.Atoi(v)
			*map[string]*int{"max": &spec.Max, "min": &spec.Min, "n": &spec.N}[k] = n
		case "seed":
			spec.Seed, err = strconv.ParseUint(v, 10, 64)
		default:
			return spec, fmt.Errorf("lengths %q: unknown key %q (keys: mean, max, min, prompt, n, seed)", s, k)
		}
		if err != nil {
			return spec, fmt.Errorf("lengths %q: %s: want a number, got %q", s, k, v)
		}
	}
	switch {
	case !seen["mean"] || !seen["max"]:
		return spec, fmt.Errorf("lengths %q: mean and max are required, e.g. mean:290,max:1024", s)
	case spec.Min < 2:
		return spec, fmt.Errorf("lengths %q: min must be at least 2, got %d", s, spec.Min)
	case spec.Max < spec.Min:
		return spec, fmt.Errorf("lengths %q: max %d is below min %d", s, spec.Max, spec.Min)
	case spec.Mean < float64(spec.Min) || spec.Mean > float64(spec.Max):
		return spec, fmt.Errorf("lengths %q: mean %g is outside [min %d, max %d]", s, spec.Mean, spec.Min, spec.Max)
	case spec.Prompt < 0 || spec.Prompt >= 1:
		return spec, fmt.Errorf("lengths %q: prompt must be in [0, 1), got %g", s, spec.Prompt)
	case spec.N < 1:
		return spec, fmt.Errorf("lengths %q: n must be at least 1, got %d", s, spec.N)
	}
	return spec, nil
}

// Profile draws the spec's lengths: an Erlang distribution of shape 4
// (right-skewed, like answer lengths) with the given mean, clipped to
// [min, max]; the prompt is the prompt share of each example (at least 1
// token, at least 1 target left).
func (spec LengthSpec) Profile() *LengthProfile {
	rng := rand.New(rand.NewPCG(spec.Seed, 31))
	const shape = 4
	p := &LengthProfile{TailMasks: true, Source: fmt.Sprintf("mean:%g,max:%d,min:%d,prompt:%g,n:%d,seed:%d",
		spec.Mean, spec.Max, spec.Min, spec.Prompt, spec.N, spec.Seed)}
	for range spec.N {
		x := 0.0
		for range shape {
			x += rng.ExpFloat64()
		}
		n := int(math.Round(x * spec.Mean / shape))
		n = min(max(n, spec.Min), spec.Max)
		prompt := min(max(int(spec.Prompt*float64(n)), 1), n-1)
		p.Examples = append(p.Examples, [2]int{n, prompt})
	}
	return p
}

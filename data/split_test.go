package data

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

func TestSplitVideosGroupsAndFollowsFractions(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	counts := map[string]int{}
	total := 0
	for i := range 60 {
		n := 1 + rng.IntN(15)
		counts[fmt.Sprintf("video-%02d", i)] = n
		total += n
	}
	cfg := SplitConfig{Train: 0.8, Valid: 0.1, Test: 0.1, Seed: 42}
	a := splitVideos(counts, cfg)
	if len(a) != len(counts) {
		t.Fatalf("%d videos assigned, want %d", len(a), len(counts))
	}
	got := map[string]int{}
	for v, sp := range a {
		got[sp] += counts[v]
	}
	for sp, frac := range map[string]float64{"train": 0.8, "valid": 0.1, "test": 0.1} {
		share := float64(got[sp]) / float64(total)
		if share < frac-0.03 || share > frac+0.03 {
			t.Errorf("%s has %.3f of the examples, want %.2f ± 0.03", sp, share, frac)
		}
	}
	// Deterministic for a seed, different for another.
	if b := splitVideos(counts, cfg); !maps.Equal(a, b) {
		t.Error("same seed, different split")
	}
	cfg.Seed = 43
	if c := splitVideos(counts, cfg); maps.Equal(a, c) {
		t.Error("seed 43 gives the same split as seed 42")
	}
}

func TestSplitVideosSmall(t *testing.T) {
	cfg := SplitConfig{Train: 0.8, Valid: 0.1, Test: 0.1, Seed: 42}
	tests := []struct {
		counts map[string]int
		want   map[string]int // videos per split
	}{
		{map[string]int{"a": 5}, map[string]int{"train": 1}},
		{map[string]int{"a": 5, "b": 5, "c": 5}, map[string]int{"train": 1, "valid": 1, "test": 1}},
		{map[string]int{"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1, "i": 1, "j": 1}, map[string]int{"train": 8, "valid": 1, "test": 1}},
	}
	for _, tc := range tests {
		got := map[string]int{}
		for _, sp := range splitVideos(tc.counts, cfg) {
			got[sp]++
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("%d videos: split %v, want %v", len(tc.counts), got, tc.want)
		}
	}
	noTest := splitVideos(map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}, SplitConfig{Train: 0.5, Valid: 0.5, Seed: 1})
	for v, sp := range noTest {
		if sp == "test" {
			t.Errorf("video %s in test with a test fraction of 0", v)
		}
	}
}

package data

import (
	"math/rand/v2"
	"slices"
)

var splitNames = []string{"train", "valid", "test"}

// splitVideos assigns whole videos to train, valid and test. Videos are
// sorted, shuffled with the seed, then each goes to the split furthest below
// its target share of examples (relative to that target), so the example
// counts follow the fractions while no video is in two splits. counts maps
// a video id to its number of examples.
func splitVideos(counts map[string]int, cfg SplitConfig) map[string]string {
	videos := make([]string, 0, len(counts))
	total := 0
	for v, n := range counts {
		videos = append(videos, v)
		total += n
	}
	slices.Sort(videos)
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5851f42d4c957f2d))
	rng.Shuffle(len(videos), func(i, j int) { videos[i], videos[j] = videos[j], videos[i] })
	fracs := []float64{cfg.Train, cfg.Valid, cfg.Test}
	sum := cfg.Train + cfg.Valid + cfg.Test
	targets := make([]float64, 3)
	for i, f := range fracs {
		targets[i] = f / sum * float64(total)
	}
	got := make([]float64, 3)
	out := make(map[string]string, len(videos))
	for _, v := range videos {
		best, bestDeficit := -1, 0.0
		for i, t := range targets {
			if t <= 0 {
				continue
			}
			d := (t - got[i]) / t
			if best < 0 || d > bestDeficit {
				best, bestDeficit = i, d
			}
		}
		out[v] = splitNames[best]
		got[best] += float64(counts[v])
	}
	return out
}

package data

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
)

type plantedSet struct {
	Distinct []string    `json:"distinct"`
	Near     [][2]string `json:"near"`
}

func loadPlanted(t *testing.T) plantedSet {
	t.Helper()
	b, err := os.ReadFile("testdata/dedup_planted.json")
	if err != nil {
		t.Fatal(err)
	}
	var p plantedSet
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNormalizeText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"What's the cause of Plantar Fasciitis?", "what cause plantar fasciitis"},
		{"How can I treat my plantar fasciitis at home?!", "how treat plantar fasciitis home"},
		{"Which stretches help with heel pain in the mornings?", "which stretch help heel pain morn"},
		{"Isn’t type II diabetes reversible?", "not type 2 diabete reversible"},
		{"Treatments, treated, treating", "treat treat treat"},
	}
	for _, tc := range tests {
		if got := normalizeText(tc.in); got != tc.want {
			t.Errorf("normalizeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestJaccardAndShingles(t *testing.T) {
	a, b := shingles("abcd", 3), shingles("abce", 3)
	// " abcd " -> " ab","abc","bcd","cd " ; " abce " -> " ab","abc","bce","ce "
	if len(a) != 4 || len(b) != 4 {
		t.Fatalf("shingle counts %d %d, want 4 4", len(a), len(b))
	}
	if got := jaccard(a, b); got != 2.0/6.0 {
		t.Errorf("jaccard = %v, want 1/3", got)
	}
	if jaccard(a, a) != 1 || jaccard(nil, nil) != 1 || jaccard(a, nil) != 0 {
		t.Error("jaccard identities fail")
	}
}

// TestDedupPlantedSet is the figure reported for the pipeline: planted
// rewordings of questions are all found, and no two distinct questions are
// merged.
func TestDedupPlantedSet(t *testing.T) {
	p := loadPlanted(t)
	cfg := DefaultPipelineConfig().Build.Dedup
	var items []DedupItem
	for i, q := range p.Distinct {
		items = append(items, DedupItem{ID: fmt.Sprintf("d%02d", i), Text: q})
	}
	origID := map[string]string{}
	for i, q := range p.Distinct {
		origID[q] = fmt.Sprintf("d%02d", i)
	}
	planted := map[string]string{} // rewording id -> original id
	for i, pr := range p.Near {
		id := fmt.Sprintf("n%02d", i)
		if _, ok := origID[pr[0]]; !ok {
			t.Fatalf("planted pair %d: %q is not in the distinct list", i, pr[0])
		}
		planted[id] = origID[pr[0]]
		items = append(items, DedupItem{ID: id, Text: pr[1]})
	}
	keep, pairs := Dedup(items, cfg)
	found, falseMerges, wrongPartner := 0, 0, 0
	for _, pr := range pairs {
		orig, isPlanted := planted[pr.RemovedID]
		switch {
		case !isPlanted:
			falseMerges++
			t.Errorf("false merge: %q removed as a duplicate of %q (%.3f)", pr.Removed, pr.Kept, pr.Similarity)
		case pr.KeptID != orig:
			wrongPartner++
			t.Errorf("%q matched %q, not its original", pr.Removed, pr.Kept)
		default:
			found++
		}
	}
	kept := 0
	for _, k := range keep {
		if k {
			kept++
		}
	}
	t.Logf("planted near-duplicates: %d, found: %d, false merges: %d (distinct questions: %d, kept: %d)",
		len(p.Near), found, falseMerges, len(p.Distinct), kept)
	if found != 20 || len(p.Near) != 20 || falseMerges != 0 || wrongPartner != 0 || kept != 50 {
		t.Errorf("found %d of %d planted, %d false merges, %d wrong partners, %d kept; want 20 of 20, 0, 0, 50",
			found, len(p.Near), falseMerges, wrongPartner, kept)
	}
	// LSH banding misses nothing here: the result equals a brute-force
	// comparison of every pair.
	brute := bruteForceDedup(items, cfg)
	if !slices.Equal(brute, keep) {
		t.Errorf("LSH result differs from brute force")
	}
}

func bruteForceDedup(items []DedupItem, cfg DedupConfig) []bool {
	keep := make([]bool, len(items))
	norm := make([]string, len(items))
	sets := make([][]uint64, len(items))
	for i := range items {
		norm[i] = normalizeText(items[i].Text)
		sets[i] = shingles(norm[i], cfg.NGram)
	}
outer:
	for i := range items {
		for k := range i {
			if keep[k] && (norm[k] == norm[i] || jaccard(sets[i], sets[k]) >= cfg.Threshold && !contrasting(norm[i], norm[k])) {
				continue outer
			}
		}
		keep[i] = true
	}
	return keep
}

// TestDedupHardPairs documents the limit of surface similarity on minimal
// pairs: questions that differ by one meaningful word.
func TestDedupHardPairs(t *testing.T) {
	cfg := DefaultPipelineConfig().Build.Dedup
	tests := []struct {
		a, b   string
		merged bool
	}{
		// Kept apart by the contrast-word guard.
		{"What are the symptoms of low blood sugar?", "What are the symptoms of high blood sugar?", false},
		{"Why does my left knee hurt after running?", "Why does my right knee hurt after running?", false},
		{"Is type 1 diabetes hereditary?", "Is type 2 diabetes hereditary?", false},
		// Kept apart by the threshold.
		{"Is it safe to take ibuprofen every day?", "Is it safe to take acetaminophen every day?", false},
		{"Can plantar fasciitis come back after it heals?", "Can a stress fracture come back after it heals?", false},
		// Known false merges: one content word differs and no guard knows it.
		{"How long does a sprained ankle take to heal?", "How long does a broken ankle take to heal?", true},
		{"What causes knee pain when climbing stairs?", "What causes knee pain when running?", true},
	}
	for _, tc := range tests {
		keep, _ := Dedup([]DedupItem{{ID: "a", Text: tc.a}, {ID: "b", Text: tc.b}}, cfg)
		if merged := !keep[1]; merged != tc.merged {
			t.Errorf("%q / %q: merged=%v, want %v (jaccard %.2f)", tc.a, tc.b, merged, tc.merged,
				jaccard(shingles(normalizeText(tc.a), cfg.NGram), shingles(normalizeText(tc.b), cfg.NGram)))
		}
	}
}

func TestDedupKeepsHigherScoreAndReportsExact(t *testing.T) {
	cfg := DefaultPipelineConfig().Build.Dedup
	items := []DedupItem{
		{ID: "a", Text: "How do I prevent gout attacks?", Score: 0.6},
		{ID: "b", Text: "how do i prevent GOUT attacks", Score: 0.9},
		{ID: "c", Text: "How can I prevent gout attacks?", Score: 0.7},
		{ID: "d", Text: "Which foods trigger gout flares?", Score: 0.5},
	}
	keep, pairs := Dedup(items, cfg)
	if !slices.Equal(keep, []bool{false, true, false, true}) {
		t.Errorf("keep = %v, want only b and d", keep)
	}
	want := []DupPair{
		{RemovedID: "c", KeptID: "b", Kind: "exact", Similarity: 1, Removed: items[2].Text, Kept: items[1].Text},
		{RemovedID: "a", KeptID: "b", Kind: "exact", Similarity: 1, Removed: items[0].Text, Kept: items[1].Text},
	}
	if !slices.Equal(pairs, want) {
		t.Errorf("pairs = %+v\nwant %+v", pairs, want)
	}
}

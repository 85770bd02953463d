package data

import (
	"cmp"
	"hash/fnv"
	"slices"
	"strings"
	"unicode"
)

// normalizeText prepares a text for duplicate detection: lower case, curly
// quotes straightened, common contractions expanded, punctuation dropped,
// filler words dropped and a light suffix stemming, so that rewordings
// such as "What's the best treatment for X?" and "what is the best way to
// treat x" come close.
func normalizeText(s string) string {
	s = strings.ToLower(s)
	s = strings.NewReplacer("’", "'", "‘", "'", "`", "'", "´", "'").Replace(s)
	s = contractions.Replace(s)
	var words []string
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		if stopwords[w] {
			continue
		}
		words = append(words, stem(w))
	}
	return strings.Join(words, " ")
}

var contractions = strings.NewReplacer(
	"what's", "what is", "that's", "that is", "it's", "it is", "there's", "there is",
	"how's", "how is", "where's", "where is", "who's", "who is", "let's", "let us",
	"can't", "can not", "won't", "will not", "shan't", "shall not", "n't", " not",
	"'re", " are", "'ve", " have", "'ll", " will", "'m", " am", "'d", " would", "'s", "",
)

// stopwords carry little meaning in a question. Question words (what, how,
// why, when, which, who, where) are kept: they tell questions apart.
var stopwords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`a an the is are was were be been being am do does did doing
		i me my mine you your yours we our us he she him her his they them their it its this that these those
		of to for in on at by with from into about as and or but if so than then there here
		can could should would will shall may might must have has had having get gets got
		please tell know explain some any just really actually also very much many lot`) {
		m[w] = true
	}
	return m
}()

// stem strips a few common English suffixes: plurals first, then -ment,
// -ing and -ed.
func stem(w string) string {
	n := len(w)
	switch {
	case n > 4 && strings.HasSuffix(w, "ies"):
		w = w[:n-3] + "y"
	case n > 4 && strings.HasSuffix(w, "sses"):
		w = w[:n-2]
	case n > 4 && (strings.HasSuffix(w, "ches") || strings.HasSuffix(w, "shes") || strings.HasSuffix(w, "xes")):
		w = w[:n-2]
	case n > 3 && strings.HasSuffix(w, "s") && !strings.HasSuffix(w, "ss") && !strings.HasSuffix(w, "us") && !strings.HasSuffix(w, "is"):
		w = w[:n-1]
	}
	n = len(w)
	switch {
	case n > 6 && strings.HasSuffix(w, "ment"):
		w = w[:n-4]
	case n > 5 && strings.HasSuffix(w, "ing"):
		w = w[:n-3]
	case n > 4 && strings.HasSuffix(w, "ed"):
		w = w[:n-2]
	}
	if c, ok := synonyms[w]; ok {
		return c
	}
	return w
}

// synonyms maps interchangeable words to one form.
var synonyms = map[string]string{"ii": "2", "iii": "3", "iv": "4", "one": "1", "two": "2", "three": "3"}

// contrasts are word pairs that make two otherwise alike questions ask
// different things ("low" or "high blood sugar").
var contrasts = [][2]string{
	{"low", "high"}, {"left", "right"}, {"upper", "lower"}, {"before", "after"}, {"child", "adult"},
	{"children", "adult"}, {"men", "women"}, {"male", "female"}, {"acute", "chronic"}, {"hot", "cold"},
	{"increase", "decrease"}, {"morn", "night"}, {"day", "night"}, {"front", "back"}, {"inner", "outer"},
	{"mild", "severe"}, {"early", "late"}, {"start", "stop"},
}

// contrasting reports whether two normalised texts differ by a contrast
// pair or by the numbers they contain.
func contrasting(a, b string) bool {
	wa, wb := wordSet(a), wordSet(b)
	for _, c := range contrasts {
		x, y := c[0], c[1]
		if wa[x] && !wa[y] && wb[y] && !wb[x] || wa[y] && !wa[x] && wb[x] && !wb[y] {
			return true
		}
	}
	return !sameNumbers(wa, wb)
}

func wordSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(s) {
		m[w] = true
	}
	return m
}

func sameNumbers(a, b map[string]bool) bool {
	isNum := func(w string) bool { return w != "" && strings.Trim(w, "0123456789") == "" }
	for w := range a {
		if isNum(w) && !b[w] {
			return false
		}
	}
	for w := range b {
		if isNum(w) && !a[w] {
			return false
		}
	}
	return true
}

// shingles returns the set of character n-grams of s (padded with a space
// at both ends), hashed, sorted and without repeats.
func shingles(s string, n int) []uint64 {
	r := []rune(" " + s + " ")
	if len(r) < n {
		n = len(r)
	}
	out := make([]uint64, 0, len(r)-n+1)
	for i := 0; i+n <= len(r); i++ {
		h := fnv.New64a()
		h.Write([]byte(string(r[i : i+n])))
		out = append(out, h.Sum64())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// jaccard is |a ∩ b| / |a ∪ b| of two sorted sets.
func jaccard(a, b []uint64) float64 {
	if len(a) == 0 && len(b) == 0 {
		return 1
	}
	i, j, inter := 0, 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			inter++
			i++
			j++
		case a[i] < b[j]:
			i++
		default:
			j++
		}
	}
	return float64(inter) / float64(len(a)+len(b)-inter)
}

// splitmix64 is a strong 64-bit mixer, used to derive the MinHash
// permutations.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// minhash returns the signature of a shingle set under k hash functions.
func minhash(sh []uint64, k int) []uint64 {
	sig := make([]uint64, k)
	for i := range sig {
		sig[i] = ^uint64(0)
	}
	for _, s := range sh {
		for i := range k {
			if h := splitmix64(s ^ splitmix64(uint64(i)+1)); h < sig[i] {
				sig[i] = h
			}
		}
	}
	return sig
}

// DedupItem is one text to deduplicate. Of two duplicates the one with the
// higher Score is kept, then the earlier one.
type DedupItem struct {
	ID    string
	Text  string
	Score float64
}

// DupPair is a removed duplicate and the item it duplicates.
type DupPair struct {
	RemovedID string `json:"removed_id"`
	KeptID    string `json:"kept_id"`
	// Kind is "exact" (identical after normalisation) or "near".
	Kind       string  `json:"kind"`
	Similarity float64 `json:"similarity"`
	Removed    string  `json:"removed"`
	Kept       string  `json:"kept"`
}

// Dedup marks duplicates among items. Items are visited best first; one is
// dropped when its normalised text equals a kept one's (exact) or when the
// Jaccard similarity of the character n-gram sets with a kept item reaches
// cfg.Threshold (near) and the two do not differ by a contrast word pair
// (low/high, left/right, ...) or by their numbers. Near candidates come from MinHash signatures split
// into cfg.Bands LSH bands; each candidate is confirmed with the exact
// Jaccard similarity, so there are no false positives from hashing, only
// the (small) chance of a missed candidate. keep is in items order; pairs
// are in visiting order.
func Dedup(items []DedupItem, cfg DedupConfig) (keep []bool, pairs []DupPair) {
	keep = make([]bool, len(items))
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(items[b].Score, items[a].Score) })
	rows := cfg.NumHashes / max(cfg.Bands, 1)
	norm := make([]string, len(items))
	sets := make([][]uint64, len(items))
	exact := map[string]int{}
	buckets := make([]map[uint64][]int, cfg.Bands)
	for b := range buckets {
		buckets[b] = map[uint64][]int{}
	}
	for _, i := range order {
		norm[i] = normalizeText(items[i].Text)
		if k, ok := exact[norm[i]]; ok {
			pairs = append(pairs, DupPair{RemovedID: items[i].ID, KeptID: items[k].ID, Kind: "exact", Similarity: 1,
				Removed: items[i].Text, Kept: items[k].Text})
			continue
		}
		sets[i] = shingles(norm[i], cfg.NGram)
		sig := minhash(sets[i], rows*cfg.Bands)
		bandKeys := make([]uint64, cfg.Bands)
		best, bestSim := -1, 0.0
		checked := map[int]bool{}
		for b := range cfg.Bands {
			h := uint64(14695981039346656037)
			for _, v := range sig[b*rows : (b+1)*rows] {
				h = splitmix64(h ^ v)
			}
			bandKeys[b] = h
			for _, k := range buckets[b][h] {
				if checked[k] {
					continue
				}
				checked[k] = true
				if s := jaccard(sets[i], sets[k]); s >= cfg.Threshold && (s > bestSim || s == bestSim && k < best) && !contrasting(norm[i], norm[k]) {
					best, bestSim = k, s
				}
			}
		}
		if best >= 0 {
			pairs = append(pairs, DupPair{RemovedID: items[i].ID, KeptID: items[best].ID, Kind: "near",
				Similarity: round3(bestSim), Removed: items[i].Text, Kept: items[best].Text})
			continue
		}
		keep[i] = true
		exact[norm[i]] = i
		for b, h := range bandKeys {
			buckets[b][h] = append(buckets[b][h], i)
		}
	}
	return keep, pairs
}

func round3(x float64) float64 {
	return float64(int64(x*1000+0.5)) / 1000
}

package eval

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Scores are the model-independent scores of one generated answer against
// its reference answer.
type Scores struct {
	// Chars is the number of runes in the answer, surrounding space trimmed.
	Chars int `json:"chars"`
	// Words is the number of whitespace-separated words in the answer.
	Words int `json:"words"`
	// ReferenceWords is the number of words in the reference answer.
	ReferenceWords int `json:"reference_words"`
	// LengthRatio is Words / ReferenceWords, or 0 when the reference is
	// empty. 1 means "as long as the reference".
	LengthRatio float64 `json:"length_ratio"`
	// Format counts the answer's markdown formatting.
	Format Formatting `json:"format"`
	// ReferenceFormat counts the reference answer's markdown formatting.
	ReferenceFormat Formatting `json:"reference_format"`
	// FormatMatch reports whether the answer uses bold, lists and several
	// paragraphs exactly when the reference does (see [FormatMatches]).
	FormatMatch bool `json:"format_match"`
	// HitEOS is true when generation stopped at an end-of-sequence token,
	// false when it ran out at the max-token limit.
	HitEOS bool `json:"hit_eos"`
	// Refusal is true when the answer opens like a refusal; RefusalPhrase is
	// the phrase that matched.
	Refusal       bool   `json:"refusal"`
	RefusalPhrase string `json:"refusal_phrase,omitempty"`
	// MetaRefs lists, in order, every meta-reference to the source material
	// found in the answer ("the transcript", "in this video", ...).
	MetaRefs []string `json:"meta_refs,omitempty"`
	// RougeL is ROUGE-L of the answer (candidate) against the reference.
	RougeL Rouge `json:"rouge_l"`
}

// Score scores answer against reference. hitEOS tells whether generation
// ended at an end-of-sequence token rather than at the max-token limit.
func Score(answer, reference string, hitEOS bool) Scores {
	s := Scores{
		Chars:           CountChars(answer),
		Words:           CountWords(answer),
		ReferenceWords:  CountWords(reference),
		Format:          CountFormatting(answer),
		ReferenceFormat: CountFormatting(reference),
		HitEOS:          hitEOS,
		MetaRefs:        FindMetaRefs(answer),
		RougeL:          RougeL(answer, reference),
	}
	s.LengthRatio = LengthRatio(s.Words, s.ReferenceWords)
	s.FormatMatch = FormatMatches(s.Format, s.ReferenceFormat)
	s.RefusalPhrase, s.Refusal = DetectRefusal(answer)
	return s
}

// CountChars returns the number of runes in s after trimming surrounding
// white space.
func CountChars(s string) int {
	return utf8.RuneCountInString(strings.TrimSpace(s))
}

// CountWords returns the number of white-space separated words in s.
func CountWords(s string) int {
	return len(strings.Fields(s))
}

// LengthRatio returns words/referenceWords, or 0 when referenceWords is 0.
func LengthRatio(words, referenceWords int) float64 {
	if referenceWords == 0 {
		return 0
	}
	return float64(words) / float64(referenceWords)
}

// Formatting counts the markdown formatting of a text.
type Formatting struct {
	// Bold is the number of **bold** spans on single lines whose text
	// neither starts nor ends with a space (as in CommonMark).
	Bold int `json:"bold"`
	// Bullets is the number of lines that are bullet items ("- x", "* x",
	// "+ x" or "• x", optionally indented).
	Bullets int `json:"bullets"`
	// Numbered is the number of lines that are numbered items ("1. x",
	// "2) x", optionally indented).
	Numbered int `json:"numbered"`
	// Headings is the number of ATX heading lines ("# x" to "###### x").
	Headings int `json:"headings"`
	// Paragraphs is the number of non-blank blocks separated by one or more
	// blank lines.
	Paragraphs int `json:"paragraphs"`
}

// HasBold reports whether the text has at least one bold span.
func (f Formatting) HasBold() bool { return f.Bold > 0 }

// HasList reports whether the text has at least one bullet or numbered item.
func (f Formatting) HasList() bool { return f.Bullets+f.Numbered > 0 }

// MultiParagraph reports whether the text has two or more paragraphs.
func (f Formatting) MultiParagraph() bool { return f.Paragraphs >= 2 }

var (
	boldRe     = regexp.MustCompile(`\*\*[^*\s](?:[^*\n]*[^*\s])?\*\*`)
	bulletRe   = regexp.MustCompile(`^\s*[-*+•]\s+\S`)
	numberedRe = regexp.MustCompile(`^\s*\d{1,3}[.)]\s+\S`)
	headingRe  = regexp.MustCompile(`^\s{0,3}#{1,6}\s+\S`)
)

// CountFormatting counts bold spans, bullet and numbered list items,
// headings and paragraphs in a markdown-ish text.
func CountFormatting(s string) Formatting {
	var f Formatting
	s = strings.ReplaceAll(s, "\r\n", "\n")
	inPara := false
	for line := range strings.SplitSeq(s, "\n") {
		if strings.TrimSpace(line) == "" {
			inPara = false
			continue
		}
		if !inPara {
			f.Paragraphs++
			inPara = true
		}
		f.Bold += len(boldRe.FindAllString(line, -1))
		switch {
		case bulletRe.MatchString(line):
			f.Bullets++
		case numberedRe.MatchString(line):
			f.Numbered++
		case headingRe.MatchString(line):
			f.Headings++
		}
	}
	return f
}

// FormatMatches reports whether answer uses bold, lists and multiple
// paragraphs exactly when reference does: each of HasBold, HasList and
// MultiParagraph must agree. This is the per-answer formatting-compliance
// test; the "format rate" of a run is the fraction of answers that pass it.
func FormatMatches(answer, reference Formatting) bool {
	return answer.HasBold() == reference.HasBold() &&
		answer.HasList() == reference.HasList() &&
		answer.MultiParagraph() == reference.MultiParagraph()
}

// refusalWindow is how many runes from the start of an answer are searched
// for a refusal phrase: refusals open the answer, while the same words deep
// inside a real answer ("you cannot ...") are usually content.
const refusalWindow = 200

// refusalPhrases are matched, lowercased, against the opening of an answer.
var refusalPhrases = []string{
	"i can't help",
	"i cannot help",
	"i can't assist",
	"i cannot assist",
	"i can't provide",
	"i cannot provide",
	"i can't answer",
	"i cannot answer",
	"i'm unable to",
	"i am unable to",
	"i'm not able to",
	"i am not able to",
	"i won't be able to",
	"i'm sorry, but",
	"i am sorry, but",
	"sorry, but i",
	"i apologize, but",
	"as an ai",
	"i don't have access to",
	"i do not have access to",
	"i don't have enough information",
	"i do not have enough information",
}

// DetectRefusal reports whether answer opens like a refusal, and which
// phrase matched. Only the first 200 runes are searched, case-insensitively,
// with typographic apostrophes folded to ASCII.
func DetectRefusal(answer string) (phrase string, ok bool) {
	head := []rune(normalizeText(answer))
	if len(head) > refusalWindow {
		head = head[:refusalWindow]
	}
	h := string(head)
	for _, p := range refusalPhrases {
		if containsWord(h, p) {
			return p, true
		}
	}
	return "", false
}

// containsWord reports whether phrase occurs in s starting at a word
// boundary (so "i can't" does not match inside "wi can't").
func containsWord(s, phrase string) bool {
	for off := 0; ; {
		i := strings.Index(s[off:], phrase)
		if i < 0 {
			return false
		}
		i += off
		if i == 0 || !isWordByte(s[i-1]) {
			return true
		}
		off = i + 1
	}
}

// metaRefPhrases are references to the source material that a fine-tuned
// answer should not make. Longer phrases come first so that "in this video"
// is reported once rather than also as "this video".
var metaRefPhrases = []string{
	"according to the transcript",
	"according to the video",
	"according to the speaker",
	"in this transcript",
	"in the transcript",
	"in this video",
	"in the video",
	"in this episode",
	"in this podcast",
	"in this talk",
	"in this lecture",
	"the transcript",
	"this transcript",
	"the video",
	"this video",
	"the speaker",
	"the narrator",
	"the presenter",
	"the host",
	"the interviewer",
	"the interviewee",
	"this episode",
	"the episode",
	"this podcast",
	"the podcast",
	"this lecture",
	"this talk",
	"the author mentions",
	"the author says",
}

// FindMetaRefs returns, in order of appearance, every meta-reference phrase
// in answer. Matching is case-insensitive on whole words; at each position
// the longest phrase wins and matches do not overlap.
func FindMetaRefs(answer string) []string {
	s := normalizeText(answer)
	var found []string
	for i := 0; i < len(s); {
		if i > 0 && isWordByte(s[i-1]) {
			i++
			continue
		}
		matched := ""
		for _, p := range metaRefPhrases {
			if strings.HasPrefix(s[i:], p) && (i+len(p) == len(s) || !isWordByte(s[i+len(p)])) && len(p) > len(matched) {
				matched = p
			}
		}
		if matched != "" {
			found = append(found, matched)
			i += len(matched)
			continue
		}
		i++
	}
	return found
}

// isWordByte reports whether b is an ASCII letter or digit, or any byte of a
// multi-byte rune (which we treat as part of a word).
func isWordByte(b byte) bool {
	return b >= 0x80 || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// normalizeText lowercases s, folds typographic apostrophes to ASCII and
// collapses runs of white space to one space.
func normalizeText(s string) string {
	s = strings.NewReplacer("\u2019", "'", "\u2018", "'").Replace(strings.ToLower(s))
	return strings.Join(strings.Fields(s), " ")
}

// Rouge holds precision, recall and F1 of a ROUGE variant.
type Rouge struct {
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
}

// Tokenize splits s into lowercased tokens for ROUGE: maximal runs of
// Unicode letters and digits; everything else separates tokens, so "don't"
// is "don", "t".
func Tokenize(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

// RougeL returns ROUGE-L of candidate against reference: with L the length
// of the longest common subsequence of their [Tokenize] tokens, precision
// is L/len(candidate), recall L/len(reference) and F1 their harmonic mean.
// All three are 0 when either side has no tokens or L is 0.
func RougeL(candidate, reference string) Rouge {
	c, r := Tokenize(candidate), Tokenize(reference)
	l := LCS(c, r)
	if l == 0 {
		return Rouge{}
	}
	p := float64(l) / float64(len(c))
	rec := float64(l) / float64(len(r))
	return Rouge{Precision: p, Recall: rec, F1: 2 * p * rec / (p + rec)}
}

// LCS returns the length of the longest common subsequence of a and b, in
// O(len(a)*len(b)) time and O(len(b)) memory.
func LCS(a, b []string) int {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for i := range a {
		for j := range b {
			switch {
			case a[i] == b[j]:
				cur[j+1] = prev[j] + 1
			case prev[j+1] >= cur[j]:
				cur[j+1] = prev[j+1]
			default:
				cur[j+1] = cur[j]
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

package eval

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestRougeL(t *testing.T) {
	tests := []struct {
		name, cand, ref string
		p, r, f1        float64
	}{
		// c=[the cat sat on the mat], r=[the cat is on the mat]; LCS = the cat on the mat = 5.
		{"one substitution", "the cat sat on the mat", "the cat is on the mat", 5.0 / 6, 5.0 / 6, 5.0 / 6},
		// LCS(a b c d, a c) = 2: P=2/4, R=2/2, F1=2*.5*1/1.5.
		{"candidate longer", "a b c d", "a c", 0.5, 1, 2.0 / 3},
		{"case and punctuation ignored", "Hello, World!", "hello world", 1, 1, 1},
		{"order matters", "b a", "a b", 0.5, 0.5, 0.5},
		// "don't" splits into don, t: c=[don t stop], r=[do not stop]; LCS = stop.
		{"apostrophe splits", "don't stop", "do not stop", 1.0 / 3, 1.0 / 3, 1.0 / 3},
		// c=[police killed the gunman], r=[police kill the gunman]; LCS=3.
		{"classic", "police killed the gunman", "police kill the gunman", 0.75, 0.75, 0.75},
		// c=[a b c], r=[x a y b z]; LCS = a b = 2: P=2/3, R=2/5.
		{"reference longer", "a b c", "x a y b z", 2.0 / 3, 2.0 / 5, 2 * (2.0 / 3) * (2.0 / 5) / (2.0/3 + 2.0/5)},
		{"no overlap", "foo", "bar", 0, 0, 0},
		{"empty candidate", "", "bar", 0, 0, 0},
		{"empty reference", "foo", "  ", 0, 0, 0},
		{"unicode letters", "Ça va très bien", "ça va bien", 0.75, 1, 2 * 0.75 / 1.75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RougeL(tt.cand, tt.ref)
			if !near(got.Precision, tt.p) || !near(got.Recall, tt.r) || !near(got.F1, tt.f1) {
				t.Errorf("RougeL(%q, %q) = %+v, want P=%v R=%v F1=%v", tt.cand, tt.ref, got, tt.p, tt.r, tt.f1)
			}
		})
	}
}

func TestLCS(t *testing.T) {
	split := func(s string) []string { return strings.Split(s, "") }
	tests := []struct {
		a, b string
		want int
	}{
		{"ABCBDAB", "BDCABA", 4},
		{"AGGTAB", "GXTXAYB", 4},
		{"ABC", "ABC", 3},
		{"ABC", "DEF", 0},
		{"A", "", 0},
	}
	for _, tt := range tests {
		if got := LCS(split(tt.a), split(tt.b)); got != tt.want {
			t.Errorf("LCS(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := LCS(split(tt.b), split(tt.a)); got != tt.want {
			t.Errorf("LCS(%s, %s) = %d, want %d (symmetry)", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestTokenize(t *testing.T) {
	got := Tokenize("It's 3 o'clock — **Bold** and_snake, x2!")
	want := []string{"it", "s", "3", "o", "clock", "bold", "and", "snake", "x2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Tokenize = %q, want %q", got, want)
	}
}

func TestCountFormatting(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Formatting
	}{
		{"plain", "Just one plain line.", Formatting{Paragraphs: 1}},
		{"empty", "  \n\n ", Formatting{}},
		{"bold spans", "**Key:** value and **another** one", Formatting{Bold: 2, Paragraphs: 1}},
		{"empty bold is not bold", "**** and ** **", Formatting{Paragraphs: 1}},
		{"italic is not bold nor bullet", "*emphasis* only", Formatting{Paragraphs: 1}},
		{"bold across lines does not count", "**start\nend**", Formatting{Paragraphs: 1}},
		{"triple star", "***both***", Formatting{Bold: 1, Paragraphs: 1}},
		{
			"lists and paragraphs",
			"Intro line\n\n- one\n- two\n* three\n+ four\n\n1. a\n2) b\n10. c\n\nEnd",
			Formatting{Bullets: 4, Numbered: 3, Paragraphs: 4},
		},
		{"indented bullets", "  - indented\n\t* tab\n• dot", Formatting{Bullets: 3, Paragraphs: 1}},
		{"bold in list items", "- **a**: x\n- **b**: y", Formatting{Bold: 2, Bullets: 2, Paragraphs: 1}},
		{"headings", "# Title\n\nText **b**\n\n\n\n## More\nbody", Formatting{Bold: 1, Headings: 2, Paragraphs: 3}},
		{"hashtag is not heading", "#hashtag", Formatting{Paragraphs: 1}},
		{"year is not numbered item", "1999 was a year.", Formatting{Paragraphs: 1}},
		{"CRLF", "a\r\n\r\nb\r\n", Formatting{Paragraphs: 2}},
		{"whitespace-only line separates", "a\n   \nb\n\t\nc", Formatting{Paragraphs: 3}},
		{"horizontal rule", "a\n\n---\n\nb", Formatting{Paragraphs: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CountFormatting(tt.in); got != tt.want {
				t.Errorf("CountFormatting(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatMatches(t *testing.T) {
	ref := Formatting{Bold: 2, Bullets: 3, Paragraphs: 2}
	tests := []struct {
		name string
		ans  Formatting
		want bool
	}{
		{"same features, other counts", Formatting{Bold: 1, Numbered: 5, Paragraphs: 4}, true},
		{"no bold", Formatting{Bullets: 3, Paragraphs: 2}, false},
		{"no list", Formatting{Bold: 2, Paragraphs: 2}, false},
		{"one paragraph", Formatting{Bold: 2, Bullets: 3, Paragraphs: 1}, false},
	}
	for _, tt := range tests {
		if got := FormatMatches(tt.ans, ref); got != tt.want {
			t.Errorf("%s: FormatMatches = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !FormatMatches(Formatting{Paragraphs: 1}, Formatting{}) {
		t.Error("plain answer vs empty reference: want match")
	}
}

func TestDetectRefusal(t *testing.T) {
	tests := []struct {
		in     string
		phrase string
	}{
		{"I'm sorry, but I can't help with that.", "i can't help"},
		{"I’m unable to answer questions about this.", "i'm unable to"},
		{"As an AI language model, I have no opinions.", "as an ai"},
		{"Sorry, but I   do not have access to the video.", "sorry, but i"},
		{"I APOLOGIZE, BUT that is not possible.", "i apologize, but"},
		{"The key idea is compounding: small gains add up.", ""},
		{"You cannot help but notice the pattern.", ""},
		{"Hawaii can't help being sunny.", ""},
		{strings.Repeat("Real content here. ", 12) + "I cannot help with more.", ""},
		{"", ""},
	}
	for _, tt := range tests {
		phrase, ok := DetectRefusal(tt.in)
		if phrase != tt.phrase || ok != (tt.phrase != "") {
			t.Errorf("DetectRefusal(%q) = %q, %v; want %q", tt.in, phrase, ok, tt.phrase)
		}
	}
}

func TestFindMetaRefs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"In this video, the speaker explains compounding.", []string{"in this video", "the speaker"}},
		{"According to the transcript, the host said the video was long. In the video we see more.",
			[]string{"according to the transcript", "the host", "the video", "in the video"}},
		{"The Transcript’s author", []string{"the transcript"}},
		{"THE   VIDEO shows", []string{"the video"}},
		{"The videos are good; bathe video; the hosting company.", nil},
		{"Compounding means gains build on gains.", nil},
		{"this podcast and this episode", []string{"this podcast", "this episode"}},
	}
	for _, tt := range tests {
		if got := FindMetaRefs(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("FindMetaRefs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCountWordsChars(t *testing.T) {
	if got := CountWords("  one two\nthree\tfour  "); got != 4 {
		t.Errorf("CountWords = %d, want 4", got)
	}
	if got := CountChars("  héllo\n"); got != 5 {
		t.Errorf("CountChars = %d, want 5", got)
	}
	if got := LengthRatio(3, 4); got != 0.75 {
		t.Errorf("LengthRatio(3,4) = %v", got)
	}
	if got := LengthRatio(3, 0); got != 0 {
		t.Errorf("LengthRatio(3,0) = %v, want 0", got)
	}
}

func TestScore(t *testing.T) {
	ref := "**Compounding** means:\n\n- gains build on gains\n- time matters"
	ans := "In this video the speaker says **compounding** means gains build on gains."
	s := Score(ans, ref, false)
	want := Scores{
		Chars:           len(ans),
		Words:           12,
		ReferenceWords:  10,
		LengthRatio:     1.2,
		Format:          Formatting{Bold: 1, Paragraphs: 1},
		ReferenceFormat: Formatting{Bold: 1, Bullets: 2, Paragraphs: 2},
		FormatMatch:     false,
		HitEOS:          false,
		MetaRefs:        []string{"in this video", "the speaker"},
	}
	// c = in this video the speaker says compounding means gains build on gains (12)
	// r = compounding means gains build on gains time matters (8)
	// LCS = compounding means gains build on gains = 6.
	p, r := 6.0/12, 6.0/8
	want.RougeL = Rouge{Precision: p, Recall: r, F1: 2 * p * r / (p + r)}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Score =\n%+v\nwant\n%+v", s, want)
	}
}

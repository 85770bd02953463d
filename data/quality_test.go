package data

import (
	"slices"
	"strings"
	"testing"
)

func TestQualityScore(t *testing.T) {
	q, err := newQualityScorer(QualityConfig{MinAnswerChars: 100, MaxAnswerChars: 400, MinQuestionChars: 10,
		ExtraMetaPatterns: []string{`\bmy channel\b`}})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("Rest helps. ", 10) // 120 chars
	tests := []struct {
		name, question, answer string
		truncated              bool
		score                  float64
		flags                  []string
	}{
		{"plain", "How do I rest?", long, false, 0.6, nil},
		{"formatted", "How do I rest?", "**Rest** matters.\n\n- Sleep well.\n- Move gently.\n\n" + long, false, 1, []string{FlagParagraphs, FlagBold, FlagList}},
		{"short", "How do I rest?", "Rest helps.", false, 0.066, []string{FlagShortAnswer}},
		{"long", "How do I rest?", strings.Repeat(long, 5), false, 0.401, []string{FlagLongAnswer}},
		{"cut by server", "How do I rest?", long, true, 0.18, []string{FlagTruncated}},
		{"cut mid sentence", "How do I rest?", long + "and then you", false, 0.18, []string{FlagTruncated}},
		{"open bold", "How do I rest?", long + "**Key", false, 0.18, []string{FlagTruncated}},
		{"ends in a list", "How do I rest?", long + "\n- sleep\n- walk", false, 0.72, []string{FlagList}},
		{"meta", "How do I rest?", "As I say in this video, " + long, false, 0.24, []string{FlagMetaReference}},
		{"extra meta", "How do I rest?", "On my channel " + long, false, 0.24, []string{FlagMetaReference}},
		{"refusal", "How do I rest?", "I'm sorry, " + long, false, 0, []string{FlagRefusal}},
		{"not covered", "How do I rest?", long + " The transcript does not mention dosing.", false, 0, []string{FlagMetaReference, FlagRefusal}},
		{"short question", "Rest?", long, false, 0, []string{FlagShortQuestion}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := q.score("id", tc.question, tc.answer, tc.truncated)
			if s.Score != tc.score || !slices.Equal(s.Flags, tc.flags) {
				t.Errorf("score = %v flags %v, want %v flags %v", s.Score, s.Flags, tc.score, tc.flags)
			}
		})
	}
	if _, err := newQualityScorer(QualityConfig{ExtraRefusalPatterns: []string{"("}}); err == nil ||
		!strings.Contains(err.Error(), "data.build.quality.extra_refusal_patterns[0]") {
		t.Errorf("bad pattern error = %v", err)
	}
}

package data

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// QualityScore is the score of one question/answer pair, kept in the build
// report. Score is (0.6*Length + 0.4*Formatting), multiplied by 0.3 when
// the answer looks truncated and by 0.4 when it refers to the transcript or
// video, and 0 for a refusal or a too-short question.
type QualityScore struct {
	ID         string   `json:"id"`
	Score      float64  `json:"score"`
	Length     float64  `json:"length"`
	Formatting float64  `json:"formatting"`
	Flags      []string `json:"flags,omitempty"`
	Kept       bool     `json:"kept"`
}

// Quality flags.
const (
	FlagTruncated     = "truncated"
	FlagMetaReference = "meta_reference"
	FlagRefusal       = "refusal"
	FlagShortQuestion = "short_question"
	FlagShortAnswer   = "short_answer"
	FlagLongAnswer    = "long_answer"
	FlagBold          = "bold"
	FlagList          = "list"
	FlagParagraphs    = "paragraphs"
	FlagHeading       = "heading"
)

var (
	boldRE      = regexp.MustCompile(`\*\*[^*\n]+\*\*|__[^_\n]+__`)
	listItemRE  = regexp.MustCompile(`(?m)^\s*(?:[-*+]|\d+[.)])\s+\S`)
	headingRE   = regexp.MustCompile(`(?m)^#{1,6}\s+\S`)
	paraSplitRE = regexp.MustCompile(`\n\s*\n`)

	defaultMetaPatterns = []string{
		`\b(?:the|this|that|my) (?:transcript|video|clip|recording|episode|podcast)s?\b`,
		`\bthe speaker\b`,
		`\b(?:in|from) (?:the )?transcript\b`,
	}
	defaultRefusalPatterns = []string{
		`^\s*(?:i'?m sorry|sorry,|i apologi[sz]e)`,
		`\bas an ai\b`,
		`\bi (?:cannot|can't|am unable to|am not able to|won't) (?:answer|provide|help|give|say)\b`,
		`\b(?:the transcript|the video|it|i) (?:doesn't|does not|didn't|did not) (?:mention|cover|discuss|address|specify|say)\b`,
		`\bnot (?:mentioned|covered|discussed|addressed) in\b`,
		`\bi don't have (?:enough )?information\b`,
	}
)

type qualityScorer struct {
	cfg           QualityConfig
	meta, refusal []*regexp.Regexp
}

func newQualityScorer(cfg QualityConfig) (*qualityScorer, error) {
	q := &qualityScorer{cfg: cfg}
	compile := func(key string, defaults, extra []string) ([]*regexp.Regexp, error) {
		var out []*regexp.Regexp
		for _, p := range defaults {
			out = append(out, regexp.MustCompile("(?i)"+p))
		}
		for i, p := range extra {
			re, err := regexp.Compile("(?i)" + p)
			if err != nil {
				return nil, fmt.Errorf("data.build.quality.%s[%d]: %w", key, i, err)
			}
			out = append(out, re)
		}
		return out, nil
	}
	var err error
	if q.meta, err = compile("extra_meta_patterns", defaultMetaPatterns, cfg.ExtraMetaPatterns); err != nil {
		return nil, err
	}
	if q.refusal, err = compile("extra_refusal_patterns", defaultRefusalPatterns, cfg.ExtraRefusalPatterns); err != nil {
		return nil, err
	}
	return q, nil
}

// formatFeatures reports the markdown features of an answer.
type formatFeatures struct {
	bold, list, paragraphs, heading bool
}

func formatOf(answer string) formatFeatures {
	blocks := 0
	for _, p := range paraSplitRE.Split(strings.TrimSpace(answer), -1) {
		if strings.TrimSpace(p) != "" {
			blocks++
		}
	}
	return formatFeatures{
		bold:       boldRE.MatchString(answer),
		list:       len(listItemRE.FindAllStringIndex(answer, 2)) >= 2,
		paragraphs: blocks >= 2,
		heading:    headingRE.MatchString(answer),
	}
}

// looksTruncated: odd count of ** or ``` markers, or a last line that is
// not a list item and does not end like a sentence.
func looksTruncated(answer string) bool {
	a := strings.TrimSpace(answer)
	if a == "" {
		return true
	}
	if strings.Count(a, "**")%2 == 1 || strings.Count(a, "```")%2 == 1 {
		return true
	}
	last := a
	if i := strings.LastIndexByte(a, '\n'); i >= 0 {
		last = a[i+1:]
	}
	if listItemRE.MatchString(last) || headingRE.MatchString(last) {
		return false
	}
	r, _ := utf8.DecodeLastRuneInString(a)
	return !strings.ContainsRune(".!?)]\"'”’*_`:;…", r)
}

func (q *qualityScorer) score(id, question, answer string, truncated bool) QualityScore {
	s := QualityScore{ID: id}
	n := utf8.RuneCountInString(strings.TrimSpace(answer))
	switch {
	case n < q.cfg.MinAnswerChars:
		s.Length = float64(n) / float64(max(q.cfg.MinAnswerChars, 1))
		s.Flags = append(s.Flags, FlagShortAnswer)
	case q.cfg.MaxAnswerChars > 0 && n > q.cfg.MaxAnswerChars:
		s.Length = float64(q.cfg.MaxAnswerChars) / float64(n)
		s.Flags = append(s.Flags, FlagLongAnswer)
	default:
		s.Length = 1
	}
	f := formatOf(answer)
	if f.paragraphs {
		s.Formatting += 0.4
		s.Flags = append(s.Flags, FlagParagraphs)
	}
	if f.bold {
		s.Formatting += 0.3
		s.Flags = append(s.Flags, FlagBold)
	}
	if f.list {
		s.Formatting += 0.3
		s.Flags = append(s.Flags, FlagList)
	}
	if f.heading {
		s.Flags = append(s.Flags, FlagHeading)
	}
	score := 0.6*s.Length + 0.4*s.Formatting
	if truncated || looksTruncated(answer) {
		score *= 0.3
		s.Flags = append(s.Flags, FlagTruncated)
	}
	if matchAny(q.meta, answer) {
		score *= 0.4
		s.Flags = append(s.Flags, FlagMetaReference)
	}
	if matchAny(q.refusal, answer) {
		score = 0
		s.Flags = append(s.Flags, FlagRefusal)
	}
	if utf8.RuneCountInString(strings.TrimSpace(question)) < q.cfg.MinQuestionChars {
		score = 0
		s.Flags = append(s.Flags, FlagShortQuestion)
	}
	s.Length, s.Formatting, s.Score = round3(s.Length), round3(s.Formatting), round3(score)
	return s
}

func matchAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

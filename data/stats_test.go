package data

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

type wordCounter struct{}

func (wordCounter) CountTokens(s string) (int, error) { return len(strings.Fields(s)), nil }

type failingCounter struct{}

func (failingCounter) CountTokens(string) (int, error) { return 0, errors.New("no vocab") }

const statsChat = `{"messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"What is gout?"},{"role":"assistant","content":"**Gout** is a form of arthritis.\n\n- It flares.\n- It settles."}]}
{"messages":[{"role":"user","content":"How do I prevent gout attacks?"},{"role":"assistant","content":"Drink water."}]}
{"messages":[{"role":"user","content":"How can I prevent gout attacks?"},{"role":"assistant","content":"## Plan\nAvoid beer.\n\nMove daily."}],"variant":"paraphrase"}
{"messages":[{"role":"user","content":"how do i prevent GOUT attacks"},{"role":"assistant","content":"Same answer here."}]}
{"messages":[{"role":"user","content":"How long does plantar fasciitis take to heal?"},{"role":"assistant","content":"Overload."}]}
{"messages":[{"role":"user","content":"How long does it take for plantar fasciitis to heal?"},{"role":"assistant","content":"Tight calves."}]}
`

const statsPairs = `{"id":"a-q01","video_id":"a","split":"train","question":"What is gout?","answer":"x","score":1}
{"id":"a-q02","video_id":"a","split":"train","question":"How long does plantar fasciitis take to heal?","answer":"y","score":1}
{"id":"b-q01","video_id":"b","split":"test","question":"Is running bad for my knees?","answer":"z","score":1}
`

// The expected figures below were counted by hand (see the comments).
func TestStatsMatchHandCounts(t *testing.T) {
	dir := t.TempDir()
	chat, pairs := filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "pairs.jsonl")
	mustWrite(t, chat, statsChat)
	mustWrite(t, pairs, statsPairs)
	st, err := ComputeStats([]string{chat, pairs}, wordCounter{}, DefaultPipelineConfig().Build.Dedup, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f := st.Files[0]
	if f.Records != 6 || f.WithSystem != 1 || f.Variants["paraphrase"] != 1 || len(f.Variants) != 1 {
		t.Errorf("records=%d system=%d variants=%v; want 6, 1, paraphrase=1", f.Records, f.WithSystem, f.Variants)
	}
	// Question lengths 13 30 31 29 45 52; answers 60 12 32 17 9 13; totals
	// (system included) 81 42 63 46 54 65. Nearest-rank percentiles of 6
	// values: p50 is the 3rd, p90 and p99 the 6th.
	checks := []struct {
		name string
		got  *Distribution
		want Distribution
	}{
		{"question chars", &f.QuestionChars, Distribution{6, 13, 30, 52, 52, 52, 33.3}},
		{"answer chars", &f.AnswerChars, Distribution{6, 9, 13, 60, 60, 60, 23.8}},
		{"total chars", &f.TotalChars, Distribution{6, 42, 54, 81, 81, 81, 58.5}},
		// Words: questions 3 6 6 6 8 10; answers 12 2 6 3 1 2; totals 17 8 12 9 9 12.
		{"question tokens", f.QuestionTokens, Distribution{6, 3, 6, 10, 10, 10, 6.5}},
		{"answer tokens", f.AnswerTokens, Distribution{6, 1, 2, 12, 12, 12, 4.3}},
		{"total tokens", f.TotalTokens, Distribution{6, 8, 9, 17, 17, 17, 11.2}},
	}
	for _, c := range checks {
		if c.got == nil || *c.got != c.want {
			t.Errorf("%s = %+v, want %+v", c.name, c.got, c.want)
		}
	}
	// Bold and list: record 1; paragraphs: records 1 and 3; heading: record 3.
	wantFmt := FormattingRates{Answers: 6, Bold: 1, Lists: 1, Paragraphs: 2, Headings: 1,
		BoldRate: 0.167, ListRate: 0.167, ParagraphsRate: 0.333, HeadingRate: 0.167}
	if f.Formatting != wantFmt {
		t.Errorf("formatting = %+v, want %+v", f.Formatting, wantFmt)
	}
	// Record 4 repeats record 2 (exact after normalisation), record 6
	// rewords record 5; the paraphrase variant is not counted.
	if f.ExactDuplicates != 1 || f.NearDuplicates != 1 || f.QuestionsPerVideo != nil || f.Videos != 0 {
		t.Errorf("duplicates exact=%d near=%d, per-video=%v; want 1, 1, none", f.ExactDuplicates, f.NearDuplicates, f.QuestionsPerVideo)
	}
	p := st.Files[1]
	if p.Records != 3 || p.Videos != 2 || *p.QuestionsPerVideo != (Distribution{2, 1, 1, 2, 2, 2, 1.5}) {
		t.Errorf("pairs: records=%d videos=%d per video=%+v; want 3, 2, {2 1 1 2 2 2 1.5} (p50 of [1 2] is the 1st)", p.Records, p.Videos, p.QuestionsPerVideo)
	}
	// Across files: the two questions repeated in pairs.jsonl are leaks.
	if st.Total == nil || st.Total.Records != 9 || st.Total.ExactDuplicates != 3 || st.Total.NearDuplicates != 1 {
		t.Errorf("total = %+v; want 9 records, 3 exact and 1 near duplicates", st.Total)
	}
	var sb strings.Builder
	if err := st.WriteTable(&sb); err != nil {
		t.Fatal(err)
	}
	out := strings.Join(strings.Fields(sb.String()), " ")
	for _, want := range []string{"records 6 system prompt 1 variants paraphrase=1", "question chars 6 13 30 52 52 52 33.3",
		"formatting bold 16.7% lists 16.7% paragraphs 33.3% headings 16.7%", "duplicates exact 1 near 1",
		"videos 2 questions/video min 1 mean 1.5 max 2", "total records 9", "duplicates exact 3 near 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	// Without a counter there are no token figures.
	st2, err := ComputeStats([]string{chat}, nil, DefaultPipelineConfig().Build.Dedup, slog.New(slog.DiscardHandler))
	if err != nil || st2.Files[0].QuestionTokens != nil || st2.Total != nil {
		t.Errorf("no counter: err=%v tokens=%v total=%v", err, st2.Files[0].QuestionTokens, st2.Total)
	}
	if _, err := ComputeStats([]string{chat}, failingCounter{}, DefaultPipelineConfig().Build.Dedup, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "record 1: count tokens: no vocab") {
		t.Errorf("counter error = %v", err)
	}
}

func TestStatsBadInputNamesFileAndLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	mustWrite(t, bad, `{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}`+"\n"+`{"messages":[{"role":"user","content":"only a question"}]}`+"\n")
	_, err := ComputeStats([]string{bad}, nil, DefaultPipelineConfig().Build.Dedup, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), bad+" line 2") || !strings.Contains(err.Error(), "needs a user and an assistant turn") {
		t.Errorf("error = %v", err)
	}
	_, err = ComputeStats([]string{filepath.Join(dir, "missing.jsonl")}, nil, DefaultPipelineConfig().Build.Dedup, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Errorf("missing file error = %v", err)
	}
}

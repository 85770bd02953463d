package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/fungtrain/fungtrain/internal/jsonl"
)

// TokenCounter counts the tokens of a text with a model's tokenizer.
type TokenCounter interface {
	CountTokens(text string) (int, error)
}

// Distribution summarises lengths. Percentiles use the nearest-rank
// method: P50 is the smallest value with at least half the values at or
// below it.
type Distribution struct {
	Count int     `json:"count"`
	Min   int     `json:"min"`
	P50   int     `json:"p50"`
	P90   int     `json:"p90"`
	P99   int     `json:"p99"`
	Max   int     `json:"max"`
	Mean  float64 `json:"mean"`
}

func distributionOf(v []int) Distribution {
	if len(v) == 0 {
		return Distribution{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	sum := 0
	for _, x := range s {
		sum += x
	}
	rank := func(p float64) int { return s[max(int(math.Ceil(p/100*float64(len(s))))-1, 0)] }
	return Distribution{Count: len(s), Min: s[0], P50: rank(50), P90: rank(90), P99: rank(99), Max: s[len(s)-1],
		Mean: math.Round(float64(sum)/float64(len(s))*10) / 10}
}

// FormattingRates counts answers with markdown features; the rates are
// fractions of the answers.
type FormattingRates struct {
	Answers        int     `json:"answers"`
	Bold           int     `json:"bold"`
	Lists          int     `json:"lists"`
	Paragraphs     int     `json:"paragraphs"`
	Headings       int     `json:"headings"`
	BoldRate       float64 `json:"bold_rate"`
	ListRate       float64 `json:"list_rate"`
	ParagraphsRate float64 `json:"paragraphs_rate"`
	HeadingRate    float64 `json:"heading_rate"`
}

// FileStats are the statistics of one file, or of all files together.
type FileStats struct {
	File       string         `json:"file"`
	Records    int            `json:"records"`
	WithSystem int            `json:"with_system_prompt"`
	Variants   map[string]int `json:"variants"`

	QuestionChars Distribution `json:"question_chars"`
	AnswerChars   Distribution `json:"answer_chars"`
	TotalChars    Distribution `json:"total_chars"`
	// Token lengths, only with a token counter. Total is the sum over all
	// message contents, without chat-template tokens.
	QuestionTokens *Distribution `json:"question_tokens,omitempty"`
	AnswerTokens   *Distribution `json:"answer_tokens,omitempty"`
	TotalTokens    *Distribution `json:"total_tokens,omitempty"`

	Formatting FormattingRates `json:"formatting"`
	// Videos and QuestionsPerVideo need records with a video_id (answers,
	// pairs, questions files); chat files have none.
	Videos            int           `json:"videos"`
	QuestionsPerVideo *Distribution `json:"questions_per_video,omitempty"`
	// Duplicates among the questions of non-variant records, found as in
	// the build stage. Across files in the total: a leak between splits
	// shows here.
	ExactDuplicates int `json:"exact_duplicates"`
	NearDuplicates  int `json:"near_duplicates"`
}

// Stats are the statistics of `fungtrain data stats`.
type Stats struct {
	Files []FileStats `json:"files"`
	// Total is set when more than one file is given.
	Total *FileStats `json:"total,omitempty"`
}

// statRecord is what stats reads from any record type.
type statRecord struct {
	question, answer, system, variant, videoID string
	total                                      []string // every message content
	hasAnswer                                  bool
}

// parseStatRecord reads a chat example ({"messages": [...]}) or a record
// with question (and answer) fields: questions, answers or pairs.
func parseStatRecord(line []byte) (statRecord, error) {
	var raw struct {
		Messages []ChatMessage `json:"messages"`
		Variant  string        `json:"variant"`
		VideoID  string        `json:"video_id"`
		Question *string       `json:"question"`
		Answer   *string       `json:"answer"`
	}
	if err := jsonl.Check(line); err != nil {
		return statRecord{}, err
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return statRecord{}, err
	}
	r := statRecord{variant: raw.Variant, videoID: raw.VideoID}
	switch {
	case raw.Messages != nil:
		for _, m := range raw.Messages {
			r.total = append(r.total, m.Content)
			switch m.Role {
			case "system":
				r.system = m.Content
			case "user":
				r.question = m.Content
			case "assistant":
				r.answer, r.hasAnswer = m.Content, true
			}
		}
		if r.question == "" || !r.hasAnswer {
			return r, errors.New(`"messages" needs a user and an assistant turn`)
		}
	case raw.Question != nil:
		r.question = *raw.Question
		r.total = []string{r.question}
		if raw.Answer != nil {
			r.answer, r.hasAnswer = *raw.Answer, true
			r.total = append(r.total, r.answer)
		}
	default:
		return r, errors.New(`want "messages" or "question"`)
	}
	return r, nil
}

// readStatRecords reads the records of one file. A last line without a line
// end counts when it parses (a file saved without a final newline) and is
// skipped with a warning when it does not (a writer still at work).
func readStatRecords(path string, log *slog.Logger) ([]statRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	defer f.Close()
	var recs []statRecord
	lr := jsonl.NewReader(f, maxLine)
	for {
		l, err := lr.Next()
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if len(l.Text) == 0 {
			continue
		}
		r, err := parseStatRecord(l.Text)
		if err != nil && !l.Ended {
			log.Warn("ignoring a torn last line", "file", path, "bytes", l.Size)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s line %d: %w", path, l.Number, err)
		}
		recs = append(recs, r)
	}
}

// ComputeStats reads the files and computes their statistics. tc may be
// nil: then only character lengths are reported.
func ComputeStats(paths []string, tc TokenCounter, dedup DedupConfig, log *slog.Logger) (*Stats, error) {
	if len(paths) == 0 {
		return nil, errors.New("no files given")
	}
	st := &Stats{}
	var all []statRecord
	for _, p := range paths {
		recs, err := readStatRecords(p, log)
		if err != nil {
			return nil, err
		}
		fs, err := statsOf(p, recs, tc, dedup)
		if err != nil {
			return nil, err
		}
		st.Files = append(st.Files, fs)
		all = append(all, recs...)
	}
	if len(paths) > 1 {
		t, err := statsOf("total", all, tc, dedup)
		if err != nil {
			return nil, err
		}
		st.Total = &t
	}
	return st, nil
}

func statsOf(name string, recs []statRecord, tc TokenCounter, dedup DedupConfig) (FileStats, error) {
	fs := FileStats{File: name, Records: len(recs), Variants: map[string]int{}}
	var qc, ac, tcs, qt, at, tt []int
	perVideo := map[string]int{}
	var items []DedupItem
	for i, r := range recs {
		if r.system != "" {
			fs.WithSystem++
		}
		if r.variant != "" {
			fs.Variants[r.variant]++
		} else {
			items = append(items, DedupItem{ID: fmt.Sprint(i), Text: r.question})
		}
		if r.videoID != "" {
			perVideo[r.videoID]++
		}
		total := 0
		for _, c := range r.total {
			total += utf8.RuneCountInString(c)
		}
		qc = append(qc, utf8.RuneCountInString(r.question))
		tcs = append(tcs, total)
		if r.hasAnswer {
			ac = append(ac, utf8.RuneCountInString(r.answer))
			f := formatOf(r.answer)
			fs.Formatting.Answers++
			fs.Formatting.Bold += b2i(f.bold)
			fs.Formatting.Lists += b2i(f.list)
			fs.Formatting.Paragraphs += b2i(f.paragraphs)
			fs.Formatting.Headings += b2i(f.heading)
		}
		if tc != nil {
			q, err := tc.CountTokens(r.question)
			if err != nil {
				return fs, fmt.Errorf("%s record %d: count tokens: %w", name, i+1, err)
			}
			qt = append(qt, q)
			sum := 0
			for _, c := range r.total {
				n, err := tc.CountTokens(c)
				if err != nil {
					return fs, fmt.Errorf("%s record %d: count tokens: %w", name, i+1, err)
				}
				sum += n
			}
			tt = append(tt, sum)
			if r.hasAnswer {
				a, err := tc.CountTokens(r.answer)
				if err != nil {
					return fs, fmt.Errorf("%s record %d: count tokens: %w", name, i+1, err)
				}
				at = append(at, a)
			}
		}
	}
	fs.QuestionChars, fs.AnswerChars, fs.TotalChars = distributionOf(qc), distributionOf(ac), distributionOf(tcs)
	if tc != nil {
		q, a, t := distributionOf(qt), distributionOf(at), distributionOf(tt)
		fs.QuestionTokens, fs.AnswerTokens, fs.TotalTokens = &q, &a, &t
	}
	if n := fs.Formatting.Answers; n > 0 {
		rate := func(k int) float64 { return math.Round(float64(k)/float64(n)*1000) / 1000 }
		fs.Formatting.BoldRate, fs.Formatting.ListRate = rate(fs.Formatting.Bold), rate(fs.Formatting.Lists)
		fs.Formatting.ParagraphsRate, fs.Formatting.HeadingRate = rate(fs.Formatting.Paragraphs), rate(fs.Formatting.Headings)
	}
	if len(perVideo) > 0 {
		fs.Videos = len(perVideo)
		var per []int
		for _, n := range perVideo {
			per = append(per, n)
		}
		d := distributionOf(per)
		fs.QuestionsPerVideo = &d
	}
	_, pairs := Dedup(items, dedup)
	for _, p := range pairs {
		if p.Kind == "exact" {
			fs.ExactDuplicates++
		} else {
			fs.NearDuplicates++
		}
	}
	return fs, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// WriteTable writes the statistics as aligned text.
func (s *Stats) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	all := s.Files
	if s.Total != nil {
		all = append(slices.Clone(all), *s.Total)
	}
	for i, f := range all {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "%s\n", f.File)
		fmt.Fprintf(tw, "records\t%d\tsystem prompt\t%d\tvariants\t%s\t\n", f.Records, f.WithSystem, variantList(f.Variants))
		if f.QuestionsPerVideo != nil {
			q := f.QuestionsPerVideo
			fmt.Fprintf(tw, "videos\t%d\tquestions/video min\t%d\tmean\t%.1f\tmax\t%d\t\n", f.Videos, q.Min, q.Mean, q.Max)
		}
		fmt.Fprintf(tw, "length\tcount\tmin\tp50\tp90\tp99\tmax\tmean\t\n")
		row := func(name string, d *Distribution) {
			if d == nil {
				return
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t\n", name, d.Count, d.Min, d.P50, d.P90, d.P99, d.Max, d.Mean)
		}
		row("question chars", &f.QuestionChars)
		row("answer chars", &f.AnswerChars)
		row("total chars", &f.TotalChars)
		row("question tokens", f.QuestionTokens)
		row("answer tokens", f.AnswerTokens)
		row("total tokens", f.TotalTokens)
		fr := f.Formatting
		fmt.Fprintf(tw, "formatting\tbold\t%.1f%%\tlists\t%.1f%%\tparagraphs\t%.1f%%\theadings\t%.1f%%\t\n",
			fr.BoldRate*100, fr.ListRate*100, fr.ParagraphsRate*100, fr.HeadingRate*100)
		fmt.Fprintf(tw, "duplicates\texact\t%d\tnear\t%d\t\n", f.ExactDuplicates, f.NearDuplicates)
	}
	return tw.Flush()
}

func variantList(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}

package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
)

// WriteJSON writes r as indented JSON to path atomically: it writes a
// temporary file in the same directory and renames it over path, so a
// reader never sees a partial file.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("eval: encode %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'))
}

// WriteMarkdown writes [Result.Markdown] to path atomically.
func (r *Result) WriteMarkdown(path string) error {
	return atomicfile.WriteFile(path, []byte(r.Markdown()))
}

// ReadJSON reads a Result written by [Result.WriteJSON].
func ReadJSON(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("eval: decode %s: %w", path, err)
	}
	return &r, nil
}

// Markdown renders r as a markdown document: the header, the loss, a
// summary table comparing base and adapter, then every question with the
// reference and the two answers side by side in a table.
func (r *Result) Markdown() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Evaluation: %s\n\n", mdInline(r.Model))
	fmt.Fprintf(&b, "- Model: `%s`\n", mdCode(r.Model))
	if r.Adapter != "" {
		fmt.Fprintf(&b, "- Adapter: `%s`\n", mdCode(r.Adapter))
	}
	fmt.Fprintf(&b, "- Split: %s, %d questions\n", mdInline(r.Split), r.N)
	if r.Created != "" {
		fmt.Fprintf(&b, "- Created: %s\n", r.Created)
	}
	if r.JudgeModel != "" {
		fmt.Fprintf(&b, "- Judge: `%s`\n", mdCode(r.JudgeModel))
	}
	b.WriteString("\n## Summary\n\n")
	for i, row := range SummaryRows(r) {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", row[0], row[1], row[2])
		if i == 0 {
			b.WriteString("| --- | ---: | ---: |\n")
		}
	}
	b.WriteString("\n## Samples\n")
	for i, s := range r.Samples {
		fmt.Fprintf(&b, "\n### %d. %s\n\n", i+1, mdInline(s.ID))
		b.WriteString(mdQuote("Question", s.Question))
		b.WriteString(mdQuote("Reference", s.Reference))
		b.WriteString("| | Base | Adapter |\n| --- | --- | --- |\n")
		fmt.Fprintf(&b, "| Answer | %s | %s |\n", mdCell(s.Base, answerText), mdCell(s.Adapter, answerText))
		for _, m := range sampleMetrics {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", m.name, mdCell(s.Base, m.f), mdCell(s.Adapter, m.f))
		}
	}
	return b.String()
}

// SummaryRows returns the rows of the summary table, header first:
// metric name, base value, adapter value, formatted for display ("–" where
// a side or a number is missing). The report package renders the same rows.
func SummaryRows(r *Result) [][3]string {
	rows := [][3]string{{"Metric", "Base", "Adapter"}}
	loss := func(l *LossStats, f func(*LossStats) string) string {
		if l == nil {
			return "–"
		}
		return f(l)
	}
	lossRows := []struct {
		name string
		f    func(*LossStats) string
	}{
		{"Loss", func(l *LossStats) string { return fmt.Sprintf("%.4f", l.Loss) }},
		{"Perplexity", func(l *LossStats) string { return fmt.Sprintf("%.3f", l.Perplexity) }},
		{"Loss tokens", func(l *LossStats) string { return fmt.Sprintf("%d", l.Tokens) }},
	}
	if r.Loss.Base != nil || r.Loss.Adapter != nil {
		for _, lr := range lossRows {
			rows = append(rows, [3]string{lr.name, loss(r.Loss.Base, lr.f), loss(r.Loss.Adapter, lr.f)})
		}
	}
	side := func(s *SideSummary, f func(*SideSummary) string) string {
		if s == nil {
			return "–"
		}
		return f(s)
	}
	pct := func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }
	sumRows := []struct {
		name string
		f    func(*SideSummary) string
	}{
		{"Answers", func(s *SideSummary) string { return fmt.Sprintf("%d", s.N) }},
		{"Mean ROUGE-L F1", func(s *SideSummary) string { return fmt.Sprintf("%.3f", s.MeanRougeL) }},
		{"Mean length ratio (words)", func(s *SideSummary) string { return fmt.Sprintf("%.2f", s.MeanLengthRatio) }},
		{"Mean words", func(s *SideSummary) string { return fmt.Sprintf("%.1f", s.MeanWords) }},
		{"Formatting matches reference", func(s *SideSummary) string { return pct(s.FormatRate) }},
		{"Uses bold", func(s *SideSummary) string { return pct(s.BoldRate) }},
		{"Uses lists", func(s *SideSummary) string { return pct(s.ListRate) }},
		{"Ended with EOS", func(s *SideSummary) string { return pct(s.EOSRate) }},
		{"Refusals", func(s *SideSummary) string { return pct(s.RefusalRate) }},
		{"Meta-references", func(s *SideSummary) string { return pct(s.MetaRefRate) }},
		{"Mean judge score", func(s *SideSummary) string {
			if s.MeanJudge == nil {
				return "–"
			}
			return fmt.Sprintf("%.2f (n=%d)", *s.MeanJudge, s.JudgeN)
		}},
		{"Generation tokens/sec", func(s *SideSummary) string { return fmt.Sprintf("%.1f", s.TokensPerSec) }},
	}
	for _, sr := range sumRows {
		rows = append(rows, [3]string{sr.name, side(r.Summary.Base, sr.f), side(r.Summary.Adapter, sr.f)})
	}
	return rows
}

// SampleMetric is one per-answer metric row, as shown under each question.
type SampleMetric struct {
	Name  string
	Value func(*ScoredGeneration) string
}

// SampleMetrics returns the per-answer metric rows shown under each
// question in the markdown and in the HTML report.
func SampleMetrics() []SampleMetric {
	out := make([]SampleMetric, len(sampleMetrics))
	for i, m := range sampleMetrics {
		out[i] = SampleMetric{Name: m.name, Value: m.f}
	}
	return out
}

var sampleMetrics = []struct {
	name string
	f    func(*ScoredGeneration) string
}{
	{"ROUGE-L F1", func(g *ScoredGeneration) string { return fmt.Sprintf("%.3f", g.Scores.RougeL.F1) }},
	{"Words (ratio)", func(g *ScoredGeneration) string {
		return fmt.Sprintf("%d (%.2f)", g.Scores.Words, g.Scores.LengthRatio)
	}},
	{"Format (bold/bullets/numbered/paragraphs)", func(g *ScoredGeneration) string {
		f := g.Scores.Format
		m := "matches"
		if !g.Scores.FormatMatch {
			m = "differs"
		}
		return fmt.Sprintf("%d/%d/%d/%d, %s", f.Bold, f.Bullets, f.Numbered, f.Paragraphs, m)
	}},
	{"Stop", func(g *ScoredGeneration) string {
		if g.HitEOS {
			return fmt.Sprintf("EOS after %d tokens", g.Tokens)
		}
		return fmt.Sprintf("max tokens (%d)", g.Tokens)
	}},
	{"Refusal", func(g *ScoredGeneration) string {
		if g.Scores.Refusal {
			return fmt.Sprintf("yes (%q)", g.Scores.RefusalPhrase)
		}
		return "no"
	}},
	{"Meta-references", func(g *ScoredGeneration) string {
		if len(g.Scores.MetaRefs) == 0 {
			return "none"
		}
		return strings.Join(g.Scores.MetaRefs, ", ")
	}},
	{"Judge", func(g *ScoredGeneration) string {
		switch {
		case g.Judge != nil:
			return fmt.Sprintf("%.1f (style %d, faithfulness %d)", g.Judge.Score, g.Judge.Style, g.Judge.Faithfulness)
		case g.JudgeError != "":
			return "error"
		}
		return "–"
	}},
}

func answerText(g *ScoredGeneration) string { return g.Text }

// mdCell renders f(g) as a markdown table cell: "–" for a missing side,
// HTML-escaped, pipes escaped and newlines as <br>.
func mdCell(g *ScoredGeneration, f func(*ScoredGeneration) string) string {
	if g == nil {
		return "–"
	}
	s := strings.TrimSpace(f(g))
	s = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "|", "\\|", "\r\n", "<br>", "\n", "<br>").Replace(s)
	if s == "" {
		return "*(empty)*"
	}
	return s
}

// mdQuote renders a labelled block quote.
func mdQuote(label, text string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s:**\n\n", label)
	for line := range strings.SplitSeq(strings.TrimSpace(strings.ReplaceAll(text, "\r\n", "\n")), "\n") {
		line = strings.TrimRight(strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(line), " \t")
		if line == "" {
			b.WriteString(">\n")
			continue
		}
		b.WriteString("> " + line + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// mdInline makes s safe on one markdown line.
func mdInline(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}

// mdCode makes s safe inside an inline code span.
func mdCode(s string) string {
	return strings.NewReplacer("`", "'", "\n", " ", "\r", " ").Replace(s)
}

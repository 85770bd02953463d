package report

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fungtrain/fungtrain/eval"
)

// Options configure [Build].
type Options struct {
	// RunDir is the run directory to report on.
	RunDir string
	// EvalPath is an eval.json to include; empty means RunDir/eval.json if
	// it exists, else no eval section.
	EvalPath string
	// Version is the fungtrain version written in the footer.
	Version string
	// Generated is the time written in the footer; zero omits it, which
	// keeps the output a pure function of the inputs.
	Generated time.Time

	// extraHead is raw HTML appended to <head>; only tests set it, to prove
	// that the browser test catches console errors.
	extraHead template.HTML
}

//go:embed report.html.tmpl
var pageTemplate string

var page = template.Must(template.New("report").Parse(pageTemplate))

// Build renders the report of opts.RunDir as one self-contained HTML page:
// no scripts, no external resources (a Content-Security-Policy forbids
// them), charts as inline SVG.
func Build(opts Options) ([]byte, error) {
	run, err := LoadRun(opts.RunDir)
	if err != nil {
		return nil, err
	}
	var res *eval.Result
	evalPath := opts.EvalPath
	if evalPath == "" {
		p := filepath.Join(opts.RunDir, EvalFile)
		if _, err := os.Stat(p); err == nil {
			evalPath = p
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("report: %w", err)
		}
	}
	if evalPath != "" {
		if res, err = eval.ReadJSON(evalPath); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
	}
	v := newView(run, res, opts)
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("report: render: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteFile writes data to path atomically (temporary file and rename).
func WriteFile(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	return nil
}

// view is what the template renders.
type view struct {
	Title     string
	RunName   string
	RunDir    string
	Subtitle  string
	Cards     []card
	Charts    []template.HTML
	Notes     []string
	Meta      []kv
	DataHash  []kv
	Config    []kv
	Summary   []kv
	YAML      string
	HasYAML   bool
	Eval      *evalView
	Version   string
	Generated string
	ExtraHead template.HTML
}

type card struct{ Label, Value, Sub string }

type kv struct{ Key, Value string }

type evalView struct {
	Header  []kv
	Rows    [][3]string
	Samples []sampleView
}

type sampleView struct {
	Index               int
	ID                  string
	Question, Reference string
	Base, Adapter       *answerView
}

type answerView struct {
	Text    string
	Metrics []kv
}

func newView(r *Run, res *eval.Result, opts Options) *view {
	name := filepath.Base(filepath.Clean(r.Dir))
	v := &view{
		Title:     "fungtrain report — " + name,
		RunName:   name,
		RunDir:    r.Dir,
		YAML:      r.Config,
		HasYAML:   r.HasConfig,
		Version:   opts.Version,
		ExtraHead: opts.extraHead,
	}
	if !opts.Generated.IsZero() {
		v.Generated = opts.Generated.UTC().Format(time.RFC3339)
	}
	var sub []string
	if m := r.Metadata; m != nil {
		if model := configString(m.Config, "model"); model != "" {
			sub = append(sub, "model "+model)
		}
		if m.Timestamp != "" {
			sub = append(sub, "started "+m.Timestamp)
		}
		if m.Backend != "" {
			sub = append(sub, "backend "+m.Backend)
		}
	}
	v.Subtitle = strings.Join(sub, " · ")
	v.Cards = cards(r)
	v.Charts = charts(r)
	if r.Summary == nil {
		v.Notes = append(v.Notes, SummaryFile+" not found: the run is still going or was interrupted; figures come from "+MetricsFile+".")
	}
	if r.IncompleteLastLine {
		v.Notes = append(v.Notes, "The last line of "+MetricsFile+" is incomplete (being written, or the trainer stopped mid-write) and was skipped.")
	}
	if r.SkippedLines > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("%d line(s) of %s with an unknown type were skipped.", r.SkippedLines, MetricsFile))
	}
	v.Summary = rawRows(r.SummaryFields, nil)
	if r.Metadata != nil {
		v.Meta = rawRows(r.MetadataFields, map[string]bool{"config": true, "data_sha256": true})
		for _, k := range sortedKeys(r.Metadata.DataSHA256) {
			v.DataHash = append(v.DataHash, kv{k, r.Metadata.DataSHA256[k]})
		}
		v.Config = flatten("", r.Metadata.Config, nil)
	}
	if res != nil {
		v.Eval = newEvalView(res)
	}
	return v
}

// cards are the headline figures, from summary.json where present and
// from the metrics otherwise.
func cards(r *Run) []card {
	s := r.Summary
	if s == nil {
		s = &Summary{}
	}
	var lastTrain *TrainPoint
	if len(r.Train) > 0 {
		lastTrain = &r.Train[len(r.Train)-1]
	}
	finalTrain := s.FinalTrainLoss
	if finalTrain == nil && lastTrain != nil {
		finalTrain = &lastTrain.Loss
	}
	finalVal, bestVal, bestStep, initVal := s.FinalValLoss, s.BestValLoss, s.BestStep, s.InitialValLoss
	if len(r.Evals) > 0 {
		if finalVal == nil {
			finalVal = &r.Evals[len(r.Evals)-1].ValLoss
		}
		if bestVal == nil {
			best := r.Evals[0]
			for _, e := range r.Evals {
				if e.ValLoss < best.ValLoss {
					best = e
				}
			}
			bestVal, bestStep = &best.ValLoss, &best.Step
		}
		if initVal == nil && r.Evals[0].Step == 0 {
			initVal = &r.Evals[0].ValLoss
		}
	}
	steps := s.Steps
	if steps == nil && lastTrain != nil {
		steps = &lastTrain.Step
	}
	tokens := s.TrainedTokens
	if tokens == nil && lastTrain != nil {
		tokens = lastTrain.TrainedTokens
	}
	var cs []card
	cs = append(cs, card{"Final train loss", fmtPtr(finalTrain, 4), ""})
	valSub := ""
	if initVal != nil && finalVal != nil && *initVal != 0 {
		valSub = fmt.Sprintf("from %s (%+.1f%%)", fmtNum(*initVal, 4), 100*(*finalVal-*initVal) / *initVal)
	}
	cs = append(cs, card{"Final val loss", fmtPtr(finalVal, 4), valSub})
	bestSub := ""
	if bestStep != nil {
		bestSub = "at step " + strconv.Itoa(*bestStep)
	}
	cs = append(cs, card{"Best val loss", fmtPtr(bestVal, 4), bestSub})
	cs = append(cs, card{"Steps", fmtIntPtr(steps), ""})
	tokSub := ""
	switch {
	case s.TrainedPerSec != nil:
		tokSub = fmtNum(*s.TrainedPerSec, 1) + " trained tokens/s"
	case s.TokensPerSec != nil:
		tokSub = fmtNum(*s.TokensPerSec, 1) + " tokens/s"
	}
	cs = append(cs, card{"Trained tokens", fmtInt64Ptr(tokens), tokSub})
	if s.Seconds != nil {
		cs = append(cs, card{"Wall time", fmtDuration(*s.Seconds), ""})
	}
	peak := s.PeakMemoryGB
	if peak == nil {
		for _, p := range r.Train {
			if p.PeakMemoryGB != nil && (peak == nil || *p.PeakMemoryGB > *peak) {
				peak = p.PeakMemoryGB
			}
		}
	}
	if peak != nil {
		cs = append(cs, card{"Peak memory", fmtNum(*peak, 2) + " GB", ""})
	}
	return cs
}

// charts renders the four charts of the page.
func charts(r *Run) []template.HTML {
	series := func(name, label string, get func(TrainPoint) *float64) Series {
		s := Series{Name: name, Label: label}
		for _, p := range r.Train {
			if y := get(p); y != nil {
				s.Points = append(s.Points, Point{float64(p.Step), *y})
			}
		}
		return s
	}
	val := Series{Name: "val", Label: "validation loss", Markers: true}
	if r.Summary != nil && r.Summary.InitialValLoss != nil && (len(r.Evals) == 0 || r.Evals[0].Step > 0) {
		val.Points = append(val.Points, Point{0, *r.Summary.InitialValLoss})
	}
	for _, e := range r.Evals {
		val.Points = append(val.Points, Point{float64(e.Step), e.ValLoss})
	}
	cs := []Chart{
		{ID: "chart-loss", Title: "Loss", XLabel: "step", YLabel: "loss (nats/token)", Series: []Series{
			series("train", "train loss", func(p TrainPoint) *float64 { return &p.Loss }), val,
		}},
		{ID: "chart-lr", Title: "Learning rate", XLabel: "step", YLabel: "learning rate", Series: []Series{
			series("lr", "learning rate", func(p TrainPoint) *float64 { return p.LR }),
		}},
		{ID: "chart-throughput", Title: "Throughput", XLabel: "step", YLabel: "tokens / second", Series: []Series{
			series("tokens_per_sec", "tokens/sec", func(p TrainPoint) *float64 { return p.TokensPerSec }),
		}},
		{ID: "chart-memory", Title: "Memory", XLabel: "step", YLabel: "GB", Series: []Series{
			series("peak_memory_gb", "peak", func(p TrainPoint) *float64 { return p.PeakMemoryGB }),
			{Name: "active_memory_gb", Label: "active", Dashed: true,
				Points: series("", "", func(p TrainPoint) *float64 { return p.ActiveMemoryGB }).Points},
		}},
	}
	out := make([]template.HTML, len(cs))
	for i, c := range cs {
		// The SVG is built from escaped strings and numbers only.
		out[i] = template.HTML(c.SVG())
	}
	return out
}

func newEvalView(res *eval.Result) *evalView {
	ev := &evalView{Rows: eval.SummaryRows(res)}
	add := func(k, v string) {
		if v != "" {
			ev.Header = append(ev.Header, kv{k, v})
		}
	}
	add("Model", res.Model)
	add("Adapter", res.Adapter)
	add("Split", res.Split)
	add("Questions", strconv.Itoa(res.N))
	add("Created", res.Created)
	add("Judge", res.JudgeModel)
	if len(res.Generation) > 0 {
		b, _ := json.Marshal(res.Generation)
		add("Generation", string(b))
	}
	metrics := eval.SampleMetrics()
	answer := func(g *eval.ScoredGeneration) *answerView {
		if g == nil {
			return nil
		}
		a := &answerView{Text: g.Text}
		for _, m := range metrics {
			a.Metrics = append(a.Metrics, kv{m.Name, m.Value(g)})
		}
		return a
	}
	for i, s := range res.Samples {
		ev.Samples = append(ev.Samples, sampleView{
			Index: i + 1, ID: s.ID, Question: s.Question, Reference: s.Reference,
			Base: answer(s.Base), Adapter: answer(s.Adapter),
		})
	}
	return ev
}

// rawRows lists the top-level fields of a JSON object for display, known
// order being alphabetical; skip names fields shown elsewhere.
func rawRows(fields map[string]json.RawMessage, skip map[string]bool) []kv {
	var rows []kv
	for _, k := range sortedKeys(fields) {
		if !skip[k] {
			rows = append(rows, kv{k, jsonText(fields[k])})
		}
	}
	return rows
}

// flatten turns a nested config into dotted-key rows ("lora.rank"),
// sorted by key; lists of scalars stay on one row.
func flatten(prefix string, v any, rows []kv) []kv {
	switch t := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(t) {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			rows = flatten(key, t[k], rows)
		}
		if len(t) == 0 && prefix != "" {
			rows = append(rows, kv{prefix, "{}"})
		}
	case []any:
		scalar := true
		for _, e := range t {
			switch e.(type) {
			case map[string]any, []any:
				scalar = false
			}
		}
		if scalar {
			b, _ := json.Marshal(t)
			rows = append(rows, kv{prefix, string(b)})
			break
		}
		for i, e := range t {
			rows = flatten(fmt.Sprintf("%s[%d]", prefix, i), e, rows)
		}
	case string:
		rows = append(rows, kv{prefix, t})
	case nil:
		rows = append(rows, kv{prefix, "null"})
	default:
		rows = append(rows, kv{prefix, fmt.Sprint(t)})
	}
	return rows
}

// configString returns config[key] when it is a string.
func configString(config map[string]any, key string) string {
	s, _ := config[key].(string)
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := slices.Sorted(maps.Keys(m))
	return keys
}

// fmtNum formats v with up to prec significant decimals, trimming zeros.
func fmtNum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	if v != 0 && math.Abs(v) < 1e-3 {
		return strconv.FormatFloat(v, 'e', 2, 64)
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func fmtPtr(v *float64, prec int) string {
	if v == nil {
		return "–"
	}
	return fmtNum(*v, prec)
}

func fmtIntPtr(v *int) string {
	if v == nil {
		return "–"
	}
	return groupDigits(int64(*v))
}

func fmtInt64Ptr(v *int64) string {
	if v == nil {
		return "–"
	}
	return groupDigits(*v)
}

// groupDigits writes n with comma thousands separators.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString(",")
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtDuration(sec float64) string {
	d := time.Duration(sec * float64(time.Second)).Round(time.Second)
	return d.String()
}

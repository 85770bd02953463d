package report

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestLoadRun(t *testing.T) {
	dir := writeSyntheticRun(t, synthOpts{steps: 100, evalEvery: 20, extraLines: []string{
		`{"type":"checkpoint","step":50,"path":"adapters/0000050.safetensors"}`,
		``,
		`{"type":"train","step":50,"loss":9.5}`, // a resumed run re-reports step 50: last wins
	}})
	r, err := LoadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Train) != 20 || len(r.Evals) != 6 {
		t.Fatalf("train=%d evals=%d, want 20 and 6", len(r.Train), len(r.Evals))
	}
	for i, p := range r.Train {
		if p.Step != 5*(i+1) {
			t.Fatalf("train[%d].Step = %d: not sorted", i, p.Step)
		}
	}
	p50 := r.Train[9]
	if p50.Step != 50 || p50.Loss != 9.5 || p50.LR != nil {
		t.Errorf("step 50 = %+v, want the later line", p50)
	}
	p5 := r.Train[0]
	if p5.LR == nil || *p5.LR != 2e-4*5/20 || p5.TrainedTokens == nil || *p5.TrainedTokens != 4100 || p5.Time != "2025-11-20T09:30:05Z" {
		t.Errorf("step 5 = %+v", p5)
	}
	if r.Evals[0].Step != 0 || r.Evals[5].Step != 100 || r.Evals[0].ValTokens == nil || *r.Evals[0].ValTokens != 5000 {
		t.Errorf("evals = %+v", r.Evals)
	}
	if r.SkippedLines != 1 {
		t.Errorf("SkippedLines = %d, want 1", r.SkippedLines)
	}
	if r.Summary == nil || *r.Summary.Steps != 100 || *r.Summary.TrainedTokens != 82000 {
		t.Errorf("summary = %+v", r.Summary)
	}
	if r.Metadata == nil || *r.Metadata.Seed != 42 || r.Metadata.Backend != "cpu" || len(r.Metadata.DataSHA256) != 2 {
		t.Errorf("metadata = %+v", r.Metadata)
	}
	if !r.HasConfig || !strings.HasPrefix(r.Config, "# resolved config\n") {
		t.Errorf("config = %q", r.Config)
	}
}

func TestLoadRunErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"no metrics", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, MetricsFile)) },
			"metrics.jsonl not found"},
		{"empty metrics", func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, MetricsFile), "\n\n") },
			"metrics.jsonl has no train or eval lines"},
		{"malformed line", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, MetricsFile), "{\"type\":\"train\",\"step\":1,\"loss\":2}\n\n{\"type\":\"train\",\"step\":2,\n")
		}, "metrics.jsonl:3: malformed line"},
		{"wrong type", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, MetricsFile), "{\"type\":\"train\",\"step\":\"one\",\"loss\":2}\n")
		}, "metrics.jsonl:1: malformed line"},
		{"malformed line before a complete last line", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, MetricsFile), "{\"type\":\"train\",\"step\":1,\"loss\":2}\n{\"type\":\n{\"type\":\"train\",\"step\":2,\"loss\":2}")
		}, "metrics.jsonl:2: malformed line"},
		{"train without loss", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, MetricsFile), "{\"type\":\"train\",\"step\":1,\"loss\":2}\n{\"type\":\"train\",\"step\":2}\n")
		}, `metrics.jsonl:2: train line needs "step" and "loss"`},
		{"eval without val_loss", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, MetricsFile), "{\"type\":\"eval\",\"step\":2,\"val_ppl\":3}\n")
		}, `metrics.jsonl:1: eval line needs "step" and "val_loss"`},
		{"bad summary", func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, SummaryFile), "{") },
			"summary.json: unexpected end of JSON input"},
		{"bad metadata", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, MetadataFile), `{"seed": "forty-two"}`)
		}, "run_metadata.json: json: cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeSyntheticRun(t, synthOpts{steps: 20, evalEvery: 10})
			tt.setup(t, dir)
			_, err := LoadRun(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), dir) {
				t.Errorf("err = %v does not name the run directory's file", err)
			}
		})
	}
}

// chartIDs and seriesNames are what the page must contain.
var (
	chartIDs    = []string{"chart-loss", "chart-lr", "chart-throughput", "chart-memory"}
	seriesNames = []string{"train", "val", "lr", "tokens_per_sec", "peak_memory_gb", "active_memory_gb"}
)

func TestBuildFull(t *testing.T) {
	dir := writeSyntheticRun(t, synthOpts{steps: 200, evalEvery: 25, withEval: true})
	b, err := Build(Options{RunDir: dir, Version: "v9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, id := range chartIDs {
		if !strings.Contains(page, `<svg class="chart" id="`+id+`"`) {
			t.Errorf("page lacks chart %s", id)
		}
	}
	for _, s := range seriesNames {
		if !regexp.MustCompile(`<path class="series" data-series="` + s + `" d="M[0-9.]+ [0-9.]+(L[0-9.]+ [0-9.]+)+"`).MatchString(page) {
			t.Errorf("page lacks a multi-point path for series %s", s)
		}
	}
	for _, want := range []string{
		`<meta http-equiv="Content-Security-Policy" content="default-src 'none';`,
		`<h1>fungtrain run report: run-smollm2-lora</h1>`,
		`model models/SmolLM2-135M-Instruct · started 2025-11-20T09:30:00Z · backend cpu`,
		`<div class="label">Steps</div><div class="value">200</div>`,
		`<div class="label">Trained tokens</div><div class="value">164,000</div><div class="subv">851.2 tokens/s</div>`,
		`<div class="label">Wall time</div><div class="value">3m33s</div>`,
		`<section id="eval">`,
		`<tr><td>Loss</td><td class="num">2.4100</td><td class="num">1.6200</td></tr>`,
		`<tr><td>Meta-references</td><td class="num">33%</td><td class="num">0%</td></tr>`,
		`id="sample-3"`,
		// Answers are escaped, never markup.
		`No. Mail clients strip &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; tags &amp; block them`,
		`Should I use &lt;script&gt; tags in emails?`,
		"**Compound interest** is interest on interest:\n\n- you earn on the principal",
		`<tr><td>lora.targets</td><td>[&#34;q_proj&#34;,&#34;v_proj&#34;]</td></tr>`,
		`<tr><td>training.learning_rate</td><td>0.0002</td></tr>`,
		`<tr><td>train.jsonl</td><td>` + strings.Repeat("ab", 32) + `</td></tr>`,
		`<tr><td>mlx_version</td><td>0.29.1</td></tr>`,
		`<tr><td>seed</td><td>42</td></tr>`,
		"<pre class=\"yaml\" id=\"config-yaml\"># resolved config\nmodel: models/SmolLM2-135M-Instruct\n",
		`Generated by fungtrain v9.9.9.`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	assertSelfContained(t, page)
	// Deterministic: the same inputs give the same bytes.
	b2, err := Build(Options{RunDir: dir, Version: "v9.9.9"})
	if err != nil || string(b2) != page {
		t.Error("Build is not deterministic")
	}
}

// assertSelfContained fails if the page could load anything or run code.
func assertSelfContained(t *testing.T, page string) {
	t.Helper()
	lower := strings.ToLower(page)
	for _, bad := range []string{"<script", " src=", "<link", "@import", "url(http", "<iframe", "<object", "<embed", "javascript:"} {
		if strings.Contains(lower, bad) {
			t.Errorf("page contains %q: not self-contained", bad)
		}
	}
	// The only http(s) URL allowed is the SVG namespace, which is a name,
	// not a resource.
	for _, m := range regexp.MustCompile(`https?://[^\s"'<>]+`).FindAllString(page, -1) {
		if m != "http://www.w3.org/2000/svg" {
			t.Errorf("page references %s", m)
		}
	}
}

func TestLoadRunIncompleteLastLine(t *testing.T) {
	dir := writeSyntheticRun(t, synthOpts{steps: 20, evalEvery: 10})
	f, err := os.OpenFile(filepath.Join(dir, MetricsFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"type":"train","step":25,"lo`) // the trainer is mid-write
	f.Close()
	r, err := LoadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.IncompleteLastLine || r.Train[len(r.Train)-1].Step != 20 {
		t.Errorf("IncompleteLastLine=%v last step=%d", r.IncompleteLastLine, r.Train[len(r.Train)-1].Step)
	}
	page, err := Build(Options{RunDir: dir})
	if err != nil || !strings.Contains(string(page), "The last line of metrics.jsonl is incomplete") {
		t.Errorf("page note missing (err %v)", err)
	}
}

func TestBuildMinimal(t *testing.T) {
	dir := writeSyntheticRun(t, synthOpts{steps: 30, noSummary: true, noMetadata: true, noConfig: true})
	b, err := Build(Options{RunDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{
		"summary.json not found: the run is still going or was interrupted",
		"run_metadata.json not found.",
		"config.yaml not found.",
		`<div class="label">Steps</div><div class="value">30</div>`,
		// No eval lines: the val series is absent, the loss chart still renders.
		`<svg class="chart" id="chart-loss"`,
		`<path class="series" data-series="train" d="M`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, notWant := range []string{`<section id="eval">`, `data-series="val" d=`, "Generated by fungtrain at"} {
		if strings.Contains(page, notWant) {
			t.Errorf("page contains %q", notWant)
		}
	}
	assertSelfContained(t, page)
}

func TestBuildEvalOption(t *testing.T) {
	src := writeSyntheticRun(t, synthOpts{steps: 20, evalEvery: 10, withEval: true})
	dir := writeSyntheticRun(t, synthOpts{steps: 20, evalEvery: 10})
	b, err := Build(Options{RunDir: dir, EvalPath: filepath.Join(src, EvalFile)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `<section id="eval">`) {
		t.Error("--eval file not rendered")
	}
	missing := filepath.Join(dir, "nope.json")
	if _, err := Build(Options{RunDir: dir, EvalPath: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing eval: err = %v", err)
	}
	writeFile(t, filepath.Join(dir, EvalFile), "[1,2")
	if _, err := Build(Options{RunDir: dir}); err == nil || !strings.Contains(err.Error(), EvalFile) {
		t.Errorf("malformed eval.json: err = %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report.html")
	for _, content := range []string{"first", "second"} {
		if err := WriteFile(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != content {
			t.Errorf("content = %q, want %q", got, content)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	if err := WriteFile(filepath.Join(dir, "no", "such", "r.html"), nil); err == nil {
		t.Error("want error for missing directory")
	}
}

func TestFlatten(t *testing.T) {
	cfg := map[string]any{
		"b": map[string]any{"y": 1.5, "x": []any{"p", 2.0}},
		"a": "s",
		"c": []any{map[string]any{"k": true}},
		"d": nil,
		"e": map[string]any{},
	}
	got := flatten("", cfg, nil)
	want := []kv{{"a", "s"}, {"b.x", `["p",2]`}, {"b.y", "1.5"}, {"c[0].k", "true"}, {"d", "null"}, {"e", "{}"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flatten = %v, want %v", got, want)
	}
}

func TestFormatting(t *testing.T) {
	for _, tt := range []struct {
		got, want string
	}{
		{fmtNum(2.31, 4), "2.31"},
		{fmtNum(2.0, 4), "2"},
		{fmtNum(0.00002, 4), "2.00e-05"},
		{groupDigits(1234567), "1,234,567"},
		{groupDigits(-1000), "-1,000"},
		{groupDigits(999), "999"},
		{fmtDuration(3725.4), "1h2m5s"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

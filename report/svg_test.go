package report

import (
	"encoding/xml"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestNiceTicks(t *testing.T) {
	tests := []struct {
		min, max float64
		n        int
		lo, hi   float64
		ticks    []float64
	}{
		{0, 100, 6, 0, 100, []float64{0, 20, 40, 60, 80, 100}},
		{5, 200, 7, 0, 200, []float64{0, 50, 100, 150, 200}},
		{1.43, 2.55, 6, 1.4, 2.6, []float64{1.4, 1.6, 1.8, 2, 2.2, 2.4, 2.6}},
		{0, 2e-4, 6, 0, 2e-4, []float64{0, 5e-5, 1e-4, 1.5e-4, 2e-4}},
		{3, 3, 6, 2.7, 3.3, []float64{2.7, 2.8, 2.9, 3, 3.1, 3.2, 3.3}}, // flat series: padded by 10%
		{0, 0, 6, -1, 1, []float64{-1, -0.5, 0, 0.5, 1}},
	}
	for _, tt := range tests {
		got := niceTicks(tt.min, tt.max, tt.n)
		if !near(got.lo, tt.lo) || !near(got.hi, tt.hi) || len(got.ticks) != len(tt.ticks) {
			t.Errorf("niceTicks(%v, %v) = %+v, want lo=%v hi=%v ticks=%v", tt.min, tt.max, got, tt.lo, tt.hi, tt.ticks)
			continue
		}
		for i := range tt.ticks {
			if !near(got.ticks[i], tt.ticks[i]) {
				t.Errorf("niceTicks(%v, %v) tick %d = %v, want %v", tt.min, tt.max, i, got.ticks[i], tt.ticks[i])
			}
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestTickLabels(t *testing.T) {
	tests := []struct {
		min, max float64
		want     []string
	}{
		{0, 100, []string{"0", "20", "40", "60", "80", "100"}},
		{1.43, 2.55, []string{"1.4", "1.6", "1.8", "2.0", "2.2", "2.4", "2.6"}},
		{0, 2e-4, []string{"0", "5e-5", "1e-4", "1.5e-4", "2e-4"}},
		{0, 3e6, []string{"0", "5e5", "1e6", "1.5e6", "2e6", "2.5e6", "3e6"}},
		{0.001, 0.0042, []string{"0.0010", "0.0015", "0.0020", "0.0025", "0.0030", "0.0035", "0.0040", "0.0045"}},
	}
	for _, tt := range tests {
		at := niceTicks(tt.min, tt.max, 6)
		var got []string
		for _, v := range at.ticks {
			got = append(got, at.label(v))
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("labels for [%v, %v] = %q, want %q", tt.min, tt.max, got, tt.want)
		}
	}
}

// parseSVG checks that s is well-formed XML and returns its elements by
// local name.
func parseSVG(t *testing.T, s string) map[string][]xml.StartElement {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(s))
	out := map[string][]xml.StartElement{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, s)
		}
		if se, ok := tok.(xml.StartElement); ok {
			out[se.Name.Local] = append(out[se.Name.Local], se)
		}
	}
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func TestChartSVG(t *testing.T) {
	c := Chart{
		ID: "chart-x", Title: "Loss <&>", XLabel: "step", YLabel: "loss", Width: 600, Height: 320,
		Series: []Series{
			{Name: "train", Label: "train loss", Points: []Point{{0, 0}, {50, math.NaN()}, {100, 100}}},
			{Name: "val", Points: []Point{{50, 50}}},
			{Name: "empty"},
		},
	}
	s := c.SVG()
	els := parseSVG(t, s)
	if svg := els["svg"]; len(svg) != 1 || attr(svg[0], "id") != "chart-x" || attr(svg[0], "class") != "chart" {
		t.Fatalf("svg element = %+v", els["svg"])
	}
	if !strings.Contains(s, "<title id=\"chart-x-title\">Loss &lt;&amp;&gt;</title>") {
		t.Error("title not escaped")
	}
	paths := map[string]string{}
	for _, p := range els["path"] {
		if attr(p, "class") == "series" {
			paths[attr(p, "data-series")] = attr(p, "d")
		}
	}
	// Plot area: x from 72 to 580, y from 268 (bottom) to 56 (top); the
	// axes are exactly [0, 100] so the corners map to the plot corners; the
	// NaN point is skipped.
	want := map[string]string{"train": "M72.0 268.0L580.0 56.0", "val": "M326.0 162.0"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("series paths = %v, want %v", paths, want)
	}
	// A one-point series gets a marker so that it is visible.
	if n := len(els["circle"]); n != 1 {
		t.Errorf("circles = %d, want 1", n)
	}
	var legend []string
	for _, g := range els["g"] {
		if attr(g, "class") == "legend-item" {
			legend = append(legend, attr(g, "data-series"))
		}
	}
	if !reflect.DeepEqual(legend, []string{"train", "val", "empty"}) {
		t.Errorf("legend = %v", legend)
	}
	var ticks []string
	for _, tx := range els["text"] {
		if attr(tx, "class") == "tick" {
			ticks = append(ticks, attr(tx, "x")+","+attr(tx, "y"))
		}
	}
	if len(ticks) < 8 {
		t.Errorf("only %d tick labels", len(ticks))
	}
}

func TestChartNoData(t *testing.T) {
	s := Chart{ID: "chart-empty", Title: "Nothing", Series: []Series{{Name: "a", Points: []Point{{math.Inf(1), 1}}}}}.SVG()
	els := parseSVG(t, s)
	if len(els["path"]) != 0 || !strings.Contains(s, `<text class="no-data"`) || !strings.Contains(s, `id="chart-empty"`) {
		t.Errorf("no-data chart = %s", s)
	}
}

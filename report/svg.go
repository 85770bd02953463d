package report

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// Point is one (x, y) data point.
type Point struct{ X, Y float64 }

// Series is one line of a [Chart].
type Series struct {
	// Name is the stable machine name, written as data-series="Name".
	Name string
	// Label is the legend text; empty means Name.
	Label string
	// Points are drawn in order; NaN and infinite values are skipped.
	Points []Point
	// Dashed draws a dashed line; Markers draws a dot on every point.
	Dashed, Markers bool
}

// Chart is a line chart rendered as inline SVG by [Chart.SVG].
type Chart struct {
	// ID is the svg element's id ("chart-loss").
	ID             string
	Title          string
	XLabel, YLabel string
	Series         []Series
	// Width and Height are the viewBox size; 0 means 600 by 320.
	Width, Height int
}

// palette gives series colours by index; it is colour-blind friendly
// (Okabe-Ito).
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"}

const (
	marginLeft   = 72
	marginRight  = 20
	marginTop    = 56
	marginBottom = 52
)

// SVG renders the chart as a standalone <svg class="chart" id="ID"> element
// with a title, a legend, grid lines, ticks and tick labels on both axes,
// axis labels, and one <path class="series" data-series="NAME"> per series
// that has at least one finite point. A chart with no data says so.
func (c Chart) SVG() string {
	w, h := c.Width, c.Height
	if w <= 0 {
		w = 600
	}
	if h <= 0 {
		h = 320
	}
	esc := html.EscapeString
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="%s" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title" font-family="system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif">`,
		esc(c.ID), w, h, esc(c.ID))
	fmt.Fprintf(&b, `<title id="%s-title">%s</title>`, esc(c.ID), esc(c.Title))
	fmt.Fprintf(&b, `<rect class="bg" x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`, w, h)
	fmt.Fprintf(&b, `<text class="chart-title" x="%d" y="22" font-size="15" font-weight="600" fill="#111827">%s</text>`, marginLeft, esc(c.Title))

	px0, px1 := float64(marginLeft), float64(w-marginRight)
	py0, py1 := float64(h-marginBottom), float64(marginTop) // y grows downwards
	xmin, xmax, ymin, ymax, ok := c.bounds()
	if !ok {
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#d1d5db"/>`, px0, py1, px1-px0, py0-py1)
		fmt.Fprintf(&b, `<text class="no-data" x="%g" y="%g" text-anchor="middle" font-size="14" fill="#6b7280">no data</text>`, (px0+px1)/2, (py0+py1)/2)
		b.WriteString(`</svg>`)
		return b.String()
	}
	xt := niceTicks(xmin, xmax, 7)
	yt := niceTicks(ymin, ymax, 6)
	sx := func(x float64) float64 { return px0 + (x-xt.lo)/(xt.hi-xt.lo)*(px1-px0) }
	sy := func(y float64) float64 { return py0 - (y-yt.lo)/(yt.hi-yt.lo)*(py0-py1) }

	// Grid and ticks.
	b.WriteString(`<g class="grid" stroke="#e5e7eb" stroke-width="1">`)
	for _, v := range yt.ticks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, px0, sy(v), px1, sy(v))
	}
	for _, v := range xt.ticks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke-dasharray="2 3"/>`, sx(v), py0, sx(v), py1)
	}
	b.WriteString(`</g>`)
	b.WriteString(`<g class="axis y-axis" font-size="11" fill="#374151" text-anchor="end">`)
	for _, v := range yt.ticks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#374151"/>`, px0-5, sy(v), px0, sy(v))
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%.1f">%s</text>`, px0-8, sy(v)+4, esc(yt.label(v)))
	}
	b.WriteString(`</g>`)
	b.WriteString(`<g class="axis x-axis" font-size="11" fill="#374151" text-anchor="middle">`)
	for _, v := range xt.ticks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#374151"/>`, sx(v), py0, sx(v), py0+5)
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%.1f">%s</text>`, sx(v), py0+18, esc(xt.label(v)))
	}
	b.WriteString(`</g>`)
	fmt.Fprintf(&b, `<path class="frame" d="M%.1f %.1fV%.1fH%.1f" fill="none" stroke="#374151" stroke-width="1.2"/>`, px0, py1, py0, px1)
	fmt.Fprintf(&b, `<text class="axis-label" x="%.1f" y="%d" text-anchor="middle" font-size="12" fill="#111827">%s</text>`, (px0+px1)/2, h-10, esc(c.XLabel))
	fmt.Fprintf(&b, `<text class="axis-label" transform="translate(16 %.1f) rotate(-90)" text-anchor="middle" font-size="12" fill="#111827">%s</text>`, (py0+py1)/2, esc(c.YLabel))

	// Series, clipped to the plot area.
	fmt.Fprintf(&b, `<clipPath id="%s-clip"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"/></clipPath>`, esc(c.ID), px0-4, py1-4, px1-px0+8, py0-py1+8)
	fmt.Fprintf(&b, `<g clip-path="url(#%s-clip)">`, esc(c.ID))
	for i, s := range c.Series {
		pts := finitePoints(s.Points)
		if len(pts) == 0 {
			continue
		}
		color := palette[i%len(palette)]
		var d strings.Builder
		for j, p := range pts {
			cmd := 'L'
			if j == 0 {
				cmd = 'M'
			}
			fmt.Fprintf(&d, "%c%.1f %.1f", cmd, sx(p.X), sy(p.Y))
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<path class="series" data-series="%s" d="%s" fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"%s/>`,
			esc(s.Name), d.String(), color, dash)
		if s.Markers || len(pts) == 1 {
			fmt.Fprintf(&b, `<g class="points" data-series="%s" fill="%s">`, esc(s.Name), color)
			for _, p := range pts {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5"/>`, sx(p.X), sy(p.Y))
			}
			b.WriteString(`</g>`)
		}
	}
	b.WriteString(`</g>`)

	// Legend, one row under the title.
	b.WriteString(`<g class="legend" font-size="12" fill="#111827">`)
	x := float64(marginLeft)
	for i, s := range c.Series {
		label := s.Label
		if label == "" {
			label = s.Name
		}
		color := palette[i%len(palette)]
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<g class="legend-item" data-series="%s"><line x1="%.1f" y1="38" x2="%.1f" y2="38" stroke="%s" stroke-width="3"%s/><text x="%.1f" y="42">%s</text></g>`,
			esc(s.Name), x, x+22, color, dash, x+28, esc(label))
		x += 28 + 7*float64(len([]rune(label))) + 18
	}
	b.WriteString(`</g></svg>`)
	return b.String()
}

// bounds returns the extent of the finite points of all series.
func (c Chart) bounds() (xmin, xmax, ymin, ymax float64, ok bool) {
	xmin, ymin = math.Inf(1), math.Inf(1)
	xmax, ymax = math.Inf(-1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range finitePoints(s.Points) {
			xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
			ymin, ymax = math.Min(ymin, p.Y), math.Max(ymax, p.Y)
			ok = true
		}
	}
	return
}

func finitePoints(ps []Point) []Point {
	out := make([]Point, 0, len(ps))
	for _, p := range ps {
		if !math.IsNaN(p.X) && !math.IsInf(p.X, 0) && !math.IsNaN(p.Y) && !math.IsInf(p.Y, 0) {
			out = append(out, p)
		}
	}
	return out
}

// axisTicks is a "nice" axis: a range [lo, hi] that contains the data and
// ticks at round multiples of step.
type axisTicks struct {
	lo, hi, step float64
	ticks        []float64
}

// niceTicks picks about n ticks at a round step (1, 2 or 5 times a power of
// ten) covering [min, max]. A degenerate range is padded by 10% (or by 1
// around 0).
func niceTicks(min, max float64, n int) axisTicks {
	if max < min {
		min, max = max, min
	}
	if max == min {
		pad := math.Abs(min) * 0.1
		if pad == 0 {
			pad = 1
		}
		min, max = min-pad, max+pad
	}
	step := niceNum((max - min) / float64(n-1))
	// The epsilon keeps 2.7/0.1 = 26.999999999999996 from flooring to 26.
	lo := math.Floor(min/step+1e-9) * step
	hi := math.Ceil(max/step-1e-9) * step
	t := axisTicks{lo: lo, hi: hi, step: step}
	for i := 0; ; i++ {
		v := lo + float64(i)*step
		if v > hi+step/2 {
			break
		}
		// Snap values like 0.30000000000000004 to the step's precision.
		v = math.Round(v/step) * step
		t.ticks = append(t.ticks, v)
	}
	return t
}

// niceNum returns the number of the form 1, 2 or 5 times a power of ten
// nearest to x (on a rough log scale).
func niceNum(x float64) float64 {
	exp := math.Floor(math.Log10(x))
	f := x / math.Pow(10, exp)
	var nf float64
	switch {
	case f < 1.5:
		nf = 1
	case f < 3:
		nf = 2
	case f < 7:
		nf = 5
	default:
		nf = 10
	}
	return nf * math.Pow(10, exp)
}

// label formats a tick value with just enough digits for the step, using
// exponent notation for very small or very large magnitudes.
func (t axisTicks) label(v float64) string {
	if math.Abs(v) < t.step/1e6 {
		return "0"
	}
	mag := math.Max(math.Abs(t.lo), math.Abs(t.hi))
	stepExp := math.Floor(math.Log10(t.step) + 1e-9)
	if mag < 1e-3 || mag >= 1e6 {
		digits := int(math.Max(0, math.Floor(math.Log10(math.Abs(v))+1e-9)-stepExp))
		s := strconv.FormatFloat(v, 'e', digits, 64)
		mant, exp, _ := strings.Cut(s, "e")
		if strings.Contains(mant, ".") {
			mant = strings.TrimRight(strings.TrimRight(mant, "0"), ".")
		}
		e, _ := strconv.Atoi(exp)
		return mant + "e" + strconv.Itoa(e)
	}
	return strconv.FormatFloat(v, 'f', int(math.Max(0, -stepExp)), 64)
}

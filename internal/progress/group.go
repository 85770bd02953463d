package progress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Group draws several bars at once, one line each, for work that runs in
// parallel (files downloaded side by side). It redraws its whole block in
// place: the cursor goes back up over the lines it drew last time. A nil
// *Group is a valid no-op group whose bars are nil (no-op) bars. Groups
// are safe for concurrent use.
type Group struct {
	mu       sync.Mutex
	w        io.Writer
	bars     []*Bar
	drawn    int // lines drawn last time
	lastDraw time.Time
	now      func() time.Time
}

// NewGroup returns a group drawn on f when f is a terminal, else nil.
func NewGroup(f *os.File) *Group {
	if f == nil || !IsTerminal(f) {
		return nil
	}
	return NewGroupWriter(f)
}

// NewGroupWriter returns a group that always draws on w.
func NewGroupWriter(w io.Writer) *Group {
	return &Group{w: w, now: time.Now}
}

// Bar adds a line to the group.
func (g *Group) Bar(label string, total int) *Bar { return g.add(label, total, false) }

// BytesBar adds a line that counts bytes (see Bar.SetBytes).
func (g *Group) BytesBar(label string, total int) *Bar { return g.add(label, total, true) }

func (g *Group) add(label string, total int, bytes bool) *Bar {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	b := &Bar{w: g.w, label: label, total: total, bytes: bytes, start: g.now(), now: g.now, group: g}
	g.bars = append(g.bars, b)
	g.drawLocked(true)
	return b
}

// redraw is called by a bar of the group after a change.
func (g *Group) redraw(force bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.drawLocked(force)
}

func (g *Group) drawLocked(force bool) {
	now := g.now()
	if !force && now.Sub(g.lastDraw) < redrawEvery {
		return
	}
	g.lastDraw = now
	var sb strings.Builder
	if g.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", g.drawn) // back to the block's first line
	}
	for _, b := range g.bars {
		sb.WriteString("\r")
		sb.WriteString(b.line(now))
		sb.WriteString("\x1b[K\n")
	}
	g.drawn = len(g.bars)
	io.WriteString(g.w, sb.String())
}

// RenderBytes formats a bar line for a byte count, for example
// "model.safetensors [=======>       ] 120.0/512.0 MB  23%  8.0 MB/s  15s".
func RenderBytes(label string, done, total int, elapsed time.Duration) string {
	rate := ""
	if s := elapsed.Seconds(); s > 0 {
		rate = "  " + megabytes(float64(done)/s) + "/s"
	}
	el := elapsed.Round(time.Second)
	if total <= 0 {
		return fmt.Sprintf("%s %s%s  %s", label, megabytes(float64(done)), rate, el)
	}
	d := min(max(done, 0), total)
	return fmt.Sprintf("%s [%s] %s/%s %3d%%%s  %s", label, cells(d, total), strings.TrimSuffix(megabytes(float64(done)), " MB"),
		megabytes(float64(total)), int(int64(d)*100/int64(total)), rate, el)
}

// megabytes prints a byte count in MB (10^6 bytes), one decimal.
func megabytes(n float64) string { return fmt.Sprintf("%.1f MB", n/1e6) }

// cells draws the bar itself, barWidth cells wide.
func cells(done, total int) string {
	filled := int(int64(done) * barWidth / int64(total))
	var sb strings.Builder
	sb.WriteString(strings.Repeat("=", filled))
	if filled < barWidth {
		sb.WriteString(">")
		sb.WriteString(strings.Repeat(" ", barWidth-filled-1))
	}
	return sb.String()
}

// Above runs print, which writes whole lines to the group's terminal (a
// log record), above the bars: the block is cleared first and drawn again
// below what print wrote, so neither overwrites the other.
func (g *Group) Above(print func()) {
	if g == nil {
		print()
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.drawn > 0 {
		fmt.Fprintf(g.w, "\x1b[%dA\r\x1b[J", g.drawn) // up to the block, clear to the end of the screen
		g.drawn = 0
	}
	print()
	if len(g.bars) > 0 {
		g.drawLocked(true)
	}
}

// LogHandler wraps a slog handler that writes to the group's terminal, so
// that its records print above the bars.
func (g *Group) LogHandler(h slog.Handler) slog.Handler {
	if g == nil {
		return h
	}
	return groupHandler{Handler: h, g: g}
}

type groupHandler struct {
	slog.Handler
	g *Group
}

func (h groupHandler) Handle(ctx context.Context, r slog.Record) (err error) {
	h.g.Above(func() { err = h.Handler.Handle(ctx, r) })
	return err
}

func (h groupHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return groupHandler{Handler: h.Handler.WithAttrs(as), g: h.g}
}

func (h groupHandler) WithGroup(name string) slog.Handler {
	return groupHandler{Handler: h.Handler.WithGroup(name), g: h.g}
}

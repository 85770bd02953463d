// Package progress draws a one-line progress bar on a terminal.
//
// A Bar writes to stderr (or any writer given to NewWriter) only when that
// file is a terminal; otherwise every method is a no-op, so callers never
// need to check. A nil *Bar is also a valid no-op bar. Bars are safe for
// concurrent use.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// redrawEvery limits how often the bar is redrawn.
const redrawEvery = 100 * time.Millisecond

// barWidth is the number of cells of the bar itself.
const barWidth = 30

// Bar is a one-line progress bar. The zero value is not usable; use New,
// NewWriter or Group.Bar.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	total    int
	done     int
	bytes    bool // counts bytes: drawn in MB with a rate
	start    time.Time
	lastDraw time.Time
	finished bool
	now      func() time.Time
	group    *Group // draws the bar when it belongs to a group
}

// New returns a bar drawn on f when f is a terminal, and a nil (no-op) bar
// otherwise. total may be 0 when unknown; SetTotal can set it later.
func New(f *os.File, label string, total int) *Bar {
	if f == nil || !IsTerminal(f) {
		return nil
	}
	return NewWriter(f, label, total)
}

// NewWriter returns a bar that always draws on w, whatever w is. It is meant
// for tests and for callers that have decided on their own.
func NewWriter(w io.Writer, label string, total int) *Bar {
	return &Bar{w: w, label: label, total: total, start: time.Now(), now: time.Now}
}

// IsTerminal reports whether f is a character device.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// SetTotal changes the expected number of steps.
func (b *Bar) SetTotal(total int) {
	b.update(true, func() bool { b.total = total; return true })
}

// SetBytes makes the bar count bytes: it shows MB and a rate.
func (b *Bar) SetBytes(on bool) {
	b.update(false, func() bool { b.bytes = on; return true })
}

// Add advances the bar by n steps.
func (b *Bar) Add(n int) {
	b.update(false, func() bool {
		b.done += n
		return true
	})
}

// Set moves the bar to done steps, for work that restarts or resumes.
func (b *Bar) Set(done int) {
	b.update(true, func() bool { b.done = done; return true })
}

// Finish draws the final state and ends the line. Later calls do nothing.
func (b *Bar) Finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.finished {
		b.mu.Unlock()
		return
	}
	if b.group != nil {
		b.finished = true
		b.mu.Unlock()
		b.group.redraw(true)
		return
	}
	defer b.mu.Unlock()
	b.drawLocked(true)
	b.finished = true
	fmt.Fprint(b.w, "\n")
}

// update applies change unless the bar is finished, then draws: at once
// when force or the work is complete, else at most every redrawEvery.
func (b *Bar) update(force bool, change func() bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.finished || !change() {
		b.mu.Unlock()
		return
	}
	complete := b.total > 0 && b.done >= b.total
	if b.group == nil {
		b.drawLocked(force)
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.group.redraw(force || complete)
}

func (b *Bar) drawLocked(force bool) {
	now := b.now()
	if !force && now.Sub(b.lastDraw) < redrawEvery && (b.total == 0 || b.done < b.total) {
		return
	}
	b.lastDraw = now
	fmt.Fprint(b.w, "\r"+b.renderLocked(now)+"\x1b[K")
}

// line renders the bar for its group.
func (b *Bar) line(now time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.renderLocked(now)
}

func (b *Bar) renderLocked(now time.Time) string {
	if b.bytes {
		return RenderBytes(b.label, b.done, b.total, now.Sub(b.start))
	}
	return Render(b.label, b.done, b.total, now.Sub(b.start))
}

// Render formats one bar line without any control characters, for example
// "questions [=========>          ]  12/40  30%  5s".
func Render(label string, done, total int, elapsed time.Duration) string {
	elapsed = elapsed.Round(time.Second)
	if total <= 0 {
		return fmt.Sprintf("%s %d  %s", label, done, elapsed)
	}
	d := min(max(done, 0), total)
	return fmt.Sprintf("%s [%s] %d/%d %3d%%  %s", label, cells(d, total), done, total, d*100/total, elapsed)
}

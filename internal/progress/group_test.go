package progress

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRenderBytes(t *testing.T) {
	tests := []struct {
		done, total int
		elapsed     time.Duration
		want        string
	}{
		{0, 4_000_000, 0, "f [>                             ] 0.0/4.0 MB   0%  0s"},
		{1_000_000, 4_000_000, 2 * time.Second, "f [=======>                      ] 1.0/4.0 MB  25%  0.5 MB/s  2s"},
		{4_000_000, 4_000_000, 4 * time.Second, "f [==============================] 4.0/4.0 MB 100%  1.0 MB/s  4s"},
		{2_500_000, 0, time.Second, "f 2.5 MB  2.5 MB/s  1s"},
		{3_000_000_000, 6_000_000_000, time.Second, "f [===============>              ] 3000.0/6000.0 MB  50%  3000.0 MB/s  1s"},
	}
	for _, tc := range tests {
		if got := RenderBytes("f", tc.done, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("RenderBytes(%d, %d, %s) = %q, want %q", tc.done, tc.total, tc.elapsed, got, tc.want)
		}
	}
}

func TestNilGroupIsNoop(t *testing.T) {
	var g *Group
	b := g.Bar("x", 3)
	if b != nil {
		t.Fatal("a nil group gave a bar")
	}
	b.Add(1)
	b.Set(2)
	b.Finish()
	if g := NewGroup(nil); g != nil {
		t.Fatal("NewGroup(nil) is not nil")
	}
}

// TestGroup draws two bars as one block: each redraw goes back up over the
// lines drawn before, and the last block shows both final states.
func TestGroup(t *testing.T) {
	var buf bytes.Buffer
	g := NewGroupWriter(&buf)
	clock := time.Unix(0, 0)
	g.now = func() time.Time { return clock }
	a := g.BytesBar("a.safetensors", 2_000_000)
	b := g.Bar("b.json", 4)
	clock = clock.Add(time.Second)
	a.Add(1_000_000) // draws: a second has passed
	a.Add(10)        // same instant: throttled
	b.Set(4)         // Set always draws
	clock = clock.Add(time.Second)
	a.Add(999_990) // complete: draws
	a.Finish()
	b.Finish()
	b.Add(3) // ignored after Finish
	out := buf.String()
	if n := strings.Count(out, "\x1b[2A"); n != 5 {
		t.Errorf("%d redraws of the two-line block, want 5:\n%q", n, out)
	}
	if n := strings.Count(out, "\x1b[1A"); n != 1 {
		t.Errorf("%d redraws of the one-line block, want 1:\n%q", n, out)
	}
	last := out[strings.LastIndex(out, "\x1b[2A")+len("\x1b[2A"):]
	want := "\ra.safetensors [==============================] 2.0/2.0 MB 100%  1.0 MB/s  2s\x1b[K\n" +
		"\rb.json [==============================] 4/4 100%  2s\x1b[K\n"
	if last != want {
		t.Errorf("last block %q, want %q", last, want)
	}
	if !strings.Contains(out, "a.safetensors [===============>              ] 1.0/2.0 MB  50%  1.0 MB/s  1s") {
		t.Errorf("the half-way draw is missing:\n%q", out)
	}
}

// TestBarSet moves a plain bar back, as a restarted download does.
func TestBarSet(t *testing.T) {
	var buf bytes.Buffer
	b := NewWriter(&buf, "d", 10)
	b.now = func() time.Time { return time.Unix(0, 0) }
	b.start = b.now()
	b.Add(7)
	b.Set(2)
	if !strings.HasSuffix(buf.String(), "\rd [======>                       ] 2/10  20%  0s\x1b[K") {
		t.Errorf("after Set(2): %q", buf.String())
	}
}

// TestGroupAbove: a log record printed through the group's handler lands
// above the bars: the block is cleared, the record written, the block drawn
// again below it.
func TestGroupAbove(t *testing.T) {
	var buf bytes.Buffer
	g := NewGroupWriter(&buf)
	g.now = func() time.Time { return time.Unix(0, 0) }
	g.Bar("a", 2)
	g.Bar("b", 2)
	buf.Reset()
	log := slog.New(g.LogHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})))
	log.Warn("resuming", "file", "a")
	want := "\x1b[2A\r\x1b[J" + "level=WARN msg=resuming file=a\n" +
		"\ra [>                             ] 0/2   0%  0s\x1b[K\n\rb [>                             ] 0/2   0%  0s\x1b[K\n"
	if buf.String() != want {
		t.Errorf("got %q\nwant %q", buf.String(), want)
	}
	var nilGroup *Group
	buf.Reset()
	slog.New(nilGroup.LogHandler(slog.NewTextHandler(&buf, nil))).Info("plain")
	if !strings.Contains(buf.String(), "msg=plain") {
		t.Errorf("a nil group's handler did not log: %q", buf.String())
	}
}

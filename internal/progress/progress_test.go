package progress

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	tests := []struct {
		label       string
		done, total int
		elapsed     time.Duration
		want        string
	}{
		{"q", 0, 10, 0, "q [>                             ] 0/10   0%  0s"},
		{"q", 5, 10, 2 * time.Second, "q [===============>              ] 5/10  50%  2s"},
		{"q", 10, 10, 3 * time.Second, "q [==============================] 10/10 100%  3s"},
		{"q", 12, 10, 0, "q [==============================] 12/10 100%  0s"},
		{"t", 7, 0, 1500 * time.Millisecond, "t 7  2s"},
	}
	for _, tc := range tests {
		if got := Render(tc.label, tc.done, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("Render(%q,%d,%d) = %q, want %q", tc.label, tc.done, tc.total, got, tc.want)
		}
	}
}

func TestNilBarIsNoop(t *testing.T) {
	var b *Bar
	b.Add(3)
	b.SetTotal(9)
	b.Finish()
}

func TestNewOnNonTerminalIsNil(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b := New(f, "x", 3); b != nil {
		t.Fatalf("New on a regular file = %v, want nil", b)
	}
	if IsTerminal(f) {
		t.Fatal("IsTerminal(regular file) = true")
	}
}

func TestWriterBar(t *testing.T) {
	var buf bytes.Buffer
	b := NewWriter(&buf, "build", 4)
	clock := time.Unix(0, 0)
	b.now = func() time.Time { return clock }
	b.start = clock
	b.Add(1) // first draw: lastDraw is zero, so it draws
	b.Add(1) // same instant: throttled
	clock = clock.Add(time.Second)
	b.Add(2) // reaches total: draws
	b.Finish()
	b.Add(5) // ignored after Finish
	out := buf.String()
	if n := strings.Count(out, "\r"); n != 3 {
		t.Errorf("draws = %d, want 3; output %q", n, out)
	}
	if !strings.HasSuffix(out, "build [==============================] 4/4 100%  1s\x1b[K\n") {
		t.Errorf("final line wrong: %q", out)
	}
	if strings.Contains(out, "2/4") {
		t.Errorf("throttled draw leaked: %q", out)
	}
}

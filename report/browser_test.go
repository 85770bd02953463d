//go:build linux || darwin

package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"image"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The browser tests render a report in real headless Chromium (Debian's
// chromium package, installed by ./build.sh test). They never skip: a
// missing browser is a failure.
//
// Set FUNGTRAIN_BROWSER_TEST_OUT to a directory to keep the rendered page
// and the screenshot there for a look.

const (
	chromiumPath    = "/usr/bin/chromium"
	chromiumTimeout = 60 * time.Second
	shotWidth       = 1280
	shotHeight      = 2000
)

// findChromium returns the Chromium binary or fails the test.
func findChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatalf("headless Chromium not found (%s, or chromium on PATH): run ./build.sh test, which installs Debian's chromium package", chromiumPath)
	return ""
}

// runChromium runs headless Chromium with the project's flags, a fresh
// profile and a bounded time, and returns its stdout and stderr. The whole
// process group is killed afterwards so that no helper process outlives the
// test.
func runChromium(t *testing.T, bin string, args ...string) (stdout, stderr []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chromiumTimeout)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(),
		"--enable-logging=stderr", "--v=0",
	}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftover helpers, if any
	}
	if ctx.Err() != nil {
		t.Fatalf("chromium %v did not finish within %v\nstderr:\n%s", args, chromiumTimeout, tail(errb.String(), 3000))
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\nstderr:\n%s", args, err, tail(errb.String(), 3000))
	}
	return out.Bytes(), errb.Bytes()
}

// consoleErrors returns the page's console messages from Chromium's
// --enable-logging=stderr output: every "CONSOLE" line (the report has no
// scripts, so any console message means something went wrong, such as a
// resource blocked by the Content-Security-Policy) and any uncaught
// exception.
func consoleErrors(stderr []byte) []string {
	var errs []string
	for line := range strings.SplitSeq(string(stderr), "\n") {
		if strings.Contains(line, ":CONSOLE") || strings.Contains(line, "Uncaught") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	return errs
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// writeReport renders the synthetic run's report into a file and returns
// its file:// URL and path.
func writeReport(t *testing.T, extraHead template.HTML) (string, string) {
	t.Helper()
	dir := writeSyntheticRun(t, synthOpts{steps: 200, evalEvery: 25, withEval: true})
	page, err := Build(Options{RunDir: dir, Version: "v0.1.0-test", extraHead: extraHead})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "report.html")
	if err := WriteFile(path, page); err != nil {
		t.Fatal(err)
	}
	return (&url.URL{Scheme: "file", Path: path}).String(), path
}

func TestBrowserRendersReport(t *testing.T) {
	bin := findChromium(t)
	pageURL, pagePath := writeReport(t, "")

	// 1. Screenshot: a real, non-blank rendering with the charts painted.
	shot := filepath.Join(t.TempDir(), "report.png")
	_, stderr := runChromium(t, bin, "--screenshot="+shot,
		fmt.Sprintf("--window-size=%d,%d", shotWidth, shotHeight), "--hide-scrollbars", pageURL)
	if errs := consoleErrors(stderr); len(errs) > 0 {
		t.Errorf("console errors while taking the screenshot:\n%s", strings.Join(errs, "\n"))
	}
	st := screenshotStats(t, shot)
	t.Logf("screenshot %dx%d: %d distinct colours, %.1f%% non-white, %d series-blue and %d series-vermilion pixels",
		st.w, st.h, st.colours, 100*st.nonWhite, st.blue, st.vermilion)
	if st.w != shotWidth || st.h != shotHeight {
		t.Errorf("screenshot is %dx%d, want %dx%d", st.w, st.h, shotWidth, shotHeight)
	}
	if st.colours < 200 {
		t.Errorf("screenshot has %d distinct colours, want >= 200: blank or unstyled page", st.colours)
	}
	if st.nonWhite < 0.08 {
		t.Errorf("screenshot is %.1f%% non-white, want >= 8%%: blank page", 100*st.nonWhite)
	}
	// The first two series colours must be painted: chart lines, legend
	// swatches and the base/adapter answer borders.
	if st.blue < 500 || st.vermilion < 500 {
		t.Errorf("series colours barely painted (blue %d, vermilion %d pixels, want >= 500 each): charts not rendered",
			st.blue, st.vermilion)
	}

	// 2. DOM after parsing: every chart and series is a real element.
	dom, stderr := runChromium(t, bin, "--dump-dom", pageURL)
	if errs := consoleErrors(stderr); len(errs) > 0 {
		t.Errorf("console errors while loading the page:\n%s", strings.Join(errs, "\n"))
	}
	d := string(dom)
	for _, id := range chartIDs {
		if !strings.Contains(d, `<svg class="chart" id="`+id+`"`) {
			t.Errorf("rendered DOM lacks <svg id=%q>", id)
		}
	}
	for _, s := range seriesNames {
		if !strings.Contains(d, `<path class="series" data-series="`+s+`" d="M`) {
			t.Errorf("rendered DOM lacks the path of series %q", s)
		}
	}
	for _, want := range []string{`<section id="eval">`, `id="sample-3"`, `&lt;script&gt;alert(`} {
		if !strings.Contains(d, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if strings.Contains(d, "<script") {
		t.Error("rendered DOM has a <script> element")
	}

	if keep := os.Getenv("FUNGTRAIN_BROWSER_TEST_OUT"); keep != "" {
		for src, name := range map[string]string{shot: "report.png", pagePath: "report.html"} {
			b, err := os.ReadFile(src)
			if err == nil {
				err = os.WriteFile(filepath.Join(keep, name), b, 0o644)
			}
			if err != nil {
				t.Errorf("keep %s: %v", name, err)
			}
		}
	}
}

// TestBrowserDetectsConsoleErrors is the control for the check above: a
// report variant with an inline script (refused by the page's
// Content-Security-Policy) and a blocked image must be caught.
func TestBrowserDetectsConsoleErrors(t *testing.T) {
	bin := findChromium(t)
	pageURL, _ := writeReport(t, `<script>window.noSuchFunction()</script>`)
	_, stderr := runChromium(t, bin, "--dump-dom", pageURL)
	errs := consoleErrors(stderr)
	if len(errs) == 0 {
		t.Fatalf("an inline script went unnoticed; stderr:\n%s", tail(string(stderr), 3000))
	}
	if !strings.Contains(strings.Join(errs, "\n"), "Content Security Policy") {
		t.Errorf("console errors do not mention the CSP: %q", errs)
	}
}

type shotStats struct {
	w, h            int
	colours         int
	nonWhite        float64
	blue, vermilion int
}

// screenshotStats decodes the PNG and measures how much was painted.
func screenshotStats(t *testing.T, path string) shotStats {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("chromium wrote no screenshot at %s", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	return measure(img)
}

func measure(img image.Image) shotStats {
	b := img.Bounds()
	st := shotStats{w: b.Dx(), h: b.Dy()}
	seen := map[uint32]bool{}
	nonWhite := 0
	close := func(r, g, b, R, G, B int) bool {
		return abs(r-R) <= 24 && abs(g-G) <= 24 && abs(b-B) <= 24
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r16, g16, b16, _ := img.At(x, y).RGBA()
			r, g, bl := int(r16>>8), int(g16>>8), int(b16>>8)
			seen[uint32(r)<<16|uint32(g)<<8|uint32(bl)] = true
			if r < 245 || g < 245 || bl < 245 {
				nonWhite++
			}
			switch {
			case close(r, g, bl, 0x00, 0x72, 0xB2):
				st.blue++
			case close(r, g, bl, 0xD5, 0x5E, 0x00):
				st.vermilion++
			}
		}
	}
	st.colours = len(seen)
	st.nonWhite = float64(nonWhite) / float64(st.w*st.h)
	return st
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

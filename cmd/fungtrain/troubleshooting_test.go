package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/fungtrain/fungtrain/internal/lockedbuf"
)

// This file checks docs/TROUBLESHOOTING.md against the code. Every fenced
// block with the info string "message ID" quotes what fungtrain prints; a
// part written <UPPER_CASE> stands for what varies (and the same name in
// one line must stand for the same text). troubleChecks (in
// troubleshooting_triggers_test.go) says, for each ID, how the test makes
// fungtrain print it, or why it cannot here; then every line of the block
// must be in that output, or, for a block that cannot be triggered, in the
// repository's sources or knownMessages.

// troubleBlock is one quoted block of the guide.
type troubleBlock struct {
	id    string
	line  int // of the opening fence
	lines []string
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var fenceRE = regexp.MustCompile("^```message(?:\\s+(\\S+))?\\s*$")

// parseTroubleBlocks returns the message blocks of the guide.
func parseTroubleBlocks(doc string) ([]troubleBlock, error) {
	var blocks []troubleBlock
	var cur *troubleBlock
	sc := bufio.NewScanner(strings.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(l, "```"):
			if len(cur.lines) == 0 {
				return nil, fmt.Errorf("line %d: message block %s is empty", cur.line, cur.id)
			}
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			if strings.TrimSpace(l) != "" {
				cur.lines = append(cur.lines, l)
			}
		case fenceRE.MatchString(l):
			id := fenceRE.FindStringSubmatch(l)[1]
			if id == "" {
				return nil, fmt.Errorf("line %d: a message block needs an ID: ```message ID", n)
			}
			cur = &troubleBlock{id: id, line: n}
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("line %d: message block %s is not closed", cur.line, cur.id)
	}
	return blocks, sc.Err()
}

var placeholderRE = regexp.MustCompile(`<[A-Z][A-Z0-9_]*>`)

// messagePattern compiles a quoted line: literal text, with each
// placeholder as a non-empty wildcard, except those named in fixed, which
// must read as given. It returns the placeholder name of each group.
func messagePattern(line string, fixed map[string]string) (*regexp.Regexp, []string) {
	var b strings.Builder
	var names []string
	last := 0
	for _, m := range placeholderRE.FindAllStringIndex(line, -1) {
		b.WriteString(regexp.QuoteMeta(line[last:m[0]]))
		name := line[m[0]+1 : m[1]-1]
		if v, ok := fixed[name]; ok {
			b.WriteString(regexp.QuoteMeta(v))
		} else {
			b.WriteString("(.+?)")
			names = append(names, name)
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(line[last:]))
	return regexp.MustCompile(b.String()), names
}

// matchMessage reports whether text holds the quoted line, within one of
// its lines, with equal text for equal placeholder names. RE2 has no
// back-references, so when the captures of a name disagree, each of them
// is tried as the name's fixed text.
func matchMessage(line, text string) bool { return matchFixed(line, text, map[string]string{}, 0) }

func matchFixed(line, text string, fixed map[string]string, depth int) bool {
	re, names := messagePattern(line, fixed)
	ms := re.FindAllStringSubmatch(text, -1)
	for _, m := range ms {
		if consistent(names, m[1:]) {
			return true
		}
	}
	if depth == 4 {
		return false
	}
	for _, m := range ms[:min(len(ms), 3)] {
		for i, n := range names {
			f := map[string]string{n: m[i+1]}
			for k, v := range fixed {
				f[k] = v
			}
			if matchFixed(line, text, f, depth+1) {
				return true
			}
		}
	}
	return false
}

func consistent(names, caps []string) bool {
	seen := map[string]string{}
	for i, n := range names {
		if v, ok := seen[n]; ok && v != caps[i] {
			return false
		}
		seen[n] = caps[i]
	}
	return true
}

// staticSources are the texts a message that cannot be triggered may come
// from: the string constants of the repository's non-test Go files (with
// their format verbs, which placeholders cover), and the messages of
// build.sh and examples/demo.sh as their die functions print them.
func staticSources(t *testing.T) []string {
	t.Helper()
	root := repoRoot(t)
	var out []string
	skip := map[string]bool{"third_party": true, ".git": true, "bin": true, "runs": true, "node_modules": true, "testdata": true}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && skip[d.Name()] {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if e, ok := n.(ast.Expr); ok {
				if s, ok := stringConst(e); ok {
					out = append(out, s)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for file, prefix := range map[string]string{"build.sh": "build.sh: ", "examples/demo.sh": "demo: "} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			out = append(out, l)
			if _, msg, ok := strings.Cut(l, `die "`); ok {
				msg, _, _ = strings.Cut(msg, `"`)
				out = append(out, prefix+msg)
			}
		}
	}
	return out
}

// stringConst folds a string literal, or a sum of them.
func stringConst(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		x, ok1 := stringConst(e.X)
		y, ok2 := stringConst(e.Y)
		return x + y, ok1 && ok2
	case *ast.ParenExpr:
		return stringConst(e.X)
	}
	return "", false
}

// githubAnchor is the anchor GitHub gives a heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// alterMessage changes the case of the last letter of a quoted line that
// is not in a placeholder: the negative control, which no output or
// source should match.
func alterMessage(line string) string {
	inPlaceholder := make([]bool, len(line))
	for _, m := range placeholderRE.FindAllStringIndex(line, -1) {
		for i := m[0]; i < m[1]; i++ {
			inPlaceholder[i] = true
		}
	}
	last := -1
	for i, r := range line {
		if !inPlaceholder[i] && unicode.IsLetter(r) {
			last = i
		}
	}
	if last < 0 {
		return line + " (altered)"
	}
	r, size := utf8.DecodeRuneInString(line[last:])
	f := unicode.ToUpper
	if unicode.IsUpper(r) {
		f = unicode.ToLower
	}
	return line[:last] + string(f(r)) + line[last+size:]
}

// TestTroubleshootingDoc: every message quoted in docs/TROUBLESHOOTING.md
// is printed by fungtrain today (or, where it cannot be triggered on this
// machine, is in the source it comes from), and the same block with one
// letter changed matches nothing; every block has a check and every check
// a block; the hints point to sections that exist.
func TestTroubleshootingDoc(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "docs", "TROUBLESHOOTING.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	blocks, err := parseTroubleBlocks(doc)
	if err != nil {
		t.Fatalf("docs/TROUBLESHOOTING.md: %v", err)
	}
	anchors := map[string]bool{}
	for _, l := range strings.Split(doc, "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			anchors[githubAnchor(h)] = true
		}
	}
	for _, h := range hints {
		if !anchors[h.section] {
			t.Errorf("hint section %q is not a heading of docs/TROUBLESHOOTING.md", h.section)
		}
	}
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(doc, -1) {
		if !anchors[m[1]] {
			t.Errorf("docs/TROUBLESHOOTING.md links to #%s, which is no heading", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`\]\(([^)#:]+)(#[^)]*)?\)`).FindAllStringSubmatch(doc, -1) {
		if _, err := os.Stat(filepath.Join(root, "docs", m[1])); err != nil {
			t.Errorf("docs/TROUBLESHOOTING.md links to %s: %v", m[1], err)
		}
	}

	env := &troubleEnv{parent: t}
	used := map[string]bool{}
	for _, blk := range blocks {
		if used[blk.id] {
			t.Errorf("line %d: message block ID %s is used twice", blk.line, blk.id)
		}
		used[blk.id] = true
		check, ok := troubleChecks[blk.id]
		if !ok {
			t.Errorf("line %d: message block %s has no entry in troubleChecks: add how to trigger it", blk.line, blk.id)
			continue
		}
		t.Run(blk.id, func(t *testing.T) {
			var sources []string
			if check.trigger != nil {
				sources = []string{check.trigger(t, env)}
			} else {
				t.Logf("not triggered: %s", check.static)
				sources = append(env.static(), knownMessageTexts()...)
			}
			found := func(line string) bool {
				for _, s := range sources {
					if matchMessage(line, s) {
						return true
					}
				}
				return false
			}
			for _, l := range blk.lines {
				if !found(l) {
					what := "the output of its trigger"
					if check.trigger == nil {
						what = "the Go sources, build.sh, examples/demo.sh or knownMessages"
					}
					t.Errorf("docs/TROUBLESHOOTING.md line %d (block %s): %q is not in %s", blk.line, blk.id, l, what)
					if check.trigger != nil {
						t.Logf("output:\n%s", sources[0])
					}
				}
				if alt := alterMessage(l); found(alt) {
					t.Errorf("negative control: %q, altered from the guide's %q, matched too", alt, l)
				}
			}
		})
	}
	for id := range troubleChecks {
		if !used[id] {
			t.Errorf("troubleChecks has %s, which docs/TROUBLESHOOTING.md does not quote", id)
		}
	}
}

// TestTroubleshootingMatcher: the matcher itself, on lines and outputs
// with known answers.
func TestTroubleshootingMatcher(t *testing.T) {
	cases := []struct {
		line, text string
		want       bool
	}{
		{"error: step <N>: loss is NaN", "x\nerror: step 3: loss is NaN (more)\n", true},
		{"error: step <N>: loss is NaN", "error: step 3: loss is +Inf", false},
		{"val loss: <L> -> <L> (best <L> at step <N>)", "val loss: 6.9374 -> 6.9374 (best 6.9374 at step 4)", true},
		{"val loss: <L> -> <L> (best <L> at step <N>)", "val loss: 6.9374 -> 6.9300 (best 6.9300 at step 4)", false},
		{"at <E>/<R> while; <E>/settings", "at http://h:1/org/tiny while; http://h:1/settings", true},
		{"at <E>/<R> while; <E>/settings", "at http://h:1/org/tiny while; http://h:2/settings", false},
		{"<A> x", "\n x", false},      // a placeholder is never empty
		{"a.b (c)", "axb (c)", false}, // the literal text is literal
		{"no <TOKEN> here <|start_header_id|>", "no T here <|start_header_id|>", true},
	}
	for _, c := range cases {
		if got := matchMessage(c.line, c.text); got != c.want {
			t.Errorf("matchMessage(%q, %q) = %v, want %v", c.line, c.text, got, c.want)
		}
	}
	blocks, err := parseTroubleBlocks("text\n```message a\nline 1\n\nline 2\n```\n```sh\nnot a message\n```\n```message b\nx\n```\n")
	if err != nil || len(blocks) != 2 || blocks[0].id != "a" || len(blocks[0].lines) != 2 || blocks[1].lines[0] != "x" || blocks[1].line != 10 {
		t.Errorf("parse: %+v, %v", blocks, err)
	}
	for _, bad := range []string{"```message\nx\n```\n", "```message a\n```\n", "```message a\nx\n"} {
		if _, err := parseTroubleBlocks(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
	if a := githubAnchor("Set-up: build.sh and the demo"); a != "set-up-buildsh-and-the-demo" {
		t.Errorf("anchor %q", a)
	}
	if got := alterMessage("<N> of <M> items <X>"); got != "<N> of <M> itemS <X>" {
		t.Errorf("alterMessage: %q", got)
	}
}

// asUser runs a fungtrain command in-process and returns what a user
// would see on the terminal: output and log, then the error as main
// prints it (with its hint).
func asUser(ctx context.Context, args ...string) (string, error) {
	out := &lockedbuf.Buffer{}
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(out)
	root.SetIn(strings.NewReader(""))
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		printError(out, cmd, err)
	}
	return out.String(), err
}

// asUserProcess runs a fungtrain command in a child process (the test
// binary, see TestMain) with env as its whole environment, through
// wrapper (e.g. the dynamic loader) when given; it returns the combined
// output and the exit status.
func asUserProcess(t *testing.T, env []string, wrapper []string, args ...string) (string, int) {
	t.Helper()
	a, _ := json.Marshal(args)
	argv := append(append([]string{}, wrapper...), os.Args[0], "-test.run=^$")
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = append(env, cliChildEnv+"="+string(a))
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", argv, err)
	}
	return string(out), 0
}

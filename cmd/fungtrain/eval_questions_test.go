package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/eval"
	"github.com/fungtrain/fungtrain/internal/jsonl"
)

// TestReadQuestions: eval's held-out questions come through the training
// data's schema: the same formats, byte-order mark and CRLF, the same
// refusals with the file and line.
func TestReadQuestions(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := jsonl.BOM + strings.Join([]string{
		`{"text": "no question here"}`,
		``,
		`{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Is tea ok?"}, {"role": "assistant", "content": "Yes."}], "variant": "paraphrase"}`,
		`{"prompt": "Coffee?", "completion": "In moderation."}`,
		`{"messages": [{"role": "user", "content": "third"}, {"role": "assistant", "content": "never read"}]}`,
	}, "\r\n") + "\r\n"
	p := write("test.jsonl", good)
	qs, err := readQuestions(p, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []eval.Question{
		{ID: "test.jsonl:3", Messages: []eval.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "Is tea ok?"}}, Reference: "Yes."},
		{ID: "test.jsonl:4", Messages: []eval.Message{{Role: "user", Content: "Coffee?"}}, Reference: "In moderation."},
	}
	if len(qs) != len(want) {
		t.Fatalf("%d questions: %+v", len(qs), qs)
	}
	for i := range want {
		if qs[i].ID != want[i].ID || qs[i].Reference != want[i].Reference || len(qs[i].Messages) != len(want[i].Messages) {
			t.Fatalf("question %d: %+v, want %+v", i, qs[i], want[i])
		}
		for k, m := range want[i].Messages {
			if qs[i].Messages[k] != m {
				t.Errorf("question %d message %d: %+v, want %+v", i, k, qs[i].Messages[k], m)
			}
		}
	}
	// Reading stops at n: a bad line after the n-th question is not reached.
	p = write("stop.jsonl", `{"prompt": "a?", "completion": "b"}`+"\nnot json\n")
	if qs, err := readQuestions(p, 1); err != nil || len(qs) != 1 {
		t.Errorf("stop at n: %d questions, %v", len(qs), err)
	}
	bad := []struct{ name, content, want string }{
		{"invalid UTF-8", "{\"prompt\": \"a?\", \"completion\": \"b\"}\n{\"prompt\": \"caf\xe9?\", \"completion\": \"b\"}\n", "bad.jsonl line 2: invalid UTF-8"},
		{"unknown role", `{"messages": [{"role": "robot", "content": "a?"}, {"role": "assistant", "content": "b"}]}`, `bad.jsonl line 1: message 0 has role "robot"`},
		{"no user turn", `{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]}`, "bad.jsonl line 1: eval: example bad.jsonl:1: no user message"},
		{"malformed", "\n\n{\"prompt\": ", "bad.jsonl line 3: malformed JSON"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			p := write("bad.jsonl", c.content)
			if _, err := readQuestions(p, 5); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

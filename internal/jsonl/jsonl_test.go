package jsonl

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestReaderLines(t *testing.T) {
	type want struct {
		text  string
		ended bool
		size  int64
	}
	cases := []struct {
		name  string
		input string
		want  []want
	}{
		{"LF", "{\"a\":1}\n\n{\"b\":2}\n", []want{{`{"a":1}`, true, 8}, {"", true, 1}, {`{"b":2}`, true, 8}}},
		{"CRLF", "{\"a\":1}\r\n  \r\n{\"b\":2}\r\n", []want{{`{"a":1}`, true, 9}, {"", true, 4}, {`{"b":2}`, true, 9}}},
		{"BOM", BOM + "{\"a\":1}\n{\"b\":2}", []want{{`{"a":1}`, true, 11}, {`{"b":2}`, false, 7}}},
		{"BOM alone", BOM, []want{{"", false, 3}}},
		// Only the file's first bytes are a byte-order mark; later U+FEFF is
		// text (and JSON refuses it outside a string).
		{"BOM on line 2", "{}\n" + BOM + "{}\n", []want{{"{}", true, 3}, {BOM + "{}", true, 6}}},
		{"empty", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(c.input), 0)
			var got []want
			for {
				l, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if l.Number != len(got)+1 {
					t.Errorf("line number %d, want %d", l.Number, len(got)+1)
				}
				got = append(got, want{string(l.Text), l.Ended, l.Size})
			}
			if len(got) != len(c.want) {
				t.Fatalf("lines %+v, want %+v", got, c.want)
			}
			total := int64(0)
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("line %d: %+v, want %+v", i+1, got[i], c.want[i])
				}
				total += got[i].size
			}
			if total != int64(len(c.input)) {
				t.Errorf("sizes add up to %d of %d bytes", total, len(c.input))
			}
		})
	}
	r := NewReader(strings.NewReader("{}\n"+strings.Repeat("x", 20)+"\n"), 10)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, ErrLineTooLong) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("long line: %v", err)
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name, line string
		err        string // "" for accepted
	}{
		{"plain", `{"content":"café ☕ 🍵"}`, ""},
		{"escapes", `{"content":"a\"b\\c\n\u00e9\u2603"}`, ""},
		{"surrogate pair", `{"content":"\ud83c\udf75"}`, ""},
		{"upper-case hex pair", `{"content":"\uD83C\uDF75"}`, ""},
		{"escaped backslash before u", `{"content":"\\ud800"}`, ""},
		{"escape outside a string is not ours", `{"a\\":"x"} \ud800`, ""},
		{"invalid byte", "{\"content\":\"caf\xe9\"}", "invalid UTF-8 at byte offset 15"},
		{"cut rune", "{\"content\":\"\xe2\x98\"}", "invalid UTF-8 at byte offset 12"},
		{"overlong encoding", "{\"content\":\"\xc0\xaf\"}", "invalid UTF-8 at byte offset 12"},
		{"encoded surrogate", "{\"content\":\"\xed\xa0\x80\"}", "invalid UTF-8 at byte offset 12"},
		{"lone low surrogate", `{"content":"x\udc00"}`, `unpaired UTF-16 surrogate \udc00 at byte offset 13`},
		{"lone high surrogate", `{"content":"\ud800x"}`, `unpaired UTF-16 surrogate \ud800 at byte offset 12`},
		{"high then non-surrogate", `{"content":"\ud800\u0041"}`, `unpaired UTF-16 surrogate \ud800`},
		{"high at the end", `{"content":"\ud800"}`, `unpaired UTF-16 surrogate \ud800`},
		{"two highs", `{"content":"\ud800\ud800\udc00"}`, `unpaired UTF-16 surrogate \ud800 at byte offset 12`},
		{"in a key", `{"\udfff":1}`, `unpaired UTF-16 surrogate \udfff`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check([]byte(c.line))
			if c.err == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v, want %q", err, c.err)
			}
			// The control: encoding/json takes every refused line that is
			// valid JSON without complaint, turning the bad text into U+FFFD.
			var v any
			if json.Unmarshal([]byte(c.line), &v) == nil {
				if b, _ := json.Marshal(v); !strings.Contains(string(b), string(utf8.RuneError)) {
					t.Errorf("encoding/json kept %s without U+FFFD: the case tests nothing", b)
				}
			}
		})
	}
}

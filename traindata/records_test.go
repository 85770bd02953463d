package traindata

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/jsonl"
	"github.com/fungtrain/fungtrain/llama"
)

// byteEncoder is a stand-in tokenizer: a role marker token, then one token
// per byte of the content; assistant content is the assistant part.
type byteEncoder struct{}

func (byteEncoder) EncodeChat(msgs []llama.Message, _ bool) ([]int32, []bool, error) {
	var ids []int32
	var asst []bool
	for _, m := range msgs {
		ids = append(ids, 1000+int32(len(m.Role)))
		asst = append(asst, false)
		for _, b := range []byte(m.Content) {
			ids = append(ids, int32(b))
			asst = append(asst, m.Role == "assistant")
		}
	}
	return ids, asst, nil
}

func (byteEncoder) Encode(s string, _ bool) ([]int32, error) {
	ids := []int32{999}
	for _, b := range []byte(s) {
		ids = append(ids, int32(b))
	}
	return ids, nil
}

func (byteEncoder) EOS() []int32 { return []int32{998} }

const goodLine = `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}`

// badLines are lines every reader must refuse, with what the error says.
// They seed the fuzz targets too.
var badLines = []struct {
	name, line, want string
}{
	{"malformed JSON", `{"messages": [{"role": "user"`, "malformed JSON"},
	{"trailing data", goodLine + ` {}`, "malformed JSON"},
	{"not an object", `[1, 2]`, "malformed JSON"},
	{"no known format", `{"input": "x", "output": "y"}`, `want "messages", "prompt" and "completion", or "text"`},
	{"empty messages", `{"messages": []}`, `want "messages"`},
	{"prompt without completion", `{"prompt": "hi"}`, `want "messages"`},
	{"bad role", `{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}`, `message 0 has role "robot"`},
	{"ends with the user", `{"messages": [{"role": "user", "content": "hi"}]}`, "the last message must be the assistant's answer"},
	{"content not a string", `{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}`, "malformed JSON"},
	{"invalid UTF-8 in content", "{\"messages\": [{\"role\": \"user\", \"content\": \"caf\xe9\"}, {\"role\": \"assistant\", \"content\": \"x\"}]}", "invalid UTF-8 at byte offset 46"},
	{"invalid UTF-8 in the answer", "{\"prompt\": \"q\", \"completion\": \"\xff\xfe\"}", "invalid UTF-8"},
	{"cut multi-byte character", "{\"text\": \"\xe2\x98\"}", "invalid UTF-8"},
	{"unpaired surrogate escape", `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bad \udc00"}]}`, `unpaired UTF-16 surrogate \udc00`},
	{"BOM not at the start of the file", jsonl.BOM + goodLine, "malformed JSON"},
}

func TestParseRecordFormats(t *testing.T) {
	cases := []struct {
		name, line string
		want       Record
	}{
		{"messages", `{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "id": 7, "variant": "paraphrase"}`,
			Record{Messages: []llama.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "q"}, {Role: "assistant", Content: "a"}}}},
		{"prompt and completion", `{"prompt": "q", "completion": "a"}`,
			Record{Messages: []llama.Message{{Role: "user", Content: "q"}, {Role: "assistant", Content: "a"}}}},
		{"text", `{"text": "tea is ok"}`, Record{Text: "tea is ok"}},
		{"escapes and a surrogate pair", `{"text": "caf\u00e9 \ud83c\udf75 \"q\""}`, Record{Text: "café 🍵 \"q\""}},
		{"U+FFFD written on purpose", `{"text": "\ufffd and ` + "\uFFFD" + `"}`, Record{Text: "\uFFFD and \uFFFD"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseRecord([]byte(c.line))
			if err != nil {
				t.Fatal(err)
			}
			if got.Text != c.want.Text || !slices.Equal(got.Messages, c.want.Messages) || (got.Messages == nil) != (c.want.Messages == nil) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
	for _, c := range badLines {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseRecord([]byte(c.line)); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestReadRecordsFileForms: a byte-order mark, CRLF line ends, blank lines
// and a last line without a line end are read, with the right line numbers;
// a bad line is named with the file and its line.
func TestReadRecordsFileForms(t *testing.T) {
	text := `{"text": "t"}`
	cases := []struct {
		name, content string
		lines         []int
	}{
		{"LF", goodLine + "\n" + text + "\n", []int{1, 2}},
		{"BOM", jsonl.BOM + goodLine + "\n" + text + "\n", []int{1, 2}},
		{"BOM and CRLF", jsonl.BOM + goodLine + "\r\n\r\n" + text + "\r\n", []int{1, 3}},
		{"no final line end", "\n" + goodLine + "\n" + text, []int{2, 3}},
		{"BOM then a blank line", jsonl.BOM + "\r\n" + text, []int{2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var lines []int
			err := ReadRecords(strings.NewReader(c.content), "x.jsonl", func(r Record) error {
				lines = append(lines, r.Line)
				return nil
			})
			if err != nil || !slices.Equal(lines, c.lines) {
				t.Errorf("lines %v err %v, want %v", lines, err, c.lines)
			}
		})
	}
	for _, c := range badLines {
		t.Run(c.name, func(t *testing.T) {
			content := goodLine + "\r\n\n" + c.line + "\n" + goodLine + "\n"
			err := ReadRecords(strings.NewReader(content), "dir/train.jsonl", func(Record) error { return nil })
			if err == nil || !strings.HasPrefix(err.Error(), "dir/train.jsonl line 3: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want dir/train.jsonl line 3: ...%s", err, c.want)
			}
		})
	}
	// ErrStop ends the reading early, without an error; another visit error
	// is named with its line.
	n := 0
	err := ReadRecords(strings.NewReader(strings.Repeat(goodLine+"\n", 5)), "f", func(r Record) error {
		n++
		if r.Line == 2 {
			return ErrStop
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Errorf("ErrStop: %d records, err %v", n, err)
	}
	err = ReadRecords(strings.NewReader(strings.Repeat(goodLine+"\n", 5)), "f", func(r Record) error {
		if r.Line == 4 {
			return errors.New("boom")
		}
		return nil
	})
	if err == nil || err.Error() != "f line 4: boom" {
		t.Errorf("visit error: %v", err)
	}
}

// TestLoadSplitBOMAndUTF8: a split written by a Windows editor (BOM, CRLF)
// loads with the same tokens as the plain file; one with invalid UTF-8 in
// a message is refused with the file and line.
func TestLoadSplitBOMAndUTF8(t *testing.T) {
	plain := goodLine + "\n" + `{"prompt": "q", "completion": "an answer"}` + "\n"
	windows := jsonl.BOM + strings.ReplaceAll(plain, "\n", "\r\n")
	load := func(content string) (*Split, error) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "train.jsonl"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return LoadSplit(Config{Dir: dir, MaskPrompt: true}, "train", byteEncoder{})
	}
	a, err := load(plain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := load(windows)
	if err != nil {
		t.Fatalf("BOM and CRLF: %v", err)
	}
	if len(a.Examples) != 2 || len(b.Examples) != 2 {
		t.Fatalf("%d and %d examples", len(a.Examples), len(b.Examples))
	}
	for i := range a.Examples {
		if !slices.Equal(a.Examples[i].Tokens, b.Examples[i].Tokens) || !slices.Equal(a.Examples[i].Counted, b.Examples[i].Counted) {
			t.Errorf("example %d: %v vs %v", i, a.Examples[i].Tokens, b.Examples[i].Tokens)
		}
	}
	want := []int32{1004, 'h', 'i', 1009, 'h', 'e', 'l', 'l', 'o', ' ', 't', 'h', 'e', 'r', 'e'}
	if !slices.Equal(b.Examples[0].Tokens, want) {
		t.Errorf("tokens %v, want %v", b.Examples[0].Tokens, want)
	}
	_, err = load(plain + "{\"prompt\": \"caf\xe9?\", \"completion\": \"yes\"}\n")
	if err == nil || !strings.Contains(err.Error(), "train.jsonl line 3: invalid UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

// FuzzParseRecord: no line makes ParseRecord panic; an accepted line gives
// a record that holds no U+FFFD the line did not write, whose conversation
// ends with the assistant and uses only known roles, and which re-encodes
// to a line that parses to the same record.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(goodLine))
	f.Add([]byte(`{"prompt": "q", "completion": "a"}`))
	f.Add([]byte(`{"text": "caf\u00e9 \ud83c\udf75"}`))
	for _, c := range badLines {
		f.Add([]byte(c.line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		rec, err := ParseRecord(line)
		if err != nil {
			return
		}
		wroteFFFD := strings.Contains(string(line), "\uFFFD") || strings.Contains(strings.ToLower(string(line)), `\ufffd`)
		texts := []string{rec.Text}
		for _, m := range rec.Messages {
			texts = append(texts, m.Content)
			if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
				t.Fatalf("role %q accepted", m.Role)
			}
		}
		for _, s := range texts {
			if strings.ContainsRune(s, '\uFFFD') && !wroteFFFD {
				t.Fatalf("U+FFFD in %q from a line that did not write one: %q", s, line)
			}
		}
		if rec.Messages == nil {
			return
		}
		if rec.Messages[len(rec.Messages)-1].Role != "assistant" {
			t.Fatalf("conversation ends with %q", rec.Messages[len(rec.Messages)-1].Role)
		}
		again, err := ParseRecord(fmt.Appendf(nil, `{"messages": %s}`, mustJSON(t, rec.Messages)))
		if err != nil || !slices.Equal(again.Messages, rec.Messages) {
			t.Fatalf("re-encoded record: %v, %+v vs %+v", err, again.Messages, rec.Messages)
		}
	})
}

// FuzzReadRecords: a whole file, read and tokenized as LoadSplit does with
// a stand-in encoder, never panics; when it is accepted, every non-blank
// line gave one example, in order, with its line number.
func FuzzReadRecords(f *testing.F) {
	f.Add([]byte(goodLine + "\n" + `{"text": "t"}` + "\n"))
	f.Add([]byte(jsonl.BOM + goodLine + "\r\n\r\n" + `{"prompt": "q", "completion": "a"}`))
	for _, c := range badLines {
		f.Add([]byte(goodLine + "\n" + c.line + "\n"))
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		var lines []int
		err := ReadRecords(strings.NewReader(string(file)), "fuzz.jsonl", func(r Record) error {
			ex, err := tokenize(r, Config{MaskPrompt: true, SystemPrompt: "s"}, byteEncoder{})
			if err != nil {
				return err
			}
			if len(ex.Tokens) != len(ex.Counted) {
				t.Fatalf("%d tokens, %d mask entries", len(ex.Tokens), len(ex.Counted))
			}
			lines = append(lines, r.Line)
			return nil
		})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.jsonl line ") {
				t.Fatalf("error without the file and line: %v", err)
			}
			return
		}
		body := strings.TrimPrefix(string(file), jsonl.BOM)
		var want []int
		for i, l := range strings.Split(body, "\n") {
			if strings.TrimSpace(l) != "" {
				want = append(want, i+1)
			}
		}
		if !slices.Equal(lines, want) {
			t.Fatalf("records at lines %v, non-blank lines %v", lines, want)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

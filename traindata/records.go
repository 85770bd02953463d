package traindata

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fungtrain/fungtrain/internal/jsonl"
	"github.com/fungtrain/fungtrain/llama"
)

// Record is one example of a chat JSONL file, in any of mlx-lm's formats:
//
//	{"messages": [{"role": ..., "content": ...}, ...]}
//	{"prompt": ..., "completion": ...}   (read as a user and an assistant message)
//	{"text": ...}
//
// Other fields (ids, variants, scores) are allowed and ignored.
type Record struct {
	Line int // 1-based line in its file
	// Messages is the conversation, ending with the assistant's answer; nil
	// for a text record.
	Messages []llama.Message
	Text     string // a text record's text
}

// recordJSON is the JSON of a record line.
type recordJSON struct {
	Messages   []llama.Message `json:"messages"`
	Prompt     *string         `json:"prompt"`
	Completion *string         `json:"completion"`
	Text       *string         `json:"text"`
}

// ParseRecord parses and checks one JSONL line (without its line end). The
// line must be valid UTF-8 and encode no unpaired surrogate; roles must be
// system, user or assistant, and a conversation must end with the
// assistant's answer.
func ParseRecord(line []byte) (Record, error) {
	if err := jsonl.Check(line); err != nil {
		return Record{}, err
	}
	var rec recordJSON
	if err := json.Unmarshal(line, &rec); err != nil {
		return Record{}, fmt.Errorf("malformed JSON: %w", err)
	}
	var msgs []llama.Message
	switch {
	case len(rec.Messages) > 0:
		msgs = rec.Messages
	case rec.Prompt != nil && rec.Completion != nil:
		msgs = []llama.Message{{Role: "user", Content: *rec.Prompt}, {Role: "assistant", Content: *rec.Completion}}
	case rec.Text != nil:
		return Record{Text: *rec.Text}, nil
	default:
		return Record{}, errors.New(`want "messages", "prompt" and "completion", or "text"`)
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return Record{}, fmt.Errorf("message %d has role %q (want system, user or assistant)", i, m.Role)
		}
	}
	if msgs[len(msgs)-1].Role != "assistant" {
		return Record{}, errors.New("the last message must be the assistant's answer")
	}
	return Record{Messages: msgs}, nil
}

// ErrStop, returned by a visit function, ends ReadRecords early without an
// error.
var ErrStop = errors.New("stop reading records")

// ReadRecords parses the chat JSONL in r line by line and calls visit with
// each record, in file order. A byte-order mark at the start and CRLF line
// ends are accepted; blank lines are skipped. A bad line, or an error from
// visit, ends the reading with an error naming name and the line.
func ReadRecords(r io.Reader, name string, visit func(Record) error) error {
	lr := jsonl.NewReader(r, 0)
	for {
		l, err := lr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if len(l.Text) == 0 {
			continue
		}
		rec, err := ParseRecord(l.Text)
		if err != nil {
			return fmt.Errorf("%s line %d: %w", name, l.Number, err)
		}
		rec.Line = l.Number
		if err := visit(rec); errors.Is(err, ErrStop) {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s line %d: %w", name, l.Number, err)
		}
	}
}

// ReadFile is ReadRecords over the file at path.
func ReadFile(path string, visit func(Record) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return ReadRecords(f, path, visit)
}

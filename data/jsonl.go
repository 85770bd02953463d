package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/internal/jsonl"
)

// maxLine is the longest JSONL line accepted (a long transcript fits).
const maxLine = 64 << 20

// journal is an append-only JSONL file. Every record is written with one
// write call, so a killed process leaves at most one torn last line, which
// openJournal cuts off on the next run.
type journal struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// openJournal opens (creating) the journal at path, calls visit for every
// complete line and truncates a torn last line. A complete line that visit
// rejects is an error naming the file and line.
func openJournal(path string, log *slog.Logger, visit func(line []byte) error) (*journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create directory for %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	good, torn, err := scanLines(f, path, visit)
	if err != nil {
		f.Close()
		return nil, err
	}
	if torn > 0 {
		log.Warn("cutting a torn last line left by an interrupted run", "file", path, "bytes", torn)
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate torn line of %s: %w", path, err)
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek %s: %w", path, err)
	}
	return &journal{f: f, path: path}, nil
}

// scanLines reads r line by line (a byte-order mark at the start and CRLF
// line ends are accepted; blank lines are skipped) and calls visit with
// each complete line. It returns the offset after the last complete line
// and the size of a trailing incomplete line.
func scanLines(r io.Reader, path string, visit func(line []byte) error) (good, torn int64, err error) {
	lr := jsonl.NewReader(r, maxLine)
	for {
		l, err := lr.Next()
		if errors.Is(err, io.EOF) {
			return good, torn, nil
		}
		if errors.Is(err, jsonl.ErrLineTooLong) {
			return good, 0, fmt.Errorf("read %s: %w", path, err)
		}
		if err != nil {
			return good, torn, fmt.Errorf("read %s after line %d: %w", path, l.Number, err)
		}
		if !l.Ended {
			torn = l.Size
			continue
		}
		if len(l.Text) > 0 {
			if err := visit(l.Text); err != nil {
				return good, 0, fmt.Errorf("read %s line %d: %w", path, l.Number, err)
			}
		}
		good += l.Size
	}
}

// append writes v as one line and flushes it to the operating system.
func (j *journal) append(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line
		return fmt.Errorf("encode record for %s: %w", j.path, err)
	}
	b := buf.Bytes()
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(b); err != nil {
		return fmt.Errorf("append to %s: %w", j.path, err)
	}
	return nil
}

func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.f.Sync(); err != nil {
		j.f.Close()
		return fmt.Errorf("sync %s: %w", j.path, err)
	}
	if err := j.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", j.path, err)
	}
	return nil
}

// readJSONL decodes every complete line of path into a T. A torn last line
// (an interrupted writer) is skipped with a warning, not repaired: only the
// stage owning the file repairs it. A missing file is an error that wraps
// fs.ErrNotExist.
func readJSONL[T any](path string, log *slog.Logger) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	var out []T
	_, torn, err := scanLines(f, path, func(line []byte) error {
		var v T
		if err := decodeStrictJSON(line, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if torn > 0 {
		log.Warn("ignoring a torn last line (rerun the stage that writes it)", "file", path, "bytes", torn)
	}
	return out, nil
}

// decodeStrictJSON decodes one JSON value, rejecting invalid UTF-8,
// unpaired surrogate escapes, unknown fields and trailing data.
func decodeStrictJSON(b []byte, v any) error {
	if err := jsonl.Check(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// writeJSONLAtomic writes one JSON line per record, atomically, creating
// the directory if needed.
func writeJSONLAtomic[T any](path string, records []T) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for i := range records {
			if err := enc.Encode(records[i]); err != nil {
				return fmt.Errorf("record %d: %w", i+1, err)
			}
		}
		return nil
	})
}

// writeJSONAtomic writes v as indented JSON, atomically, creating the
// directory if needed.
func writeJSONAtomic(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}

// loadEntries opens a stage's journal (removing it first when force is
// set) and decodes its entries strictly, keyed by key: the items already
// done, for a rerun to skip.
func loadEntries[T any](path string, force bool, log *slog.Logger, key func(T) string) (map[string]T, *journal, error) {
	if force {
		if err := removeIfExists(path); err != nil {
			return nil, nil, err
		}
	}
	entries := map[string]T{}
	j, err := openJournal(path, log, func(line []byte) error {
		var e T
		if err := decodeStrictJSON(line, &e); err != nil {
			return err
		}
		entries[key(e)] = e
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return entries, j, nil
}

// removeIfExists deletes path, ignoring a missing file.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

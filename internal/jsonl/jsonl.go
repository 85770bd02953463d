// Package jsonl reads JSON Lines files the way every fungtrain reader does
// (the training data in traindata, the pipeline's journals and outputs in
// data): a UTF-8 byte-order mark at the start of the file is dropped
// (editors on Windows write one), CRLF line ends are accepted, and Check
// refuses text that Go's encoding/json would otherwise decode silently
// into U+FFFD: invalid UTF-8 and JSON escapes of unpaired UTF-16
// surrogates.
package jsonl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// BOM is the UTF-8 encoding of the byte-order mark U+FEFF.
const BOM = "\xef\xbb\xbf"

// Line is one line of a JSONL file.
type Line struct {
	Number int // 1-based
	// Text is the line without leading and trailing white space (its line
	// end, CR included); empty for a blank line. It is valid until the next
	// call to Next.
	Text []byte
	// Ended says the line ended with '\n'; only a last line can lack one
	// (for a journal, a write cut short).
	Ended bool
	// Size is the number of bytes the line took in the file: its line end,
	// and on line 1 a byte-order mark, included.
	Size int64
}

// Reader reads a JSONL stream line by line.
type Reader struct {
	br      *bufio.Reader
	maxLine int
	n       int
}

// NewReader reads r. A line longer than maxLine bytes is an error; 0 means
// no limit.
func NewReader(r io.Reader, maxLine int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 1<<16), maxLine: maxLine}
}

// ErrLineTooLong is wrapped by Next's error for a line over the limit.
var ErrLineTooLong = errors.New("line too long")

// Next returns the next line, blank lines included (so callers can track
// offsets), or io.EOF after the last one. Other errors are those of the
// underlying reader, or ErrLineTooLong.
func (r *Reader) Next() (Line, error) {
	raw, err := r.br.ReadBytes('\n')
	if len(raw) == 0 {
		if err == nil {
			err = io.EOF // unreachable: ReadBytes returns data or an error
		}
		return Line{}, err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return Line{}, err
	}
	r.n++
	l := Line{Number: r.n, Size: int64(len(raw)), Ended: raw[len(raw)-1] == '\n'}
	if r.maxLine > 0 && len(raw) > r.maxLine {
		return l, fmt.Errorf("%w: line %d is longer than %d bytes", ErrLineTooLong, r.n, r.maxLine)
	}
	if r.n == 1 {
		raw = bytes.TrimPrefix(raw, []byte(BOM))
	}
	l.Text = bytes.TrimSpace(raw)
	return l, nil
}

// Check reports invalid UTF-8 in a JSON text, and \u escapes that encode an
// unpaired UTF-16 surrogate (a high surrogate not followed by an escaped
// low one, or a low one alone). encoding/json would replace both with
// U+FFFD without a word. Errors give the 0-based byte offset in line.
func Check(line []byte) error {
	if err := CheckUTF8(line); err != nil {
		return err
	}
	inString := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			if i+1 >= len(line) {
				return nil // bad JSON: the decoder reports it
			}
			if line[i+1] != 'u' {
				i++ // skip the escaped character (\" included)
				continue
			}
			u, ok := hex4(line, i+2)
			if !ok {
				return nil // bad JSON: the decoder reports it
			}
			switch {
			case u >= 0xDC00 && u <= 0xDFFF:
				return fmt.Errorf(`unpaired UTF-16 surrogate \u%04x at byte offset %d`, u, i)
			case u >= 0xD800 && u <= 0xDBFF:
				low, ok := hex4(line, i+8)
				if !ok || line[i+6] != '\\' || line[i+7] != 'u' || low < 0xDC00 || low > 0xDFFF {
					return fmt.Errorf(`unpaired UTF-16 surrogate \u%04x at byte offset %d`, u, i)
				}
				i += 11 // both escapes
			default:
				i += 5
			}
		}
	}
	return nil
}

// CheckUTF8 reports the first byte of b that is not part of valid UTF-8,
// by its 0-based offset.
func CheckUTF8(b []byte) error {
	if utf8.Valid(b) {
		return nil
	}
	off := 0
	for off < len(b) {
		r, size := utf8.DecodeRune(b[off:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		off += size
	}
	return fmt.Errorf("invalid UTF-8 at byte offset %d", off)
}

// hex4 reads the four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(b) {
		return 0, false
	}
	var v rune
	for _, c := range b[i : i+4] {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			v |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			v |= rune(c-'A') + 10
		default:
			return 0, false
		}
	}
	return v, true
}

package llama

import (
	"strings"
	"unicode/utf8"
)

// Byte-level BPE (GPT-2, Llama 3, SmolLM2) writes every byte of the text as
// one printable character: bytes that are already printable and not space
// keep their own code point, the other 68 are moved to U+0100 and up, in
// order. byteLevelRune is that table and runeByteLevel its inverse.
var byteLevelRune, runeByteLevel = buildByteLevelTables()

func buildByteLevelTables() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := make(map[rune]byte, 256)
	next := rune(256)
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		r := rune(b)
		if !printable {
			r = next
			next++
		}
		b2r[b] = r
		r2b[r] = byte(b)
	}
	return b2r, r2b
}

// pieceBytes is the raw bytes a token contributes under HF's ByteLevel
// decoder: each character mapped back to its byte, or, when any character
// is outside the table (an added token such as "<think> x" with a real
// space), the token's own UTF-8 bytes.
func pieceBytes(tok string) []byte {
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := runeByteLevel[r]
		if !ok {
			return []byte(tok)
		}
		out = append(out, b)
	}
	return out
}

// byteLevelEncode maps raw bytes to their byte-level token text (the
// inverse of pieceBytes for ordinary tokens).
func byteLevelEncode(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		sb.WriteRune(byteLevelRune[c])
	}
	return sb.String()
}

// utf8Scan looks at the sequence starting at b[0] (b non-empty) the way
// Rust's String::from_utf8_lossy does ("substitution of maximal subparts"):
// it returns the sequence length n and whether it is a valid character.
// An invalid maximal subpart (n bytes) becomes one U+FFFD. incomplete is
// set when b ends inside a sequence that more bytes could still complete.
func utf8Scan(b []byte) (n int, valid, incomplete bool) {
	c := b[0]
	if c < 0x80 {
		return 1, true, false
	}
	need, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 2
	case c == 0xE0:
		need, lo = 3, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 3
	case c == 0xED:
		need, hi = 3, 0x9F
	case c == 0xF0:
		need, lo = 4, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 4
	case c == 0xF4:
		need, hi = 4, 0x8F
	default:
		return 1, false, false
	}
	for k := 1; k < need; k++ {
		if k >= len(b) {
			return k, false, true
		}
		l, h := byte(0x80), byte(0xBF)
		if k == 1 {
			l, h = lo, hi
		}
		if b[k] < l || b[k] > h {
			return k, false, false
		}
	}
	return need, true, false
}

// appendLossy appends b to dst with every invalid maximal subpart replaced
// by U+FFFD, like Rust's String::from_utf8_lossy (which HF's ByteLevel
// decoder uses).
func appendLossy(dst, b []byte) []byte {
	for len(b) > 0 {
		n, valid, _ := utf8Scan(b)
		if valid {
			dst = append(dst, b[:n]...)
		} else {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		}
		b = b[n:]
	}
	return dst
}

// StreamDecoder turns a stream of token ids into text piece by piece, for
// printing tokens as they are generated. A character whose UTF-8 bytes are
// split across tokens (emoji, CJK, ... in byte-level BPE) is held back until
// it is complete, so every returned string is valid UTF-8, and the
// concatenation of everything Add and Flush return equals Decode of all the
// ids.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte // byte-level: bytes not yet returned

	// Other decoders: ids so far and the length of the text returned.
	ids     []int32
	emitted int
	held    int
}

// NewStreamDecoder starts a streaming detokenizer.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// maxHeldTokens bounds how long the generic (non-byte-level) path waits for a
// trailing U+FFFD to resolve before returning it.
const maxHeldTokens = 8

// Add feeds one id and returns the text that is now complete (possibly "").
func (d *StreamDecoder) Add(id int32) string {
	t := d.t
	if t.byteLevel {
		if id >= 0 && int(id) < len(t.pieces) {
			d.pending = append(d.pending, t.pieces[id]...)
		}
		return d.drain(false)
	}
	d.ids = append(d.ids, id)
	text := t.Decode(d.ids)
	if strings.HasSuffix(text, "\uFFFD") && d.held < maxHeldTokens {
		d.held++
		return ""
	}
	d.held = 0
	return d.emitFrom(text)
}

// Flush returns whatever is held back; an unfinished UTF-8 sequence becomes
// U+FFFD, as in Decode. The decoder can be used again afterwards.
func (d *StreamDecoder) Flush() string {
	if d.t.byteLevel {
		return d.drain(true)
	}
	d.held = 0
	return d.emitFrom(d.t.Decode(d.ids))
}

func (d *StreamDecoder) emitFrom(text string) string {
	if d.emitted > len(text) {
		// A longer decode shortened the text (a decoder that rewrites
		// earlier output); nothing sensible can be appended.
		d.emitted = len(text)
		return ""
	}
	out := text[d.emitted:]
	d.emitted = len(text)
	return out
}

// drain returns the longest prefix of pending that is settled: complete
// characters and invalid subparts that no later byte can change. With final,
// everything is returned.
func (d *StreamDecoder) drain(final bool) string {
	b := d.pending
	cut := 0
	for cut < len(b) {
		n, _, incomplete := utf8Scan(b[cut:])
		if incomplete && !final {
			break
		}
		cut += n
	}
	if cut == 0 {
		return ""
	}
	out := string(appendLossy(nil, b[:cut]))
	d.pending = append(d.pending[:0], b[cut:]...)
	return out
}

package llama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Stop tokens. Generation ends on any token of the union of:
//   - eos_token_id of generation_config.json and of config.json (an int or a
//     list: Llama 3.1+ lists <|end_of_text|>, <|eom_id|> and <|eot_id|>);
//   - tokenizer_config.json's eos_token;
//   - for GGUF, tokenizer.ggml.eos_token_id, eot_token_id and eom_token_id;
//   - the chat template's end-of-turn token (<|eot_id|>, <|im_end|>), so that
//     a chat answer stops at the end of its turn even when the model's
//     config names only <|end_of_text|> (as the Llama 3.0 configs do).
//
// The union (rather than the first source found) is what mlx-lm and
// transformers effectively stop on, and it is never wrong to stop on an
// end-of-turn or end-of-text token.

// readEOSTokenIDs reads eos_token_id (an int, a list of ints, or null) from
// a generation_config.json or config.json; a missing file gives no ids.
func readEOSTokenIDs(path string) ([]int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ids, err := parseEOSField(f.EOS)
	if err != nil {
		return nil, fmt.Errorf("%s: eos_token_id: %w", path, err)
	}
	return ids, nil
}

// parseEOSField parses an eos_token_id value: an int, a list of ints, or null.
func parseEOSField(raw json.RawMessage) ([]int64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int64
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int64{one}, nil
	}
	var list []int64
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("want an integer or a list of integers, got %s", abbrev(string(raw), 60))
	}
	return list, nil
}

// ggufStopKeys are the GGUF keys holding stop token ids.
var ggufStopKeys = []string{
	"tokenizer.ggml.eos_token_id",
	"tokenizer.ggml.eot_token_id",
	"tokenizer.ggml.eom_token_id",
}

// ggufStopIDs reads the stop token ids of a GGUF file's metadata.
func ggufStopIDs(info *GGUFInfo) (ids []int64, sources []string, err error) {
	for _, k := range ggufStopKeys {
		if !info.Has(k) {
			continue
		}
		id, err := info.Int(k)
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, id)
		sources = append(sources, info.Path+" "+k)
	}
	return ids, sources, nil
}

// stopIDs computes the sorted, de-duplicated stop set of a tokenizer from
// what its loader read and its chat template.
func (t *Tokenizer) stopIDs(meta tokenizerMeta) ([]int32, error) {
	set := map[int32]bool{}
	for i, id := range meta.eosIDs {
		if id < 0 || id >= int64(t.vocabSize) {
			return nil, fmt.Errorf("%s: eos token id %d is outside the vocabulary (size %d)", meta.eosSources[i], id, t.vocabSize)
		}
		set[int32(id)] = true
	}
	for _, tok := range meta.eosTokens {
		id, ok := t.TokenID(tok)
		if !ok {
			return nil, fmt.Errorf("eos token %q is not in the vocabulary", tok)
		}
		set[id] = true
	}
	if t.chat != nil {
		if id, ok := t.TokenID(t.chat.EndOfTurn); ok {
			set[id] = true
		}
	}
	ids := make([]int32, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// StopStrings passes generated text through until it contains one of the
// stop strings, holding back any tail that could be the start of one, so a
// stop string split across tokens is never returned.
type StopStrings struct {
	stops []string
	held  string
	done  bool
}

// NewStopStrings returns a matcher for stops; empty strings are ignored.
func NewStopStrings(stops []string) *StopStrings {
	m := &StopStrings{}
	for _, s := range stops {
		if s != "" {
			m.stops = append(m.stops, s)
		}
	}
	return m
}

// Push adds text and returns what can be passed on now, and whether a stop
// string was found (the text returned then ends just before it).
func (f *StopStrings) Push(s string) (string, bool) {
	if f.done {
		return "", true
	}
	buf := f.held + s
	cut := -1
	for _, stop := range f.stops {
		if i := strings.Index(buf, stop); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		f.held, f.done = "", true
		return buf[:cut], true
	}
	hold := 0
	for _, stop := range f.stops {
		for k := min(len(stop)-1, len(buf)); k > hold; k-- {
			if strings.HasSuffix(buf, stop[:k]) {
				hold = k
				break
			}
		}
	}
	f.held = buf[len(buf)-hold:]
	return buf[:len(buf)-hold], false
}

// Flush returns the held-back text at the end of generation.
func (f *StopStrings) Flush() string {
	s := f.held
	f.held = ""
	return s
}

// TextStream turns generated token ids into text as they come, ending at
// the first stop string: a streaming detokenizer followed by a StopStrings
// matcher. Every piece it returns is valid UTF-8 and never contains (a
// beginning of) a stop string.
type TextStream struct {
	dec     *StreamDecoder
	stops   *StopStrings
	stopped bool
}

// NewTextStream starts a text stream over t's vocabulary.
func (t *Tokenizer) NewTextStream(stops []string) *TextStream {
	return &TextStream{dec: t.NewStreamDecoder(), stops: NewStopStrings(stops)}
}

// Add feeds one generated id and returns the text that is now settled, and
// whether a stop string ended the text (the text returned then ends just
// before it, and later calls return nothing).
func (s *TextStream) Add(id int32) (string, bool) {
	if s.stopped {
		return "", true
	}
	text, hit := s.stops.Push(s.dec.Add(id))
	s.stopped = hit
	return text, hit
}

// Finish returns the text still held back at the end of generation.
func (s *TextStream) Finish() string {
	if s.stopped {
		return ""
	}
	text, hit := s.stops.Push(s.dec.Flush())
	if hit {
		s.stopped = true
		return text
	}
	return text + s.stops.Flush()
}

// Stopped reports whether a stop string ended the text.
func (s *TextStream) Stopped() bool { return s.stopped }

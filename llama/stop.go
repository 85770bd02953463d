package llama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
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

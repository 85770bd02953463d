package llama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// A GGUF file carries its tokenizer as tokenizer.ggml.* metadata. For the
// byte-level BPE tokenizers of Llama 3 and SmolLM2 (tokenizer.ggml.model
// "gpt2") TokenizerFromGGUF rebuilds the equivalent HF tokenizer.json in
// memory and loads it into the same HF library as LoadTokenizer, so GGUF and
// HF checkpoints tokenize identically:
//
//   - model: BPE with the vocabulary tokenizer.ggml.tokens (every token,
//     special ones included, at its GGUF id) and the merges
//     tokenizer.ggml.merges ("a b" strings);
//   - added tokens: the tokens whose tokenizer.ggml.token_type is CONTROL
//     (special) or USER_DEFINED (not special), so they are matched whole in
//     text, e.g. "<|eot_id|>" in a rendered chat template;
//   - pre-tokenizer, from tokenizer.ggml.pre (what llama.cpp's converter
//     writes for each known tokenizer):
//     "llama-bpe"/"llama3": Llama 3's split regex, then ByteLevel without its
//     own regex, and ignore_merges (a word in the vocabulary is one token),
//     as in Meta's tokenizer.json;
//     "smollm"/"starcoder": every digit split off alone (Digits with
//     individual_digits), then ByteLevel with the GPT-2 regex;
//     "gpt2"/"default": ByteLevel with the GPT-2 regex;
//     any other value is an error naming it;
//   - post-processor: adds the BOS (EOS) when tokenizer.ggml.add_bos_token
//     (add_eos_token) is true, like the TemplateProcessing of Llama 3.2's
//     tokenizer.json;
//   - decoder: ByteLevel.

// GGUF token types (llama.cpp's llama_token_type).
const (
	ggufTokenNormal      = 1
	ggufTokenUnknown     = 2
	ggufTokenControl     = 3
	ggufTokenUserDefined = 4
	ggufTokenUnused      = 5
	ggufTokenByte        = 6
)

// llama3SplitRegex is the pre-tokenizer regex of Llama 3's tokenizer.json.
const llama3SplitRegex = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// ggufPreTokenizer maps a tokenizer.ggml.pre value to the tokenizer.json
// pre_tokenizer and whether BPE ignore_merges is set.
func ggufPreTokenizer(pre string) (any, bool, error) {
	byteLevel := func(useRegex bool) map[string]any {
		return map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": useRegex}
	}
	switch pre {
	case "llama-bpe", "llama3":
		return map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3SplitRegex}, "behavior": "Isolated", "invert": false},
			byteLevel(false),
		}}, true, nil
	case "smollm", "starcoder":
		return map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Digits", "individual_digits": true},
			byteLevel(true),
		}}, false, nil
	case "gpt2", "default":
		return byteLevel(true), false, nil
	}
	return nil, false, fmt.Errorf("unknown tokenizer.ggml.pre %q: the pre-tokenizer for it is not known (supported: llama-bpe, llama3, smollm, starcoder, gpt2, default)", pre)
}

// TokenizerFromGGUF builds the tokenizer of a GGUF file from its
// tokenizer.ggml.* metadata (see above), with its chat template
// (tokenizer.chat_template) and stop tokens.
func TokenizerFromGGUF(info *GGUFInfo, opts ...TokenizerOption) (*Tokenizer, error) {
	if info == nil {
		return nil, fmt.Errorf("tokenizer from GGUF: no GGUF info")
	}
	data, meta, err := ggufTokenizerJSON(info)
	if err != nil {
		return nil, fmt.Errorf("tokenizer from GGUF %s: %w", info.Path, err)
	}
	return newTokenizer(info.Path, data, meta, opts)
}

// GGUFTokenizerJSON returns the HF tokenizer.json that TokenizerFromGGUF
// builds from a GGUF file's metadata (for inspection and for loading it into
// other HF-compatible tools).
func GGUFTokenizerJSON(info *GGUFInfo) ([]byte, error) {
	data, _, err := ggufTokenizerJSON(info)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json from GGUF %s: %w", info.Path, err)
	}
	return data, nil
}

// ggufTokenizerJSON builds tokenizer.json bytes and the tokenizer metadata.
func ggufTokenizerJSON(info *GGUFInfo) ([]byte, tokenizerMeta, error) {
	var meta tokenizerMeta
	model, err := info.String("tokenizer.ggml.model")
	if err != nil {
		return nil, meta, err
	}
	if model != "gpt2" {
		what := ""
		if model == "llama" {
			what = " (SentencePiece, as in Llama 1/2)"
		}
		return nil, meta, fmt.Errorf("tokenizer.ggml.model is %q%s; only \"gpt2\" (byte-level BPE, as in Llama 3) is supported", model, what)
	}
	if !info.Has("tokenizer.ggml.pre") {
		return nil, meta, fmt.Errorf("the GGUF has no tokenizer.ggml.pre, so its pre-tokenizer is unknown; reconvert it with a current llama.cpp")
	}
	pre, err := info.String("tokenizer.ggml.pre")
	if err != nil {
		return nil, meta, err
	}
	preTok, ignoreMerges, err := ggufPreTokenizer(pre)
	if err != nil {
		return nil, meta, err
	}
	tokens, err := info.Strings("tokenizer.ggml.tokens")
	if err != nil {
		return nil, meta, err
	}
	if len(tokens) == 0 {
		return nil, meta, fmt.Errorf("tokenizer.ggml.tokens is empty")
	}
	types := make([]int64, len(tokens))
	for i := range types {
		types[i] = ggufTokenNormal
	}
	if info.Has("tokenizer.ggml.token_type") {
		if types, err = info.Ints("tokenizer.ggml.token_type"); err != nil {
			return nil, meta, err
		}
		if len(types) != len(tokens) {
			return nil, meta, fmt.Errorf("tokenizer.ggml.token_type has %d entries for %d tokens", len(types), len(tokens))
		}
	}
	merges, err := info.Strings("tokenizer.ggml.merges")
	if err != nil {
		return nil, meta, err
	}

	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	put := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1) // Encode's newline
		return nil
	}

	b.WriteString(`{"version":"1.0","truncation":null,"padding":null,"added_tokens":[`)
	seen := make(map[string]int, len(tokens))
	nAdded := 0
	for id, tok := range tokens {
		if !utf8.ValidString(tok) {
			return nil, meta, fmt.Errorf("tokenizer.ggml.tokens[%d] is not valid UTF-8", id)
		}
		if tok == "" {
			return nil, meta, fmt.Errorf("tokenizer.ggml.tokens[%d] is empty", id)
		}
		if prev, dup := seen[tok]; dup {
			return nil, meta, fmt.Errorf("tokenizer.ggml.tokens[%d] %q duplicates token %d", id, tok, prev)
		}
		seen[tok] = id
		tt := types[id]
		if tt != ggufTokenControl && tt != ggufTokenUserDefined {
			continue
		}
		if nAdded > 0 {
			b.WriteByte(',')
		}
		nAdded++
		if err := put(map[string]any{
			"id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
			"normalized": false, "special": tt == ggufTokenControl,
		}); err != nil {
			return nil, meta, err
		}
	}
	b.WriteString(`],"normalizer":null,"pre_tokenizer":`)
	if err := put(preTok); err != nil {
		return nil, meta, err
	}

	tokenAt := func(key string) (string, bool, error) {
		if !info.Has(key) {
			return "", false, nil
		}
		id, err := info.Int(key)
		if err != nil {
			return "", false, err
		}
		if id < 0 || id >= int64(len(tokens)) {
			return "", false, fmt.Errorf("%s is %d, outside the %d tokens", key, id, len(tokens))
		}
		return tokens[id], true, nil
	}
	addFlag := func(key string) (bool, error) {
		if !info.Has(key) {
			return false, nil
		}
		return info.Bool(key)
	}
	bos, hasBOS, err := tokenAt("tokenizer.ggml.bos_token_id")
	if err != nil {
		return nil, meta, err
	}
	eos, hasEOS, err := tokenAt("tokenizer.ggml.eos_token_id")
	if err != nil {
		return nil, meta, err
	}
	addBOS, err := addFlag("tokenizer.ggml.add_bos_token")
	if err != nil {
		return nil, meta, err
	}
	addEOS, err := addFlag("tokenizer.ggml.add_eos_token")
	if err != nil {
		return nil, meta, err
	}
	if addBOS && !hasBOS {
		return nil, meta, fmt.Errorf("tokenizer.ggml.add_bos_token is set but tokenizer.ggml.bos_token_id is missing")
	}
	if addEOS && !hasEOS {
		return nil, meta, fmt.Errorf("tokenizer.ggml.add_eos_token is set but tokenizer.ggml.eos_token_id is missing")
	}
	b.WriteString(`,"post_processor":`)
	byteLevelPost := map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}
	if addBOS || addEOS {
		var single, pair []any
		special := map[string]any{}
		piece := func(tok string, typeID int) {
			special[tok] = map[string]any{"id": tok, "ids": []int{seen[tok]}, "tokens": []string{tok}}
			single = append(single, map[string]any{"SpecialToken": map[string]any{"id": tok, "type_id": typeID}})
		}
		seq := func(name string, typeID int) map[string]any {
			return map[string]any{"Sequence": map[string]any{"id": name, "type_id": typeID}}
		}
		if addBOS {
			piece(bos, 0)
		}
		single = append(single, seq("A", 0))
		if addEOS {
			piece(eos, 0)
		}
		pair = append(pair, single...)
		if addBOS {
			pair = append(pair, map[string]any{"SpecialToken": map[string]any{"id": bos, "type_id": 1}})
		}
		pair = append(pair, seq("B", 1))
		if addEOS {
			pair = append(pair, map[string]any{"SpecialToken": map[string]any{"id": eos, "type_id": 1}})
		}
		if err := put(map[string]any{"type": "Sequence", "processors": []any{
			byteLevelPost,
			map[string]any{"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special},
		}}); err != nil {
			return nil, meta, err
		}
	} else if err := put(byteLevelPost); err != nil {
		return nil, meta, err
	}

	b.WriteString(`,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}`)
	b.WriteString(`,"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":`)
	if err := put(ignoreMerges); err != nil {
		return nil, meta, err
	}
	b.WriteString(`,"vocab":{`)
	for id, tok := range tokens {
		if id > 0 {
			b.WriteByte(',')
		}
		if err := put(tok); err != nil {
			return nil, meta, err
		}
		fmt.Fprintf(&b, ":%d", id)
	}
	b.WriteString(`},"merges":[`)
	for i, m := range merges {
		// Tokens never contain a space (byte-level BPE writes it as Ġ), so
		// the first space after the first character separates the pair.
		sp := -1
		if len(m) > 1 {
			if j := strings.IndexByte(m[1:], ' '); j >= 0 {
				sp = j + 1
			}
		}
		if sp < 0 || sp == len(m)-1 {
			return nil, meta, fmt.Errorf("tokenizer.ggml.merges[%d] %q is not two tokens separated by a space", i, m)
		}
		left, right := m[:sp], m[sp+1:]
		for _, part := range []string{left, right, left + right} {
			if _, ok := seen[part]; !ok {
				return nil, meta, fmt.Errorf("tokenizer.ggml.merges[%d] %q: %q is not a token", i, m, part)
			}
		}
		if i > 0 {
			b.WriteByte(',')
		}
		if err := put([]string{left, right}); err != nil {
			return nil, meta, err
		}
	}
	b.WriteString(`]}}`)

	if hasBOS {
		meta.bosToken = bos
	}
	if meta.eosIDs, meta.eosSources, err = ggufStopIDs(info); err != nil {
		return nil, meta, err
	}
	if info.Has("tokenizer.chat_template") {
		if meta.chatText, err = info.String("tokenizer.chat_template"); err != nil {
			return nil, meta, err
		}
		meta.chatSource = info.Path + " tokenizer.chat_template"
	}
	return b.Bytes(), meta, nil
}

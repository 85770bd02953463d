package llama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/fungtrain/fungtrain/internal/gguf"
)

// The other direction: the tokenizer.* metadata a GGUF file gets, and the
// HF tokenizer files a directory written from a GGUF model gets.

// TokenizerGGUFKeys returns the tokenizer.* metadata for writing b's model
// as GGUF: copied, in order, from the GGUF file it came from, or built from
// the model directory's tokenizer.json and tokenizer_config.json as
// llama.cpp's converter builds it (ggufKeysFromHF).
func TokenizerGGUFKeys(b *Bundle) ([]GGUFKV, error) {
	if b.GGUF != nil {
		var kvs []GGUFKV
		for _, k := range b.GGUF.Keys {
			if strings.HasPrefix(k, "tokenizer.") {
				kvs = append(kvs, GGUFKV{k, b.GGUF.Metadata[k]})
			}
		}
		return kvs, nil
	}
	kvs, err := ggufKeysFromHF(b.Path, b.Tokenizer, b.Model.Config)
	if err != nil {
		return nil, fmt.Errorf("tokenizer metadata from %s: %w", b.Path, err)
	}
	return kvs, nil
}

// hfTokenizerExport is the part of tokenizer.json the GGUF export reads.
type hfTokenizerExport struct {
	AddedTokens   []hfAddedToken  `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         struct {
		Type         string           `json:"type"`
		Vocab        map[string]int64 `json:"vocab"`
		Merges       json.RawMessage  `json:"merges"`
		IgnoreMerges bool             `json:"ignore_merges"`
		ByteFallback bool             `json:"byte_fallback"`
	} `json:"model"`
}

// hfSpecialTokens is the part of tokenizer_config.json about special tokens.
type hfSpecialTokens struct {
	BOS         json.RawMessage `json:"bos_token"`
	EOS         json.RawMessage `json:"eos_token"`
	Pad         json.RawMessage `json:"pad_token"`
	Unk         json.RawMessage `json:"unk_token"`
	AddBOSToken *bool           `json:"add_bos_token"`
	AddEOSToken *bool           `json:"add_eos_token"`
}

// ggufPreOf names the llama.cpp pre-tokenizer of a tokenizer.json: the one
// whose TokenizerFromGGUF form (ggufPreTokenizer) it has, so that a file
// written by the export and read back tokenizes the same.
func ggufPreOf(tj *hfTokenizerExport) (string, error) {
	var got any
	if err := json.Unmarshal(tj.PreTokenizer, &got); err != nil {
		return "", fmt.Errorf("tokenizer.json pre_tokenizer: %w", err)
	}
	for _, name := range []string{"llama-bpe", "smollm", "gpt2"} {
		form, ignoreMerges, _ := ggufPreTokenizer(name)
		b, _ := json.Marshal(form)
		var want any
		json.Unmarshal(b, &want)
		if reflect.DeepEqual(got, want) && ignoreMerges == tj.Model.IgnoreMerges {
			return name, nil
		}
	}
	return "", fmt.Errorf("tokenizer.json's pre_tokenizer (ignore_merges %v) is none of those llama.cpp names that fungtrain knows (llama-bpe for Llama 3, smollm, gpt2): %s",
		tj.Model.IgnoreMerges, abbrev(string(tj.PreTokenizer), 200))
}

// ggufKeysFromHF builds tokenizer.* metadata from a model directory: the
// vocabulary padded to the model's vocab_size with "[PADn]" tokens (type
// unused), token types (control for special added tokens, user-defined for
// the other added tokens, normal otherwise), merges as "a b", the
// pre-tokenizer's llama.cpp name, the special token ids of
// tokenizer_config.json, add_bos/add_eos (its flags, else what the
// post-processor adds) and the chat template.
func ggufKeysFromHF(dir string, tok *Tokenizer, cfg *Config) ([]GGUFKV, error) {
	data, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	var tj hfTokenizerExport
	if err := json.Unmarshal(data, &tj); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if tj.Model.Type != "BPE" || !isByteLevelDecoder(tj.Decoder) || tj.Model.ByteFallback {
		return nil, fmt.Errorf("tokenizer.json is a %s model (byte-level decoder %v, byte_fallback %v); GGUF export writes byte-level BPE tokenizers (Llama 3, SmolLM2, GPT-2 style)",
			tj.Model.Type, isByteLevelDecoder(tj.Decoder), tj.Model.ByteFallback)
	}
	if n := bytes.TrimSpace(tj.Normalizer); len(n) > 0 && string(n) != "null" {
		return nil, fmt.Errorf("tokenizer.json has a normalizer (%s), which llama.cpp's gpt2 tokenizer does not apply", abbrev(string(n), 80))
	}
	pre, err := ggufPreOf(&tj)
	if err != nil {
		return nil, err
	}
	size := cfg.VocabSize
	tokens := make([]string, size)
	types := make([]int32, size)
	put := func(id int64, s string, typ int32) error {
		if id < 0 || id >= int64(size) {
			return fmt.Errorf("tokenizer.json: token %q has id %d, outside the model's vocab_size %d", s, id, size)
		}
		tokens[id], types[id] = s, typ
		return nil
	}
	for s, id := range tj.Model.Vocab {
		if err := put(id, s, ggufTokenNormal); err != nil {
			return nil, err
		}
	}
	for _, a := range tj.AddedTokens {
		typ := int32(ggufTokenUserDefined)
		if a.Special {
			typ = ggufTokenControl
		}
		if err := put(a.ID, a.Content, typ); err != nil {
			return nil, err
		}
	}
	for id := range tokens {
		if tokens[id] == "" {
			tokens[id], types[id] = fmt.Sprintf("[PAD%d]", id), ggufTokenUnused
		}
	}
	merges, err := hfMerges(tj.Model.Merges)
	if err != nil {
		return nil, err
	}
	var special hfSpecialTokens
	if b, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json")); err == nil {
		if err := json.Unmarshal(b, &special); err != nil {
			return nil, fmt.Errorf("tokenizer_config.json: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	kvs := []GGUFKV{
		{"tokenizer.ggml.model", gguf.String("gpt2")},
		{"tokenizer.ggml.pre", gguf.String(pre)},
		{"tokenizer.ggml.tokens", gguf.Strings(tokens)},
		{"tokenizer.ggml.token_type", gguf.Int32s(types)},
		{"tokenizer.ggml.merges", gguf.Strings(merges)},
	}
	ids := map[string]int32{}
	for _, s := range []struct {
		key string
		raw json.RawMessage
	}{{"bos", special.BOS}, {"eos", special.EOS}, {"unknown", special.Unk}, {"padding", special.Pad}} {
		text, err := tokenText(s.raw)
		if err != nil {
			return nil, fmt.Errorf("tokenizer_config.json %s token: %w", s.key, err)
		}
		if text == "" {
			continue
		}
		id, ok := tok.TokenID(text)
		if !ok {
			return nil, fmt.Errorf("tokenizer_config.json %s token %q is not in the vocabulary", s.key, text)
		}
		ids[s.key] = id
	}
	if _, ok := ids["bos"]; !ok && tok.BOS() >= 0 {
		ids["bos"] = tok.BOS()
	}
	if _, ok := ids["eos"]; !ok && len(cfg.EOSTokenID) > 0 {
		ids["eos"] = int32(cfg.EOSTokenID[0])
	}
	for _, k := range []string{"bos", "eos", "unknown", "padding"} {
		if id, ok := ids[k]; ok {
			kvs = append(kvs, GGUFKV{"tokenizer.ggml." + k + "_token_id", gguf.Uint32(uint32(id))})
		}
	}
	addBOS, addEOS := postProcessorAdds(tj.PostProcessor, tokenAt(tokens, ids, "bos"), tokenAt(tokens, ids, "eos"))
	if special.AddBOSToken != nil {
		addBOS = *special.AddBOSToken
	}
	if special.AddEOSToken != nil {
		addEOS = *special.AddEOSToken
	}
	kvs = append(kvs, GGUFKV{"tokenizer.ggml.add_bos_token", gguf.Bool(addBOS)}, GGUFKV{"tokenizer.ggml.add_eos_token", gguf.Bool(addEOS)})
	if tok.chatText != "" {
		kvs = append(kvs, GGUFKV{"tokenizer.chat_template", gguf.String(tok.chatText)})
	}
	return kvs, nil
}

func tokenAt(tokens []string, ids map[string]int32, key string) string {
	if id, ok := ids[key]; ok {
		return tokens[id]
	}
	return ""
}

// hfMerges reads tokenizer.json merges: "a b" strings or ["a", "b"] pairs.
func hfMerges(raw json.RawMessage) ([]string, error) {
	var asStrings []string
	if err := json.Unmarshal(raw, &asStrings); err == nil {
		return asStrings, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("tokenizer.json model.merges is neither strings nor pairs: %w", err)
	}
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p[0] + " " + p[1]
	}
	return out, nil
}

// postProcessorAdds reports whether a tokenizer.json post-processor puts
// bos before (eos after) a single sequence: a TemplateProcessing, alone or
// in a Sequence.
func postProcessorAdds(raw json.RawMessage, bos, eos string) (addBOS, addEOS bool) {
	var pp struct {
		Type       string            `json:"type"`
		Processors []json.RawMessage `json:"processors"`
		Single     []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
		} `json:"single"`
	}
	if json.Unmarshal(raw, &pp) != nil {
		return false, false
	}
	switch pp.Type {
	case "Sequence":
		for _, p := range pp.Processors {
			b, e := postProcessorAdds(p, bos, eos)
			addBOS, addEOS = addBOS || b, addEOS || e
		}
	case "TemplateProcessing":
		if n := len(pp.Single); n > 0 {
			first, last := pp.Single[0].SpecialToken, pp.Single[n-1].SpecialToken
			addBOS = first != nil && bos != "" && first.ID == bos
			addEOS = last != nil && eos != "" && last.ID == eos
		}
	}
	return addBOS, addEOS
}

// GGUFTokenizerConfig returns the tokenizer_config.json of a GGUF file's
// tokenizer, for an HF directory written from it: the special tokens (bos,
// eos, unk, pad), add_bos/add_eos, the added tokens, the chat template and
// the context length, so that transformers' AutoTokenizer reports the same
// special tokens as llama.cpp reads from the file.
func GGUFTokenizerConfig(info *gguf.Info) ([]byte, error) {
	tokens, err := info.Strings("tokenizer.ggml.tokens")
	if err != nil {
		return nil, err
	}
	var types []int64
	if info.Has("tokenizer.ggml.token_type") {
		if types, err = info.Ints("tokenizer.ggml.token_type"); err != nil {
			return nil, err
		}
	}
	cfg := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"clean_up_tokenization_spaces": false,
		"model_input_names":            []string{"input_ids", "attention_mask"},
	}
	if n, err := info.Uint(info.ArchKey("context_length")); err == nil {
		cfg["model_max_length"] = n
	}
	added := map[string]any{}
	for id, tt := range types {
		if (tt == ggufTokenControl || tt == ggufTokenUserDefined) && id < len(tokens) {
			added[strconv.Itoa(id)] = map[string]any{"content": tokens[id], "lstrip": false, "normalized": false,
				"rstrip": false, "single_word": false, "special": tt == ggufTokenControl}
		}
	}
	cfg["added_tokens_decoder"] = added
	for _, s := range []struct{ key, name string }{{"bos", "bos_token"}, {"eos", "eos_token"}, {"unknown", "unk_token"}, {"padding", "pad_token"}} {
		k := "tokenizer.ggml." + s.key + "_token_id"
		if !info.Has(k) {
			continue
		}
		id, err := info.Int(k)
		if err != nil {
			return nil, err
		}
		if id < 0 || id >= int64(len(tokens)) {
			return nil, fmt.Errorf("gguf %s: %s is %d, outside the %d tokens", info.Path, k, id, len(tokens))
		}
		cfg[s.name] = tokens[id]
	}
	for _, s := range []string{"bos", "eos"} {
		k := "tokenizer.ggml.add_" + s + "_token"
		v := false
		if info.Has(k) {
			if v, err = info.Bool(k); err != nil {
				return nil, err
			}
		}
		cfg["add_"+s+"_token"] = v
	}
	if info.Has("tokenizer.chat_template") {
		tmpl, err := info.String("tokenizer.chat_template")
		if err != nil {
			return nil, err
		}
		cfg["chat_template"] = tmpl
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

package llama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Tokenizer turns text into token ids and back. It wraps the Hugging Face
// tokenizers library (through the binding in hftokenizer.go) loaded from a
// tokenizer.json, either the model's own or one built from GGUF metadata,
// and adds what that library does not expose: token lookups, the special
// token ids, stop tokens, the chat template and a streaming detokenizer.
//
// Encode, Decode and the lookups are safe for concurrent use; Close is not.
type Tokenizer struct {
	hf   *hfTokenizer
	name string // where it was loaded from, for errors

	vocab     map[string]int32 // token text (as in tokenizer.json) -> id
	tokens    []string         // id -> token text; "" where no token has the id
	special   []bool           // id -> an added token marked special
	vocabSize int

	// byteLevel is set when the decoder is HF's ByteLevel: a token's text
	// then maps to raw bytes through the GPT-2 byte<->unicode table, and
	// decoding is done exactly in Go (see pieceBytes).
	byteLevel bool
	pieces    [][]byte

	bos  int32   // -1 when the tokenizer has no BOS token
	eos  []int32 // sorted ids that end generation (see stop.go)
	opts tokenizerOptions

	chatText   string // the jinja chat template, "" if none
	chatSource string // where chatText came from
	chat       *ChatTemplate
	chatErr    error
}

// TokenizerOption configures LoadTokenizer and TokenizerFromGGUF.
type TokenizerOption func(*tokenizerOptions)

type tokenizerOptions struct {
	chatFormat ChatFormat
	now        func() time.Time
}

// WithChatFormat forces the chat format instead of recognising it from the
// model's template (the --chat-format flag). ChatFormatAuto recognises it.
func WithChatFormat(f ChatFormat) TokenizerOption {
	return func(o *tokenizerOptions) { o.chatFormat = f }
}

// WithChatClock sets the clock used by chat templates that print today's
// date (Llama 3.2's strftime_now); the default is time.Now.
func WithChatClock(now func() time.Time) TokenizerOption {
	return func(o *tokenizerOptions) { o.now = now }
}

// tokenizerMeta is what a loader learned besides tokenizer.json itself.
type tokenizerMeta struct {
	bosToken   string // BOS token text, "" if none
	eosTokens  []string
	eosIDs     []int64  // from generation_config.json / config.json / GGUF
	eosSources []string // where each eosIDs entry came from, for errors
	chatText   string
	chatSource string
}

// hfTokenizerFile is the part of tokenizer.json that the Go side reads.
type hfTokenizerFile struct {
	AddedTokens []hfAddedToken  `json:"added_tokens"`
	Decoder     json.RawMessage `json:"decoder"`
	Model       struct {
		Type  string          `json:"type"`
		Vocab json.RawMessage `json:"vocab"`
	} `json:"model"`
}

type hfAddedToken struct {
	ID      int64  `json:"id"`
	Content string `json:"content"`
	Special bool   `json:"special"`
}

// LoadTokenizer loads the tokenizer of an HF model directory: tokenizer.json
// (required), tokenizer_config.json (BOS/EOS tokens and the chat template),
// chat_template.jinja (which takes precedence over tokenizer_config's
// template, as in transformers), and the stop tokens of
// generation_config.json and config.json.
func LoadTokenizer(modelDir string, opts ...TokenizerOption) (*Tokenizer, error) {
	st, err := os.Stat(modelDir)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	if !st.IsDir() {
		if strings.HasSuffix(strings.ToLower(modelDir), ".gguf") {
			return nil, fmt.Errorf("load tokenizer: %s is a GGUF file: read it with ReadGGUFInfo and use TokenizerFromGGUF", modelDir)
		}
		return nil, fmt.Errorf("load tokenizer: %s is not a model directory", modelDir)
	}
	tokPath := filepath.Join(modelDir, "tokenizer.json")
	data, err := os.ReadFile(tokPath)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w (the model directory needs an HF tokenizer.json)", err)
	}
	meta, err := readTokenizerConfigDir(modelDir)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	return newTokenizer(tokPath, data, meta, opts)
}

// hfTokenizerConfig is the part of tokenizer_config.json that is read.
type hfTokenizerConfig struct {
	BOSToken     json.RawMessage `json:"bos_token"`
	EOSToken     json.RawMessage `json:"eos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

// readTokenizerConfigDir reads tokenizer_config.json, chat_template.jinja,
// generation_config.json and config.json from dir; each is optional.
func readTokenizerConfigDir(dir string) (tokenizerMeta, error) {
	var meta tokenizerMeta
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	if b, err := os.ReadFile(cfgPath); err == nil {
		var cfg hfTokenizerConfig
		if err := json.Unmarshal(b, &cfg); err != nil {
			return meta, fmt.Errorf("%s: %w", cfgPath, err)
		}
		if meta.bosToken, err = tokenText(cfg.BOSToken); err != nil {
			return meta, fmt.Errorf("%s: bos_token: %w", cfgPath, err)
		}
		eos, err := tokenText(cfg.EOSToken)
		if err != nil {
			return meta, fmt.Errorf("%s: eos_token: %w", cfgPath, err)
		}
		if eos != "" {
			meta.eosTokens = append(meta.eosTokens, eos)
		}
		if meta.chatText, err = chatTemplateText(cfg.ChatTemplate); err != nil {
			return meta, fmt.Errorf("%s: chat_template: %w", cfgPath, err)
		}
		if meta.chatText != "" {
			meta.chatSource = cfgPath
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return meta, err
	}
	jinjaPath := filepath.Join(dir, "chat_template.jinja")
	if b, err := os.ReadFile(jinjaPath); err == nil {
		meta.chatText, meta.chatSource = string(b), jinjaPath
	} else if !errors.Is(err, os.ErrNotExist) {
		return meta, err
	}
	for _, name := range []string{"generation_config.json", "config.json"} {
		p := filepath.Join(dir, name)
		ids, err := readEOSTokenIDs(p)
		if err != nil {
			return meta, err
		}
		for _, id := range ids {
			meta.eosIDs = append(meta.eosIDs, id)
			meta.eosSources = append(meta.eosSources, p)
		}
	}
	return meta, nil
}

// tokenText reads a special-token entry of tokenizer_config.json: a string,
// an AddedToken object with "content", or null.
func tokenText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("want a string or an object with \"content\", got %s", abbrev(string(raw), 80))
	}
	return *obj.Content, nil
}

// chatTemplateText reads tokenizer_config.json's chat_template: a string, or
// a list of {"name", "template"} from which "default" is taken.
func chatTemplateText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("want a string or a list of named templates: %w", err)
	}
	for _, t := range list {
		if t.Name == "default" {
			return t.Template, nil
		}
	}
	return "", fmt.Errorf("a list of named templates without a \"default\" one")
}

// newTokenizer loads tokenizer.json bytes into the HF library and reads the
// vocabulary on the Go side. name is a path or description for errors.
func newTokenizer(name string, data []byte, meta tokenizerMeta, opts []TokenizerOption) (*Tokenizer, error) {
	t := &Tokenizer{name: name, bos: -1, opts: tokenizerOptions{now: time.Now}}
	for _, o := range opts {
		o(&t.opts)
	}
	if t.opts.now == nil {
		t.opts.now = time.Now
	}
	if _, err := ParseChatFormat(string(t.opts.chatFormat)); err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", name, err)
	}
	if err := t.readVocab(data); err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", name, err)
	}
	hf, err := newHFTokenizer(data)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", name, err)
	}
	t.hf = hf
	if meta.bosToken != "" {
		id, ok := t.TokenID(meta.bosToken)
		if !ok {
			t.Close()
			return nil, fmt.Errorf("load tokenizer %s: BOS token %q is not in the vocabulary", name, meta.bosToken)
		}
		t.bos = id
	}
	t.chatText, t.chatSource = meta.chatText, meta.chatSource
	t.chat, t.chatErr = t.resolveChat()
	if t.eos, err = t.stopIDs(meta); err != nil {
		t.Close()
		return nil, fmt.Errorf("load tokenizer %s: %w", name, err)
	}
	return t, nil
}

// readVocab reads the vocabulary, the added tokens and the decoder type from
// tokenizer.json.
func (t *Tokenizer) readVocab(data []byte) error {
	var f hfTokenizerFile
	if err := json.Unmarshal(data, &f); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("tokenizer.json is not valid JSON (at byte %d of %d): %w", se.Offset, len(data), err)
		}
		return fmt.Errorf("tokenizer.json is malformed: %w", err)
	}
	vocab := map[string]int64{}
	switch raw := bytes.TrimSpace(f.Model.Vocab); {
	case len(raw) == 0 || string(raw) == "null":
		return fmt.Errorf("tokenizer.json has no model.vocab")
	case raw[0] == '{': // BPE, WordPiece, WordLevel: {"token": id}
		if err := json.Unmarshal(raw, &vocab); err != nil {
			return fmt.Errorf("tokenizer.json model.vocab: %w", err)
		}
	case raw[0] == '[': // Unigram: [["piece", score], ...], id = index
		var list [][2]any
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("tokenizer.json model.vocab: %w", err)
		}
		for i, e := range list {
			s, ok := e[0].(string)
			if !ok {
				return fmt.Errorf("tokenizer.json model.vocab[%d]: piece is not a string", i)
			}
			vocab[s] = int64(i)
		}
	default:
		return fmt.Errorf("tokenizer.json model.vocab is neither an object nor a list")
	}
	if len(vocab) == 0 && len(f.AddedTokens) == 0 {
		return fmt.Errorf("tokenizer.json has an empty vocabulary")
	}
	size := int64(0)
	for tok, id := range vocab {
		if id < 0 || id >= 1<<31-1 {
			return fmt.Errorf("tokenizer.json: token %q has invalid id %d", tok, id)
		}
		size = max(size, id+1)
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.ID >= 1<<31-1 {
			return fmt.Errorf("tokenizer.json: added token %q has invalid id %d", a.Content, a.ID)
		}
		size = max(size, a.ID+1)
	}
	if size > 1<<24 || size > 4*int64(len(vocab)+len(f.AddedTokens)) {
		return fmt.Errorf("tokenizer.json: ids up to %d for only %d tokens", size-1, len(vocab)+len(f.AddedTokens))
	}
	t.vocabSize = int(size)
	t.vocab = make(map[string]int32, len(vocab)+len(f.AddedTokens))
	t.tokens = make([]string, size)
	t.special = make([]bool, size)
	for tok, id := range vocab {
		t.vocab[tok] = int32(id)
		t.tokens[id] = tok
	}
	// Added tokens take precedence, as in the HF library.
	for _, a := range f.AddedTokens {
		t.vocab[a.Content] = int32(a.ID)
		t.tokens[a.ID] = a.Content
		t.special[a.ID] = a.Special
	}
	t.byteLevel = isByteLevelDecoder(f.Decoder)
	if t.byteLevel {
		t.pieces = make([][]byte, size)
		for id, tok := range t.tokens {
			t.pieces[id] = pieceBytes(tok)
		}
	}
	return nil
}

// isByteLevelDecoder reports whether a tokenizer.json decoder is ByteLevel
// (alone or as the only member of a Sequence).
func isByteLevelDecoder(raw json.RawMessage) bool {
	var d struct {
		Type     string            `json:"type"`
		Decoders []json.RawMessage `json:"decoders"`
	}
	if json.Unmarshal(raw, &d) != nil {
		return false
	}
	switch d.Type {
	case "ByteLevel":
		return true
	case "Sequence":
		return len(d.Decoders) == 1 && isByteLevelDecoder(d.Decoders[0])
	}
	return false
}

// Close frees the underlying tokenizer. The Tokenizer must not be used after.
func (t *Tokenizer) Close() error {
	if t != nil && t.hf != nil {
		t.hf.close()
		t.hf = nil
	}
	return nil
}

// Name is where the tokenizer was loaded from.
func (t *Tokenizer) Name() string { return t.name }

// Encode tokenizes text. Special tokens written in the text (such as
// <|eot_id|> in a rendered chat template) become their special ids. With
// addSpecial, the tokenizer's post-processor adds its special tokens (e.g.
// the BOS of Llama 3.2's tokenizer.json); chat prompts are encoded without,
// since the template writes the BOS itself.
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int32, error) {
	if t.hf == nil {
		return nil, fmt.Errorf("encode: tokenizer %s is closed", t.name)
	}
	if i := strings.IndexByte(text, 0); i >= 0 {
		return nil, fmt.Errorf("encode: text contains a NUL byte at offset %d, which the tokenizer library cannot take", i)
	}
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("encode: text is not valid UTF-8")
	}
	ids, _, err := t.hf.encode(text, addSpecial, false)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return ids, nil
}

// encodeOffsets tokenizes text (without added special tokens) and returns
// the ids with each token's byte range in text.
func (t *Tokenizer) encodeOffsets(text string) ([]int32, [][2]int, error) {
	if t.hf == nil {
		return nil, nil, fmt.Errorf("encode: tokenizer %s is closed", t.name)
	}
	if i := strings.IndexByte(text, 0); i >= 0 {
		return nil, nil, fmt.Errorf("encode: text contains a NUL byte at offset %d, which the tokenizer library cannot take", i)
	}
	if !utf8.ValidString(text) {
		return nil, nil, fmt.Errorf("encode: text is not valid UTF-8")
	}
	ids, offsets, err := t.hf.encode(text, false, true)
	if err != nil {
		return nil, nil, fmt.Errorf("encode: %w", err)
	}
	return ids, offsets, nil
}

// Decode turns ids back into text, special tokens included, exactly as HF
// tokenizers' decode(ids, skip_special_tokens=False) does; ids that are not
// in the vocabulary are skipped. Bytes that do not form valid UTF-8 become
// U+FFFD. Unlike transformers' default, no clean_up_tokenization_spaces is
// applied, so Decode(Encode(s)) == s.
func (t *Tokenizer) Decode(ids []int32) string {
	if len(ids) == 0 {
		return ""
	}
	if t.byteLevel {
		var raw []byte
		for _, id := range ids {
			if id >= 0 && int(id) < len(t.pieces) {
				raw = append(raw, t.pieces[id]...)
			}
		}
		return string(appendLossy(nil, raw))
	}
	if t.hf == nil {
		return ""
	}
	known := make([]int32, 0, len(ids))
	for _, id := range ids {
		if id >= 0 {
			known = append(known, id)
		}
	}
	text, _ := t.hf.decode(known, false)
	return text
}

// hfDecode decodes through the HF library (tests compare it with Decode).
func (t *Tokenizer) hfDecode(ids []int32) string {
	text, _ := t.hf.decode(ids, false)
	return text
}

// TokenID returns the id of a token given its text as in tokenizer.json
// (e.g. "<|eot_id|>", or "Ġthe" for byte-level BPE).
func (t *Tokenizer) TokenID(token string) (int32, bool) {
	id, ok := t.vocab[token]
	return id, ok
}

// Token returns the text of a token id as in tokenizer.json.
func (t *Tokenizer) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.tokens) || t.tokens[id] == "" {
		return "", false
	}
	return t.tokens[id], true
}

// IsSpecial reports whether id is an added token marked special (such as
// <|begin_of_text|> or <|im_end|>).
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// VocabSize is one more than the largest token id, added tokens included
// (128256 for Llama 3).
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// BOS is the beginning-of-sequence id, or -1 when the tokenizer has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the sorted ids that end generation: the model's eos ids and
// the chat template's end-of-turn token (see stop.go).
func (t *Tokenizer) EOS() []int32 { return append([]int32(nil), t.eos...) }

// IsEOS reports whether id ends generation.
func (t *Tokenizer) IsEOS(id int32) bool {
	i := sort.Search(len(t.eos), func(i int) bool { return t.eos[i] >= id })
	return i < len(t.eos) && t.eos[i] == id
}

// abbrev shortens s for error messages.
func abbrev(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

package llama

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fungtrain/fungtrain/internal/gguf"
)

// Bundle is everything needed to chat with a model: the weights, the
// tokenizer with its chat template, and the ids that end generation.
type Bundle struct {
	Path      string
	Model     *Model
	Tokenizer *Tokenizer
	// StopIDs are the sorted token ids that end generation: the tokenizer's
	// (generation_config.json, config.json, tokenizer_config.json or GGUF
	// metadata, and the chat template's end-of-turn token) plus the model
	// config's eos ids.
	StopIDs []int32
	// GGUF is the header of the GGUF file the model came from (nil for a
	// model directory): its metadata, tokenizer included, for export.
	GGUF *gguf.Info
}

// Open loads the model at path (an HF or MLX-community model directory, or
// a .gguf file) with its tokenizer: tokenizer.json and tokenizer_config.json
// for a directory, the tokenizer.ggml.* metadata for a GGUF file.
// opts.ChatFormat and tokOpts configure the tokenizer. Call it on the MLX thread
// (inside mlx.Do); Close frees everything.
func Open(path string, opts LoadOptions, tokOpts ...TokenizerOption) (*Bundle, error) {
	if path == "" {
		return nil, errors.New("open model: no path given")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	extra, err := opts.tokenizerOptions()
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", path, err)
	}
	tokOpts = append(extra, tokOpts...)
	isGGUF := !st.IsDir() && strings.HasSuffix(strings.ToLower(path), ".gguf")
	if !st.IsDir() && !isGGUF {
		return nil, fmt.Errorf("open model %s: not a model directory or a .gguf file", path)
	}
	// The config (an unsupported architecture is the first thing to report)
	// and the tokenizer before the weights: both are cheap, and their errors
	// should not wait for gigabytes of weights to load.
	// A GGUF file's header is read once, here, and serves the config, the
	// tokenizer and the weights.
	var tok *Tokenizer
	var info *gguf.Info
	if isGGUF {
		if info, err = gguf.ReadInfo(path); err != nil {
			return nil, fmt.Errorf("open model: %w", err)
		}
		if _, err := ConfigFromGGUF(info); err != nil {
			return nil, fmt.Errorf("open model %s: %w", path, err)
		}
		if tok, err = TokenizerFromGGUF(info, tokOpts...); err != nil {
			return nil, fmt.Errorf("open model: %w", err)
		}
	} else {
		if _, err := LoadConfig(filepath.Join(path, "config.json")); err != nil {
			return nil, fmt.Errorf("open model %s: %w", path, err)
		}
		if tok, err = LoadTokenizer(path, tokOpts...); err != nil {
			return nil, fmt.Errorf("open model: %w", err)
		}
	}
	var m *Model
	if isGGUF {
		m, err = loadGGUF(info, opts)
	} else {
		m, err = LoadModel(path, opts)
	}
	if err != nil {
		tok.Close()
		return nil, err
	}
	b := &Bundle{Path: path, Model: m, Tokenizer: tok, GGUF: info}
	if v, mv := tok.VocabSize(), m.Config.VocabSize; v > mv {
		b.Close()
		return nil, fmt.Errorf("open model %s: the tokenizer has %d tokens but the model's vocab_size is %d", path, v, mv)
	}
	set := map[int32]bool{}
	for _, id := range tok.EOS() {
		set[id] = true
	}
	for _, id := range m.Config.EOSTokenID {
		if id >= 0 && id < m.Config.VocabSize {
			set[int32(id)] = true
		}
	}
	for id := range set {
		b.StopIDs = append(b.StopIDs, id)
	}
	sort.Slice(b.StopIDs, func(i, j int) bool { return b.StopIDs[i] < b.StopIDs[j] })
	return b, nil
}

// ChatTemplate returns the tokenizer's chat template, or an error that says
// why there is none and how to force one.
func (b *Bundle) ChatTemplate() (*ChatTemplate, error) { return b.Tokenizer.ChatTemplate() }

// EncodePrompt tokenizes a conversation for generation. With chat, the
// messages are rendered with the chat template and the assistant's
// generation prompt is appended. Without, the messages' contents are joined
// by blank lines and encoded as plain text with the tokenizer's own special
// tokens (such as BOS).
func (b *Bundle) EncodePrompt(messages []Message, chat bool) ([]int32, error) {
	if len(messages) == 0 {
		return nil, errors.New("encode prompt: no messages")
	}
	if chat {
		ids, _, err := b.Tokenizer.EncodeChat(messages, true)
		return ids, err
	}
	parts := make([]string, len(messages))
	for i, m := range messages {
		parts[i] = m.Content
	}
	return b.Tokenizer.Encode(strings.Join(parts, "\n\n"), true)
}

// IsStop reports whether id ends generation.
func (b *Bundle) IsStop(id int32) bool {
	i := sort.Search(len(b.StopIDs), func(i int) bool { return b.StopIDs[i] >= id })
	return i < len(b.StopIDs) && b.StopIDs[i] == id
}

// Close frees the model's weights and the tokenizer. Call it on the MLX
// thread.
func (b *Bundle) Close() error {
	if b == nil {
		return nil
	}
	if b.Model != nil {
		b.Model.Free()
		b.Model = nil
	}
	if b.Tokenizer != nil {
		b.Tokenizer.Close()
		b.Tokenizer = nil
	}
	return nil
}

package traindata

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"

	"github.com/fungtrain/fungtrain/llama"
)

// Config is the training side of the run file's data section.
type Config struct {
	Dir          string `yaml:"dir" json:"dir"`                       // holds train.jsonl, valid.jsonl, test.jsonl
	MaskPrompt   bool   `yaml:"mask_prompt" json:"mask_prompt"`       // train on assistant tokens only
	MaxSeqLength int    `yaml:"max_seq_length" json:"max_seq_length"` // longer examples are truncated
	SystemPrompt string `yaml:"system_prompt" json:"system_prompt"`   // prepended when an example has none
}

// Encoder is what tokenizing examples needs from a tokenizer.
type Encoder interface {
	EncodeChat(messages []llama.Message, addGenerationPrompt bool) ([]int32, []bool, error)
	Encode(text string, addSpecial bool) ([]int32, error)
	EOS() []int32
}

// Example is one tokenized training sequence. Counted[i] says whether token
// i is a loss target (predicted from the tokens before it).
type Example struct {
	Tokens  []int32
	Counted []bool
	Line    int // 1-based line in its file
}

// Split is one tokenized JSONL file.
type Split struct {
	Name      string
	Path      string
	SHA256    string
	Examples  []Example
	Truncated int // examples cut to MaxSeqLength
}

// FileSHA256 is the hex SHA-256 of a file's bytes (how run metadata
// identifies data files).
func FileSHA256(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}

// LoadSplit reads and tokenizes DIR/NAME.jsonl.
func LoadSplit(cfg Config, name string, enc Encoder) (*Split, error) {
	path := filepath.Join(cfg.Dir, name+".jsonl")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s split: %w", name, err)
	}
	sum := sha256.Sum256(raw)
	s := &Split{Name: name, Path: path, SHA256: hex.EncodeToString(sum[:])}
	err = ReadRecords(bytes.NewReader(raw), path, func(rec Record) error {
		ex, err := tokenize(rec, cfg, enc)
		if err != nil {
			return err
		}
		ex.Line = rec.Line
		if cfg.MaxSeqLength > 0 && len(ex.Tokens) > cfg.MaxSeqLength {
			ex.Tokens = ex.Tokens[:cfg.MaxSeqLength]
			ex.Counted = ex.Counted[:cfg.MaxSeqLength]
			s.Truncated++
		}
		if countTrue(ex.Counted) == 0 {
			return fmt.Errorf("no tokens to train on (after truncation to %d tokens)", cfg.MaxSeqLength)
		}
		s.Examples = append(s.Examples, ex)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(s.Examples) == 0 {
		return nil, fmt.Errorf("%s: the %s split is empty", path, name)
	}
	return s, nil
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// tokenize encodes a record: a conversation through the chat template
// (with the configured system prompt when it has none), a text as is.
func tokenize(rec Record, cfg Config, enc Encoder) (Example, error) {
	if rec.Messages == nil {
		return textExample(rec.Text, enc)
	}
	msgs := rec.Messages
	if cfg.SystemPrompt != "" && msgs[0].Role != "system" {
		msgs = append([]llama.Message{{Role: "system", Content: cfg.SystemPrompt}}, msgs...)
	}
	ids, assistant, err := enc.EncodeChat(msgs, false)
	if err != nil {
		return Example{}, err
	}
	counted := make([]bool, len(ids))
	for i := 1; i < len(ids); i++ {
		counted[i] = !cfg.MaskPrompt || assistant[i]
	}
	return Example{Tokens: ids, Counted: counted}, nil
}

func textExample(text string, enc Encoder) (Example, error) {
	ids, err := enc.Encode(text, true)
	if err != nil {
		return Example{}, err
	}
	if eos := enc.EOS(); len(eos) > 0 {
		ids = append(ids, eos[0])
	}
	counted := make([]bool, len(ids))
	for i := 1; i < len(ids); i++ {
		counted[i] = true
	}
	return Example{Tokens: ids, Counted: counted}, nil
}

// LogSplit logs a split's size, truncations and the padding its batches
// would carry.
func LogSplit(log *slog.Logger, s *Split, batchSize int) {
	tokens, counted := 0, 0
	for _, ex := range s.Examples {
		tokens += len(ex.Tokens)
		counted += countTrue(ex.Counted)
	}
	groups := Batches(s.Examples, batchSize, 0, 0)
	log.Info("dataset", "split", s.Name, "file", s.Path, "examples", len(s.Examples), "tokens", tokens,
		"loss_tokens", counted, "truncated", s.Truncated, "padding_fraction", math.Round(PaddingFraction(s.Examples, groups)*1e4)/1e4)
	if s.Truncated > 0 {
		log.Warn("examples truncated to max_seq_length", "split", s.Name, "count", s.Truncated)
	}
}

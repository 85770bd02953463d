package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/fungtrain/fungtrain/data"
	"github.com/fungtrain/fungtrain/llama"
)

// tokenCounter counts tokens with a model's tokenizer. It needs no weights
// and no MLX.
type tokenCounter struct{ tok *llama.Tokenizer }

func (c tokenCounter) CountTokens(text string) (int, error) {
	ids, err := c.tok.Encode(text, false)
	return len(ids), err
}

// tokenCounterFor returns the token counter of the model at modelPath (a
// model directory or a .gguf file), for `fungtrain data stats --model`.
func tokenCounterFor(modelPath string) (data.TokenCounter, error) {
	st, err := os.Stat(modelPath)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	if st.IsDir() {
		tok, err := llama.LoadTokenizer(modelPath)
		if err != nil {
			return nil, fmt.Errorf("--model: %w", err)
		}
		return tokenCounter{tok}, nil
	}
	if !strings.HasSuffix(strings.ToLower(modelPath), ".gguf") {
		return nil, fmt.Errorf("--model %s: not a model directory or .gguf file", modelPath)
	}
	info, err := llama.ReadGGUFInfo(modelPath)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	tok, err := llama.TokenizerFromGGUF(info)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	return tokenCounter{tok}, nil
}

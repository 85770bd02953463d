package main

import (
	"errors"

	"github.com/fungtrain/fungtrain/data"
)

// tokenCounterFor returns the token counter of the model at modelPath, for
// `fungtrain data stats --model`. This is the hook where the llama
// tokenizer is wired in; until then it fails with a clear message.
func tokenCounterFor(modelPath string) (data.TokenCounter, error) {
	_ = modelPath
	return nil, errors.New("--model needs the llama tokenizer (not wired yet)")
}

package main

import (
	"errors"

	"github.com/fungtrain/fungtrain/llama"
)

// applyAdapter loads the LoRA adapter saved in dir onto m, for generate's
// --adapter flag. It runs on the MLX thread, after the model is loaded and
// before the prompt is processed.
//
// Placeholder until LoRA is wired into the CLI; this file is replaced then.
func applyAdapter(m *llama.Model, dir string) error {
	_ = m
	_ = dir
	return errors.New("--adapter: LoRA adapters are not wired yet")
}

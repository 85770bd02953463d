package main

import (
	"fmt"
	"log/slog"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
)

// applyAdapter loads the LoRA adapter saved in dir (by fungtrain, mlx-lm
// or PEFT) onto m, for generate's --adapter flag. It runs on the MLX
// thread, after the model is loaded and before the prompt is processed.
// The adapter stays installed for the life of the model.
func applyAdapter(m *llama.Model, dir string) error {
	a, err := lora.Load(m, dir)
	if err != nil {
		return fmt.Errorf("--adapter: %w", err)
	}
	slog.Debug("adapter loaded", "dir", dir, "layers", len(a.Names), "params", a.NumParams(),
		"scale", a.Settings.EffectiveScale())
	return nil
}

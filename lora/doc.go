// Package lora implements LoRA adapters over llama models and the trainer:
// AdamW, gradient accumulation, evaluation, checkpoints and exact resume.
package lora

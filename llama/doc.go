// Package llama implements the Llama 3.x model family on MLX: config,
// checkpoint loading (HF safetensors, MLX-quantized, GGUF), the tokenizer and
// chat templates, the forward pass and KV-cached generation.
package llama

// Package serve is fungtrain's OpenAI-compatible HTTP server: chat
// completions and completions (streamed as server-sent events or whole),
// the model list and a health check, over a llama.Engine that decodes the
// concurrent requests together (continuous batching) on the MLX thread.
//
// Requests may pick a LoRA adapter by name ("model"); adapters of different
// requests share a batch. response_format json_object and json_schema are
// enforced by constrained decoding (package constrain). A bounded queue
// answers 429 when full; a client that disconnects cancels its sequence;
// requests have a timeout and a body size limit; an optional bearer key
// guards /v1. docs/SERVE.md describes the API.
package serve

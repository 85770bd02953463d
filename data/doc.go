// Package data is the dataset-building pipeline: transcripts to questions
// to answers through an OpenAI-compatible LLM, then chat JSONL with quality
// filtering, dedup and splits by video. Reading chat JSONL for training
// (the schema, tokenization, batches) is package traindata.
package data

// Package data builds fine-tuning datasets (transcripts to questions to
// answers to chat JSONL, with dedup, quality filtering and grouped splits)
// and turns chat JSONL into training batches.
package data

// Package traindata turns chat JSONL files into training data: the schema
// of a line (ReadRecords, ParseRecord: mlx-lm's messages, prompt/completion
// and text formats), tokenized splits with their loss masks (LoadSplit),
// and length-bucketed, padded batches (LengthGroups, Batches, MakeBatch).
// It knows nothing of how the files were made (package data) and nothing
// of the network.
package traindata

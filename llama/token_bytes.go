package llama

import "errors"

// TokenPieces returns the bytes each token id stands for, as the decoder
// writes them, with nil for special tokens (which never appear inside
// generated text). Constrained decoding walks these bytes. Only byte-level
// BPE tokenizers (Llama 3, SmolLM2, GPT-2 style) have a byte string per
// token; others are an error.
func (t *Tokenizer) TokenPieces() ([][]byte, error) {
	if !t.byteLevel {
		return nil, errors.New("tokenizer " + t.name + " is not byte-level BPE: its tokens have no fixed bytes")
	}
	out := make([][]byte, len(t.pieces))
	for id, p := range t.pieces {
		if !t.special[id] {
			out[id] = p
		}
	}
	return out, nil
}

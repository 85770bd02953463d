package llama

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/gguf"
)

// kvMap indexes GGUF key/values by key.
func kvMap(kvs []GGUFKV) map[string]gguf.Value {
	m := map[string]gguf.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestTokenizerGGUFKeysLlama3 builds the tokenizer.* metadata from Llama
// 3's tokenizer.json and tokenizer_config.json, compares it with this
// package's test converter that does what llama.cpp's does (llama3GGUFKVs),
// pads a larger vocab_size with unused "[PADn]" tokens, and loads the
// result back: the GGUF tokenizer encodes the test texts exactly like
// tokenizer.json.
func TestTokenizerGGUFKeysLlama3(t *testing.T) {
	ref := llama3Tokenizer(t)
	cfg := &Config{VocabSize: 128256 + 4, EOSTokenID: IntList{128009}}
	kvs, err := ggufKeysFromHF(requireAsset(t, llama3TokDir), ref, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := kvMap(kvs)
	for _, kv := range llama3GGUFKVs(t, "llama-bpe", false) {
		if kv.Key == "general.architecture" {
			continue
		}
		want := ggufValue(t, kv.V)
		g, ok := got[kv.Key]
		if a, isArr := g.V.(gguf.Array); isArr && (kv.Key == "tokenizer.ggml.tokens" || kv.Key == "tokenizer.ggml.token_type") {
			// The export pads to vocab_size; the first 128256 are the tokenizer's.
			n := want.V.(gguf.Array).Len
			tail := fmt.Sprint(slicesTail(a.V, n))
			if kv.Key == "tokenizer.ggml.tokens" && tail != "[[PAD128256] [PAD128257] [PAD128258] [PAD128259]]" ||
				kv.Key == "tokenizer.ggml.token_type" && tail != "[5 5 5 5]" {
				t.Errorf("%s padding = %s", kv.Key, tail)
			}
			g.V = gguf.Array{Elem: a.Elem, Len: n, V: slicesHead(a.V, n)}
		}
		if !ok || fmt.Sprintf("%#v", g) != fmt.Sprintf("%#v", want) {
			t.Errorf("%s = %.200v, want %.200v", kv.Key, g, want)
		}
	}
	if v := got["tokenizer.ggml.add_eos_token"]; v.V != false {
		t.Errorf("add_eos_token %v", v)
	}

	var wkv []ggufTestKV
	wkv = append(wkv, ggufTestKV{"general.architecture", "llama"})
	for _, kv := range kvs {
		wkv = append(wkv, ggufTestKV{kv.Key, kv.Value})
	}
	info, err := ReadGGUFInfo(writeTestGGUFFile(t, wkv, nil))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := TokenizerFromGGUF(info)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	for _, text := range append(slices.Clone(mixedTexts), roundTripTexts...) {
		want, _ := ref.Encode(text, true)
		got, err := tok.Encode(text, true)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: GGUF tokenizer %v, tokenizer.json %v (%v)", abbrev(text, 40), got, want, err)
		}
	}
}

func slicesTail(v any, from int) any {
	switch s := v.(type) {
	case []string:
		return s[from:]
	case []int32:
		return s[from:]
	}
	return nil
}

func slicesHead(v any, n int) any {
	switch s := v.(type) {
	case []string:
		return s[:n]
	case []int32:
		return s[:n]
	}
	return nil
}

// TestTokenizerGGUFKeysRoundTripSmolLM2: SmolLM2's GGUF tokenizer written
// as HF files (what fuse writes) and converted back gives the GGUF's own
// tokenizer.* metadata, key by key: the two conversions are inverses.
func TestTokenizerGGUFKeysRoundTripSmolLM2(t *testing.T) {
	info, err := gguf.ReadInfo(requireAsset(t, smolLM2GGUF))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tj, err := GGUFTokenizerJSON(info)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := GGUFTokenizerConfig(info)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644)
	os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tc, 0o644)
	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	kvs, err := ggufKeysFromHF(dir, tok, &Config{VocabSize: 49152})
	if err != nil {
		t.Fatal(err)
	}
	got := kvMap(kvs)
	n := 0
	for _, k := range info.Keys {
		if !strings.HasPrefix(k, "tokenizer.") || k == "tokenizer.ggml.add_space_prefix" {
			continue // add_space_prefix is a SentencePiece flag llama.cpp ignores for gpt2
		}
		n++
		if g, want := got[k], info.Metadata[k]; fmt.Sprintf("%#v", g) != fmt.Sprintf("%#v", want) {
			t.Errorf("%s: converted back %.120v, the GGUF has %.120v", k, g, want)
		}
	}
	t.Logf("%d tokenizer keys equal after GGUF -> HF -> GGUF", n)
}

// TestTokenizerGGUFKeysBadInput: tokenizers llama.cpp's gpt2 tokenizer
// cannot run are refused with the reason.
func TestTokenizerGGUFKeysBadInput(t *testing.T) {
	ref := llama3Tokenizer(t)
	raw, err := os.ReadFile(requireAsset(t, llama3TokJSON))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		edit  func(m map[string]any)
		want  string
		vocab int
	}{
		{"unknown pre-tokenizer", func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": false}
		}, "pre_tokenizer", 128256},
		{"normalizer", func(m map[string]any) { m["normalizer"] = map[string]any{"type": "NFC"} }, "normalizer", 128256},
		{"WordPiece", func(m map[string]any) { m["model"].(map[string]any)["type"] = "WordPiece" }, "byte-level BPE", 128256},
		{"vocab too small", func(map[string]any) {}, "outside the model's vocab_size 1000", 1000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			c.edit(m)
			data, _ := json.Marshal(m)
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644)
			_, err := ggufKeysFromHF(dir, ref, &Config{VocabSize: c.vocab})
			t.Logf("%v", err)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

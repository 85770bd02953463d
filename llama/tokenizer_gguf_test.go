package llama

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// llama3GGUFKVs turns the Llama 3 tokenizer.json (and its chat template)
// into tokenizer.ggml.* metadata the way llama.cpp's converter does: every
// token at its id, CONTROL type for the special added tokens, merges as
// "a b" strings.
func llama3GGUFKVs(t *testing.T, pre string, addBOS bool) []ggufTestKV {
	t.Helper()
	raw, err := os.ReadFile(requireAsset(t, llama3TokJSON))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		AddedTokens []hfAddedToken `json:"added_tokens"`
		Model       struct {
			Vocab  map[string]int    `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	n := len(f.Model.Vocab) + len(f.AddedTokens)
	tokens := make([]string, n)
	types := make([]int32, n)
	for s, id := range f.Model.Vocab {
		tokens[id], types[id] = s, ggufTokenNormal
	}
	for _, a := range f.AddedTokens {
		tokens[a.ID], types[a.ID] = a.Content, ggufTokenUserDefined
		if a.Special {
			types[a.ID] = ggufTokenControl
		}
	}
	for id, s := range tokens {
		if s == "" {
			t.Fatalf("no token with id %d", id)
		}
	}
	merges := make([]string, len(f.Model.Merges))
	for i, m := range f.Model.Merges {
		var s string
		var pair []string
		if json.Unmarshal(m, &s) == nil {
			merges[i] = s
		} else if json.Unmarshal(m, &pair) == nil && len(pair) == 2 {
			merges[i] = pair[0] + " " + pair[1]
		} else {
			t.Fatalf("merge %d: %s", i, m)
		}
	}
	cfg, err := os.ReadFile(requireAsset(t, llama3TokConfig))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		ChatTemplate string `json:"chat_template"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	return []ggufTestKV{
		{"general.architecture", "llama"},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", pre},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.merges", merges},
		{"tokenizer.ggml.bos_token_id", uint32(128000)},
		{"tokenizer.ggml.eos_token_id", uint32(128001)},
		{"tokenizer.ggml.add_bos_token", addBOS},
		{"tokenizer.chat_template", c.ChatTemplate},
	}
}

// TestTokenizerGGUFLlama3MatchesTokenizerJSON checks the GGUF -> tokenizer.json
// conversion: a GGUF written from Llama 3's tokenizer.json with pre
// "llama-bpe" must tokenize exactly like the tokenizer.json itself.
func TestTokenizerGGUFLlama3MatchesTokenizerJSON(t *testing.T) {
	ref := llama3Tokenizer(t)
	for _, addBOS := range []bool{false, true} {
		info, err := ReadGGUFInfo(writeTestGGUFFile(t, llama3GGUFKVs(t, "llama-bpe", addBOS), nil))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := TokenizerFromGGUF(info)
		if err != nil {
			t.Fatal(err)
		}
		defer tok.Close()
		if tok.VocabSize() != ref.VocabSize() || tok.BOS() != 128000 || !slices.Equal(tok.EOS(), ref.EOS()) {
			t.Errorf("vocab %d bos %d eos %v", tok.VocabSize(), tok.BOS(), tok.EOS())
		}
		texts := append(slices.Clone(mixedTexts), roundTripTexts...)
		total := 0
		for _, text := range texts {
			want, err := ref.Encode(text, false)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tok.Encode(text, false)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("add_bos=%v %q:\n gguf %v\n json %v", addBOS, abbrev(text, 40), got, want)
			}
			total += len(got)
			withSpecial, _ := tok.Encode(text, true)
			if addBOS {
				want = append([]int32{128000}, want...)
			}
			if !slices.Equal(withSpecial, want) {
				t.Errorf("add_bos=%v, Encode(%q, true) = %v, want %v", addBOS, abbrev(text, 40), withSpecial, want)
			}
			if tok.Decode(got) != ref.Decode(got) {
				t.Errorf("decode differs for %q", abbrev(text, 40))
			}
		}
		t.Logf("add_bos=%v: %d texts, %d tokens identical between the GGUF-derived and the tokenizer.json tokenizer", addBOS, len(texts), total)

		msgs := []Message{{"system", "Be brief."}, {"user", "Hi 👋"}}
		a, errA := tok.RenderChat(msgs, true)
		b, errB := ref.RenderChat(msgs, true)
		if errA != nil || errB != nil || a != b {
			t.Errorf("chat render differs: %q %v / %q %v", a, errA, b, errB)
		}
	}
}

func TestTokenizerGGUFSmolLM2(t *testing.T) {
	tok := smolLM2Tokenizer(t)
	for s, want := range map[string]int32{"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2} {
		if id, ok := tok.TokenID(s); !ok || id != want || !tok.IsSpecial(id) {
			t.Errorf("TokenID(%q) = %d, %v; want special %d", s, id, ok, want)
		}
	}
	if tok.VocabSize() != 49152 || tok.BOS() != 1 {
		t.Errorf("vocab %d bos %d", tok.VocabSize(), tok.BOS())
	}
	if got := tok.EOS(); !slices.Equal(got, []int32{2}) {
		t.Errorf("EOS %v, want [2]", got)
	}
	// add_bos_token is false in this GGUF.
	ids, err := tok.Encode("<|im_start|>user\nWhat is 2024?<|im_end|>", true)
	if err != nil {
		t.Fatal(err)
	}
	if ids[0] != 1 || ids[len(ids)-1] != 2 {
		t.Errorf("specials in text: %v", ids)
	}
	// The "smollm" pre-tokenizer splits every digit off alone.
	var digits []int32
	for _, d := range []string{"2", "0", "2", "4"} {
		id, _ := tok.TokenID(d)
		digits = append(digits, id)
	}
	if !slices.Equal(ids[len(ids)-6:len(ids)-2], digits) {
		t.Errorf("2024 encoded as %v, want single digits %v", ids[len(ids)-6:len(ids)-2], digits)
	}
	// Byte-level BPE with the GPT-2 regex: a word with its leading space.
	ids, _ = tok.Encode("Hello world", false)
	hello, _ := tok.TokenID("Hello")
	world, _ := tok.TokenID("Ġworld")
	if !slices.Equal(ids, []int32{hello, world}) {
		t.Errorf("Hello world = %v, want [%d %d]", ids, hello, world)
	}
	c, err := tok.ChatTemplate()
	if err != nil || c.Format != ChatFormatChatML || c.Variant != "chatml+default-system" {
		t.Errorf("chat template %+v, %v", c, err)
	}

	// The generated tokenizer.json is also a valid tokenizer for HF
	// tokenizers (Python), which gives the same ids.
	info, err := ReadGGUFInfo(requireAsset(t, smolLM2GGUF))
	if err != nil {
		t.Fatal(err)
	}
	data, err := GGUFTokenizerJSON(info)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var ref struct {
		IDs [][]int32 `json:"ids"`
	}
	runHFReference(t, map[string]any{"op": "tokenize", "tokenizer": path, "texts": mixedTexts, "add_special": true}, &ref)
	for i, text := range mixedTexts {
		ids, err := tok.Encode(text, true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, ref.IDs[i]) && !(len(ids) == 0 && len(ref.IDs[i]) == 0) {
			t.Errorf("%q:\n go     %v\n python %v", abbrev(text, 40), ids, ref.IDs[i])
		}
	}
}

func TestTokenizerGGUFBadMetadata(t *testing.T) {
	base := []ggufTestKV{
		{"general.architecture", "llama"},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", "llama-bpe"},
		{"tokenizer.ggml.tokens", []string{"a", "b", "ab", "<|x|>"}},
		{"tokenizer.ggml.token_type", []int32{1, 1, 1, 3}},
		{"tokenizer.ggml.merges", []string{"a b"}},
		{"tokenizer.ggml.bos_token_id", uint32(3)},
	}
	with := func(key string, v any) []ggufTestKV {
		out := slices.Clone(base)
		for i := range out {
			if out[i].Key == key {
				if v == nil {
					return slices.Delete(out, i, i+1)
				}
				out[i].V = v
				return out
			}
		}
		return append(out, ggufTestKV{key, v})
	}
	// The base is valid.
	info, err := ReadGGUFInfo(writeTestGGUFFile(t, base, nil))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := TokenizerFromGGUF(info)
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := tok.Encode("ab<|x|>", false); !slices.Equal(ids, []int32{2, 3}) {
		t.Errorf("tiny tokenizer: %v", ids)
	}
	if _, err := tok.ChatTemplate(); err == nil || !strings.Contains(err.Error(), "no chat template") {
		t.Errorf("no template: %v", err)
	}
	tok.Close()

	for _, c := range []struct {
		name string
		kvs  []ggufTestKV
		want string
	}{
		{"unknown pre", with("tokenizer.ggml.pre", "mystery-pre"), `unknown tokenizer.ggml.pre "mystery-pre"`},
		{"missing pre", with("tokenizer.ggml.pre", nil), "no tokenizer.ggml.pre"},
		{"sentencepiece", with("tokenizer.ggml.model", "llama"), `tokenizer.ggml.model is "llama" (SentencePiece`},
		{"missing tokens", with("tokenizer.ggml.tokens", nil), `"tokenizer.ggml.tokens" not found`},
		{"tokens not strings", with("tokenizer.ggml.tokens", []int32{1, 2}), `"tokenizer.ggml.tokens" is array of int32, want an array of strings`},
		{"type count", with("tokenizer.ggml.token_type", []int32{1}), "token_type has 1 entries for 4 tokens"},
		{"bad merge", with("tokenizer.ggml.merges", []string{"ab"}), `merges[0] "ab" is not two tokens`},
		{"merge of non-token", with("tokenizer.ggml.merges", []string{"a zz"}), `"zz" is not a token`},
		{"duplicate token", with("tokenizer.ggml.tokens", []string{"a", "b", "ab", "a"}), "duplicates token 0"},
		{"bos out of range", with("tokenizer.ggml.bos_token_id", uint32(99)), "bos_token_id is 99"},
		{"add_bos without bos", with("tokenizer.ggml.bos_token_id", nil), ""},
		{"eos out of range", with("tokenizer.ggml.eos_token_id", uint32(4)), "tokenizer.ggml.eos_token_id is 4, outside the 4 tokens"},
		{"eot out of range", with("tokenizer.ggml.eot_token_id", uint32(9)), "tokenizer.ggml.eot_token_id: eos token id 9 is outside the vocabulary"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kvs := c.kvs
			if c.name == "add_bos without bos" {
				kvs = append(kvs, ggufTestKV{"tokenizer.ggml.add_bos_token", true})
				c.want = "add_bos_token is set but tokenizer.ggml.bos_token_id is missing"
			}
			info, err := ReadGGUFInfo(writeTestGGUFFile(t, kvs, nil))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := TokenizerFromGGUF(info)
			if err == nil {
				tok.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "test.gguf") {
				t.Errorf("error %q, want it to contain %q and the file name", err, c.want)
			}
		})
	}
}

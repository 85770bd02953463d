package llama

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/fungtrain/fungtrain/internal/testenv"
)

// mixedTexts mixes scripts, emoji, code, numbers, whitespace and special
// tokens; the parity tests tokenize them with both implementations.
var mixedTexts = []string{
	"Hello, world! Привет, мир! 你好，世界！ مرحبا بالعالم 🌍🚀 👨‍👩‍👧‍👦 🇫🇷 e\u0301 café",
	"def fib(n: int) -> int:\n    if n < 2:\n\treturn n  # base case\n    return fib(n-1) + fib(n-2)\n\nprint(f\"{fib(30):,}\")\r\n",
	"Numbers: 0 7 42 123 1234 12345678901234567890 3.14159 -2.5e-10 1,000,000 ٣٤٥ ½ ² Ⅻ 0x1F",
	"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
	"it's I'M you'LL we'Ve they'd SHE'S   three   spaces \n\n\n  newlines  and trailing   ",
	"日本語のテキストと한국어 텍스트, ελληνικά, עברית, हिन्दी, ไทย, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ E⋅da = Q, zero\u200bwidth, nbsp\u00a0here",
	"<|eot_id|>text<|end_of_text|> <|reserved_special_token_3|>  <|im_start|> <s></s>",
	"",
	" ",
	"\n",
	"🤖",
	"a",
}

// runHFReference runs testdata/hf_reference.py with a JSON request and
// decodes its JSON answer into out.
func runHFReference(t testing.TB, req, out any) {
	t.Helper()
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Python(t), filepath.Join(repoRoot(t), "llama", "testdata", "hf_reference.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("hf_reference.py: %v\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("hf_reference.py output: %v\n%s", err, b)
	}
}

// loadLlama3 loads the Llama 3 tokenizer asset once per test binary.
var llama3Once struct {
	sync.Once
	tok *Tokenizer
	err error
}

func llama3Tokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	dir := requireAsset(t, llama3TokDir)
	requireAsset(t, llama3TokJSON)
	llama3Once.Do(func() { llama3Once.tok, llama3Once.err = LoadTokenizer(dir) })
	if llama3Once.err != nil {
		t.Fatal(llama3Once.err)
	}
	return llama3Once.tok
}

var smolOnce struct {
	sync.Once
	tok *Tokenizer
	err error
}

func smolLM2Tokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	path := requireAsset(t, smolLM2GGUF)
	smolOnce.Do(func() {
		info, err := ReadGGUFInfo(path)
		if err != nil {
			smolOnce.err = err
			return
		}
		smolOnce.tok, smolOnce.err = TokenizerFromGGUF(info)
	})
	if smolOnce.err != nil {
		t.Fatal(smolOnce.err)
	}
	return smolOnce.tok
}

func TestTokenizerLlama3ParityWithHF(t *testing.T) {
	tok := llama3Tokenizer(t)
	for _, addSpecial := range []bool{false, true} {
		var ref struct {
			IDs     [][]int32 `json:"ids"`
			Decoded []string  `json:"decoded"`
		}
		runHFReference(t, map[string]any{
			"op": "tokenize", "tokenizer": requireAsset(t, llama3TokJSON), "texts": mixedTexts, "add_special": addSpecial,
		}, &ref)
		if len(ref.IDs) != len(mixedTexts) {
			t.Fatalf("reference returned %d encodings", len(ref.IDs))
		}
		total := 0
		for i, text := range mixedTexts {
			ids, err := tok.Encode(text, addSpecial)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, ref.IDs[i]) && !(len(ids) == 0 && len(ref.IDs[i]) == 0) {
				t.Errorf("text %d %q (addSpecial=%v):\n got  %v\n want %v", i, abbrev(text, 40), addSpecial, ids, ref.IDs[i])
			}
			if got := tok.Decode(ref.IDs[i]); got != ref.Decoded[i] {
				t.Errorf("decode of text %d: got %q, want %q", i, got, ref.Decoded[i])
			}
			total += len(ids)
		}
		t.Logf("addSpecial=%v: %d texts, %d tokens identical to HF tokenizers (Python)", addSpecial, len(mixedTexts), total)
	}
	// The specials in text become their special ids.
	ids, _ := tok.Encode(mixedTexts[3], false)
	for _, want := range []int32{128000, 128006, 128007, 128009} {
		if !slices.Contains(ids, want) {
			t.Errorf("special id %d missing from %v", want, ids)
		}
	}
}

func TestTokenizerLlama3Basics(t *testing.T) {
	tok := llama3Tokenizer(t)
	if tok.VocabSize() != 128256 {
		t.Errorf("vocab size %d", tok.VocabSize())
	}
	if tok.BOS() != 128000 {
		t.Errorf("BOS %d", tok.BOS())
	}
	if got := tok.EOS(); !slices.Equal(got, []int32{128001, 128009}) {
		t.Errorf("EOS %v, want [128001 128009] (eos_token and the template's <|eot_id|>)", got)
	}
	if !tok.IsEOS(128009) || !tok.IsEOS(128001) || tok.IsEOS(128000) {
		t.Error("IsEOS")
	}
	for s, want := range map[string]int32{"<|eot_id|>": 128009, "<|begin_of_text|>": 128000, "Hello": 9906, "ĠHello": 22691, "<|reserved_special_token_250|>": 128255} {
		if id, ok := tok.TokenID(s); !ok || id != want {
			t.Errorf("TokenID(%q) = %d, %v; want %d", s, id, ok, want)
		}
	}
	if _, ok := tok.TokenID("not a token at all"); ok {
		t.Error("TokenID of a non-token")
	}
	if s, ok := tok.Token(22691); !ok || s != "ĠHello" {
		t.Errorf("Token(22691) = %q", s)
	}
	if _, ok := tok.Token(1 << 20); ok {
		t.Error("Token of an out-of-range id")
	}
	if !tok.IsSpecial(128009) || tok.IsSpecial(9906) {
		t.Error("IsSpecial")
	}
	ids, err := tok.Encode("Hello world", false)
	if err != nil || !slices.Equal(ids, []int32{9906, 1917}) {
		t.Errorf("Encode(Hello world) = %v, %v", ids, err)
	}
	// This tokenizer.json's post-processor is ByteLevel only: no BOS added.
	if ids2, _ := tok.Encode("Hello world", true); !slices.Equal(ids2, ids) {
		t.Errorf("Encode with specials = %v", ids2)
	}
}

// roundTripTexts are checked for Decode(Encode(s)) == s.
var roundTripTexts = append([]string{
	"The quick brown fox jumps over the lazy dog.",
	"  leading and trailing spaces  ",
	"tabs\tand\r\nwindows newlines\n",
	"emoji sequence: 🧑🏽‍💻👩‍❤️‍💋‍👨 and flags 🇯🇵🇺🇸",
	strings.Repeat("repeat ", 50),
	"mixed: a1b2c3 ٠١٢ 𝟘𝟙𝟚",
}, mixedTexts...)

func TestTokenizerRoundTrip(t *testing.T) {
	for name, tok := range map[string]*Tokenizer{"llama3": llama3Tokenizer(t), "smollm2": smolLM2Tokenizer(t)} {
		for _, s := range roundTripTexts {
			ids, err := tok.Encode(s, false)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := tok.Decode(ids); got != s {
				t.Errorf("%s: round trip of %q gave %q", name, s, got)
			}
			if got := tok.hfDecode(ids); got != s {
				t.Errorf("%s: HF round trip of %q gave %q", name, s, got)
			}
		}
	}
}

func TestTokenizerStreamDecoder(t *testing.T) {
	for name, tok := range map[string]*Tokenizer{"llama3": llama3Tokenizer(t), "smollm2": smolLM2Tokenizer(t)} {
		for _, s := range []string{
			"CJK 你好世界，漢字も、ひらがな 🌍🚀👨‍👩‍👧 done",
			"𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ðŸ˜€ 🤖🤖🤖 ﷽",
			mixedTexts[0], mixedTexts[5],
		} {
			ids, err := tok.Encode(s, false)
			if err != nil {
				t.Fatal(err)
			}
			d := tok.NewStreamDecoder()
			var out strings.Builder
			held := 0
			for _, id := range ids {
				piece := d.Add(id)
				if !utf8.ValidString(piece) || strings.ContainsRune(piece, utf8.RuneError) {
					t.Errorf("%s: streamed piece %q is not clean UTF-8", name, piece)
				}
				if piece == "" {
					held++
				}
				out.WriteString(piece)
			}
			out.WriteString(d.Flush())
			if out.String() != s {
				t.Errorf("%s: streamed %q, want %q", name, out.String(), s)
			}
			// Each of these texts has characters split across tokens.
			if held == 0 {
				t.Errorf("%s: no token of %q was held back; the test text does not split characters", name, s)
			}
		}
	}
}

func TestTokenizerDecodeMatchesHFOnRandomIDs(t *testing.T) {
	// Random ids produce arbitrary byte sequences, so Go's decoding (and the
	// stream decoder) must replace invalid UTF-8 exactly as HF does.
	for name, tok := range map[string]*Tokenizer{"llama3": llama3Tokenizer(t), "smollm2": smolLM2Tokenizer(t)} {
		// Byte tokens (single raw bytes) make invalid sequences likely.
		var byteTokens []int32
		for b := 0; b < 256; b++ {
			if id, ok := tok.TokenID(byteLevelEncode([]byte{byte(b)})); ok && b != 0 {
				byteTokens = append(byteTokens, id)
			}
		}
		if len(byteTokens) < 200 {
			t.Fatalf("%s: %d single-byte tokens", name, len(byteTokens))
		}
		rng := rand.New(rand.NewSource(1))
		for trial := 0; trial < 300; trial++ {
			n := 1 + rng.Intn(12)
			ids := make([]int32, n)
			for i := range ids {
				if rng.Intn(2) == 0 {
					ids[i] = byteTokens[rng.Intn(len(byteTokens))]
				} else {
					ids[i] = int32(rng.Intn(tok.VocabSize()))
				}
			}
			if slices.ContainsFunc(ids, func(id int32) bool { return bytes.IndexByte(tok.pieces[id], 0) >= 0 }) {
				continue // HF's C string API cannot return a NUL
			}
			want := tok.hfDecode(ids)
			if got := tok.Decode(ids); got != want {
				t.Fatalf("%s: Decode(%v) = %q, HF = %q", name, ids, got, want)
			}
			d := tok.NewStreamDecoder()
			var out strings.Builder
			for _, id := range ids {
				out.WriteString(d.Add(id))
			}
			out.WriteString(d.Flush())
			if out.String() != want {
				t.Fatalf("%s: stream of %v = %q, HF = %q", name, ids, out.String(), want)
			}
		}
	}
}

func TestTokenizerBadInput(t *testing.T) {
	tok := llama3Tokenizer(t)
	if _, err := tok.Encode("a\x00b", false); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("NUL: %v", err)
	}
	if _, err := tok.Encode("bad \xff utf8", false); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}

	src, err := os.ReadFile(requireAsset(t, llama3TokJSON))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(sub, name string, data []byte) string {
		d := filepath.Join(dir, sub)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	cases := []struct {
		name string
		dir  string
		want []string
	}{
		{"truncated tokenizer.json", write("trunc", "tokenizer.json", src[:len(src)/2]), []string{"tokenizer.json", "not valid JSON"}},
		{"garbage tokenizer.json", write("garbage", "tokenizer.json", []byte("\x89PNG not json")), []string{"tokenizer.json", "not valid JSON"}},
		{"no vocab", write("novocab", "tokenizer.json", []byte(`{"model":{"type":"BPE"}}`)), []string{"no model.vocab"}},
		{"wrong shape", write("shape", "tokenizer.json", []byte(`{"model":{"type":"BPE","vocab":{"a":"zero"}}}`)), []string{"model.vocab"}},
		{"rejected by HF", write("hfbad", "tokenizer.json", []byte(`{"model":{"type":"Nonsense","vocab":{"a":0}}}`)), []string{"hfbad"}},
		{"missing tokenizer.json", write("empty", "README", nil), []string{"tokenizer.json"}},
		{"bad tokenizer_config", func() string {
			d := write("badcfg", "tokenizer.json", src)
			write("badcfg", "tokenizer_config.json", []byte(`{"chat_template": 42}`))
			return d
		}(), []string{"tokenizer_config.json", "chat_template"}},
		{"unknown bos", func() string {
			d := write("badbos", "tokenizer.json", src)
			write("badbos", "tokenizer_config.json", []byte(`{"bos_token": "<nope>"}`))
			return d
		}(), []string{`BOS token "<nope>"`}},
		{"bad generation_config", func() string {
			d := write("badgen", "tokenizer.json", src)
			write("badgen", "generation_config.json", []byte(`{"eos_token_id": "x"}`))
			return d
		}(), []string{"generation_config.json", "eos_token_id"}},
		{"eos out of range", func() string {
			d := write("bigeos", "tokenizer.json", src)
			write("bigeos", "config.json", []byte(`{"eos_token_id": [128001, 999999]}`))
			return d
		}(), []string{"config.json", "999999", "outside the vocabulary"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tk, err := LoadTokenizer(c.dir)
			if err == nil {
				tk.Close()
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := LoadTokenizer(requireAsset(t, smolLM2GGUF)); err == nil || !strings.Contains(err.Error(), "TokenizerFromGGUF") {
		t.Errorf("GGUF path: %v", err)
	}
}

package llama

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStopTokens(t *testing.T) {
	tokJSON := requireAsset(t, llama3TokJSON)
	mkdir := func(files map[string]string) string {
		dir := t.TempDir()
		if err := os.Symlink(tokJSON, filepath.Join(dir, "tokenizer.json")); err != nil {
			t.Fatal(err)
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	llama31Config := `{"eos_token": "<|eot_id|>", "bos_token": "<|begin_of_text|>", "chat_template": ` +
		`"{{ bos_token }}<|start_header_id|><|end_header_id|><|eot_id|>{% if add_generation_prompt %}{% endif %}"}`
	for _, c := range []struct {
		name  string
		files map[string]string
		want  []int32
	}{
		{"nothing", nil, []int32{}},
		{"config int", map[string]string{"config.json": `{"eos_token_id": 128001}`}, []int32{128001}},
		{"config list", map[string]string{"config.json": `{"eos_token_id": [128001, 128008, 128009]}`}, []int32{128001, 128008, 128009}},
		{"config null", map[string]string{"config.json": `{"eos_token_id": null, "bos_token_id": 128000}`}, []int32{}},
		{"union", map[string]string{
			"generation_config.json": `{"eos_token_id": [128001, 128008]}`,
			"config.json":            `{"eos_token_id": 128001}`,
			"tokenizer_config.json":  llama31Config,
		}, []int32{128001, 128008, 128009}},
		{"tokenizer_config eos object", map[string]string{
			"tokenizer_config.json": `{"eos_token": {"content": "<|end_of_text|>", "special": true}}`,
		}, []int32{128001}},
		{"template end of turn", map[string]string{
			"tokenizer_config.json": `{"eos_token": "<|end_of_text|>", "chat_template": "<|start_header_id|><|end_header_id|><|eot_id|>"}`,
		}, []int32{128001, 128009}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok, err := LoadTokenizer(mkdir(c.files))
			if err != nil {
				t.Fatal(err)
			}
			defer tok.Close()
			if got := tok.EOS(); !slices.Equal(got, c.want) {
				t.Errorf("EOS %v, want %v", got, c.want)
			}
			for _, id := range c.want {
				if !tok.IsEOS(id) {
					t.Errorf("IsEOS(%d) false", id)
				}
			}
			if tok.IsEOS(128000) || tok.IsEOS(-1) {
				t.Error("IsEOS of a non-stop id")
			}
		})
	}

	for _, c := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"not json", map[string]string{"generation_config.json": `{eos`}, "generation_config.json"},
		{"string id", map[string]string{"config.json": `{"eos_token_id": "2"}`}, "want an integer or a list of integers"},
		{"negative", map[string]string{"config.json": `{"eos_token_id": [-1]}`}, "eos token id -1 is outside the vocabulary"},
		{"unknown eos token", map[string]string{"tokenizer_config.json": `{"eos_token": "</s>"}`}, `eos token "</s>" is not in the vocabulary`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok, err := LoadTokenizer(mkdir(c.files))
			if err == nil {
				tok.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
		})
	}

	// GGUF: tokenizer.ggml.eos_token_id plus the template's <|im_end|>.
	if got := smolLM2Tokenizer(t).EOS(); !slices.Equal(got, []int32{2}) {
		t.Errorf("SmolLM2 EOS %v", got)
	}
	kvs := []ggufTestKV{
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", "gpt2"},
		{"tokenizer.ggml.tokens", []string{"a", "b", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"}},
		{"tokenizer.ggml.token_type", []int32{1, 1, 3, 3, 3}},
		{"tokenizer.ggml.merges", []string{}},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
		{"tokenizer.ggml.eom_token_id", uint32(3)},
		{"tokenizer.ggml.eot_token_id", int32(4)},
	}
	info, err := ReadGGUFInfo(writeTestGGUFFile(t, kvs, nil))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := TokenizerFromGGUF(info)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if got := tok.EOS(); !slices.Equal(got, []int32{2, 3, 4}) {
		t.Errorf("GGUF EOS %v, want [2 3 4]", got)
	}
}

func TestStopStrings(t *testing.T) {
	cases := []struct {
		stops  []string
		pieces []string
		want   string
		hit    bool
	}{
		{[]string{"END"}, []string{"abc", "E", "N", "D", "xyz"}, "abc", true},
		{[]string{"END"}, []string{"abc", "EN", "x", "EN"}, "abcENxEN", false},
		{[]string{"END"}, []string{"aEND"}, "a", true},
		{[]string{"\n\n", "User:"}, []string{"hi\n", "Us", "er", ":"}, "hi\n", true},
		{[]string{"\n\n", "User:"}, []string{"hi\n", "\nUser:"}, "hi", true},
		{[]string{"xyz"}, []string{"日本", "語"}, "日本語", false},
		{[]string{"", "b"}, []string{"a", "b"}, "a", true},
		{nil, []string{"a", "b"}, "ab", false},
	}
	for _, tc := range cases {
		f := NewStopStrings(tc.stops)
		var sb strings.Builder
		hit := false
		for _, p := range tc.pieces {
			s, h := f.Push(p)
			sb.WriteString(s)
			if h {
				hit = true
				break
			}
		}
		if !hit {
			sb.WriteString(f.Flush())
		}
		if sb.String() != tc.want || hit != tc.hit {
			t.Errorf("stops %q, pieces %q: got %q (hit %v), want %q (hit %v)", tc.stops, tc.pieces, sb.String(), hit, tc.want, tc.hit)
		}
	}
}

// TestTextStream streams the Llama 3 tokens of a text with a multi-byte
// character split across tokens and a stop string split across tokens: the
// pieces are valid UTF-8, never show a part of the stop string, and join to
// the text before it.
func TestTextStream(t *testing.T) {
	tok, err := LoadTokenizer(filepath.Dir(requireAsset(t, llama3TokJSON)))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	text := "Fasting 🍎 lowers insulin.\n\nUser: more"
	ids, err := tok.Encode(text, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		stops []string
		want  string
		hit   bool
	}{
		{[]string{"\n\nUser:"}, "Fasting 🍎 lowers insulin.", true},
		{[]string{"insulin"}, "Fasting 🍎 lowers ", true},
		{[]string{"nothing"}, text, false},
		{nil, text, false},
	} {
		s := tok.NewTextStream(c.stops)
		var sb strings.Builder
		for _, id := range ids {
			piece, hit := s.Add(id)
			if !utf8.ValidString(piece) {
				t.Errorf("stops %q: piece %q is not valid UTF-8", c.stops, piece)
			}
			sb.WriteString(piece)
			if hit {
				break
			}
		}
		sb.WriteString(s.Finish())
		if sb.String() != c.want || s.Stopped() != c.hit {
			t.Errorf("stops %q: text %q (stopped %v), want %q (%v)", c.stops, sb.String(), s.Stopped(), c.want, c.hit)
		}
	}
}

package llama

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testConversations cover system/user/assistant turns, whitespace that the
// Llama 3 templates trim (including Python-only whitespace U+001C), empty
// content, a system message that is not first, and non-ASCII text.
var testConversations = [][]Message{
	{{"user", "Hello!"}},
	{{"system", "  You are a pirate. \n"}, {"user", "Hi\x1c"}, {"assistant", " Arr! "}, {"user", "Bye 👋 你好"}},
	{{"user", ""}, {"assistant", ""}},
	{{"user", "a"}, {"system", "late system"}, {"assistant", "b"}},
	{{"system", "only system"}},
	{{"assistant", "starts with assistant"}},
	{{"user", "\n\nleading newlines"}, {"assistant", "\n\nanswer with\nnewlines\n\n"}},
	{{"system", "Sys\u3000"}, {"user", "Какая столица Франции?\u00a0"}, {"assistant", "Париж.\u2028"}},
}

func readTestTemplate(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "llama", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func smolLM2Template(t *testing.T) string {
	t.Helper()
	info, err := ReadGGUFInfo(requireAsset(t, smolLM2GGUF))
	if err != nil {
		t.Fatal(err)
	}
	s, err := info.String("tokenizer.chat_template")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustTemplate(t *testing.T, text string, f ChatFormat, bos string) *ChatTemplate {
	t.Helper()
	c, err := NewChatTemplate(text, f, bos)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustRender(t *testing.T, c *ChatTemplate, msgs []Message, addGen bool) string {
	t.Helper()
	s, err := c.Render(msgs, addGen)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestChatLlama3Exact(t *testing.T) {
	tok := llama3Tokenizer(t)
	c, err := tok.ChatTemplate()
	if err != nil {
		t.Fatal(err)
	}
	// This tokenizer_config's template (the Llama 3 one as published in the
	// npm package) writes the assistant header unconditionally.
	if c.Format != ChatFormatLlama3 || c.Variant != "llama3 (generation prompt always)" {
		t.Errorf("variant %q", c.Variant)
	}
	msgs := []Message{{"system", "You are a pirate.\n"}, {"user", "  Hello!  "}}
	want := "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
	for _, addGen := range []bool{true, false} {
		if got := mustRender(t, c, msgs, addGen); got != want {
			t.Errorf("addGen=%v:\n got  %q\n want %q", addGen, got, want)
		}
	}
	// The Meta form of the same template has the add_generation_prompt
	// condition.
	meta := strings.Replace(tok.ChatTemplateText(), "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}",
		"{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}", 1)
	if meta == tok.ChatTemplateText() {
		t.Fatal("could not add the add_generation_prompt condition to the template")
	}
	c2 := mustTemplate(t, meta, ChatFormatAuto, "<|begin_of_text|>")
	if got := mustRender(t, c2, msgs, false); got != strings.TrimSuffix(want, "<|start_header_id|>assistant<|end_header_id|>\n\n") {
		t.Errorf("conditional template without generation prompt: %q", got)
	}

	c31 := mustTemplate(t, readTestTemplate(t, "llama31_style.jinja"), ChatFormatAuto, "<|begin_of_text|>")
	if c31.Variant != "llama3.1" {
		t.Errorf("variant %q", c31.Variant)
	}
	want31 := "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
		"You are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
	if got := mustRender(t, c31, msgs, true); got != want31 {
		t.Errorf("llama3.1:\n got  %q\n want %q", got, want31)
	}
	want31NoSys := "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
		"<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
	if got := mustRender(t, c31, msgs[1:], false); got != want31NoSys {
		t.Errorf("llama3.1 without system:\n got  %q\n want %q", got, want31NoSys)
	}

	c32 := mustTemplate(t, readTestTemplate(t, "llama32_style.jinja"), ChatFormatAuto, "<|begin_of_text|>")
	c32.now = func() time.Time { return time.Date(2025, time.March, 5, 23, 59, 0, 0, time.UTC) }
	if c32.Variant != "llama3.2" {
		t.Errorf("variant %q", c32.Variant)
	}
	want32 := strings.Replace(want31, "26 Jul 2024", "05 Mar 2025", 1)
	if got := mustRender(t, c32, msgs, true); got != want32 {
		t.Errorf("llama3.2:\n got  %q\n want %q", got, want32)
	}
}

func TestChatSmolLM2Exact(t *testing.T) {
	tok := smolLM2Tokenizer(t)
	sys := "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
	for _, c := range []struct {
		msgs   []Message
		addGen bool
		want   string
	}{
		{[]Message{{"user", "What is the capital of France?"}}, true,
			sys + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"},
		{[]Message{{"user", "What is the capital of France?"}, {"assistant", " Paris. "}}, false,
			sys + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n Paris. <|im_end|>\n"},
		{[]Message{{"system", "Be terse."}, {"user", "Hi"}}, true,
			"<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
	} {
		got, err := tok.RenderChat(c.msgs, c.addGen)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%v:\n got  %q\n want %q", c.msgs, got, c.want)
		}
	}
}

// TestChatMatchesTransformers renders every test conversation with
// transformers' apply_chat_template and with the Go renderer.
func TestChatMatchesTransformers(t *testing.T) {
	tokJSON := requireAsset(t, llama3TokJSON)
	llama3 := llama3Tokenizer(t)
	templates := []struct {
		name, text string
	}{
		{"llama3 (tokenizer_config)", llama3.ChatTemplateText()},
		{"llama3.1-style", readTestTemplate(t, "llama31_style.jinja")},
		{"llama3.2-style", readTestTemplate(t, "llama32_style.jinja")},
		{"smollm2 (gguf)", smolLM2Template(t)},
		{"chatml plain", readTestTemplate(t, "chatml_plain.jinja")},
	}
	for _, tmpl := range templates {
		c := mustTemplate(t, tmpl.text, ChatFormatAuto, "<|begin_of_text|>")
		isLlama := c.Format == ChatFormatLlama3
		for _, addGen := range []bool{false, true} {
			var ref struct {
				Texts []string  `json:"texts"`
				IDs   [][]int32 `json:"ids"`
			}
			runHFReference(t, map[string]any{
				"op": "chat", "tokenizer": tokJSON, "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
				"template": tmpl.text, "conversations": testConversations, "add_generation_prompt": addGen, "tokenize": isLlama,
			}, &ref)
			for i, conv := range testConversations {
				got := mustRender(t, c, conv, addGen)
				if got != ref.Texts[i] {
					t.Errorf("%s, conversation %d, addGen=%v:\n go           %q\n transformers %q", tmpl.name, i, addGen, got, ref.Texts[i])
				}
				if !isLlama {
					continue
				}
				// The token ids too, with the Llama 3 tokenizer.
				tk := *llama3
				tk.chat = c
				ids, _, err := tk.EncodeChat(conv, addGen)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ids, ref.IDs[i]) {
					t.Errorf("%s, conversation %d, addGen=%v: ids\n go           %v\n transformers %v", tmpl.name, i, addGen, ids, ref.IDs[i])
				}
			}
		}
		t.Logf("%s (%s): %d conversations x 2 identical to transformers", tmpl.name, c.Variant, len(testConversations))
	}
}

// maskedRuns decodes the runs of consecutive masked tokens.
func maskedRuns(tok *Tokenizer, ids []int32, mask []bool) []string {
	var runs []string
	for i := 0; i < len(ids); {
		if !mask[i] {
			i++
			continue
		}
		j := i
		for j < len(ids) && mask[j] {
			j++
		}
		runs = append(runs, tok.Decode(ids[i:j]))
		i = j
	}
	return runs
}

func TestChatEncodeAssistantMask(t *testing.T) {
	conv := []Message{
		{"system", "You are terse."},
		{"user", "Capital of France?"},
		{"assistant", " Paris 🇫🇷 (巴黎). "},
		{"user", "And Japan?"},
		{"assistant", "Tokyo."},
	}
	for _, c := range []struct {
		name string
		tok  *Tokenizer
		want []string
	}{
		{"llama3", llama3Tokenizer(t), []string{"Paris 🇫🇷 (巴黎).<|eot_id|>", "Tokyo.<|eot_id|>"}},
		{"smollm2", smolLM2Tokenizer(t), []string{" Paris 🇫🇷 (巴黎). <|im_end|>", "Tokyo.<|im_end|>"}},
	} {
		for _, addGen := range []bool{false, true} {
			ids, mask, err := c.tok.EncodeChat(conv, addGen)
			if err != nil {
				t.Fatal(err)
			}
			text, err := c.tok.RenderChat(conv, addGen)
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := c.tok.Encode(text, false)
			if !slices.Equal(ids, plain) {
				t.Errorf("%s: EncodeChat ids differ from Encode(RenderChat)", c.name)
			}
			if len(mask) != len(ids) {
				t.Fatalf("%s: mask %d for %d ids", c.name, len(mask), len(ids))
			}
			if got := maskedRuns(c.tok, ids, mask); !slices.Equal(got, c.want) {
				t.Errorf("%s addGen=%v: trained runs %q, want %q", c.name, addGen, got, c.want)
			}
			// Headers are not trained.
			for i, id := range ids {
				if tokText, _ := c.tok.Token(id); mask[i] && (tokText == "<|start_header_id|>" || tokText == "<|im_start|>" || tokText == "<|begin_of_text|>") {
					t.Errorf("%s: header token %q at %d is trained", c.name, tokText, i)
				}
			}
		}
	}
}

func TestChatUnknownAndForced(t *testing.T) {
	unknown := "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
	_, err := NewChatTemplate(unknown, ChatFormatAuto, "")
	if err == nil || !strings.Contains(err.Error(), "unrecognised chat template") || !strings.Contains(err.Error(), "--chat-format llama3|chatml") {
		t.Errorf("unknown template: %v", err)
	}
	if _, err := NewChatTemplate("", ChatFormatAuto, ""); err == nil || !strings.Contains(err.Error(), "no chat template") {
		t.Errorf("no template: %v", err)
	}
	if _, err := ParseChatFormat("vicuna"); err == nil || !strings.Contains(err.Error(), `"vicuna"`) {
		t.Errorf("ParseChatFormat: %v", err)
	}
	for in, want := range map[string]ChatFormat{"": ChatFormatAuto, "auto": ChatFormatAuto, "llama3": ChatFormatLlama3, "ChatML": ChatFormatChatML} {
		if got, err := ParseChatFormat(in); err != nil || got != want {
			t.Errorf("ParseChatFormat(%q) = %q, %v", in, got, err)
		}
	}

	msgs := []Message{{"system", " S "}, {"user", " U "}, {"assistant", " A "}}
	chatml := mustTemplate(t, unknown, ChatFormatChatML, "")
	if got, want := mustRender(t, chatml, msgs, true),
		"<|im_start|>system\n S <|im_end|>\n<|im_start|>user\n U <|im_end|>\n<|im_start|>assistant\n A <|im_end|>\n<|im_start|>assistant\n"; got != want {
		t.Errorf("forced chatml:\n got  %q\n want %q", got, want)
	}
	llama := mustTemplate(t, unknown, ChatFormatLlama3, "")
	if got, want := mustRender(t, llama, msgs, false),
		"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"+
			"<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"; got != want {
		t.Errorf("forced llama3:\n got  %q\n want %q", got, want)
	}
	// Forcing the family a template already has keeps its details.
	smol := mustTemplate(t, smolLM2Template(t), ChatFormatChatML, "")
	if !smol.hasDefaultSystem {
		t.Error("forced chatml on SmolLM2's template lost the default system prompt")
	}

	// Through the tokenizer: the error says how to override, and the
	// override works.
	dir := t.TempDir()
	if err := os.Symlink(requireAsset(t, llama3TokJSON), filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte(unknown), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	_, _, err = tok.EncodeChat(msgs, true)
	if err == nil || !strings.Contains(err.Error(), "chat_template.jinja") || !strings.Contains(err.Error(), "--chat-format") {
		t.Errorf("EncodeChat with an unknown template: %v", err)
	}
	if _, err := tok.Encode("plain text still works", false); err != nil {
		t.Error(err)
	}
	forced, err := LoadTokenizer(dir, WithChatFormat(ChatFormatLlama3))
	if err != nil {
		t.Fatal(err)
	}
	defer forced.Close()
	if _, _, err := forced.EncodeChat(msgs, true); err != nil {
		t.Errorf("forced llama3: %v", err)
	}
	if !forced.IsEOS(128009) {
		t.Error("forced llama3 format: <|eot_id|> does not stop generation")
	}
	// ChatML needs <|im_start|>, which the Llama 3 vocabulary lacks.
	noML, err := LoadTokenizer(dir, WithChatFormat(ChatFormatChatML))
	if err != nil {
		t.Fatal(err)
	}
	defer noML.Close()
	if _, err := noML.RenderChat(msgs, true); err == nil || !strings.Contains(err.Error(), `"<|im_start|>"`) {
		t.Errorf("chatml on a Llama 3 vocabulary: %v", err)
	}

	for _, bad := range [][]Message{nil, {{"tool", "x"}}, {{"user", "a"}, {"ipython", "b"}}} {
		if _, err := mustTemplate(t, unknown, ChatFormatChatML, "").Render(bad, true); err == nil {
			t.Errorf("messages %v: no error", bad)
		}
	}
	if _, err := LoadTokenizer(dir, WithChatFormat("vicuna")); err == nil {
		t.Error("bad WithChatFormat: no error")
	}
}

func TestChatParseMessages(t *testing.T) {
	want := []Message{{"system", "S"}, {"user", "U 👋"}}
	for _, in := range []string{
		`[{"role":"system","content":"S"},{"role":"user","content":"U 👋"}]`,
		` {"messages": [{"role":"system","content":"S"},{"role":"user","content":"U 👋","name":"x"}]}`,
	} {
		got, err := ParseMessages([]byte(in))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseMessages(%s) = %v, %v", in, got, err)
		}
	}
	for in, wantErr := range map[string]string{
		`[]`:                              "no messages",
		`{"msgs": []}`:                    `no "messages" list`,
		`[{"role":"tool","content":"x"}]`: `role "tool"`,
		`[{"role":"user","content":[1]}]`: `"content" must be a string`,
		`[{"content":"x"}]`:               `"role" must be a string`,
		`not json`:                        "want a list",
	} {
		if _, err := ParseMessages([]byte(in)); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseMessages(%s): %v, want %q", in, err, wantErr)
		}
	}
}

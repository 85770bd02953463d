package llama

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// smolLM2StyleTemplate has the markers of SmolLM2's ChatML template with
// its default system prompt (a seed that needs no model file).
const smolLM2StyleTemplate = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}` +
	`{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}` +
	`{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}` +
	`{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

// fuzzFormats are the chat formats the fuzz target picks from; the last is
// not a format and must be refused.
var fuzzFormats = []ChatFormat{ChatFormatAuto, ChatFormatLlama3, ChatFormatChatML, "vicuna"}

// fuzzMessages builds a conversation from the fuzzer's bytes: contents
// separated by \x1e, roles from roles (0 system, 1 user, 2 assistant, 255
// a role no template has; others cycle through the valid ones).
func fuzzMessages(roles []byte, contents string) (msgs []Message, valid bool) {
	valid = true
	for i, c := range strings.Split(contents, "\x1e") {
		role := "user"
		if len(roles) > 0 {
			switch r := roles[i%len(roles)]; {
			case r == 255:
				role, valid = "tool", false
			default:
				role = []string{"system", "user", "assistant"}[r%3]
			}
		}
		msgs = append(msgs, Message{role, c})
	}
	return msgs, valid
}

// FuzzChatRender recognises arbitrary template text (auto-detected or
// forced) and renders arbitrary conversations with it. It must never
// panic. A conversation with a role no template has is refused; any other
// renders deterministically, and the assistant spans (what training counts)
// are in order, inside the text, one per assistant message, each exactly
// that message's content (trimmed when the template trims) and the
// end-of-turn token. With add_generation_prompt the text ends with the
// assistant header.
func FuzzChatRender(f *testing.F) {
	templates := []string{"", smolLM2StyleTemplate, "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}",
		llama3Start + llama3End + llama3EOT + chatMLStart + chatMLEnd}
	for _, name := range []string{"chatml_plain.jinja", "llama31_style.jinja", "llama32_style.jinja"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			templates = append(templates, string(b))
		}
	}
	for i, tmpl := range templates {
		for j, conv := range testConversations {
			var roles []byte
			var contents []string
			for _, m := range conv {
				roles = append(roles, map[string]byte{"system": 0, "user": 1, "assistant": 2}[m.Role])
				contents = append(contents, m.Content)
			}
			f.Add(tmpl, uint8(i+j), roles, strings.Join(contents, "\x1e"), j%2 == 0)
		}
	}
	f.Add(smolLM2StyleTemplate, uint8(0), []byte{1, 255}, "a\x1eb", true)
	f.Fuzz(func(t *testing.T, template string, format uint8, roles []byte, contents string, addGen bool) {
		bos := ""
		if format&4 != 0 {
			bos = "<s>"
		}
		c, err := NewChatTemplate(template, fuzzFormats[int(format)%len(fuzzFormats)], bos)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		c.now = func() time.Time { return time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC) }
		msgs, valid := fuzzMessages(roles, contents)
		text, spans, err := c.render(msgs, addGen)
		if !valid {
			if err == nil {
				t.Fatalf("rendered a conversation with role tool: %q", text)
			}
			return
		}
		if err != nil {
			t.Fatalf("render %d messages: %v", len(msgs), err)
		}
		if again, err := c.Render(msgs, addGen); err != nil || again != text {
			t.Fatalf("rendering again gives %q, %v; first %q", again, err, text)
		}
		var answers []string
		for _, m := range msgs {
			if m.Role != "assistant" {
				continue
			}
			body := m.Content
			if c.trim {
				body = pyTrim(body)
			}
			answers = append(answers, body+c.EndOfTurn)
		}
		if len(spans) != len(answers) {
			t.Fatalf("%d assistant spans for %d assistant messages", len(spans), len(answers))
		}
		end := 0
		for i, s := range spans {
			if s.start < end || s.end < s.start || s.end > len(text) {
				t.Fatalf("span %d [%d, %d) out of order or outside the text of %d bytes (previous end %d)", i, s.start, s.end, len(text), end)
			}
			if got := text[s.start:s.end]; got != answers[i] {
				t.Fatalf("span %d is %q, want %q", i, got, answers[i])
			}
			end = s.end
		}
		header := map[ChatFormat]string{ChatFormatLlama3: llama3Start + "assistant" + llama3End + "\n\n", ChatFormatChatML: chatMLStart + "assistant\n"}[c.Format]
		if addGen && !strings.HasSuffix(text, header) {
			t.Fatalf("with add_generation_prompt the text ends %q, want the header %q", text[max(0, len(text)-40):], header)
		}
		if c.Format == ChatFormatLlama3 && !strings.HasPrefix(text, c.bos) {
			t.Fatalf("Llama 3 text starts %q, want BOS %q", text[:min(len(text), 20)], c.bos)
		}
	})
}

// FuzzParseMessages parses arbitrary bytes as a conversation (generate's
// --messages). It must never panic; a conversation it accepts has only
// system, user and assistant messages, and reads back the same from its
// own JSON.
func FuzzParseMessages(f *testing.F) {
	for _, in := range []string{
		`[{"role":"system","content":"S"},{"role":"user","content":"U 👋"}]`,
		` {"messages": [{"role":"system","content":"S"},{"role":"user","content":"U 👋","name":"x"}]}`,
		`[]`, `{"msgs": []}`, `[{"role":"tool","content":"x"}]`, `[{"role":"user","content":[1]}]`,
		`[{"content":"x"}]`, `not json`, `{"messages": null}`, `[null]`,
	} {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := ParseMessages(data)
		if err != nil {
			return
		}
		if len(msgs) == 0 {
			t.Fatal("accepted no messages")
		}
		for i, m := range msgs {
			if !slices.Contains([]string{"system", "user", "assistant"}, m.Role) {
				t.Fatalf("message %d has role %q", i, m.Role)
			}
		}
		b, err := json.Marshal(msgs)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseMessages(b)
		if err != nil || !slices.Equal(back, msgs) {
			t.Fatalf("%s reads back as %v, %v", b, back, err)
		}
	})
}

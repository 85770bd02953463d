package llama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// Chat templates are Jinja programs shipped with a model. fungtrain does not
// run Jinja: it recognises the two template families it supports from
// distinctive markers in the template text and renders them in Go,
// byte-for-byte as transformers' apply_chat_template would:
//
//   - Llama 3 (<|start_header_id|>, <|end_header_id|>, <|eot_id|>), in the
//     variants of Llama 3.0 (BOS, then one header/content/<|eot_id|> block per
//     message, content trimmed) and Llama 3.1/3.2/3.3 (additionally a system
//     block that always opens with "Cutting Knowledge Date: ...\nToday Date:
//     ...\n\n", the date being fixed in 3.1 and today's date through
//     strftime_now in 3.2).
//   - ChatML (<|im_start|>, <|im_end|>) as used by SmolLM2, including its
//     default system prompt inserted when the conversation does not start
//     with a system message.
//
// Details that vary between variants (whether the generation prompt is
// conditional on add_generation_prompt, whether content is trimmed, the
// default system prompt, the cutoff and date strings) are read from the
// template text. Anything else is an error that suggests forcing a format
// with --chat-format llama3|chatml (WithChatFormat), which renders the plain
// form of that family. Tool calls and other roles are not supported.

// ChatFormat names a chat template family.
type ChatFormat string

// The chat formats. ChatFormatAuto recognises the family from the template.
const (
	ChatFormatAuto   ChatFormat = ""
	ChatFormatLlama3 ChatFormat = "llama3"
	ChatFormatChatML ChatFormat = "chatml"
)

// ParseChatFormat parses a --chat-format value: "auto" (or ""), "llama3" or
// "chatml".
func ParseChatFormat(s string) (ChatFormat, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return ChatFormatAuto, nil
	case "llama3", "llama-3", "llama":
		return ChatFormatLlama3, nil
	case "chatml":
		return ChatFormatChatML, nil
	}
	return "", fmt.Errorf("unknown chat format %q (want auto, llama3 or chatml)", s)
}

// Message is one chat message. Role is "system", "user" or "assistant".
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ParseMessages reads a conversation from JSON: either a list of
// {"role", "content"} objects or an object with such a list under
// "messages" (the chat format of mlx-lm's datasets). Roles must be system,
// user or assistant and content a string.
func ParseMessages(data []byte) ([]Message, error) {
	trimmed := bytes.TrimSpace(data)
	var raw []map[string]json.RawMessage
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var obj struct {
			Messages []map[string]json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(trimmed, &obj); err != nil {
			return nil, fmt.Errorf("parse messages: %w", err)
		}
		if obj.Messages == nil {
			return nil, fmt.Errorf("parse messages: the object has no \"messages\" list")
		}
		raw = obj.Messages
	} else if err := json.Unmarshal(trimmed, &raw); err != nil {
		return nil, fmt.Errorf("parse messages: want a list of {\"role\", \"content\"} objects: %w", err)
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("parse messages: no messages")
	}
	msgs := make([]Message, len(raw))
	for i, m := range raw {
		if err := json.Unmarshal(m["role"], &msgs[i].Role); err != nil {
			return nil, fmt.Errorf("parse messages: message %d: \"role\" must be a string", i)
		}
		switch msgs[i].Role {
		case "system", "user", "assistant":
		default:
			return nil, fmt.Errorf("parse messages: message %d has role %q (want system, user or assistant)", i, msgs[i].Role)
		}
		if err := json.Unmarshal(m["content"], &msgs[i].Content); err != nil {
			return nil, fmt.Errorf("parse messages: message %d: \"content\" must be a string", i)
		}
	}
	return msgs, nil
}

// ChatTemplate renders conversations in one recognised template variant.
type ChatTemplate struct {
	// Format is the template family.
	Format ChatFormat
	// Variant describes the recognised variant, e.g. "llama3.1" or
	// "chatml+default-system".
	Variant string
	// EndOfTurn is the token that closes every message, <|eot_id|> or
	// <|im_end|>; generation stops on it.
	EndOfTurn string

	bos  string // BOS text written at the start ("" for none)
	trim bool   // message content is trimmed (Jinja's |trim)
	// genAlways: the template writes the assistant header even without
	// add_generation_prompt (a Llama 3.0 variant does).
	genAlways bool

	// Llama 3.1+: the always-present system block.
	systemBlock   bool
	knowledgeDate string
	fixedDate     string // used when dateLayout is ""
	dateLayout    string // Go layout of the template's strftime_now format
	now           func() time.Time

	// ChatML: the default system prompt, used when the first message is not
	// a system message.
	defaultSystem    string
	hasDefaultSystem bool
}

// Token strings of the two families.
const (
	llama3Start = "<|start_header_id|>"
	llama3End   = "<|end_header_id|>"
	llama3EOT   = "<|eot_id|>"
	llama3BOS   = "<|begin_of_text|>"
	chatMLStart = "<|im_start|>"
	chatMLEnd   = "<|im_end|>"
)

var (
	reTrimFilter     = regexp.MustCompile(`\|\s*trim\b`)
	reKnowledgeDate  = regexp.MustCompile(`Cutting Knowledge Date: ([^"'\\\n]*)`)
	reFixedDate      = regexp.MustCompile(`set\s+date_string\s*=\s*["']([^"']*)["']`)
	reStrftime       = regexp.MustCompile(`strftime_now\(\s*["']([^"']*)["']\s*\)`)
	reChatMLDefault  = regexp.MustCompile(`<\|im_start\|>system(?:\n|\\n)((?s:.*?))<\|im_end\|>`)
	reFirstNotSystem = regexp.MustCompile(`\[\s*0\s*\]\s*(?:\[\s*['"]role['"]\s*\]|\.role)\s*!=\s*['"]system['"]`)
)

// detectChatFamily returns the family whose markers the template has.
func detectChatFamily(text string) (ChatFormat, error) {
	llama := strings.Contains(text, llama3Start) && strings.Contains(text, llama3End) && strings.Contains(text, llama3EOT)
	chatml := strings.Contains(text, chatMLStart) && strings.Contains(text, chatMLEnd)
	switch {
	case llama && chatml:
		return "", fmt.Errorf("the chat template has both Llama 3 and ChatML markers")
	case llama:
		return ChatFormatLlama3, nil
	case chatml:
		return ChatFormatChatML, nil
	}
	return "", nil
}

// NewChatTemplate recognises a Jinja chat template. format forces a family
// (ChatFormatAuto recognises it); bos is the tokenizer's BOS text, which the
// Llama 3 templates write through bos_token.
func NewChatTemplate(text string, format ChatFormat, bos string) (*ChatTemplate, error) {
	if _, err := ParseChatFormat(string(format)); err != nil {
		return nil, err
	}
	family, err := detectChatFamily(text)
	if err != nil && format == ChatFormatAuto {
		return nil, fmt.Errorf("%w; force a format with --chat-format llama3|chatml", err)
	}
	if format == ChatFormatAuto {
		if strings.TrimSpace(text) == "" {
			return nil, fmt.Errorf("the model has no chat template; force a format with --chat-format llama3|chatml, or use --no-chat-template")
		}
		if family == "" {
			return nil, fmt.Errorf("unrecognised chat template (neither Llama 3 nor ChatML markers) starting %q; force a format with --chat-format llama3|chatml, or use --no-chat-template",
				abbrev(text, 80))
		}
		format = family
	}
	c := &ChatTemplate{Format: format, now: time.Now}
	fromText := family == format
	switch format {
	case ChatFormatLlama3:
		c.EndOfTurn = llama3EOT
		c.bos = bos
		if c.bos == "" {
			c.bos = llama3BOS
		}
		c.trim = true
		c.Variant = "llama3"
		if !fromText {
			c.Variant = "llama3 (forced)"
			return c, nil
		}
		if !strings.Contains(text, "bos_token") {
			c.bos = ""
		}
		c.trim = reTrimFilter.MatchString(text)
		c.genAlways = !strings.Contains(text, "add_generation_prompt")
		if c.genAlways {
			c.Variant = "llama3 (generation prompt always)"
		}
		if strings.Contains(text, "Cutting Knowledge Date") {
			if err := c.parseSystemBlock(text); err != nil {
				return nil, err
			}
		}
	case ChatFormatChatML:
		c.EndOfTurn = chatMLEnd
		c.Variant = "chatml"
		if !fromText {
			c.Variant = "chatml (forced)"
			return c, nil
		}
		c.trim = reTrimFilter.MatchString(text)
		c.genAlways = !strings.Contains(text, "add_generation_prompt")
		if m := reChatMLDefault.FindStringSubmatch(text); m != nil {
			if !reFirstNotSystem.MatchString(text) {
				return nil, fmt.Errorf("unrecognised ChatML template: it writes a system prompt but not under the usual \"first message is not system\" condition; force --chat-format chatml to render plain ChatML")
			}
			c.defaultSystem, c.hasDefaultSystem = unescapeJinja(m[1]), true
			c.Variant = "chatml+default-system"
		}
	}
	return c, nil
}

// parseSystemBlock reads the Llama 3.1+ system block's cutoff and date.
func (c *ChatTemplate) parseSystemBlock(text string) error {
	c.systemBlock = true
	m := reKnowledgeDate.FindStringSubmatch(text)
	if m == nil {
		return fmt.Errorf("unrecognised Llama 3 chat template: cannot read its knowledge cutoff date")
	}
	c.knowledgeDate = m[1]
	if f := reFixedDate.FindStringSubmatch(text); f != nil {
		c.fixedDate = f[1]
	}
	// Llama 3.2 prints today's date when strftime_now is defined, as it is
	// in transformers, and falls back to the fixed date otherwise.
	if s := reStrftime.FindStringSubmatch(text); s != nil {
		layout, err := strftimeLayout(s[1])
		if err != nil {
			return fmt.Errorf("unrecognised Llama 3 chat template: strftime_now format %q: %w", s[1], err)
		}
		c.dateLayout = layout
		c.Variant = "llama3.2"
	} else if c.fixedDate != "" {
		c.Variant = "llama3.1"
	} else {
		return fmt.Errorf("unrecognised Llama 3 chat template: it has a knowledge cutoff but no date_string")
	}
	return nil
}

// strftimeLayout converts a Python strftime format to a Go time layout.
func strftimeLayout(f string) (string, error) {
	var sb strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			sb.WriteByte(f[i])
			continue
		}
		i++
		if i >= len(f) {
			return "", fmt.Errorf("trailing %%")
		}
		switch f[i] {
		case 'd':
			sb.WriteString("02")
		case 'b':
			sb.WriteString("Jan")
		case 'B':
			sb.WriteString("January")
		case 'm':
			sb.WriteString("01")
		case 'Y':
			sb.WriteString("2006")
		case 'y':
			sb.WriteString("06")
		case 'a':
			sb.WriteString("Mon")
		case 'A':
			sb.WriteString("Monday")
		case 'H':
			sb.WriteString("15")
		case 'M':
			sb.WriteString("04")
		case 'S':
			sb.WriteString("05")
		case '%':
			sb.WriteByte('%')
		default:
			return "", fmt.Errorf("unsupported directive %%%c", f[i])
		}
	}
	return sb.String(), nil
}

// unescapeJinja resolves the backslash escapes of a Jinja string literal.
func unescapeJinja(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			sb.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			sb.WriteByte('\n')
		case 't':
			sb.WriteByte('\t')
		case 'r':
			sb.WriteByte('\r')
		case '\\', '\'', '"':
			sb.WriteByte(s[i])
		default:
			sb.WriteByte('\\')
			sb.WriteByte(s[i])
		}
	}
	return sb.String()
}

// pyTrim is Jinja's |trim, i.e. Python's str.strip(): it removes Unicode
// whitespace, which for Python also includes U+001C..U+001F.
func pyTrim(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
	})
}

// specialTokens lists the tokens the rendered text relies on.
func (c *ChatTemplate) specialTokens() []string {
	switch c.Format {
	case ChatFormatLlama3:
		toks := []string{llama3Start, llama3End, llama3EOT}
		if c.bos != "" {
			toks = append(toks, c.bos)
		}
		return toks
	case ChatFormatChatML:
		return []string{chatMLStart, chatMLEnd}
	}
	return nil
}

// span is a byte range [start, end) of rendered text.
type span struct{ start, end int }

// Render renders messages as the template would, with the assistant header
// appended when addGenerationPrompt is set.
func (c *ChatTemplate) Render(messages []Message, addGenerationPrompt bool) (string, error) {
	text, _, err := c.render(messages, addGenerationPrompt)
	return text, err
}

// render also returns the spans of the assistant turns that are trained:
// each assistant message's content and its end-of-turn token.
func (c *ChatTemplate) render(messages []Message, addGen bool) (string, []span, error) {
	if len(messages) == 0 {
		return "", nil, fmt.Errorf("render chat: no messages")
	}
	for i, m := range messages {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return "", nil, fmt.Errorf("render chat: message %d has role %q (want system, user or assistant)", i, m.Role)
		}
	}
	var sb strings.Builder
	var spans []span
	content := func(s string) string {
		if c.trim {
			return pyTrim(s)
		}
		return s
	}
	// turn writes header, then body and end-of-turn, recording a span for
	// assistant turns.
	turn := func(role, header, body, eot string) {
		sb.WriteString(header)
		start := sb.Len()
		sb.WriteString(body)
		sb.WriteString(eot)
		if role == "assistant" {
			spans = append(spans, span{start, sb.Len()})
		}
	}
	switch c.Format {
	case ChatFormatLlama3:
		sb.WriteString(c.bos)
		if c.systemBlock {
			sys := ""
			if messages[0].Role == "system" {
				sys = pyTrim(messages[0].Content)
				messages = messages[1:]
			}
			date := c.fixedDate
			if c.dateLayout != "" {
				now := time.Now
				if c.now != nil {
					now = c.now
				}
				date = now().Format(c.dateLayout)
			}
			sb.WriteString(llama3Start + "system" + llama3End + "\n\n")
			sb.WriteString("Cutting Knowledge Date: " + c.knowledgeDate + "\n")
			sb.WriteString("Today Date: " + date + "\n\n")
			sb.WriteString(sys + llama3EOT)
		}
		for _, m := range messages {
			turn(m.Role, llama3Start+m.Role+llama3End+"\n\n", content(m.Content), llama3EOT)
		}
		if addGen || c.genAlways {
			sb.WriteString(llama3Start + "assistant" + llama3End + "\n\n")
		}
	case ChatFormatChatML:
		for i, m := range messages {
			if i == 0 && m.Role != "system" && c.hasDefaultSystem {
				sb.WriteString(chatMLStart + "system\n" + c.defaultSystem + chatMLEnd + "\n")
			}
			turn(m.Role, chatMLStart+m.Role+"\n", content(m.Content), chatMLEnd)
			sb.WriteString("\n")
		}
		if addGen || c.genAlways {
			sb.WriteString(chatMLStart + "assistant\n")
		}
	default:
		return "", nil, fmt.Errorf("render chat: unknown format %q", c.Format)
	}
	return sb.String(), spans, nil
}

// resolveChat recognises the tokenizer's chat template (or the forced
// format) and checks that the tokenizer has the tokens it writes.
func (t *Tokenizer) resolveChat() (*ChatTemplate, error) {
	bos := ""
	if t.bos >= 0 {
		bos = t.tokens[t.bos]
	}
	c, err := NewChatTemplate(t.chatText, t.opts.chatFormat, bos)
	if err != nil {
		if t.chatSource != "" {
			return nil, fmt.Errorf("chat template of %s: %w", t.chatSource, err)
		}
		return nil, fmt.Errorf("chat template: %w", err)
	}
	c.now = t.opts.now
	for _, tok := range c.specialTokens() {
		if _, ok := t.TokenID(tok); !ok {
			return nil, fmt.Errorf("chat format %s writes the token %q, which tokenizer %s does not have", c.Variant, tok, t.name)
		}
	}
	return c, nil
}

// ChatTemplate returns the recognised chat template, or an error saying why
// there is none (no template, an unrecognised one) and how to force one.
func (t *Tokenizer) ChatTemplate() (*ChatTemplate, error) { return t.chat, t.chatErr }

// ChatTemplateText is the raw Jinja chat template ("" if the model has none).
func (t *Tokenizer) ChatTemplateText() string { return t.chatText }

// RenderChat renders messages with the tokenizer's chat template.
func (t *Tokenizer) RenderChat(messages []Message, addGenerationPrompt bool) (string, error) {
	if t.chatErr != nil {
		return "", t.chatErr
	}
	return t.chat.Render(messages, addGenerationPrompt)
}

// EncodeChat renders messages with the chat template and tokenizes the text
// (without adding special tokens: the template writes the BOS itself), as
// transformers' apply_chat_template(tokenize=True) does.
//
// assistantMask[i] tells whether token i belongs to an assistant turn and so
// counts in the loss when training with mask_prompt. Decision: what is
// trained is exactly what the model must produce when it answers: every
// assistant message's content plus the end-of-turn token that closes it
// (<|eot_id|> or <|im_end|>), so the model learns to stop. The role headers
// (<|start_header_id|>assistant<|end_header_id|>\n\n, <|im_start|>assistant\n)
// are part of the prompt at inference time and are not trained, nor are the
// BOS, system and user turns, the template's default system prompt, or the
// newline ChatML writes after <|im_end|>. All assistant turns of a
// multi-turn conversation are trained, not only the last.
//
// The mask is computed on the tokens of the whole rendered text, from each
// token's byte offsets, so the ids are exactly those of tokenizing the
// rendered string. A token that straddles the boundary of an assistant span
// (possible only when a BPE merge crosses it, e.g. ChatML content that begins
// with a newline) is trained if any of its bytes lie inside the span.
func (t *Tokenizer) EncodeChat(messages []Message, addGenerationPrompt bool) (ids []int32, assistantMask []bool, err error) {
	if t.chatErr != nil {
		return nil, nil, t.chatErr
	}
	text, spans, err := t.chat.render(messages, addGenerationPrompt)
	if err != nil {
		return nil, nil, err
	}
	ids, offsets, err := t.encodeOffsets(text)
	if err != nil {
		return nil, nil, fmt.Errorf("encode chat: %w", err)
	}
	assistantMask = make([]bool, len(ids))
	for i, o := range offsets {
		s, e := int(o[0]), int(o[1])
		for _, sp := range spans {
			if s < sp.end && e > sp.start {
				assistantMask[i] = true
				break
			}
		}
	}
	return ids, assistantMask, nil
}

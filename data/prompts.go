package data

import (
	"fmt"
	"os"
	"strings"
	"text/template"

	"github.com/fungtrain/fungtrain/internal/jsonl"
)

// Default prompt templates. Each is a text/template; the fields available
// are listed with each stage's data type.
const (
	DefaultQuestionsSystem = `You read the transcript of a video in which {{.Persona}} explains a medical topic to patients.
List the distinct questions a viewer could ask that this video answers clearly and completely.

Rules:
- Each question stands on its own: name the condition, treatment or body part; never write "in the video", "he", "she" or "this".
- Phrase each question the way a patient would ask it.
- Only questions the transcript answers; no two questions asking the same thing.
- At most {{.MaxQuestions}} questions; fewer is fine for a short video.

Reply with JSON: {"questions": ["...", "..."]}`

	DefaultQuestionsUser = `{{if .Title}}Title: {{.Title}}

{{end}}Transcript:
{{.Transcript}}`

	DefaultAnswersSystem = `You are {{.Persona}} who recorded the video whose transcript you are given.
Answer the viewer's question in your own voice, in the first person, as you would in the video.

Rules:
- Use only what you say in the transcript; do not add facts, numbers or advice that are not there.
- Write markdown: short paragraphs separated by blank lines, **bold** for key terms, and bulleted or numbered lists for steps, options or symptoms.
- Never mention the transcript, the video, the recording or the viewer's question itself; just answer.
- Be complete but do not pad: usually 120 to 400 words.`

	DefaultAnswersUser = `Transcript:
{{.Transcript}}

Question: {{.Question}}`

	DefaultParaphraseSystem = `You rewrite patient questions. Give {{.N}} different ways a patient could ask the same question.
Each must keep exactly the same meaning and scope, stand on its own, and differ in wording, not just punctuation.

Reply with JSON: {"paraphrases": ["...", "..."]}`

	DefaultParaphraseUser = `Question: {{.Question}}`

	DefaultShortAnswerSystem = `You condense answers. Rewrite the answer below as a short answer of two to four sentences in the same first-person voice, keeping the key advice and any warning. Plain markdown, no heading, no preamble.`

	DefaultShortAnswerUser = `Question: {{.Question}}

Answer:
{{.Answer}}`
)

// QuestionsPromptData is what the questions templates see.
type QuestionsPromptData struct {
	VideoID, Title, Transcript, Persona string
	MaxQuestions                        int
}

// AnswersPromptData is what the answers templates see.
type AnswersPromptData struct {
	VideoID, Title, Transcript, Persona, Question string
}

// AugmentPromptData is what the augment templates see. N is the number of
// paraphrases asked for.
type AugmentPromptData struct {
	Question, Answer string
	N                int
}

// promptPair is a parsed system/user template pair.
type promptPair struct {
	system, user *template.Template
}

// loadPrompts parses the templates of pc, falling back to the defaults,
// and checks them by rendering sample.
func loadPrompts(key string, pc PromptConfig, defSystem, defUser string, sample any) (promptPair, error) {
	get := func(inline, file, def, name string) (*template.Template, error) {
		src := def
		if inline != "" {
			src = inline
		}
		if file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("data.%s.%s_file: %w", key, name, err)
			}
			src = strings.TrimPrefix(string(b), jsonl.BOM) // an editor's byte-order mark is no prompt text
		}
		t, err := template.New(key + "." + name).Option("missingkey=error").Parse(src)
		if err != nil {
			return nil, fmt.Errorf("data.%s.%s: %w", key, name, err)
		}
		if err := t.Execute(&strings.Builder{}, sample); err != nil {
			return nil, fmt.Errorf("data.%s.%s: %w", key, name, err)
		}
		return t, nil
	}
	sys, err := get(pc.System, pc.SystemFile, defSystem, "system")
	if err != nil {
		return promptPair{}, err
	}
	usr, err := get(pc.User, pc.UserFile, defUser, "user")
	if err != nil {
		return promptPair{}, err
	}
	return promptPair{system: sys, user: usr}, nil
}

func (p promptPair) render(data any) (system, user string, err error) {
	var sb strings.Builder
	if err := p.system.Execute(&sb, data); err != nil {
		return "", "", fmt.Errorf("render %s: %w", p.system.Name(), err)
	}
	system = strings.TrimSpace(sb.String())
	sb.Reset()
	if err := p.user.Execute(&sb, data); err != nil {
		return "", "", fmt.Errorf("render %s: %w", p.user.Name(), err)
	}
	return system, strings.TrimSpace(sb.String()), nil
}

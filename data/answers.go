package data

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// File names of the answers stage.
const (
	AnswersFile       = "answers.jsonl"
	AnswersLogFile    = "answers.log.jsonl"
	AnswersReportFile = "answers.report.json"
)

// Answer is one line of answers.jsonl. ID is the question's id: answers are
// paired with questions by id, never by matching text.
type Answer struct {
	ID       string `json:"id"`
	VideoID  string `json:"video_id"`
	Question string `json:"question"`
	Answer   string `json:"answer"`
	// Truncated is set when the server stopped at max_tokens.
	Truncated bool `json:"truncated,omitempty"`
}

// answersLogEntry is one line of the answers journal. The question text is
// kept so that an answer to a question since replaced is redone.
type answersLogEntry struct {
	ID        string `json:"id"`
	Question  string `json:"question"`
	Answer    string `json:"answer"`
	Truncated bool   `json:"truncated,omitempty"`
}

// GenerateAnswers runs the answers stage: every question is answered from
// the full transcript of its video, in the speaker's voice, as markdown.
// The journal answers.log.jsonl keeps answers as they arrive; answers.jsonl
// is then rewritten atomically in question order.
func GenerateAnswers(ctx context.Context, cfg PipelineConfig, env Env, opt StageOptions) (*StageReport, error) {
	log := env.logger().With("stage", "answers")
	transcripts, err := loadTranscripts(cfg.WorkDir, log)
	if err != nil {
		return nil, err
	}
	byID := map[string]Transcript{}
	for _, t := range transcripts {
		byID[t.VideoID] = t
	}
	questions, err := loadQuestions(cfg.WorkDir, env)
	if err != nil {
		return nil, err
	}
	ac := cfg.Answers
	prompts, err := loadPrompts("answers.prompt", ac.Prompt, DefaultAnswersSystem, DefaultAnswersUser,
		AnswersPromptData{VideoID: "v", Title: "t", Transcript: "x", Persona: "p", Question: "q"})
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(cfg.WorkDir, AnswersLogFile)
	entries, j, err := loadEntries(logPath, opt.Force, log, func(e answersLogEntry) string { return e.ID })
	if err != nil {
		return nil, err
	}
	outPath := filepath.Join(cfg.WorkDir, AnswersFile)
	rep := &StageReport{Stage: "answers", Items: len(questions), Output: outPath, Failed: []ItemFailure{}}
	var todo []int
	for i, q := range questions {
		if _, ok := byID[q.VideoID]; !ok {
			j.close()
			return nil, fmt.Errorf("question %s: video %s is not in %s", q.ID, q.VideoID, TranscriptsFile)
		}
		if e, ok := entries[q.ID]; ok && e.Question == q.Question {
			rep.AlreadyDone++
			continue
		}
		todo = append(todo, i)
	}
	log.Info("starting", "questions", len(questions), "already_done", rep.AlreadyDone, "to_generate", len(todo))

	run, err := startStage(cfg.LLM, env, log, rep, j, len(todo), concurrencyOf(ac.Concurrency, cfg.LLM))
	if err != nil {
		return nil, err
	}
	llm := run.llm
	bar := env.bar("answers", len(todo))
	runErr := forEach(ctx, concurrencyOf(ac.Concurrency, cfg.LLM), len(todo), func(ctx context.Context, k int) error {
		defer bar.Add(1)
		q := questions[todo[k]]
		t := byID[q.VideoID]
		sys, usr, err := prompts.render(AnswersPromptData{VideoID: t.VideoID, Title: t.Title, Transcript: t.Text,
			Persona: ac.Persona, Question: q.Question})
		if err != nil {
			return err
		}
		text, truncated, err := llm.chatText(ctx, sys, usr, checkAnswer)
		if err != nil {
			return run.failed(ctx, q.ID, err, "no answer for this question", "id", q.ID)
		}
		e := answersLogEntry{ID: q.ID, Question: q.Question, Answer: text, Truncated: truncated}
		return run.succeeded(j, e, func() { entries[q.ID] = e })
	})
	bar.Finish()
	if err := finishStage(ctx, rep, j, llm, false, runErr); err != nil {
		return rep, err
	}
	var out []Answer
	for _, q := range questions {
		e, ok := entries[q.ID]
		if !ok || e.Question != q.Question {
			continue
		}
		out = append(out, Answer{ID: q.ID, VideoID: q.VideoID, Question: q.Question, Answer: e.Answer, Truncated: e.Truncated})
	}
	rep.OutputRecords = len(out)
	sortFailures(rep.Failed)
	if err := writeJSONLAtomic(outPath, out); err != nil {
		return rep, err
	}
	if err := writeJSONAtomic(filepath.Join(cfg.WorkDir, AnswersReportFile), rep); err != nil {
		return rep, err
	}
	log.Info("done", "generated", rep.Generated, "failed", len(rep.Failed), "answers", len(out),
		"llm_calls", rep.Calls, "http_retries", rep.HTTPRetries)
	return rep, nil
}

// checkAnswer cleans an answer and rejects an empty one.
func checkAnswer(s string) (string, error) {
	s = stripFences(s)
	if s == "" {
		return "", errors.New("empty answer")
	}
	return s, nil
}

// loadAnswers reads answers.jsonl.
func loadAnswers(workDir string, env Env) ([]Answer, error) {
	path := filepath.Join(workDir, AnswersFile)
	as, err := readJSONL[Answer](path, env.logger())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no answers: run `fungtrain data answers` first", path)
	}
	return as, err
}

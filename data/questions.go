package data

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
)

// File names of the questions stage.
const (
	QuestionsFile       = "questions.jsonl"
	QuestionsLogFile    = "questions.log.jsonl"
	QuestionsReportFile = "questions.report.json"
)

// Question is one line of questions.jsonl. ID is the video id, "-q" and the
// 1-based index of the question within its video, e.g. "abc123XYZ_0-q03".
type Question struct {
	ID       string `json:"id"`
	VideoID  string `json:"video_id"`
	Index    int    `json:"index"`
	Question string `json:"question"`
}

// questionsLogEntry is one line of the questions journal: all the questions
// of one video. The transcript hash makes a changed transcript redo.
type questionsLogEntry struct {
	VideoID        string   `json:"video_id"`
	TranscriptHash string   `json:"transcript_hash"`
	Questions      []string `json:"questions"`
}

// questionsSchema is the JSON schema of the questions reply.
var questionsSchema = json.RawMessage(`{"type":"object","properties":{"questions":{"type":"array","items":{"type":"string"}}},"required":["questions"],"additionalProperties":false}`)

func questionID(videoID string, index int) string {
	return fmt.Sprintf("%s-q%02d", videoID, index)
}

// GenerateQuestions runs the questions stage: for every transcript without
// questions yet, ask the model for the questions the video answers. The
// journal questions.log.jsonl keeps each video's reply as it arrives;
// questions.jsonl is then rewritten atomically in transcript order.
func GenerateQuestions(ctx context.Context, cfg PipelineConfig, env Env, opt StageOptions) (*StageReport, error) {
	log := env.logger().With("stage", "questions")
	transcripts, err := loadTranscripts(cfg.WorkDir, log)
	if err != nil {
		return nil, err
	}
	qc := cfg.Questions
	prompts, err := loadPrompts("questions.prompt", qc.Prompt, DefaultQuestionsSystem, DefaultQuestionsUser,
		QuestionsPromptData{VideoID: "v", Title: "t", Transcript: "x", Persona: "p", MaxQuestions: 1})
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(cfg.WorkDir, QuestionsLogFile)
	entries, j, err := loadEntries(logPath, opt.Force, log, func(e questionsLogEntry) string { return e.VideoID })
	if err != nil {
		return nil, err
	}
	outPath := filepath.Join(cfg.WorkDir, QuestionsFile)
	rep := &StageReport{Stage: "questions", Items: len(transcripts), Output: outPath, Failed: []ItemFailure{}}
	var todo []int
	for i, t := range transcripts {
		if e, ok := entries[t.VideoID]; ok && e.TranscriptHash == shortHash(t.Text) {
			rep.AlreadyDone++
			continue
		}
		todo = append(todo, i)
	}
	log.Info("starting", "videos", len(transcripts), "already_done", rep.AlreadyDone, "to_generate", len(todo))

	run, err := startStage(cfg.LLM, env, log, rep, j, len(todo), concurrencyOf(qc.Concurrency, cfg.LLM))
	if err != nil {
		return nil, err
	}
	llm := run.llm
	bar := env.bar("questions", len(todo))
	runErr := forEach(ctx, concurrencyOf(qc.Concurrency, cfg.LLM), len(todo), func(ctx context.Context, k int) error {
		defer bar.Add(1)
		t := transcripts[todo[k]]
		sys, usr, err := prompts.render(QuestionsPromptData{VideoID: t.VideoID, Title: t.Title, Transcript: t.Text,
			Persona: cfg.Answers.Persona, MaxQuestions: qc.MaxQuestions})
		if err != nil {
			return err
		}
		var qs []string
		err = llm.chatJSON(ctx, sys, usr, "questions", questionsSchema, func(b []byte) error {
			var perr error
			qs, perr = parseQuestions(b, qc.MinChars, qc.MaxQuestions)
			return perr
		})
		if err != nil {
			return run.failed(ctx, t.VideoID, err, "no questions for this video", "video_id", t.VideoID)
		}
		e := questionsLogEntry{VideoID: t.VideoID, TranscriptHash: shortHash(t.Text), Questions: qs}
		return run.succeeded(j, e, func() { entries[t.VideoID] = e })
	})
	bar.Finish()
	if err := finishStage(ctx, rep, j, llm, true, runErr); err != nil {
		return rep, err
	}
	var out []Question
	for _, t := range transcripts {
		e, ok := entries[t.VideoID]
		if !ok || e.TranscriptHash != shortHash(t.Text) {
			continue
		}
		for i, q := range e.Questions {
			out = append(out, Question{ID: questionID(t.VideoID, i+1), VideoID: t.VideoID, Index: i + 1, Question: q})
		}
	}
	rep.OutputRecords = len(out)
	sortFailures(rep.Failed)
	if err := writeJSONLAtomic(outPath, out); err != nil {
		return rep, err
	}
	if err := writeJSONAtomic(filepath.Join(cfg.WorkDir, QuestionsReportFile), rep); err != nil {
		return rep, err
	}
	log.Info("done", "generated", rep.Generated, "failed", len(rep.Failed), "questions", len(out),
		"llm_calls", rep.Calls, "http_retries", rep.HTTPRetries, "json_mode", rep.JSONMode)
	return rep, nil
}

var listMarkerRE = regexp.MustCompile(`^\s*(?:[-*•]|\d+[.)])\s+`)

// parseQuestions validates a questions reply. The list may hold strings or
// objects with a "question" field. Questions are cleaned of list markers
// and repeated whitespace; short ones and exact repeats are dropped; at
// most maxN are kept.
func parseQuestions(b []byte, minChars, maxN int) ([]string, error) {
	var reply struct {
		Questions *[]json.RawMessage `json:"questions"`
	}
	if err := json.Unmarshal(b, &reply); err != nil {
		return nil, fmt.Errorf("decode questions reply: %w", err)
	}
	if reply.Questions == nil {
		return nil, errors.New(`reply has no "questions" list`)
	}
	seen := map[string]bool{}
	out := []string{}
	for i, raw := range *reply.Questions {
		var q string
		if err := json.Unmarshal(raw, &q); err != nil {
			var obj struct {
				Question string `json:"question"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil || obj.Question == "" {
				return nil, fmt.Errorf("questions[%d] is neither a string nor {\"question\": ...}", i)
			}
			q = obj.Question
		}
		q = strings.TrimSpace(spacesRE.ReplaceAllString(strings.ReplaceAll(q, "\n", " "), " "))
		q = strings.TrimSpace(listMarkerRE.ReplaceAllString(q, ""))
		if len([]rune(q)) < minChars {
			continue
		}
		key := normalizeText(q)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, q)
		if len(out) == maxN {
			break
		}
	}
	if len(*reply.Questions) > 0 && len(out) == 0 {
		return nil, fmt.Errorf("all %d questions are shorter than %d characters", len(*reply.Questions), minChars)
	}
	return out, nil
}

// loadQuestions reads questions.jsonl.
func loadQuestions(workDir string, env Env) ([]Question, error) {
	path := filepath.Join(workDir, QuestionsFile)
	qs, err := readJSONL[Question](path, env.logger())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no questions: run `fungtrain data questions` first", path)
	}
	return qs, err
}

package data

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeTranscriptFixture writes transcripts.jsonl with videos v01..vNN, each
// with perVideo "QUESTION:" markers the fake LLM turns into questions.
func writeTranscriptFixture(t *testing.T, cfg PipelineConfig, videos, perVideo int) {
	t.Helper()
	var recs []Transcript
	for v := 1; v <= videos; v++ {
		var sb strings.Builder
		sb.WriteString(filler)
		for q := 1; q <= perVideo; q++ {
			fmt.Fprintf(&sb, "QUESTION: How does remedy %d help condition %d in practice? %s", q, v, filler)
		}
		recs = append(recs, Transcript{VideoID: fmt.Sprintf("v%02d", v), Source: "local", Text: strings.TrimSpace(sb.String())})
	}
	if err := writeJSONLAtomic(filepath.Join(cfg.WorkDir, TranscriptsFile), recs); err != nil {
		t.Fatal(err)
	}
}

func questionText(v, q int) string {
	return fmt.Sprintf("How does remedy %d help condition %d in practice?", q, v)
}

// runQA runs the questions and answers stages.
func runQA(t *testing.T, cfg PipelineConfig, env Env) (*StageReport, *StageReport) {
	t.Helper()
	qr, err := GenerateQuestions(context.Background(), cfg, env, StageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := GenerateAnswers(context.Background(), cfg, env, StageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return qr, ar
}

func TestQuestionsAndAnswersUnderFaults(t *testing.T) {
	// Reference: a clean run.
	refLLM := newFakeLLM(t)
	ref := testConfig(t, nil, refLLM)
	writeTranscriptFixture(t, ref, 8, 3)
	var logs syncBuffer
	var sl sleepLog
	runQA(t, ref, testEnv(&logs, &sl))
	wantQ := mustRead(t, filepath.Join(ref.WorkDir, QuestionsFile))
	wantA := mustRead(t, filepath.Join(ref.WorkDir, AnswersFile))
	if n := strings.Count(wantQ, "\n"); n != 24 {
		t.Fatalf("reference has %d questions, want 24", n)
	}

	// The same with a fault on the first attempts of every request, one
	// video that always fails with 500, one question whose replies are
	// always unusable and one the server rejects with a message echoing
	// the key.
	llm := newFakeLLM(t)
	cycle := []fault{fault429, fault500, faultHang, faultMalformed, faultTruncated, faultBadContent, faultEmptyChoices, faultNone}
	deadVideo := questionText(3, 1) // first question names video v03
	badQ, rejectedQ := questionText(5, 2), questionText(6, 3)
	var healed atomic.Bool
	llm.faultFor = func(kind, subject string, n int) fault {
		switch {
		case healed.Load():
			return faultNone
		case kind == "questions" && subject == deadVideo:
			return fault500
		case kind == "answers" && subject == badQ:
			return faultBadContent
		case kind == "answers" && subject == rejectedQ:
			return fault400EchoKey
		case n == 1:
			return cycle[pick(subject, len(cycle))]
		case n == 2 && pick(subject, 3) == 0:
			return faultMalformed
		}
		return faultNone
	}
	cfg := testConfig(t, nil, llm)
	writeTranscriptFixture(t, cfg, 8, 3)
	qr, ar := runQA(t, cfg, testEnv(&logs, &sl))
	if qr.Generated != 7 || len(qr.Failed) != 1 || qr.Failed[0].ID != "v03" || qr.Failed[0].Class != "transient" {
		t.Errorf("questions: generated=%d failed=%+v; want 7 and v03 transient", qr.Generated, qr.Failed)
	}
	st := llm.snap()
	if got := st.attempts["questions|"+deadVideo]; got != 4 {
		t.Errorf("always-500 video requested %d times, want 4 (1 + max_retries)", got)
	}
	if ar.Items != 21 || ar.Generated != 19 || len(ar.Failed) != 2 {
		t.Fatalf("answers: items=%d generated=%d failed=%+v; want 21, 19, 2", ar.Items, ar.Generated, ar.Failed)
	}
	if f := ar.Failed[0]; f.ID != "v05-q02" || f.Class != "invalid" || !strings.Contains(f.Reason, "no usable reply in 3 tries") {
		t.Errorf("failure 0 = %+v, want v05-q02 invalid after 3 tries", f)
	}
	if f := ar.Failed[1]; f.ID != "v06-q03" || f.Class != "rejected" || !strings.Contains(f.Reason, "[REDACTED]") {
		t.Errorf("failure 1 = %+v, want v06-q03 rejected with the key redacted", f)
	}
	if got := st.attempts["answers|"+badQ]; got != 3 {
		t.Errorf("always-unusable question requested %d times, want 3 (1 + max_invalid_retries)", got)
	}
	if !slices.Contains(sl.all(), time.Second) {
		t.Errorf("Retry-After: 1 from the LLM server was not honoured; sleeps %v", sl.all())
	}
	if got := st.attempts["answers|"+rejectedQ]; got != 1 {
		t.Errorf("rejected question requested %d times, want 1", got)
	}
	if !strings.Contains(mustRead(t, filepath.Join(cfg.WorkDir, AnswersReportFile)), `"class": "rejected"`) {
		t.Error("answers report does not list the rejected item")
	}
	// Every answer that exists is the reference answer: nothing garbled.
	for _, line := range strings.Split(strings.TrimSpace(mustRead(t, filepath.Join(cfg.WorkDir, AnswersFile))), "\n") {
		if !strings.Contains(wantA, line+"\n") {
			t.Errorf("answer not in the reference: %s", line)
		}
	}

	// Rerun once the server is healthy: the failed items are done, nothing
	// else is asked again, and the outputs equal the clean run's.
	healed.Store(true)
	before := llm.snap().requests
	qr2, ar2 := runQA(t, cfg, testEnv(&logs, &sl))
	if qr2.Generated != 1 || qr2.AlreadyDone != 7 || ar2.Generated != 3+2 || ar2.AlreadyDone != 19 {
		t.Errorf("rerun: questions generated=%d done=%d, answers generated=%d done=%d; want 1, 7, 5, 19",
			qr2.Generated, qr2.AlreadyDone, ar2.Generated, ar2.AlreadyDone)
	}
	if d := llm.snap().requests - before; d != 6 {
		t.Errorf("rerun made %d requests, want 6", d)
	}
	if got := mustRead(t, filepath.Join(cfg.WorkDir, QuestionsFile)); got != wantQ {
		t.Errorf("questions.jsonl differs from the clean run:\n%s", got)
	}
	if got := mustRead(t, filepath.Join(cfg.WorkDir, AnswersFile)); got != wantA {
		t.Errorf("answers.jsonl differs from the clean run")
	}
	// A third run changes nothing and calls nothing.
	before = llm.snap().requests
	runQA(t, cfg, testEnv(&logs, &sl))
	if d := llm.snap().requests - before; d != 0 || mustRead(t, filepath.Join(cfg.WorkDir, AnswersFile)) != wantA {
		t.Errorf("idempotent rerun made %d requests", d)
	}
	assertNoSecrets(t, logs.String(), cfg.WorkDir, ref.WorkDir)
}

func TestQuestionsJSONSchemaFallback(t *testing.T) {
	llm := newFakeLLM(t)
	llm.rejectSchema = true
	cfg := testConfig(t, nil, llm)
	cfg.LLM.Concurrency = 1 // so the downgrade is remembered from the first video on
	writeTranscriptFixture(t, cfg, 4, 2)
	var logs syncBuffer
	var sl sleepLog
	rep, err := GenerateQuestions(context.Background(), cfg, testEnv(&logs, &sl), StageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Generated != 4 || rep.OutputRecords != 8 || rep.JSONMode != JSONModeObject {
		t.Errorf("generated=%d questions=%d mode=%s; want 4, 8, json_object", rep.Generated, rep.OutputRecords, rep.JSONMode)
	}
	if m := llm.snap().modes; m["json_schema"] != 1 || m["json_object"] != 4 {
		t.Errorf("modes seen %v, want json_schema once then json_object 4 times", m)
	}
	// A fixed json_schema mode does not step down: every video is rejected.
	cfg2 := testConfig(t, nil, llm)
	cfg2.LLM.JSONMode = JSONModeSchema
	writeTranscriptFixture(t, cfg2, 2, 1)
	rep2, err := GenerateQuestions(context.Background(), cfg2, testEnv(&logs, &sl), StageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep2.Failed) != 2 || rep2.Failed[0].Class != "rejected" || !strings.Contains(rep2.Failed[0].Reason, "json_schema is not supported") {
		t.Errorf("fixed json_schema: failed=%+v, want 2 rejected", rep2.Failed)
	}
	// Plain prompting when json_object is rejected too.
	llm3 := newFakeLLM(t)
	llm3.faultFor = func(kind, subject string, n int) fault { return faultNone }
	cfg3 := testConfig(t, nil, llm3)
	cfg3.LLM.JSONMode = JSONModePrompt
	writeTranscriptFixture(t, cfg3, 2, 2)
	rep3, err := GenerateQuestions(context.Background(), cfg3, testEnv(&logs, &sl), StageOptions{})
	if m := llm3.snap().modes; err != nil || rep3.OutputRecords != 4 || m["none"] != 2 {
		t.Errorf("prompt mode: err=%v questions=%d modes=%v", err, rep3.OutputRecords, m)
	}
}

func TestStreamingPathMatchesNonStreaming(t *testing.T) {
	refLLM := newFakeLLM(t)
	ref := testConfig(t, nil, refLLM)
	writeTranscriptFixture(t, ref, 3, 2)
	var logs syncBuffer
	var sl sleepLog
	runQA(t, ref, testEnv(&logs, &sl))

	llm := newFakeLLM(t)
	llm.faultFor = func(kind, subject string, n int) fault {
		switch {
		case n == 1 && kind == "answers":
			return faultStreamCut
		case n == 1:
			return []fault{faultTruncated, fault429, faultMalformed}[pick(subject, 3)]
		}
		return faultNone
	}
	cfg := testConfig(t, nil, llm)
	cfg.LLM.Stream = true
	writeTranscriptFixture(t, cfg, 3, 2)
	qr, ar := runQA(t, cfg, testEnv(&logs, &sl))
	if len(qr.Failed)+len(ar.Failed) != 0 {
		t.Fatalf("failures: %+v %+v", qr.Failed, ar.Failed)
	}
	if st := llm.snap(); st.streamed != st.requests || st.streamed < 9 {
		t.Errorf("streamed %d of %d requests, want all (at least 9)", st.streamed, st.requests)
	}
	for _, f := range []string{QuestionsFile, AnswersFile} {
		if mustRead(t, filepath.Join(cfg.WorkDir, f)) != mustRead(t, filepath.Join(ref.WorkDir, f)) {
			t.Errorf("%s from streaming differs from the non-streaming run", f)
		}
	}
	if ar.InvalidRetries != 6 {
		t.Errorf("answers retried %d unusable replies, want 6 (every first stream was cut)", ar.InvalidRetries)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	for _, conc := range []int{4, 20} {
		llm := newFakeLLM(t)
		llm.delay = 20 * 1e6 // 20ms
		cfg := testConfig(t, nil, llm)
		cfg.LLM.Concurrency = conc
		writeTranscriptFixture(t, cfg, 30, 1)
		var logs syncBuffer
		var sl sleepLog
		if _, err := GenerateQuestions(context.Background(), cfg, testEnv(&logs, &sl), StageOptions{}); err != nil {
			t.Fatal(err)
		}
		if m := llm.snap().maxInflight; m > conc || m < 2 {
			t.Errorf("concurrency %d: at most %d requests in flight, want between 2 and %d", conc, m, conc)
		}
	}
	if DefaultPipelineConfig().LLM.Concurrency != 20 {
		t.Error("default concurrency is not 20")
	}
}

func TestLLMStagesKillAndRerunIsIdentical(t *testing.T) {
	var logs syncBuffer
	var sl sleepLog
	refLLM := newFakeLLM(t)
	ref := testConfig(t, nil, refLLM)
	writeTranscriptFixture(t, ref, 10, 3)
	runQA(t, ref, testEnv(&logs, &sl))

	llm := newFakeLLM(t)
	llm.delay = 2 * 1e6
	cfg := testConfig(t, nil, llm)
	cfg.LLM.Concurrency = 4
	writeTranscriptFixture(t, cfg, 10, 3)
	env := testEnv(&logs, &sl)
	tear := func(path, partial string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(partial)
		f.Close()
	}
	interrupt := func(stage string, after int, run func(ctx context.Context) (*StageReport, error)) {
		ctx, cancel := context.WithCancel(context.Background())
		start := llm.snap().requests
		llm.set(func(f *fakeLLM) {
			f.onRequest = func(n int) {
				if n-start == after {
					cancel()
				}
			}
		})
		rep, err := run(ctx)
		llm.set(func(f *fakeLLM) { f.onRequest = nil })
		if !errors.Is(err, context.Canceled) || !rep.Interrupted || rep.Generated == 0 || rep.Generated >= rep.Items {
			t.Fatalf("%s: interrupted run err=%v, interrupted=%v, generated %d of %d", stage, err, rep.Interrupted, rep.Generated, rep.Items)
		}
	}
	interrupt("questions", 5, func(ctx context.Context) (*StageReport, error) {
		return GenerateQuestions(ctx, cfg, env, StageOptions{})
	})
	if _, err := os.Stat(filepath.Join(cfg.WorkDir, QuestionsFile)); !os.IsNotExist(err) {
		t.Errorf("an interrupted stage wrote its output: %v", err)
	}
	tear(filepath.Join(cfg.WorkDir, QuestionsLogFile), `{"video_id":"v09","transcript_hash":"ab`)
	if _, err := GenerateQuestions(context.Background(), cfg, env, StageOptions{}); err != nil {
		t.Fatal(err)
	}
	interrupt("answers", 12, func(ctx context.Context) (*StageReport, error) {
		return GenerateAnswers(ctx, cfg, env, StageOptions{})
	})
	tear(filepath.Join(cfg.WorkDir, AnswersLogFile), `{"id":"v10-q01","question":"How`)
	if _, err := GenerateAnswers(context.Background(), cfg, env, StageOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{QuestionsFile, AnswersFile} {
		if got, want := mustRead(t, filepath.Join(cfg.WorkDir, f)), mustRead(t, filepath.Join(ref.WorkDir, f)); got != want {
			t.Errorf("%s after kill and rerun differs from an uninterrupted run", f)
		}
	}
	// No item was answered twice: the journal has one entry per question.
	entries := readLines[answersLogEntry](t, filepath.Join(cfg.WorkDir, AnswersLogFile))
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.ID] {
			t.Errorf("%s answered twice", e.ID)
		}
		seen[e.ID] = true
	}
	if len(seen) != 30 {
		t.Errorf("journal has %d answers, want 30", len(seen))
	}
}

func TestLLMStageStopsWhenItCannotSucceed(t *testing.T) {
	var logs syncBuffer
	var sl sleepLog
	// A wrong key: the first 401 stops the stage.
	llm := newFakeLLM(t)
	cfg := testConfig(t, nil, llm)
	cfg.LLM.Concurrency = 3
	writeTranscriptFixture(t, cfg, 30, 1)
	env := testEnv(&logs, &sl)
	env.Getenv = func(string) string { return "sk-wrong-SECRET-key" }
	_, err := GenerateQuestions(context.Background(), cfg, env, StageOptions{})
	if err == nil || !strings.Contains(err.Error(), "rejected the request (HTTP 401; is the key in LLM_KEY right?)") {
		t.Fatalf("error = %v, want a 401 naming LLM_KEY", err)
	}
	if n := llm.snap().requests; n > 3 {
		t.Errorf("%d requests after a 401, want at most the 3 in flight", n)
	}
	if strings.Contains(err.Error()+logs.String(), "sk-wrong-SECRET-key") {
		t.Error("the key leaked")
	}
	// An endpoint that is down: the stage stops after max(2*concurrency, 10)
	// items in a row failed, not after trying all 30.
	cfg2 := testConfig(t, nil, nil)
	cfg2.LLM.BaseURL = "http://127.0.0.1:1/v1"
	cfg2.LLM.Concurrency = 2
	writeTranscriptFixture(t, cfg2, 30, 1)
	rep, err := GenerateQuestions(context.Background(), cfg2, testEnv(&logs, &sl), StageOptions{})
	if err == nil || !strings.Contains(err.Error(), "stopping: 10 requests in a row failed after their retries") {
		t.Fatalf("error = %v, want the breaker after 10", err)
	}
	if len(rep.Failed) < 9 || len(rep.Failed) > 11 {
		t.Errorf("%d items failed before the stop, want about 10", len(rep.Failed))
	}
}

package data

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// e2eFixture spreads the planted question set over 12 videos: the distinct
// questions round-robin, every planted rewording in a different video from
// its original, and three questions whose fake answers are bad (a refusal,
// a meta reference, a cut answer).
func e2eFixture(t *testing.T) (map[string]string, int) {
	p := loadPlanted(t)
	perVideo := map[int][]string{}
	for i, q := range p.Distinct {
		perVideo[i%12] = append(perVideo[i%12], q)
	}
	where := map[string]int{}
	for v, qs := range perVideo {
		for _, q := range qs {
			where[q] = v
		}
	}
	for _, pr := range p.Near {
		v := (where[pr[0]] + 5) % 12
		perVideo[v] = append(perVideo[v], pr[1])
	}
	perVideo[1] = append(perVideo[1], "Why would you refuse to discuss the dosing?")
	perVideo[2] = append(perVideo[2], "What does the meta analysis say about knee braces?")
	perVideo[3] = append(perVideo[3], "Can you truncate the fasting protocol safely?")
	texts := map[string]string{}
	for v := range 12 {
		var sb strings.Builder
		fmt.Fprintf(&sb, "Video %d. %s", v, filler)
		for _, q := range perVideo[v] {
			fmt.Fprintf(&sb, "QUESTION: %s %s", q, filler)
		}
		texts[ytID(v+1)] = strings.TrimSpace(sb.String())
	}
	return texts, len(p.Near)
}

func TestPipelineEndToEnd(t *testing.T) {
	texts, planted := e2eFixture(t)
	api := newFakeTranscriptAPI(t)
	var inputs []string
	for v := 1; v <= 12; v++ {
		api.videos[ytID(v)] = fakeVideo{text: texts[ytID(v)]}
		inputs = append(inputs, "https://www.youtube.com/watch?v="+ytID(v))
	}
	api.videos["privateVid1"] = fakeVideo{status: 403, msg: "private video"}
	inputs = append(inputs, "privateVid1")
	api.faultFor = func(id string, n int) fault {
		if n == 1 {
			return []fault{fault429, fault500, faultNone, faultTruncated}[pick(id, 4)]
		}
		return faultNone
	}
	llm := newFakeLLM(t)
	llm.faultFor = func(kind, subject string, n int) fault {
		if n == 1 {
			return []fault{fault429, fault500, faultMalformed, faultTruncated, faultBadContent, faultNone, faultNone}[pick(subject, 7)]
		}
		return faultNone
	}
	cfg := testConfig(t, api, llm)
	cfg.Transcripts.Videos = inputs
	cfg.Build.OutDir = filepath.Join(t.TempDir(), "dataset")
	cfg.Build.SystemPrompt = "You are Dr. Example, a family physician."
	cfg.Questions.MaxQuestions = 20
	var logs syncBuffer
	var sl sleepLog
	env := testEnv(&logs, &sl)
	ctx := context.Background()

	tr, err := FetchTranscripts(ctx, cfg, env, TranscriptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Fetched != 12 || len(tr.Failed) != 1 || !tr.Failed[0].Permanent {
		t.Fatalf("transcripts: fetched=%d failed=%+v", tr.Fetched, tr.Failed)
	}
	qr, err := GenerateQuestions(ctx, cfg, env, StageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := GenerateAnswers(ctx, cfg, env, StageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	total := 50 + planted + 3
	if qr.OutputRecords != total || ar.OutputRecords != total || len(qr.Failed)+len(ar.Failed) != 0 {
		t.Fatalf("questions=%d answers=%d failures=%v %v; want %d each, none failed", qr.OutputRecords, ar.OutputRecords, qr.Failed, ar.Failed, total)
	}
	br, err := Build(ctx, cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	// Quality: the refusal, the meta reference and the cut answer go.
	if br.Quality.Dropped != 3 || len(br.Quality.Scores) != total {
		t.Errorf("quality dropped %d of %d scored, want 3 of %d", br.Quality.Dropped, len(br.Quality.Scores), total)
	}
	dropped := map[string][]string{}
	for _, s := range br.Quality.Scores {
		if !s.Kept && s.Score < cfg.Build.Quality.MinScore {
			dropped[s.ID] = s.Flags
		}
	}
	for _, flag := range []string{FlagRefusal, FlagMetaReference, FlagTruncated} {
		n := 0
		for _, fl := range dropped {
			if slices.Contains(fl, flag) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d dropped pairs flagged %s, want 1 (dropped: %v)", n, flag, dropped)
		}
	}
	// Dedup: every planted rewording, nothing else.
	if br.Dedup.Near+br.Dedup.Exact != planted || br.Kept != 50 {
		t.Errorf("dedup removed %d exact + %d near, kept %d; want %d removed, 50 kept", br.Dedup.Exact, br.Dedup.Near, br.Kept, planted)
	}
	p := loadPlanted(t)
	for _, d := range br.Dedup.Removed {
		// Either of a pair may be kept: both score the same, so the first in
		// transcript order stays.
		if !slices.ContainsFunc(p.Near, func(pr [2]string) bool {
			return pr[1] == d.Removed && pr[0] == d.Kept || pr[0] == d.Removed && pr[1] == d.Kept
		}) {
			t.Errorf("unexpected dedup pair %q -> %q", d.Removed, d.Kept)
		}
	}

	// Outputs: mlx-lm chat format, no video in two splits, nothing lost.
	pairs := readLines[Pair](t, filepath.Join(cfg.WorkDir, PairsFile))
	videoOf := map[string]string{}
	splitOfVideo := map[string]string{}
	for _, pr := range pairs {
		videoOf[pr.Question] = pr.VideoID
		if s, ok := splitOfVideo[pr.VideoID]; ok && s != pr.Split {
			t.Errorf("video %s in %s and %s", pr.VideoID, s, pr.Split)
		}
		splitOfVideo[pr.VideoID] = pr.Split
	}
	seenQ := map[string]bool{}
	for _, sp := range splitNames {
		exs := readLines[ChatExample](t, filepath.Join(cfg.OutDir(), SplitFile(sp)))
		if len(exs) != br.Splits[sp].Examples || len(exs) == 0 {
			t.Errorf("%s: %d examples, report says %d", sp, len(exs), br.Splits[sp].Examples)
		}
		for _, ex := range exs {
			roles := []string{ex.Messages[0].Role, ex.Messages[1].Role, ex.Messages[2].Role}
			if len(ex.Messages) != 3 || !slices.Equal(roles, []string{"system", "user", "assistant"}) ||
				ex.Messages[0].Content != cfg.Build.SystemPrompt || ex.Variant != "" {
				t.Fatalf("%s: bad example %+v", sp, ex)
			}
			q := ex.Messages[1].Content
			if seenQ[q] {
				t.Errorf("question %q appears twice", q)
			}
			seenQ[q] = true
			if splitOfVideo[videoOf[q]] != sp {
				t.Errorf("%q of video %s is in %s, its video is in %s", q, videoOf[q], sp, splitOfVideo[videoOf[q]])
			}
			if !strings.Contains(ex.Messages[2].Content, "(answer to: "+q+")") {
				t.Errorf("answer paired with the wrong question: %q / %q", q, ex.Messages[2].Content)
			}
		}
	}
	if len(seenQ) != 50 {
		t.Errorf("%d distinct questions across splits, want 50", len(seenQ))
	}
	raw := mustRead(t, filepath.Join(cfg.OutDir(), "train.jsonl"))
	if !strings.HasPrefix(raw, `{"messages":[{"role":"system","content":"You are Dr. Example, a family physician."},{"role":"user","content":"`) {
		t.Errorf("train.jsonl does not start in mlx-lm chat format: %.120s", raw)
	}

	// Build is a pure function of its inputs: a rerun writes the same bytes.
	before := map[string]string{}
	for _, sp := range splitNames {
		before[sp] = mustRead(t, filepath.Join(cfg.OutDir(), SplitFile(sp)))
	}
	if _, err := Build(ctx, cfg, env); err != nil {
		t.Fatal(err)
	}
	for _, sp := range splitNames {
		if mustRead(t, filepath.Join(cfg.OutDir(), SplitFile(sp))) != before[sp] {
			t.Errorf("rebuilt %s differs", sp)
		}
	}

	// Augment the train split: variants follow their source, never cross.
	augRep, err := Augment(ctx, cfg, env, StageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nTrain := br.Splits["train"].Examples
	if augRep.OutputRecords != 3*nTrain || augRep.Variants["train"] != 3*nTrain || len(augRep.Failed) != 0 {
		t.Errorf("augment: %d variants (%v), failed %v; want %d in train", augRep.OutputRecords, augRep.Variants, augRep.Failed, 3*nTrain)
	}
	train := readLines[ChatExample](t, filepath.Join(cfg.OutDir(), "train.jsonl"))
	if len(train) != 4*nTrain {
		t.Fatalf("train has %d examples after augment, want %d", len(train), 4*nTrain)
	}
	for i := 0; i < len(train); i += 4 {
		src := train[i]
		want := []string{"", VariantParaphrase, VariantParaphrase, VariantShortAnswer}
		for k := range 4 {
			if train[i+k].Variant != want[k] {
				t.Fatalf("train[%d].variant = %q, want %q", i+k, train[i+k].Variant, want[k])
			}
		}
		if train[i+1].Messages[2].Content != src.Messages[2].Content || !strings.HasSuffix(train[i+1].Messages[1].Content, src.Messages[1].Content) {
			t.Errorf("paraphrase does not keep its source's answer: %+v", train[i+1])
		}
		if train[i+3].Messages[1].Content != src.Messages[1].Content || len(train[i+3].Messages[2].Content) >= len(src.Messages[2].Content) {
			t.Errorf("short answer variant wrong: %+v", train[i+3])
		}
	}
	for _, sp := range []string{"valid", "test"} {
		if mustRead(t, filepath.Join(cfg.OutDir(), SplitFile(sp))) != before[sp] {
			t.Errorf("augment changed %s", sp)
		}
	}
	for _, v := range readLines[Variant](t, filepath.Join(cfg.WorkDir, AugmentFile)) {
		if v.Split != "train" || splitOfVideo[v.VideoID] != "train" {
			t.Errorf("variant %s in %s, its video in %s", v.ID, v.Split, splitOfVideo[v.VideoID])
		}
	}
	// An augment rerun asks nothing and writes the same file.
	n := llm.snap().requests
	trainBytes := mustRead(t, filepath.Join(cfg.OutDir(), "train.jsonl"))
	if _, err := Augment(ctx, cfg, env, StageOptions{}); err != nil {
		t.Fatal(err)
	}
	if llm.snap().requests != n || mustRead(t, filepath.Join(cfg.OutDir(), "train.jsonl")) != trainBytes {
		t.Error("augment rerun is not idempotent")
	}
	assertNoSecrets(t, logs.String(), cfg.WorkDir, cfg.OutDir())
	if !strings.Contains(logs.String(), "retrying request") {
		t.Error("no retry was logged: the faults did not fire")
	}
}

func TestAugmentKillAndRerunIsIdentical(t *testing.T) {
	var logs syncBuffer
	var sl sleepLog
	setup := func() (*fakeLLM, PipelineConfig) {
		llm := newFakeLLM(t)
		cfg := testConfig(t, nil, llm)
		cfg.Build.Split = SplitConfig{Train: 1, Seed: 42}
		writeTranscriptFixture(t, cfg, 6, 3)
		runQA(t, cfg, testEnv(&logs, &sl))
		if _, err := Build(context.Background(), cfg, testEnv(&logs, &sl)); err != nil {
			t.Fatal(err)
		}
		return llm, cfg
	}
	_, ref := setup()
	if _, err := Augment(context.Background(), ref, testEnv(&logs, &sl), StageOptions{}); err != nil {
		t.Fatal(err)
	}
	llm, cfg := setup()
	cfg.LLM.Concurrency = 3 // so some requests finish before the cancel
	ctx, cancel := context.WithCancel(context.Background())
	start := llm.snap().requests
	llm.set(func(f *fakeLLM) {
		f.onRequest = func(n int) {
			if n-start == 15 {
				cancel()
			}
		}
	})
	rep, err := Augment(ctx, cfg, testEnv(&logs, &sl), StageOptions{})
	if !errors.Is(err, context.Canceled) || rep.Generated == 0 || rep.Generated >= rep.Items {
		t.Fatalf("interrupted augment: err=%v generated %d of %d", err, rep.Generated, rep.Items)
	}
	llm.set(func(f *fakeLLM) { f.onRequest = nil })
	f, _ := os.OpenFile(filepath.Join(cfg.WorkDir, AugmentLogFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"source_id":"v01-q01","kind":"para`)
	f.Close()
	if _, err := Augment(context.Background(), cfg, testEnv(&logs, &sl), StageOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(cfg.WorkDir, AugmentFile), filepath.Join(cfg.OutDir(), "train.jsonl")} {
		rel, _ := filepath.Rel(cfg.WorkDir, p)
		if mustRead(t, p) != mustRead(t, filepath.Join(ref.WorkDir, rel)) {
			t.Errorf("%s after kill and rerun differs from an uninterrupted run", rel)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	cfg := testConfig(t, nil, nil)
	var logs syncBuffer
	var sl sleepLog
	if _, err := Build(context.Background(), cfg, testEnv(&logs, &sl)); err == nil || !strings.Contains(err.Error(), "run `fungtrain data answers` first") {
		t.Errorf("missing answers: %v", err)
	}
	mustWrite(t, filepath.Join(cfg.WorkDir, AnswersFile), `{"id":"a","video_id":"v","question":"Why is this?","answer":"x"}`+"\n"+`{"id":"a","video_id":"v","question":"Why is that?","answer":"y"}`+"\n")
	if _, err := Build(context.Background(), cfg, testEnv(&logs, &sl)); err == nil || !strings.Contains(err.Error(), `answers.jsonl line 2: repeated id "a"`) {
		t.Errorf("repeated id: %v", err)
	}
	mustWrite(t, filepath.Join(cfg.WorkDir, AnswersFile), `{"id":"a","video_id":"v","question":"Why is this?","answer":"x"}`+"\n")
	if _, err := Build(context.Background(), cfg, testEnv(&logs, &sl)); err == nil || !strings.Contains(err.Error(), "no examples left") {
		t.Errorf("all filtered: %v", err)
	}
	if _, err := GenerateAnswers(context.Background(), cfg, testEnv(&logs, &sl), StageOptions{}); err == nil || !strings.Contains(err.Error(), "run `fungtrain data transcripts` first") {
		t.Errorf("answers without transcripts: %v", err)
	}
}

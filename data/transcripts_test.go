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

func ytID(i int) string { return fmt.Sprintf("vid%08d", i) }

func videoText(i int) string {
	return fmt.Sprintf("Video %d. %sQUESTION: What is topic %d about? %s", i, filler, i, filler)
}

func transcriptIDs(t *testing.T, path string) []string {
	var ids []string
	for _, tr := range readLines[Transcript](t, path) {
		ids = append(ids, tr.VideoID)
	}
	return ids
}

func TestFetchTranscriptsFaultsAndRerun(t *testing.T) {
	api := newFakeTranscriptAPI(t)
	for i := 1; i <= 8; i++ {
		api.videos[ytID(i)] = fakeVideo{text: videoText(i), async: i == 7}
	}
	api.videos["privateVid1"] = fakeVideo{status: 403, msg: "This video is private"}
	api.videos["memberVid01"] = fakeVideo{status: 403, msg: "Join this channel to get access to members-only content"}
	api.videos["noCaptions1"] = fakeVideo{status: 206, msg: "transcript-unavailable"}
	api.videos["flaky000001"] = fakeVideo{text: videoText(99)}
	firstFault := map[string][]fault{
		ytID(1): {fault429},
		ytID(2): {fault500, fault500},
		ytID(3): {faultHang},
		ytID(4): {faultMalformed, faultMalformed},
		ytID(5): {faultTruncated},
		ytID(8): {fault503LongWait},
	}
	var run atomic.Int32
	run.Store(1)
	api.faultFor = func(id string, n int) fault {
		if id == "flaky000001" && run.Load() == 1 {
			return fault500
		}
		if fs := firstFault[id]; run.Load() == 1 && n <= len(fs) {
			return fs[n-1]
		}
		return faultNone
	}
	cfg := testConfig(t, api, nil)
	cfg.Transcripts.Concurrency = 3
	cfg.Transcripts.Videos = []string{
		"https://www.youtube.com/watch?v=" + ytID(1), "https://youtu.be/" + ytID(2), ytID(3), ytID(4),
		"missingVid1", ytID(5), "privateVid1", ytID(6), "memberVid01", ytID(7), "noCaptions1", ytID(8),
		"flaky000001", ytID(1), // a repeat is dropped
	}
	var logs syncBuffer
	var sl sleepLog
	env := testEnv(&logs, &sl)
	rep, err := FetchTranscripts(context.Background(), cfg, env, TranscriptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(cfg.WorkDir, TranscriptsFile)
	wantIDs := []string{ytID(1), ytID(2), ytID(3), ytID(4), ytID(5), ytID(6), ytID(7)}
	if got := transcriptIDs(t, out); !slices.Equal(got, wantIDs) {
		t.Errorf("transcripts.jsonl ids = %v, want %v (input order, no repeats)", got, wantIDs)
	}
	if rep.Inputs != 13 || rep.Fetched != 7 || len(rep.Failed) != 6 {
		t.Errorf("report inputs=%d fetched=%d failed=%d, want 13, 7, 6", rep.Inputs, rep.Fetched, len(rep.Failed))
	}
	wantFail := map[string]struct {
		permanent bool
		status    int
		reason    string
		attempts  int
	}{
		"missingVid1": {true, 404, "not found", 1},
		"privateVid1": {true, 403, "private video", 1},
		"memberVid01": {true, 403, "members-only video", 1},
		"noCaptions1": {true, 206, "no transcript available", 1},
		ytID(8):       {false, 503, "HTTP 503", 1},
		"flaky000001": {false, 500, "HTTP 500 after 4 attempts", 4},
	}
	for _, f := range rep.Failed {
		w, ok := wantFail[f.VideoID]
		if !ok {
			t.Errorf("unexpected failure %+v", f)
			continue
		}
		if f.Permanent != w.permanent || f.Status != w.status || !strings.Contains(f.Reason, w.reason) || f.Attempts != w.attempts {
			t.Errorf("failure %s = %+v, want permanent=%v status=%d reason~%q attempts=%d", f.VideoID, f, w.permanent, w.status, w.reason, w.attempts)
		}
	}
	// Bounded retries: the always-failing video got exactly 1+max_retries requests.
	attempts, polls, _ := api.snap()
	if attempts["flaky000001"] != 4 {
		t.Errorf("flaky video requested %d times, want 4", attempts["flaky000001"])
	}
	if attempts[ytID(4)] != 3 || attempts[ytID(2)] != 3 || attempts[ytID(5)] != 2 || attempts[ytID(3)] != 2 {
		t.Errorf("attempts: malformed=%d (want 3) 500x2=%d (want 3) truncated=%d (want 2) hang=%d (want 2)",
			attempts[ytID(4)], attempts[ytID(2)], attempts[ytID(5)], attempts[ytID(3)])
	}
	if !slices.Contains(sl.all(), time.Second) {
		t.Errorf("Retry-After: 1 was not honoured; sleeps %v", sl.all())
	}
	if polls[ytID(7)] != 2 {
		t.Errorf("async job polled %d times, want 2", polls[ytID(7)])
	}
	if got := readLines[Transcript](t, out)[6]; got.Text != strings.TrimSpace(videoText(7)) || got.Lang != "en" || got.Source != "api" ||
		got.URL != "https://www.youtube.com/watch?v="+ytID(7) {
		t.Errorf("async transcript record = %+v", got)
	}
	if _, err := os.Stat(filepath.Join(cfg.WorkDir, TranscriptsReportFile)); err != nil {
		t.Errorf("no report: %v", err)
	}

	// Rerun: done ids and permanent failures are skipped; transient ones retried.
	run.Store(2)
	before, _, _ := api.snap()
	rep2, err := FetchTranscripts(context.Background(), cfg, env, TranscriptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep2.AlreadyDone != 7 || rep2.SkippedFailed != 4 || rep2.Fetched != 2 || len(rep2.Failed) != 0 {
		t.Errorf("rerun report done=%d skipped=%d fetched=%d failed=%v; want 7, 4, 2, none", rep2.AlreadyDone, rep2.SkippedFailed, rep2.Fetched, rep2.Failed)
	}
	after, _, _ := api.snap()
	for id, n := range after {
		if d := n - before[id]; (id == ytID(8) || id == "flaky000001") != (d == 1) || d > 1 {
			t.Errorf("rerun requested %s %d times", id, d)
		}
	}
	if got := transcriptIDs(t, out); !slices.Equal(got, append(wantIDs, ytID(8), "flaky000001")) {
		t.Errorf("after rerun ids = %v", got)
	}
	// --retry-failed asks for the permanent failures again.
	rep3, err := FetchTranscripts(context.Background(), cfg, env, TranscriptOptions{RetryFailed: true})
	if err != nil {
		t.Fatal(err)
	}
	after, _, _ = api.snap()
	if rep3.SkippedFailed != 0 || len(rep3.Failed) != 4 || after["privateVid1"] != 2 {
		t.Errorf("retry-failed: skipped=%d failed=%d private attempts=%d; want 0, 4, 2", rep3.SkippedFailed, len(rep3.Failed), after["privateVid1"])
	}
	assertNoSecrets(t, logs.String(), cfg.WorkDir)
}

func TestFetchTranscriptsKillAndRerunIsIdentical(t *testing.T) {
	const n = 12
	setup := func() (*fakeTranscriptAPI, PipelineConfig) {
		api := newFakeTranscriptAPI(t)
		var inputs []string
		for i := 1; i <= n; i++ {
			api.videos[ytID(i)] = fakeVideo{text: videoText(i)}
			inputs = append(inputs, ytID(i))
		}
		// A few faults make completion order differ from input order.
		api.faultFor = func(id string, k int) fault {
			if k == 1 && (id == ytID(2) || id == ytID(5)) {
				return fault500
			}
			return faultNone
		}
		cfg := testConfig(t, api, nil)
		cfg.Transcripts.Concurrency = 4
		cfg.Transcripts.Videos = inputs
		return api, cfg
	}
	var logs syncBuffer
	var sl sleepLog
	_, ref := setup()
	if _, err := FetchTranscripts(context.Background(), ref, testEnv(&logs, &sl), TranscriptOptions{}); err != nil {
		t.Fatal(err)
	}
	want := mustRead(t, filepath.Join(ref.WorkDir, TranscriptsFile))

	api, cfg := setup()
	ctx, cancel := context.WithCancel(context.Background())
	api.set(func(f *fakeTranscriptAPI) {
		f.onRequest = func(k int) {
			if k == 6 {
				cancel()
			}
		}
	})
	rep, err := FetchTranscripts(ctx, cfg, testEnv(&logs, &sl), TranscriptOptions{})
	if !errors.Is(err, context.Canceled) || !rep.Interrupted {
		t.Fatalf("interrupted run: err=%v interrupted=%v, want context.Canceled", err, rep.Interrupted)
	}
	path := filepath.Join(cfg.WorkDir, TranscriptsFile)
	partial := mustRead(t, path)
	if !strings.HasPrefix(want, partial) || partial == want {
		t.Fatalf("interrupted output is not a strict prefix of the full output:\n%s", partial)
	}
	// A torn last line, as if killed mid-write.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"video_id":"` + ytID(9) + `","source":"api","te`)
	f.Close()
	api.set(func(f *fakeTranscriptAPI) { f.onRequest = nil })
	if _, err := FetchTranscripts(context.Background(), cfg, testEnv(&logs, &sl), TranscriptOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, path); got != want {
		t.Errorf("rerun output differs from an uninterrupted run:\n got %d bytes\nwant %d bytes", len(got), len(want))
	}
}

func TestFetchTranscriptsYouTubeChannel(t *testing.T) {
	api := newFakeTranscriptAPI(t)
	var ids []string
	for i := 1; i <= 5; i++ {
		api.videos[ytID(i)] = fakeVideo{text: videoText(i)}
		ids = append(ids, ytID(i))
	}
	api.channels["UCchannel01"] = ids
	api.channels["@drfeet"] = ids[:2]
	cfg := testConfig(t, api, nil)
	cfg.YouTube.Channels = []string{"UCchannel01"}
	cfg.YouTube.HTTP.Timeout = 50 * time.Millisecond
	var logs syncBuffer
	var sl sleepLog
	rep, err := FetchTranscripts(context.Background(), cfg, testEnv(&logs, &sl), TranscriptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := transcriptIDs(t, filepath.Join(cfg.WorkDir, TranscriptsFile)); !slices.Equal(got, ids) || rep.Fetched != 5 {
		t.Errorf("fetched %v (%d), want all 5 uploads across 3 pages in order", got, rep.Fetched)
	}
	if _, _, yt := api.snap(); yt != 2 {
		t.Errorf("channels endpoint requested %d times, want 2 (one 500, then ok)", yt)
	}
	// Handles and the per-channel cap.
	cfg2 := testConfig(t, api, nil)
	cfg2.YouTube.Channels = []string{"UCchannel01", "@drfeet"}
	cfg2.YouTube.MaxVideos = 3
	rep2, err := FetchTranscripts(context.Background(), cfg2, testEnv(&logs, &sl), TranscriptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Inputs != 3 {
		t.Errorf("inputs = %d, want 3 (3 capped + 2 repeats dropped)", rep2.Inputs)
	}
	// An unknown channel is an error naming it.
	cfg3 := testConfig(t, api, nil)
	cfg3.YouTube.Channels = []string{"UCnope"}
	if _, err := FetchTranscripts(context.Background(), cfg3, testEnv(&logs, &sl), TranscriptOptions{}); err == nil || !strings.Contains(err.Error(), "UCnope: not found") {
		t.Errorf("error = %v, want channel UCnope not found", err)
	}
	assertNoSecrets(t, logs.String(), cfg.WorkDir, cfg2.WorkDir)
}

func TestFetchTranscriptsRejectedKeyStops(t *testing.T) {
	api := newFakeTranscriptAPI(t)
	api.videos[ytID(1)] = fakeVideo{text: videoText(1)}
	cfg := testConfig(t, api, nil)
	cfg.Transcripts.Videos = []string{ytID(1)}
	var logs syncBuffer
	var sl sleepLog
	env := testEnv(&logs, &sl)
	env.Getenv = func(string) string { return "wrong-key-SECRET" }
	_, err := FetchTranscripts(context.Background(), cfg, env, TranscriptOptions{})
	if err == nil || !strings.Contains(err.Error(), "rejected the API key (401, key from TRANSCRIPT_KEY)") {
		t.Fatalf("error = %v, want a 401 naming the env var", err)
	}
	if strings.Contains(err.Error(), "wrong-key-SECRET") || strings.Contains(logs.String(), "wrong-key-SECRET") {
		t.Error("the key leaked into the error or logs")
	}
}

func TestFetchTranscriptsLocalDir(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "b-talk.srt"), "1\n00:00:01,000 --> 00:00:02,000\n"+filler+"\n\n2\n00:00:02,000 --> 00:00:03,000\nSecond cue.\n")
	mustWrite(t, filepath.Join(dir, "a talk.txt"), "[00:01] "+filler+"\n[00:05] More.\n")
	mustWrite(t, filepath.Join(dir, "c.vtt"), "WEBVTT\n\n00:00.000 --> 00:01.000\n"+filler+"\n")
	mustWrite(t, filepath.Join(dir, "d.json"), `{"video_id":"real-id","title":"T","content":"`+filler+`"}`)
	mustWrite(t, filepath.Join(dir, "e.txt"), "too short")
	mustWrite(t, filepath.Join(dir, "notes.md"), "ignored")
	mustWrite(t, filepath.Join(dir, ".hidden.txt"), filler)
	cfg := testConfig(t, nil, nil)
	cfg.Transcripts.LocalDir = dir
	var logs syncBuffer
	var sl sleepLog
	rep, err := FetchTranscripts(context.Background(), cfg, testEnv(&logs, &sl), TranscriptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := readLines[Transcript](t, filepath.Join(cfg.WorkDir, TranscriptsFile))
	want := []Transcript{
		{VideoID: "a_talk", Source: "local", File: "a talk.txt", Text: strings.TrimSpace(filler) + "\nMore."},
		{VideoID: "b-talk", Source: "local", File: "b-talk.srt", Text: strings.TrimSpace(filler) + " Second cue."},
		{VideoID: "c", Source: "local", File: "c.vtt", Text: strings.TrimSpace(filler)},
		{VideoID: "real-id", Source: "local", File: "d.json", Title: "T", Text: strings.TrimSpace(filler)},
	}
	if !slices.Equal(got, want) {
		t.Errorf("local transcripts:\n got %+v\nwant %+v", got, want)
	}
	if len(rep.Failed) != 1 || rep.Failed[0].VideoID != "e" || !rep.Failed[0].Permanent || !strings.Contains(rep.Failed[0].Reason, "too short: 9 characters") {
		t.Errorf("failures = %+v, want e.txt too short", rep.Failed)
	}
	mustWrite(t, filepath.Join(dir, "c.txt"), filler)
	if _, err := FetchTranscripts(context.Background(), cfg, testEnv(&logs, &sl), TranscriptOptions{}); err == nil ||
		!strings.Contains(err.Error(), `c.txt and c.vtt both give video id "c"`) {
		t.Errorf("error = %v, want a clash between c.txt and c.vtt", err)
	}
}

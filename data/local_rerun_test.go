package data

import (
	"context"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// snapshotFiles maps every file under the directories (by path) to its
// bytes, reports (*.report.json, which count what their run did) aside.
func snapshotFiles(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || strings.HasSuffix(p, ".report.json") {
				return err
			}
			out[p] = mustRead(t, p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestLocalTranscriptsRerunIsIdempotent runs the whole pipeline over local
// JSON, SRT, VTT and text transcripts, some of them bad, then runs it again:
// the second run makes no request and writes the same bytes into every
// journal and output. A JSON transcript whose video_id is not its file name
// is not appended again, and the permanent failures are skipped, not
// recorded again. A bad file that is then fixed is read on the next run.
func TestLocalTranscriptsRerunIsIdempotent(t *testing.T) {
	src := t.TempDir()
	talk := func(n int) string {
		return filler + "QUESTION: How does step " + string(rune('A'+n)) + " help my knees? " + filler
	}
	files := map[string]string{
		"a-talk.json": `{"video_id": "json-real-id", "title": "Knees", "content": "` + talk(0) + `"}`,
		"b.srt":       "1\n00:00:01,000 --> 00:00:09,000\n" + talk(1) + "\n",
		"c.vtt":       "WEBVTT\n\n00:00.000 --> 00:09.000\n" + talk(2) + "\n",
		"d.txt":       "[00:01] " + talk(3) + "\n",
		"e.vtt":       "\xef\xbb\xbfWEBVTT\r\n\r\n00:00.000 --> 00:09.000\r\n" + talk(4) + "\r\n", // BOM, CRLF
		"f.json":      "\xef\xbb\xbf{\"content\": \"" + talk(5) + "\"}\r\n",
		// Bad: too short, malformed JSON, not UTF-8 (Windows-1252).
		"short.txt":   "too short",
		"broken.json": `{"video_id": "x", "content": `,
		"latin1.txt":  "Caf\xe9 " + talk(6),
	}
	for name, content := range files {
		mustWrite(t, filepath.Join(src, name), content)
	}
	llm := newFakeLLM(t)
	cfg := testConfig(t, nil, llm)
	cfg.Transcripts.LocalDir = src
	cfg.Build.OutDir = filepath.Join(t.TempDir(), "dataset")
	var logs syncBuffer
	var sl sleepLog
	env := testEnv(&logs, &sl)
	ctx := context.Background()
	run := func() (*TranscriptsReport, *StageReport, *StageReport) {
		t.Helper()
		tr, err := FetchTranscripts(ctx, cfg, env, TranscriptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		qr, err := GenerateQuestions(ctx, cfg, env, StageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ar, err := GenerateAnswers(ctx, cfg, env, StageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Build(ctx, cfg, env); err != nil {
			t.Fatal(err)
		}
		return tr, qr, ar
	}

	tr, qr, ar := run()
	if tr.Fetched != 6 || len(tr.Failed) != 3 || qr.OutputRecords != 6 || ar.OutputRecords != 6 {
		t.Fatalf("first run: fetched %d, failed %+v, questions %d, answers %d", tr.Fetched, tr.Failed, qr.OutputRecords, ar.OutputRecords)
	}
	reasons := map[string]string{}
	for _, f := range tr.Failed {
		if !f.Permanent || len(f.SHA256) != 64 {
			t.Errorf("failure %+v: want permanent, with the file's hash", f)
		}
		reasons[f.Input] = f.Reason
	}
	for input, want := range map[string]string{"short.txt": "too short: 9 characters", "broken.json": "decode JSON",
		"latin1.txt": "invalid UTF-8 at byte offset 3 (save the file as UTF-8)"} {
		if !strings.Contains(reasons[input], want) {
			t.Errorf("%s failed with %q, want %q", input, reasons[input], want)
		}
	}
	ids := transcriptIDs(t, filepath.Join(cfg.WorkDir, TranscriptsFile))
	if want := []string{"json-real-id", "b", "c", "d", "e", "f"}; !slices.Equal(ids, want) {
		t.Errorf("transcripts %v, want %v", ids, want)
	}
	before := snapshotFiles(t, cfg.WorkDir, cfg.Build.OutDir)
	requests := llm.snap().requests

	tr, qr, ar = run()
	if n := llm.snap().requests - requests; n != 0 {
		t.Errorf("the rerun made %d LLM requests", n)
	}
	if tr.Fetched != 0 || tr.AlreadyDone != 6 || tr.SkippedFailed != 3 || len(tr.Failed) != 0 {
		t.Errorf("rerun transcripts report: %+v", tr)
	}
	if qr.AlreadyDone != 6 || qr.Generated != 0 || ar.AlreadyDone != 6 || ar.Generated != 0 {
		t.Errorf("rerun: questions %+v, answers %+v", qr, ar)
	}
	after := snapshotFiles(t, cfg.WorkDir, cfg.Build.OutDir)
	if !slices.Equal(slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before))) {
		t.Fatalf("files %v, then %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	for p, b := range before {
		if after[p] != b {
			t.Errorf("the rerun changed %s:\n%s\nthen:\n%s", filepath.Base(p), b, after[p])
		}
	}

	// Fixing a bad file is enough for the next run to read it.
	mustWrite(t, filepath.Join(src, "short.txt"), talk(7))
	tr, _, _ = run()
	if tr.Fetched != 1 || tr.SkippedFailed != 2 || len(tr.Failed) != 0 {
		t.Errorf("after fixing short.txt: %+v", tr)
	}
	if ids := transcriptIDs(t, filepath.Join(cfg.WorkDir, TranscriptsFile)); len(ids) != 7 || ids[6] != "short" {
		t.Errorf("transcripts after the fix: %v", ids)
	}
	// --retry-failed reads the unchanged bad files again.
	tr, err := FetchTranscripts(ctx, cfg, env, TranscriptOptions{RetryFailed: true})
	if err != nil || tr.SkippedFailed != 0 || len(tr.Failed) != 2 {
		t.Errorf("--retry-failed: %+v, %v", tr, err)
	}
}

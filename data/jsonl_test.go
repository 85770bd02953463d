package data

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestJournalCutsTornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.jsonl")
	mustWrite(t, path, `{"video_id":"a","text":"x"}`+"\n"+`{"video_id":"b","text":"y"}`+"\n"+`{"video_id":"c","te`)
	var logs syncBuffer
	var ids []string
	j, err := openJournal(path, slog.New(slog.NewTextHandler(&logs, nil)), func(line []byte) error {
		var r struct {
			VideoID string `json:"video_id"`
			Text    string `json:"text"`
		}
		if err := decodeStrictJSON(line, &r); err != nil {
			return err
		}
		ids = append(ids, r.VideoID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "a,b" {
		t.Errorf("visited %v, want [a b]", ids)
	}
	if err := j.append(map[string]string{"video_id": "c", "text": "z"}); err != nil {
		t.Fatal(err)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	want := `{"video_id":"a","text":"x"}` + "\n" + `{"video_id":"b","text":"y"}` + "\n" + `{"text":"z","video_id":"c"}` + "\n"
	if got := mustRead(t, path); got != want {
		t.Errorf("journal after repair and append:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(logs.String(), "torn last line") || !strings.Contains(logs.String(), "bytes=19") {
		t.Errorf("no warning about the 19-byte torn line in logs: %s", logs.String())
	}
}

func TestJournalRejectsCorruptLineWithFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.jsonl")
	mustWrite(t, path, "{\"video_id\":\"a\"}\n\nnot json\n{\"video_id\":\"b\"}\n")
	_, err := openJournal(path, slog.New(slog.DiscardHandler), func(line []byte) error {
		var v map[string]any
		return json.Unmarshal(line, &v)
	})
	if err == nil || !strings.Contains(err.Error(), path+" line 3:") {
		t.Fatalf("error = %v, want one naming %s line 3", err, path)
	}
}

func TestReadJSONLUnknownFieldAndTornLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	mustWrite(t, bad, `{"id":"q1","video_id":"v","index":1,"question":"Why?"}`+"\n"+`{"id":"q2","video_id":"v","index":2,"question":"How?","extra":1}`+"\n")
	if _, err := readJSONL[Question](bad, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `unknown field "extra"`) {
		t.Errorf("error = %v, want line 2 unknown field extra", err)
	}
	torn := filepath.Join(dir, "torn.jsonl")
	mustWrite(t, torn, `{"id":"q1","video_id":"v","index":1,"question":"Why?"}`+"\n"+`{"id":"q2"`)
	qs, err := readJSONL[Question](torn, slog.New(slog.DiscardHandler))
	if err != nil || len(qs) != 1 || qs[0].ID != "q1" {
		t.Errorf("readJSONL(torn) = %v, %v; want just q1", qs, err)
	}
	if got := mustRead(t, torn); !strings.HasSuffix(got, `{"id":"q2"`) {
		t.Errorf("readJSONL must not repair files it does not own; file now %q", got)
	}
}

func TestWriteFileAtomicLeavesOldFileOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	mustWrite(t, path, "old\n")
	err := writeJSONLAtomic(path, []any{map[string]any{"ok": 1}, func() {}})
	if err == nil || !strings.Contains(err.Error(), "record 2") {
		t.Fatalf("error = %v, want one naming record 2", err)
	}
	if got := mustRead(t, path); got != "old\n" {
		t.Errorf("file changed to %q after a failed write", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if err := writeJSONLAtomic(path, []map[string]string{{"q": "a<b & c>d"}}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, path); got != `{"q":"a<b & c>d"}`+"\n" {
		t.Errorf("written %q (HTML must not be escaped)", got)
	}
}

// windowsFile is content as a Windows editor saves it: a byte-order mark
// and CRLF line ends.
func windowsFile(s string) string {
	return "\xef\xbb\xbf" + strings.ReplaceAll(s, "\n", "\r\n")
}

// TestReadersAcceptBOMRejectBadUTF8: every JSONL reader of the pipeline
// (readJSONL, the journals, stats, the video list) reads a file with a
// byte-order mark and CRLF as the plain file, and refuses invalid UTF-8
// and unpaired surrogate escapes with the file and line.
func TestReadersAcceptBOMRejectBadUTF8(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	const questions = `{"id":"v-q01","video_id":"v","index":1,"question":"Why?"}` + "\n" + `{"id":"v-q02","video_id":"v","index":2,"question":"How?"}` + "\n"
	bad := []struct{ name, line, want string }{
		{"invalid UTF-8", "{\"id\":\"v-q03\",\"video_id\":\"v\",\"index\":3,\"question\":\"Caf\xe9?\"}", "line 3: invalid UTF-8 at byte offset 54"},
		{"unpaired surrogate", `{"id":"v-q03","video_id":"v","index":3,"question":"x\ud800?"}`, `line 3: unpaired UTF-16 surrogate \ud800`},
	}

	// readJSONL.
	plain, win := filepath.Join(dir, "plain.jsonl"), filepath.Join(dir, "win.jsonl")
	mustWrite(t, plain, questions)
	mustWrite(t, win, windowsFile(questions))
	a, errA := readJSONL[Question](plain, log)
	b, errB := readJSONL[Question](win, log)
	if errA != nil || errB != nil || len(b) != 2 || !slices.Equal(a, b) {
		t.Errorf("readJSONL: %v %v\n%+v\n%+v", errA, errB, a, b)
	}
	for _, c := range bad {
		p := filepath.Join(dir, "bad.jsonl")
		mustWrite(t, p, questions+c.line+"\n")
		if _, err := readJSONL[Question](p, log); err == nil || !strings.Contains(err.Error(), p+" "+c.want) {
			t.Errorf("readJSONL %s: %v, want %q", c.name, err, c.want)
		}
	}

	// A journal: read, then appended to after the byte-order mark and lines.
	entries, j, err := loadEntries(win, false, log, func(q Question) string { return q.ID })
	if err != nil || len(entries) != 2 || entries["v-q02"].Question != "How?" {
		t.Fatalf("journal with BOM: %v %+v", err, entries)
	}
	if err := j.append(Question{ID: "v-q03", VideoID: "v", Index: 3, Question: "When?"}); err != nil {
		t.Fatal(err)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	want := windowsFile(questions) + `{"id":"v-q03","video_id":"v","index":3,"question":"When?"}` + "\n"
	if got := mustRead(t, win); got != want {
		t.Errorf("journal after append:\n%q\nwant\n%q", got, want)
	}
	p := filepath.Join(dir, "badjournal.jsonl")
	mustWrite(t, p, questions+bad[0].line+"\n")
	if _, _, err := loadEntries(p, false, log, func(q Question) string { return q.ID }); err == nil || !strings.Contains(err.Error(), p+" "+bad[0].want) {
		t.Errorf("journal with invalid UTF-8: %v", err)
	}

	// stats, on a chat file saved by Windows without a final line end.
	chat := filepath.Join(dir, "chat.jsonl")
	mustWrite(t, chat, strings.TrimSuffix(windowsFile(statsChat), "\r\n"))
	st, err := ComputeStats([]string{chat}, nil, DefaultPipelineConfig().Build.Dedup, log)
	if err != nil || st.Files[0].Records != 6 || st.Files[0].WithSystem != 1 {
		t.Errorf("stats with BOM: %v %+v", err, st)
	}
	mustWrite(t, chat, statsChat+"{\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9?\"},{\"role\":\"assistant\",\"content\":\"x\"}]}\n")
	if _, err := ComputeStats([]string{chat}, nil, DefaultPipelineConfig().Build.Dedup, log); err == nil || !strings.Contains(err.Error(), chat+" line 7: invalid UTF-8") {
		t.Errorf("stats with invalid UTF-8: %v", err)
	}

	// The video list.
	list := filepath.Join(dir, "videos.txt")
	mustWrite(t, list, windowsFile("dQw4w9WgXcQ\n# comment\nhttps://youtu.be/abcdefghijk\n"))
	if got, err := readVideoList(list); err != nil || !slices.Equal(got, []string{"dQw4w9WgXcQ", "https://youtu.be/abcdefghijk"}) {
		t.Errorf("video list with BOM: %q %v", got, err)
	}
}

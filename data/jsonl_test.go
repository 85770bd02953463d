package data

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
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

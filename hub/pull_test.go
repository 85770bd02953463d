package hub

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/internal/progress"
)

// TestPullLayout pulls a repository and checks the cache is laid out as
// huggingface_hub lays it out, that only the model's files came, that the
// token went to the Hub but never to the CDN, and that a second pull
// downloads nothing.
func TestPullLayout(t *testing.T) {
	fh := newFakeHub(t)
	fh.SetToken("hf_layouttoken")
	h, _ := newTestHub(t, fh, "hf_layouttoken", nil)
	files := repoFiles()
	s, err := pull(t, h, testRepo)
	if err != nil {
		t.Fatal(err)
	}
	commit := fh.Commit(testRepo, "main")
	rc := newRepoCache(h.cfg.CacheDir, testRepo)
	if s.Commit != commit || s.Dir != filepath.Join(h.cfg.CacheDir, "models--org--model", "snapshots", commit) || s.Path != s.Dir {
		t.Errorf("snapshot %+v, want commit %s under models--org--model", s, commit)
	}
	checkSnapshot(t, h, s, files, wantModelFiles)
	if ref, err := os.ReadFile(filepath.Join(rc.dir, "refs", "main")); err != nil || string(ref) != commit {
		t.Errorf("refs/main = %q (%v), want %q without a newline", ref, err, commit)
	}
	var total int64
	for _, f := range wantModelFiles {
		total += int64(len(files[f]))
	}
	if s.Downloaded != total {
		t.Errorf("downloaded %d bytes, want %d", s.Downloaded, total)
	}
	for _, f := range []string{"pytorch_model.bin", "README.md", "original/params.json", "original/extra.safetensors"} {
		if n := fh.Count("GET", f) + fh.Count("HEAD", f); n != 0 {
			t.Errorf("%s was requested %d times; it is not a model file", f, n)
		}
	}
	for _, r := range fh.Requests() {
		if r.Server == "cdn" && r.Auth != "" || r.Server == "hub" && r.Auth != "Bearer hf_layouttoken" || r.Status >= 400 {
			t.Errorf("request %+v: the token goes to the Hub only, and nothing fails", r)
		}
	}
	if fh.Count("", "model-00001-of-00002.safetensors") != 2 || fh.Count("GET", "config.json") != 1 {
		t.Errorf("want one HEAD and one GET per file; requests %+v", fh.Requests())
	}
	if _, err := os.Stat(filepath.Join(h.cfg.CacheDir, "CACHEDIR.TAG")); err != nil {
		t.Errorf("no CACHEDIR.TAG: %v", err)
	}

	fh.ResetRequests()
	s2, err := pull(t, h, testRepo)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Downloaded != 0 || len(fh.Requests()) != 1 || s2.Dir != s.Dir {
		t.Errorf("second pull: %d bytes, requests %+v; want only the repository info", s2.Downloaded, fh.Requests())
	}
	fh.ResetRequests()
	if s3, err := pull(t, h, testRepo+"@"+commit); err != nil || s3.Dir != s.Dir || s3.Downloaded != 0 {
		t.Errorf("pull at the commit: %+v, %v", s3, err)
	}
}

// TestPullRevisions: a second revision shares its unchanged blobs with the
// first (only the changed file is downloaded), and each gets its ref.
func TestPullRevisions(t *testing.T) {
	fh := newFakeHub(t)
	h, _ := newTestHub(t, fh, "", nil)
	if _, err := pull(t, h, testRepo); err != nil {
		t.Fatal(err)
	}
	v2 := repoFiles()
	v2["config.json"] = []byte(`{"model_type": "llama", "hidden_size": 128}`)
	c2 := fh.AddRevision(testRepo, "v2", v2)
	fh.ResetRequests()
	s, err := pull(t, h, testRepo+"@v2")
	if err != nil {
		t.Fatal(err)
	}
	if s.Commit != c2 || s.Downloaded != int64(len(v2["config.json"])) {
		t.Errorf("v2: commit %s (want %s), downloaded %d bytes, want only the new config.json", s.Commit, c2, s.Downloaded)
	}
	if n := fh.Count("GET", "model-00001-of-00002.safetensors"); n != 0 {
		t.Errorf("an unchanged shard was downloaded again (%d GETs)", n)
	}
	checkSnapshot(t, h, s, v2, wantModelFiles)
	rc := newRepoCache(h.cfg.CacheDir, testRepo)
	for rev, want := range map[string]string{"main": fh.Commit(testRepo, "main"), "v2": c2} {
		if got, err := rc.commitFor(rev); err != nil || got != want {
			t.Errorf("refs/%s = %q (%v), want %q", rev, got, err, want)
		}
	}
	if got := blobNames(t, filepath.Join(rc.dir, "blobs")); len(got) != len(wantModelFiles)+1 {
		t.Errorf("blobs %v: want the %d of main plus one", got, len(wantModelFiles))
	}
}

// TestPullIncludeAndFile: --include adds files; ORG/NAME/FILE pulls one.
func TestPullIncludeAndFile(t *testing.T) {
	fh := newFakeHub(t)
	h, _ := newTestHub(t, fh, "", nil)
	ctx := context.Background()
	s, err := h.Pull(ctx, Ref{Repo: testRepo}, PullOptions{Include: []string{"*.bin", "original/*"}})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{"original/extra.safetensors", "original/params.json", "pytorch_model.bin"}, wantModelFiles...)
	checkSnapshot(t, h, s, repoFiles(), sortedCopy(want))

	h2, _ := newTestHub(t, fh, "", nil)
	ref, _ := ParseRef(testRepo + "/original/params.json")
	s, err = h2.Pull(ctx, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(s.Path); err != nil || string(b) != `{"dim": 64}` || len(s.Files) != 1 {
		t.Errorf("one-file pull: %s = %q (%v), files %v", s.Path, b, err, s.Files)
	}
	ref.File = "nope.gguf"
	if _, err := h2.Pull(ctx, ref, PullOptions{}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "has no file nope.gguf") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := h2.Pull(ctx, Ref{Repo: testRepo}, PullOptions{Include: []string{"[bad"}}); err == nil || !strings.Contains(err.Error(), "--include") {
		t.Errorf("bad pattern: %v", err)
	}
}

func sortedCopy(xs []string) []string {
	out := append([]string(nil), xs...)
	sort.Strings(out)
	return out
}

// TestPullRenamed follows the Hub's redirect for a renamed repository.
func TestPullRenamed(t *testing.T) {
	fh := newFakeHub(t)
	fh.Rename("old-org/old-name", testRepo)
	h, _ := newTestHub(t, fh, "", nil)
	s, err := pull(t, h, "old-org/old-name")
	if err != nil {
		t.Fatal(err)
	}
	if s.Commit != fh.Commit(testRepo, "main") {
		t.Errorf("commit %s", s.Commit)
	}
	var redirects int
	for _, r := range fh.Requests() {
		if r.Status == 307 {
			redirects++
		}
	}
	if redirects != 1+len(wantModelFiles)*1 {
		t.Errorf("%d redirects, want one for the info and one per HEAD", redirects)
	}
}

// TestResolve: a path stays a path; a repository resolves to its
// snapshot; offline, the cache answers without a single request; a
// snapshot that lacks a shard is refused offline.
func TestResolve(t *testing.T) {
	fh := newFakeHub(t)
	h, _ := newTestHub(t, fh, "", nil)
	ctx := context.Background()
	local := t.TempDir()
	if m, err := h.Resolve(ctx, local, PullOptions{}); err != nil || m.Path != local || m.FromHub() {
		t.Errorf("local path: %+v, %v", m, err)
	}
	// the repository lacks tokenizer.json: not a loadable model
	fh.AddRepo("org/notokenizer", map[string][]byte{"config.json": []byte("{}"), "model.safetensors": []byte("x")})
	if _, err := h.Resolve(ctx, "org/notokenizer", PullOptions{}); err == nil || !strings.Contains(err.Error(), "lacks tokenizer.json") {
		t.Errorf("repository without a tokenizer: %v", err)
	}
	m, err := h.Resolve(ctx, testRepo, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	commit := fh.Commit(testRepo, "main")
	if m.Repo != testRepo || m.Commit != commit || m.Revision != "main" || !strings.HasSuffix(m.Path, "snapshots/"+commit) {
		t.Errorf("resolved %+v", m)
	}

	fh.ResetRequests()
	offCfg := h.cfg
	offCfg.Offline = true
	off := New(offCfg, Options{Logger: h.log})
	m2, err := off.Resolve(ctx, testRepo, PullOptions{})
	if err != nil || m2 != m {
		t.Errorf("offline: %+v, %v; want %+v", m2, err, m)
	}
	if _, err := off.Resolve(ctx, "org/never-pulled", PullOptions{}); !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "fungtrain pull org/never-pulled") {
		t.Errorf("offline, not cached: %v", err)
	}
	os.Remove(filepath.Join(m.Path, "model-00002-of-00002.safetensors"))
	if _, err := off.Resolve(ctx, testRepo, PullOptions{}); !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "lacks model-00002-of-00002.safetensors") {
		t.Errorf("offline, a shard missing: %v", err)
	}
	if n := len(fh.Requests()); n != 0 {
		t.Errorf("offline made %d requests", n)
	}
}

// TestHubUnreachable: with the Hub gone, a cached model is used (with a
// warning), and an uncached one fails saying the Hub cannot be reached.
func TestHubUnreachable(t *testing.T) {
	fh := newFakeHub(t)
	h, logs := newTestHub(t, fh, "", nil)
	s, err := pull(t, h, testRepo)
	if err != nil {
		t.Fatal(err)
	}
	fh.Close()
	s2, err := pull(t, h, testRepo)
	if err != nil || s2.Dir != s.Dir || !s2.FromCache {
		t.Errorf("cached model with the Hub down: %+v, %v", s2, err)
	}
	if !strings.Contains(logs.String(), "using the cached snapshot") {
		t.Errorf("no warning in the log:\n%s", logs)
	}
	_, err = pull(t, h, "org/other")
	if !errors.Is(err, ErrNetwork) || !strings.Contains(err.Error(), "cannot reach the Hub at "+fh.URL) ||
		!strings.Contains(err.Error(), "HF_HUB_OFFLINE=1") {
		t.Errorf("uncached model with the Hub down: %v", err)
	}
}

// TestPullProgress draws one byte bar per downloaded file.
func TestPullProgress(t *testing.T) {
	fh := newFakeHub(t)
	h, _ := newTestHub(t, fh, "", nil)
	var out syncBuffer
	g := progress.NewGroupWriter(&out)
	if _, err := h.Pull(context.Background(), Ref{Repo: testRepo}, PullOptions{Progress: g}); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, f := range wantModelFiles {
		if !strings.Contains(text, f+" [==============================] ") {
			t.Errorf("no full bar for %s", f)
		}
	}
	if !strings.Contains(text, "3.1/3.1 MB 100%") {
		t.Errorf("the 3.1 MB shard's bar does not read 3.1/3.1 MB 100%%:\n%q", lastBlock(text))
	}
	if strings.Count(lastBlock(text), "\n") != len(wantModelFiles) {
		t.Errorf("last block has not one line per file:\n%s", lastBlock(text))
	}
}

// lastBlock is the text after the group's last cursor-up sequence.
func lastBlock(s string) string {
	if i := strings.LastIndex(s, "\x1b["+strconv.Itoa(len(wantModelFiles))+"A"); i >= 0 {
		return s[i:]
	}
	return s
}

// TestPullSameBytes: two files with the same bytes share one blob and one
// download.
func TestPullSameBytes(t *testing.T) {
	fh := newFakeHub(t)
	files := repoFiles()
	files["tokenizer_config.json"] = files["config.json"]
	fh.AddRepo("org/same", files)
	h, _ := newTestHub(t, fh, "", nil)
	s, err := pull(t, h, "org/same")
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, h, s, files, wantModelFiles)
	if n := fh.Count("GET", "config.json") + fh.Count("GET", "tokenizer_config.json"); n != 1 {
		t.Errorf("%d GETs for two files with the same bytes, want 1", n)
	}
}

// TestConcurrentPulls: two pulls of one repository into one cache at once
// (two clients, as two processes would be) download each file once: the
// blob lock makes the second wait and find the blob.
func TestConcurrentPulls(t *testing.T) {
	fh := newFakeHub(t)
	h1, _ := newTestHub(t, fh, "", nil)
	h2 := New(h1.cfg, Options{Logger: h1.log, Backoff: time.Millisecond})
	errs := make(chan error, 2)
	for _, h := range []*Hub{h1, h2} {
		go func() {
			_, err := h.Pull(context.Background(), Ref{Repo: testRepo}, PullOptions{})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s, err := pull(t, h1, testRepo)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, h1, s, repoFiles(), wantModelFiles)
	for _, f := range wantModelFiles {
		if n := fh.Count("GET", f); n != 1 {
			t.Errorf("%s downloaded %d times", f, n)
		}
	}
}

package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/hub/hubtest"
	"github.com/fungtrain/fungtrain/internal/testenv"
)

// These tests check fungtrain's cache against huggingface_hub (pinned in
// versions.env, installed in third_party/pyenv), the client nobody here
// wrote, both pointed at the same fake Hub and the same cache.

// hfClient runs testdata/hf_client.py with req and decodes its answer.
func hfClient(t *testing.T, endpoint, cache string, req, out any) {
	t.Helper()
	in, _ := json.Marshal(req)
	cmd := exec.Command(testenv.Python(t), filepath.Join("testdata", "hf_client.py"))
	cmd.Env = append(os.Environ(), "HF_ENDPOINT="+endpoint, "HF_HUB_CACHE="+cache, "HF_HOME="+filepath.Join(t.TempDir(), "hfhome"),
		"HF_TOKEN=", "HF_HUB_OFFLINE=0", "HF_HUB_DISABLE_TELEMETRY=1", "HF_HUB_DISABLE_PROGRESS_BARS=1", "HF_HUB_DISABLE_XET=1")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("huggingface_hub %s: %v\n%s", in, err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("huggingface_hub answer %q: %v\n%s", stdout.String(), err, stderr.String())
	}
}

type hfScan struct {
	Repos []struct {
		RepoID     string `json:"repo_id"`
		RepoType   string `json:"repo_type"`
		SizeOnDisk int64  `json:"size_on_disk"`
		NbFiles    int    `json:"nb_files"`
		Revisions  []struct {
			Commit       string   `json:"commit"`
			Refs         []string `json:"refs"`
			SnapshotPath string   `json:"snapshot_path"`
			Files        []struct {
				Name, Path, Blob string
				Size             int64
			} `json:"files"`
		} `json:"revisions"`
	} `json:"repos"`
	Warnings []string `json:"warnings"`
}

// TestHFClientReadsFungtrainCache: fungtrain pulls two revisions;
// huggingface_hub's scan_cache_dir lists them exactly (files, sizes, refs,
// blobs shared), hf_hub_download(local_files_only=True) returns
// fungtrain's files, and an online hf_hub_download finds them cached and
// downloads nothing.
func TestHFClientReadsFungtrainCache(t *testing.T) {
	fh := newFakeHub(t)
	v2 := repoFiles()
	v2["config.json"] = []byte(`{"model_type": "llama", "hidden_size": 96}`)
	c2 := fh.AddRevision(testRepo, "v2", v2)
	h, _ := newTestHub(t, fh, "", nil)
	s1, err := pull(t, h, testRepo)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := pull(t, h, testRepo+"@v2")
	if err != nil {
		t.Fatal(err)
	}
	var scan hfScan
	hfClient(t, fh.URL, h.cfg.CacheDir, map[string]any{"op": "scan"}, &scan)
	if len(scan.Warnings) != 0 || len(scan.Repos) != 1 {
		t.Fatalf("scan_cache_dir: %+v", scan)
	}
	r := scan.Repos[0]
	var unique int64
	for _, f := range wantModelFiles {
		unique += int64(len(repoFiles()[f]))
	}
	unique += int64(len(v2["config.json"]))
	if r.RepoID != testRepo || r.RepoType != "model" || r.NbFiles != len(wantModelFiles)+1 || r.SizeOnDisk != unique || len(r.Revisions) != 2 {
		t.Fatalf("scan_cache_dir repo: id %s type %s, %d files, %d bytes, %d revisions; want %s model, %d files, %d bytes, 2 revisions",
			r.RepoID, r.RepoType, r.NbFiles, r.SizeOnDisk, len(r.Revisions), testRepo, len(wantModelFiles)+1, unique)
	}
	for _, rev := range r.Revisions {
		s, files := s1, repoFiles()
		wantRefs := "main"
		if rev.Commit == c2 {
			s, files, wantRefs = s2, v2, "v2"
		}
		if rev.Commit != s.Commit || strings.Join(rev.Refs, ",") != wantRefs || rev.SnapshotPath != s.Dir {
			t.Errorf("revision %s refs %v at %s; want %s refs %s at %s", rev.Commit, rev.Refs, rev.SnapshotPath, s.Commit, wantRefs, s.Dir)
		}
		var names []string
		for _, f := range rev.Files {
			names = append(names, f.Name)
			rel, _ := filepath.Rel(s.Dir, f.Path)
			wantBlob := filepath.Join(h.cfg.CacheDir, "models--org--model", "blobs", hubtest.ETag(rel, files[rel]))
			if f.Blob != wantBlob || f.Size != int64(len(files[rel])) {
				t.Errorf("%s: blob %s, %d bytes; want %s, %d", f.Path, f.Blob, f.Size, wantBlob, len(files[rel]))
			}
		}
		sort.Strings(names)
		if strings.Join(names, " ") != strings.Join(wantModelFiles, " ") {
			t.Errorf("revision %s files %v, want %v", rev.Commit, names, wantModelFiles)
		}
	}

	fh.ResetRequests()
	var local struct{ Paths map[string]string }
	hfClient(t, fh.URL, h.cfg.CacheDir, map[string]any{"op": "download", "repo": testRepo, "files": wantModelFiles, "revision": "v2", "local_only": true}, &local)
	if len(fh.Requests()) != 0 {
		t.Errorf("local_files_only made requests: %+v", fh.Requests())
	}
	for _, f := range wantModelFiles {
		if local.Paths[f] != filepath.Join(s2.Dir, f) {
			t.Errorf("hf_hub_download(%s, local_files_only=True) = %s, want fungtrain's %s", f, local.Paths[f], filepath.Join(s2.Dir, f))
		}
		if b, err := os.ReadFile(local.Paths[f]); err != nil || !bytes.Equal(b, v2[f]) {
			t.Errorf("%s read through huggingface_hub's path differs from the Hub's bytes (%v)", f, err)
		}
	}
	var online struct{ Paths map[string]string }
	hfClient(t, fh.URL, h.cfg.CacheDir, map[string]any{"op": "download", "repo": testRepo, "files": []string{shard1, "config.json"}}, &online)
	if online.Paths[shard1] != filepath.Join(s1.Dir, shard1) || fh.Count("GET", shard1)+fh.Count("GET", "config.json") != 0 {
		t.Errorf("online hf_hub_download: %v; requests %+v; want fungtrain's files, no GET", online.Paths, fh.Requests())
	}
}

// TestFungtrainReadsHFClientCache: huggingface_hub downloads the model;
// fungtrain offline resolves it to the same snapshot with no request, and
// online pulls nothing more. Then huggingface_hub fetches one file of a
// second repository and fungtrain's pull does not fetch it again.
func TestFungtrainReadsHFClientCache(t *testing.T) {
	fh := newFakeHub(t)
	h, _ := newTestHub(t, fh, "", nil)
	var snap struct{ Path string }
	hfClient(t, fh.URL, h.cfg.CacheDir, map[string]any{"op": "snapshot", "repo": testRepo, "allow": ModelPatterns}, &snap)

	fh.ResetRequests()
	offCfg := h.cfg
	offCfg.Offline = true
	m, err := New(offCfg, Options{Logger: h.log}).Resolve(context.Background(), testRepo, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Path != snap.Path || m.Commit != fh.Commit(testRepo, "main") || len(fh.Requests()) != 0 {
		t.Errorf("offline resolve: %+v (requests %d); want huggingface_hub's %s", m, len(fh.Requests()), snap.Path)
	}
	for _, f := range wantModelFiles {
		if b, err := os.ReadFile(filepath.Join(m.Path, f)); err != nil || !bytes.Equal(b, repoFiles()[f]) {
			t.Errorf("%s: %v", f, err)
		}
	}
	s, err := pull(t, h, testRepo)
	if err != nil || s.Dir != snap.Path || s.Downloaded != 0 || fh.Count("GET", "")+fh.Count("HEAD", "") != 1 {
		t.Errorf("online pull after huggingface_hub: %+v, %v; requests %+v", s, err, fh.Requests())
	}

	fh.AddRepo("org/second", repoFiles())
	var one struct{ Paths map[string]string }
	hfClient(t, fh.URL, h.cfg.CacheDir, map[string]any{"op": "download", "repo": "org/second", "files": []string{shard1}}, &one)
	fh.ResetRequests()
	s, err = pull(t, h, "org/second")
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, h, s, repoFiles(), wantModelFiles)
	if n := fh.Count("", shard1); n != 0 {
		t.Errorf("fungtrain asked for %s %d times; huggingface_hub had fetched it", shard1, n)
	}
	var want int64
	for _, f := range wantModelFiles {
		if f != shard1 {
			want += int64(len(repoFiles()[f]))
		}
	}
	if s.Downloaded != want {
		t.Errorf("fungtrain downloaded %d bytes, want %d (everything but %s)", s.Downloaded, want, shard1)
	}
}

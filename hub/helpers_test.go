package hub

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/hub/hubtest"
)

// testRepo is the model repository the tests pull: what a Llama repo
// holds, files a model does not need among them.
const testRepo = "org/model"

// wantModelFiles are the files of repoFiles that ModelPatterns select.
var wantModelFiles = []string{
	"config.json", "generation_config.json",
	"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
	"special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func repoFiles() map[string][]byte {
	return map[string][]byte{
		"config.json":                      []byte(`{"model_type": "llama", "hidden_size": 64}`),
		"generation_config.json":           []byte(`{"eos_token_id": [1, 2]}`),
		"tokenizer.json":                   bytes.Repeat([]byte(`{"vocab": "abcdefghij"}`), 1000), // 23 KB: LFS
		"tokenizer_config.json":            []byte(`{"chat_template": "x"}`),
		"special_tokens_map.json":          []byte(`{}`),
		"model.safetensors.index.json":     []byte(`{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}`),
		"model-00001-of-00002.safetensors": randomBytes(1, 3<<20+17),
		"model-00002-of-00002.safetensors": randomBytes(2, 700_001),
		"pytorch_model.bin":                randomBytes(3, 5000),
		"README.md":                        []byte("# a model\n"),
		"original/params.json":             []byte(`{"dim": 64}`),
		"original/extra.safetensors":       randomBytes(4, 100),
	}
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestHub returns a Hub client of the fake Hub fh with a fresh cache,
// short backoffs and a debug log it captures.
func newTestHub(t *testing.T, fh *hubtest.Hub, token string, change func(*Config, *Options)) (*Hub, *syncBuffer) {
	t.Helper()
	cfg := Config{Endpoint: fh.URL, CacheDir: filepath.Join(t.TempDir(), "hub")}
	if token != "" {
		cfg = cfg.WithToken(token, "HF_TOKEN")
	}
	logs := &syncBuffer{}
	o := Options{Workers: 4, Retries: 3, Backoff: time.Millisecond, IdleTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if change != nil {
		change(&cfg, &o)
	}
	return New(cfg, o), logs
}

func newFakeHub(t *testing.T) *hubtest.Hub {
	fh := hubtest.New()
	t.Cleanup(fh.Close)
	fh.AddRepo(testRepo, repoFiles())
	return fh
}

func pull(t *testing.T, h *Hub, ref string) (*Snapshot, error) {
	t.Helper()
	r, err := ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return h.Pull(ctx, r, PullOptions{})
}

// checkSnapshot checks that the snapshot holds exactly the wanted files,
// each a relative symlink to blobs/<etag> with the repository's bytes.
func checkSnapshot(t *testing.T, h *Hub, s *Snapshot, files map[string][]byte, want []string) {
	t.Helper()
	if got := snapshotFiles(s.Dir); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("snapshot %s holds %v, want %v", s.Dir, got, want)
	}
	rc := newRepoCache(h.cfg.CacheDir, s.Ref.Repo)
	for _, name := range want {
		p := filepath.Join(s.Dir, filepath.FromSlash(name))
		target, err := os.Readlink(p)
		if err != nil {
			t.Errorf("%s: not a symlink: %v", name, err)
			continue
		}
		etag := hubtest.ETag(name, files[name])
		wantTarget := strings.Repeat("../", 2+strings.Count(name, "/")) + "blobs/" + etag
		if target != wantTarget {
			t.Errorf("%s -> %s, want %s", name, target, wantTarget)
		}
		b, err := os.ReadFile(rc.blob(etag))
		if err != nil || !bytes.Equal(b, files[name]) {
			t.Errorf("blob of %s: %d bytes (%v), differs from the Hub's %d", name, len(b), err, len(files[name]))
		}
	}
	if left, _ := filepath.Glob(filepath.Join(rc.dir, "blobs", "*.incomplete")); len(left) > 0 {
		t.Errorf("incomplete files left: %v", left)
	}
}

func blobNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

package hub

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/hub/hubtest"
)

const shard1 = "model-00001-of-00002.safetensors"

// TestPullFaults injects one fault per case. A pull that should survive
// must end with every byte equal to the Hub's (and, for a cut body, must
// have resumed with Range from where it stopped); one that should fail
// must fail with the right kind and message and leave nothing in the
// snapshot for that file, and no half-written blob.
func TestPullFaults(t *testing.T) {
	const cut = 1_000_003
	tests := []struct {
		name      string
		faults    []hubtest.Fault
		idle      time.Duration
		wantErr   error
		wantMsg   string
		wantRange string // a Range header the pull must have sent for the file
		wantLog   string
	}{
		{name: "503 on HEAD twice", faults: []hubtest.Fault{{File: shard1, Method: "HEAD", Kind: hubtest.Status, Code: 503, Times: 2}},
			wantLog: "hub request failed, retrying"},
		{name: "429 with Retry-After on the CDN", faults: []hubtest.Fault{{File: shard1, Method: "GET", Kind: hubtest.Status, Code: 429, RetryAfter: 1, Times: 1}},
			wantLog: "wait=1s"},
		{name: "500 forever", faults: []hubtest.Fault{{File: shard1, Kind: hubtest.Status, Code: 500, Times: -1}},
			wantErr: ErrServer, wantMsg: "500 Internal Server Error"},
		{name: "body cut twice", faults: []hubtest.Fault{{File: shard1, Kind: hubtest.Truncate, At: cut, Times: 2}},
			wantRange: "bytes=2000006-", wantLog: "download interrupted, resuming"},
		{name: "body cut forever", faults: []hubtest.Fault{{File: shard1, Kind: hubtest.Truncate, At: 0, Times: -1}},
			wantErr: ErrTruncated, wantMsg: "run again to resume"},
		{name: "connection dropped once", faults: []hubtest.Fault{{File: shard1, Method: "GET", Kind: hubtest.Drop, Times: 1}}},
		{name: "connection dropped forever", faults: []hubtest.Fault{{File: shard1, Method: "GET", Kind: hubtest.Drop, Times: -1}},
			wantErr: ErrNetwork, wantMsg: "cannot reach the Hub"},
		{name: "corrupted once", faults: []hubtest.Fault{{File: shard1, Kind: hubtest.Corrupt, At: 12345, Times: 1}},
			wantLog: "checksum mismatch, downloading again"},
		{name: "corrupted forever", faults: []hubtest.Fault{{File: shard1, Kind: hubtest.Corrupt, At: 12345, Times: -1}},
			wantErr: ErrChecksum, wantMsg: "the sha256 of the downloaded bytes is"},
		{name: "small file corrupted (git blob sha1)", faults: []hubtest.Fault{{File: "config.json", Kind: hubtest.Corrupt, At: 3, Times: -1}},
			wantErr: ErrChecksum, wantMsg: "the git-sha1 of the downloaded bytes is"},
		{name: "stalled body", idle: 500 * time.Millisecond, faults: []hubtest.Fault{{File: shard1, Kind: hubtest.Stall, At: cut, Times: 1}},
			wantRange: "bytes=1000003-", wantLog: "no data for 500ms"},
		{name: "Range ignored after a cut", faults: []hubtest.Fault{{File: shard1, Kind: hubtest.Truncate, At: cut, Times: 1},
			{File: shard1, Kind: hubtest.IgnoreRange, Times: 1}}, wantRange: "bytes=1000003-"},
		{name: "503 on the repository info twice", faults: []hubtest.Fault{{File: hubtest.InfoFile, Kind: hubtest.Status, Code: 503, Times: 2}},
			wantLog: "hub request failed, retrying"},
		{name: "info connection dropped forever", faults: []hubtest.Fault{{File: hubtest.InfoFile, Kind: hubtest.Drop, Times: -1}},
			wantErr: ErrNetwork, wantMsg: "cannot reach the Hub"},
		{name: "404 on HEAD", faults: []hubtest.Fault{{File: shard1, Method: "HEAD", Kind: hubtest.Status, Code: 404, Times: -1}},
			wantErr: ErrNotFound, wantMsg: "404 Not Found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fh := newFakeHub(t)
			var faults []*hubtest.Fault
			for i := range tc.faults {
				faults = append(faults, fh.Inject(&tc.faults[i]))
			}
			h, logs := newTestHub(t, fh, "", func(_ *Config, o *Options) {
				if tc.idle > 0 {
					o.IdleTimeout = tc.idle
				}
			})
			s, err := pull(t, h, testRepo)
			for _, f := range faults {
				if fh.Hits(f) == 0 {
					t.Errorf("fault %d on %s never applied", f.Kind, f.File)
				}
			}
			if tc.wantLog != "" && !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				checkSnapshot(t, h, s, repoFiles(), wantModelFiles)
				if tc.wantRange != "" && !sentRange(fh, shard1, tc.wantRange) {
					t.Errorf("no GET of %s with Range %q: %+v", shard1, tc.wantRange, fh.Requests())
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %v, want %v with %q", err, tc.wantErr, tc.wantMsg)
			}
			file := tc.faults[0].File
			rc := newRepoCache(h.cfg.CacheDir, testRepo)
			commit := fh.Commit(testRepo, "main")
			if _, err := os.Lstat(rc.pointer(commit, file)); err == nil {
				t.Errorf("%s is in the snapshot after a failed download", file)
			}
			etag := hubtest.ETag(file, repoFiles()[file])
			if _, err := os.Stat(rc.blob(etag)); err == nil {
				t.Errorf("blob of %s exists after a failed download", file)
			}
			if _, err := os.Stat(rc.blob(etag) + ".incomplete"); errors.Is(tc.wantErr, ErrChecksum) && err == nil {
				t.Errorf("corrupt bytes of %s kept in .incomplete", file)
			}
		})
	}
}

func sentRange(fh *hubtest.Hub, file, rg string) bool {
	for _, r := range fh.Requests() {
		if r.Method == "GET" && r.File == file && r.Range == rg {
			return true
		}
	}
	return false
}

// TestPullAuth: gated and private repositories with no token, a wrong one
// and the right one; each refusal says what to do, and the token shows up
// in no error and no log line, even when a server echoes it back.
func TestPullAuth(t *testing.T) {
	const secret = "hf_TheRealSecretToken123"
	tests := []struct {
		name    string
		repo    string
		token   string
		fault   *hubtest.Fault
		wantErr error
		wantMsg []string
	}{
		{name: "gated, no token", repo: "org/gated", wantErr: ErrAuth,
			wantMsg: []string{"org/gated is gated or private, and no token is set", "accept its licence at {hub}/org/gated", "set HF_TOKEN", "{hub}/settings/tokens"}},
		{name: "gated, wrong token", repo: "org/gated", token: "hf_wrong", wantErr: ErrAuth,
			wantMsg: []string{"the token from HF_TOKEN gives no access to org/gated", "accept its licence at {hub}/org/gated", "403"}},
		{name: "gated, right token", repo: "org/gated", token: secret},
		{name: "private, no token", repo: "org/private", wantErr: ErrNotFound,
			wantMsg: []string{"org/private was not found on {hub}", "if it is private or gated, set HF_TOKEN"}},
		{name: "private, right token", repo: "org/private", token: secret},
		{name: "missing, with a token", repo: "org/missing", token: secret, wantErr: ErrNotFound, wantMsg: []string{"org/missing was not found"}},
		{name: "bad revision", repo: testRepo + "@nope", wantErr: ErrNotFound, wantMsg: []string{`has no revision "nope"`}},
		{name: "server echoes the token", repo: "org/gated", token: secret, wantErr: ErrServer,
			fault:   &hubtest.Fault{File: "config.json", Method: "GET", Kind: hubtest.Status, Code: 502, EchoAuth: true, Times: -1},
			wantMsg: []string{"you sent: Bearer [token]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fh := newFakeHub(t)
			fh.SetToken(secret)
			fh.AddRepo("org/gated", repoFiles()).Gated = true
			fh.AddRepo("org/private", repoFiles()).Private = true
			if tc.fault != nil {
				fh.Inject(tc.fault)
			}
			h, logs := newTestHub(t, fh, tc.token, nil)
			_, err := pull(t, h, tc.repo)
			text := logs.String()
			if err != nil {
				text += err.Error()
			}
			if strings.Contains(text, secret) {
				t.Errorf("the token leaked:\n%s", text)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			for _, m := range tc.wantMsg {
				if m = strings.ReplaceAll(m, "{hub}", fh.URL); !strings.Contains(err.Error(), m) {
					t.Errorf("error lacks %q:\n%v", m, err)
				}
			}
			if tc.name == "gated, no token" && fh.Count("HEAD", "") != 0 {
				t.Errorf("gated without a token: %d HEADs sent; the repository info says it is gated", fh.Count("HEAD", ""))
			}
			if _, err := os.Stat(filepath.Join(h.cfg.CacheDir, "models--org--gated")); tc.name == "gated, no token" && err == nil {
				t.Error("a refused pull left a repository folder in the cache")
			}
		})
	}
}

// TestPullRefusesEscapingNames: a file list naming ../ paths is refused
// before anything is written.
func TestPullRefusesEscapingNames(t *testing.T) {
	fh := newFakeHub(t)
	fh.AddRepo("org/evil", map[string][]byte{"config.json": []byte("{}"), "../../../evil.json": []byte("x")})
	h, _ := newTestHub(t, fh, "", nil)
	_, err := pull(t, h, "org/evil")
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), `"../../../evil.json"`) {
		t.Fatalf("error %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.CacheDir, "evil.json")); err == nil {
		t.Error("evil.json was written")
	}
}

// TestPullDiskFull: too little free space is refused before any download;
// a write that fails with ENOSPC (a real one: the incomplete file is a
// link to /dev/full) says the disk is full and keeps the blob out.
func TestPullDiskFull(t *testing.T) {
	fh := newFakeHub(t)
	h, _ := newTestHub(t, fh, "", nil)
	h.free = func(string) int64 { return 1 << 20 }
	_, err := pull(t, h, testRepo)
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "not enough disk space for org/model: it needs 3.7 MiB more") || fh.Count("GET", shard1) != 0 {
		t.Fatalf("error %v; GETs %d", err, fh.Count("GET", shard1))
	}

	if runtime.GOOS != "linux" {
		t.Skip("/dev/full is Linux's")
	}
	h, _ = newTestHub(t, fh, "", nil)
	rc := newRepoCache(h.cfg.CacheDir, testRepo)
	blob := rc.blob(hubtest.ETag(shard1, repoFiles()[shard1]))
	os.MkdirAll(filepath.Dir(blob), 0o755)
	if err := os.Symlink("/dev/full", blob+".incomplete"); err != nil {
		t.Fatal(err)
	}
	_, err = pull(t, h, testRepo)
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "disk full while writing") || !strings.Contains(err.Error(), "the download resumes") {
		t.Fatalf("ENOSPC: %v", err)
	}
	if _, err := os.Stat(blob); err == nil {
		t.Error("the blob exists after ENOSPC")
	}
	if _, err := os.Lstat(rc.pointer(fh.Commit(testRepo, "main"), shard1)); err == nil {
		t.Error("the snapshot links a file whose download failed")
	}
}

// TestPullCancelled: a cancelled pull returns the context's error and keeps
// its partial bytes for the next one.
func TestPullCancelled(t *testing.T) {
	fh := newFakeHub(t)
	f := fh.Inject(&hubtest.Fault{File: shard1, Kind: hubtest.Stall, At: 500_000, Times: 1})
	h, _ := newTestHub(t, fh, "", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.Pull(ctx, Ref{Repo: testRepo}, PullOptions{})
		done <- err
	}()
	<-f.Reached
	rc := newRepoCache(h.cfg.CacheDir, testRepo)
	part := rc.blob(hubtest.ETag(shard1, repoFiles()[shard1])) + ".incomplete"
	waitSize(t, part, 500_000)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if st, err := os.Stat(part); err != nil || st.Size() != 500_000 {
		t.Fatalf("partial file: %v, %v", st, err)
	}
	s, err := pull(t, h, testRepo)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, h, s, repoFiles(), wantModelFiles)
	if !sentRange(fh, shard1, "bytes=500000-") {
		t.Errorf("the second pull did not resume: %+v", fh.Requests())
	}
}

// waitSize waits until the file at p has n bytes.
func waitSize(t *testing.T, p string, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(p); err == nil && st.Size() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := os.Stat(p)
	t.Fatalf("%s never reached %d bytes: %v %v", p, n, st, err)
}

// TestUnknownHost: a Hub name that does not resolve fails at once, without
// the retries that cannot help.
func TestUnknownHost(t *testing.T) {
	fh := newFakeHub(t)
	h, _ := newTestHub(t, fh, "", func(c *Config, o *Options) {
		c.Endpoint = "http://no-such-host.invalid"
		o.Backoff = 5 * time.Second // one retry would take this long
	})
	t0 := time.Now()
	_, err := pull(t, h, testRepo)
	if !errors.Is(err, ErrNetwork) || !strings.Contains(err.Error(), "cannot reach the Hub at http://no-such-host.invalid") {
		t.Fatalf("error %v", err)
	}
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Skipf("this resolver does not say NXDOMAIN for .invalid: %v", err)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("took %s: retried an unknown host", d)
	}
}

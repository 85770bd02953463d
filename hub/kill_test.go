package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/hub/hubtest"
)

// childEnv, when set, makes the test binary pull a repository (see
// TestMain) instead of running the tests: the process the kill test kills.
const childEnv = "FUNGTRAIN_HUB_TEST_CHILD"

type childArgs struct {
	Endpoint, Cache, Ref string
}

func TestMain(m *testing.M) {
	if a := os.Getenv(childEnv); a != "" {
		os.Exit(runChild(a))
	}
	os.Exit(m.Run())
}

func runChild(a string) int {
	var args childArgs
	if err := json.Unmarshal([]byte(a), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ref, err := ParseRef(args.Ref)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	h := New(Config{Endpoint: args.Endpoint, CacheDir: args.Cache}, Options{Workers: 1})
	if _, err := h.Pull(context.Background(), ref, PullOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

// TestPullKilledResumes kills (SIGKILL) a process in the middle of a
// download, then pulls again: the second pull resumes with Range from the
// bytes the first left in the .incomplete file, and the result equals the
// Hub's bytes.
func TestPullKilledResumes(t *testing.T) {
	const at = 1_234_567
	fh := newFakeHub(t)
	stall := fh.Inject(&hubtest.Fault{File: shard1, Kind: hubtest.Stall, At: at, Times: 1})
	h, _ := newTestHub(t, fh, "", nil)
	a, _ := json.Marshal(childArgs{Endpoint: fh.URL, Cache: h.cfg.CacheDir, Ref: testRepo})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(a))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-stall.Reached:
	case err := <-exited:
		t.Fatalf("the child exited before the stall: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the child never reached the stall")
	}
	rc := newRepoCache(h.cfg.CacheDir, testRepo)
	blob := rc.blob(hubtest.ETag(shard1, repoFiles()[shard1]))
	waitSize(t, blob+".incomplete", at)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil {
		t.Fatal("the child exited cleanly; it was to be killed")
	}
	if _, err := os.Stat(blob); err == nil {
		t.Fatal("the blob exists after the kill")
	}
	if _, err := os.Lstat(rc.pointer(fh.Commit(testRepo, "main"), shard1)); err == nil {
		t.Fatal("the snapshot links the half-downloaded file")
	}

	fh.ResetRequests()
	s, err := pull(t, h, testRepo)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, h, s, repoFiles(), wantModelFiles)
	if !sentRange(fh, shard1, fmt.Sprintf("bytes=%d-", at)) {
		t.Errorf("no resumed GET from byte %d: %+v", at, fh.Requests())
	}
	if n := fh.Count("GET", shard1); n != 1 {
		t.Errorf("%d GETs of %s after the kill, want 1 (resumed)", n, shard1)
	}
	// The child (one worker, files in order) had finished config.json and
	// generation_config.json; the second pull moves only the rest.
	var want int64 = -at
	for _, f := range wantModelFiles[2:] {
		want += int64(len(repoFiles()[f]))
	}
	if s.Downloaded != want {
		t.Errorf("the second pull transferred %d bytes, want %d", s.Downloaded, want)
	}
}

package hub

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fungtrain/fungtrain/internal/progress"
)

// ModelPatterns are the files a model needs: its config, tokenizer,
// generation config and safetensors weights (with their index). PyTorch
// .bin files, GGUF files and the rest are left unless asked for.
var ModelPatterns = []string{
	"config.json", "generation_config.json",
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
	"chat_template.jinja", "chat_template.json",
	"*.safetensors", "*.safetensors.index.json",
}

// Options set how the Hub is reached.
type Options struct {
	Workers     int           // files fetched at once (default 4)
	Retries     int           // attempts after the first on 5xx, 429, network errors and cut bodies (default 5)
	Backoff     time.Duration // first wait between attempts, doubling (default 1s)
	IdleTimeout time.Duration // a body silent this long is dropped and resumed (default 60s)
	HTTPClient  *http.Client  // default: a clone of http.DefaultTransport
	Logger      *slog.Logger  // default: slog.Default()
}

// DefaultOptions are the settings of the fungtrain CLI.
func DefaultOptions() Options {
	return Options{Workers: 4, Retries: 5, Backoff: time.Second, IdleTimeout: 60 * time.Second}
}

// Hub pulls repositories into the shared cache and finds them there.
type Hub struct {
	cfg     Config
	c       *client
	log     *slog.Logger
	workers int
	free    func(dir string) int64 // free disk space; tests replace it
}

// New returns a Hub for cfg. Zero fields of o take DefaultOptions' values.
func New(cfg Config, o Options) *Hub {
	d := DefaultOptions()
	if o.Workers <= 0 {
		o.Workers = d.Workers
	}
	if o.Retries == 0 {
		o.Retries = d.Retries
	}
	if o.Backoff <= 0 {
		o.Backoff = d.Backoff
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = d.IdleTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Hub{cfg: cfg, c: newClient(cfg, o), log: o.Logger, workers: o.Workers, free: freeBytes}
}

// Config returns the Hub's configuration.
func (h *Hub) Config() Config { return h.cfg }

// PullOptions choose what to fetch.
type PullOptions struct {
	Include  []string        // more glob patterns (path.Match: '*' stops at '/')
	All      bool            // every file of the repository
	Progress *progress.Group // one bar per file; nil draws none
}

// Snapshot is a repository revision in the cache.
type Snapshot struct {
	Ref        Ref
	Commit     string
	Dir        string   // $HF_HUB_CACHE/models--ORG--NAME/snapshots/<commit>
	Path       string   // what to load: Dir, or the file a one-file Ref names
	Files      []string // the repository files selected
	Downloaded int64    // bytes this call transferred
	FromCache  bool     // found in the cache without asking the Hub
}

// Pull makes sure the files ref selects are in the cache and returns the
// snapshot. Offline (HF_HUB_OFFLINE), it only looks in the cache. When the
// Hub cannot be reached but the cache holds the revision, it uses the
// cache and says so.
func (h *Hub) Pull(ctx context.Context, ref Ref, o PullOptions) (*Snapshot, error) {
	for _, p := range o.Include {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("--include %q: %w", p, err)
		}
	}
	if h.cfg.Offline {
		return h.fromCache(ref, o, nil)
	}
	info, cached, err := h.listing(ctx, ref, o)
	if err != nil || cached != nil {
		return cached, err
	}
	names := make([]string, 0, len(info.Siblings))
	for _, s := range info.Siblings {
		if checkRepoPath(s.Name) != nil {
			return nil, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("%s lists a file named %q, which would land outside the cache; refusing it", ref.Repo, s.Name)}
		}
		names = append(names, s.Name)
	}
	files, err := selectFiles(names, ref, o)
	if err != nil {
		return nil, err
	}
	rc := newRepoCache(h.cfg.CacheDir, ref.Repo)
	s := &Snapshot{Ref: ref, Commit: info.SHA, Dir: rc.snapshot(info.SHA), Files: files}
	s.Path = s.Dir
	if ref.File != "" {
		s.Path = rc.pointer(info.SHA, ref.File)
	}
	var missing []string
	for _, f := range files {
		if !rc.has(s.Commit, f) {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 && info.gated() && !h.cfg.HasToken() {
		return nil, h.explain(&Error{Kind: ErrAuth, Msg: fmt.Sprintf("%s is gated", ref.Repo)}, ref)
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", s.Dir, err)
	}
	writeCacheDirTag(h.cfg.CacheDir)
	if err := rc.writeRef(ref.rev(), s.Commit); err != nil {
		return nil, err
	}
	if len(missing) == 0 {
		h.log.Info("model in the cache", "model", ref.String(), "commit", s.Commit, "files", len(files), "dir", s.Dir)
		return s, nil
	}
	h.log.Info("pulling", "model", ref.String(), "commit", s.Commit, "files", len(missing), "cached", len(files)-len(missing))
	s.Downloaded, err = h.fetch(ctx, rc, s.Commit, missing, o.Progress)
	if err != nil {
		return nil, h.explain(err, ref)
	}
	return s, nil
}

// listing asks the Hub for the commit and files of ref. Like
// huggingface_hub, it makes one quick try, then answers from the cache if
// that holds the revision (cached is then set), then asks again with
// retries.
func (h *Hub) listing(ctx context.Context, ref Ref, o PullOptions) (info repoInfo, cached *Snapshot, err error) {
	info, err = h.c.withRetries(0).info(ctx, ref.Repo, ref.rev())
	if errors.Is(err, ErrNetwork) || errors.Is(err, ErrServer) {
		if s, cerr := h.fromCache(ref, o, err); cerr == nil {
			h.log.Warn("the Hub cannot be reached; using the cached snapshot", "model", ref.String(), "commit", s.Commit, "error", err.Error())
			return info, s, nil
		}
		info, err = h.c.info(ctx, ref.Repo, ref.rev())
	}
	if err != nil {
		return info, nil, h.explain(err, ref)
	}
	return info, nil, nil
}

// selectFiles picks the repository files the options ask for.
func selectFiles(names []string, ref Ref, o PullOptions) ([]string, error) {
	patterns := ModelPatterns
	if ref.File != "" {
		patterns = []string{ref.File}
	}
	patterns = append(append([]string{}, patterns...), o.Include...)
	var out []string
	for _, n := range names {
		if o.All || matchAny(patterns, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	if ref.File != "" && !contains(out, ref.File) {
		return nil, &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("%s has no file %s at %s (it has %s)", ref.Repo, ref.File, ref.rev(), listSome(names))}
	}
	if len(out) == 0 {
		return nil, &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("no file of %s@%s matches %s (it has %s)", ref.Repo, ref.rev(), strings.Join(patterns, " "), listSome(names))}
	}
	return out, nil
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func listSome(names []string) string {
	if len(names) == 0 {
		return "no files"
	}
	if len(names) > 12 {
		return strings.Join(names[:12], ", ") + fmt.Sprintf(" and %d more", len(names)-12)
	}
	return strings.Join(names, ", ")
}

// fetch brings the files into the snapshot: a HEAD for each (its ETag,
// size and location), a link when the blob is already cached (another
// revision or tool fetched it), else a download. It checks the disk has
// room for the whole lot first.
func (h *Hub) fetch(ctx context.Context, rc repoCache, commit string, files []string, g *progress.Group) (int64, error) {
	metas := make([]fileMeta, len(files))
	err := parallel(ctx, h.workers, len(files), func(ctx context.Context, i int) error {
		m, err := h.c.head(ctx, rc.repo, commit, files[i])
		if err != nil {
			return err
		}
		metas[i] = m
		return nil
	})
	if err != nil {
		return 0, err
	}
	// One download per blob: files with the same bytes share it.
	var todo []int
	sameBlob := map[string][]int{}
	var need int64
	for i, m := range metas {
		if _, err := os.Stat(rc.blob(m.ETag)); err == nil {
			if err := rc.link(commit, files[i], m.ETag); err != nil {
				return 0, err
			}
			continue
		}
		if sameBlob[m.ETag] = append(sameBlob[m.ETag], i); len(sameBlob[m.ETag]) > 1 {
			continue
		}
		todo = append(todo, i)
		if m.Size > 0 {
			need += m.Size
			if st, err := os.Stat(rc.blob(m.ETag) + ".incomplete"); err == nil {
				need -= min(st.Size(), m.Size)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(rc.dir, "blobs"), 0o755); err != nil {
		return 0, fmt.Errorf("create %s: %w", filepath.Join(rc.dir, "blobs"), err)
	}
	if free := h.free(filepath.Join(rc.dir, "blobs")); free >= 0 && need > free {
		return 0, &Error{Kind: ErrDiskFull, Msg: fmt.Sprintf("not enough disk space for %s: it needs %s more in %s, and %s is free; free some space or set HF_HUB_CACHE to a larger disk", rc.repo, humanBytes(need), h.cfg.CacheDir, humanBytes(free))}
	}
	var mu sync.Mutex
	var total int64
	err = parallel(ctx, h.workers, len(todo), func(ctx context.Context, k int) error {
		i := todo[k]
		bar := g.BytesBar(files[i], int(max(metas[i].Size, 0)))
		t0 := time.Now()
		n, err := h.fetchBlob(ctx, rc, files[i], metas[i], bar)
		mu.Lock()
		total += n
		mu.Unlock()
		if err != nil {
			return err
		}
		bar.Set(int(max(metas[i].Size, n)))
		bar.Finish()
		h.log.Debug("downloaded", "repo", rc.repo, "file", files[i], "bytes", n, "seconds", time.Since(t0).Seconds())
		for _, j := range sameBlob[metas[i].ETag] {
			if err := rc.link(commit, files[j], metas[j].ETag); err != nil {
				return err
			}
		}
		return nil
	})
	return total, err
}

// parallel runs fn for 0..n-1 on up to workers goroutines. The first
// error cancels the rest and is returned.
func parallel(ctx context.Context, workers, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
loop:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break loop
		}
	}
	close(jobs)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		// the parent context was cancelled
		return context.Cause(ctx)
	}
	return first
}

// fromCache finds ref in the cache without the network. cause is why
// the network was not used (nil: HF_HUB_OFFLINE).
func (h *Hub) fromCache(ref Ref, o PullOptions, cause error) (*Snapshot, error) {
	rc := newRepoCache(h.cfg.CacheDir, ref.Repo)
	why := "HF_HUB_OFFLINE is set"
	if cause != nil {
		why = "the Hub cannot be reached"
	}
	fail := func(msg string) error {
		return &Error{Kind: ErrOffline, Msg: fmt.Sprintf("%s, and %s: %s", why, ref.String(), msg), Err: cause}
	}
	commit, err := rc.commitFor(ref.rev())
	if err != nil {
		return nil, fail(fmt.Sprintf("revision %s is not in the cache at %s; pull it once with network access (fungtrain pull %s)", ref.rev(), h.cfg.CacheDir, ref.String()))
	}
	s := &Snapshot{Ref: ref, Commit: commit, Dir: rc.snapshot(commit), FromCache: true}
	s.Path = s.Dir
	if ref.File != "" {
		s.Path = rc.pointer(commit, ref.File)
		if !rc.has(commit, ref.File) {
			return nil, fail(fmt.Sprintf("the cached snapshot %s lacks %s", s.Dir, ref.File))
		}
		s.Files = []string{ref.File}
		return s, nil
	}
	if m := missingModelFiles(s.Dir); len(m) > 0 {
		return nil, fail(fmt.Sprintf("the cached snapshot %s lacks %s", s.Dir, strings.Join(m, ", ")))
	}
	s.Files = snapshotFiles(s.Dir)
	for _, p := range o.Include {
		if !matchAnyOf(p, s.Files) {
			return nil, fail(fmt.Sprintf("no file in the cached snapshot %s matches %q", s.Dir, p))
		}
	}
	return s, nil
}

func matchAnyOf(pattern string, names []string) bool {
	for _, n := range names {
		if ok, _ := path.Match(pattern, n); ok {
			return true
		}
	}
	return false
}

// snapshotFiles lists the files in a snapshot folder, relative, with '/'.
func snapshotFiles(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if rel, err := filepath.Rel(dir, p); err == nil {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// explain adds what to do to a refusal by the Hub.
func (h *Hub) explain(err error, ref Ref) error {
	var he *Error
	if !errors.As(err, &he) {
		return err
	}
	// The innermost Hub error carries the status and code.
	for inner := he; errors.As(inner.Err, &inner); {
		he = inner
	}
	page := h.cfg.Endpoint + "/" + ref.Repo
	tokens := h.cfg.Endpoint + "/settings/tokens"
	var msg string
	switch {
	case errors.Is(err, ErrAuth) && !h.cfg.HasToken():
		msg = fmt.Sprintf("%s is gated or private, and no token is set: accept its licence at %s while logged in, then create a read token at %s and set HF_TOKEN to it (or save it in $HF_HOME/token)", ref.Repo, page, tokens)
	case errors.Is(err, ErrAuth):
		msg = fmt.Sprintf("the token from %s gives no access to %s: if the model is gated, accept its licence at %s with the account the token belongs to, and check the token at %s", h.cfg.TokenSource, ref.Repo, page, tokens)
	case errors.Is(err, ErrNotFound) && (he.Code == "RepoNotFound" || he.Status == 401):
		msg = fmt.Sprintf("%s was not found on %s: check the name; if it is private or gated, set HF_TOKEN", ref.Repo, h.cfg.Endpoint)
	case errors.Is(err, ErrNotFound) && he.Code == "RevisionNotFound":
		msg = fmt.Sprintf("%s has no revision %q", ref.Repo, ref.rev())
	default:
		return err
	}
	return h.c.red.err(&Error{Kind: he.Kind, Msg: msg, Err: err})
}

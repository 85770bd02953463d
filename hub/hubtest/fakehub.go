// Package hubtest runs an in-process Hugging Face Hub for tests: the
// endpoints huggingface_hub and fungtrain's hub package use, with a
// separate CDN for large (LFS) files, redirects, ETags, Range requests,
// gated and private repositories, and faults injected on demand (5xx,
// truncated or corrupted bodies, dropped connections, stalls).
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
)

// Hub is the fake Hub. URL is what HF_ENDPOINT should be set to.
type Hub struct {
	URL    string
	CDNURL string
	srv    *httptest.Server
	cdn    *httptest.Server

	mu       sync.Mutex
	repos    map[string]*Repo
	renamed  map[string]string // old repo id -> new
	token    string
	faults   []*Fault
	requests []*Request
}

// Repo is a repository: revisions (branch -> commit) over snapshots.
type Repo struct {
	ID       string
	Gated    bool // files need the token; the repository info is public
	Private  bool // everything needs the token
	branches map[string]string
	commits  map[string]map[string][]byte
}

// Request is one request the fake Hub or its CDN received.
type Request struct {
	Server string // "hub" or "cdn"
	Method string
	Path   string // the URL path, unescaped
	File   string // the repository file, for resolve and CDN requests
	Range  string
	Auth   string // the Authorization header as received
	Status int
}

// New starts a fake Hub and its CDN; they stop when the test ends (or on Close).
func New() *Hub {
	h := &Hub{repos: map[string]*Repo{}, renamed: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serveHub))
	h.cdn = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	h.URL, h.CDNURL = h.srv.URL, h.cdn.URL
	return h
}

// Close stops both servers.
func (h *Hub) Close() {
	h.srv.CloseClientConnections()
	h.cdn.CloseClientConnections()
	h.srv.Close()
	h.cdn.Close()
}

// SetToken sets the token that gated and private repositories accept.
func (h *Hub) SetToken(t string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.token = t
}

// AddRepo creates a repository whose main branch holds files.
func (h *Hub) AddRepo(id string, files map[string][]byte) *Repo {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := &Repo{ID: id, branches: map[string]string{}, commits: map[string]map[string][]byte{}}
	h.repos[id] = r
	r.addRevision("main", files)
	return r
}

// AddRevision adds (or moves) a branch or tag of repository id to a new
// commit holding files; it returns the commit.
func (h *Hub) AddRevision(id, rev string, files map[string][]byte) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.repos[id].addRevision(rev, files)
}

// Commit returns the commit a branch of repository id points at.
func (h *Hub) Commit(id, rev string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.repos[id].branches[rev]
}

// Rename makes requests for old redirect to new, as the Hub does for a
// renamed repository.
func (h *Hub) Rename(old, new string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.renamed[old] = new
}

func (r *Repo) addRevision(rev string, files map[string][]byte) string {
	names := slices.Sorted(maps.Keys(files))
	s := sha1.New()
	fmt.Fprintf(s, "%s\x00%s\x00", r.ID, rev)
	for _, n := range names {
		fmt.Fprintf(s, "%s\x00%d\x00", n, len(files[n]))
		s.Write(files[n])
	}
	commit := hex.EncodeToString(s.Sum(nil))
	copied := map[string][]byte{}
	for n, b := range files {
		copied[n] = append([]byte(nil), b...)
	}
	r.commits[commit] = copied
	r.branches[rev] = commit
	return commit
}

// IsLFS reports whether the fake Hub stores a file in LFS (served by the
// CDN behind a redirect, with a sha256 ETag): weights and anything over
// 10 KiB, as the real Hub does for large files.
func IsLFS(name string, size int) bool {
	return strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".gguf") ||
		strings.HasSuffix(name, ".bin") || size > 10<<10
}

// GitBlobSHA1 is the git object id of content: the ETag of a small file.
func GitBlobSHA1(b []byte) string {
	s := sha1.New()
	fmt.Fprintf(s, "blob %d\x00", len(b))
	s.Write(b)
	return hex.EncodeToString(s.Sum(nil))
}

// SHA256 is the hex sha256 of content: the ETag of an LFS file.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ETag is the ETag a client should use as the blob's name.
func ETag(name string, b []byte) string {
	if IsLFS(name, len(b)) {
		return SHA256(b)
	}
	return GitBlobSHA1(b)
}

// Requests returns the requests received so far.
func (h *Hub) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Request, len(h.requests))
	for i, r := range h.requests {
		out[i] = *r
	}
	return out
}

// ResetRequests forgets the requests received so far (those still in
// progress included).
func (h *Hub) ResetRequests() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests = nil
}

// Count returns how many requests with method asked for file (any file
// when file is "", any method when method is "").
func (h *Hub) Count(method, file string) int {
	n := 0
	for _, r := range h.Requests() {
		if (method == "" || r.Method == method) && (file == "" || r.File == file) {
			n++
		}
	}
	return n
}

// record logs a request as it arrives; its status is set when the
// response headers go out.
func (h *Hub) record(r Request) *Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests = append(h.requests, &r)
	return &r
}

func (h *Hub) setStatus(r *Request, status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Status = status
}

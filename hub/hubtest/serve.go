package hubtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// statusWriter puts the status in the request log as the headers go out,
// before the client can see them.
type statusWriter struct {
	http.ResponseWriter
	h      *Hub
	req    *Request
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.h.setStatus(w.req, code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// splitPath unescapes each segment of the escaped URL path.
func splitPath(r *http.Request) []string {
	segs := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	for i, s := range segs {
		if u, err := url.PathUnescape(s); err == nil {
			segs[i] = u
		}
	}
	return segs
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// authorized says whether the request carries the fake Hub's token.
func (h *Hub) authorized(r *http.Request) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.token != "" && r.Header.Get("Authorization") == "Bearer "+h.token
}

// lookup finds a repository and the commit of a revision, answering the
// errors the Hub answers.
func (h *Hub) lookup(w http.ResponseWriter, r *http.Request, id, rev string, files bool) (*Repo, string, bool) {
	h.mu.Lock()
	repo := h.repos[id]
	h.mu.Unlock()
	auth := h.authorized(r)
	hasAuth := r.Header.Get("Authorization") != ""
	if repo == nil || repo.Private && !auth {
		status := http.StatusUnauthorized // the Hub hides what exists from anonymous callers
		if hasAuth {
			status = http.StatusNotFound
		}
		hubError(w, status, "RepoNotFound", "Repository not found")
		return nil, "", false
	}
	if repo.Gated && files && !auth {
		if hasAuth {
			hubError(w, http.StatusForbidden, "GatedRepo", fmt.Sprintf("Access to model %s is restricted and you are not in the authorized list. Visit %s/%s to ask for access.", id, h.URL, id))
		} else {
			hubError(w, http.StatusUnauthorized, "GatedRepo", fmt.Sprintf("Access to model %s is restricted. You must have access to it and be authenticated to access it. Please log in.", id))
		}
		return nil, "", false
	}
	h.mu.Lock()
	commit, ok := repo.branches[rev]
	if !ok {
		if _, isCommit := repo.commits[rev]; isCommit {
			commit, ok = rev, true
		}
	}
	h.mu.Unlock()
	if !ok {
		hubError(w, http.StatusNotFound, "RevisionNotFound", fmt.Sprintf("Invalid rev id: %s", rev))
		return nil, "", false
	}
	return repo, commit, true
}

func (h *Hub) files(repo *Repo, commit string) map[string][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return repo.commits[commit]
}

// redirectRenamed answers 307 for a renamed repository.
func (h *Hub) redirectRenamed(w http.ResponseWriter, r *http.Request, id string) bool {
	h.mu.Lock()
	to, ok := h.renamed[id]
	h.mu.Unlock()
	if !ok {
		return false
	}
	p := strings.Replace(r.URL.EscapedPath(), "/"+id+"/", "/"+to+"/", 1)
	w.Header().Set("Location", p)
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}

func (h *Hub) serveHub(rw http.ResponseWriter, r *http.Request) {
	segs := splitPath(r)
	isAPI := len(segs) >= 6 && segs[0] == "api" && segs[1] == "models" && (segs[4] == "revision" || segs[4] == "tree")
	isResolve := len(segs) >= 5 && segs[2] == "resolve"
	file := ""
	switch {
	case isAPI:
		file = InfoFile
	case isResolve:
		file = strings.Join(segs[4:], "/")
	}
	w := &statusWriter{ResponseWriter: rw, h: h, req: h.record(Request{Server: "hub", Method: r.Method, Path: strings.Join(segs, "/"),
		File: file, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization")})}
	switch {
	case isAPI:
		id := segs[2] + "/" + segs[3]
		if h.redirectRenamed(w, r, id) {
			return
		}
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if h.applyStatusFault(w, r, InfoFile) {
			return
		}
		repo, commit, ok := h.lookup(w, r, id, segs[5], false)
		if !ok {
			return
		}
		if segs[4] == "tree" {
			h.serveTree(w, repo, commit)
		} else {
			h.serveInfo(w, r, repo, commit)
		}
	case isResolve:
		id := segs[0] + "/" + segs[1]
		if h.redirectRenamed(w, r, id) {
			return
		}
		if h.applyStatusFault(w, r, file) {
			return
		}
		repo, commit, ok := h.lookup(w, r, id, segs[3], true)
		if !ok {
			return
		}
		h.serveResolve(w, r, repo, commit, file)
	default:
		http.NotFound(w, r)
	}
}

func (h *Hub) serveInfo(w http.ResponseWriter, r *http.Request, repo *Repo, commit string) {
	files := h.files(repo, commit)
	blobs := r.URL.Query().Get("blobs") == "true"
	var sib []map[string]any
	for _, n := range sortedNames(files) {
		s := map[string]any{"rfilename": n}
		if blobs {
			b := files[n]
			s["size"] = len(b)
			s["blobId"] = GitBlobSHA1(b)
			if IsLFS(n, len(b)) {
				s["lfs"] = map[string]any{"size": len(b), "sha256": SHA256(b), "pointerSize": 134}
			}
		}
		sib = append(sib, s)
	}
	gated := any(false)
	if repo.Gated {
		gated = "manual"
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id": repo.ID, "modelId": repo.ID, "sha": commit, "private": repo.Private, "gated": gated,
		"disabled": false, "siblings": sib, "tags": []string{}, "downloads": 0, "likes": 0,
	})
}

func (h *Hub) serveTree(w http.ResponseWriter, repo *Repo, commit string) {
	files := h.files(repo, commit)
	var out []map[string]any
	for _, n := range sortedNames(files) {
		b := files[n]
		e := map[string]any{"type": "file", "path": n, "size": len(b), "oid": GitBlobSHA1(b)}
		if IsLFS(n, len(b)) {
			e["lfs"] = map[string]any{"oid": SHA256(b), "size": len(b), "pointerSize": 134}
		}
		out = append(out, e)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func sortedNames(files map[string][]byte) []string {
	names := slices.Sorted(maps.Keys(files))
	return names
}

// serveResolve answers HEAD and GET on {repo}/resolve/{rev}/{file}: small
// files directly (ETag: git blob sha1), LFS files with a 302 to the CDN
// carrying X-Linked-Etag (sha256) and X-Linked-Size.
func (h *Hub) serveResolve(w http.ResponseWriter, r *http.Request, repo *Repo, commit, file string) {
	b, ok := h.files(repo, commit)[file]
	w.Header().Set("X-Repo-Commit", commit)
	if !ok {
		hubError(w, http.StatusNotFound, "EntryNotFound", fmt.Sprintf("%s does not exist on %q", file, commit))
		return
	}
	if IsLFS(file, len(b)) {
		q := url.Values{"repo": {repo.ID}, "file": {file}, "commit": {commit}, "X-Amz-Signature": {"fake"}}
		w.Header().Set("Location", h.CDNURL+"/blobs/"+SHA256(b)+"?"+q.Encode())
		w.Header().Set("X-Linked-Etag", `"`+SHA256(b)+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(b)))
		w.Header().Set("ETag", `W/"`+GitBlobSHA1([]byte("pointer "+file))+`"`) // the pointer's, not the file's
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+GitBlobSHA1(b)+`"`)
	h.serveBytes(w, r, file, b)
}

// serveCDN answers GET on /blobs/<sha256>?repo=...&file=...: the bytes,
// with Range. Like a signed-URL store, it refuses an Authorization header.
func (h *Hub) serveCDN(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := h.record(Request{Server: "cdn", Method: r.Method, Path: r.URL.Path, File: q.Get("file"), Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization")})
	w := &statusWriter{ResponseWriter: rw, h: h, req: req}
	if req.Auth != "" {
		http.Error(w, "Only one auth mechanism allowed; the signed URL already authenticates", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	repo := h.repos[q.Get("repo")]
	var b []byte
	var ok bool
	if repo != nil {
		b, ok = repo.commits[q.Get("commit")][q.Get("file")]
	}
	h.mu.Unlock()
	if !ok || "/blobs/"+SHA256(b) != r.URL.Path {
		http.Error(w, "NoSuchKey", http.StatusNotFound)
		return
	}
	if h.applyStatusFault(w, r, req.File) {
		return
	}
	w.Header().Set("ETag", `"`+SHA256(b)+`"`)
	h.serveBytes(w, r, req.File, b)
}

// serveBytes writes b, or the range asked for, through any body fault.
func (h *Hub) serveBytes(w http.ResponseWriter, r *http.Request, file string, b []byte) {
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Type", "application/octet-stream")
	start := int64(0)
	status := http.StatusOK
	f := h.takeFault(r.Method, file, true)
	if rg := r.Header.Get("Range"); rg != "" && (f == nil || f.Kind != IgnoreRange) {
		s, ok := parseRange(rg)
		if !ok || s >= int64(len(b)) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(b)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, status = s, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, len(b)-1, len(b)))
	}
	body := b[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if f != nil {
		f.serveBody(w, r, body, start)
		return
	}
	w.Write(body)
}

// parseRange reads "bytes=START-" or "bytes=START-END" (END is ignored:
// clients here always ask for the rest).
func parseRange(s string) (int64, bool) {
	s, ok := strings.CutPrefix(s, "bytes=")
	if !ok {
		return 0, false
	}
	s, _, _ = strings.Cut(s, "-")
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}

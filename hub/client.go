package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// client speaks the Hub's HTTP protocol: retries with backoff on 5xx, 429
// and network errors; redirects followed by hand so that the token only
// ever goes to the Hub's own origin, never to a CDN.
type client struct {
	endpoint string
	token    string // sent as a Bearer header to the endpoint's origin only
	red      redactor
	http     *http.Client
	retries  int           // attempts after the first
	backoff  time.Duration // first wait between attempts; doubles each time
	idle     time.Duration // a body that sends nothing for this long is dropped and resumed
	log      *slog.Logger
}

const (
	maxRedirects = 10
	maxBackoff   = 30 * time.Second
	userAgent    = "fungtrain-hub/1"
)

func newClient(cfg Config, o Options) *client {
	hc := o.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 60 * time.Second
		hc = &http.Client{Transport: tr}
	}
	// Redirects are followed by hand (see follow).
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cl := &client{endpoint: cfg.Endpoint, token: cfg.token, red: redactor(cfg.token), http: &c,
		retries: o.Retries, backoff: o.Backoff, idle: o.IdleTimeout, log: o.Logger}
	if cl.retries < 0 {
		cl.retries = 0
	}
	return cl
}

// sameOrigin reports whether two URLs share scheme, host and port.
func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host)
}

// send makes one request, retried on network errors, 5xx and 429. It
// returns the first other response, redirects included, with its body open.
func (c *client) send(ctx context.Context, method, u string, hdr http.Header) (*http.Response, error) {
	var lastErr error
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("bad URL %s", u), Err: err}
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", userAgent)
		req.Header.Set("Accept-Encoding", "identity") // sizes must be the files' sizes
		if c.token != "" && sameOrigin(u, c.endpoint) {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.http.Do(req)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			lastErr = c.red.err(&Error{Kind: ErrNetwork, Msg: fmt.Sprintf("cannot reach the Hub at %s (%s %s); check the network, or set HF_HUB_OFFLINE=1 to use the models already in the cache", c.endpoint, method, u), Err: plainNetErr(err)})
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			lastErr = c.statusError(resp, method, u, attempt+1)
			wait = retryAfter(resp)
			resp.Body.Close()
		default:
			return resp, nil
		}
		if attempt >= c.retries || isUnknownHost(err) {
			return nil, lastErr
		}
		if wait == 0 {
			wait = c.backoff << attempt
		}
		wait = min(wait, maxBackoff)
		c.log.Warn("hub request failed, retrying", "method", method, "url", u, "attempt", attempt+1, "wait", wait, "error", lastErr.Error())
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// follow sends a request and follows redirects. A HEAD stops at a redirect
// to another origin (a CDN): the Hub puts the file's metadata on that
// redirect, as huggingface_hub expects. It returns the last response and
// its URL.
func (c *client) follow(ctx context.Context, method, u string, hdr http.Header) (*http.Response, string, error) {
	for range maxRedirects {
		resp, err := c.send(ctx, method, u, hdr)
		if err != nil {
			return nil, u, err
		}
		loc := resp.Header.Get("Location")
		if resp.StatusCode < 300 || resp.StatusCode >= 400 || loc == "" {
			return resp, u, nil
		}
		target, err := resolveURL(u, loc)
		if err != nil {
			resp.Body.Close()
			return nil, u, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("%s %s: bad redirect %q", method, u, loc), Err: err}
		}
		if method == http.MethodHead && !sameOrigin(u, target) {
			return resp, u, nil
		}
		resp.Body.Close()
		c.log.Debug("hub redirect", "from", u, "to", target, "status", resp.StatusCode)
		u = target
	}
	return nil, u, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("%s %s: more than %d redirects", method, u, maxRedirects)}
}

func resolveURL(base, ref string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", err
	}
	return b.ResolveReference(r).String(), nil
}

// statusError turns a failed response into an Error whose message says
// what to do. It reads (a little of) the body; the caller closes it.
func (c *client) statusError(resp *http.Response, method, u string, attempts int) error {
	code := resp.Header.Get("X-Error-Code")
	detail := resp.Header.Get("X-Error-Message")
	if detail == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		detail = strings.TrimSpace(string(b))
	}
	if detail != "" {
		detail = " (" + c.red.text(detail) + ")"
	}
	st := resp.Status
	var e *Error
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		e = &Error{Kind: ErrServer, Msg: fmt.Sprintf("the Hub answered %s to %s %s%s, %d time(s)", st, method, u, detail, attempts)}
	case resp.StatusCode == http.StatusNotFound:
		what := "the repository, revision or file"
		switch code {
		case "RepoNotFound":
			what = "the repository"
		case "RevisionNotFound":
			what = "the revision"
		case "EntryNotFound":
			what = "the file"
		}
		e = &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("%s %s: %s was not found on %s: %s%s", method, u, what, c.endpoint, st, detail)}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		e = &Error{Kind: ErrAuth, Msg: fmt.Sprintf("%s %s: %s%s", method, u, st, detail)}
		if code == "RepoNotFound" && resp.StatusCode == http.StatusUnauthorized {
			e.Kind = ErrNotFound
		}
	default:
		e = &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("the Hub answered %s to %s %s%s", st, method, u, detail)}
	}
	e.Status, e.Code = resp.StatusCode, code
	return c.red.err(e)
}

// retryAfter reads a Retry-After header given in seconds.
func retryAfter(resp *http.Response) time.Duration {
	s, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || s <= 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// isUnknownHost tells a name that does not resolve, which retrying will
// not fix.
func isUnknownHost(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// withRetries returns a copy of the client that retries n times.
func (c *client) withRetries(n int) *client {
	cp := *c
	cp.retries = n
	return &cp
}

// plainNetErr keeps the network cause (refused, reset, no such host) of a
// url.Error without repeating the URL.
func plainNetErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// repoInfo is what /api/models/{repo}/revision/{rev} answers that we use.
type repoInfo struct {
	ID       string `json:"id"`
	SHA      string `json:"sha"`
	Gated    any    `json:"gated"` // false, "auto" or "manual"
	Private  bool   `json:"private"`
	Siblings []struct {
		Name string `json:"rfilename"`
	} `json:"siblings"`
}

func (r repoInfo) gated() bool {
	switch g := r.Gated.(type) {
	case bool:
		return g
	case string:
		return g != "" && g != "false"
	}
	return false
}

// escapePath escapes each segment of a repository path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// info asks for a repository's commit and file list at a revision.
func (c *client) info(ctx context.Context, repo, rev string) (repoInfo, error) {
	u := fmt.Sprintf("%s/api/models/%s/revision/%s", c.endpoint, repo, url.PathEscape(rev))
	resp, _, err := c.follow(ctx, http.MethodGet, u, nil)
	if err != nil {
		return repoInfo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return repoInfo{}, c.statusError(resp, http.MethodGet, u, 1)
	}
	var ri repoInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&ri); err != nil {
		return repoInfo{}, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("GET %s: the answer is not the Hub's repository JSON; if HF_ENDPOINT is set, check it points at a Hub", u), Err: err}
	}
	if !commitHash.MatchString(ri.SHA) {
		return repoInfo{}, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("GET %s: the answer has no commit sha (got %q); if HF_ENDPOINT is set, check it points at a Hub", u, ri.SHA)}
	}
	return ri, nil
}

// fileMeta is what a HEAD on a file's resolve URL tells.
type fileMeta struct {
	Commit   string // X-Repo-Commit
	ETag     string // X-Linked-Etag or ETag, unquoted: the blob's name
	Size     int64  // X-Linked-Size or Content-Length; -1 when unknown
	Location string // where to GET the bytes (a CDN after a redirect)
}

// fileURL is {endpoint}/{repo}/resolve/{rev}/{file}.
func (c *client) fileURL(repo, rev, file string) string {
	return fmt.Sprintf("%s/%s/resolve/%s/%s", c.endpoint, repo, url.PathEscape(rev), escapePath(file))
}

// head asks for a file's metadata.
func (c *client) head(ctx context.Context, repo, rev, file string) (fileMeta, error) {
	u := c.fileURL(repo, rev, file)
	resp, last, err := c.follow(ctx, http.MethodHead, u, nil)
	if err != nil {
		return fileMeta{}, err
	}
	defer resp.Body.Close()
	redirect := resp.StatusCode >= 300 && resp.StatusCode < 400
	if resp.StatusCode != http.StatusOK && !redirect {
		return fileMeta{}, c.statusError(resp, http.MethodHead, last, 1)
	}
	m := fileMeta{Commit: resp.Header.Get("X-Repo-Commit"), Size: -1, Location: last}
	m.ETag = normalizeETag(resp.Header.Get("X-Linked-Etag"))
	if m.ETag == "" {
		m.ETag = normalizeETag(resp.Header.Get("ETag"))
	}
	size := resp.Header.Get("X-Linked-Size")
	if size == "" && !redirect {
		size = resp.Header.Get("Content-Length")
	}
	if n, err := strconv.ParseInt(size, 10, 64); err == nil && n >= 0 {
		m.Size = n
	}
	if redirect {
		if m.Location, err = resolveURL(last, resp.Header.Get("Location")); err != nil {
			return fileMeta{}, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("HEAD %s: bad redirect", last), Err: err}
		}
	}
	switch {
	case m.Commit == "":
		return fileMeta{}, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("HEAD %s: no X-Repo-Commit header, so this is not a Hub endpoint; if HF_ENDPOINT is set, check it, else check your proxy", last)}
	case !validETag(m.ETag):
		return fileMeta{}, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("HEAD %s: no usable ETag (got %q), so the file cannot be cached safely", last, m.ETag)}
	}
	return m, nil
}

// normalizeETag strips the weak prefix and quotes: W/"abc" → abc.
func normalizeETag(s string) string {
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(s), "W/"), `"`)
}

// validETag accepts ETags that are safe as a file name in blobs/.
func validETag(s string) bool {
	if s == "" || len(s) > 200 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

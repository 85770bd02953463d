package data

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fungtrain/fungtrain/internal/jsonl"
)

// File names inside the work directory.
const (
	TranscriptsFile        = "transcripts.jsonl"
	TranscriptFailuresFile = "transcripts.failures.jsonl"
	TranscriptsReportFile  = "transcripts.report.json"
)

// Transcript is one line of transcripts.jsonl.
type Transcript struct {
	VideoID string `json:"video_id"`
	// Source is "api" or "local".
	Source string `json:"source"`
	URL    string `json:"url,omitempty"`
	// File is the base name of a local transcript.
	File  string `json:"file,omitempty"`
	Title string `json:"title,omitempty"`
	Lang  string `json:"lang,omitempty"`
	Text  string `json:"text"`
}

// TranscriptFailure is one line of transcripts.failures.jsonl and one entry
// of the report.
type TranscriptFailure struct {
	VideoID string `json:"video_id"`
	Input   string `json:"input"`
	Status  int    `json:"status,omitempty"`
	// Permanent failures (not found, private, members-only, no transcript)
	// are skipped on later runs unless --retry-failed; the others are
	// retried.
	Permanent bool   `json:"permanent"`
	Reason    string `json:"reason"`
	Attempts  int    `json:"attempts"`
	// SHA256 is the hash of a local file's bytes: a permanent failure is
	// skipped while the file is unchanged, and read again once it changes.
	SHA256 string `json:"sha256,omitempty"`
}

// TranscriptsReport is written to transcripts.report.json.
type TranscriptsReport struct {
	Inputs         int                 `json:"inputs"`
	AlreadyDone    int                 `json:"already_done"`
	Fetched        int                 `json:"fetched"`
	SkippedFailed  int                 `json:"skipped_permanent_failures"`
	Failed         []TranscriptFailure `json:"failed"`
	TotalInFile    int                 `json:"total_in_file"`
	HTTPAttempts   int64               `json:"http_attempts"`
	HTTPRetries    int64               `json:"http_retries"`
	Interrupted    bool                `json:"interrupted,omitempty"`
	TranscriptFile string              `json:"transcript_file"`
}

// TranscriptOptions are per-run switches of FetchTranscripts.
type TranscriptOptions struct {
	// RetryFailed retries the videos recorded as permanent failures.
	RetryFailed bool
}

// videoRef is one input of the transcripts stage.
type videoRef struct {
	ID    string
	URL   string // for the API
	Input string // as given
	Path  string // for a local file
	Hash  string // SHA-256 of a local file's bytes
}

var (
	youtubeIDRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{11}$`)
	unsafeIDChar = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)
)

// parseVideoRef accepts a YouTube id, a YouTube URL in any common form, or
// another http(s) URL, which gets an id derived from its hash.
func parseVideoRef(s, videoURL string) (videoRef, error) {
	in := strings.TrimSpace(s)
	if youtubeIDRE.MatchString(in) {
		return videoRef{ID: in, URL: strings.ReplaceAll(videoURL, "{id}", in), Input: in}, nil
	}
	u, err := url.Parse(in)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return videoRef{}, fmt.Errorf("%q is neither an 11-character video id nor an http(s) URL", in)
	}
	host := strings.TrimPrefix(strings.ToLower(u.Hostname()), "www.")
	id := ""
	switch {
	case host == "youtu.be":
		id = strings.Trim(u.Path, "/")
	case host == "youtube.com" || strings.HasSuffix(host, ".youtube.com") || host == "youtube-nocookie.com":
		if v := u.Query().Get("v"); v != "" {
			id = v
		} else {
			parts := strings.Split(strings.Trim(u.Path, "/"), "/")
			if len(parts) == 2 && slices.Contains([]string{"shorts", "embed", "live", "v"}, parts[0]) {
				id = parts[1]
			}
		}
	}
	if youtubeIDRE.MatchString(id) {
		return videoRef{ID: id, URL: strings.ReplaceAll(videoURL, "{id}", id), Input: in}, nil
	}
	sum := sha1.Sum([]byte(in))
	return videoRef{ID: "url-" + hex.EncodeToString(sum[:6]), URL: in, Input: in}, nil
}

// readVideoList reads one URL or id per line; blank lines and # comments
// are skipped, and so is a byte-order mark at the start.
func readVideoList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open video list: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		line := sc.Text()
		if first {
			line = strings.TrimPrefix(line, jsonl.BOM)
		}
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// localRefs lists the transcript files of dir in name order. The video id
// is the file name without its extension, or the video_id of a JSON
// transcript that has one: it is settled here, before the skip checks, so
// that a rerun finds the record it wrote.
func localRefs(dir string) ([]videoRef, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read transcript directory: %w", err)
	}
	var refs []videoRef
	seen := map[string]string{}
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || !slices.Contains(transcriptExts, ext) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read transcript: %w", err)
		}
		id := strings.TrimSuffix(e.Name(), filepath.Ext(e.Name()))
		if ext == ".json" {
			// An unreadable file keeps the name's id; reading it again
			// records the failure.
			if lt, err := parseTranscriptFile(path, b); err == nil && lt.VideoID != "" {
				id = lt.VideoID
			}
		}
		id = unsafeIDChar.ReplaceAllString(id, "_")
		if prev, ok := seen[id]; ok {
			return nil, fmt.Errorf("local transcripts %s and %s both give video id %q: keep one", prev, e.Name(), id)
		}
		seen[id] = e.Name()
		sum := sha256.Sum256(b)
		refs = append(refs, videoRef{ID: id, Input: e.Name(), Path: path, Hash: hex.EncodeToString(sum[:])})
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("no .txt, .srt, .vtt or .json transcripts in %s", dir)
	}
	return refs, nil
}

// FetchTranscripts runs the transcripts stage: local files from
// transcripts.local_dir, then videos from transcripts.videos,
// transcripts.videos_file and the YouTube channels, fetched through the
// transcript API. Records are appended to transcripts.jsonl in input order,
// one flushed line each; ids already there are skipped.
func FetchTranscripts(ctx context.Context, cfg PipelineConfig, env Env, opt TranscriptOptions) (*TranscriptsReport, error) {
	log := env.logger().With("stage", "transcripts")
	tc := cfg.Transcripts
	var refs []videoRef
	if tc.LocalDir != "" {
		lr, err := localRefs(tc.LocalDir)
		if err != nil {
			return nil, err
		}
		refs = append(refs, lr...)
	}
	inputs := slices.Clone(tc.Videos)
	if tc.VideosFile != "" {
		more, err := readVideoList(tc.VideosFile)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, more...)
	}
	for _, in := range inputs {
		r, err := parseVideoRef(in, tc.API.VideoURL)
		if err != nil {
			return nil, fmt.Errorf("video input: %w", err)
		}
		refs = append(refs, r)
	}

	red := newRedactor()
	var api *transcriptAPI
	needAPI := len(inputs) > 0 || len(cfg.YouTube.Channels) > 0
	if needAPI {
		key, err := env.apiKey(tc.API.APIKeyEnv, "transcripts.api.api_key_env", false)
		if err != nil {
			return nil, err
		}
		if key == "" {
			log.Warn("no transcript API key: the environment variable is not set", "env", tc.API.APIKeyEnv)
		}
		red.add(key)
		api = &transcriptAPI{cfg: tc.API, http: tc.HTTP, key: key, red: red, log: log,
			doer: newRetryDoer("transcripts", tc.HTTP, env, red), sleep: env.sleep}
		if api.sleep == nil {
			api.sleep = sleepCtx
		}
	}
	if len(cfg.YouTube.Channels) > 0 {
		key, err := env.apiKey(cfg.YouTube.APIKeyEnv, "youtube.api_key_env", true)
		if err != nil {
			return nil, err
		}
		red.add(key)
		yt := &youtubeLister{cfg: cfg.YouTube, key: key, doer: newRetryDoer("youtube", cfg.YouTube.HTTP, env, red), red: red}
		for _, ch := range cfg.YouTube.Channels {
			ids, err := yt.channelVideos(ctx, ch)
			if err != nil {
				return nil, err
			}
			log.Info("listed channel", "channel", ch, "videos", len(ids))
			for _, id := range ids {
				refs = append(refs, videoRef{ID: id, URL: strings.ReplaceAll(tc.API.VideoURL, "{id}", id), Input: id})
			}
		}
	}
	if len(refs) == 0 {
		return nil, errors.New("no transcript inputs: give video URLs or ids, --videos-file, --channel or --dir (data.transcripts.local_dir)")
	}
	// Drop repeated ids, keeping the first.
	seen := map[string]bool{}
	uniq := refs[:0]
	for _, r := range refs {
		if seen[r.ID] {
			log.Debug("skipping a repeated input", "video_id", r.ID, "input", r.Input)
			continue
		}
		seen[r.ID] = true
		uniq = append(uniq, r)
	}
	refs = uniq

	outPath := filepath.Join(cfg.WorkDir, TranscriptsFile)
	done := map[string]bool{}
	j, err := openJournal(outPath, log, func(line []byte) error {
		var t Transcript
		if err := decodeStrictJSON(line, &t); err != nil {
			return err
		}
		if t.VideoID == "" {
			return errors.New("record without video_id")
		}
		done[t.VideoID] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	failPath := filepath.Join(cfg.WorkDir, TranscriptFailuresFile)
	prevFail := map[string]TranscriptFailure{}
	fj, err := openJournal(failPath, log, func(line []byte) error {
		var f TranscriptFailure
		if err := decodeStrictJSON(line, &f); err != nil {
			return err
		}
		prevFail[f.VideoID] = f
		return nil
	})
	if err != nil {
		j.close()
		return nil, err
	}

	rep := &TranscriptsReport{Inputs: len(refs), TranscriptFile: outPath, Failed: []TranscriptFailure{}}
	var todo []videoRef
	for _, r := range refs {
		switch {
		case done[r.ID]:
			rep.AlreadyDone++
		case skipFailure(prevFail[r.ID], r, opt.RetryFailed):
			rep.SkippedFailed++
		default:
			todo = append(todo, r)
		}
	}
	log.Info("starting", "inputs", len(refs), "already_done", rep.AlreadyDone,
		"skipped_permanent_failures", rep.SkippedFailed, "to_fetch", len(todo))

	bar := env.bar("transcripts", len(todo))
	minChars := tc.MinChars
	fetchOne := func(ctx context.Context, r videoRef) (Transcript, *TranscriptFailure, error) {
		if r.Path != "" {
			return readLocalTranscript(r, minChars)
		}
		t, f, err := api.fetch(ctx, r)
		if err == nil && f == nil && len([]rune(t.Text)) < minChars {
			f = &TranscriptFailure{VideoID: r.ID, Input: r.Input, Permanent: true, Attempts: 1,
				Reason: fmt.Sprintf("transcript too short: %d characters, transcripts.min_chars is %d", len([]rune(t.Text)), minChars)}
		}
		return t, f, err
	}
	runErr := runPool(ctx, tc.Concurrency, len(todo),
		func(ctx context.Context, i int) (fetchResult, error) {
			t, f, err := fetchOne(ctx, todo[i])
			return fetchResult{t: t, f: f}, err
		},
		func(i int, res fetchResult) error {
			defer bar.Add(1)
			if res.f != nil {
				res.f.Reason = red.str(res.f.Reason)
				rep.Failed = append(rep.Failed, *res.f)
				log.Warn("transcript failed", "video_id", res.f.VideoID, "permanent", res.f.Permanent,
					"status", res.f.Status, "reason", res.f.Reason)
				return fj.append(res.f)
			}
			rep.Fetched++
			done[res.t.VideoID] = true
			return j.append(res.t)
		})
	bar.Finish()
	cerr := errors.Join(j.close(), fj.close())
	if api != nil {
		rep.HTTPAttempts, rep.HTTPRetries = api.doer.attempts.Load(), api.doer.retries.Load()
	}
	rep.TotalInFile = len(done)
	if runErr != nil {
		if ctx.Err() != nil {
			rep.Interrupted = true
			log.Warn("interrupted; rerun to continue", "fetched", rep.Fetched)
		}
		return rep, errors.Join(red.err(runErr), cerr)
	}
	if cerr != nil {
		return rep, cerr
	}
	if err := writeJSONAtomic(filepath.Join(cfg.WorkDir, TranscriptsReportFile), rep); err != nil {
		return rep, err
	}
	log.Info("done", "fetched", rep.Fetched, "failed", len(rep.Failed), "total_in_file", rep.TotalInFile,
		"http_attempts", rep.HTTPAttempts, "http_retries", rep.HTTPRetries)
	return rep, nil
}

// skipFailure says whether input r, which failed before with f, is skipped:
// a permanent failure is, unless retryFailed, and for a local file only
// while the file is unchanged.
func skipFailure(f TranscriptFailure, r videoRef, retryFailed bool) bool {
	if !f.Permanent || retryFailed {
		return false
	}
	return r.Path == "" || f.SHA256 == r.Hash
}

type fetchResult struct {
	t Transcript
	f *TranscriptFailure
}

// readLocalTranscript reads the local transcript of r. A file that cannot
// be parsed or is too short is a permanent failure, which keeps the hash
// of the file it was found in.
func readLocalTranscript(r videoRef, minChars int) (Transcript, *TranscriptFailure, error) {
	b, err := os.ReadFile(r.Path)
	if err != nil {
		return Transcript{}, nil, fmt.Errorf("read transcript: %w", err)
	}
	sum := sha256.Sum256(b)
	fail := func(format string, args ...any) (Transcript, *TranscriptFailure, error) {
		return Transcript{}, &TranscriptFailure{VideoID: r.ID, Input: r.Input, Permanent: true, Attempts: 1,
			Reason: fmt.Sprintf(format, args...), SHA256: hex.EncodeToString(sum[:])}, nil
	}
	lt, err := parseTranscriptFile(r.Path, b)
	if err != nil {
		return fail("parse %s: %v", r.Path, err)
	}
	if n := len([]rune(lt.Text)); n < minChars {
		return fail("%s: transcript too short: %d characters, transcripts.min_chars is %d", r.Path, n, minChars)
	}
	return Transcript{VideoID: r.ID, Source: "local", File: filepath.Base(r.Path), Title: lt.Title, Lang: lt.Lang, Text: lt.Text}, nil, nil
}

// transcriptAPI fetches transcripts over HTTP.
type transcriptAPI struct {
	cfg   TranscriptAPIConfig
	http  HTTPConfig
	key   string
	doer  *retryDoer
	red   *redactor
	log   *slog.Logger
	sleep func(context.Context, time.Duration) error
}

// apiResponse is the part of a transcript API reply that is read.
type apiResponse struct {
	text   string
	lang   string
	jobID  string
	status string
}

// fetch returns the transcript, or a failure to record, or an error that
// stops the stage (cancelled context, rejected API key, quota exhausted).
func (a *transcriptAPI) fetch(ctx context.Context, r videoRef) (Transcript, *TranscriptFailure, error) {
	fail := func(status int, permanent bool, attempts int, format string, args ...any) (Transcript, *TranscriptFailure, error) {
		return Transcript{}, &TranscriptFailure{VideoID: r.ID, Input: r.Input, Status: status, Permanent: permanent,
			Attempts: attempts, Reason: a.red.str(fmt.Sprintf(format, args...))}, nil
	}
	q := url.Values{}
	for k, v := range a.cfg.Params {
		q.Set(k, v)
	}
	q.Set(a.cfg.URLParam, r.URL)
	endpoint := strings.TrimRight(a.cfg.BaseURL, "/") + a.cfg.Path
	attempts := 0
	for try := 0; ; try++ {
		status, body, n, err := a.get(ctx, endpoint, q)
		attempts += n
		if err != nil {
			if ctx.Err() != nil {
				return Transcript{}, nil, ctx.Err()
			}
			return fail(0, false, attempts, "%v", err)
		}
		switch {
		case status == http.StatusOK || status == http.StatusCreated || status == http.StatusAccepted:
			res, perr := a.parse(body)
			if perr == nil && res.jobID != "" && res.text == "" {
				res, status, perr = a.poll(ctx, endpoint+"/"+url.PathEscape(res.jobID), &attempts)
				if ctx.Err() != nil {
					return Transcript{}, nil, ctx.Err()
				}
				if perr == nil && res.status == "failed" {
					return fail(status, true, attempts, "transcript job failed")
				}
			}
			if perr != nil {
				if try < a.http.MaxRetries {
					a.log.Warn("unusable transcript response, retrying", "video_id", r.ID, "error", a.red.str(perr.Error()))
					if err := a.sleep(ctx, a.doer.backoff(try)); err != nil {
						return Transcript{}, nil, err
					}
					continue
				}
				return fail(status, false, attempts, "unusable response after %d tries: %v", try+1, perr)
			}
			return Transcript{VideoID: r.ID, Source: "api", URL: r.URL, Lang: res.lang, Text: res.text}, nil, nil
		case status == http.StatusUnauthorized:
			return Transcript{}, nil, fmt.Errorf("transcript API rejected the API key (401, key from %s): %s", a.cfg.APIKeyEnv, a.red.str(errorMessage(body)))
		case status == http.StatusPaymentRequired:
			return Transcript{}, nil, fmt.Errorf("transcript API quota or plan exhausted (402): %s", a.red.str(errorMessage(body)))
		case retryableStatus(status):
			return fail(status, false, attempts, "HTTP %d after %d attempts: %s", status, attempts, errorMessage(body))
		default:
			// 206 (no transcript), 400, 403 (private, members-only), 404, 410,
			// 451 and the rest: this video will not work.
			return fail(status, true, attempts, "HTTP %d: %s", status, describePermanent(status, body))
		}
	}
}

func (a *transcriptAPI) get(ctx context.Context, endpoint string, q url.Values) (status int, body []byte, attempts int, err error) {
	q = cloneValues(q)
	if a.cfg.APIKeyParam != "" && a.key != "" {
		q.Set(a.cfg.APIKeyParam, a.key)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return 0, nil, 0, a.red.err(fmt.Errorf("build request: %w", err))
	}
	if a.cfg.APIKeyHeader != "" && a.key != "" && a.cfg.APIKeyParam == "" {
		req.Header.Set(a.cfg.APIKeyHeader, a.key)
	}
	req.Header.Set("Accept", "application/json")
	resp, attempts, err := a.doer.do(req)
	if err != nil {
		return 0, nil, attempts, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, attempts, err
	}
	return resp.StatusCode, b, attempts, nil
}

func cloneValues(q url.Values) url.Values {
	c := url.Values{}
	for k, v := range q {
		c[k] = slices.Clone(v)
	}
	return c
}

// poll waits for an asynchronous transcript job.
func (a *transcriptAPI) poll(ctx context.Context, jobURL string, attempts *int) (apiResponse, int, error) {
	for range max(a.cfg.MaxPolls, 1) {
		if err := a.sleep(ctx, a.cfg.PollInterval); err != nil {
			return apiResponse{}, 0, err
		}
		status, body, n, err := a.get(ctx, jobURL, url.Values{})
		*attempts += n
		if err != nil {
			return apiResponse{}, 0, err
		}
		if status != http.StatusOK {
			return apiResponse{}, status, fmt.Errorf("job status HTTP %d: %s", status, errorMessage(body))
		}
		res, err := a.parse(body)
		if err != nil {
			return res, status, err
		}
		switch res.status {
		case "completed", "":
			if res.text != "" || res.status == "completed" {
				return res, status, nil
			}
		case "failed", "error":
			res.status = "failed"
			return res, status, nil
		}
	}
	return apiResponse{}, 0, fmt.Errorf("transcript job not finished after %d polls", a.cfg.MaxPolls)
}

// parse reads a transcript reply: JSON with the text under text_field (a
// string or segments), or plain text.
func (a *transcriptAPI) parse(body []byte) (apiResponse, error) {
	trimmed := strings.TrimSpace(string(body))
	if trimmed == "" {
		return apiResponse{}, errors.New("empty body")
	}
	if trimmed[0] == '<' {
		return apiResponse{}, errors.New("got HTML, not a transcript")
	}
	if trimmed[0] != '{' && trimmed[0] != '[' && trimmed[0] != '"' {
		return apiResponse{text: trimmed}, nil
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err == nil {
		res := apiResponse{jobID: firstString(m, "jobId", "job_id"), status: firstString(m, "status")}
		if a.cfg.LangField != "" {
			res.lang = firstString(m, a.cfg.LangField)
		}
		if res.jobID != "" && m[a.cfg.TextField] == nil {
			return res, nil
		}
		if res.status != "" && res.status != "completed" && m[a.cfg.TextField] == nil {
			return res, nil
		}
	}
	lt, err := parseTranscriptJSON(body, a.cfg.TextField)
	if err != nil {
		return apiResponse{}, err
	}
	return apiResponse{text: lt.Text, lang: lt.Lang, status: "completed"}, nil
}

// errorMessage pulls a readable message out of an error body.
func errorMessage(body []byte) string {
	var m map[string]any
	msg := ""
	if json.Unmarshal(body, &m) == nil {
		var parts []string
		for _, k := range []string{"error", "message", "details"} {
			switch v := m[k].(type) {
			case string:
				parts = append(parts, v)
			case map[string]any:
				if s := firstString(v, "message"); s != "" {
					parts = append(parts, s)
				}
			}
		}
		msg = strings.Join(parts, ": ")
	}
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	if r := []rune(msg); len(r) > 300 {
		msg = string(r[:300]) + "..."
	}
	if msg == "" {
		msg = "(empty body)"
	}
	return msg
}

func describePermanent(status int, body []byte) string {
	msg := errorMessage(body)
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "members"):
		return "members-only video: " + msg
	case strings.Contains(low, "private"):
		return "private video: " + msg
	case status == http.StatusNotFound || status == http.StatusGone:
		return "video or transcript not found: " + msg
	case status == http.StatusPartialContent:
		return "no transcript available: " + msg
	case status == http.StatusForbidden:
		return "access denied (private or members-only?): " + msg
	}
	return msg
}

// ErrNoTranscripts is returned by the later stages when transcripts.jsonl
// is missing.
var ErrNoTranscripts = errors.New("no transcripts: run `fungtrain data transcripts` first")

// loadTranscripts reads transcripts.jsonl, keeping the first record of a
// repeated id.
func loadTranscripts(workDir string, log *slog.Logger) ([]Transcript, error) {
	path := filepath.Join(workDir, TranscriptsFile)
	ts, err := readJSONL[Transcript](path, log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrNoTranscripts)
	}
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := ts[:0]
	for _, t := range ts {
		if seen[t.VideoID] {
			log.Warn("repeated video id in transcripts; keeping the first", "video_id", t.VideoID)
			continue
		}
		seen[t.VideoID] = true
		out = append(out, t)
	}
	return out, nil
}

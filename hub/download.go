package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fungtrain/fungtrain/internal/progress"
)

// partFile is blobs/<etag>.incomplete: the bytes so far, and their running
// checksum when the ETag is one (sha256 for LFS files, the git blob sha1
// for the others).
type partFile struct {
	f    *os.File
	path string
	size int64 // expected size, -1 when unknown
	etag string
	algo string // "sha256", "git-sha1" or "" (no check possible)
	sum  hash.Hash
	have int64 // bytes in the file
	got  int64 // bytes written by this process (what it transferred)
}

func checksumAlgo(etag string, size int64) string {
	if _, err := hex.DecodeString(etag); err != nil {
		return ""
	}
	switch {
	case len(etag) == 64:
		return "sha256"
	case len(etag) == 40 && size >= 0:
		return "git-sha1"
	}
	return ""
}

// openPart opens (or creates) the incomplete file and hashes what an
// earlier, interrupted download left in it, so the download resumes.
func openPart(p string, m fileMeta) (*partFile, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	pf := &partFile{f: f, path: p, size: m.Size, etag: m.ETag, algo: checksumAlgo(m.ETag, m.Size)}
	pf.newHash()
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	n, err := io.CopyN(pf.sum, f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	pf.have = n
	if pf.size >= 0 && pf.have > pf.size {
		if err := pf.reset(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return pf, nil
}

func (p *partFile) newHash() {
	switch p.algo {
	case "sha256":
		p.sum = sha256.New()
	case "git-sha1":
		p.sum = sha1.New()
		fmt.Fprintf(p.sum, "blob %d\x00", p.size)
	default:
		p.sum = discardHash{}
	}
}

// reset empties the file, to download from the first byte again.
func (p *partFile) reset() error {
	if err := p.f.Truncate(0); err != nil {
		return fmt.Errorf("truncate %s: %w", p.path, err)
	}
	p.have = 0
	p.newHash()
	return nil
}

// Write appends at the end of what the file holds.
func (p *partFile) Write(b []byte) (int, error) {
	n, err := p.f.WriteAt(b, p.have)
	p.sum.Write(b[:n])
	p.have += int64(n)
	p.got += int64(n)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return n, &Error{Kind: ErrDiskFull, Msg: fmt.Sprintf("disk full while writing %s (%s of %s written); free some space and run again: the download resumes where it stopped", p.path, humanBytes(p.have), humanBytes(p.size)), Err: err}
		}
		return n, fmt.Errorf("write %s: %w", p.path, err)
	}
	return n, nil
}

// verify compares the bytes with the ETag (and the size).
func (p *partFile) verify() error {
	if p.size >= 0 && p.have != p.size {
		return &Error{Kind: ErrChecksum, Msg: fmt.Sprintf("got %d bytes, the Hub says the file has %d", p.have, p.size)}
	}
	if p.algo == "" {
		return nil
	}
	got := hex.EncodeToString(p.sum.Sum(nil))
	if got != strings.ToLower(p.etag) {
		return &Error{Kind: ErrChecksum, Msg: fmt.Sprintf("the %s of the downloaded bytes is %s, the Hub's ETag says %s", p.algo, got, p.etag)}
	}
	return nil
}

// commit makes the blob complete: synced, readable, renamed into place.
func (p *partFile) commit(blob string) error {
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p.path, err)
	}
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", p.path, err)
	}
	if err := os.Chmod(p.path, 0o644); err != nil {
		return err
	}
	if err := os.Rename(p.path, blob); err != nil {
		return fmt.Errorf("move %s into place: %w", blob, err)
	}
	return nil
}

type discardHash struct{}

func (discardHash) Write(b []byte) (int, error) { return len(b), nil }
func (discardHash) Sum(b []byte) []byte         { return b }
func (discardHash) Reset()                      {}
func (discardHash) Size() int                   { return 0 }
func (discardHash) BlockSize() int              { return 1 }

// fetchBlob brings blobs/<etag> into the cache, resuming an .incomplete
// file left by an earlier run. A checksum mismatch discards the bytes and
// downloads once more from zero before it fails. It returns the number
// of bytes transferred.
func (h *Hub) fetchBlob(ctx context.Context, rc repoCache, file string, m fileMeta, bar *progress.Bar) (int64, error) {
	blob := rc.blob(m.ETag)
	unlock, err := lockFile(ctx, rc.lockPath(m.ETag), func() {
		h.log.Info("waiting for another download of the same file (another process?)", "repo", rc.repo, "file", file, "lock", rc.lockPath(m.ETag))
	})
	if err != nil {
		return 0, err
	}
	defer unlock()
	if _, err := os.Stat(blob); err == nil {
		return 0, nil // another process finished it meanwhile
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return 0, fmt.Errorf("create %s: %w", filepath.Dir(blob), err)
	}
	part, err := openPart(blob+".incomplete", m)
	if err != nil {
		return 0, err
	}
	defer part.f.Close()
	if part.have > 0 {
		h.log.Info("resuming download", "repo", rc.repo, "file", file, "have", part.have, "size", m.Size)
	}
	for round := 0; ; round++ {
		bar.Set(int(part.have))
		if err := h.fill(ctx, part, m, file, bar); err != nil {
			return part.got, err
		}
		err = part.verify()
		if err == nil {
			break
		}
		if round > 0 || !errors.Is(err, ErrChecksum) {
			part.f.Close()
			os.Remove(part.path)
			return part.got, &Error{Kind: ErrChecksum, Msg: fmt.Sprintf("%s of %s: %s; the download was discarded, run the command again", file, rc.repo, err.Error())}
		}
		h.log.Warn("checksum mismatch, downloading again from the start", "repo", rc.repo, "file", file, "error", err.Error())
		if err := part.reset(); err != nil {
			return part.got, err
		}
	}
	return part.got, part.commit(blob)
}

// fill downloads until the part file holds the whole file, resuming with
// Range after a cut connection, a stalled body or a short one. It gives up
// after h.c.retries attempts in a row that bring no byte.
func (h *Hub) fill(ctx context.Context, part *partFile, m fileMeta, file string, bar *progress.Bar) error {
	fruitless := 0
	for {
		if m.Size >= 0 && part.have == m.Size {
			return nil
		}
		before := part.got
		done, err := h.getOnce(ctx, part, m, bar)
		if err == nil && done {
			return nil
		}
		if err != nil && !retryableBody(err) {
			return err
		}
		if part.got > before {
			fruitless = 0
		} else {
			fruitless++
		}
		if fruitless > h.c.retries {
			if err == nil {
				err = fmt.Errorf("the connection closed at byte %d of %d", part.have, m.Size)
			}
			return &Error{Kind: ErrTruncated, Msg: fmt.Sprintf("download of %s cut short %d times in a row (%s of %s kept in %s; run again to resume)", file, fruitless, humanBytes(part.have), humanBytes(m.Size), part.path), Err: err}
		}
		wait := min(h.c.backoff<<max(fruitless-1, 0), maxBackoff)
		h.log.Warn("download interrupted, resuming", "file", file, "at", part.have, "size", m.Size, "wait", wait, "error", errText(err))
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func errText(err error) string {
	if err == nil {
		return "connection closed early"
	}
	return err.Error()
}

// retryableBody tells the failures worth resuming from: the body ended or
// stalled, not the disk, the context or the Hub's refusal.
func retryableBody(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	for _, k := range []error{ErrDiskFull, ErrAuth, ErrNotFound, ErrProtocol, ErrServer, ErrNetwork} {
		if errors.Is(err, k) {
			return false
		}
	}
	var pe *os.PathError
	return !errors.As(err, &pe)
}

// getOnce makes one GET from the part file's length on. done is true when
// the body ended where the file ends.
func (h *Hub) getOnce(ctx context.Context, part *partFile, m fileMeta, bar *progress.Bar) (done bool, err error) {
	hdr := http.Header{}
	if part.have > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", part.have))
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, last, err := h.c.follow(rctx, http.MethodGet, m.Location, hdr)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start := rangeStart(resp.Header.Get("Content-Range")); start != part.have {
			return false, &Error{Kind: ErrProtocol, Msg: fmt.Sprintf("GET %s: asked for bytes from %d, got %q", last, part.have, resp.Header.Get("Content-Range"))}
		}
	case http.StatusOK:
		if part.have > 0 { // the server ignored Range: start over
			if err := part.reset(); err != nil {
				return false, err
			}
			bar.Set(0)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// What we hold is longer than the file: start over.
		return false, part.reset()
	default:
		return false, h.c.statusError(resp, http.MethodGet, last, 1)
	}
	var stalled atomic.Bool
	idle := time.AfterFunc(h.c.idle, func() { stalled.Store(true); cancel() })
	defer idle.Stop()
	buf := make([]byte, 1<<20)
	for {
		n, rerr := resp.Body.Read(buf)
		idle.Reset(h.c.idle)
		if n > 0 {
			if _, werr := part.Write(buf[:n]); werr != nil {
				return false, werr
			}
			bar.Add(n)
		}
		if rerr == io.EOF {
			return m.Size < 0 || part.have >= m.Size, nil
		}
		if rerr != nil {
			if stalled.Load() {
				return false, fmt.Errorf("no data for %s", h.c.idle)
			}
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, rerr
		}
	}
}

// rangeStart reads the first byte of "bytes START-END/TOTAL".
func rangeStart(cr string) int64 {
	s, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return -1
	}
	s, _, _ = strings.Cut(s, "-")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// humanBytes formats a byte count for messages.
func humanBytes(n int64) string {
	switch {
	case n < 0:
		return "?"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

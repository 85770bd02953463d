// Package hub fetches models from the Hugging Face Hub by name
// (ORG/NAME[@REV]) into the cache that huggingface_hub, transformers,
// mlx-lm and Unsloth share, and finds them there again.
//
// The cache layout is huggingface_hub's: under $HF_HUB_CACHE (default
// $HF_HOME/hub, default ~/.cache/huggingface/hub) each repository has a
// folder models--ORG--NAME with blobs/<etag> (the files' bytes),
// snapshots/<commit>/<file> (relative symlinks to the blobs) and
// refs/<revision> (the commit a branch or tag pointed at). A file being
// downloaded is blobs/<etag>.incomplete; it only becomes blobs/<etag> once
// its size and checksum are right, so nothing half-written is ever used.
//
// The protocol is the Hub's: the file list and commit from
// /api/models/{repo}/revision/{rev}, a HEAD on {endpoint}/{repo}/resolve/
// {commit}/{file} for the ETag, size and download location (often a
// redirect to a CDN), then a GET with Range to resume. HF_ENDPOINT,
// HF_TOKEN (or the token file) and HF_HUB_OFFLINE are honoured.
//
// This package is the only one in fungtrain that speaks HTTP for models.
package hub

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
)

// DefaultRevision is the branch a reference without @REV points at.
const DefaultRevision = "main"

// Ref names a model repository on the Hub at a revision, and optionally
// one file in it (ORG/NAME/path/to/file.gguf).
type Ref struct {
	Repo     string // ORG/NAME
	Revision string // branch, tag or commit; DefaultRevision when empty
	File     string // a single file in the repository, or "" for the model
}

// String formats the reference as it is written: ORG/NAME[/FILE][@REV].
func (r Ref) String() string {
	s := r.Repo
	if r.File != "" {
		s += "/" + r.File
	}
	if r.Revision != "" && r.Revision != DefaultRevision {
		s += "@" + r.Revision
	}
	return s
}

// rev is the revision to ask for.
func (r Ref) rev() string {
	if r.Revision == "" {
		return DefaultRevision
	}
	return r.Revision
}

// repoPart is one half of a repo id, as the Hub allows it: letters,
// digits, '-', '_' and '.', not starting or ending with '-' or '.'.
var repoPart = regexp.MustCompile(`^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$`)

// commitHash matches a full commit id, which names an immutable snapshot.
var commitHash = regexp.MustCompile(`^[0-9a-f]{40}$`)

// ParseRef parses ORG/NAME[/FILE][@REV]. It checks the syntax only; it
// does not look at the disk or the network.
func ParseRef(s string) (Ref, error) {
	spec, rev, hasRev := strings.Cut(s, "@")
	if hasRev {
		if err := checkRevision(rev); err != nil {
			return Ref{}, fmt.Errorf("model %q: %w", s, err)
		}
	}
	parts := strings.Split(spec, "/")
	if len(parts) < 2 {
		return Ref{}, fmt.Errorf("model %q: not a repository id: want ORG/NAME[@REVISION]", s)
	}
	for _, p := range parts[:2] {
		if !repoPart.MatchString(p) || strings.Contains(p, "--") || strings.Contains(p, "..") {
			return Ref{}, fmt.Errorf("model %q: %q is not a valid repository owner or name (letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters)", s, p)
		}
	}
	r := Ref{Repo: parts[0] + "/" + parts[1], Revision: rev}
	if len(parts) > 2 {
		r.File = strings.Join(parts[2:], "/")
		if err := checkRepoPath(r.File); err != nil {
			return Ref{}, fmt.Errorf("model %q: %w", s, err)
		}
	}
	return r, nil
}

// checkRevision refuses revisions that could escape the refs folder.
func checkRevision(rev string) error {
	if rev == "" {
		return fmt.Errorf("empty revision after '@'")
	}
	if strings.ContainsAny(rev, " \t\n\\") || strings.HasPrefix(rev, "/") || strings.HasSuffix(rev, "/") {
		return fmt.Errorf("revision %q is not a branch, tag or commit", rev)
	}
	for _, p := range strings.Split(rev, "/") {
		if p == "" || p == "." || p == ".." {
			return fmt.Errorf("revision %q is not a branch, tag or commit", rev)
		}
	}
	return nil
}

// checkRepoPath refuses file names that are absolute or climb out of the
// snapshot folder: a file list comes from a server and must not write
// outside the cache.
func checkRepoPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || path.Clean(p) != p {
		return fmt.Errorf("file name %q is not a clean relative path", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." {
			return fmt.Errorf("file name %q leaves the repository", p)
		}
	}
	return nil
}

// IsLocal reports whether s names a local path rather than a repository:
// a string that exists on disk is a path, and so is anything written like
// one (absolute, ./, ../, ~) or without a '/' (a repository id is ORG/NAME).
func IsLocal(s string) bool {
	if _, err := os.Stat(s); err == nil {
		return true
	}
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../") ||
		strings.HasPrefix(s, "~") || s == "." || s == ".." {
		return true
	}
	return !strings.Contains(s, "/")
}

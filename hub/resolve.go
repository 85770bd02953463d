package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Model is a --model value made local.
type Model struct {
	Path     string // what to load: a directory or a file
	Repo     string // ORG/NAME, when the model came from the Hub
	Revision string // the revision asked for
	Commit   string // the commit it resolved to
}

// FromHub reports whether the model was named by repository.
func (m Model) FromHub() bool { return m.Repo != "" }

// Resolve turns a model argument into something to load. A path that
// exists, or is written as a path, is returned as it is. ORG/NAME[@REV]
// (or ORG/NAME/FILE[@REV] for one file, such as a .gguf) is found in the
// cache or pulled into it (only from the cache when offline).
func (h *Hub) Resolve(ctx context.Context, s string, o PullOptions) (Model, error) {
	if IsLocal(s) {
		return Model{Path: s}, nil
	}
	ref, err := ParseRef(s)
	if err != nil {
		return Model{}, fmt.Errorf("%w (and there is no such local path)", err)
	}
	snap, err := h.Pull(ctx, ref, o)
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrAuth) {
			return Model{}, fmt.Errorf("model %s: no such local path, and the Hub refused it: %w", s, err)
		}
		return Model{}, fmt.Errorf("model %s: %w", s, err)
	}
	if ref.File == "" {
		if m := missingModelFiles(snap.Dir); len(m) > 0 {
			return Model{}, &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("%s@%s is not a model fungtrain can load: %s lacks %s (it holds %s); for a GGUF repository, name the file: %s/FILE.gguf",
				ref.Repo, ref.rev(), snap.Dir, strings.Join(m, ", "), listSome(snap.Files), ref.Repo)}
		}
	}
	return Model{Path: snap.Path, Repo: ref.Repo, Revision: ref.rev(), Commit: snap.Commit}, nil
}

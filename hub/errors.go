package hub

import (
	"errors"
	"strings"
)

// Kinds of failure. An error from this package matches one of them with
// errors.Is, and its message says what to do.
var (
	ErrNetwork   = errors.New("the Hub cannot be reached")
	ErrNotFound  = errors.New("not found on the Hub")
	ErrAuth      = errors.New("access denied by the Hub")
	ErrServer    = errors.New("the Hub failed")
	ErrProtocol  = errors.New("not a Hub endpoint")
	ErrTruncated = errors.New("download cut short")
	ErrChecksum  = errors.New("checksum mismatch")
	ErrDiskFull  = errors.New("disk full")
	ErrOffline   = errors.New("not in the cache (offline)")
)

// Error is a failure with a message written for the user. Kind is one of
// the Err* values above; Err, if any, is the underlying cause.
type Error struct {
	Kind   error
	Msg    string
	Err    error
	Status int    // the HTTP status, when the Hub answered one
	Code   string // the Hub's X-Error-Code (RepoNotFound, GatedRepo, ...)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Unwrap lets errors.Is match both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// redactor removes a secret from text that may be shown: a server may echo
// the Authorization header back in an error body.
type redactor string

func (r redactor) text(s string) string {
	if r == "" {
		return s
	}
	return strings.ReplaceAll(s, string(r), "[token]")
}

// err rewrites an error whose text would show the secret.
func (r redactor) err(err error) error {
	if err == nil || r == "" || !strings.Contains(err.Error(), string(r)) {
		return err
	}
	var he *Error
	if errors.As(err, &he) {
		return &Error{Kind: he.Kind, Msg: r.text(err.Error()), Status: he.Status, Code: he.Code}
	}
	return redactedError{r.text(err.Error())}
}

type redactedError struct{ msg string }

func (e redactedError) Error() string { return e.msg }

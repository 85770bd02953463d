// Package testenv finds, for tests, what build.sh installs: the
// repository's root and the reference Python environment (mlx-lm, the
// HF libraries and the client SDKs pinned in versions.env).
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Python is $FUNGTRAIN_PYTHON, or third_party/pyenv/bin/python, which
// must exist.
func Python(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("FUNGTRAIN_PYTHON"); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(), "third_party", "pyenv", "bin", "python")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the reference Python environment is missing (%v): run ./build.sh test to create third_party/pyenv, or set FUNGTRAIN_PYTHON", err)
	}
	return p
}

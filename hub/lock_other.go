//go:build !(linux || darwin)

package hub

import "context"

// lockFile does nothing where flock is not available.
func lockFile(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	return func() {}, nil
}

// freeBytes is unknown here.
func freeBytes(dir string) int64 { return -1 }

//go:build !linux

package main

// sgemmLibrary: only Linux CPU builds can end up with the reference BLAS
// (macOS's MLX uses Accelerate).
func sgemmLibrary() string { return "" }

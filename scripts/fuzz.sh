#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...] — run the repository's Go fuzz
# targets, one at a time, for SECONDS each (default 60), and print a summary
# table: executions, new interesting inputs (coverage the fuzzer had not
# seen) and the result of each target. With TARGETs (names such as
# FuzzLoadRunConfig) only those run; `scripts/fuzz.sh --list` lists them all.
#
# The targets are found with `go test -list '^Fuzz'` in every package whose
# test files declare one. A failure leaves its input under the package's
# testdata/fuzz/<Target>/ (the path is in the table): commit it as a
# regression seed once fixed. `go test ./...` runs every seed corpus as
# ordinary tests. FUZZ_PARALLEL sets the workers per target (go's -parallel;
# default: one per CPU). Logs go to FUZZ_LOGS (default: a temporary folder).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { printf 'fuzz.sh: %s\n' "$*" >&2; exit 2; }
command -v go >/dev/null 2>&1 || die "go is required"

# The same cgo set-up as build.sh's go_env: on Linux CPU builds, Debian's
# OpenBLAS is linked ahead of libmlx.
export CGO_ENABLED=1
if [ "$(uname -s)" = Linux ] && [ -z "${FUNGTRAIN_NO_OPENBLAS:-}" ] && [ "${FUNGTRAIN_BACKEND:-cpu}" = cpu ]; then
  case "${CGO_LDFLAGS:-}" in
    *openblas*) ;;
    *) export CGO_LDFLAGS="-Wl,--no-as-needed -lopenblas -Wl,--as-needed ${CGO_LDFLAGS:-}" ;;
  esac
fi

# list_targets prints "PACKAGE_DIR TARGET" for every fuzz target.
list_targets() {
  local dirs d
  dirs="$(grep -rlE --include='*_test.go' --exclude-dir=third_party --exclude-dir=.git '^func Fuzz[A-Za-z0-9_]*\(' . \
    | xargs -n1 dirname | sort -u)"
  for d in $dirs; do
    go test -list '^Fuzz' "$d" | grep '^Fuzz' | while read -r name; do printf '%s %s\n' "$d" "$name"; done
  done
}

secs=60
if [ "${1:-}" = --list ]; then list_targets; exit 0; fi
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
want=" $* "

targets="$(list_targets)"
[ -n "$targets" ] || die "no fuzz targets found"
logs="${FUZZ_LOGS:-$(mktemp -d)}"
mkdir -p "$logs"
parallel=()
[ -n "${FUZZ_PARALLEL:-}" ] && parallel=(-parallel "$FUZZ_PARALLEL")

table="| target | package | seconds | executions | new interesting | result |
|---|---|---|---|---|---|"
failed=0 ran=0
while read -r dir name; do
  if [ $# -gt 0 ]; then
    case "$want" in *" $name "*) ;; *) continue ;; esac
  fi
  ran=$((ran + 1))
  log="$logs/$name.log"
  printf '==> %s (%s) for %ss; log %s\n' "$name" "$dir" "$secs" "$log"
  rc=0
  go test -run '^$' -fuzz "^$name\$" -fuzztime "${secs}s" -timeout "$((secs + 600))s" \
    ${parallel[@]+"${parallel[@]}"} "$dir" >"$log" 2>&1 || rc=$?
  # The last progress line: "fuzz: elapsed: 1m0s, execs: 64863 (860/sec), new interesting: 11 (total: 20)".
  execs="$(awk '/^fuzz: elapsed:.*execs:/ { for (i = 1; i <= NF; i++) if ($i == "execs:") e = $(i + 1) } END { print e + 0 }' "$log")"
  fresh="$(awk '/^fuzz: elapsed:.*new interesting:/ { for (i = 1; i < NF; i++) if ($i == "interesting:") n = $(i + 1) } END { print n + 0 }' "$log")"
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    failed=$((failed + 1))
    crasher="$(sed -n 's/.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*/\1/p' "$log" | head -n 1)"
    if [ -n "$crasher" ]; then
      result="FAIL: $dir/$crasher"
    else
      result="FAIL (exit $rc): see $log"
    fi
    tail -n 20 "$log"
  fi
  table="$table
| $name | $dir | $secs | $execs | $fresh | $result |"
done <<<"$targets"

[ "$ran" -gt 0 ] || die "no fuzz target named$want(scripts/fuzz.sh --list lists them)"
printf '\n%s\n' "$table"
[ "$failed" -eq 0 ] || { printf '\n%d of %d targets failed\n' "$failed" "$ran"; exit 1; }

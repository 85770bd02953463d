#!/usr/bin/env bash
# bench/variants.sh OUT_DIR [common bench flags...] < VARIANTS
#
# Runs `fungtrain bench train` (or, with BENCH=generate in the environment,
# `fungtrain bench generate`) once per line of VARIANTS, all on one machine
# in one invocation, so the variants compare with each other. Each line is
#
#   label | ENV=value ... | extra bench flags
#
# Lists used so far are in bench/variants/.
# (lines starting with # are comments; empty fields allowed; a BIN=path entry in the environment field runs
# another fungtrain binary, e.g. an older build). Results go to
# OUT_DIR/<label>.json and a table to OUT_DIR/variants.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR=$1; shift
mkdir -p "$OUTDIR"
BENCH="${BENCH:-train}"
if [ "$BENCH" = generate ]; then
  printf '| variant | decode tokens/s | prefill tokens/s | peak GiB |\n|---|---|---|---|\n' > "$OUTDIR/variants.md"
else
  printf '| variant | tokens/s | step s | peak GiB | forward peak GiB | final loss |\n|---|---|---|---|---|---|\n' > "$OUTDIR/variants.md"
fi
while IFS='|' read -r label envs flags; do
  label=$(echo "$label" | xargs)
  case "$label" in ''|'#'*) continue ;; esac
  bin="$ROOT/bin/fungtrain"
  envv=()
  for kv in $envs; do
    case "$kv" in BIN=*) bin="${kv#BIN=}" ;; *) envv+=("$kv") ;; esac
  done
  echo "==> $label"
  # shellcheck disable=SC2086
  # ${envv[@]+...}: bash 3.2 (macOS) treats an empty array as unset under set -u.
  if env ${envv[@]+"${envv[@]}"} "$bin" bench "$BENCH" "$@" $flags --json > "$OUTDIR/$label.json" 2> "$OUTDIR/$label.log"; then
    python3 - "$OUTDIR/$label.json" "$label" >> "$OUTDIR/variants.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if "decode_tokens_per_sec" in r:
    print(f"| {sys.argv[2]} | {r['decode_tokens_per_sec']:.1f} | {r['prefill_tokens_per_sec']:.0f} | {r['peak_memory_gib']:.2f} |")
    sys.exit()
print(f"| {sys.argv[2]} | {r['tokens_per_sec']:.0f} | {r['step_seconds']:.4f} | {r['peak_memory_gib']:.2f} | {r['forward_peak_gib']:.2f} | {r['final_loss']:.5f} |")
PY
  else
    echo "| $label | failed: $(tail -1 "$OUTDIR/$label.log") | | | | |" >> "$OUTDIR/variants.md"
  fi
  tail -1 "$OUTDIR/variants.md"
done

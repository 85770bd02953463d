#!/usr/bin/env bash
# bench/decode_variants.sh: issue 17's decode measurement in one command.
# Batch-1 greedy decode of a random Llama-3.2-3B in bf16 and of its MLX
# 4-bit copy (group 64): fungtrain under each decode setting of a list
# (FUNGTRAIN_DECODE_*, llama/decode.go) alternating with mlx-lm's
# generate_step on the same model, prompt 128 and 256 new tokens, each
# process warming up over one whole generation first (MLX's CUDA backend
# compiles kernels and builds cuDNN and CUDA graphs the first time it meets
# a shape). Decode tokens/s counts the tokens after the first, as
# `fungtrain bench generate` and bench/mlxlm_anchor.py do; both systems also
# report where a token's host time goes (graph building, MLX's eval, waiting
# for the device), and mlx-lm the ops of one decode step's graph.
#
# On the GPU machine (no Go, no network), from the repository root, with
# the carried files of bench/gpu_env.sh (MLX CUDA libraries with
# mlx/include, bin/fungtrain, the mlx and mlx-lm wheels):
#
#   bash bench/decode_variants.sh OUT [--rounds 2] [--budget 230] [--list bench/variants/decode-issue17.txt]
#        [--prompt 128] [--tokens 256] [--shape llama-3.2-3b]
#
# Here (CPU, tiny shape, float32, a few tokens): bash bench/decode_variants.sh OUT --local
#
# Rounds run the list in order, every second one in reverse; no new run
# starts after --budget seconds (the table covers what ran). OUT gets
# summary.md (the table), summary.json and raw/ (each run's JSON and
# stderr). Models and kernel caches live in $FUNGTRAIN_BENCH_WORK (default
# /tmp/fgt-realwork, shared with bench/realwork_gpu.sh) and are reused.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT=${1:?usage: bench/decode_variants.sh OUT [flags]}; shift
ROUNDS=2 BUDGET=230 LIST=bench/variants/decode-issue17.txt PROMPT=128 TOKENS=256 SHAPE=llama-3.2-3b DTYPE=bf16
LOCAL=0 PY=python3 GROUP=64
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2 ;; --budget) BUDGET=$2 ;; --list) LIST=$2 ;; --prompt) PROMPT=$2 ;;
    --tokens) TOKENS=$2 ;; --shape) SHAPE=$2 ;; --python) PY=$2 ;;
    --local) LOCAL=1; shift; continue ;;
    *) echo "decode_variants.sh: unknown flag $1" >&2; exit 2 ;;
  esac
  shift 2
done
if [ "$LOCAL" = 1 ]; then
  SHAPE=tiny DTYPE=f32 GROUP=32 PROMPT=16 TOKENS=24 ROUNDS=1
  PY="${FUNGTRAIN_PYTHON:-$ROOT/third_party/pyenv/bin/python}"
else
  # shellcheck source=bench/gpu_env.sh
  source bench/gpu_env.sh || { echo "decode_variants.sh: bench/gpu_env.sh failed" >&2; exit 1; }
fi
FT="$ROOT/bin/fungtrain"
W="${FUNGTRAIN_BENCH_WORK:-/tmp/fgt-realwork}/$SHAPE-$DTYPE"
RAW="$OUT/raw"
mkdir -p "$RAW" "$W/ptx-warm"
export MLX_PTX_CACHE_DIR="$W/ptx-warm" CUDA_CACHE_PATH="$W/ptx-warm/nv"
T0=$(date +%s)

{
  echo "machine: $(uname -sm), $(getconf _NPROCESSORS_ONLN) cores"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$FT" version
  "$PY" -c "import mlx.core as mx, mlx_lm; print('python mlx', mx.__version__, mx.default_device(), 'mlx-lm', mlx_lm.__version__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# The models: a random-init checkpoint and its MLX 4-bit copy.
if [ ! -f "$W/base/model.safetensors" ]; then
  "$FT" init-model --shape "$SHAPE" --dtype "$DTYPE" --out "$W/base" --seed 1 --force >/dev/null || exit 1
fi
if [ ! -f "$W/q4/model.safetensors" ]; then
  "$FT" bench quantize --model "$W/base" --to mlx --bits 4 --group-size "$GROUP" --out "$W/q4" >/dev/null || exit 1
fi
cat "$W"/base/*.safetensors "$W"/q4/*.safetensors >/dev/null  # into the page cache before anything is timed
echo "models ready in $(( $(date +%s) - T0 )) s: $W/base, $W/q4"

LINES=()
while IFS= read -r line; do LINES+=("$line"); done < <(grep -v '^[[:space:]]*\(#\|$\)' "$LIST")
# run LABEL ROUND ENV SYSTEM MODEL
run() {
  local label=$1 round=$2 envs=$3 system=$4 model=$5 dir name
  dir="$W/base"; [ "$model" = q4 ] && dir="$W/q4"
  name="${label}_r$round"
  echo "==> $name ($system on $model${envs:+, $envs})"
  # shellcheck disable=SC2086
  if [ "$system" = mlxlm ]; then
    env $envs "$PY" "$ROOT/bench/decode_host.py" measure --model "$dir" --prompt "$PROMPT" --tokens "$TOKENS" \
      --rounds 1 >"$RAW/$name.json" 2>"$RAW/$name.err"
  else
    env $envs "$FT" bench generate --model "$dir" --dtype "$DTYPE" --dequantize no --seq "$PROMPT" \
      --steps "$TOKENS" --warmup 1 --json >"$RAW/$name.json" 2>"$RAW/$name.err"
  fi || echo "    FAILED: $(tail -n 1 "$RAW/$name.err")"
}

stopped=""
for r in $(seq 1 "$ROUNDS"); do
  order=("${LINES[@]}")
  if [ $((r % 2)) -eq 0 ]; then
    order=(); for ((i = ${#LINES[@]} - 1; i >= 0; i--)); do order+=("${LINES[$i]}"); done
  fi
  for line in "${order[@]}"; do
    if [ $(( $(date +%s) - T0 )) -ge "$BUDGET" ]; then stopped="round $r"; break 2; fi
    IFS='|' read -r label envs system model <<<"$line"
    run "$(echo "$label" | xargs)" "$r" "$(echo "$envs" | xargs)" "$(echo "$system" | xargs)" "$(echo "$model" | xargs)"
  done
done
[ -n "$stopped" ] && echo "budget of $BUDGET s reached in $stopped: the table covers the runs before it"
echo "total $(( $(date +%s) - T0 )) s"

"$PY" - "$LIST" "$RAW" "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path

lst, raw, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
rows = []
for line in open(lst):
    if not line.strip() or line.lstrip().startswith("#"):
        continue
    label, envs, system, model = [f.strip() for f in line.split("|")]
    runs = []
    for p in sorted(raw.glob(f"{label}_r*.json")):
        try:
            r = json.loads(p.read_text())
        except (ValueError, OSError):
            continue
        if system == "mlxlm":
            m = r["rounds"][0]
            runs.append({"tps": m["decode_tokens_per_sec"], "build": m["build_ms"], "eval": m["eval_ms"],
                         "wait": m["rest_ms"], "ops": r.get("ops_per_step")})
        else:
            runs.append({"tps": r["decode_tokens_per_sec"], "build": r["decode_build_ms_per_token"],
                         "eval": r["decode_eval_ms_per_token"], "wait": r["decode_wait_ms_per_token"],
                         "peak": r["peak_memory_gib"], "prefill": r["prefill_tokens_per_sec"]})
    rows.append({"label": label, "env": envs, "system": system, "model": model, "runs": runs})

anchor = {}
for row in rows:
    if row["system"] == "mlxlm" and row["runs"]:
        anchor[row["model"]] = statistics.median(x["tps"] for x in row["runs"])

def med(row, k):
    v = [x[k] for x in row["runs"] if x.get(k) is not None]
    return statistics.median(v) if v else None

lines = ["| variant | model | decode tok/s (median) | by run | vs mlx-lm | build ms/tok | eval ms/tok | wait ms/tok | prefill tok/s | peak GiB | settings |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for row in rows:
    if not row["runs"]:
        lines.append(f"| {row['label']} | {row['model']} | no result | | | | | | | | {row['env']} |")
        continue
    tps = med(row, "tps")
    ratio = f"{tps / anchor[row['model']]:.2f}x" if row["model"] in anchor else "-"
    by = " / ".join(f"{x['tps']:.1f}" for x in row["runs"])
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    lines.append(f"| {row['label']} | {row['model']} | {tps:.1f} | {by} | {ratio} | {f(med(row, 'build'))} | "
                 f"{f(med(row, 'eval'))} | {f(med(row, 'wait'))} | {f(med(row, 'prefill'), 0)} | {f(med(row, 'peak'))} | "
                 f"{row['env'] or ('mlx-lm' if row['system'] == 'mlxlm' else 'defaults')} |")
notes = ["", "Host ms per decode token: build = building the graph (fungtrain: Go and cgo, and freeing the step's "
         "handles; mlx-lm: the model call and the sampler in Python); eval = inside (mx.)async_eval, MLX scheduling "
         "and encoding the kernels; wait = fungtrain waiting in Item for the token (mlx-lm: everything else, "
         "y.item() included). With the next token queued, a small wait means the host set the pace."]
for row in rows:
    if row["system"] == "mlxlm" and row["runs"] and row["runs"][0].get("ops"):
        notes.append(f"mlx-lm ops in one decode step's graph ({row['model']}): {row['runs'][0]['ops']}")
text = "\n".join(lines + notes) + "\n"
(out / "summary.md").write_text(text)
(out / "summary.json").write_text(json.dumps(rows, indent=1))
print(text)
PY

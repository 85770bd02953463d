#!/usr/bin/env bash
# bench/run.sh: fungtrain side by side with its anchors, in one run on one
# machine, with the same shape, data length, LoRA targets, layers, rank,
# batch and sequence length. Prints a table of the figures and the ratios.
#
#   bench/run.sh [--shape tiny] [--dtype f32] [--seq 256] [--batch 1] [--steps 10]
#                [--keys qv|all] [--decode-prompt 128] [--decode-tokens 128]
#                [--python PY] [--peft PEFT_SCRIPT] [--out DIR] [--rounds N]
#
# With --rounds N the fungtrain and mlx-lm training measurements alternate N
# times (fungtrain, mlx-lm, fungtrain, ...) and the table uses each one's
# median: on a shared machine one short window can be off by 10%.
#
# Anchors:
#   mlx-lm   mlx_lm's own trainer and generate_step (bench/mlxlm_anchor.py) on
#            the same MLX build, on a random-init model written by
#            `fungtrain init-model`; on Linux CPU also with Debian's OpenBLAS
#            preloaded, the BLAS fungtrain links.
#   PEFT     with --peft, the shared HF transformers + PEFT anchor script
#            (GPU machines only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHAPE=tiny DTYPE=f32 SEQ=256 BATCH=1 STEPS=10 KEYS=qv DPROMPT=128 DTOKENS=128 ROUNDS=1
PY="${FUNGTRAIN_PYTHON:-$ROOT/third_party/pyenv/bin/python}" PEFT="" OUT=""
FT="${FUNGTRAIN_BIN:-$ROOT/bin/fungtrain}"
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE=$2 ;; --dtype) DTYPE=$2 ;; --seq) SEQ=$2 ;; --batch) BATCH=$2 ;;
    --steps) STEPS=$2 ;; --keys) KEYS=$2 ;; --decode-prompt) DPROMPT=$2 ;;
    --decode-tokens) DTOKENS=$2 ;; --python) PY=$2 ;; --peft) PEFT=$2 ;; --out) OUT=$2 ;;
    --rounds) ROUNDS=$2 ;;
    *) echo "bench/run.sh: unknown flag $1" >&2; exit 2 ;;
  esac
  shift 2
done
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
echo "==> machine: $(uname -sm), $(getconf _NPROCESSORS_ONLN) cores; results in $OUT"
"$FT" version | tee "$OUT/version.txt"
echo "==> random-init $SHAPE model ($DTYPE)"
MODEL="${MODEL_DIR:-$(mktemp -d)}"
"$FT" init-model --shape "$SHAPE" --dtype "$DTYPE" --out "$MODEL" --seed 1 >/dev/null

run() { local name=$1; shift; echo "==> $name"; "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" || { tail -20 "$OUT/$name.log"; exit 1; }; }
# FUNGTRAIN_TRAIN_FLAGS: extra `bench train` flags (e.g. --memory-limit-gb 8).
for r in $(seq 1 "$ROUNDS"); do
  sfx=""; [ "$r" -gt 1 ] && sfx="_r$r"
  # shellcheck disable=SC2086
  run "fungtrain_train$sfx" "$FT" bench train --model "$MODEL" --dtype "$DTYPE" --seq "$SEQ" --batch "$BATCH" \
    --steps "$STEPS" --warmup "$STEPS" --lora-keys "$KEYS" ${FUNGTRAIN_TRAIN_FLAGS:-} --json
  [ "$r" -eq 1 ] && run fungtrain_generate "$FT" bench generate --model "$MODEL" --dtype "$DTYPE" --seq "$DPROMPT" \
    --steps "$DTOKENS" --warmup 1 --json
  run "mlxlm$sfx" "$PY" "$ROOT/bench/mlxlm_anchor.py" --model "$MODEL" --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" \
    --keys "$KEYS" --decode-prompt "$DPROMPT" --decode-tokens "$DTOKENS"
done
OPENBLAS=""
for f in /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0; do [ -f "$f" ] && OPENBLAS=$f; done
if [ -n "$OPENBLAS" ] && grep -q 'backend: cpu' "$OUT/version.txt"; then
  run mlxlm_openblas env LD_PRELOAD="$OPENBLAS" "$PY" "$ROOT/bench/mlxlm_anchor.py" --model "$MODEL" --seq "$SEQ" \
    --batch "$BATCH" --steps "$STEPS" --keys "$KEYS" --decode-prompt "$DPROMPT" --decode-tokens "$DTOKENS"
fi
if [ -n "$PEFT" ]; then
  run peft env OUT="$OUT" "$PY" "$PEFT"
fi
python3 "$ROOT/bench/compare.py" "$OUT" "$SHAPE" | tee "$OUT/summary.md"

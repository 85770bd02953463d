#!/usr/bin/env bash
# bench/run.sh: fungtrain side by side with its anchors, in one run on one
# machine, with the same shape, data length, LoRA targets, layers, rank,
# batch and sequence length. Prints a table of the figures and the ratios.
#
#   bench/run.sh [--shape tiny] [--dtype f32] [--seq 256] [--batch 1] [--steps 10]
#                [--keys qv|all] [--decode-prompt 128] [--decode-tokens 128]
#                [--python PY] [--peft PEFT_SCRIPT] [--out DIR] [--rounds N]
#                [--grad-accum K] [--lengths DIR|FILE|SPEC] [--warmup W] [--set key=value]...
#
# --lengths trains on a length distribution instead of --seq-token sequences
# (a lengths file from `fungtrain bench lengths --out`, or a spec such as
# mean:290,max:1024, for fungtrain and the anchors alike; a dataset
# directory is turned into a lengths file first, with the model's
# tokenizer or --tokenizer). --grad-accum sets the micro-batches per
# optimizer step for all three; --steps and --warmup count optimizer steps
# (--warmup defaults to --steps). --set is passed to `fungtrain bench
# train` (run-config overrides, e.g. a trainer setting under test).
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
ACCUM=1 LENGTHS="" WARMUP="" TOKENIZER="" SETS=()
PY="${FUNGTRAIN_PYTHON:-$ROOT/third_party/pyenv/bin/python}" PEFT="" OUT=""
FT="${FUNGTRAIN_BIN:-$ROOT/bin/fungtrain}"
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE=$2 ;; --dtype) DTYPE=$2 ;; --seq) SEQ=$2 ;; --batch) BATCH=$2 ;;
    --steps) STEPS=$2 ;; --keys) KEYS=$2 ;; --decode-prompt) DPROMPT=$2 ;;
    --decode-tokens) DTOKENS=$2 ;; --python) PY=$2 ;; --peft) PEFT=$2 ;; --out) OUT=$2 ;;
    --rounds) ROUNDS=$2 ;; --grad-accum) ACCUM=$2 ;; --lengths) LENGTHS=$2 ;; --warmup) WARMUP=$2 ;;
    --tokenizer) TOKENIZER=$2 ;; --set) SETS+=(--set "$2") ;;
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

WARMUP=${WARMUP:-$STEPS}
# The data both trainers see: --seq-token sequences, or a length profile.
DATA=(--seq "$SEQ")
if [ -n "$LENGTHS" ]; then
  PROFILE="$LENGTHS"
  if [ -d "$LENGTHS" ] || [[ "$LENGTHS" == *:* && ! -f "$LENGTHS" ]]; then
    PROFILE="$OUT/lengths.json"
    "$FT" bench lengths --lengths "$LENGTHS" --tokenizer "${TOKENIZER:-$ROOT/third_party/llama3-tokenizer}" --out "$PROFILE"
  fi
  DATA=(--lengths "$PROFILE")
fi
run() { local name=$1; shift; echo "==> $name"; "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" || { tail -20 "$OUT/$name.log"; exit 1; }; }
OPENBLAS=""
for f in /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0; do [ -f "$f" ] && OPENBLAS=$f; done
grep -q 'backend: cpu' "$OUT/version.txt" || OPENBLAS=""
# FUNGTRAIN_TRAIN_FLAGS: extra `bench train` flags (e.g. --memory-limit-gb 8).
# Each round runs fungtrain, mlx-lm and (on a Linux CPU) mlx-lm with Debian's
# OpenBLAS preloaded, the BLAS fungtrain links, one after the other.
for r in $(seq 1 "$ROUNDS"); do
  sfx=""; [ "$r" -gt 1 ] && sfx="_r$r"
  # shellcheck disable=SC2086
  run "fungtrain_train$sfx" "$FT" bench train --model "$MODEL" --dtype "$DTYPE" "${DATA[@]}" --batch "$BATCH" \
    --grad-accum "$ACCUM" --steps "$STEPS" --warmup "$WARMUP" --lora-keys "$KEYS" ${SETS[@]+"${SETS[@]}"} \
    ${FUNGTRAIN_TRAIN_FLAGS:-} --json
  [ "$r" -eq 1 ] && run fungtrain_generate "$FT" bench generate --model "$MODEL" --dtype "$DTYPE" --seq "$DPROMPT" \
    --steps "$DTOKENS" --warmup 1 --json
  run "mlxlm$sfx" "$PY" "$ROOT/bench/mlxlm_anchor.py" --model "$MODEL" "${DATA[@]}" --batch "$BATCH" \
    --grad-accum "$ACCUM" --steps "$STEPS" --warmup "$WARMUP" --keys "$KEYS" --decode-prompt "$DPROMPT" --decode-tokens "$DTOKENS"
  if [ -n "$OPENBLAS" ]; then
    run "mlxlm_openblas$sfx" env LD_PRELOAD="$OPENBLAS" "$PY" "$ROOT/bench/mlxlm_anchor.py" --model "$MODEL" "${DATA[@]}" \
      --batch "$BATCH" --grad-accum "$ACCUM" --steps "$STEPS" --warmup "$WARMUP" --keys "$KEYS" \
      --decode-prompt "$DPROMPT" --decode-tokens "$DTOKENS"
  fi
done
if [ -n "$PEFT" ]; then
  if grep -q -- "--sections" "$PEFT"; then  # bench/peft_anchor.py
    if [ -n "$LENGTHS" ]; then PARGS=(--sections realwork --lengths "$PROFILE"); else PARGS=(--sections seq1024,decode --seq "$SEQ"); fi
    PK=all; [ "$KEYS" = all ] || PK=qv
    run peft "$PY" "$PEFT" "${PARGS[@]}" --keys "$PK" --grad-accum "$ACCUM" --warmup 2 --steps "$STEPS" \
      --seq-accum "$ACCUM" --seq-steps "$((STEPS * ACCUM))" --out "$OUT/peft_anchor.json"
  else  # the shared anchor of session 1
    run peft env OUT="$OUT" "$PY" "$PEFT"
  fi
fi
python3 "$ROOT/bench/compare.py" "$OUT" "$SHAPE" | tee "$OUT/summary.md"

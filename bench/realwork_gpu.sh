#!/usr/bin/env bash
# bench/realwork_gpu.sh: issue 17's measurements in one command, fungtrain
# side by side with mlx-lm and HF PEFT on one machine (docs/BENCHMARKS.md,
# "Real workload"). Sections:
#
#   a  the user's workload: the mission default (batch 1 x accumulation 8,
#      prompt masked, max_seq_length 1024, mission LoRA) on the sample
#      data's lengths; fungtrain and mlx-lm alternate --rounds times, PEFT
#      once; tokens/s over all inputs and over loss-counted tokens,
#      optimizer steps/s, peak memory, MFU
#   b  seq 1024, batch 1: fungtrain's peak and MFU against PEFT's
#   c  4-bit base: fungtrain on an MLX 4-bit checkpoint (group 64) and on a
#      GGUF Q4_0 file (kept quantized), mlx-lm on the 4-bit checkpoint,
#      PEFT + bitsandbytes NF4 (skipped when bitsandbytes does not import)
#   d  cold start: seconds from launching the process to the end of the
#      first optimizer step of (a)'s workload, with empty kernel caches
#      (MLX_PTX_CACHE_DIR, where MLX's CUDA backend keeps the kernels NVRTC
#      compiles, default /tmp/mlx/VERSION/ptx; and the driver's
#      CUDA_CACHE_PATH), fungtrain then mlx-lm
#
# On the GPU machine (no Go, no network), from the repository root, with
# the carried files of bench/gpu_env.sh in place:
#
#   bash bench/realwork_gpu.sh OUT [--sections abcd] [--rounds 2] [--steps 20] [--warmup 5]
#        [--shape llama-3.2-3b] [--gguf q4_0[,q8_0]] [--set key=value]... [--peak-tflops 989]
#
# Here (CPU, tiny shape, no PEFT): bash bench/realwork_gpu.sh OUT --local
#
# OUT gets at most 8 files: summary.json, summary.md, a.log .. d.log,
# peft.log and raw.tar.gz (every measurement's JSON and stderr). Models
# and kernel caches live in $FUNGTRAIN_BENCH_WORK (default
# /tmp/fgt-realwork) and are reused by a later call on the same machine.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT=${1:?usage: bench/realwork_gpu.sh OUT [flags]}; shift
SECTIONS=abcd ROUNDS=2 STEPS=20 WARMUP=5 SHAPE=llama-3.2-3b DTYPE=bf16 SEQ=1024 ACCUM=8 GGUF=q4_0
LENGTHS=bench/lengths/fung-sample-llama3.json PEAK=989 LOCAL=0 SEQ_STEPS=30 SEQ_WARMUP=10 PY=python3
SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sections) SECTIONS=$2 ;; --rounds) ROUNDS=$2 ;; --steps) STEPS=$2 ;; --warmup) WARMUP=$2 ;;
    --shape) SHAPE=$2 ;; --dtype) DTYPE=$2 ;; --seq) SEQ=$2 ;; --grad-accum) ACCUM=$2 ;; --gguf) GGUF=$2 ;;
    --lengths) LENGTHS=$2 ;; --peak-tflops) PEAK=$2 ;; --seq-steps) SEQ_STEPS=$2 ;; --python) PY=$2 ;;
    --set) SETS+=(--set "$2") ;;
    --local) LOCAL=1; shift; continue ;;
    *) echo "realwork_gpu.sh: unknown flag $1" >&2; exit 2 ;;
  esac
  shift 2
done
if [ "$LOCAL" = 1 ]; then
  # The fungtrain and mlx-lm halves of every section on this machine's CPU.
  SHAPE=tiny DTYPE=f32 PY="${FUNGTRAIN_PYTHON:-$ROOT/third_party/pyenv/bin/python}"
  STEPS=${STEPS_LOCAL:-3} WARMUP=1 ROUNDS=1 SEQ=256 SEQ_STEPS=3 SEQ_WARMUP=1 GROUP=32
else
  # shellcheck source=bench/gpu_env.sh
  source bench/gpu_env.sh || { echo "realwork_gpu.sh: bench/gpu_env.sh failed" >&2; exit 1; }
fi
GROUP=${GROUP:-64}
FT="$ROOT/bin/fungtrain"
W="${FUNGTRAIN_BENCH_WORK:-/tmp/fgt-realwork}/$SHAPE-$DTYPE"
RAW="$W/raw-$(date +%s)"
mkdir -p "$OUT" "$RAW" "$W/ptx-warm"
export MLX_PTX_CACHE_DIR="$W/ptx-warm" CUDA_CACHE_PATH="$W/ptx-warm/nv"
has() { case "$SECTIONS" in *"$1"*) return 0 ;; esac; return 1; }
now() { date +%s.%N; }

# run NAME LOG CMD...: stdout to $RAW/NAME.json, stderr to $RAW/NAME.err
# and the section log; the launch time and exit status to $RAW/NAME.meta.
run() {
  local name=$1 log=$2; shift 2
  echo "==> $name: $*" | tee -a "$OUT/$log"
  local t0 rc; t0=$(now)
  "$@" >"$RAW/$name.json" 2>"$RAW/$name.err"; rc=$?
  echo "{\"launch_unix\": $t0, \"end_unix\": $(now), \"rc\": $rc}" >"$RAW/$name.meta"
  tail -n 25 "$RAW/$name.err" >>"$OUT/$log"
  [ $rc -eq 0 ] || echo "    FAILED (exit $rc): $(tail -n 1 "$RAW/$name.err")" | tee -a "$OUT/$log"
  return 0
}
# PREFIX: a command prefix for the next runs (env VAR=value ... for the cold start).
PREFIX=()
ft_train() {
  local name=$1 log=$2; shift 2
  run "$name" "$log" ${PREFIX[@]+"${PREFIX[@]}"} "$FT" bench train --dtype "$DTYPE" --peak-tflops "$PEAK" --json \
    ${SETS[@]+"${SETS[@]}"} "$@"
}
mlxlm() { local name=$1 log=$2; shift 2; run "$name" "$log" ${PREFIX[@]+"${PREFIX[@]}"} "$PY" "$ROOT/bench/mlxlm_anchor.py" "$@"; }
REAL=(--lengths "$LENGTHS" --grad-accum "$ACCUM")

{
  echo "machine: $(uname -sm), $(getconf _NPROCESSORS_ONLN) cores"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$FT" version
  "$PY" -c "import mlx.core as mx, mlx_lm; print('python mlx', mx.__version__, mx.default_device(), 'mlx-lm', mlx_lm.__version__)"
} >"$RAW/env.txt" 2>&1
cat "$RAW/env.txt"

echo "==> models in $W"
T_SETUP=$(now)
if [ ! -f "$W/base/model.safetensors" ]; then
  "$FT" init-model --shape "$SHAPE" --dtype "$DTYPE" --out "$W/base" --seed 1 --force >/dev/null || exit 1
fi
if has c && [ ! -f "$W/q4/model.safetensors" ]; then
  "$FT" bench quantize --model "$W/base" --to mlx --bits 4 --group-size "$GROUP" --out "$W/q4" >/dev/null
fi
if has c; then
  for g in ${GGUF//,/ }; do
    [ -f "$W/$g.gguf" ] || "$FT" bench quantize --model "$W/base" --to "$g" --out "$W/$g.gguf" >/dev/null
  done
fi
cat "$W"/base/*.safetensors >/dev/null  # into the page cache before anything is timed
awk -v a="$T_SETUP" -v b="$(now)" 'BEGIN { printf "setup %.1f s\n", b - a }' 

if has d; then
  # Each system gets its own empty kernel cache, and then donates it to
  # the warm cache the later sections share.
  for sys in fungtrain mlxlm; do
    C="$W/ptx-cold-$sys-$(date +%s%N)"; mkdir -p "$C"
    PREFIX=(env "MLX_PTX_CACHE_DIR=$C" "CUDA_CACHE_PATH=$C/nv")
    if [ $sys = fungtrain ]; then
      ft_train cold_fungtrain d.log --model "$W/base" "${REAL[@]}" --warmup 1 --steps 0
    else
      mlxlm cold_mlxlm d.log --model "$W/base" "${REAL[@]}" --warmup 1 --steps 0
    fi
    PREFIX=()
    echo "    kernel cache after: $(find "$C" -name '*.ptx' | wc -l) modules, $(du -sh "$C" | cut -f1)" | tee -a "$OUT/d.log"
    cp -rn "$C"/. "$W/ptx-warm/" 2>/dev/null; rm -rf "$C"
  done
fi

if has a; then
  for r in $(seq 1 "$ROUNDS"); do
    ft_train "real_fungtrain_r$r" a.log --model "$W/base" "${REAL[@]}" --warmup "$WARMUP" --steps "$STEPS"
    mlxlm "real_mlxlm_r$r" a.log --model "$W/base" "${REAL[@]}" --warmup "$WARMUP" --steps "$STEPS"
  done
fi

if has b; then
  ft_train seq_fungtrain b.log --model "$W/base" --seq "$SEQ" --warmup "$SEQ_WARMUP" --steps "$SEQ_STEPS"
fi

if has c; then
  ft_train q4_fungtrain c.log --model "$W/q4" --dequantize no --seq "$SEQ" --warmup "$SEQ_WARMUP" --steps "$SEQ_STEPS"
  ft_train q4_real_fungtrain c.log --model "$W/q4" --dequantize no "${REAL[@]}" --warmup "$WARMUP" --steps "$STEPS"
  for g in ${GGUF//,/ }; do
    ft_train "${g}_fungtrain" c.log --model "$W/$g.gguf" --dequantize no --seq "$SEQ" --warmup "$SEQ_WARMUP" --steps "$SEQ_STEPS"
  done
  mlxlm q4_mlxlm c.log --model "$W/q4" --seq "$SEQ" --warmup "$SEQ_WARMUP" --steps "$SEQ_STEPS"
fi

# PEFT last, in one process for (a), (b) and (c): torch starts once.
PEFT_SECTIONS=""
has a && PEFT_SECTIONS+="realwork,"
has b && PEFT_SECTIONS+="seq1024,"
has c && PEFT_SECTIONS+="qlora,"
if [ -n "$PEFT_SECTIONS" ] && "$PY" -c "import torch, transformers, peft" 2>/dev/null; then
  run peft peft.log "$PY" "$ROOT/bench/peft_anchor.py" --sections "$PEFT_SECTIONS" --lengths "$LENGTHS" \
    --grad-accum "$ACCUM" --warmup 2 --steps "$STEPS" --seq "$SEQ" --seq-warmup "$SEQ_WARMUP" --seq-steps "$SEQ_STEPS" \
    --out "$RAW/peft_anchor.json"
else
  echo "==> PEFT skipped: torch, transformers or peft does not import in $PY" | tee -a "$OUT/peft.log"
fi

"$PY" "$ROOT/bench/realwork_summary.py" "$RAW" "$OUT" --peak-tflops "$PEAK"
tar -czf "$OUT/raw.tar.gz" -C "$(dirname "$RAW")" "$(basename "$RAW")"
cat "$OUT/summary.md"

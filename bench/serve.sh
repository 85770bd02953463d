#!/usr/bin/env bash
# bench/serve.sh: fungtrain serve side by side with mlx_lm.server (same MLX,
# same machine, same random-init model), then fungtrain eval batched against
# one at a time. One command; prints two tables and writes everything to OUT.
#
#   bench/serve.sh OUT [--shape llama-3.2-3b] [--dtype bf16] [--levels 1,4,16,32]
#                      [--max-tokens 256] [--prompt-words 100] [--rounds 2]
#                      [--eval-n 64] [--eval-tokens 128] [--python PY] [--tokenizer DIR]
#                      [--model DIR] [--no-mlxlm]
#
# The model is written by `fungtrain init-model` with the Llama 3 tokenizer
# (--tokenizer: a directory with tokenizer.json and tokenizer_config.json;
# default third_party/llama3-tokenizer, else .gpu2/llama3-tokenizer.tar.xz
# unpacked); --model DIR serves an existing HF-format model directory
# instead (on a CPU, bench/tiny_model.py writes a small one). Both servers decode up to 32 requests at once (fungtrain
# --max-batch 32, mlx_lm.server --decode-concurrency 32, its default).
# On the NVIDIA machine: source bench/gpu_env.sh first (bench/gpu.sh does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=$1; shift
SHAPE=llama-3.2-3b DTYPE=bf16 LEVELS=1,4,16,32 MAXTOK=256 WORDS=100 ROUNDS=2 EVALN=64 EVALTOK=128
PY="${FUNGTRAIN_PYTHON:-python3}" TOK="" MLXLM=1
FT="${FUNGTRAIN_BIN:-$ROOT/bin/fungtrain}"
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE=$2 ;; --dtype) DTYPE=$2 ;; --levels) LEVELS=$2 ;; --max-tokens) MAXTOK=$2 ;;
    --prompt-words) WORDS=$2 ;; --rounds) ROUNDS=$2 ;; --eval-n) EVALN=$2 ;; --eval-tokens) EVALTOK=$2 ;;
    --python) PY=$2 ;; --tokenizer) TOK=$2 ;; --model) MODEL_DIR=$2 ;;
    --no-mlxlm) MLXLM=0; shift; continue ;;
    *) echo "bench/serve.sh: unknown flag $1" >&2; exit 2 ;;
  esac
  shift 2
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
echo "==> machine: $(uname -sm), $(getconf _NPROCESSORS_ONLN) cores; results in $OUT"
"$FT" version | tee "$OUT/version.txt"
if [ -z "$TOK" ] && [ -z "${MODEL_DIR:-}" ]; then
  TOK="$ROOT/third_party/llama3-tokenizer"
  if [ ! -f "$TOK/tokenizer.json" ] && [ -f "$ROOT/.gpu2/llama3-tokenizer.tar.xz" ]; then
    TOK=/tmp/fungtrain-llama3-tokenizer
    mkdir -p "$TOK" && tar -xJf "$ROOT/.gpu2/llama3-tokenizer.tar.xz" -C "$TOK"
  fi
fi
[ -n "${MODEL_DIR:-}" ] || [ -f "$TOK/tokenizer.json" ] || { echo "bench/serve.sh: no tokenizer.json in $TOK (see --tokenizer)" >&2; exit 1; }
if [ -n "${MODEL_DIR:-}" ]; then
  MODEL=$MODEL_DIR
  echo "==> model $MODEL"
else
  MODEL=$(mktemp -d)
  echo "==> random-init $SHAPE model ($DTYPE) in $MODEL"
  "$FT" init-model --shape "$SHAPE" --dtype "$DTYPE" --out "$MODEL" --seed 1 --tokenizer "$TOK" --force >/dev/null
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # URL PID NAME LOG
  for _ in $(seq 1 600); do
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "$3 exited:"; tail -20 "$4"; exit 1; }
    sleep 1
  done
  echo "$3 not ready after 10 minutes"; tail -20 "$4"; exit 1
}
P1=$(port)
"$FT" serve --model "$MODEL" --port "$P1" --max-batch 32 --queue 128 --max-tokens "$MAXTOK" > "$OUT/fungtrain_serve.log" 2>&1 &
PIDS+=($!); FPID=$!
URLS=(--url "fungtrain=http://127.0.0.1:$P1")
wait_ready "http://127.0.0.1:$P1/health" "$FPID" "fungtrain serve" "$OUT/fungtrain_serve.log"
if [ "$MLXLM" = 1 ]; then
  P2=$(port)
  "$PY" -m mlx_lm.server --model "$MODEL" --port "$P2" --decode-concurrency 32 --max-tokens "$MAXTOK" > "$OUT/mlxlm_server.log" 2>&1 &
  PIDS+=($!); MPID=$!
  URLS+=(--url "mlx-lm=http://127.0.0.1:$P2")
  wait_ready "http://127.0.0.1:$P2/v1/models" "$MPID" "mlx_lm.server" "$OUT/mlxlm_server.log"
  "$PY" -c 'import mlx_lm, mlx.core as mx; print("mlx-lm", mlx_lm.__version__, "mlx", mx.__version__, mx.default_device())' | tee -a "$OUT/version.txt"
fi
echo "==> load: levels $LEVELS, $MAXTOK tokens per request, $ROUNDS rounds"
"$PY" "$ROOT/bench/serve_load.py" "${URLS[@]}" --levels "$LEVELS" --max-tokens "$MAXTOK" --prompt-words "$WORDS" \
  --rounds "$ROUNDS" --model "$MODEL" --out "$OUT/serve.json" | tee "$OUT/serve.md"
cleanup; PIDS=()

echo "==> eval --n $EVALN: batched (--batch $EVALN) and one at a time (--batch 1)"
"$FT" eval --model "$MODEL" --data "$ROOT/examples/fung-sample" --split train --n "$EVALN" --max-tokens "$EVALTOK" \
  --batch "$EVALN" --out "$OUT/eval_batched" > "$OUT/eval_batched.log" 2>&1 || { tail -20 "$OUT/eval_batched.log"; exit 1; }
"$FT" eval --model "$MODEL" --data "$ROOT/examples/fung-sample" --split train --n "$EVALN" --max-tokens "$EVALTOK" \
  --batch 1 --out "$OUT/eval_one" > "$OUT/eval_one.log" 2>&1 || { tail -20 "$OUT/eval_one.log"; exit 1; }
"$PY" "$ROOT/bench/eval_compare.py" "$OUT/eval_batched/eval.json" "$OUT/eval_one/eval.json" | tee "$OUT/eval.md"

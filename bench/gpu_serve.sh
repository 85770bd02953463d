#!/usr/bin/env bash
# bench/gpu_serve.sh: the serving benchmark (bench/serve.sh) on the NVIDIA
# machine, from the files bench/gpu.sh uses (.gpu1, .gpu2: the MLX CUDA
# libraries, bin/fungtrain, the mlx and mlx-lm wheels) plus the Llama 3
# tokenizer as .gpu2/llama3-tokenizer.tar.xz, made on the development machine
# with
#   tar -C third_party/llama3-tokenizer -cJf .gpu2/llama3-tokenizer.tar.xz tokenizer.json tokenizer_config.json
#
#   bench/gpu_serve.sh OUT_DIR [bench/serve.sh flags...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUTDIR=$1; shift
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
FUNGTRAIN_BIN="$ROOT/bin/fungtrain" bench/serve.sh "$OUTDIR" --python python3 "$@"

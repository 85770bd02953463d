#!/usr/bin/env bash
# bench/gpu.sh: run the side-by-side benchmark on an NVIDIA machine that has
# no Go and no network (the lent H100/H200), from files carried over.
#
# Prepared on the development machine (see docs/BENCHMARKS.md, "CUDA run"):
#   .gpu1/part.aa, .gpu2/part.ab  the mlx-cuda-13 wheel's mlx/lib and
#                                 mlx_cuda_13.libs as one tar.xz, split in two
#                                 because one transfer carries at most 64 MiB
#                                 (the wheel is 86 MB, 73 MB as tar.xz)
#   .gpu2/fungtrain.xz            bin/fungtrain built with FUNGTRAIN_NO_OPENBLAS=1
#                                 against the same MLX version's headers
#   .gpu2/*.whl                   the mlx (cp312) and mlx-lm wheels for the anchor
#   .gpu2/peft_anchor.py          the shared PEFT anchor script (or bench/peft_anchor.py,
#                                 which is in the working tree)
# The CUDA 13 libraries come from the machine's PyTorch venv.
#
#   bench/gpu.sh OUT_DIR [bench/run.sh flags...]
#
# run.sh's flags pass through, --grad-accum, --lengths, --warmup and --set
# included, e.g. the user's workload side by side:
#   bench/gpu.sh OUT --shape llama-3.2-3b --dtype bf16 --lengths bench/lengths/fung-sample-llama3.json \
#     --grad-accum 8 --warmup 5 --steps 20 --rounds 2 --peft bench/peft_anchor.py
# Issue 17's measurements (real workload, seq-1024 peak, 4-bit bases, cold
# start) are one command of their own: bench/realwork_gpu.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUTDIR=$1; shift
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
bin/fungtrain version
python3 -c "import mlx.core as mx; print('python mlx', mx.__version__, mx.default_device())"
FUNGTRAIN_BIN="$ROOT/bin/fungtrain" bench/run.sh --python python3 --out "$OUTDIR" "$@"

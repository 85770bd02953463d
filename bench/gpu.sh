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
#   .gpu2/peft_anchor.py          the shared PEFT anchor script
# The CUDA 13 libraries come from the machine's PyTorch venv.
#
#   bench/gpu.sh OUT_DIR [bench/run.sh flags...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUTDIR=$1; shift
if [ ! -f third_party/mlx/mlx/lib/libmlx.so ]; then
  mkdir -p third_party/mlx
  cat .gpu1/part.* .gpu2/part.* | xz -d | tar -x -C third_party/mlx
fi
mkdir -p bin && xz -d -c .gpu2/fungtrain.xz > bin/fungtrain && chmod +x bin/fungtrain
NV=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
LD=""
for d in cu13 cublas cuda_nvrtc cuda_runtime cudnn cufft nccl cusolver nvjitlink; do
  [ -d "$NV/$d/lib" ] && LD="$LD:$NV/$d/lib"
done
export LD_LIBRARY_PATH="${LD#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# MLX compiles some kernels at run time with NVRTC and needs the CUDA
# headers, CCCL's included (cuda/std/...). It adds $CUDA_HOME/include to the
# include path, but CUDA 13 keeps CCCL under include/cccl, so build a
# CUDA_HOME whose include folder holds both.
TOOLKIT="${CUDA_HOME:-/usr/local/cuda}"
CUDA_HOME=/tmp/fungtrain-cuda-home
rm -rf "$CUDA_HOME" && mkdir -p "$CUDA_HOME/include"
for d in "$TOOLKIT"/include/cccl/* "$TOOLKIT"/include/*; do
  [ -e "$CUDA_HOME/include/$(basename "$d")" ] || ln -s "$d" "$CUDA_HOME/include/$(basename "$d")"
done
export CUDA_HOME CUDA_PATH="$CUDA_HOME"
echo "CUDA_HOME=${CUDA_HOME:-unset}"
SITE=/tmp/fungtrain-site
rm -rf "$SITE" && python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu2/*.whl
cp -r third_party/mlx/mlx/lib "$SITE/mlx/lib"
cp -r third_party/mlx/mlx_cuda_13.libs "$SITE/"
export PYTHONPATH="$SITE"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
bin/fungtrain version
python3 -c "import mlx.core as mx; print('python mlx', mx.__version__, mx.default_device())"
FUNGTRAIN_BIN="$ROOT/bin/fungtrain" bench/run.sh --python python3 --out "$OUTDIR" "$@"

#!/usr/bin/env bash
# bench/gpu_env.sh: source it on the NVIDIA machine to unpack the carried MLX
# CUDA libraries and fungtrain binary (see bench/gpu.sh) and set the
# environment they need. Run from the repository root.
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
# Sourced twice, CUDA_HOME is already the folder built here.
[ "$TOOLKIT" = /tmp/fungtrain-cuda-home ] && TOOLKIT=/usr/local/cuda
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

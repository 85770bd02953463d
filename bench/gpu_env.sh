#!/usr/bin/env bash
# bench/gpu_env.sh: source it on the NVIDIA machine to unpack the carried MLX
# CUDA libraries and fungtrain binary (see bench/gpu.sh) and set the
# environment they need. Run from the repository root.
#
# Carried (docs/BENCHMARKS.md, "The CUDA run") into any .gpuN folder, or left
# in /tmp/fgt-carry by an earlier call (one call carries at most 64 MiB, and
# /tmp lasts while the machine is kept):
#   .gpu*/part.*        the mlx-cuda-13 wheel's mlx/lib, mlx/include (NVRTC
#                       compiles the quantized kernels against its cute/ and
#                       cutlass/ headers at run time) and mlx_cuda_13.libs, as
#                       one tar.xz split by name order (part.aa, part.ab, ...)
#   .gpu*/fungtrain.xz  bin/fungtrain (or bin/fungtrain itself, carried)
#   .gpu*/*.whl         the mlx (cp312) and mlx-lm wheels, and optionally
#                       bitsandbytes (the QLoRA anchor)
if [ ! -f third_party/mlx/mlx/lib/libmlx.so ]; then
  mapfile -t FGT_PARTS < <(ls .gpu*/part.* /tmp/fgt-carry/part.* 2>/dev/null |
    awk -F/ '!seen[$NF]++ {print $NF "\t" $0}' | sort | cut -f2)
  if [ ${#FGT_PARTS[@]} -eq 0 ]; then
    echo "gpu_env.sh: no MLX CUDA library parts (.gpu*/part.* or /tmp/fgt-carry/part.*) to unpack" >&2
    return 1 2>/dev/null || exit 1
  fi
  mkdir -p third_party/mlx
  cat "${FGT_PARTS[@]}" | xz -d | tar -x -C third_party/mlx
fi
[ -d third_party/mlx/mlx/include/cute ] ||
  echo "gpu_env.sh: warning: third_party/mlx/mlx/include/cute is missing: quantized (4-bit) kernels will not compile" >&2
mkdir -p bin
# Unpacked beside and renamed over: a script running bin/fungtrain on the
# other GPU keeps its copy.
for f in /tmp/fgt-carry/fungtrain.xz .gpu*/fungtrain.xz; do
  [ -f "$f" ] && xz -d -c "$f" > "bin/.fungtrain.$$" && chmod +x "bin/.fungtrain.$$" && mv "bin/.fungtrain.$$" bin/fungtrain
done
[ -x bin/fungtrain ] || echo "gpu_env.sh: no bin/fungtrain (carry .gpuN/fungtrain.xz)" >&2
NV=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
LD=""
for d in cu13 cublas cuda_nvrtc cuda_runtime cudnn cufft nccl cusolver nvjitlink; do
  [ -d "$NV/$d/lib" ] && LD="$LD:$NV/$d/lib"
done
export LD_LIBRARY_PATH="${LD#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The CUDA_HOME and Python site folders below are built once per machine
# (a stamp marks them done), so scripts sourcing this file at the same
# time, one per GPU, never remove what another is using.
mapfile -t FGT_WHEELS < <(ls .gpu*/*.whl /tmp/fgt-carry/*.whl 2>/dev/null | awk -F/ '!seen[$NF]++')
FGT_READY=/tmp/fungtrain-site/.fgt-ready
if [ ! -f "$FGT_READY" ] || [ "$(cat "$FGT_READY")" != "$(basename -a "${FGT_WHEELS[@]}" 2>/dev/null)" ]; then
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
  rm -rf "$SITE" && python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${FGT_WHEELS[@]}"
  cp -r third_party/mlx/mlx/lib "$SITE/mlx/lib"
  # libmlx finds the headers NVRTC needs (CCCL, cute, cutlass) beside its own
  # folder: ../include.
  ln -sfn "$PWD/third_party/mlx/mlx/include" "$SITE/mlx/include"
  cp -r third_party/mlx/mlx_cuda_13.libs "$SITE/"
  basename -a "${FGT_WHEELS[@]}" >"$FGT_READY"
fi
CUDA_HOME=/tmp/fungtrain-cuda-home SITE=/tmp/fungtrain-site
export CUDA_HOME CUDA_PATH="$CUDA_HOME"
export PYTHONPATH="$SITE"
export PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0

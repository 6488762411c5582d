#!/usr/bin/env bash
# scripts/gpu-check.sh (make gpu-check): on a GPU machine, build the CUDA backend for sm_90, run the
# CPU/GPU parity tests and the GPU benchmark, and print a short table. Finishes in under 5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "== gpu-check: $(date -u +%FT%TZ)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "no nvidia-smi: no GPU visible on this machine"
fi
if ! ls kernels/cuda/*.cu >/dev/null 2>&1; then
  echo "this version of umdq has no CUDA backend yet (kernels/cuda/ is empty): nothing to check"
  exit 0
fi
scripts/deps.sh || exit 1
make -j"$(nproc)" BUILD="$BUILD" CUDA_ARCH=sm_90 all || exit 1
BUILD=$BUILD tests/run.sh gpu

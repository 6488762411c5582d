# tests/cuemu/emulated.sh, sourced by the scripts that run programs on the emulated CUDA device
# (cuemu_setup NAME): B (the build directory), TEST_OUT (its logs) and lib (the emulated backend,
# $B/cuemu/libumd_cuda_emu.so) set, in the repository's root; where lib is not built (no nvcc
# headers or no OpenBLAS), the test NAME reports SKIP and the script ends.
cuemu_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
  B=${UMDQ_BUILD:-$PWD/build}
  TEST_OUT=${TEST_OUT:-$B/test-output}
  mkdir -p "$TEST_OUT"
  lib=$B/cuemu/libumd_cuda_emu.so
  if [ ! -e "$lib" ]; then
    echo "SKIP $1: no $lib (it is built where nvcc's headers and OpenBLAS are)"
    exit 0
  fi
}

# tests/cuemu/emulated.sh, sourced by the scripts that run programs on the emulated CUDA device
# (cuemu_setup NAME): B (the build directory), TEST_OUT (its logs) and lib (the emulated backend,
# $B/cuemu/libumd_cuda_emu.so) set, in the repository's root; where lib is not built (no nvcc
# headers or no OpenBLAS), the test NAME reports SKIP and the script ends. CUEMU_SLOW: the op
# tests that take half a minute or more emulated, all of which have passed on a device (make test
# leaves them out; make check-long runs them: tests/long/cuda_emulated_all.sh).
CUEMU_SLOW=attention_bf16_grad,attention_bf16_out,attention_bf16_qkv,attention_head_groups
CUEMU_SLOW=$CUEMU_SLOW,attention_kv32,attention_fwd32,mlp_bf16_operands,mlp_bf16_y,test_cuda_gemm_tune\$
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

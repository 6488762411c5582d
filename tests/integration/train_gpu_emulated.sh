#!/usr/bin/env bash
# tests/integration/train_gpu_emulated.sh: bench/train_gpu's rows that make gpu-check reads, run
# on the emulated CUDA device (tests/cuemu; $UMDQ_BUILD/cuemu/libumd_cuda_emu.so) at S/4 28x28,
# batch 2, one step, with a 256^3 GEMM ceiling: dQ from dS and the shared strips (without dS,
# which takes the backward at these lengths by default) with the profile and its spans inside the
# ops, and those with bf16 gradients and the tuner with the step recorded as a graph. What is
# checked is that each row runs and reports, not its speed (the emulator's says nothing).
set -u
. "$(dirname "$0")/../cuemu/emulated.sh"
cuemu_setup train_gpu_emulated
row() { # name, what the output must hold (grep -E), train_gpu options...
  local name=$1 want=$2; shift 2
  local log=$TEST_OUT/train_gpu_emulated_$name.log
  UMDQ_CUDA_LIB=$lib UMDQ_BENCH_CEILING_N=256 OPENBLAS_NUM_THREADS=1 timeout 240 \
    "$B/bench/train_gpu" --only s28 --precision bf16 --batch 2 --steps 1 --warmup 1 "$@" >"$log" 2>&1
  local rc=$?
  if [ $rc != 0 ]; then
    echo "FAIL train_gpu_emulated_$name: exit status $rc: $(tail -n 3 "$log" | cut -c1-300 | tr '\n' ' ')"
  elif ! grep -qE '^\| S/4 28x28x1 +\| bf16' "$log"; then
    echo "FAIL train_gpu_emulated_$name: no S/4 bf16 row (see $log)"
  elif ! grep -qE "$want" "$log"; then
    echo "FAIL train_gpu_emulated_$name: no \"$want\" in the output (see $log)"
  else
    echo "PASS train_gpu_emulated_$name"
  fi
}
row attn_ds_profile 'attention_bwd:dK_dV_dS [0-9.]+ \([0-9]+ calls\); attention_bwd:dQ_from_dS' \
  --attn-ds --profile
UMDQ_CUDA_ATTN_DS=0 row split_profile 'inside the ops \(ms per step\): .*attention_bwd:dQ [0-9.]+ \([0-9]+ calls\)' \
  --attn-split --profile
row all_four_graph 'bf16 gradients on.*last strips shared.*dQ from a stored dS on.*GEMM tuning on' \
  --bf16-grad --attn-split --attn-ds --gemm-tune --graph
row switches_off 'S/4 28x28x1' --switches-off --bf16-grad --mlp-one-pass --profile

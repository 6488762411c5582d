#!/usr/bin/env bash
# tests/integration/cuda_emulated.sh: the CUDA backend's own tests, test_cuda_ops (every op
# against the CPU) and test_cuda_model (whole steps against the CPU, recordings against steps op
# by op, train.recompute), on a machine without a GPU: they load
# $UMDQ_BUILD/cuemu/libumd_cuda_emu.so (UMDQ_CUDA_LIB), every kernels/cuda/*.cu compiled as host
# C++ against the emulator (tests/cuemu: a fiber per CUDA thread, the warp instructions, the
# runtime and cuBLAS on the CPU). Their lines are passed on as "PASS emulated:NAME". What the
# emulator cannot show (speed, a tensor core's order of summation, the real cuBLAS's algorithms,
# the device's memory model) the tests on a device do (make gpu-check).
#
# The two programs run side by side. CUEMU_EXCEPT is passed to both as T_EXCEPT: by default
# CUEMU_SLOW (emulated.sh), the op tests that take half a minute or more emulated and have passed
# on a device (make check-long runs them: tests/long/cuda_emulated_all.sh sets CUEMU_EXCEPT=none);
# every other test runs here.
set -u
. "$(dirname "$0")/../cuemu/emulated.sh"
cuemu_setup cuda_emulated
except=${CUEMU_EXCEPT-$CUEMU_SLOW}
[ "$except" = none ] && except=
pids=()
for t in test_cuda_ops test_cuda_model; do
  log=$TEST_OUT/cuda_emulated_$t.log
  if [ ! -x "$B/tests/$t" ]; then
    echo "FAIL $t: $B/tests/$t is not built" >"$log"
    continue
  fi
  (UMDQ_CUDA_LIB=$lib T_EXCEPT=$except OPENBLAS_NUM_THREADS=1 "$B/tests/$t" >"$log" 2>&1
   echo "exit status $?" >>"$log") &
  pids+=($!)
done
[ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
rc_all=0
for t in test_cuda_ops test_cuda_model; do
  log=$TEST_OUT/cuda_emulated_$t.log
  # the filter's skips are not tests of this run
  grep -E '^(PASS|FAIL|SKIP) ' "$log" | grep -vE ': in T_EXCEPT$' | sed -E 's/^(PASS|FAIL|SKIP) /\1 emulated:/'
  rc=$(sed -n 's/^exit status //p' "$log" | tail -n 1)
  if [ "${rc:-1}" != 0 ]; then
    rc_all=1
    grep -q '^FAIL ' "$log" ||
      { echo "FAIL emulated:$t: exited with status ${rc:-?} (see $log)"; tail -n 5 "$log"; }
  fi
done
exit $rc_all

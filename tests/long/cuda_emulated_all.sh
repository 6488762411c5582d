#!/usr/bin/env bash
# tests/long/cuda_emulated_all.sh (make check-long): every test of test_cuda_ops and
# test_cuda_model on the emulated device, the slow ones that make test leaves out included
# (tests/integration/cuda_emulated.sh; about 15 minutes on 2 cores).
# umdq-timeout: 2700
CUEMU_EXCEPT=none exec "$(dirname "$0")/../integration/cuda_emulated.sh"

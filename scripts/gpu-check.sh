#!/usr/bin/env bash
# scripts/gpu-check.sh (make gpu-check): on a GPU machine, build the CUDA backend for sm_90, run the
# CPU/GPU parity tests (test_cuda_ops: every op; test_cuda_model: whole steps, loss curves, and
# recorded steps against steps op by op, train.recompute against keeping every block's tensors),
# the arenas' sizes (train_memory) and the GPU benchmark: the three configs with the switches as
# they are by default (umd_cuda.h), B/4 bf16 with the defaults without the gradient tensors in
# bf16 (UMDQ_CUDA_BF16_GRAD=0), without the attention backward's dQ from a stored dS
# (UMDQ_CUDA_ATTN_DS=0), with it at every length (UMDQ_CUDA_ATTN_DS_MAX_T=384, profiled), with
# the attention's last strips shared (UMDQ_CUDA_ATTN_SPLIT=1, off by default), with the GEMMs
# tuned (UMDQ_CUDA_GEMM_TUNE=1, off by default) and with both, each with a verdict against the
# defaults, the Linears alone untuned and tuned, the attention alone in its variants, B/4 bf16 with
# train.recompute "norms", then with every switch off and with each one alone on top (bf16
# operands, the MLP's bf16 h, its dy W2 in bf16, its GELU epilogues, bf16 branch tensors, their
# gradients in bf16, bf16 biases, the fused norm, the attention's 32-query and 32-row kernels, the
# step recorded as a CUDA graph), and the defaults with "partial" and "full"; and print a short
# table.
# Finishes in under 5 minutes on an H100 or an H200.
#
#   scripts/gpu-check.sh [--steps N] [--sanitize] [--budget S]
#                                                     build with make into $BUILD, then run
#   scripts/gpu-check.sh --bundle DIR                 after a build here: copy the GPU tests, the
#                                                     benchmark and the shared libraries they need
#                                                     (not libc, libstdc++ or CUDA's) into DIR
#   scripts/gpu-check.sh --prebuilt DIR [--steps N] [--sanitize] [--budget S]
#                                                     run the binaries of such a bundle (a GPU
#                                                     machine without the -dev packages)
#   scripts/gpu-check.sh [--prebuilt DIR] --memcheck LIST [--budget S]
#                                                     only the tests of test_cuda_ops and
#                                                     test_cuda_model whose names contain one of
#                                                     LIST (comma-separated), under
#                                                     compute-sanitizer memcheck, within S seconds
# --sanitize also runs test_cuda_ops once under compute-sanitizer memcheck. --budget S (default
# 290): the test programs share all but $TEST_RESERVE (90) seconds of it (one cut at its limit
# fails, and its tests after the cut count as missing in the switches' verdicts); the benchmark
# rows run in order of what they decide (the plain step first, then the
# defaults without and with the switches in question, the Linears, and the attention alone),
# each cut to what is left of S seconds from the start, and those that find less than 20 s left
# are skipped, so the tables come out in time; the summary names them. Logs
# go to $LOGS (default $BUILD/gpu-check). Exit status 1 when a test fails or a step does not run,
# and at once when the tests find no device (nothing else could run). --bundle gzips the large
# libraries (--prebuilt unpacks them) to keep the bundle small for the trip to a device.
# GPU_CHECK_EXCEPT=a,b,...: tests left out of every test program (T_EXCEPT; they count as missing
# in the verdicts), and GPU_CHECK_TEST_LIMIT=S: each test program's limit, in place of 240 and 90
# s: for a dry run on the emulated device (tests/long/gpu_check_emulated.sh, with
# UMDQ_BENCH_SMOKE=1 for train_gpu), where the slowest tests take minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
mode=build dir="" steps=10 sanitize=0 budget=290 memcheck=""
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) mode=bundle; dir=${2:?--bundle needs a directory}; shift ;;
    --prebuilt) mode=prebuilt; dir=${2:?--prebuilt needs a directory}; shift ;;
    --steps) steps=${2:?--steps needs a number}; shift ;;
    --sanitize) sanitize=1 ;;
    --memcheck) memcheck=${2:?--memcheck needs a comma-separated list of test names}; shift ;;
    --budget) budget=${2:?--budget needs seconds}; shift ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
BINS="tests/test_cuda_ops tests/test_cuda_model bench/train_gpu bench/train_memory lib/umdq/libumd_cuda.so"

if [ $mode = bundle ]; then
  mkdir -p "$dir/lib" || exit 1
  for b in $BINS; do
    [ -x "$BUILD/$b" ] || { echo "gpu-check: $BUILD/$b is not built (make BUILD=$BUILD)" >&2; exit 1; }
    cp "$BUILD/$b" "$dir/" || exit 1
    ldd "$BUILD/$b" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
      case $(basename "$lib") in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
        libcublas*|libcudart*|libcuda.so*) ;;
        *) cp -L "$lib" "$dir/lib/" ;;
      esac
    done
  done
  # the large libraries (OpenBLAS: 36 MB) gzipped, a third of the size, for the trip to the
  # device (what travels with the tree is limited); --prebuilt unpacks them
  find "$dir/lib" -type f -size +4M ! -name '*.gz' -exec gzip -9f {} + || exit 1
  echo "gpu-check: bundle in $dir ($(du -sh "$dir" | cut -f1)): $(ls "$dir" | xargs)"
  exit 0
fi

LOGS=${LOGS:-$BUILD/gpu-check}
mkdir -p "$LOGS"
t_start=$(date +%s)
echo "== gpu-check: $(date -u +%FT%TZ)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "no nvidia-smi: no GPU visible on this machine (the tests will report SKIP)"
fi

if [ $mode = build ]; then
  if ! ls kernels/cuda/*.cu >/dev/null 2>&1; then
    echo "this version of umdq has no CUDA backend (kernels/cuda/ is empty): nothing to check"
    exit 0
  fi
  scripts/deps.sh || exit 1
  make -j"$(nproc)" BUILD="$BUILD" CUDA_ARCH=sm_90 $(for b in $BINS; do echo "$BUILD/$b"; done) || exit 1
  run_dir=$BUILD
  bin() { echo "$BUILD/$1"; }
else
  [ -d "$dir" ] || { echo "gpu-check: no bundle at $dir" >&2; exit 1; }
  for z in "$dir"/lib/*.gz; do
    [ -e "$z" ] || continue
    [ -e "${z%.gz}" ] || gunzip -c "$z" > "${z%.gz}" || { echo "gpu-check: cannot unpack $z" >&2; exit 1; }
  done
  export LD_LIBRARY_PATH=$dir/lib:${CUDA_HOME:-/usr/local/cuda}/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export UMDQ_CUDA_LIB=$dir/libumd_cuda.so # the loader's other place, ../lib/umdq/, is not in a bundle
  run_dir=$dir
  bin() { echo "$dir/$(basename "$1")"; }
fi
echo "binaries: $run_dir"

failed=0
summary=()
if [ -n "$memcheck" ]; then
  # the named tests alone under memcheck (t.h's T_ONLY), both programs within the budget
  san=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  [ -x "$san" ] || { echo "gpu-check: compute-sanitizer not found" >&2; exit 1; }
  for prog in test_cuda_ops test_cuda_model; do
    left=$(( budget - ($(date +%s) - t_start) ))
    [ "$left" -lt 20 ] && { echo "memcheck $prog: skipped, ${left} s left of ${budget}"; continue; }
    log=$LOGS/memcheck_$prog.log
    T_ONLY=$memcheck timeout -k 10 "$left" "$san" --tool memcheck --error-exitcode 9 "$(bin tests/$prog)" >"$log" 2>&1
    rc=$?
    grep -E '^(PASS|FAIL) |ERROR SUMMARY' "$log" | sed 's/^/  /'
    echo "memcheck $prog ($memcheck): exit status $rc, log $log"
    [ $rc != 0 ] && failed=1
  done
  echo "== gpu-check --memcheck: $([ $failed = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t_start )) s"
  exit $failed
fi
# run_test NAME SECONDS COMMAND...: a test program, within SECONDS or what the budget leaves the
# tests (all but TEST_RESERVE seconds of it are theirs: the benchmark rows need the rest); a
# program killed at its limit, or that exits non-zero, is a failure whatever it printed before
TEST_RESERVE=${TEST_RESERVE:-90}
run_test() { # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local log=$LOGS/$name.log t0=$(date +%s)
  local left=$(( budget - TEST_RESERVE - (t0 - t_start) ))
  if [ "$left" -lt 20 ]; then
    echo "  FAIL $name: not run, ${left} s left of the tests' share of the ${budget} s budget" | tee "$log"
    failed=1
    summary+=("$(printf '| %-26s | %3s | %3s | %3s | %5s |' "$name" - - - "-")")
    return
  fi
  [ -n "${GPU_CHECK_TEST_LIMIT:-}" ] && [ "$name" = "${name#memcheck}" ] && limit=$GPU_CHECK_TEST_LIMIT
  [ "$left" -lt "$limit" ] && limit=$left
  timeout -k 10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local np nf ns
  np=$(grep -c '^PASS ' "$log"); nf=$(grep -c '^FAIL ' "$log")
  ns=$(grep '^SKIP ' "$log" | grep -cvE ': (not in T_ONLY|in T_EXCEPT)$') # the filters' are not skips
  grep -E '^(FAIL|SKIP) ' "$log" | grep -vE ': (not in T_ONLY|in T_EXCEPT)$' | sed 's/^/  /'
  if [ $rc != 0 ]; then
    nf=$((nf + 1))
    case $rc in 124|137) why="killed at its ${limit} s limit" ;; *) why="exited with status $rc" ;; esac
    echo "  FAIL $name: $why (see $log); the tests after its last line did not run"
    tail -n 5 "$log" | sed 's/^/    /'
  fi
  [ "$nf" -gt 0 ] && failed=1
  summary+=("$(printf '| %-26s | %3d | %3d | %3d | %4ss |' "$name" "$np" "$nf" "$ns" $(( $(date +%s) - t0 )))")
}

# the tests of the switches off by default, of dS's length and of the profile's spans in
# processes of their own, after the others: a fault of theirs is sticky, and would end every test
# after it in the same process
UNTIMED=profile_floors,attention_split,attention_ds_max_t,gemm_tune
UNTIMED=$UNTIMED,untimed_switches,attn_split_model
EXCEPT=${GPU_CHECK_EXCEPT:-}
run_test test_cuda_ops 240 env T_EXCEPT=$UNTIMED${EXCEPT:+,$EXCEPT} "$(bin tests/test_cuda_ops)"
if grep -q '^SKIP .*no usable CUDA device' "$LOGS/test_cuda_ops.log"; then
  # no device the tests can use (or the backend did not load): nothing else can run either
  echo "gpu-check: no test ran on a device:"; grep -m 3 '^SKIP .*no usable CUDA device' "$LOGS/test_cuda_ops.log" | sed 's/^/  /'
  echo "== gpu-check: FAILED (nothing ran on a device) in $(( $(date +%s) - t_start )) s"
  exit 1
fi
run_test test_cuda_model 240 env T_EXCEPT=$UNTIMED${EXCEPT:+,$EXCEPT} "$(bin tests/test_cuda_model)"
run_test test_cuda_ops_untimed 90 env T_ONLY=$UNTIMED T_EXCEPT=$EXCEPT "$(bin tests/test_cuda_ops)"
run_test test_cuda_model_untimed 90 env T_ONLY=$UNTIMED T_EXCEPT=$EXCEPT "$(bin tests/test_cuda_model)"
if [ $sanitize = 1 ]; then
  san=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  if [ -x "$san" ]; then
    run_test memcheck_test_cuda_ops 500 "$san" --tool memcheck --error-exitcode 9 "$(bin tests/test_cuda_ops)"
    grep -E "ERROR SUMMARY" "$LOGS/memcheck_test_cuda_ops.log" | sed 's/^/  /'
  else
    echo "  compute-sanitizer not found: memcheck skipped"
  fi
fi
echo
echo "| test                       | pass| fail| skip| time |"
echo "|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
echo
# bench LIMIT LOG ARGS...: the command ARGS with a limit of LIMIT seconds, or what is left of
# the budget where that is less, its output shown and kept in LOG; skipped (and said, in LOG too)
# where under 20 s are left. A row cut by the budget is named in the summary, not failed.
skipped=() cut=()
bench() {
  local limit=$1 log=$2; shift 2
  local left=$(( budget - ($(date +%s) - t_start) )) by_budget=0
  if [ "$left" -lt 20 ]; then
    echo "skipped: ${left} s left of the ${budget} s budget (--budget)" | tee "$log"
    skipped+=("$(basename "$log" .log)")
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left by_budget=1
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  if { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ $by_budget = 1 ]; then cut+=("$(basename "$log" .log)")
  elif [ "$rc" != 0 ]; then failed=1; fi
}
# gpu LIMIT NAME [VAR=VALUE...] ARGS...: train_gpu ARGS (in the environment VAR=VALUE), logged as NAME
gpu() {
  local limit=$1 log=$LOGS/$2.log vars=(); shift 2
  while [ $# -gt 0 ] && [[ $1 == UMDQ_*=* ]]; do vars+=("$1"); shift; done
  bench "$limit" "$log" env "${vars[@]}" "$(bin bench/train_gpu)" "$@"
}
echo "== memory: train_memory (the arenas, without and with train.recompute)"
bench 60 "$LOGS/train_memory.log" "$(bin bench/train_memory)"
echo
# the rows of single switches: fewer steps (their medians against the plain row's), to keep
# gpu-check within its budget
sw_steps=$(( steps < 6 ? steps : 6 ))
echo "== benchmark: train_gpu --steps $steps (the switches as they are by default)"
gpu 300 train_gpu --steps "$steps" --warmup 3
echo
echo "== benchmark: the same B/4 bf16 without the bf16 gradient tensors (UMDQ_CUDA_BF16_GRAD=0: on by default, the row that keeps it so)"
gpu 120 train_gpu--no-bf16-grad UMDQ_CUDA_BF16_GRAD=0 --only b64 --precision bf16 --steps "$steps" --warmup 3
echo
echo "== benchmark: the same B/4 bf16 without dQ from a stored dS (UMDQ_CUDA_ATTN_DS=0: on by default up to 192 tokens, the encoder's attention and not the decoder's)"
gpu 120 train_gpu--no-attn-ds UMDQ_CUDA_ATTN_DS=0 --only b64 --precision bf16 --steps "$steps" --warmup 3
echo
echo "== benchmark: the same B/4 bf16 with dQ from a stored dS at every length (UMDQ_CUDA_ATTN_DS_MAX_T=384: the decoder's 257 tokens too) --profile (the profile's spans time its kernels)"
gpu 120 train_gpu--attn-ds-every UMDQ_CUDA_ATTN_DS_MAX_T=384 --only b64 --precision bf16 --profile --steps "$steps" --warmup 3
echo
echo "== benchmark: the same B/4 bf16 with --attn-split (the defaults, and the attention's last strips shared by its warps: UMDQ_CUDA_ATTN_SPLIT=1, off by default)"
gpu 120 train_gpu--attn-split --only b64 --precision bf16 --attn-split --steps "$steps" --warmup 3
echo
echo "== benchmark: the same B/4 bf16 with --gemm-tune (the defaults, and each GEMM shape cublasGemmEx runs timed against cuBLASLt's other algorithms, the fastest kept: UMDQ_CUDA_GEMM_TUNE=1, off by default; each shape's times in the log)"
gpu 120 train_gpu--gemm-tune UMDQ_CUDA_GEMM_TUNE_LOG=1 --only b64 --precision bf16 --gemm-tune --steps "$steps" --warmup 3
echo
echo "== benchmark: the same B/4 bf16 with both (--attn-split --gemm-tune)"
gpu 120 train_gpu--attn-split--gemm-tune --only b64 --precision bf16 --attn-split --gemm-tune --steps "$steps" --warmup 3
echo
echo "== benchmark: train_gpu --linears --only b64 --precision bf16, then with --gemm-tune (each Linear alone, forward and backward, against its FLOP floor)"
gpu 60 train_gpu_linears --linears --only b64 --precision bf16 --steps "$steps"
gpu 60 train_gpu_linears--gemm-tune --linears --only b64 --precision bf16 --gemm-tune --steps "$steps"
echo
echo "== benchmark: train_gpu --attention --only b64 (the bf16 attention alone: qkv fp32 or bf16, the dK dV step over 64 or 32 queries, the forward's warps over 16 or 32 rows, the last strips whole or shared)"
gpu 120 train_gpu_attention --attention --only b64 --steps "$steps"
echo
echo "== benchmark: the same B/4 bf16 with --recompute-norms (the LayerNorms and the residual again in the backward)"
gpu 120 train_gpu--recompute-norms --only b64 --precision bf16 --recompute-norms --steps "$sw_steps" --warmup 2
echo
echo "== benchmark: the same B/4 bf16 with --profile (the defaults: each op's device time against its floor)"
gpu 120 train_gpu_profile --only b64 --precision bf16 --profile --steps "$sw_steps" --warmup 2
echo
echo "== benchmark: train_gpu --only b64 --precision bf16 --switches-off (every switch off: the row each switch is timed against)"
gpu 120 train_gpu_off --only b64 --precision bf16 --switches-off --steps "$sw_steps" --warmup 2
echo
for sw in --bf16-operands --bf16-mlp --bf16-dh --gelu-epilogue --bf16-branch --bf16-grad --mlp-one-pass --bf16-bias --fused-norm "--attn-kv32 --attn-fwd32"; do
  case $sw in
    --bf16-operands) what="the LayerNorm outputs that feed a product, and qkv, in bf16, read by the GEMMs and the mma attention without a conversion" ;;
    --bf16-mlp) what="the MLP's h in bf16" ;;
    --bf16-dh) what="the MLP's h and dy W2 in bf16 (no MLP scratch)" ;;
    --gelu-epilogue) what="the MLP's h in bf16, its GELU in cuBLASLt's epilogues" ;;
    --bf16-branch) what="attention's output and proj's and fc2's in bf16" ;;
    --bf16-grad) what="those branch tensors and their gradients (and qkv's) in bf16" ;;
    --mlp-one-pass) what="those gradients and the MLP's dy W2 in bf16, its backward's gelu(h) and dh in one pass over h" ;;
    --bf16-bias) what="a bf16 y's bias in bf16, so cuBLASLt writes the bf16 y" ;;
    --fused-norm) what="gated residual + LayerNorm in one kernel" ;;
    *) what="the mma attention's dK dV step over 32 queries and its forward's warps over 32 rows (each alone: --attention below)" ;;
  esac
  log=train_gpu_$(echo "$sw" | tr -d ' -' )
  echo "== benchmark: train_gpu --only b64 --precision bf16 --switches-off $sw --profile ($what: ms/step, arena and the device time of each op against the row above)"
  gpu 120 "$log" --only b64 --precision bf16 --switches-off $sw --profile --steps "$sw_steps" --warmup 2
  echo
done
echo "== benchmark: train_gpu --graph --precision bf16 --switches-off --graph (the step recorded once and replayed, the other switches off)"
gpu 200 train_gpu_graph --precision bf16 --switches-off --graph --steps "$steps" --warmup 3
echo
echo "== benchmark: the B/4 bf16 defaults with --recompute-partial (fc1 again too)"
gpu 120 train_gpu--recompute-partial --only b64 --precision bf16 --recompute-partial --steps "$sw_steps" --warmup 2
echo
echo "== benchmark: the B/4 bf16 defaults with --recompute (whole blocks again)"
gpu 120 train_gpu--recompute --only b64 --precision bf16 --recompute --steps "$sw_steps" --warmup 3
echo
# The opt-in switches, each with its bit-for-bit tests and its B/4 bf16 row against the plain one:
# what turning one on by default needs (README, "On a GPU").
echo "| test                       | pass| fail| skip| time |"
echo "|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
echo
echo "== switches (B/4 bf16 against the plain row; tests: PASS/FAIL of the ones that check the switch)"
b64_row() { # log -> "ms img/s ratio arena device" of its b64 bf16 row
  awk -F'|' '$2 ~ /B\/4|b64/ && $3 ~ /bf16/ {gsub(/ /, "", $5); gsub(/ /, "", $6); gsub(/ /, "", $9); gsub(/ /, "", $10);
    gsub(/ /, "", $12); print $5, $6, $12, $9, $10; exit}' "$1" 2>/dev/null
}
tests_of() { # pattern -> "P pass, F fail, M missing" over the four test logs; missing: a test the
  # pattern names (listed in any log, if only as filtered out) with no PASS or FAIL line anywhere:
  # skipped, or never reached in a process that died
  local all p f m=0 name
  all=$(cat "$LOGS"/test_cuda_{ops,model}{,_untimed}.log 2>/dev/null)
  p=$(grep -cE "^PASS test_cuda_($1)" <<<"$all")
  f=$(grep -cE "^FAIL test_cuda_($1)" <<<"$all")
  for name in $(grep -oE "^(PASS|FAIL|SKIP) test_cuda_[A-Za-z0-9_]+" <<<"$all" | awk '{print $2}' |
                grep -E "^test_cuda_($1)" | sort -u); do
    grep -qE "^(PASS|FAIL) $name(:|$)" <<<"$all" || m=$((m + 1))
  done
  echo "$p pass, $f fail, $m missing"
}
defaults=$(b64_row "$LOGS/train_gpu.log")
off=$(b64_row "$LOGS/train_gpu_off.log")
echo "| switches | tests | ms/step | img/s | vs PyTorch (3,119 img/s) | arenas' peak GiB (PyTorch's peak 21) | device in use GiB |"
echo "|---|---|---|---|---|---|---|"
printf '| %s | %s | %s |\n' "the defaults (umd_cuda.h)" "-" "$(echo "${defaults:-- - - - -}" | sed 's/ / | /g')"
sw_row() { # name, test pattern, log
  local r; r=$(b64_row "$3")
  printf '| %s | %s | %s |\n' "$1" "$(tests_of "$2")" "$(echo "${r:-- - - - -}" | sed 's/ / | /g')"
}
GRAD_TESTS="grad_operand|.*bf16_grad.*" # test_cuda_ops' and test_cuda_model's bf16-gradient tests
DS_TESTS="attention_ds|attn_ds_model"    # and the dS tests (attention_ds_max_t among them)
sw_row "the defaults - UMDQ_CUDA_BF16_GRAD (=0)" "$GRAD_TESTS" "$LOGS/train_gpu--no-bf16-grad.log"
sw_row "the defaults - UMDQ_CUDA_ATTN_DS (=0)" "$DS_TESTS" "$LOGS/train_gpu--no-attn-ds.log"
sw_row "the defaults + UMDQ_CUDA_ATTN_DS_MAX_T=384" "$DS_TESTS" "$LOGS/train_gpu--attn-ds-every.log"
sw_row "the defaults + UMDQ_CUDA_ATTN_SPLIT=1" "attention_split|attention_bf16_grad|attn_split_model" "$LOGS/train_gpu--attn-split.log"
sw_row "the defaults + UMDQ_CUDA_GEMM_TUNE=1" "gemm_tune" "$LOGS/train_gpu--gemm-tune.log"
sw_row "the defaults + both" "attention_split|attn_split_model|gemm_tune|.*untimed_switches" "$LOGS/train_gpu--attn-split--gemm-tune.log"
sw_row "the defaults + recompute norms" "recompute_norms_bf16|.*every_switch_recompute_norms" "$LOGS/train_gpu--recompute-norms.log"
sw_row "the defaults + recompute partial" "recompute_partial_bf16|.*every_switch_recompute_partial" "$LOGS/train_gpu--recompute-partial.log"
sw_row "the defaults + recompute full" "recompute_bf16" "$LOGS/train_gpu--recompute.log"
printf '| %s | %s | %s |\n' "every switch off" "-" "$(echo "${off:-- - - - -}" | sed 's/ / | /g')"
sw_row "off + UMDQ_CUDA_GRAPH=1 (graph rows above)" "record|graph_parity_.*" "$LOGS/train_gpu_graph.log"
sw_row "off + UMDQ_CUDA_FUSED_NORM=1" "residual_layernorm|fused_norm.*" "$LOGS/train_gpu_fusednorm.log"
sw_row "off + UMDQ_CUDA_BF16_OPERANDS=1" "bf16_operands.*|.*_bf16_operands|linear_bf16_y|attention_bf16_qkv|attention_operand" \
  "$LOGS/train_gpu_bf16operands.log"
sw_row "off + UMDQ_CUDA_BF16_MLP=1 (with operands)" "mlp_bf16_hidden|hidden_operand|bf16_mlp.*" "$LOGS/train_gpu_bf16mlp.log"
sw_row "off + UMDQ_CUDA_BF16_DH=1 (with BF16_MLP)" "mlp_bf16_dh|bf16_dh.*" "$LOGS/train_gpu_bf16dh.log"
sw_row "off + UMDQ_CUDA_GELU_EPILOGUE=1 (with BF16_MLP)" "mlp_gelu_epilogue|mlp_scratch|gelu_epilogue_.*" "$LOGS/train_gpu_geluepilogue.log"
sw_row "off + UMDQ_CUDA_BF16_BRANCH=1 (with operands)" "gated_residual_bf16_y|mlp_bf16_y|attention_bf16_out.*|branch_operand|bf16_branch.*" \
  "$LOGS/train_gpu_bf16branch.log"
sw_row "off + UMDQ_CUDA_BF16_GRAD=1 (with BF16_BRANCH)" "$GRAD_TESTS" "$LOGS/train_gpu_bf16grad.log"
sw_row "off + UMDQ_CUDA_MLP_ONE_PASS=1 (with BF16_GRAD and BF16_DH)" "mlp_one_pass" "$LOGS/train_gpu_mlponepass.log"
sw_row "off + UMDQ_CUDA_BF16_BIAS=1 (with operands)" "linear_bf16_bias|bf16_bias.*" "$LOGS/train_gpu_bf16bias.log"
sw_row "off + UMDQ_CUDA_ATTN_KV32=1 + ATTN_FWD32=1 (each alone: --attention)" \
  "attention_kv32|attention_fwd32|attn_kv32_.*|attn_fwd32_.*" "$LOGS/train_gpu_attnkv32attnfwd32.log"
echo
# Each switch's verdict from its tests and its B/4 row against the defaults' (the same run; more
# than 1 ms a step either way, as runs differ by about that much), for its CUDA_DEFAULT_* in
# kernels/cuda/ops_cuda.cu: a row with a switch off by default turned on (verdict), and a row
# with one on by default turned off (verdict_on: the defaults must be the faster).
row_vs_defaults() { # variable, test pattern, log, what faster/slower/noise/failed tests say
  local r t np nf nm ms base
  r=$(b64_row "$3"); t=$(tests_of "$2"); np=${t%% pass*}; nf=${t#*, }; nf=${nf%% fail*}
  nm=${t##*, }; nm=${nm%% missing}; ms=${r%% *} base=${defaults%% *}
  if [ -z "$r" ] || [ -z "$defaults" ] || [ "$ms" = "-" ]; then
    echo "verdict: $1: no B/4 row to time it (tests: $t)"
  elif [ "$nf" != 0 ] || [ "$np" = 0 ] || [ "$nm" != 0 ]; then
    echo "verdict: $1: tests not all passed: $7 (tests: $t)"
  else
    awk -v v="$1" -v a="$ms" -v b="$base" -v t="$t" -v faster="$4" -v slower="$5" -v noise="$6" 'BEGIN {
      d = a - b; w = noise
      if (d < -1) w = faster
      if (d > 1) w = slower
      printf("verdict: %s: %.1f ms a step against the defaults %.1f (%+.1f ms; tests %s): %s\n", v, a, b, d, t, w) }'
  fi
}
verdict() { row_vs_defaults "$1" "$2" "$3" "faster: on by default" "slower: keep off" "within noise: keep off" "keep off"; }
verdict_on() { row_vs_defaults "$1" "$2" "$3" "faster without it: off by default" "slower without it: keep on" \
  "within noise: on, off or either" "turn it off until they pass"; }
verdict_on UMDQ_CUDA_BF16_GRAD=0 "$GRAD_TESTS" "$LOGS/train_gpu--no-bf16-grad.log"
verdict_on UMDQ_CUDA_ATTN_DS=0 "$DS_TESTS" "$LOGS/train_gpu--no-attn-ds.log"
row_vs_defaults UMDQ_CUDA_ATTN_DS_MAX_T=384 "$DS_TESTS" "$LOGS/train_gpu--attn-ds-every.log" \
  "faster: dS at every length by default" "slower: keep the default length" "within noise: keep the default length" \
  "keep the default length"
verdict UMDQ_CUDA_ATTN_SPLIT "attention_split|attention_bf16_grad|attn_split_model" "$LOGS/train_gpu--attn-split.log"
verdict UMDQ_CUDA_GEMM_TUNE "gemm_tune" "$LOGS/train_gpu--gemm-tune.log"
verdict "UMDQ_CUDA_ATTN_SPLIT and UMDQ_CUDA_GEMM_TUNE" "attention_split|attn_split_model|gemm_tune|.*untimed_switches" \
  "$LOGS/train_gpu--attn-split--gemm-tune.log"
# the tuner's shapes and forward plans (UMDQ_CUDA_GEMM_TUNE_LOG): how many took another
# algorithm, and the time of one call of each with the default algorithm (cublasGemmEx's, the
# plan's own) and with the kept one, summed
awk '/^umdq gemm tune:/ {
    n++; match($0, /(cublasGemmEx|its algorithm) [0-9.]+ ms/); d = substr($0, RSTART, RLENGTH)
    gsub(/[^0-9.]/, "", d); d += 0; k = d
    if (match($0, /took #[0-9]+, [0-9.]+ ms/)) { t++; s = substr($0, RSTART, RLENGTH); sub(/.*, /, "", s); k = s + 0 }
    sd += d; sk += k }
  END { if (n) printf("note: GEMM tuning: %d shapes and plans, %d on another algorithm; one call of each: %.3f ms on the default algorithms, %.3f ms tuned\n", n, t, sd, sk) }' \
  "$LOGS/train_gpu--gemm-tune.log" 2>/dev/null
echo
# what cuBLASLt took: a bf16 D with an fp32 bias (else the fp32 scratch), the GELU epilogues
grep -ho "linear_fwd and mlp_fwd have put a bf16 y through the fp32 scratch[^;]*" "$LOGS"/train_gpu_*.log 2>/dev/null | sort -u | sed 's/^/note: /'
grep -ho "the MLP's GELU in cuBLASLt's epilogues: [^;]*" "$LOGS"/train_gpu.log "$LOGS"/train_gpu_geluepilogue.log 2>/dev/null | tail -n 1 | sed 's/^/note: /'
if grep -l "^train_gpu: skipped" "$LOGS"/train_gpu*.log >/dev/null 2>&1; then
  echo "train_gpu skipped its rows (no device it could use): $(grep -h -m 1 "^train_gpu: skipped" "$LOGS"/train_gpu*.log | head -n 1)"
  failed=1
fi
[ ${#cut[@]} -gt 0 ] && echo "cut at the budget (${budget} s): ${cut[*]}"
[ ${#skipped[@]} -gt 0 ] && echo "skipped for the budget (${budget} s; --budget S gives more): ${skipped[*]}"
echo
echo "== gpu-check: $([ $failed = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t_start )) s; logs in $LOGS"
exit $failed

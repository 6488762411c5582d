#!/usr/bin/env bash
# tests/long/gpu_check_emulated.sh (make check-long): make gpu-check's whole run as a GPU machine
# takes it (a bundle, then --prebuilt), on the emulated CUDA device (tests/cuemu): the bundle's
# libumd_cuda.so replaced by the emulated backend, train_gpu's rows at smoke size
# (UMDQ_BENCH_SMOKE=1), the test programs without the op tests that take minutes emulated
# (GPU_CHECK_EXCEPT=CUEMU_SLOW) and with room for the rest (GPU_CHECK_TEST_LIMIT). What it checks
# is the script's own work, so that a run on a device is not spent on a fault of the script:
# every row runs, within the budget; the test table, the switch table and the six verdicts come
# out with figures where their rows and tests ran; the tuner's log is read; the script says
# passed. Not the speed: the emulator's says nothing. About 6 minutes on 2 cores.
# umdq-timeout: 2400
set -u
. "$(dirname "$0")/../cuemu/emulated.sh"
cuemu_setup gpu_check_emulated
n=gpu_check_emulated
tmp=$(mktemp -d "${TMPDIR:-/tmp}/umdq-gcb.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
logs=$TEST_OUT/$n
rm -rf "$logs"
if ! BUILD=$B scripts/gpu-check.sh --bundle "$tmp/bundle" >"$TEST_OUT/$n-bundle.log" 2>&1; then
  echo "FAIL ${n}_runs: gpu-check --bundle failed: $(tail -n 2 "$TEST_OUT/$n-bundle.log" | tr '\n' ' ')"
  exit 1
fi
cp "$lib" "$tmp/bundle/libumd_cuda.so" || exit 1
out=$TEST_OUT/$n.log
UMDQ_BENCH_SMOKE=1 OPENBLAS_NUM_THREADS=1 GPU_CHECK_EXCEPT=$CUEMU_SLOW GPU_CHECK_TEST_LIMIT=900 \
  LOGS=$logs BUILD=$B timeout 2300 scripts/gpu-check.sh --prebuilt "$tmp/bundle" --steps 1 \
  --budget 2200 >"$out" 2>&1
rc=$?

result() { # name, failure message or empty
  if [ -n "$2" ]; then echo "FAIL ${n}_$1: $2 (see $out)"; else echo "PASS ${n}_$1"; fi
}
why=""
[ $rc != 0 ] && why="exit status $rc: $(grep -E '^(  )?FAIL|^== gpu-check' "$out" | head -n 5 | tr '\n' ' ')"
grep -q '^== gpu-check: passed in' "$out" || why=${why:-"no \"== gpu-check: passed\" line"}
grep -qE '^(cut at|skipped for) the budget' "$out" && why=${why:-"rows cut or skipped for the budget"}
result runs "$why"

# the test table (printed twice: after the tests, and again before the switches): the four
# programs, each with tests passed and none failed
why=""
for p in test_cuda_ops test_cuda_model test_cuda_ops_untimed test_cuda_model_untimed; do
  row=$(grep -E "^\| $p +\|" "$out" | tail -n 1)
  np=$(awk -F'|' '{gsub(/ /, "", $3); print $3}' <<<"$row")
  nf=$(awk -F'|' '{gsub(/ /, "", $4); print $4}' <<<"$row")
  if [ -z "$row" ]; then why="no row for $p"; break; fi
  if ! [ "$np" -gt 0 ] 2>/dev/null || [ "$nf" != 0 ]; then why="$p: $row"; break; fi
done
result test_table "$why"

# the switch table: 22 rows (the defaults, the switches on top, every switch off, each switch on
# top of that), each with its ms/step (the fourth column) a number, as each row's log holds a B/4
# bf16 row
why=""
rows=$(sed -n '/^== switches/,/^$/p' "$out" | grep -E '^\| ' | grep -vE '^\| switches \||^\|---')
[ "$(wc -l <<<"$rows")" = 22 ] || why="$(wc -l <<<"$rows") rows in the switch table, not 22"
bad=$(awk -F'|' '{ms = $4; gsub(/ /, "", ms); if (ms !~ /^[0-9.]+$/) print $2}' <<<"$rows" | head -n 3 | xargs)
[ -n "$bad" ] && why=${why:-"no ms/step for: $bad"}
result switch_table "$why"

# the six verdicts: each from a B/4 row; a switch whose tests all ran gets its figures (ATTN_DS's
# row without it does here), one with a left-out test is off for it, and none says a test failed
why=""
v=$(grep '^verdict: ' "$out")
[ "$(grep -c . <<<"$v")" = 6 ] || why="$(grep -c . <<<"$v") verdict lines, not 6"
grep -q 'no B/4 row' <<<"$v" && why=${why:-"$(grep -m 1 'no B/4 row' <<<"$v")"}
grep -qE '[1-9][0-9]* fail' <<<"$v" && why=${why:-"$(grep -m 1 -E '[1-9][0-9]* fail' <<<"$v")"}
grep -qE '^verdict: UMDQ_CUDA_ATTN_DS=0: [0-9.]+ ms a step against the defaults [0-9.]+ \(' <<<"$v" ||
  why=${why:-"ATTN_DS has no timed verdict: $(grep -m 1 ATTN_DS <<<"$v")"}
result verdicts "$why"

# the tuner's log, read into its note; the profile's attention spans in the row of dS at every
# length
why=""
grep -qE '^note: GEMM tuning: [1-9][0-9]* shapes and plans' "$out" || why="no GEMM tuning note"
grep -qE 'attention_bwd:dK_dV_dS [0-9.]+ \([0-9]+ calls\)' "$logs/train_gpu--attn-ds-every.log" 2>/dev/null ||
  why=${why:-"no dK_dV_dS span in train_gpu--attn-ds-every.log"}
result reports "$why"

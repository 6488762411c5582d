#!/usr/bin/env bash
# tests/run.sh [--long] [PATTERN]: run the unit test binaries (build/tests/test_*) and the shell
# tests (tests/integration/*.sh, tests/web/*.sh; with --long: tests/long/*.sh), count the lines
# they print (PASS name | FAIL name: why | SKIP name: why) and end with "N passed, N failed[, N skipped]".
# A program that exits non-zero without printing FAIL counts as one failure; one that exits 77
# without printing anything counts as one skip. Output of each program goes to $TEST_OUT/NAME.log.
# Each runs within $TEST_TIMEOUT seconds (900), or, unless that is set, a script's own
# "# umdq-timeout: S" line.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
long=0
pattern=""
for a in "$@"; do
  case $a in
    --long) long=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) pattern=$a ;;
  esac
done
# the build directory, absolute: $BUILD as given where it is, else below this directory
case $BUILD in /*) build_abs=$BUILD ;; *) build_abs=$PWD/$BUILD ;; esac
export TEST_OUT=${TEST_OUT:-$build_abs/test-output}
mkdir -p "$TEST_OUT"
export UMDQ_BUILD=$build_abs
export PATH=$build_abs/bin:$PATH

progs=()
if [ $long = 1 ]; then
  for f in tests/long/*.sh; do [ -e "$f" ] && progs+=("$f"); done
else
  for f in "$BUILD"/tests/test_*; do [ -x "$f" ] && progs+=("$f"); done
  for f in tests/integration/*.sh tests/web/*.sh; do [ -e "$f" ] && progs+=("$f"); done
fi

pass=0; fail=0; skip=0; failed_names=()
start_all=$(date +%s)
for p in "${progs[@]}"; do
  name=$(basename "$p"); name=${name%.sh}
  if [ -n "$pattern" ] && [[ $name != *$pattern* ]]; then continue; fi
  log=$TEST_OUT/$name.log
  t0=$(date +%s)
  # a script may ask for more than the default limit: a line "# umdq-timeout: SECONDS"
  limit=${TEST_TIMEOUT:-900}
  case $p in
    *.sh) own=$(sed -n 's/^# umdq-timeout: *\([0-9][0-9]*\).*/\1/p' "$p" | head -n 1)
          [ -n "$own" ] && [ -z "${TEST_TIMEOUT:-}" ] && limit=$own
          timeout -k 10 "$limit" bash "$p" >"$log" 2>&1; rc=$? ;;
    *)    timeout -k 10 "$limit" "$p" >"$log" 2>&1; rc=$? ;;
  esac
  t1=$(date +%s)
  np=$(grep -c '^PASS ' "$log"); nf=$(grep -c '^FAIL ' "$log"); ns=$(grep -c '^SKIP ' "$log")
  if [ "$rc" = 77 ] && [ $((np + nf + ns)) = 0 ]; then
    echo "SKIP $name: $(tail -n 1 "$log")" >>"$log"; ns=1
  elif [ "$rc" != 0 ] && [ "$nf" = 0 ]; then
    why="exited with status $rc"; [ "$rc" = 124 ] && why="timed out"
    echo "FAIL $name: $why (see $log)" >>"$log"; nf=1
  elif [ $((np + nf + ns)) = 0 ]; then
    echo "FAIL $name: printed no PASS/FAIL/SKIP line (see $log)" >>"$log"; nf=1
  fi
  grep -E '^(FAIL|SKIP) ' "$log" | sed 's/^/  /'
  printf '%-28s %3d passed %3d failed %3d skipped  %4ss\n' "$name" "$np" "$nf" "$ns" $((t1 - t0))
  pass=$((pass + np)); fail=$((fail + nf)); skip=$((skip + ns))
  [ "$nf" -gt 0 ] && failed_names+=("$name")
done
echo "total time $(( $(date +%s) - start_all ))s; logs in $TEST_OUT"
[ ${#failed_names[@]} -gt 0 ] && echo "failing: ${failed_names[*]}"
if [ $skip -gt 0 ]; then
  echo "$pass passed, $fail failed, $skip skipped"
else
  echo "$pass passed, $fail failed"
fi
[ $fail = 0 ]

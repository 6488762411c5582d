#!/usr/bin/env bash
# scripts/bench.sh [NAME...] (make bench): run the benchmarks built in $BUILD/bench/ (BUILD defaults
# to build) one after the other, from the repository root, each under a header, passing their output
# through; with NAMEs, only those. Each benchmark prints its figures with a baseline measured in the
# same run and the ratio; a slow machine fails none. Exit status 1 when a benchmark's work failed
# (it exited non-zero) or a NAME is not built, else 0. Set UMDQ_BENCH_ARGS_NAME (e.g.
# UMDQ_BENCH_ARGS_dispatch="--jobs 500") to pass arguments to one benchmark.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
case ${1:-} in
  -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
esac
case $BUILD in
  /*) export UMDQ_BUILD=$BUILD ;;
  *)  export UMDQ_BUILD=$PWD/$BUILD ;;
esac

progs=()
if [ $# -gt 0 ]; then
  for name in "$@"; do
    name=${name##*/}; name=${name%.c}
    if [ ! -x "$BUILD/bench/$name" ]; then
      have=$(ls "$BUILD/bench" 2>/dev/null | xargs)
      echo "bench.sh: $BUILD/bench/$name is not built (built: ${have:-none}; run make BUILD=$BUILD)" >&2
      exit 1
    fi
    progs+=("$BUILD/bench/$name")
  done
else
  for f in "$BUILD"/bench/*; do
    [ -f "$f" ] && [ -x "$f" ] && progs+=("$f")
  done
  if [ ${#progs[@]} = 0 ]; then
    echo "bench.sh: no benchmarks in $BUILD/bench/ (run make BUILD=$BUILD first)" >&2
    exit 1
  fi
fi

echo "umdq benchmarks: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $BUILD/"
failed=()
for p in "${progs[@]}"; do
  name=$(basename "$p")
  var=UMDQ_BENCH_ARGS_${name//[^A-Za-z0-9_]/_}
  read -r -a args <<<"${!var:-}"
  echo
  echo "== $name${args[*]:+ ${args[*]}}"
  t0=$(date +%s)
  "$p" "${args[@]}"
  rc=$?
  if [ $rc != 0 ]; then
    echo "== $name: FAILED (exit status $rc) after $(( $(date +%s) - t0 )) s"
    failed+=("$name")
  else
    echo "== $name: done in $(( $(date +%s) - t0 )) s"
  fi
done
echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "${#progs[@]} benchmark(s), ${#failed[@]} failed: ${failed[*]}"
  exit 1
fi
echo "${#progs[@]} benchmark(s), all ran"

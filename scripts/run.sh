#!/usr/bin/env bash
# scripts/run.sh (make run): start a local daemon and one worker per device (CPU workers when there
# is no GPU), submit examples/quickstart.json, show its progress, print the results table and a
# dashboard link.
#   UMDQ_HOME (default ~/.umdq), UMDQ_PORT (default 5755), UMDQ_CPU_WORKERS (default: none on a
#   machine with GPUs, else one per core; the quickstart's jobs use one thread each), UMDQ_SWEEP
#   (default examples/quickstart.json)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
UMDQ=$PWD/$BUILD/bin/umdq
export UMDQ_HOME=${UMDQ_HOME:-$HOME/.umdq}
port=${UMDQ_PORT:-5755}
# one worker per GPU when there are GPUs (umdq up starts them), else one CPU worker per core
if [ -n "${UMDQ_CPU_WORKERS:-}" ]; then
  workers=$UMDQ_CPU_WORKERS
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  workers=0
else
  workers=$(nproc)
fi
sweep=${UMDQ_SWEEP:-examples/quickstart.json}
name=$(jq -r .name "$sweep")

"$UMDQ" up --port "$port" --cpu-workers "$workers"
"$UMDQ" submit "$sweep"
rc=0
"$UMDQ" wait "$name" || rc=$?
echo
"$UMDQ" ls "$name"
echo
echo "dashboard:       $("$UMDQ" dashboard 2>/dev/null || echo "(unavailable: $UMDQ dashboard says why)") (one-time link)"
echo "results as CSV:  $UMDQ export $name --format csv"
echo "job logs:        $UMDQ logs JOB"
echo "stop everything: $UMDQ down"
exit $rc

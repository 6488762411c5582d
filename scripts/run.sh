#!/usr/bin/env bash
# scripts/run.sh (make run): start a local daemon and one worker per device (CPU workers when there
# is no GPU), submit examples/quickstart.json, show its progress, print the results table.
#   UMDQ_HOME (default ~/.umdq), UMDQ_PORT (default 5755), UMDQ_CPU_WORKERS (default: one per core;
#   the quickstart's jobs use one thread each), UMDQ_SWEEP (default examples/quickstart.json)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
UMDQ=$PWD/$BUILD/bin/umdq
export UMDQ_HOME=${UMDQ_HOME:-$HOME/.umdq}
port=${UMDQ_PORT:-5755}
workers=${UMDQ_CPU_WORKERS:-$(nproc)}
sweep=${UMDQ_SWEEP:-examples/quickstart.json}
name=$(jq -r .name "$sweep")

"$UMDQ" up --port "$port" --cpu-workers "$workers"
"$UMDQ" submit "$sweep"
rc=0
"$UMDQ" wait "$name" || rc=$?
echo
"$UMDQ" ls "$name"
echo
echo "results as CSV:  $UMDQ export $name --format csv"
echo "job logs:        $UMDQ logs JOB"
echo "stop everything: $UMDQ down"
exit $rc

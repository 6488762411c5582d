# tests/lib.sh: helpers for the shell integration tests (source it).
#
# Each test gets its own home under a temporary directory, a daemon on free loopback ports
# (port 0: umdqd.json says which), real worker processes, and a trap that stops them all.
# Results are printed as "PASS name" / "FAIL name: why" / "SKIP name: why" lines (tests/run.sh).

set -u
BIN=${UMDQ_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build}/bin
T_TMP=$(mktemp -d "${TMPDIR:-/tmp}/umdq-test.XXXXXX")
export UMDQ_HOME=$T_TMP/home
T_PIDS=()
T_FAILED=0

t_cleanup() {
  local p
  for p in "${T_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.2
  for p in "${T_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  # children of workers (job process groups) that outlived their worker
  pkill -KILL -f "$T_TMP" 2>/dev/null
  wait 2>/dev/null
  if [ "${KEEP_TMP:-0}" = 1 ] || [ "$T_FAILED" != 0 ]; then
    echo "test files kept in $T_TMP"
  else
    rm -rf "$T_TMP"
  fi
}
trap t_cleanup EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: ${*:2}"; T_FAILED=1; }
skip() { echo "SKIP $1: ${*:2}"; }
# check NAME COMMAND...: PASS when the command succeeds, else FAIL with its output.
check() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"; fi
}

need_bins() {
  local b
  for b in umdqd umdq-worker umdq; do
    if [ ! -x "$BIN/$b" ]; then echo "SKIP ${1:-integration}: $BIN/$b is not built"; exit 0; fi
  done
  command -v jq >/dev/null || { echo "SKIP ${1:-integration}: jq is not installed"; exit 0; }
}

# wait_for SECONDS COMMAND...: poll every 50 ms until COMMAND succeeds; 1 on timeout.
wait_for() {
  local limit=$1; shift
  local end=$(( $(date +%s%N) + limit * 1000000000 ))
  while [ "$(date +%s%N)" -lt $end ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  return 1
}

# start_daemon [extra umdqd args]: starts umdqd on free ports in $UMDQ_HOME; sets DAEMON_PID, URL,
# ZMQ, TOKEN.
start_daemon() {
  mkdir -p "$UMDQ_HOME"
  rm -f "$UMDQ_HOME/umdqd.json"
  "$BIN/umdqd" --home "$UMDQ_HOME" --http 127.0.0.1:0 --zmq 'tcp://127.0.0.1:*' "$@" \
    >>"$T_TMP/umdqd.out" 2>&1 &
  DAEMON_PID=$!
  disown "$DAEMON_PID"   # no "Killed" notices when a test kills it on purpose
  T_PIDS+=("$DAEMON_PID")
  if ! wait_for 10 test -s "$UMDQ_HOME/umdqd.json"; then
    echo "umdqd did not start; its output:"; tail -n 20 "$T_TMP/umdqd.out" "$UMDQ_HOME/umdqd.log" 2>/dev/null
    return 1
  fi
  URL=$(jq -r .http "$UMDQ_HOME/umdqd.json")
  ZMQ=$(jq -r .zmq "$UMDQ_HOME/umdqd.json")
  TOKEN=$(cat "$UMDQ_HOME/token")
  wait_for 10 api GET /api/health
}

# restart_daemon: start a new daemon on the same ZeroMQ and HTTP ports (after a kill).
restart_daemon() {
  local hp=${URL##*:} zp=${ZMQ##*:}
  rm -f "$UMDQ_HOME/umdqd.json"
  "$BIN/umdqd" --home "$UMDQ_HOME" --http "127.0.0.1:$hp" --zmq "tcp://127.0.0.1:$zp" \
    >>"$T_TMP/umdqd.out" 2>&1 &
  DAEMON_PID=$!
  disown "$DAEMON_PID"
  T_PIDS+=("$DAEMON_PID")
  wait_for 10 test -s "$UMDQ_HOME/umdqd.json" && wait_for 10 api GET /api/health
}

# start_worker NAME [extra args]: a CPU worker; prints its pid into WORKER_PID.
start_worker() {
  local name=$1; shift
  mkdir -p "$T_TMP/work"
  "$BIN/umdq-worker" --connect "$ZMQ" --cpu --name "$name" --workdir "$T_TMP/work" "$@" \
    >>"$T_TMP/worker-${name//\//_}.out" 2>&1 &
  WORKER_PID=$!
  disown "$WORKER_PID"
  T_PIDS+=("$WORKER_PID")
}

# api METHOD PATH [curl args...]: JSON from the daemon (token included); fails on HTTP >= 400.
api() {
  local m=$1 p=$2; shift 2
  curl -sS --fail-with-body -X "$m" -H "Authorization: Bearer $TOKEN" "$@" "$URL$p"
}

# submit FILE: POST a sweep spec; prints the JSON answer.
submit() { api POST /api/sweeps -H 'Content-Type: application/json' --data-binary "@$1"; }

# jobs_in SWEEP STATE: how many jobs of the sweep are in STATE.
jobs_in() { api GET "/api/sweeps/$1?jobs=0" | jq -r ".sweep.counts.$2 // 0"; }
sweep_done() { [ "$(api GET "/api/sweeps/$1?jobs=0" | jq -r .sweep.state)" = DONE ]; }

# sql QUERY: read the daemon's database (read-only).
sql() { sqlite3 -readonly "$UMDQ_HOME/umdq.db" "$@"; }

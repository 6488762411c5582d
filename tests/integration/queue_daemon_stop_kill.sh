#!/usr/bin/env bash
# The daemon SIGSTOPped while a job prints metrics and log lines (the reports wait in its socket),
# then SIGKILLed and restarted: the worker sends again what the dead daemon never stored, and
# every metric point and every log byte of the attempt is stored exactly once (docs/protocol.md,
# "Watermarks"). Twice: the job ends while the daemon is stopped (its `finished` must wait for the
# reports sent again), and the job runs on past the restart.
. "$(dirname "$0")/../lib.sh"
need_bins queue_daemon_stop_kill

start_daemon || { fail queue_daemon_stop_kill_daemon "umdqd did not start"; exit 1; }
start_worker it/sk

# job.sh N: N rounds, 0.2 s apart: a metric line (m = 7 * step), a log line; in round 4 a burst of
# 3000 lines (more than one 64 KiB log message). NOSLEEP=1 prints the same without waiting.
cat >"$T_TMP/job.sh" <<'SH'
#!/bin/sh
n=$1 i=1
while [ $i -le "$n" ]; do
  printf '{"umdq":"metric","step":%d,"m":%d}\n' $i $((7 * i))
  echo "round $i of $n: some words to make the line longer"
  if [ $i = 4 ]; then
    awk -v r=$i 'BEGIN { for (k = 1; k <= 3000; k++) printf "burst %d line %04d .........................................\n", r, k }'
  fi
  [ "${NOSLEEP:-0}" = 1 ] || sleep 0.2
  i=$((i + 1))
done
printf '{"umdq":"result","rounds":%d}\n' "$n"
SH

# round NAME ROUNDS: one job; stop the daemon once 2 points are stored, kill it 2.5 s later, restart
round() {
  local name=$1 n=$2 sid job
  cat >"$T_TMP/$name.json" <<JSON
{ "name": "$name", "base": { "kind": "command", "command": "sh $T_TMP/job.sh {params.n}", "params": {"n": $n} } }
JSON
  sid=$(submit "$T_TMP/$name.json" | jq -r .sweep.id)
  job=$(api GET "/api/sweeps/$sid" | jq -r '.jobs[0].id')
  points() { [ "$(sql "SELECT COUNT(*) FROM metrics WHERE job_id = $job")" -ge 2 ]; }
  wait_for 20 points || { fail "${name}_started" "no metric stored"; return; }
  kill -STOP "$DAEMON_PID"
  sleep 2.5                       # the job prints on; its reports wait in the stopped daemon's socket
  kill -KILL "$DAEMON_PID"; kill -CONT "$DAEMON_PID" 2>/dev/null
  sleep 0.3
  restart_daemon || { fail "${name}_restarts" "$(tail -n 5 "$UMDQ_HOME/umdqd.log")"; return; }
  wait_for 60 sweep_done "$sid" || { fail "${name}_finishes" "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; return; }
  [ "$(jobs_in "$sid" SUCCEEDED)" = 1 ] && [ "$(sql "SELECT COUNT(*) FROM attempts WHERE job_id = $job")" = 1 ] \
    && pass "${name}_succeeded_once" || fail "${name}_succeeded_once" "$(sql "SELECT n, state, error FROM attempts WHERE job_id = $job")"
  local got
  got=$(sql "SELECT COUNT(*) || ' ' || SUM(value = 7 * step) || ' ' || MIN(step) || ' ' || MAX(step) FROM metrics WHERE job_id = $job")
  [ "$got" = "$n $n 1 $n" ] && pass "${name}_every_point_once" || fail "${name}_every_point_once" "count, right, min, max: $got (want $n points)"
  { echo "== attempt 1 on it/sk =="; NOSLEEP=1 sh "$T_TMP/job.sh" "$n"; } >"$T_TMP/$name.want"
  if cmp -s "$T_TMP/$name.want" "$UMDQ_HOME/logs/$job.log"; then
    pass "${name}_every_log_byte_once"
  else
    fail "${name}_every_log_byte_once" "$(diff "$T_TMP/$name.want" "$UMDQ_HOME/logs/$job.log" | head -n 4 | tr '\n' ' ')"
  fi
  [ "$(sql "SELECT COUNT(*) FROM results WHERE job_id = $job")" = 1 ] && pass "${name}_result_once" \
    || fail "${name}_result_once" "$(sql "SELECT attempt, key, value FROM results WHERE job_id = $job")"
}

round queue_daemon_stop_kill_ends_while_stopped 8   # ~1.6 s: done before the kill
round queue_daemon_stop_kill_runs_on 30             # ~6 s: runs on after the restart
exit 0

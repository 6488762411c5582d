#!/usr/bin/env bash
# A worker killed with SIGKILL mid-job and started again at once under the same name (as systemd or
# `umdq up` would): the new process is welcomed at once, the old attempt is LOST and the job runs
# again on the new process, and the old attempt's program (behind `sh -c`) does not outlive its
# worker.
. "$(dirname "$0")/../lib.sh"
need_bins queue_worker_restart

start_daemon || { fail queue_worker_restart_daemon "umdqd did not start"; exit 1; }
start_worker it/r; pid1=$WORKER_PID

mark="30.0$$$RANDOM"
cat >"$T_TMP/sweep.json" <<JSON
{ "name": "it-restart",
  "base": { "kind": "command",
            "command": "if [ \"\$UMDQ_ATTEMPT\" = 1 ]; then sleep $mark; else sleep 0.2; fi; printf '{\"umdq\":\"result\",\"attempt\":%s}\\\\n' \"\$UMDQ_ATTEMPT\"" } }
JSON
sid=$(submit "$T_TMP/sweep.json" | jq -r .sweep.id)
job=$(api GET "/api/sweeps/$sid" | jq -r '.jobs[0].id')
sleeping() { pgrep -f "sleep $mark" >/dev/null; }
if ! wait_for 15 sleeping; then fail queue_worker_restart_started "attempt 1 never started"; exit 0; fi

kill -KILL "$pid1"
t0=$(date +%s%N)
start_worker it/r; pid2=$WORKER_PID

lost() { [ "$(sql "SELECT state FROM attempts WHERE job_id = $job AND n = 1")" = LOST ]; }
if wait_for 10 lost; then
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  # well within the 3 heartbeats (3 s) a silent worker is given
  if [ $ms -le 2000 ]; then pass queue_worker_restart_lost_at_once; else fail queue_worker_restart_lost_at_once "took ${ms} ms"; fi
else
  fail queue_worker_restart_lost_at_once "attempt 1 never marked LOST"
fi
gone() { ! pgrep -f "sleep $mark" >/dev/null; }
if wait_for 2 gone; then pass queue_worker_restart_old_program_gone; else fail queue_worker_restart_old_program_gone "sleep $mark still runs: $(pgrep -af "sleep $mark")"; fi
registered() { grep -q "registered as it/r" <(sed -n "/pid $pid2\\]\\|\\[$pid2\\]/p" "$T_TMP/worker-it_r.out"); }
if wait_for 5 registered; then pass queue_worker_restart_welcomed; else fail queue_worker_restart_welcomed "$(tail -n 5 "$T_TMP/worker-it_r.out")"; fi
if grep "\\[$pid2\\]" "$T_TMP/worker-it_r.out" | grep -qE "refused|rejected"; then
  fail queue_worker_restart_not_refused "$(grep "\\[$pid2\\]" "$T_TMP/worker-it_r.out" | grep -E "refused|rejected" | head -n 2)"
else
  pass queue_worker_restart_not_refused
fi
if wait_for 30 sweep_done "$sid"; then pass queue_worker_restart_sweep_finishes; else fail queue_worker_restart_sweep_finishes "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
st2=$(sql "SELECT state || ' ' || worker_id FROM attempts WHERE job_id = $job AND n = 2")
[ "$st2" = "SUCCEEDED it/r" ] && pass queue_worker_restart_rerun || fail queue_worker_restart_rerun "attempt 2: '$st2'"
kill -0 "$pid2" 2>/dev/null && pass queue_worker_restart_alive || fail queue_worker_restart_alive "the new worker died"
exit 0

#!/usr/bin/env bash
# The daemon killed with SIGKILL mid-sweep and restarted: the workers reconnect, the sweep finishes,
# no job is lost or recorded twice.
. "$(dirname "$0")/../lib.sh"
need_bins queue_daemon_kill

start_daemon || { fail queue_daemon_kill_daemon "umdqd did not start"; exit 1; }
start_worker it/a
start_worker it/b

cat >"$T_TMP/sweep.json" <<'JSON'
{ "name": "it-restart",
  "base": { "kind": "command", "params": {"x": 0},
            "command": "for i in 1 2 3 4 5 6; do printf '{\"umdq\":\"metric\",\"step\":%d,\"v\":%s}\\n' $i {params.x}; sleep 0.1; done; printf '{\"umdq\":\"result\",\"x\":%s}\\n' {params.x}" },
  "grid": { "params.x": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] } }
JSON
sid=$(submit "$T_TMP/sweep.json" | jq -r .sweep.id)
some_done() { [ "$(sql "SELECT COUNT(*) FROM jobs WHERE state = 'SUCCEEDED'")" -ge 3 ]; }
wait_for 30 some_done || { fail queue_daemon_kill_progress "no job finished before the kill"; exit 0; }
kill -KILL "$DAEMON_PID"
sleep 1.5   # workers keep running their jobs and buffer their reports
if restart_daemon; then pass queue_daemon_kill_restarts; else fail queue_daemon_kill_restarts "$(tail -n 5 "$UMDQ_HOME/umdqd.log")"; exit 0; fi
if wait_for 60 sweep_done "$sid"; then pass queue_daemon_kill_sweep_finishes; else fail queue_daemon_kill_sweep_finishes "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
[ "$(jobs_in "$sid" SUCCEEDED)" = 10 ] && pass queue_daemon_kill_all_succeeded || fail queue_daemon_kill_all_succeeded "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"
[ "$(sql 'SELECT COUNT(*) FROM jobs')" = 10 ] && pass queue_daemon_kill_no_job_added || fail queue_daemon_kill_no_job_added "$(sql 'SELECT COUNT(*) FROM jobs') jobs"
dups=$(sql "SELECT COUNT(*) FROM (SELECT job_id FROM results GROUP BY job_id HAVING COUNT(*) != 1)")
nres=$(sql "SELECT COUNT(*) FROM results")
[ "$dups" = 0 ] && [ "$nres" = 10 ] && pass queue_daemon_kill_results_once || fail queue_daemon_kill_results_once "results $nres, duplicated $dups"
nsucc=$(sql "SELECT COUNT(*) FROM attempts WHERE state = 'SUCCEEDED'")
[ "$nsucc" = 10 ] && pass queue_daemon_kill_one_successful_attempt_each || fail queue_daemon_kill_one_successful_attempt_each "$nsucc successful attempts"
exit 0

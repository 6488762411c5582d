#!/usr/bin/env bash
# A worker killed with SIGKILL mid-job: its attempt is LOST, the job runs again on the other
# worker, and every job ends with exactly one set of results.
. "$(dirname "$0")/../lib.sh"
need_bins queue_worker_kill

start_daemon || { fail queue_worker_kill_daemon "umdqd did not start"; exit 1; }
start_worker it/a; pid_a=$WORKER_PID
start_worker it/b; pid_b=$WORKER_PID

cat >"$T_TMP/sweep.json" <<'JSON'
{ "name": "it-kill",
  "base": { "kind": "command", "params": {"x": 0},
            "command": "sleep 2; printf '{\"umdq\":\"result\",\"x\":%s}\\n' {params.x}" },
  "grid": { "params.x": [1, 2, 3, 4] } }
JSON
sid=$(submit "$T_TMP/sweep.json" | jq -r .sweep.id)
running_on_a() { [ "$(sql "SELECT COUNT(*) FROM attempts WHERE worker_id = 'it/a' AND state = 'RUNNING'")" -ge 1 ]; }
if ! wait_for 15 running_on_a; then fail queue_worker_kill_dispatch "nothing ran on it/a"; exit 0; fi
victim=$(sql "SELECT job_id FROM attempts WHERE worker_id = 'it/a' AND state = 'RUNNING' LIMIT 1")
t0=$(date +%s%N)
kill -KILL "$pid_a"
requeued() { [ "$(sql "SELECT state FROM attempts WHERE job_id = $victim AND n = 1")" = LOST ]; }
if wait_for 10 requeued; then
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ $ms -le 3500 ]; then pass queue_worker_kill_detected_in_3_5s; else fail queue_worker_kill_detected_in_3_5s "took ${ms} ms"; fi
else
  fail queue_worker_kill_detected_in_3_5s "attempt never marked LOST"
fi
if wait_for 60 sweep_done "$sid"; then pass queue_worker_kill_sweep_finishes; else fail queue_worker_kill_sweep_finishes "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
[ "$(jobs_in "$sid" SUCCEEDED)" = 4 ] && pass queue_worker_kill_all_succeeded || fail queue_worker_kill_all_succeeded "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"
w2=$(sql "SELECT worker_id FROM attempts WHERE job_id = $victim AND n = 2")
[ "$w2" = it/b ] && pass queue_worker_kill_rerun_on_other_worker || fail queue_worker_kill_rerun_on_other_worker "attempt 2 on '$w2'"
dups=$(sql "SELECT COUNT(*) FROM (SELECT job_id FROM results GROUP BY job_id HAVING COUNT(DISTINCT attempt) != 1 OR COUNT(*) != 1)")
nres=$(sql "SELECT COUNT(*) FROM results")
[ "$dups" = 0 ] && [ "$nres" = 4 ] && pass queue_worker_kill_one_result_per_job || fail queue_worker_kill_one_result_per_job "results $nres, jobs with duplicates $dups"
kill -0 "$pid_b" 2>/dev/null && pass queue_worker_kill_survivor_alive || fail queue_worker_kill_survivor_alive "worker b died"
exit 0

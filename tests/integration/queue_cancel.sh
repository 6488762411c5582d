#!/usr/bin/env bash
# Cancel stops a running child (even one that ignores SIGTERM) within 5 s; the job ends CANCELLED.
. "$(dirname "$0")/../lib.sh"
need_bins queue_cancel

start_daemon || { fail queue_cancel_daemon "umdqd did not start"; exit 1; }
start_worker it/c
mark="umdq-cancel-$$-$RANDOM"
cat >"$T_TMP/sweep.json" <<JSON
{ "name": "it-cancel", "base": { "kind": "command", "command": "trap '' TERM; sleep 300 # $mark" } }
JSON
sid=$(submit "$T_TMP/sweep.json" | jq -r .sweep.id)
job=$(api GET "/api/sweeps/$sid" | jq -r '.jobs[0].id')
child_alive() { pgrep -f "$mark" >/dev/null; }
wait_for 15 child_alive || { fail queue_cancel_child_started "the job's process never appeared"; exit 0; }
t0=$(date +%s%N)
"$BIN/umdq" cancel "$job" >"$T_TMP/cancel.out" 2>&1 || fail queue_cancel_cli "$(cat "$T_TMP/cancel.out")"
child_gone() { ! pgrep -f "$mark" >/dev/null; }
if wait_for 10 child_gone; then
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ $ms -le 5000 ] && pass queue_cancel_child_gone_within_5s || fail queue_cancel_child_gone_within_5s "took ${ms} ms"
else
  fail queue_cancel_child_gone_within_5s "still running after 10 s"
fi
state=$(api GET "/api/jobs/$job" | jq -r .job.state)
[ "$state" = CANCELLED ] && pass queue_cancel_state || fail queue_cancel_state "state $state"
attempt_closed() { [ "$(api GET "/api/jobs/$job" | jq -r '.attempts[0].ended')" != null ]; }
wait_for 10 attempt_closed && pass queue_cancel_attempt_closed || fail queue_cancel_attempt_closed "$(api GET "/api/jobs/$job" | jq -c .attempts)"
# the worker is free again: a new job runs
cat >"$T_TMP/next.json" <<'JSON'
{ "name": "it-after-cancel", "base": { "kind": "command", "command": "true" } }
JSON
sid2=$(submit "$T_TMP/next.json" | jq -r .sweep.id)
wait_for 20 sweep_done "$sid2" && [ "$(jobs_in "$sid2" SUCCEEDED)" = 1 ] && pass queue_cancel_worker_reused || fail queue_cancel_worker_reused "next job did not run"
exit 0

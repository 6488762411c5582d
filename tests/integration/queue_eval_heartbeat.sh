#!/usr/bin/env bash
# The evaluation's heartbeat: a umd job whose evaluation (a long linear probe, no new training
# step) lasts several times its stall_timeout is not killed as stalled, because the trainer beats
# during the evaluation and the daemon counts each beat as progress; a command job that prints
# nothing under the same stall_timeout in the same queue still is.
. "$(dirname "$0")/../lib.sh"
need_bins queue_eval_heartbeat

start_daemon || { fail queue_eval_heartbeat_daemon "umdqd did not start"; exit 1; }
start_worker it/hb0
cat >"$T_TMP/sweep.json" <<'JSON'
{ "name": "it-eval-heartbeat",
  "base": { "kind": "umd", "stall_timeout": 3,
            "data": {"dataset": "synthetic", "image_size": 16, "channels": 1, "train_size": 2048, "test_size": 256},
            "model": {"patch": 4, "width": 32, "depth": 1, "dec_depth": 1, "heads": 2},
            "train": {"steps": 20, "batch": 16, "lr": 1e-3, "threads": 1, "log_every": 10},
            "eval": {"probe_train": 2048, "probe_epochs": 800, "probe_shots": 10, "val_images": 0, "fid_samples": 0} } }
JSON
sid=$(submit "$T_TMP/sweep.json" | jq -r .sweep.id)
[ -n "$sid" ] && [ "$sid" != null ] && pass queue_eval_heartbeat_submit || { fail queue_eval_heartbeat_submit "refused"; exit 0; }
job=$(sql "SELECT id FROM jobs WHERE sweep_id = $sid")
if wait_for 120 sweep_done "$sid"; then pass queue_eval_heartbeat_done; else fail queue_eval_heartbeat_done "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
state=$(sql "SELECT state FROM jobs WHERE id = $job")
[ "$state" = SUCCEEDED ] && pass queue_eval_heartbeat_not_stalled \
  || fail queue_eval_heartbeat_not_stalled "job $job $state: $(sql "SELECT n, state, error FROM attempts WHERE job_id = $job" | tr '\n' ' ')"
[ "$(sql "SELECT COUNT(*) FROM attempts WHERE job_id = $job")" = 1 ] && pass queue_eval_heartbeat_one_attempt \
  || fail queue_eval_heartbeat_one_attempt "$(sql "SELECT n, state, error FROM attempts WHERE job_id = $job" | tr '\n' ' ')"
top1=$(api GET "/api/jobs/$job" | jq '.job.results.pixel_linear_top1')
awk -v v="${top1:-null}" 'BEGIN { exit !(v + 0 > 0.5) }' && pass queue_eval_heartbeat_results || fail queue_eval_heartbeat_results "pixel_linear_top1 $top1"
# the evaluation did outlast the stall timeout: the probes' line gives its seconds so far
log="$UMDQ_HOME/logs/$job.log"
secs=$(grep -o 'linear probe [0-9.]* (pixels [0-9.]*) ([0-9.]* s)' "$log" 2>/dev/null | grep -o '([0-9.]* s)' | tr -d '( s)')
if awk -v s="${secs:-0}" 'BEGIN { exit !(s > 6) }'; then
  pass queue_eval_heartbeat_eval_outlasts_timeout
else
  fail queue_eval_heartbeat_eval_outlasts_timeout "evaluation ${secs:-?} s, not over 2 x stall_timeout (log: $(tail -c 300 "$log" 2>/dev/null))"
fi
# the phase is logged at a beat (one a second at most): a probe that ends sooner is never named,
# so either probe's line will do (they take most of the evaluation's seconds)
grep -qE "umdq-worker: evaluation: (pixel )?linear probe" "$log" 2>/dev/null && pass queue_eval_heartbeat_phase_logged \
  || fail queue_eval_heartbeat_phase_logged "no evaluation phase line in logs/$job.log"

# the detector is on: a child that reports nothing for stall_timeout is still cancelled as stalled
cat >"$T_TMP/stall.json" <<'JSON'
{ "name": "it-stalled", "base": { "kind": "command", "command": "sleep 60", "stall_timeout": 3 } }
JSON
sid2=$(submit "$T_TMP/stall.json" | jq -r .sweep.id)
job2=$(sql "SELECT id FROM jobs WHERE sweep_id = $sid2")
if wait_for 40 sweep_done "$sid2"; then pass queue_eval_heartbeat_control_done; else fail queue_eval_heartbeat_control_done "still $(sql "SELECT state FROM jobs WHERE id = $job2")"; fi
err2=$(sql "SELECT error FROM attempts WHERE job_id = $job2 AND n = 1")
[[ "$(sql "SELECT state FROM jobs WHERE id = $job2")" = FAILED && "$err2" == stalled* ]] && pass queue_eval_heartbeat_control_stalled \
  || fail queue_eval_heartbeat_control_stalled "job $job2: $(sql "SELECT state FROM jobs WHERE id = $job2") '$err2'"

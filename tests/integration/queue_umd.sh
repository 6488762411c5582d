#!/usr/bin/env bash
# kind umd through the queue: a 3-job sweep (UMD, MAE, DiT) of the embedded trainer on the
# synthetic data set on 2 real CPU workers; loss curves and results reach the daemon; a worker
# killed mid-training loses its attempt and the job still finishes once.
. "$(dirname "$0")/../lib.sh"
need_bins queue_umd

start_daemon || { fail queue_umd_daemon "umdqd did not start"; exit 1; }
start_worker it/u0; pid_a=$WORKER_PID
start_worker it/u1
cat >"$T_TMP/sweep.json" <<'JSON'
{ "name": "it-umd",
  "base": { "kind": "umd",
            "data": {"dataset": "synthetic", "image_size": 16, "channels": 1, "train_size": 512, "test_size": 64},
            "model": {"patch": 4, "width": 32, "depth": 2, "dec_depth": 1, "heads": 2},
            "train": {"steps": 400, "batch": 16, "lr": 1e-3, "threads": 1, "log_every": 10, "ckpt_every": 100} },
  "list": [ {"name": "UMD"}, {"name": "MAE", "umd.r_t0": 1.0}, {"name": "DiT", "umd.r_t0": 0, "umd.mask_ratio": 0} ] }
JSON
sid=$(submit "$T_TMP/sweep.json" | jq -r .sweep.id)
[ "$sid" != null ] && pass queue_umd_submit || { fail queue_umd_submit "refused"; exit 0; }
# kill worker u0 once its job has reported some steps
stepped() { [ "$(sql "SELECT COUNT(*) FROM metrics m JOIN attempts a ON a.job_id = m.job_id AND a.n = m.attempt
                      WHERE a.worker_id = 'it/u0' AND a.state = 'RUNNING' AND m.key = 'loss'")" -ge 2 ]; }
if wait_for 60 stepped; then
  victim=$(sql "SELECT job_id FROM attempts WHERE worker_id = 'it/u0' AND state = 'RUNNING' LIMIT 1")
  kill -KILL "$pid_a"
  pass queue_umd_killed_mid_training
else
  fail queue_umd_killed_mid_training "no loss reported on it/u0"; victim=0
fi
if wait_for 240 sweep_done "$sid"; then pass queue_umd_finishes; else fail queue_umd_finishes "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
[ "$(jobs_in "$sid" SUCCEEDED)" = 3 ] && pass queue_umd_all_succeeded || fail queue_umd_all_succeeded "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"
[ "$(sql "SELECT state FROM attempts WHERE job_id = $victim AND n = 1")" = LOST ] && pass queue_umd_killed_attempt_lost || fail queue_umd_killed_attempt_lost "$(sql "SELECT n, state, worker_id FROM attempts WHERE job_id = $victim")"
# every job: a loss curve of its successful attempt and one final_loss, the loss falling
n_final=$(sql "SELECT COUNT(*) FROM results WHERE key = 'final_loss'")
[ "$n_final" = 3 ] && pass queue_umd_one_result_per_job || fail queue_umd_one_result_per_job "final_loss rows: $n_final"
for j in $(sql "SELECT id FROM jobs ORDER BY id"); do
  pts=$(api GET "/api/jobs/$j/metrics?key=loss" | jq '.series[0].points')
  n=$(echo "$pts" | jq length); first=$(echo "$pts" | jq '.[0][1]'); last=$(echo "$pts" | jq '.[-1][1]')
  if [ "$n" -ge 10 ] && awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'; then
    pass "queue_umd_loss_falls_job_$j"
  else
    fail "queue_umd_loss_falls_job_$j" "points $n, first $first, last $last"
  fi
done
exit 0

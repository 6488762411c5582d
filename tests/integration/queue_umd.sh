#!/usr/bin/env bash
# kind umd through the queue: a 3-job sweep (UMD, MAE, DiT) of the embedded trainer on the
# synthetic data set on 2 real CPU workers. Loss curves and results reach the daemon; checkpoints
# go to the artifact store; a worker killed mid-training loses its attempt, and the next attempt
# (on the other worker) downloads the stored checkpoint and resumes from it, ending bit for bit
# where an uninterrupted run ends. Every job ends with one set of results, with probe accuracies and
# FID (the evaluation part of the trainer), and `umdq export` / `umdq show` list them.
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
            "train": {"steps": 600, "batch": 16, "lr": 1e-3, "threads": 1, "log_every": 10, "ckpt_every": 100},
            "eval": {} },
  "list": [ {"name": "UMD"}, {"name": "MAE", "umd.r_t0": 1.0}, {"name": "DiT", "umd.r_t0": 0, "umd.mask_ratio": 0} ] }
JSON
# the evaluation block (probes, FID) needs the trainer's evaluation part; without it the sweep runs
# without evaluation, and the evaluation checks below fail
with_eval=1
if ! out=$(api POST '/api/sweeps?dry_run=1' -H 'Content-Type: application/json' --data-binary "@$T_TMP/sweep.json" 2>&1); then
  with_eval=0
  fail queue_umd_eval_accepted "the daemon refuses the config's eval block: $(echo "$out" | tail -c 300)"
  jq 'del(.base.eval)' "$T_TMP/sweep.json" >"$T_TMP/sweep-noeval.json" && mv "$T_TMP/sweep-noeval.json" "$T_TMP/sweep.json"
fi
sid=$(submit "$T_TMP/sweep.json" | jq -r .sweep.id)
[ "$sid" != null ] && [ -n "$sid" ] && pass queue_umd_submit || { fail queue_umd_submit "refused"; exit 0; }

# kill worker u0 once its job has stored a checkpoint in the artifact store, before it ends
u0_job() { sql "SELECT job_id FROM attempts WHERE worker_id = 'it/u0' AND state = 'RUNNING' LIMIT 1"; }
checkpointed() { local j; j=$(u0_job); [ -n "$j" ] && [ -s "$UMDQ_HOME/artifacts/$j/ckpt.umd" ]; }
if wait_for 90 checkpointed; then
  victim=$(u0_job)
  kill -KILL "$pid_a"
  killed_at=$(sql "SELECT step FROM attempts WHERE job_id = $victim AND n = 1")
  pass queue_umd_killed_mid_training
else
  fail queue_umd_killed_mid_training "no checkpoint of a job on it/u0 reached the artifact store"; victim=0; killed_at=0
fi
if wait_for 400 sweep_done "$sid"; then pass queue_umd_finishes; else fail queue_umd_finishes "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
[ "$(jobs_in "$sid" SUCCEEDED)" = 3 ] && pass queue_umd_all_succeeded || fail queue_umd_all_succeeded "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"
[ "$(sql "SELECT state FROM attempts WHERE job_id = $victim AND n = 1")" = LOST ] && pass queue_umd_killed_attempt_lost || fail queue_umd_killed_attempt_lost "$(sql "SELECT n, state, worker_id FROM attempts WHERE job_id = $victim")"

# the second attempt resumed from the uploaded checkpoint: step > 0, and trained only past it
resumed=$(sql "SELECT value FROM results WHERE job_id = $victim AND attempt = 2 AND key = 'resumed_from_step'")
first2=$(sql "SELECT min(step) FROM metrics WHERE job_id = $victim AND attempt = 2 AND key = 'loss'")
if [ -n "$resumed" ] && awk -v r="$resumed" -v f="${first2:-0}" \
     'BEGIN { exit !(r >= 100 && r < 600 && r % 100 == 0 && f > r) }'; then
  pass queue_umd_resumed_from_checkpoint
else
  fail queue_umd_resumed_from_checkpoint "resumed_from_step '$resumed', first loss step of attempt 2 '$first2', killed at step $killed_at (heartbeat)"
fi
grep -q "resuming from the stored checkpoint of step" "$UMDQ_HOME/logs/$victim.log" 2>/dev/null \
  && pass queue_umd_resume_logged || fail queue_umd_resume_logged "no resume line in logs/$victim.log"
# bit for bit: the resumed job's final loss equals that of an uninterrupted run of its config
api GET "/api/jobs/$victim" | jq '.job.config + {seed: .job.seed} | del(.eval)' >"$T_TMP/victim.json"
ref=$("$BIN/umdq" train "$T_TMP/victim.json" --json --out "$T_TMP/ref" 2>"$T_TMP/ref.err" | jq '.final_loss')
got=$(api GET "/api/jobs/$victim" | jq '.job.results.final_loss')
if [ -n "$ref" ] && [ "$ref" != null ] && jq -n --argjson a "$ref" --argjson b "${got:-null}" -e '$a == $b' >/dev/null; then
  pass queue_umd_resume_bit_exact
else
  fail queue_umd_resume_bit_exact "final_loss after resume $got, uninterrupted $ref ($(tail -n 2 "$T_TMP/ref.err" | tr '\n' ' '))"
fi

# every job: one set of results (from one attempt), a loss curve that falls, a stored checkpoint
n_final=$(sql "SELECT COUNT(*) FROM results WHERE key = 'final_loss'")
[ "$n_final" = 3 ] && pass queue_umd_one_result_per_job || fail queue_umd_one_result_per_job "final_loss rows: $n_final"
multi=$(sql "SELECT job_id FROM results GROUP BY job_id HAVING COUNT(DISTINCT attempt) > 1")
[ -z "$multi" ] && pass queue_umd_results_from_one_attempt || fail queue_umd_results_from_one_attempt "jobs with results of several attempts: $multi"
for j in $(sql "SELECT id FROM jobs ORDER BY id"); do
  pts=$(api GET "/api/jobs/$j/metrics?key=loss" | jq '.series[0].points')
  n=$(echo "$pts" | jq length); first=$(echo "$pts" | jq '.[0][1]'); last=$(echo "$pts" | jq '.[-1][1]')
  if [ "$n" -ge 10 ] && awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'; then
    pass "queue_umd_loss_falls_job_$j"
  else
    fail "queue_umd_loss_falls_job_$j" "points $n, first $first, last $last"
  fi
  if api GET "/api/artifacts/$j" | jq -e '.artifacts | map(.name) | index("ckpt.umd")' >/dev/null; then
    pass "queue_umd_checkpoint_stored_job_$j"
  else
    fail "queue_umd_checkpoint_stored_job_$j" "$(api GET "/api/artifacts/$j" 2>&1 | head -c 300)"
  fi
done

# evaluation: probe accuracies (model and pixels) and FID for every job, the sample grid uploaded
for j in $(sql "SELECT id FROM jobs ORDER BY id"); do
  res=$(api GET "/api/jobs/$j" | jq -c '.job.results')
  missing=$(echo "$res" | jq -r '[("probe_ridge_top1", "pixel_ridge_top1", "fid", "fid_net") as $k | select(has($k) | not) | $k] | join(" ")')
  if [ -z "$missing" ] && echo "$res" | jq -e '.probe_ridge_top1 >= 0 and .probe_ridge_top1 <= 1 and .fid >= 0' >/dev/null; then
    pass "queue_umd_eval_results_job_$j"
  else
    fail "queue_umd_eval_results_job_$j" "missing: $missing (results: $(echo "$res" | head -c 300))"
  fi
  grid=$(echo "$res" | jq -r '.sample_grid // empty')
  if [ -n "$grid" ] && api GET "/api/artifacts/$j/$grid" -o "$T_TMP/grid-$j.png" &&
     [ "$(head -c 8 "$T_TMP/grid-$j.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
    pass "queue_umd_sample_grid_job_$j"
  else
    fail "queue_umd_sample_grid_job_$j" "sample_grid '$grid' is not a PNG artifact of job $j"
  fi
done

# export: one row per job, the swept keys, then the comparison columns, attempts
csv=$("$BIN/umdq" export "$sid" --format csv 2>"$T_TMP/export.err")
header=$(echo "$csv" | head -n 1 | tr -d '\r')
rows=$(echo "$csv" | tail -n +2 | grep -c .)
if [ "$rows" = 3 ] && [[ $header == *name*umd.r_t0*probe_ridge_top1*pixel_ridge_top1*fid*val_denoise_loss*train_img_per_s*device_hours*attempts* ]]; then
  pass queue_umd_export_csv
else
  fail queue_umd_export_csv "rows $rows, header: $header $(cat "$T_TMP/export.err")"
fi
ej=$("$BIN/umdq" export "$sid" --format json)
if echo "$ej" | jq -e --argjson v "$victim" 'length == 3 and (map(select(.id == $v))[0].attempts == 2)
     and (map(select(.run_seconds > 0)) | length == 3) and (map(select(.name == "UMD"))[0]["umd.r_t0"] == 0.5)
     and (map(.name) | sort == ["DiT", "MAE", "UMD"])' >/dev/null; then
  pass queue_umd_export_json
else
  fail queue_umd_export_json "$(echo "$ej" | head -c 400)"
fi
show=$("$BIN/umdq" show "sweep:$sid" 2>&1)
if echo "$show" | grep -q "UMD" && echo "$show" | grep -q "MAE" && echo "$show" | grep -q "DiT" &&
   echo "$show" | grep -Eq "^ *$victim +SUCCEEDED +2/3 " && [ "$("$BIN/umdq" show it-umd 2>&1)" = "$show" ]; then
  pass queue_umd_show_sweep
else
  fail queue_umd_show_sweep "$(echo "$show" | tail -n 5)"
fi
# the comparison columns of the evaluation
if echo "$show" | grep -E "^ *ID " | grep -q "PROBE" && echo "$show" | grep -E "^ *ID " | grep -q "FID" &&
   echo "$show" | grep -q "^FID features: "; then
  pass queue_umd_show_compare
else
  fail queue_umd_show_compare "no PROBE/FID columns or FID network: $(echo "$show" | grep -E "^ *ID ")"
fi
exit 0

#!/usr/bin/env bash
# A 20-job command sweep on 2 real workers: every job succeeds with its metrics and results
# recorded once; resubmitting the sweep adds 0 jobs; a bad sweep is refused whole; a CPU worker's
# jobs see no GPU (CUDA_VISIBLE_DEVICES set and empty).
. "$(dirname "$0")/../lib.sh"
need_bins queue_sweep

start_daemon || { fail queue_sweep_daemon_starts "umdqd did not start"; exit 1; }
start_worker it/w0
start_worker it/w1

xs=$(seq -s, 1 20)
cat >"$T_TMP/sweep.json" <<JSON
{ "name": "it-20",
  "base": { "kind": "command", "params": {"x": 0},
            "command": "for i in 1 2 3; do printf '{\"umdq\":\"metric\",\"step\":%d,\"loss\":%s}\\\\n' \$i {params.x}; done; printf '{\"umdq\":\"result\",\"x\":%s}\\\\n' {params.x}; echo to-stderr-{params.x} >&2" },
  "grid": { "params.x": [$xs] } }
JSON
out=$(submit "$T_TMP/sweep.json")
sid=$(echo "$out" | jq -r .sweep.id)
[ "$(echo "$out" | jq -r .new)" = 20 ] && pass queue_sweep_submit_20_new || fail queue_sweep_submit_20_new "$out"

if wait_for 120 sweep_done "$sid"; then pass queue_sweep_finishes; else fail queue_sweep_finishes "$(api GET "/api/sweeps/$sid?jobs=0")"; fi
[ "$(jobs_in "$sid" SUCCEEDED)" = 20 ] && pass queue_sweep_all_succeeded || fail queue_sweep_all_succeeded "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"

# both workers took jobs
nw=$(sql "SELECT COUNT(DISTINCT worker_id) FROM attempts")
[ "$nw" = 2 ] && pass queue_sweep_both_workers_used || fail queue_sweep_both_workers_used "workers used: $nw"

# metrics: 3 points per job, value = the job's x; results: one x per job, equal to its parameter
nm=$(sql "SELECT COUNT(*) FROM metrics WHERE key = 'loss'")
[ "$nm" = 60 ] && pass queue_sweep_metrics_recorded || fail queue_sweep_metrics_recorded "loss points: $nm"
bad=$(sql "SELECT COUNT(*) FROM jobs j JOIN results r ON r.job_id = j.id AND r.key = 'x'
           WHERE r.value != json_extract(j.config, '\$.params.x')")
nr=$(sql "SELECT COUNT(*) FROM results WHERE key = 'x'")
[ "$nr" = 20 ] && [ "$bad" = 0 ] && pass queue_sweep_results_match_params || fail queue_sweep_results_match_params "results $nr, mismatched $bad"

# the API shows them too, and the job log holds stderr
j1=$(api GET "/api/sweeps/$sid" | jq -r '.jobs[0].id')
api GET "/api/jobs/$j1/metrics?key=loss" | jq -e '.series[0].points | length == 3' >/dev/null \
  && pass queue_sweep_api_metrics || fail queue_sweep_api_metrics "$(api GET "/api/jobs/$j1/metrics?key=loss")"
api GET "/api/jobs/$j1/log" | jq -e '.data | test("to-stderr-")' >/dev/null \
  && pass queue_sweep_log_captured || fail queue_sweep_log_captured "$(api GET "/api/jobs/$j1/log")"

# resubmitting adds nothing; the CLI says so
out2=$("$BIN/umdq" submit "$T_TMP/sweep.json" 2>&1)
n2=$(submit "$T_TMP/sweep.json" | jq -r .new)
[ "$n2" = 0 ] && pass queue_sweep_resubmit_adds_0 || fail queue_sweep_resubmit_adds_0 "new: $n2; cli: $out2"
[ "$(sql 'SELECT COUNT(*) FROM jobs')" = 20 ] && pass queue_sweep_resubmit_no_rows || fail queue_sweep_resubmit_no_rows "$(sql 'SELECT COUNT(*) FROM jobs') rows"

# a sweep with three bad keys is refused whole, naming each, and writes nothing
cat >"$T_TMP/bad.json" <<'JSON'
{ "name": "it-bad", "base": {"kind": "umd", "umd": {"mask_ratio": 1.0, "r_t0": 1.5}, "train": {"steps": 0}} }
JSON
code=$(curl -s -o "$T_TMP/bad.out" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" --data-binary "@$T_TMP/bad.json" "$URL/api/sweeps")
if [ "$code" = 400 ] && grep -q umd.mask_ratio "$T_TMP/bad.out" && grep -q umd.r_t0 "$T_TMP/bad.out" && grep -q train.steps "$T_TMP/bad.out"; then
  pass queue_sweep_bad_spec_names_every_key
else
  fail queue_sweep_bad_spec_names_every_key "HTTP $code: $(cat "$T_TMP/bad.out")"
fi
[ "$(sql "SELECT COUNT(*) FROM sweeps WHERE name = 'it-bad'")" = 0 ] && pass queue_sweep_bad_spec_writes_nothing || fail queue_sweep_bad_spec_writes_nothing "sweep row exists"
"$BIN/umdq" submit "$T_TMP/bad.json" >"$T_TMP/cli-bad.out" 2>&1; rc=$?
[ $rc = 2 ] && grep -q train.steps "$T_TMP/cli-bad.out" && pass queue_sweep_cli_bad_spec_exit_2 || fail queue_sweep_cli_bad_spec_exit_2 "rc $rc: $(cat "$T_TMP/cli-bad.out")"

# a job on a --cpu worker sees no GPU, even on a machine that has one
cat >"$T_TMP/cvd.json" <<'JSON'
{ "name": "it-cvd", "base": { "kind": "command",
  "command": "if [ \"${CUDA_VISIBLE_DEVICES+set}\" = set ] && [ -z \"$CUDA_VISIBLE_DEVICES\" ]; then v=1; else v=0; fi; echo '{\"umdq\":\"result\",\"gpu_hidden\":'$v'}'" } }
JSON
sid3=$(submit "$T_TMP/cvd.json" | jq -r .sweep.id)
wait_for 30 sweep_done "$sid3" || true
hidden=$(sql "SELECT CAST(r.value AS INTEGER) FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.sweep_id = $sid3 AND r.key = 'gpu_hidden'")
[ "$hidden" = 1 ] && pass queue_sweep_cpu_worker_hides_gpus || fail queue_sweep_cpu_worker_hides_gpus "gpu_hidden: '$hidden'"
exit 0

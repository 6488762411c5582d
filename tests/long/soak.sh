#!/usr/bin/env bash
# Soak: a 5,000-job command sweep of `true` on 4 workers, a second sweep submitted while it runs,
# cancel and requeue calls (jobs and sweeps, right and wrong) and API reads in between, then more
# rounds of sweeps until UMDQ_SOAK_SECONDS. Checks: every job done with the counts right (API,
# Prometheus, database), the daemon's RSS bounded (start/peak/end reported), no file descriptor
# leak (/proc/PID/fd after the same warm-up at start and end), the WAL file bounded.
#
#   UMDQ_SOAK_JOBS      jobs of the first sweep (default 5000, at least 2000)
#   UMDQ_SOAK_JOBS2     jobs of the second sweep and of each later round (default 1000)
#   UMDQ_SOAK_SECONDS   keep running rounds until this many seconds since the first submit (default 240)
#   UMDQ_SOAK_RSS_MB    allowed RSS peak over the start, MiB (default 128; the leak check is that
#                       RSS stays flat over the later rounds)
#   UMDQ_SOAK_WAL_MB    largest allowed WAL file, MiB (default 64)
. "$(dirname "$0")/../lib.sh"
need_bins soak

NJOBS=${UMDQ_SOAK_JOBS:-5000}
if [ "$NJOBS" -lt 2000 ]; then # the cancels below need a queue that lasts some seconds
  echo "soak: UMDQ_SOAK_JOBS=$NJOBS is too short a queue for the cancel/requeue part: using 2000"
  NJOBS=2000
fi
NJOBS2=${UMDQ_SOAK_JOBS2:-1000}
SOAK_SECONDS=${UMDQ_SOAK_SECONDS:-240}
RSS_MB=${UMDQ_SOAK_RSS_MB:-128}
WAL_MB=${UMDQ_SOAK_WAL_MB:-64}
echo "soak: $NJOBS + $NJOBS2 jobs, then rounds of $NJOBS2 until ${SOAK_SECONDS}s; RSS peak at most start + ${RSS_MB} MiB, WAL at most ${WAL_MB} MiB"

start_daemon || { fail soak_daemon_starts "umdqd did not start"; exit 1; }
W_PIDS=()
for i in 0 1 2 3; do start_worker "soak/w$i"; W_PIDS+=("$WORKER_PID"); done
DB=$UMDQ_HOME/umdq.db

# sweep_spec NAME N [PRIORITY]: N jobs of `true`
sweep_spec() {
  local xs
  xs=$(seq -s, 1 "$2")
  printf '{"name": "%s", "priority": %d, "base": {"kind": "command", "command": "true", "params": {"x": 0}},
    "grid": {"params.x": [%s]}, "retry": {"max_attempts": 3}}\n' "$1" "${3:-0}" "$xs" >"$T_TMP/$1.json"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status" 2>/dev/null; }
nfds() { ls "/proc/$DAEMON_PID/fd" 2>/dev/null | wc -l; }
wal_bytes() { stat -c %s "$DB-wal" 2>/dev/null || echo 0; }

# The same reads at start and end, four at a time, so that every HTTP thread has opened its
# read connection before the descriptors are counted.
warm_up() {
  local i
  for i in $(seq 1 64); do
    echo "/api/sweeps /api/workers /metrics /api/health /api/jobs/1 /api/jobs/1/metrics /api/jobs/1/log /api/sweeps/1?jobs=0"
  done | tr ' ' '\n' | xargs -P 4 -I{} curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL{}"
}

sweep_spec soak-warm 50
wsid=$(submit "$T_TMP/soak-warm.json" | jq -r .sweep.id)
wait_for 60 sweep_done "$wsid" || { fail soak_warm_up "$(api GET "/api/sweeps/$wsid?jobs=0" | jq -c .sweep.counts)"; exit 0; }
warm_up; sleep 1
rss0=$(rss_kb); fd0=$(nfds); wal0=$(wal_bytes)
ls -l "/proc/$DAEMON_PID/fd" | awk 'NR > 1 { print $NF }' | sed 's/[0-9][0-9]*\]$/N]/' | sort >"$T_TMP/fds0"

# sample RSS and WAL size every half second until told to stop
( while kill -0 "$DAEMON_PID" 2>/dev/null; do echo "$(date +%s.%N) $(rss_kb) $(wal_bytes)"; sleep 0.5; done ) \
  >"$T_TMP/samples" 2>/dev/null &
SAMPLER=$!
T_PIDS+=("$SAMPLER")

# ---- the first sweep, the second one during it, cancels and requeues --------------------------
sweep_spec soak-a "$NJOBS"
t_start=$(date +%s)
out=$(submit "$T_TMP/soak-a.json")
sid=$(echo "$out" | jq -r .sweep.id)
[ "$(echo "$out" | jq -r .new)" = "$NJOBS" ] && pass soak_submit_first || fail soak_submit_first "$out"
some_done() { [ "$(jobs_in "$sid" SUCCEEDED)" -ge $((NJOBS / 5)) ]; }
wait_for 300 some_done || { fail soak_progress "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; exit 0; }

sweep_spec soak-b "$NJOBS2" 5
out=$(submit "$T_TMP/soak-b.json")
sid2=$(echo "$out" | jq -r .sweep.id)
[ "$(echo "$out" | jq -r .new)" = "$NJOBS2" ] && pass soak_submit_second_while_running || fail soak_submit_second_while_running "$out"
n=$(submit "$T_TMP/soak-a.json" | jq -r .new)
[ "$n" = 0 ] && pass soak_resubmit_adds_nothing || fail soak_resubmit_adds_nothing "new: $n"

# the second sweep: cancelled whole while it runs, then requeued whole
ncancel=$(api POST "/api/sweeps/$sid2/cancel" | jq -r .cancelled)
[ "${ncancel:-0}" -gt 0 ] && pass soak_cancel_sweep || fail soak_cancel_sweep "cancelled: $ncancel"
open_b() { [ "$(sql "SELECT COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.sweep_id = $sid2 AND a.state = 'RUNNING'")" = 0 ]; }
wait_for 30 open_b || fail soak_cancel_sweep_closes_attempts "attempts of the cancelled sweep still open"
# a job whose attempt had succeeded when the cancel reached its worker is SUCCEEDED after all (the
# event cancel_late says so); every other cancelled job is requeued
nlate=$(sql "SELECT COUNT(DISTINCT e.job_id) FROM events e JOIN jobs j ON j.id = e.job_id
             WHERE j.sweep_id = $sid2 AND e.kind = 'cancel_late' AND j.state = 'SUCCEEDED'")
n=$(api POST "/api/sweeps/$sid2/requeue?failed=1" | jq -r .requeued)
[ "${n:-0}" -gt 0 ] && [ "$n" = "$((ncancel - nlate))" ] && pass soak_requeue_sweep \
  || fail soak_requeue_sweep "requeued: $n, cancelled: $ncancel, of which $nlate succeeded before the cancel reached them"

# cancel 100 queued jobs of the first sweep one by one; cancelling one again is refused (409)
mapfile -t victims < <(sql "SELECT id FROM jobs WHERE sweep_id = $sid AND state = 'QUEUED' ORDER BY id DESC LIMIT 100")
bad=0
for j in "${victims[@]}"; do
  st=$(api POST "/api/jobs/$j/cancel" | jq -r .state) || bad=$((bad + 1))
  [ "$st" = CANCELLED ] || bad=$((bad + 1))
done
[ ${#victims[@]} = 100 ] && [ $bad = 0 ] && pass soak_cancel_jobs || fail soak_cancel_jobs "${#victims[@]} queued jobs found, $bad cancels failed"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "$URL/api/jobs/${victims[0]}/cancel")
[ "$code" = 409 ] && pass soak_cancel_twice_409 || fail soak_cancel_twice_409 "HTTP $code"
# requeue half of them one by one; requeueing one again at once is refused (409: it is QUEUED, the
# last of the queue)
bad=0
for j in "${victims[@]:0:50}"; do
  st=$(api POST "/api/jobs/$j/requeue" | jq -r .state) || bad=$((bad + 1))
  [ "$st" = QUEUED ] || bad=$((bad + 1))
  if [ "$j" = "${victims[0]}" ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "$URL/api/jobs/$j/requeue")
  fi
done
[ $bad = 0 ] && pass soak_requeue_jobs || fail soak_requeue_jobs "$bad requeues failed"
[ "$code" = 409 ] && pass soak_requeue_queued_409 || fail soak_requeue_queued_409 "HTTP $code"
# reads while it runs
for i in $(seq 1 20); do
  api GET "/api/sweeps/$sid" >/dev/null && api GET /api/sweeps >/dev/null && api GET /api/workers >/dev/null &&
    api GET "/api/jobs/$((1 + RANDOM % NJOBS))" >/dev/null || { fail soak_reads_while_running "request $i failed"; break; }
done

if wait_for 600 sweep_done "$sid"; then pass soak_first_sweep_done; else fail soak_first_sweep_done "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
# the 50 still cancelled come back through the sweep's requeue
n=$(api POST "/api/sweeps/$sid/requeue?failed=1" | jq -r .requeued)
[ "$n" = 50 ] && pass soak_requeue_rest || fail soak_requeue_rest "requeued: $n"
wait_for 120 sweep_done "$sid" && wait_for 300 sweep_done "$sid2" || fail soak_sweeps_done "$(api GET /api/sweeps | jq -c '[.sweeps[] | {name, counts}]')"
t_first=$(( $(date +%s) - t_start ))
rss_a=$(rss_kb)

# ---- more rounds until the time is up ---------------------------------------------------------
rounds=0
round_rss=()
while [ $(( $(date +%s) - t_start )) -lt "$SOAK_SECONDS" ]; do
  rounds=$((rounds + 1))
  sweep_spec "soak-r$rounds" "$NJOBS2"
  rsid=$(submit "$T_TMP/soak-r$rounds.json" | jq -r .sweep.id)
  round_done() { api GET "/api/sweeps/$rsid" >/dev/null; api GET /metrics >/dev/null; sweep_done "$rsid"; }
  wait_for 300 round_done || { fail soak_round_done "round $rounds: $(api GET "/api/sweeps/$rsid?jobs=0" | jq -c .sweep.counts)"; break; }
  round_rss+=("$(rss_kb)")
done
total=$((50 + NJOBS + NJOBS2 + rounds * NJOBS2))
echo "soak: first two sweeps in ${t_first}s, then $rounds more rounds; $total jobs in all, $(( $(date +%s) - t_start ))s"

# ---- counts ------------------------------------------------------------------------------------
counts=$(sql "SELECT state || '=' || COUNT(*) FROM jobs GROUP BY state" | tr '\n' ' ')
[ "$(sql "SELECT COUNT(*) FROM jobs")" = "$total" ] && [ "$(sql "SELECT COUNT(*) FROM jobs WHERE state = 'SUCCEEDED'")" = "$total" ] \
  && pass soak_all_succeeded || fail soak_all_succeeded "$counts(want $total SUCCEEDED)"
# every job's last attempt succeeded, and no earlier one: an attempt that succeeded while a user's
# cancel was on its way made its job SUCCEEDED (docs/protocol.md, "Cancel"), so no requeue ran it again
bad=$(sql "SELECT a.job_id || ' attempt ' || a.n || ' ' || a.state FROM attempts a
           JOIN (SELECT job_id, MAX(n) AS last FROM attempts GROUP BY job_id) l ON l.job_id = a.job_id
           WHERE (a.n = l.last AND a.state != 'SUCCEEDED') OR (a.n < l.last AND a.state = 'SUCCEEDED') LIMIT 5")
[ -z "$bad" ] && pass soak_one_successful_attempt_each || fail soak_one_successful_attempt_each "$(echo "$bad" | tr '\n' ';')"
open=$(sql "SELECT COUNT(*) FROM attempts WHERE state = 'RUNNING' OR ended IS NULL")
[ "$open" = 0 ] && pass soak_no_open_attempt || fail soak_no_open_attempt "$open"
api_sum=$(api GET /api/sweeps | jq '[.sweeps[].counts.SUCCEEDED] | add')
api_total=$(api GET /api/sweeps | jq '[.sweeps[].total] | add')
[ "$api_sum" = "$total" ] && [ "$api_total" = "$total" ] && pass soak_api_counts || fail soak_api_counts "API: $api_sum succeeded of $api_total, want $total"
prom=$(api GET /metrics | sed -n 's/^umdq_jobs{state="SUCCEEDED"} //p')
[ "$prom" = "$total" ] && pass soak_prometheus_counts || fail soak_prometheus_counts "umdq_jobs{state=\"SUCCEEDED\"} $prom"
[ "$(api GET "/api/sweeps/$sid2?jobs=0" | jq -r .sweep.counts.SUCCEEDED)" = "$NJOBS2" ] && pass soak_second_sweep_counts \
  || fail soak_second_sweep_counts "$(api GET "/api/sweeps/$sid2?jobs=0" | jq -c .sweep.counts)"

# ---- resources ---------------------------------------------------------------------------------
warm_up; sleep 1
rss1=$(rss_kb); fd1=$(nfds); wal1=$(wal_bytes)
kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null
read -r rss_peak wal_peak < <(awk '$2 > r { r = $2 } $3 > w { w = $3 } END { print r + 0, w + 0 }' "$T_TMP/samples")
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
echo "soak: daemon RSS start $(mib "$rss0"), after the first sweeps $(mib "$rss_a"), peak $(mib "$rss_peak"), end $(mib "$rss1") ($(wc -l <"$T_TMP/samples") samples)"
echo "soak: daemon fds start $fd0, end $fd1; WAL start $(mib $((wal0 / 1024))), peak $(mib $((wal_peak / 1024))), end $(mib $((wal1 / 1024))); database $(mib $(( $(stat -c %s "$DB") / 1024 )))"
[ "$rss_peak" -le $((rss0 + RSS_MB * 1024)) ] && pass soak_rss_bounded || fail soak_rss_bounded "peak $(mib "$rss_peak") > start $(mib "$rss0") + ${RSS_MB} MiB"
# once the first sweeps are through, equal rounds must not make the daemon grow: over the second
# half of the rounds (SQLite's page caches have filled by then) RSS may rise by 4 MiB at most
if [ $rounds -ge 2 ]; then
  echo "soak: RSS after each round (MiB): $(for k in "${round_rss[@]}"; do awk -v k="$k" 'BEGIN { printf "%.1f ", k / 1024 }'; done)"
  mid=${round_rss[$(( (rounds - 1) / 2 ))]}
  [ "$rss1" -le $((mid + 4 * 1024)) ] && pass soak_rss_flat_over_rounds \
    || fail soak_rss_flat_over_rounds "$(mib "$mid") after round $(( (rounds + 1) / 2 )), $(mib "$rss1") after round $rounds"
fi
ls -l "/proc/$DAEMON_PID/fd" | awk 'NR > 1 { print $NF }' | sed 's/[0-9][0-9]*\]$/N]/' | sort >"$T_TMP/fds1"
[ "$fd1" -le "$fd0" ] && pass soak_no_fd_leak || fail soak_no_fd_leak "$fd0 -> $fd1: $(diff "$T_TMP/fds0" "$T_TMP/fds1" | grep '^[<>]' | sort | uniq -c | head -n 5 | tr '\n' ' ')"
[ "$wal_peak" -le $((WAL_MB << 20)) ] && pass soak_wal_bounded || fail soak_wal_bounded "the WAL reached $(mib $((wal_peak / 1024)))"

# ---- an orderly stop ---------------------------------------------------------------------------
alive=0
for p in "${W_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
[ $alive = 4 ] && pass soak_workers_alive || fail soak_workers_alive "$alive of 4"
for p in "${W_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${W_PIDS[@]}"; do wait "$p" 2>/dev/null; done
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?
[ $rc = 0 ] && pass soak_daemon_clean_exit || fail soak_daemon_clean_exit "exit status $rc"
ic=$(sqlite3 -cmd '.timeout 5000' "$DB" 'PRAGMA integrity_check' 2>&1)
[ "$ic" = ok ] && pass soak_integrity_check || fail soak_integrity_check "$ic"
exit 0

#!/usr/bin/env bash
# Chaos: a 200-job command sweep on 3 workers while a chaos loop SIGKILLs workers (restarting them
# under the same name after the dead time, or under a new name at once), SIGKILLs the daemon and
# restarts it on the same ports, and SIGSTOPs a worker for longer than the heartbeat timeout.
# At the end: every job SUCCEEDED, one set of results per job equal to the values derived from its
# parameter, the successful attempt's metrics complete, no attempt left RUNNING, every LOST attempt
# explained by a kill or a stop, PRAGMA integrity_check ok, no stray process.
#
#   UMDQ_CHAOS_JOBS     jobs in the sweep (default 200)
#   UMDQ_CHAOS_SECONDS  longest time the chaos loop runs (default 150; it stops when the sweep is done)
#   UMDQ_CHAOS_SEED     seed of the chaos loop's choices (default: random; printed: the same seed
#                       gives the same sequence of actions, though not at the same moments)
. "$(dirname "$0")/../lib.sh"
need_bins chaos

NJOBS=${UMDQ_CHAOS_JOBS:-200}
CHAOS_SECONDS=${UMDQ_CHAOS_SECONDS:-150}
SEED=${UMDQ_CHAOS_SEED:-$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') ))}
RANDOM=$SEED
NSTEPS=5                         # metric lines per job
EVENTS=$T_TMP/chaos.events       # "TIME KIND WORKER [UNTIL]" lines: what the loop did, for the LOST check
: >"$EVENTS"
echo "chaos: $NJOBS jobs, chaos for at most ${CHAOS_SECONDS}s, UMDQ_CHAOS_SEED=$SEED"

now() { date +%s.%N; }
# rand_ms LO HI: a random integer in [LO, HI]
rand_ms() { echo $(( $1 + RANDOM % ($2 - $1 + 1) )); }
sleep_ms() { sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }

start_daemon || { fail chaos_daemon_starts "umdqd did not start"; exit 1; }

# ---- the job: sleeps 0.1-1.5 s in NSTEPS parts, a metric line after each, then the result -------
cat >"$T_TMP/job.sh" <<'SH'
#!/bin/sh
# job.sh X NSTEPS: metric m = X * step for step 1..NSTEPS, result y = 3X + 7 and q = X * X.
x=$1 n=$2
r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
part=$(awk -v t=$((100 + r % 1401)) -v n="$n" 'BEGIN { printf "%.3f", t / 1000 / n }')
s=1
while [ $s -le "$n" ]; do
  sleep "$part"
  printf '{"umdq":"metric","step":%d,"m":%d}\n' $s $((x * s))
  s=$((s + 1))
done
echo "job x=$x attempt $UMDQ_ATTEMPT done" >&2
printf '{"umdq":"result","y":%d,"q":%d}\n' $((3 * x + 7)) $((x * x))
SH
chmod +x "$T_TMP/job.sh"
xs=$(seq -s, 1 "$NJOBS")
cat >"$T_TMP/sweep.json" <<JSON
{ "name": "chaos",
  "base": { "kind": "command", "params": {"x": 0},
            "command": "sh $T_TMP/job.sh {params.x} $NSTEPS" },
  "grid": { "params.x": [$xs] },
  "retry": { "max_attempts": 1000, "on_failure": false } }
JSON

# ---- workers: slots 0..2, each with a pid and a name ------------------------------------------
W_PID=(); W_NAME=(); W_GEN=(0 0 0)
unexpected=()
spawn() { # spawn SLOT NAME
  start_worker "$2"
  W_PID[$1]=$WORKER_PID; W_NAME[$1]=$2
}
for i in 0 1 2; do spawn $i "ch/w$i"; done

out=$(submit "$T_TMP/sweep.json")
sid=$(echo "$out" | jq -r .sweep.id)
[ "$(echo "$out" | jq -r .new)" = "$NJOBS" ] && pass chaos_submit || { fail chaos_submit "$out"; exit 0; }

# A worker that exited without being killed by the loop (rejected, crashed): noted, replaced.
check_workers() {
  local i
  for i in 0 1 2; do
    if ! kill -0 "${W_PID[$i]}" 2>/dev/null; then
      wait "${W_PID[$i]}" 2>/dev/null; local rc=$?
      unexpected+=("${W_NAME[$i]} (pid ${W_PID[$i]}) exited by itself with status $rc: $(tail -n 2 "$T_TMP/worker-${W_NAME[$i]//\//_}.out" | tr '\n' ' ')")
      W_GEN[$i]=$(( W_GEN[$i] + 1 )); spawn $i "ch/w$i-n${W_GEN[$i]}"
    fi
  done
}
daemon_alive() { kill -0 "$DAEMON_PID" 2>/dev/null; }
sweep_is_done() { sweep_done "$sid" 2>/dev/null; }

n_kill_same=0; n_kill_new=0; n_daemon=0; n_stop=0; daemon_died=""
t_end=$(( $(date +%s) + CHAOS_SECONDS ))
sleep 2
while [ "$(date +%s)" -lt $t_end ] && ! sweep_is_done; do
  slot=$(( RANDOM % 3 ))
  name=${W_NAME[$slot]}
  case $(( RANDOM % 4 )) in
    0) # SIGKILL a worker; restart it under its name once it has been declared dead (3 heartbeats)
      t=$(now); kill -KILL "${W_PID[$slot]}"; wait "${W_PID[$slot]}" 2>/dev/null
      sleep 3.5
      echo "$t kill $name $(now)" >>"$EVENTS"
      spawn $slot "$name"; n_kill_same=$((n_kill_same + 1)) ;;
    1) # SIGKILL a worker; a new worker with a new name takes its place at once
      t=$(now); kill -KILL "${W_PID[$slot]}"; wait "${W_PID[$slot]}" 2>/dev/null
      echo "$t kill $name $(( $(date +%s) + 100000 ))" >>"$EVENTS"
      W_GEN[$slot]=$(( W_GEN[$slot] + 1 )); spawn $slot "ch/w$slot-n${W_GEN[$slot]}"
      n_kill_new=$((n_kill_new + 1)) ;;
    2) # SIGKILL the daemon; restart it on the same ports after a while
      if ! daemon_alive; then daemon_died="the daemon exited by itself: $(tail -n 3 "$UMDQ_HOME/umdqd.log" | tr '\n' ' ')"; fi
      t=$(now); kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
      echo "$t daemon - -" >>"$EVENTS"
      sleep_ms "$(rand_ms 200 2500)"
      if ! restart_daemon; then fail chaos_daemon_restarts "$(tail -n 5 "$T_TMP/umdqd.out" "$UMDQ_HOME/umdqd.log" | tr '\n' ' ')"; exit 0; fi
      n_daemon=$((n_daemon + 1)) ;;
    3) # SIGSTOP a worker for longer than the heartbeat timeout, then SIGCONT
      t=$(now); kill -STOP "${W_PID[$slot]}"
      sleep_ms "$(rand_ms 3600 6000)"
      kill -CONT "${W_PID[$slot]}"
      echo "$t stop $name $(now)" >>"$EVENTS"
      n_stop=$((n_stop + 1)) ;;
  esac
  check_workers
  daemon_alive || daemon_died="the daemon exited by itself: $(tail -n 3 "$UMDQ_HOME/umdqd.log" | tr '\n' ' ')"
  [ -n "$daemon_died" ] && break
  sleep_ms "$(rand_ms 500 3000)"
done
chaos_s=$(( CHAOS_SECONDS - (t_end - $(date +%s)) ))
echo "chaos: ${chaos_s}s of chaos: $((n_kill_same + n_kill_new)) worker kills ($n_kill_same restarted under the same name, $n_kill_new under a new name), $n_daemon daemon kills and restarts, $n_stop worker stops"
[ -z "$daemon_died" ] && pass chaos_daemon_survives || fail chaos_daemon_survives "$daemon_died"
[ $((n_kill_same + n_kill_new + n_daemon + n_stop)) -gt 0 ] && pass chaos_did_something || fail chaos_did_something "the sweep finished before the first action"

# ---- the sweep finishes once the chaos stops ----------------------------------------------------
if wait_for 300 sweep_is_done; then pass chaos_sweep_finishes; else fail chaos_sweep_finishes "$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)"; fi
check_workers
[ ${#unexpected[@]} = 0 ] && pass chaos_no_unexpected_worker_exit || fail chaos_no_unexpected_worker_exit "${unexpected[*]}"

counts=$(api GET "/api/sweeps/$sid?jobs=0" | jq -c .sweep.counts)
[ "$(jobs_in "$sid" SUCCEEDED)" = "$NJOBS" ] && pass chaos_all_succeeded || fail chaos_all_succeeded "$counts"
[ "$(sql "SELECT COUNT(*) FROM jobs")" = "$NJOBS" ] && pass chaos_no_job_added || fail chaos_no_job_added "$(sql "SELECT COUNT(*) FROM jobs") jobs"

# results: one attempt's set per job, that of its successful attempt, with the derived values
bad=$(sql "SELECT j.id || ': ' || COALESCE(group_concat(r.attempt || ':' || r.key || '=' || r.value, ' '), 'none')
           FROM jobs j LEFT JOIN results r ON r.job_id = j.id GROUP BY j.id
           HAVING COUNT(DISTINCT r.attempt) != 1 OR COUNT(*) != 2 LIMIT 5")
[ -z "$bad" ] && pass chaos_one_result_set_per_job || fail chaos_one_result_set_per_job "$(echo "$bad" | tr '\n' ';')"
bad=$(sql "SELECT r.job_id || ' attempt ' || r.attempt || ' is ' || a.state FROM results r
           JOIN attempts a ON a.job_id = r.job_id AND a.n = r.attempt WHERE a.state != 'SUCCEEDED' LIMIT 5")
[ -z "$bad" ] && pass chaos_results_of_successful_attempt || fail chaos_results_of_successful_attempt "$(echo "$bad" | tr '\n' ';')"
bad=$(sql "SELECT j.id || ': x=' || json_extract(j.config, '\$.params.x') || ' ' || r.key || '=' || r.value
           FROM jobs j JOIN results r ON r.job_id = j.id
           WHERE (r.key = 'y' AND r.value != 3 * json_extract(j.config, '\$.params.x') + 7)
              OR (r.key = 'q' AND r.value != json_extract(j.config, '\$.params.x') * json_extract(j.config, '\$.params.x'))
              OR r.key NOT IN ('y', 'q') LIMIT 5")
[ -z "$bad" ] && pass chaos_results_match_params || fail chaos_results_match_params "$(echo "$bad" | tr '\n' ';')"
nsucc=$(sql "SELECT COUNT(*) FROM attempts WHERE state = 'SUCCEEDED'")
[ "$nsucc" = "$NJOBS" ] && pass chaos_one_successful_attempt_each || fail chaos_one_successful_attempt_each "$nsucc successful attempts"

# metrics of the successful attempt: steps 1..NSTEPS, m = x * step. An attempt that lacks points
# and had a daemon kill inside it is named as such (points sent to a daemon that dies before it
# stores them must be sent again by the worker: "a restarted daemon loses nothing").
sql "SELECT a.job_id, a.n, a.started, a.ended, COUNT(m.step),
            COALESCE(SUM(m.value = json_extract(j.config, '\$.params.x') * m.step), 0)
     FROM attempts a JOIN jobs j ON j.id = a.job_id
     LEFT JOIN metrics m ON m.job_id = a.job_id AND m.attempt = a.n AND m.key = 'm'
     WHERE a.state = 'SUCCEEDED' GROUP BY a.job_id, a.n
     HAVING COUNT(m.step) != $NSTEPS OR SUM(m.value = json_extract(j.config, '\$.params.x') * m.step) != $NSTEPS
        OR MIN(m.step) != 1 OR MAX(m.step) != $NSTEPS" | tr '|' ' ' >"$T_TMP/short"
bad=""
while read -r job n started ended npoints nright; do
  dk=$(awk -v s="$started" -v e="$ended" '$2 == "daemon" && $1 >= s && $1 <= e { n++ } END { print n + 0 }' "$EVENTS")
  bad+="job $job attempt $n: $npoints points, $nright right$([ "$dk" -gt 0 ] && echo " (the daemon was killed during the attempt)"); "
done <"$T_TMP/short"
[ -z "$bad" ] && pass chaos_metrics_complete || fail chaos_metrics_complete "$bad"

open=$(sql "SELECT COUNT(*) FROM attempts WHERE state = 'RUNNING' OR ended IS NULL")
[ "$open" = 0 ] && pass chaos_no_attempt_left_running || fail chaos_no_attempt_left_running "$open open attempts: $(sql "SELECT job_id, n, worker_id FROM attempts WHERE state = 'RUNNING' OR ended IS NULL LIMIT 5" | tr '\n' ' ')"

# Every LOST attempt is explained: its worker was killed or stopped while the attempt was open (a
# killed worker's interval ends when a process of that name is back; a stopped one's at SIGCONT),
# or the daemon was killed while the attempt was open and the worker never started it (the `job`
# message died with the daemon).
sql "SELECT job_id, n, worker_id, started, ended FROM attempts WHERE state = 'LOST'" | tr '|' ' ' >"$T_TMP/lost"
nlost=$(wc -l <"$T_TMP/lost")
unexplained=""
while read -r job n wid started ended; do
  why=$(awk -v w="$wid" -v s="$started" -v e="$ended" '
    $2 == "kill" && $3 == w && $1 <= e + 0.5 && $4 >= s - 0.5 { print "kill"; exit }
    $2 == "stop" && $3 == w && $1 <= e + 0.5 && $4 + 1 >= s - 0.5 { print "stop"; exit }
    $2 == "daemon" && $1 >= s - 0.5 && $1 <= e + 0.5 { d = 1 }
    END { if (d) print "daemon" }' "$EVENTS" | head -n 1)
  if [ "$why" = daemon ] && grep -q "job $job attempt $n (command) started" "$T_TMP/worker-${wid//\//_}.out" 2>/dev/null; then
    why=""
  fi
  [ -z "$why" ] && unexplained+="job $job attempt $n on $wid ($(sql "SELECT error FROM attempts WHERE job_id = $job AND n = $n")); "
done <"$T_TMP/lost"
echo "chaos: $(sql "SELECT COUNT(*) FROM attempts") attempts, $nlost LOST, $(sql "SELECT COUNT(*) FROM attempts WHERE state NOT IN ('SUCCEEDED', 'LOST')") other"
[ -z "$unexplained" ] && pass chaos_lost_attempts_explained || fail chaos_lost_attempts_explained "$unexplained"
bad=$(sql "SELECT job_id || ' attempt ' || n || ' ' || state || ': ' || COALESCE(error, '') FROM attempts
           WHERE state NOT IN ('SUCCEEDED', 'LOST') LIMIT 5")
[ -z "$bad" ] && pass chaos_no_failed_attempt || fail chaos_no_failed_attempt "$(echo "$bad" | tr '\n' ';')"

# ---- an orderly stop, then the database and the process table ----------------------------------
for i in 0 1 2; do kill -TERM "${W_PID[$i]}" 2>/dev/null; done
for i in 0 1 2; do wait "${W_PID[$i]}" 2>/dev/null; done
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
# (with a busy timeout: the kernel may drop the stopped daemon's file locks a moment after `wait`)
ic=$(sqlite3 -cmd '.timeout 5000' "$UMDQ_HOME/umdq.db" 'PRAGMA integrity_check' 2>&1)
[ "$ic" = ok ] && pass chaos_integrity_check || fail chaos_integrity_check "$ic"
fk=$(sqlite3 -cmd '.timeout 5000' "$UMDQ_HOME/umdq.db" 'PRAGMA foreign_key_check' 2>&1 | head -n 3)
[ -z "$fk" ] && pass chaos_foreign_key_check || fail chaos_foreign_key_check "$fk"

# no process left that runs from or names this test's directory (workers, job shells, sleeps)
strays() {
  local p c cmd
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    c=$(readlink "$p/cwd" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)
    if [[ $c == "$T_TMP"* || $cmd == *"$T_TMP"* ]]; then echo "${p#/proc/}: $cmd"; fi
  done
}
no_strays() { [ -z "$(strays)" ]; }
if wait_for 5 no_strays; then pass chaos_no_stray_processes; else fail chaos_no_stray_processes "$(strays | head -n 5 | tr '\n' ';')"; fi
exit 0

#!/usr/bin/env bash
# Fuzzing of what faces untrusted input.
#   In process, with libFuzzer + AddressSanitizer + UBSan (clang, from `scripts/deps.sh --fuzz`):
#   sweep_expand, proto_parse, json_parse_n + json_canonical and template_render, each driver in
#   tests/fuzz/fuzz_TARGET.c built against the common/ sources, seeded from tests/fuzz/corpus/TARGET/
#   (and examples/*.json), each for UMDQ_FUZZ_SECONDS. A crash, leak, timeout or broken property
#   is a FAIL with the input saved as $TEST_OUT/fuzz-TARGET-crash-* (replay: BINARY FILE).
#   Against a real umdqd (built with the sanitizers when possible): random and mutated HTTP
#   requests (tests/fuzz/http_fuzz.c), then random frames on the ZeroMQ port (tests/fuzz/zmq_fuzz.c)
#   next to a real worker; afterwards the daemon must be alive and serving, run a new sweep on the
#   real worker, still answer after 300 clients left in the middle of a request, pass PRAGMA
#   integrity_check and stop cleanly without a sanitizer report.
#
#   UMDQ_FUZZ_SECONDS         seconds per libFuzzer target (default 60)
#   UMDQ_FUZZ_DAEMON_SECONDS  seconds for each of the HTTP and ZeroMQ runs (default UMDQ_FUZZ_SECONDS)
#   UMDQ_FUZZ_TARGETS         which libFuzzer targets (default "sweep proto json template")
#   UMDQ_FUZZ_SEED            seed of the daemon fuzzers (default: random, printed)
# The corpora libFuzzer grows are kept in $UMDQ_BUILD/fuzz/corpus/ for the next run.
. "$(dirname "$0")/../lib.sh"
need_bins fuzz
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${UMDQ_FUZZ_SECONDS:-60}
DSECS=${UMDQ_FUZZ_DAEMON_SECONDS:-$SECS}
TARGETS=${UMDQ_FUZZ_TARGETS:-sweep proto json template}
SEED=${UMDQ_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
OUT=${TEST_OUT:-$T_TMP}
FB=${UMDQ_BUILD:-$ROOT/build}/fuzz
mkdir -p "$OUT" "$FB/obj" "$FB/corpus"
echo "fuzz: ${SECS}s per libFuzzer target ($TARGETS), ${DSECS}s per daemon fuzzer, daemon fuzzer seed $SEED"

# ---- libFuzzer targets ------------------------------------------------------------------------
have_clang=0
if ! "$ROOT/scripts/deps.sh" --fuzz >"$T_TMP/deps.out" 2>&1; then
  skip fuzz_libfuzzer "scripts/deps.sh --fuzz could not install clang: $(tail -n 1 "$T_TMP/deps.out")"
elif ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
       clang -fsanitize=fuzzer -x c - -o "$FB/probe" >"$T_TMP/probe.out" 2>&1; then
  skip fuzz_libfuzzer "clang cannot link libFuzzer: $(tail -n 1 "$T_TMP/probe.out")"
else
  have_clang=1
fi

SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
CFLAGS_FUZZ="-std=c11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -I$ROOT/common"
if [ $have_clang = 1 ]; then
  # the common/ sources once, instrumented; each driver links them
  objs=()
  built=1
  for c in "$ROOT"/common/*.c; do
    o="$FB/obj/$(basename "${c%.c}").o"
    if ! clang $CFLAGS_FUZZ $SAN -c "$c" -o "$o" 2>>"$T_TMP/build.out"; then built=0; break; fi
    objs+=("$o")
  done
  [ $built = 1 ] || fail fuzz_build_common "$(tail -n 5 "$T_TMP/build.out" | tr '\n' ' ')"

  # dictionaries: the config keys of the schema, the spec's and the protocol's words
  {
    sed -n 's/^ *{"\([a-z_0-9.]*\)",.*/"\1"/p' "$ROOT/common/schema_keys.c"
    for w in name base grid zip list seeds priority retry max_attempts on_failure description kind command \
             params umd t v hello hb started metrics result log finished busy welcome who job cancel ack \
             lease attempt step points results offset data status exit_code signal error running \
             capabilities kinds pid host device backend seed sweep job attempt '{params.x}' '{seed}' \
             '{{' '}}' '${' 'true' 'false' 'null' '1e999' '-0' '\\u0000' '\\ud800'; do
      printf '"%s"\n' "$w"
    done
  } | sort -u >"$FB/umdq.dict"

  for t in $TARGETS; do
    src=$ROOT/tests/fuzz/fuzz_$t.c
    bin=$FB/fuzz_$t
    if [ ! -f "$src" ]; then fail "fuzz_$t" "no driver $src"; continue; fi
    if [ $built = 0 ] || ! clang $CFLAGS_FUZZ -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined \
         -fno-sanitize-recover=undefined "$src" "${objs[@]}" -lcjson -lm -pthread -o "$bin" >"$T_TMP/build-$t.out" 2>&1; then
      fail "fuzz_${t}_builds" "$(tail -n 5 "$T_TMP/build-$t.out" | tr '\n' ' ')"
      continue
    fi
    seeds=()
    [ -d "$ROOT/tests/fuzz/corpus/$t" ] && seeds+=("$ROOT/tests/fuzz/corpus/$t")
    case $t in sweep|json) [ -d "$ROOT/examples" ] && seeds+=("$ROOT/examples") ;; esac
    mkdir -p "$FB/corpus/$t"
    log=$OUT/fuzz-$t.log
    rm -f "$OUT/fuzz-$t-"*
    t0=$(date +%s)
    # -use_value_profile helps with the many string compares; one job: the machine has 2 cores
    timeout -k 10 $((SECS + 120)) "$bin" -max_total_time="$SECS" -timeout=25 -rss_limit_mb=2048 -max_len=16384 \
      -use_value_profile=1 -dict="$FB/umdq.dict" -artifact_prefix="$OUT/fuzz-$t-" -print_final_stats=1 \
      "$FB/corpus/$t" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    echo "fuzz: $t: $((  $(date +%s) - t0 ))s, ${runs:-?} runs, ${cov:-cov: ?}, corpus $(ls "$FB/corpus/$t" | wc -l) inputs"
    if [ $rc = 0 ]; then
      pass "fuzz_$t"
    else
      crash=$(ls "$OUT/fuzz-$t-"* 2>/dev/null | head -n 1)
      why=$(grep -m 1 -E 'ERROR: |runtime error|^(canonical|proto|rendering|value|a |the |job |two |sweep_)' "$log")
      fail "fuzz_$t" "${why:-exit status $rc} (input: ${crash:-none saved}; log: $log; replay: $bin ${crash:-INPUT})"
    fi
  done
fi

# ---- the daemon: HTTP, then ZeroMQ ----------------------------------------------------------
# umdqd with AddressSanitizer + UBSan when it builds; else the normal one
rel=$FB/san
sanitized=0
if make -C "$ROOT" --no-print-directory SANITIZE=1 BUILD="$rel" -j2 "$rel/bin/umdqd" >"$T_TMP/san-build.out" 2>&1; then
  sanitized=1
else
  echo "fuzz: the sanitizer build of umdqd failed, fuzzing the normal one: $(tail -n 3 "$T_TMP/san-build.out" | tr '\n' ' ')"
fi
for d in http zmq; do
  if ! cc -std=c11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Werror "$ROOT/tests/fuzz/${d}_fuzz.c" -lzmq \
       -o "$FB/${d}_fuzz" >"$T_TMP/$d-build.out" 2>&1; then
    fail "fuzz_${d}_driver_builds" "$(tail -n 5 "$T_TMP/$d-build.out" | tr '\n' ' ')"; exit 0
  fi
done

normal_bin=$BIN
[ $sanitized = 1 ] && BIN=$rel/bin
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
start_daemon; ok=$?
BIN=$normal_bin
[ $ok = 0 ] || { fail fuzz_daemon_starts "$(tail -n 5 "$T_TMP/umdqd.out" | tr '\n' ' ')"; exit 0; }
echo "fuzz: umdqd pid $DAEMON_PID ($([ $sanitized = 1 ] && echo "AddressSanitizer + UBSan" || echo "no sanitizer"))"
port=${URL##*:}

daemon_ok() { # NAME: alive, serving, database intact
  local name=$1 ic
  if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
    fail "$name" "umdqd died: $(grep -m 3 -E 'ERROR|SUMMARY|runtime error' "$T_TMP/umdqd.out" | tr '\n' ' ')"
    cp "$T_TMP/umdqd.out" "$OUT/fuzz-umdqd.out" 2>/dev/null
    return 1
  fi
  if ! api GET /api/health >/dev/null; then fail "$name" "umdqd alive but GET /api/health fails"; return 1; fi
  ic=$(sqlite3 -readonly -cmd '.timeout 5000' "$UMDQ_HOME/umdq.db" 'PRAGMA integrity_check' 2>&1)
  if [ "$ic" != ok ]; then fail "$name" "integrity_check: $ic"; return 1; fi
  pass "$name"
}

# HTTP: some data first, so that ids, jobs and artifacts exist
cat >"$T_TMP/s1.json" <<'JSON'
{ "name": "fuzz-sweep", "base": { "kind": "command", "command": "echo {params.x}", "params": {"x": 0} },
  "grid": { "params.x": [1, 2, 3, 4, 5] } }
JSON
submit "$T_TMP/s1.json" >/dev/null
printf 'artifact' | api PUT /api/artifacts/1/ckpt.bin --data-binary @- >/dev/null
specs=("$ROOT"/tests/fuzz/corpus/sweep/*.json "$ROOT"/examples/*.json)
rm -f "$OUT"/http-fuzz-*.bin "$OUT"/zmq-fuzz-*.bin "$OUT/fuzz-umdqd.out"
"$FB/http_fuzz" "$port" "$TOKEN" "$DSECS" "$SEED" "$OUT" "${specs[@]}" >"$T_TMP/http.out" 2>&1; rc=$?
cat "$T_TMP/http.out" | sed 's/^/fuzz: /'
if [ $rc = 0 ]; then
  pass fuzz_http_no_500_and_serving
else
  fail fuzz_http_no_500_and_serving "$(grep -v '^http_fuzz: [0-9]* requests' "$T_TMP/http.out" | head -n 3 | tr '\n' ' ') (requests saved in $OUT/http-fuzz-*.bin)"
fi
daemon_ok fuzz_http_daemon_ok_after || exit 0

# ZeroMQ: a real worker runs jobs while the fuzzer's peers send what they like
start_worker fz-real; real_pid=$WORKER_PID
xs=$(seq -s, 1 3000)
cat >"$T_TMP/s2.json" <<JSON
{ "name": "fuzz-zmq",
  "base": { "kind": "command", "params": {"x": 0},
            "command": "printf '{\"umdq\":\"metric\",\"step\":1,\"m\":%s}\\\\n' {params.x}; echo out-{params.x}" },
  "grid": { "params.x": [$xs] }, "retry": { "max_attempts": 2 } }
JSON
sid2=$(submit "$T_TMP/s2.json" | jq -r .sweep.id)
"$FB/zmq_fuzz" "$ZMQ" "$DSECS" "$SEED" "$OUT" fz-real >"$T_TMP/zmq.out" 2>&1; rc=$?
cat "$T_TMP/zmq.out" | sed 's/^/fuzz: /'
[ $rc = 0 ] || fail fuzz_zmq_driver "exit status $rc: $(tail -n 2 "$T_TMP/zmq.out" | tr '\n' ' ')"
daemon_ok fuzz_zmq_daemon_ok_after || { echo "fuzz: the last frames sent are in $OUT/zmq-fuzz-last-*.bin"; exit 0; }
rm -f "$OUT"/zmq-fuzz-last-*.bin
kill -0 "$real_pid" 2>/dev/null && pass fuzz_zmq_real_worker_alive || fail fuzz_zmq_real_worker_alive "$(tail -n 3 "$T_TMP/worker-fz-real.out" | tr '\n' ' ')"

# the fuzzer's peers are declared dead after 3 heartbeats; then a new sweep runs on the real worker.
# Every sweep is cancelled first: the HTTP fuzzer may have stored a real one (an unmutated umd spec of
# the corpus) whose training would keep the real worker busy for minutes.
for any in $(api GET /api/sweeps | jq -r '.sweeps[].id'); do api POST "/api/sweeps/$any/cancel" >/dev/null; done
sleep 4
cat >"$T_TMP/s3.json" <<'JSON'
{ "name": "fuzz-after", "priority": 10,
  "base": { "kind": "command", "params": {"x": 0}, "command": "printf '{\"umdq\":\"result\",\"y\":%s}\\n' {params.x}" },
  "grid": { "params.x": [1, 2, 3, 4, 5] } }
JSON
sid3=$(submit "$T_TMP/s3.json" | jq -r .sweep.id)
if wait_for 60 sweep_done "$sid3" && [ "$(jobs_in "$sid3" SUCCEEDED)" = 5 ]; then
  pass fuzz_zmq_still_dispatches
else
  fail fuzz_zmq_still_dispatches "$(api GET "/api/sweeps/$sid3?jobs=0" | jq -c .sweep.counts)"
fi

# Clients that go away mid-request (the HTTP fuzzer's cut requests, a killed CLI, a closed browser
# tab) must not hold the daemon's connections: 300 of them, then the API must still answer. Each
# sends its partial request and its FIN in one segment (TCP_CORK): the daemon missed those closes.
python3 - "$port" 300 <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)  # no blank line yet
    s.shutdown(socket.SHUT_WR)
    s.close()
PY
sleep 1
code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL/api/health")
# daemon-side sockets in CLOSE_WAIT (state 08): the client closed, the daemon has not
hexport=$(printf '%04X' "$port")
cw=$(awk -v p=":$hexport" '$2 ~ p"$" && $4 == "08" { n++ } END { print n + 0 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
[ "$code" = 200 ] && pass fuzz_http_aborted_requests_free_connections \
  || fail fuzz_http_aborted_requests_free_connections "GET /api/health: HTTP $code after 300 clients sent half a request and closed; $cw daemon connections in CLOSE_WAIT"

# a clean stop: exit status 0 and no sanitizer report (leaks included)
kill -TERM "$real_pid"; wait "$real_pid" 2>/dev/null
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?
report=$(grep -m 5 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error|SUMMARY' "$T_TMP/umdqd.out")
if [ $rc = 0 ] && [ -z "$report" ]; then
  pass fuzz_daemon_clean_stop
else
  cp "$T_TMP/umdqd.out" "$OUT/fuzz-umdqd.out"
  fail fuzz_daemon_clean_stop "exit status $rc; $(echo "$report" | tr '\n' ' ') (whole output: $OUT/fuzz-umdqd.out)"
fi
ic=$(sqlite3 -cmd '.timeout 5000' "$UMDQ_HOME/umdq.db" 'PRAGMA integrity_check' 2>&1)
[ "$ic" = ok ] && pass fuzz_integrity_check_after_stop || fail fuzz_integrity_check_after_stop "$ic"
exit 0

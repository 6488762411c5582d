#!/usr/bin/env bash
# The dashboard in a real browser: headless Chromium (Debian's) driven by playwright-core against a
# real umdqd with two workers, a finished 12-job sweep (curves, results, a sample grid) and a running
# one. Checks the HTTP side with curl first (login codes, cookies, CSRF header, Host, static files),
# then every view in the browser (dashboard.mjs). Screenshots go to $TEST_OUT/web/.
# Needs node, npm and chromium: installed here when missing (scripts/deps.sh --web, npm ci into
# tests/web/node_modules); SKIP with the reason when they cannot be.
. "$(dirname "$0")/../lib.sh"
need_bins web_dashboard
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---- the browser and its driver -----------------------------------------------------------------
find_chromium() { command -v chromium || command -v chromium-browser || true; }
if [ -z "$(find_chromium)" ] || ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  "$ROOT/scripts/deps.sh" --web >"$T_TMP/deps.out" 2>&1 || true
fi
CHROMIUM=$(find_chromium)
[ -n "$CHROMIUM" ] || { skip web_dashboard "chromium is not installed and could not be: $(tail -n 2 "$T_TMP/deps.out" | tr '\n' ' ')"; exit 0; }
command -v node >/dev/null || { skip web_dashboard "node is not installed and could not be"; exit 0; }
if [ ! -f "$HERE/node_modules/playwright-core/package.json" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >"$T_TMP/npm.out" 2>&1 \
    || { skip web_dashboard "npm ci in tests/web failed: $(tail -n 3 "$T_TMP/npm.out" | tr '\n' ' ')"; exit 0; }
fi

# ---- a daemon with a finished sweep and a running one -------------------------------------------
start_daemon || { fail web_daemon_starts "umdqd did not start"; exit 1; }
start_worker web/w0
start_worker web/w1
cp "$HERE/job.awk" "$T_TMP/job.awk"
cat >"$T_TMP/done.json" <<JSON
{ "name": "fmnist-lr-width",
  "base": { "kind": "command", "params": {"lr": 0.1, "width": 64},
            "command": "awk -v lr={params.lr} -v width={params.width} -v seed={seed} -f $T_TMP/job.awk" },
  "grid": { "params.lr": [0.3, 0.1, 0.03], "params.width": [64, 128] },
  "seeds": 2 }
JSON
cat >"$T_TMP/run.json" <<JSON
{ "name": "long-run",
  "base": { "kind": "command", "params": {"lr": 0.1, "width": 64},
            "command": "awk -v lr={params.lr} -v width={params.width} -v seed={seed} -v steps=100000 -v sleep=1 -f $T_TMP/job.awk" },
  "grid": { "params.lr": [0.2, 0.05] } }
JSON
done_sid=$(submit "$T_TMP/done.json" | jq -r .sweep.id)
wait_for 120 sweep_done "$done_sid" && [ "$(jobs_in "$done_sid" SUCCEEDED)" = 12 ] \
  && pass web_finished_sweep_ready || { fail web_finished_sweep_ready "$(api GET "/api/sweeps/$done_sid?jobs=0" | jq -c .sweep.counts)"; exit 1; }
for j in $(api GET "/api/sweeps/$done_sid" | jq -r '.jobs[].id'); do
  python3 "$HERE/make_png.py" "$T_TMP/samples-$j.png" "$j"
  api PUT "/api/artifacts/$j/samples.png" --data-binary "@$T_TMP/samples-$j.png" >/dev/null || fail web_artifact_upload "job $j"
done
run_sid=$(submit "$T_TMP/run.json" | jq -r .sweep.id)
two_running() { [ "$(jobs_in "$run_sid" RUNNING)" = 2 ]; }
wait_for 30 two_running && pass web_running_sweep_ready || { fail web_running_sweep_ready "$(api GET "/api/sweeps/$run_sid?jobs=0" | jq -c .sweep.counts)"; exit 1; }
# the running jobs have reported some steps
has_steps() { [ "$(api GET "/api/sweeps/$run_sid" | jq '[.jobs[].step // 0] | min')" -ge 2 ]; }
wait_for 20 has_steps || fail web_running_steps "$(api GET "/api/sweeps/$run_sid" | jq -c '[.jobs[].step]')"

# ---- the HTTP side ---------------------------------------------------------------------------------
code() { curl -s -o "$T_TMP/body" -w '%{http_code}' "$@"; }
HOSTPORT=${URL#http://}
[ "$(code "$URL/api/sweeps")" = 401 ] && pass web_api_without_token_401 || fail web_api_without_token_401 "$(cat "$T_TMP/body")"
[ "$(code -H 'Cookie: umdq_session_1=forged' "$URL/api/sweeps")" = 401 ] && pass web_forged_cookie_401 || fail web_forged_cookie_401 "$(cat "$T_TMP/body")"
c=$(code -D "$T_TMP/headers" "$URL/")
if [ "$c" = 200 ] && grep -q 'app.js' "$T_TMP/body" && grep -qi '^content-security-policy:.*frame-ancestors' "$T_TMP/headers" \
   && grep -qi '^x-content-type-options: nosniff' "$T_TMP/headers"; then pass web_index_served; else fail web_index_served "HTTP $c"; fi
[ "$(code "$URL/vendor/uPlot.iife.min.js")" = 200 ] && pass web_vendor_served || fail web_vendor_served "HTTP $c"
bad=""
for p in /../etc/passwd /vendor/../app.js /%2e%2e/%2e%2e/etc/passwd /app.js/ //app.js /web/app.js /package.json /.git/config /vendor/; do
  c=$(code --path-as-is "$URL$p"); [ "$c" = 404 ] || bad="$bad $p:$c"
done
[ -z "$bad" ] && pass web_static_only_embedded || fail web_static_only_embedded "served:$bad"
[ "$(code -H "Host: evil.example:${HOSTPORT##*:}" "$URL/")" = 421 ] && pass web_static_host_checked || fail web_static_host_checked "$(cat "$T_TMP/body")"
[ "$(code -X POST "$URL/api/login")" = 401 ] && pass web_login_code_needs_token || fail web_login_code_needs_token "$(cat "$T_TMP/body")"
login=$(api POST /api/login)
lcode=$(echo "$login" | jq -r .code)
echo "$login" | jq -e --arg u "$URL/#login=" '.url | startswith($u)' >/dev/null && pass web_login_url || fail web_login_url "$login"
c=$(code -D "$T_TMP/h1" -X POST -H 'Content-Type: application/json' --data "{\"login\":\"$lcode\"}" "$URL/api/session")
cookie=$(sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\);.*/\1/p' "$T_TMP/h1" | tr -d '\r')
csrf=$(jq -r .csrf "$T_TMP/body")
if [ "$c" = 200 ] && grep -qi '^set-cookie: umdq_session_[0-9]*=.*HttpOnly.*SameSite=Strict' "$T_TMP/h1" && [ ${#csrf} = 64 ]; then
  pass web_login_sets_cookie
else
  fail web_login_sets_cookie "HTTP $c: $(cat "$T_TMP/h1" "$T_TMP/body" | tr '\r\n' '  ')"
fi
[ "$(code -X POST --data "{\"login\":\"$lcode\"}" "$URL/api/session")" = 401 ] && pass web_login_code_once || fail web_login_code_once "second use: $(cat "$T_TMP/body")"
[ "$(code -H "Cookie: $cookie" "$URL/api/sweeps")" = 200 ] && pass web_cookie_reads || fail web_cookie_reads "$(cat "$T_TMP/body")"
run_job=$(api GET "/api/sweeps/$run_sid" | jq -r '.jobs[0].id')
[ "$(code -X POST -H "Cookie: $cookie" "$URL/api/jobs/$run_job/cancel")" = 403 ] && pass web_cookie_post_needs_csrf || fail web_cookie_post_needs_csrf "$(cat "$T_TMP/body")"
wrong_csrf=$([ "${csrf:0:1}" = a ] && echo "b${csrf:1}" || echo "a${csrf:1}")
[ "$(code -X POST -H "Cookie: $cookie" -H "X-Umdq-Csrf: $wrong_csrf" "$URL/api/jobs/$run_job/cancel")" = 403 ] && pass web_cookie_post_wrong_csrf || fail web_cookie_post_wrong_csrf "$(cat "$T_TMP/body")"
[ "$(api GET "/api/jobs/$run_job" | jq -r .job.state)" = RUNNING ] && pass web_refused_posts_change_nothing || fail web_refused_posts_change_nothing "job $run_job was changed"
[ "$(code -X POST -H 'Content-Type: text/plain' -H "Cookie: $cookie" -H "Origin: http://evil.example" "$URL/api/sweeps/$run_sid/cancel")" = 403 ] \
  && pass web_cross_site_form_post_refused || fail web_cross_site_form_post_refused "$(cat "$T_TMP/body")"

# the dashboard's compact table says what the full sweep answer says, job by job
full=$(api GET "/api/sweeps/$done_sid" | jq -c '[.jobs[] | {id, state, attempts, seed, worker, params, results}]')
table=$(api GET "/api/sweeps/$done_sid/table" | jq -c '. as $t | [.rows[] | . as $r | {id: $r[0], state: $r[2], attempts: $r[3],
  seed: $r[5], worker: $r[6], params: ([$t.swept, $r[7]] | transpose | map({(.[0]): .[1]}) | add),
  results: ([$t.results, $r[8]] | transpose | map(select(.[1] != null) | {(.[0]): .[1]}) | add)}]')
if [ -n "$table" ] && [ "$(jq -n --argjson a "$full" --argjson b "$table" '$a == $b')" = true ]; then
  pass web_table_matches_sweep_api
else
  fail web_table_matches_sweep_api "full: ${full:0:300} table: ${table:0:300}"
fi
[ "$(code "$URL/api/sweeps/$done_sid/table")" = 401 ] && pass web_table_needs_token || fail web_table_needs_token "$(cat "$T_TMP/body")"
[ "$(code -H "Authorization: Bearer $TOKEN" "$URL/api/sweeps/no-such-sweep/table")" = 404 ] && pass web_table_unknown_sweep_404 || fail web_table_unknown_sweep_404 "$(cat "$T_TMP/body")"

# ---- the browser -----------------------------------------------------------------------------------------
mkdir -p "$TEST_OUT/web"
login=$(api POST /api/login)
UMDQ_WEB_URL=$(echo "$login" | jq -r .url) UMDQ_URL=$URL UMDQ_TOKEN=$TOKEN CHROMIUM=$CHROMIUM \
SHOTS=$TEST_OUT/web DONE_SWEEP=$done_sid RUN_SWEEP=$run_sid \
  timeout -k 5 240 node "$HERE/dashboard.mjs" 2>&1
rc=$?
[ $rc = 0 ] || fail web_browser_run "dashboard.mjs exited with $rc"

# the table follows a requeued job (its cached row is dropped when attempts and state move on)
rq_job=$(api GET "/api/sweeps/$done_sid" | jq -r '.jobs[5].id')
api POST "/api/jobs/$rq_job/requeue" >/dev/null
table_row() { api GET "/api/sweeps/$done_sid/table" | jq -c --argjson id "$rq_job" '.rows[] | select(.[0] == $id) | [.[2], .[3]]'; }
second_attempt_done() { [ "$(table_row)" = '["SUCCEEDED",2]' ]; }
if wait_for 30 second_attempt_done; then pass web_table_follows_requeue; else fail web_table_follows_requeue "row $(table_row), job $(api GET "/api/jobs/$rq_job" | jq -c '[.job.state, .job.attempts]')"; fi
run_full=$(api GET "/api/sweeps/$run_sid" | jq -c '[.jobs[] | [.id, .state, .attempts, .worker]]')
run_table=$(api GET "/api/sweeps/$run_sid/table" | jq -c '[.rows[] | [.[0], .[2], .[3], .[6]]]')
[ "$run_full" = "$run_table" ] && pass web_table_running_sweep || fail web_table_running_sweep "full $run_full table $run_table"
exit 0

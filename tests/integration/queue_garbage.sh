#!/usr/bin/env bash
# Garbage HTTP requests and requests without the token leave the daemon serving.
. "$(dirname "$0")/../lib.sh"
need_bins queue_garbage

start_daemon || { fail queue_garbage_daemon "umdqd did not start"; exit 1; }
port=${URL##*:}
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/sweeps")
[ "$code" = 401 ] && pass queue_garbage_no_token_401 || fail queue_garbage_no_token_401 "HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer 0000" "$URL/api/sweeps")
[ "$code" = 401 ] && pass queue_garbage_wrong_token_401 || fail queue_garbage_wrong_token_401 "HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -X POST --data-binary '{"name": ' "$URL/api/sweeps")
[ "$code" = 400 ] && pass queue_garbage_bad_json_400 || fail queue_garbage_bad_json_400 "HTTP $code"
head -c 9000000 /dev/zero | tr '\0' 'x' >"$T_TMP/big"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -X POST --data-binary "@$T_TMP/big" "$URL/api/sweeps")
[ "$code" = 413 ] && pass queue_garbage_body_cap_413 || fail queue_garbage_body_cap_413 "HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL/api/artifacts/1/..%2F..%2Ftoken")
[ "$code" -ge 400 ] && pass queue_garbage_no_traversal || fail queue_garbage_no_traversal "HTTP $code"
# raw garbage on the socket, a half request, binary noise
for payload in 'GARBAGE\r\n\r\n' 'GET /api/health HTTP/1.1\r\nHost: x' '\x00\x01\x02\xff\xfe' 'POST /api/sweeps HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n'; do
  ( exec 3<>/dev/tcp/127.0.0.1/$port; printf "$payload" >&3; timeout 2 cat <&3 >/dev/null; exec 3>&- ) 2>/dev/null
done
head -c 65536 /dev/urandom >"$T_TMP/noise"
( exec 3<>/dev/tcp/127.0.0.1/$port; cat "$T_TMP/noise" >&3; timeout 2 cat <&3 >/dev/null ) 2>/dev/null
api GET /api/health >/dev/null && kill -0 "$DAEMON_PID" && pass queue_garbage_http_still_serving || fail queue_garbage_http_still_serving "daemon gone"
# garbage on the ZeroMQ port (not even a ZMTP greeting)
zport=${ZMQ##*:}
( exec 3<>/dev/tcp/127.0.0.1/$zport; cat "$T_TMP/noise" >&3; sleep 0.5 ) 2>/dev/null
start_worker it/g
cat >"$T_TMP/s.json" <<'JSON'
{ "name": "it-after-garbage", "base": { "kind": "command", "command": "true" } }
JSON
sid=$(submit "$T_TMP/s.json" | jq -r .sweep.id)
wait_for 20 sweep_done "$sid" && pass queue_garbage_zmq_still_serving || fail queue_garbage_zmq_still_serving "job did not run after garbage on the ZeroMQ port"
api GET /metrics | grep -q '^umdq_jobs{state="SUCCEEDED"} 1' && pass queue_garbage_prometheus || fail queue_garbage_prometheus "$(api GET /metrics | head -n 5)"
exit 0

/* cli_client.h: how umdq finds and talks to umdqd: the state directory, umdqd.json, the token
 * and JSON requests over HTTP (libcurl), see docs/api.md. */
#ifndef UMDQ_CLI_CLIENT_H
#define UMDQ_CLI_CLIENT_H
#include <cjson/cJSON.h>
#include <stddef.h>

#define CLI_DEFAULT_PORT 5755

typedef struct cli_client cli_client;

/* The state directory: explicit (--home) when not NULL, else $UMDQ_HOME, else ~/.umdq.
 * Caller frees; NULL on out of memory. */
char *cli_home_resolve(const char *explicit_home);

/* A client for the daemon of home (borrowed until client_destroy). The URL comes from
 * home/umdqd.json, the token from home/token; without umdqd.json the default
 * http://127.0.0.1:5755 is tried (and an unreachable daemon's message says no daemon state was
 * found). *out is owned by the caller. 0, UMDQ_ENOMEM or UMDQ_EIO (curl could not start). */
int client_new(const char *home, cli_client **out, char *err, size_t errlen);
void client_destroy(cli_client **c);

/* Read umdqd.json and token again (after a daemon has started). 0 when umdqd.json was found. */
int client_reload(cli_client *c);
const char *client_url(const cli_client *c);   /* borrowed */
const char *client_zmq(const cli_client *c);   /* from umdqd.json, NULL if unknown; borrowed */
int client_daemon_pid(const cli_client *c);     /* pid from umdqd.json, 0 if unknown */
int client_has_state(const cli_client *c);      /* 1 when umdqd.json was read */

/* One request. method "GET" or "POST"; path starts with "/" and may carry a query; body (may be
 * NULL) is sent as application/json. timeout_s bounds the whole request (0 = 60 s).
 * On an HTTP answer of any status returns 0 with *status set and *json the parsed body (NULL when
 * the body is empty or not JSON; caller owns). When the daemon cannot be reached returns UMDQ_EIO
 * with a message naming the URL and suggesting `umdq up`. */
int client_request(cli_client *c, const char *method, const char *path, const char *body,
                   size_t bodylen, double timeout_s, long *status, cJSON **json, char *err,
                   size_t errlen);

/* client_request, then the status mapped to a code: 2xx -> 0; 400 -> UMDQ_EINVAL,
 * 404 -> UMDQ_ENOTFOUND, 409 -> UMDQ_ESTATE, anything else -> UMDQ_EIO; err then holds the API's
 * "error" text. *json is set (caller owns) whenever the body was JSON, on errors too. */
int client_call(cli_client *c, const char *method, const char *path, const char *body,
                size_t bodylen, cJSON **json, char *err, size_t errlen);

/* s percent-encoded for use as one path segment or query value. Caller frees; NULL on OOM. */
char *client_escape(const char *s);

/* The exit code (umdq.h UMDQ_EXIT_*) for a code returned by client_call. */
int client_exit_code(int rc);

#endif

/* web.h: the dashboard side of umdqd's HTTP server: the files of web/ compiled into the binary
 * (scripts/embed-web.sh), one-time login codes and the browser's session cookie.
 *
 * A browser never holds the API token. `umdq dashboard` (or `umdq up`) asks the daemon for a
 * one-time login code with the token (POST /api/login) and prints URL/#login=CODE; the page
 * trades the code for a session cookie (POST /api/session: HttpOnly, SameSite=Strict) and a CSRF
 * value that it sends back in the X-Umdq-Csrf header of every mutating call. Sessions and CSRF
 * values are HMAC-SHA256 of the API token, so they survive a daemon restart and a new token
 * ends them all; codes live in memory, each used once. */
#ifndef UMDQ_WEB_H
#define UMDQ_WEB_H
#include <stddef.h>
#include "embed.h"

#define WEB_LOGIN_TTL_S 600            /* a login code is good for 10 minutes */
#define WEB_SESSION_TTL_S (7 * 86400)  /* a session cookie for a week */
#define WEB_CODE_HEX 32                /* hex characters of a login code */
#define WEB_SESSION_MAX 160            /* bytes of a session cookie value, with its NUL */
#define WEB_CSRF_HEX 64                /* hex characters of a CSRF value */
#define WEB_CSRF_HEADER "X-Umdq-Csrf"

/* The embedded file that serves url ("/" is index.html), or NULL: only names in the table are
 * served, so no path leads outside it. */
const umdq_embedded_file *web_asset(const char *url);
/* The Content-Type for a file name ("text/html; charset=utf-8", ...). */
const char *web_asset_type(const char *name);

typedef struct web_auth web_auth;

/* A new authority keyed by the API token (copied). 0 or UMDQ_ENOMEM; *out owned by the caller. */
int web_auth_new(const char *token, web_auth **out);
/* Accepts NULL, NULLs the pointer. */
void web_auth_destroy(web_auth **a);
/* A fresh one-time code into code (WEB_CODE_HEX + 1 bytes). 0 or UMDQ_EIO (no random bytes).
 * Thread-safe. */
int web_login_new(web_auth *a, char *code);
/* Use up code: 0 with a session cookie value (WEB_SESSION_MAX bytes) and its CSRF value
 * (WEB_CSRF_HEX + 1 bytes), or UMDQ_EINVAL when the code is unknown, used or expired.
 * Thread-safe. */
int web_login_take(web_auth *a, const char *code, char *session, char *csrf);
/* 1 when session is a valid, unexpired session value (csrf, when not NULL, gets its CSRF value),
 * else 0. */
int web_session_check(const web_auth *a, const char *session, char *csrf);
/* HMAC-SHA256 (RFC 2104) of msg under key, as 64 lower-case hex characters. */
void web_hmac_sha256(const char *key, const char *msg, char hex[65]);
/* 1 when the two strings are equal, in a time that does not depend on where they differ. */
int web_equal(const char *a, const char *b);

#endif

/* http.h: umdqd's HTTP API (docs/api.md) on libmicrohttpd with a small thread pool.
 *
 * GET routes read through one read-only SQLite connection per HTTP thread; mutations (submit,
 * cancel, requeue) are handed to the scheduler over the mutation channel and answered once they
 * are committed. Every /api/ route and /metrics needs the token, or the session cookie of the
 * dashboard (web.h), whose files are served at / without it; the Host header must name the
 * bound address; bodies are capped; artifacts are streamed to a temporary file and renamed. */
#ifndef UMDQ_HTTP_H
#define UMDQ_HTTP_H
#include <stddef.h>
#include "latency.h"
#include "mutq.h"

#define HTTP_MAX_JSON (8u << 20)               /* bytes of a JSON request body */
#define HTTP_MAX_ARTIFACT (4ull << 30)         /* bytes of an artifact */
#define HTTP_THREADS 4
#define HTTP_MAX_CONNECTIONS 256               /* open connections, all clients together */
#define HTTP_IDLE_TIMEOUT_S 30                 /* a connection silent this long is closed */

typedef struct {
    const char *db_path;      /* umdq.db, opened read-only by each HTTP thread; copied */
    const char *home;         /* artifacts/ and logs/ live under it; copied */
    const char *token;        /* copied */
    const char *host;         /* the bound host as given ("127.0.0.1", "::1", "localhost"); copied */
    int port;                 /* the bound port */
    const char *url;          /* "http://127.0.0.1:5755"; copied */
    const char *zmq;          /* the bound ZeroMQ endpoint, for /api/health; copied */
    const char *epoch;        /* copied */
    mutq *q;                  /* borrowed until http_stop */
    latency *lat;             /* borrowed until http_stop */
} http_options;

typedef struct http_server http_server;

/* Bind a listening TCP socket for "HOST:PORT" (port 0 = a free one). The host must be a loopback
 * address. *fd is owned by the caller until http_start takes it; host/port receive what was bound. */
int http_listen(const char *addr, int *fd, char *host, size_t hostlen, int *port, char *err, size_t errlen);
/* Serve on fd (taken over, also on failure). */
int http_start(int fd, const http_options *o, http_server **out, char *err, size_t errlen);
/* Stop serving: waits for requests in flight (mutations waiting on the scheduler must be answered
 * or refused first: close the mutation queue before). Accepts NULL, NULLs the pointer. */
void http_stop(http_server **h);

#endif

/* umdqd.h: one daemon process: its state directory (database, artifacts, logs, token, pid lock,
 * umdqd.json), its two listeners and the scheduler, from start to a clean stop. */
#ifndef UMDQ_UMDQD_H
#define UMDQ_UMDQD_H
#include <signal.h>
#include <stddef.h>

#define UMDQD_DEFAULT_HTTP "127.0.0.1:5755"
#define UMDQD_DEFAULT_ZMQ "tcp://127.0.0.1:5756"

typedef struct {
    const char *home;       /* the state directory (created when absent), borrowed */
    const char *http_addr;  /* "HOST:PORT" (port 0 = any free one), loopback only; borrowed */
    const char *zmq_addr;   /* "tcp://HOST:PORT" or "tcp://HOST:*", loopback only; borrowed */
    int heartbeat_ms;       /* the workers' heartbeat period; 1000 */
    int log_level;          /* log.h's log_level for HOME/umdqd.log */
} umdqd_options;

/* Set up the state directory, bind, serve until *stop is set, then stop cleanly. Returns 0, or a
 * negative UMDQ_E* code with a message: UMDQ_EBUSY when another umdqd holds the directory or an
 * address is taken, UMDQ_EINVAL for a bad or non-loopback address, UMDQ_EFORMAT for a database
 * newer than this build. */
int umdqd_run(const umdqd_options *o, volatile sig_atomic_t *stop, char *err, size_t errlen);

#endif

/* scheduler.h: the scheduler, umdqd's main loop and single writer.
 *
 * It polls the worker ROUTER socket (docs/protocol.md) and the mutation channel from the HTTP
 * threads (mutq.h). Each turn it applies every message that is ready in one store batch, runs the
 * periodic housekeeping (worker liveness, the restart grace, stall detection) when due, hands
 * QUEUED jobs to IDLE workers, commits once, and only then sends the messages that resulted and
 * answers the mutations. So a burst of reports costs one fsync, and nothing is ever said about a
 * state that a crash could take back. */
#ifndef UMDQ_SCHEDULER_H
#define UMDQ_SCHEDULER_H
#include <signal.h>
#include <stddef.h>
#include "latency.h"
#include "mutq.h"
#include "store.h"

typedef struct {
    store *st;             /* borrowed for the scheduler's life */
    void *router;          /* the bound ZeroMQ ROUTER socket, borrowed */
    mutq *q;               /* borrowed */
    latency *lat;          /* dispatch latency histogram, borrowed */
    const char *http_url;  /* "http://127.0.0.1:5755", for `welcome`; copied */
    const char *token;     /* for `welcome`; copied */
    const char *epoch;     /* this daemon process's id; copied */
    int heartbeat_ms;      /* the workers' heartbeat period (1000) */
} sched_options;

typedef struct sched sched;

int sched_new(const sched_options *o, sched **out, char *err, size_t errlen);
void sched_destroy(sched **s); /* accepts NULL, NULLs the pointer */
/* Serve until *stop becomes nonzero. Returns 0, or a negative code on a fault it cannot go on
 * after (the message in err). */
int sched_run(sched *s, volatile sig_atomic_t *stop, char *err, size_t errlen);

#endif

/* mutq.h: the channel on which HTTP threads hand mutations (submit, cancel, requeue) to the
 * scheduler thread, the single writer, and wait for the answer.
 *
 * An HTTP thread fills a mutation, calls mutq_call and blocks; the scheduler wakes on mutq_fd (an
 * eventfd it polls with its ZeroMQ socket), takes every queued mutation, applies them in its batch,
 * commits, and then completes each one, which wakes its caller. The mutation stays owned by the
 * caller throughout; the scheduler only borrows it between mutq_take and mutq_complete. */
#ifndef UMDQ_MUTQ_H
#define UMDQ_MUTQ_H
#include <stddef.h>
#include <stdint.h>
#include "store.h"
#include "sweep.h"

typedef enum {
    MUT_SUBMIT,        /* store sw */
    MUT_JOB_CANCEL,    /* id = job */
    MUT_JOB_REQUEUE,   /* id = job */
    MUT_SWEEP_CANCEL,  /* id = sweep */
    MUT_SWEEP_REQUEUE  /* id = sweep */
} mutation_kind;

typedef struct mutation {
    mutation_kind kind;
    const sweep *sw;   /* MUT_SUBMIT: borrowed from the caller until mutq_call returns */
    int64_t id;
    /* filled by the scheduler */
    int rc;            /* 0 or a negative UMDQ_E* code */
    char err[512];
    store_submit_result submit;
    int count;         /* sweep cancel / requeue: jobs changed */
    /* the queue's own */
    int done;
    struct mutation *next;
} mutation;

typedef struct mutq mutq;

int mutq_new(mutq **out, char *err, size_t errlen);
void mutq_destroy(mutq **q); /* accepts NULL, NULLs the pointer */
/* The descriptor that becomes readable when mutations wait (the scheduler polls it). */
int mutq_fd(const mutq *q);
/* HTTP thread: queue m and wait until the scheduler completes it. Returns m->rc; when the queue is
 * closed (the daemon is stopping) m->rc is UMDQ_ECANCELLED. */
int mutq_call(mutq *q, mutation *m);
/* Scheduler: every queued mutation, oldest first, as a list through ->next (NULL when none). */
mutation *mutq_take(mutq *q);
/* Scheduler: m (taken) is answered; wakes its caller. m must not be touched afterwards. */
void mutq_complete(mutq *q, mutation *m);
/* Refuse every queued and future mutation (UMDQ_ECANCELLED "the daemon is stopping"). */
void mutq_close(mutq *q);

#endif

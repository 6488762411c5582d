/* mutq.c: a mutex-protected list plus an eventfd: HTTP threads queue mutations, the scheduler
 * thread takes and answers them (see mutq.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "mutq.h"
#include "umdq.h"

struct mutq {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* broadcast whenever a mutation is completed */
    mutation *head, *tail; /* queued, not yet taken; borrowed from their callers */
    int closed;
    int efd;
};

int mutq_new(mutq **out, char *err, size_t errlen) {
    *out = NULL;
    mutq *q = calloc(1, sizeof *q);
    if (!q) return UMDQ_ENOMEM;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        free(q);
        return UMDQ_EIO;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cond, NULL);
    *out = q;
    return 0;
}

void mutq_destroy(mutq **qp) {
    if (!qp || !*qp) return;
    mutq *q = *qp;
    mutq_close(q);
    close(q->efd);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->mu);
    free(q);
    *qp = NULL;
}

int mutq_fd(const mutq *q) { return q->efd; }

static void refuse(mutation *m) {
    m->rc = UMDQ_ECANCELLED;
    snprintf(m->err, sizeof m->err, "the daemon is stopping");
    m->done = 1;
}

int mutq_call(mutq *q, mutation *m) {
    m->done = 0;
    m->rc = 0;
    m->err[0] = 0;
    m->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        refuse(m);
    } else {
        if (q->tail) q->tail->next = m;
        else q->head = m;
        q->tail = m;
        uint64_t one = 1;
        if (write(q->efd, &one, sizeof one) < 0) { /* EAGAIN: the counter is already non-zero */ }
        while (!m->done) pthread_cond_wait(&q->cond, &q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return m->rc;
}

mutation *mutq_take(mutq *q) {
    uint64_t v;
    if (read(q->efd, &v, sizeof v) < 0) { /* EAGAIN: nothing signalled */ }
    pthread_mutex_lock(&q->mu);
    mutation *list = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return list;
}

void mutq_complete(mutq *q, mutation *m) {
    pthread_mutex_lock(&q->mu);
    m->done = 1;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mu);
}

void mutq_close(mutq *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    for (mutation *m = q->head, *next; m; m = next) {
        next = m->next;
        refuse(m);
    }
    q->head = q->tail = NULL;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mu);
}

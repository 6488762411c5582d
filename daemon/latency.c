/* latency.c: the dispatch-latency histogram (see latency.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "latency.h"

const double LATENCY_BOUNDS[LATENCY_NBUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                 0.25, 0.5, 1, 2.5, 5, 10};

struct latency {
    pthread_mutex_t mu;
    latency_snapshot s;
};

latency *latency_new(void) {
    latency *l = calloc(1, sizeof *l);
    if (l) pthread_mutex_init(&l->mu, NULL);
    return l;
}

void latency_destroy(latency **lp) {
    if (!lp || !*lp) return;
    pthread_mutex_destroy(&(*lp)->mu);
    free(*lp);
    *lp = NULL;
}

void latency_observe(latency *l, double seconds) {
    if (seconds < 0) seconds = 0;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < LATENCY_NBUCKETS; i++)
        if (seconds <= LATENCY_BOUNDS[i]) l->s.cumulative[i]++;
    l->s.count++;
    l->s.sum += seconds;
    pthread_mutex_unlock(&l->mu);
}

void latency_read(latency *l, latency_snapshot *out) {
    pthread_mutex_lock(&l->mu);
    memcpy(out, &l->s, sizeof *out);
    pthread_mutex_unlock(&l->mu);
}

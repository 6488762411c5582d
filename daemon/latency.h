/* latency.h: a thread-safe histogram of dispatch latency (seconds from QUEUED to dispatch), written
 * by the scheduler and read by GET /metrics. */
#ifndef UMDQ_LATENCY_H
#define UMDQ_LATENCY_H
#include <stdint.h>

#define LATENCY_NBUCKETS 13
extern const double LATENCY_BOUNDS[LATENCY_NBUCKETS]; /* upper bounds, 0.001 .. 10 s */

typedef struct latency latency;

typedef struct {
    uint64_t cumulative[LATENCY_NBUCKETS]; /* observations <= LATENCY_BOUNDS[i] */
    uint64_t count;
    double sum;
} latency_snapshot;

latency *latency_new(void); /* NULL on out of memory */
void latency_destroy(latency **l);
void latency_observe(latency *l, double seconds);
void latency_read(latency *l, latency_snapshot *out);

#endif

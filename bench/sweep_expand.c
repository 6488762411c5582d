/* sweep_expand.c: time to expand a 10,000-job grid sweep, as a ratio against a floor measured in
 * the same run: copying the same config texts and hashing each distinct one with SHA-256 (what
 * any expansion must at least do). umdq-uses: common */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlist.h"
#include "sha256.h"
#include "sweep.h"
#include "util.h"

/* A 10,000-job spec: 10 x 10 x 10 grid x 10 seeds, or 10 x 10 x 10 x 10 grid with seeds 1 when
 * distinct configs is non-zero. */
static char *make_spec(int distinct) {
    strbuf b;
    strbuf_init(&b);
    strbuf_puts(&b, "{\"name\": \"bench\", \"base\": {\"data\": {\"dataset\": \"fashion-mnist\"}, "
                    "\"model\": {\"patch\": 4, \"width\": 192, \"depth\": 6, \"dec_depth\": 2, \"heads\": 3}, "
                    "\"umd\": {\"r_t0\": 0.5, \"mask_ratio\": 0.375, \"mask_ratio_t0\": 0.75, \"schedule\": \"cosine\"}, "
                    "\"train\": {\"steps\": 3000, \"batch\": 256, \"warmup\": 0.05}}, \"grid\": {"
                    "\"umd.r_t0\": [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0], "
                    "\"umd.mask_ratio\": [0, 0.1, 0.2, 0.3, 0.375, 0.4, 0.5, 0.6, 0.7, 0.8], "
                    "\"train.steps\": [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]");
    if (distinct)
        strbuf_puts(&b, ", \"model.width\": [12, 24, 48, 96, 192, 384, 768, 1536, 3072, 6144]}, \"seeds\": 1}");
    else
        strbuf_puts(&b, "}, \"seeds\": 10}");
    return strbuf_steal(&b);
}

/* Median of reps runs of the expansion; fills *s with the last result. */
static double time_expand(const char *spec, int reps, sweep **s) {
    double best[64];
    for (int r = 0; r < reps; r++) {
        errlist *e = errlist_new();
        sweep_destroy(s);
        double t0 = mono_s();
        int rc = sweep_expand(spec, strlen(spec), s, e);
        best[r] = mono_s() - t0;
        if (rc != 0) {
            char *j = errlist_join(e, "\n");
            fprintf(stderr, "sweep_expand failed: %s\n", j ? j : "?");
            free(j);
            errlist_destroy(&e);
            return -1;
        }
        errlist_destroy(&e);
    }
    for (int i = 0; i < reps; i++)
        for (int j = i + 1; j < reps; j++)
            if (best[j] < best[i]) {
                double t = best[i];
                best[i] = best[j];
                best[j] = t;
            }
    return best[reps / 2];
}

/* The floor: copy each job's config text into a buffer and hash each distinct text once (jobs
 * that differ only in their seed share one text). */
static double time_floor(const sweep *s, int reps) {
    double best[64];
    size_t total = 0;
    for (int i = 0; i < s->njobs; i++) total += strlen(s->jobs[i].config) + 1;
    char *buf = malloc(total);
    volatile unsigned char sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = mono_s();
        size_t off = 0;
        for (int i = 0; i < s->njobs; i++) {
            size_t n = strlen(s->jobs[i].config);
            memcpy(buf + off, s->jobs[i].config, n + 1);
            if (i == 0 || s->jobs[i].config != s->jobs[i - 1].config) {
                unsigned char d[32];
                sha256(buf + off, n, d);
                sink ^= d[0];
            }
            off += n + 1;
        }
        best[r] = mono_s() - t0;
    }
    (void)sink;
    free(buf);
    for (int i = 0; i < reps; i++)
        for (int j = i + 1; j < reps; j++)
            if (best[j] < best[i]) {
                double t = best[i];
                best[i] = best[j];
                best[j] = t;
            }
    return best[reps / 2];
}

int main(void) {
    const int reps = 15;
    printf("sha256: %s\n", sha256_implementation());
    for (int distinct = 0; distinct < 2; distinct++) {
        char *spec = make_spec(distinct);
        sweep *s = NULL;
        double t = time_expand(spec, reps, &s);
        if (t < 0) return 1;
        double f = time_floor(s, reps);
        size_t bytes = 0;
        for (int i = 0; i < s->njobs; i++) bytes += strlen(s->jobs[i].config);
        printf("sweep_expand %s: %d jobs (%zu config bytes): %.2f ms per 10,000 jobs; floor (memcpy + "
               "sha256) %.2f ms; ratio %.2fx\n",
               distinct ? "10^4 distinct configs, 1 seed" : "10^3 configs x 10 seeds",
               s->njobs, bytes, t * 1e3 * 10000.0 / s->njobs, f * 1e3 * 10000.0 / s->njobs, t / f);
        sweep_destroy(&s);
        free(spec);
    }
    return 0;
}

/* fuzz_sweep.c: libFuzzer driver for sweep_expand (common/sweep.h), which reads every sweep spec
 * POSTed to the daemon.
 *
 * Properties: a refused spec gives no sweep and at least one problem; an accepted one gives 1 to
 * SWEEP_MAX_JOBS jobs whose configs are canonical JSON objects (re-parsing and re-printing gives
 * the same text) with their "kind" and without "seed", whose hash is the SHA-256 of the text, whose
 * (hash, seed) keys are all different, and whose canonical spec expands again to the same set of
 * jobs (checked for sweeps of up to 2000 jobs). Built by tests/long/fuzz.sh, not by the Makefile. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlist.h"
#include "jsonx.h"
#include "sha256.h"
#include "sweep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    char hash[65];
    int64_t seed;
} job_key;

static int key_cmp(const void *a, const void *b) {
    const job_key *x = a, *y = b;
    int c = strcmp(x->hash, y->hash);
    if (c) return c;
    return (x->seed > y->seed) - (x->seed < y->seed);
}

/* The sorted (hash, seed) keys of s. Caller frees. */
static job_key *sorted_keys(const sweep *s) {
    job_key *k = malloc((size_t)s->njobs * sizeof *k);
    if (!k) abort();
    for (int i = 0; i < s->njobs; i++) {
        memcpy(k[i].hash, s->jobs[i].hash, sizeof k[i].hash);
        k[i].seed = s->jobs[i].seed;
    }
    qsort(k, (size_t)s->njobs, sizeof *k, key_cmp);
    return k;
}

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    errlist *errs = errlist_new();
    sweep *s = NULL;
    int rc = sweep_expand((const char *)data, size, &s, errs);
    if (rc != 0) {
        if (s) FAIL("sweep_expand failed (%d) but gave a sweep", rc);
        if (errlist_count(errs) == 0) FAIL("sweep_expand failed (%d) without naming a problem", rc);
        char *joined = errlist_join(errs, "\n");
        free(joined);
        errlist_destroy(&errs);
        return 0;
    }
    if (!s || errlist_count(errs) != 0) FAIL("sweep_expand succeeded with %d problems", errlist_count(errs));
    if (s->njobs < 1 || s->njobs > SWEEP_MAX_JOBS) FAIL("%d jobs", s->njobs);
    if (!s->name || !s->name[0] || !s->spec) FAIL("a sweep without a name or spec");
    for (int i = 0; i < s->njobs; i++) {
        const sweep_job *j = &s->jobs[i];
        char err[256], hex[65];
        if (j->idx != i) FAIL("job %d has idx %d", i, j->idx);
        size_t n = strlen(j->config);
        sha256_hex(j->config, n, hex);
        if (strcmp(hex, j->hash) != 0) FAIL("job %d: hash %s is not the SHA-256 of %s", i, j->hash, j->config);
        cJSON *c = json_parse_n(j->config, n, err, sizeof err);
        if (!cJSON_IsObject(c)) FAIL("job %d: config does not parse as an object (%s): %s", i, err, j->config);
        char *again = json_canonical(c);
        if (!again || strcmp(again, j->config) != 0)
            FAIL("job %d: config is not canonical:\n  %s\n  %s", i, j->config, again ? again : "(NULL)");
        free(again);
        const char *kind = json_get_string(c, "kind", NULL);
        if (!j->kind || !kind || strcmp(kind, j->kind) != 0) FAIL("job %d: kind %s, config says %s", i, j->kind, kind);
        if (cJSON_HasObjectItem(c, "seed")) FAIL("job %d: the config holds a seed: %s", i, j->config);
        cJSON_Delete(c);
    }
    job_key *k1 = sorted_keys(s);
    for (int i = 1; i < s->njobs; i++)
        if (key_cmp(&k1[i - 1], &k1[i]) == 0)
            FAIL("two jobs with config hash %s and seed %lld", k1[i].hash, (long long)k1[i].seed);
    if (s->njobs <= 2000) {
        errlist *e2 = errlist_new();
        sweep *s2 = NULL;
        if (sweep_expand(s->spec, strlen(s->spec), &s2, e2) != 0) {
            char *why = errlist_join(e2, "; ");
            FAIL("the canonical spec is refused (%s): %s", why ? why : "?", s->spec);
        }
        if (s2->njobs != s->njobs) FAIL("the canonical spec expands to %d jobs, not %d", s2->njobs, s->njobs);
        job_key *k2 = sorted_keys(s2);
        for (int i = 0; i < s->njobs; i++)
            if (key_cmp(&k1[i], &k2[i]) != 0) FAIL("the canonical spec expands to other jobs: %s", s->spec);
        free(k2);
        sweep_destroy(&s2);
        errlist_destroy(&e2);
    }
    free(k1);
    sweep_destroy(&s);
    if (s) FAIL("sweep_destroy did not NULL the pointer");
    errlist_destroy(&errs);
    return 0;
}

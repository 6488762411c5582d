/* submit.c: how long umdqd takes to accept a 10,000-job sweep (sweep_expand + store_submit into a
 * fresh database) against the floor: the same 10,000 job rows inserted from plain C (same columns,
 * same schema and indexes, one transaction, one prepared statement). Prints both and the ratio.
 * umdq-uses: daemon common */
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "embed.h"
#include "errlist.h"
#include "store.h"
#include "sweep.h"
#include "umdq.h"
#include "util.h"

extern const umdq_embedded_file umdq_schema_files[];

#define GRID 100 /* GRID x GRID = 10,000 jobs */
#define REPS 3

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A realistic spec: a umd base and a 100 x 100 grid. Caller frees. */
static char *make_spec(void) {
    strbuf b;
    strbuf_init(&b);
    strbuf_puts(&b, "{\"name\": \"bench-submit\", \"base\": {\"kind\": \"umd\", \"data\": {\"dataset\": \"fashion-mnist\"}, "
                    "\"model\": {\"patch\": 4, \"width\": 192, \"depth\": 6, \"dec_depth\": 2, \"heads\": 3}, "
                    "\"umd\": {\"schedule\": \"cosine\", \"mask_ratio_t0\": 0.75}, "
                    "\"train\": {\"steps\": 3000, \"batch\": 256}}, \"grid\": {\"umd.r_t0\": [");
    for (int i = 0; i < GRID; i++) strbuf_printf(&b, "%s%g", i ? ", " : "", i / (double)GRID);
    strbuf_puts(&b, "], \"umd.mask_ratio\": [");
    for (int i = 0; i < GRID; i++) strbuf_printf(&b, "%s%g", i ? ", " : "", i / (double)GRID * 0.99);
    strbuf_puts(&b, "]}, \"priority\": 1, \"retry\": {\"max_attempts\": 3}}");
    return strbuf_steal(&b);
}

/* umdq's path: expand the text and store it through the store. Seconds, or < 0 on failure. */
static double run_umdq(const char *dir, const char *spec, double *expand_s) {
    char db[512], logs[512], err[512];
    snprintf(db, sizeof db, "%s/umdq.db", dir);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    mkdir_p(logs, 0755);
    store *st = NULL;
    if (store_open(db, logs, &st, err, sizeof err) != 0) {
        fprintf(stderr, "store_open: %s\n", err);
        return -1;
    }
    errlist *errs = errlist_new();
    sweep *sw = NULL;
    store_submit_result res;
    double t0 = mono_s();
    int rc = sweep_expand(spec, strlen(spec), &sw, errs);
    double t1 = mono_s();
    if (rc == 0) rc = store_submit(st, sw, &res, err, sizeof err);
    double t2 = mono_s();
    if (rc != 0 || res.added != GRID * GRID) {
        char *msg = errlist_join(errs, "; ");
        fprintf(stderr, "submit failed: %s %s\n", err, msg ? msg : "");
        free(msg);
        t2 = t1 - 1;
    }
    *expand_s = t1 - t0;
    sweep_destroy(&sw);
    errlist_destroy(&errs);
    store_destroy(&st);
    return t2 - t0;
}

/* The floor: the same rows inserted with plain SQLite calls into the same schema. */
static double run_floor(const char *dir, const sweep *sw) {
    char db[512];
    snprintf(db, sizeof db, "%s/floor.db", dir);
    sqlite3 *h = NULL;
    sqlite3_stmt *ins = NULL;
    double elapsed = -1;
    if (sqlite3_open(db, &h) != SQLITE_OK) goto done;
    sqlite3_exec(h, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON", NULL, NULL, NULL);
    for (const umdq_embedded_file *f = umdq_schema_files; f->name; f++)
        if (sqlite3_exec(h, (const char *)f->data, NULL, NULL, NULL) != SQLITE_OK) goto done;
    if (sqlite3_exec(h, "INSERT INTO sweeps(id, name, spec, created) VALUES (1, 'floor', '{}', 0)", NULL, NULL, NULL) !=
        SQLITE_OK)
        goto done;
    if (sqlite3_prepare_v2(h, "INSERT INTO jobs(sweep_id, idx, kind, config, config_hash, seed, max_attempts, priority, "
                              "device, stall_timeout, created, queued) VALUES (1, ?1, ?2, ?3, ?4, ?5, 3, 1, 'auto', 1800, "
                              "?6, ?6)", -1, &ins, NULL) != SQLITE_OK)
        goto done;
    double t0 = mono_s(), now = now_s();
    sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int i = 0; i < sw->njobs; i++) {
        const sweep_job *j = &sw->jobs[i];
        sqlite3_bind_int(ins, 1, j->idx);
        sqlite3_bind_text(ins, 2, j->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, j->config, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, j->hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 5, j->seed);
        sqlite3_bind_double(ins, 6, now);
        if (sqlite3_step(ins) != SQLITE_DONE) goto done;
        sqlite3_reset(ins);
    }
    if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto done;
    elapsed = mono_s() - t0;
done:
    if (elapsed < 0) fprintf(stderr, "floor: %s\n", h ? sqlite3_errmsg(h) : "cannot open");
    sqlite3_finalize(ins);
    sqlite3_close(h);
    return elapsed;
}

int main(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/umdq-bench-submit-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char *spec = make_spec();
    errlist *errs = errlist_new();
    sweep *sw = NULL;
    if (!spec || sweep_expand(spec, strlen(spec), &sw, errs) != 0) {
        char *msg = errlist_join(errs, "; ");
        fprintf(stderr, "bench spec refused: %s\n", msg ? msg : "?");
        free(msg);
        return 1;
    }
    double best_umdq = 1e9, best_expand = 1e9, best_floor = 1e9;
    for (int r = 0; r < REPS; r++) {
        char sub[400];
        snprintf(sub, sizeof sub, "%s/rep%d", dir, r);
        mkdir_p(sub, 0755);
        double e = 0, u = run_umdq(sub, spec, &e), f = run_floor(sub, sw);
        if (u < 0 || f < 0) return 1;
        if (u < best_umdq) best_umdq = u, best_expand = e;
        if (f < best_floor) best_floor = f;
    }
    printf("submit: %d jobs, best of %d runs\n", sw->njobs, REPS);
    printf("  umdq  expand + store   %8.1f ms  (sweep_expand %.1f ms, store_submit %.1f ms)\n", best_umdq * 1e3,
           best_expand * 1e3, (best_umdq - best_expand) * 1e3);
    printf("  floor plain inserts    %8.1f ms\n", best_floor * 1e3);
    printf("  ratio %.2fx the floor (target <= 3x)\n", best_umdq / best_floor);
    sweep_destroy(&sw);
    errlist_destroy(&errs);
    free(spec);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

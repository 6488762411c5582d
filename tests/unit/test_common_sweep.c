/* test_common_sweep.c: sweep specs expanded into jobs: counts and order of list x grid x zip x
 * seeds, canonical configs and stable hashes, every kind of refusal with its spec location, and a
 * comparison of the fast expansion against a plain one (merge with cJSON, validate every config)
 * on many generated specs. umdq-uses: common */
#include <stdint.h>
#include <stdio.h>
#include "errlist.h"
#include "jsonx.h"
#include "schema.h"
#include "sha256.h"
#include "sweep.h"
#include "t.h"
#include "umdq.h"
#include "util.h"

static sweep *expand(const char *spec, errlist **errs_out) {
    errlist *e = errlist_new();
    sweep *s = NULL;
    int rc = sweep_expand(spec, strlen(spec), &s, e);
    if ((rc == 0) != (s != NULL)) t_fail_at(__FILE__, __LINE__, "rc %d but sweep %p", rc, (void *)s);
    if (rc != 0 && errlist_count(e) == 0) t_fail_at(__FILE__, __LINE__, "refused without a reason");
    if (errs_out) *errs_out = e;
    else errlist_destroy(&e);
    return s;
}

static const char *msg_for(const errlist *e, const char *path) {
    for (int i = 0; i < errlist_count(e); i++)
        if (strcmp(errlist_path(e, i), path) == 0) return errlist_message(e, i);
    return NULL;
}

/* Expect spec to be refused with (at least) message want at path. */
#define T_REFUSED(spec, path, want) do { errlist *t_e = NULL; sweep *t_s = expand(spec, &t_e); \
    T_CHECK_MSG(t_s == NULL, "accepted: %s", spec); \
    char *t_j = errlist_join(t_e, " | "); const char *t_m = msg_for(t_e, path); \
    T_CHECK_MSG(t_m && strstr(t_m, want), "want %s: ...%s... in: %s", path, want, t_j); \
    free(t_j); sweep_destroy(&t_s); errlist_destroy(&t_e); } while (0)

#define BASE "\"base\": {\"data\": {\"dataset\": \"fashion-mnist\"}, \"model\": {\"width\": 192, \"heads\": 3}, " \
             "\"umd\": {\"r_t0\": 0.5, \"mask_ratio\": 0.375}, \"train\": {\"steps\": 100, \"batch\": 64}}"

/* Each job: config canonical, kind present, hash = SHA-256 of the config, valid on its own. */
static void check_jobs(const sweep *s) {
    for (int i = 0; i < s->njobs; i++) {
        const sweep_job *j = &s->jobs[i];
        T_EQ_INT(j->idx, i);
        char err[200];
        cJSON *c = json_parse_n(j->config, strlen(j->config), err, sizeof err);
        T_REQUIRE(c);
        char *again = json_canonical(c);
        T_EQ_STR(again, j->config);
        free(again);
        T_EQ_STR(json_get_string(c, "kind", NULL), j->kind);
        T_CHECK(json_path_get(c, "seed") == NULL);
        char hex[65];
        sha256_hex(j->config, strlen(j->config), hex);
        T_EQ_STR(j->hash, hex);
        errlist *e = errlist_new();
        schema_validate_job(c, 1, e);
        char *msgs = errlist_join(e, "; ");
        T_CHECK_MSG(errlist_count(e) == 0, "job %d: %s", i, msgs);
        free(msgs);
        errlist_destroy(&e);
        cJSON_Delete(c);
    }
}

static void test_common_sweep_counts_order(void) {
    const char *spec = "{\"name\": \"order\", " BASE ", "
                       "\"list\": [{\"name\": \"UMD\"}, {\"name\": \"MAE-ish\", \"umd.mask_ratio_t0\": 0.5}], "
                       "\"grid\": {\"umd.r_t0\": [0, 0.5, 1], \"umd.mask_ratio\": [0, 0.375]}, "
                       "\"zip\": {\"model.width\": [192, 384], \"model.heads\": [3, 6]}, \"seeds\": 2, "
                       "\"priority\": 5, \"retry\": {\"max_attempts\": 4, \"on_failure\": true}, \"description\": \"d\"}";
    sweep *s = expand(spec, NULL);
    T_REQUIRE(s);
    T_EQ_INT(s->njobs, 2 * 3 * 2 * 2 * 2);
    T_EQ_STR(s->name, "order");
    T_EQ_INT(s->priority, 5);
    T_EQ_INT(s->max_attempts, 4);
    T_EQ_INT(s->retry_on_failure, 1);
    check_jobs(s);
    /* nesting: list, grid (first key slowest), zip, seeds */
    const double r_t0[3] = {0, 0.5, 1}, mask[2] = {0, 0.375};
    const int width[2] = {192, 384};
    const char *names[2] = {"UMD", "MAE-ish"};
    int idx = 0;
    for (int l = 0; l < 2; l++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 2; b++)
                for (int z = 0; z < 2; z++)
                    for (int sd = 0; sd < 2; sd++, idx++) {
                        const sweep_job *j = &s->jobs[idx];
                        char err[100];
                        cJSON *c = json_parse_n(j->config, strlen(j->config), err, sizeof err);
                        T_REQUIRE(c);
                        T_EQ_STR(json_get_string(c, "name", ""), names[l]);
                        T_NEAR(json_get_number(c, "umd.r_t0", -1), r_t0[a], 0, 0);
                        T_NEAR(json_get_number(c, "umd.mask_ratio", -1), mask[b], 0, 0);
                        T_EQ_INT(json_get_int(c, "model.width", 0), width[z]);
                        T_EQ_INT(json_get_int(c, "model.heads", 0), 3 * (z + 1));
                        T_NEAR(json_get_number(c, "umd.mask_ratio_t0", 0.75), l ? 0.5 : 0.75, 0, 0);
                        T_EQ_INT(json_get_int(c, "train.steps", 0), 100);
                        T_EQ_INT(j->seed, sd);
                        cJSON_Delete(c);
                        /* the two seeds of a config share it and its hash */
                        if (sd == 1) {
                            T_EQ_STR(s->jobs[idx - 1].config, j->config);
                            T_EQ_STR(s->jobs[idx - 1].hash, j->hash);
                        } else if (idx > 0) {
                            T_CHECK(strcmp(s->jobs[idx - 1].hash, j->hash) != 0);
                        }
                    }
    const char *swept[] = {"umd.r_t0", "umd.mask_ratio", "model.width", "model.heads", "name", "umd.mask_ratio_t0"};
    T_EQ_INT(s->nswept, 6);
    for (int i = 0; i < 6 && i < s->nswept; i++) T_EQ_STR(s->swept[i], swept[i]);
    /* the stored spec is canonical and expands to the same jobs (grid keys sorted there, so
     * possibly in another order) */
    sweep *again = expand(s->spec, NULL);
    T_REQUIRE(again);
    T_EQ_INT(again->njobs, s->njobs);
    for (int i = 0; i < s->njobs; i++) {
        int found = 0;
        for (int k = 0; k < again->njobs; k++)
            found += strcmp(again->jobs[k].hash, s->jobs[i].hash) == 0 && again->jobs[k].seed == s->jobs[i].seed;
        T_EQ_INT(found, 1);
    }
    sweep_destroy(&again);
    sweep_destroy(&s);
    T_CHECK(s == NULL);
    sweep_destroy(&s);
}

static void test_common_sweep_defaults_seeds(void) {
    sweep *s = expand("{\"name\": \"one\"}", NULL);
    T_REQUIRE(s);
    T_EQ_INT(s->njobs, 1);
    T_EQ_STR(s->jobs[0].config, "{\"kind\":\"umd\"}");
    T_EQ_STR(s->jobs[0].kind, "umd");
    T_EQ_INT(s->jobs[0].seed, 0);
    T_EQ_INT(s->priority, 0);
    T_EQ_INT(s->max_attempts, 3);
    T_EQ_INT(s->retry_on_failure, 0);
    T_EQ_INT(s->nswept, 0);
    sweep_destroy(&s);
    s = expand("{\"name\": \"seeds\", \"seeds\": [3, 7, 0]}", NULL);
    T_REQUIRE(s);
    T_EQ_INT(s->njobs, 3);
    T_EQ_INT(s->jobs[0].seed, 3);
    T_EQ_INT(s->jobs[1].seed, 7);
    T_EQ_INT(s->jobs[2].seed, 0);
    sweep_destroy(&s);
    T_REFUSED("{\"name\": \"s\", \"seeds\": 0}", "seeds", "must be an integer in [1, 100000]");
    T_REFUSED("{\"name\": \"s\", \"seeds\": [1, 2, 1]}", "seeds[2]", "repeats seeds[0]");
    T_REFUSED("{\"name\": \"s\", \"seeds\": [-1]}", "seeds[0]", "must be an integer in [0, 4294967295]");
    T_REFUSED("{\"name\": \"s\", \"seeds\": []}", "seeds", "non-empty array");
}

static void test_common_sweep_same_hashes(void) {
    const char *a = "{\"name\": \"h\", " BASE ", \"grid\": {\"umd.r_t0\": [0, 0.5], \"train.steps\": [10, 20]}, \"seeds\": 2}";
    /* the same meaning written differently: member order, number forms, whitespace */
    const char *b = "{\"seeds\":2,\"grid\":{\"umd.r_t0\":[0.0,5e-1],\"train.steps\":[1e1,20.0]},"
                    "\"base\":{\"train\":{\"batch\":64,\"steps\":100},\"umd\":{\"mask_ratio\":0.375,\"r_t0\":0.5},"
                    "\"model\":{\"heads\":3,\"width\":192},\"data\":{\"dataset\":\"fashion-mnist\"}},\"name\":\"h\"}";
    /* grid keys in another order: the same set of jobs in another order */
    const char *c = "{\"name\": \"h\", " BASE ", \"grid\": {\"train.steps\": [10, 20], \"umd.r_t0\": [0, 0.5]}, \"seeds\": 2}";
    sweep *sa = expand(a, NULL), *sa2 = expand(a, NULL), *sb = expand(b, NULL), *sc = expand(c, NULL);
    T_REQUIRE(sa && sa2 && sb && sc);
    T_EQ_INT(sa->njobs, 8);
    T_EQ_INT(sb->njobs, 8);
    T_EQ_INT(sc->njobs, 8);
    for (int i = 0; i < 8; i++) {
        T_EQ_STR(sa->jobs[i].hash, sa2->jobs[i].hash);
        T_EQ_STR(sa->jobs[i].hash, sb->jobs[i].hash);
        T_EQ_STR(sa->jobs[i].config, sb->jobs[i].config);
        T_EQ_INT(sa->jobs[i].seed, sb->jobs[i].seed);
        int found = 0;
        for (int k = 0; k < 8; k++)
            found += strcmp(sa->jobs[i].hash, sc->jobs[k].hash) == 0 && sa->jobs[i].seed == sc->jobs[k].seed;
        T_EQ_INT(found, 1);
    }
    T_EQ_STR(sa->spec, sb->spec);
    T_CHECK(strcmp(sa->jobs[2].hash, sc->jobs[2].hash) != 0); /* order differs */
    sweep_destroy(&sa);
    sweep_destroy(&sa2);
    sweep_destroy(&sb);
    sweep_destroy(&sc);
}

static void test_common_sweep_refusals(void) {
    /* three different bad keys, all named */
    errlist *e = NULL;
    sweep *s = expand("{\"name\": \"bad\", \"base\": {\"umd\": {\"maskratio\": 0.5}}, "
                      "\"grid\": {\"train.stpes\": [1, 2]}, \"list\": [{\"model.widht\": 192}]}", &e);
    T_CHECK(s == NULL);
    char *j = errlist_join(e, "\n");
    T_EQ_INT(errlist_count(e), 3);
    T_CONTAINS(j, "umd.maskratio: unknown key (did you mean \"umd.mask_ratio\"?)");
    T_CONTAINS(j, "grid.train.stpes: unknown key (did you mean \"train.steps\"?)");
    T_CONTAINS(j, "list[0].model.widht: unknown key (did you mean \"model.width\"?)");
    free(j);
    errlist_destroy(&e);

    T_REFUSED("{\"name\": \"r\", " BASE ", \"grid\": {\"umd.mask_ratio\": [0, 0.5, 1.0]}}", "grid.umd.mask_ratio[2]",
              "umd.mask_ratio must be in [0, 1), got 1");
    T_REFUSED("{\"name\": \"r\", " BASE ", \"list\": [{\"umd.r_t0\": 1.5}]}", "list[0].umd.r_t0",
              "umd.r_t0 must be in [0, 1], got 1.5");
    T_REFUSED("{\"name\": \"r\", \"base\": {\"train\": {\"steps\": 0}}}", "train.steps",
              "must be in [1, 1000000000000], got 0");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"model\": [{\"width\": 192}, {\"width\": 10, \"depth\": 0}]}}",
              "grid.model[1]", "model.depth must be in [1, 128], got 0");
    T_REFUSED("{\"name\": \"r\", \"grids\": {}}", "grids", "unknown key (did you mean \"grid\"?)");
    T_REFUSED("{\"name\": \"r\", \"umd\": {}}", "umd", "unknown key (job config keys go under \"base\")");
    T_REFUSED("{\"name\": \"r\", \"zip\": {\"model.width\": [192, 384], \"model.heads\": [3, 6, 12]}}",
              "zip.model.heads", "has 3 values but zip.model.width has 2");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"umd.r_t0\": [0]}, \"zip\": {\"umd.r_t0\": [1]}}", "zip.umd.r_t0",
              "is also in grid");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"model\": [{}]}, \"zip\": {\"model.width\": [192]}}", "zip.model.width",
              "overlaps grid.model");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"umd.r_t0\": [0, 1]}, \"list\": [{\"umd.r_t0\": 0.5}]}",
              "list[0].umd.r_t0", "is also swept by grid.umd.r_t0");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"umd.r_t0\": [0, 0.5, 0.50]}}", "grid.umd.r_t0[2]",
              "repeats grid.umd.r_t0[1]");
    T_REFUSED("{\"name\": \"r\", \"zip\": {\"umd.r_t0\": [0, 1, 0], \"train.steps\": [5, 6, 5]}}", "zip[2]",
              "repeat those at index 0");
    T_REFUSED("{\"name\": \"r\", \"list\": [{\"name\": \"a\"}, {\"name\": \"a\"}]}", "list[1]",
              "gives the same configs as list[0]");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"umd.r_t0\": []}}", "grid.umd.r_t0", "non-empty array");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"umd.r_t0\": 0.5}}", "grid.umd.r_t0", "non-empty array");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"seed\": [1, 2]}}", "grid.seed[0]", "seed is set by the sweep's \"seeds\"");
    T_REFUSED("{\"name\": \"r\", \"base\": {\"seed\": 1}}", "seed", "seed is set by the sweep's \"seeds\"");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"kind\": [\"umd\", \"command\"]}}", "grid.kind", "cannot be swept");
    T_REFUSED("{\"name\": \"r\", \"zip\": {\"model.width\": [192, 200], \"model.heads\": [3, 6]}}",
              "zip.model.width[1]", "model.width must be even and a multiple of model.heads (6), got 200");
    T_REFUSED("{\"name\": \"r\", \"grid\": {\"model.heads\": [3, 5]}}", "grid.model.heads[1]",
              "model.width must be even and a multiple of model.heads (5), got 192");
    T_REFUSED("{\"name\": \"r\", \"base\": {\"eval\": {\"probe\": true}}}", "eval.probe", "unknown key");
    T_REFUSED("{\"name\": \"r\", \"base\": 3}", "base", "must be an object");
    T_REFUSED("{\"name\": \"r\", \"list\": [1]}", "list", "non-empty array of objects");
    T_REFUSED("{\"name\": \"r\", \"list\": []}", "list", "non-empty array of objects");
    T_REFUSED("{\"name\": \"r\", \"retry\": {\"max_attempts\": 0, \"again\": 1}}", "retry.max_attempts", "[1, 1000]");
    T_REFUSED("{\"name\": \"r\", \"retry\": {\"again\": 1}}", "retry.again", "unknown key");
    T_REFUSED("{\"name\": \"r\", \"priority\": 1.5}", "priority", "must be an integer");
    T_REFUSED("{\"base\": {}}", "name", "required");
    T_REFUSED("{\"name\": \"has space\"}", "name", "must be 1 to 64 characters");
    T_REFUSED("{\"name\": \"\"}", "name", "must be 1 to 64 characters");
    T_REFUSED("{\"name\": \"r\", \"description\": 5}", "description", "must be a string");
    T_REFUSED("{\"name\": \"r\",}", "", "invalid JSON");
    T_REFUSED("[1, 2]", "", "must be a JSON object");
    T_REFUSED("{\"name\": \"r\", \"name\": \"s\"}", "", "duplicate key \"name\"");
    T_REFUSED("{\"name\": \"r\", \"base\": {\"model\": 5}, \"grid\": {\"model.width\": [192]}}", "model",
              "must be an object");
    /* a kind command sweep whose command names a field its configs lack */
    T_REFUSED("{\"name\": \"c\", \"base\": {\"kind\": \"command\", \"command\": \"run {params.lr} {params.x}\"}, "
              "\"grid\": {\"params.lr\": [1, 2]}}", "command", "unknown field {params.x}");
    T_REFUSED("{\"name\": \"c\", \"base\": {\"kind\": \"command\"}, \"grid\": {\"params.lr\": [1, 2]}}", "command",
              "required for kind command");
    T_REFUSED("{\"name\": \"c\", \"base\": {\"kind\": \"command\", \"command\": \"x {umd.r_t0}\"}, \"grid\": {\"umd.r_t0\": [1.5]}}",
              "grid.umd.r_t0[0]", "umd.r_t0 must be in [0, 1], got 1.5");
}

static void test_common_sweep_too_many(void) {
    /* 50 x 50 x 50 = 125,000 > SWEEP_MAX_JOBS */
    strbuf b;
    strbuf_init(&b);
    strbuf_puts(&b, "{\"name\": \"big\", \"grid\": {");
    const char *keys[3] = {"train.steps", "train.batch", "train.log_every"};
    for (int k = 0; k < 3; k++) {
        strbuf_printf(&b, "%s\"%s\": [", k ? ", " : "", keys[k]);
        for (int i = 1; i <= 50; i++) strbuf_printf(&b, "%s%d", i > 1 ? "," : "", i);
        strbuf_puts(&b, "]");
    }
    strbuf_puts(&b, "}}");
    T_REFUSED(b.data, "", "the sweep has 125000 jobs, more than the limit of 100000");
    strbuf_free(&b);
    T_REFUSED("{\"name\": \"big\", \"seeds\": 60000, \"list\": [{\"name\": \"a\"}, {\"name\": \"b\"}]}", "",
              "the sweep has 120000 jobs");
}

static void test_common_sweep_command_kind(void) {
    sweep *s = expand("{\"name\": \"cmd\", \"base\": {\"kind\": \"command\", \"command\": \"python3 t.py --lr {params.lr} "
                      "--seed {seed}\", \"stall_timeout\": 30}, \"grid\": {\"params.lr\": [0.1, 0.2]}, "
                      "\"list\": [{\"name\": \"a\"}, {\"kind\": \"umd\", \"command\": null, \"params\": null, "
                      "\"stall_timeout\": 0, \"name\": \"u\"}]}", NULL);
    /* the second entry turns the base command into a umd job, but params.lr is still swept */
    T_CHECK(s == NULL);
    sweep_destroy(&s);
    s = expand("{\"name\": \"cmd\", \"base\": {\"kind\": \"command\", \"command\": \"python3 t.py --lr {params.lr} "
               "--seed {seed}\", \"stall_timeout\": 30}, \"grid\": {\"params.lr\": [0.1, 0.2]}, \"seeds\": 2}", NULL);
    T_REQUIRE(s);
    T_EQ_INT(s->njobs, 4);
    check_jobs(s);
    T_EQ_STR(s->jobs[0].kind, "command");
    T_EQ_STR(s->jobs[0].config, "{\"command\":\"python3 t.py --lr {params.lr} --seed {seed}\",\"kind\":\"command\","
                                "\"params\":{\"lr\":0.1},\"stall_timeout\":30}");
    sweep_destroy(&s);
    /* list entries may change the kind */
    s = expand("{\"name\": \"mixed\", \"list\": [{\"kind\": \"command\", \"command\": \"true\"}, {\"umd.r_t0\": 1}]}", NULL);
    T_REQUIRE(s);
    T_EQ_INT(s->njobs, 2);
    T_EQ_STR(s->jobs[0].kind, "command");
    T_EQ_STR(s->jobs[1].kind, "umd");
    check_jobs(s);
    sweep_destroy(&s);
}

/* ---- the fast expansion against a plain one ------------------------------------------------- */

static unsigned rng_state = 2024;
static unsigned rnd(unsigned n) {
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 16) % n;
}

typedef struct {
    const char *key;
    const char *values[4]; /* JSON texts, some invalid for the key or for its neighbours */
} pool_key;

static const pool_key pool[] = {
    {"umd.r_t0", {"0", "0.5", "1", "1.5"}},
    {"umd.mask_ratio", {"0", "0.375", "0.9", "1"}},
    {"model.width", {"192", "384", "200", "96"}},
    {"model.heads", {"3", "6", "4", "12"}},
    {"model.patch", {"4", "7", "2", "3"}},
    {"train.steps", {"10", "20", "0", "1e3"}},
    {"umd.schedule", {"\"cosine\"", "\"linear\"", "\"cos\"", "\"linear\""}},
    {"train.precision", {"\"fp32\"", "\"bf16\"", "\"tf32\"", "\"fp32\""}},
    {"train.device", {"\"auto\"", "\"cpu\"", "\"cuda\"", "\"cpu\""}},
    {"data.dataset", {"\"fashion-mnist\"", "\"synthetic\"", "\"mnist\"", "\"cifar10\""}},
    {"model", {"{\"width\": 384, \"heads\": 6}", "{\"width\": 100, \"heads\": 4}", "{\"depth\": 2}", "{\"patch\": 14}"}},
    {"name", {"\"a\"", "\"b\"", "3", "\"c\""}},
};
#define NPOOL (int)(sizeof pool / sizeof pool[0])

/* Plain expansion: every config built with cJSON and validated whole. Returns the number of
 * jobs (configs x seeds), fills texts (caller frees) and sets *bad when some config is invalid. */
static int plain_expand(const cJSON *spec, char ***texts, int *bad) {
    const cJSON *base = cJSON_GetObjectItem(spec, "base"), *grid = cJSON_GetObjectItem(spec, "grid");
    const cJSON *zip = cJSON_GetObjectItem(spec, "zip"), *list = cJSON_GetObjectItem(spec, "list");
    int nl = list ? cJSON_GetArraySize(list) : 1, ng = grid ? cJSON_GetArraySize(grid) : 0;
    int zl = zip && zip->child ? cJSON_GetArraySize(zip->child) : 1;
    int combos = 1;
    for (const cJSON *g = grid ? grid->child : NULL; g; g = g->next) combos *= cJSON_GetArraySize(g);
    int n = nl * combos * zl, k = 0;
    *texts = calloc((size_t)n, sizeof **texts);
    *bad = 0;
    char err[200];
    for (int l = 0; l < nl; l++)
        for (int c = 0; c < combos; c++)
            for (int z = 0; z < zl; z++) {
                cJSON *cfg = base ? cJSON_Duplicate(base, 1) : cJSON_CreateObject();
                const cJSON *entry = list ? cJSON_GetArrayItem(list, l) : NULL;
                for (const cJSON *m = entry ? entry->child : NULL; m; m = m->next)
                    json_path_set(cfg, m->string, cJSON_Duplicate(m, 1), err, sizeof err);
                int rest = c;
                int idx[16];
                for (int g = ng - 1; g >= 0; g--) {
                    int len = cJSON_GetArraySize(cJSON_GetArrayItem(grid, g));
                    idx[g] = rest % len;
                    rest /= len;
                }
                int g = 0;
                for (const cJSON *gk = grid ? grid->child : NULL; gk; gk = gk->next, g++)
                    json_path_set(cfg, gk->string, cJSON_Duplicate(cJSON_GetArrayItem(gk, idx[g]), 1), err, sizeof err);
                for (const cJSON *zk = zip ? zip->child : NULL; zk; zk = zk->next)
                    json_path_set(cfg, zk->string, cJSON_Duplicate(cJSON_GetArrayItem(zk, z), 1), err, sizeof err);
                if (!cJSON_GetObjectItem(cfg, "kind")) cJSON_AddStringToObject(cfg, "kind", "umd");
                errlist *e = errlist_new();
                if (schema_validate_job(cfg, 1, e) > 0) *bad = 1;
                errlist_destroy(&e);
                (*texts)[k++] = json_canonical(cfg);
                cJSON_Delete(cfg);
            }
    return n;
}

static void test_common_sweep_matches_plain(void) {
    int accepted = 0, refused = 0;
    for (int iter = 0; iter < 300; iter++) {
        /* pick distinct keys that do not overlap ("model" vs "model.width") */
        int used[NPOOL] = {0};
        strbuf b;
        strbuf_init(&b);
        /* sometimes the base holds a bad value that only a list entry or grid/zip may replace */
        strbuf_printf(&b, "{\"name\": \"p%d\", \"base\": {\"model\": {\"width\": 192, \"heads\": 3}%s}", iter,
                      rnd(4) == 0 ? ", \"umd\": {\"r_t0\": 1.5}" : "");
        int ngrid = (int)rnd(3), nzip = rnd(3) == 0 ? 2 : 0, nlist = (int)rnd(3);
        int picked[8], np = 0;
        while (np < ngrid + nzip + (nlist ? 1 : 0)) {
            int k = (int)rnd(NPOOL);
            int clash = used[k];
            for (int i = 0; i < np && !clash; i++) {
                size_t a = strlen(pool[k].key), c = strlen(pool[picked[i]].key);
                clash = strncmp(pool[k].key, pool[picked[i]].key, a < c ? a : c) == 0 &&
                        (pool[k].key[a < c ? a : c] == '.' || pool[picked[i]].key[a < c ? a : c] == '.' || a == c);
            }
            if (clash) continue;
            used[k] = 1;
            picked[np++] = k;
        }
        int p = 0;
        if (ngrid) {
            strbuf_puts(&b, ", \"grid\": {");
            for (int g = 0; g < ngrid; g++, p++) {
                int nv = 1 + (int)rnd(2), first = (int)rnd(4);
                strbuf_printf(&b, "%s\"%s\": [", g ? ", " : "", pool[picked[p]].key);
                for (int v = 0; v < nv; v++)
                    strbuf_printf(&b, "%s%s", v ? ", " : "", pool[picked[p]].values[(first + v) % 4]);
                strbuf_puts(&b, "]");
            }
            strbuf_puts(&b, "}");
        }
        if (nzip) {
            strbuf_puts(&b, ", \"zip\": {");
            for (int z = 0; z < nzip; z++, p++) {
                strbuf_printf(&b, "%s\"%s\": [%s, %s]", z ? ", " : "", pool[picked[p]].key,
                              pool[picked[p]].values[z], pool[picked[p]].values[z + 1]);
            }
            strbuf_puts(&b, "}");
        }
        if (nlist) {
            strbuf_puts(&b, ", \"list\": [");
            for (int l = 0; l < nlist; l++)
                strbuf_printf(&b, "%s{\"%s\": %s}", l ? ", " : "", pool[picked[p]].key, pool[picked[p]].values[l * 2 + (int)rnd(2)]);
            strbuf_puts(&b, "]");
        }
        strbuf_puts(&b, "}");

        char err[200];
        cJSON *spec = json_parse_n(b.data, b.len, err, sizeof err);
        T_REQUIRE(spec);
        char **texts = NULL;
        int bad = 0, n = plain_expand(spec, &texts, &bad);
        /* repeated values or entries are refused by the sweep on purpose: make the plain side agree */
        for (int i = 0; i < n && !bad; i++)
            for (int j = 0; j < i && !bad; j++) bad = strcmp(texts[i], texts[j]) == 0;
        errlist *e = NULL;
        sweep *s = expand(b.data, &e);
        char *why = errlist_join(e, " | ");
        T_CHECK_MSG((s != NULL) == !bad, "spec %s: sweep %s, plain %s (%s)", b.data, s ? "accepted" : "refused",
                    bad ? "invalid" : "valid", why);
        if (s) {
            accepted++;
            T_EQ_INT(s->njobs, n);
            for (int i = 0; i < n && i < s->njobs; i++) T_EQ_STR(s->jobs[i].config, texts[i]);
        } else {
            refused++;
            T_CHECK(errlist_count(e) > 0);
        }
        free(why);
        errlist_destroy(&e);
        sweep_destroy(&s);
        for (int i = 0; i < n; i++) free(texts[i]);
        free(texts);
        cJSON_Delete(spec);
        strbuf_free(&b);
    }
    /* the generator must exercise both outcomes */
    T_CHECK_MSG(accepted > 30 && refused > 30, "accepted %d refused %d", accepted, refused);
}

int main(void) {
    T_RUN(test_common_sweep_counts_order);
    T_RUN(test_common_sweep_defaults_seeds);
    T_RUN(test_common_sweep_same_hashes);
    T_RUN(test_common_sweep_refusals);
    T_RUN(test_common_sweep_too_many);
    T_RUN(test_common_sweep_command_kind);
    T_RUN(test_common_sweep_matches_plain);
    return t_done();
}

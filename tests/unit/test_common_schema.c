/* test_common_schema.c: the config key table: lookups, defaults, every kind of validation error
 * (type, range in interval notation, unknown key with a suggestion, kind, sweep-only and reserved
 * keys, cross-key rules), and command templates rendered and run through /bin/sh.
 * umdq-uses: common */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "errlist.h"
#include "jsonx.h"
#include "schema.h"
#include "t.h"
#include "template.h"
#include "umdq.h"
#include "util.h"

/* Validate JSON text; returns the errlist (caller destroys). */
static errlist *check(const char *text, int in_sweep) {
    char err[200];
    errlist *e = errlist_new();
    cJSON *v = json_parse_n(text, strlen(text), err, sizeof err);
    if (!v) {
        errlist_add(e, "PARSE", "%s", err);
        return e;
    }
    int n = schema_validate_job(v, in_sweep, e);
    if (n != errlist_count(e)) errlist_add(e, "COUNT", "returned %d", n);
    cJSON_Delete(v);
    return e;
}

/* The message for path in e, or NULL. */
static const char *msg_for(const errlist *e, const char *path) {
    for (int i = 0; i < errlist_count(e); i++)
        if (strcmp(errlist_path(e, i), path) == 0) return errlist_message(e, i);
    return NULL;
}

#define T_ONE_ERROR(text, in_sweep, path, want) do { errlist *t_e = check(text, in_sweep); \
    char *t_j = errlist_join(t_e, " | "); \
    T_CHECK_MSG(errlist_count(t_e) == 1, "%s: want 1 error, got: %s", text, t_j); \
    T_EQ_STR(msg_for(t_e, path), want); free(t_j); errlist_destroy(&t_e); } while (0)

static void test_common_schema_find_defaults(void) {
    const schema_key *k = schema_find("umd.mask_ratio");
    T_REQUIRE(k);
    T_EQ_INT(k->type, SCHEMA_NUMBER);
    T_CHECK(schema_find("umd") == NULL);
    T_CHECK(schema_find("umd.mask") == NULL);
    T_CHECK(schema_find(NULL) == NULL);
    cJSON *d = schema_default(k);
    T_REQUIRE(cJSON_IsNumber(d));
    T_NEAR(d->valuedouble, 0.375, 0, 0);
    cJSON_Delete(d);
    d = schema_default(schema_find("umd.schedule"));
    T_CHECK(cJSON_IsString(d) && strcmp(d->valuestring, "cosine") == 0);
    cJSON_Delete(d);
    T_CHECK(schema_default(schema_find("train.lr")) == NULL);
    T_CHECK(schema_default(NULL) == NULL);
    /* every key is found by its path, and every default is a valid value of its own key */
    int n = 0;
    for (const schema_key *key = umdq_job_schema; key->path; key++, n++) {
        T_CHECK_MSG(schema_find(key->path) == key, "%s not found", key->path);
        if (!key->dflt) continue;
        cJSON *dv = schema_default(key);
        T_CHECK_MSG(dv != NULL, "default of %s does not parse: %s", key->path, key->dflt);
        if (!dv) continue;
        cJSON *cfg = cJSON_CreateObject();
        char err[200];
        if (key->flags & SCHEMA_COMMAND_ONLY) {
            cJSON_AddStringToObject(cfg, "kind", "command");
            cJSON_AddStringToObject(cfg, "command", "true");
        }
        if (strcmp(key->path, "kind") != 0 && json_path_set(cfg, key->path, dv, err, sizeof err) != 0) {
            T_CHECK_MSG(0, "%s: %s", key->path, err);
        } else if (strcmp(key->path, "kind") == 0) {
            cJSON_AddItemToObject(cfg, "kind", dv);
        }
        errlist *e = errlist_new();
        schema_validate_job(cfg, 0, e);
        char *j = errlist_join(e, "; ");
        T_CHECK_MSG(errlist_count(e) == 0, "default of %s refused: %s", key->path, j);
        free(j);
        errlist_destroy(&e);
        cJSON_Delete(cfg);
    }
    T_CHECK(n > 40);
}

static void test_common_schema_good_configs(void) {
    const char *good[] = {
        "{}",
        "{\"kind\": \"umd\", \"data\": {\"dataset\": \"fashion-mnist\"}, \"model\": {\"patch\": 4, \"width\": 192, "
        "\"depth\": 6, \"dec_depth\": 2, \"heads\": 3}, \"umd\": {\"r_t0\": 0.5, \"mask_ratio\": 0.375, "
        "\"mask_ratio_t0\": 0.75, \"schedule\": \"cosine\"}, \"train\": {\"steps\": 3000, \"batch\": 256}}",
        "{\"umd\": {\"r_t0\": 1.0, \"mask_ratio\": 0}, \"train\": {\"lr\": 1, \"device\": \"cuda\", \"precision\": \"bf16\"}}",
        "{\"data\": {\"dataset\": \"cifar10\", \"path\": \"/data/cifar\"}, \"model\": {\"patch\": 8}}",
        "{\"data\": {\"dataset\": \"synthetic\", \"image_size\": 12, \"channels\": 3}, \"model\": {\"patch\": 3}}",
        "{\"kind\": \"command\", \"command\": \"python3 train.py --lr {params.lr} --seed {seed}\", "
        "\"params\": {\"lr\": 0.1, \"anything\": {\"nested\": [1, 2]}}, \"stall_timeout\": 60, \"name\": \"x\"}",
        "{\"seed\": 4294967295, \"stall_timeout\": 1e9}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        errlist *e = check(good[i], 0);
        char *j = errlist_join(e, " | ");
        T_CHECK_MSG(errlist_count(e) == 0, "config %zu refused: %s", i, j);
        free(j);
        errlist_destroy(&e);
    }
}

static void test_common_schema_types_ranges(void) {
    T_ONE_ERROR("{\"umd\": {\"mask_ratio\": 1.0}}", 0, "umd.mask_ratio", "must be in [0, 1), got 1");
    T_ONE_ERROR("{\"umd\": {\"mask_ratio\": 1.5}}", 0, "umd.mask_ratio", "must be in [0, 1), got 1.5");
    T_ONE_ERROR("{\"umd\": {\"r_t0\": 1.5}}", 0, "umd.r_t0", "must be in [0, 1], got 1.5");
    T_ONE_ERROR("{\"umd\": {\"r_t0\": -0.1}}", 0, "umd.r_t0", "must be in [0, 1], got -0.1");
    T_ONE_ERROR("{\"train\": {\"steps\": 0}}", 0, "train.steps", "must be in [1, 1000000000000], got 0");
    T_ONE_ERROR("{\"train\": {\"lr\": 0}}", 0, "train.lr", "must be in (0, 1], got 0");
    T_ONE_ERROR("{\"stall_timeout\": -1}", 0, "stall_timeout", "must be in [0, inf), got -1");
    T_ONE_ERROR("{\"model\": {\"depth\": 2.5}}", 0, "model.depth", "must be an integer, got 2.5");
    T_ONE_ERROR("{\"model\": {\"depth\": \"6\"}}", 0, "model.depth", "must be an integer, got \"6\"");
    T_ONE_ERROR("{\"umd\": {\"r_t0\": null}}", 0, "umd.r_t0", "must be a number, got null");
    T_ONE_ERROR("{\"umd\": {\"labels\": 1}}", 0, "umd.labels", "must be true or false, got 1");
    T_ONE_ERROR("{\"name\": 3}", 0, "name", "must be a string, got 3");
    T_ONE_ERROR("{\"umd\": {\"schedule\": \"cos\"}}", 0, "umd.schedule",
                "must be one of \"cosine\", \"linear\", got \"cos\"");
    T_ONE_ERROR("{\"kind\": \"shell\"}", 0, "kind", "must be one of \"umd\", \"command\", got \"shell\"");
    T_ONE_ERROR("{\"model\": 5}", 0, "model", "must be an object, got 5");
    T_ONE_ERROR("{\"umd\": {\"r_t0\": [0.5]}}", 0, "umd.r_t0", "must be a number, got an array");
    T_ONE_ERROR("{\"kind\": \"command\", \"command\": \"x\", \"params\": 3}", 0, "params", "must be an object, got 3");
}

static void test_common_schema_unknown_keys(void) {
    T_ONE_ERROR("{\"umd\": {\"maskratio\": 0.5}}", 0, "umd.maskratio",
                "unknown key (did you mean \"umd.mask_ratio\"?)");
    T_ONE_ERROR("{\"modle\": {\"width\": 192}}", 0, "modle", "unknown key (did you mean \"model\"?)");
    T_ONE_ERROR("{\"mask_ratio\": 0.5}", 0, "mask_ratio", "unknown key (did you mean \"umd.mask_ratio\"?)");
    T_ONE_ERROR("{\"train\": {\"learning_rate\": 0.1}}", 0, "train.learning_rate", "unknown key");
    T_ONE_ERROR("{\"umd.r_t0\": 0.5}", 0, "umd.r_t0",
                "a key name cannot contain \".\": write nested objects, as in {\"umd\": {\"r_t0\": ...}}");
    T_ONE_ERROR("{\"\": 1}", 0, "", "empty key");
    char msg[200];
    T_EQ_INT(schema_check_path("umd.mask_ratio", msg, sizeof msg), 0);
    T_EQ_INT(schema_check_path("model", msg, sizeof msg), 0);
    T_EQ_INT(schema_check_path("params.lr.x", msg, sizeof msg), 0);
    T_EQ_INT(schema_check_path("umd.mask_ration", msg, sizeof msg), UMDQ_EINVAL);
    T_EQ_STR(msg, "unknown key (did you mean \"umd.mask_ratio\"?)");
    T_EQ_INT(schema_check_path("umd..r_t0", msg, sizeof msg), UMDQ_EINVAL);
    T_EQ_INT(schema_check_path("", msg, sizeof msg), UMDQ_EINVAL);
    T_EQ_INT(schema_check_path("mode", msg, sizeof msg), UMDQ_EINVAL);
    T_EQ_STR(msg, "unknown key (did you mean \"model\"?)");
}

static void test_common_schema_kind_sweep_reserved(void) {
    /* trainer keys are allowed in command jobs (for their template) and checked the same way */
    T_ONE_ERROR("{\"kind\": \"command\", \"command\": \"train --mask {umd.mask_ratio}\", \"umd\": {\"mask_ratio\": 1}}",
                0, "umd.mask_ratio", "must be in [0, 1), got 1");
    {
        errlist *ok = check("{\"kind\": \"command\", \"command\": \"train --w {model.width}\", \"model\": {\"width\": 192}}", 0);
        T_EQ_INT(errlist_count(ok), 0);
        errlist_destroy(&ok);
    }
    T_ONE_ERROR("{\"params\": {\"lr\": 1}}", 0, "params", "only for kind command");
    T_ONE_ERROR("{\"seed\": 3}", 1, "seed", "seed is set by the sweep's \"seeds\"");
    T_ONE_ERROR("{\"eval\": {\"probe\": true}}", 0, "eval.probe", "unknown key");
    T_ONE_ERROR("{\"eval\": {\"fid_samples\": -1}}", 0, "eval.fid_samples", "must be in [0, 1000000], got -1");
    T_ONE_ERROR("{\"finetune\": {\"r_t0\": 1}}", 0, "finetune.r_t0", "must be in [0, 1), got 1");
    /* every bad path is reported, not just the first */
    errlist *e = check("{\"umd\": {\"mask_ratio\": 1, \"r_t0\": 2, \"maskratio\": 0}, \"train\": {\"steps\": 0, "
                       "\"batch\": \"x\"}, \"seed\": -1, \"eval\": {\"grid\": -2}}", 1);
    T_EQ_INT(errlist_count(e), 7);
    const char *paths[] = {"umd.mask_ratio", "umd.r_t0", "umd.maskratio", "train.steps", "train.batch", "seed", "eval.grid"};
    for (int i = 0; i < 7; i++) T_CHECK_MSG(msg_for(e, paths[i]) != NULL, "no error for %s", paths[i]);
    errlist_destroy(&e);
}

static void test_common_schema_cross_keys(void) {
    T_ONE_ERROR("{\"model\": {\"width\": 200}}", 0, "model.width",
                "must be even and a multiple of model.heads (3), got 200");
    T_ONE_ERROR("{\"model\": {\"width\": 9, \"heads\": 3}}", 0, "model.width",
                "must be even and a multiple of model.heads (3), got 9");
    T_ONE_ERROR("{\"model\": {\"patch\": 3}}", 0, "model.patch",
                "must divide the image side (28 for fashion-mnist), got 3");
    T_ONE_ERROR("{\"data\": {\"dataset\": \"synthetic\", \"image_size\": 20}, \"model\": {\"patch\": 8}}", 0,
                "model.patch", "must divide the image side (20 for synthetic), got 8");
    T_ONE_ERROR("{\"data\": {\"dataset\": \"mnist\"}}", 0, "data.path",
                "required for data.dataset mnist (the directory of its files)");
    T_ONE_ERROR("{\"train\": {\"device\": \"cpu\", \"precision\": \"tf32\"}}", 0, "train.precision",
                "tf32 needs train.device cuda (or auto on a GPU worker)");
    T_ONE_ERROR("{\"kind\": \"command\"}", 0, "command", "required for kind command");
    T_ONE_ERROR("{\"kind\": \"command\", \"command\": \"run {params.lr}\"}", 0, "command",
                "unknown field {params.lr}: not in the job config");
    /* a value that is wrong on its own is reported once, not again by the cross-key rule */
    T_ONE_ERROR("{\"model\": {\"width\": 201.5}}", 0, "model.width", "must be an integer, got 201.5");
    /* the cross-key entry point on its own */
    cJSON *w = cJSON_CreateNumber(384), *h = cJSON_CreateNumber(5);
    const cJSON *values[SCHEMA_CROSS_N] = {0};
    for (int i = 0; i < SCHEMA_CROSS_N; i++) {
        if (strcmp(schema_cross_paths[i], "model.width") == 0) values[i] = w;
        if (strcmp(schema_cross_paths[i], "model.heads") == 0) values[i] = h;
    }
    T_CHECK(schema_cross_paths[SCHEMA_CROSS_N] == NULL);
    errlist *e = errlist_new();
    T_EQ_INT(schema_check_cross(values, e), 1);
    T_EQ_STR(errlist_path(e, 0), "model.width");
    errlist_destroy(&e);
    cJSON_Delete(w);
    cJSON_Delete(h);
}

/* Render tmpl over the config text; returns the command or NULL, errors into *errs_out. */
static char *render(const char *tmpl, const char *config, const template_builtins *b, errlist **errs_out) {
    char err[200];
    cJSON *cfg = json_parse_n(config, strlen(config), err, sizeof err);
    errlist *e = errlist_new();
    char *out = NULL;
    int rc = template_render(tmpl, cfg, b, &out, e);
    if (rc != 0 && out) {
        free(out);
        out = NULL;
    }
    cJSON_Delete(cfg);
    if (errs_out) *errs_out = e;
    else errlist_destroy(&e);
    return out;
}

static char *run_sh(const char *cmd) {
    int fds[2];
    if (pipe(fds) != 0) return NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char *out = calloc(1, 65536);
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], out + len, 65535 - len)) > 0) len += (size_t)r;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return out;
}

static void test_common_template_render(void) {
    template_builtins b = {.seed = 7, .job = 42, .attempt = 2, .sweep = 3};
    const char *cfg = "{\"kind\": \"command\", \"name\": \"MAE run\", \"params\": {\"lr\": 1.5e-4, \"depth\": 6.0, "
                      "\"on\": true, \"obj\": {\"b\": 1, \"a\": [1, 2]}, \"nothing\": null, \"tricky\": \"it's $HOME `x`\"}}";
    char *out = render("python3 train.py --lr {params.lr} --depth {params.depth} --on {params.on} "
                       "--name {name} --seed {seed} --job {job}/{attempt}/{sweep} {{literal}} --n {params.nothing}",
                       cfg, &b, NULL);
    T_EQ_STR(out, "python3 train.py --lr 0.00015 --depth 6 --on true --name 'MAE run' --seed 7 --job 42/2/3 "
                  "{literal} --n null");
    free(out);
    out = render("x {params.obj}", cfg, &b, NULL);
    T_EQ_STR(out, "x '{\"a\":[1,2],\"b\":1}'");
    free(out);
    out = render("x {seed} {job}", cfg, NULL, NULL);
    T_EQ_STR(out, "x '<seed>' '<job>'");
    free(out);
    /* what the shell receives is exactly the value */
    out = render("printf '%s|' {params.tricky} {name} {params.obj}", cfg, &b, NULL);
    T_REQUIRE(out);
    char *got = run_sh(out);
    T_EQ_STR(got, "it's $HOME `x`|MAE run|{\"a\":[1,2],\"b\":1}|");
    free(got);
    free(out);
}

static void test_common_template_errors(void) {
    errlist *e = NULL;
    char *out = render("run {params.missing} {other} {params.lr}", "{\"params\": {\"lr\": 1}}", NULL, &e);
    T_CHECK(out == NULL);
    char *j = errlist_join(e, "\n");
    T_EQ_INT(errlist_count(e), 2);
    for (int i = 0; i < errlist_count(e); i++) T_EQ_STR(errlist_path(e, i), "command");
    T_CONTAINS(j, "unknown field {params.missing}: not in the job config");
    T_CONTAINS(j, "unknown field {other}");
    free(j);
    errlist_destroy(&e);
    /* braces that cannot be fields are literal: JSON, awk, shell groups, ${VAR}, unbalanced ones */
    const char *cfg = "{\"params\": {\"lr\": 0.5}}";
    out = render("echo '{\"umdq\": \"result\", \"lr\": '{params.lr}'}'; awk 'BEGIN { x = 1 }'; { a; }; "
                 "echo ${HOME} {} { x {1..3} {a,b} } {{params.lr}}", cfg, NULL, &e);
    T_EQ_STR(out, "echo '{\"umdq\": \"result\", \"lr\": '0.5'}'; awk 'BEGIN { x = 1 }'; { a; }; "
                  "echo ${HOME} {} { x {1..3} {a,b} } {params.lr}");
    T_EQ_INT(errlist_count(e), 0);
    free(out);
    errlist_destroy(&e);
    /* a JSON line printed by a command reaches the shell intact */
    out = render("printf '{\"umdq\":\"result\",\"x\":%s}' {params.lr}", cfg, NULL, &e);
    T_REQUIRE(out);
    char *got = run_sh(out);
    T_EQ_STR(got, "{\"umdq\":\"result\",\"x\":0.5}");
    free(got);
    free(out);
    errlist_destroy(&e);
    out = render("no fields at all }} {{", "{}", NULL, &e);
    T_EQ_STR(out, "no fields at all } {");
    T_EQ_INT(errlist_count(e), 0);
    free(out);
    errlist_destroy(&e);
}

int main(void) {
    T_RUN(test_common_schema_find_defaults);
    T_RUN(test_common_schema_good_configs);
    T_RUN(test_common_schema_types_ranges);
    T_RUN(test_common_schema_unknown_keys);
    T_RUN(test_common_schema_kind_sweep_reserved);
    T_RUN(test_common_schema_cross_keys);
    T_RUN(test_common_template_render);
    T_RUN(test_common_template_errors);
    return t_done();
}

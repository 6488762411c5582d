/* cmd_jobs.c: the subcommands that read and change sweeps and jobs through the daemon's API:
 * submit, ls, show, cancel, requeue, export, workers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "cli_fmt.h"
#include "cli_table.h"
#include "cli_view.h"
#include "jsonx.h"
#include "umdq.h"
#include "util.h"

#define SPEC_MAX (8u << 20) /* the daemon's cap on JSON bodies */

static const cli_opt END = {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0};

/* Print a rendered table to stdout. 0 or the exit code for out of memory. */
static int print_table(cli_ctx *ctx, cli_table *t) {
    char *s = t ? table_render(t, ctx->color_out) : NULL;
    if (!s) {
        cli_error(ctx, "out of memory");
        return UMDQ_EXIT_RUNTIME;
    }
    fputs(s, stdout);
    free(s);
    return 0;
}

void cli_print_jobs_table(cli_ctx *ctx, const cJSON *answer) {
    cli_table *t = view_jobs_table(answer);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    if (cJSON_GetArraySize(jobs) == 0) {
        fprintf(stderr, "no jobs\n");
        table_destroy(&t);
        return;
    }
    print_table(ctx, t);
    table_destroy(&t);
}

/* Read FILE, or stdin for "-", whole. *data caller frees. 0 or an exit code (reported). */
static int read_input(cli_ctx *ctx, const char *file, char **data, size_t *len) {
    char err[512];
    *data = NULL;
    *len = 0;
    if (strcmp(file, "-") != 0) {
        if (read_file(file, data, len, SPEC_MAX, err, sizeof err) != 0) {
            cli_error(ctx, "cannot read %s: %s", file, err);
            return UMDQ_EXIT_USAGE;
        }
        return 0;
    }
    strbuf b;
    strbuf_init(&b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        strbuf_append(&b, buf, n);
        if (b.len > SPEC_MAX) break;
    }
    if (ferror(stdin) || b.oom || b.len > SPEC_MAX) {
        cli_error(ctx, "cannot read the spec from stdin%s",
                  b.len > SPEC_MAX ? ": larger than 8 MiB" : "");
        strbuf_free(&b);
        return UMDQ_EXIT_USAGE;
    }
    *len = b.len;
    *data = strbuf_steal(&b);
    if (!*data) *data = strdup("");
    return *data ? 0 : UMDQ_EXIT_RUNTIME;
}

int cmd_submit(cli_ctx *ctx, int argc, char **argv) {
    int dry_run = 0, json = 0;
    const cli_opt opts[] = {
        {"dry-run", 'n', CLI_FLAG, NULL, "check and expand the spec, say how many jobs would be "
         "new, and write nothing", NULL, &dry_run, 0, 0},
        {"json", 0, CLI_FLAG, NULL, "print the daemon's JSON answer", NULL, &json, 0, 0},
        END,
    };
    const cli_command cmd = {
        "submit", "FILE", NULL,
        "Sends the sweep spec in FILE (- reads stdin) to the daemon, which expands it into jobs. "
        "A sweep is known by its name: submitting the same name again adds only the "
        "configurations it does not have yet. A refused spec changes nothing; every bad key is "
        "listed and the exit code is 2.",
        opts, 1, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    const char *file = argv[1];

    char *spec = NULL;
    size_t len = 0;
    cli_client *c = NULL;
    cJSON *answer = NULL;
    char err[1024];
    int exit_code = UMDQ_EXIT_RUNTIME;

    rc = read_input(ctx, file, &spec, &len);
    if (rc) return rc;
    cJSON *parsed = json_parse_n(spec, len, err, sizeof err);
    if (!parsed) {
        cli_error(ctx, "%s is not valid JSON: %s", strcmp(file, "-") ? file : "stdin", err);
        free(spec);
        return UMDQ_EXIT_USAGE;
    }
    cJSON_Delete(parsed);

    rc = cli_connect(ctx, &c);
    if (rc) {
        exit_code = rc;
        goto fail;
    }
    rc = client_call(c, "POST", dry_run ? "/api/sweeps?dry_run=1" : "/api/sweeps", spec, len,
                     &answer, err, sizeof err);
    if (rc == UMDQ_EINVAL) {
        cli_error(ctx, "the spec in %s was refused:", strcmp(file, "-") ? file : "stdin");
        const cJSON *errors = cJSON_GetObjectItemCaseSensitive(answer, "errors");
        if (cJSON_GetArraySize(errors) > 0) {
            const cJSON *e;
            cJSON_ArrayForEach(e, errors) {
                const char *path = json_get_string(e, "path", "");
                const char *msg = json_get_string(e, "message", "?");
                if (*path) fprintf(stderr, "  %s: %s\n", path, msg);
                else fprintf(stderr, "  %s\n", msg);
            }
        } else {
            fprintf(stderr, "  %s\n", err);
        }
        exit_code = UMDQ_EXIT_USAGE;
        goto fail;
    }
    if (rc) {
        cli_error(ctx, "%s", err);
        exit_code = client_exit_code(rc);
        goto fail;
    }
    if (json) {
        cli_print_json(answer);
    } else {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
        const char *name = json_get_string(sw, "name", "?");
        long long id = (long long)json_get_int(sw, "id", 0);
        long long jobs = (long long)json_get_int(answer, "jobs", 0);
        long long fresh = (long long)json_get_int(answer, "new", 0);
        long long existing = (long long)json_get_int(answer, "existing", 0);
        char idtext[32] = "";
        if (id > 0) snprintf(idtext, sizeof idtext, "%lld ", id);
        if (dry_run)
            printf("dry run: sweep %s%s has %lld job%s: %lld new, %lld already present "
                   "(nothing written)\n",
                   idtext, name, jobs, jobs == 1 ? "" : "s", fresh, existing);
        else
            printf("sweep %s%s: %lld job%s, %lld new, %lld already present\n", idtext, name, jobs,
                   jobs == 1 ? "" : "s", fresh, existing);
    }
    exit_code = UMDQ_EXIT_OK;
fail:
    cJSON_Delete(answer);
    client_destroy(&c);
    free(spec);
    return exit_code;
}

/* Number of a JSON member, or NAN. */
static double num_of(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* A time member (seconds since the epoch or an ISO text) as a cell. */
static void time_cell(const cJSON *obj, const char *key, char *buf, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsString(v)) snprintf(buf, n, "%s", v->valuestring);
    else fmt_time(cJSON_IsNumber(v) ? v->valuedouble : NAN, buf, n);
}

static int sweeps_table(cli_ctx *ctx, const cJSON *answer, const char *state) {
    cli_table *t = table_new();
    if (!t) return print_table(ctx, NULL);
    const char *titles[] = {"ID", "NAME", "STATE", "PROGRESS", "QUEUED", "RUNNING",
                            "SUCCEEDED", "FAILED", "CANCELLED", "CREATED", "ELAPSED"};
    for (int i = 0; i < 11; i++)
        table_column(t, titles[i], (i == 1 || i == 2 || i == 9) ? TABLE_LEFT : TABLE_RIGHT);
    table_column_max(t, 1, 40);
    const cJSON *s;
    int shown = 0;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(answer, "sweeps")) {
        const char *st = json_get_string(s, "state", "?");
        if (state && strcasecmp(st, state) != 0) continue;
        view_counts k;
        view_sweep_counts(s, &k);
        char cell[64];
        table_row(t);
        table_cellf(t, "%lld", (long long)json_get_int(s, "id", 0));
        table_cell(t, json_get_string(s, "name", "?"));
        table_cell_color(t, fmt_state_color(st), st);
        table_cellf(t, "%d/%d", k.total - k.queued - k.running, k.total);
        table_cellf(t, "%d", k.queued);
        table_cellf(t, "%d", k.running);
        table_cellf(t, "%d", k.succeeded);
        snprintf(cell, sizeof cell, "%d", k.failed);
        table_cell_color(t, k.failed ? "31" : NULL, cell);
        table_cellf(t, "%d", k.cancelled);
        time_cell(s, "created", cell, sizeof cell);
        table_cell(t, cell);
        fmt_duration(num_of(s, "elapsed"), cell, sizeof cell);
        table_cell(t, cell);
        shown++;
    }
    int rc = 0;
    if (shown == 0) fprintf(stderr, state ? "no sweeps in state %s\n" : "no sweeps%s\n",
                            state ? state : "");
    else rc = print_table(ctx, t);
    table_destroy(&t);
    return rc;
}

int cmd_ls(cli_ctx *ctx, int argc, char **argv) {
    int json = 0;
    const char *state = NULL;
    const cli_opt opts[] = {
        {"state", 's', CLI_STR, "S", "only sweeps in state S (QUEUED, RUNNING, DONE), or with "
         "SWEEP only jobs in state S (QUEUED, RUNNING, SUCCEEDED, FAILED, LOST, PREEMPTED, "
         "CANCELLED)", NULL, &state, 0, 0},
        {"json", 0, CLI_FLAG, NULL, "print the daemon's JSON answer", NULL, &json, 0, 0},
        END,
    };
    const cli_command cmd = {
        "ls", "[SWEEP]", NULL,
        "Without SWEEP: every sweep, newest first, with its state, progress (finished/total), "
        "job counts, creation time and elapsed time. With SWEEP (a number, a name, s<N> or "
        "sweep:<N>): its jobs, with their state, attempts, the swept keys and the results.",
        opts, 0, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;

    cli_client *c = NULL;
    cJSON *answer = NULL;
    char *ref = NULL, *st = NULL;
    strbuf path;
    strbuf_init(&path);
    int exit_code = UMDQ_EXIT_RUNTIME;
    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    if (nops == 0) {
        rc = cli_call(ctx, c, "GET", "/api/sweeps", NULL, 0, &answer);
        if (rc) {
            exit_code = rc;
            goto fail;
        }
        if (json) cli_print_json(answer);
        else if ((rc = sweeps_table(ctx, answer, state)) != 0) {
            exit_code = rc;
            goto fail;
        }
        exit_code = UMDQ_EXIT_OK;
        goto fail;
    }
    ref = cli_sweep_ref(argv[1]);
    st = state ? client_escape(state) : NULL;
    if (!ref || (state && !st)) {
        cli_error(ctx, "out of memory");
        goto fail;
    }
    for (char *p = st; p && *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    strbuf_printf(&path, "/api/sweeps/%s%s%s", ref, st ? "?state=" : "", st ? st : "");
    rc = cli_call(ctx, c, "GET", path.data, NULL, 0, &answer);
    if (rc) {
        exit_code = rc;
        goto fail;
    }
    if (json) cli_print_json(answer);
    else cli_print_jobs_table(ctx, answer);
    exit_code = UMDQ_EXIT_OK;
fail:
    strbuf_free(&path);
    free(ref);
    free(st);
    cJSON_Delete(answer);
    client_destroy(&c);
    return exit_code;
}

/* "key  value" lines of show, the key padded to a column. */
static void field(const char *key, const char *value) {
    printf("%-10s %s\n", key, value && *value ? value : "-");
}

/* The job view of show: header fields, config, attempts, results, latest metrics. */
static int show_job(cli_ctx *ctx, cli_client *c, const char *id, int json) {
    cJSON *answer = NULL, *metrics = NULL;
    char path[128], cell[256], buf[512];
    int exit_code;
    snprintf(path, sizeof path, "/api/jobs/%s", id);
    int rc = cli_call(ctx, c, "GET", path, NULL, 0, &answer);
    if (rc) return rc;
    snprintf(path, sizeof path, "/api/jobs/%s/metrics?max_points=100000", id);
    char err[512];
    if (client_call(c, "GET", path, NULL, 0, &metrics, err, sizeof err) != 0) {
        cJSON_Delete(metrics);
        metrics = NULL; /* the job is shown without its curves */
    }
    if (json) {
        if (metrics) {
            cJSON *series = cJSON_DetachItemFromObjectCaseSensitive(metrics, "series");
            if (series) cJSON_AddItemToObject(answer, "metrics", series);
        }
        cli_print_json(answer);
        exit_code = UMDQ_EXIT_OK;
        goto fail;
    }
    const cJSON *job = cJSON_GetObjectItemCaseSensitive(answer, "job");
    const char *state = json_get_string(job, "state", "?");
    printf("job %s", id);
    if (ctx->color_out && fmt_state_color(state))
        printf("  \033[%sm%s\033[0m\n", fmt_state_color(state), state);
    else
        printf("  %s\n", state);
    snprintf(buf, sizeof buf, "%lld %s, index %lld",
             (long long)json_get_int(job, "sweep", 0), json_get_string(job, "sweep_name", "?"),
             (long long)json_get_int(job, "idx", 0));
    field("sweep", buf);
    field("kind", json_get_string(job, "kind", "?"));
    fmt_json_cell(cJSON_GetObjectItemCaseSensitive(job, "seed"), cell, sizeof cell);
    field("seed", cell);
    snprintf(buf, sizeof buf, "%lld of %lld", (long long)json_get_int(job, "attempts", 0),
             (long long)json_get_int(job, "max_attempts", 0));
    field("attempts", buf);
    fmt_json_cell(cJSON_GetObjectItemCaseSensitive(job, "worker"), cell, sizeof cell);
    field("worker", cell);
    fmt_json_cell(cJSON_GetObjectItemCaseSensitive(job, "step"), cell, sizeof cell);
    field("step", cell);
    time_cell(job, "created", cell, sizeof cell);
    field("created", cell);
    time_cell(job, "started", cell, sizeof cell);
    field("started", cell);
    time_cell(job, "finished", cell, sizeof cell);
    double t0 = num_of(job, "started"), t1 = num_of(job, "finished");
    if (isfinite(t0) && isfinite(t1)) {
        char d[32];
        fmt_duration(t1 - t0, d, sizeof d);
        snprintf(buf, sizeof buf, "%s (took %s)", cell, d);
        field("finished", buf);
    } else {
        field("finished", cell);
    }
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(job, "params");
    if (cJSON_GetArraySize(params) > 0) {
        strbuf b;
        strbuf_init(&b);
        const cJSON *p;
        cJSON_ArrayForEach(p, params) {
            fmt_json_cell(p, cell, sizeof cell);
            strbuf_printf(&b, "%s%s=%s", b.len ? " " : "", p->string, cell);
        }
        field("swept", b.data);
        strbuf_free(&b);
    }
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(job, "config");
    if (config) {
        strbuf b;
        strbuf_init(&b);
        strbuf_puts(&b, "  ");
        fmt_json_pretty(&b, config, 2);
        if (b.data && !b.oom) printf("\nconfig:\n%s\n", b.data);
        strbuf_free(&b);
    }

    const cJSON *attempts = cJSON_GetObjectItemCaseSensitive(answer, "attempts");
    if (cJSON_GetArraySize(attempts) > 0) {
        printf("\nattempts:\n");
        cli_table *t = table_new();
        if (!t) {
            exit_code = print_table(ctx, NULL);
            goto fail;
        }
        const char *titles[] = {"N", "WORKER", "STATE", "STARTED", "ENDED", "TOOK", "EXIT",
                                "SIGNAL", "STEP", "ERROR"};
        for (int i = 0; i < 10; i++)
            table_column(t, titles[i], (i == 0 || (i >= 5 && i <= 8)) ? TABLE_RIGHT : TABLE_LEFT);
        table_column_max(t, 9, 72);
        const cJSON *a;
        cJSON_ArrayForEach(a, attempts) {
            table_row(t);
            table_cellf(t, "%lld", (long long)json_get_int(a, "n", 0));
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(a, "worker"), cell, sizeof cell);
            table_cell(t, cell);
            const char *ast = json_get_string(a, "state", "-");
            table_cell_color(t, fmt_state_color(ast), ast);
            time_cell(a, "started", cell, sizeof cell);
            table_cell(t, cell);
            time_cell(a, "ended", cell, sizeof cell);
            table_cell(t, cell);
            double s0 = num_of(a, "started"), s1 = num_of(a, "ended");
            fmt_duration(isfinite(s0) && isfinite(s1) ? s1 - s0 : NAN, cell, sizeof cell);
            table_cell(t, cell);
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(a, "exit_code"), cell, sizeof cell);
            table_cell(t, cell);
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(a, "signal"), cell, sizeof cell);
            table_cell(t, cell);
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(a, "step"), cell, sizeof cell);
            table_cell(t, cell);
            const char *e = json_get_string(a, "error", "");
            /* the first non-empty line of the error */
            while (*e == '\n' || *e == '\r' || *e == ' ') e++;
            snprintf(buf, sizeof buf, "%.*s", (int)strcspn(e, "\r\n"), e);
            table_cell(t, buf);
        }
        rc = print_table(ctx, t);
        table_destroy(&t);
        if (rc) {
            exit_code = rc;
            goto fail;
        }
    }

    const cJSON *results = cJSON_GetObjectItemCaseSensitive(job, "results");
    if (cJSON_GetArraySize(results) > 0) {
        printf("\nresults:\n");
        size_t w = 0;
        const cJSON *r;
        cJSON_ArrayForEach(r, results) if (r->string && strlen(r->string) > w) w = strlen(r->string);
        cJSON_ArrayForEach(r, results) {
            fmt_json_cell(r, cell, sizeof cell);
            printf("  %-*s  %s\n", (int)w, r->string ? r->string : "?", cell);
        }
    }
    const cJSON *series = cJSON_GetObjectItemCaseSensitive(metrics, "series");
    if (cJSON_GetArraySize(series) > 0) {
        printf("\nlatest metrics:\n");
        size_t w = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, series) {
            size_t l = strlen(json_get_string(s, "key", "?"));
            if (l > w) w = l;
        }
        cJSON_ArrayForEach(s, series) {
            const cJSON *points = cJSON_GetObjectItemCaseSensitive(s, "points");
            int np = cJSON_GetArraySize(points);
            if (np == 0) continue;
            const cJSON *last = cJSON_GetArrayItem(points, np - 1);
            char step[32], value[32];
            fmt_json_cell(cJSON_GetArrayItem(last, 0), step, sizeof step);
            fmt_json_cell(cJSON_GetArrayItem(last, 1), value, sizeof value);
            printf("  %-*s  %s  (step %s, %d point%s)\n", (int)w, json_get_string(s, "key", "?"),
                   value, step, np, np == 1 ? "" : "s");
        }
    }
    exit_code = UMDQ_EXIT_OK;
fail:
    cJSON_Delete(answer);
    cJSON_Delete(metrics);
    return exit_code;
}

/* The sweep view of show: summary and the jobs table. */
static int show_sweep(cli_ctx *ctx, cli_client *c, const char *arg, int json) {
    cJSON *answer = NULL;
    char *ref = cli_sweep_ref(arg);
    char path[1024], cell[256], buf[512];
    if (!ref) {
        cli_error(ctx, "out of memory");
        return UMDQ_EXIT_RUNTIME;
    }
    snprintf(path, sizeof path, "/api/sweeps/%.900s", ref);
    free(ref);
    int rc = cli_call(ctx, c, "GET", path, NULL, 0, &answer);
    if (rc) return rc;
    if (json) {
        cli_print_json(answer);
        cJSON_Delete(answer);
        return UMDQ_EXIT_OK;
    }
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
    const char *state = json_get_string(s, "state", "?");
    printf("sweep %lld %s", (long long)json_get_int(s, "id", 0), json_get_string(s, "name", "?"));
    if (ctx->color_out && fmt_state_color(state))
        printf("  \033[%sm%s\033[0m\n", fmt_state_color(state), state);
    else
        printf("  %s\n", state);
    view_counts k;
    view_sweep_counts(s, &k);
    snprintf(buf, sizeof buf, "%d: %d queued, %d running, %d succeeded, %d failed, %d cancelled",
             k.total, k.queued, k.running, k.succeeded, k.failed, k.cancelled);
    field("jobs", buf);
    fmt_json_cell(cJSON_GetObjectItemCaseSensitive(s, "priority"), cell, sizeof cell);
    field("priority", cell);
    time_cell(s, "created", cell, sizeof cell);
    field("created", cell);
    time_cell(s, "started", cell, sizeof cell);
    field("started", cell);
    time_cell(s, "finished", cell, sizeof cell);
    field("finished", cell);
    fmt_duration(num_of(s, "elapsed"), cell, sizeof cell);
    field("elapsed", cell);
    const cJSON *swept = cJSON_GetObjectItemCaseSensitive(s, "swept");
    if (cJSON_GetArraySize(swept) > 0) {
        strbuf b;
        strbuf_init(&b);
        const cJSON *key;
        cJSON_ArrayForEach(key, swept)
            if (cJSON_IsString(key)) strbuf_printf(&b, "%s%s", b.len ? ", " : "", key->valuestring);
        field("swept", b.data);
        strbuf_free(&b);
    }
    printf("\n");
    fflush(stdout);
    cli_print_jobs_table(ctx, answer);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    cli_table *seeds = view_seed_table(answer);
    if (seeds) {
        printf("\nmean\xc2\xb1sd over seeds:\n");
        print_table(ctx, seeds);
        table_destroy(&seeds);
    }
    int several = 0;
    const char *net = view_fid_net(jobs, &several);
    if (net) printf("\nFID features: %s%s\n", net, several ? " and others: FIDs of different networks do not compare" : "");
    cJSON_Delete(answer);
    return UMDQ_EXIT_OK;
}

int cmd_show(cli_ctx *ctx, int argc, char **argv) {
    int json = 0;
    const cli_opt opts[] = {
        {"json", 0, CLI_FLAG, NULL, "print the daemon's JSON answer (for a job: with its metric "
         "series under \"metrics\")", NULL, &json, 0, 0},
        END,
    };
    const cli_command cmd = {
        "show", "JOB|SWEEP", NULL,
        "A number is a job: its config, attempts (worker, start, end, exit code, signal, first "
        "line of the error), results and the latest value of each metric. Anything else is a "
        "sweep: its name, or s<N> / sweep:<N> for sweep number N (so a sweep whose name is all "
        "digits is reached as sweep:<its number>). A sweep shows its summary and the comparison "
        "of its jobs: one row per job with the swept keys, then for umd jobs PROBE and LINEAR "
        "(top-1 of the 100-shot ridge probe and of the linear probe on the model's features), "
        "PX-PROBE and PX-LINEAR (the same probes on raw pixels), FID, VAL-DENOISE and VAL-MASK "
        "(validation losses), IMG/S, DEV-H (device-hours of the attempt that finished) and WALL "
        "(the wall time of all its attempts); with several seeds also the mean"
        "\xc2\xb1sd of each variant over its seeds. 'umdq export' writes every column.",
        opts, 1, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    cli_client *c = NULL;
    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    if (cli_is_job_id(argv[1])) rc = show_job(ctx, c, argv[1], json);
    else rc = show_sweep(ctx, c, argv[1], json);
    client_destroy(&c);
    return rc;
}

/* POST path; print a line (or the JSON) on success. */
static int post_action(cli_ctx *ctx, const char *path, int json, cJSON **answer) {
    cli_client *c = NULL;
    int rc = cli_connect(ctx, &c);
    if (rc) return rc;
    rc = cli_call(ctx, c, "POST", path, "{}", 2, answer);
    client_destroy(&c);
    if (rc) return rc;
    if (json) cli_print_json(*answer);
    return 0;
}

int cmd_cancel(cli_ctx *ctx, int argc, char **argv) {
    int json = 0;
    const cli_opt opts[] = {
        {"json", 0, CLI_FLAG, NULL, "print the daemon's JSON answer", NULL, &json, 0, 0},
        END,
    };
    const cli_command cmd = {
        "cancel", "JOB|SWEEP", NULL,
        "A number is a job: it becomes CANCELLED at once and its running attempt is stopped "
        "(SIGTERM, then SIGKILL after a grace). A name, s<N> or sweep:<N> is a sweep: every "
        "queued or running job of it is cancelled. Cancelling a finished job fails (exit 1).",
        opts, 1, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    cJSON *answer = NULL;
    char path[1024];
    int job = cli_is_job_id(argv[1]);
    if (job) {
        snprintf(path, sizeof path, "/api/jobs/%.64s/cancel", argv[1]);
    } else {
        char *ref = cli_sweep_ref(argv[1]);
        if (!ref) return UMDQ_EXIT_RUNTIME;
        snprintf(path, sizeof path, "/api/sweeps/%.900s/cancel", ref);
        free(ref);
    }
    rc = post_action(ctx, path, json, &answer);
    if (rc == 0 && !json) {
        if (job) {
            printf("job %s: %s\n", argv[1], json_get_string(answer, "state", "CANCELLED"));
        } else {
            long long n = (long long)json_get_int(answer, "cancelled", 0);
            printf("sweep %s: cancelled %lld job%s\n", argv[1], n, n == 1 ? "" : "s");
        }
    }
    cJSON_Delete(answer);
    return rc;
}

int cmd_requeue(cli_ctx *ctx, int argc, char **argv) {
    int json = 0, failed = 0;
    const cli_opt opts[] = {
        {"failed", 'f', CLI_FLAG, NULL, "the operand is a SWEEP: queue every FAILED, LOST or "
         "CANCELLED job of it again", NULL, &failed, 0, 0},
        {"json", 0, CLI_FLAG, NULL, "print the daemon's JSON answer", NULL, &json, 0, 0},
        END,
    };
    const cli_command cmd = {
        "requeue", "JOB | --failed SWEEP", NULL,
        "Puts a finished job back in the queue with a fresh attempt budget (a queued or running "
        "job cannot be requeued: exit 1). With --failed, does so for every FAILED, LOST or "
        "CANCELLED job of the sweep.",
        opts, 1, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    cJSON *answer = NULL;
    char path[1024];
    if (!failed) {
        if (!cli_is_job_id(argv[1]))
            return cli_usage_error(ctx, "'%s' is not a job number; for a sweep's failed jobs use "
                                        "`umdq requeue --failed SWEEP`", argv[1]);
        snprintf(path, sizeof path, "/api/jobs/%.64s/requeue", argv[1]);
    } else {
        char *ref = cli_sweep_ref(argv[1]);
        if (!ref) return UMDQ_EXIT_RUNTIME;
        snprintf(path, sizeof path, "/api/sweeps/%.900s/requeue?failed=1", ref);
        free(ref);
    }
    rc = post_action(ctx, path, json, &answer);
    if (rc == 0 && !json) {
        if (!failed) {
            printf("job %s: %s\n", argv[1], json_get_string(answer, "state", "QUEUED"));
        } else {
            long long n = (long long)json_get_int(answer, "requeued", 0);
            printf("sweep %s: requeued %lld job%s\n", argv[1], n, n == 1 ? "" : "s");
        }
    }
    cJSON_Delete(answer);
    return rc;
}

int cmd_export(cli_ctx *ctx, int argc, char **argv) {
    int json = 0;
    const char *format = "csv", *output = NULL;
    const cli_opt opts[] = {
        {"format", 'F', CLI_STR, "FMT", "csv (RFC 4180: quoted where needed, CRLF line ends) or "
         "json (an array of objects)", "csv", &format, 0, 0},
        {"json", 0, CLI_FLAG, NULL, "the same as --format json", NULL, &json, 0, 0},
        {"output", 'o', CLI_STR, "FILE", "write to FILE (atomically) instead of stdout", NULL,
         &output, 0, 0},
        END,
    };
    const cli_command cmd = {
        "export", "SWEEP", NULL,
        "One row per job. A sweep of umd jobs: id, state, seed, the swept keys, then "
        "probe_ridge_top1, probe_linear_top1, pixel_ridge_top1, pixel_linear_top1 (probe top-1 "
        "on the model's features and on pixels, fractions), fid, fid_net, fid_samples, "
        "val_denoise_loss, val_mask_mse, train_img_per_s, device_hours (always present, empty "
        "where a job has none yet), run_seconds (the wall time of all the job's attempts, lost "
        "ones included), attempts, then every other result (sorted by name). Other "
        "sweeps: id, state, seed, attempts, the swept keys, then every result key any job has "
        "(sorted by name). Results are those of each job's latest attempt that reported any. "
        "Numbers keep their full precision. SWEEP is a name, a number, s<N> or sweep:<N>.",
        opts, 1, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    if (json) format = "json";
    if (strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
        return cli_usage_error(ctx, "--format must be csv or json, got '%s'", format);

    cli_client *c = NULL;
    cJSON *answer = NULL, *rows = NULL;
    char *ref = NULL, *text = NULL;
    char path[1024], err[512];
    strbuf b;
    strbuf_init(&b);
    int exit_code = UMDQ_EXIT_RUNTIME;
    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    ref = cli_sweep_ref(argv[1]);
    if (!ref) {
        cli_error(ctx, "out of memory");
        goto fail;
    }
    snprintf(path, sizeof path, "/api/sweeps/%.900s", ref);
    rc = cli_call(ctx, c, "GET", path, NULL, 0, &answer);
    if (rc) {
        exit_code = rc;
        goto fail;
    }
    if (strcmp(format, "csv") == 0) {
        if (view_export_csv(answer, &b) == 0) text = strbuf_steal(&b);
    } else {
        rows = view_export_json(answer);
        if (rows) {
            fmt_json_pretty(&b, rows, 0);
            strbuf_puts(&b, "\n");
            text = strbuf_steal(&b);
        }
    }
    if (!text) {
        cli_error(ctx, "out of memory");
        goto fail;
    }
    if (output) {
        if (write_file_atomic(output, text, strlen(text), 0644, err, sizeof err) != 0) {
            cli_error(ctx, "cannot write %s: %s", output, err);
            goto fail;
        }
        int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(answer, "jobs"));
        fprintf(stderr, "wrote %d row%s to %s\n", n, n == 1 ? "" : "s", output);
    } else {
        fputs(text, stdout);
    }
    exit_code = UMDQ_EXIT_OK;
fail:
    strbuf_free(&b);
    free(text);
    free(ref);
    cJSON_Delete(rows);
    cJSON_Delete(answer);
    client_destroy(&c);
    return exit_code;
}

int cmd_workers(cli_ctx *ctx, int argc, char **argv) {
    int json = 0;
    const cli_opt opts[] = {
        {"json", 0, CLI_FLAG, NULL, "print the daemon's JSON answer", NULL, &json, 0, 0},
        END,
    };
    const cli_command cmd = {
        "workers", "", NULL,
        "Every worker the daemon knows: its id, device, backend, state, the job and step it runs, "
        "how long ago its last heartbeat came, and how many jobs it has finished.",
        opts, 0, 0};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    cli_client *c = NULL;
    cJSON *answer = NULL;
    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    rc = cli_call(ctx, c, "GET", "/api/workers", NULL, 0, &answer);
    client_destroy(&c);
    if (rc) return rc;
    if (json) {
        cli_print_json(answer);
        cJSON_Delete(answer);
        return UMDQ_EXIT_OK;
    }
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(answer, "workers");
    if (cJSON_GetArraySize(list) == 0) {
        fprintf(stderr, "no workers; start some with `umdq up`\n");
        cJSON_Delete(answer);
        return UMDQ_EXIT_OK;
    }
    cli_table *t = table_new();
    if (t) {
        const char *titles[] = {"ID", "DEVICE", "BACKEND", "STATE", "JOB", "STEP", "HEARTBEAT",
                                "JOBS DONE"};
        for (int i = 0; i < 8; i++) table_column(t, titles[i], i >= 4 ? TABLE_RIGHT : TABLE_LEFT);
        const cJSON *w;
        cJSON_ArrayForEach(w, list) {
            char cell[128];
            table_row(t);
            table_cell(t, json_get_string(w, "id", "?"));
            table_cell(t, json_get_string(w, "device", "-"));
            table_cell(t, json_get_string(w, "backend", "-"));
            const char *st = json_get_string(w, "state", "?");
            table_cell_color(t, fmt_state_color(st), st);
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(w, "job"), cell, sizeof cell);
            table_cell(t, cell);
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(w, "step"), cell, sizeof cell);
            table_cell(t, cell);
            double age = num_of(w, "heartbeat_age");
            if (isfinite(age)) {
                char d[32];
                fmt_duration(age, d, sizeof d);
                table_cellf(t, "%s ago", d);
            } else {
                table_cell(t, "-");
            }
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(w, "jobs_done"), cell, sizeof cell);
            table_cell(t, cell);
        }
    }
    rc = print_table(ctx, t);
    table_destroy(&t);
    cJSON_Delete(answer);
    return rc ? rc : UMDQ_EXIT_OK;
}

/* cli.c: the umdq command line: global options, the subcommand table, help, shared helpers. */
#include "cli.h"

#include <curl/curl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_fmt.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

typedef struct {
    const char *name;
    int (*run)(cli_ctx *ctx, int argc, char **argv); /* NULL: handled by cli_main itself */
    const char *summary;
} cli_entry;

static const cli_entry commands[] = {
    {"up", cmd_up, "start a local daemon and its workers (reuses what already runs)"},
    {"down", cmd_down, "stop the local workers and daemon"},
    {"submit", cmd_submit, "submit a sweep spec (sweep.json); resubmitting adds only new jobs"},
    {"ls", cmd_ls, "list sweeps, or the jobs of one sweep"},
    {"show", cmd_show, "show a job (by number) or a sweep (by name, s<N> or sweep:<N>)"},
    {"wait", cmd_wait, "wait until a sweep has no queued or running job"},
    {"logs", cmd_logs, "print a job's log; -f follows it until the job ends"},
    {"cancel", cmd_cancel, "cancel a job, or every open job of a sweep"},
    {"requeue", cmd_requeue, "queue a finished job again, or the failed jobs of a sweep"},
    {"export", cmd_export, "export a sweep's jobs and results as CSV or JSON"},
    {"workers", cmd_workers, "list the workers the daemon knows"},
    {"dashboard", cmd_dashboard, "print a one-time link that opens the web dashboard"},
    {"train", NULL, "train one UMD config in this process (the embedded trainer)"},
    {"help", NULL, "show help for umdq or one command"},
    {NULL, NULL, NULL},
};

static const char *summary_of(const char *name) {
    for (const cli_entry *e = commands; e->name; e++)
        if (strcmp(e->name, name) == 0) return e->summary;
    return NULL;
}

static void vreport(const cli_ctx *ctx, const char *fmt, va_list ap) {
    if (ctx->color_err) fprintf(stderr, "\033[1mumdq%s%s:\033[0m ", ctx->cmd ? " " : "",
                                ctx->cmd ? ctx->cmd : "");
    else fprintf(stderr, "umdq%s%s: ", ctx->cmd ? " " : "", ctx->cmd ? ctx->cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_error(const cli_ctx *ctx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(ctx, fmt, ap);
    va_end(ap);
}

int cli_usage_error(const cli_ctx *ctx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(ctx, fmt, ap);
    va_end(ap);
    if (ctx->cmd) fprintf(stderr, "Try 'umdq %s --help'.\n", ctx->cmd);
    else fprintf(stderr, "Try 'umdq help'.\n");
    return UMDQ_EXIT_USAGE;
}

int cli_args(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv, int *noperands) {
    char err[512];
    cli_command c = *cmd;
    if (!c.summary) c.summary = summary_of(c.name);
    int rc = cli_parse(&c, ctx->globals, argc, argv, noperands, err, sizeof err);
    if (rc == 1) return UMDQ_EXIT_OK;
    if (rc < 0) return cli_usage_error(ctx, "%s", err);
    return -1;
}

/* ctx->home from --home, $UMDQ_HOME or ~/.umdq, made absolute. 0 or an exit code. */
static int resolve_home(cli_ctx *ctx) {
    if (ctx->home) return 0;
    char *h = cli_home_resolve(ctx->home_opt);
    if (!h) {
        cli_error(ctx, "out of memory");
        return UMDQ_EXIT_RUNTIME;
    }
    if (h[0] != '/') {
        char cwd[PATH_MAX];
        strbuf b;
        strbuf_init(&b);
        if (getcwd(cwd, sizeof cwd)) strbuf_printf(&b, "%s/%s", cwd, h);
        else strbuf_puts(&b, h);
        free(h);
        h = strbuf_steal(&b);
        if (!h) {
            cli_error(ctx, "out of memory");
            return UMDQ_EXIT_RUNTIME;
        }
    }
    size_t n = strlen(h);
    while (n > 1 && h[n - 1] == '/') h[--n] = 0;
    ctx->home = h;
    return 0;
}

int cli_connect(cli_ctx *ctx, cli_client **out) {
    char err[512];
    int rc = resolve_home(ctx);
    if (rc) return rc;
    if (client_new(ctx->home, out, err, sizeof err) != 0) {
        cli_error(ctx, "%s", err);
        return UMDQ_EXIT_RUNTIME;
    }
    return 0;
}

int cli_call(cli_ctx *ctx, cli_client *c, const char *method, const char *path, const char *body,
             size_t bodylen, cJSON **json) {
    char err[1024];
    int rc = client_call(c, method, path, body, bodylen, json, err, sizeof err);
    if (rc == 0) return 0;
    cJSON_Delete(*json);
    *json = NULL;
    cli_error(ctx, "%s", err);
    return client_exit_code(rc);
}

void cli_print_json(const cJSON *v) {
    strbuf b;
    strbuf_init(&b);
    fmt_json_pretty(&b, v, 0);
    strbuf_puts(&b, "\n");
    if (b.data && !b.oom) fputs(b.data, stdout);
    strbuf_free(&b);
}

int cli_is_job_id(const char *arg) {
    if (!*arg) return 0;
    for (const char *p = arg; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

char *cli_sweep_ref(const char *arg) {
    if ((arg[0] == 's' || arg[0] == 'S') && cli_is_job_id(arg + 1)) return strdup(arg + 1);
    if (strncmp(arg, "sweep:", 6) == 0 && cli_is_job_id(arg + 6)) return strdup(arg + 6);
    return client_escape(arg);
}

static void main_help(FILE *out) {
    fprintf(out,
            "umdq %s: run UMD ablation sweeps through a local job-queue daemon.\n\n"
            "Usage: umdq [--home DIR] COMMAND [options] [arguments]\n"
            "       umdq --version | help [COMMAND]\n\n"
            "Commands:\n",
            UMDQ_VERSION);
    for (const cli_entry *e = commands; e->name; e++) fprintf(out, "  %-9s %s\n", e->name, e->summary);
    fputs("\nRun 'umdq COMMAND --help' (or 'umdq help COMMAND') for the options of a command.\n"
          "SWEEP is a sweep's number, its name, s<N> or sweep:<N>; JOB is a job's number.\n\n"
          "Global options:\n"
          "      --home DIR        state directory (default $UMDQ_HOME, else ~/.umdq); the daemon's\n"
          "                        address and token are read from DIR/umdqd.json and DIR/token\n"
          "      --version         print the version and exit\n"
          "  -h, --help            show this help and exit\n\n"
          "Environment: UMDQ_HOME (state directory), NO_COLOR (no colour even on a terminal).\n"
          "Exit codes: 0 ok, 1 runtime error (daemon unreachable, timeout), 2 usage,\n"
          "3 not found, 4 some jobs failed.\n",
          out);
}

/* umd_train_main with argv[0] = "train"; argv is borrowed. */
static int run_train(int argc, char **argv) {
    char *name = argv[0];
    argv[0] = "train";
    int rc = umd_train_main(argc, argv);
    argv[0] = name;
    return rc;
}

/* Run the subcommand argv[0]. */
static int dispatch(cli_ctx *ctx, int argc, char **argv) {
    const char *name = argv[0];
    ctx->cmd = NULL;
    if (strcmp(name, "help") == 0) {
        if (argc < 2) {
            main_help(stdout);
            return UMDQ_EXIT_OK;
        }
        if (argc > 2) return cli_usage_error(ctx, "help takes one command name");
        if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
            strcmp(argv[1], "-h") == 0) {
            main_help(stdout);
            return UMDQ_EXIT_OK;
        }
        char *sub[3] = {argv[1], "--help", NULL};
        return dispatch(ctx, 2, sub);
    }
    if (strcmp(name, "train") == 0) return run_train(argc, argv);
    for (const cli_entry *e = commands; e->name; e++) {
        if (e->run && strcmp(e->name, name) == 0) {
            ctx->cmd = e->name;
            return e->run(ctx, argc, argv);
        }
    }
    /* a near miss gets a suggestion */
    const char *near = NULL;
    for (const cli_entry *e = commands; e->name && !near; e++)
        if (strncmp(e->name, name, 2) == 0 && strlen(name) >= 2) near = e->name;
    if (near) return cli_usage_error(ctx, "unknown command '%s' (did you mean '%s'?)", name, near);
    return cli_usage_error(ctx, "unknown command '%s'", name);
}

int cli_main(int argc, char **argv) {
    cli_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    const cli_opt globals[] = {
        {"home", 0, CLI_STR, "DIR", "state directory: the daemon's umdqd.json, token, database "
         "and logs", "$UMDQ_HOME, else ~/.umdq", &ctx.home_opt, 0, 0},
        {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0},
    };
    ctx.globals = globals;
    ctx.color_out = fmt_use_color(STDOUT_FILENO);
    ctx.color_err = fmt_use_color(STDERR_FILENO);
    ctx.tty_err = isatty(STDERR_FILENO);
    signal(SIGPIPE, SIG_IGN); /* `umdq ls | head` ends with EPIPE on write, not a signal */

    int i = 1;
    while (i < argc && argv[i][0] == '-' && argv[i][1]) {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("umdq %s (protocol %d)\n", UMDQ_VERSION, UMDQ_PROTOCOL_VERSION);
            return UMDQ_EXIT_OK;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            main_help(stdout);
            return UMDQ_EXIT_OK;
        }
        if (strcmp(a, "--home") == 0) {
            if (i + 1 >= argc) return cli_usage_error(&ctx, "--home needs a value (DIR)");
            ctx.home_opt = argv[i + 1];
            i += 2;
            continue;
        }
        if (strncmp(a, "--home=", 7) == 0) {
            ctx.home_opt = a + 7;
            i++;
            continue;
        }
        return cli_usage_error(&ctx, "unknown option '%s' before the command", a);
    }
    if (i >= argc) {
        main_help(stderr);
        return UMDQ_EXIT_USAGE;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = dispatch(&ctx, argc - i, argv + i);
    fflush(stdout);
    if (ferror(stdout) && rc == UMDQ_EXIT_OK) rc = UMDQ_EXIT_RUNTIME;
    curl_global_cleanup();
    free(ctx.home);
    return rc;
}

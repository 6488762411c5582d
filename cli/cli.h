/* cli.h: the umdq command: its entry point and what its subcommands share. */
#ifndef UMDQ_CLI_H
#define UMDQ_CLI_H
#include <cjson/cJSON.h>
#include <stddef.h>

#include "cli_client.h"
#include "cli_opt.h"

/* Everything a subcommand needs besides its own arguments. */
typedef struct {
    const char *home_opt;    /* --home DIR, borrowed from argv; NULL = not given */
    char *home;              /* the resolved state directory (absolute when it exists); owned */
    const cli_opt *globals;  /* options every subcommand takes (--home); borrowed */
    const char *cmd;         /* the subcommand's name, for messages; borrowed */
    int color_out;           /* colour on stdout */
    int color_err;           /* colour on stderr */
    int tty_err;             /* stderr is a terminal (progress bars) */
} cli_ctx;

/* Run the umdq command line; returns the process exit code (UMDQ_EXIT_*). */
int cli_main(int argc, char **argv);

/* "umdq CMD: message" on stderr (the word error in red on a terminal). */
void cli_error(const cli_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* As cli_error, then "Try 'umdq CMD --help'."; returns UMDQ_EXIT_USAGE. */
int cli_usage_error(const cli_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a subcommand's arguments (see cli_parse). Returns -1 when the caller goes on, else the
 * exit code to return at once (0 after --help, 2 after a usage error, already reported). */
int cli_args(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv, int *noperands);

/* Resolve ctx->home (when not yet done) and open a client; on failure reports and returns the
 * exit code, else 0 with *out owned by the caller. */
int cli_connect(cli_ctx *ctx, cli_client **out);

/* client_call with the failure reported (cli_error); returns 0 or the exit code to use. On
 * success *json as in client_call (caller owns); on failure *json is NULL. */
int cli_call(cli_ctx *ctx, cli_client *c, const char *method, const char *path, const char *body,
             size_t bodylen, cJSON **json);

/* Print v as indented JSON to stdout, followed by a newline. */
void cli_print_json(const cJSON *v);

/* A SWEEP argument as the API path segment: "s12" and "sweep:12" -> "12", a numeric id as it
 * is, a name percent-encoded. Caller frees; NULL on out of memory. */
char *cli_sweep_ref(const char *arg);
/* 1 when arg is a job id (all decimal digits), else 0. */
int cli_is_job_id(const char *arg);

/* Subcommands: each returns the exit code. argv[0] is the subcommand's name. */
int cmd_up(cli_ctx *ctx, int argc, char **argv);
int cmd_down(cli_ctx *ctx, int argc, char **argv);
int cmd_submit(cli_ctx *ctx, int argc, char **argv);
int cmd_ls(cli_ctx *ctx, int argc, char **argv);
int cmd_show(cli_ctx *ctx, int argc, char **argv);
int cmd_wait(cli_ctx *ctx, int argc, char **argv);
int cmd_logs(cli_ctx *ctx, int argc, char **argv);
int cmd_cancel(cli_ctx *ctx, int argc, char **argv);
int cmd_requeue(cli_ctx *ctx, int argc, char **argv);
int cmd_export(cli_ctx *ctx, int argc, char **argv);
int cmd_workers(cli_ctx *ctx, int argc, char **argv);
int cmd_dashboard(cli_ctx *ctx, int argc, char **argv);

/* POST /api/login: the dashboard's address with a fresh one-time login code into url. 0 or a
 * client_call code with a message in err. */
int cli_dashboard_link(cli_client *c, char *url, size_t urllen, char *err, size_t errlen);

/* The job rows of a sweep answer (GET /api/sweeps/X) as an aligned table on stdout. */
void cli_print_jobs_table(cli_ctx *ctx, const cJSON *answer);

#endif

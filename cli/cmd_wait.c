/* cmd_wait.c: the subcommands that poll the daemon: `umdq wait` (progress of a sweep) and
 * `umdq logs` (a job's log, optionally followed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_fmt.h"
#include "cli_view.h"
#include "jsonx.h"
#include "umdq.h"
#include "util.h"

#define UNREACHABLE_GRACE_S 30.0 /* how long wait/logs ride out a daemon that does not answer */

static const cli_opt END = {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0};

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

/* Columns of the terminal on stderr, 80 when unknown. */
static int term_columns(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
    return 80;
}

/* The progress line of wait (without the bar): "10/12 done, 2 running, 0 failed, 1m23s, ETA 20s" */
static void progress_text(const view_counts *k, double elapsed, char *buf, size_t n) {
    int done = k->total - k->queued - k->running;
    char el[32], eta[48] = "";
    fmt_duration(elapsed, el, sizeof el);
    if (done > 0 && done < k->total && elapsed > 0) {
        char d[32];
        fmt_duration(elapsed / done * (k->total - done), d, sizeof d);
        snprintf(eta, sizeof eta, ", ETA %s", d);
    }
    char cancelled[32] = "";
    if (k->cancelled) snprintf(cancelled, sizeof cancelled, ", %d cancelled", k->cancelled);
    snprintf(buf, n, "%d/%d done, %d running, %d failed%s, %s elapsed%s", done, k->total,
             k->running, k->failed, cancelled, el, eta);
}

/* Redraw the progress bar in place on stderr. */
static void draw_bar(const cli_ctx *ctx, const view_counts *k, double elapsed) {
    char text[256];
    progress_text(k, elapsed, text, sizeof text);
    int cols = term_columns();
    int width = cols - (int)strlen(text) - 4;
    if (width > 30) width = 30;
    int done = k->total - k->queued - k->running;
    fputs("\r\033[K", stderr);
    if (width >= 10) {
        int fill = k->total > 0 ? (int)((double)done / k->total * width) : width;
        fputc('[', stderr);
        if (ctx->color_err) fputs(k->failed ? "\033[31m" : "\033[32m", stderr);
        for (int i = 0; i < fill; i++) fputc('#', stderr);
        if (ctx->color_err) fputs("\033[0m", stderr);
        for (int i = fill; i < width; i++) fputc('.', stderr);
        fputs("] ", stderr);
    }
    fputs(text, stderr);
    fflush(stderr);
}

int cmd_wait(cli_ctx *ctx, int argc, char **argv) {
    double timeout = 0, interval = 1.0;
    int quiet = 0;
    const cli_opt opts[] = {
        {"timeout", 't', CLI_NUM, "S", "give up after S seconds (exit 1); 0 waits for ever", "0",
         &timeout, 0, 1e9},
        {"interval", 'i', CLI_NUM, "S", "seconds between polls", "1", &interval, 0.05, 3600},
        {"quiet", 'q', CLI_FLAG, NULL, "no progress output, only the exit code and the final "
         "line", NULL, &quiet, 0, 0},
        END,
    };
    const cli_command cmd = {
        "wait", "SWEEP", NULL,
        "Polls the sweep until none of its jobs is QUEUED or RUNNING. On a terminal a progress "
        "bar (done/total, running, failed, elapsed, ETA) is redrawn in place on stderr; "
        "otherwise a line is printed whenever the counts change. Exits 0 when every job "
        "succeeded, 4 when any failed, was lost or cancelled, 1 on timeout.",
        opts, 1, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;

    cli_client *c = NULL;
    cJSON *answer = NULL;
    char path[1024], err[1024], text[256];
    int exit_code = UMDQ_EXIT_RUNTIME;
    char *ref = cli_sweep_ref(argv[1]);
    if (!ref) {
        cli_error(ctx, "out of memory");
        return UMDQ_EXIT_RUNTIME;
    }
    snprintf(path, sizeof path, "/api/sweeps/%.900s?jobs=0", ref);
    free(ref);
    rc = cli_connect(ctx, &c);
    if (rc) return rc;

    int bar = ctx->tty_err && !quiet;
    double start = mono_s(), unreachable_since = -1;
    int contacted = 0;
    view_counts last;
    memset(&last, 0xff, sizeof last);
    int drawn = 0;
    for (;;) {
        cJSON_Delete(answer);
        answer = NULL;
        rc = client_call(c, "GET", path, NULL, 0, &answer, err, sizeof err);
        if (rc == UMDQ_EIO && contacted) {
            /* the daemon answered before and may be restarting: ride it out for a while */
            if (unreachable_since < 0) unreachable_since = mono_s();
            if (mono_s() - unreachable_since > UNREACHABLE_GRACE_S) {
                if (drawn) fputc('\n', stderr);
                cli_error(ctx, "%s", err);
                goto fail;
            }
        } else if (rc) {
            if (drawn) fputc('\n', stderr);
            cli_error(ctx, "%s", err);
            exit_code = client_exit_code(rc);
            goto fail;
        } else {
            unreachable_since = -1;
            contacted = 1;
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
            view_counts k;
            view_sweep_counts(s, &k);
            double elapsed = json_get_number(s, "elapsed", mono_s() - start);
            int open = k.queued + k.running;
            if (bar) {
                draw_bar(ctx, &k, elapsed);
                drawn = 1;
            } else if (!quiet && memcmp(&k, &last, sizeof k) != 0) {
                progress_text(&k, elapsed, text, sizeof text);
                fprintf(stderr, "%s: %s\n", argv[1], text);
            }
            last = k;
            if (open == 0) {
                if (drawn) fputc('\n', stderr);
                int bad = k.failed + k.cancelled;
                if (bad == 0) {
                    fprintf(stderr, "%s: all %d job%s succeeded\n", argv[1], k.total,
                            k.total == 1 ? "" : "s");
                    exit_code = UMDQ_EXIT_OK;
                } else {
                    fprintf(stderr, "%s: %d succeeded, %d failed or lost, %d cancelled (of %d)\n",
                            argv[1], k.succeeded, k.failed, k.cancelled, k.total);
                    exit_code = UMDQ_EXIT_FAILED;
                }
                goto fail;
            }
        }
        if (timeout > 0 && mono_s() - start >= timeout) {
            if (drawn) fputc('\n', stderr);
            char d[32];
            fmt_duration(timeout, d, sizeof d);
            if (unreachable_since >= 0)
                cli_error(ctx, "timed out after %s; the daemon stopped answering: %s", d, err);
            else
                cli_error(ctx, "timed out after %s; sweep %s still has %d queued and %d running "
                               "job(s)", d, argv[1], last.queued, last.running);
            exit_code = UMDQ_EXIT_RUNTIME;
            goto fail;
        }
        double pause = interval;
        if (timeout > 0 && start + timeout - mono_s() < pause) pause = start + timeout - mono_s();
        sleep_s(pause);
    }
fail:
    cJSON_Delete(answer);
    client_destroy(&c);
    return exit_code;
}

int cmd_logs(cli_ctx *ctx, int argc, char **argv) {
    int follow = 0;
    double interval = 0.5;
    int tail = -1;
    const cli_opt opts[] = {
        {"follow", 'f', CLI_FLAG, NULL, "keep printing what the job writes until it is final",
         NULL, &follow, 0, 0},
        {"tail", 'n', CLI_INT, "BYTES", "start this many bytes before the end", NULL, &tail, 0,
         1 << 30},
        {"interval", 'i', CLI_NUM, "S", "seconds between polls with --follow", "0.5", &interval,
         0.05, 60},
        END,
    };
    const cli_command cmd = {
        "logs", "JOB", NULL,
        "Prints the job's log: the combined stdout and stderr of all its attempts, each attempt "
        "starting with a line '== attempt N on WORKER =='. With -f, waits for more until the "
        "job is SUCCEEDED, FAILED, LOST, PREEMPTED or CANCELLED.",
        opts, 1, 1};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    if (!cli_is_job_id(argv[1]))
        return cli_usage_error(ctx, "'%s' is not a job number (see `umdq ls SWEEP`)", argv[1]);

    cli_client *c = NULL;
    cJSON *answer = NULL;
    char path[256], err[1024];
    int exit_code = UMDQ_EXIT_RUNTIME;
    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    long long offset = tail >= 0 ? -(long long)tail : 0;
    double unreachable_since = -1;
    int contacted = 0;
    for (;;) {
        snprintf(path, sizeof path, "/api/jobs/%.64s/log?offset=%lld", argv[1], offset);
        cJSON_Delete(answer);
        answer = NULL;
        rc = client_call(c, "GET", path, NULL, 0, &answer, err, sizeof err);
        if (rc == UMDQ_EIO && follow && contacted) {
            if (unreachable_since < 0) unreachable_since = mono_s();
            if (mono_s() - unreachable_since > UNREACHABLE_GRACE_S) {
                cli_error(ctx, "%s", err);
                goto fail;
            }
            sleep_s(interval);
            continue;
        }
        if (rc) {
            cli_error(ctx, "%s", err);
            exit_code = client_exit_code(rc);
            goto fail;
        }
        unreachable_since = -1;
        contacted = 1;
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(answer, "data");
        if (cJSON_IsString(data) && data->valuestring[0]) {
            fputs(data->valuestring, stdout);
            fflush(stdout);
            if (ferror(stdout)) goto fail; /* the reader went away */
        }
        long long next = (long long)json_get_int(answer, "next", offset);
        long long size = (long long)json_get_int(answer, "size", next);
        int moved = next != offset;
        offset = next;
        if (moved && next < size) continue; /* more is there already */
        if (!follow) break;
        if (view_state_final(json_get_string(answer, "state", NULL)) && next >= size) break;
        sleep_s(interval);
    }
    exit_code = UMDQ_EXIT_OK;
fail:
    cJSON_Delete(answer);
    client_destroy(&c);
    return exit_code;
}

/* train_main.c: `umdq train CONFIG.json`: one UMD config trained in this process, with progress on
 * stderr, Ctrl-C that checkpoints, --resume, and a summary (JSON on stdout with --json).
 *
 * Exit codes: 0 done, 1 runtime error, 2 usage or bad config, 130 interrupted (a checkpoint was
 * written and the message says how to resume). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ckpt.h"
#include "config.h"
#include "errlist.h"
#include "jsonx.h"
#include "schema.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

#define TRAIN_EXIT_INTERRUPTED 130
#define CONFIG_MAX_BYTES (16u << 20)

/* ---- options -------------------------------------------------------------------------------- */

typedef struct {
    const char *config_path;  /* borrowed from argv */
    const char *out_dir;      /* borrowed from argv; NULL = default */
    const char *steps_text;   /* borrowed from argv; NULL = the config's */
    const char *threads_text; /* borrowed from argv; NULL = the config's */
    int64_t steps;
    int threads;
    int resume, json, help, help_config;
} train_args;

typedef enum { OPT_STEPS, OPT_THREADS, OPT_OUT, OPT_RESUME, OPT_JSON, OPT_HELP_CONFIG, OPT_HELP } train_opt_id;

typedef struct {
    train_opt_id id;
    const char *name;  /* "--steps" */
    const char *arg;   /* the value's name, NULL for a flag */
    const char *help;
} train_option;

/* The one table: it parses the command line and prints --help. */
static const train_option train_options[] = {
    {OPT_STEPS, "--steps", "N", "train N steps (sets train.steps; changes the config hash)"},
    {OPT_THREADS, "--threads", "N", "CPU threads, 0 = every core (sets train.threads)"},
    {OPT_OUT, "--out", "DIR", "where checkpoints go (created; default ./umdq-train-HASH8,\n"
                              "the first 8 characters of the config hash)"},
    {OPT_RESUME, "--resume", NULL, "continue from DIR/ckpt.umd (same config and --steps/--threads)"},
    {OPT_JSON, "--json", NULL, "print the summary as JSON on stdout"},
    {OPT_HELP_CONFIG, "--help-config", NULL, "list every config key: type, range, default, meaning"},
    {OPT_HELP, "--help", NULL, "show this help"},
};
#define NOPTIONS ((int)(sizeof train_options / sizeof train_options[0]))

static void train_help(FILE *out) {
    fputs("usage: umdq train CONFIG.json [options]\n\n"
          "Train one UMD config in this process (no daemon). Progress goes to stderr; Ctrl-C\n"
          "stops after the current step and writes a checkpoint (Ctrl-C again aborts at once).\n\n"
          "Options:\n", out);
    for (int i = 0; i < NOPTIONS; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", train_options[i].name, train_options[i].arg ? " " : "",
                 train_options[i].arg ? train_options[i].arg : "");
        fprintf(out, "  %-16s ", left);
        for (const char *h = train_options[i].help; *h; h++) {
            fputc(*h, out);
            if (*h == '\n') fprintf(out, "  %-16s ", ""); /* continuation lines keep the column */
        }
        fputc('\n', out);
    }
    fputs("\nA directory that already holds ckpt.umd is only continued (--resume), never\n"
          "overwritten. The config's keys: umdq train --help-config.\n\n"
          "Exit codes: 0 done, 1 runtime error, 2 usage or bad config, 130 interrupted\n"
          "(checkpoint written; the message says how to resume).\n", out);
}

/* A decimal integer in [lo, hi] from the whole of s. */
static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    if (!s || !*s) return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* 0, or UMDQ_EINVAL with a message. */
static int parse_args(int argc, char **argv, train_args *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0) s = "--help";
        if (s[0] != '-' || strcmp(s, "-") == 0) {
            if (a->config_path) {
                snprintf(err, errlen, "one CONFIG.json only (got '%s' and '%s')", a->config_path, s);
                return UMDQ_EINVAL;
            }
            a->config_path = s;
            continue;
        }
        const train_option *o = NULL;
        const char *value = NULL;
        for (int k = 0; k < NOPTIONS && !o; k++) {
            size_t n = strlen(train_options[k].name);
            if (strncmp(s, train_options[k].name, n) == 0 && (s[n] == 0 || (s[n] == '=' && train_options[k].arg))) {
                o = &train_options[k];
                if (s[n] == '=') value = s + n + 1;
            }
        }
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see umdq train --help)", s);
            return UMDQ_EINVAL;
        }
        if (o->arg && !value) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value (%s)", o->name, o->arg);
                return UMDQ_EINVAL;
            }
            value = argv[++i];
        }
        long long v;
        switch (o->id) {
        case OPT_STEPS:
            if (parse_int(value, 1, 1000000000000ll, &v) != 0) {
                snprintf(err, errlen, "--steps: expected a whole number of steps >= 1, got '%s'", value);
                return UMDQ_EINVAL;
            }
            a->steps = v;
            a->steps_text = value;
            break;
        case OPT_THREADS:
            if (parse_int(value, 0, 1024, &v) != 0) {
                snprintf(err, errlen, "--threads: expected 0 to 1024, got '%s'", value);
                return UMDQ_EINVAL;
            }
            a->threads = (int)v;
            a->threads_text = value;
            break;
        case OPT_OUT:
            if (!value[0]) {
                snprintf(err, errlen, "--out: empty directory name");
                return UMDQ_EINVAL;
            }
            a->out_dir = value;
            break;
        case OPT_RESUME: a->resume = 1; break;
        case OPT_JSON: a->json = 1; break;
        case OPT_HELP_CONFIG: a->help_config = 1; break;
        case OPT_HELP: a->help = 1; break;
        }
    }
    if (!a->config_path && !a->help && !a->help_config) {
        snprintf(err, errlen, "missing CONFIG.json (usage: umdq train CONFIG.json [options])");
        return UMDQ_EINVAL;
    }
    return 0;
}

/* ---- --help-config ---------------------------------------------------------------------------- */

static void number_text(double v, char *buf, size_t n) {
    if (isinf(v)) snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else snprintf(buf, n, "%.10g", v);
}

/* The RANGE column of key k into buf. */
static void range_text(const schema_key *k, char *buf, size_t n) {
    char lo[32], hi[32];
    switch (k->type) {
    case SCHEMA_INT:
    case SCHEMA_NUMBER:
        number_text((k->flags & SCHEMA_NO_MIN) ? -INFINITY : k->min, lo, sizeof lo);
        number_text((k->flags & SCHEMA_NO_MAX) ? INFINITY : k->max, hi, sizeof hi);
        snprintf(buf, n, "%c%s, %s%c", (k->flags & SCHEMA_MIN_OPEN) ? '(' : '[', lo, hi,
                 (k->flags & (SCHEMA_MAX_OPEN | SCHEMA_NO_MAX)) ? ')' : ']');
        break;
    case SCHEMA_ENUM:
        snprintf(buf, n, "%s%s", k->choices ? k->choices : "",
                 (k->flags & SCHEMA_OR_BOOL) ? "|true|false" : "");
        break;
    case SCHEMA_BOOL: snprintf(buf, n, "true|false"); break;
    default: snprintf(buf, n, "-"); break;
    }
}

static const char *type_text(schema_type t) {
    static const char *const names[] = {"int", "number", "bool", "string", "enum", "object"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* The schema table (common/schema_keys.c) as columns, keys of kind command left out. */
static void help_config(FILE *out) {
    int wkey = 3, wtype = 4, wrange = 5, wdflt = 7;
    char range[160];
    for (const schema_key *k = umdq_job_schema; k->path; k++) {
        if (k->flags & SCHEMA_COMMAND_ONLY) continue;
        range_text(k, range, sizeof range);
        int l;
        if ((l = (int)strlen(k->path)) > wkey) wkey = l;
        if ((l = (int)strlen(type_text(k->type))) > wtype) wtype = l;
        if ((l = (int)strlen(range)) > wrange) wrange = l;
        if (k->dflt && (l = (int)strlen(k->dflt)) > wdflt) wdflt = l;
    }
    fprintf(out, "Keys of a umd job config (dotted paths address nested objects: \"train.steps\" is\n"
                 "{\"train\": {\"steps\": ...}}). Ranges: [ ] inclusive, ( ) exclusive.\n\n");
    fprintf(out, "%-*s  %-*s  %-*s  %-*s  %s\n", wkey, "KEY", wtype, "TYPE", wrange, "RANGE", wdflt,
            "DEFAULT", "MEANING");
    for (const schema_key *k = umdq_job_schema; k->path; k++) {
        if (k->flags & SCHEMA_COMMAND_ONLY) continue;
        range_text(k, range, sizeof range);
        fprintf(out, "%-*s  %-*s  %-*s  %-*s  %s%s\n", wkey, k->path, wtype, type_text(k->type), wrange,
                range, wdflt, k->dflt ? k->dflt : "-", k->help ? k->help : "",
                (k->flags & SCHEMA_RESERVED) ? " (reserved)" : "");
    }
}

/* ---- the config file -------------------------------------------------------------------------- */

/* Read path (at most CONFIG_MAX_BYTES) into *text (caller frees). 0, or UMDQ_EIO/EINVAL + message. */
static int read_config_file(const char *path, char **text, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 4096;
    int rc = UMDQ_EIO;
    *text = NULL;
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
        return e == ENOENT ? UMDQ_ENOTFOUND : UMDQ_EIO;
    }
    for (;;) {
        if (!buf || n + 1 >= cap) {
            if (buf) cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = UMDQ_ENOMEM;
                goto fail;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (n > CONFIG_MAX_BYTES) {
            snprintf(err, errlen, "%s: larger than %u bytes: not a config", path, CONFIG_MAX_BYTES);
            rc = UMDQ_EINVAL;
            goto fail;
        }
        if (r == 0) break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto fail;
    }
    fclose(f);
    buf[n] = 0;
    *text = buf;
    *len = n;
    return 0;
fail:
    fclose(f);
    free(buf);
    return rc;
}

/* The config as JSON, or NULL with a message giving the file, line and column of the problem. */
static cJSON *parse_config(const char *path, const char *text, size_t len, char *err, size_t errlen) {
    const char *end = NULL;
    char jerr[256];
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : len;
        int line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        if (off >= len) snprintf(err, errlen, "%s:%d:%d: invalid JSON: unexpected end of file", path, line, col);
        else {
            int n = 0; /* the excerpt stops at the end of its line */
            while (n < 12 && off + (size_t)n < len && text[off + n] != '\n' && text[off + n] != '\r') n++;
            snprintf(err, errlen, "%s:%d:%d: invalid JSON near '%.*s'", path, line, col, n, text + off);
        }
        return NULL;
    }
    cJSON_Delete(root);
    /* the shared parser adds the checks cJSON lacks: text after the value, repeated keys */
    root = json_parse_n(text, len, jerr, sizeof jerr);
    if (!root) {
        snprintf(err, errlen, "%s: %s", path, jerr);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "%s: a config is a JSON object ({...})", path);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ---- the run: events ------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    static const char msg[] = "\nstopping after this step and writing a checkpoint "
                              "(press Ctrl-C again to abort at once)\n";
    (void)sig;
    stop_requested = 1;
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

typedef struct {
    int tty;              /* stderr is a terminal: redraw one progress line */
    int line_open;        /* a progress line is on screen without its newline */
    int batch;
    double t_start;       /* mono_s() when the run started */
    int have_first;
    int64_t first_step;   /* the first progress report (for the ETA rate) */
    double first_time;
    int64_t start_step;   /* steps already done when the run started (resume) */
    int64_t last_step, total;
    double last_loss;
    int have_loss;
    cJSON *results;       /* owned: key -> number or text */
    char ckpt_path[4200];
    int64_t ckpt_step;
} train_state;

static void format_duration(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e9) {
        snprintf(buf, n, "?");
        return;
    }
    long t = lround(s);
    if (t < 60) snprintf(buf, n, "%lds", t);
    else if (t < 3600) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

static void clear_line(train_state *st) {
    if (st->tty && st->line_open) fputs("\r\033[K", stderr);
    st->line_open = 0;
}

static void ev_progress(void *ctx, int64_t step, int64_t total, double loss, double img_per_s) {
    train_state *st = ctx;
    double now = mono_s();
    double steps_per_s = 0;
    if (st->have_first && step > st->first_step && now > st->first_time)
        steps_per_s = (double)(step - st->first_step) / (now - st->first_time);
    else if (img_per_s > 0 && st->batch > 0)
        steps_per_s = img_per_s / st->batch;
    if (!st->have_first) {
        st->have_first = 1;
        st->first_step = step;
        st->first_time = now;
    }
    st->last_step = step;
    st->total = total;
    st->last_loss = loss;
    st->have_loss = 1;
    char eta[32];
    format_duration(steps_per_s > 0 ? (double)(total - step) / steps_per_s : -1, eta, sizeof eta);
    char line[200];
    snprintf(line, sizeof line, "step %lld/%lld  loss %.4g  %.0f img/s  ETA %s", (long long)step,
             (long long)total, loss, img_per_s, eta);
    if (st->tty) {
        fprintf(stderr, "\r\033[K%s", line);
        st->line_open = 1;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

static void ev_result(void *ctx, const char *key, double value, const char *text) {
    train_state *st = ctx;
    cJSON_DeleteItemFromObjectCaseSensitive(st->results, key);
    if (text) cJSON_AddStringToObject(st->results, key, text);
    else if (isfinite(value)) cJSON_AddNumberToObject(st->results, key, value);
    else cJSON_AddNullToObject(st->results, key);
}

static int ev_checkpoint(void *ctx, const char *path, int64_t step) {
    train_state *st = ctx;
    snprintf(st->ckpt_path, sizeof st->ckpt_path, "%s", path);
    st->ckpt_step = step;
    if (!st->tty) fprintf(stderr, "checkpoint at step %lld: %s\n", (long long)step, path);
    return 0;
}

static int ev_should_stop(void *ctx) {
    (void)ctx;
    return stop_requested != 0;
}

static void ev_log(void *ctx, const char *line) {
    train_state *st = ctx;
    clear_line(st);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

/* "umdq train CONFIG --out DIR [--steps N] [--threads N] --resume", shell-quoted. Caller frees. */
static char *resume_command(const train_args *a, const char *dir) {
    strbuf b;
    const char *parts[8];
    int n = 0;
    strbuf_init(&b);
    strbuf_puts(&b, "umdq train");
    parts[n++] = a->config_path;
    parts[n++] = "--out";
    parts[n++] = dir;
    if (a->steps_text) {
        parts[n++] = "--steps";
        parts[n++] = a->steps_text;
    }
    if (a->threads_text) {
        parts[n++] = "--threads";
        parts[n++] = a->threads_text;
    }
    for (int i = 0; i < n; i++) {
        /* words of safe characters go as they are, others shell-quoted */
        int safe = parts[i][0] != 0;
        for (const char *c = parts[i]; *c && safe; c++)
            safe = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                   strchr("_./=:,+@%-", *c) != NULL;
        char *q = safe ? NULL : shell_quote(parts[i]);
        strbuf_puts(&b, " ");
        strbuf_puts(&b, q ? q : parts[i]);
        free(q);
    }
    strbuf_puts(&b, " --resume");
    return strbuf_steal(&b);
}

/* ---- main ------------------------------------------------------------------------------------ */

/* Print the problems of a refused config, one key path per line. */
static void print_config_errors(const char *path, const errlist *errs) {
    int n = errlist_count(errs);
    fprintf(stderr, "umdq train: %s: %d problem%s:\n", path, n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        const char *p = errlist_path(errs, i);
        fprintf(stderr, "  %s%s%s\n", p && p[0] ? p : "", p && p[0] ? ": " : "", errlist_message(errs, i));
    }
}

int umd_train_main(int argc, char **argv) {
    train_args a;
    char err[1024], dir[4096], ckpt[4200];
    char *text = NULL;           /* owned */
    cJSON *root = NULL;          /* owned */
    errlist *errs = NULL;        /* owned */
    char *resume_cmd = NULL;     /* owned */
    umd_config cfg;
    train_state st;
    struct sigaction sa, old_int, old_term;
    int installed = 0, made_dir = 0, exit_code = UMDQ_EXIT_USAGE, rc;
    size_t len = 0;

    memset(&st, 0, sizeof st);
    if (parse_args(argc, argv, &a, err, sizeof err) != 0) {
        fprintf(stderr, "umdq train: %s\n", err);
        return UMDQ_EXIT_USAGE;
    }
    if (a.help) {
        train_help(stdout);
        return UMDQ_EXIT_OK;
    }
    if (a.help_config) {
        help_config(stdout);
        return UMDQ_EXIT_OK;
    }

    /* the config: readable, JSON, overrides applied, valid */
    if ((rc = read_config_file(a.config_path, &text, &len, err, sizeof err)) != 0) {
        fprintf(stderr, "umdq train: %s\n", err);
        exit_code = rc == UMDQ_ENOMEM ? UMDQ_EXIT_RUNTIME : UMDQ_EXIT_USAGE;
        goto fail;
    }
    root = parse_config(a.config_path, text, len, err, sizeof err);
    if (!root) {
        fprintf(stderr, "umdq train: %s\n", err);
        goto fail;
    }
    if ((a.steps_text && json_path_set(root, "train.steps", cJSON_CreateNumber((double)a.steps), err,
                                       sizeof err) != 0) ||
        (a.threads_text && json_path_set(root, "train.threads", cJSON_CreateNumber(a.threads), err,
                                         sizeof err) != 0)) {
        fprintf(stderr, "umdq train: %s: %s\n", a.config_path, err);
        goto fail;
    }
    errs = errlist_new();
    if (!errs) {
        fprintf(stderr, "umdq train: out of memory\n");
        exit_code = UMDQ_EXIT_RUNTIME;
        goto fail;
    }
    memset(&cfg, 0, sizeof cfg);
    if (umd_config_parse(root, &cfg, errs) != 0 || errlist_count(errs) > 0) {
        print_config_errors(a.config_path, errs);
        goto fail;
    }

    /* the work directory and the checkpoint in it */
    if (a.out_dir) snprintf(dir, sizeof dir, "%s", a.out_dir);
    else snprintf(dir, sizeof dir, "umdq-train-%.8s", cfg.hash);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.umd", dir);
    struct stat sb;
    int have_ckpt = stat(ckpt, &sb) == 0;
    if (a.resume) {
        umd_ckpt_header h;
        if (!have_ckpt) {
            fprintf(stderr, "umdq train: --resume: no checkpoint at %s%s\n", ckpt,
                    a.out_dir ? "" : " (give the run's --out DIR)");
            goto fail;
        }
        if ((rc = umd_ckpt_read_header(ckpt, &h, err, sizeof err)) != 0) {
            fprintf(stderr, "umdq train: --resume: %s\n", err);
            exit_code = rc == UMDQ_EIO ? UMDQ_EXIT_RUNTIME : UMDQ_EXIT_USAGE;
            goto fail;
        }
        cJSON_Delete(h.meta);
        if (strcmp(h.config_hash, cfg.hash) != 0) {
            fprintf(stderr, "umdq train: --resume: %s was written by another config (%.8s, this one is "
                    "%.8s): resume with the same config file, --steps and --threads\n", ckpt,
                    h.config_hash, cfg.hash);
            goto fail;
        }
        st.start_step = h.step;
    } else if (have_ckpt) {
        fprintf(stderr, "umdq train: %s already exists: add --resume to continue that run, or choose "
                "another --out DIR\n", ckpt);
        goto fail;
    }
    made_dir = stat(dir, &sb) != 0;
    if (mkdir_p(dir, 0755) != 0) {
        fprintf(stderr, "umdq train: cannot create %s: %s\n", dir, strerror(errno));
        exit_code = UMDQ_EXIT_RUNTIME;
        goto fail;
    }

    /* the run */
    st.tty = isatty(STDERR_FILENO);
    st.batch = cfg.batch;
    st.results = cJSON_CreateObject();
    if (!st.results) {
        fprintf(stderr, "umdq train: out of memory\n");
        exit_code = UMDQ_EXIT_RUNTIME;
        goto fail;
    }
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    ev.ctx = &st;
    ev.progress = ev_progress;
    ev.result = ev_result;
    ev.checkpoint = ev_checkpoint;
    ev.should_stop = ev_should_stop;
    ev.log = ev_log;
    ev.workdir = dir;
    ev.resume_from = a.resume ? ckpt : NULL;

    stop_requested = 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C takes the default action */
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    installed = 1;
    fprintf(stderr, "umdq train: config %.8s, %lld steps, work directory %s%s\n", cfg.hash,
            (long long)cfg.steps, dir, a.resume ? " (resuming)" : "");
    st.t_start = mono_s();
    err[0] = 0;
    rc = umd_run(root, &ev, err, sizeof err);
    double seconds = mono_s() - st.t_start;
    if (st.tty && st.line_open) fputc('\n', stderr); /* the last progress line stays visible */
    st.line_open = 0;

    if (rc != 0 && rc != UMDQ_ECANCELLED) {
        fprintf(stderr, "umdq train: %s\n", err[0] ? err : umdq_strerror(rc));
        exit_code = rc == UMDQ_EINVAL ? UMDQ_EXIT_USAGE : UMDQ_EXIT_RUNTIME;
        goto fail;
    }

    /* the summary */
    int interrupted = rc == UMDQ_ECANCELLED;
    int64_t steps = st.last_step > st.ckpt_step ? st.last_step : st.ckpt_step;
    if (steps < st.start_step) steps = st.start_step;
    const cJSON *r_loss = cJSON_GetObjectItemCaseSensitive(st.results, "final_loss");
    const cJSON *r_ips = cJSON_GetObjectItemCaseSensitive(st.results, "train_img_per_s");
    double final_loss = cJSON_IsNumber(r_loss) ? r_loss->valuedouble : st.have_loss ? st.last_loss : NAN;
    double img_per_s = cJSON_IsNumber(r_ips) ? r_ips->valuedouble
                       : seconds > 0 && steps > st.start_step ? (double)(steps - st.start_step) * cfg.batch / seconds
                                                                : NAN;
    const char *ckpt_done = st.ckpt_path[0] ? st.ckpt_path : NULL;
    if (interrupted) resume_cmd = resume_command(&a, dir);
    if (a.json) {
        cJSON *sum = cJSON_CreateObject();
        cJSON_AddStringToObject(sum, "status", interrupted ? "interrupted" : "ok");
        cJSON_AddStringToObject(sum, "config_hash", cfg.hash);
        /* progress past train.steps counts fine-tuning steps */
        cJSON_AddNumberToObject(sum, "steps", (double)(steps < cfg.steps ? steps : cfg.steps));
        cJSON_AddNumberToObject(sum, "total_steps", (double)cfg.steps);
        if (cfg.ft_steps > 0) {
            cJSON_AddNumberToObject(sum, "finetune_steps", (double)(steps > cfg.steps ? steps - cfg.steps : 0));
            cJSON_AddNumberToObject(sum, "total_finetune_steps", (double)cfg.ft_steps);
        }
        if (isfinite(final_loss)) cJSON_AddNumberToObject(sum, "final_loss", final_loss);
        else cJSON_AddNullToObject(sum, "final_loss");
        if (isfinite(img_per_s)) cJSON_AddNumberToObject(sum, "img_per_s", img_per_s);
        else cJSON_AddNullToObject(sum, "img_per_s");
        cJSON_AddNumberToObject(sum, "seconds", seconds);
        cJSON_AddItemToObject(sum, "results", st.results);
        st.results = NULL;
        if (ckpt_done) cJSON_AddStringToObject(sum, "checkpoint", ckpt_done);
        else cJSON_AddNullToObject(sum, "checkpoint");
        cJSON_AddStringToObject(sum, "workdir", dir);
        if (resume_cmd) cJSON_AddStringToObject(sum, "resume", resume_cmd);
        char *out = cJSON_PrintUnformatted(sum);
        if (out) printf("%s\n", out);
        fflush(stdout);
        free(out);
        cJSON_Delete(sum);
    } else {
        char dur[32];
        format_duration(seconds, dur, sizeof dur);
        fprintf(stderr, "%s: %lld/%lld steps", interrupted ? "interrupted" : "done",
                (long long)(steps < cfg.steps ? steps : cfg.steps), (long long)cfg.steps);
        if (cfg.ft_steps > 0)
            fprintf(stderr, " + %lld/%lld fine-tuning steps",
                    (long long)(steps > cfg.steps ? steps - cfg.steps : 0), (long long)cfg.ft_steps);
        fprintf(stderr, " in %s", dur);
        if (isfinite(img_per_s)) fprintf(stderr, ", %.0f img/s", img_per_s);
        if (isfinite(final_loss)) fprintf(stderr, ", final loss %.4g", final_loss);
        fputc('\n', stderr);
        const cJSON *r;
        cJSON_ArrayForEach(r, st.results) {
            if (cJSON_IsString(r)) fprintf(stderr, "  %-20s %s\n", r->string, r->valuestring);
            else if (cJSON_IsNumber(r)) fprintf(stderr, "  %-20s %.6g\n", r->string, r->valuedouble);
        }
        if (ckpt_done) fprintf(stderr, "checkpoint: %s\n", ckpt_done);
    }
    if (interrupted) {
        if (ckpt_done) fprintf(stderr, "resume with: %s\n", resume_cmd ? resume_cmd : "--resume");
        else fprintf(stderr, "no checkpoint was written\n");
        exit_code = TRAIN_EXIT_INTERRUPTED;
    } else {
        exit_code = UMDQ_EXIT_OK;
    }
fail:
    if (made_dir && exit_code != UMDQ_EXIT_OK && exit_code != TRAIN_EXIT_INTERRUPTED)
        rmdir(dir); /* a directory this run made and left empty goes (rmdir keeps a non-empty one) */
    if (installed) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    free(resume_cmd);
    cJSON_Delete(st.results);
    errlist_destroy(&errs);
    cJSON_Delete(root);
    free(text);
    return exit_code;
}

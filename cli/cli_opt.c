/* cli_opt.c: option-table parsing and --help generation for umdq's subcommands. */
#include "cli_opt.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "umdq.h"

#define HELP_WIDTH 80
#define HELP_COLUMN 26 /* where option descriptions start */

/* Levenshtein distance of two short strings (option names), capped at 64 characters. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    int prev[65], cur[65];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            int m = sub < del ? sub : del;
            cur[j] = m < ins ? m : ins;
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb];
}

/* The long option name closest to name in both tables (a prefix of it, or at most two edits
 * away), or NULL when none is close. */
static const char *closest_name(const char *name, const cli_opt *a, const cli_opt *b) {
    const char *best = NULL;
    int bestd = 3;
    const cli_opt *tables[3] = {a, b, NULL};
    static const cli_opt help_only[] = {{"help", 'h', CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0},
                                        {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0}};
    tables[2] = help_only;
    for (int t = 0; t < 3; t++) {
        for (const cli_opt *o = tables[t]; o && o->name; o++) {
            int d = edit_distance(name, o->name);
            if (*name && strncmp(o->name, name, strlen(name)) == 0 && d > 1) d = 1;
            if (d < bestd) {
                bestd = d;
                best = o->name;
            }
        }
    }
    return best;
}

static const cli_opt *find_long(const cli_opt *t, const char *name, size_t len) {
    for (const cli_opt *o = t; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

static const cli_opt *find_short(const cli_opt *t, char c) {
    for (const cli_opt *o = t; o && o->name; o++)
        if (o->short_name && o->short_name == c) return o;
    return NULL;
}

/* How an option is named in messages: "--port" or "-p". */
static void opt_label(const cli_opt *o, int as_short, char *buf, size_t n) {
    if (as_short) snprintf(buf, n, "-%c", o->short_name);
    else snprintf(buf, n, "--%s", o->name);
}

/* Store text as the value of o. */
static int opt_store(const cli_opt *o, const char *label, const char *text, char *err,
                     size_t errlen) {
    char *end = NULL;
    int bounded = !(o->min == 0 && o->max == 0);
    switch (o->kind) {
    case CLI_FLAG:
        *(int *)o->value = 1;
        return 0;
    case CLI_STR:
        *(const char **)o->value = text;
        return 0;
    case CLI_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end || v < -2147483647LL || v > 2147483647LL) {
            snprintf(err, errlen, "%s needs an integer, got '%s'", label, text);
            return UMDQ_EINVAL;
        }
        if (bounded && (v < o->min || v > o->max)) {
            snprintf(err, errlen, "%s must be in [%.0f, %.0f], got %lld", label, o->min, o->max, v);
            return UMDQ_EINVAL;
        }
        *(int *)o->value = (int)v;
        return 0;
    }
    case CLI_NUM: {
        errno = 0;
        double v = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(v)) {
            snprintf(err, errlen, "%s needs a number, got '%s'", label, text);
            return UMDQ_EINVAL;
        }
        if (bounded && (v < o->min || v > o->max)) {
            snprintf(err, errlen, "%s must be in [%g, %g], got %s", label, o->min, o->max, text);
            return UMDQ_EINVAL;
        }
        *(double *)o->value = v;
        return 0;
    }
    }
    snprintf(err, errlen, "%s: bad option table entry", label);
    return UMDQ_EINVAL;
}

int cli_parse(const cli_command *cmd, const cli_opt *globals, int argc, char **argv,
              int *noperands, char *err, size_t errlen) {
    int nout = 0;
    int only_operands = 0;
    *noperands = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_operands || a[0] != '-' || a[1] == 0) {
            argv[1 + nout++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_operands = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_help(cmd, globals, stdout);
            return 1;
        }
        if (a[1] == '-') { /* --name[=value] */
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const cli_opt *o = find_long(cmd->opts, name, len);
            if (!o) o = find_long(globals, name, len);
            if (!o) {
                char nm[128];
                snprintf(nm, sizeof nm, "%.*s", (int)(len < 100 ? len : 100), name);
                const char *near = closest_name(nm, cmd->opts, globals);
                if (near)
                    snprintf(err, errlen, "unknown option '--%s' (did you mean '--%s'?)", nm, near);
                else
                    snprintf(err, errlen, "unknown option '--%s'", nm);
                return UMDQ_EINVAL;
            }
            char label[128];
            opt_label(o, 0, label, sizeof label);
            if (o->kind == CLI_FLAG) {
                if (eq) {
                    snprintf(err, errlen, "%s takes no value", label);
                    return UMDQ_EINVAL;
                }
                *(int *)o->value = 1;
                continue;
            }
            const char *val = eq ? eq + 1 : NULL;
            if (!val) {
                if (i + 1 >= argc) {
                    snprintf(err, errlen, "%s needs a value (%s)", label, o->arg ? o->arg : "");
                    return UMDQ_EINVAL;
                }
                val = argv[++i];
            }
            int rc = opt_store(o, label, val, err, errlen);
            if (rc) return rc;
            continue;
        }
        /* -abc: a cluster of short flags; the first one that takes a value eats the rest */
        for (const char *p = a + 1; *p; p++) {
            const cli_opt *o = find_short(cmd->opts, *p);
            if (!o) o = find_short(globals, *p);
            if (!o) {
                snprintf(err, errlen, "unknown option '-%c'", *p);
                return UMDQ_EINVAL;
            }
            char label[16];
            opt_label(o, 1, label, sizeof label);
            if (o->kind == CLI_FLAG) {
                *(int *)o->value = 1;
                continue;
            }
            const char *val = p[1] ? p + 1 : NULL;
            if (!val) {
                if (i + 1 >= argc) {
                    snprintf(err, errlen, "%s needs a value (%s)", label, o->arg ? o->arg : "");
                    return UMDQ_EINVAL;
                }
                val = argv[++i];
            }
            int rc = opt_store(o, label, val, err, errlen);
            if (rc) return rc;
            break;
        }
    }
    if (nout < cmd->min_operands) {
        snprintf(err, errlen, "missing %s", cmd->operands && *cmd->operands ? cmd->operands
                                                                            : "operand");
        return UMDQ_EINVAL;
    }
    if (cmd->max_operands >= 0 && nout > cmd->max_operands) {
        snprintf(err, errlen, "unexpected argument '%s'", argv[1 + cmd->max_operands]);
        return UMDQ_EINVAL;
    }
    *noperands = nout;
    return 0;
}

void cli_wrap(FILE *out, const char *text, int indent, int first_indent, int width) {
    /* col counts the characters already on the current line; the indent of a fresh line is
     * written lazily, so blank lines carry no trailing spaces */
    int col = first_indent ? 0 : indent;
    int pending_indent = first_indent;
    int line_start = 1;
    const char *p = text;
    while (*p) {
        if (*p == '\n') {
            fputc('\n', out);
            col = 0;
            pending_indent = 1;
            line_start = 1;
            p++;
            continue;
        }
        if (*p == ' ') {
            p++;
            continue;
        }
        size_t w = strcspn(p, " \n");
        if (!line_start && col + 1 + (int)w > width) {
            fputc('\n', out);
            col = 0;
            pending_indent = 1;
            line_start = 1;
        }
        if (pending_indent) {
            fprintf(out, "%*s", indent, "");
            col = indent;
            pending_indent = 0;
        }
        if (!line_start) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, w, out);
        col += (int)w;
        line_start = 0;
        p += w;
    }
    fputc('\n', out);
}

/* One "  -p, --port P" line plus its wrapped help. */
static void help_option(FILE *out, const cli_opt *o) {
    char head[96];
    int n;
    if (o->short_name)
        n = snprintf(head, sizeof head, "  -%c, --%s", o->short_name, o->name);
    else
        n = snprintf(head, sizeof head, "      --%s", o->name);
    if (o->arg && n > 0 && (size_t)n < sizeof head)
        snprintf(head + n, sizeof head - (size_t)n, " %s", o->arg);
    char text[1024];
    if (o->dflt)
        snprintf(text, sizeof text, "%s (default %s)", o->help ? o->help : "", o->dflt);
    else
        snprintf(text, sizeof text, "%s", o->help ? o->help : "");
    int len = (int)strlen(head);
    fputs(head, out);
    if (len + 2 > HELP_COLUMN) {
        fputc('\n', out);
        cli_wrap(out, text, HELP_COLUMN, 1, HELP_WIDTH);
    } else {
        fprintf(out, "%*s", HELP_COLUMN - len, "");
        cli_wrap(out, text, HELP_COLUMN, 0, HELP_WIDTH);
    }
}

void cli_help(const cli_command *cmd, const cli_opt *globals, FILE *out) {
    int has_opts = cmd->opts && cmd->opts[0].name;
    fprintf(out, "Usage: umdq %s%s%s%s\n", cmd->name, has_opts ? " [options]" : "",
            cmd->operands && *cmd->operands ? " " : "", cmd->operands ? cmd->operands : "");
    if (cmd->summary && *cmd->summary) {
        /* the summary reads as a sentence here: capital first letter */
        char first[512];
        snprintf(first, sizeof first, "%s", cmd->summary);
        if (first[0] >= 'a' && first[0] <= 'z') first[0] = (char)(first[0] - 'a' + 'A');
        size_t fl = strlen(first);
        if (fl > 0 && fl + 1 < sizeof first && first[fl - 1] != '.') strcat(first, ".");
        fputc('\n', out);
        cli_wrap(out, first, 0, 0, HELP_WIDTH);
    }
    if (cmd->description) {
        fputc('\n', out);
        cli_wrap(out, cmd->description, 0, 0, HELP_WIDTH);
    }
    if (has_opts) {
        fputs("\nOptions:\n", out);
        for (const cli_opt *o = cmd->opts; o->name; o++) help_option(out, o);
    }
    fputs("\nGlobal options:\n", out);
    for (const cli_opt *o = globals; o && o->name; o++) help_option(out, o);
    static const cli_opt help_entry = {"help", 'h', CLI_FLAG, NULL, "show this help and exit",
                                       NULL, NULL, 0, 0};
    help_option(out, &help_entry);
    fputs("\nExit codes: 0 ok, 1 runtime error (daemon unreachable, timeout), 2 usage,\n"
          "3 not found, 4 some jobs failed.\n",
          out);
}

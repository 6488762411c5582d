/* cli_opt.h: the option table of a umdq subcommand, its parser and the --help it generates.
 *
 * Each subcommand declares one table of cli_opt entries; the same table parses the command line
 * and prints the subcommand's --help, so the two never disagree. Parsing is GNU-like: options and
 * operands may be mixed, "--name=value" and "--name value" both work, "-x" short flags may carry
 * their value ("-n5" or "-n 5"), "--" ends the options and "-" alone is an operand (stdin). */
#ifndef UMDQ_CLI_OPT_H
#define UMDQ_CLI_OPT_H
#include <stddef.h>
#include <stdio.h>

typedef enum {
    CLI_FLAG,   /* no value; *(int *)value = 1 */
    CLI_STR,    /* *(const char **)value = the argument (borrowed from argv) */
    CLI_INT,    /* *(int *)value = the argument as a decimal integer in [min, max] */
    CLI_NUM     /* *(double *)value = the argument as a finite number in [min, max] */
} cli_opt_kind;

typedef struct {
    const char *name;      /* long name without "--"; NULL ends a table */
    char short_name;       /* 'f' for -f, 0 = none */
    cli_opt_kind kind;
    const char *arg;       /* the value's name in --help ("P", "FILE"); NULL for flags */
    const char *help;      /* what it does (wrapped by cli_help) */
    const char *dflt;      /* the default shown in --help, or NULL */
    void *value;           /* borrowed: where the parsed value goes (see cli_opt_kind) */
    double min, max;       /* CLI_INT / CLI_NUM bounds, inclusive; both 0 = unbounded */
} cli_opt;

typedef struct {
    const char *name;        /* "submit" */
    const char *operands;    /* synopsis of the operands: "FILE", "[SWEEP]", "" */
    const char *summary;     /* one line for `umdq help` */
    const char *description; /* paragraphs for --help ("\n\n" separates them), or NULL */
    const cli_opt *opts;     /* the command's own table, or NULL */
    int min_operands, max_operands; /* max -1 = no limit */
} cli_command;

/* Parse argv[1..argc-1] (argv[0] is the command name) against cmd->opts, then against globals
 * (options every command accepts, such as --home; may be NULL). The operands are moved, in order,
 * to argv[1..*noperands]; the strings stay borrowed from argv.
 * Returns 0, 1 when -h/--help was given (help has been printed to stdout), or UMDQ_EINVAL with a
 * message in err naming the bad option and, for a misspelt one, the closest existing name. */
int cli_parse(const cli_command *cmd, const cli_opt *globals, int argc, char **argv,
              int *noperands, char *err, size_t errlen);

/* Print the --help of cmd to out: usage line, description, options, global options, exit codes. */
void cli_help(const cli_command *cmd, const cli_opt *globals, FILE *out);

/* Write text to out wrapped at width columns; continuation lines (and the first, when first_indent
 * is nonzero) start with indent spaces. "\n" in text starts a new line at the indent. */
void cli_wrap(FILE *out, const char *text, int indent, int first_indent, int width);

#endif

/* schema.h: the one table of job config keys. Sweep validation (sweep.c), the trainer's config
 * parser (trainer/config.c) and `umdq train --help-config` all read it, so a key is declared once
 * with its type, range, default and meaning.
 *
 * A job config is a JSON object of nested objects; its leaves are addressed by dotted paths
 * ("umd.mask_ratio"). Every leaf must be a key of this table (kind "command" jobs may also carry
 * anything under "params."). */
#ifndef UMDQ_SCHEMA_H
#define UMDQ_SCHEMA_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include "errlist.h"

typedef enum {
    SCHEMA_INT,     /* a JSON number with an integral value */
    SCHEMA_NUMBER,  /* any finite JSON number */
    SCHEMA_BOOL,
    SCHEMA_STRING,
    SCHEMA_ENUM,    /* a string, one of choices ("a|b|c") */
    SCHEMA_FREE     /* an object whose contents are not checked ("params") */
} schema_type;

enum {
    SCHEMA_MIN_OPEN = 1 << 0,     /* value > min instead of >= */
    SCHEMA_MAX_OPEN = 1 << 1,     /* value < max instead of <= */
    SCHEMA_NO_MIN = 1 << 2,
    SCHEMA_NO_MAX = 1 << 3,
    SCHEMA_UMD_ONLY = 1 << 4,     /* read by the trainer (kind "command" may carry them for its template) */
    SCHEMA_COMMAND_ONLY = 1 << 5, /* only for kind "command" */
    SCHEMA_NOT_IN_SWEEP = 1 << 6, /* set by the system in a sweep (e.g. "seed": use "seeds") */
    SCHEMA_RESERVED = 1 << 7,     /* named so the error can say it is not available yet */
    SCHEMA_OR_BOOL = 1 << 8       /* SCHEMA_ENUM: true and false are values too */
};

typedef struct {
    const char *path;     /* dotted key, e.g. "umd.mask_ratio" */
    schema_type type;
    double min, max;      /* inclusive unless the flags say open; ignored for non-numbers */
    unsigned flags;
    const char *choices;  /* SCHEMA_ENUM: "cosine|linear" */
    const char *dflt;     /* default as JSON text ("0.375", "\"cosine\""), NULL = none/computed */
    const char *help;     /* one line for --help-config */
} schema_key;

/* The table; ends with an entry whose path is NULL. */
extern const schema_key umdq_job_schema[];

/* The entry for a dotted path, or NULL. */
const schema_key *schema_find(const char *path);

/* Check one job config: every leaf known, of its type, in range, allowed for the config's
 * "kind" (default "umd"); "command" present for kind command and its {fields} resolvable.
 * in_sweep != 0 also refuses SCHEMA_NOT_IN_SWEEP keys. Adds one errlist entry per bad path
 * (path = the dotted key) and returns how many it added. */
int schema_validate_job(const cJSON *config, int in_sweep, errlist *errs);

/* The default of a key as a new cJSON value (caller owns), or NULL when it has none. */
cJSON *schema_default(const schema_key *k);

/* 0 when the dotted path names a key, an object of keys ("model") or a place under a free-form
 * key ("params.lr"); else UMDQ_EINVAL with "unknown key" (and the closest known key, when one is
 * near) or the reason in msg. */
int schema_check_path(const char *path, char *msg, size_t n);

/* Check value v placed at dotted path (NULL or "" = v is the whole config) as schema_validate_job
 * does for one part of a config: kind is "umd", "command" or NULL when not known (kind rules are
 * then skipped). cJSON_Raw items are placeholders and are skipped. No cross-key checks. Adds one
 * entry per bad path (the config path) and returns how many it added. */
int schema_validate_at(const char *path, const cJSON *v, const char *kind, int in_sweep, errlist *errs);

/* The cross-key checks on their own, so a sweep can run them per job without walking the config:
 * values[i] is the config's value at schema_cross_paths[i] (borrowed; NULL when absent). Values
 * that are invalid on their own are skipped (their own check reports them); absent ones take their
 * default. Adds one entry per problem, with the config path, and returns how many it added.
 * The template fields of a command are not checked here. */
#define SCHEMA_CROSS_N 10
extern const char *const schema_cross_paths[SCHEMA_CROSS_N + 1]; /* NULL-terminated */
int schema_check_cross(const cJSON *const values[SCHEMA_CROSS_N], errlist *errs);

#endif

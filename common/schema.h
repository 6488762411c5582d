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
    SCHEMA_UMD_ONLY = 1 << 4,     /* only for kind "umd" */
    SCHEMA_COMMAND_ONLY = 1 << 5, /* only for kind "command" */
    SCHEMA_NOT_IN_SWEEP = 1 << 6, /* set by the system in a sweep (e.g. "seed": use "seeds") */
    SCHEMA_RESERVED = 1 << 7      /* named so the error can say it is not available yet */
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

#endif

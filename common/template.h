/* template.h: the command line of a kind "command" job.
 *
 * "python3 train.py --mask {umd.mask_ratio} --seed {seed}" -> each {dotted.key} is replaced by
 * the config's value at that key, shell-quoted (strings by their text, numbers in canonical form,
 * booleans as true/false, objects/arrays as canonical JSON). Built-in fields: {seed}, {job},
 * {attempt}, {sweep}. A field is "{" + a name (a letter or '_', then letters, digits, '_', '.',
 * '-') + "}" not preceded by '$'; every other brace is literal, so JSON, awk and ${VAR} in a
 * command need no escaping. "{{" and "}}" stand for one literal brace (to write "{x}" itself). */
#ifndef UMDQ_TEMPLATE_H
#define UMDQ_TEMPLATE_H
#include <cjson/cJSON.h>
#include <stdint.h>
#include "errlist.h"

typedef struct {
    int64_t seed, job, attempt, sweep;
} template_builtins;

/* Render tmpl. *out is owned by the caller. On failure (a field not in the config) returns
 * UMDQ_EINVAL and adds one errlist entry per problem with path "command". b may be NULL to only
 * check the fields (submit time): built-ins then render as placeholders. */
int template_render(const char *tmpl, const cJSON *config, const template_builtins *b,
                    char **out, errlist *errs);

#endif

/* cli_fmt.h: how umdq shows values: durations, numbers, times, JSON cells, CSV fields, colour. */
#ifndef UMDQ_CLI_FMT_H
#define UMDQ_CLI_FMT_H
#include <cjson/cJSON.h>
#include <stddef.h>

#include "util.h"

/* A duration in whole seconds, rounded down: "0s", "45s", "1m23s", "2h05m", "3d04h". A negative
 * or non-finite value gives "-". buf should hold 24 bytes. */
void fmt_duration(double seconds, char *buf, size_t n);

/* A number for a table cell: integral values as integers ("3000", "-2"), others with three
 * significant digits without an exponent where that reads well ("0.812", "12.3", "0.0003"),
 * one decimal from 100 up ("1234.5"), and an exponent outside [1e-4, 1e9) ("1.5e-05").
 * buf should hold 32 bytes. */
void fmt_number(double v, char *buf, size_t n);

/* A wall-clock time (seconds since the epoch) as local "2026-11-26 03:57"; 0, negative or
 * non-finite gives "-". buf should hold 32 bytes. */
void fmt_time(double t, char *buf, size_t n);

/* A JSON value as a table cell: strings as their text, numbers by fmt_number, booleans
 * true/false, null or NULL "-", arrays and objects as compact JSON (truncated to n). */
void fmt_json_cell(const cJSON *v, char *buf, size_t n);

/* A JSON value as an exported field: like fmt_json_cell but numbers keep full precision
 * (canonical JSON form) and null or NULL gives "". Caller frees; NULL on out of memory. */
char *fmt_json_export(const cJSON *v);

/* Append v to b as indented JSON (two spaces a level, "key": value, numbers in their shortest
 * exact form, empty arrays and objects as [] and {}); nested lines start with indent spaces. */
void fmt_json_pretty(strbuf *b, const cJSON *v, int indent);

/* Append s to b as one CSV field (RFC 4180): quoted when it holds a comma, a double quote, CR,
 * LF or leading/trailing spaces; a double quote inside is doubled. */
void csv_append_field(strbuf *b, const char *s);

/* Whether output on fd may be coloured: fd is a terminal, NO_COLOR is unset or empty and TERM
 * is not "dumb". */
int fmt_use_color(int fd);

/* The SGR colour code for a job or sweep state ("32" for SUCCEEDED, ...), or NULL for none. */
const char *fmt_state_color(const char *state);

/* Columns the UTF-8 text s takes on a terminal (code points; no wide-character tables). */
size_t fmt_text_width(const char *s);

#endif

/* cli_fmt.c: formatting of durations, numbers, times, JSON cells and CSV fields for umdq. */
#include "cli_fmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jsonx.h"

void fmt_duration(double seconds, char *buf, size_t n) {
    if (!isfinite(seconds) || seconds < 0) {
        snprintf(buf, n, "-");
        return;
    }
    if (seconds > 1e12) seconds = 1e12;
    long long s = (long long)floor(seconds);
    if (s < 60)
        snprintf(buf, n, "%llds", s);
    else if (s < 3600)
        snprintf(buf, n, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, n, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
    else
        snprintf(buf, n, "%lldd%02lldh", s / 86400, (s % 86400) / 3600);
}

/* Remove trailing zeros of a decimal fraction: "0.500" -> "0.5", "12.0" -> "12". */
static void trim_zeros(char *s) {
    if (!strchr(s, '.') || strchr(s, 'e')) return;
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '0') s[--len] = 0;
    if (len > 0 && s[len - 1] == '.') s[--len] = 0;
}

void fmt_number(double v, char *buf, size_t n) {
    if (!isfinite(v)) {
        snprintf(buf, n, "%s", isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
        return;
    }
    double a = fabs(v);
    if (v == floor(v) && a < 1e15) {
        snprintf(buf, n, "%lld", (long long)v);
        return;
    }
    if (a >= 1e9 || a < 1e-4) {
        snprintf(buf, n, "%.3g", v);
        return;
    }
    if (a >= 100) {
        snprintf(buf, n, "%.1f", v);
    } else {
        /* three significant digits as a plain decimal */
        int digits = 2 - (int)floor(log10(a));
        if (digits < 0) digits = 0;
        if (digits > 8) digits = 8;
        snprintf(buf, n, "%.*f", digits, v);
    }
    trim_zeros(buf);
    if (strcmp(buf, "-0") == 0) snprintf(buf, n, "0");
}

void fmt_time(double t, char *buf, size_t n) {
    if (!isfinite(t) || t <= 0) {
        snprintf(buf, n, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm) || strftime(buf, n, "%Y-%m-%d %H:%M", &tm) == 0)
        snprintf(buf, n, "-");
}

void fmt_json_cell(const cJSON *v, char *buf, size_t n) {
    if (n == 0) return;
    if (!v || cJSON_IsNull(v)) {
        snprintf(buf, n, "-");
    } else if (cJSON_IsString(v)) {
        snprintf(buf, n, "%s", v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        fmt_number(v->valuedouble, buf, n);
    } else if (cJSON_IsBool(v)) {
        snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(buf, n, "%s", s ? s : "?");
        free(s);
    }
}

char *fmt_json_export(const cJSON *v) {
    if (!v || cJSON_IsNull(v)) return strdup("");
    if (cJSON_IsString(v)) return strdup(v->valuestring);
    if (cJSON_IsBool(v)) return strdup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNumber(v)) {
        char buf[64];
        if (json_canonical_number(v->valuedouble, buf, sizeof buf) != 0)
            snprintf(buf, sizeof buf, "%.17g", v->valuedouble);
        return strdup(buf);
    }
    return cJSON_PrintUnformatted(v);
}

/* A scalar as compact JSON text. */
static void json_scalar(strbuf *b, const cJSON *v) {
    if (cJSON_IsNumber(v)) {
        char buf[64];
        if (json_canonical_number(v->valuedouble, buf, sizeof buf) != 0)
            snprintf(buf, sizeof buf, "null"); /* NaN and infinities are not JSON */
        strbuf_puts(b, buf);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (s) strbuf_puts(b, s);
    else b->oom = 1;
    free(s);
}

static void json_key(strbuf *b, const char *key) {
    cJSON *k = cJSON_CreateString(key);
    if (!k) {
        b->oom = 1;
        return;
    }
    json_scalar(b, k);
    cJSON_Delete(k);
}

void fmt_json_pretty(strbuf *b, const cJSON *v, int indent) {
    if (!v) {
        strbuf_puts(b, "null");
        return;
    }
    int is_object = cJSON_IsObject(v);
    if (!is_object && !cJSON_IsArray(v)) {
        json_scalar(b, v);
        return;
    }
    if (!v->child) {
        strbuf_puts(b, is_object ? "{}" : "[]");
        return;
    }
    strbuf_puts(b, is_object ? "{\n" : "[\n");
    for (const cJSON *c = v->child; c; c = c->next) {
        strbuf_printf(b, "%*s", indent + 2, "");
        if (is_object) {
            json_key(b, c->string ? c->string : "");
            strbuf_puts(b, ": ");
        }
        fmt_json_pretty(b, c, indent + 2);
        strbuf_puts(b, c->next ? ",\n" : "\n");
    }
    strbuf_printf(b, "%*s%s", indent, "", is_object ? "}" : "]");
}

void csv_append_field(strbuf *b, const char *s) {
    if (!s) s = "";
    size_t len = strlen(s);
    int quote = strpbrk(s, ",\"\r\n") != NULL ||
                (len > 0 && (s[0] == ' ' || s[0] == '\t' || s[len - 1] == ' ' || s[len - 1] == '\t'));
    if (!quote) {
        strbuf_append(b, s, len);
        return;
    }
    strbuf_append(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"') strbuf_append(b, "\"\"", 2);
        else strbuf_append(b, p, 1);
    }
    strbuf_append(b, "\"", 1);
}

int fmt_use_color(int fd) {
    const char *nc = getenv("NO_COLOR");
    if (nc && *nc) return 0;
    const char *term = getenv("TERM");
    if (term && strcmp(term, "dumb") == 0) return 0;
    return isatty(fd);
}

const char *fmt_state_color(const char *state) {
    if (!state) return NULL;
    if (strcmp(state, "SUCCEEDED") == 0 || strcmp(state, "DONE") == 0 ||
        strcmp(state, "IDLE") == 0)
        return "32";
    if (strcmp(state, "FAILED") == 0 || strcmp(state, "LOST") == 0 ||
        strcmp(state, "DEAD") == 0)
        return "31";
    if (strcmp(state, "RUNNING") == 0 || strcmp(state, "BUSY") == 0) return "36";
    if (strcmp(state, "CANCELLED") == 0 || strcmp(state, "PREEMPTED") == 0) return "33";
    return NULL;
}

size_t fmt_text_width(const char *s) {
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80) w++;
    return w;
}

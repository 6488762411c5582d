/* t.h: the unit-test harness. A test file defines static void test functions and a main that
 * calls T_RUN(fn) for each, then returns t_done(). Each test prints one line the runner counts:
 *   PASS name | FAIL name: file:line: what | SKIP name: why
 * T_REQUIRE stops the current test on failure; T_CHECK records it and goes on. */
#ifndef UMDQ_T_H
#define UMDQ_T_H
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int t_failed_now, t_skipped_now, t_npass, t_nfail, t_nskip;
static char t_first[512];
static jmp_buf t_jmp;
static const char *t_name;

static void t_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), unused));
static void t_fail_at(const char *file, int line, const char *fmt, ...) {
    if (!t_failed_now) {
        int n = snprintf(t_first, sizeof t_first, "%s:%d: ", file, line);
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < sizeof t_first)
            vsnprintf(t_first + n, sizeof t_first - (size_t)n, fmt, ap);
        va_end(ap);
    }
    t_failed_now = 1;
}

#define T_CHECK(c) do { if (!(c)) t_fail_at(__FILE__, __LINE__, "%s", #c); } while (0)
#define T_REQUIRE(c) do { if (!(c)) { t_fail_at(__FILE__, __LINE__, "%s", #c); longjmp(t_jmp, 1); } } while (0)
#define T_CHECK_MSG(c, ...) do { if (!(c)) t_fail_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define T_EQ_INT(a, b) do { long long t_a = (long long)(a), t_b = (long long)(b); \
    if (t_a != t_b) t_fail_at(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, t_a, t_b); } while (0)
#define T_EQ_STR(a, b) do { const char *t_a = (a), *t_b = (b); \
    if (!t_a || !t_b || strcmp(t_a, t_b) != 0) t_fail_at(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", \
        #a, #b, t_a ? t_a : "(null)", t_b ? t_b : "(null)"); } while (0)
#define T_CONTAINS(hay, needle) do { const char *t_h = (hay), *t_n = (needle); \
    if (!t_h || !strstr(t_h, t_n)) t_fail_at(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", \
        t_h ? t_h : "(null)", t_n); } while (0)
/* |a - b| <= atol + rtol * |b| */
#define T_NEAR(a, b, atol, rtol) do { double t_a = (double)(a), t_b = (double)(b); \
    if (!(fabs(t_a - t_b) <= (atol) + (rtol) * fabs(t_b))) t_fail_at(__FILE__, __LINE__, \
        "%s ~ %s: %.9g vs %.9g", #a, #b, t_a, t_b); } while (0)
#define T_SKIP(...) do { t_skipped_now = 1; snprintf(t_first, sizeof t_first, __VA_ARGS__); \
    longjmp(t_jmp, 1); } while (0)

/* T_ONLY=a,b,...: only the tests whose names contain one of these run (a name ending in "$": that
 * end with it); T_EXCEPT=a,b,...: those do not. The others report SKIP (so a filtered run never passes for a whole one). For running a
 * few tests under a slow tool (scripts/gpu-check.sh --memcheck), and tests that have not yet run
 * on a device in a process of their own (gpu-check: a fault of theirs would end every test after
 * it in the same process). */
static int t_in_list(const char *name, const char *list) {
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char part[128];
        if (n > 0 && n < sizeof part) {
            memcpy(part, p, n);
            part[n] = 0;
            /* "part$": the name ends with part */
            size_t k = strlen(name);
            if (part[n - 1] == '$' ? (part[n - 1] = 0, k >= n - 1 && !strcmp(name + k - (n - 1), part))
                                   : strstr(name, part) != NULL)
                return 1;
        }
        p += n + (end ? 1 : 0);
    }
    return 0;
}
static const char *t_filtered(const char *name) {
    const char *only = getenv("T_ONLY"), *except = getenv("T_EXCEPT");
    if (only && *only && !t_in_list(name, only)) return "not in T_ONLY";
    if (except && *except && t_in_list(name, except)) return "in T_EXCEPT";
    return NULL;
}

static void t_run(const char *name, void (*fn)(void)) __attribute__((unused));
static void t_run(const char *name, void (*fn)(void)) {
    t_failed_now = t_skipped_now = 0;
    t_first[0] = 0;
    t_name = name;
    const char *filtered = t_filtered(name);
    if (filtered) {
        printf("SKIP %s: %s\n", name, filtered);
        t_nskip++;
        fflush(stdout);
        return;
    }
    if (setjmp(t_jmp) == 0) fn();
    if (t_skipped_now && !t_failed_now) {
        printf("SKIP %s: %s\n", name, t_first);
        t_nskip++;
    } else if (t_failed_now) {
        printf("FAIL %s: %s\n", name, t_first);
        t_nfail++;
    } else {
        printf("PASS %s\n", name);
        t_npass++;
    }
    fflush(stdout);
}
#define T_RUN(fn) t_run(#fn, fn)

static int t_done(void) __attribute__((unused));
static int t_done(void) { return t_nfail ? 1 : 0; }

/* rm -r dir (files, links and directories below it; links are not followed) */
static void t_remove_tree(const char *dir) __attribute__((unused));
static void t_remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[600];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) t_remove_tree(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* A whole file in malloc'ed memory (one byte more, unset), its size in *n; NULL when unreadable. */
static void *t_slurp(const char *path, size_t *n) __attribute__((unused));
static void *t_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = len >= 0 ? (char *)malloc((size_t)len + 1) : NULL;
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = len >= 0 ? (size_t)len : 0;
    return b;
}

#endif

/* artifacts.c: PUT and GET of one artifact file against the daemon's HTTP API (libcurl). */
#include "artifacts.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jsonx.h"
#include "umdq.h"
#include "util.h"

#define ANSWER_MAX 4096   /* bytes of a non-200 answer kept for the error message */

int artifact_name_ok(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 128 || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* One transfer's sink: the body of a 200 goes to file, any other answer to answer[]. */
typedef struct {
    CURL *h;
    FILE *file;          /* borrowed; NULL for a PUT */
    char answer[ANSWER_MAX];
    size_t answer_len;
    int write_failed;    /* errno of a failed write to file */
    int64_t bytes;
} sink;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    sink *k = ud;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200 && k->file) {
        if (fwrite(data, 1, n, k->file) != n) {
            k->write_failed = errno ? errno : EIO;
            return 0; /* aborts the transfer */
        }
        k->bytes += (int64_t)n;
        return n;
    }
    size_t room = sizeof k->answer - 1 - k->answer_len;
    size_t take = n < room ? n : room;
    memcpy(k->answer + k->answer_len, data, take);
    k->answer_len += take;
    k->answer[k->answer_len] = 0;
    return n;
}

/* The daemon's "error" text of a non-2xx answer, else its first bytes. */
static void answer_reason(const sink *k, char *out, size_t n) {
    cJSON *o = cJSON_Parse(k->answer);
    const char *e = o ? json_get_string(o, "error", NULL) : NULL;
    if (e) snprintf(out, n, "%s", e);
    else snprintf(out, n, "%.200s", k->answer_len ? k->answer : "(no body)");
    cJSON_Delete(o);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* One HTTP exchange. For a PUT, upload is the open file and upload_size its size; for a GET, k->file
 * receives a 200's body. Returns the CURLcode; *status the HTTP status (0 when there was none). */
static CURLcode exchange(const artifact_store *s, const char *method, const char *name, FILE *upload,
                         int64_t upload_size, sink *k, long *status, char *curl_err) {
    CURLcode cc = CURLE_OUT_OF_MEMORY;
    struct curl_slist *headers = NULL;
    strbuf url, auth;
    strbuf_init(&url);
    strbuf_init(&auth);
    *status = 0;
    curl_err[0] = 0;
    CURL *h = curl_easy_init();
    if (!h) goto done;
    k->h = h;
    size_t ulen = strlen(s->url);
    while (ulen > 0 && s->url[ulen - 1] == '/') ulen--;
    strbuf_printf(&url, "%.*s/api/artifacts/%lld/%s", (int)ulen, s->url, (long long)s->job, name);
    strbuf_printf(&auth, "Authorization: Bearer %s", s->token ? s->token : "");
    if (url.oom || auth.oom) goto done;
    headers = curl_slist_append(headers, auth.data);
    struct curl_slist *more = headers ? curl_slist_append(headers, "Expect:") : NULL;
    if (!more) goto done;
    headers = more;
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* the daemon is reached directly, never through a proxy */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)ARTIFACT_CONNECT_MS);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)ARTIFACT_STALL_S);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "umdq-worker/" UMDQ_VERSION);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READDATA, upload); /* the default read function: fread */
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)upload_size);
    }
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
done:
    curl_slist_free_all(headers);
    if (h) curl_easy_cleanup(h);
    strbuf_free(&url);
    strbuf_free(&auth);
    return cc;
}

/* Whether a failed exchange is worth another try: no answer at all, or the daemon's 5xx. */
static int transient(CURLcode cc, long status) {
    if (cc == CURLE_OUT_OF_MEMORY || cc == CURLE_WRITE_ERROR || cc == CURLE_READ_ERROR) return 0;
    if (cc != CURLE_OK) return 1;
    return status >= 500;
}

static void wait_before(int attempt) {
    long ms = 500L << (attempt < 6 ? attempt : 6);
    sleep_ms(ms);
}

int artifact_put_file(const artifact_store *s, const char *name, const char *path, char *err, size_t errlen) {
    if (!artifact_name_ok(name)) {
        snprintf(err, errlen, "bad artifact name \"%.130s\": want [A-Za-z0-9._-]{1,128}, not starting with a dot",
                 name ? name : "");
        return UMDQ_EINVAL;
    }
    if (!s->url || !s->url[0]) {
        snprintf(err, errlen, "the daemon's HTTP address is not known");
        return UMDQ_EINVAL;
    }
    int tries = s->tries > 0 ? s->tries : 1;
    int rc = UMDQ_EIO;
    for (int t = 0; t < tries; t++) {
        if (t > 0) wait_before(t - 1);
        FILE *f = fopen(path, "rb");
        struct stat sb;
        if (!f || fstat(fileno(f), &sb) != 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            if (f) fclose(f);
            return UMDQ_EIO;
        }
        sink k;
        memset(&k, 0, sizeof k);
        long status;
        char curl_err[CURL_ERROR_SIZE];
        CURLcode cc = exchange(s, "PUT", name, f, (int64_t)sb.st_size, &k, &status, curl_err);
        fclose(f);
        if (cc == CURLE_OK && status == 201) return 0;
        if (cc != CURLE_OK) {
            snprintf(err, errlen, "cannot upload %s to %s (job %lld, %s): %s", path, s->url, (long long)s->job,
                     name, curl_err[0] ? curl_err : curl_easy_strerror(cc));
            rc = UMDQ_EIO;
        } else {
            char why[300];
            answer_reason(&k, why, sizeof why);
            snprintf(err, errlen, "cannot upload %s to %s (job %lld, %s): HTTP %ld: %s", path, s->url,
                     (long long)s->job, name, status, why);
            rc = status == 404 ? UMDQ_ENOTFOUND : status >= 400 && status < 500 ? UMDQ_EINVAL : UMDQ_EIO;
        }
        if (!transient(cc, status)) break;
    }
    return rc;
}

int artifact_get_file(const artifact_store *s, const char *name, const char *path, int64_t *bytes, char *err,
                      size_t errlen) {
    if (bytes) *bytes = 0;
    if (!artifact_name_ok(name)) {
        snprintf(err, errlen, "bad artifact name \"%.130s\"", name ? name : "");
        return UMDQ_EINVAL;
    }
    if (!s->url || !s->url[0]) {
        snprintf(err, errlen, "the daemon's HTTP address is not known");
        return UMDQ_EINVAL;
    }
    char part[4200];
    snprintf(part, sizeof part, "%s.part", path);
    int tries = s->tries > 0 ? s->tries : 1;
    int rc = UMDQ_EIO;
    for (int t = 0; t < tries; t++) {
        if (t > 0) wait_before(t - 1);
        FILE *f = fopen(part, "wb");
        if (!f) {
            snprintf(err, errlen, "cannot write %s: %s", part, strerror(errno));
            return UMDQ_EIO;
        }
        sink k;
        memset(&k, 0, sizeof k);
        k.file = f;
        long status;
        char curl_err[CURL_ERROR_SIZE];
        CURLcode cc = exchange(s, "GET", name, NULL, 0, &k, &status, curl_err);
        int close_failed = fclose(f) != 0;
        if (cc == CURLE_OK && status == 200 && !k.write_failed && !close_failed) {
            if (rename(part, path) != 0) {
                snprintf(err, errlen, "cannot rename %s to %s: %s", part, path, strerror(errno));
                unlink(part);
                return UMDQ_EIO;
            }
            if (bytes) *bytes = k.bytes;
            return 0;
        }
        unlink(part);
        if (k.write_failed || close_failed) {
            snprintf(err, errlen, "cannot write %s: %s", part, strerror(k.write_failed ? k.write_failed : errno));
            return UMDQ_EIO;
        }
        if (cc != CURLE_OK) {
            snprintf(err, errlen, "cannot download %s of job %lld from %s: %s", name, (long long)s->job, s->url,
                     curl_err[0] ? curl_err : curl_easy_strerror(cc));
            rc = UMDQ_EIO;
        } else {
            char why[300];
            answer_reason(&k, why, sizeof why);
            snprintf(err, errlen, "cannot download %s of job %lld from %s: HTTP %ld: %s", name, (long long)s->job,
                     s->url, status, why);
            /* 404: no such artifact (or job): nothing to resume from, not an error to retry */
            if (status == 404) return UMDQ_ENOTFOUND;
            rc = status >= 400 && status < 500 ? UMDQ_EINVAL : UMDQ_EIO;
        }
        if (!transient(cc, status)) break;
    }
    return rc;
}

/* cli_client.c: umdq's HTTP client of umdqd (libcurl): state directory, token, JSON requests. */
#include "cli_client.h"

#include <curl/curl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jsonx.h"
#include "umdq.h"
#include "util.h"

struct cli_client {
    const char *home;   /* borrowed until client_destroy */
    char *url;          /* owned: "http://127.0.0.1:5755", no trailing slash */
    char *zmq;          /* owned: "tcp://127.0.0.1:5756" from umdqd.json, or NULL */
    char *token;        /* owned: 64 hex characters, or NULL when home/token is unreadable */
    int pid;            /* from umdqd.json, 0 if unknown */
    int has_state;      /* umdqd.json was read */
    CURL *curl;         /* owned; reused across requests (keeps the connection) */
};

char *cli_home_resolve(const char *explicit_home) {
    if (explicit_home && *explicit_home) return strdup(explicit_home);
    const char *env = getenv("UMDQ_HOME");
    if (env && *env) return strdup(env);
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw && pw->pw_dir ? pw->pw_dir : "/tmp";
    }
    strbuf b;
    strbuf_init(&b);
    strbuf_printf(&b, "%s/.umdq", home);
    if (b.oom) {
        strbuf_free(&b);
        return NULL;
    }
    return strbuf_steal(&b);
}

int client_reload(cli_client *c) {
    char path[4096], err[256];
    char *data = NULL;
    size_t len = 0;
    free(c->url);
    c->url = NULL;
    free(c->token);
    c->token = NULL;
    free(c->zmq);
    c->zmq = NULL;
    c->pid = 0;
    c->has_state = 0;

    snprintf(path, sizeof path, "%s/umdqd.json", c->home);
    if (read_file(path, &data, &len, 1 << 20, err, sizeof err) == 0) {
        cJSON *j = cJSON_ParseWithLength(data, len);
        const char *http = j ? json_get_string(j, "http", NULL) : NULL;
        if (http && *http) {
            c->url = strdup(http);
            size_t n = c->url ? strlen(c->url) : 0;
            while (n > 0 && c->url[n - 1] == '/') c->url[--n] = 0;
            c->pid = (int)json_get_int(j, "pid", 0);
            const char *zmq = json_get_string(j, "zmq", NULL);
            if (zmq) c->zmq = strdup(zmq);
            c->has_state = 1;
        }
        cJSON_Delete(j);
        free(data);
        data = NULL;
    }
    if (!c->url) {
        char buf[64];
        snprintf(buf, sizeof buf, "http://127.0.0.1:%d", CLI_DEFAULT_PORT);
        c->url = strdup(buf);
    }
    snprintf(path, sizeof path, "%s/token", c->home);
    if (read_file(path, &data, &len, 4096, err, sizeof err) == 0) {
        while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
            data[--len] = 0;
        c->token = data;
    }
    return c->has_state ? 0 : UMDQ_ENOTFOUND;
}

int client_new(const char *home, cli_client **out, char *err, size_t errlen) {
    *out = NULL;
    cli_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return UMDQ_ENOMEM;
    }
    c->home = home;
    c->curl = curl_easy_init();
    if (!c->curl) {
        snprintf(err, errlen, "libcurl could not start");
        free(c);
        return UMDQ_EIO;
    }
    client_reload(c);
    if (!c->url) {
        client_destroy(&c);
        snprintf(err, errlen, "out of memory");
        return UMDQ_ENOMEM;
    }
    *out = c;
    return 0;
}

void client_destroy(cli_client **cp) {
    if (!cp || !*cp) return;
    cli_client *c = *cp;
    if (c->curl) curl_easy_cleanup(c->curl);
    free(c->url);
    free(c->zmq);
    free(c->token);
    free(c);
    *cp = NULL;
}

const char *client_url(const cli_client *c) { return c->url; }
const char *client_zmq(const cli_client *c) { return c->zmq; }
int client_daemon_pid(const cli_client *c) { return c->pid; }
int client_has_state(const cli_client *c) { return c->has_state; }

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    strbuf *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n > (256u << 20)) return 0; /* refuse absurd answers (256 MiB) */
    strbuf_append(b, ptr, n);
    return b->oom ? 0 : n;
}

int client_request(cli_client *c, const char *method, const char *path, const char *body,
                   size_t bodylen, double timeout_s, long *status, cJSON **json, char *err,
                   size_t errlen) {
    int rc = 0;
    strbuf url, answer, auth;
    strbuf_init(&url);
    strbuf_init(&answer);
    strbuf_init(&auth);
    struct curl_slist *headers = NULL;
    char curl_err[CURL_ERROR_SIZE] = "";
    CURL *h = c->curl;
    *status = 0;
    *json = NULL;

    strbuf_printf(&url, "%s%s", c->url, path);
    if (c->token) strbuf_printf(&auth, "Authorization: Bearer %s", c->token);
    if (url.oom || auth.oom) {
        snprintf(err, errlen, "out of memory");
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* the daemon is local: never through a proxy */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)((timeout_s > 0 ? timeout_s : 60.0) * 1000));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "umdq/" UMDQ_VERSION);
    if (auth.data) headers = curl_slist_append(headers, auth.data);
    headers = curl_slist_append(headers, "Accept: application/json");
    if (strcmp(method, "GET") != 0) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? bodylen : 0));
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        const char *why = curl_err[0] ? curl_err : curl_easy_strerror(cc);
        if (c->has_state)
            snprintf(err, errlen, "cannot reach umdqd at %s (%s); is it running? start it with "
                     "`umdq up`", c->url, why);
        else
            snprintf(err, errlen, "cannot reach umdqd at %s (%s); no daemon state in %s "
                     "(umdqd.json missing); start one with `umdq up`", c->url, why, c->home);
        rc = UMDQ_EIO;
        goto fail;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (answer.len > 0) {
        char perr[128];
        *json = json_parse_n(answer.data, answer.len, perr, sizeof perr);
    }
fail:
    curl_slist_free_all(headers);
    strbuf_free(&url);
    strbuf_free(&answer);
    strbuf_free(&auth);
    return rc;
}

int client_call(cli_client *c, const char *method, const char *path, const char *body,
                size_t bodylen, cJSON **json, char *err, size_t errlen) {
    long status = 0;
    int rc = client_request(c, method, path, body, bodylen, 0, &status, json, err, errlen);
    if (rc) return rc;
    if (status >= 200 && status < 300) return 0;
    const char *msg = *json ? json_get_string(*json, "error", NULL) : NULL;
    switch (status) {
    case 400: rc = UMDQ_EINVAL; break;
    case 404: rc = UMDQ_ENOTFOUND; break;
    case 409: rc = UMDQ_ESTATE; break;
    default: rc = UMDQ_EIO; break;
    }
    if (status == 401)
        snprintf(err, errlen, "umdqd at %s refused the token from %s/token (%s)", c->url, c->home,
                 msg ? msg : "401");
    else if (status == 421)
        snprintf(err, errlen, "umdqd at %s refused the Host header (421)", c->url);
    else if (msg)
        snprintf(err, errlen, "%s", msg);
    else
        snprintf(err, errlen, "umdqd answered %s %s with HTTP %ld", method, path, status);
    return rc;
}

char *client_escape(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    char *p = out;
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') ||
            *q == '-' || *q == '.' || *q == '_' || *q == '~') {
            *p++ = (char)*q;
        } else {
            *p++ = '%';
            *p++ = hex[*q >> 4];
            *p++ = hex[*q & 15];
        }
    }
    *p = 0;
    return out;
}

int client_exit_code(int rc) {
    switch (rc) {
    case 0: return UMDQ_EXIT_OK;
    case UMDQ_EINVAL: return UMDQ_EXIT_USAGE;
    case UMDQ_ENOTFOUND: return UMDQ_EXIT_NOTFOUND;
    default: return UMDQ_EXIT_RUNTIME;
    }
}

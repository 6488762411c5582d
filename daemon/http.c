/* http.c: the HTTP API of umdqd on libmicrohttpd: routing, token and Host checks, body caps,
 * read-only queries, mutations through the scheduler, artifact upload and download (see http.h). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <microhttpd.h>
#include "errlist.h"
#include "http.h"
#include "log.h"
#include "query.h"
#include "sha256.h"
#include "store.h"
#include "sweep.h"
#include "umdq.h"
#include "util.h"
#include "web.h"
#include "web_table.h"

enum {
    R_NONE, R_HEALTH, R_SWEEPS, R_SWEEP, R_SWEEP_CANCEL, R_SWEEP_REQUEUE, R_JOB, R_JOB_METRICS, R_JOB_LOG,
    R_JOB_CANCEL, R_JOB_REQUEUE, R_WORKERS, R_ARTIFACTS, R_ARTIFACT, R_PROMETHEUS, R_WEB_ASSET, R_LOGIN,
    R_SESSION, R_SWEEP_TABLE
};

struct http_server {
    struct MHD_Daemon *mhd;
    char *db_path, *home, *token, *url, *zmq, *epoch, *log_dir; /* owned */
    char hosts[4][300];          /* accepted Host header values */
    int nhosts;
    mutq *q;                     /* borrowed */
    latency *lat;                /* borrowed */
    double started;              /* mono_s at start */
    unsigned gen;                /* tells this server's thread-local connections from older ones */
    web_auth *web;               /* login codes and session cookies of the dashboard; owned */
    web_table *table;            /* the dashboard's sweep tables (cached swept values); owned */
    char cookie[40];             /* the session cookie's name: "umdq_session_PORT" (cookies ignore ports) */
    pthread_mutex_t conns_mu;
    sqlite3 **conns;             /* every read connection opened by an HTTP thread; owned */
    int nconns, capconns;
};

/* State of one request across the access handler's calls. */
typedef struct {
    int route;
    int responded;               /* a response is queued: discard the rest of the body */
    strbuf body;                 /* JSON bodies */
    size_t cap;
    /* artifact upload */
    int fd;
    int uploading;               /* an artifact upload that overflowed (fd closed) */
    int failed;                  /* errno of a failed artifact write */
    uint64_t overflow;           /* bytes dropped past the cap */
    char tmp[4096], final[4096], dir[3600];
    sha256_ctx sha;
    uint64_t bytes;
    int64_t job;
    int bearer;                  /* authenticated by the API token (not by a dashboard session) */
    const umdq_embedded_file *asset; /* R_WEB_ASSET: the file; static */
    char name[256];
    char ref[256];               /* the SWEEP path segment */
} request;

static __thread sqlite3 *tl_db;
static __thread unsigned tl_gen;
static unsigned server_gen;

/* ---- listening ------------------------------------------------------------------------------------ */

int http_listen(const char *addr, int *fd, char *host, size_t hostlen, int *port, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    char portstr[16];
    int rc;
    *fd = -1;
    if ((rc = hostport_parse(addr, host, hostlen, port, err, errlen)) != 0) return rc;
    if ((rc = host_check_loopback(host, err, errlen)) != 0) return rc;
    char bare[256];
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') snprintf(bare, sizeof bare, "%.*s", (int)hl - 2, host + 1);
    else snprintf(bare, sizeof bare, "%s", host);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof portstr, "%d", *port);
    int gai = getaddrinfo(bare, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "http address %s: %s", addr, gai_strerror(gai));
        return UMDQ_EINVAL;
    }
    /* "localhost" may resolve to ::1 and 127.0.0.1: prefer IPv4, which every client reaches */
    struct addrinfo *pick = res;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) { pick = a; break; }
    int s = socket(pick->ai_family, pick->ai_socktype | SOCK_CLOEXEC, pick->ai_protocol);
    if (s < 0) {
        snprintf(err, errlen, "http socket: %s", strerror(errno));
        freeaddrinfo(res);
        return UMDQ_EIO;
    }
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, pick->ai_addr, pick->ai_addrlen) != 0 || listen(s, 128) != 0) {
        int e = errno;
        snprintf(err, errlen, "http: cannot listen on %s: %s", addr, strerror(e));
        close(s);
        freeaddrinfo(res);
        return e == EADDRINUSE ? UMDQ_EBUSY : UMDQ_EIO;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(s, (struct sockaddr *)&ss, &sl) == 0)
        *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    *fd = s;
    return 0;
}

/* ---- responses ------------------------------------------------------------------------------------ */

static enum MHD_Result respond_buf(struct MHD_Connection *c, request *rq, unsigned code, const char *type,
                                   char *text, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    if (rq) rq->responded = 1;
    return ok;
}

/* Send doc (consumed) as JSON. */
static enum MHD_Result respond_json(struct MHD_Connection *c, request *rq, unsigned code, cJSON *doc) {
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (!text) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        struct MHD_Response *r =
            MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result ok = MHD_queue_response(c, 500, r);
        MHD_destroy_response(r);
        if (rq) rq->responded = 1;
        return ok;
    }
    return respond_buf(c, rq, code, "application/json", text, strlen(text));
}

/* {"error": msg[, "errors": [{"path", "message"}...]]} */
static enum MHD_Result respond_error(struct MHD_Connection *c, request *rq, unsigned code, const errlist *errs,
                                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum MHD_Result respond_error(struct MHD_Connection *c, request *rq, unsigned code, const errlist *errs,
                                     const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "error", msg);
    if (errs && errlist_count(errs) > 0) {
        cJSON *arr = cJSON_AddArrayToObject(doc, "errors");
        for (int i = 0; i < errlist_count(errs); i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", errlist_path(errs, i));
            cJSON_AddStringToObject(e, "message", errlist_message(errs, i));
            cJSON_AddItemToArray(arr, e);
        }
    }
    return respond_json(c, rq, code, doc);
}

static unsigned status_of(int rc) {
    switch (rc) {
    case UMDQ_EINVAL:
    case UMDQ_EPROTO: return 400;
    case UMDQ_ENOTFOUND: return 404;
    case UMDQ_ESTATE: return 409;
    case UMDQ_ECANCELLED: return 503;
    default: return 500;
    }
}

/* ---- the read connection of this thread ------------------------------------------------------------------ */

static sqlite3 *read_db(http_server *h, char *err, size_t errlen) {
    if (tl_db && tl_gen == h->gen) return tl_db;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(h->db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "database: %s", db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    pthread_mutex_lock(&h->conns_mu);
    if (h->nconns == h->capconns) {
        int cap = h->capconns ? h->capconns * 2 : 8;
        sqlite3 **grown = realloc(h->conns, (size_t)cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&h->conns_mu);
            sqlite3_close(db);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        h->conns = grown;
        h->capconns = cap;
    }
    h->conns[h->nconns++] = db;
    pthread_mutex_unlock(&h->conns_mu);
    tl_db = db;
    tl_gen = h->gen;
    return db;
}

/* ---- request checks ---------------------------------------------------------------------------------- */

static int host_ok(http_server *h, struct MHD_Connection *c) {
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (!host) return 0;
    for (int i = 0; i < h->nhosts; i++)
        if (strcasecmp(host, h->hosts[i]) == 0) return 1;
    return 0;
}

static int token_ok(http_server *h, struct MHD_Connection *c) {
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
    const char *given = auth + 7;
    while (*given == ' ') given++;
    size_t n = strlen(h->token), m = strlen(given);
    /* the comparison takes the same time wherever the first difference is */
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(h->token[i] ^ (i < m ? given[i] : 0));
    return diff == 0;
}

static int parse_id(const char *s, size_t len, int64_t *id) {
    if (len == 0 || len > 18) return 0;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *id = v;
    return v > 0;
}

static int artifact_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 128 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* Split the path into at most 5 segments after the leading slash. */
static int split_path(const char *url, char seg[5][256]) {
    int n = 0;
    const char *p = url;
    if (*p != '/') return -1;
    while (*p == '/') p++;
    while (*p && n < 5) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len >= 256) return -1;
        memcpy(seg[n], p, len);
        seg[n][len] = 0;
        n++;
        if (!e) break;
        p = e + 1;
        if (!*p) break; /* a trailing slash */
    }
    if (*p && strchr(p, '/') && n == 5) return -1;
    return n;
}

/* Which route url/method is; *allowed lists the methods when the path exists. */
static int route_of(const char *url, const char *method, request *rq, const char **allowed) {
    char seg[5][256];
    int n = split_path(url, seg);
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0, put = strcmp(method, "PUT") == 0;
    *allowed = NULL;
    /* the dashboard's files: only the names compiled in (web_asset), never a path on disk */
    if (strncmp(url, "/api/", 5) != 0 && (rq->asset = web_asset(url)) != NULL)
        return *allowed = "GET", get ? R_WEB_ASSET : -1;
    if (n == 1 && strcmp(seg[0], "metrics") == 0) return *allowed = "GET", get ? R_PROMETHEUS : -1;
    if (n < 2 || strcmp(seg[0], "api") != 0) return R_NONE;
    const char *what = seg[1];
    if (n == 2 && strcmp(what, "health") == 0) return *allowed = "GET", get ? R_HEALTH : -1;
    if (n == 2 && strcmp(what, "workers") == 0) return *allowed = "GET", get ? R_WORKERS : -1;
    if (n == 2 && strcmp(what, "login") == 0) return *allowed = "POST", post ? R_LOGIN : -1;
    if (n == 2 && strcmp(what, "session") == 0) return *allowed = "GET, POST", get || post ? R_SESSION : -1;
    if (strcmp(what, "sweeps") == 0) {
        if (n == 2) return *allowed = "GET, POST", get ? R_SWEEPS : post ? R_SWEEPS : -1;
        snprintf(rq->ref, sizeof rq->ref, "%s", seg[2]);
        if (n == 3) return *allowed = "GET", get ? R_SWEEP : -1;
        if (n == 4 && strcmp(seg[3], "cancel") == 0) return *allowed = "POST", post ? R_SWEEP_CANCEL : -1;
        if (n == 4 && strcmp(seg[3], "requeue") == 0) return *allowed = "POST", post ? R_SWEEP_REQUEUE : -1;
        if (n == 4 && strcmp(seg[3], "table") == 0) return *allowed = "GET", get ? R_SWEEP_TABLE : -1;
        return R_NONE;
    }
    if (strcmp(what, "jobs") == 0 && n >= 3) {
        if (!parse_id(seg[2], strlen(seg[2]), &rq->job)) return R_NONE;
        if (n == 3) return *allowed = "GET", get ? R_JOB : -1;
        if (n == 4 && strcmp(seg[3], "metrics") == 0) return *allowed = "GET", get ? R_JOB_METRICS : -1;
        if (n == 4 && strcmp(seg[3], "log") == 0) return *allowed = "GET", get ? R_JOB_LOG : -1;
        if (n == 4 && strcmp(seg[3], "cancel") == 0) return *allowed = "POST", post ? R_JOB_CANCEL : -1;
        if (n == 4 && strcmp(seg[3], "requeue") == 0) return *allowed = "POST", post ? R_JOB_REQUEUE : -1;
        return R_NONE;
    }
    if (strcmp(what, "artifacts") == 0 && n >= 3) {
        if (!parse_id(seg[2], strlen(seg[2]), &rq->job)) return R_NONE;
        if (n == 3) return *allowed = "GET", get ? R_ARTIFACTS : -1;
        if (n == 4) {
            memcpy(rq->name, seg[3], sizeof rq->name);
            return *allowed = "GET, PUT", get || put ? R_ARTIFACT : -1;
        }
        return R_NONE;
    }
    return R_NONE;
}

static const char *arg(struct MHD_Connection *c, const char *key) {
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

/* An integer query argument; 0 when absent (dflt kept), 1 when read, -1 when malformed. */
static int arg_int(struct MHD_Connection *c, const char *key, int64_t *v) {
    const char *s = arg(c, key);
    if (!s) return 0;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || errno) return -1;
    *v = x;
    return 1;
}

/* ---- handlers ----------------------------------------------------------------------------------------- */

static enum MHD_Result on_health(http_server *h, struct MHD_Connection *c, request *rq) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddBoolToObject(doc, "ok", 1);
    cJSON_AddStringToObject(doc, "version", UMDQ_VERSION);
    cJSON_AddNumberToObject(doc, "pid", (double)getpid());
    cJSON_AddStringToObject(doc, "http", h->url);
    cJSON_AddStringToObject(doc, "zmq", h->zmq);
    cJSON_AddNumberToObject(doc, "uptime", mono_s() - h->started);
    cJSON_AddStringToObject(doc, "epoch", h->epoch);
    return respond_json(c, rq, 200, doc);
}

static enum MHD_Result on_prometheus(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db) {
    char err[512];
    int64_t jobs[QUERY_NJOB_STATES], workers[QUERY_NWORKER_STATES];
    int rc = query_counts(db, jobs, workers, err, sizeof err);
    if (rc != 0) return respond_error(c, rq, status_of(rc), NULL, "%s", err);
    latency_snapshot lat;
    latency_read(h->lat, &lat);
    strbuf b;
    strbuf_init(&b);
    strbuf_puts(&b, "# HELP umdq_jobs Jobs by state.\n# TYPE umdq_jobs gauge\n");
    for (int i = 0; i < QUERY_NJOB_STATES; i++)
        strbuf_printf(&b, "umdq_jobs{state=\"%s\"} %lld\n", QUERY_JOB_STATES[i], (long long)jobs[i]);
    strbuf_puts(&b, "# HELP umdq_workers Workers by state.\n# TYPE umdq_workers gauge\n");
    for (int i = 0; i < QUERY_NWORKER_STATES; i++)
        strbuf_printf(&b, "umdq_workers{state=\"%s\"} %lld\n", QUERY_WORKER_STATES[i], (long long)workers[i]);
    strbuf_puts(&b, "# HELP umdq_dispatch_latency_seconds Time from QUEUED to dispatch.\n"
                    "# TYPE umdq_dispatch_latency_seconds histogram\n");
    for (int i = 0; i < LATENCY_NBUCKETS; i++)
        strbuf_printf(&b, "umdq_dispatch_latency_seconds_bucket{le=\"%g\"} %llu\n", LATENCY_BOUNDS[i],
                      (unsigned long long)lat.cumulative[i]);
    strbuf_printf(&b, "umdq_dispatch_latency_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)lat.count);
    strbuf_printf(&b, "umdq_dispatch_latency_seconds_sum %.9g\n", lat.sum);
    strbuf_printf(&b, "umdq_dispatch_latency_seconds_count %llu\n", (unsigned long long)lat.count);
    strbuf_printf(&b, "# HELP umdq_uptime_seconds Seconds since umdqd started.\n# TYPE umdq_uptime_seconds gauge\n"
                      "umdq_uptime_seconds %.3f\n", mono_s() - h->started);
    size_t len = b.len;
    char *text = strbuf_steal(&b);
    if (!text) return respond_error(c, rq, 500, NULL, "out of memory");
    return respond_buf(c, rq, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* Hand m to the scheduler and wait for its answer. */
static int call_scheduler(http_server *h, mutation *m) {
    return mutq_call(h->q, m);
}

static enum MHD_Result on_submit(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db) {
    char err[512];
    errlist *errs = errlist_new();
    sweep *sw = NULL;
    enum MHD_Result ok;
    if (!errs) return respond_error(c, rq, 500, NULL, "out of memory");
    int dry = arg(c, "dry_run") && strcmp(arg(c, "dry_run"), "0") != 0 && strcmp(arg(c, "dry_run"), "false") != 0;
    int rc = sweep_expand(rq->body.data ? rq->body.data : "", rq->body.len, &sw, errs);
    if (rc != 0 || !sw) {
        if (errlist_count(errs) == 0) errlist_add(errs, "", "the sweep could not be expanded (%s)", umdq_strerror(rc));
        if (errlist_count(errs) == 1)
            ok = respond_error(c, rq, 400, errs, "%s%s%s", errlist_path(errs, 0), errlist_path(errs, 0)[0] ? ": " : "",
                               errlist_message(errs, 0));
        else
            ok = respond_error(c, rq, 400, errs, "the sweep has %d problems", errlist_count(errs));
        goto done;
    }
    cJSON *doc = cJSON_CreateObject(), *so = cJSON_AddObjectToObject(doc, "sweep");
    if (dry) {
        int64_t id = 0;
        int existing = 0;
        if ((rc = store_submit_preview(db, sw, &id, &existing, err, sizeof err)) != 0) {
            cJSON_Delete(doc);
            ok = respond_error(c, rq, status_of(rc), NULL, "%s", err);
            goto done;
        }
        if (id) cJSON_AddNumberToObject(so, "id", (double)id);
        else cJSON_AddNullToObject(so, "id");
        cJSON_AddStringToObject(so, "name", sw->name);
        cJSON_AddNumberToObject(doc, "jobs", sw->njobs);
        cJSON_AddNumberToObject(doc, "new", sw->njobs - existing);
        cJSON_AddNumberToObject(doc, "existing", existing);
        cJSON_AddBoolToObject(doc, "dry_run", 1);
        ok = respond_json(c, rq, 200, doc);
        goto done;
    }
    mutation m;
    memset(&m, 0, sizeof m);
    m.kind = MUT_SUBMIT;
    m.sw = sw;
    if ((rc = call_scheduler(h, &m)) != 0) {
        cJSON_Delete(doc);
        ok = respond_error(c, rq, status_of(rc), NULL, "%s", m.err);
        goto done;
    }
    cJSON_AddNumberToObject(so, "id", (double)m.submit.sweep_id);
    cJSON_AddStringToObject(so, "name", sw->name);
    cJSON_AddNumberToObject(doc, "jobs", m.submit.jobs);
    cJSON_AddNumberToObject(doc, "new", m.submit.added);
    cJSON_AddNumberToObject(doc, "existing", m.submit.existing);
    cJSON_AddBoolToObject(doc, "dry_run", 0);
    ok = respond_json(c, rq, m.submit.added > 0 ? 201 : 200, doc);
done:
    sweep_destroy(&sw);
    errlist_destroy(&errs);
    return ok;
}

static enum MHD_Result on_job_action(http_server *h, struct MHD_Connection *c, request *rq, mutation_kind kind) {
    mutation m;
    memset(&m, 0, sizeof m);
    m.kind = kind;
    m.id = rq->job;
    int rc = call_scheduler(h, &m);
    if (rc != 0) return respond_error(c, rq, status_of(rc), NULL, "%s", m.err);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "job", (double)rq->job);
    cJSON_AddStringToObject(doc, "state", kind == MUT_JOB_CANCEL ? "CANCELLED" : "QUEUED");
    return respond_json(c, rq, 200, doc);
}

static enum MHD_Result on_sweep_action(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db,
                                       mutation_kind kind) {
    char err[512];
    int64_t id;
    int rc = query_sweep_resolve(db, rq->ref, &id, err, sizeof err);
    if (rc != 0) return respond_error(c, rq, status_of(rc), NULL, "%s", err);
    mutation m;
    memset(&m, 0, sizeof m);
    m.kind = kind;
    m.id = id;
    if ((rc = call_scheduler(h, &m)) != 0) return respond_error(c, rq, status_of(rc), NULL, "%s", m.err);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, kind == MUT_SWEEP_CANCEL ? "cancelled" : "requeued", m.count);
    return respond_json(c, rq, 200, doc);
}

/* GET routes that read the database, in one read transaction. */
static enum MHD_Result on_read(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db) {
    char err[512] = "";
    cJSON *doc = NULL;
    int rc = 0;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    switch (rq->route) {
    case R_SWEEPS: rc = query_sweeps(db, &doc, err, sizeof err); break;
    case R_SWEEP: {
        int64_t id;
        const char *state = arg(c, "state");
        const char *jobs = arg(c, "jobs");
        int valid = !state;
        for (int i = 0; i < QUERY_NJOB_STATES && !valid; i++) valid = strcmp(state, QUERY_JOB_STATES[i]) == 0;
        if (!valid) {
            rc = UMDQ_EINVAL;
            snprintf(err, sizeof err, "state must be one of QUEUED, RUNNING, SUCCEEDED, FAILED, LOST, PREEMPTED, "
                                      "CANCELLED");
            break;
        }
        if ((rc = query_sweep_resolve(db, rq->ref, &id, err, sizeof err)) != 0) break;
        rc = query_sweep(db, id, state, !(jobs && strcmp(jobs, "0") == 0), &doc, err, sizeof err);
        break;
    }
    case R_JOB: rc = query_job(db, rq->job, &doc, err, sizeof err); break;
    case R_JOB_METRICS: {
        int64_t max_points = QUERY_METRICS_DEFAULT;
        if (arg_int(c, "max_points", &max_points) < 0 || max_points < 1 || max_points > QUERY_METRICS_MAX) {
            rc = UMDQ_EINVAL;
            snprintf(err, sizeof err, "max_points must be an integer in [1, %d]", QUERY_METRICS_MAX);
            break;
        }
        const char *key = arg(c, "key");
        rc = query_job_metrics(db, rq->job, key && *key ? key : NULL, (int)max_points, &doc, err, sizeof err);
        break;
    }
    case R_JOB_LOG: {
        int64_t offset = 0, max = QUERY_LOG_MAX;
        if (arg_int(c, "offset", &offset) < 0 || arg_int(c, "max", &max) < 0 || max < 0) {
            rc = UMDQ_EINVAL;
            snprintf(err, sizeof err, "offset and max must be integers");
            break;
        }
        rc = query_job_log(db, h->log_dir, rq->job, offset, max, &doc, err, sizeof err);
        break;
    }
    case R_WORKERS: rc = query_workers(db, &doc, err, sizeof err); break;
    default: rc = UMDQ_ENOTFOUND; snprintf(err, sizeof err, "not found"); break;
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != 0) return respond_error(c, rq, status_of(rc), NULL, "%s", err);
    return respond_json(c, rq, 200, doc);
}

/* ---- artifacts ------------------------------------------------------------------------------------------ */

static int job_exists(sqlite3 *db, int64_t job) {
    return query_job_exists(db, job);
}

/* First call of a PUT: check the job and name, open the temporary file. */
static enum MHD_Result artifact_begin(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db) {
    if (!artifact_name_ok(rq->name))
        return respond_error(c, rq, 400, NULL, "bad artifact name \"%.130s\": want [A-Za-z0-9._-]{1,128}, not "
                                               "starting with a dot", rq->name);
    int ex = job_exists(db, rq->job);
    if (ex < 0) return respond_error(c, rq, 500, NULL, "database: cannot look up job %lld", (long long)rq->job);
    if (ex == 0) return respond_error(c, rq, 404, NULL, "no job %lld", (long long)rq->job);
    snprintf(rq->dir, sizeof rq->dir, "%.3500s/artifacts/%lld", h->home, (long long)rq->job);
    snprintf(rq->final, sizeof rq->final, "%.3599s/%.255s", rq->dir, rq->name);
    snprintf(rq->tmp, sizeof rq->tmp, "%.3599s/.%.255s.upload.XXXXXX", rq->dir, rq->name);
    if (mkdir_p(rq->dir, 0755) != 0 || (rq->fd = mkostemp(rq->tmp, O_CLOEXEC)) < 0) {
        rq->tmp[0] = 0;
        return respond_error(c, rq, 500, NULL, "artifact store: %s", strerror(errno));
    }
    fchmod(rq->fd, 0644);
    sha256_init(&rq->sha);
    return MHD_YES;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static enum MHD_Result artifact_finish(struct MHD_Connection *c, request *rq) {
    char hex[65];
    unsigned char digest[32];
    if (fsync(rq->fd) != 0 || close(rq->fd) != 0) {
        rq->fd = -1;
        return respond_error(c, rq, 500, NULL, "artifact store: %s", strerror(errno));
    }
    rq->fd = -1;
    if (rename(rq->tmp, rq->final) != 0) return respond_error(c, rq, 500, NULL, "artifact store: %s", strerror(errno));
    rq->tmp[0] = 0;
    int dfd = open(rq->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    sha256_final(&rq->sha, digest);
    sha256_to_hex(digest, hex);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "job", (double)rq->job);
    cJSON_AddStringToObject(doc, "name", rq->name);
    cJSON_AddNumberToObject(doc, "bytes", (double)rq->bytes);
    cJSON_AddStringToObject(doc, "sha256", hex);
    log_info("artifact %lld/%s stored (%llu bytes)", (long long)rq->job, rq->name, (unsigned long long)rq->bytes);
    return respond_json(c, rq, 201, doc);
}

static enum MHD_Result on_artifact_get(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db) {
    if (!artifact_name_ok(rq->name)) return respond_error(c, rq, 400, NULL, "bad artifact name");
    int ex = job_exists(db, rq->job);
    if (ex <= 0) return respond_error(c, rq, ex < 0 ? 500 : 404, NULL, "no job %lld", (long long)rq->job);
    char path[4096];
    snprintf(path, sizeof path, "%s/artifacts/%lld/%s", h->home, (long long)rq->job, rq->name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        return respond_error(c, rq, 404, NULL, "no artifact %s of job %lld", rq->name, (long long)rq->job);
    }
    struct MHD_Response *r = MHD_create_response_from_fd64((uint64_t)sb.st_size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    size_t n = strlen(rq->name);
    int png = n > 4 && strcasecmp(rq->name + n - 4, ".png") == 0;
    MHD_add_response_header(r, "Content-Type", png ? "image/png" : "application/octet-stream");
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    rq->responded = 1;
    return ok;
}

static enum MHD_Result on_artifact_list(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db) {
    int ex = job_exists(db, rq->job);
    if (ex <= 0) return respond_error(c, rq, ex < 0 ? 500 : 404, NULL, "no job %lld", (long long)rq->job);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/artifacts/%lld", h->home, (long long)rq->job);
    cJSON *doc = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(doc, "artifacts");
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, 0) != 0 || !S_ISREG(sb.st_mode)) continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "name", e->d_name);
        cJSON_AddNumberToObject(a, "bytes", (double)sb.st_size);
        cJSON_AddNumberToObject(a, "modified", (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec * 1e-9);
        cJSON_AddItemToArray(arr, a);
    }
    if (d) closedir(d);
    return respond_json(c, rq, 200, doc);
}

/* ---- the dashboard ------------------------------------------------------------------------------------- */

/* An embedded file of web/, with headers that keep it from being framed, sniffed or given
 * scripts from anywhere else. */
static enum MHD_Result on_web_asset(struct MHD_Connection *c, request *rq) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(rq->asset->len, (void *)rq->asset->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", web_asset_type(rq->asset->name));
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                            "form-action 'none'");
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    rq->responded = 1;
    return ok;
}

/* 0 when the request may go on; 401 without the token or a valid session cookie; 403 for a POST,
 * PUT or DELETE of a session without its CSRF header. /api/session goes on without either: a POST
 * carries its credential (a login code) in its body, a GET tells whether the cookie is valid. */
static int authorize(http_server *h, struct MHD_Connection *c, const char *url, const char *method, request *rq) {
    if (token_ok(h, c)) {
        rq->bearer = 1;
        return 0;
    }
    if (strcmp(url, "/api/session") == 0) return 0;
    const char *session = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, h->cookie);
    char csrf[WEB_CSRF_HEX + 1];
    if (!session || !web_session_check(h->web, session, csrf)) return 401;
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) return 0;
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, WEB_CSRF_HEADER);
    return given && web_equal(csrf, given) ? 0 : 403;
}

/* GET /api/sweeps/SWEEP/table: the compact table of the dashboard (web_table.h). */
static enum MHD_Result on_sweep_table(http_server *h, struct MHD_Connection *c, request *rq, sqlite3 *db) {
    char err[512];
    int64_t id;
    strbuf b;
    strbuf_init(&b);
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    int rc = query_sweep_resolve(db, rq->ref, &id, err, sizeof err);
    if (rc == 0) rc = web_table_query(h->table, db, id, &b, err, sizeof err);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != 0) {
        strbuf_free(&b);
        return respond_error(c, rq, status_of(rc), NULL, "%s", err);
    }
    size_t len = b.len;
    char *text = strbuf_steal(&b);
    if (!text) return respond_error(c, rq, 500, NULL, "out of memory");
    return respond_buf(c, rq, 200, "application/json", text, len);
}

/* POST /api/login (the API token only): a one-time login code and the URL that uses it. */
static enum MHD_Result on_login(http_server *h, struct MHD_Connection *c, request *rq) {
    char code[WEB_CODE_HEX + 1];
    if (!rq->bearer) return respond_error(c, rq, 403, NULL, "login codes are given for the API token only");
    if (web_login_new(h->web, code) != 0) return respond_error(c, rq, 500, NULL, "no random bytes for a login code");
    char url[512];
    snprintf(url, sizeof url, "%.300s/#login=%s", h->url, code);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "code", code);
    cJSON_AddStringToObject(doc, "url", url);
    cJSON_AddNumberToObject(doc, "expires_in", WEB_LOGIN_TTL_S);
    return respond_json(c, rq, 200, doc);
}

/* GET /api/session: the CSRF value of the session cookie sent ({"csrf": null} for the token).
 * POST /api/session {"login": CODE}: use up the code; the answer sets the session cookie. */
static enum MHD_Result on_session(http_server *h, struct MHD_Connection *c, request *rq, const char *method) {
    char session[WEB_SESSION_MAX], csrf[WEB_CSRF_HEX + 1];
    if (strcmp(method, "POST") != 0) {
        cJSON *doc = cJSON_CreateObject();
        const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, h->cookie);
        if (cookie && web_session_check(h->web, cookie, csrf)) cJSON_AddStringToObject(doc, "csrf", csrf);
        else cJSON_AddNullToObject(doc, "csrf");
        return respond_json(c, rq, 200, doc);
    }
    cJSON *body = rq->body.data ? cJSON_ParseWithLength(rq->body.data, rq->body.len) : NULL;
    const cJSON *login = cJSON_GetObjectItemCaseSensitive(body, "login");
    if (!cJSON_IsString(login)) {
        cJSON_Delete(body);
        return respond_error(c, rq, 400, NULL, "want a body {\"login\": CODE} with the code of `umdq dashboard`");
    }
    int rc = web_login_take(h->web, login->valuestring, session, csrf);
    cJSON_Delete(body);
    if (rc == UMDQ_EIO) return respond_error(c, rq, 500, NULL, "no random bytes for a session");
    if (rc != 0)
        return respond_error(c, rq, 401, NULL, "the login code is unknown, used or expired: `umdq dashboard` "
                                               "prints a new one");
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "csrf", csrf);
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!text) return respond_error(c, rq, 500, NULL, "out of memory");
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    char cookie[WEB_SESSION_MAX + 160];
    snprintf(cookie, sizeof cookie, "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d", h->cookie, session,
             WEB_SESSION_TTL_S);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "Set-Cookie", cookie);
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    rq->responded = 1;
    log_info("dashboard: a login code was used; new browser session");
    return ok;
}

/* ---- the access handler ---------------------------------------------------------------------------------- */

static int needs_token(const char *url) {
    return strncmp(url, "/api/", 5) == 0 || strcmp(url, "/api") == 0 || strcmp(url, "/metrics") == 0;
}

/* The first call for a request: everything that can be refused before the body. */
static enum MHD_Result begin_request(http_server *h, struct MHD_Connection *c, const char *url, const char *method,
                                     request *rq) {
    char err[512];
    if (!host_ok(h, c)) return respond_error(c, rq, 421, NULL, "the Host header must name the daemon's address");
    if (needs_token(url)) {
        int auth = authorize(h, c, url, method, rq);
        if (auth == 401) return respond_error(c, rq, 401, NULL, "missing or wrong token");
        if (auth == 403)
            return respond_error(c, rq, 403, NULL, "a dashboard session needs the " WEB_CSRF_HEADER " header of its "
                                                   "login on every POST, PUT and DELETE");
    }
    const char *allowed = NULL;
    rq->route = route_of(url, method, rq, &allowed);
    if (rq->route < 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "method %.20s not allowed here (allowed: %s)", method, allowed);
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "error", msg);
        char *text = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
        if (!text) return MHD_NO;
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "application/json");
        MHD_add_response_header(r, "Allow", allowed);
        enum MHD_Result ok = MHD_queue_response(c, 405, r);
        MHD_destroy_response(r);
        rq->responded = 1;
        return ok;
    }
    if (rq->route == R_NONE) return respond_error(c, rq, 404, NULL, "not found: %.200s", url);
    int upload = rq->route == R_ARTIFACT && strcmp(method, "PUT") == 0;
    rq->cap = upload ? 0 : HTTP_MAX_JSON;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (upload ? n > HTTP_MAX_ARTIFACT : n > HTTP_MAX_JSON)
            return respond_error(c, rq, 413, NULL, "request body of %llu bytes is larger than %llu", n,
                                 upload ? (unsigned long long)HTTP_MAX_ARTIFACT : (unsigned long long)HTTP_MAX_JSON);
    }
    if (upload) {
        sqlite3 *db = read_db(h, err, sizeof err);
        if (!db) return respond_error(c, rq, 500, NULL, "%s", err);
        return artifact_begin(h, c, rq, db);
    }
    return MHD_YES;
}

static enum MHD_Result end_request(http_server *h, struct MHD_Connection *c, const char *method, request *rq) {
    char err[512];
    if (rq->route == R_HEALTH) return on_health(h, c, rq);
    if (rq->route == R_WEB_ASSET) return on_web_asset(c, rq);
    if (rq->route == R_LOGIN) return on_login(h, c, rq);
    if (rq->route == R_SESSION) return on_session(h, c, rq, method);
    if (rq->route == R_ARTIFACT && strcmp(method, "PUT") == 0) {
        if (rq->fd < 0) return respond_error(c, rq, 500, NULL, "artifact store: no upload");
        return artifact_finish(c, rq);
    }
    if (rq->route == R_JOB_CANCEL) return on_job_action(h, c, rq, MUT_JOB_CANCEL);
    if (rq->route == R_JOB_REQUEUE) return on_job_action(h, c, rq, MUT_JOB_REQUEUE);
    sqlite3 *db = read_db(h, err, sizeof err);
    if (!db) return respond_error(c, rq, 500, NULL, "%s", err);
    switch (rq->route) {
    case R_PROMETHEUS: return on_prometheus(h, c, rq, db);
    case R_SWEEPS:
        if (strcmp(method, "POST") == 0) return on_submit(h, c, rq, db);
        return on_read(h, c, rq, db);
    case R_SWEEP_CANCEL: return on_sweep_action(h, c, rq, db, MUT_SWEEP_CANCEL);
    case R_SWEEP_REQUEUE: return on_sweep_action(h, c, rq, db, MUT_SWEEP_REQUEUE);
    case R_SWEEP_TABLE: return on_sweep_table(h, c, rq, db);
    case R_ARTIFACT: return on_artifact_get(h, c, rq, db);
    case R_ARTIFACTS: return on_artifact_list(h, c, rq, db);
    default: return on_read(h, c, rq, db);
    }
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_size,
                                      void **con_cls) {
    http_server *h = cls;
    request *rq = *con_cls;
    (void)version;
    if (!rq) {
        if (!(rq = calloc(1, sizeof *rq))) return MHD_NO;
        rq->fd = -1;
        strbuf_init(&rq->body);
        *con_cls = rq;
        return begin_request(h, c, url, method, rq);
    }
    if (rq->responded) { /* refused before the body: the rest of it is dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        /* a body without a length that grows past the cap: read and dropped (the connection is cut
         * when it goes on far beyond), then refused with 413 at its end */
        uint64_t cap = rq->fd >= 0 ? HTTP_MAX_ARTIFACT : rq->cap;
        if (rq->overflow || (rq->fd >= 0 ? rq->bytes : rq->body.len) + n > cap) {
            rq->overflow += n;
            if (rq->fd >= 0) {
                close(rq->fd);
                rq->fd = -1;
                rq->uploading = 1;
            }
            strbuf_free(&rq->body);
            return rq->overflow > cap + (64u << 20) ? MHD_NO : MHD_YES;
        }
        if (rq->fd >= 0) {
            if (rq->failed) return MHD_YES;
            if (write_all(rq->fd, upload_data, n) != 0) {
                rq->failed = errno ? errno : EIO;
                return MHD_YES;
            }
            sha256_update(&rq->sha, upload_data, n);
            rq->bytes += n;
            return MHD_YES;
        }
        strbuf_append(&rq->body, upload_data, n);
        return MHD_YES;
    }
    if (rq->overflow)
        return respond_error(c, rq, 413, NULL, "request body larger than %llu bytes",
                             (unsigned long long)(rq->uploading ? HTTP_MAX_ARTIFACT : rq->cap));
    if (rq->failed) return respond_error(c, rq, 500, NULL, "artifact store: %s", strerror(rq->failed));
    if (rq->body.oom) return respond_error(c, rq, 500, NULL, "out of memory");
    return end_request(h, c, method, rq);
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    request *rq = *con_cls;
    (void)cls;
    (void)c;
    (void)toe;
    if (!rq) return;
    if (rq->fd >= 0) close(rq->fd);
    if (rq->tmp[0]) unlink(rq->tmp);
    strbuf_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[1024];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    log_debug("http: %s", msg);
}

/* ---- start and stop --------------------------------------------------------------------------------------- */

int http_start(int fd, const http_options *o, http_server **out, char *err, size_t errlen) {
    *out = NULL;
    http_server *h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        return UMDQ_ENOMEM;
    }
    pthread_mutex_init(&h->conns_mu, NULL);
    h->q = o->q;
    h->lat = o->lat;
    h->started = mono_s();
    h->gen = __atomic_add_fetch(&server_gen, 1, __ATOMIC_SEQ_CST);
    h->db_path = strdup(o->db_path);
    h->home = strdup(o->home);
    h->token = strdup(o->token);
    h->url = strdup(o->url);
    h->zmq = strdup(o->zmq ? o->zmq : "");
    h->epoch = strdup(o->epoch ? o->epoch : "");
    size_t ll = strlen(o->home) + 8;
    h->log_dir = malloc(ll);
    if (!h->db_path || !h->home || !h->token || !h->url || !h->zmq || !h->epoch || !h->log_dir) {
        close(fd);
        http_stop(&h);
        return UMDQ_ENOMEM;
    }
    snprintf(h->log_dir, ll, "%s/logs", o->home);
    snprintf(h->cookie, sizeof h->cookie, "umdq_session_%d", o->port);
    if (web_auth_new(o->token, &h->web) != 0 || web_table_new(&h->table) != 0) {
        close(fd);
        http_stop(&h);
        return UMDQ_ENOMEM;
    }
    const char *host = o->host;
    int v6 = strchr(host, ':') != NULL;
    snprintf(h->hosts[h->nhosts++], sizeof h->hosts[0], v6 && host[0] != '[' ? "[%s]:%d" : "%s:%d", host, o->port);
    snprintf(h->hosts[h->nhosts++], sizeof h->hosts[0], "127.0.0.1:%d", o->port);
    snprintf(h->hosts[h->nhosts++], sizeof h->hosts[0], "localhost:%d", o->port);
    snprintf(h->hosts[h->nhosts++], sizeof h->hosts[0], "[::1]:%d", o->port);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    /* poll(), not epoll: with epoll, libmicrohttpd 0.9.75 misses the close of a client whose
     * unfinished request and FIN arrive together, and such connections stay open until the
     * timeout; a few hundred of them (no token needed) would fill the connection limit. The
     * timeout closes connections idle for HTTP_IDLE_TIMEOUT_S. There is no per-IP limit: every
     * client, the local CLI included, comes from the loopback address. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, access_handler, h,
                              MHD_OPTION_LISTEN_SOCKET, fd,
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)HTTP_THREADS,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
                              MHD_OPTION_NOTIFY_COMPLETED, request_done, h,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                              MHD_OPTION_END);
    if (!h->mhd) {
        snprintf(err, errlen, "http: libmicrohttpd did not start");
        close(fd);
        http_stop(&h);
        return UMDQ_EIO;
    }
    *out = h;
    return 0;
}

void http_stop(http_server **hp) {
    if (!hp || !*hp) return;
    http_server *h = *hp;
    if (h->mhd) MHD_stop_daemon(h->mhd);
    for (int i = 0; i < h->nconns; i++) sqlite3_close(h->conns[i]);
    free(h->conns);
    pthread_mutex_destroy(&h->conns_mu);
    free(h->db_path);
    free(h->home);
    free(h->token);
    free(h->url);
    free(h->zmq);
    free(h->epoch);
    free(h->log_dir);
    web_auth_destroy(&h->web);
    web_table_destroy(&h->table);
    free(h);
    *hp = NULL;
}

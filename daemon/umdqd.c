/* umdqd.c: a daemon process from start to stop: the state directory and its lock, the token, the
 * store, the ZeroMQ and HTTP listeners, umdqd.json, the scheduler, and the order things stop in. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>
#include "http.h"
#include "latency.h"
#include "log.h"
#include "mutq.h"
#include "scheduler.h"
#include "store.h"
#include "umdq.h"
#include "umdqd.h"
#include "util.h"

#define PATH_LEN 4096
#define TOKEN_HEX 64

/* Take the lock on HOME/umdqd.pid and write our pid into it. *fd holds the lock. */
static int pid_lock(const char *home, int *fd, char *err, size_t errlen) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/umdqd.pid", home);
    *fd = -1;
    for (int tries = 0; tries < 5; tries++) {
        int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (f < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return UMDQ_EIO;
        }
        if (flock(f, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char buf[32] = "";
            ssize_t n = pread(f, buf, sizeof buf - 1, 0);
            buf[n > 0 ? n : 0] = 0;
            buf[strcspn(buf, "\n")] = 0;
            close(f);
            if (e != EWOULDBLOCK) {
                snprintf(err, errlen, "%s: cannot lock: %s", path, strerror(e));
                return UMDQ_EIO;
            }
            snprintf(err, errlen, "another umdqd%s%s%s is already running with home %s (stop it first, or use "
                     "another --home)", buf[0] ? " (pid " : "", buf, buf[0] ? ")" : "", home);
            return UMDQ_EBUSY;
        }
        /* the file may have been removed by a daemon stopping just now: lock the one at the path */
        struct stat a, b;
        if (fstat(f, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            char buf[32];
            int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
            if (ftruncate(f, 0) != 0 || pwrite(f, buf, (size_t)n, 0) != n) {
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                close(f);
                return UMDQ_EIO;
            }
            *fd = f;
            return 0;
        }
        close(f);
    }
    snprintf(err, errlen, "%s keeps changing: is another umdqd starting?", path);
    return UMDQ_EBUSY;
}

static void pid_unlock(const char *home, int *fd) {
    if (*fd < 0) return;
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/umdqd.pid", home);
    unlink(path);
    close(*fd);
    *fd = -1;
}

/* HOME/token: read it, or create it once (0600, 64 hex characters). */
static int token_load(const char *home, char token[TOKEN_HEX + 1], char *err, size_t errlen) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/token", home);
    char *data = NULL;
    size_t len = 0;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return UMDQ_EIO;
        }
        if (random_hex(token, TOKEN_HEX) != 0) {
            snprintf(err, errlen, "no random bytes for the token");
            return UMDQ_EIO;
        }
        char line[TOKEN_HEX + 2];
        snprintf(line, sizeof line, "%s\n", token);
        return write_file_atomic(path, line, TOKEN_HEX + 1, 0600, err, errlen);
    }
    if ((sb.st_mode & 077) != 0) {
        log_warn("%s was readable by others: made 0600", path);
        chmod(path, 0600);
    }
    int rc = read_file(path, &data, &len, 4096, err, errlen);
    if (rc != 0) return rc;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ')) data[--len] = 0;
    int ok = len == TOKEN_HEX;
    for (size_t i = 0; i < len && ok; i++) ok = (data[i] >= '0' && data[i] <= '9') || (data[i] >= 'a' && data[i] <= 'f');
    if (ok) memcpy(token, data, TOKEN_HEX + 1);
    free(data);
    if (!ok) {
        snprintf(err, errlen, "%s is not 64 lower-case hex characters: remove it to have a new one made", path);
        return UMDQ_EFORMAT;
    }
    return 0;
}

/* Bind the ROUTER to addr; endpoint receives what was bound ("tcp://127.0.0.1:40123"). */
static int zmq_listen(void *ctx, const char *addr, void **out, char *endpoint, size_t eplen, char *err, size_t errlen) {
    char host[256], spec[400];
    int port, rc;
    *out = NULL;
    if (strncmp(addr, "tcp://", 6) != 0) {
        snprintf(err, errlen, "--zmq %s: want tcp://HOST:PORT", addr);
        return UMDQ_EINVAL;
    }
    if ((rc = hostport_parse(addr, host, sizeof host, &port, err, errlen)) != 0) return rc;
    if ((rc = host_check_loopback(host, err, errlen)) != 0) return rc;
    int v6 = strchr(host, ':') != NULL;
    char portstr[16];
    if (port) snprintf(portstr, sizeof portstr, "%d", port);
    else snprintf(portstr, sizeof portstr, "*");
    snprintf(spec, sizeof spec, v6 && host[0] != '[' ? "tcp://[%s]:%s" : "tcp://%s:%s", host, portstr);
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    if (!sock) {
        snprintf(err, errlen, "zmq socket: %s", zmq_strerror(errno));
        return UMDQ_EIO;
    }
    int one = 1, linger = 1000;
    int64_t maxmsg = 64 << 20; /* frames past PROTO_MAX_MSG are dropped by the scheduler; far larger ones cut the peer */
    zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (v6) zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one);
    if (zmq_bind(sock, spec) != 0) {
        int e = errno;
        snprintf(err, errlen, "zmq: cannot listen on %s: %s", spec, zmq_strerror(e));
        zmq_close(sock);
        return e == EADDRINUSE ? UMDQ_EBUSY : UMDQ_EIO;
    }
    size_t n = eplen;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, endpoint, &n) != 0) snprintf(endpoint, eplen, "%s", spec);
    *out = sock;
    return 0;
}

static int write_info(const char *home, const char *url, const char *endpoint, const char *epoch, char *err,
                      size_t errlen) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/umdqd.json", home);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "http", url);
    cJSON_AddStringToObject(doc, "zmq", endpoint);
    cJSON_AddNumberToObject(doc, "pid", (double)getpid());
    cJSON_AddStringToObject(doc, "epoch", epoch);
    cJSON_AddStringToObject(doc, "version", UMDQ_VERSION);
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!text) return UMDQ_ENOMEM;
    size_t n = strlen(text);
    int rc = write_file_atomic(path, text, n, 0644, err, errlen);
    free(text);
    return rc;
}

int umdqd_run(const umdqd_options *o, volatile sig_atomic_t *stop, char *err, size_t errlen) {
    int rc = 0, lock_fd = -1, http_fd = -1;
    char path[PATH_LEN], db_path[PATH_LEN], logs[PATH_LEN], token[TOKEN_HEX + 1], epoch[33], endpoint[512], host[256], url[300];
    store *st = NULL;
    void *zctx = NULL, *router = NULL;
    mutq *q = NULL;
    latency *lat = NULL;
    http_server *http = NULL;
    sched *sc = NULL;
    int info_written = 0;
    const char *home = o->home;

    if (strlen(home) > 3000) {
        snprintf(err, errlen, "--home path is too long");
        return UMDQ_EINVAL;
    }
    /* addresses first: a bad one changes nothing on disk */
    char h2[256];
    int p2;
    if (strncmp(o->zmq_addr, "tcp://", 6) != 0) {
        snprintf(err, errlen, "--zmq %s: want tcp://HOST:PORT", o->zmq_addr);
        return UMDQ_EINVAL;
    }
    if ((rc = hostport_parse(o->http_addr, h2, sizeof h2, &p2, err, errlen)) != 0 ||
        (rc = host_check_loopback(h2, err, errlen)) != 0 ||
        (rc = hostport_parse(o->zmq_addr, h2, sizeof h2, &p2, err, errlen)) != 0 ||
        (rc = host_check_loopback(h2, err, errlen)) != 0)
        return rc;
    if (mkdir_p(home, 0700) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", home, strerror(errno));
        return UMDQ_EIO;
    }
    if ((rc = pid_lock(home, &lock_fd, err, errlen)) != 0) return rc;
    snprintf(path, sizeof path, "%s/umdqd.log", home);
    if (log_init("umdqd", path, (log_level)o->log_level) != 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    snprintf(logs, sizeof logs, "%s/logs", home);
    snprintf(path, sizeof path, "%s/artifacts", home);
    if (mkdir_p(logs, 0755) != 0 || mkdir_p(path, 0755) != 0) {
        snprintf(err, errlen, "cannot create %s/logs or artifacts: %s", home, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    if ((rc = token_load(home, token, err, errlen)) != 0) goto fail;
    if (random_hex(epoch, 16) != 0) {
        snprintf(err, errlen, "no random bytes");
        rc = UMDQ_EIO;
        goto fail;
    }
    snprintf(db_path, sizeof db_path, "%s/umdq.db", home);
    if ((rc = store_open(db_path, logs, &st, err, errlen)) != 0) goto fail;
    if (!(zctx = zmq_ctx_new())) {
        snprintf(err, errlen, "zmq: %s", zmq_strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    if ((rc = zmq_listen(zctx, o->zmq_addr, &router, endpoint, sizeof endpoint, err, errlen)) != 0) goto fail;
    int port;
    if ((rc = http_listen(o->http_addr, &http_fd, host, sizeof host, &port, err, errlen)) != 0) goto fail;
    snprintf(url, sizeof url, strchr(host, ':') && host[0] != '[' ? "http://[%s]:%d" : "http://%s:%d", host, port);
    if ((rc = mutq_new(&q, err, errlen)) != 0) goto fail;
    if (!(lat = latency_new())) {
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    sched_options so = {st, router, q, lat, url, token, epoch, o->heartbeat_ms > 0 ? o->heartbeat_ms : 1000};
    if ((rc = sched_new(&so, &sc, err, errlen)) != 0) goto fail;
    http_options ho = {db_path, home, token, host, port, url, endpoint, epoch, q, lat};
    rc = http_start(http_fd, &ho, &http, err, errlen);
    http_fd = -1; /* taken */
    if (rc != 0) goto fail;
    if ((rc = write_info(home, url, endpoint, epoch, err, errlen)) != 0) goto fail;
    info_written = 1;
    log_info("umdqd %s started: pid %ld, home %s, http %s, zmq %s, schema v%d", UMDQ_VERSION, (long)getpid(), home, url,
             endpoint, store_user_version(st));
    rc = sched_run(sc, stop, err, errlen);
    log_info("umdqd stopping");
fail:
    if (rc != 0) log_error("%s", err);
    if (info_written) {
        snprintf(path, sizeof path, "%s/umdqd.json", home);
        unlink(path);
    }
    if (q) mutq_close(q); /* HTTP threads waiting on the scheduler are answered 503 */
    http_stop(&http);
    if (http_fd >= 0) close(http_fd);
    sched_destroy(&sc);
    if (router) zmq_close(router);
    if (zctx) zmq_ctx_term(zctx);
    mutq_destroy(&q);
    latency_destroy(&lat);
    store_destroy(&st);
    if (rc == 0) log_info("umdqd stopped");
    pid_unlock(home, &lock_fd);
    return rc;
}

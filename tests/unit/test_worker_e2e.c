/* test_worker_e2e.c: the real daemon (umdqd on free loopback ports in a temporary home) and one
 * real umdq-worker process: a 4-job command sweep submitted over HTTP runs to the end, every job
 * succeeds, its metric curve and result are stored, its log holds the command's stderr.
 * umdq-uses: common */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t.h"
#include "umdq.h"
#include "util.h"

static char tmp_root[256], home[300], bin_daemon[1024], bin_worker[1024];
static char http_url[256], zmq_endpoint[256], token[128];
static pid_t daemon_pid, worker_pid;

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s;
    (void)w;
    return f == FTW_DP ? rmdir(p) : unlink(p);
}

static pid_t spawn(const char *logname, char *const argv[]) {
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s/%s", tmp_root, logname);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *a = freopen(logpath, "a", stdout);
        FILE *b = freopen(logpath, "a", stderr);
        (void)a;
        (void)b;
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t *pid) {
    if (*pid <= 0) return;
    kill(*pid, SIGTERM);
    int64_t t0 = mono_ms();
    while (waitpid(*pid, NULL, WNOHANG) == 0) {
        if (mono_ms() - t0 > 8000) {
            kill(*pid, SIGKILL);
            waitpid(*pid, NULL, 0);
            break;
        }
        usleep(20000);
    }
    *pid = 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *ctx) {
    strbuf_append(ctx, data, size * n);
    return size * n;
}

/* method path [body] -> parsed JSON (caller frees) and the HTTP status in *status. */
static cJSON *api(const char *method, const char *path, const char *body, long *status) {
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    char url[600], auth[200];
    snprintf(url, sizeof url, "%s%s", http_url, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    strbuf out;
    strbuf_init(&out);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    *status = 0;
    cJSON *j = NULL;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        j = cJSON_Parse(out.data ? out.data : "");
    }
    strbuf_free(&out);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return j;
}

static int64_t num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -999;
}

/* Start umdqd; 0, or a reason to skip in why. */
static int start_daemon(char *why, size_t n) {
    char http_arg[] = "127.0.0.1:0", zmq_arg[] = "tcp://127.0.0.1:*";
    char *argv[] = {bin_daemon, "--home", home, "--http", http_arg, "--zmq", zmq_arg, NULL};
    daemon_pid = spawn("umdqd.out", argv);
    char info_path[400], token_path[400];
    snprintf(info_path, sizeof info_path, "%s/umdqd.json", home);
    snprintf(token_path, sizeof token_path, "%s/token", home);
    int64_t t0 = mono_ms();
    char *text = NULL;
    size_t len;
    char err[256];
    while (mono_ms() - t0 < 10000) {
        if (waitpid(daemon_pid, NULL, WNOHANG) == daemon_pid) {
            daemon_pid = 0;
            snprintf(why, n, "umdqd exited at start (see %s/umdqd.out)", tmp_root);
            return -1;
        }
        if (read_file(info_path, &text, &len, 1 << 16, err, sizeof err) == 0 && len > 0) break;
        free(text);
        text = NULL;
        usleep(50000);
    }
    if (!text) {
        snprintf(why, n, "umdqd wrote no umdqd.json within 10 s");
        return -1;
    }
    cJSON *info = cJSON_Parse(text);
    free(text);
    const cJSON *h = cJSON_GetObjectItem(info, "http"), *z = cJSON_GetObjectItem(info, "zmq");
    if (!cJSON_IsString(h) || !cJSON_IsString(z)) {
        cJSON_Delete(info);
        snprintf(why, n, "umdqd.json lacks http or zmq");
        return -1;
    }
    snprintf(http_url, sizeof http_url, "%s", h->valuestring);
    snprintf(zmq_endpoint, sizeof zmq_endpoint, "%s", z->valuestring);
    cJSON_Delete(info);
    if (read_file(token_path, &text, &len, 4096, err, sizeof err) != 0) {
        snprintf(why, n, "no token file: %s", err);
        return -1;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) text[--len] = 0;
    snprintf(token, sizeof token, "%s", text);
    free(text);
    long status = 0;
    for (int i = 0; i < 100 && status != 200; i++) {
        cJSON_Delete(api("GET", "/api/health", NULL, &status));
        if (status != 200) usleep(50000);
    }
    if (status != 200) {
        snprintf(why, n, "GET /api/health answers %ld", status);
        return -1;
    }
    return 0;
}

static void test_worker_e2e_sweep(void) {
    char why[512];
    if (access(bin_daemon, X_OK) != 0) T_SKIP("%.400s is not built yet", bin_daemon);
    if (start_daemon(why, sizeof why) != 0) T_SKIP("the daemon cannot start yet: %.400s", why);

    char workdir[400];
    snprintf(workdir, sizeof workdir, "%s/work", tmp_root);
    char *wargv[] = {bin_worker, "--connect", zmq_endpoint, "--cpu", "--name", "e2e/cpu0",
                     "--workdir", workdir, NULL};
    worker_pid = spawn("worker.out", wargv);
    T_REQUIRE(worker_pid > 0);

    const char *spec =
        "{\"name\": \"worker-e2e\","
        " \"base\": {\"kind\": \"command\", \"params\": {\"x\": 0},"
        "   \"command\": \"x={params.x}; for s in 1 2 3; do echo \\\"{{\\\\\\\"step\\\\\\\": $s, "
        "\\\\\\\"loss\\\\\\\": $((s * x))}}\\\" >&3; done; "
        "echo \\\"{{\\\\\\\"umdq\\\\\\\": \\\\\\\"result\\\\\\\", \\\\\\\"x\\\\\\\": $x}}\\\"; "
        "echo e2e-stderr-$x >&2\"},"
        " \"grid\": {\"params.x\": [1, 2, 3, 4]}}";
    long status = 0;
    cJSON *r = api("POST", "/api/sweeps", spec, &status);
    T_REQUIRE(r != NULL);
    T_CHECK_MSG(status == 201, "POST /api/sweeps: HTTP %ld", status);
    T_EQ_INT(num(r, "new"), 4);
    int64_t sid = num(cJSON_GetObjectItem(r, "sweep"), "id");
    cJSON_Delete(r);
    T_REQUIRE(sid > 0);

    char path[256];
    snprintf(path, sizeof path, "/api/sweeps/%lld?jobs=0", (long long)sid);
    int64_t t0 = mono_ms();
    int64_t succeeded = 0, failed = 0;
    while (mono_ms() - t0 < 60000) {
        r = api("GET", path, NULL, &status);
        const cJSON *counts = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "sweep"), "counts");
        succeeded = num(counts, "SUCCEEDED");
        failed = num(counts, "FAILED");
        cJSON_Delete(r);
        if (succeeded + (failed > 0 ? failed : 0) >= 4) break;
        usleep(200000);
    }
    T_EQ_INT(succeeded, 4);

    snprintf(path, sizeof path, "/api/sweeps/%lld", (long long)sid);
    cJSON *sw = api("GET", path, NULL, &status);
    T_REQUIRE(sw != NULL);
    const cJSON *job;
    int checked = 0;
    cJSON_ArrayForEach(job, cJSON_GetObjectItem(sw, "jobs")) {
        int64_t id = num(job, "id");
        int64_t x = num(cJSON_GetObjectItem(job, "params"), "params.x");
        T_CHECK_MSG(x >= 1 && x <= 4, "job %lld has params.x %lld", (long long)id, (long long)x);
        T_EQ_STR(cJSON_GetObjectItem(job, "state")->valuestring, "SUCCEEDED");
        T_EQ_INT(num(cJSON_GetObjectItem(job, "results"), "x"), x);
        char mpath[128];
        snprintf(mpath, sizeof mpath, "/api/jobs/%lld/metrics?key=loss", (long long)id);
        cJSON *m = api("GET", mpath, NULL, &status);
        const cJSON *series = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "series"), 0);
        const cJSON *pts = cJSON_GetObjectItem(series, "points");
        T_EQ_INT(cJSON_GetArraySize(pts), 3);
        for (int s = 1; s <= 3 && cJSON_GetArraySize(pts) == 3; s++) {
            const cJSON *p = cJSON_GetArrayItem(pts, s - 1);
            T_EQ_INT((int64_t)cJSON_GetArrayItem(p, 0)->valuedouble, s);
            T_NEAR(cJSON_GetArrayItem(p, 1)->valuedouble, (double)(s * x), 0, 0);
        }
        cJSON_Delete(m);
        snprintf(mpath, sizeof mpath, "/api/jobs/%lld/log", (long long)id);
        cJSON *lg = api("GET", mpath, NULL, &status);
        char want[64];
        snprintf(want, sizeof want, "e2e-stderr-%lld", (long long)x);
        const cJSON *data = cJSON_GetObjectItem(lg, "data");
        T_CONTAINS(cJSON_IsString(data) ? data->valuestring : "", want);
        cJSON_Delete(lg);
        checked++;
    }
    T_EQ_INT(checked, 4);
    cJSON_Delete(sw);

    cJSON *ws = api("GET", "/api/workers", NULL, &status);
    int found = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItem(ws, "workers")) {
        const cJSON *id = cJSON_GetObjectItem(w, "id");
        if (cJSON_IsString(id) && strcmp(id->valuestring, "e2e/cpu0") == 0) found = 1;
    }
    cJSON_Delete(ws);
    T_CHECK(found);
}

int main(void) {
    const char *build = getenv("UMDQ_BUILD");
    snprintf(bin_daemon, sizeof bin_daemon, "%s/bin/umdqd", build ? build : "build");
    snprintf(bin_worker, sizeof bin_worker, "%s/bin/umdq-worker", build ? build : "build");
    if (access(bin_worker, X_OK) != 0) {
        printf("SKIP test_worker_e2e_sweep: %s is not built\n", bin_worker);
        return 0;
    }
    snprintf(tmp_root, sizeof tmp_root, "%s/umdq-worker-e2e-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_root)) {
        printf("FAIL test_worker_e2e_sweep: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(home, sizeof home, "%s/home", tmp_root);
    mkdir(home, 0700);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    T_RUN(test_worker_e2e_sweep);
    stop(&worker_pid);
    stop(&daemon_pid);
    curl_global_cleanup();
    if (t_nfail) {
        printf("logs kept in %s\n", tmp_root);
    } else {
        nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
    return t_done();
}

/* main.c: umdqd, the umdq scheduler daemon: options, signals, exit codes. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "umdq.h"
#include "umdqd.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: umdqd [--home DIR] [--http HOST:PORT] [--zmq tcp://HOST:PORT] [--log-level LEVEL]\n"
            "\n"
            "The umdq scheduler daemon: keeps the job database and artifact store in DIR, serves the HTTP\n"
            "API and dashboard, and hands jobs to umdq-worker processes over ZeroMQ. Runs in the\n"
            "foreground until SIGTERM or SIGINT (`umdq up` starts it in the background).\n"
            "\n"
            "  --home DIR          state directory (default $UMDQ_HOME, else ~/.umdq)\n"
            "  --http HOST:PORT    HTTP API address (default %s; port 0 = any free port)\n"
            "  --zmq ENDPOINT      worker endpoint (default %s; port * or 0 = any free port)\n"
            "  --log-level LEVEL   debug, info, warn or error (default info); the log is DIR/umdqd.log\n"
            "  -h, --help          this help\n"
            "  --version           print the version\n"
            "\n"
            "Addresses must be loopback: authenticated multi-host transport is not available yet.\n"
            "DIR/umdqd.json says where the daemon listens once it is ready; DIR/token is the API token.\n"
            "Exit status: 0 after a clean stop, 1 on a runtime error (another daemon on DIR, address in\n"
            "use, database error), 2 on bad arguments.\n",
            UMDQD_DEFAULT_HTTP, UMDQD_DEFAULT_ZMQ);
}

int main(int argc, char **argv) {
    umdqd_options o = {NULL, UMDQD_DEFAULT_HTTP, UMDQD_DEFAULT_ZMQ, 1000, LOG_INFO};
    log_level level = LOG_INFO;
    char home[4096];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return UMDQ_EXIT_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("umdqd %s (protocol %d)\n", UMDQ_VERSION, UMDQ_PROTOCOL_VERSION);
            return UMDQ_EXIT_OK;
        } else if (strcmp(a, "--home") == 0 || strcmp(a, "--http") == 0 || strcmp(a, "--zmq") == 0 ||
                   strcmp(a, "--log-level") == 0 || strcmp(a, "--heartbeat-ms") == 0) {
            if (!v) {
                fprintf(stderr, "umdqd: %s needs a value (see umdqd --help)\n", a);
                return UMDQ_EXIT_USAGE;
            }
            i++;
            if (strcmp(a, "--home") == 0) o.home = v;
            else if (strcmp(a, "--http") == 0) o.http_addr = v;
            else if (strcmp(a, "--zmq") == 0) o.zmq_addr = v;
            else if (strcmp(a, "--heartbeat-ms") == 0) {
                char *end;
                long ms = strtol(v, &end, 10);
                if (*end || ms < 50 || ms > 600000) {
                    fprintf(stderr, "umdqd: --heartbeat-ms must be in [50, 600000]\n");
                    return UMDQ_EXIT_USAGE;
                }
                o.heartbeat_ms = (int)ms;
            } else if (strcmp(v, "debug") == 0) level = LOG_DEBUG;
            else if (strcmp(v, "info") == 0) level = LOG_INFO;
            else if (strcmp(v, "warn") == 0) level = LOG_WARN;
            else if (strcmp(v, "error") == 0) level = LOG_ERROR;
            else {
                fprintf(stderr, "umdqd: --log-level must be debug, info, warn or error\n");
                return UMDQ_EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "umdqd: unknown argument %s (see umdqd --help)\n", a);
            return UMDQ_EXIT_USAGE;
        }
    }
    if (!o.home) {
        const char *env = getenv("UMDQ_HOME"), *h = getenv("HOME");
        if (env && *env) snprintf(home, sizeof home, "%s", env);
        else if (h && *h) snprintf(home, sizeof home, "%s/.umdq", h);
        else {
            fprintf(stderr, "umdqd: no --home, $UMDQ_HOME or $HOME\n");
            return UMDQ_EXIT_USAGE;
        }
        o.home = home;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    log_init("umdqd", NULL, level);
    char err[1024] = "";
    o.log_level = (int)level;
    int rc = umdqd_run(&o, &stop_requested, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "umdqd: %s\n", err[0] ? err : umdq_strerror(rc));
        log_close();
        return rc == UMDQ_EINVAL ? UMDQ_EXIT_USAGE : UMDQ_EXIT_RUNTIME;
    }
    log_close();
    return UMDQ_EXIT_OK;
}

/* main.c: umdq-worker's command line: options, device choice, --all-gpus supervision. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices.h"
#include "log.h"
#include "proto.h"
#include "supervise.h"
#include "umd.h"
#include "umdq.h"
#include "worker.h"

enum { OPT_CONNECT = 1000, OPT_CPU, OPT_GPU, OPT_ALL_GPUS, OPT_NAME, OPT_WORKDIR, OPT_LOG, OPT_GRACE,
       OPT_VERBOSE, OPT_HELP, OPT_VERSION };

/* The option table: getopt's and --help's. */
static const struct {
    const char *name;
    int has_arg;
    int id;
    const char *arg;
    const char *help;
} options[] = {
    {"connect", 1, OPT_CONNECT, "ENDPOINT", "the daemon's ZeroMQ endpoint, e.g. tcp://127.0.0.1:5756 (required)"},
    {"cpu", 0, OPT_CPU, NULL, "serve the CPU"},
    {"gpu", 1, OPT_GPU, "ID", "serve one GPU: an index or a GPU- UUID (the attempts get CUDA_VISIBLE_DEVICES=ID)"},
    {"all-gpus", 0, OPT_ALL_GPUS, NULL, "one worker process per visible GPU (one CPU worker when there is none)"},
    {"name", 1, OPT_NAME, "NAME", "the worker's name: 1 to 128 printable ASCII characters, no '#' (default HOST/cpu "
                                  "or HOST/gpuID; with --all-gpus NAME/gpuID)"},
    {"workdir", 1, OPT_WORKDIR, "DIR", "where attempts run, in DIR/job-ID-ATTEMPT (default $TMPDIR/umdq-worker-UID)"},
    {"log", 1, OPT_LOG, "FILE", "append log lines to FILE instead of stderr"},
    {"grace-ms", 1, OPT_GRACE, "MS", "SIGTERM -> SIGKILL delay when an attempt is stopped (default 3000; a cancel may ask for less)"},
    {"verbose", 0, OPT_VERBOSE, NULL, "debug log lines"},
    {"help", 0, OPT_HELP, NULL, "this help"},
    {"version", 0, OPT_VERSION, NULL, "print the version"},
};
#define NOPTIONS ((int)(sizeof options / sizeof options[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: umdq-worker --connect ENDPOINT (--cpu | --gpu ID | --all-gpus) [options]\n\n"
               "Runs the jobs that umdqd hands it, one attempt at a time, on one device.\n\n");
    for (int i = 0; i < NOPTIONS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", options[i].name, options[i].arg ? " " : "",
                 options[i].arg ? options[i].arg : "");
        fprintf(f, "  %-22s %s\n", left, options[i].help);
    }
    fprintf(f, "\nExit status: 0 after SIGTERM/SIGINT, 1 on a runtime error or when the daemon rejects\n"
               "the worker, 2 on bad arguments.\n");
}

static int parse_int(const char *s, int min, int max, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return UMDQ_EINVAL;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    struct option longopts[NOPTIONS + 1];
    for (int i = 0; i < NOPTIONS; i++)
        longopts[i] = (struct option){options[i].name, options[i].has_arg, NULL, options[i].id};
    longopts[NOPTIONS] = (struct option){0, 0, 0, 0};

    const char *connect = NULL, *gpu = NULL, *name = NULL, *workdir = NULL, *logpath = NULL,
               *grace_arg = NULL;
    int cpu = 0, all_gpus = 0, verbose = 0, grace_ms = 3000;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CONNECT: connect = optarg; break;
        case OPT_CPU: cpu = 1; break;
        case OPT_GPU: gpu = optarg; break;
        case OPT_ALL_GPUS: all_gpus = 1; break;
        case OPT_NAME: name = optarg; break;
        case OPT_WORKDIR: workdir = optarg; break;
        case OPT_LOG: logpath = optarg; break;
        case OPT_GRACE: grace_arg = optarg; break;
        case OPT_VERBOSE: verbose = 1; break;
        case OPT_HELP: usage(stdout); return 0;
        case OPT_VERSION: printf("umdq-worker %s (protocol %d)\n", UMDQ_VERSION, UMDQ_PROTOCOL_VERSION); return 0;
        default:
            fprintf(stderr, "umdq-worker: unknown option or missing value: %s\n", argv[optind - 1]);
            fprintf(stderr, "try umdq-worker --help\n");
            return UMDQ_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "umdq-worker: unexpected argument: %s\n", argv[optind]);
        return UMDQ_EXIT_USAGE;
    }
    if (!connect) {
        fprintf(stderr, "umdq-worker: --connect ENDPOINT is required (e.g. tcp://127.0.0.1:5756)\n");
        return UMDQ_EXIT_USAGE;
    }
    if (cpu + (gpu != NULL) + all_gpus != 1) {
        fprintf(stderr, "umdq-worker: give exactly one of --cpu, --gpu ID, --all-gpus\n");
        return UMDQ_EXIT_USAGE;
    }
    if (gpu && !devices_valid_id(gpu)) {
        fprintf(stderr, "umdq-worker: --gpu wants a GPU index or a GPU-/MIG- UUID, got \"%s\"\n", gpu);
        return UMDQ_EXIT_USAGE;
    }
    if (grace_arg && parse_int(grace_arg, 0, 3600000, &grace_ms) != 0) {
        fprintf(stderr, "umdq-worker: --grace-ms wants milliseconds (0 .. 3600000), got \"%s\"\n", grace_arg);
        return UMDQ_EXIT_USAGE;
    }
    /* the daemon refuses a name, host or device that is not 1 to 128 printable ASCII characters */
    if (name && (!proto_printable(name, PROTO_MAX_NAME) || strchr(name, '#'))) {
        fprintf(stderr, "umdq-worker: --name must be 1 to %d printable ASCII characters (no control characters), "
                        "without '#'\n", PROTO_MAX_NAME);
        return UMDQ_EXIT_USAGE;
    }

    char host[256];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    char default_workdir[PATH_MAX];
    if (!workdir) {
        const char *tmp = getenv("TMPDIR");
        snprintf(default_workdir, sizeof default_workdir, "%s/umdq-worker-%d", tmp && tmp[0] ? tmp : "/tmp",
                 (int)getuid());
        workdir = default_workdir;
    }
    if (log_init("umdq-worker", logpath, verbose ? LOG_DEBUG : LOG_INFO) != 0) {
        fprintf(stderr, "umdq-worker: cannot open the log file %s: %s\n", logpath, strerror(errno));
        return UMDQ_EXIT_RUNTIME;
    }

    char err[1024] = "";
    if (all_gpus) {
        char ids[DEVICES_MAX][DEVICES_ID_LEN];
        char how[256];
        int n = devices_visible_gpus(ids, DEVICES_MAX, how, sizeof how);
        const char *base = name ? name : host;
        if (n > 0) {
            static char names[DEVICES_MAX][300];
            supervise_gpu gpus[DEVICES_MAX];
            fprintf(stderr, "umdq-worker: %d GPU%s visible (%s): starting one worker per GPU:", n,
                    n == 1 ? "" : "s", how);
            for (int i = 0; i < n; i++) {
                /* a GPU named by UUID gets its position instead */
                if (isdigit((unsigned char)ids[i][0]))
                    snprintf(names[i], sizeof names[i], "%.200s/gpu%.90s", base, ids[i]);
                else
                    snprintf(names[i], sizeof names[i], "%.200s/gpu%d", base, i);
                if (!proto_printable(names[i], PROTO_MAX_NAME)) {
                    fprintf(stderr, "\numdq-worker: the worker name %s is not 1 to %d printable ASCII characters: "
                                    "give a shorter --name\n", names[i], PROTO_MAX_NAME);
                    return UMDQ_EXIT_USAGE;
                }
                gpus[i] = (supervise_gpu){ids[i], names[i]};
                fprintf(stderr, " %s", names[i]);
            }
            fprintf(stderr, "\n");
            char grace_text[16];
            snprintf(grace_text, sizeof grace_text, "%d", grace_ms);
            const char *args[16];
            int k = 0;
            args[k++] = "umdq-worker";
            args[k++] = "--connect";
            args[k++] = connect;
            args[k++] = "--workdir";
            args[k++] = workdir;
            args[k++] = "--grace-ms";
            args[k++] = grace_text;
            if (logpath) {
                args[k++] = "--log";
                args[k++] = logpath;
            }
            if (verbose) args[k++] = "--verbose";
            args[k] = NULL;
            int rc = supervise_run("/proc/self/exe", args, gpus, n, grace_ms + 5000, err, sizeof err);
            if (rc != 0) {
                log_error("%s", err);
                log_close();
                return UMDQ_EXIT_RUNTIME;
            }
            log_close();
            return 0;
        }
        fprintf(stderr, "umdq-worker: no GPU visible (%s): running one CPU worker\n", how);
        cpu = 1; /* --name, when given, then names this CPU worker */
    }

    char default_name[300], device[128], backend[16];
    char gpu_name[256] = "";
    int64_t memory_mb = -1;
    if (cpu) {
        snprintf(device, sizeof device, "cpu");
        snprintf(backend, sizeof backend, "cpu");
        snprintf(default_name, sizeof default_name, "%.200s/cpu", host);
        memory_mb = devices_host_memory_mb();
    } else {
        snprintf(device, sizeof device, "cuda:%.90s", gpu);
        snprintf(backend, sizeof backend, "cuda");
        snprintf(default_name, sizeof default_name, "%.200s/gpu%.90s", host, gpu);
        if (devices_gpu_info(gpu, gpu_name, sizeof gpu_name, &memory_mb) != 0) {
            gpu_name[0] = 0;
            memory_mb = -1;
        }
    }
    const char *final_name = name ? name : default_name;
    if (!proto_printable(final_name, PROTO_MAX_NAME) || !proto_printable(host, PROTO_MAX_NAME) ||
        !proto_printable(device, PROTO_MAX_NAME)) {
        fprintf(stderr, "umdq-worker: the worker name (%s), host name and device must each be 1 to %d printable "
                        "ASCII characters%s\n", final_name, PROTO_MAX_NAME, name ? "" : ": give --name");
        return UMDQ_EXIT_USAGE;
    }
    int umd = umd_backend_available(backend);
    if (!umd) {
        fprintf(stderr, "umdq-worker: umd jobs need the %s backend, which this build's trainer lacks%s; "
                        "this worker runs only command jobs\n",
                backend, strcmp(backend, "cuda") == 0 ? " (built without nvcc, or lib/umdq/libumd_cuda.so is missing)" : "");
    }
    /* a CPU worker's attempts see no GPU (CUDA_VISIBLE_DEVICES=""), so that a job with
     * train.device "auto" trains on the CPU it was given even on a machine with GPUs */
    worker_opts o = {
        .connect = connect, .name = name ? name : default_name, .host = host, .device = device,
        .backend = backend, .cuda_devices = cpu ? "" : gpu, .workdir = workdir, .grace_ms = grace_ms,
        .umd = umd, .gpu_name = gpu_name[0] ? gpu_name : NULL, .memory_mb = memory_mb,
    };
    worker *w = NULL;
    int rc = worker_new(&o, &w, err, sizeof err);
    if (rc == 0) rc = worker_run(w, err, sizeof err);
    worker_destroy(&w);
    if (rc != 0) {
        log_error("%s", err);
        if (logpath) fprintf(stderr, "umdq-worker: %s\n", err);
    }
    log_close();
    if (rc == UMDQ_EINVAL) return UMDQ_EXIT_USAGE;
    return rc == 0 ? 0 : UMDQ_EXIT_RUNTIME;
}

/* devices.c: visible GPUs, GPU names and memory, host memory, found without initialising CUDA. */
#include "devices.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "umdq.h"

static int count_proc_gpus(void) {
    DIR *d = opendir("/proc/driver/nvidia/gpus");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static int count_nvidia_smi_gpus(void) {
    FILE *p = popen("nvidia-smi -L 2>/dev/null", "r");
    if (!p) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, p))
        if (strncmp(line, "GPU ", 4) == 0) n++;
    int st = pclose(p);
    return st == 0 ? n : -1;
}

int devices_driver_gpus(char *how, size_t howlen) {
    int n = count_proc_gpus();
    if (n > 0) {
        if (how) snprintf(how, howlen, "/proc/driver/nvidia/gpus");
        return n;
    }
    int m = count_nvidia_smi_gpus();
    if (m > 0) {
        if (how) snprintf(how, howlen, "nvidia-smi -L");
        return m;
    }
    if (how) snprintf(how, howlen, "no NVIDIA driver found (/proc/driver/nvidia/gpus, nvidia-smi)");
    return 0;
}

int devices_valid_id(const char *id) {
    if (!id || !id[0]) return 0;
    if (strncmp(id, "GPU-", 4) == 0 || strncmp(id, "MIG-", 4) == 0) {
        if (!id[4] || strlen(id) >= DEVICES_ID_LEN) return 0;
        for (const char *p = id + 4; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '/') return 0;
        return 1;
    }
    if (strlen(id) > 4) return 0;
    for (const char *p = id; *p; p++)
        if (!isdigit((unsigned char)*p)) return 0;
    return 1;
}

int devices_parse_visible(const char *value, int driver_count, char ids[][DEVICES_ID_LEN], int max) {
    int n = 0;
    const char *p = value;
    while (p && n < max) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char entry[DEVICES_ID_LEN];
        /* surrounding blanks are tolerated, as CUDA does */
        while (len > 0 && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)p[len - 1])) len--;
        if (len == 0 || len >= sizeof entry) break;
        memcpy(entry, p, len);
        entry[len] = 0;
        if (!devices_valid_id(entry)) break;
        if (isdigit((unsigned char)entry[0]) && driver_count >= 0 && atoi(entry) >= driver_count) break;
        int dup = 0;
        for (int i = 0; i < n; i++) dup |= strcmp(ids[i], entry) == 0;
        if (dup) break;
        memcpy(ids[n++], entry, len + 1);
        p = comma ? comma + 1 : NULL;
    }
    return n;
}

int devices_visible_gpus(char ids[][DEVICES_ID_LEN], int max, char *how, size_t howlen) {
    char found[128];
    int driver = devices_driver_gpus(found, sizeof found);
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    if (cvd) {
        int n = driver > 0 ? devices_parse_visible(cvd, driver, ids, max) : 0;
        if (how) {
            if (driver > 0) snprintf(how, howlen, "CUDA_VISIBLE_DEVICES=%s of %d GPU%s (%s)", cvd, driver,
                                     driver == 1 ? "" : "s", found);
            else snprintf(how, howlen, "CUDA_VISIBLE_DEVICES=%s, but %s", cvd, found);
        }
        return n;
    }
    int n = driver < max ? driver : max;
    for (int i = 0; i < n; i++) snprintf(ids[i], DEVICES_ID_LEN, "%d", i);
    if (how) snprintf(how, howlen, "%s", found);
    return n;
}

int devices_gpu_info(const char *id, char *name, size_t namelen, int64_t *memory_mb) {
    if (!devices_valid_id(id)) return UMDQ_EINVAL;
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits -i %s 2>/dev/null", id);
    FILE *p = popen(cmd, "r");
    if (!p) return UMDQ_ENOTFOUND;
    char line[512] = "";
    char *got = fgets(line, sizeof line, p);
    int st = pclose(p);
    if (!got || st != 0) return UMDQ_ENOTFOUND;
    char *comma = strrchr(line, ',');
    if (!comma) return UMDQ_ENOTFOUND;
    *comma = 0;
    snprintf(name, namelen, "%s", line);
    *memory_mb = strtoll(comma + 1, NULL, 10);
    return 0;
}

int64_t devices_host_memory_mb(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* loader.c: the CUDA entry points of umd_cuda.h as libumd sees them. In a build with nvcc they
 * open the backend's shared object on first use and call into it; in a build without, they report
 * that there is no CUDA. Opening it loads cuBLAS and the CUDA runtime into this process (hundreds
 * of MiB of mappings), which is why it waits until a trainer asks for the GPU. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "umd_cuda.h"

#if UMDQ_HAVE_CUDA
#define CUDA_LIB_NAME "libumd_cuda.so"

/* Where the object is: $UMDQ_CUDA_LIB, else lib/umdq/ beside the program's bin/ directory (the
 * build tree's bin/, tests/ and bench/, and an installed PREFIX/bin/, all sit one level below). */
static int lib_path(char *out, size_t n) {
    const char *env = getenv("UMDQ_CUDA_LIB");
    if (env && env[0]) return (size_t)snprintf(out, n, "%s", env) < n ? 0 : -1;
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return -1;
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
    return (size_t)snprintf(out, n, "%s/../lib/umdq/" CUDA_LIB_NAME, exe) < n ? 0 : -1;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const umd_cuda_api *api;
static char why[PATH_MAX + 256];

static void load(void) {
    char path[PATH_MAX];
    if (lib_path(path, sizeof path) != 0) {
        snprintf(why, sizeof why, "cannot tell where %s is (set UMDQ_CUDA_LIB)", CUDA_LIB_NAME);
        return;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, sizeof why, "cannot load the CUDA backend: %s", dlerror());
        return;
    }
    const umd_cuda_api *(*get)(void);
    *(void **)&get = dlsym(h, UMD_CUDA_API_SYMBOL);
    const umd_cuda_api *a = get ? get() : NULL;
    if (!a || a->version != UMD_CUDA_API_VERSION) {
        snprintf(why, sizeof why, "%s is not a CUDA backend of this version of umdq", path);
        dlclose(h);
        return;
    }
    api = a; /* the object stays loaded for the life of the process */
}

static const umd_cuda_api *backend(void) {
    pthread_once(&once, load);
    return api;
}

int umd_cuda_built(char *err, size_t errlen) {
    char path[PATH_MAX];
    if (lib_path(path, sizeof path) == 0 && access(path, R_OK) == 0) return 1;
    if (err && errlen)
        snprintf(err, errlen, "the CUDA backend %s is missing",
                 lib_path(path, sizeof path) == 0 ? path : CUDA_LIB_NAME);
    return 0;
}

const umd_ops *umd_ops_cuda(int math) {
    return backend() ? api->ops(math) : NULL;
}

int umd_cuda_devices(char *err, size_t errlen) {
    if (backend()) return api->devices(err, errlen);
    snprintf(err, errlen, "%s", why);
    return 0;
}

int umd_cuda_memory(umd_ctx *c, size_t *peak_alloc, size_t *device_used, size_t *device_total) {
    if (backend()) return api->memory(c, peak_alloc, device_used, device_total);
    *peak_alloc = *device_used = *device_total = 0;
    return -1;
}

void umd_cuda_describe(umd_ctx *c, char *buf, size_t n) {
    if (backend()) api->describe(c, buf, n);
    else snprintf(buf, n, "no CUDA (%s)", why);
}

double umd_cuda_gemm_tflops(umd_ctx *c, int math, int M, int N, int K, int reps) {
    return backend() ? api->gemm_tflops(c, math, M, N, K, reps) : -1.0;
}

int umd_cuda_set_attention(umd_ctx *c, int mode) {
    return backend() ? api->set_attention(c, mode) : -1;
}

int umd_cuda_profile(umd_ctx *c, int on) {
    return backend() ? api->profile(c, on) : -1;
}

void umd_cuda_profile_report(umd_ctx *c, int per, char *buf, size_t n) {
    if (backend()) api->profile_report(c, per, buf, n);
    else snprintf(buf, n, "no CUDA (%s)", why);
}

int umd_cuda_profile_floors(umd_ctx *c, double tflops, double tbps) {
    return backend() ? api->profile_floors(c, tflops, tbps) : -1;
}

#else /* a build without nvcc */

int umd_cuda_built(char *err, size_t errlen) {
    if (err && errlen)
        snprintf(err, errlen, "this build has no CUDA backend (nvcc was not found when it was built)");
    return 0;
}

const umd_ops *umd_ops_cuda(int math) {
    (void)math;
    return NULL;
}

int umd_cuda_devices(char *err, size_t errlen) {
    umd_cuda_built(err, errlen);
    return 0;
}

int umd_cuda_memory(umd_ctx *c, size_t *peak_alloc, size_t *device_used, size_t *device_total) {
    (void)c;
    *peak_alloc = *device_used = *device_total = 0;
    return -1;
}

void umd_cuda_describe(umd_ctx *c, char *buf, size_t n) {
    (void)c;
    snprintf(buf, n, "no CUDA");
}

double umd_cuda_gemm_tflops(umd_ctx *c, int math, int M, int N, int K, int reps) {
    (void)c, (void)math, (void)M, (void)N, (void)K, (void)reps;
    return -1.0;
}

int umd_cuda_set_attention(umd_ctx *c, int mode) {
    (void)c, (void)mode;
    return -1;
}

int umd_cuda_profile(umd_ctx *c, int on) {
    (void)c, (void)on;
    return -1;
}

void umd_cuda_profile_report(umd_ctx *c, int per, char *buf, size_t n) {
    (void)c, (void)per;
    snprintf(buf, n, "no CUDA");
}

int umd_cuda_profile_floors(umd_ctx *c, double tflops, double tbps) {
    (void)c, (void)tflops, (void)tbps;
    return -1;
}
#endif

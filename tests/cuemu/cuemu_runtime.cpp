/* cuemu_runtime.cpp: the CUDA runtime calls of kernels/cuda/, for the emulator (cuemu.h). One
 * device, an H100 as far as the backend asks (sm_90, 132 multiprocessors, 80 GiB), whose memory
 * is the process's: an allocation is host memory filled with 0xff bytes (NaN in fp32 and bf16),
 * so a value read before anything wrote it shows, that ends (rounded up to 256 bytes, as a
 * device's allocations are) at a page no access may touch, with another before it, and is
 * unmapped when freed: a read or write past either end, or after cudaFree, faults, and the
 * emulator names the kernel's block and thread. Work runs when it is queued, in the order it is
 * queued, whatever the stream, so a stream is always idle; an event holds the host time it was
 * recorded at. A stream being captured (cudaStreamBeginCapture) keeps its kernels, copies and sets
 * in the graph instead, and a graph's launch runs them in order; a call that waits for the device
 * or copies synchronously while a capture is open fails, as on a device, and invalidates it. */
#include "cuemu.h"
#include <map>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <vector>

struct CUstream_st {
    int capturing, invalid;
    std::vector<std::function<void()>> *graph;
};
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
struct CUevent_st {
    double ms;
    int recorded;
};

namespace cuemu {
namespace {
const size_t TOTAL = 80ull << 30;
size_t in_use = 0;
std::map<void *, size_t> blocks;
CUstream_st default_stream;

CUstream_st *stream_of(cudaStream_t s) { return s ? s : &default_stream; }

/* the stream capturing on this thread, if any (the backend's capture mode is thread-local) */
CUstream_st *capturing = NULL;

double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* a call that would wait for the device while a capture is open */
cudaError_t refuse_in_capture() {
    if (!capturing) return cudaSuccess;
    capturing->invalid = 1;
    return cudaErrorStreamCaptureUnsupported;
}
} // namespace

void enqueue(cudaStream_t stream, std::function<void()> work) {
    CUstream_st *s = stream_of(stream);
    if (s->capturing)
        s->graph->push_back(std::move(work));
    else
        work();
}
} // namespace cuemu

using namespace cuemu;

extern "C" {
cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    default: return "unknown error";
    }
}
const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    default: return "cudaErrorUnknown";
    }
}
/* launches are checked against the device's 227 KiB only (cuemu.h): the value is validated */
cudaError_t cudaFuncSetAttribute(const void *, enum cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize && (value < 0 || value > 232448))
        return cudaErrorInvalidValue;
    return cudaSuccess;
}
/* blocks of `threads` a multiprocessor holds by shared memory and threads alone (the emulator
 * knows no registers) */
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *, int threads,
                                                          size_t smem) {
    int by_smem = (int)(233472 / (smem + 1024)), by_threads = threads > 0 ? 2048 / threads : 0;
    *n = by_smem < by_threads ? by_smem : by_threads;
    if (*n > 32) *n = 32;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    if (d != 0) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu (an sm_90 device emulated on the CPU)");
    p->major = 9, p->minor = 0;
    p->totalGlobalMem = TOTAL;
    p->multiProcessorCount = 132;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = 232448;
    p->sharedMemPerMultiprocessor = 233472;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsPerMultiProcessor = 2048;
    p->warpSize = 32;
    p->regsPerBlock = 65536;
    p->l2CacheSize = 50 * 1024 * 1024;
    p->maxGridSize[0] = 2147483647, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *total) {
    *fr = TOTAL - in_use, *total = TOTAL;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return refuse_in_capture(); }

/* the mapping of an allocation of n bytes: its length, and the offset of the block in it */
static void span_of(size_t n, size_t *len, size_t *off) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE), body = (n + 255) / 256 * 256;
    *len = (body + pg - 1) / pg * pg + 2 * pg;
    *off = *len - pg - body;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = NULL;
    if (capturing) return refuse_in_capture();
    if (n > TOTAL - in_use) return last_error = cudaErrorMemoryAllocation;
    size_t len, off;
    span_of(n ? n : 1, &len, &off);
    char *m = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return last_error = cudaErrorMemoryAllocation;
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    mprotect(m, pg, PROT_NONE);
    mprotect(m + len - pg, pg, PROT_NONE);
    memset(m + off, 0xff, len - pg - off);
    blocks[m + off] = n, in_use += n, *p = m + off;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    auto b = blocks.find(p);
    if (b == blocks.end()) return cudaErrorInvalidValue;
    size_t len, off;
    span_of(b->second ? b->second : 1, &len, &off);
    in_use -= b->second;
    blocks.erase(b);
    munmap((char *)p - off, len);
    return cudaSuccess;
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t) {
    if (capturing) {
        *p = NULL;
        return refuse_in_capture(); /* the backend allocates outside recordings */
    }
    return cudaMalloc(p, n);
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t) { return cudaFree(p); }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind) {
    if (capturing) return refuse_in_capture();
    memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t s) {
    if (stream_of(s)->capturing &&
        (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToDevice))
        return refuse_in_capture(); /* a copy to or from pageable host memory */
    enqueue(s, [=]() { memmove(dst, src, n); });
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n) {
    if (capturing) return refuse_in_capture();
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    enqueue(s, [=]() { memset(p, v, n); });
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int) {
    *s = new CUstream_st();
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (s && s->capturing) return cudaErrorStreamCaptureUnsupported;
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return refuse_in_capture(); }
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode) {
    CUstream_st *st = stream_of(s);
    if (st->capturing || capturing) return cudaErrorIllegalState;
    st->capturing = 1, st->invalid = 0;
    st->graph = new std::vector<std::function<void()>>();
    capturing = st;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    CUstream_st *st = stream_of(s);
    *g = NULL;
    if (!st->capturing) return cudaErrorIllegalState;
    st->capturing = 0, capturing = NULL;
    std::vector<std::function<void()>> *ops = st->graph;
    st->graph = NULL;
    if (st->invalid) {
        delete ops;
        return cudaErrorStreamCaptureInvalidated;
    }
    *g = new CUgraph_st();
    (*g)->ops.swap(*ops);
    delete ops;
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *st) {
    CUstream_st *x = stream_of(s);
    *st = !x->capturing ? cudaStreamCaptureStatusNone
          : x->invalid  ? cudaStreamCaptureStatusInvalidated
                        : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
    if (!g) return cudaErrorInvalidValue;
    *e = new CUgraphExec_st();
    (*e)->ops = g->ops;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
    if (!e) return cudaErrorInvalidValue;
    if (stream_of(s)->capturing) return refuse_in_capture();
    for (auto &op : e->ops)
        op();
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = new CUevent_st();
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return cudaErrorInvalidResourceHandle;
    enqueue(s, [e]() { e->ms = now_ms(), e->recorded = 1; });
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidResourceHandle;
    return refuse_in_capture();
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    return e ? cudaSuccess : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!a || !b) return cudaErrorInvalidResourceHandle;
    if (!a->recorded || !b->recorded) return cudaErrorInvalidResourceHandle;
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
}

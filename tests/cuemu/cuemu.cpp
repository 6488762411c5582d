/* cuemu.cpp: the emulator's scheduler, warp collectives and CUDA runtime calls (cuemu.h says
 * what it runs and checks). */
#include "cuemu.h"
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>

/* Switching fibers: on x86-64, the callee-saved registers pushed on the running stack, the stack
 * pointers exchanged (no signal mask saved, as swapcontext does with a system call each time);
 * elsewhere ucontext. */
#if defined(__x86_64__)
extern "C" void cuemu_switch(void **save_sp, void *load_sp);
asm(".text\n"
    ".globl cuemu_switch\n"
    ".type cuemu_switch, @function\n"
    "cuemu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size cuemu_switch, .-cuemu_switch\n");
#define CUEMU_FAST_SWITCH 1
#endif
#include <unistd.h>
#include <vector>

namespace cuemu {
uint3 tid, bid;
dim3 bdim, gdim;
cudaError_t last_error = cudaSuccess;

namespace {
enum State { RUN, BARRIER, COLLECTIVE, DONE };
enum Op { OP_NONE, OP_SHFL, OP_MMA, OP_LDSM, OP_MOVT, OP_SYNCWARP, OP_WMMA };
const char *op_name[] = {
    "none",       "__shfl_xor_sync", "mma.sync.m16n8k16", "ldmatrix.x4.trans", "movmatrix.trans",
    "__syncwarp", "wmma::mma_sync"};

struct Copy {
    void *dst;
    const void *src;
    int bytes, size;
};

struct Fiber {
    ucontext_t uc;
    void *sp;
    State st;
    /* the collective this lane waits at: its operands in, its results out */
    Op op;
    uint32_t in[10];
    float c[4];
    const void *p;
    const float *wa, *wb, *wc;
    float *wd;
    uint32_t out[4];
    std::vector<Copy> copies;
};

const size_t STACK = 256 * 1024;
const size_t SMEM_MAX = 232448; /* sm_90: 227 KiB a block, opted in */

#ifdef CUEMU_FAST_SWITCH
void *sched_sp;
#else
ucontext_t sched;
#endif
std::vector<Fiber> fibers;
std::vector<char *> stacks;
int cur = -1, nthreads = 0, decreasing = 0;
long launches = 0;
const std::function<void()> *cur_body;
alignas(128) unsigned char shared[SMEM_MAX];
size_t cur_smem;

[[noreturn]] void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: block (%u, %u, %u) thread (%u, %u, %u): ", bid.x, bid.y, bid.z, tid.x,
            tid.y, tid.z);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    abort();
}

/* A fault inside a kernel (a test's device buffers end at a page that faults): say where. */
void on_fault(int sig, siginfo_t *si, void *) {
    char m[320];
    int n = cur < 0
                ? snprintf(m, sizeof m, "cuemu: %s at %p, outside a kernel\n", strsignal(sig),
                           si->si_addr)
                : snprintf(m, sizeof m,
                           "cuemu: block (%u, %u, %u) thread (%u, %u, %u): %s at %p (an "
                           "access outside a buffer, or a fiber's stack overflowed)\n",
                           bid.x, bid.y, bid.z, tid.x, tid.y, tid.z, strsignal(sig), si->si_addr);
    if (n > 0 && write(2, m, (size_t)n) < 0) n = 0;
    signal(sig, SIG_DFL);
    raise(sig);
}
void catch_faults() {
    static int done = 0;
    if (done) return;
    done = 1;
    static char alt[64 * 1024];
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = alt, ss.ss_size = sizeof alt;
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

void set_tid(int i) {
    tid.x = (unsigned)i % bdim.x;
    tid.y = (unsigned)i / bdim.x % bdim.y;
    tid.z = (unsigned)i / (bdim.x * bdim.y);
}

void fiber_main() {
    (*cur_body)();
    fibers[cur].st = DONE;
    if (!fibers[cur].copies.empty()) die("returned with cp.async copies never waited for");
#ifdef CUEMU_FAST_SWITCH
    void *dead;
    cuemu_switch(&dead, sched_sp); /* never resumed */
#endif
    /* (ucontext) returns to sched (uc_link) */
}

void yield(State st) {
    fibers[cur].st = st;
#ifdef CUEMU_FAST_SWITCH
    cuemu_switch(&fibers[cur].sp, sched_sp);
#else
    swapcontext(&fibers[cur].uc, &sched);
#endif
}

uint16_t half(uint32_t v, int hi) { return (uint16_t)(hi ? v >> 16 : v & 0xffff); }
float bf(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The warp w0 .. w0 + 31's collective, every lane waiting at op. */
void collective(int w0) {
    Fiber *f = &fibers[w0];
    const Op op = f[0].op;
    for (int l = 1; l < 32; l++)
        if (f[l].op != op) {
            cur = w0 + l;
            set_tid(cur);
            die("lane %d waits at %s while lane 0 waits at %s", l, op_name[f[l].op], op_name[op]);
        }
    if (op == OP_SHFL) {
        uint32_t v[32];
        for (int l = 0; l < 32; l++)
            v[l] = f[l].in[0];
        for (int l = 0; l < 32; l++)
            f[l].out[0] = v[(l ^ (int)f[l].in[1]) & 31];
    } else if (op == OP_MMA) {
        /* lane 4g + t: A a0 (g, 2t..) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..); B b0 (2t..,
         * g) b1 (2t+8.., g); C c0 c1 (g, 2t..) c2 c3 (g+8, 2t..) */
        float A[16][16], Bt[8][16], C[16][8];
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            for (int h = 0; h < 2; h++) {
                A[g][2 * t + h] = bf(half(f[l].in[0], h));
                A[g + 8][2 * t + h] = bf(half(f[l].in[1], h));
                A[g][2 * t + 8 + h] = bf(half(f[l].in[2], h));
                A[g + 8][2 * t + 8 + h] = bf(half(f[l].in[3], h));
                Bt[g][2 * t + h] = bf(half(f[l].in[4], h));
                Bt[g][2 * t + 8 + h] = bf(half(f[l].in[5], h));
                C[g][2 * t + h] = f[l].c[h];
                C[g + 8][2 * t + h] = f[l].c[2 + h];
            }
        }
        /* bf16 products are exact in fp32; summed in fp32, k in order, then C added */
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            for (int e = 0; e < 4; e++) {
                const int i = g + (e >> 1) * 8, j = 2 * t + (e & 1);
                float s = 0;
                for (int k = 0; k < 16; k++)
                    s += A[i][k] * Bt[j][k];
                float r = C[i][j] + s;
                memcpy(&f[l].out[e], &r, 4);
            }
        }
    } else if (op == OP_LDSM) {
        /* lane 8i + j addresses row j of matrix i (8 b16); .trans: lane 4g + t receives
         * elements (2t, g), (2t + 1, g) of matrix i in register i */
        uint16_t M[4][8][8];
        for (int l = 0; l < 32; l++) {
            const unsigned char *p = (const unsigned char *)f[l].p;
            if (p < shared || p + 16 > shared + cur_smem || ((uintptr_t)p & 15)) {
                cur = w0 + l;
                set_tid(cur);
                die("ldmatrix row address %p is not a 16-byte aligned row of the block's %zu "
                    "bytes of shared memory",
                    (const void *)p, cur_smem);
            }
            memcpy(M[l >> 3][l & 7], p, 16);
        }
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            for (int i = 0; i < 4; i++)
                f[l].out[i] = (uint32_t)M[i][2 * t][g] | (uint32_t)M[i][2 * t + 1][g] << 16;
        }
    } else if (op == OP_WMMA) {
        /* A 16 x 8 (4 a lane), B 8 x 16 (4), C and D 16 x 16 (8), row-major over the lanes */
        double A[16][8], B[8][16], C[16][16];
        for (int l = 0; l < 32; l++) {
            for (int i = 0; i < 4; i++) {
                const int e = l * 4 + i;
                A[e / 8][e % 8] = f[l].wa[i];
                B[e / 16][e % 16] = f[l].wb[i];
            }
            for (int i = 0; i < 8; i++)
                C[(l * 8 + i) / 16][(l * 8 + i) % 16] = f[l].wc[i];
        }
        for (int l = 0; l < 32; l++)
            for (int i = 0; i < 8; i++) {
                const int r = (l * 8 + i) / 16, c = (l * 8 + i) % 16;
                double v = C[r][c];
                for (int k = 0; k < 8; k++)
                    v += A[r][k] * B[k][c];
                f[l].wd[i] = (float)v;
            }
    } else if (op == OP_MOVT) {
        /* lane 4g + t holds row g, columns 2t, 2t + 1 */
        uint16_t M[8][8];
        for (int l = 0; l < 32; l++) {
            M[l >> 2][2 * (l & 3)] = half(f[l].in[0], 0);
            M[l >> 2][2 * (l & 3) + 1] = half(f[l].in[0], 1);
        }
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            f[l].out[0] = (uint32_t)M[2 * t][g] | (uint32_t)M[2 * t + 1][g] << 16;
        }
    }
    for (int l = 0; l < 32; l++)
        f[l].st = RUN, f[l].op = OP_NONE;
}

void wait_collective(Op op) {
    if (nthreads % 32) die("%s in a block of %d threads (not whole warps)", op_name[op], nthreads);
    fibers[cur].op = op;
    yield(COLLECTIVE);
}

void run_block() {
    memset(shared, 0xff, sizeof shared);
    for (int i = 0; i < nthreads; i++) {
        Fiber &f = fibers[i];
#ifdef CUEMU_FAST_SWITCH
        /* the first switch pops six zero registers and returns into fiber_main with the stack
         * aligned as a call leaves it */
        uintptr_t top = ((uintptr_t)stacks[i] + STACK) & ~(uintptr_t)15;
        void **sp = (void **)(top - 16);
        sp[0] = (void *)fiber_main;
        sp -= 6;
        memset(sp, 0, 6 * sizeof *sp);
        f.sp = sp;
#else
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = stacks[i];
        f.uc.uc_stack.ss_size = STACK;
        f.uc.uc_link = &sched;
        makecontext(&f.uc, fiber_main, 0);
#endif
        f.st = RUN;
        f.op = OP_NONE;
        f.copies.clear();
    }
    /* a warp at a time, as far as it goes: its lanes each until they wait, its collectives as
     * soon as its 32 lanes wait at one, until every lane waits at a barrier or has returned;
     * then the next warp. So a warp runs ahead of the others to the next barrier, and reads
     * what they have not yet written unless a barrier orders them. */
    const int nwarps = (nthreads + 31) / 32;
    for (;;) {
        for (int wk = 0; wk < nwarps; wk++) {
            const int w0 = 32 * (decreasing ? nwarps - 1 - wk : wk);
            const int lanes = nthreads - w0 < 32 ? nthreads - w0 : 32;
            for (;;) {
                for (int k = 0; k < lanes; k++) {
                    const int i = w0 + (decreasing ? lanes - 1 - k : k);
                    if (fibers[i].st != RUN) continue;
                    cur = i;
                    set_tid(i);
#ifdef CUEMU_FAST_SWITCH
                    cuemu_switch(&sched_sp, fibers[i].sp);
#else
                    swapcontext(&sched, &fibers[i].uc);
#endif
                }
                int n = 0;
                for (int l = 0; l < lanes; l++)
                    n += fibers[w0 + l].st == COLLECTIVE;
                if (n == 0) break;
                if (n < 32)
                    for (int l = 0; l < lanes; l++)
                        if (fibers[w0 + l].st != COLLECTIVE) {
                            cur = w0 + l;
                            set_tid(cur);
                            die("this thread %s while lanes of its warp wait at a warp collective",
                                fibers[cur].st == DONE ? "has returned" : "waits at a barrier");
                        }
                collective(w0);
            }
        }
        int done = 0;
        for (int i = 0; i < nthreads; i++)
            done += fibers[i].st == DONE;
        if (done == nthreads) break;
        /* every thread waits at a barrier or has returned */
        for (int i = 0; i < nthreads; i++)
            if (fibers[i].st == BARRIER) fibers[i].st = RUN;
    }
}
} // namespace

void syncthreads() { yield(BARRIER); }

void syncwarp() { wait_collective(OP_SYNCWARP); }

void wmma_mma(float *d, const float *a, const float *b, const float *c) {
    Fiber &f = fibers[cur];
    float dd[8];
    f.wa = a, f.wb = b, f.wc = c, f.wd = dd;
    wait_collective(OP_WMMA);
    memcpy(d, dd, sizeof dd); /* d may be c */
}

uint32_t shfl_xor(uint32_t v, int lane_mask) {
    Fiber &f = fibers[cur];
    f.in[0] = v;
    f.in[1] = (uint32_t)lane_mask;
    wait_collective(OP_SHFL);
    return fibers[cur].out[0];
}

void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    Fiber &f = fibers[cur];
    for (int i = 0; i < 4; i++)
        f.in[i] = a[i], f.c[i] = c[i];
    f.in[4] = b0, f.in[5] = b1;
    wait_collective(OP_MMA);
    memcpy(c, fibers[cur].out, 16);
}

void ldsm_x4_trans(uint32_t b[4], const void *p) {
    fibers[cur].p = p;
    wait_collective(OP_LDSM);
    memcpy(b, fibers[cur].out, 16);
}

uint32_t movtrans(uint32_t v) {
    fibers[cur].in[0] = v;
    wait_collective(OP_MOVT);
    return fibers[cur].out[0];
}

void cp_async(void *dst, const void *src, int bytes, int size) {
    unsigned char *d = (unsigned char *)dst;
    if (d < shared || d + size > shared + cur_smem || ((uintptr_t)d & (size - 1)) ||
        ((uintptr_t)src & (size - 1)))
        die("cp.async of %d bytes to %p from %p: not aligned, or not in the block's %zu bytes of "
            "shared memory",
            size, dst, src, cur_smem);
    fibers[cur].copies.push_back(Copy{dst, src, bytes, size});
}

void cp_wait_all() {
    for (const Copy &c : fibers[cur].copies) {
        if (c.bytes) memcpy(c.dst, c.src, (size_t)c.bytes);
        memset((unsigned char *)c.dst + c.bytes, 0, (size_t)(c.size - c.bytes));
    }
    fibers[cur].copies.clear();
}

unsigned char *smem() { return shared; }

void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    const long n = (long)block.x * block.y * block.z;
    if (n < 1 || n > 1024 || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
        grid.y > 65535 || grid.z > 65535 || smem > SMEM_MAX) {
        fprintf(stderr,
                "cuemu: launch refused: grid (%u, %u, %u), block (%u, %u, %u), %zu bytes of "
                "shared memory (%zu at most)\n",
                grid.x, grid.y, grid.z, block.x, block.y, block.z, smem, SMEM_MAX);
        last_error = cudaErrorInvalidValue;
        return;
    }
    launches++;
    catch_faults();
    nthreads = (int)n;
    if (fibers.size() < (size_t)n) fibers.resize((size_t)n);
    while (stacks.size() < (size_t)n) {
        void *s =
            mmap(NULL, STACK + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (s == MAP_FAILED) {
            perror("cuemu: mmap");
            abort();
        }
        mprotect(s, 4096, PROT_NONE); /* a stack that overflows faults */
        stacks.push_back((char *)s + 4096);
    }
    bdim = block, gdim = grid;
    cur_body = &body, cur_smem = smem;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                bid.x = x, bid.y = y, bid.z = z;
                run_block();
            }
    cur = -1;
}
} // namespace cuemu

extern "C" void cuemu_set_order(int d) { cuemu::decreasing = d; }
extern "C" long cuemu_launches(void) { return cuemu::launches; }

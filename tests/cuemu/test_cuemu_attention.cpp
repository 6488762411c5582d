/* test_cuemu_attention: the tensor-core attention kernels of kernels/cuda/mma_attention.cu, their
 * own code, run on the CPU by the emulator (tests/cuemu/cuemu.h), against attention in double on
 * the same bf16 inputs: the resident kernels (T <= 384) and the tiled ones, the forward in its
 * three forms (default, 32-row strips, the last strips shared), the backward with every switch
 * (the 32-query dK dV step, the last strips shared, dQ from a stored dS, in groups of heads and
 * falling back where no head's dS fits), fp32 and bf16 qkv, O, dqkv and dout. Each run is
 * repeated with the threads in the other order between waits, which must give the same bits, and
 * the switches that keep bits are checked to keep them. The device buffers end at a page that
 * faults, so reading or writing past one stops the test. The kernels' host code is the
 * backend's (every .cu file of kernels/cuda compiled for the emulator), called on a context made
 * here. On a GPU, test_cuda_ops checks the same kernels as compiled for the device. */
#include "../unit/t.h"
#include "cuda_internal.h"
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

typedef __nv_bfloat16 bf16;
enum { HD = 64 };

/* `bytes` ending 256-byte aligned at a page no access may touch, with one before the start */
static void *dev_alloc(size_t bytes) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (bytes + 255) / 256 * 256;
    const size_t span = (n + pg - 1) / pg * pg + 2 * pg;
    char *m = (char *)mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    mprotect(m, pg, PROT_NONE);
    mprotect(m + span - pg, pg, PROT_NONE);
    return m + span - pg - n;
}
static void dev_free(void *p, size_t bytes) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (bytes + 255) / 256 * 256;
    const size_t span = (n + pg - 1) / pg * pg + 2 * pg;
    char *end = (char *)p + n + pg;
    munmap(end - span, span);
}

static float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* One problem: qkv (n, T, 3, heads, 64) and dout (n, T, heads, 64) as fp32 values that bf16
 * holds exactly, the reference's results in double. */
struct Problem {
    int n, T, heads;
    std::vector<float> qkv, dout, out, lse, dqkv;
    size_t W() const { return (size_t)heads * HD; }
    size_t rows() const { return (size_t)n * T; }
};

static void reference(Problem &p) {
    const int n = p.n, T = p.T, H = p.heads;
    const size_t W = p.W(), R = 3 * W;
    const double scale = 1.0 / 8.0;
    p.out.assign(p.rows() * W, 0), p.lse.assign((size_t)n * H * T, 0),
        p.dqkv.assign(p.rows() * R, 0);
    std::vector<double> P((size_t)T * T), dP((size_t)T * T), o((size_t)T * HD);
    for (int b = 0; b < n; b++)
        for (int h = 0; h < H; h++) {
            const float *base = &p.qkv[(size_t)b * T * R];
            auto q = [&](int i, int d) { return (double)base[i * R + h * HD + d]; };
            auto k = [&](int i, int d) { return (double)base[i * R + W + h * HD + d]; };
            auto v = [&](int i, int d) { return (double)base[i * R + 2 * W + h * HD + d]; };
            auto g = [&](int i, int d) {
                return (double)p.dout[((size_t)b * T + i) * W + h * HD + d];
            };
            for (int i = 0; i < T; i++) {
                double m = -1e300, l = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int d = 0; d < HD; d++)
                        s += q(i, d) * k(j, d);
                    P[(size_t)i * T + j] = s * scale;
                    if (s * scale > m) m = s * scale;
                }
                for (int j = 0; j < T; j++)
                    l += exp(P[(size_t)i * T + j] - m);
                for (int j = 0; j < T; j++)
                    P[(size_t)i * T + j] = exp(P[(size_t)i * T + j] - m) / l;
                p.lse[((size_t)b * H + h) * T + i] = (float)(m + log(l));
                for (int d = 0; d < HD; d++) {
                    double a = 0;
                    for (int j = 0; j < T; j++)
                        a += P[(size_t)i * T + j] * v(j, d);
                    o[(size_t)i * HD + d] = a;
                    p.out[((size_t)b * T + i) * W + h * HD + d] = (float)a;
                }
            }
            float *dq = &p.dqkv[(size_t)b * T * R];
            for (int i = 0; i < T; i++) {
                double D = 0;
                for (int d = 0; d < HD; d++)
                    D += g(i, d) * o[(size_t)i * HD + d];
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int d = 0; d < HD; d++)
                        s += g(i, d) * v(j, d);
                    dP[(size_t)i * T + j] = P[(size_t)i * T + j] * (s - D) * scale; /* dS */
                }
            }
            for (int i = 0; i < T; i++)
                for (int d = 0; d < HD; d++) {
                    double aq = 0, ak = 0, av = 0;
                    for (int j = 0; j < T; j++) {
                        aq += dP[(size_t)i * T + j] * k(j, d);
                        ak += dP[(size_t)j * T + i] * q(j, d);
                        av += P[(size_t)j * T + i] * g(j, d);
                    }
                    dq[i * R + h * HD + d] = (float)aq;
                    dq[i * R + W + h * HD + d] = (float)ak;
                    dq[i * R + 2 * W + h * HD + d] = (float)av;
                }
        }
}

static Problem make_problem(int n, int T, int heads) {
    Problem p;
    p.n = n, p.T = T, p.heads = heads;
    p.qkv.resize(p.rows() * 3 * p.W());
    p.dout.resize(p.rows() * p.W());
    for (float &x : p.qkv)
        x = round_bf16(2.0f * frand());
    for (float &x : p.dout)
        x = round_bf16(frand());
    reference(p);
    return p;
}

/* A device buffer of `count` values of an element size (4 fp32, 2 bf16). */
struct Buf {
    void *p = NULL;
    size_t bytes = 0;
    Buf(size_t count, int es) : p(dev_alloc(count * (size_t)es)), bytes(count * (size_t)es) {
        memset(p, 0xff, bytes); /* NaN in either type: an element never written shows */
    }
    ~Buf() { dev_free(p, bytes); }
    Buf(const Buf &) = delete;
    Buf &operator=(const Buf &) = delete;
    void put(const std::vector<float> &v, int es) {
        for (size_t i = 0; i < v.size(); i++)
            if (es == 4)
                ((float *)p)[i] = v[i];
            else
                ((bf16 *)p)[i] = __float2bfloat16_rn(v[i]);
    }
    std::vector<float> get(size_t count, int es) const {
        std::vector<float> v(count);
        for (size_t i = 0; i < count; i++)
            v[i] = es == 4 ? ((const float *)p)[i] : __bfloat162float(((const bf16 *)p)[i]);
        return v;
    }
};

/* The switches of one run. */
struct Config {
    int qbf = 1, obf = 0, gbf = 0, dbf = 0;
    int fwd32 = 0, split = 0, kv32 = 0, ds = 0;
    size_t ds_heads = 64; /* heads whose dS the attention workspace holds (ds) */
    int ds_max_t = 384;   /* the longest sequence that takes dS (UMDQ_CUDA_ATTN_DS_MAX_T) */
};

struct Result {
    std::vector<float> out, lse, dqkv;
    long launches;
    long ds_calls;
    long ds_pad; /* elements of the last group's stored dS, query below T and key at or past T
                    (documented as zero), that are not +0 */
    int failed;
    char err[512];
};

/* The forward, then the backward from the forward's out and lse, in a fresh context. */
static Result run(const Problem &p, const Config &cf, int decreasing) {
    Result r;
    umd_ctx *c = (umd_ctx *)calloc(1, sizeof(umd_ctx));
    c->math = UMD_MATH_BF16;
    c->attn_mode = UMD_ATTN_MMA;
    c->attn_fwd32 = cf.fwd32, c->attn_split = cf.split, c->attn_ds = cf.ds;
    c->attn_ds_max_t = cf.ds_max_t;
    c->attn_kv32 = cf.kv32;
    memset(c->kv32_res, cf.kv32 ? 1 : -1, sizeof c->kv32_res); /* the step the config names */
    memset(c->kv32_ds, cf.kv32 ? 1 : -1, sizeof c->kv32_ds);
    const size_t W = p.W(), R = 3 * W, Tr = (size_t)(p.T + 15) / 16 * 16;
    c->attn_d_floats = p.rows() * p.heads;
    Buf D(c->attn_d_floats, 4);
    c->attn_d = (float *)D.p;
    const size_t ds_floats = cf.ds_heads * p.n * Tr * Tr / 2;
    Buf ws(ds_floats ? ds_floats : 1, 4);
    c->attn = (float *)ws.p, c->attn_floats = ds_floats;
    const int qs = cf.qbf ? 2 : 4, os = cf.obf ? 2 : 4, gs = cf.gbf ? 2 : 4, dsz = cf.dbf ? 2 : 4;
    Buf qkv(p.rows() * R, qs), out(p.rows() * W, os), lse((size_t)p.n * p.heads * p.T, 4);
    Buf dout(p.rows() * W, dsz), dqkv(p.rows() * R, gs);
    qkv.put(p.qkv, qs);
    dout.put(p.dout, dsz);
    cuemu_set_order(decreasing);
    const long l0 = cuemu_launches();
    cuda_mma_attention_fwd(c, out.p, (float *)lse.p, qkv.p, p.n, p.T, p.heads, cf.qbf, cf.obf);
    if (!c->failed)
        cuda_mma_attention_bwd(c, dqkv.p, dout.p, qkv.p, out.p, (const float *)lse.p, p.n, p.T,
                               p.heads, cf.qbf, cf.obf, cf.gbf, cf.dbf);
    r.launches = cuemu_launches() - l0;
    r.ds_calls = c->attn_ds_calls;
    r.failed = c->failed;
    snprintf(r.err, sizeof r.err, "%s", c->err);
    r.out = out.get(p.rows() * W, os);
    r.lse = lse.get((size_t)p.n * p.heads * p.T, 4);
    r.dqkv = dqkv.get(p.rows() * R, gs);
    r.ds_pad = 0;
    if (cf.ds && cf.ds_heads) { /* the workspace holds the last group's dS: hn heads a sequence */
        const int group = cf.ds_heads < (size_t)p.heads ? (int)cf.ds_heads : p.heads;
        const int hn = p.heads - (p.heads - 1) / group * group;
        const uint16_t *ds = (const uint16_t *)ws.p;
        for (size_t m = 0; m < (size_t)p.n * hn; m++)
            for (size_t q = 0; q < (size_t)p.T; q++)
                for (size_t k = (size_t)p.T; k < Tr; k++) r.ds_pad += ds[(m * Tr + q) * Tr + k] != 0;
    }
    free(c);
    return r;
}

/* max |got - want| over max |want| (NaN where got has one), over the elements i whose group
 * i / width is `part` modulo `parts` (width 1, parts 1: all of them) */
static double rel_err(const std::vector<float> &got, const std::vector<float> &want,
                      size_t width = 1, size_t parts = 1, size_t part = 0) {
    double e = 0, m = 0;
    for (size_t i = 0; i < want.size(); i++) {
        if ((i / width) % parts != part) continue;
        if (isnan(got[i])) return NAN;
        e = fmax(e, fabs((double)got[i] - want[i]));
        m = fmax(m, fabs((double)want[i]));
    }
    return m > 0 ? e / m : e;
}
/* the part (0 q, 1 k, 2 v) of dqkv: rows of 3 W, each part W wide */
static double err_part(const std::vector<float> &got, const std::vector<float> &want, size_t W,
                       int part) {
    return rel_err(got, want, W, 3, (size_t)part);
}
static int same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

/* Runs cf on p in both orders, checks the two agree bit for bit and every output is within tol
 * of the reference (1e-2 of the largest value, as the GPU tests' bf16 tolerance). */
static Result check(const Problem &p, const Config &cf, const char *what) {
    Result a = run(p, cf, 0), b = run(p, cf, 1);
    T_CHECK_MSG(!a.failed, "%s: the context failed: %s", what, a.err);
    T_CHECK_MSG(same_bits(a.out, b.out) && same_bits(a.lse, b.lse) && same_bits(a.dqkv, b.dqkv),
                "%s: the threads' order changed the results", what);
    const double tol = 1e-2, eo = rel_err(a.out, p.out), el = rel_err(a.lse, p.lse);
    T_CHECK_MSG(eo <= tol, "%s: out off by %.3g of its largest value", what, eo);
    T_CHECK_MSG(el <= 1e-3, "%s: lse off by %.3g", what, el);
    for (int part = 0; part < 3; part++) {
        const double e = err_part(a.dqkv, p.dqkv, p.W(), part);
        T_CHECK_MSG(e <= tol, "%s: d%c off by %.3g of its largest value", what, "qkv"[part], e);
    }
    return a;
}

static void test_cuemu_attention_resident(void) {
    /* T mod 16 of 1, 1, 1, 13 and 1: a last strip of 16 rows partly past T in either half */
    const int Ts[] = {1, 17, 65, 125, 129};
    for (int T : Ts) {
        Problem p = make_problem(2, T, 2);
        char what[64];
        snprintf(what, sizeof what, "T %d", T);
        Config cf;
        Result r = check(p, cf, what);
        T_EQ_INT(r.launches, 3);
        cf.qbf = 0;
        check(p, cf, what);
    }
}

/* O, dqkv and dout in bf16 (branch and gradient tensors), and each with the others fp32 */
static void test_cuemu_attention_types(void) {
    Problem p = make_problem(2, 65, 2);
    Config cf;
    cf.obf = 1;
    check(p, cf, "bf16 O");
    cf.gbf = 1;
    check(p, cf, "bf16 O, dqkv");
    cf.dbf = 1;
    check(p, cf, "bf16 O, dqkv, dout");
    cf.obf = 0;
    check(p, cf, "bf16 dqkv, dout");
}

/* the forward's 32-row strips, the 32-query dK dV step: the same bits as without (kv32) */
static void test_cuemu_attention_steps(void) {
    Problem p = make_problem(1, 129, 2);
    Config cf;
    Result d = check(p, cf, "default");
    cf.kv32 = 1;
    Result k = check(p, cf, "kv32");
    T_CHECK_MSG(same_bits(k.dqkv, d.dqkv), "the 32-query step changed dqkv's bits");
    cf.kv32 = 0, cf.fwd32 = 1;
    check(p, cf, "fwd32");
}

/* the last strips shared (UMDQ_CUDA_ATTN_SPLIT) at lengths of 4k + 1 and 4k + 2 strips */
static void test_cuemu_attention_split(void) {
    const int Ts[] = {65, 81, 257};
    for (int T : Ts) {
        Problem p = make_problem(1, T, T > 200 ? 1 : 2);
        char what[64];
        snprintf(what, sizeof what, "split, T %d", T);
        Config cf;
        cf.split = 1;
        check(p, cf, what);
        cf.gbf = cf.dbf = cf.obf = 1;
        check(p, cf, what);
    }
}

/* dQ from a stored dS (UMDQ_CUDA_ATTN_DS): dK and dV the default's bits, dQ within rounding; in
 * groups of heads where the workspace holds fewer than all; the default where it holds none */
static void test_cuemu_attention_ds(void) {
    const int Ts[] = {17, 65, 125, 257, 383};
    for (int T : Ts) {
        Problem p = make_problem(1, T, T > 200 ? 1 : 3);
        const size_t W = p.W();
        char what[64];
        snprintf(what, sizeof what, "ds, T %d", T);
        for (int kv32 = 0; kv32 < 2; kv32++) {
            Config cf;
            cf.kv32 = kv32;
            Result d = check(p, cf, what);
            cf.ds = 1;
            Result s = check(p, cf, what);
            T_EQ_INT(s.ds_calls, 1);
            T_EQ_INT(s.launches, 3);
            T_EQ_INT(s.ds_pad, 0);
            std::vector<float> dk_d, dk_s;
            for (size_t i = 0; i < d.dqkv.size(); i++)
                if ((i / W) % 3) dk_d.push_back(d.dqkv[i]), dk_s.push_back(s.dqkv[i]);
            T_CHECK_MSG(same_bits(dk_d, dk_s), "%s: dK dV differ from the default's", what);
            T_CHECK_MSG(err_part(s.dqkv, d.dqkv, W, 0) <= 2e-3, "%s: dQ off the default's by %.3g",
                        what, err_part(s.dqkv, d.dqkv, W, 0));
        }
    }
    /* 3 heads, the workspace holding 2: groups of 2 and 1, four launches; holding none: the
     * default's two */
    Problem p = make_problem(2, 65, 3);
    Config cf;
    cf.ds = 1, cf.ds_heads = 2;
    Result g = check(p, cf, "ds in groups");
    T_EQ_INT(g.launches, 5);
    T_EQ_INT(g.ds_calls, 1);
    T_EQ_INT(g.ds_pad, 0);
    cf.gbf = cf.dbf = 1;
    check(p, cf, "ds in groups, bf16 dqkv, dout");
    cf.ds_heads = 0;
    Result none = check(p, cf, "ds, no room");
    T_EQ_INT(none.launches, 3);
    T_EQ_INT(none.ds_calls, 0);
    /* past the longest sequence that takes dS (the default 192): the default's kernels and bits */
    Problem q = make_problem(1, 257, 1);
    Config off, capped;
    capped.ds = 1, capped.ds_max_t = 192;
    Result d = check(q, off, "ds capped, default"), c = check(q, capped, "ds capped at 192");
    T_EQ_INT(c.ds_calls, 0);
    T_CHECK_MSG(same_bits(c.dqkv, d.dqkv), "T 257, dS capped at 192: dqkv not the default's bits");
}

/* the tiled kernels (T past the resident 384) */
static void test_cuemu_attention_tiled(void) {
    Problem p = make_problem(1, 400, 1);
    Config cf;
    check(p, cf, "tiled");
    cf.qbf = 0, cf.kv32 = 1;
    check(p, cf, "tiled, fp32 qkv, kv32");
}

int main(void) {
    T_RUN(test_cuemu_attention_resident);
    T_RUN(test_cuemu_attention_types);
    T_RUN(test_cuemu_attention_steps);
    T_RUN(test_cuemu_attention_split);
    T_RUN(test_cuemu_attention_ds);
    T_RUN(test_cuemu_attention_tiled);
    return t_done();
}

/* cuemu_blas.cpp: the cuBLAS and cuBLASLt calls of kernels/cuda/, for the emulator (cuemu.h):
 * column-major GEMMs on the CPU (OpenBLAS's sgemm on the operands widened to fp32), each queued on
 * its stream like a kernel (so a capture records it), fp32 and bf16 operands and outputs, products
 * summed in fp32 (TF32 compute takes the fp32
 * values as they are: within its tolerance), alpha and beta from host memory. cuBLASLt's matmul
 * with the epilogues the backend asks for: BIAS, GELU_AUX_BIAS (aux = the sum with the bias,
 * D = gelu of it), DGELU and DGELU_BGRAD (D = the sum times gelu'(aux), the bias gradient the
 * sums of D's rows), GELU in its tanh form. The heuristic offers two algorithms, with split-K
 * and every reduction scheme, that all compute the same thing; their configuration is kept in
 * the algorithm's own bytes, as cuBLASLt keeps it. */
#include "cuemu.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <vector>

struct cublasContext {
    cudaStream_t stream;
};
struct cublasLtContext {
    int unused;
};

namespace {
struct Layout {
    cudaDataType type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Desc {
    cublasComputeType_t compute;
    cublasOperation_t ta, tb;
    cublasLtEpilogue_t epi;
    const void *bias;
    cudaDataType bias_type; /* (cudaDataType)-1: D's */
    void *aux;
    int64_t aux_ld;
    cudaDataType aux_type; /* (cudaDataType)-1: D's */
};
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "layout fits");
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t), "descriptor fits");

Layout *L(cublasLtMatrixLayout_t l) { return reinterpret_cast<Layout *>(l); }
Desc *D(cublasLtMatmulDesc_t d) { return reinterpret_cast<Desc *>(d); }

float load(const void *p, cudaDataType t, size_t i) {
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i])
                            : ((const float *)p)[i];
}
void store(void *p, cudaDataType t, size_t i, float v) {
    if (t == CUDA_R_16BF)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((float *)p)[i] = v;
}
bool known(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

/* S (m, n) = op(A) op(B), column-major, in fp32 */
void product(std::vector<float> &S, bool ta, bool tb, int m, int n, int k, const void *A,
             cudaDataType at, long lda, const void *B, cudaDataType bt, long ldb) {
    std::vector<float> a((size_t)m * k), b((size_t)n * k); /* op(A) rows, op(B) columns */
    for (int i = 0; i < m; i++)
        for (int l = 0; l < k; l++)
            a[(size_t)i * k + l] = load(A, at, ta ? (size_t)i * lda + l : (size_t)l * lda + i);
    for (int j = 0; j < n; j++)
        for (int l = 0; l < k; l++)
            b[(size_t)j * k + l] = load(B, bt, tb ? (size_t)l * ldb + j : (size_t)j * ldb + l);
    S.assign((size_t)m * n, 0.0f);
    if (m > 0 && n > 0 && k > 0) /* S^T (n, m) row-major = b a^T (OpenBLAS, fp32 sums) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.0f, b.data(), k, a.data(),
                    k, 0.0f, S.data(), m);
}

void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const void *A, cudaDataType at,
          long lda, const void *B, cudaDataType bt, long ldb, float beta, void *C, cudaDataType ct,
          long ldc) {
    std::vector<float> S;
    product(S, ta, tb, m, n, k, A, at, lda, B, bt, ldb);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            const size_t at_c = (size_t)j * ldc + i;
            float v = alpha * S[(size_t)j * m + i];
            if (beta != 0.0f) v += beta * load(C, ct, at_c);
            store(C, ct, at_c, v);
        }
}

float gelu(float x) {
    const float k0 = 0.7978845608f, k1 = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(k0 * (x + k1 * x * x * x)));
}
float dgelu(float x) {
    const float k0 = 0.7978845608f, k1 = 0.044715f;
    const float t = tanhf(k0 * (x + k1 * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k0 * (1.0f + 3.0f * k1 * x * x);
}

} // namespace

extern "C" {
cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = new cublasContext();
    (*h)->stream = 0;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *, size_t) {
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS         ? "CUBLAS_STATUS_SUCCESS"
           : s == CUBLAS_STATUS_NOT_SUPPORTED ? "CUBLAS_STATUS_NOT_SUPPORTED"
                                              : "CUBLAS_STATUS_INVALID_VALUE";
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t,
                            cublasGemmAlgo_t) {
    if (!known(at) || !known(bt) || !known(ct) || m < 0 || n < 0 || k < 0)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    cuemu::enqueue(h->stream, [=]() {
        gemm(ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, al, A, at, lda, B, bt, ldb, be, C, ct,
             ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType at,
                                          int lda, long long sa, const void *B, cudaDataType bt,
                                          int ldb, long long sb, const void *beta, void *C,
                                          cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t, cublasGemmAlgo_t) {
    if (!known(at) || !known(bt) || !known(ct)) return CUBLAS_STATUS_NOT_SUPPORTED;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    const int ea = at == CUDA_R_16BF ? 2 : 4, eb = bt == CUDA_R_16BF ? 2 : 4,
              ec = ct == CUDA_R_16BF ? 2 : 4;
    cuemu::enqueue(h->stream, [=]() {
        for (int i = 0; i < batch; i++)
            gemm(ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, al, (const char *)A + i * sa * ea,
                 at, lda, (const char *)B + i * sb * eb, bt, ldb, be, (char *)C + i * sc * ec, ct,
                 ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void *alpha, const void *const A[],
                                   cudaDataType at, int lda, const void *const B[], cudaDataType bt,
                                   int ldb, const void *beta, void *const C[], cudaDataType ct,
                                   int ldc, int batch, cublasComputeType_t, cublasGemmAlgo_t) {
    if (!known(at) || !known(bt) || !known(ct)) return CUBLAS_STATUS_NOT_SUPPORTED;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    cuemu::enqueue(h->stream, [=]() {
        for (int i = 0; i < batch; i++) /* the pointer arrays are read when the GEMM runs */
            gemm(ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, al, A[i], at, lda, B[i], bt, ldb,
                 be, C[i], ct, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSgemv_v2(cublasHandle_t h, cublasOperation_t t, int m, int n,
                              const float *alpha, const float *A, int lda, const float *x, int incx,
                              const float *beta, float *y, int incy) {
    const float al = *alpha, be = *beta;
    cuemu::enqueue(h->stream, [=]() {
        const int rows = t == CUBLAS_OP_N ? m : n, len = t == CUBLAS_OP_N ? n : m;
        for (int i = 0; i < rows; i++) {
            float s = 0;
            for (int l = 0; l < len; l++)
                s += (t == CUBLAS_OP_N ? A[(size_t)l * lda + i] : A[(size_t)i * lda + l]) *
                     x[(size_t)l * incx];
            float v = al * s;
            if (be != 0.0f) v += be * y[(size_t)i * incy];
            y[(size_t)i * incy] = v;
        }
    });
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- cuBLASLt ---- */
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = new cublasLtContext();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t ct,
                                        cudaDataType_t) {
    *d = (cublasLtMatmulDesc_t)calloc(1, sizeof(cublasLtMatmulDescOpaque_t));
    Desc *x = D(*d);
    x->compute = ct, x->ta = x->tb = CUBLAS_OP_N, x->epi = CUBLASLT_EPILOGUE_DEFAULT;
    x->bias_type = x->aux_type = (cudaDataType)-1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    free(d);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a, const void *buf,
                                              size_t n) {
    Desc *x = D(d);
    int32_t i32 = 0;
    if (n == 4) memcpy(&i32, buf, 4);
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: x->ta = (cublasOperation_t)i32; break;
    case CUBLASLT_MATMUL_DESC_TRANSB: x->tb = (cublasOperation_t)i32; break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: x->epi = (cublasLtEpilogue_t)i32; break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: memcpy(&x->bias, buf, sizeof x->bias); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: x->bias_type = (cudaDataType)i32; break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: memcpy(&x->aux, buf, sizeof x->aux); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: memcpy(&x->aux_ld, buf, sizeof x->aux_ld); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: x->aux_type = (cudaDataType)i32; break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    *l = (cublasLtMatrixLayout_t)calloc(1, sizeof(cublasLtMatrixLayoutOpaque_t));
    *L(*l) = Layout{t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    free(l);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = (cublasLtMatmulPreference_t)calloc(1, sizeof(cublasLtMatmulPreferenceOpaque_t));
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                    cublasLtMatmulPreferenceAttributes_t,
                                                    const void *, size_t) {
    return CUBLAS_STATUS_SUCCESS;
}

/* an algorithm's configuration, in its bytes: id, tile, stages, split-K, reduction scheme,
 * swizzling, custom option, inner and cluster shape */
enum { A_ID, A_TILE, A_STAGES, A_SPLITK, A_SCHEME, A_SWIZZLE, A_CUSTOM, A_SHAPES };
static int config_slot(cublasLtMatmulAlgoConfigAttributes_t a, size_t *size, int *shift) {
    *size = 4, *shift = 0;
    switch (a) {
    case CUBLASLT_ALGO_CONFIG_ID: return A_ID;
    case CUBLASLT_ALGO_CONFIG_TILE_ID: return A_TILE;
    case CUBLASLT_ALGO_CONFIG_STAGES_ID: return A_STAGES;
    case CUBLASLT_ALGO_CONFIG_SPLITK_NUM: return A_SPLITK;
    case CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME: return A_SCHEME;
    case CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING: return A_SWIZZLE;
    case CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION: return A_CUSTOM;
    case CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID: *size = 2; return A_SHAPES;
    case CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID: *size = 2, *shift = 32; return A_SHAPES;
    default: return -1;
    }
}
cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t a,
                                                    void *buf, size_t n, size_t *written) {
    size_t size;
    int shift, slot = config_slot(a, &size, &shift);
    if (slot < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (written) *written = size;
    if (!buf || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (n < size) return CUBLAS_STATUS_INVALID_VALUE;
    const uint64_t v = algo->data[slot] >> shift;
    if (size == 2) {
        uint16_t s = (uint16_t)v;
        memcpy(buf, &s, 2);
    } else {
        uint32_t s = (uint32_t)v;
        memcpy(buf, &s, 4);
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoConfigSetAttribute(cublasLtMatmulAlgo_t *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t a,
                                                    const void *buf, size_t n) {
    size_t size;
    int shift, slot = config_slot(a, &size, &shift);
    if (slot < 0 || n < size) return CUBLAS_STATUS_INVALID_VALUE;
    uint64_t v = 0;
    memcpy(&v, buf, size);
    const uint64_t mask = (size == 2 ? 0xffffull : 0xffffffffull) << shift;
    algo->data[slot] = (algo->data[slot] & ~mask) | (v << shift);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoCapGetAttribute(const cublasLtMatmulAlgo_t *,
                                                 cublasLtMatmulAlgoCapAttributes_t a, void *buf,
                                                 size_t n, size_t *written) {
    uint32_t v;
    switch (a) {
    case CUBLASLT_ALGO_CAP_SPLITK_SUPPORT: v = 1; break;
    case CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK:
        v = CUBLASLT_REDUCTION_SCHEME_INPLACE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
            CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
        break;
    case CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_D_BYTES: v = 4; break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (written) *written = 4;
    if (!buf || n < 4) return n == 0 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    memcpy(buf, &v, 4);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoInit(cublasLtHandle_t, cublasComputeType_t, cudaDataType_t,
                                      cudaDataType_t, cudaDataType_t, cudaDataType_t,
                                      cudaDataType_t, int id, cublasLtMatmulAlgo_t *algo) {
    memset(algo, 0, sizeof *algo);
    algo->data[A_ID] = (uint32_t)id;
    algo->data[A_SPLITK] = 1;
    return CUBLAS_STATUS_SUCCESS;
}
static bool lt_supported(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                         cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd) {
    return known(L(a)->type) && known(L(b)->type) && known(L(c)->type) && known(L(dd)->type) &&
           (D(d)->epi == CUBLASLT_EPILOGUE_DEFAULT || D(d)->epi == CUBLASLT_EPILOGUE_BIAS ||
            D(d)->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || D(d)->epi == CUBLASLT_EPILOGUE_DGELU ||
            D(d)->epi == CUBLASLT_EPILOGUE_DGELU_BGRAD);
}
cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                       cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                       cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                       const cublasLtMatmulAlgo_t *algo,
                                       cublasLtMatmulHeuristicResult_t *r) {
    if (!lt_supported(d, a, b, c, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
    memset(r, 0, sizeof *r);
    r->algo = *algo, r->state = CUBLAS_STATUS_SUCCESS, r->wavesCount = 1.0f;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t, int want,
                                              cublasLtMatmulHeuristicResult_t res[], int *got) {
    *got = 0;
    if (!lt_supported(d, a, b, c, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
    for (int i = 0; i < want && i < 2; i++) {
        memset(&res[i], 0, sizeof res[i]);
        cublasLtMatmulAlgoInit(h, D(d)->compute, CUDA_R_32F, L(a)->type, L(b)->type, L(c)->type,
                               L(dd)->type, 10 + i, &res[i].algo);
        res[i].algo.data[A_TILE] = (uint32_t)(i + 1);
        res[i].state = CUBLAS_STATUS_SUCCESS, res[i].wavesCount = 1.0f;
        (*got)++;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                              cublasLtMatrixLayout_t lc, void *Dp, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t stream) {
    if (!lt_supported(desc, la, lb, lc, ld)) return CUBLAS_STATUS_NOT_SUPPORTED;
    const Desc x = *D(desc); /* as set now: the bias and aux pointers of this call */
    const Layout a = *L(la), b = *L(lb), c = *L(lc), d = *L(ld);
    const float al = *(const float *)alpha, be = *(const float *)beta;
    const bool ta = x.ta != CUBLAS_OP_N, tb = x.tb != CUBLAS_OP_N;
    const int m = (int)d.rows, n = (int)d.cols, k = (int)(ta ? a.rows : a.cols);
    if ((ta ? a.cols : a.rows) != (uint64_t)m || (tb ? b.rows : b.cols) != (uint64_t)n ||
        (tb ? b.cols : b.rows) != (uint64_t)k || c.rows != d.rows || c.cols != d.cols)
        return CUBLAS_STATUS_INVALID_VALUE;
    cuemu::enqueue(stream, [=]() {
        std::vector<float> S;
        product(S, ta, tb, m, n, k, A, a.type, a.ld, B, b.type, b.ld);
        const cudaDataType bias_t = x.bias_type == (cudaDataType)-1 ? d.type : x.bias_type;
        const cudaDataType aux_t = x.aux_type == (cudaDataType)-1 ? d.type : x.aux_type;
        std::vector<float> rows(x.epi == CUBLASLT_EPILOGUE_DGELU_BGRAD ? m : 0, 0.0f);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float v = al * S[(size_t)j * m + i];
                if (be != 0.0f) v += be * load(C, c.type, (size_t)j * c.ld + i);
                const size_t xi = (size_t)j * x.aux_ld + i;
                switch (x.epi) {
                case CUBLASLT_EPILOGUE_BIAS:
                    if (x.bias) v += load(x.bias, bias_t, (size_t)i);
                    break;
                case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
                    if (x.bias) v += load(x.bias, bias_t, (size_t)i);
                    store(x.aux, aux_t, xi, v);
                    v = gelu(v);
                    break;
                case CUBLASLT_EPILOGUE_DGELU:
                case CUBLASLT_EPILOGUE_DGELU_BGRAD:
                    v *= dgelu(load(x.aux, aux_t, xi));
                    if (!rows.empty()) rows[(size_t)i] += v;
                    break;
                default: break;
                }
                store(Dp, d.type, (size_t)j * d.ld + i, v);
            }
        if (!rows.empty() && x.bias)
            for (int i = 0; i < m; i++)
                store((void *)x.bias, bias_t, (size_t)i, rows[(size_t)i]);
    });
    return CUBLAS_STATUS_SUCCESS;
}
}

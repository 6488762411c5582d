/* classifier.c: the FID feature network (see classifier.h). Parameters, gradients and Adam's m
 * and v live in one backend allocation each; activations for one batch in another. Shapes below
 * use n = batch rows, L1 = (H/2)(W/2) stride-2 positions, L2 = L1 / 4, K1 = 16 C. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include "classifier.h"
#include "philox.h"
#include "sha256.h"
#include "umdq.h"
#include "util.h"

#define C1 32
#define C2 64
#define HID UMD_CLASSIFIER_FEATURES
#define BATCH 128
#define LR 2e-3
#define MAGIC "UMDQCLSF"
#define VERSION 1u

typedef struct {
    float *W1, *b1; /* (C1, K1), (C1) */
    float *W2, *b2; /* (C2, 4 C1), (C2) */
    float *W3, *b3; /* (HID, L2 C2), (HID) */
    float *W4, *b4; /* (classes, HID), (classes) */
} clf_params;

struct umd_classifier {
    const umd_ops *ops;  /* borrowed */
    umd_ctx *ctx;        /* owned */
    int C, H, W, classes, L1, L2, K1;
    size_t nfloats;
    float *params, *grads, *m, *v; /* owned backend arenas (nfloats each) */
    uint8_t *decay;                /* owned backend (nfloats bytes, zeros: no weight decay) */
    umd_adamw_args *args;          /* owned backend: each update's AdamW scalars */
    clf_params P, G;
    void *ws;                      /* owned backend workspace */
    /* activations (backend), one batch */
    float *tok;     /* (n L1, K1) im2col */
    float *h1, *a1; /* (n L1, C1) before / after GELU; a1 viewed as (n L2, 4 C1) */
    float *h2, *a2; /* (n L2, C2); a2 viewed as (n, L2 C2) */
    float *h3, *a3; /* (n, HID) */
    float *logits;  /* (n, classes) */
    float *d3;      /* (n, HID) */
    float *d2;      /* (n L2, C2) */
    float *d1;      /* (n L1, C1) */
    /* host buffers */
    float *htok;    /* (n L1, K1) */
    float *hlog;    /* (n, classes) */
    float *hx;      /* (n, C, H, W) */
    int32_t *hy;    /* (n) */
    double acc;
    char name[64];
};

static size_t up16(size_t n) { return (n + 15) / 16 * 16; }

static void bind(clf_params *p, float *base, const umd_classifier *c) {
    size_t off = 0;
    float **f[8] = {&p->W1, &p->b1, &p->W2, &p->b2, &p->W3, &p->b3, &p->W4, &p->b4};
    size_t sz[8] = {(size_t)C1 * c->K1, C1, (size_t)C2 * 4 * C1, C2, (size_t)HID * c->L2 * C2, HID,
                    (size_t)c->classes * HID, (size_t)c->classes};
    for (int i = 0; i < 8; i++) {
        if (base) *f[i] = base + off;
        off += up16(sz[i]);
    }
}

static size_t count_floats(const umd_classifier *c) {
    return up16((size_t)C1 * c->K1) + up16(C1) + up16((size_t)C2 * 4 * C1) + up16(C2) +
           up16((size_t)HID * c->L2 * C2) + up16(HID) + up16((size_t)c->classes * HID) +
           up16((size_t)c->classes);
}

void umd_classifier_name(const umd_config *cfg, const umd_split *train, int epochs, char *name,
                         size_t n) {
    const char *ds = cfg->dataset == UMD_DATA_FASHION_MNIST ? "fmnist"
                     : cfg->dataset == UMD_DATA_MNIST       ? "mnist"
                     : cfg->dataset == UMD_DATA_CIFAR10     ? "cifar10"
                     : cfg->dataset == UMD_DATA_IMAGENET64  ? "imagenet64"
                                                            : "synthetic";
    /* the synthetic set is made from its knobs and the job's seed: they name it */
    const int syn = cfg->dataset == UMD_DATA_SYNTHETIC;
    char key[1600], hex[65];
    snprintf(key, sizeof key, "umdq fid classifier v%u|%s|%s|%d|%d|%d|%d|%d|%llu|%lld|%dx%dx%d|"
             "%d classes|c1 %d c2 %d hid %d batch %d lr %g epochs %d", VERSION, ds,
             syn ? "" : cfg->data_path, syn ? cfg->syn_size : 0, syn ? cfg->syn_channels : 0,
             syn ? cfg->syn_classes : 0, syn ? cfg->syn_train : 0, syn ? cfg->syn_test : 0,
             syn ? (unsigned long long)cfg->seed : 0ULL, (long long)train->n, train->c, train->h,
             train->w, train->classes, C1, C2, HID, BATCH, LR, epochs);
    sha256_hex(key, strlen(key), hex);
    snprintf(name, n, "%s-classifier-%.12s", ds, hex);
}

void umd_classifier_destroy(umd_classifier **pc) {
    if (!pc || !*pc) return;
    umd_classifier *c = *pc;
    if (c->ctx) {
        void *arenas[] = {c->params, c->grads, c->m, c->v, c->decay, c->args, c->ws, c->tok};
        for (size_t i = 0; i < sizeof arenas / sizeof arenas[0]; i++) c->ops->release(c->ctx, arenas[i]);
        c->ops->ctx_destroy(&c->ctx);
    }
    free(c->htok);
    free(c->hlog);
    free(c->hx);
    free(c->hy);
    free(c);
    *pc = NULL;
}

int umd_classifier_new(umd_classifier **out, const umd_split *train, const umd_ops *ops,
                       int threads, char *err, size_t errlen) {
    *out = NULL;
    if (train->h % 4 || train->w % 4 || train->h < 4 || train->w < 4 || train->classes < 2) {
        snprintf(err, errlen, "FID feature network: needs image sides that are multiples of 4 and "
                 "2 classes or more, the data set has %dx%d images of %d classes", train->h,
                 train->w, train->classes);
        return UMDQ_EUNSUPPORTED;
    }
    umd_classifier *c = calloc(1, sizeof *c);
    int rc = UMDQ_ENOMEM;
    if (!c) goto oom;
    c->ops = ops;
    c->C = train->c;
    c->H = train->h;
    c->W = train->w;
    c->classes = train->classes;
    c->L1 = (c->H / 2) * (c->W / 2);
    c->L2 = c->L1 / 4;
    c->K1 = 16 * c->C;
    rc = ops->ctx_new(&c->ctx, threads, err, errlen);
    if (rc) goto fail;
    c->nfloats = count_floats(c);
    size_t fb = c->nfloats * sizeof(float);
    c->params = ops->alloc(c->ctx, fb);
    c->grads = ops->alloc(c->ctx, fb);
    c->m = ops->alloc(c->ctx, fb);
    c->v = ops->alloc(c->ctx, fb);
    c->decay = ops->alloc(c->ctx, (c->nfloats + 63) / 64 * 64);
    c->args = ops->alloc(c->ctx, sizeof(umd_adamw_args));
    if (!c->params || !c->grads || !c->m || !c->v || !c->decay || !c->args) goto oom;
    bind(&c->P, c->params, c);
    bind(&c->G, c->grads, c);
    /* activations: one allocation, carved in order */
    const size_t n = BATCH;
    size_t sizes[12] = {n * c->L1 * c->K1, n * c->L1 * C1, n * c->L1 * C1, n * c->L2 * C2,
                        n * c->L2 * C2, n * HID, n * HID, n * c->classes, n * HID,
                        n * c->L2 * C2, n * c->L1 * C1, 0};
    size_t total = 0;
    for (int i = 0; i < 11; i++) total += up16(sizes[i]);
    c->tok = ops->alloc(c->ctx, total * sizeof(float));
    if (!c->tok) goto oom;
    float **ptr[11] = {&c->tok, &c->h1, &c->a1, &c->h2, &c->a2, &c->h3, &c->a3, &c->logits, &c->d3,
                       &c->d2, &c->d1};
    float *base = c->tok;
    for (int i = 0; i < 11; i++) {
        *ptr[i] = base;
        base += up16(sizes[i]);
    }
    umd_limits lim;
    memset(&lim, 0, sizeof lim);
    lim.max_rows = (int)(n * c->L1);
    lim.max_tokens = c->L1;
    lim.max_width = c->K1 > c->L2 * C2 ? c->K1 : c->L2 * C2;
    lim.max_heads = 1;
    lim.max_patches = c->L1;
    lim.max_weight = (long)HID * c->L2 * C2;
    size_t wsb = ops->workspace_bytes(c->ctx, &lim);
    if (wsb) {
        c->ws = ops->alloc(c->ctx, wsb);
        if (!c->ws) goto oom;
        ops->set_workspace(c->ctx, c->ws, wsb);
    }
    c->htok = malloc(n * c->L1 * c->K1 * sizeof(float));
    c->hlog = malloc(n * c->classes * sizeof(float));
    c->hx = malloc(n * c->C * c->H * c->W * sizeof(float));
    c->hy = malloc(n * sizeof(int32_t));
    if (!c->htok || !c->hlog || !c->hx || !c->hy) goto oom;
    /* PyTorch's Linear initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weights and biases */
    int ins[4] = {c->K1, 4 * C1, c->L2 * C2, HID};
    float *ws_[8] = {c->P.W1, c->P.b1, c->P.W2, c->P.b2, c->P.W3, c->P.b3, c->P.W4, c->P.b4};
    size_t szs[8] = {(size_t)C1 * c->K1, C1, (size_t)C2 * 4 * C1, C2, (size_t)HID * c->L2 * C2,
                     HID, (size_t)c->classes * HID, (size_t)c->classes};
    for (int i = 0; i < 8; i++) {
        float bound = 1.0f / sqrtf((float)ins[i / 2]);
        ops->rand_uniform(c->ctx, ws_[i], szs[i], 0, PHILOX_EVAL, 1000u + (uint32_t)i, 0, -bound,
                          bound);
    }
    ops->fill(c->ctx, c->m, c->nfloats, 0);
    ops->fill(c->ctx, c->v, c->nfloats, 0);
    *out = c;
    return 0;
oom:
    snprintf(err, errlen, "out of memory for the FID feature network");
    rc = UMDQ_ENOMEM;
fail:
    umd_classifier_destroy(&c);
    return rc;
}

/* im2col of n images into c->htok: token (I, J, di, dj) of image b is the 4x4 window (pad 1) at
 * stride-2 position (2I + di, 2J + dj), its values ordered (channel, ky, kx). */
static void im2col(umd_classifier *c, const float *x, int n) {
    const int H = c->H, W = c->W, C = c->C, H4 = H / 4, W4 = W / 4;
    for (int b = 0; b < n; b++) {
        const float *img = x + (size_t)b * C * H * W;
        float *t = c->htok + (size_t)b * c->L1 * c->K1;
        for (int I = 0; I < H4; I++)
            for (int J = 0; J < W4; J++)
                for (int di = 0; di < 2; di++)
                    for (int dj = 0; dj < 2; dj++) {
                        int i = 2 * I + di, j = 2 * J + dj;
                        for (int ch = 0; ch < C; ch++)
                            for (int ky = 0; ky < 4; ky++) {
                                int r = 2 * i - 1 + ky;
                                for (int kx = 0; kx < 4; kx++) {
                                    int q = 2 * j - 1 + kx;
                                    *t++ = r >= 0 && r < H && q >= 0 && q < W
                                               ? img[((size_t)ch * H + r) * W + q]
                                               : 0.0f;
                                }
                            }
                    }
    }
}

/* Forward of n <= BATCH rows already in c->htok: logits (and every activation) on the backend. */
static void forward(umd_classifier *c, int n) {
    const umd_ops *o = c->ops;
    umd_ctx *x = c->ctx;
    o->upload(x, c->tok, c->htok, (size_t)n * c->L1 * c->K1 * sizeof(float));
    o->linear_fwd(x, c->h1, c->tok, c->P.W1, c->P.b1, n * c->L1, C1, c->K1, UMD_F32);
    o->gelu_fwd(x, c->a1, c->h1, (size_t)n * c->L1 * C1);
    o->linear_fwd(x, c->h2, c->a1, c->P.W2, c->P.b2, n * c->L2, C2, 4 * C1, UMD_F32);
    o->gelu_fwd(x, c->a2, c->h2, (size_t)n * c->L2 * C2);
    o->linear_fwd(x, c->h3, c->a2, c->P.W3, c->P.b3, n, HID, c->L2 * C2, UMD_F32);
    o->gelu_fwd(x, c->a3, c->h3, (size_t)n * HID);
    o->linear_fwd(x, c->logits, c->a3, c->P.W4, c->P.b4, n, c->classes, HID, UMD_F32);
}

size_t umd_classifier_input_size(const umd_classifier *c) {
    return (size_t)c->C * c->H * c->W;
}

void umd_classifier_features(umd_classifier *c, const float *x, int64_t n, float *feat) {
    for (int64_t s = 0; s < n; s += BATCH) {
        int k = (int)(n - s < BATCH ? n - s : BATCH);
        im2col(c, x + (size_t)s * c->C * c->H * c->W, k);
        forward(c, k);
        c->ops->download(c->ctx, feat + (size_t)s * HID, c->a3, (size_t)k * HID * sizeof(float));
    }
}

double umd_classifier_accuracy(umd_classifier *c, const umd_split *s, int64_t max_n) {
    int64_t n = max_n > 0 && max_n < s->n ? max_n : s->n, right = 0;
    for (int64_t i = 0; i < n; i += BATCH) {
        int k = (int)(n - i < BATCH ? n - i : BATCH);
        umd_data_slice(s, i, k, c->hx, c->hy);
        im2col(c, c->hx, k);
        forward(c, k);
        c->ops->download(c->ctx, c->hlog, c->logits, (size_t)k * c->classes * sizeof(float));
        for (int b = 0; b < k; b++) {
            const float *z = c->hlog + (size_t)b * c->classes;
            int best = 0;
            for (int j = 1; j < c->classes; j++)
                if (z[j] > z[best]) best = j;
            right += best == c->hy[b];
        }
    }
    return n > 0 ? (double)right / (double)n : 0;
}

int umd_classifier_train(umd_classifier *c, const umd_split *train, const umd_split *test,
                         int epochs, void (*log_fn)(void *ctx, const char *line),
                         int (*poll)(void *ctx, int64_t done, int64_t total), void *log_ctx,
                         char *err, size_t errlen) {
    const umd_ops *o = c->ops;
    umd_ctx *x = c->ctx;
    const int n = BATCH;
    const int64_t per_epoch = (train->n + n - 1) / n, total = per_epoch * epochs;
    const int64_t warm = total / 20;
    umd_cursor cur = {0, 0, 0};
    double sum = 0, t0 = mono_s();
    for (int64_t t = 0; t < total; t++) {
        if (poll && poll(log_ctx, t, total)) {
            snprintf(err, errlen, "FID feature network: stopped on request at step %lld of %lld",
                     (long long)t, (long long)total);
            return UMDQ_ECANCELLED;
        }
        umd_data_next_batch(train, &cur, n, 0, c->hx, c->hy);
        im2col(c, c->hx, n);
        forward(c, n);
        /* softmax cross-entropy on the host; d logits = (p - onehot) / n */
        o->download(x, c->hlog, c->logits, (size_t)n * c->classes * sizeof(float));
        for (int b = 0; b < n; b++) {
            float *z = c->hlog + (size_t)b * c->classes;
            double mx = z[0], s = 0;
            for (int j = 1; j < c->classes; j++) mx = z[j] > mx ? z[j] : mx;
            for (int j = 0; j < c->classes; j++) s += exp(z[j] - mx);
            sum += log(s) + mx - z[c->hy[b]];
            for (int j = 0; j < c->classes; j++)
                z[j] = (float)((exp(z[j] - mx) / s - (j == c->hy[b])) / n);
        }
        if (!isfinite(sum)) {
            snprintf(err, errlen, "FID feature network: the loss is not finite at step %lld",
                     (long long)t);
            return UMDQ_EINVAL;
        }
        /* the logits' buffer takes their gradient */
        o->fill(x, c->grads, c->nfloats, 0);
        o->upload(x, c->logits, c->hlog, (size_t)n * c->classes * sizeof(float));
        o->linear_bwd(x, c->d3, c->G.W4, c->G.b4, c->logits, c->a3, c->P.W4, n, c->classes, HID, 0, UMD_F32);
        o->gelu_bwd(x, c->d3, c->d3, c->h3, (size_t)n * HID);
        o->linear_bwd(x, c->d2, c->G.W3, c->G.b3, c->d3, c->a2, c->P.W3, n, HID, c->L2 * C2, 0, UMD_F32);
        o->gelu_bwd(x, c->d2, c->d2, c->h2, (size_t)n * c->L2 * C2);
        o->linear_bwd(x, c->d1, c->G.W2, c->G.b2, c->d2, c->a1, c->P.W2, n * c->L2, C2, 4 * C1, 0, UMD_F32);
        o->gelu_bwd(x, c->d1, c->d1, c->h1, (size_t)n * c->L1 * C1);
        o->linear_bwd(x, NULL, c->G.W1, c->G.b1, c->d1, c->tok, c->P.W1, n * c->L1, C1, c->K1, 0, UMD_F32);
        double lr = t < warm ? LR * (double)(t + 1) / (double)warm
                             : LR * 0.5 * (1 + cos(M_PI * (double)(t - warm) / (double)(total - warm)));
        umd_adamw_args a;
        a.lr = (float)lr;
        a.beta1 = 0.9f;
        a.beta2 = 0.999f;
        a.eps = 1e-8f;
        a.weight_decay = 0;
        a.bias_correction1 = (float)(1 - pow(0.9, (double)(t + 1)));
        a.bias_correction2 = (float)(1 - pow(0.999, (double)(t + 1)));
        a.max_norm = 0.0f; /* no clip */
        o->upload(x, c->args, &a, sizeof a);
        o->adamw(x, c->params, c->grads, c->m, c->v, c->decay, c->nfloats, c->args, NULL);
        if ((t + 1) % per_epoch == 0 && log_fn) {
            char line[200];
            snprintf(line, sizeof line, "FID feature network: epoch %lld of %d, training loss "
                     "%.4f (%.0f s)", (long long)((t + 1) / per_epoch), epochs,
                     sum / (double)(per_epoch * n), mono_s() - t0);
            log_fn(log_ctx, line);
            sum = 0;
        }
    }
    c->acc = umd_classifier_accuracy(c, test, 0);
    return o->status ? o->status(x, err, errlen) : 0;
}

double umd_classifier_test_accuracy(const umd_classifier *c) { return c->acc; }
const char *umd_classifier_get_name(const umd_classifier *c) { return c->name; }

typedef struct {
    char magic[8];
    uint32_t version, C, H, W, classes, epochs, nfloats, pad;
    double acc;
    char name[64];
} clf_header;

int umd_classifier_save(umd_classifier *c, const char *path, char *err, size_t errlen) {
    size_t bytes = sizeof(clf_header) + c->nfloats * sizeof(float);
    char *buf = calloc(1, bytes); /* owned */
    if (!buf) {
        snprintf(err, errlen, "out of memory saving %s", path);
        return UMDQ_ENOMEM;
    }
    clf_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, MAGIC, 8);
    h.version = VERSION;
    h.C = (uint32_t)c->C;
    h.H = (uint32_t)c->H;
    h.W = (uint32_t)c->W;
    h.classes = (uint32_t)c->classes;
    h.nfloats = (uint32_t)c->nfloats;
    h.acc = c->acc;
    snprintf(h.name, sizeof h.name, "%s", c->name);
    memcpy(buf, &h, sizeof h);
    c->ops->download(c->ctx, buf + sizeof h, c->params, c->nfloats * sizeof(float));
    int rc = write_file_atomic(path, buf, bytes, 0644, err, errlen);
    free(buf);
    return rc;
}

int umd_classifier_load(umd_classifier *c, const char *path, char *err, size_t errlen) {
    char *data = NULL; /* owned */
    size_t len = 0;
    int rc = read_file(path, &data, &len, (size_t)1 << 30, err, errlen);
    if (rc) return rc;
    clf_header h;
    rc = UMDQ_EFORMAT;
    if (len < sizeof h || memcmp(data, MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s: not a umdq FID feature network (wrong magic); delete it to "
                 "retrain", path);
        goto fail;
    }
    memcpy(&h, data, sizeof h);
    if (h.version != VERSION) {
        snprintf(err, errlen, "%s: version %u, this build reads %u; delete it to retrain", path,
                 h.version, VERSION);
        goto fail;
    }
    if ((int)h.C != c->C || (int)h.H != c->H || (int)h.W != c->W || (int)h.classes != c->classes ||
        h.nfloats != c->nfloats || len != sizeof h + c->nfloats * sizeof(float)) {
        snprintf(err, errlen, "%s: made for %ux%ux%u images of %u classes (%zu bytes), not this "
                 "data set's %dx%dx%d of %d; delete it to retrain", path, h.C, h.H, h.W, h.classes,
                 len, c->C, c->H, c->W, c->classes);
        goto fail;
    }
    c->ops->upload(c->ctx, c->params, data + sizeof h, c->nfloats * sizeof(float));
    c->acc = h.acc;
    h.name[sizeof h.name - 1] = 0;
    snprintf(c->name, sizeof c->name, "%s", h.name);
    rc = 0;
fail:
    free(data);
    return rc;
}

int umd_classifier_get(umd_classifier **out, const char *dir, const char *name,
                       const umd_split *train, const umd_split *test, int epochs,
                       const umd_ops *ops, int threads, void (*log_fn)(void *ctx, const char *line),
                       int (*poll)(void *ctx, int64_t done, int64_t total), void *log_ctx,
                       int *trained, char *err, size_t errlen) {
    umd_classifier *c = NULL;
    char path[1200], lock[1220], line[1400];
    int lfd = -1, rc;
    if (trained) *trained = 0;
    rc = umd_classifier_new(&c, train, ops, threads, err, errlen);
    if (rc) return rc;
    snprintf(c->name, sizeof c->name, "%s", name);
    if (dir && *dir) {
        if (mkdir_p(dir, 0755) != 0) {
            snprintf(err, errlen, "cannot create the cache directory %s (eval.cache_dir, "
                     "$UMDQ_CACHE)", dir);
            rc = UMDQ_EIO;
            goto fail;
        }
        snprintf(path, sizeof path, "%s/%s.umdc", dir, name);
        snprintf(lock, sizeof lock, "%s/%s.lock", dir, name);
        lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        /* another worker training it: wait for its file */
        while (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK && errno != EINTR) break; /* no locking here: go on */
            if (poll && poll(log_ctx, 0, 0)) {
                snprintf(err, errlen, "FID feature network %s: stopped on request while waiting "
                         "for %s", name, lock);
                rc = UMDQ_ECANCELLED;
                goto fail;
            }
            struct timespec pause = {0, 100 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        if (access(path, R_OK) == 0) {
            rc = umd_classifier_load(c, path, err, errlen);
            if (rc) goto fail;
            snprintf(line, sizeof line, "FID feature network %s from %s (test accuracy %.4f)",
                     name, path, c->acc);
            if (log_fn) log_fn(log_ctx, line);
            goto done;
        }
    }
    snprintf(line, sizeof line, "FID feature network %s: training it (%d epochs over %lld images)",
             name, epochs, (long long)train->n);
    if (log_fn) log_fn(log_ctx, line);
    rc = umd_classifier_train(c, train, test, epochs, log_fn, poll, log_ctx, err, errlen);
    if (rc) goto fail;
    if (trained) *trained = 1;
    snprintf(line, sizeof line, "FID feature network %s: test accuracy %.4f", name, c->acc);
    if (log_fn) log_fn(log_ctx, line);
    if (dir && *dir) {
        rc = umd_classifier_save(c, path, err, errlen);
        if (rc) goto fail;
    }
done:
    if (lfd >= 0) close(lfd);
    *out = c;
    return 0;
fail:
    if (lfd >= 0) close(lfd);
    umd_classifier_destroy(&c);
    return rc;
}

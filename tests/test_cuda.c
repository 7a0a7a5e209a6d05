/* test_cuda.c - the GPU backend (paraformer_cuda.cu) against the CPU
   implementation in the same binary (docs/design.md §5, §7).

   Linked with build/cuda/paraformer_cuda.o it runs on a GPU (make test-cuda);
   linked with build/paraformer_cuda_emu.o, the same source compiled for the
   CPU with the GPU primitives emulated, it runs in make test on any machine.

   For both residual forms, both aggregations, both poolings, with and
   without the qkv bias and with dropout: logits, loss, every gradient by
   name, 5 AdamW steps (with clipping), a branch prefix and predict agree with
   the CPU (fp32: max|gpu - cpu| / max|cpu| <= 1e-4 per tensor). The model's
   real attention shape (T = 65, head width 64) with each attention path,
   fp32 and bf16 (tensor cores).
   Then: the results repeat bit for bit (the repeats replay CUDA graphs,
   recorded ones in the emulated build); steps that differ in one value of
   a graph's key equal the same steps without graphs, bit for bit; images
   left on the device are reused; several devices, replicas
   and the forced collectives equal one device; the collectives run are
   pf_collective_plan's; resuming from downloaded state is bit-identical;
   bf16 training stays within its stated tolerance and bf16 inference
   equals the labelled forward; bad input is refused
   with a message.

       test_cuda [GROUP...]     only those groups (parity, predict, graphs,
                                shape, tc, wide, multi, resume, bf16, rows,
                                launches, bad, faults); all by default */
#define _POSIX_C_SOURCE 200809L /* setenv */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"
#include "pf_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4
#define BATCH 6

typedef struct variant {
    const char *name;
    int residual, aggregate, pool, no_qkv_bias;
    float dropout;
} variant;

static const variant VARIANTS[] = {
    {"prenorm/delta/cls", PF_PRENORM, PF_AGG_DELTA, PF_POOL_CLS, 0, 0.0f},
    {"normed/sum/mean/no-qkv-bias", PF_NORMED, PF_AGG_SUM, PF_POOL_MEAN, 1, 0.0f},
    {"prenorm/sum/mean", PF_PRENORM, PF_AGG_SUM, PF_POOL_MEAN, 0, 0.0f},
    {"normed/delta/cls", PF_NORMED, PF_AGG_DELTA, PF_POOL_CLS, 0, 0.0f},
    {"prenorm/delta/cls + dropout 0.1", PF_PRENORM, PF_AGG_DELTA, PF_POOL_CLS, 0, 0.1f},
};

static pf_model *make_model_depth(const variant *v, int branches, int depth, uint64_t seed) {
    pf_config c = shape_config(8, 3, 4, 16, 2, 32, branches, depth, 5); /* T = 5 */
    pf_model *m;
    c.residual = v->residual; c.aggregate = v->aggregate; c.pool = v->pool; c.no_qkv_bias = v->no_qkv_bias;
    c.dropout = v->dropout; c.emb_dropout = v->dropout;
    if (pf_model_create(&c, &m) != PF_OK) { fprintf(stderr, "%s\n", pf_last_error()); exit(1); }
    pf_model_init(m, seed, 0.5f); /* large cls/pos so that they matter */
    if (pf_model_alloc_train(m) != PF_OK || pf_model_reserve(m, 16) != PF_OK) { fprintf(stderr, "%s\n", pf_last_error()); exit(1); }
    m->dropout_seed = 1234;
    m->training = 1;
    return m;
}
static pf_model *make_model(const variant *v, int branches, uint64_t seed) { return make_model_depth(v, branches, 2, seed); }

static void make_batch(const pf_model *m, int B, uint64_t seed, float *x, int *labels) {
    size_t per = (size_t)m->cfg.channels * m->cfg.image_size * m->cfg.image_size, i;
    uint64_t s = seed * 2654435761u + 1;
    for (i = 0; i < per * (size_t)B; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
    for (i = 0; i < (size_t)B; i++) labels[i] = (int)((i * 3 + seed) % (size_t)m->cfg.classes);
}

/* the feature switches (pf_cuda_opts.graphs ... row_tiles) the next
   make_ctx uses: those of the environment (PF_CUDA_GRAPHS=0 ... turn a
   feature off for the whole run, as tools/gpu_check.sh does to find which
   one fails), which a test overrides to reach the paths a feature
   replaces, then restores with sw_reset */
static pf_cuda_opts sw, sw_env;
static void sw_reset(void) { sw = sw_env; }

static pf_cuda *make_ctx(pf_model *m, int ndev, int replicas, int collectives, int bf16) {
    pf_cuda_opts o = pf_cuda_opts_default();
    pf_cuda *g = NULL;
    int i;
    o.graphs = sw.graphs, o.fused_attention = sw.fused_attention, o.tc_attention = sw.tc_attention;
    o.row_fused = sw.row_fused, o.att_tiles = sw.att_tiles, o.row_tiles = sw.row_tiles;
    /* checked launches: a kernel fault names its kernel (unless PF_CUDA_CHECK_LAUNCHES=0) */
    o.check_launches = sw.check_launches ? sw.check_launches : PF_CUDA_ON;
    o.n_devices = ndev;
    for (i = 0; i < ndev; i++) o.devices[i] = i;
    o.replicas = replicas;
    o.collectives = collectives;
    o.bf16 = bf16;
    o.max_batch = 16;
    if (pf_cuda_create(m, &o, &g) != PF_OK) {
        printf("     (pf_cuda_create: %s)\n", pf_last_error());
        return NULL;
    }
    return g;
}

/* the error of tensor s of model a against model b; below 0: left out */
typedef double (*tensor_err)(const pf_model *a, const pf_model *b, const pf_tensor_spec *s, void *ctx);

/* the worst error over the tensors (NaN the worst of all), the name of its tensor in worst */
static double worst_tensor(const pf_model *a, const pf_model *b, tensor_err err, void *ctx, char *worst, size_t cap) {
    double w = 0;
    int t;
    worst[0] = 0;
    for (t = 0; t < a->n_specs; t++) {
        double e = err(a, b, &a->specs[t], ctx);
        if (e > w || e != e) { w = e != e ? INFINITY : e; snprintf(worst, cap, "%s", a->specs[t].name); }
    }
    return w;
}

/* the gradients of every trainable tensor */
static double grad_err(const pf_model *a, const pf_model *b, const pf_tensor_spec *s, void *ctx) {
    (void)ctx;
    if (s->part == PF_PART_BRANCH && s->branch >= a->active) return -1;
    return rel_err(a->grads + s->offset, b->grads + s->offset, s->numel);
}
static double grads_err(const pf_model *a, const pf_model *b, char *worst, size_t cap) {
    return worst_tensor(a, b, grad_err, NULL, worst, cap);
}

/* Parameters and first moments, tensor by tensor. The key part of the qkv
   bias is left out: its exact gradient is zero (adding a constant to every
   key of a query shifts all its scores alike, and softmax ignores that), so
   both sides hold rounding noise of ~1e-9 there, which Adam's m / sqrt(v)
   turns into full-size steps of either sign. */
static double param_err(const pf_model *a, const pf_model *b, const pf_tensor_spec *s, void *ctx) {
    size_t n = s->numel, D = (size_t)a->cfg.dim;
    int kbias = strstr(s->name, "qkv.bias") != NULL;
    double e = rel_err(a->params + s->offset, b->params + s->offset, kbias ? D : n);
    double em = rel_err(a->adam_m + s->offset, b->adam_m + s->offset, kbias ? D : n);
    (void)ctx;
    if (kbias) { /* the q rows above, the v rows here */
        double e2 = rel_err(a->params + s->offset + 2 * D, b->params + s->offset + 2 * D, D);
        double em2 = rel_err(a->adam_m + s->offset + 2 * D, b->adam_m + s->offset + 2 * D, D);
        if (e2 > e) e = e2;
        if (em2 > em) em = em2;
    }
    return em > e ? em : e;
}
static double params_err(const pf_model *a, const pf_model *b, char *worst, size_t cap) {
    return worst_tensor(a, b, param_err, NULL, worst, cap);
}

/* After several AdamW steps from the same start: the first moments of every
   element, and the parameters of every element whose first gradient g0
   (the CPU's) is above the tensor's rounding-noise floor, 1e-4 of its
   largest |g0|. Adam's first step moves each element by lr g / (|g| + eps)
   whatever its size, so an element whose true gradient is (nearly) zero,
   like the key part of the qkv bias (softmax ignores a shift common to
   every key) or a weight whose gradient cancels to ~1e-8 of a 1e-3 tensor,
   moves by an amount set by the rounding of its sum on either side. *skipped
   counts those elements. */
typedef struct { const float *g0; size_t skipped; } steps_ctx;
static double step_err(const pf_model *a, const pf_model *b, const pf_tensor_spec *s, void *ctx) {
    steps_ctx *sc = (steps_ctx *)ctx;
    const float *pa = a->params + s->offset, *pb = b->params + s->offset, *g = sc->g0 + s->offset;
    double gmax = 0, e, em = rel_err(a->adam_m + s->offset, b->adam_m + s->offset, s->numel);
    rel_acc r = {0, 0};
    size_t i;
    for (i = 0; i < s->numel; i++) if (fabs(g[i]) > gmax) gmax = fabs(g[i]);
    for (i = 0; i < s->numel; i++) {
        int noise = fabs(g[i]) < 1e-4 * gmax;
        sc->skipped += noise;
        rel_add(&r, noise ? pb[i] : pa[i], pb[i]); /* a skipped element adds only its scale */
    }
    e = rel_value(&r);
    return em > e ? em : e;
}
static double params_err_steps(const pf_model *a, const pf_model *b, const float *g0, size_t *skipped, char *worst,
                               size_t cap) {
    steps_ctx sc;
    double w;
    sc.g0 = g0;
    sc.skipped = 0;
    w = worst_tensor(a, b, step_err, &sc, worst, cap);
    *skipped = sc.skipped;
    return w;
}

/* one variant: CPU model `c` and the GPU's host twin `m` start equal */
static void test_parity(const variant *v) {
    pf_model *c = make_model(v, 3, 7), *m = make_model(v, 3, 7);
    pf_cuda *g = make_ctx(m, 1, 1, 0, 0);
    float x[BATCH * 192], lg[BATCH * 5], lc = 0, lgpu = 0, *g0;
    size_t skipped = 0;
    int y[BATCH], step;
    char worst[64];
    double e;
    pf_optim o = pf_optim_default();
    if (!g) { check(0, "%s: context created", v->name); pf_model_free(c); pf_model_free(m); return; }
    make_batch(c, BATCH, 1, x, y);
    /* forward, loss, backward */
    pf_forward(c, x, y, BATCH, 0.1f, &lc);
    check(pf_cuda_forward(g, x, y, BATCH, 0.1f, &lgpu) == PF_OK, "%s: forward runs", v->name);
    pf_cuda_logits(g, lg);
    e = rel_err(lg, c->logits, (size_t)BATCH * 5);
    check(e <= TOL, "%s: logits agree (rel %.2e)", v->name, e);
    check(fabs((double)lgpu - lc) <= TOL * fabs((double)lc), "%s: loss agrees (%.6f vs %.6f)", v->name, lgpu, lc);
    pf_backward(c);
    check(pf_cuda_backward(g) == PF_OK && pf_cuda_download(g) == PF_OK, "%s: backward runs", v->name);
    e = grads_err(m, c, worst, sizeof worst);
    check(e <= TOL, "%s: every gradient by name agrees (worst %.2e, %s)", v->name, e, worst);
    /* 5 AdamW steps with weight decay and clipping */
    g0 = (float *)malloc(c->n_params * sizeof(float));
    if (!g0) { fprintf(stderr, "out of memory\n"); exit(1); }
    memcpy(g0, c->grads, c->n_params * sizeof(float));
    o.lr = 1e-2f; o.weight_decay = 0.05f; o.clip = 0.5f;
    for (step = 0; step < 5; step++) {
        double nc = 0, ng = 0;
        if (step) {
            make_batch(c, BATCH, 10 + step, x, y);
            pf_forward(c, x, y, BATCH, 0.1f, NULL);
            pf_backward(c);
            pf_cuda_forward(g, x, y, BATCH, 0.1f, NULL);
            pf_cuda_backward(g);
        }
        pf_optim_step(c, &o, &nc);
        pf_cuda_step(g, &o, &ng);
        if (step == 0) check(fabs(nc - ng) <= TOL * nc, "%s: grad norm before clipping agrees (%.6f vs %.6f)", v->name, ng, nc);
    }
    pf_cuda_download(g);
    e = params_err_steps(m, c, g0, &skipped, worst, sizeof worst);
    check(e <= TOL && skipped < c->n_params / 50,
          "%s: parameters and moments after 5 AdamW steps agree (worst %.2e, %s; %zu of %zu parameters at the "
          "gradient noise floor compared by their moments only)", v->name, e, worst, skipped, c->n_params);
    free(g0);
    check(memcmp(m->steps, c->steps, sizeof(int64_t) * (size_t)c->n_specs) == 0, "%s: step counters agree", v->name);
    /* a prefix of 2 branches */
    pf_model_set_active(c, 2);
    pf_model_set_active(m, 2);
    make_batch(c, BATCH, 3, x, y);
    pf_forward(c, x, y, BATCH, 0.0f, NULL);
    pf_backward(c);
    pf_cuda_forward(g, x, y, BATCH, 0.0f, NULL);
    pf_cuda_backward(g);
    pf_cuda_logits(g, lg);
    pf_cuda_download(g);
    e = rel_err(lg, c->logits, (size_t)BATCH * 5);
    check(e <= TOL, "%s: prefix k=2: logits agree (rel %.2e)", v->name, e);
    e = grads_err(m, c, worst, sizeof worst);
    check(e <= TOL, "%s: prefix k=2: gradients agree (worst %.2e, %s)", v->name, e, worst);
    pf_cuda_free(g);
    pf_model_free(c);
    pf_model_free(m);
}

/* predict (inference, chunks) and bit-for-bit repetition */
static void test_predict_determinism(void) {
    pf_model *c = make_model(&VARIANTS[0], 3, 3), *m = make_model(&VARIANTS[4], 3, 3);
    pf_cuda *g;
    float x[40 * 192], a[40 * 5], b[40 * 5], gr1[4096];
    int y[40];
    size_t ng;
    memcpy(m->params, c->params, c->n_params * sizeof(float));
    m->cfg.dropout = m->cfg.emb_dropout = 0; /* c has none */
    g = make_ctx(m, 1, 1, 0, 0);
    if (!g) { check(0, "predict: context"); pf_model_free(c); pf_model_free(m); return; }
    make_batch(c, 40, 5, x, y);
    pf_predict(c, x, 37, a);
    check(pf_cuda_predict(g, x, 37, b) == PF_OK, "predict: 37 images in chunks of 16");
    check(rel_err(b, a, 37 * 5) <= TOL, "predict: logits agree with pf_predict (rel %.2e)", rel_err(b, a, 37 * 5));
    { /* again: the GPU build captures the shape's forward as a CUDA graph, then replays it */
        float r[40 * 5];
        int rep, same = 1;
        for (rep = 0; rep < 3; rep++) {
            check(pf_cuda_predict(g, x, 37, r) == PF_OK, "predict: repeat %d runs", rep + 1);
            same &= memcmp(r, b, 37 * 5 * sizeof(float)) == 0;
        }
        check(same, "predict: three repeats (graph capture, replays) give the first run's bits");
    }
    /* the images left on the device by the last forward (x = NULL) */
    {
        int ok = pf_cuda_forward(g, x + 16 * 192, NULL, 16, 0.0f, NULL) == PF_OK &&
                 pf_cuda_forward(g, NULL, NULL, 16, 0.0f, NULL) == PF_OK && pf_cuda_logits(g, b) == PF_OK;
        double e = rel_err(b, a + 16 * 5, 16 * 5);
        check(ok && e <= TOL, "forward with x = NULL reuses the images on the device (rel %.2e)", e);
    }
    check(pf_cuda_forward(g, NULL, NULL, 8, 0.0f, NULL) == PF_ERR_ARG, "x = NULL with another batch size refused: %s",
          pf_last_error());
    /* the same step twice from the same state: the same bits (dropout on) */
    m->cfg.dropout = m->cfg.emb_dropout = 0.1f;
    m->dropout_counter = 5;
    pf_cuda_forward(g, x, y, 12, 0.1f, NULL);
    pf_cuda_backward(g);
    pf_cuda_logits(g, a);
    pf_cuda_download(g);
    ng = m->n_params < 4096 ? m->n_params : 4096;
    memcpy(gr1, m->grads, ng * sizeof(float));
    m->dropout_counter = 5;
    pf_cuda_forward(g, x, y, 12, 0.1f, NULL);
    pf_cuda_backward(g);
    pf_cuda_logits(g, b);
    pf_cuda_download(g);
    check(memcmp(a, b, 12 * 5 * sizeof(float)) == 0 && memcmp(gr1, m->grads, ng * sizeof(float)) == 0,
          "deterministic: the same forward/backward twice gives the same bits");
    pf_cuda_free(g);
    pf_model_free(c);
    pf_model_free(m);
}

/* A pre-norm / delta / cls model of 2 branches with the given shape (its
   configuration in *cf), c initialised from seed and m a copy, and the CPU
   reference: c's forward and backward on `batch` images made from data
   seed 9 (x, y). 0, with a failed check, when that cannot be done. */
static int cpu_reference(pf_config *cf, int image, int channels, int patch, int dim, int heads, int mlp, int depth,
                         int classes, uint64_t seed, int batch, float *x, int *y, pf_model **c, pf_model **m,
                         const char *what) {
    *cf = shape_config(image, channels, patch, dim, heads, mlp, 2, depth, classes);
    cf->residual = PF_PRENORM, cf->aggregate = PF_AGG_DELTA, cf->pool = PF_POOL_CLS;
    *c = *m = NULL;
    if (pf_model_create(cf, c) != PF_OK || pf_model_create(cf, m) != PF_OK || pf_model_alloc_train(*c) != PF_OK ||
        pf_model_alloc_train(*m) != PF_OK || pf_model_reserve(*c, batch) != PF_OK) {
        check(0, "%s: models (%s)", what, pf_last_error());
        pf_model_free(*c);
        pf_model_free(*m);
        return 0;
    }
    pf_model_init(*c, seed, 0.5f);
    memcpy((*m)->params, (*c)->params, (*c)->n_params * sizeof(float));
    (*c)->training = (*m)->training = 1;
    make_batch(*c, batch, 9, x, y);
    pf_forward(*c, x, y, batch, 0.0f, NULL);
    pf_backward(*c);
    return 1;
}

/* A forward (labels y) and backward of n images through g, whose host twin
   is m, against the CPU's c (cpu_reference): checks that it runs, that the
   logits agree within tl and every gradient within tg, on lines that begin
   with `what`. Frees g. */
static void vs_cpu(pf_cuda *g, pf_model *m, const pf_model *c, const float *x, const int *y, int n, double tl,
                   double tg, const char *what) {
    size_t nl = (size_t)n * (size_t)c->cfg.classes;
    float *lg = (float *)malloc(nl * sizeof(float));
    char worst[64];
    double e;
    check(lg && pf_cuda_forward(g, x, y, n, 0.0f, NULL) == PF_OK && pf_cuda_logits(g, lg) == PF_OK &&
          pf_cuda_backward(g) == PF_OK && pf_cuda_download(g) == PF_OK, "%s: runs", what);
    e = lg ? rel_err(lg, c->logits, nl) : INFINITY;
    check(e <= tl, "%s: logits agree (rel %.2e)", what, e);
    e = grads_err(m, c, worst, sizeof worst);
    check(e <= tg, "%s: every gradient agrees (worst %.2e, %s)", what, e, worst);
    free(lg);
    pf_cuda_free(g);
}

/* A width (768) whose LayerNorm-backward rows do not fit the fused column
   sums' shared memory: the column-sum passes afterwards, fp32 and bf16 */
static void test_wide(void) {
    pf_config cf;
    pf_model *c, *m;
    float x[3 * 192];
    int y[3], bf;
    if (!cpu_reference(&cf, 8, 3, 4, 768, 12, 64, 2, 5, 7, 3, x, y, &c, &m, "wide")) return; /* T = 5 */
    for (bf = 0; bf < 2; bf++) {
        pf_cuda *g;
        memcpy(m->params, c->params, c->n_params * sizeof(float));
        g = make_ctx(m, 1, 1, 0, bf);
        if (!g) { check(0, "wide: context"); continue; }
        vs_cpu(g, m, c, x, y, 3, bf ? 2e-2 : TOL, bf ? 5e-2 : TOL, bf ? "width 768, bf16" : "width 768, fp32");
    }
    pf_model_free(c);
    pf_model_free(m);
}

/* The model's real attention shape (T = 65 tokens, head width 64): the
   shared-memory attention needs more than the default 48 KiB per block
   there. Logits and every gradient against the CPU, with the fused kernels
   and with the thread-per-row ones (PF_CUDA_FUSED_ATTENTION=0), and after
   a forward with labels in inference mode (m->training 0). */
static void test_shape_at(int bf16) {
    pf_config cf;
    pf_model *c, *m;
    float x[4 * 256], lg[4 * 10];
    int y[4], pass;
    char worst[64];
    if (!cpu_reference(&cf, 16, 1, 2, 128, 2, 128, 1, 10, 5, 4, x, y, &c, &m, "shape")) return; /* T = 65 */
    for (pass = 0; pass < 4 && !bf16; pass++) {
        static const char *const how_[] = {"shared-memory attention, 3 query tiles", "thread-per-row attention",
                                           "shared-memory attention, a forward with labels in inference mode",
                                           "shared-memory attention, one query tile (as for large batches)"};
        const char *how = how_[pass];
        char what[128];
        pf_cuda *g;
        if (pass == 1) sw.fused_attention = PF_CUDA_OFF;
        if (pass == 3) sw.att_tiles = 1;
        g = make_ctx(m, 1, 1, 0, 0);
        sw_reset();
        m->training = pass != 2; /* no dropout here: the same values; a backward must still find what it needs */
        if (!g) { check(0, "shape: context (%s)", how); continue; }
        snprintf(what, sizeof what, "T=65, head width 64, %s", how);
        vs_cpu(g, m, c, x, y, 4, TOL, TOL, what);
    }
    /* bf16: attention on tensor cores (3 query tiles, one tile) against the
       CPU at the bf16 tolerances (test_bf16_mode), and against the same bf16
       model with the fp32 shared-memory attention: what the tensor cores
       change is only the rounding of q, k, v, P, dy and dS to bf16 */
    if (bf16) {
        pf_model *r = NULL;
        float lr[4 * 10];
        for (pass = 0; pass < 4; pass++) {
            static const char *const how_[] = {"bf16 attention in fp32", "bf16 tensor-core attention, 3 query tiles",
                                               "bf16 tensor-core attention, one query tile",
                                               "bf16 thread-per-row attention"};
            const char *how = how_[pass];
            pf_model *t = pass ? m : r;
            pf_cuda *g;
            double e;
            if (!pass) {
                if (pf_model_create(&cf, &r) != PF_OK || pf_model_alloc_train(r) != PF_OK || pf_model_reserve(r, 4) != PF_OK) {
                    check(0, "shape: bf16 model");
                    break;
                }
                memcpy(r->params, c->params, c->n_params * sizeof(float));
                r->training = 1;
                t = r;
                sw.tc_attention = PF_CUDA_OFF;
            }
            if (pass == 2) sw.att_tiles = 1;
            if (pass == 3) sw.fused_attention = PF_CUDA_OFF;
            m->training = 1;
            g = make_ctx(t, 1, 1, 0, 1);
            sw_reset();
            if (!g) { check(0, "shape: context (%s)", how); continue; }
            check(pf_cuda_forward(g, x, y, 4, 0.0f, NULL) == PF_OK && pf_cuda_logits(g, pass ? lg : lr) == PF_OK &&
                  pf_cuda_backward(g) == PF_OK && pf_cuda_download(g) == PF_OK, "T=65, head width 64, %s: runs", how);
            e = rel_err(pass ? lg : lr, c->logits, 4 * 10);
            check(e <= 2e-2, "T=65, head width 64, %s: logits within 2%% of fp32 (rel %.2e)", how, e);
            e = grads_err(t, c, worst, sizeof worst);
            check(e <= 5e-2, "T=65, head width 64, %s: every gradient within 5%% (worst %.2e, %s)", how, e, worst);
            if (pass) {
                e = rel_err(lg, lr, 4 * 10);
                if (pass < 3)
                    check(e <= 1e-2 && e > 0, "T=65, head width 64, %s: logits within 1%% of the fp32 attention's (rel %.2e; "
                          "not equal, so it ran)", how, e);
                else
                    check(e <= 1e-2, "T=65, head width 64, %s: logits within 1%% of the fp32 attention's (rel %.2e)", how, e);
                e = grads_err(m, r, worst, sizeof worst);
                check(e <= 3e-2, "T=65, head width 64, %s: every gradient within 3%% of the fp32 attention's (worst %.2e, %s)",
                      how, e, worst);
            }
            pf_cuda_free(g);
        }
        pf_model_free(r);
    }
    pf_model_free(c);
    pf_model_free(m);
}
static void test_shape(void) { test_shape_at(0); }
static void test_shape_tc(void) { test_shape_at(1); }

/* runs `steps` training steps of model m on context g; returns the final logits in lg */
static void train_steps(pf_cuda *g, pf_model *m, int steps, int first, float *lg) {
    float x[12 * 192];
    int y[12], s;
    pf_optim o = pf_optim_default();
    o.lr = 5e-3f; o.weight_decay = 0.05f; o.clip = 1.0f;
    for (s = first; s < first + steps; s++) {
        make_batch(m, 12, 100 + s, x, y);
        pf_cuda_forward(g, x, y, 12, 0.05f, NULL);
        pf_cuda_backward(g);
        pf_cuda_step(g, &o, NULL);
    }
    make_batch(m, 12, 999, x, y);
    m->training = 0; /* evaluation: no dropout, the dropout counter stays */
    pf_cuda_forward(g, x, y, 12, 0.0f, NULL);
    m->training = 1;
    pf_cuda_logits(g, lg);
    pf_cuda_download(g);
}

/* CUDA graphs: a graph is captured with the values its launches are given
   then, so everything those depend on must be in its key. Two one-device
   contexts, graphs on and off, run the same calls: a base step A and a
   step X that differs from it in one thing, as A X A X A X (first run,
   capture, replays of each), then X A X A X A. A value left out of a key
   replays A's graph for X or X's for A, and the bits differ. The emulated
   build records the launches at capture and replays the recording, so this
   holds there too. */
typedef struct graph_case {
    const char *what;
    int B, k, labels, training, adam, freeze0;
    float ls, dropout, clip, b1, b2, eps;
} graph_case;
/* one call (a forward; with labels in training, a backward and a step too): 1 when all succeed */
static int graph_call(pf_cuda *g, pf_model *m, const graph_case *gc, int s, float *loss, float *lg) {
    float x[16 * 192];
    int y[16];
    pf_optim o = pf_optim_default();
    o.lr = 5e-3f; o.weight_decay = 0.05f;
    o.adam = gc->adam, o.clip = gc->clip, o.beta1 = gc->b1, o.beta2 = gc->b2, o.eps = gc->eps;
    make_batch(m, gc->B, 300 + s, x, y);
    pf_model_set_active(m, gc->k);
    m->training = gc->training;
    m->cfg.dropout = m->cfg.emb_dropout = gc->dropout;
    m->train_branch[0] = !gc->freeze0;
    *loss = -1;
    if (pf_cuda_forward(g, x, gc->labels ? y : NULL, gc->B, gc->ls, gc->labels ? loss : NULL) != PF_OK) return 0;
    if (gc->labels && gc->training && (pf_cuda_backward(g) != PF_OK || pf_cuda_step(g, &o, NULL) != PF_OK)) return 0;
    return pf_cuda_logits(g, lg) == PF_OK;
}
/* fresh contexts on m[0] (graphs on) and m[1] (off); 0 if they cannot be made */
static int graph_contexts(pf_model **m, pf_cuda **g) {
    int i;
    for (i = 0; i < 2; i++) {
        if (g[i]) pf_cuda_free(g[i]);
        sw.graphs = i == 0 ? PF_CUDA_ON : PF_CUDA_OFF;
        g[i] = make_ctx(m[i], 1, 1, 0, 0);
    }
    sw_reset();
    if (!g[0] || !g[1]) check(0, "graphs: contexts");
    return g[0] && g[1];
}
/* one call on both: it runs, and gives the same loss and logits, bit for bit */
static int graph_same(pf_model **m, pf_cuda **g, const graph_case *gc, int s) {
    float loss[2], lg[2][16 * 5];
    int i;
    for (i = 0; i < 2; i++)
        if (!graph_call(g[i], m[i], gc, s, &loss[i], lg[i])) {
            printf("     (graphs: %s, graphs %s: %s)\n", gc->what, i ? "off" : "on", pf_last_error());
            return 0;
        }
    return memcmp(&loss[0], &loss[1], sizeof loss[0]) == 0 && memcmp(lg[0], lg[1], (size_t)gc->B * 5 * sizeof(float)) == 0;
}
static void test_graphs(void) {
    static const graph_case A = {"A", 12, 3, 1, 1, 0, 0, 0.05f, 0.1f, 1.0f, 0.9f, 0.999f, 1e-8f};
    graph_case xs[13];
    pf_model *m[2];
    pf_cuda *g[2] = {NULL, NULL};
    int n = 0, i, j, s, r;
    for (i = 0; i < 13; i++) xs[i] = A;
    xs[n].what = "label smoothing 0", xs[n++].ls = 0.0f;
    xs[n].what = "batch 8", xs[n++].B = 8;
    xs[n].what = "2 active branches", xs[n++].k = 2;
    xs[n].what = "no labels", xs[n++].labels = 0;
    xs[n].what = "evaluation", xs[n++].training = 0;
    xs[n].what = "dropout 0.2", xs[n++].dropout = 0.2f;
    xs[n].what = "clip 0.5", xs[n++].clip = 0.5f;
    xs[n].what = "no clipping", xs[n++].clip = 0.0f;
    xs[n].what = "beta1 0.8", xs[n++].b1 = 0.8f;
    xs[n].what = "beta2 0.99", xs[n++].b2 = 0.99f;
    xs[n].what = "eps 1e-6", xs[n++].eps = 1e-6f;
    xs[n].what = "Adam's L2 decay", xs[n++].adam = 1;
    xs[n].what = "branch 0 frozen", xs[n++].freeze0 = 1;
    for (i = 0; i < 2; i++) m[i] = make_model(&VARIANTS[4], 3, 11);
    for (j = 0, s = 0; j < 2 * n; j++) { /* A first, then X first, each with a fresh cache */
        const graph_case *first = j < n ? &A : &xs[j % n], *second = j < n ? &xs[j % n] : &A;
        int same = graph_contexts(m, g);
        for (r = 0; same && r < 6; r++, s++) same &= graph_same(m, g, r % 2 ? second : first, s);
        same = same && pf_cuda_download(g[0]) == PF_OK && pf_cuda_download(g[1]) == PF_OK &&
               memcmp(m[0]->params, m[1]->params, m[0]->n_params * sizeof(float)) == 0 &&
               memcmp(m[0]->adam_v, m[1]->adam_v, m[0]->n_params * sizeof(float)) == 0;
        check(same, "graphs: A and A with %s, 3 times each (%s first): losses, logits, parameters and moments equal those "
              "without graphs, bit for bit", xs[j % n].what, j < n ? "A" : "the other");
    }
    { /* more keys than a cache holds: the oldest make room, and are run plainly again when they come back */
        int same = graph_contexts(m, g);
        for (r = 0; same && r < 3 * n; r++, s++) same &= graph_same(m, g, &xs[r % n], s);
        check(same, "graphs: %d kinds of step in turn, more than a cache holds: the same bits as without graphs", n);
    }
    for (i = 0; i < 2; i++) {
        pf_cuda_free(g[i]);
        pf_model_free(m[i]);
    }
}

/* several devices, replicas, forced collectives: equal to one device */
static void test_multi(void) {
    const variant *v = &VARIANTS[4]; /* with dropout: masks must not depend on the split */
    pf_model *ref = make_model(v, 4, 11);
    pf_cuda *g = make_ctx(ref, 1, 1, 0, 0);
    float lref[12 * 5], lg[12 * 5];
    struct { int ndev, replicas, collectives, cost; const char *what; double tol; } cases[] = {
        {1, 1, 1, 0, "one device through the collectives (single rank)", 0.0},
        {2, 1, 0, 0, "2 devices, branches round-robin", 1e-5},
        {3, 1, 0, 1, "3 devices, cost plan (4 branches: 2+1+1)", 1e-5},
        {4, 1, 0, 0, "4 devices, a branch each", 1e-5},
        {2, 2, 0, 0, "2 data-parallel replicas of one device", 1e-5},
        {4, 2, 0, 0, "2 replicas of 2 devices", 1e-5},
    };
    size_t k;
    char worst[64];
    if (!g) { check(0, "multi: context"); pf_model_free(ref); return; }
    train_steps(g, ref, 3, 0, lref);
    pf_cuda_free(g);
    if (pf_cuda_device_count() < 4) {
        printf("     (%d device(s) visible: the multi-device cases need 4; the single-rank case runs)\n", pf_cuda_device_count());
    }
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pf_model *m;
        double e, ep;
        if (cases[k].ndev > pf_cuda_device_count()) continue;
        m = make_model(v, 4, 11);
        {
            pf_cuda_opts o = pf_cuda_opts_default();
            int i;
            o.n_devices = cases[k].ndev;
            for (i = 0; i < o.n_devices; i++) o.devices[i] = i;
            o.replicas = cases[k].replicas;
            o.collectives = cases[k].collectives;
            o.cost_plan = cases[k].cost;
            o.max_batch = 16;
            if (pf_cuda_create(m, &o, &g) != PF_OK) {
                check(0, "%s: created (%s)", cases[k].what, pf_last_error());
                pf_model_free(m);
                continue;
            }
        }
        train_steps(g, m, 3, 0, lg);
        e = rel_err(lg, lref, 12 * 5);
        ep = params_err(m, ref, worst, sizeof worst);
        if (cases[k].tol == 0.0)
            check(memcmp(lg, lref, sizeof lg) == 0 && memcmp(m->params, ref->params, m->n_params * 4) == 0,
                  "%s: logits and parameters after 3 steps equal the plain path bit for bit", cases[k].what);
        else
            check(e <= cases[k].tol && ep <= cases[k].tol,
                  "%s: after 3 steps logits (rel %.1e) and parameters (worst %.1e, %s) equal one device's", cases[k].what, e, ep, worst);
        if (cases[k].ndev > 1 && cases[k].replicas == 1) {
            pf_collective want[8], got[16];
            int nw = pf_collective_plan(&m->cfg, 12, cases[k].ndev, 1, m->n_params, want, 8), ng, i, same;
            /* the last traced step was a forward without labels: run a full one */
            float x[12 * 192];
            int y[12];
            make_batch(m, 12, 1, x, y);
            pf_cuda_forward(g, x, y, 12, 0.0f, NULL);
            pf_cuda_backward(g);
            ng = pf_cuda_trace(g, got, 16);
            same = ng == nw;
            for (i = 0; same && i < ng; i++)
                same = got[i].op == want[i].op && got[i].count == want[i].count && !strcmp(got[i].what, want[i].what);
            check(same, "%s: the collectives run are pf_collective_plan's (%d of %d)", cases[k].what, ng, nw);
        }
        if (cases[k].ndev == 3) {
            int d0 = pf_cuda_branch_device(g, 0), d1 = pf_cuda_branch_device(g, 1), d2 = pf_cuda_branch_device(g, 2),
                d3 = pf_cuda_branch_device(g, 3);
            check(d0 == 0 && d1 == 1 && d2 == 2 && d3 == 0, "%s: branches on devices %d %d %d %d", cases[k].what, d0, d1, d2, d3);
        }
        pf_cuda_free(g);
        pf_model_free(m);
    }
    pf_model_free(ref);
    /* bf16 (twins, bf16 GEMM outputs) across devices: the sums over devices
       run in another order, so a value near a bf16 rounding boundary may
       round the other way; after 3 steps within 1e-3 of one bf16 device */
    if (pf_cuda_device_count() >= 4) {
        struct { int ndev, replicas, collectives; const char *what; } bc[] = {
            {1, 1, 1, "bf16, one device through the collectives"}, {2, 1, 0, "bf16, 2 devices"},
            {4, 1, 0, "bf16, 4 devices"}, {4, 2, 0, "bf16, 2 replicas of 2 devices"}};
        ref = make_model(v, 4, 11);
        g = make_ctx(ref, 1, 1, 0, 1);
        if (!g) { check(0, "multi: bf16 context"); pf_model_free(ref); return; }
        train_steps(g, ref, 3, 0, lref);
        pf_cuda_free(g);
        for (k = 0; k < sizeof bc / sizeof bc[0]; k++) {
            pf_model *m = make_model(v, 4, 11);
            double e, ep;
            g = make_ctx(m, bc[k].ndev, bc[k].replicas, bc[k].collectives, 1);
            if (!g) { check(0, "%s: created", bc[k].what); pf_model_free(m); continue; }
            train_steps(g, m, 3, 0, lg);
            e = rel_err(lg, lref, 12 * 5);
            ep = params_err(m, ref, worst, sizeof worst);
            check(e <= 1e-3 && ep <= 1e-3, "%s: after 3 steps logits (rel %.1e) and parameters (worst %.1e, %s) near one "
                  "device's", bc[k].what, e, ep, worst);
            pf_cuda_free(g);
            pf_model_free(m);
        }
        pf_model_free(ref);
    }
}

/* resuming from downloaded state (what a checkpoint holds) is bit-identical */
static void test_resume(void) {
    const variant *v = &VARIANTS[4];
    pf_model *a = make_model(v, 3, 21), *b = make_model(v, 3, 21), *c = make_model(v, 3, 21);
    pf_cuda *ga = make_ctx(a, 1, 1, 0, 0), *gb = make_ctx(b, 1, 1, 0, 0), *gc;
    float la[12 * 5], lb[12 * 5];
    if (!ga || !gb) { check(0, "resume: contexts"); return; }
    train_steps(ga, a, 4, 0, la);
    train_steps(gb, b, 2, 0, lb);
    /* what a checkpoint carries: parameters, moments, step counters, dropout counter */
    memcpy(c->params, b->params, b->n_params * 4);
    memcpy(c->adam_m, b->adam_m, b->n_params * 4);
    memcpy(c->adam_v, b->adam_v, b->n_params * 4);
    memcpy(c->steps, b->steps, sizeof(int64_t) * (size_t)b->n_specs);
    c->dropout_counter = b->dropout_counter;
    pf_cuda_free(gb);
    gc = make_ctx(c, 1, 1, 0, 0);
    if (!gc) { check(0, "resume: context"); return; }
    train_steps(gc, c, 2, 2, lb);
    check(memcmp(a->params, c->params, a->n_params * 4) == 0 && memcmp(a->adam_v, c->adam_v, a->n_params * 4) == 0 &&
              memcmp(la, lb, sizeof la) == 0,
          "resume: 2 + 2 steps through a fresh context equal 4 steps bit for bit");
    pf_cuda_free(ga);
    pf_cuda_free(gc);
    pf_model_free(a);
    pf_model_free(b);
    pf_model_free(c);
}

/* bf16 GEMM operands, fp32 master weights and accumulation. Tolerances:
   a bf16 operand (8 significant bits) carries a relative rounding error of
   at most 2^-8 (0.4 %); a K-term dot product of rounded operands has an
   error around 2^-8 * sqrt(K) of its typical term, and the layers compound
   it. We accept 2 % on the logits and 5 % on each gradient tensor relative
   to its largest element (the fp32 path is held to 1e-4). */
static const char *bf16_tag = ""; /* ", fused rows" while sw.row_fused is on */
static void test_bf16_mode(int vi) {
    const variant *v = &VARIANTS[vi];
    char mode[96];
    pf_model *c = make_model(v, 3, 31), *m = make_model(v, 3, 31);
    pf_cuda *g;
    float x[BATCH * 192], lg[BATCH * 5], lc, lgpu;
    int y[BATCH];
    char worst[64];
    double e;
    snprintf(mode, sizeof mode, "bf16%s, %s", bf16_tag, v->name);
    g = make_ctx(m, 1, 1, 0, 1);
    if (!g) { check(0, "%s: context", mode); return; }
    make_batch(c, BATCH, 2, x, y);
    pf_forward(c, x, y, BATCH, 0.0f, &lc);
    pf_backward(c);
    pf_cuda_forward(g, x, y, BATCH, 0.0f, &lgpu);
    pf_cuda_backward(g);
    pf_cuda_logits(g, lg);
    pf_cuda_download(g);
    e = rel_err(lg, c->logits, (size_t)BATCH * 5);
    check(e <= 2e-2 && e > 0, "%s: logits within 2%% of fp32 (rel %.2e; not bit-equal, so reduced precision ran)", mode, e);
    check(fabs((double)lgpu - lc) <= 2e-2 * fabs((double)lc), "%s: loss within 2%% (%.5f vs %.5f)", mode, lgpu, lc);
    e = grads_err(m, c, worst, sizeof worst);
    check(e <= 5e-2, "%s: every gradient within 5%% (worst %.2e, %s)", mode, e, worst);
    {
        /* the step itself is fp32: AdamW on the host from the GPU's own
           gradients gives the GPU's new master weights */
        pf_optim o = pf_optim_default();
        size_t i, not_bf16 = 0;
        o.lr = 1e-2f;
        memcpy(c->params, m->params, m->n_params * 4);
        memcpy(c->grads, m->grads, m->n_params * 4);
        check(pf_optim_step(c, &o, NULL) == PF_OK, "%s: the CPU step", mode);
        pf_cuda_step(g, &o, NULL);
        pf_cuda_download(g);
        e = params_err(m, c, worst, sizeof worst);
        check(e <= 1e-6, "%s: the AdamW step on the fp32 master weights is the CPU's (worst %.2e, %s)", mode, e, worst);
        for (i = 0; i < m->n_params; i++) {
            uint32_t u;
            memcpy(&u, &m->params[i], 4);
            not_bf16 += (u & 0xffff) != 0;
        }
        check(not_bf16 > m->n_params / 2, "%s: master weights keep fp32 precision (%zu of %zu not bf16 values)", mode,
              not_bf16, m->n_params);
        {   /* the next forward uses the new weights (their bf16 copy follows the step) */
            float before[BATCH * 5], moved;
            memcpy(before, c->logits, sizeof before);
            pf_forward(c, x, y, BATCH, 0.0f, NULL);
            pf_cuda_forward(g, x, y, BATCH, 0.0f, NULL);
            pf_cuda_logits(g, lg);
            moved = (float)rel_err(c->logits, before, (size_t)BATCH * 5);
            e = rel_err(lg, c->logits, (size_t)BATCH * 5);
            check(e <= 2e-2 && moved > 2 * e, "%s: after the step the logits are the new weights' (rel %.2e; the step moved "
                  "them by %.2e)", mode, e, moved);
        }
    }
    pf_cuda_free(g);
    pf_model_free(c);
    pf_model_free(m);
}
/* bf16 inference (no labels) writes only the bf16 twins of what its GEMMs
   read; its logits must be those of the same forward with labels, bit for
   bit, for the pre-norm and the normed residual (which reads u1, u2); the
   fused rows of small batches off */
static void test_bf16_inference(void) {
    int vi;
    for (vi = 0; vi < 2; vi++) {
        const variant *v = &VARIANTS[vi];
        pf_model *m = make_model(v, 3, 41);
        pf_cuda *g;
        float x[BATCH * 192], a[BATCH * 5], b[BATCH * 5];
        int y[BATCH];
        sw.row_fused = PF_CUDA_OFF; /* (small inference batches have their own kernel: test_rows_fused) */
        g = make_ctx(m, 1, 1, 0, 1);
        sw_reset();
        if (!g) { check(0, "bf16 inference (%s): context", v->name); pf_model_free(m); continue; }
        m->training = 0;
        make_batch(m, BATCH, 8, x, y);
        /* inference first: nothing left in the fp32 buffers by an earlier forward */
        check(pf_cuda_forward(g, x, NULL, BATCH, 0.0f, NULL) == PF_OK && pf_cuda_logits(g, b) == PF_OK &&
              pf_cuda_forward(g, x, y, BATCH, 0.0f, NULL) == PF_OK && pf_cuda_logits(g, a) == PF_OK &&
              memcmp(a, b, sizeof a) == 0, "bf16 inference (%s): logits without labels are those with labels", v->name);
        pf_cuda_free(g);
        pf_model_free(m);
    }
}

/* a bf16 context with opts.row_fused set to rf ("0" off, "1" on) and
   opts.row_tiles to tiles (NULL: automatic), one forward of n images: logits. Inference mode
   (labels y may be NULL); with train, a training forward with labels y and
   its backward, the gradients downloaded into m */
static int rows_att;                   /* the attention run_rows uses: 0 the tensor cores', 1 fp32 fused, 2 thread per row */
static unsigned long long rows_launches; /* the kernels and GEMMs of run_rows's last forward (and backward) */
static int run_rows(pf_model *m, const char *rf, const char *tiles, int train, const float *x, const int *y, int n,
                    float *lg) {
    pf_cuda *g;
    int ok;
    if (rf) sw.row_fused = rf[0] == '1' ? PF_CUDA_ON : PF_CUDA_OFF;
    if (tiles) sw.row_tiles = atoi(tiles);
    if (rows_att >= 1) sw.tc_attention = PF_CUDA_OFF;
    if (rows_att >= 2) sw.fused_attention = PF_CUDA_OFF;
    g = make_ctx(m, 1, 1, 0, 1);
    sw_reset();
    if (!g) return 0;
    m->training = train;
    ok = pf_cuda_forward(g, x, y, n, 0.0f, NULL) == PF_OK && pf_cuda_logits(g, lg) == PF_OK &&
         (!train || (pf_cuda_backward(g) == PF_OK && pf_cuda_download(g) == PF_OK));
    rows_launches = pf_cuda_launches(g);
    m->training = 1;
    pf_cuda_free(g);
    return ok;
}
static int infer_rows(pf_model *m, const char *rf, const float *x, const int *y, int n, float *lg) {
    return run_rows(m, rf, NULL, 0, x, y, n, lg);
}
/* LayerNorm weights and biases away from their initial 1 and 0 (so that
   using one LayerNorm's for another's shows), the same in c and m */
static void perturb_norms(pf_model *c, pf_model *m) {
    int t;
    for (t = 0; t < c->n_specs; t++) {
        const pf_tensor_spec *s = &c->specs[t];
        size_t i;
        if (!strstr(s->name, "ln") && !strstr(s->name, "norm")) continue;
        for (i = 0; i < s->numel; i++)
            c->params[s->offset + i] += (float)(0.3 * sin(0.7 * (double)(i + 13 * t)));
    }
    memcpy(m->params, c->params, c->n_params * sizeof(float));
}
/* small bf16 batches: a layer's rows in one launch (pfc_rows_fused)
   against the CPU and the unfused bf16 path, at the model's shape (T = 65,
   head width 64, 2 layers: the qkv of the next layer comes from the fused
   launch), and for the pre-norm and the normed residual (which adds LN1's
   output); automatic at a small inference batch; blocks of 16 to 64 rows;
   a training forward (which also stores what the backward reads; forced)
   and its gradients (test_bf16 runs its training tests through it too) */
static void test_rows_fused(void) {
    pf_config cf;
    pf_model *c, *m;
    float x[BATCH * 256], y0[BATCH * 10], y1[BATCH * 10], y2[BATCH * 10];
    int y[BATCH], vi, rt;
    double e;
    if (cpu_reference(&cf, 16, 1, 2, 128, 2, 128, 2, 10, 6, 4, x, y, &c, &m, "fused rows")) { /* T = 65 */
        perturb_norms(c, m);
        pf_forward(c, x, y, 4, 0.0f, NULL);
        pf_backward(c);
        check(infer_rows(m, "0", x, NULL, 4, y0) && infer_rows(m, "1", x, NULL, 4, y1) && infer_rows(m, NULL, x, NULL, 4, y2),
              "T=65, head width 64, fused rows: runs");
        e = rel_err(y1, c->logits, 4 * 10);
        check(e <= 2e-2, "T=65, head width 64, fused rows: logits within 2%% of fp32 (rel %.2e)", e);
        e = rel_err(y1, y0, 4 * 10);
        check(e <= 1e-2 && e > 0, "T=65, head width 64, fused rows: logits within 1%% of the unfused bf16 path's (rel %.2e; "
              "not equal, so it ran)", e);
        check(memcmp(y1, y2, 4 * 10 * sizeof *y1) == 0, "T=65, head width 64: batch 4 of 2 branches runs the fused rows by itself");
        {   /* training: the forward through the fused rows stores what the backward reads */
            pf_model *m2 = NULL;
            char worst[64];
            if (pf_model_create(&cf, &m2) != PF_OK || pf_model_alloc_train(m2) != PF_OK) {
                check(0, "fused rows: model");
            } else {
                memcpy(m2->params, m->params, m->n_params * sizeof(float));
                check(run_rows(m, "1", NULL, 1, x, y, 4, y2) && run_rows(m2, "0", NULL, 1, x, y, 4, y0),
                      "T=65, head width 64, fused rows, a training forward and backward: runs");
                check(memcmp(y1, y2, 4 * 10 * sizeof *y1) == 0,
                      "T=65, head width 64, fused rows: a forward with labels gives the inference's logits bit for bit");
                e = grads_err(m, c, worst, sizeof worst);
                check(e <= 5e-2, "T=65, head width 64, fused rows: every gradient within 5%% of fp32 (worst %.2e, %s)", e,
                      worst);
                e = grads_err(m, m2, worst, sizeof worst);
                check(e <= 3e-2, "T=65, head width 64, fused rows: every gradient within 3%% of the unfused bf16 path's "
                      "(worst %.2e, %s)", e, worst);
            }
            pf_model_free(m2);
        }
        for (rt = 2; rt <= 4; rt++) { /* blocks of 32, 48, 64 rows (the last of 260 partly past the end) */
            char tiles[16];
            snprintf(tiles, sizeof tiles, "%d", rt);
            check(infer_rows(m, "1", x, NULL, 4, y1) && run_rows(m, "1", tiles, 0, x, NULL, 4, y2) &&
                  memcmp(y1, y2, 4 * 10 * sizeof *y1) == 0, "T=65, head width 64, fused rows in blocks of %d rows: the "
                  "logits of blocks of 16, bit for bit", 16 * rt);
        }
        pf_model_free(c);
        pf_model_free(m);
    }
    for (vi = 0; vi < 2; vi++) {
        const variant *v = &VARIANTS[vi];
        c = make_model(v, 3, 51), m = make_model(v, 3, 51);
        make_batch(c, BATCH, 3, x, y);
        perturb_norms(c, m);
        c->training = 0;
        pf_forward(c, x, y, BATCH, 0.0f, NULL);
        check(infer_rows(m, "0", x, NULL, BATCH, y0) && infer_rows(m, "1", x, NULL, BATCH, y1), "fused rows (%s): runs",
              v->name);
        e = rel_err(y1, c->logits, (size_t)BATCH * 5);
        check(e <= 2e-2, "fused rows (%s): logits within 2%% of fp32 (rel %.2e)", v->name, e);
        e = rel_err(y1, y0, (size_t)BATCH * 5);
        check(e <= 1e-2, "fused rows (%s): logits within 1%% of the unfused bf16 path's (rel %.2e)", v->name, e);
        check(run_rows(m, "1", "3", 0, x, NULL, BATCH, y2) && memcmp(y1, y2, (size_t)BATCH * 5 * sizeof *y1) == 0,
              "fused rows (%s): in blocks of 48 rows, the logits of blocks of 16, bit for bit", v->name);
        pf_model_free(c);
        pf_model_free(m);
    }
    /* with the fp32 attention kernels (PF_CUDA_TC_ATTENTION=0, and
       PF_CUDA_FUSED_ATTENTION=0 too): the fused rows still run, writing
       the next layer's qkv in fp32 (with its bias for the thread-per-row
       kernel), so each switch isolates its own feature */
    for (rows_att = 1; rows_att <= 2; rows_att++)
        for (vi = 0; vi < 2; vi++) {
            const variant *v = &VARIANTS[vi];
            const char *att = rows_att == 1 ? "fp32 fused attention" : "thread-per-row attention";
            pf_model *m2 = make_model(v, 3, 51);
            unsigned long long n0 = 0, n1;
            char worst[64];
            c = make_model(v, 3, 51), m = make_model(v, 3, 51);
            make_batch(c, BATCH, 3, x, y);
            perturb_norms(c, m);
            memcpy(m2->params, m->params, m->n_params * sizeof(float));
            m->cfg.dropout = m->cfg.emb_dropout = m2->cfg.dropout = m2->cfg.emb_dropout = c->cfg.dropout;
            pf_forward(c, x, y, BATCH, 0.0f, NULL);
            pf_backward(c);
            check(infer_rows(m, "0", x, NULL, BATCH, y0) && (n0 = rows_launches, infer_rows(m, "1", x, NULL, BATCH, y1)),
                  "fused rows, %s (%s): runs", att, v->name);
            n1 = rows_launches;
            e = rel_err(y1, y0, (size_t)BATCH * 5);
            check(e <= 1e-2 && n1 < n0, "fused rows, %s (%s): logits within 1%% of the unfused bf16 path's (rel %.2e), "
                  "in %llu launches instead of %llu", att, v->name, e, n1, n0);
            e = rel_err(y1, c->logits, (size_t)BATCH * 5);
            check(e <= 2e-2, "fused rows, %s (%s): logits within 2%% of fp32 (rel %.2e)", att, v->name, e);
            check(run_rows(m, "1", NULL, 1, x, y, BATCH, y2) && run_rows(m2, "0", NULL, 1, x, y, BATCH, y0),
                  "fused rows, %s (%s): a training forward and backward run", att, v->name);
            e = grads_err(m, m2, worst, sizeof worst);
            check(e <= 3e-2, "fused rows, %s (%s): every gradient within 3%% of the unfused bf16 path's (worst %.2e, %s)",
                  att, v->name, e, worst);
            e = grads_err(m, c, worst, sizeof worst);
            check(e <= 5e-2, "fused rows, %s (%s): every gradient within 5%% of fp32 (worst %.2e, %s)", att, v->name, e,
                  worst);
            pf_model_free(c);
            pf_model_free(m);
            pf_model_free(m2);
        }
    rows_att = 0;
}

/* bf16 training: pre-norm, normed (its residual reads the LayerNorm
   outputs in fp32, which bf16 mode otherwise leaves unwritten), dropout */
static void test_bf16(void) {
    test_bf16_mode(0);
    test_bf16_mode(1);
    test_bf16_mode(4);
    test_bf16_inference();
}
static void test_rows(void) {
    test_rows_fused();
    /* training through the fused rows (on: automatic only for inference) */
    sw.row_fused = PF_CUDA_ON;
    bf16_tag = ", fused rows";
    test_bf16_mode(0);
    test_bf16_mode(1);
    bf16_tag = "";
    sw_reset();
}

/* "Never one launch per branch": the kernels and GEMMs of a training step
   (forward, backward, AdamW) and of an inference are as many for 4
   branches as for 1 on one device, and a layer adds the same number
   whatever the branches; in bf16 a small inference batch runs a layer as
   2 (attention and the fused rows) */
static void test_launches(void) {
    int bf;
    for (bf = 0; bf < 2; bf++) {
        unsigned long long n[2][2][2]; /* [1 | 4 branches][depth 2 | 3][training step | inference] */
        int bi, di, ok = 1;
        for (bi = 0; bi < 2; bi++)
            for (di = 0; di < 2; di++) {
                pf_model *m = make_model_depth(&VARIANTS[0], bi ? 4 : 1, 2 + di, 61);
                pf_cuda *g = make_ctx(m, 1, 1, 0, bf);
                float x[BATCH * 192];
                int y[BATCH];
                pf_optim o = pf_optim_default();
                unsigned long long a, b, c;
                if (!g) { ok = 0; pf_model_free(m); continue; }
                make_batch(m, BATCH, 4, x, y);
                a = pf_cuda_launches(g);
                ok &= pf_cuda_forward(g, x, y, BATCH, 0.0f, NULL) == PF_OK && pf_cuda_backward(g) == PF_OK &&
                      pf_cuda_step(g, &o, NULL) == PF_OK;
                b = pf_cuda_launches(g);
                m->training = 0;
                ok &= pf_cuda_forward(g, x, NULL, BATCH, 0.0f, NULL) == PF_OK && pf_cuda_sync(g) == PF_OK;
                c = pf_cuda_launches(g);
                n[bi][di][0] = b - a, n[bi][di][1] = c - b;
                pf_cuda_free(g);
                pf_model_free(m);
            }
        if (!ok) { check(0, "launches (%s): runs", bf ? "bf16" : "fp32"); continue; }
        check(n[0][0][0] == n[1][0][0] && n[0][1][0] == n[1][1][0] && n[0][1][0] > n[0][0][0],
              "%s training step: %llu kernels and GEMMs for 1 branch, %llu for 4 (depth 2); %llu and %llu (depth 3): "
              "a layer adds %llu, whatever the branches", bf ? "bf16" : "fp32", n[0][0][0], n[1][0][0], n[0][1][0],
              n[1][1][0], n[0][1][0] - n[0][0][0]);
        check(n[0][0][1] == n[1][0][1] && n[0][1][1] == n[1][1][1] && n[0][1][1] > n[0][0][1] &&
              (!bf || n[0][1][1] - n[0][0][1] == 2),
              "%s inference of %d images: %llu kernels and GEMMs for 1 branch, %llu for 4 (depth 2); a layer adds %llu%s",
              bf ? "bf16" : "fp32", BATCH, n[0][0][1], n[1][0][1], n[0][1][1] - n[0][0][1],
              bf ? " (attention and the fused rows)" : "");
    }
}

static void test_bad_input(void) {
    pf_model *m = make_model(&VARIANTS[0], 3, 1);
    pf_cuda_opts o = pf_cuda_opts_default();
    pf_cuda *g = NULL;
    float x[20 * 192];
    int y[20];
    make_batch(m, 20, 1, x, y);
    o.devices[0] = 99;
    check(pf_cuda_create(m, &o, &g) == PF_ERR_ARG && g == NULL, "device 99 refused: %s", pf_last_error());
    o = pf_cuda_opts_default();
    o.n_devices = 4;
    o.devices[1] = 1; o.devices[2] = 2; o.devices[3] = 3;
    check(pf_cuda_create(m, &o, &g) == PF_ERR_ARG || pf_cuda_device_count() < 4,
          "4 devices for 3 branches refused: %s", pf_last_error());
    check(pf_cuda_parse_devices("cuda:0,x", &o) == PF_ERR_ARG, "bad device list refused: %s", pf_last_error());
    check(pf_cuda_parse_devices("cuda:2,0", &o) == PF_OK && o.n_devices == 2 && o.devices[0] == 2, "cuda:2,0 parsed");
    check(pf_cuda_parse_devices("gpu", &o) == PF_ERR_ARG, "'gpu' refused: %s", pf_last_error());
    g = make_ctx(m, 1, 1, 0, 0);
    if (!g) { check(0, "bad input: context"); pf_model_free(m); return; }
    check(pf_cuda_forward(g, x, y, 17, 0.0f, NULL) == PF_ERR_ARG, "batch 17 > max 16 refused: %s", pf_last_error());
    y[3] = 5;
    check(pf_cuda_forward(g, x, y, 8, 0.0f, NULL) == PF_ERR_ARG, "label 5 of 5 classes refused: %s", pf_last_error());
    check(pf_cuda_forward(g, x, NULL, 8, 0.0f, NULL) == PF_OK && pf_cuda_backward(g) == PF_ERR_ARG,
          "backward after a forward without labels refused: %s", pf_last_error());
    m->training = 1;
    m->drop_path = 0.1f;
    y[3] = 1;
    check(pf_cuda_forward(g, x, y, 8, 0.0f, NULL) == PF_ERR_ARG && strstr(pf_last_error(), "CPU only"),
          "a training forward with drop-path refused: %s", pf_last_error());
    m->training = 0;
    m->drop_path = 0.0f;
    pf_cuda_free(g);
    o = pf_cuda_opts_default();
    o.max_batch = 200000000; /* activations of ~10^12 bytes: no device has them */
    check(pf_cuda_create(m, &o, &g) == PF_ERR_NOMEM && g == NULL && strstr(pf_last_error(), "model too large for GPU") &&
          strstr(pf_last_error(), "--batch"), "a batch too large for the device refused: %s", pf_last_error());
    pf_model_free(m);
    /* the switches come from the environment only through pf_cuda_opts_from_env */
    o = pf_cuda_opts_default();
    setenv("PF_CUDA_GRAPHS", "0", 1);
    setenv("PF_CUDA_ROW_FUSED", "1", 1);
    setenv("PF_CUDA_ROW_TILES", "3", 1);
    check(pf_cuda_opts_from_env(&o) == PF_OK && o.graphs == PF_CUDA_OFF && o.row_fused == PF_CUDA_ON &&
          o.row_tiles == 3 && o.fused_attention == PF_CUDA_AUTO && o.tc_attention == PF_CUDA_AUTO && o.att_tiles == 0,
          "pf_cuda_opts_from_env: PF_CUDA_GRAPHS=0, PF_CUDA_ROW_FUSED=1, PF_CUDA_ROW_TILES=3 read, the rest automatic");
    setenv("PF_CUDA_FUSED_ATTENTION", "yes", 1);
    check(pf_cuda_opts_from_env(&o) == PF_ERR_ARG && strstr(pf_last_error(), "PF_CUDA_FUSED_ATTENTION"),
          "pf_cuda_opts_from_env: a malformed switch refused: %s", pf_last_error());
    unsetenv("PF_CUDA_FUSED_ATTENTION");
    setenv("PF_CUDA_ATT_TILES", "-2", 1);
    check(pf_cuda_opts_from_env(&o) == PF_ERR_ARG && strstr(pf_last_error(), "PF_CUDA_ATT_TILES"),
          "pf_cuda_opts_from_env: a negative tile count refused: %s", pf_last_error());
    unsetenv("PF_CUDA_ATT_TILES");
    unsetenv("PF_CUDA_GRAPHS");
    unsetenv("PF_CUDA_ROW_FUSED");
    unsetenv("PF_CUDA_ROW_TILES");
}

/* a kernel fault is reported against its kernel with checked launches (as
   test_cuda runs), and with a pointer to them without; the emulated build
   injects one (pf_cuda_emu_fault, which a GPU build does not have) */
extern void pf_cuda_emu_fault(unsigned long long n) __attribute__((weak));
static void test_faults(void) {
    float x[BATCH * 192], lg[BATCH * 5];
    int y[BATCH], checked;
    if (!pf_cuda_emu_fault) {
        printf("     (a GPU build: faults are injected in the emulated build only)\n");
        return;
    }
    for (checked = 0; checked < 2; checked++) {
        pf_model *m = make_model(&VARIANTS[0], 3, 1);
        pf_cuda *g;
        const char *e, *at;
        pf_status st;
        sw.check_launches = checked ? PF_CUDA_ON : PF_CUDA_OFF;
        g = make_ctx(m, 1, 1, 0, 0);
        sw_reset();
        if (!g) { check(0, "faults: context"); pf_model_free(m); continue; }
        make_batch(m, BATCH, 1, x, y);
        pf_cuda_emu_fault(3);
        st = pf_cuda_forward(g, x, y, BATCH, 0.0f, NULL);
        e = pf_last_error();
        at = strstr(e, "launched at line ");
        if (checked)
            check(st == PF_ERR_IO && at && atoi(at + 17) > 0 && strstr(e, "of paraformer_cuda.cu failed: an illegal memory access"),
                  "a kernel fault with checked launches: named by its line (%s)", e);
        else
            check(st == PF_ERR_IO && !at && strstr(e, "PF_CUDA_CHECK_LAUNCHES=1 names it"),
                  "a kernel fault without checked launches: reported, with how to name it (%s)", e);
        check(pf_cuda_forward(g, x, y, BATCH, 0.0f, NULL) == PF_OK && pf_cuda_logits(g, lg) == PF_OK,
              "faults: reported once (%s launches)", checked ? "checked" : "unchecked");
        pf_cuda_free(g);
        pf_model_free(m);
    }
}

static void test_parity_all(void) {
    size_t v;
    for (v = 0; v < sizeof VARIANTS / sizeof VARIANTS[0]; v++) test_parity(&VARIANTS[v]);
}

/* the groups, in the order they run; `test_cuda tc rows` runs only those
   (tools/gpu_check.sh runs the sanitizers on the newest kernels this way) */
static const struct {
    const char *name, *what;
    void (*run)(void);
} GROUPS[] = {
    {"parity", "every variant against the CPU: logits, loss, gradients, AdamW steps, a prefix", test_parity_all},
    {"predict", "pf_cuda_predict, repeats, images left on the device, determinism", test_predict_determinism},
    {"graphs", "CUDA graphs against the same steps without them", test_graphs},
    {"shape", "T = 65, head width 64: the fp32 attention paths", test_shape},
    {"tc", "T = 65, head width 64: bf16, the tensor-core attention", test_shape_tc},
    {"wide", "a wide model", test_wide},
    {"multi", "several devices, replicas, collectives", test_multi},
    {"resume", "resuming from downloaded state", test_resume},
    {"bf16", "bf16 training and inference", test_bf16},
    {"rows", "the fused rows (pfc_rows_fused): inference, training, every attention kernel", test_rows},
    {"launches", "kernels and GEMMs per step", test_launches},
    {"bad", "bad input refused", test_bad_input},
    {"faults", "a kernel fault reported against its kernel (emulated: injected)", test_faults},
};
#define NGROUPS (sizeof GROUPS / sizeof GROUPS[0])

int main(int argc, char **argv) {
    size_t v;
    int i, want[NGROUPS];
    for (v = 0; v < NGROUPS; v++) want[v] = argc < 2;
    for (i = 1; i < argc; i++) {
        for (v = 0; v < NGROUPS && strcmp(argv[i], GROUPS[v].name); v++) {}
        if (v == NGROUPS) {
            fprintf(stderr, "test_cuda: no test group '%s'. Usage: test_cuda [GROUP...] (all by default); groups:\n", argv[i]);
            for (v = 0; v < NGROUPS; v++) fprintf(stderr, "  %-9s %s\n", GROUPS[v].name, GROUPS[v].what);
            return 2;
        }
        want[v] = 1;
    }
    printf("backend: %s, %d device(s)\n", pf_cuda_backend(), pf_cuda_device_count());
    sw_env = pf_cuda_opts_default();
    if (pf_cuda_opts_from_env(&sw_env) != PF_OK) {
        printf("error: %s\n", pf_last_error());
        return 2;
    }
    sw_reset();
    if (pf_cuda_device_count() < 1) {
        pf_model *m = make_model(&VARIANTS[0], 3, 1);
        pf_cuda *g = NULL;
        check(pf_cuda_create(m, NULL, &g) != PF_OK && strstr(pf_last_error(), "no CUDA device") != NULL,
              "no GPU: a clear error (%s)", pf_last_error());
        pf_model_free(m);
        if (test_summary()) return 1;
        /* nothing was compared: say so, and do not pass */
        printf("SKIPPED: no GPU visible, so no CPU/GPU parity was checked (exit 77)\n");
        return 77;
    }
    for (v = 0; v < NGROUPS; v++)
        if (want[v]) {
            printf("# %s: %s\n", GROUPS[v].name, GROUPS[v].what);
            GROUPS[v].run();
        }
    return test_summary();
}

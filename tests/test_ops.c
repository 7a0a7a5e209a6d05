/* test_ops.c - every op's backward against central finite differences, in
   double precision (built with -DPF_DOUBLE).

   Each op is checked through a scalar L = sum_i w_i out_i with fixed random
   weights w, so dL/dout = w. Error: max|analytic - numeric| / max|numeric|
   over the tensor, tolerance 1e-6 (central differences with h = 1e-5 have
   truncation error ~h^2 = 1e-10 relative and rounding ~1e-11/h = 1e-6 at
   worst; seen values are ~1e-9).
   Then the whole model (patch embedding, cls/pos, every layer, both residual
   forms, both aggregations over a prefix of branches, pooling, final LN,
   head, softmax cross-entropy with label smoothing, dropout) is checked the
   same way on every parameter. */
#ifndef PF_DOUBLE
#error "build test_ops with -DPF_DOUBLE"
#endif
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pf_test.h"

#define TOL 1e-6
#define H 1e-5

static double worst;

static uint64_t rng = 12345;
static double urand(void) { return 2.0 * pf__uniform(&rng) - 1.0; }
static double *rvec(size_t n, double scale) { return rand_reals(&rng, n, scale); }
static double wsum(const double *w, const double *out, size_t n) {
    double s = 0;
    size_t i;
    for (i = 0; i < n; i++) s += w[i] * out[i];
    return s;
}

/* compares analytic gradient g of variable x (n values) with central
   differences of loss() */
typedef double (*loss_fn)(void *ctx);
static double fd_err(double *x, const double *g, size_t n, loss_fn loss, void *ctx) {
    rel_acc r = {0, 0};
    size_t i;
    for (i = 0; i < n; i++) {
        double save = x[i], lp, lm;
        x[i] = save + H; lp = loss(ctx);
        x[i] = save - H; lm = loss(ctx);
        x[i] = save;
        rel_add(&r, g[i], (lp - lm) / (2 * H));
    }
    return rel_value(&r);
}
static void report(const char *what, double e) {
    if (e > worst) worst = e;
    check(e <= TOL, "%s: rel err %.2e", what, e);
}

/* ---- linear ---- */
typedef struct { double *x, *W, *b, *out, *w; int N, IC, OC; } lin_ctx;
static double lin_loss(void *p) {
    lin_ctx *c = (lin_ctx *)p;
    pf__linear_forward(c->out, c->x, c->W, c->b, c->N, c->IC, c->OC);
    return wsum(c->w, c->out, (size_t)c->N * c->OC);
}
static void test_linear(int N, int IC, int OC, int bias) {
    lin_ctx c;
    double *dx, *dW, *db;
    char nm[96];
    c.N = N; c.IC = IC; c.OC = OC;
    c.x = rvec((size_t)N * IC, 1); c.W = rvec((size_t)OC * IC, 0.5); c.b = bias ? rvec(OC, 0.5) : NULL;
    c.out = rvec((size_t)N * OC, 0); c.w = rvec((size_t)N * OC, 1);
    dx = rvec((size_t)N * IC, 0); dW = rvec((size_t)OC * IC, 0); db = rvec(OC, 0);
    pf__linear_backward(dx, dW, bias ? db : NULL, c.w, c.x, c.W, N, IC, OC);
    snprintf(nm, sizeof nm, "linear %dx%d->%d%s dinp", N, IC, OC, bias ? " +bias" : "");
    report(nm, fd_err(c.x, dx, (size_t)N * IC, lin_loss, &c));
    snprintf(nm, sizeof nm, "linear %dx%d->%d%s dweight", N, IC, OC, bias ? " +bias" : "");
    report(nm, fd_err(c.W, dW, (size_t)OC * IC, lin_loss, &c));
    if (bias) {
        snprintf(nm, sizeof nm, "linear %dx%d->%d +bias dbias", N, IC, OC);
        report(nm, fd_err(c.b, db, (size_t)OC, lin_loss, &c));
    }
    free(c.x); free(c.W); free(c.b); free(c.out); free(c.w); free(dx); free(dW); free(db);
}

/* ---- layernorm ---- */
typedef struct { double *x, *g, *b, *out, *mean, *rstd, *w; int N, C; } ln_ctx;
static double ln_loss(void *p) {
    ln_ctx *c = (ln_ctx *)p;
    pf__layernorm_forward(c->out, c->mean, c->rstd, c->x, c->g, c->b, c->N, c->C);
    return wsum(c->w, c->out, (size_t)c->N * c->C);
}
static void test_layernorm(int N, int C) {
    ln_ctx c;
    double *dx, *dg, *db, *dx2, e = 0;
    size_t i, n = (size_t)N * C;
    c.N = N; c.C = C;
    c.x = rvec(n, 2); c.g = rvec(C, 1); c.b = rvec(C, 1); c.out = rvec(n, 0);
    c.mean = rvec(N, 0); c.rstd = rvec(N, 0); c.w = rvec(n, 1);
    dx = rvec(n, 0); dg = rvec(C, 0); db = rvec(C, 0); dx2 = rvec(n, 1);
    ln_loss(&c);
    pf__layernorm_backward(dx, dg, db, c.w, c.x, c.g, c.mean, c.rstd, N, C, 0);
    report("layernorm dinp", fd_err(c.x, dx, n, ln_loss, &c));
    report("layernorm dweight", fd_err(c.g, dg, (size_t)C, ln_loss, &c));
    report("layernorm dbias", fd_err(c.b, db, (size_t)C, ln_loss, &c));
    /* accumulate mode adds to what is there */
    {
        double *base = rvec(n, 0);
        memcpy(base, dx2, n * sizeof(double));
        ln_loss(&c);
        pf__layernorm_backward(dx2, dg, db, c.w, c.x, c.g, c.mean, c.rstd, N, C, 1);
        for (i = 0; i < n; i++) if (fabs(dx2[i] - base[i] - dx[i]) > e) e = fabs(dx2[i] - base[i] - dx[i]);
        check(e < 1e-12, "layernorm accumulate mode adds the gradient (err %.1e)", e);
        free(base);
    }
    free(c.x); free(c.g); free(c.b); free(c.out); free(c.mean); free(c.rstd); free(c.w);
    free(dx); free(dg); free(db); free(dx2);
}

/* ---- gelu ---- */
typedef struct { double *x, *out, *w; size_t n; } gelu_ctx;
static double gelu_loss(void *p) {
    gelu_ctx *c = (gelu_ctx *)p;
    pf__gelu_forward(c->out, c->x, c->n);
    return wsum(c->w, c->out, c->n);
}
static void test_gelu(void) {
    gelu_ctx c;
    double *dx, ref[3], xs[3] = {-1.5, 0.0, 2.0}, out[3], e = 0;
    int i;
    c.n = 64; c.x = rvec(c.n, 4); c.out = rvec(c.n, 0); c.w = rvec(c.n, 1);
    dx = rvec(c.n, 0);
    pf__gelu_backward(dx, c.w, c.x, c.n);
    report("gelu (exact erf) dinp", fd_err(c.x, dx, c.n, gelu_loss, &c));
    /* torch.nn.functional.gelu in float64 at -1.5, 0, 2 */
    ref[0] = -0.10021080190328704; ref[1] = 0.0; ref[2] = 1.9544997361036416;
    pf__gelu_forward(out, xs, 3);
    for (i = 0; i < 3; i++) if (fabs(out[i] - ref[i]) > e) e = fabs(out[i] - ref[i]);
    check(e < 1e-10, "gelu matches torch's exact GELU values (err %.1e)", e);
    free(c.x); free(c.out); free(c.w); free(dx);
}

/* ---- attention ---- */
typedef struct { double *qkv, *att, *out, *w; int B, T, D, Hh; } att_ctx;
static double att_loss(void *p) {
    att_ctx *c = (att_ctx *)p;
    pf__attention_forward(c->out, c->att, c->qkv, c->B, c->T, c->D, c->Hh);
    return wsum(c->w, c->out, (size_t)c->B * c->T * c->D);
}
static void test_attention(int B, int T, int D, int Hh) {
    att_ctx c;
    double *dqkv, *datt, rowsum = 0;
    size_t n = (size_t)B * T * 3 * D;
    int i;
    char nm[96];
    c.B = B; c.T = T; c.D = D; c.Hh = Hh;
    c.qkv = rvec(n, 1.5); c.att = rvec((size_t)B * Hh * T * T, 0); c.out = rvec((size_t)B * T * D, 0);
    c.w = rvec((size_t)B * T * D, 1);
    dqkv = rvec(n, 0); datt = rvec((size_t)B * Hh * T * T, 0);
    att_loss(&c);
    for (i = 0; i < T; i++) rowsum += c.att[i];
    check(fabs(rowsum - 1) < 1e-12, "attention probabilities sum to 1");
    pf__attention_backward(dqkv, datt, c.w, c.qkv, c.att, B, T, D, Hh);
    snprintf(nm, sizeof nm, "attention B%d T%d D%d heads %d dqkv", B, T, D, Hh);
    report(nm, fd_err(c.qkv, dqkv, n, att_loss, &c));
    free(c.qkv); free(c.att); free(c.out); free(c.w); free(dqkv); free(datt);
}

/* ---- dropout ---- */
static void test_dropout(void) {
    double x[4000], y[4000];
    size_t i, kept = 0;
    int same = 1;
    for (i = 0; i < 4000; i++) x[i] = y[i] = 1.0;
    pf__dropout(x, 4000, 99, 0.25f);
    pf__dropout(y, 4000, 99, 0.25f);
    for (i = 0; i < 4000; i++) {
        if (x[i] != y[i]) same = 0;
        if (x[i] != 0) { kept++; if (fabs(x[i] - 1 / 0.75) > 1e-12) same = 0; }
    }
    check(same, "dropout: the mask is a function of (key, index); kept values scaled by 1/(1-p)");
    check(kept > 2850 && kept < 3150, "dropout p=0.25 keeps %zu of 4000", kept);
}

/* ---- the whole model ---- */
typedef struct { pf_model *m; double *x; int *y; int B; float ls; uint64_t counter; } model_ctx;
static double model_loss(void *p) {
    model_ctx *c = (model_ctx *)p;
    c->m->dropout_counter = c->counter; /* same dropout masks every time */
    pf_forward(c->m, c->x, c->y, c->B, c->ls, NULL);
    return c->m->loss;
}
static void test_model(const char *name, int residual, int aggregate, int pool, int nobias, int active,
                       float dropout, float ls) {
    pf_config cfg;
    model_ctx c;
    pf_model *m;
    double *g, emax = 0;
    int s, y[3] = {0, 3, 1};
    char where[128] = "";
    cfg = shape_config(8, 2, 4, 8, 2, 12, 3, 2, 4);
    cfg.residual = residual; cfg.aggregate = aggregate;
    cfg.pool = pool; cfg.no_qkv_bias = nobias; cfg.dropout = dropout; cfg.emb_dropout = dropout;
    if (pf_model_create(&cfg, &m) != PF_OK) { check(0, "%s: %s", name, pf_last_error()); return; }
    pf_model_init(m, 3, 0.5f);
    for (s = 0; s < m->n_specs; s++) /* perturb LayerNorm away from 1/0 */
        if (m->specs[s].kind == PF_KIND_LN_WEIGHT || m->specs[s].kind == PF_KIND_LN_BIAS) {
            size_t i;
            for (i = 0; i < m->specs[s].numel; i++) m->params[m->specs[s].offset + i] += 0.3 * urand();
        }
    pf_model_reserve(m, 3);
    pf_model_alloc_train(m);
    pf_model_set_active(m, active);
    m->training = dropout > 0;
    c.m = m; c.B = 3; c.y = y; c.ls = ls; c.counter = 5;
    c.x = rvec((size_t)3 * 2 * 8 * 8, 1);
    model_loss(&c);
    pf_backward(m);
    g = (double *)malloc(m->n_params * sizeof(double));
    memcpy(g, m->grads, m->n_params * sizeof(double));
    for (s = 0; s < m->n_specs; s++) {
        const pf_tensor_spec *sp = &m->specs[s];
        double e;
        if (sp->part == PF_PART_BRANCH && sp->branch >= active) continue; /* no gradient */
        e = fd_err(m->params + sp->offset, g + sp->offset, sp->numel, model_loss, &c);
        if (e > emax) { emax = e; snprintf(where, sizeof where, "%s", sp->name); }
    }
    {
        char nm[160];
        snprintf(nm, sizeof nm, "model %s: every parameter (worst %s)", name, where);
        report(nm, emax);
    }
    free(g); free(c.x);
    pf_model_free(m);
}

int main(void) {
    printf("# test_ops: backward vs central finite differences in double (tolerance %.0e)\n", TOL);
    test_linear(5, 7, 3, 1);
    test_linear(4, 9, 6, 0);
    test_layernorm(6, 10);
    test_gelu();
    test_attention(2, 5, 6, 2);
    test_attention(1, 4, 8, 1);
    test_dropout();
    test_model("prenorm/delta/cls/bias k=3", PF_PRENORM, PF_AGG_DELTA, PF_POOL_CLS, 0, 3, 0, 0);
    test_model("normed/sum/mean/no-bias k=3", PF_NORMED, PF_AGG_SUM, PF_POOL_MEAN, 1, 3, 0, 0.1f);
    test_model("prenorm/sum/cls/no-bias k=2", PF_PRENORM, PF_AGG_SUM, PF_POOL_CLS, 1, 2, 0, 0);
    test_model("normed/delta/mean/bias k=1", PF_NORMED, PF_AGG_DELTA, PF_POOL_MEAN, 0, 1, 0, 0.2f);
    test_model("prenorm/delta/mean/bias k=2 dropout 0.2", PF_PRENORM, PF_AGG_DELTA, PF_POOL_MEAN, 0, 2, 0.2f, 0.1f);
    test_model("normed/sum/cls/no-bias k=3 dropout 0.1", PF_NORMED, PF_AGG_SUM, PF_POOL_CLS, 1, 3, 0.1f, 0);
    printf("# worst relative error: %.2e\n", worst);
    return test_summary();
}

/* test_model.c - the whole model against PyTorch, in the style of llm.c's
   test_gpt2: logits, loss, every gradient by name and 5 optimizer steps,
   compared with float64 references written by tools/make_fixtures.py.

   Error measure (docs/design.md §7): per tensor, max|ours - ref| / max|ref|.
   Tolerance: 1e-4 in the float build (float32 rounding of a few thousand
   operations, ~1e-6 seen), 1e-7 in the PF_DOUBLE build (the same math in
   double; what remains comes from float-typed hyperparameters such as the
   label smoothing 0.1f, which is 0.1 only to 1.5e-8).
   One exception, float build only: the key part of qkv.bias. Its gradient
   is zero in exact arithmetic (softmax ignores a shift q.b_k shared by a
   whole row), so in float32 it is rounding noise of ~1e-9, and Adam divides
   that by sqrt(v) + eps ~ 1e-8: the update is noise of size ~0.1 lr, as it is
   in PyTorch's own float32. The float build checks that this gradient is
   noise (<= 1e-6 of the largest qkv.bias gradient) and leaves those entries
   out of the after-steps comparison; the double build checks them all.
   Also checks: bitwise identical results for 1 and 2 threads (forward,
   backward, optimizer, dropout), and that inactive branches are untouched. */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PF_DOUBLE
#define TOL 1e-7 /* hyperparameters are float: 0.1f is 0.1 to 1.5e-8 */
#define BUILD "double"
#else
#define TOL 1e-4
#define BUILD "float"
#endif

#include "pf_test.h"

/* worst relative error per tensor kind, over all cases */
enum { K_LOGITS, K_LOSS, K_GW, K_GB, K_GLN, K_GEMB, K_FINAL, K_COUNT };
static const char *kind_name[K_COUNT] = {"logits", "loss", "grad Linear weight", "grad Linear bias",
                                         "grad LayerNorm", "grad cls/pos", "params after 5 steps"};
static double worst[K_COUNT];
static char worst_at[K_COUNT][192];

static void note(int kind, double e, const char *where) {
    if (e > worst[kind]) { worst[kind] = e; snprintf(worst_at[kind], sizeof worst_at[kind], "%s", where); }
}

static double *read_all(pf_st_file *f, const char *name, size_t *n) {
    const pf_st_entry *e = pf_st_find(f, name);
    double *d;
    if (!e) return NULL;
    *n = pf_st_numel(e);
    d = (double *)malloc(*n * sizeof(double) + 8);
    if (pf_st_read_f64(f, e, d) != PF_OK) { free(d); return NULL; }
    return d;
}

/* the reference PREFIX.<tensor name> of a spec (its name in refname), as read_all */
static double *read_ref(pf_st_file *f, const char *prefix, const pf_tensor_spec *sp, char *refname, size_t cap,
                        size_t *n) {
    snprintf(refname, cap, "%s.%s", prefix, sp->name);
    return read_all(f, refname, n);
}

static double jnum(const char *json, const char *key) {
    char pat[64];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(json, pat);
    return p ? strtod(p + strlen(pat), NULL) : 0.0;
}

/* one tensor (ours, at the spec's offset) of case `name` against its
   reference `refname`: notes the worst error of `kind`, raises *emax, and
   fails a check above TOL (*bad = 1). Returns the error. */
static double against_ref(const char *name, const char *refname, const pf_tensor_spec *sp, const pf_real *ours,
                          const double *ref, int kind, double *emax, int *bad) {
    char where[192];
    double e = rel_err_ref(ours + sp->offset, ref, sp->numel);
    snprintf(where, sizeof where, "%s %s", name, sp->name);
    note(kind, e, where);
    if (e > *emax) *emax = e;
    if (e > TOL) { *bad = 1; check(0, "%s: %s rel err %.2e", name, refname, e); }
    return e;
}

/* a loss against its reference, noted */
static double loss_err(const char *name, float loss, double ref) {
    pf_real l = (pf_real)loss;
    double e = rel_err_ref(&l, &ref, 1);
    note(K_LOSS, e, name);
    return e;
}

static int kind_of(const pf_tensor_spec *s) {
    switch (s->kind) {
    case PF_KIND_WEIGHT: return K_GW;
    case PF_KIND_BIAS: return K_GB;
    case PF_KIND_LN_WEIGHT: case PF_KIND_LN_BIAS: return K_GLN;
    default: return K_GEMB;
    }
}

/* one fixture case while it runs: the model with the fixture's parameters,
   and the batch it is checked and trained on */
typedef struct {
    const char *name;
    pf_st_file *f;
    pf_model *m;
    const pf_config *cfg;
    const char *tj; /* the fixture's "test" metadata (JSON) */
    int B, active, steps;
    pf_real *xin;
    int *labels;
} ref_case;

/* the optimizer the fixture was trained with, from its "test" metadata */
static pf_optim case_optim(const char *tj) {
    pf_optim o = pf_optim_default();
    o.adam = strstr(tj, "\"optim\": \"adam\"") != NULL;
    o.lr = (float)jnum(tj, "lr");
    o.beta1 = (float)jnum(tj, "beta1");
    o.beta2 = (float)jnum(tj, "beta2");
    o.eps = (float)jnum(tj, "eps");
    o.weight_decay = (float)jnum(tj, "weight_decay");
    o.clip = (float)jnum(tj, "clip");
    return o;
}

/* initial parameters by name; 0 when one is missing or of the wrong size */
static int case_params(const ref_case *c) {
    pf_model *m = c->m;
    size_t n, i;
    int s, bad = 0;
    for (s = 0; s < m->n_specs; s++) {
        double *p = read_all(c->f, m->specs[s].name, &n);
        if (!p || n != m->specs[s].numel) { bad = 1; free(p); break; }
        for (i = 0; i < n; i++) m->params[m->specs[s].offset + i] = (pf_real)p[i];
        free(p);
    }
    check(!bad, "%s: fixture has every parameter by name", c->name);
    return !bad;
}

/* forward: logits and loss */
static void case_forward(const ref_case *c) {
    double *ref, e;
    size_t n;
    float loss;
    pf_forward(c->m, c->xin, c->labels, c->B, (float)jnum(c->tj, "label_smoothing"), &loss);
    ref = read_all(c->f, "logits", &n);
    e = rel_err_ref(c->m->logits, ref, n);
    note(K_LOGITS, e, c->name);
    check(e <= TOL, "%s: logits rel err %.2e", c->name, e);
    free(ref);
    ref = read_all(c->f, "loss", &n);
    e = loss_err(c->name, loss, ref[0]);
    check(e <= TOL, "%s: loss %.8f vs %.8f rel err %.2e", c->name, (double)loss, ref[0], e);
    free(ref);
}

/* the key part of qkv.bias must have a gradient of rounding noise only (see the top) */
static void key_bias_noise(const ref_case *c, const pf_tensor_spec *sp, const char *rname, size_t n, int *bad) {
    size_t D = (size_t)c->cfg->dim, i;
    double gk = 0, gall = 0;
    for (i = 0; i < n; i++) {
        double g = fabs((double)c->m->grads[sp->offset + i]);
        if (g > gall) gall = g;
        if (i >= D && i < 2 * D && g > gk) gk = g;
    }
    if (gk > 1e-6 * gall) { *bad = 1; check(0, "%s: key bias gradient %.2e is not ~0", rname, gk); }
}

/* every gradient by name; inactive branches have none */
static void case_gradients(const ref_case *c) {
    char rname[96]; /* the reference tensor compared (grad.X) */
    pf_model *m = c->m;
    const char *name = c->name;
    double *ref, emax = 0;
    size_t n;
    int s, bad = 0;
    pf_backward(m);
    for (s = 0; s < m->n_specs; s++) {
        const pf_tensor_spec *sp = &m->specs[s];
        ref = read_ref(c->f, "grad", sp, rname, sizeof rname, &n);
        if (sp->part == PF_PART_BRANCH && sp->branch >= c->active) {
            if (ref) { bad = 1; check(0, "%s: %s should not exist", name, rname); }
            free(ref);
            continue;
        }
        if (!ref || n != sp->numel) { bad = 1; check(0, "%s: %s missing", name, rname); free(ref); continue; }
        against_ref(name, rname, sp, m->grads, ref, kind_of(sp), &emax, &bad);
        if (strstr(sp->name, "qkv.bias")) key_bias_noise(c, sp, rname, n, &bad);
        free(ref);
    }
    check(!bad, "%s: every gradient by name, worst rel err %.2e", name, emax);
}

/* optimizer steps on the same batch; losses[t] is computed before step t */
static void case_steps(const ref_case *c, const pf_optim *o) {
    double *ref;
    size_t n;
    int step, bad = 0;
    float loss;
    ref = read_all(c->f, "losses", &n);
    for (step = 0; step < c->steps; step++) {
        pf_forward(c->m, c->xin, c->labels, c->B, (float)jnum(c->tj, "label_smoothing"), &loss);
        if (loss_err(c->name, loss, ref[step]) > TOL) bad = 1;
        pf_backward(c->m);
        pf_optim_step(c->m, o, NULL);
    }
    check(!bad, "%s: %d %s step losses match", c->name, c->steps, o->adam ? "Adam" : "AdamW");
    free(ref);
}

/* every parameter after the steps; inactive branches must not have moved */
static void case_final(const ref_case *c) {
    char rname[96]; /* the reference tensor compared (final.X) */
    pf_model *m = c->m;
    const char *name = c->name;
    double *ref, e, emax = 0;
    size_t n;
    int s, bad = 0;
    for (s = 0; s < m->n_specs; s++) {
        const pf_tensor_spec *sp = &m->specs[s];
        ref = read_ref(c->f, "final", sp, rname, sizeof rname, &n);
        if (!ref || n != sp->numel) { bad = 1; free(ref); continue; }
#ifndef PF_DOUBLE
        if (strstr(sp->name, "qkv.bias")) { /* zero the key part (see the top) */
            size_t D = (size_t)c->cfg->dim, i;
            for (i = D; i < 2 * D; i++) ref[i] = (double)m->params[sp->offset + i];
        }
#endif
        e = against_ref(name, rname, sp, m->params, ref, K_FINAL, &emax, &bad);
        if (sp->part == PF_PART_BRANCH && sp->branch >= c->active && e != 0.0) {
            bad = 1;
            check(0, "%s: inactive %s changed", name, sp->name);
        }
        free(ref);
    }
    check(!bad, "%s: every parameter after %d steps, worst rel err %.2e", name, c->steps, emax);
}

static void run_case(const char *name) {
    char path[256];
    pf_config cfg;
    const char *cj;
    double *x, *y;
    size_t n, i, numel;
    pf_optim o;
    ref_case c;

    memset(&c, 0, sizeof c);
    c.name = name;
    c.cfg = &cfg;
    snprintf(path, sizeof path, "tests/fixtures/ref_%s.safetensors", name);
    if (pf_st_open(path, &c.f) != PF_OK) { check(0, "%s: %s", name, pf_last_error()); return; }
    cj = pf_st_meta(c.f, "config");
    c.tj = pf_st_meta(c.f, "test");
    if (!cj || !c.tj || pf_config_from_json(cj, strlen(cj), &cfg) != PF_OK || pf_model_create(&cfg, &c.m) != PF_OK) {
        check(0, "%s: config: %s", name, pf_last_error());
        pf_st_close(c.f);
        return;
    }
    c.B = (int)jnum(c.tj, "batch");
    c.active = (int)jnum(c.tj, "active");
    c.steps = (int)jnum(c.tj, "steps");
    o = case_optim(c.tj);
    if (!case_params(&c)) goto done;
    x = read_all(c.f, "x", &n);
    y = read_all(c.f, "y", &n);
    numel = (size_t)c.B * cfg.channels * cfg.image_size * cfg.image_size;
    c.xin = (pf_real *)malloc(sizeof(pf_real) * numel);
    c.labels = (int *)malloc(sizeof(int) * (size_t)c.B);
    for (i = 0; i < numel; i++) c.xin[i] = (pf_real)x[i];
    for (i = 0; i < (size_t)c.B; i++) c.labels[i] = (int)y[i];
    if (pf_model_reserve(c.m, c.B) || pf_model_alloc_train(c.m) || pf_model_set_active(c.m, c.active)) {
        check(0, "%s: setup: %s", name, pf_last_error());
        goto done2;
    }
    case_forward(&c);
    case_gradients(&c);
    case_steps(&c, &o);
    case_final(&c);
done2:
    free(x); free(y); free(c.xin); free(c.labels);
done:
    pf_model_free(c.m);
    pf_st_close(c.f);
}

/* forward + backward + 3 optimizer steps with dropout, drop-path and clipping, then a
   copy of params, grads and logits (*n values) */
static pf_real *train_copy(int threads, size_t *n) {
    pf_config c;
    pf_model *m;
    pf_optim o = pf_optim_default();
    pf_real *x, *out;
    int labels[8], i, step;
    float loss;
    pf_set_threads(threads);
    c = shape_config(16, 0, 4, 32, 4, 64, 3, 2, 7);
    c.dropout = 0.1f; c.emb_dropout = 0.1f;
    if (pf_model_create(&c, &m) != PF_OK) return NULL;
    pf_model_init(m, 7, 0);
    if (pf_model_reserve(m, 8) || pf_model_alloc_train(m)) { pf_model_free(m); return NULL; }
    m->training = 1;
    m->drop_path = 0.3f;
    o.clip = 1.0f;
    x = (pf_real *)malloc(sizeof(pf_real) * 8 * 3 * 16 * 16);
    for (i = 0; i < 8 * 3 * 16 * 16; i++) x[i] = (pf_real)sin(0.37 * i);
    for (i = 0; i < 8; i++) labels[i] = i % 7;
    for (step = 0; step < 3; step++) {
        pf_forward(m, x, labels, 8, 0.1f, &loss);
        pf_backward(m);
        pf_optim_step(m, &o, NULL);
    }
    *n = 2 * m->n_params + 8 * 7;
    out = (pf_real *)malloc(sizeof(pf_real) * *n);
    memcpy(out, m->params, sizeof(pf_real) * m->n_params);
    memcpy(out + m->n_params, m->grads, sizeof(pf_real) * m->n_params);
    memcpy(out + 2 * m->n_params, m->logits, sizeof(pf_real) * 8 * 7);
    free(x);
    pf_model_free(m);
    return out;
}

static void test_threads(void) {
    size_t na = 0, nb = 0;
    pf_real *a = train_copy(1, &na), *b = train_copy(2, &nb);
    check(a && b && na == nb && !memcmp(a, b, na * sizeof(pf_real)),
          "1 and 2 threads give bitwise identical params, grads and logits after 3 steps with dropout and drop-path (%zu values)", na);
    free(a);
    free(b);
}

/* Stochastic depth (m->drop_path = p): layer l of a branch of depth L drops
   each image's residual sub-layers with probability p*l/(L-1), keeping them
   scaled by 1/(1-p*l/(L-1)). Checks, on PF(2x2) with p = 0.5 (layer 1 at
   0.5, layer 0 never): the attention sub-layer of layer 1 adds exactly f_n
   times what it adds without drop-path, f_n = 0 or 2 as
   pf__drop_path_kept says, both present in the batch; layer 0 is
   untouched; the backward against central differences of the loss at the
   same masks; evaluation (training 0) ignores it. */
static double dp_loss(pf_model *m, const pf_real *x, const int *labels, int B, uint64_t ctr) {
    float loss;
    m->dropout_counter = ctr; /* the same masks on every call */
    pf_model_changed(m);
    pf_forward(m, x, labels, B, 0.0f, &loss);
    return m->loss;
}
static void test_drop_path(void) {
    enum { B = 8 };
    pf_config c = shape_config(8, 3, 4, 16, 2, 32, 2, 2, 5);
    pf_model *m;
    pf_real *x, *x1_plain, *xin, *x2_l0, *grad;
    int labels[B], i, n, kept = 0, dropped = 0, bad = 0;
    size_t per, ND, j, probe[6];
    uint64_t ctr, key;
    double err = 0, gmax = 0, worst_scale = 0;
    float eval_plain, eval_dp;
    const float p = 0.5f;
    pf_set_threads(2);
    if (pf_model_create(&c, &m) != PF_OK) { check(0, "drop-path: model"); return; }
    pf_model_init(m, 11, 0);
    if (pf_model_reserve(m, B) || pf_model_alloc_train(m)) { check(0, "drop-path: reserve"); pf_model_free(m); return; }
    per = (size_t)m->T * c.dim;
    ND = per * B;
    x = (pf_real *)malloc(sizeof(pf_real) * B * 3 * 8 * 8);
    x1_plain = (pf_real *)malloc(sizeof(pf_real) * ND);
    xin = (pf_real *)malloc(sizeof(pf_real) * ND);
    x2_l0 = (pf_real *)malloc(sizeof(pf_real) * ND);
    grad = (pf_real *)malloc(sizeof(pf_real) * m->n_params);
    for (i = 0; i < B * 3 * 8 * 8; i++) x[i] = (pf_real)sin(0.61 * i + 0.2);
    for (i = 0; i < B; i++) labels[i] = (3 * i) % 5;
    /* the zeroed output projections of pf_model_init's later branches would
       hide the sub-layers: give every parameter a value */
    for (j = 0; j < m->n_params; j++) m->params[j] += (pf_real)(0.02 * sin(0.7 * (double)j));

    m->training = 1;
    ctr = m->dropout_counter + 1;
    dp_loss(m, x, labels, B, ctr - 1); /* without drop-path */
    memcpy(x1_plain, m->acts[1].x1, sizeof(pf_real) * ND);   /* branch 1, layer 1 */
    memcpy(xin, m->acts[0].x2, sizeof(pf_real) * ND);        /* its input */
    memcpy(x2_l0, m->acts[0].x2, sizeof(pf_real) * ND);
    m->drop_path = p;
    dp_loss(m, x, labels, B, ctr - 1);
    check(!memcmp(x2_l0, m->acts[0].x2, sizeof(pf_real) * ND), "drop-path: layer 0 (rate 0) is untouched");
    key = pf__site_key(m, pf_dropout_site(c.depth, 0, 1, 0));
    for (n = 0; n < B; n++) { /* per image: the largest deviation against the largest plain output */
        int k = pf__drop_path_kept(key, n, p);
        double f = k ? 1.0 / (1.0 - p) : 0.0, scale = 0, dev = 0;
        kept += k;
        dropped += !k;
        for (j = (size_t)n * per; j < (size_t)(n + 1) * per; j++) {
            double want = f * ((double)x1_plain[j] - xin[j]), got = (double)m->acts[1].x1[j] - xin[j];
            if (fabs(want - got) > dev) dev = fabs(want - got);
            if (fabs((double)x1_plain[j] - xin[j]) > scale) scale = fabs((double)x1_plain[j] - xin[j]);
        }
        if (dev > 1e-5 * (1 + scale)) bad++;
        if (dev > worst_scale) worst_scale = dev;
    }
    check(kept > 0 && dropped > 0, "drop-path: layer 1 keeps %d and drops %d of %d images at p = 0.5", kept, dropped, B);
    check(bad == 0, "drop-path: layer 1's attention adds 0 or 1/(1-p) times its plain output per image (%d images off, "
          "worst %.1e)", bad, worst_scale);

    /* backward against central differences, masks fixed */
    dp_loss(m, x, labels, B, ctr);
    pf_backward(m);
    memcpy(grad, m->grads, sizeof(pf_real) * m->n_params);
    for (j = 0; j < m->n_params; j++) gmax = fabs((double)grad[j]) > gmax ? fabs((double)grad[j]) : gmax;
    {
        pf_layer_ptrs L1 = pf_model_layer(m, m->params, 0, 1), L1b = pf_model_layer(m, m->params, 1, 1);
        probe[0] = (size_t)(L1.qkv_w - m->params) + 5;
        probe[1] = (size_t)(L1.proj_w - m->params) + 17;
        probe[2] = (size_t)(L1.fc1_w - m->params) + 3;
        probe[3] = (size_t)(L1.fc2_w - m->params) + 40;
        probe[4] = (size_t)(L1b.fc2_b - m->params) + 1;
        probe[5] = (size_t)(L1b.ln1_w - m->params) + 2;
    }
    for (i = 0; i < 6; i++) {
#ifdef PF_DOUBLE
        const double h = 1e-5;
#else
        const double h = 1e-2;
#endif
        pf_real save = m->params[probe[i]];
        double lp, lm, fd;
        m->params[probe[i]] = (pf_real)(save + h);
        lp = dp_loss(m, x, labels, B, ctr);
        m->params[probe[i]] = (pf_real)(save - h);
        lm = dp_loss(m, x, labels, B, ctr);
        m->params[probe[i]] = save;
        fd = (lp - lm) / (2 * h);
        if (fabs(fd - grad[probe[i]]) / gmax > err) err = fabs(fd - grad[probe[i]]) / gmax;
    }
#ifdef PF_DOUBLE
    check(err < 1e-7, "drop-path: backward = central differences at 6 parameters (err %.1e of the largest gradient)", err);
#else
    check(err < 2e-2, "drop-path: backward = central differences at 6 parameters (err %.1e of the largest gradient)", err);
#endif

    m->drop_path = 1.0f;
    {
        float l1;
        pf_status st = pf_forward(m, x, labels, B, 0.0f, &l1);
        check(st == PF_ERR_ARG && strstr(pf_last_error(), "drop-path"), "drop-path: a training forward refuses a rate of 1: %s",
              pf_last_error());
    }
    m->drop_path = p;
    /* evaluation ignores it */
    m->training = 0;
    m->drop_path = 0;
    pf_forward(m, x, labels, B, 0.0f, &eval_plain);
    m->drop_path = p;
    pf_forward(m, x, labels, B, 0.0f, &eval_dp);
    check(eval_plain == eval_dp, "drop-path: an evaluation forward ignores it (loss %.6f = %.6f)", eval_plain, eval_dp);
    free(x); free(x1_plain); free(xin); free(x2_l0); free(grad);
    pf_model_free(m);
}

int main(void) {
    static const char *cases[] = {"prenorm_delta_bias_cls", "prenorm_sum_nobias_mean", "normed_delta_nobias_cls_k2",
                                  "normed_sum_bias_mean", "prenorm_delta_bias_mean_k1_adam",
                                  "normed_sum_nobias_cls_paper", "vit_prenorm"};
    size_t c;
    int k;
    printf("# test_model (%s build, tolerance %.0e relative)\n", BUILD, TOL);
    for (c = 0; c < sizeof cases / sizeof *cases; c++) run_case(cases[c]);
    test_threads();
    test_drop_path();
    printf("# worst relative error against PyTorch (float64) per tensor kind:\n");
    for (k = 0; k < K_COUNT; k++) printf("#   %-22s %.2e  (%s)\n", kind_name[k], worst[k], worst_at[k]);
    return test_summary();
}

/* test_gemm.c - the packed GEMM against a plain double-precision loop, for
   every transpose combination, edge sizes (not multiples of the tile),
   accumulate mode and bias; bitwise identical for 1 and 2 threads; and the
   fast model path (pf_gemm inside linear layers) against the reference
   loops on a whole training step.
   Error: max|C - ref| / max over the row of sum_k |a||b| (the scale of the
   rounding error of any summation order); tolerance 1e-5 (float32 epsilon
   is 6e-8, times the depth of the sums here). */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pf_test.h"

static uint64_t rng = 99;
static float *rnd(size_t n) { return rand_reals(&rng, n, 1.0); }

static double gemm_err(int ta, int tb, int M, int N, int K, int acc, int use_bias, int threads) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7, i, j, k;
    float *A = rnd((size_t)(ta ? K : M) * lda), *B = rnd((size_t)(tb ? N : K) * ldb), *C = rnd((size_t)M * ldc);
    float *C0 = (float *)malloc((size_t)M * ldc * sizeof(float)), *bias = rnd((size_t)N);
    double worst = 0;
    memcpy(C0, C, (size_t)M * ldc * sizeof(float));
    pf_set_threads(threads);
    pf__gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, acc, use_bias ? bias : NULL);
    for (i = 0; i < M; i++) {
        for (j = 0; j < N; j++) {
            double s = acc ? C0[(size_t)i * ldc + j] : (use_bias ? bias[j] : 0.0), scale = fabs(s) + 1e-30;
            for (k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
                scale += fabs(a * b);
            }
            if (fabs(C[(size_t)i * ldc + j] - s) / scale > worst) worst = fabs(C[(size_t)i * ldc + j] - s) / scale;
        }
        for (j = N; j < ldc; j++) /* padding columns untouched */
            if (C[(size_t)i * ldc + j] != C0[(size_t)i * ldc + j]) worst = INFINITY;
    }
    free(A); free(B); free(C); free(C0); free(bias);
    return worst;
}

static void test_shapes(void) {
    static const int shapes[][3] = {{1, 1, 1}, {13, 33, 7}, {12, 32, 384}, {25, 65, 385}, {100, 31, 17},
                                    {7, 800, 50}, {130, 96, 800}, {3, 5, 0}};
    int s, ta, tb, acc;
    double worst = 0;
    for (s = 0; s < (int)(sizeof shapes / sizeof *shapes); s++)
        for (ta = 0; ta < 2; ta++)
            for (tb = 0; tb < 2; tb++)
                for (acc = 0; acc < 3; acc++) { /* 0: store, 1: accumulate, 2: bias */
                    double e = gemm_err(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], acc == 1, acc == 2, 2);
                    if (e > worst) worst = e;
                    if (e > 1e-5)
                        check(0, "gemm ta=%d tb=%d %dx%dx%d mode %d: err %.2e", ta, tb, shapes[s][0], shapes[s][1],
                              shapes[s][2], acc, e);
                }
    check(worst <= 1e-5, "pf_gemm (%s kernel): 8 shapes x 4 transposes x store/accumulate/bias, worst err %.2e",
          pf_gemm_kernel(), worst);
}

static void test_gemm_threads(void) {
    int M = 301, N = 203, K = 777;
    float *A = rnd((size_t)M * K), *B = rnd((size_t)K * N);
    float *C1 = (float *)calloc((size_t)M * N, sizeof(float)), *C2 = (float *)calloc((size_t)M * N, sizeof(float));
    pf_set_threads(1);
    pf_gemm(1, 0, M, N, K, A, M, B, N, C1, N, 0);
    pf_set_threads(2);
    pf_gemm(1, 0, M, N, K, A, M, B, N, C2, N, 0);
    check(!memcmp(C1, C2, (size_t)M * N * sizeof(float)), "pf_gemm (%s): 1 and 2 threads give identical bits",
          pf_gemm_kernel());
    free(A); free(B); free(C1); free(C2);
}

/* one training step (dropout on) with the fast path or the reference loops */
static void model_step(int reference, int threads, float dropout, pf_real **out, size_t *n) {
    pf_config c;
    pf_model *m;
    pf_real *x;
    int y[5] = {0, 1, 2, 3, 4}, i;
    float loss;
    pf_use_reference(reference);
    pf_set_threads(threads);
    c = shape_config(16, 0, 4, 64, 2, 96, 3, 2, 5); /* T = 17 */
    c.dropout = dropout; c.residual = PF_NORMED; c.pool = PF_POOL_MEAN;
    pf_model_create(&c, &m);
    pf_model_init(m, 5, 0.5f);
    pf_model_reserve(m, 5);
    pf_model_alloc_train(m);
    pf_model_set_active(m, 2);
    m->training = 1;
    x = (pf_real *)malloc(sizeof(pf_real) * 5 * 3 * 16 * 16);
    for (i = 0; i < 5 * 3 * 16 * 16; i++) x[i] = (pf_real)sin(0.1 * i);
    pf_forward(m, x, y, 5, 0.1f, &loss);
    pf_backward(m);
    *n = m->n_params + 5 * 5;
    *out = (pf_real *)malloc(sizeof(pf_real) * *n);
    memcpy(*out, m->grads, sizeof(pf_real) * m->n_params);
    memcpy(*out + m->n_params, m->logits, sizeof(pf_real) * 25);
    free(x);
    pf_model_free(m);
    pf_use_reference(0);
}

static void test_model_fast(float dropout) {
    pf_real *ref, *fast, *fast1;
    size_t n;
    double e;
    model_step(1, 2, dropout, &ref, &n);
    model_step(0, 2, dropout, &fast, &n);
    model_step(0, 1, dropout, &fast1, &n);
    e = rel_err(fast, ref, n);
    check(e <= 1e-4, "whole model (%s, dropout %.1f), fast path vs reference loops: logits and every gradient, rel err %.2e",
          pf_gemm_kernel(), dropout, e);
    check(!memcmp(fast, fast1, n * sizeof(pf_real)), "fast path (dropout %.1f): 1 and 2 threads give identical bits", dropout);
    free(ref); free(fast); free(fast1);
}

/* pf_predict's packed-weight cache: same bits as a plain forward, and
   rebuilt after an optimizer step or pf_model_changed */
static void test_weight_cache(void) {
    pf_config c;
    pf_model *m;
    float *x = (float *)malloc(sizeof(float) * 3 * 3 * 16 * 16), out[3 * 4], ref[3 * 4];
    int y[3] = {0, 1, 2}, i, ok = 1;
    pf_optim o = pf_optim_default();
    c = shape_config(16, 0, 0, 64, 2, 0, 2, 2, 4);
    pf_model_create(&c, &m);
    pf_model_init(m, 1, 0);
    pf_model_reserve(m, 3);
    pf_model_alloc_train(m);
    for (i = 0; i < 3 * 3 * 16 * 16; i++) x[i] = (float)cos(0.3 * i);
    for (i = 0; i < 3; i++) {
        int j;
        pf_predict(m, x, 3, out);                  /* cached weights */
        pf_forward(m, x, y, 3, 0.0f, NULL);        /* packs per call */
        for (j = 0; j < 12; j++) ref[j] = (float)m->logits[j];
        if (memcmp(out, ref, sizeof out)) ok = 0;
        if (i == 0) { pf_backward(m); pf_optim_step(m, &o, NULL); }        /* step bumps the generation */
        if (i == 1) { m->params[m->n_params - 1] += 0.5f; pf_model_changed(m); } /* direct edit */
    }
    check(ok, "pf_predict's packed-weight cache: same bits as pf_forward, refreshed after a step and pf_model_changed");
    free(x);
    pf_model_free(m);
}

int main(void) {
    static const char *kernels[] = {"generic", "avx2", "avx512"};
    const char *best = pf_gemm_kernel();
    int k;
    printf("# test_gemm (this machine's kernel: %s)\n", best);
    for (k = 0; k < 3; k++) { /* every kernel this machine can run */
        if (!pf__force_kernel(kernels[k])) { printf("# (no %s on this machine)\n", kernels[k]); continue; }
        test_shapes();
        test_gemm_threads();
        if (strcmp(kernels[k], best)) test_model_fast(0.0f);
    }
    pf__force_kernel(best);
    test_weight_cache();
    test_model_fast(0.1f); /* GELU separate, dropout masks */
    test_model_fast(0.0f); /* GELU fused into the fc1/fc2 GEMMs */
    return test_summary();
}

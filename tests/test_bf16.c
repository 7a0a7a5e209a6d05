/* test_bf16.c - the CPU's bf16 GEMM path (pf_set_bf16).
   - pf_bf16_round against hand-worked cases (ties to even, subnormals to
     signed zero, NaN kept quiet, overflow to infinity), and the vector
     converter against the scalar one on a million bit patterns;
   - pf_gemm_bf16_ref (the scalar reference) against a double-precision
     GEMM of the rounded operands (it only adds fp32 rounding), and against
     the unrounded fp32 product (it does round: the error is bf16's);
   - the packed bf16 GEMM, emulated kernel and (where the CPU has
     AVX512_BF16) the vdpbf16ps kernel, bit for bit against the reference:
     every transpose, edge sizes, accumulate and bias; 1 and 2 threads;
   - a whole training step in bf16 against fp32 within the bounds bf16's 8
     bits allow (the GPU's bf16 tests use the same), the same bits for 1 and
     2 threads and for the emulated and the hardware kernel;
   - pf_set_bf16: refused, naming the instruction set, on a CPU without it. */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pf_test.h"

static uint64_t rng = 7;
static float *rnd(size_t n) { return rand_reals(&rng, n, 1.0); }
static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_round(void) {
    /* 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (bf16 keeps 7 mantissa
       bits): ties go to the even one, 1. 1 + 3*2^-8 lies halfway between
       1 + 2^-7 (odd) and 1 + 2^-6 (even): up. */
    check(pf_bf16_round(1.0f + 0x1p-8f) == 1.0f, "bf16 round: 1 + 2^-8 ties to even (1)");
    check(pf_bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f, "bf16 round: 1 + 3*2^-8 ties to even (1 + 2^-6)");
    check(pf_bf16_round(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f, "bf16 round: just above a tie rounds up");
    check(pf_bf16_round(-3.0f) == -3.0f, "bf16 round: -3 is exact");
    check(bits(pf_bf16_round(1e-40f)) == 0 && bits(pf_bf16_round(-1e-40f)) == 0x80000000u,
          "bf16 round: subnormals become signed zeros (as vcvtneps2bf16)");
    check(isinf(pf_bf16_round(3.4e38f)) && pf_bf16_round(3.4e38f) > 0, "bf16 round: near FLT_MAX overflows to +inf");
    check(isinf(pf_bf16_round(-INFINITY)) && pf_bf16_round(-INFINITY) < 0, "bf16 round: -inf stays -inf");
    {   /* a signalling NaN whose payload is all in the low half must stay a NaN */
        float snan = from_bits(0x7F800001u), r = pf_bf16_round(snan);
        check(isnan(r) && (bits(r) & 0x00400000u), "bf16 round: NaN stays NaN, made quiet (0x%08x)", bits(r));
    }
}

/* the hardware's vcvtne2ps2bf16 (the packing's converter) against the
   scalar rule on random bit patterns, NaNs and subnormals included */
static void test_convert(void) {
#ifdef PF__X86
    if (pf__bf16_hw()) {
        enum { N = 1 << 20 };
        float *x = (float *)malloc(N * sizeof(float));
        uint16_t *h = (uint16_t *)malloc(N * sizeof(uint16_t));
        pf_rng s = pf_rng_seed(5);
        size_t i, bad = 0;
        for (i = 0; i < N; i++) {
            uint32_t u = (uint32_t)pf_rng_next(&s);
            if (i % 7 == 0) u &= 0x807FFFFFu;         /* subnormals */
            if (i % 11 == 0) u |= 0x7F800000u;        /* infinities and NaNs */
            if (i % 13 == 0) u = (u & 0xFFFF0000u) | 0x8000u; /* exact ties */
            x[i] = from_bits(u);
        }
        pf__bf16_row_avx512(h, x, N - 5); /* an odd length: the masked tail */
        for (i = 0; i < N - 5; i++) bad += h[i] != pf__bf16_bits(x[i]);
        check(bad == 0, "vcvtne2ps2bf16 = the scalar rounding on %d bit patterns (%zu differ)", N - 5, bad);
        free(x); free(h);
        return;
    }
#endif
    printf("# (no AVX512_BF16 on this machine: the hardware converter is not tested)\n");
}

/* one GEMM: the packed path (kernel `name`) against pf_gemm_bf16_ref; also
   returns the reference's error against the double product of the rounded
   operands (fp32 accumulation) and against the unrounded operands */
static int gemm_case(const char *name, int ta, int tb, int M, int N, int K, int mode, int threads, double *e_acc,
                     double *e_round) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7, i, j, k, same;
    float *A = rnd((size_t)(ta ? K : M) * lda), *B = rnd((size_t)(tb ? N : K) * ldb), *C = rnd((size_t)M * ldc);
    float *R = (float *)malloc((size_t)M * ldc * sizeof(float)), *C0 = (float *)malloc((size_t)M * ldc * sizeof(float));
    float *bias = rnd((size_t)N);
    memcpy(C0, C, (size_t)M * ldc * sizeof(float));
    memcpy(R, C, (size_t)M * ldc * sizeof(float));
    if (mode == 2) /* bias: the reference accumulates onto rows of the bias */
        for (i = 0; i < M; i++) memcpy(R + (size_t)i * ldc, bias, (size_t)N * sizeof(float));
    pf_gemm_bf16_ref(ta, tb, M, N, K, A, lda, B, ldb, R, ldc, mode != 0);
    pf__force_bf16(name, 1);
    pf_set_threads(threads);
    pf__gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, mode == 1, mode == 2 ? bias : NULL);
    pf__force_bf16("generic", 0);
    same = !memcmp(C, R, (size_t)M * ldc * sizeof(float));
    for (i = 0; i < M && e_acc; i++)
        for (j = 0; j < N; j++) {
            double s = mode == 1 ? C0[(size_t)i * ldc + j] : mode == 2 ? bias[j] : 0.0, exact = s;
            double scale = fabs(s) + 1e-30;
            for (k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += (double)pf_bf16_round(a) * pf_bf16_round(b);
                exact += (double)a * b;
                scale += fabs((double)a * b);
            }
            if (fabs(R[(size_t)i * ldc + j] - s) / scale > *e_acc) *e_acc = fabs(R[(size_t)i * ldc + j] - s) / scale;
            if (fabs(R[(size_t)i * ldc + j] - exact) / scale > *e_round) *e_round = fabs(R[(size_t)i * ldc + j] - exact) / scale;
        }
    free(A); free(B); free(C); free(R); free(C0); free(bias);
    return same;
}

static void test_gemm(const char *name) {
    static const int shapes[][3] = {{1, 1, 1}, {13, 33, 7}, {12, 32, 384}, {25, 65, 385}, {100, 31, 17},
                                    {7, 800, 50}, {130, 96, 800}, {3, 5, 0}, {24, 64, 2},
                                    {250, 70, 801}}; /* 21 micro-rows: A^T packed in groups of 8 and a rest */
    int s, ta, tb, mode, cases = 0, same = 0;
    double e_acc = 0, e_round = 0;
    for (s = 0; s < (int)(sizeof shapes / sizeof *shapes); s++)
        for (ta = 0; ta < 2; ta++)
            for (tb = 0; tb < 2; tb++)
                for (mode = 0; mode < 3; mode++) { /* store, accumulate (on 1 thread), bias */
                    int ok = gemm_case(name, ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], mode, mode == 1 ? 1 : 2,
                                       &e_acc, &e_round);
                    cases++;
                    same += ok;
                    if (!ok) check(0, "bf16 gemm (%s) ta=%d tb=%d %dx%dx%d mode %d differs from pf_gemm_bf16_ref", name, ta,
                                   tb, shapes[s][0], shapes[s][1], shapes[s][2], mode);
                }
    check(same == cases, "bf16 gemm (%s kernel): %d cases (10 shapes x 4 transposes x store/accumulate/bias) bit for bit "
          "pf_gemm_bf16_ref", name, cases);
    /* fp32 accumulation only (1e-5, as the fp32 GEMM's test); bf16 operands
       do round: bf16 keeps 8 significant bits, so an operand errs by at most
       2^-8 of itself and a product by 2^-7 (plus 2^-16), far above fp32's */
    check(e_acc <= 1e-5, "pf_gemm_bf16_ref = the double product of the bf16-rounded operands (err %.2e <= 1e-5)", e_acc);
    check(e_round <= 0x1p-7 + 1e-5 && e_round > 1e-4, "pf_gemm_bf16_ref vs the unrounded operands: err %.2e, in (1e-4, 2^-7]",
          e_round);
    {
        int ok1 = gemm_case(name, 1, 0, 301, 203, 777, 0, 1, NULL, NULL);
        check(ok1 && gemm_case(name, 0, 1, 301, 203, 777, 1, 2, NULL, NULL),
              "bf16 gemm (%s): 301x203x777 with 1 and with 2 threads, both bit for bit the reference", name);
    }
}

/* one training step (dropout on) in fp32 or bf16 with kernel `name` */
static void model_step(const char *name, int threads, pf_real **out, size_t *n, float *loss) {
    pf_config c;
    pf_model *m;
    pf_real *x;
    int y[5] = {0, 1, 2, 3, 4}, i;
    pf_set_threads(threads);
    c = shape_config(16, 0, 4, 64, 2, 96, 3, 2, 5); /* T = 17 */
    c.dropout = 0.1f;
    pf_model_create(&c, &m);
    pf_model_init(m, 5, 0.5f);
    pf_model_reserve(m, 5);
    pf_model_alloc_train(m);
    pf_model_set_active(m, 3);
    m->training = 1;
    x = (pf_real *)malloc(sizeof(pf_real) * 5 * 3 * 16 * 16);
    for (i = 0; i < 5 * 3 * 16 * 16; i++) x[i] = (pf_real)sin(0.1 * i);
    if (name) pf__force_bf16(name, 1);
    pf_forward(m, x, y, 5, 0.1f, loss);
    pf_backward(m);
    pf__force_bf16("generic", 0);
    *n = m->n_params + 5 * 5;
    *out = (pf_real *)malloc(sizeof(pf_real) * *n);
    memcpy(*out, m->grads, sizeof(pf_real) * m->n_params);
    memcpy(*out + m->n_params, m->logits, sizeof(pf_real) * 25);
    free(x);
    pf_model_free(m);
}

/* Bounds as the GPU's bf16 tests: an operand's relative rounding error is
   at most 2^-8; a K-term dot product of rounded operands errs around
   2^-8 sqrt(K) of its typical term and the layers compound it: 2 % on the
   logits, 5 % on the gradients (relative to the largest), and not zero. */
static void test_model(const char *name, pf_real *ref, size_t n, float ref_loss) {
    pf_real *a, *b;
    float la, lb;
    size_t nl = 25, np = n - nl;
    double el, eg;
    model_step(name, 2, &a, &n, &la);
    model_step(name, 1, &b, &n, &lb);
    el = rel_err(a + np, ref + np, nl);
    eg = rel_err(a, ref, np);
    check(el <= 2e-2 && el > 0, "bf16 training step (%s): logits within 2%% of fp32 (rel %.2e; not equal, so bf16 ran)",
          name, el);
    check(eg <= 5e-2, "bf16 training step (%s): gradients within 5%% of fp32 (rel %.2e)", name, eg);
    check(fabs(la - ref_loss) <= 2e-2 * fabs(ref_loss), "bf16 training step (%s): loss %.5f within 2%% of fp32's %.5f", name,
          la, ref_loss);
    check(!memcmp(a, b, n * sizeof(pf_real)), "bf16 training step (%s): 1 and 2 threads give identical bits", name);
    free(a); free(b);
}

static void test_switch(void) {
    const char *why = pf_bf16_missing();
    pf_status st = pf_set_bf16(1);
    if (why) {
        check(st == PF_ERR_ARG && strstr(pf_last_error(), "AVX512_BF16") && !pf_get_bf16(),
              "pf_set_bf16(1) without AVX512_BF16: refused naming the instruction set (%s)", pf_last_error());
    } else {
        check(st == PF_OK && pf_get_bf16() == 1, "pf_set_bf16(1) on this CPU (AVX512_BF16): on");
    }
    check(pf_set_bf16(0) == PF_OK && !pf_get_bf16(), "pf_set_bf16(0): off");
}

int main(void) {
    pf_real *ref, *emu, *hw;
    size_t n;
    float loss;
    printf("# test_bf16 (this machine: %s)\n", pf_bf16_missing() ? "no AVX512_BF16, the emulated kernel only"
                                                                   : "AVX512_BF16, both kernels");
    test_round();
    test_convert();
    test_gemm("generic");
    if (!pf_bf16_missing()) test_gemm("avx512_bf16");
    model_step(NULL, 2, &ref, &n, &loss);
    test_model("generic", ref, n, loss);
    if (!pf_bf16_missing()) {
        test_model("avx512_bf16", ref, n, loss);
        model_step("generic", 2, &emu, &n, &loss);
        model_step("avx512_bf16", 2, &hw, &n, &loss);
        check(!memcmp(emu, hw, n * sizeof(pf_real)), "bf16 training step: the vdpbf16ps kernel gives the emulated kernel's bits");
        free(emu); free(hw);
    }
    free(ref);
    test_switch();
    return test_summary();
}

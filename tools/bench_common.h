/* bench_common.h - what `paraformer bench` (tools/paraformer.c) and
   tools/gemm_bench.c share: the machine's measured FP32 peak and the median
   of timings. Include it after paraformer.h with its implementation (it uses
   pf_time); every function is static.

   fma_peak_gflops(threads) runs, on each of `threads` OpenMP threads, a loop
   of independent fused multiply-adds on 24 vector accumulators (enough to
   hide the FMA latency on every x86 core with two FMA units) and returns the
   best GFLOP/s (2 flops per lane per FMA) of a few timed tries. It uses the
   widest instructions the CPU has: AVX-512 (_mm512_fmadd_ps, 16 lanes),
   else AVX2+FMA (8 lanes); elsewhere it returns 0 ("unknown"). The figure is
   what the cores sustain under a full FMA load, so it already includes any
   frequency drop that AVX-512 causes. fma_peak_isa() names what was used.

   Needs GCC or Clang on x86-64 (target attributes); compiles to a stub that
   returns 0 elsewhere. Without OpenMP only one thread is measured. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define FMA_PEAK_X86 1
#include <immintrin.h>
#endif


#ifdef FMA_PEAK_X86
/* 24 independent chains: acc = acc * a + b (a close to 1, stays finite);
   without -ffast-math the compiler must keep every FMA. Returns a sum so
   the work is observable. */
#define FMA_PEAK__BODY(VEC, SET1, FMA, ADD, STORE, LANES)                                         \
    VEC a = SET1(0.999999f), b = SET1(1e-7f);                                                     \
    VEC c0 = SET1(1.0f), c1 = SET1(1.1f), c2 = SET1(1.2f), c3 = SET1(1.3f), c4 = SET1(1.4f);      \
    VEC c5 = SET1(1.5f), c6 = SET1(1.6f), c7 = SET1(1.7f), c8 = SET1(1.8f), c9 = SET1(1.9f);      \
    VEC c10 = SET1(2.0f), c11 = SET1(2.1f), c12 = SET1(2.2f), c13 = SET1(2.3f), c14 = SET1(2.4f); \
    VEC c15 = SET1(2.5f), c16 = SET1(2.6f), c17 = SET1(2.7f), c18 = SET1(2.8f), c19 = SET1(2.9f); \
    VEC c20 = SET1(3.0f), c21 = SET1(3.1f), c22 = SET1(3.2f), c23 = SET1(3.3f);                   \
    float out[LANES], s = 0.0f;                                                                   \
    int64_t i;                                                                                    \
    int j;                                                                                        \
    for (i = 0; i < iters; i++) {                                                                 \
        c0 = FMA(c0, a, b); c1 = FMA(c1, a, b); c2 = FMA(c2, a, b); c3 = FMA(c3, a, b);           \
        c4 = FMA(c4, a, b); c5 = FMA(c5, a, b); c6 = FMA(c6, a, b); c7 = FMA(c7, a, b);           \
        c8 = FMA(c8, a, b); c9 = FMA(c9, a, b); c10 = FMA(c10, a, b); c11 = FMA(c11, a, b);       \
        c12 = FMA(c12, a, b); c13 = FMA(c13, a, b); c14 = FMA(c14, a, b); c15 = FMA(c15, a, b);   \
        c16 = FMA(c16, a, b); c17 = FMA(c17, a, b); c18 = FMA(c18, a, b); c19 = FMA(c19, a, b);   \
        c20 = FMA(c20, a, b); c21 = FMA(c21, a, b); c22 = FMA(c22, a, b); c23 = FMA(c23, a, b);   \
    }                                                                                             \
    c0 = ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(c6, c7)));                      \
    c8 = ADD(ADD(ADD(c8, c9), ADD(c10, c11)), ADD(ADD(c12, c13), ADD(c14, c15)));                 \
    c16 = ADD(ADD(ADD(c16, c17), ADD(c18, c19)), ADD(ADD(c20, c21), ADD(c22, c23)));              \
    STORE(out, ADD(ADD(c0, c8), c16));                                                            \
    for (j = 0; j < LANES; j++) s += out[j];                                                      \
    return s;

__attribute__((target("avx512f"))) static float fma_peak__avx512(int64_t iters) {
    FMA_PEAK__BODY(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16)
}
__attribute__((target("avx2,fma"))) static float fma_peak__avx2(int64_t iters) {
    FMA_PEAK__BODY(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8)
}
#undef FMA_PEAK__BODY
#endif

/* "avx512", "avx2" or "none" (then the peak is 0). */
static const char *fma_peak_isa(void) {
#ifdef FMA_PEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
    return "none";
}

/* Best GFLOP/s of `tries` runs of about `seconds` each on `threads` threads
   (0: the OpenMP default). 0 when there is no FMA path. */
static double fma_peak_gflops_ex(int threads, double seconds, int tries) {
#ifdef FMA_PEAK_X86
    const char *isa = fma_peak_isa();
    int lanes = isa[3] == '5' ? 16 : 8, t, nt = 1;
    int64_t iters = 1 << 16;
    double best = 0.0;
    volatile float sink = 0.0f;
    if (isa[0] == 'n') return 0.0;
#ifdef _OPENMP
    nt = threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
#endif
    /* calibrate on one thread: iterations for about `seconds` */
    for (;;) {
        double t0 = pf_time(), dt;
        sink += lanes == 16 ? fma_peak__avx512(iters) : fma_peak__avx2(iters);
        dt = pf_time() - t0;
        if (dt > 0.02 || iters > ((int64_t)1 << 40)) {
            iters = (int64_t)((double)iters * seconds / (dt > 1e-9 ? dt : 1e-9)) + 1;
            break;
        }
        iters *= 4;
    }
    for (t = 0; t < tries; t++) {
        double t0 = pf_time(), dt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
        {
            float v = lanes == 16 ? fma_peak__avx512(iters) : fma_peak__avx2(iters);
#ifdef _OPENMP
#pragma omp critical
#endif
            sink += v;
        }
        dt = pf_time() - t0;
        if (dt > 0 && 2.0 * 24 * lanes * (double)iters * nt / dt / 1e9 > best)
            best = 2.0 * 24 * lanes * (double)iters * nt / dt / 1e9;
    }
    (void)sink;
    return best;
#else
    (void)threads; (void)seconds; (void)tries;
    return 0.0;
#endif
}

static double fma_peak_gflops(int threads) { return fma_peak_gflops_ex(threads, 0.1, 8); }

/* median of v[0..n) (sorts v) */
static int bench__cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench__cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif /* FMA_PEAK_H */

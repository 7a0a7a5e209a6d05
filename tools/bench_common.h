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

   bf16_peak_gflops(threads) does the same with vdpbf16ps (AVX512_BF16: 32
   bf16 pairs per instruction, 4 flops per lane) and returns 0 where the CPU
   lacks it: the ceiling of pf_gemm with pf_set_bf16(1).

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
/* vdpbf16ps on 24 chains: acc += a.b over pairs of bf16 (a, b near 1e-3, so
   the sums stay finite for any run length a benchmark takes) */
#define FMA_PEAK__DP(v) v = _mm512_dpbf16_ps(v, a, b)
__attribute__((target("avx512f,avx512bf16"))) static float fma_peak__bf16(int64_t iters) {
    __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f)), b = a;
    /* distinct starts, or the compiler folds equal chains into one */
    __m512 c0 = _mm512_set1_ps(1.0f), c1 = _mm512_set1_ps(1.1f), c2 = _mm512_set1_ps(1.2f);
    __m512 c3 = _mm512_set1_ps(1.3f), c4 = _mm512_set1_ps(1.4f), c5 = _mm512_set1_ps(1.5f);
    __m512 c6 = _mm512_set1_ps(1.6f), c7 = _mm512_set1_ps(1.7f), c8 = _mm512_set1_ps(1.8f);
    __m512 c9 = _mm512_set1_ps(1.9f), c10 = _mm512_set1_ps(2.0f), c11 = _mm512_set1_ps(2.1f);
    __m512 c12 = _mm512_set1_ps(2.2f), c13 = _mm512_set1_ps(2.3f), c14 = _mm512_set1_ps(2.4f);
    __m512 c15 = _mm512_set1_ps(2.5f), c16 = _mm512_set1_ps(2.6f), c17 = _mm512_set1_ps(2.7f);
    __m512 c18 = _mm512_set1_ps(2.8f), c19 = _mm512_set1_ps(2.9f), c20 = _mm512_set1_ps(3.0f);
    __m512 c21 = _mm512_set1_ps(3.1f), c22 = _mm512_set1_ps(3.2f), c23 = _mm512_set1_ps(3.3f);
    float out[16], s = 0.0f;
    int64_t i;
    int j;
    for (i = 0; i < iters; i++) {
        FMA_PEAK__DP(c0); FMA_PEAK__DP(c1); FMA_PEAK__DP(c2); FMA_PEAK__DP(c3); FMA_PEAK__DP(c4);
        FMA_PEAK__DP(c5); FMA_PEAK__DP(c6); FMA_PEAK__DP(c7); FMA_PEAK__DP(c8); FMA_PEAK__DP(c9);
        FMA_PEAK__DP(c10); FMA_PEAK__DP(c11); FMA_PEAK__DP(c12); FMA_PEAK__DP(c13); FMA_PEAK__DP(c14);
        FMA_PEAK__DP(c15); FMA_PEAK__DP(c16); FMA_PEAK__DP(c17); FMA_PEAK__DP(c18); FMA_PEAK__DP(c19);
        FMA_PEAK__DP(c20); FMA_PEAK__DP(c21); FMA_PEAK__DP(c22); FMA_PEAK__DP(c23);
    }
    c0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)), _mm512_add_ps(c4, c5));
    c6 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c6, c7), _mm512_add_ps(c8, c9)), _mm512_add_ps(c10, c11));
    c12 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15)), _mm512_add_ps(c16, c17));
    c18 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c18, c19), _mm512_add_ps(c20, c21)), _mm512_add_ps(c22, c23));
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_add_ps(c0, c6), _mm512_add_ps(c12, c18)));
    for (j = 0; j < 16; j++) s += out[j];
    return s;
}
#undef FMA_PEAK__DP
#undef FMA_PEAK__BODY
#endif

/* one run of the peak loop of `kind` (0: FP32 FMA, 1: vdpbf16ps); its sum */
static float fma_peak__run(int kind, int lanes, int64_t iters) {
#ifdef FMA_PEAK_X86
    if (kind) return fma_peak__bf16(iters);
    return lanes == 16 ? fma_peak__avx512(iters) : fma_peak__avx2(iters);
#else
    (void)kind; (void)lanes; (void)iters;
    return 0.0f;
#endif
}

/* "avx512", "avx2" or "none" (then the peak is 0). */
static const char *fma_peak_isa(void) {
#ifdef FMA_PEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
    return "none";
}

/* 1 when the CPU has AVX512_BF16 (vdpbf16ps) */
static int bf16_peak_available(void) {
#ifdef FMA_PEAK_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

/* Best GFLOP/s of `tries` runs of about `seconds` each on `threads` threads
   (0: the OpenMP default) of the FP32 FMA loop (kind 0) or the vdpbf16ps
   loop (kind 1). 0 when the CPU has no such instructions. */
static double peak_gflops_ex(int kind, int threads, double seconds, int tries) {
#ifdef FMA_PEAK_X86
    const char *isa = fma_peak_isa();
    int lanes = kind ? 32 : isa[3] == '5' ? 16 : 8, t, nt = 1;
    int64_t iters = 1 << 16;
    double best = 0.0;
    volatile float sink = 0.0f;
    if (isa[0] == 'n' || (kind && !bf16_peak_available())) return 0.0;
#ifdef _OPENMP
    nt = threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
#endif
    /* calibrate on one thread: iterations for about `seconds` */
    for (;;) {
        double t0 = pf_time(), dt;
        sink += fma_peak__run(kind, lanes, iters);
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
            float v = fma_peak__run(kind, lanes, iters);
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
    (void)kind; (void)threads; (void)seconds; (void)tries;
    return 0.0;
#endif
}

static inline double fma_peak_gflops(int threads) { return peak_gflops_ex(0, threads, 0.1, 8); }
static inline double bf16_peak_gflops(int threads) { return peak_gflops_ex(1, threads, 0.1, 8); }

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

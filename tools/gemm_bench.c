/* gemm_bench.c - pf_gemm against OpenBLAS cblas_sgemm on the model's shapes.

       build/gemm_bench [--threads 1,2] [--batch 128] [--reps 5] [--warm 2] [--json]
       build/gemm_bench --peak-only [--threads 1,2]
       build/gemm_bench --bf16 [...]      also pf_gemm in bf16 (pf_set_bf16)

   For every Linear of the three standard configurations (docs/design.md §6: vit12 and
   pf4x3 at width 192, MLP 768, 32x32x3 patch 4; pf2x3 at width 128, MLP 512,
   28x28x1 patch 4; 10 classes) it times the three GEMMs a training step runs,
   with N = batch x tokens rows (batch x patches for the embedding, batch for
   the head), all row-major as the library calls them:

       fwd   Y[N,OC]  = X[N,IC] W[OC,IC]^T     (ta 0, tb 1)
       dX    dX[N,IC] = dY[N,OC] W[OC,IC]      (ta 0, tb 0)
       dW    dW[OC,IC] = dY[N,OC]^T X[N,IC]    (ta 1, tb 0)

   Each shape runs with pf_gemm and with cblas_sgemm (same transposes and
   leading dimensions) at each thread count, alternating the two libraries
   shape by shape with a short pause between them (so neither one's spinning
   worker threads steal the other's cores); the median of --reps timed calls
   after --warm untimed ones is reported as GFLOP/s, with the ratio
   ours/OpenBLAS. The two results must agree: max |ours - blas| / max |blas|
   below 1e-4 (a normwise bound: float sums of up to 8320 terms in different
   orders). pf_gemm must also give the same bits at every thread count. It
   also measures the FP32 FMA peak (tools/bench_common.h) at each thread count.

   With --bf16 (needs AVX512_BF16) each shape also runs pf_gemm with
   pf_set_bf16(1), against the vdpbf16ps peak. Its check: 16 sampled entries
   must equal pf_gemm_bf16_ref (the scalar reference of the same arithmetic,
   run on that row and column) bit for bit, and the bits must not change
   with the thread count.
   Exit status 1 if any check fails, 2 on a usage error.

   Run OpenBLAS with its best kernel on this machine: the CPU is AVX-512 but
   the machine may set OPENBLAS_CORETYPE to something slower, so

       env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SkylakeX build/gemm_bench

   (tools/bench_compare.py does that). The kernel OpenBLAS chose is printed.

   Build: make bench-tools (needs libopenblas-dev), or
       gcc -std=c99 -O2 -fopenmp $(pkg-config --cflags openblas) tools/gemm_bench.c \
           -o build/gemm_bench $(pkg-config --libs openblas) -lm
*/
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"

/* OpenBLAS extensions (declared by OpenBLAS's cblas.h; repeated in case the
   cblas.h found is another implementation's) */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
char *openblas_get_config(void);

// ----------------------------------------------------------------------------
// shapes

typedef struct config {
    const char *name;   // "vit12/pf4x3": the configurations that share these shapes
    int image, channels, patch, dim, mlp, classes;
    int linears_per_step; // layers (branches x depth) that run each block Linear
} config;

// vit12 (1x12) and pf4x3 (4x3) have the same widths and 12 layers each
static const config CONFIGS[] = {
    {"vit12/pf4x3", 32, 3, 4, 192, 768, 10, 12},
    {"pf2x3", 28, 1, 4, 128, 512, 10, 6},
};
#define N_CONFIGS ((int)(sizeof CONFIGS / sizeof CONFIGS[0]))

typedef struct shape {
    int config;        // index into CONFIGS
    const char *op;    // qkv, proj, fc1, fc2, embed, head
    const char *pass;  // fwd, dX, dW
    int ta, tb, M, N, K;
    int per_step;      // times one training step runs it
} shape;

#define MAX_SHAPES 64

// the GEMMs of one Linear IC -> OC on `rows` rows; dx: whether dX is computed
static int add_linear(shape *s, int n, int cfg, const char *op, int rows, int IC, int OC, int per_step, int dx) {
    shape f = {cfg, op, "fwd", 0, 1, rows, OC, IC, per_step};
    shape d = {cfg, op, "dX", 0, 0, rows, IC, OC, per_step};
    shape w = {cfg, op, "dW", 1, 0, OC, IC, rows, per_step};
    s[n++] = f;
    if (dx) s[n++] = d;
    s[n++] = w;
    return n;
}

static int build_shapes(shape *s, int batch) {
    int n = 0, c;
    for (c = 0; c < N_CONFIGS; c++) {
        const config *g = &CONFIGS[c];
        int np = (g->image / g->patch) * (g->image / g->patch), T = np + 1, rows = batch * T, L = g->linears_per_step;
        n = add_linear(s, n, c, "qkv", rows, g->dim, 3 * g->dim, L, 1);
        n = add_linear(s, n, c, "proj", rows, g->dim, g->dim, L, 1);
        n = add_linear(s, n, c, "fc1", rows, g->dim, g->mlp, L, 1);
        n = add_linear(s, n, c, "fc2", rows, g->mlp, g->dim, L, 1);
        n = add_linear(s, n, c, "embed", batch * np, g->channels * g->patch * g->patch, g->dim, 1, 0);
        n = add_linear(s, n, c, "head", batch, g->dim, g->classes, 1, 1);
    }
    return n;
}

// ----------------------------------------------------------------------------
// helpers

static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: gemm_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die(1, "out of memory (%zu bytes)", n);
    return p;
}


static void pause_ms(int ms) {
    double t0 = pf_time();
    while (ms > 0 && pf_time() - t0 < ms * 1e-3) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static void fill_uniform(float *x, size_t n, uint64_t seed) { // U(-1, 1)
    size_t i;
    for (i = 0; i < n; i++) x[i] = (float)((double)(rng_next(&seed) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static uint64_t hash_bits(const float *x, size_t n) { // FNV-1a over the bytes
    const unsigned char *p = (const unsigned char *)x;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;
    for (i = 0; i < n * sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static int parse_int(const char *flag, const char *s, int lo, int hi) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || *end || errno == ERANGE || v < lo || v > hi)
        die(2, "%s: '%s' is not an integer in %d..%d", flag, s, lo, hi);
    return (int)v;
}

// ----------------------------------------------------------------------------
// timing

typedef struct result {
    int shape, threads;
    double ours_s, blas_s, max_rel;
    int same_bits; // pf_gemm gave the same bits as at the first thread count
    double bf16_s; // pf_gemm with pf_set_bf16(1) (--bf16; else 0)
    int bf16_ok;   // its sampled entries equal pf_gemm_bf16_ref, its bits those of the first thread count
} result;

static void run_pf(const shape *s, const float *A, const float *B, float *C) {
    pf_gemm(s->ta, s->tb, s->M, s->N, s->K, A, s->ta ? s->M : s->K, B, s->tb ? s->K : s->N, C, s->N, 0);
}

// 16 entries of C (seeded positions) against pf_gemm_bf16_ref on their row of
// op(A) and column of op(B): 1 when every one has the same bits
static int bf16_matches_ref(const shape *s, const float *A, const float *B, const float *C) {
    uint64_t seed = 7;
    int q, lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    for (q = 0; q < 16; q++) {
        int i = (int)(rng_next(&seed) % (uint64_t)s->M), j = (int)(rng_next(&seed) % (uint64_t)s->N);
        float ref = 0.0f;
        const float *a = s->ta ? A + i : A + (size_t)i * lda, *b = s->tb ? B + (size_t)j * ldb : B + j;
        if (pf_gemm_bf16_ref(s->ta, s->tb, 1, 1, s->K, a, lda, b, ldb, &ref, 1, 0) != PF_OK) return 0;
        if (memcmp(&ref, &C[(size_t)i * s->N + j], sizeof ref)) return 0;
    }
    return 1;
}

static void run_blas(const shape *s, const float *A, const float *B, float *C) {
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->M, s->N,
                s->K, 1.0f, A, s->ta ? s->M : s->K, B, s->tb ? s->K : s->N, 0.0f, C, s->N);
}

static double time_it(void (*fn)(const shape *, const float *, const float *, float *), const shape *s,
                      const float *A, const float *B, float *C, int warm, int reps, double *t) {
    int i;
    for (i = 0; i < warm; i++) fn(s, A, B, C);
    for (i = 0; i < reps; i++) {
        double t0 = pf_time();
        fn(s, A, B, C);
        t[i] = pf_time() - t0;
    }
    return median(t, reps);
}

// ----------------------------------------------------------------------------
// main

static void usage(FILE *f) {
    fprintf(f, "usage: gemm_bench [options]\n\n"
               "Times pf_gemm and OpenBLAS cblas_sgemm on the GEMM shapes of the standard\n"
               "configurations (vit12/pf4x3 at width 192, pf2x3 at width 128), checks that they\n"
               "agree, and measures the FP32 FMA peak. Run OpenBLAS at its best kernel:\n"
               "  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SkylakeX gemm_bench\n\n"
               "options:\n"
               "  --threads LIST   thread counts, comma-separated (default: 1,2)\n"
               "  --batch B        images per batch: N = B x tokens rows (default: 128)\n"
               "  --reps R         timed calls per measurement, median reported (default: 5)\n"
               "  --warm W         untimed calls first (default: 2)\n"
               "  --pause-ms MS    pause when switching library (default: 100)\n"
               "  --quick          batch 32, reps 3, warm 1 (a smoke run)\n"
               "  --peak-only      only the FMA peak (and with --bf16 the vdpbf16ps peak)\n"
               "  --bf16           also pf_gemm in bf16 (needs AVX512_BF16)\n"
               "  --json           one JSON object instead of the table\n"
               "  --help           this text\n");
}

// the command line
typedef struct opts {
    int threads[16], n_threads;
    int batch, reps, warm, pause, json, peak_only, bf16;
} opts;

// the comma-separated --threads list into o->threads
static void parse_threads(const char *thr, opts *o) {
    const char *p = thr;
    while (*p) {
        char buf[16];
        size_t len = strcspn(p, ",");
        if (!len || len >= sizeof buf || o->n_threads == 16) die(2, "--threads: bad list '%s'", thr);
        memcpy(buf, p, len);
        buf[len] = '\0';
        o->threads[o->n_threads++] = parse_int("--threads", buf, 1, 4096);
        p += len + (p[len] == ',');
    }
}

// 0 when --help was asked for (and printed): nothing more to do
static int parse_args(int argc, char **argv, opts *o) {
    const char *thr = "1,2";
    int i;
    memset(o, 0, sizeof *o);
    o->batch = 128, o->reps = 5, o->warm = 2, o->pause = 100;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL() (v ? (i++, v) : (die(2, "%s needs a value", a), ""))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--threads")) thr = VAL();
        else if (!strcmp(a, "--batch")) o->batch = parse_int(a, VAL(), 1, 4096);
        else if (!strcmp(a, "--reps")) o->reps = parse_int(a, VAL(), 1, 10000);
        else if (!strcmp(a, "--warm")) o->warm = parse_int(a, VAL(), 0, 10000);
        else if (!strcmp(a, "--pause-ms")) o->pause = parse_int(a, VAL(), 0, 100000);
        else if (!strcmp(a, "--quick")) o->batch = 32, o->reps = 3, o->warm = 1;
        else if (!strcmp(a, "--peak-only")) o->peak_only = 1;
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--bf16")) o->bf16 = 1;
        else { usage(stderr); die(2, "unknown option '%s'", a); }
#undef VAL
    }
    parse_threads(thr, o);
    return 1;
}

static void print_peaks(const opts *o, const double *peak, const double *peak16) {
    int ti;
    for (ti = 0; ti < o->n_threads; ti++)
        printf("FP32 FMA peak (%s), %d thread%s: %.1f GFLOP/s\n", fma_peak_isa(), o->threads[ti],
               o->threads[ti] == 1 ? "" : "s", peak[ti]);
    for (ti = 0; o->bf16 && ti < o->n_threads; ti++)
        printf("bf16 peak (vdpbf16ps), %d thread%s: %.1f GFLOP/s\n", o->threads[ti], o->threads[ti] == 1 ? "" : "s",
               peak16[ti]);
}

// the JSON object {"<threads>": GFLOP/s, ...}, without its braces
static void print_peaks_json(const opts *o, const double *peak) {
    int ti;
    for (ti = 0; ti < o->n_threads; ti++) printf("%s\"%d\": %.2f", ti ? ", " : "", o->threads[ti], peak[ti]);
}

// --peak-only
static void print_peak_only(const opts *o, const double *peak, const double *peak16) {
    if (o->json) {
        printf("{\"isa\": \"%s\", \"peak_gflops\": {", fma_peak_isa());
        print_peaks_json(o, peak);
        if (o->bf16) {
            printf("}, \"bf16_peak_gflops\": {");
            print_peaks_json(o, peak16);
        }
        printf("}}\n");
    } else
        print_peaks(o, peak, peak16);
}

// operands and results sized for the largest shape, shared by all of them
typedef struct bufs {
    size_t max_a, max_b, max_c;
    float *A, *B, *C1, *C2;
    double *t; // one time per timed call
} bufs;

static void bufs_alloc(bufs *b, const shape *shapes, int n_shapes, int reps) {
    int i;
    b->max_a = b->max_b = b->max_c = 0;
    for (i = 0; i < n_shapes; i++) {
        const shape *s = &shapes[i];
        if ((size_t)s->M * s->K > b->max_a) b->max_a = (size_t)s->M * s->K;
        if ((size_t)s->K * s->N > b->max_b) b->max_b = (size_t)s->K * s->N;
        if ((size_t)s->M * s->N > b->max_c) b->max_c = (size_t)s->M * s->N;
    }
    b->A = (float *)xmalloc(b->max_a * sizeof(float));
    b->B = (float *)xmalloc(b->max_b * sizeof(float));
    b->C1 = (float *)xmalloc(b->max_c * sizeof(float));
    b->C2 = (float *)xmalloc(b->max_c * sizeof(float));
    b->t = (double *)xmalloc((size_t)reps * sizeof(double));
}

static void print_table_header(int threads, int bf16) {
    printf("\n%d thread%s:\n", threads, threads == 1 ? "" : "s");
    printf("| config      | op    | pass | ta tb |     M |    N |     K | per step | ours GFLOP/s | "
           "OpenBLAS GFLOP/s | ours/OpenBLAS | max rel diff |%s\n", bf16 ? " ours bf16 GFLOP/s |" : "");
    printf("|-------------|-------|------|-------|------:|-----:|------:|---------:|-------------:|"
           "-----------------:|--------------:|-------------:|%s\n", bf16 ? "------------------:|" : "");
}

// times shape i with both libraries and compares their results; *first_hash
// holds pf_gemm's bits at the first thread count (set when first is 1)
static void measure(const shape *shapes, int i, int threads, int first, const opts *o, const bufs *b,
                    uint64_t *first_hash, uint64_t *first_hash16, result *r) {
    const shape *s = &shapes[i];
    double diff = 0.0, mx = 0.0;
    size_t k, nc = (size_t)s->M * s->N;
    r->shape = i;
    r->threads = threads;
    r->ours_s = time_it(run_pf, s, b->A, b->B, b->C1, o->warm, o->reps, b->t);
    pause_ms(o->pause);
    r->blas_s = time_it(run_blas, s, b->A, b->B, b->C2, o->warm, o->reps, b->t);
    pause_ms(o->pause);
    for (k = 0; k < nc; k++) {
        double d = fabs((double)b->C1[k] - b->C2[k]), bb = fabs((double)b->C2[k]);
        diff = d > diff ? d : diff;
        mx = bb > mx ? bb : mx;
    }
    r->max_rel = mx > 0 ? diff / mx : diff;
    if (first) *first_hash = hash_bits(b->C1, nc);
    r->same_bits = hash_bits(b->C1, nc) == *first_hash;
    r->bf16_s = 0.0;
    r->bf16_ok = 1;
    if (o->bf16) {
        pf_set_bf16(1); /* main checked that this machine runs it */
        r->bf16_s = time_it(run_pf, s, b->A, b->B, b->C1, o->warm, o->reps, b->t);
        pf_set_bf16(0);
        pause_ms(o->pause);
        if (first) *first_hash16 = hash_bits(b->C1, nc);
        r->bf16_ok = hash_bits(b->C1, nc) == *first_hash16 && bf16_matches_ref(s, b->A, b->B, b->C1);
    }
}

static void print_row(const shape *s, const result *r) {
    double gf = 2.0 * s->M * s->N * (double)s->K / 1e9;
    printf("| %-11s | %-5s | %-4s | %d  %d  | %5d | %4d | %5d | %8d | %12.1f | %16.1f | %13.2f | %12.1e |",
           CONFIGS[s->config].name, s->op, s->pass, s->ta, s->tb, s->M, s->N, s->K, s->per_step,
           gf / r->ours_s, gf / r->blas_s, r->blas_s / r->ours_s, r->max_rel);
    if (r->bf16_s > 0) printf(" %17.1f |", gf / r->bf16_s);
    printf("%s%s\n", !(r->max_rel < 1e-4) ? " DIFFERS" : !r->same_bits ? " BITS CHANGED WITH THREADS" : "",
           r->bf16_ok ? "" : " BF16 DIFFERS FROM pf_gemm_bf16_ref OR ACROSS THREADS");
    fflush(stdout);
}

// the JSON object up to the opening of "per_step"
static void print_json_shapes(const opts *o, const double *peak, const double *peak16, const shape *shapes,
                              const result *res, int n_res) {
    int j;
    printf("{\"pf_gemm_kernel\": \"%s\", \"openblas_core\": \"%s\", \"openblas_config\": \"%s\",\n",
           pf_gemm_kernel(), openblas_get_corename(), openblas_get_config());
    printf(" \"batch\": %d, \"reps\": %d, \"warm\": %d, \"isa\": \"%s\", \"peak_gflops\": {", o->batch, o->reps,
           o->warm, fma_peak_isa());
    print_peaks_json(o, peak);
    if (o->bf16) {
        printf("}, \"bf16_peak_gflops\": {");
        print_peaks_json(o, peak16);
    }
    printf("},\n \"shapes\": [");
    for (j = 0; j < n_res; j++) {
        const result *r = &res[j];
        const shape *s = &shapes[r->shape];
        double gf = 2.0 * s->M * s->N * (double)s->K / 1e9;
        printf("%s\n  {\"config\": \"%s\", \"op\": \"%s\", \"pass\": \"%s\", \"ta\": %d, \"tb\": %d, \"M\": %d, "
               "\"N\": %d, \"K\": %d, \"per_step\": %d, \"threads\": %d, \"ours_ms\": %.4f, \"blas_ms\": %.4f, "
               "\"ours_gflops\": %.2f, \"blas_gflops\": %.2f, \"ratio\": %.4f, \"max_rel_diff\": %.3e, "
               "\"same_bits_across_threads\": %s",
               j ? "," : "", CONFIGS[s->config].name, s->op, s->pass, s->ta, s->tb, s->M, s->N, s->K,
               s->per_step, r->threads, 1e3 * r->ours_s, 1e3 * r->blas_s, gf / r->ours_s, gf / r->blas_s,
               r->blas_s / r->ours_s, r->max_rel, r->same_bits ? "true" : "false");
        if (o->bf16)
            printf(", \"bf16_ms\": %.4f, \"bf16_gflops\": %.2f, \"bf16_ok\": %s", 1e3 * r->bf16_s,
                   gf / r->bf16_s, r->bf16_ok ? "true" : "false");
        printf("}");
    }
    printf("],\n \"per_step\": [");
}

// per configuration and thread count: the GEMM time of one training step
static void print_per_step(const opts *o, const double *peak, const double *peak16, const shape *shapes,
                           const result *res, int n_res) {
    int i, j, ti;
    for (i = 0, j = 0; i < N_CONFIGS; i++)
        for (ti = 0; ti < o->n_threads; ti++) {
            double ours = 0, blas = 0, fl = 0, b16 = 0;
            int k;
            for (k = 0; k < n_res; k++) {
                const shape *s = &shapes[res[k].shape];
                if (s->config != i || res[k].threads != o->threads[ti]) continue;
                ours += s->per_step * res[k].ours_s;
                blas += s->per_step * res[k].blas_s;
                b16 += s->per_step * res[k].bf16_s;
                fl += s->per_step * 2.0 * s->M * s->N * (double)s->K;
            }
            if (o->json) {
                printf("%s\n  {\"config\": \"%s\", \"threads\": %d, \"ours_ms\": %.3f, \"blas_ms\": %.3f, "
                       "\"ratio\": %.4f, \"ours_gflops\": %.2f, \"blas_gflops\": %.2f, \"peak_frac\": %.4f",
                       j++ ? "," : "", CONFIGS[i].name, o->threads[ti], 1e3 * ours, 1e3 * blas, blas / ours,
                       fl / ours / 1e9, fl / blas / 1e9, peak[ti] > 0 ? fl / ours / 1e9 / peak[ti] : 0.0);
                if (o->bf16)
                    printf(", \"bf16_ms\": %.3f, \"bf16_gflops\": %.2f, \"bf16_peak_frac\": %.4f", 1e3 * b16,
                           fl / b16 / 1e9, peak16[ti] > 0 ? fl / b16 / 1e9 / peak16[ti] : 0.0);
                printf("}");
            } else {
                printf("| %-11s | %7d | %7.1f | %11.1f | %13.2f | %12.1f | %8.1f%% |", CONFIGS[i].name,
                       o->threads[ti], 1e3 * ours, 1e3 * blas, blas / ours, fl / ours / 1e9,
                       peak[ti] > 0 ? 100.0 * fl / ours / 1e9 / peak[ti] : 0.0);
                if (o->bf16)
                    printf(" %7.1f | %12.1f | %13.1f%% |", 1e3 * b16, fl / b16 / 1e9,
                           peak16[ti] > 0 ? 100.0 * fl / b16 / 1e9 / peak16[ti] : 0.0);
                printf("\n");
            }
        }
}

int main(int argc, char **argv) {
    opts o;
    shape shapes[MAX_SHAPES];
    result *res;
    bufs b;
    int n_shapes, i, ti, n_res = 0, failed = 0;
    double peak[16], peak16[16] = {0};
    uint64_t *first_hash, *first_hash16;
    if (!parse_args(argc, argv, &o)) return 0;
    if (o.bf16 && pf_bf16_missing()) die(2, "--bf16: pf_gemm in bf16 %s", pf_bf16_missing());
    for (ti = 0; ti < o.n_threads; ti++) peak[ti] = fma_peak_gflops(o.threads[ti]);
    for (ti = 0; o.bf16 && ti < o.n_threads; ti++) peak16[ti] = bf16_peak_gflops(o.threads[ti]);
    if (o.peak_only) {
        print_peak_only(&o, peak, peak16);
        return 0;
    }

    n_shapes = build_shapes(shapes, o.batch);
    bufs_alloc(&b, shapes, n_shapes, o.reps);
    res = (result *)xmalloc((size_t)(n_shapes * o.n_threads) * sizeof(result));
    first_hash = (uint64_t *)xmalloc((size_t)n_shapes * sizeof(uint64_t));
    first_hash16 = (uint64_t *)xmalloc((size_t)n_shapes * sizeof(uint64_t));
    fill_uniform(b.A, b.max_a, 1);
    fill_uniform(b.B, b.max_b, 2);

    if (!o.json) {
        printf("pf_gemm kernel %s; OpenBLAS %s, core %s; batch %d, median of %d after %d warm-up\n",
               pf_gemm_kernel(), openblas_get_config(), openblas_get_corename(), o.batch, o.reps, o.warm);
        print_peaks(&o, peak, peak16);
    }
    for (ti = 0; ti < o.n_threads; ti++) {
        pf_set_threads(o.threads[ti]);
        openblas_set_num_threads(o.threads[ti]);
        if (!o.json) print_table_header(o.threads[ti], o.bf16);
        for (i = 0; i < n_shapes; i++) {
            result *r = &res[n_res++];
            measure(shapes, i, o.threads[ti], ti == 0, &o, &b, &first_hash[i], &first_hash16[i], r);
            if (!(r->max_rel < 1e-4) || !r->same_bits || !r->bf16_ok) failed++;
            if (!o.json) print_row(&shapes[i], r);
        }
    }

    if (o.json) print_json_shapes(&o, peak, peak16, shapes, res, n_res);
    else {
        printf("\nGEMM time of one training step (each shape x its count per step):\n");
        printf("| config      | threads | ours ms | OpenBLAS ms | ours/OpenBLAS | ours GFLOP/s | %% of peak |%s\n",
               o.bf16 ? " bf16 ms | bf16 GFLOP/s | % of bf16 peak |" : "");
        printf("|-------------|--------:|--------:|------------:|--------------:|-------------:|----------:|%s\n",
               o.bf16 ? "--------:|-------------:|---------------:|" : "");
    }
    print_per_step(&o, peak, peak16, shapes, res, n_res);
    if (o.json) printf("],\n \"failed\": %d}\n", failed);
    else printf("\n%s: %d of %d checks failed (max rel diff < 1e-4, same bits at every thread count%s)\n",
                failed ? "FAIL" : "ok", failed, n_res, o.bf16 ? "; bf16: sampled entries as pf_gemm_bf16_ref" : "");
    free(first_hash16);
    free(first_hash);
    free(res);
    free(b.t);
    free(b.C2);
    free(b.C1);
    free(b.B);
    free(b.A);
    return failed ? 1 : 0;
}

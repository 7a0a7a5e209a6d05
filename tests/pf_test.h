/* pf_test.h - the harness of the C tests. Include it after paraformer.h.

   Every test prints one line per check and ends with `N passed, M failed`
   (tests/run_all.sh adds those up); its exit status is 1 when a check
   failed. Everything here is static inline, C99 and C++ clean (test_header
   compiles it with -Wall -Wextra -Werror -pedantic as both).

   checks
     check(ok, fmt, ...)        `ok   - ...` or `FAIL - ...`, counted
     pf_test_passed, pf_test_failed   the counts so far
     test_summary()             prints `N passed, M failed`; the exit status
   numbers
     rel_err(a, b, n)           max|a - b| / max|b| over pf_real arrays
     rel_err_ref(a, ref, n)     the same against a float64 reference
     rel_acc, rel_add, rel_value   the same measure built value by value
     rand_reals(&state, n, s)   n values s * U[-1, 1) (pf__uniform; only
                                where the implementation is compiled)
   models
     tiny_config()              the tiny model: 8x8x3 image, patch 4 (T = 5),
                                dim 8, 2 heads, MLP 16, 2 branches x 1 layer,
                                3 classes; set any field after
     shape_config(image, channels, patch, dim, heads, mlp_dim, branches,
                  depth, classes)   a configuration of that shape
   bytes
     tbuf, tb_add, tb_str, tb_byte, tb_le, tb_be, tb_free   a growable,
                                NUL-terminated byte buffer (file contents
                                written by hand)
   files (#define PF_TEST_FILES before the include, and _POSIX_C_SOURCE
   200809L before any)
     tmp_init(name)             a fresh directory $TMPDIR/pf_NAME.XXXXXX
     tmp_dir                    its path
     tmp_path(fmt, ...)         a path inside it (kept until tmp_done)
     tmp_str(fmt, ...)          any printf'd string, kept until tmp_done
     write_file(path, data, n)  writes a file (exits 2 when it cannot)
     read_file(path, &n)        a whole file (malloc'd) or NULL
     same_file(a, b)            1 when both files exist with the same bytes
     tmp_done()                 removes the directory and what is in it,
                                unless a check failed or PF_KEEP_TMP is set
                                (not "0"): then it says where it is */
#ifndef PF_TEST_H
#define PF_TEST_H
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define PF_TEST_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PF_TEST_PRINTF(f, a)
#endif

/* ---- checks ---- */

static int pf_test_passed, pf_test_failed;

static inline void check(int ok, const char *fmt, ...) PF_TEST_PRINTF(2, 3);
static inline void check(int ok, const char *fmt, ...) {
    va_list ap;
    if (ok) pf_test_passed++;
    else pf_test_failed++;
    fputs(ok ? "ok   - " : "FAIL - ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout); /* every line out before a crash or a sanitizer's abort */
}

static inline int test_summary(void) {
    printf("%d passed, %d failed\n", pf_test_passed, pf_test_failed);
    return pf_test_failed ? 1 : 0;
}

/* ---- numbers ---- */

/* max|a - b| / max|b| (docs/design.md §7), b the reference. A NaN
   difference counts as infinite; with max|b| = 0 it is max|a - b|. */
typedef struct rel_acc { double num, den; } rel_acc;
static inline void rel_add(rel_acc *r, double a, double b) {
    double d = fabs(a - b), m = fabs(b);
    if (d > r->num || d != d) r->num = d != d ? HUGE_VAL : d;
    if (m > r->den) r->den = m;
}
static inline double rel_value(const rel_acc *r) { return r->den > 0 ? r->num / r->den : r->num; }
static inline double rel_err(const pf_real *a, const pf_real *b, size_t n) {
    rel_acc r = {0, 0};
    size_t i;
    for (i = 0; i < n; i++) rel_add(&r, (double)a[i], (double)b[i]);
    return rel_value(&r);
}
static inline double rel_err_ref(const pf_real *a, const double *ref, size_t n) {
    rel_acc r = {0, 0};
    size_t i;
    for (i = 0; i < n; i++) rel_add(&r, (double)a[i], ref[i]);
    return rel_value(&r);
}

#ifdef PARAFORMER_IMPLEMENTATION
/* n values scale * U[-1, 1) from the library's generator */
static inline pf_real *rand_reals(uint64_t *state, size_t n, double scale) {
    pf_real *v = (pf_real *)malloc((n + 1) * sizeof(pf_real));
    size_t i;
    if (!v) { fprintf(stderr, "out of memory\n"); exit(2); }
    for (i = 0; i < n; i++) v[i] = (pf_real)(scale * (2.0 * pf__uniform(state) - 1.0));
    return v;
}
#endif

/* ---- models ---- */

/* image x image x channels in patches of patch; dim, heads, mlp_dim;
   branches x depth; classes. Every other field 0 (the defaults); 0 for a
   shape field is its default too. */
static inline pf_config shape_config(int image, int channels, int patch, int dim, int heads, int mlp_dim, int branches,
                                     int depth, int classes) {
    pf_config c;
    memset(&c, 0, sizeof c);
    c.image_size = image;
    c.channels = channels;
    c.patch_size = patch;
    c.dim = dim;
    c.heads = heads;
    c.mlp_dim = mlp_dim;
    c.branches = branches;
    c.depth = depth;
    c.classes = classes;
    return c;
}
/* 8x8x3 in patches of 4 (T = 5), dim 8, 2 heads, MLP 16, 2 branches x 1 layer, 3 classes */
static inline pf_config tiny_config(void) { return shape_config(8, 3, 4, 8, 2, 16, 2, 1, 3); }

/* ---- bytes ---- */

typedef struct tbuf { unsigned char *p; size_t n, cap; } tbuf;
static inline void tb_add(tbuf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        unsigned char *p = (unsigned char *)realloc(b->p, cap);
        if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
}
static inline void tb_str(tbuf *b, const char *s) { tb_add(b, s, strlen(s)); }
static inline void tb_byte(tbuf *b, int c, size_t count) { /* count copies of byte c */
    unsigned char ch = (unsigned char)c;
    while (count--) tb_add(b, &ch, 1);
}
static inline void tb_le(tbuf *b, uint64_t v, int bytes) { /* little-endian */
    int i;
    for (i = 0; i < bytes; i++) tb_byte(b, (int)((v >> (8 * i)) & 0xff), 1);
}
static inline void tb_be(tbuf *b, uint64_t v, int bytes) { /* big-endian */
    int i;
    for (i = bytes - 1; i >= 0; i--) tb_byte(b, (int)((v >> (8 * i)) & 0xff), 1);
}
static inline void tb_free(tbuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- files ---- */

#ifdef PF_TEST_FILES
#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#error "PF_TEST_FILES needs #define _POSIX_C_SOURCE 200809L before the first include (mkdtemp)"
#endif
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_dir[512];
static char **pf_tmp_strs;
static size_t pf_tmp_nstrs, pf_tmp_cap;

/* a fresh directory $TMPDIR/pf_NAME.XXXXXX (/tmp without $TMPDIR); 0, with
   a failed check, when it cannot be made */
static inline int tmp_init(const char *name) {
    const char *t = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/pf_%s.XXXXXX", t && *t ? t : "/tmp", name);
    if (!mkdtemp(tmp_dir)) {
        check(0, "mkdtemp %s: %s", tmp_dir, strerror(errno));
        return 0;
    }
    printf("# files in %s\n", tmp_dir);
    return 1;
}

static inline const char *pf_tmp_vstr(const char *prefix, const char *fmt, va_list ap) {
    va_list aq;
    size_t pre = strlen(prefix);
    int n;
    char *p;
    va_copy(aq, ap);
    n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (pf_tmp_nstrs == pf_tmp_cap) {
        pf_tmp_cap = pf_tmp_cap ? 2 * pf_tmp_cap : 256;
        pf_tmp_strs = (char **)realloc(pf_tmp_strs, pf_tmp_cap * sizeof *pf_tmp_strs);
    }
    p = n < 0 ? NULL : (char *)malloc(pre + (size_t)n + 1);
    if (!p || !pf_tmp_strs) { fprintf(stderr, "out of memory\n"); exit(2); }
    memcpy(p, prefix, pre);
    vsnprintf(p + pre, (size_t)n + 1, fmt, ap);
    pf_tmp_strs[pf_tmp_nstrs++] = p;
    return p;
}

/* a printf'd string, valid until tmp_done */
static inline const char *tmp_str(const char *fmt, ...) PF_TEST_PRINTF(1, 2);
static inline const char *tmp_str(const char *fmt, ...) {
    const char *s;
    va_list ap;
    va_start(ap, fmt);
    s = pf_tmp_vstr("", fmt, ap);
    va_end(ap);
    return s;
}

/* tmp_dir/<fmt...>, valid until tmp_done */
static inline const char *tmp_path(const char *fmt, ...) PF_TEST_PRINTF(1, 2);
static inline const char *tmp_path(const char *fmt, ...) {
    char dir[sizeof tmp_dir + 1];
    const char *s;
    va_list ap;
    snprintf(dir, sizeof dir, "%s/", tmp_dir);
    va_start(ap, fmt);
    s = pf_tmp_vstr(dir, fmt, ap);
    va_end(ap);
    return s;
}

static inline void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

/* the whole file (one byte more allocated), its size in *n; NULL when unreadable */
static inline unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *p = NULL;
    long len;
    *n = 0;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        p = (unsigned char *)malloc((size_t)len + 1);
        if (p && fread(p, 1, (size_t)len, f) == (size_t)len) *n = (size_t)len;
        else {
            free(p);
            p = NULL;
        }
    }
    fclose(f);
    return p;
}

static inline int same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int ca, cb, same = fa && fb;
    while (same) {
        ca = getc(fa);
        cb = getc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* removes path and, for a directory, everything below it (links are not
   followed); 0 when all went */
static inline int pf_tmp_remove(const char *path) {
    struct stat s;
    int bad = 0;
    if (lstat(path, &s) != 0) return -1;
    if (S_ISDIR(s.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        if (!d) return -1;
        while ((e = readdir(d)) != NULL) {
            char *sub;
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            sub = (char *)malloc(strlen(path) + strlen(e->d_name) + 2);
            if (!sub) { bad = -1; break; }
            sprintf(sub, "%s/%s", path, e->d_name);
            if (pf_tmp_remove(sub) != 0) bad = -1;
            free(sub);
        }
        closedir(d);
        return rmdir(path) != 0 ? -1 : bad;
    }
    return remove(path) != 0 ? -1 : 0;
}

static inline void tmp_done(void) {
    const char *keep = getenv("PF_KEEP_TMP");
    if (tmp_dir[0]) {
        if (pf_test_failed || (keep && *keep && strcmp(keep, "0") != 0)) printf("# kept %s\n", tmp_dir);
        else if (pf_tmp_remove(tmp_dir) != 0) printf("# could not remove %s: %s\n", tmp_dir, strerror(errno));
    }
    while (pf_tmp_nstrs > 0) free(pf_tmp_strs[--pf_tmp_nstrs]);
    free(pf_tmp_strs);
    pf_tmp_strs = NULL;
    pf_tmp_cap = 0;
}
#endif /* PF_TEST_FILES */

#endif

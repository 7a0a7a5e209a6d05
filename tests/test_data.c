/* test_data.c - the dataset part of paraformer.h: readers, specs, splits,
   statistics, augmentation and batches.

   Every file is written here, in the documented format of its dataset, into
   a fresh temporary directory (removed at the end unless something failed
   or PF_KEEP_TMP=1): Fashion-MNIST IDX, CIFAR-10 and CIFAR-100 binary
   batches (raw and gzip'd; the gzip files are written by hand with stored
   deflate blocks, so this test needs no zlib to write them), image folders
   of hand-written BMP and PNG files, and .npy pairs. Each reader must give
   back exactly the pixels (HWC) and labels that were written. Bad files must
   be refused with a message that names the file, without crashing and
   without asking for more than 64 MiB in one allocation (the library's
   PF_MALLOC/PF_REALLOC are routed through a guard here); at the end no
   allocation made through PF_MALLOC may still be live. PF_DATASET_MAX_BYTES
   is 8 MiB here so that a "gzip bomb" stays small.

   The shipped data/fmnist-sample is read too (run from the repository
   root). Without PF_HAVE_ZLIB / PF_HAVE_STB the .gz and folder checks
   instead expect the error that says what the build lacks.

   Prints one line per check and `N passed, M failed`; exit status 1 on any
   failure. Run under `make test SAN=1` for the sanitizers. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pf_alloc_guard.h" /* PF_MALLOC & co., counted and capped */
#define PF_DATASET_MAX_BYTES ((uint64_t)8 << 20)

#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#ifdef PF_HAVE_STB /* stb's implementation, after the header, as a program compiles it (tools/paraformer.c) */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_JPEG
#define STBI_MAX_DIMENSIONS (1 << 14)
#define STBI_MALLOC(sz) pf_stbi_malloc(sz)
#define STBI_REALLOC(p, sz) pf_stbi_realloc(p, sz)
#define STBI_FREE(p) pf_stbi_free(p)
#include <stb/stb_image.h>
#endif

#define PF_TEST_FILES
#include "pf_test.h"

/* ---------------------------------------------------------------------- */
/* files in the temporary directory (tmp_path, write_file: pf_test.h) */

static const char *mkd(const char *path) {
    mkdir(path, 0755);
    return path;
}

static uint32_t crc32_of(const unsigned char *d, size_t n, uint32_t crc) {
    static uint32_t t[256];
    size_t i;
    if (!t[1]) {
        uint32_t k, c; int j;
        for (k = 0; k < 256; k++) { for (c = k, j = 0; j < 8; j++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1; t[k] = c; }
    }
    crc = ~crc;
    for (i = 0; i < n; i++) crc = t[(crc ^ d[i]) & 255] ^ (crc >> 8);
    return ~crc;
}

/* deflate stored blocks of d (RFC 1951 3.2.4) */
static void b_stored(tbuf *b, const unsigned char *d, size_t n) {
    size_t at = 0;
    do {
        size_t k = n - at > 65535 ? 65535 : n - at;
        tb_byte(b, at + k == n ? 1 : 0, 1);
        tb_le(b, (unsigned)k, 2);
        tb_le(b, (unsigned)(~k & 0xFFFF), 2);
        tb_add(b, d + at, k);
        at += k;
    } while (at < n);
}

/* a gzip file (RFC 1952) of d with stored blocks; cut bytes dropped at the end */
static void put_gz(const char *path, const unsigned char *d, size_t n, size_t cut) {
    static const unsigned char hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    tbuf b = {0, 0, 0};
    tb_add(&b, hdr, 10);
    b_stored(&b, d, n);
    tb_le(&b, crc32_of(d, n, 0), 4);
    tb_le(&b, (uint32_t)n, 4);
    write_file(path, b.p, b.n - cut);
    free(b.p);
}

/* a file, raw or gzip'd by name */
static void put_maybe_gz(const char *path, const tbuf *b) {
    size_t n = strlen(path);
    if (n > 3 && !strcmp(path + n - 3, ".gz")) put_gz(path, b->p, b->n, 0);
    else write_file(path, b->p, b->n);
}

static int err_has(const char *s) { return strstr(pf_last_error(), s) != NULL; }

/* a failing call: not PF_OK, the message names `what`, no huge allocation */
static void expect_fail(pf_status st, const char *label, const char *what) {
    int big = pf_guard_biggest > PF_GUARD_LIMIT;
    check(st != PF_OK && err_has(what) && !big, "%s: refused (%s)%s%s", label, pf_last_error(),
          st == PF_OK ? " [BUT IT LOADED]" : !err_has(what) ? " [message lacks the file/spec]" : "",
          big ? " [asked for a huge allocation]" : "");
}

static void load_fail(const char *spec, const char *label, const char *what) {
    pf_dataset d;
    pf_status st;
    pf_guard_biggest = 0;
    st = pf_dataset_load(spec, PF_SPLIT_TRAIN, &d);
    expect_fail(st, label, what);
    if (st == PF_OK) pf_dataset_free(&d);
}

/* ---------------------------------------------------------------------- */
/* writers of the dataset formats */

static unsigned char pix(int i, int k) { return (unsigned char)((i * 37 + k * 11 + (k * k) % 7) & 255); }

static void idx_images(tbuf *b, uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, int extra) {
    size_t i;
    tb_be(b, magic, 4); tb_be(b, n, 4); tb_be(b, rows, 4); tb_be(b, cols, 4);
    for (i = 0; i < (size_t)n * rows * cols + (size_t)(extra > 0 ? extra : 0); i++)
        tb_byte(b, pix((int)(i / (rows * cols)), (int)(i % (rows * cols))), 1);
    if (extra < 0) b->n -= (size_t)-extra;
}
static void idx_labels(tbuf *b, uint32_t magic, uint32_t n, int bad_at) {
    uint32_t i;
    tb_be(b, magic, 4); tb_be(b, n, 4);
    for (i = 0; i < n; i++) tb_byte(b, (int)i == bad_at ? 10 : (i * 7 + 3) % 10, 1);
}
/* the four Fashion-MNIST files (train n1, test n2, rows x cols) in dir */
static void write_fmnist(const char *dir, int n1, int n2, int rows, int cols, const char *ext) {
    tbuf b = {0, 0, 0};
    char p[600];
    idx_images(&b, 0x803, (uint32_t)n1, (uint32_t)rows, (uint32_t)cols, 0);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte%s", dir, ext); put_maybe_gz(p, &b); b.n = 0;
    idx_labels(&b, 0x801, (uint32_t)n1, -1);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte%s", dir, ext); put_maybe_gz(p, &b); b.n = 0;
    idx_images(&b, 0x803, (uint32_t)n2, (uint32_t)rows, (uint32_t)cols, 0);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte%s", dir, ext); put_maybe_gz(p, &b); b.n = 0;
    idx_labels(&b, 0x801, (uint32_t)n2, -1);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte%s", dir, ext); put_maybe_gz(p, &b);
    free(b.p);
}

/* CIFAR record r of file f: label(s) then R, G, B planes */
static int cifar_label(int f, int r, int classes) { return (f * 13 + r * 7 + 1) % classes; }
static unsigned char cifar_pix(int f, int r, int ch, int p) { return (unsigned char)((f * 71 + r * 29 + ch * 101 + p * 3) & 255); }
static void cifar_file(tbuf *b, int f, int nrec, int hundred) {
    int r, ch, p;
    for (r = 0; r < nrec; r++) {
        if (hundred) tb_byte(b, (unsigned)cifar_label(f, r, 100) / 5, 1);
        tb_byte(b, (unsigned)cifar_label(f, r, hundred ? 100 : 10), 1);
        for (ch = 0; ch < 3; ch++)
            for (p = 0; p < 1024; p++) tb_byte(b, cifar_pix(f, r, ch, p), 1);
    }
}
/* data_batch_1..5 (nrec each, file index 0..4) and test_batch (file 5) */
static void write_cifar10(const char *dir, int nrec, const char *ext) {
    tbuf b = {0, 0, 0};
    char p[600];
    int f;
    for (f = 0; f < 6; f++) {
        b.n = 0;
        cifar_file(&b, f, f == 5 ? nrec + 1 : nrec, 0);
        if (f == 5) snprintf(p, sizeof p, "%s/test_batch.bin%s", dir, ext);
        else snprintf(p, sizeof p, "%s/data_batch_%d.bin%s", dir, f + 1, ext);
        put_maybe_gz(p, &b);
    }
    free(b.p);
}
static void write_cifar100(const char *dir, int nrec, const char *ext) {
    tbuf b = {0, 0, 0};
    char p[600];
    cifar_file(&b, 0, nrec, 1);
    snprintf(p, sizeof p, "%s/train.bin%s", dir, ext); put_maybe_gz(p, &b); b.n = 0;
    cifar_file(&b, 5, nrec + 2, 1);
    snprintf(p, sizeof p, "%s/test.bin%s", dir, ext); put_maybe_gz(p, &b);
    free(b.p);
}

/* does d hold the CIFAR records written by cifar_file for files f0.. ? */
static int cifar_matches(const pf_dataset *d, int f0, int nf, int nrec, int hundred) {
    int f, r, y, x, ch, i = 0;
    if (d->h != 32 || d->w != 32 || d->c != 3) return 0;
    for (f = f0; f < f0 + nf; f++)
        for (r = 0; r < nrec; r++, i++) {
            if (i >= d->n || d->labels[i] != cifar_label(f, r, hundred ? 100 : 10)) return 0;
            for (y = 0; y < 32; y++)
                for (x = 0; x < 32; x++)
                    for (ch = 0; ch < 3; ch++)
                        if (d->images[((size_t)i * 1024 + y * 32 + x) * 3 + ch] != cifar_pix(f, r, ch, y * 32 + x)) return 0;
        }
    return i == d->n;
}

/* a 24-bit BMP (bottom-up rows padded to 4 bytes) of rgb [h,w,3] */
static void put_bmp(const char *path, const unsigned char *rgb, int h, int w) {
    tbuf b = {0, 0, 0};
    int row = (w * 3 + 3) / 4 * 4, y, x;
    tb_byte(&b, 'B', 1); tb_byte(&b, 'M', 1); tb_le(&b, (uint32_t)(54 + row * h), 4); tb_le(&b, 0, 4); tb_le(&b, 54, 4);
    tb_le(&b, 40, 4); tb_le(&b, (uint32_t)w, 4); tb_le(&b, (uint32_t)h, 4); tb_le(&b, 1, 2); tb_le(&b, 24, 2);
    tb_le(&b, 0, 4); tb_le(&b, (uint32_t)(row * h), 4); tb_le(&b, 2835, 4); tb_le(&b, 2835, 4);
    tb_le(&b, 0, 4); tb_le(&b, 0, 4);
    for (y = h - 1; y >= 0; y--) {
        for (x = 0; x < w; x++) { /* BGR */
            const unsigned char *p = rgb + ((size_t)y * w + x) * 3;
            tb_byte(&b, p[2], 1); tb_byte(&b, p[1], 1); tb_byte(&b, p[0], 1);
        }
        for (x = w * 3; x < row; x++) tb_byte(&b, 0, 1);
    }
    write_file(path, b.p, b.n);
    free(b.p);
}
static void png_chunk(tbuf *b, const char *type, const unsigned char *d, size_t n) {
    size_t at = b->n;
    tb_be(b, (uint32_t)n, 4);
    tb_add(b, type, 4);
    tb_add(b, d, n);
    tb_be(b, crc32_of(b->p + at + 4, n + 4, 0), 4);
}
/* a PNG (8-bit gray or RGB, no filter, stored zlib blocks) of px [h,w,c] */
static void put_png(const char *path, const unsigned char *px, int h, int w, int c) {
    tbuf b = {0, 0, 0}, raw = {0, 0, 0}, z = {0, 0, 0}, ih = {0, 0, 0};
    uint32_t a = 1, s = 0;
    size_t i;
    int y;
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    tb_add(&b, sig, 8);
    tb_be(&ih, (uint32_t)w, 4); tb_be(&ih, (uint32_t)h, 4); tb_byte(&ih, 8, 1); tb_byte(&ih, c == 3 ? 2 : 0, 1);
    tb_byte(&ih, 0, 3); /* deflate, no filter, no interlace */
    png_chunk(&b, "IHDR", ih.p, ih.n);
    for (y = 0; y < h; y++) { tb_byte(&raw, 0, 1); tb_add(&raw, px + (size_t)y * w * c, (size_t)w * c); }
    tb_byte(&z, 0x78, 1); tb_byte(&z, 0x01, 1);
    b_stored(&z, raw.p, raw.n);
    for (i = 0; i < raw.n; i++) { a = (a + raw.p[i]) % 65521; s = (s + a) % 65521; }
    tb_be(&z, s << 16 | a, 4);
    png_chunk(&b, "IDAT", z.p, z.n);
    png_chunk(&b, "IEND", NULL, 0);
    write_file(path, b.p, b.n);
    free(b.p); free(raw.p); free(z.p); free(ih.p);
}

static void put_npy(const char *path, pf_dtype t, int ndim, const int64_t *shape, const void *data) {
    pf_array a;
    int i;
    memset(&a, 0, sizeof a);
    a.dtype = t;
    a.ndim = ndim;
    for (i = 0; i < ndim; i++) a.shape[i] = shape[i];
    a.data = (void *)data;
    a.nbytes = pf_array_numel(&a) * pf_dtype_size(t);
    if (pf_npy_save(path, &a) != PF_OK) { fprintf(stderr, "%s\n", pf_last_error()); exit(2); }
}

/* an in-memory dataset: image i has pixels pix(i, k), label i % classes */
static void make_ds(pf_dataset *d, int n, int h, int w, int c, int classes) {
    size_t per = (size_t)h * w * c, i;
    memset(d, 0, sizeof *d);
    d->n = n; d->h = h; d->w = w; d->c = c; d->classes = classes;
    d->images = (unsigned char *)PF_MALLOC((size_t)n * per);
    d->labels = (int *)PF_MALLOC((size_t)n * sizeof(int));
    for (i = 0; i < (size_t)n * per; i++) d->images[i] = pix((int)(i / per), (int)(i % per));
    for (i = 0; i < (size_t)n; i++) d->labels[i] = (int)i % classes;
    snprintf(d->name, sizeof d->name, "test-dataset");
}

/* ---------------------------------------------------------------------- */
/* the readers: what was written comes back */

static int class_name_is(const pf_dataset *d, int k, const char *name) {
    return d->class_names && !strcmp(d->class_names[k], name);
}

/* does d hold the n Fashion-MNIST images of 3x4 written by write_fmnist? */
static int fmnist_matches(const pf_dataset *d, int n) {
    int i, ok = d->n == n && d->h == 3 && d->w == 4 && d->c == 1;
    for (i = 0; ok && i < n * 12; i++) ok = d->images[i] == pix(i / 12, i % 12);
    for (i = 0; ok && i < n; i++) ok = d->labels[i] == (i * 7 + 3) % 10;
    return ok;
}

/* Loads a spec of .gz files: 1 with zlib (check *d, then pf_dataset_free
   it); without zlib 0, after a check that the load failed saying so. */
static int load_gz(const char *spec, pf_dataset *d, pf_status *st, const char *label) {
    *st = pf_dataset_load(spec, PF_SPLIT_TRAIN, d);
#ifdef PF_HAVE_ZLIB
    (void)label;
    return 1;
#else
    expect_fail(*st, label, "PF_HAVE_ZLIB");
    if (*st == PF_OK) pf_dataset_free(d);
    return 0;
#endif
}

static void test_fmnist(void) {
    const char *raw = mkd(tmp_path("fm_raw")), *gz = mkd(tmp_path("fm_gz"));
    pf_dataset d;
    pf_status st;
    write_fmnist(raw, 5, 3, 3, 4, "");
    write_fmnist(gz, 5, 3, 3, 4, ".gz");
    st = pf_dataset_load(tmp_str("fmnist:%s", raw), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && fmnist_matches(&d, 5) && d.classes == 10, "fmnist raw IDX: 5 images 3x4x1, pixels and labels as written (%s)", st ? pf_last_error() : d.name);
    check(st == PF_OK && class_name_is(&d, 0, "T-shirt/top") && class_name_is(&d, 9, "Ankle boot"),
          "fmnist class names T-shirt/top .. Ankle boot");
    check(st == PF_OK && strstr(d.name, "@train") != NULL, "the name says the split: %s", d.name);
    pf_dataset_free(&d);
    st = pf_dataset_load(tmp_str("fmnist:%s@test", raw), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && fmnist_matches(&d, 3), "fmnist @test reads t10k-*: 3 images");
    pf_dataset_free(&d);
    st = pf_dataset_load(tmp_str("fmnist:%s", raw), PF_SPLIT_TEST, &d);
    check(st == PF_OK && d.n == 3, "fmnist default split PF_SPLIT_TEST reads t10k-*");
    pf_dataset_free(&d);

    if (load_gz(tmp_str("fmnist:%s", gz), &d, &st, "fmnist .gz without zlib")) {
        check(st == PF_OK && fmnist_matches(&d, 5), "fmnist .gz IDX: the same pixels and labels (%s)",
              st ? pf_last_error() : "ok");
        pf_dataset_free(&d);
    }
}

static void test_cifar(void) {
    const char *raw = mkd(tmp_path("c10_raw")), *gz = mkd(tmp_path("c10_gz"));
    const char *r100 = mkd(tmp_path("c100_raw")), *g100 = mkd(tmp_path("c100_gz"));
    pf_dataset d;
    pf_status st;
    write_cifar10(raw, 2, "");
    write_cifar10(gz, 2, ".gz");
    write_cifar100(r100, 4, "");
    write_cifar100(g100, 4, ".gz");

    st = pf_dataset_load(tmp_str("cifar10:%s", raw), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.n == 10 && d.classes == 10 && cifar_matches(&d, 0, 5, 2, 0),
          "cifar10 raw: data_batch_1..5 in order, 10 images, CHW planes -> HWC, labels (%s)", st ? pf_last_error() : "ok");
    check(st == PF_OK && class_name_is(&d, 0, "airplane") && class_name_is(&d, 9, "truck"),
          "cifar10 without batches.meta.txt: the standard names");
    pf_dataset_free(&d);
    write_file(tmp_path("c10_raw/batches.meta.txt"), "a0\nb1\r\nc2\n\nd3\ne4\nf5\ng6\nh7\ni8\nj9 \n", 33);
    st = pf_dataset_load(tmp_str("cifar10:%s@test", raw), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.n == 3 && cifar_matches(&d, 5, 1, 3, 0), "cifar10 @test: test_batch.bin, 3 images");
    check(st == PF_OK && class_name_is(&d, 1, "b1") && class_name_is(&d, 3, "d3") &&
          class_name_is(&d, 9, "j9"), "cifar10 names from batches.meta.txt (blank lines skipped, ends trimmed)");
    pf_dataset_free(&d);

    if (load_gz(tmp_str("cifar10:%s", gz), &d, &st, "cifar10 .gz without zlib")) {
        check(st == PF_OK && d.n == 10 && cifar_matches(&d, 0, 5, 2, 0), "cifar10 .gz: the same images and labels (%s)",
              st ? pf_last_error() : "ok");
        pf_dataset_free(&d);
    }

    st = pf_dataset_load(tmp_str("cifar100:%s", r100), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.n == 4 && d.classes == 100 && cifar_matches(&d, 0, 1, 4, 1),
          "cifar100 raw: train.bin, fine labels, HWC pixels (%s)", st ? pf_last_error() : "ok");
    check(st == PF_OK && class_name_is(&d, 0, "apple") && class_name_is(&d, 99, "worm"),
          "cifar100 without fine_label_names.txt: the standard fine names");
    pf_dataset_free(&d);
    {
        tbuf b = {0, 0, 0};
        int i;
        char line[32];
        for (i = 0; i < 100; i++) { snprintf(line, sizeof line, "fine%d\n", i); tb_add(&b, line, strlen(line)); }
        write_file(tmp_path("c100_raw/fine_label_names.txt"), b.p, b.n);
        free(b.p);
    }
    st = pf_dataset_load(tmp_str("cifar100:%s@test", r100), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.n == 6 && cifar_matches(&d, 5, 1, 6, 1) && class_name_is(&d, 42, "fine42"),
          "cifar100 @test: test.bin, names from fine_label_names.txt");
    pf_dataset_free(&d);
    if (load_gz(tmp_str("cifar100:%s", g100), &d, &st, "cifar100 .gz without zlib")) {
        check(st == PF_OK && d.n == 4 && cifar_matches(&d, 0, 1, 4, 1), "cifar100 .gz: the same (%s)",
              st ? pf_last_error() : "ok");
        pf_dataset_free(&d);
    }
}

static void test_folder(void) {
    const char *root = mkd(tmp_path("folder")), *empty = mkd(tmp_path("folder_empty")), *odd = mkd(tmp_path("folder_odd"));
    unsigned char a[5 * 6 * 3], b[5 * 6 * 3], g[5 * 6];
    pf_dataset d;
    pf_status st;
    const char *spec;
    int i, ok;
    for (i = 0; i < 5 * 6 * 3; i++) { a[i] = (unsigned char)(i * 7 + 1); b[i] = (unsigned char)(255 - i * 3); }
    for (i = 0; i < 5 * 6; i++) g[i] = (unsigned char)(i * 8);
    mkd(tmp_path("folder/b_shoes"));
    mkd(tmp_path("folder/a_bags"));
    mkd(tmp_path("folder/c_empty_is_not_ok"));
    put_bmp(tmp_path("folder/a_bags/2.bmp"), b, 5, 6);
    put_bmp(tmp_path("folder/a_bags/1.BMP"), a, 5, 6);
    put_png(tmp_path("folder/b_shoes/x.png"), g, 5, 6, 1);
    write_file(tmp_path("folder/b_shoes/notes.txt"), "not an image", 12);
    spec = tmp_str("folder:%s", root);
    st = pf_dataset_load(spec, PF_SPLIT_TRAIN, &d);
#ifdef PF_HAVE_STB
    expect_fail(st, "folder with a class folder without images", tmp_path("folder/c_empty_is_not_ok"));
    rmdir(tmp_path("folder/c_empty_is_not_ok"));
    st = pf_dataset_load(spec, PF_SPLIT_TRAIN, &d);
    ok = st == PF_OK && d.n == 3 && d.h == 5 && d.w == 6 && d.c == 3 && d.classes == 2 &&
         class_name_is(&d, 0, "a_bags") && class_name_is(&d, 1, "b_shoes") && d.labels[0] == 0 && d.labels[1] == 0 &&
         d.labels[2] == 1;
    check(ok, "folder: classes = subfolders sorted, images sorted, .txt skipped, 1.BMP (any case) read (%s)",
          st ? pf_last_error() : "ok");
    for (i = 0; ok && i < 90; i++) ok = d.images[i] == a[i] && d.images[90 + i] == b[i] && d.images[180 + i] == g[i / 3];
    check(ok, "folder: BMP pixels exact (HWC), a gray PNG converted to the first image's 3 channels");
    pf_dataset_free(&d);
    load_fail(tmp_str("folder:%s", empty), "empty folder", empty);
    mkd(tmp_path("folder_odd/k"));
    put_bmp(tmp_path("folder_odd/k/a.bmp"), a, 5, 6);
    put_bmp(tmp_path("folder_odd/k/b.bmp"), a, 6, 5);
    load_fail(tmp_str("folder:%s", odd), "folder with images of two sizes (names the odd one)",
              tmp_path("folder_odd/k/b.bmp"));
    write_file(tmp_path("folder_odd/k/c.png"), "garbage", 7);
    {
        unsigned char *px = NULL;
        int h, w, c;
        st = pf_image_load(tmp_path("folder_odd/k/a.bmp"), &px, &h, &w, &c);
        check(st == PF_OK && h == 5 && w == 6 && c == 3 && !memcmp(px, a, 90), "pf_image_load: BMP 6x5 RGB exact");
        pf_image_free(px);
        pf_guard_biggest = 0;
        st = pf_image_load(tmp_path("folder_odd/k/c.png"), &px, &h, &w, &c);
        expect_fail(st, "pf_image_load of garbage named .png", tmp_path("folder_odd/k/c.png"));
    }
    {   /* found by fuzzing stb_image 2.27: what a hostile header makes it do */
        static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
        tbuf png = {0, 0, 0}, ih = {0, 0, 0};
        unsigned char *px = NULL;
        int h, w, c;
        double t0;
        tb_add(&png, sig, 8);
        tb_be(&ih, 1, 4); tb_be(&ih, 1, 4); tb_byte(&ih, 8, 1); tb_byte(&ih, 0, 1); tb_byte(&ih, 0, 3);
        png_chunk(&png, "IHDR", ih.p, ih.n);
        tb_be(&png, 200u << 20, 4); /* an IDAT that says 200 MiB follow (below the 256 MiB outside an image) */
        tb_add(&png, "IDAT", 4);
        tb_add(&png, "\x78\x01\x01\x02\x00", 5);
        write_file(tmp_path("lying_idat.png"), png.p, png.n);
        pf_guard_biggest = 0;
        st = pf_image_load(tmp_path("lying_idat.png"), &px, &h, &w, &c);
        expect_fail(st, "a 1x1 PNG whose IDAT length says 200 MiB (stb's allocations bounded)", tmp_path("lying_idat.png"));
        check(pf_guard_biggest < ((size_t)2 << 20), "and nothing above 2 MiB was asked for (largest %zu bytes)",
              pf_guard_biggest);
        if (st == PF_OK) pf_image_free(px);
        {   /* stb_image allocates through pf_stbi_malloc (so through PF_MALLOC, counted here) */
            size_t n = 0;
            unsigned char *file = read_file(tmp_path("folder_odd/k/a.bmp"), &n), *img;
            long live = pf_guard_live;
            int iw, ihh, ic;
            img = file ? stbi_load_from_memory(file, (int)n, &iw, &ihh, &ic, 0) : NULL;
            check(img && pf_guard_live == live + 1, "stb_image's allocations go through pf_stbi_malloc (%ld -> %ld live)",
                  live, pf_guard_live);
            if (img) stbi_image_free(img);
            free(file);
        }
        free(png.p); free(ih.p);
        png.p = NULL; png.n = png.cap = 0;
        /* a BMP header declaring 9930 x 16383 pixels (under 16384 a side, 163 M in all) */
        tb_byte(&png, 'B', 1); tb_byte(&png, 'M', 1); tb_le(&png, 300, 4); tb_le(&png, 0, 4); tb_le(&png, 54, 4);
        tb_le(&png, 40, 4); tb_le(&png, 9930, 4); tb_le(&png, 16383, 4); tb_le(&png, 1, 2); tb_le(&png, 24, 2);
        tb_le(&png, 0, 4); tb_le(&png, 0, 4); tb_le(&png, 2835, 4); tb_le(&png, 2835, 4); tb_le(&png, 0, 4); tb_le(&png, 0, 4);
        tb_add(&png, "0123456789012345678901234567890123456789", 40);
        {   /* what the fuzzer found in stb_image (tests/fuzz/findings): each
               read safely, under the sanitizers of make test SAN=1 too */
            static const char *const found[] = {
                "jpeg-fill-bytes-huffman-overflow.jpg", "jpeg-fill-bytes-huffman-overflow-fuzzed.jpg",
                "jpeg-no-dht-uninitialized-huffman.jpg", "jpeg-undefined-huffman-assert.jpg",
                "jpeg-undefined-huffman-shift.jpg"};
            size_t k;
            for (k = 0; k < sizeof found / sizeof found[0]; k++) {
                char fp[256];
                snprintf(fp, sizeof fp, "tests/fuzz/findings/%s", found[k]);
                px = NULL;
                st = pf_image_load(fp, &px, &h, &w, &c);
                check(st == PF_OK ? px != NULL : strstr(pf_last_error(), fp) != NULL,
                      "fuzz finding %s: read safely (%s)", found[k], st == PF_OK ? "decoded" : pf_last_error());
                if (st == PF_OK) pf_image_free(px);
            }
            st = pf_image_load("tests/fuzz/findings/jpeg-fill-bytes-huffman-overflow.jpg", &px, &h, &w, &c);
            check(st == PF_ERR_FORMAT && strstr(pf_last_error(), "Huffman"),
                  "a JPEG behind fill bytes is checked for stb's Huffman bug too (%s)", pf_last_error());
        }
        write_file(tmp_path("huge.bmp"), png.p, png.n);
        t0 = pf_time();
        st = pf_image_load(tmp_path("huge.bmp"), &px, &h, &w, &c);
        check(st == PF_ERR_FORMAT && strstr(pf_last_error(), "PF_IMAGE_MAX_PIXELS") && pf_time() - t0 < 1.0,
              "a BMP declaring 9930x16383 pixels is refused at once, naming PF_IMAGE_MAX_PIXELS (%s)", pf_last_error());
        if (st == PF_OK) pf_image_free(px);
        free(png.p);
    }
#else
    (void)a; (void)b; (void)g; (void)i; (void)ok; (void)empty; (void)odd;
    expect_fail(st, "folder without stb_image", "PF_HAVE_STB");
    if (st == PF_OK) pf_dataset_free(&d);
#endif
}

/* the spec npy:X,Y of two files in the temporary directory */
static const char *npy_spec(const char *x, const char *y) {
    return tmp_str("npy:%s,%s", tmp_path("%s", x), tmp_path("%s", y));
}

static void test_npy(void) {
    unsigned char x[4 * 2 * 3 * 2];
    int64_t y64[4] = {3, 0, 7, 1}, ybig[4] = {3, INT64_MAX, 7, INT64_MIN}, sx4[4] = {4, 2, 3, 2}, sx3[3] = {4, 2, 6}, sy[1] = {4}, sy3[1] = {3}, s2[2] = {4, 12};
    int32_t y32[4] = {1, 1, 0, 2}, yneg[4] = {1, -1, 0, 2};
    unsigned char y8[4] = {9, 8, 7, 6};
    float f[4 * 12];
    pf_dataset d;
    pf_status st;
    int i, ok;
    for (i = 0; i < 48; i++) { x[i] = (unsigned char)(i * 5); f[i] = 0; }
    put_npy(tmp_path("x4.npy"), PF_U8, 4, sx4, x);
    put_npy(tmp_path("x3.npy"), PF_U8, 3, sx3, x);
    put_npy(tmp_path("y64.npy"), PF_I64, 1, sy, y64);
    put_npy(tmp_path("y32.npy"), PF_I32, 1, sy, y32);
    put_npy(tmp_path("y8.npy"), PF_U8, 1, sy, y8);
    put_npy(tmp_path("yneg.npy"), PF_I32, 1, sy, yneg);
    put_npy(tmp_path("ybig.npy"), PF_I64, 1, sy, ybig);
    put_npy(tmp_path("y3.npy"), PF_I64, 1, sy3, y64);
    put_npy(tmp_path("xf.npy"), PF_F32, 4, sx4, f);
    put_npy(tmp_path("x2d.npy"), PF_U8, 2, s2, x);
    put_npy(tmp_path("yf.npy"), PF_F32, 1, sy, f);
    st = pf_dataset_load(npy_spec("x4.npy", "y64.npy"), PF_SPLIT_TRAIN, &d);
    ok = st == PF_OK && d.n == 4 && d.h == 2 && d.w == 3 && d.c == 2 && d.classes == 8 && !memcmp(d.images, x, 48);
    for (i = 0; ok && i < 4; i++) ok = d.labels[i] == y64[i];
    check(ok, "npy: uint8 [4,2,3,2] + int64 labels, classes = max + 1 = 8 (%s)", st ? pf_last_error() : "ok");
    pf_dataset_free(&d);
    st = pf_dataset_load(npy_spec("x3.npy", "y32.npy"), PF_SPLIT_TEST, &d);
    check(st == PF_OK && d.n == 4 && d.h == 2 && d.w == 6 && d.c == 1 && d.classes == 3 && d.labels[3] == 2 &&
          !memcmp(d.images, x, 48), "npy: uint8 [4,2,6] (one channel) + int32 labels");
    pf_dataset_free(&d);
    st = pf_dataset_load(npy_spec("x3.npy", "y8.npy"), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.classes == 10 && d.labels[0] == 9, "npy: uint8 labels");
    pf_dataset_free(&d);
    load_fail(npy_spec("xf.npy", "y64.npy"), "npy images of dtype float32", tmp_path("xf.npy"));
    load_fail(npy_spec("x2d.npy", "y64.npy"), "npy images of rank 2", tmp_path("x2d.npy"));
    load_fail(npy_spec("x4.npy", "y3.npy"), "npy: 3 labels for 4 images", tmp_path("y3.npy"));
    load_fail(npy_spec("x4.npy", "yf.npy"), "npy labels of dtype float32", tmp_path("yf.npy"));
    load_fail(npy_spec("x4.npy", "yneg.npy"), "npy label -1", tmp_path("yneg.npy"));
    /* found by hand: INT64_MAX went through a double and overflowed its conversion back (UBSan) */
    load_fail(npy_spec("x4.npy", "ybig.npy"), "npy label INT64_MAX", tmp_path("ybig.npy"));
    load_fail(tmp_str("npy:%s", tmp_path("x4.npy")), "npy with one file", "npy:");
    load_fail(npy_spec("x4.npy", "missing.npy"), "npy labels file missing", tmp_path("missing.npy"));
}

static void test_sample(void) {
    static const int tr[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5}, te[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    pf_dataset d;
    pf_status st = pf_dataset_load("fmnist:data/fmnist-sample", PF_SPLIT_TRAIN, &d);
    int i, ok;
#ifdef PF_HAVE_ZLIB
    ok = st == PF_OK && d.n == 4000 && d.h == 28 && d.w == 28 && d.c == 1;
    for (i = 0; ok && i < 10; i++) ok = d.labels[i] == tr[i];
    check(ok, "shipped sample fmnist:data/fmnist-sample: 4000 train images 28x28, labels 9 0 0 3 0 2 7 2 5 5 ... (%s)",
          st ? pf_last_error() : "ok");
    pf_dataset_free(&d);
    st = pf_dataset_load("fmnist:data/fmnist-sample@test", PF_SPLIT_TRAIN, &d);
    ok = st == PF_OK && d.n == 1000 && d.h == 28 && d.w == 28;
    for (i = 0; ok && i < 10; i++) ok = d.labels[i] == te[i];
    check(ok, "shipped sample @test: 1000 images, labels 9 2 1 1 6 1 4 6 5 7 ... (%s)", st ? pf_last_error() : "ok");
    pf_dataset_free(&d);
#else
    (void)tr; (void)te; (void)i; (void)ok;
    expect_fail(st, "shipped sample (.gz) without zlib", "PF_HAVE_ZLIB");
#endif
}

/* ---------------------------------------------------------------------- */
/* bad files */

/* IDX files that disagree with their headers or with each other; the
   labels file starts valid, each case breaks one thing, and the files
   are repaired at the end */
static void bad_fmnist(const char *dir, const char *im, const char *lb, tbuf *b, tbuf *l) {
    const char *spec = tmp_str("fmnist:%s", dir);
    idx_labels(l, 0x801, 4, -1);
    write_file(lb, l->p, l->n);

    load_fail(spec, "fmnist: images file missing", "train-images-idx3-ubyte");
    idx_images(b, 0x804, 4, 2, 2, 0); write_file(im, b->p, b->n); b->n = 0;
    load_fail(spec, "fmnist: images with the wrong magic 0x804", im);
    idx_images(b, 0x803, 4, 2, 2, -1); write_file(im, b->p, b->n); b->n = 0;
    load_fail(spec, "fmnist: images truncated by one byte", im);
    idx_images(b, 0x803, 4, 2, 2, 1); write_file(im, b->p, b->n); b->n = 0;
    load_fail(spec, "fmnist: one trailing byte after the images", im);
    write_file(im, "\0\0\x08\x03\0\0", 6);
    load_fail(spec, "fmnist: images header cut short", im);
    idx_images(b, 0x803, 5, 2, 2, 0); write_file(im, b->p, b->n); b->n = 0;
    load_fail(spec, "fmnist: 4 labels for 5 images", lb);
    tb_be(b, 0x803, 4); tb_be(b, 0x7fffffff, 4); tb_be(b, 28, 4); tb_be(b, 28, 4); tb_add(b, "data", 4);
    write_file(im, b->p, b->n); b->n = 0;
    l->n = 0; tb_be(l, 0x801, 4); tb_be(l, 0x7fffffff, 4); tb_add(l, "\1\2\3\4", 4); write_file(lb, l->p, l->n);
    load_fail(spec, "fmnist: header claims 2^31-1 images (no allocation for them)", "bad/train-");
    idx_images(b, 0x803, 4, 0, 2, 0); write_file(im, b->p, b->n); b->n = 0;
    l->n = 0; idx_labels(l, 0x801, 4, -1); write_file(lb, l->p, l->n);
    load_fail(spec, "fmnist: images of 0 rows", im);
    idx_images(b, 0x803, 4, 2, 2, 0); write_file(im, b->p, b->n); b->n = 0;
    l->n = 0; idx_labels(l, 0x803, 4, -1); write_file(lb, l->p, l->n);
    load_fail(spec, "fmnist: labels with the images' magic", lb);
    l->n = 0; idx_labels(l, 0x801, 4, -1); l->n--; write_file(lb, l->p, l->n);
    load_fail(spec, "fmnist: labels truncated", lb);
    l->n = 0; idx_labels(l, 0x801, 4, 2); write_file(lb, l->p, l->n);
    load_fail(spec, "fmnist: label 10", lb);
    l->n = 0; idx_labels(l, 0x801, 4, -1); write_file(lb, l->p, l->n);
    {
        pf_dataset d;
        pf_status st = pf_dataset_load(spec, PF_SPLIT_TRAIN, &d);
        check(st == PF_OK && d.n == 4, "fmnist: the repaired files load (%s)", st ? pf_last_error() : "ok");
        pf_dataset_free(&d);
    }
}

/* gzip: cut, not gzip at all, lying about its size, a bomb */
static void bad_gzip(const char *dir, const char *im, const char *lb, tbuf *b, tbuf *l) {
    const char *spec;

    remove(im);
    spec = tmp_str("fmnist:%s", dir);
    idx_images(b, 0x803, 4, 2, 2, 0);
#ifdef PF_HAVE_ZLIB
    put_gz(tmp_path("bad/train-images-idx3-ubyte.gz"), b->p, b->n, 4);
    load_fail(spec, "gzip with its trailer cut (truncated gzip)", "train-images-idx3-ubyte.gz");
    put_gz(tmp_path("bad/train-images-idx3-ubyte.gz"), b->p, b->n, 20);
    load_fail(spec, "gzip cut inside the data", "train-images-idx3-ubyte.gz");
    write_file(tmp_path("bad/train-images-idx3-ubyte.gz"), "hello, not gzip at all", 22);
    load_fail(spec, "a .gz that is not gzip", "train-images-idx3-ubyte.gz");
    write_file(tmp_path("bad/train-images-idx3-ubyte.gz"), "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff\xff\xff\xff\xff\xff", 18);
    load_fail(spec, "gzip header then garbage deflate data", "train-images-idx3-ubyte.gz");
    b->n = 0; idx_images(b, 0x803, 4, 28, 28, 0); b->p[6] = 0x27; b->p[7] = 0x10; /* count 10000 */
    put_gz(tmp_path("bad/train-images-idx3-ubyte.gz"), b->p, b->n, 0);
    l->n = 0; idx_labels(l, 0x801, 10000, -1); write_file(lb, l->p, l->n);
    load_fail(spec, "gzip'd images: header says 10000, data holds 4", "train-images-idx3-ubyte.gz");
    check(pf_guard_biggest < ((size_t)4 << 20), "... and the biggest allocation was %zu bytes (grows with the data)", pf_guard_biggest);
    {
        const char *c10 = mkd(tmp_path("bomb"));
        size_t n = ((size_t)8 << 20) / 3073 * 3073 + 3073 * 3;
        unsigned char *z = (unsigned char *)calloc(n, 1);
        put_gz(tmp_path("bomb/test_batch.bin.gz"), z, n, 0);
        free(z);
        spec = tmp_str("cifar10:%s@test", c10);
        load_fail(spec, "gzip decompressing to more than PF_DATASET_MAX_BYTES (a bomb)", "test_batch.bin.gz");
        remove(tmp_path("bomb/test_batch.bin.gz"));
    }
#else
    (void)lb; (void)l;
    put_gz(tmp_path("bad/train-images-idx3-ubyte.gz"), b->p, b->n, 0);
    load_fail(spec, "a .gz without zlib", "PF_HAVE_ZLIB");
#endif
    remove(tmp_path("bad/train-images-idx3-ubyte.gz"));
}

/* CIFAR batches that are not whole records, labels out of range, missing batches */
static void bad_cifar(tbuf *b) {
    const char *spec;
    int i;
    const char *c = mkd(tmp_path("c10_bad"));
    write_cifar10(c, 2, "");
    spec = tmp_str("cifar10:%s", c);
    b->n = 0; cifar_file(b, 0, 2, 0); tb_add(b, "12345", 5);
    write_file(tmp_path("c10_bad/data_batch_2.bin"), b->p, b->n);
    load_fail(spec, "cifar10: a batch of 2 records + 5 bytes", "data_batch_2.bin");
#ifdef PF_HAVE_ZLIB
    remove(tmp_path("c10_bad/data_batch_2.bin"));
    put_gz(tmp_path("c10_bad/data_batch_2.bin.gz"), b->p, b->n, 0);
    load_fail(spec, "cifar10: a .gz batch of 2 records + 5 bytes", "data_batch_2.bin.gz");
    remove(tmp_path("c10_bad/data_batch_2.bin.gz"));
#endif
    write_file(tmp_path("c10_bad/data_batch_2.bin"), "", 0);
    load_fail(spec, "cifar10: an empty batch file", "data_batch_2.bin");
    b->n = 0; cifar_file(b, 0, 2, 0); b->p[3073] = 10;
    write_file(tmp_path("c10_bad/data_batch_2.bin"), b->p, b->n);
    load_fail(spec, "cifar10: label 10", "data_batch_2.bin");
    remove(tmp_path("c10_bad/data_batch_2.bin"));
    {   /* the batches that are there: a slice of the set, named */
        pf_dataset d;
        pf_status st = pf_dataset_load(spec, PF_SPLIT_TRAIN, &d);
        check(st == PF_OK && d.n == 8 && strstr(d.name, "4 of 5 training batches") && strstr(d.name, "data_batch_2 missing"),
              "cifar10 with data_batch_2 missing: the 4 others load, and the name says so (%s)",
              st == PF_OK ? d.name : pf_last_error());
        if (st == PF_OK) pf_dataset_free(&d);
        for (i = 1; i <= 5; i++) remove(tmp_path("c10_bad/data_batch_%d.bin", i));
        load_fail(spec, "cifar10 without any training batch", "data_batch_1.bin");
    }
    {
        const char *c1 = mkd(tmp_path("c100_bad"));
        b->n = 0; cifar_file(b, 0, 2, 1); b->p[3074 + 1] = 100;
        write_file(tmp_path("c100_bad/train.bin"), b->p, b->n);
        spec = tmp_str("cifar100:%s", c1);
        load_fail(spec, "cifar100: fine label 100", "train.bin");
        b->n -= 1;
        write_file(tmp_path("c100_bad/train.bin"), b->p, b->n);
        load_fail(spec, "cifar100: not a whole number of 3074-byte records", "train.bin");
        load_fail(tmp_str("cifar100:%s@test", c1), "cifar100: test.bin missing", "test.bin");
    }
}

static void test_bad_files(void) {
    const char *dir = mkd(tmp_path("bad"));
    tbuf b = {0, 0, 0}, l = {0, 0, 0};
    const char *im = tmp_path("bad/train-images-idx3-ubyte"), *lb = tmp_path("bad/train-labels-idx1-ubyte");

    bad_fmnist(dir, im, lb, &b, &l);
    bad_gzip(dir, im, lb, &b, &l);
    bad_cifar(&b);
    free(b.p);
    free(l.p);
}

/* ---------------------------------------------------------------------- */
/* specs */

static void test_specs(void) {
    const char *root = mkd(tmp_path("env")), *fm = mkd(tmp_path("env/fashion-mnist"));
    pf_dataset d;
    pf_status st;
    const char *spec;
    int i, ok, seen[10] = {0};
    write_fmnist(fm, 40, 12, 2, 2, "");
    unsetenv("PARAFORMER_DATA");
    load_fail("fmnist", "bare fmnist with $PARAFORMER_DATA unset", "PARAFORMER_DATA");
    load_fail("cifar100@test", "bare cifar100 with $PARAFORMER_DATA unset", "PARAFORMER_DATA");
    setenv("PARAFORMER_DATA", root, 1);
    st = pf_dataset_load("fmnist@test", PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.n == 12, "bare fmnist@test reads $PARAFORMER_DATA/fashion-mnist (%s)", st ? pf_last_error() : "ok");
    pf_dataset_free(&d);
    load_fail("cifar10", "bare cifar10: the folder under $PARAFORMER_DATA is missing", "cifar-10-batches-bin");
    unsetenv("PARAFORMER_DATA");

    load_fail("mnist:x", "unknown kind", "unknown kind 'mnist'");
    check(err_has("fmnist") && err_has("cifar100") && err_has("folder") && err_has("npy"), "... the message lists the kinds");
    load_fail("", "empty spec", "spec");
    load_fail("fmnist:x@val", "bad @split", "@val");
    check(err_has("@train") && err_has("@test"), "... the message lists the splits");
    load_fail("fmnist:x@", "empty @split", "fmnist:x@");
    load_fail("fmnist:", "empty folder after fmnist:", "fmnist:");
    load_fail("folder", "folder without a folder", "folder");
    load_fail("fmnist:x#classes=", "#classes= empty", "#classes");
    load_fail("fmnist:x#classes=3-1", "#classes=3-1 (reversed range)", "3-1");
    load_fail("fmnist:x#classes=a", "#classes=a", "#classes");
    load_fail("fmnist:x#classes=1,,2", "#classes=1,,2", "1,,2");
    load_fail("fmnist:x#classes=-1", "#classes=-1", "-1");
    load_fail("fmnist:x#limit=0", "#limit=0", "#limit=0");
    load_fail("fmnist:x#limit=abc", "#limit=abc", "#limit=abc");
    load_fail("fmnist:x#limit=5x", "#limit=5x", "#limit=5x");
    load_fail("fmnist:x#shuffle", "unknown option #shuffle", "#shuffle");
    check(err_has("#classes") && err_has("#limit"), "... the message lists the options");
    load_fail(tmp_str("fmnist:%s#classes=12", fm), "#classes=12 for 10 classes", "class 12");

    st = pf_dataset_load(tmp_str("fmnist:%s#classes=1,3-4", fm), PF_SPLIT_TRAIN, &d);
    ok = st == PF_OK && d.classes == 10 && d.n > 0;
    for (i = 0; ok && i < d.n; i++) {
        ok = d.labels[i] == 1 || d.labels[i] == 3 || d.labels[i] == 4;
        seen[d.labels[i]] = 1;
    }
    check(ok && seen[1] && seen[3] && seen[4], "#classes=1,3-4 keeps labels 1,3,4 unchanged (classes still 10), %d images", d.n);
    {   /* the kept images are the originals in order: label (i*7+3)%10 of item i, pixels pix(i, .) */
        int j = 0;
        for (i = 0; ok && i < 40; i++) {
            int lab = (i * 7 + 3) % 10;
            if (lab != 1 && lab != 3 && lab != 4) continue;
            ok = j < d.n && d.labels[j] == lab && d.images[j * 4] == pix(i, 0) && d.images[j * 4 + 3] == pix(i, 3);
            j++;
        }
        check(ok && j == d.n, "... the kept images are the original ones, in order (%d of 40)", j);
    }
    check(st == PF_OK && !strcmp(d.name + strlen(d.name) - strlen("@train#classes=1,3-4"), "@train#classes=1,3-4"),
          "the name puts the split before the options: %s", d.name);
    pf_dataset_free(&d);
    spec = tmp_str("fmnist:%s@train#classes=1,3-4#limit=5", fm);
    st = pf_dataset_load(spec, PF_SPLIT_TEST, &d);
    ok = st == PF_OK && d.n == 5;
    for (i = 0; ok && i < d.n; i++) ok = d.labels[i] == 1 || d.labels[i] == 3 || d.labels[i] == 4;
    check(ok, "#classes then #limit=5: the first 5 of those");
    check(st == PF_OK && !strcmp(d.name, spec), "an explicit split keeps the spec as the name");
    pf_dataset_free(&d);
    st = pf_dataset_load(tmp_str("fmnist:%s#limit=3", fm), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.n == 3 && d.images[4] == pix(1, 0) && d.labels[2] == 7, "#limit=3: the first 3 images");
    pf_dataset_free(&d);
    st = pf_dataset_load(tmp_str("fmnist:%s#limit=1000", fm), PF_SPLIT_TRAIN, &d);
    check(st == PF_OK && d.n == 40, "#limit above n keeps all");
    pf_dataset_free(&d);
}

/* ---------------------------------------------------------------------- */
/* subset, split, stats */

static void test_split_stats(void) {
    pf_dataset d, tr, va, tr2, va2, s;
    int i, ok, idx[3] = {4, 0, 4};
    float mean[PF_MAX_CHANNELS], sd[PF_MAX_CHANNELS];
    make_ds(&d, 101, 2, 1, 1, 7);
    /* image i carries i in its two pixels: pix(i,0) alone is not unique, so encode explicitly */
    for (i = 0; i < 101; i++) { d.images[2 * i] = (unsigned char)i; d.images[2 * i + 1] = (unsigned char)(255 - i); }

    check(pf_dataset_subset(&d, idx, 3, &s) == PF_OK && s.n == 3 && s.images[0] == 4 && s.images[2] == 0 &&
          s.images[4] == 4 && s.labels[0] == 4 && s.classes == 7, "subset {4,0,4}: copies in that order");
    pf_dataset_free(&s);
    idx[1] = 101;
    expect_fail(pf_dataset_subset(&d, idx, 3, &s), "subset index 101 of 101", "101");

    check(pf_dataset_split(&d, 0.2, 1, &tr, &va) == PF_OK && va.n == 20 && tr.n == 81,
          "split 0.2 of 101: 20 val (round(20.2)), 81 train");
    {
        int seen[101] = {0}, inc = 1;
        for (i = 0; i < tr.n; i++) { seen[tr.images[2 * i]]++; if (i && tr.images[2 * i] <= tr.images[2 * i - 2]) inc = 0; }
        for (i = 0; i < va.n; i++) { seen[va.images[2 * i]]++; if (i && va.images[2 * i] <= va.images[2 * i - 2]) inc = 0; }
        for (ok = 1, i = 0; i < 101; i++) ok &= seen[i] == 1;
        check(ok, "the two parts are disjoint and cover every image");
        check(inc, "each part is in the original order");
        for (ok = 1, i = 0; i < tr.n; i++) ok &= tr.labels[i] == tr.images[2 * i] % 7 && tr.images[2 * i + 1] == 255 - tr.images[2 * i];
        check(ok, "labels and pixels travel with their images");
    }
    check(pf_dataset_split(&d, 0.2, 1, &tr2, &va2) == PF_OK && va2.n == va.n && !memcmp(va2.images, va.images, 40) &&
          !memcmp(tr2.images, tr.images, 162), "same seed, same split");
    pf_dataset_free(&tr2); pf_dataset_free(&va2);
    check(pf_dataset_split(&d, 0.2, 2, &tr2, &va2) == PF_OK && va2.n == 20 && memcmp(va2.images, va.images, 40) != 0,
          "another seed, another split");
    pf_dataset_free(&tr2); pf_dataset_free(&va2);
    pf_dataset_free(&tr); pf_dataset_free(&va);
    check(pf_dataset_split(&d, 0.0, 1, &tr, &va) == PF_OK && va.n == 0 && tr.n == 101, "split 0: everything in train");
    pf_dataset_free(&tr); pf_dataset_free(&va);
    check(pf_dataset_split(&d, 1.0, 1, &tr, &va) == PF_OK && va.n == 101 && tr.n == 0, "split 1: everything in val");
    pf_dataset_free(&tr); pf_dataset_free(&va);
    expect_fail(pf_dataset_split(&d, 1.5, 1, &tr, &va), "split fraction 1.5", "1.5");
    pf_dataset_free(&d);

    /* stats: 2x2 pixels, 2 channels: ch0 = 0,255,0,255 (mean .5, std .5), ch1 = 51 (mean .2, std 0) */
    make_ds(&d, 1, 2, 2, 2, 1);
    for (i = 0; i < 4; i++) { d.images[2 * i] = (unsigned char)(i & 1 ? 255 : 0); d.images[2 * i + 1] = 51; }
    pf_dataset_stats(&d, mean, sd);
    check(fabsf(mean[0] - 0.5f) < 1e-7f && fabsf(sd[0] - 0.5f) < 1e-7f && fabsf(mean[1] - 0.2f) < 1e-7f && sd[1] == 0.0f,
          "stats: mean %.6f %.6f, std %.6f %.6f (expected .5 .2, .5 0)", mean[0], mean[1], sd[0], sd[1]);
    pf_dataset_free(&d);
}

/* ---------------------------------------------------------------------- */
/* augmentation and batches */

/* one dataset, config and set of buffers, shared by the batch checks */
typedef struct {
    pf_dataset d;
    pf_config cfg;
    int idx[16];
    size_t per;
    pf_real *x, *x2;
    float *ref;
} batch_env;

/* 20 gray 28x28 images, batched as 32x32 RGB: resize, gray -> RGB and
   mean/std all take part */
static void batch_env_init(batch_env *e) {
    int i;
    make_ds(&e->d, 20, 28, 28, 1, 10);
    memset(&e->cfg, 0, sizeof e->cfg);
    pf_config_resolve(&e->cfg);
    e->cfg.image_size = 32; e->cfg.channels = 3;
    e->cfg.mean[0] = 0.4f; e->cfg.mean[1] = 0.5f; e->cfg.mean[2] = 0.3f;
    e->cfg.std[0] = 0.2f; e->cfg.std[1] = 0.25f; e->cfg.std[2] = 0.3f;
    e->per = 3 * 32 * 32;
    for (i = 0; i < 16; i++) e->idx[i] = (i * 7) % 20;
    e->x = (pf_real *)malloc(16 * e->per * sizeof(pf_real));
    e->x2 = (pf_real *)malloc(16 * e->per * sizeof(pf_real));
    e->ref = (float *)malloc(e->per * sizeof(float));
}

static void batch_env_free(batch_env *e) {
    pf_dataset_free(&e->d);
    free(e->x); free(e->x2); free(e->ref);
}

/* without augmentation: pf_image_to_input exactly (resize 28 -> 32, gray -> RGB, mean/std) */
static void batch_no_aug(batch_env *e) {
    const pf_dataset *d = &e->d;
    const pf_config *cfg = &e->cfg;
    const int *idx = e->idx;
    size_t per = e->per;
    pf_real *x = e->x, *x2 = e->x2;
    float *ref = e->ref;
    pf_augment aug;
    int i, k, ok;

    ok = pf_dataset_batch(d, idx, 16, cfg, NULL, 1, 0, x) == PF_OK;
    for (i = 0; ok && i < 16; i++) {
        pf_image_to_input(d->images + (size_t)idx[i] * 784, 28, 28, 1, cfg, ref);
        for (k = 0; ok && k < (int)per; k++) ok = x[(size_t)i * per + k] == (pf_real)ref[k];
    }
    check(ok, "batch without augmentation == pf_image_to_input of each image, bit for bit");
    memset(&aug, 0, sizeof aug);
    check(pf_dataset_batch(d, idx, 16, cfg, &aug, 1, 0, x2) == PF_OK && !memcmp(x, x2, 16 * per * sizeof(pf_real)),
          "an all-zero pf_augment is no augmentation");
}

/* determinism of the full augmentation */
static void batch_determinism(batch_env *e) {
    const pf_dataset *d = &e->d;
    const pf_config *cfg = &e->cfg;
    const int *idx = e->idx;
    size_t per = e->per;
    pf_real *x = e->x, *x2 = e->x2;
    float *ref = e->ref;
    pf_augment aug;
    unsigned char a8[784];
    int k, ok;

    memset(&aug, 0, sizeof aug);
    aug.crop_pad = 4; aug.flip = 1; aug.randaug_n = 2; aug.randaug_m = 9;
    pf_set_threads(1);
    pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x);
    pf_set_threads(2);
    pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x2);
    check(!memcmp(x, x2, 16 * per * sizeof(pf_real)), "augmented batch: identical for 1 and 2 threads");
    pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x2);
    check(!memcmp(x, x2, 16 * per * sizeof(pf_real)), "augmented batch: rebuilt from the same (seed, counter), identical");
    pf_dataset_batch(d, idx + 3, 13, cfg, &aug, 7, 103, x2);
    check(!memcmp(x + 3 * per, x2, 13 * per * sizeof(pf_real)), "image i depends on (seed, counter + i) only: a resumed batch matches");
    pf_dataset_batch(d, idx, 16, cfg, &aug, 8, 100, x2);
    check(memcmp(x, x2, 16 * per * sizeof(pf_real)) != 0, "another seed, another augmentation");
    pf_augment_image(d->images + (size_t)idx[5] * 784, 28, 28, 1, &aug, 7, 105, a8);
    pf_image_to_input(a8, 28, 28, 1, cfg, ref);
    for (ok = 1, k = 0; ok && k < (int)per; k++) ok = x[5 * per + k] == (pf_real)ref[k];
    check(ok, "pf_augment_image(seed, counter + i) then pf_image_to_input == batch image i");
}

/* Random erasing by the documented draws (docs/design.md §3.5, §3.8),
   computed here from the public generator alone: the stream of image number
   c is mix64(mix64(mix64(seed ^ "augment") ^ c) ^ "erase"); one uniform u,
   erased when u < p; up to 10 tries of area S²·(0.02 + u·(1/3 − 0.02)) and
   ratio exp(log 0.3 + u·(log(1/0.3) − log 0.3)), h = round(sqrt(area·r)),
   w = round(sqrt(area/r)); the first with h < S and w < S: top = next %
   (S−h+1), left = next % (S−w+1), then C·h·w normals (channel, row,
   column). Returns 1 with the rectangle and its values, 0 for no erasing. */
static int erase_ref(uint64_t seed, uint64_t c, double p, int C, int S, int *top, int *left, int *h, int *w,
                     pf_real *vals) {
    pf_rng r = pf_rng_seed(pf_mix64(pf_mix64(pf_mix64(seed ^ 0x6175676d656e74ULL) ^ c) ^ 0x6572617365ULL));
    int t, k;
    if (!(pf_rng_uniform(&r) < p)) return 0;
    for (t = 0; t < 10; t++) {
        double area = (double)S * S * (0.02 + pf_rng_uniform(&r) * (1.0 / 3.0 - 0.02));
        double ratio = exp(log(0.3) + pf_rng_uniform(&r) * (log(1.0 / 0.3) - log(0.3)));
        *h = (int)floor(sqrt(area * ratio) + 0.5);
        *w = (int)floor(sqrt(area / ratio) + 0.5);
        if (*h >= S || *w >= S) continue;
        *top = (int)(pf_rng_next(&r) % (uint64_t)(S - *h + 1));
        *left = (int)(pf_rng_next(&r) % (uint64_t)(S - *w + 1));
        for (k = 0; k < C * *h * *w; k++) vals[k] = (pf_real)(float)pf_rng_normal(&r);
        return 1;
    }
    return 0;
}

/* The values of image `a` that differ from image `b` ([C,S,S]) must be one
   rectangle in every channel: 1 with its size in *h, *w (0 x 0 when none
   differ), 0 when they are not. */
static int diff_rect(const pf_real *a, const pf_real *b, int C, int S, int *h, int *w) {
    int k, y, xx, y0 = S, y1 = -1, x0 = S, x1 = -1, n = 0;
    for (k = 0; k < C; k++)
        for (y = 0; y < S; y++)
            for (xx = 0; xx < S; xx++)
                if (a[((size_t)k * S + y) * S + xx] != b[((size_t)k * S + y) * S + xx]) {
                    n++;
                    if (y < y0) y0 = y;
                    if (y > y1) y1 = y;
                    if (xx < x0) x0 = xx;
                    if (xx > x1) x1 = xx;
                }
    *h = n ? y1 - y0 + 1 : 0;
    *w = n ? x1 - x0 + 1 : 0;
    return n == C * *h * *w;
}

/* random erasing (pf_augment.erase_p) on the normalised model input */
static void batch_erase(batch_env *e) {
    const pf_dataset *d = &e->d;
    const pf_config *cfg = &e->cfg;
    const int *idx = e->idx;
    const int S = 32, C = 3;
    size_t per = e->per;
    pf_real *x = e->x, *x2 = e->x2, *vals = (pf_real *)malloc(per * sizeof(pf_real));
    pf_augment aug;
    unsigned char a8[784], b8[784];
    int i, k, ok, erased = 0, h = 0, w = 0;
    double frac_sum = 0;

    /* (1) the draws by hand, with crop, flip and RandAugment on: only the
       rectangles change, and every other value is the erase-off batch's */
    memset(&aug, 0, sizeof aug);
    aug.crop_pad = 4; aug.flip = 1; aug.randaug_n = 2; aug.randaug_m = 9;
    pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x); /* off */
    aug.erase_p = 0.5f;
    ok = pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x2) == PF_OK;
    for (i = 0; ok && i < 16; i++) {
        int top = 0, left = 0, y, xx, on;
        const pf_real *off = x + (size_t)i * per, *got = x2 + (size_t)i * per;
        on = erase_ref(7, 100 + (uint64_t)i, 0.5, C, S, &top, &left, &h, &w, vals);
        erased += on;
        for (k = 0; ok && k < C; k++)
            for (y = 0; ok && y < S; y++)
                for (xx = 0; ok && xx < S; xx++) {
                    size_t at = ((size_t)k * S + y) * S + xx;
                    int inside = on && y >= top && y < top + h && xx >= left && xx < left + w;
                    ok = inside ? got[at] == vals[((size_t)k * h + (y - top)) * w + (xx - left)] && got[at] != off[at]
                                : got[at] == off[at];
                }
        if (!ok) printf("     (image %d: erased %d, rectangle %dx%d at %d,%d)\n", i, on, h, w, top, left);
    }
    check(ok && erased > 0 && erased < 16,
          "erase p 0.5: the hand-computed rectangles of the documented draws hold exactly the hand-computed normals, "
          "every other value is the erase-off batch's (%d of 16 images erased)", erased);

    /* (2) erase_p 0 draws nothing: the batch is the one without the field */
    aug.erase_p = 0.0f;
    check(pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x2) == PF_OK && !memcmp(x, x2, 16 * per * sizeof(pf_real)),
          "erase p 0: bitwise the batch without erasing");
    memset(&aug, 0, sizeof aug);
    pf_dataset_batch(d, idx, 16, cfg, NULL, 7, 100, x);
    check(pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x2) == PF_OK && !memcmp(x, x2, 16 * per * sizeof(pf_real)),
          "erase p 0 and nothing else: bitwise the batch without augmentation");

    /* (3) erase_p 1 alone: every image of a batch of 8 gets one rectangle
       (all channels) of h, w < S whose area is 0.02..1/3 of the image up to
       the rounding of h and w; their mean fraction is in [0.02, 1/3] */
    aug.erase_p = 1.0f;
    ok = pf_dataset_batch(d, idx, 8, cfg, &aug, 11, 40, x2) == PF_OK;
    for (i = 0; ok && i < 8; i++) {
        double area = (double)S * S;
        ok = diff_rect(x2 + (size_t)i * per, x + (size_t)i * per, C, S, &h, &w) && h > 0 && w > 0 && h < S && w < S &&
             (h + 0.5) * (w + 0.5) >= 0.02 * area && (h - 0.5) * (w - 0.5) <= area / 3.0;
        frac_sum += h * w / area;
        if (!ok) printf("     (image %d: changed area %dx%d)\n", i, h, w);
    }
    check(ok && frac_sum / 8 >= 0.02 && frac_sum / 8 <= 1.0 / 3.0,
          "erase p 1: each of 8 images has one erased rectangle in every channel, of 0.02..1/3 of the image "
          "(mean fraction %.3f)", frac_sum / 8);

    /* (4) the same for any thread count, and for a resumed batch */
    aug.crop_pad = 4; aug.flip = 1; aug.randaug_n = 2; aug.randaug_m = 9; aug.erase_p = 0.5f;
    pf_set_threads(1);
    pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x);
    pf_set_threads(2);
    pf_dataset_batch(d, idx, 16, cfg, &aug, 7, 100, x2);
    check(!memcmp(x, x2, 16 * per * sizeof(pf_real)), "erase p 0.5 with crop, flip, RandAugment: identical for 1 and 2 threads");
    pf_dataset_batch(d, idx + 3, 13, cfg, &aug, 7, 103, x2);
    check(!memcmp(x + 3 * per, x2, 13 * per * sizeof(pf_real)), "erasing of image i depends on (seed, counter + i) only");

    /* the 8-bit augmentation does not erase */
    pf_augment_image(d->images + (size_t)idx[5] * 784, 28, 28, 1, &aug, 7, 105, a8);
    aug.erase_p = 0.0f;
    pf_augment_image(d->images + (size_t)idx[5] * 784, 28, 28, 1, &aug, 7, 105, b8);
    check(!memcmp(a8, b8, sizeof a8), "pf_augment_image is the same with erase p 0.5 and 0 (erasing is on the model input)");

    /* (5) probabilities outside [0, 1] and NaN are refused, everywhere */
    {
        static const float bad[] = {-0.1f, 1.5f};
        pf_train_opts to = pf_train_opts_default();
        memset(&aug, 0, sizeof aug);
        for (k = 0; k < 2; k++) {
            char label[64];
            aug.erase_p = bad[k];
            snprintf(label, sizeof label, "erase p %g", (double)bad[k]);
            expect_fail(pf_dataset_batch(d, idx, 4, cfg, &aug, 1, 0, x), label, "random-erasing probability");
        }
        aug.erase_p = (float)NAN;
        expect_fail(pf_dataset_batch(d, idx, 4, cfg, &aug, 1, 0, x), "erase p NaN", "NaN");
        expect_fail(pf_augment_image(d->images, 28, 28, 1, &aug, 1, 0, a8), "pf_augment_image: erase p NaN", "NaN");
        to.aug.erase_p = 1.5f;
        expect_fail(pf_train_opts_validate(&to), "train options: erase p 1.5", "random-erasing probability");
        to.aug.erase_p = 1.0f;
        check(pf_train_opts_validate(&to) == PF_OK, "train options: erase p 1 accepted");
    }
    free(vals);
}

/* augmentation settings out of range, and an index past the dataset */
static void batch_limits(batch_env *e) {
    const pf_dataset *d = &e->d;
    const pf_config *cfg = &e->cfg;
    int *idx = e->idx;
    pf_real *x = e->x;
    pf_augment aug;

    memset(&aug, 0, sizeof aug);
    aug.randaug_m = 31;
    expect_fail(pf_dataset_batch(d, idx, 4, cfg, &aug, 1, 0, x), "RandAugment magnitude 31", "magnitude");
    memset(&aug, 0, sizeof aug);
    aug.randaug_n = PF_AUG_MAX_OPS + 1;
    expect_fail(pf_dataset_batch(d, idx, 4, cfg, &aug, 1, 0, x), "RandAugment with 17 ops", "op count");
    memset(&aug, 0, sizeof aug);
    aug.crop_pad = PF_AUG_MAX_PAD + 1;
    expect_fail(pf_dataset_batch(d, idx, 4, cfg, &aug, 1, 0, x), "crop padding 65", "crop padding");
    {   /* the trainer's options obey the same limits (one rule) */
        pf_train_opts to = pf_train_opts_default();
        to.aug.crop_pad = PF_AUG_MAX_PAD + 1;
        expect_fail(pf_train_opts_validate(&to), "train options: crop padding 65", "crop padding");
        to.aug.crop_pad = PF_AUG_MAX_PAD;
        check(pf_train_opts_validate(&to) == PF_OK, "train options: crop padding 64 accepted");
    }
    idx[2] = 20;
    expect_fail(pf_dataset_batch(d, idx, 4, cfg, NULL, 1, 0, x), "batch index 20 of 20", "20");
}

/* flip on a 6x5 RGB image with no zero pixel */
static void aug_flip(const unsigned char *src) {
    unsigned char out[6 * 5 * 3];
    pf_augment aug;
    int k, flips = 0, plain = 0;

    memset(&aug, 0, sizeof aug);
    aug.flip = 1;
    for (k = 0; k < 32; k++) {
        int y, xx, c, same = 1, mirror = 1;
        pf_augment_image(src, 6, 5, 3, &aug, 3, (uint64_t)k, out);
        for (y = 0; y < 6; y++)
            for (xx = 0; xx < 5; xx++)
                for (c = 0; c < 3; c++) {
                    same &= out[(y * 5 + xx) * 3 + c] == src[(y * 5 + xx) * 3 + c];
                    mirror &= out[(y * 5 + xx) * 3 + c] == src[(y * 5 + 4 - xx) * 3 + c];
                }
        plain += same;
        flips += mirror;
    }
    check(plain + flips == 32 && plain > 4 && flips > 4, "flip: each output is the image or its mirror (%d / %d of 32)",
          plain, flips);
}

/* is out the 6x5 RGB src shifted by (dy, dx), zero-filled? */
static int is_shifted(const unsigned char *out, const unsigned char *src, int dy, int dx) {
    int y, xx, c, match = 1;
    for (y = 0; y < 6; y++)
        for (xx = 0; xx < 5; xx++)
            for (c = 0; c < 3; c++) {
                int sy = y + dy, sx = xx + dx;
                int v = sy >= 0 && sy < 6 && sx >= 0 && sx < 5 ? src[(sy * 5 + sx) * 3 + c] : 0;
                match &= out[(y * 5 + xx) * 3 + c] == v;
            }
    return match;
}

/* crop on the same image: zero is not one of its pixels, so the padding shows */
static void aug_crop(const unsigned char *src) {
    unsigned char out[6 * 5 * 3];
    pf_augment aug;
    int k, ok = 1, shifted = 0;

    memset(&aug, 0, sizeof aug);
    aug.crop_pad = 2;
    for (k = 0; k < 32; k++) {
        int dy, dx, found = 0;
        pf_augment_image(src, 6, 5, 3, &aug, 3, (uint64_t)k, out);
        for (dy = -2; dy <= 2 && !found; dy++)
            for (dx = -2; dx <= 2 && !found; dx++)
                if (is_shifted(out, src, dy, dx)) { found = 1; shifted += dy || dx; }
        ok &= found;
    }
    check(ok && shifted > 16, "crop with pad 2: every output is the image shifted by (dy, dx) in [-2, 2]^2, zero-filled "
          "(%d of 32 shifted)", shifted);
}

static void aug_randaugment(const unsigned char *src) {
    unsigned char out[6 * 5 * 3], out2[6 * 5 * 3];
    pf_augment aug;
    int k, ok, plain;

    memset(&aug, 0, sizeof aug);
    aug.randaug_n = 2;
    aug.randaug_m = 15;
    for (ok = 1, plain = 0, k = 0; k < 16; k++) {
        pf_augment_image(src, 6, 5, 3, &aug, 11, (uint64_t)k, out);
        pf_augment_image(src, 6, 5, 3, &aug, 11, (uint64_t)k, out2);
        ok &= !memcmp(out, out2, sizeof out);
        plain += !memcmp(out, src, 6 * 5 * 3);
    }
    check(ok, "RandAugment n=2 m=15: the same (seed, counter) gives the same image");
    check(plain <= 2, "RandAugment n=2 m=15 changes the image (%d of 16 unchanged: Identity twice is possible)", plain);
}

static void test_batch(void) {
    batch_env e;
    unsigned char src[6 * 5 * 3];
    int i;

    batch_env_init(&e);
    batch_no_aug(&e);
    batch_determinism(&e);
    batch_erase(&e);
    batch_limits(&e);
    batch_env_free(&e);

    for (i = 0; i < 90; i++) src[i] = (unsigned char)(1 + (i * 53) % 250);
    aug_flip(src);
    aug_crop(src);
    aug_randaugment(src);
}

/* the RandAugment ops one by one on small images, against hand-computed results */
static void test_randaug_ops(void) {
    unsigned char img[16], tmp[16], exp[16];
    int i;
#define SET(...) do { static const unsigned char v_[16] = {__VA_ARGS__}; memcpy(img, v_, 16); } while (0)
#define EXP(...) do { static const unsigned char v_[16] = {__VA_ARGS__}; memcpy(exp, v_, 16); } while (0)
    for (i = 0; i < 16; i++) img[i] = (unsigned char)(i * 16 + 3);
    pf__ra_op(PF__RA_POSTERIZE, 4, img, tmp, 4, 4, 1);
    for (i = 0; i < 16; i++) exp[i] = (unsigned char)((i * 16 + 3) & 0xF0);
    check(!memcmp(img, exp, 16), "Posterize 4 bits keeps the top 4 bits");
    for (i = 0; i < 16; i++) img[i] = (unsigned char)(i * 16 + 3);
    pf__ra_op(PF__RA_SOLARIZE, 128, img, tmp, 4, 4, 1);
    for (i = 0; i < 16; i++) exp[i] = (unsigned char)(i * 16 + 3 >= 128 ? 255 - (i * 16 + 3) : i * 16 + 3);
    check(!memcmp(img, exp, 16), "Solarize 128 inverts the pixels >= 128");
    SET(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    pf__ra_op(PF__RA_TRANSLATE_X, 1.7, img, tmp, 4, 4, 1);
    EXP(0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15);
    check(!memcmp(img, exp, 16), "TranslateX 1.7 (int: 1) shifts right by one, zero fill");
    SET(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    pf__ra_op(PF__RA_TRANSLATE_Y, -1.2, img, tmp, 4, 4, 1);
    EXP(5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 0, 0, 0);
    check(!memcmp(img, exp, 16), "TranslateY -1.2 shifts up by one");
    SET(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    pf__ra_op(PF__RA_ROTATE, 90, img, tmp, 4, 4, 1);
    EXP(4, 8, 12, 16, 3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13);
    check(!memcmp(img, exp, 16), "Rotate 90 turns counter-clockwise (torchvision's direction)");
    SET(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    pf__ra_op(PF__RA_SHEAR_X, 0.3, img, tmp, 4, 4, 1); /* row y samples x + 0.3 (y + 0.5): 0.15 .45 .75 1.05 */
    EXP(1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 0, 14, 15, 16, 0);
    check(!memcmp(img, exp, 16), "ShearX 0.3 about the top-left corner");
    SET(10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160);
    pf__ra_op(PF__RA_AUTOCONTRAST, 0, img, tmp, 4, 4, 1);
    for (i = 0; i < 16; i++) exp[i] = (unsigned char)(float)((float)(i * 10) * (255.0f / 150.0f));
    check(!memcmp(img, exp, 16) && img[0] == 0 && img[15] == 255, "AutoContrast stretches 10..160 to 0..255");
    SET(0, 0, 0, 0, 0, 0, 0, 0, 100, 100, 100, 100, 200, 200, 200, 200);
    pf__ra_op(PF__RA_EQUALIZE, 0, img, tmp, 4, 4, 1); /* step = (8+4)/255 = 0: unchanged */
    EXP(0, 0, 0, 0, 0, 0, 0, 0, 100, 100, 100, 100, 200, 200, 200, 200);
    check(!memcmp(img, exp, 16), "Equalize with fewer than 255 pixels outside the top bin: unchanged (torchvision)");
    {
        unsigned char big[32 * 32], t2[32 * 32];
        int lo = 0, hi = 0;
        for (i = 0; i < 1024; i++) big[i] = (unsigned char)(i < 512 ? 10 : i < 768 ? 20 : 30);
        pf__ra_op(PF__RA_EQUALIZE, 0, big, t2, 32, 32, 1); /* step = 768/255 = 3: lut[20] = (512+1)/3 = 171, lut[30] = (768+1)/3 = 256 -> 255 */
        for (i = 0; i < 1024; i++) { lo += big[i] == 0; hi += big[i] == 255; }
        check(lo == 512 && big[600] == 171 && hi == 256, "Equalize 512x10 256x20 256x30 -> 0, 171, 255");
    }
    SET(100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100);
    pf__ra_op(PF__RA_BRIGHTNESS, -0.5, img, tmp, 4, 4, 1);
    check(img[0] == 50 && img[15] == 50, "Brightness -0.5 halves (%d)", img[0]);
    SET(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 200, 200, 200);
    pf__ra_op(PF__RA_CONTRAST, -0.5, img, tmp, 4, 4, 1); /* mean 50: .5 v + .5 * 50 */
    check(img[0] == 25 && img[15] == 125, "Contrast -0.5 blends halfway to the mean (%d %d)", img[0], img[15]);
    {
        unsigned char rgb[3] = {200, 100, 0}, t3[3];
        pf__ra_op(PF__RA_COLOR, -1.0, rgb, t3, 1, 1, 3); /* gray = (int)(.2989*200 + .587*100) = 118 */
        check(rgb[0] == 118 && rgb[1] == 118 && rgb[2] == 118, "Color -1 gives the gray image (%d %d %d)", rgb[0], rgb[1], rgb[2]);
    }
    SET(0, 0, 0, 0, 0, 130, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    pf__ra_op(PF__RA_SHARPNESS, -1.0, img, tmp, 4, 4, 1); /* the smoothed image: 130*5/13 = 50 at the centre, 10 around */
    EXP(0, 0, 0, 0, 0, 50, 10, 0, 0, 10, 10, 0, 0, 0, 0, 0);
    check(!memcmp(img, exp, 16), "Sharpness -1 gives the 3x3 smoothed image inside, the border unchanged");
#undef SET
#undef EXP
}

/* ---------------------------------------------------------------------- */
/* the public helpers programs use instead of the library's private ones:
   the spec's split, fitting a config, the JSON check, the random stream,
   extensions, atomic writes */

static void test_public_helpers(void) {
    static unsigned char px[2 * 4 * 4] = {0};
    static int labels[2] = {0, 2};
    pf_dataset d;
    pf_config c;
    pf_atomic a;
    pf_rng r;
    uint64_t s = 42;
    size_t at = 0, rest = 0, n;
    int split = -1, same = 1, i;
    unsigned char *back;
    const char *out = tmp_path("atomic.txt"), *tmp = tmp_path("atomic.txt.tmp");
    check(pf_dataset_spec_split("fmnist:D@test#limit=5", PF_SPLIT_TRAIN, &split, &at, &rest) == PF_OK &&
          split == PF_SPLIT_TEST && at == 8 && rest == 13, "spec split: fmnist:D@test#limit=5 is @test at 8, options at 13");
    check(pf_dataset_spec_split("fmnist:/a@b/c", PF_SPLIT_TEST, &split, &at, &rest) == PF_OK && split == PF_SPLIT_TEST &&
          at == 13 && rest == 13, "spec split: the '@' of a path is no split (the default stays)");
    check(pf_dataset_spec_split("cifar10@x@train", PF_SPLIT_TEST, &split, NULL, NULL) == PF_OK && split == PF_SPLIT_TRAIN,
          "spec split: the last '@' is the split");
    check(pf_dataset_spec_split("fmnist@bogus", PF_SPLIT_TRAIN, &split, NULL, NULL) == PF_ERR_ARG &&
          strstr(pf_last_error(), "@bogus"), "spec split: an unknown split is refused, named (%s)", pf_last_error());
    check(pf_dataset_spec_split(NULL, PF_SPLIT_TRAIN, &split, NULL, NULL) == PF_ERR_ARG, "spec split: NULL is refused");

    memset(&d, 0, sizeof d);
    d.n = 2, d.h = 4, d.w = 4, d.c = 1, d.classes = 3, d.images = px, d.labels = labels;
    for (i = 0; i < 16; i++) px[i] = 255;
    memset(&c, 0, sizeof c);
    pf_config_preset(&c, "paraformer");
    check(pf_config_fit(&c, &d, PF_FIT_ALL) == PF_OK && c.image_size == 4 && c.channels == 1 && c.classes == 3 &&
          fabsf(c.mean[0] - 0.5f) < 1e-6f && fabsf(c.std[0] - 0.5f) < 1e-6f,
          "config fit: size 4, 1 channel, 3 classes, mean and std 0.5 from the data");
    d.w = 2, c.image_size = 32;
    check(pf_config_fit(&c, &d, PF_FIT_IMAGE_SIZE) == PF_OK && c.image_size == 32,
          "config fit: a non-square source keeps the asked image size");
    check(pf_config_fit(&c, &d, 64) == PF_ERR_ARG && pf_config_fit(NULL, &d, 1) == PF_ERR_ARG,
          "config fit: unknown parts and NULL are refused");

    check(pf_json_check(" {\"a\": [1, {}]} ", 15, 1) == PF_OK, "JSON check: an object with white space around");
    check(pf_json_check("{\"a\":1} x", 9, 1) == PF_ERR_FORMAT && !strcmp(pf_last_error(), "text after the object"),
          "JSON check: text after the object (%s)", pf_last_error());
    check(pf_json_check("{\"a\":", 5, 1) == PF_ERR_FORMAT, "JSON check: a cut line (%s)", pf_last_error());
    check(pf_json_check("[1]", 3, 1) == PF_ERR_FORMAT && pf_json_check("[1]", 3, 0) == PF_OK,
          "JSON check: an array is a value but not an object");

    r = pf_rng_seed(42);
    for (i = 0; i < 100; i++) same &= pf_rng_next(&r) == pf__next(&s);
    for (i = 0; i < 100; i++) same &= pf_rng_normal(&r) == pf__normal(&s) && pf_rng_uniform(&r) == pf__uniform(&s);
    check(same, "the public random stream draws the library's numbers");

    check(pf_path_has_ext("A.NPY", ".npy") && pf_path_has_ext("x.Jpeg", ".JPEG") && !pf_path_has_ext("npy", ".npy") &&
          !pf_path_has_ext(NULL, ".npy"), "path extensions ignore ASCII case");

    check(pf_atomic_open(&a, out) == PF_OK && fputs("one", a.f) >= 0 && pf_atomic_commit(&a) == PF_OK,
          "atomic write: open, write, commit");
    back = read_file(out, &n);
    check(back && n == 3 && !memcmp(back, "one", 3) && access(tmp, F_OK) != 0, "atomic write: the file, no temporary");
    free(back);
    check(pf_atomic_open(&a, out) == PF_OK && fputs("two", a.f) >= 0, "atomic write: a second write begins");
    pf_atomic_abort(&a);
    back = read_file(out, &n);
    check(back && n == 3 && !memcmp(back, "one", 3) && access(tmp, F_OK) != 0,
          "atomic write: abort leaves the old file and no temporary");
    free(back);
    check(pf_atomic_open(&a, tmp_path("no/such/dir/x")) == PF_ERR_IO && pf_atomic_commit(&a) == PF_ERR_ARG,
          "atomic write: a missing folder fails at open, and there is nothing to commit");
}

/* ---------------------------------------------------------------------- */

int main(void) {
    if (!tmp_init("data")) return test_summary();
    printf("# zlib %s, stb_image %s, %d threads\n",
#ifdef PF_HAVE_ZLIB
           "yes",
#else
           "no",
#endif
#ifdef PF_HAVE_STB
           "yes",
#else
           "no",
#endif
           pf_get_threads());
    test_fmnist();
    test_cifar();
    test_folder();
    test_npy();
    test_sample();
    test_bad_files();
    test_specs();
    test_split_stats();
    test_batch();
    test_randaug_ops();
    test_public_helpers();
    check(pf_guard_live == 0, "no allocation through PF_MALLOC is still live (%ld)", pf_guard_live);
    tmp_done();
    return test_summary();
}

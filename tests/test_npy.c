/* test_npy.c - .npy files through the reader and writer of paraformer.h
   (pf_npy_load, pf_npy_save): round trips, hand-written v1/v2 files, the
   committed fixtures, and hostile, truncated and malformed files.

   Every file is generated here, in a fresh temporary directory (removed at
   the end unless something failed or PF_KEEP_TMP=1). A bad file must be
   refused by the rules of tests/io_util.h: not PF_OK, a pf_last_error()
   that names the file, no single allocation above 64 MiB (the library's
   PF_MALLOC and PF_REALLOC go through tests/pf_alloc_guard.h here), out->data
   left unset, no crash (run it under `make test SAN=1`). At the end no
   allocation made through PF_MALLOC may still be live.

   Good files must round-trip exactly: pf_npy_save -> pf_npy_load for
   f32/u8/i64, hand-written .npy v1/v2, and the committed fixtures. Run from
   the repository root (it reads tests/fixtures). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pf_alloc_guard.h" /* PF_MALLOC & co., counted and capped */

#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#define PF_TEST_FILES
#include "pf_test.h"

#include "io_util.h"

static pf_status read_npy(const char *path, char *note, size_t cap) {
    pf_array a;
    pf_status st;
    memset(&a, 0, sizeof a);
    st = pf_npy_load(path, &a);
    if (st == PF_OK) {
        snprintf(note, cap, "pf_npy_load accepted it (%s, %d dims, %lu bytes)", pf_dtype_name(a.dtype), a.ndim,
                 (unsigned long)a.nbytes);
        pf_array_free(&a);
    } else if (a.data)
        snprintf(note, cap, "pf_npy_load failed but left out->data set");
    return st;
}
static const io_reader READERS[1] = {read_npy};
static const char *const TAGS[1] = {"npy_load"};

/* A malformed .npy file: pf_npy_load refuses it. */
static void bad_npy(const char *label, const char *name, const void *bytes, size_t n) {
    refused_by(READERS, TAGS, 1, label, name, bytes, n);
}
static void bad_npy_buf(const char *label, const char *name, tbuf b) {
    bad_npy(label, name, b.p, b.n);
    tb_free(&b);
}

/* Every file name in dir, to see that writers leave no temporary behind. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* writes a hand-made .npy file NAME (npy_bytes) and loads it into *b */
static pf_status npy_write_load(const char *name, int major, const char *dict, const void *data, size_t dlen,
                                pf_array *b) {
    tbuf t = npy_bytes(major, dict, data, dlen);
    const char *path = tmp_path("%s", name);
    write_file(path, t.p, t.n);
    tb_free(&t);
    memset(b, 0, sizeof *b);
    return pf_npy_load(path, b);
}

/* shared by the round trip and the failed save; -0 and a tiny value must
   come back bit for bit */
static float g_f32[6] = {1.5f, -2.0f, 0.25f, 3.0f, -0.0f, 1e-30f};

/* pf_npy_save -> pf_npy_load for f32/u8/i64, and a saved file laid out
   the way numpy expects */
static void npy_round_trips(void) {
    unsigned char u[15];
    int64_t l[4] = {0, -5, (int64_t)1 << 40, INT64_MIN};
    struct {
        pf_dtype dtype;
        int ndim;
        int64_t shape[3];
        void *data;
        size_t nbytes;
        const char *name;
    } rt[3];
    const char *sub = tmp_path("npy_save");
    int i, k, before;
    pf_status st;

    for (i = 0; i < 15; i++) u[i] = (unsigned char)(i * 17);
    rt[0].dtype = PF_F32, rt[0].ndim = 3, rt[0].shape[0] = 1, rt[0].shape[1] = 2, rt[0].shape[2] = 3;
    rt[0].data = g_f32, rt[0].nbytes = sizeof g_f32, rt[0].name = "f32 [1,2,3]";
    rt[1].dtype = PF_U8, rt[1].ndim = 2, rt[1].shape[0] = 3, rt[1].shape[1] = 5;
    rt[1].data = u, rt[1].nbytes = sizeof u, rt[1].name = "u8 [3,5]";
    rt[2].dtype = PF_I64, rt[2].ndim = 1, rt[2].shape[0] = 4;
    rt[2].data = l, rt[2].nbytes = sizeof l, rt[2].name = "i64 [4]";

    mkdir(sub, 0755);
    before = count_entries(sub);
    for (k = 0; k < 3; k++) {
        pf_array a, b;
        const char *path = tmp_path("npy_save/rt_%d.npy", k);
        unsigned char *raw;
        size_t n, hl;
        int ok;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        a.dtype = rt[k].dtype;
        a.ndim = rt[k].ndim;
        for (i = 0; i < a.ndim; i++) a.shape[i] = rt[k].shape[i];
        a.data = rt[k].data;
        a.nbytes = rt[k].nbytes;
        st = pf_npy_save(path, &a);
        if (st == PF_OK) st = pf_npy_load(path, &b);
        ok = st == PF_OK && b.dtype == a.dtype && b.ndim == a.ndim && b.nbytes == a.nbytes &&
             !memcmp(b.data, a.data, a.nbytes) && pf_array_numel(&b) == a.nbytes / pf_dtype_size(a.dtype);
        for (i = 0; ok && i < a.ndim; i++) ok = b.shape[i] == a.shape[i];
        check(ok, "npy        save -> load %s: same dtype, shape and bytes%s%s", rt[k].name, st ? ": " : "",
              st ? pf_last_error() : "");
        if (st == PF_OK) pf_array_free(&b);
        /* what numpy needs: magic, v1.0, header padded to 64 bytes ending in '\n' */
        raw = read_file(path, &n);
        hl = raw && n > 10 ? (size_t)raw[8] | (size_t)raw[9] << 8 : 0;
        ok = raw && n > 10 && !memcmp(raw, "\x93NUMPY\x01\x00", 8) && (10 + hl) % 64 == 0 && 10 + hl <= n &&
             raw[10 + hl - 1] == '\n' && n - 10 - hl == a.nbytes;
        check(ok, "npy        saved %s is a v1.0 file numpy reads (64-byte aligned header, newline)", rt[k].name);
        free(raw);
    }
    check(count_entries(sub) == before + 3, "npy        save leaves no temporary file behind (%d files)",
          count_entries(sub) - before);
}

/* written by hand: v1, v2, keys in another order, 1-d with trailing comma */
static void npy_hand_written(void) {
    static const struct {
        int major;
        const char *dict, *label;
        pf_dtype dtype;
        int ndim;
        int64_t d0, d1;
    } hand[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "v1.0 <f4 (2, 3)", PF_F32, 2, 2, 3},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", "v2.0 <f4 (6,)", PF_F32, 1, 6, 0},
        {1, "{'shape': (3, 2), 'descr': '<f4', 'fortran_order': False}", "v1.0 keys reordered", PF_F32, 2, 3, 2},
        {1, "{'descr': '|u1', 'fortran_order': False, 'shape': (24,), }", "v1.0 |u1 (24,)", PF_U8, 1, 24, 0},
        {1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", "v1.0 <i4 (2, 3)", PF_I32, 2, 2, 3},
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", "v1.0 <f8 (3,)", PF_F64, 1, 3, 0},
        {1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", "v1.0 <i8 (3,)", PF_I64, 1, 3, 0},
    };
    pf_status st;
    int k;

    for (k = 0; k < (int)(sizeof hand / sizeof hand[0]); k++) {
        char name[32];
        pf_array b;
        int ok;
        snprintf(name, sizeof name, "npy_hand_%d.npy", k);
        st = npy_write_load(name, hand[k].major, hand[k].dict, g_base_data, 24, &b);
        ok = st == PF_OK && b.dtype == hand[k].dtype && b.ndim == hand[k].ndim && b.shape[0] == hand[k].d0 &&
             (b.ndim < 2 || b.shape[1] == hand[k].d1) && b.nbytes == 24 && !memcmp(b.data, g_base_data, 24);
        check(ok, "npy        hand-written %s%s%s", hand[k].label, st ? ": " : "", st ? pf_last_error() : "");
        if (st == PF_OK) pf_array_free(&b);
    }
}

/* a scalar, shape (), and an empty array, shape (0, 3): valid numpy files */
static void npy_scalar_empty(void) {
    pf_array b;
    int ok;
    pf_status st;

    st = npy_write_load("npy_scalar.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                        g_base_data + 5, 4, &b);
    ok = st == PF_OK && b.ndim == 0 && pf_array_numel(&b) == 1 && b.nbytes == 4 && ((float *)b.data)[0] == 5.0f;
    check(ok, "npy        hand-written scalar, shape ()%s%s", st ? ": " : "", st ? pf_last_error() : "");
    if (st == PF_OK) pf_array_free(&b);
    st = npy_write_load("npy_empty_array.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }",
                        NULL, 0, &b);
    ok = st == PF_OK && b.ndim == 2 && b.shape[0] == 0 && b.shape[1] == 3 && pf_array_numel(&b) == 0;
    check(ok, "npy        hand-written empty array, shape (0, 3)%s%s", st ? ": " : "", st ? pf_last_error() : "");
    if (st == PF_OK) pf_array_free(&b);
}

/* the committed fixtures, written by numpy */
static void npy_fixtures(void) {
    static const struct {
        const char *path;
        pf_dtype dtype;
        int ndim;
        int64_t s[4];
    } fx[] = {
        {"tests/fixtures/torch_input.npy", PF_F32, 4, {5, 3, 16, 16}},
        {"tests/fixtures/torch_input_u8.npy", PF_U8, 4, {5, 16, 16, 3}},
        {"tests/fixtures/torch_logits.npy", PF_F64, 2, {5, 7, 0, 0}},
    };
    pf_status st;
    int i, k;

    for (k = 0; k < 3; k++) {
        pf_array b;
        int ok;
        memset(&b, 0, sizeof b);
        st = pf_npy_load(fx[k].path, &b);
        ok = st == PF_OK && b.dtype == fx[k].dtype && b.ndim == fx[k].ndim;
        for (i = 0; ok && i < fx[k].ndim; i++) ok = b.shape[i] == fx[k].s[i];
        check(ok, "npy        fixture %s (%s)%s%s", fx[k].path, pf_dtype_name(fx[k].dtype), st ? ": " : "",
              st ? pf_last_error() : "");
        if (st == PF_OK) pf_array_free(&b);
    }
}

/* writing into a missing directory fails and names the path */
static void npy_save_missing_dir(void) {
    pf_array a;
    const char *nodir = tmp_path("no_such_dir/x.npy");
    pf_status st;
    memset(&a, 0, sizeof a);
    a.dtype = PF_F32;
    a.ndim = 1;
    a.shape[0] = 6;
    a.data = g_f32;
    a.nbytes = sizeof g_f32;
    clear_error();
    st = pf_npy_save(nodir, &a);
    check(st != PF_OK && strstr(pf_last_error(), nodir) != NULL, "npy        save into a missing directory: %s: %s",
          pf_status_name(st), pf_last_error());
}

static void test_npy_good(void) {
    npy_round_trips();
    npy_hand_written();
    npy_scalar_empty();
    npy_fixtures();
    npy_save_missing_dir();
}

/* magic, v1.0, the true header length, a random header */
static void npy_preamble(unsigned char *buf, size_t len, int brace) {
    if (len < 10) return;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)((len - 10) & 0xff);
    buf[9] = (unsigned char)((len - 10) >> 8);
    if (brace && len > 12) buf[10] = '{';
}

static const char *const NPY_F4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

/* magic, version and header length */
static void npy_bad_preamble(void) {
    unsigned char data[64] = {0};
    tbuf b;

    bad_npy("empty file", "npy_empty.npy", "", 0);
    bad_npy("5 bytes", "npy_5bytes.npy", "\x93NUMP", 5);
    bad_npy("magic and version only", "npy_magic_only.npy", "\x93NUMPY\x01\x00", 8);
    bad_npy("magic, version, half a length", "npy_half_len.npy", "\x93NUMPY\x01\x00\x40", 9);
    b = npy_bytes(1, NPY_F4, data, 24);
    b.p[5] = 'Z';
    bad_npy_buf("wrong magic \\x93NUMPZ", "npy_bad_magic.npy", b);
    bad_npy("a zip file (.npz)", "npy_zip.npy", "PK\x03\x04\x14\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
    b = npy_bytes(1, NPY_F4, data, 24);
    b.p[6] = 4;
    bad_npy_buf("version 4.0", "npy_version4.npy", b);
    b = npy_bytes(1, NPY_F4, data, 24);
    b.n = 10 + 30;
    bad_npy_buf("truncated inside the header", "npy_trunc_header.npy", b);
    b = npy_bytes(1, NPY_F4, data, 24);
    b.p[8] = 0xe8, b.p[9] = 0x03; /* header length 1000 */
    bad_npy_buf("header length past the end", "npy_hlen_past_end.npy", b);
    b = npy_bytes(2, NPY_F4, data, 24);
    b.p[8] = 0xff, b.p[9] = 0xff, b.p[10] = 0xff, b.p[11] = 0x7f; /* v2: 2 GiB header claimed */
    bad_npy_buf("v2 header length 2^31-1, small file", "npy_hlen_2e31.npy", b);
    b = npy_bytes(1, NPY_F4, data, 24);
    b.p[8] = 0, b.p[9] = 0;
    bad_npy_buf("header length 0", "npy_hlen0.npy", b);
}

/* the header dict: dtypes, shapes and syntax pf_npy_load does not take */
static void npy_bad_dicts(void) {
    static const struct {
        const char *label, *name, *dict;
        size_t dlen;
    } cases[] = {
        {"descr '>f4' (big endian)", "npy_big_endian", "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
         24},
        {"descr '<c8' (complex)", "npy_complex", "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", 24},
        {"descr '<U4' (unicode)", "npy_unicode", "{'descr': '<U4', 'fortran_order': False, 'shape': (2,), }", 32},
        {"descr '|O' (objects)", "npy_object", "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", 24},
        {"descr structured [('a','<f4')]", "npy_structured",
         "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", 24},
        {"descr 'float32' (no byte order)", "npy_descr_word",
         "{'descr': 'float32', 'fortran_order': False, 'shape': (6,), }", 24},
        {"fortran_order True", "npy_fortran", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24},
        {"data too short (23 of 24 B)", "npy_short", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
         23},
        {"data too long (28 of 24 B)", "npy_long", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28},
        {"shape (2**62, 2**62), no data", "npy_shape_overflow",
         "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", 0},
        {"shape (2**62,) <f4: bytes wrap to 0", "npy_bytes_wrap",
         "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }", 0},
        {"shape (2**40,) with 24 B", "npy_shape_large",
         "{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776,), }", 24},
        {"shape dim 10**20", "npy_shape_1e20",
         "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000000000000,), }", 24},
        {"shape (-1, 6)", "npy_shape_negative", "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, -6), }",
         24},
        {"shape with 9 dims", "npy_shape_9dims",
         "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 2, 3), }", 24},
        {"shape (2.5,)", "npy_shape_float", "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,), }", 24},
        {"shape not a tuple", "npy_shape_int", "{'descr': '<f4', 'fortran_order': False, 'shape': 6, }", 24},
        {"missing shape", "npy_no_shape", "{'descr': '<f4', 'fortran_order': False, }", 24},
        {"missing descr", "npy_no_descr", "{'fortran_order': False, 'shape': (2, 3), }", 24},
        {"header is a list", "npy_list", "[1, 2, 3]", 24},
        {"header is empty", "npy_header_blank", "", 24},
        {"unterminated dict", "npy_unterminated", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", 24},
        {"unterminated string", "npy_unterminated_str", "{'descr: '<f4', 'fortran_order': False, 'shape': (2, 3), }",
         24},
        {"unterminated tuple", "npy_unterminated_tuple", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3",
         24},
    };
    unsigned char data[64] = {0};
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s.npy", cases[i].name);
        bad_npy_buf(cases[i].label, name, npy_bytes(1, cases[i].dict, data, cases[i].dlen));
    }
}

/* a NUL byte, which a C-string parser would stop at, and deep nesting */
static void npy_bad_nesting(void) {
    unsigned char data[64] = {0};

    {   /* a NUL byte in the header, before a valid-looking rest */
        tbuf t = {NULL, 0, 0};
        static const char d[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\0, 'x': ";
        size_t hl = 118; /* 10 + 118 = 128 */
        tb_add(&t, "\x93NUMPY\x01\x00", 8);
        tb_le(&t, hl, 2);
        tb_add(&t, d, sizeof d - 1);
        tb_byte(&t, ' ', hl - (sizeof d - 1) - 1);
        tb_byte(&t, '\n', 1);
        tb_add(&t, data, 24);
        bad_npy_buf("NUL byte inside the header", "npy_header_nul.npy", t);
    }
    {   /* 10000 nested '(' in the shape */
        tbuf d = {NULL, 0, 0};
        tb_str(&d, "{'descr': '<f4', 'fortran_order': False, 'shape': ");
        tb_byte(&d, '(', 10000);
        tb_str(&d, "6");
        tb_byte(&d, ')', 10000);
        tb_str(&d, ", }");
        bad_npy_buf("10000 nested '(' in the shape (v2)", "npy_deep.npy", npy_bytes(2, (const char *)d.p, data, 24));
        tb_free(&d);
    }
}

/* random bytes, random bytes after a valid preamble, byte flips */
static void npy_bad_random(void) {
    unsigned char data[64] = {0};
    tbuf b;
    int bad = random_files(777, "npy_random", "npy", npy_preamble, READERS, TAGS, 1), accepted = 0, refused = 0;
    check(bad == 0, "npy_load: 160 random files (seed 777, 0..4 KiB; 40 with a valid preamble) refused");
    b = npy_bytes(1, NPY_F4, data, 24);
    bad = flip_files(b.p, b.n, 0, b.n - 24, "{}()[]',:0123456789-<>|fiuc TrueFalse\x01\xff", "npy_flip", "npy",
                     read_npy, "npy_load", &refused, &accepted);
    tb_free(&b);
    check(bad == 0, "npy_load: 200 files with 1-4 bytes of the preamble/header changed: no crash, every refusal "
                    "names the file (%d refused, %d still valid)",
          refused, accepted);
}

static void npy_bad_missing(void) {
    char why[1024];
    const char *missing = tmp_path("no_such_file.npy");
    check(refuses(read_npy, missing, why, sizeof why), "npy_load   missing file: %s", why);
    check(refuses(read_npy, tmp_dir, why, sizeof why), "npy_load   a directory: %s", why);
}

static void test_npy_bad(void) {
    npy_bad_preamble();
    npy_bad_dicts();
    npy_bad_nesting();
    npy_bad_random();
    npy_bad_missing();
}

/* ---------------------------------------------------------------------- */

int main(void) {
    if (!tmp_init("npy")) return test_summary();
    test_npy_good();
    test_npy_bad();
    check(pf_guard_live == 0, "every allocation made through PF_MALLOC was freed (%ld live)", pf_guard_live);
    tmp_done();
    return test_summary();
}

/* test_safetensors.c - hostile, truncated and malformed safetensors files
   through the readers of paraformer.h (pf_st_open, pf_model_load), and round
   trips through its writers (pf_st_write, pf_model_save).

   Every bad file is generated here, in a fresh temporary directory (removed
   at the end unless something failed or PF_KEEP_TMP=1), and must be refused
   by the rules of tests/io_util.h: not PF_OK, a pf_last_error() that names
   the file, no single allocation above 64 MiB (the library's PF_MALLOC and
   PF_REALLOC go through tests/pf_alloc_guard.h here: a reader must check
   sizes against the file before it allocates), no crash (run it under `make
   test SAN=1`). At the end no allocation made through PF_MALLOC may still be
   live.

   Good files must round-trip exactly: pf_model_save -> pf_model_load,
   hand-written F32/F64/F16/BF16 checkpoints and the committed PyTorch
   fixture; F16 and BF16 are checked against hand-encoded bit patterns of
   known values. Run from the repository root (it reads tests/fixtures). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pf_alloc_guard.h" /* PF_MALLOC & co., counted and capped */

#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#define PF_TEST_FILES
#include "pf_test.h"

#include "io_util.h"

/* safetensors bytes: 8-byte little-endian header length, header, data. */
static tbuf st_bytes_len(uint64_t hlen, const char *json, size_t json_len, const void *data, size_t dlen) {
    tbuf b = {NULL, 0, 0};
    tb_le(&b, hlen, 8);
    tb_add(&b, json, json_len);
    tb_add(&b, data, dlen);
    return b;
}
static tbuf st_bytes(const char *json, const void *data, size_t dlen) {
    return st_bytes_len(strlen(json), json, strlen(json), data, dlen);
}

/* ---------------------------------------------------------------------- */
/* the two readers, and malformed files through both */

static pf_status read_st(const char *path, char *note, size_t cap) {
    pf_st_file *f = NULL;
    pf_status st = pf_st_open(path, &f);
    if (st == PF_OK) {
        snprintf(note, cap, "pf_st_open accepted it (%d tensors)", f ? f->n : -1);
        pf_st_close(f);
    } else if (f)
        snprintf(note, cap, "pf_st_open failed but set *out");
    return st;
}
static pf_status read_model(const char *path, char *note, size_t cap) {
    pf_model *m = NULL;
    pf_status st = pf_model_load(path, &m);
    if (st == PF_OK) {
        snprintf(note, cap, "pf_model_load accepted it (%lu parameters)", m ? (unsigned long)m->n_params : 0ul);
        pf_model_free(m);
    } else if (m)
        snprintf(note, cap, "pf_model_load failed but set *out");
    return st;
}
static const io_reader READERS[2] = {read_st, read_model};
static const char *const TAGS[2] = {"st_open", "model_load"};

/* A malformed safetensors file: pf_st_open and pf_model_load both refuse. */
static void bad_st(const char *label, const char *name, const void *bytes, size_t n) {
    refused_by(READERS, TAGS, 2, label, name, bytes, n);
}
static void bad_st_buf(const char *label, const char *name, tbuf b) {
    bad_st(label, name, b.p, b.n);
    tb_free(&b);
}
/* A well-formed safetensors file that is not a valid model: pf_st_open
   accepts it (so the test is about the model layer), pf_model_load refuses. */
static void bad_model_file(const char *label, const char *path) {
    pf_st_file *f = NULL;
    char why[1024];
    int ok;
    clear_error();
    ok = pf_st_open(path, &f) == PF_OK;
    check(ok, "st_open    %-44s accepted (well-formed safetensors)%s%s", label, ok ? "" : ": ",
          ok ? "" : pf_last_error());
    pf_st_close(f);
    ok = refuses(read_model, path, why, sizeof why);
    check(ok, "model_load %-44s %s", label, why);
}

/* ---------------------------------------------------------------------- */
/* checkpoints written by hand (of the tiny model: tiny_config, 1 channel) */

/* How write_model() departs from a faithful checkpoint. */
typedef struct {
    pf_dtype dtype;         /* of every tensor (F32 unless set) */
    const char *skip;       /* leave this tensor out */
    const char *extra;      /* add this tensor (F32 [4]) */
    const char *grow;       /* this tensor gets dim 0 one larger */
    const char *transpose;  /* this 2-d tensor is written [in, out] */
    const char *int_dtype;  /* this tensor is written as I32 */
    int n_meta;             /* 0: format, format_version, config; -1: none */
    const char *config;     /* config JSON instead of the model's */
    int no_config;          /* metadata without "config" */
} variant;

static uint16_t f16_exact(float v) { /* only for values exactly representable */
    uint32_t u;
    int e;
    memcpy(&u, &v, 4);
    e = (int)((u >> 23) & 0xff);
    if (e == 0) return (uint16_t)((u >> 16) & 0x8000);
    return (uint16_t)(((u >> 16) & 0x8000) | (uint32_t)((e - 127 + 15) << 10) | ((u & 0x7fffff) >> 13));
}

/* Writes the parameters of `m` as a checkpoint through pf_st_write. */
static pf_status write_model(const char *path, const pf_model *m, const variant *v) {
    pf_st_tensor t[512];
    void *bufs[512];
    const char *keys[3] = {"format", "format_version", "config"};
    const char *vals[3];
    char json[4096], ver[16];
    int n = 0, i, d, n_meta;
    pf_status st;

    for (i = 0; i < m->n_specs && n < 500; i++) {
        const pf_tensor_spec *s = &m->specs[i];
        size_t numel = 1, k, esz;
        unsigned char *p;
        if (v->skip && !strcmp(v->skip, s->name)) continue;
        memset(&t[n], 0, sizeof t[n]);
        t[n].name = s->name;
        t[n].dtype = v->dtype;
        t[n].ndim = s->ndim;
        for (d = 0; d < s->ndim; d++) t[n].shape[d] = s->shape[d];
        if (v->grow && !strcmp(v->grow, s->name)) t[n].shape[0]++;
        if (v->transpose && !strcmp(v->transpose, s->name) && s->ndim == 2) {
            t[n].shape[0] = s->shape[1];
            t[n].shape[1] = s->shape[0];
        }
        if (v->int_dtype && !strcmp(v->int_dtype, s->name)) t[n].dtype = PF_I32;
        for (d = 0; d < t[n].ndim; d++) numel *= (size_t)t[n].shape[d];
        esz = pf_dtype_size(t[n].dtype);
        p = (unsigned char *)calloc(numel ? numel : 1, esz);
        if (!p) return PF_ERR_NOMEM;
        for (k = 0; k < numel && k < s->numel; k++) {
            float x = (float)m->params[s->offset + k];
            if (t[n].dtype == PF_F32) memcpy(p + 4 * k, &x, 4);
            else if (t[n].dtype == PF_F64) {
                double y = x;
                memcpy(p + 8 * k, &y, 8);
            } else if (t[n].dtype == PF_F16 || t[n].dtype == PF_BF16) {
                uint32_t u;
                uint16_t h;
                memcpy(&u, &x, 4);
                h = t[n].dtype == PF_F16 ? f16_exact(x) : (uint16_t)(u >> 16);
                p[2 * k] = (unsigned char)(h & 0xff);
                p[2 * k + 1] = (unsigned char)(h >> 8);
            } /* I32: zeros */
        }
        t[n].data = p;
        bufs[n++] = p;
    }
    if (v->extra) {
        float *p = (float *)calloc(4, sizeof(float));
        memset(&t[n], 0, sizeof t[n]);
        t[n].name = v->extra;
        t[n].dtype = PF_F32;
        t[n].ndim = 1;
        t[n].shape[0] = 4;
        t[n].data = p;
        bufs[n++] = p;
    }
    if (v->config) vals[2] = v->config;
    else {
        pf_config_to_json(&m->cfg, json, sizeof json);
        vals[2] = json;
    }
    snprintf(ver, sizeof ver, "%d", PF_FORMAT_VERSION);
    vals[0] = "paraformer";
    vals[1] = ver;
    n_meta = v->n_meta < 0 ? 0 : v->no_config ? 2 : 3;
    st = pf_st_write(path, t, n, keys, vals, n_meta);
    for (i = 0; i < n; i++) free(bufs[i]);
    return st;
}

static int params_equal(const pf_model *a, const pf_model *b) {
    return a->n_params == b->n_params && !memcmp(a->params, b->params, a->n_params * sizeof(pf_real));
}

static int configs_equal(const pf_config *a, const pf_config *b) {
    char ja[4096], jb[4096];
    return pf_config_to_json(a, ja, sizeof ja) > 0 && pf_config_to_json(b, jb, sizeof jb) > 0 && !strcmp(ja, jb);
}

/* ---------------------------------------------------------------------- */
/* safetensors: good files */

static const char *BASE_JSON =
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]}}";

/* writes the safetensors file NAME of json and data, and opens it into *f
   (NULL when it does not open); its path in *path unless path is NULL */
static pf_status st_write_open(const char *name, const char *json, const void *data, size_t dlen, pf_st_file **f,
                               const char **path) {
    tbuf b = st_bytes(json, data, dlen);
    const char *p = tmp_path("%s", name);
    write_file(p, b.p, b.n);
    tb_free(&b);
    if (path) *path = p;
    *f = NULL;
    return pf_st_open(p, f);
}

static void test_st_good(void) {
    pf_st_file *f;
    const char *path;
    pf_status st;
    float got[10];

    /* the base file the malformed ones are made from */
    st = st_write_open("good_base.safetensors", BASE_JSON, g_base_data, sizeof g_base_data, &f, &path);
    check(st == PF_OK && f && f->n == 2, "st_open    base file (2 F32 tensors) opens%s%s", st ? ": " : "",
          st ? pf_last_error() : "");
    if (st == PF_OK) {
        const pf_st_entry *ea = pf_st_find(f, "a"), *eb = pf_st_find(f, "b");
        int ok = ea && eb && ea->ndim == 2 && ea->shape[0] == 2 && ea->shape[1] == 3 && pf_st_numel(ea) == 6 &&
                 eb->dtype == PF_F32 && pf_st_find(f, "c") == NULL;
        check(ok, "st_open    base file: names, shapes, dtypes");
        ok = eb && pf_st_read_f32(f, eb, got) == PF_OK && got[0] == 6 && got[3] == 9;
        if (ok && ea) ok = pf_st_read_raw(f, ea, got) == PF_OK && !memcmp(got, g_base_data, 24);
        check(ok, "st_read    base file: values of a (raw) and b (f32)");
    }
    pf_st_close(f);

    /* metadata, and a header padded with trailing spaces (allowed by the format) */
    {
        const char *json = "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"v \\\"q\\\"\"},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}       ";
        st = st_write_open("good_meta.safetensors", json, g_base_data, 16, &f, &path);
        check(st == PF_OK && pf_st_meta(f, "k") && !strcmp(pf_st_meta(f, "k"), "v \"q\"") &&
                  pf_st_meta(f, "format") && !strcmp(pf_st_meta(f, "format"), "pt") && !pf_st_meta(f, "x") &&
                  f->n == 1,
              "st_open    __metadata__ (escaped quotes) and space padding%s%s", st ? ": " : "",
              st ? pf_last_error() : "");
        pf_st_close(f);
    }

    /* 8 dims is PF_MAX_DIMS: allowed */
    st = st_write_open("good_8dims.safetensors",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,2,3],\"data_offsets\":[0,24]}}",
                       g_base_data, 24, &f, &path);
    check(st == PF_OK && f->n == 1 && f->entries[0].ndim == 8, "st_open    8 dims (PF_MAX_DIMS) accepted%s%s",
          st ? ": " : "", st ? pf_last_error() : "");
    pf_st_close(f);

    /* a 0-rank (scalar) and an empty tensor: both allowed by the format */
    st = st_write_open("good_scalar_empty.safetensors",
                       "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                       "\"z\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[4,4]}}",
                       g_base_data + 3, 4, &f, &path);
    if (st == PF_OK) {
        const pf_st_entry *es = pf_st_find(f, "s"), *ez = pf_st_find(f, "z");
        got[0] = -1;
        check(es && ez && es->ndim == 0 && pf_st_numel(es) == 1 && pf_st_numel(ez) == 0 &&
                  pf_st_read_f32(f, es, got) == PF_OK && got[0] == 3.0f,
              "st_open    scalar shape [] and empty shape [2,0] read back");
    } else
        check(0, "st_open    scalar shape [] and empty shape [2,0] (allowed by the format): %s", pf_last_error());
    pf_st_close(f);

    /* no tensors at all: a valid safetensors file (pf_model_load refuses it below) */
    st = st_write_open("good_empty.safetensors", "{}", NULL, 0, &f, &path);
    check(st == PF_OK && f->n == 0, "st_open    {} (no tensors) accepted%s%s", st ? ": " : "",
          st ? pf_last_error() : "");
    pf_st_close(f);
    bad_model_file("{} (no tensors, no config)", path);
}

/* F16 and BF16 (and integer, F64) conversion through pf_st_read_f32/_f64,
   against hand-encoded bit patterns. */
static void test_st_half(void) {
    static const uint16_t h16[8] = {0x3C00, 0xC100, 0x3558, 0x7BFF, 0x0001, 0x8000, 0x7C00, 0x7E00};
    static const uint16_t b16[8] = {0x3F80, 0xC020, 0x3EAB, 0x7F7F, 0x0001, 0x8000, 0xFF80, 0x7FC0};
    const double inf = HUGE_VAL;
    double eh[8], eb[8];
    const char *json = "{\"h\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,4],\"data_offsets\":[16,32]},"
                       "\"i\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[32,44]},"
                       "\"u\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[44,48]},"
                       "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[48,64]},"
                       "\"l\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[64,72]}}";
    tbuf data = {NULL, 0, 0};
    pf_st_file *f;
    pf_status st;
    int i, which;
    double dd[2] = {0.1, -3.5};

    eh[0] = 1.0, eh[1] = -2.5, eh[2] = 0.333984375, eh[3] = 65504.0, eh[4] = ldexp(1.0, -24), eh[5] = -0.0,
    eh[6] = inf, eh[7] = 0; /* [7] is NaN */
    eb[0] = 1.0, eb[1] = -2.5, eb[2] = 0.333984375, eb[3] = ldexp(2.0 - 1.0 / 128, 127), eb[4] = ldexp(1.0, -133),
    eb[5] = -0.0, eb[6] = -inf, eb[7] = 0; /* [7] is NaN */
    for (i = 0; i < 8; i++) tb_le(&data, h16[i], 2);
    for (i = 0; i < 8; i++) tb_le(&data, b16[i], 2);
    tb_le(&data, (uint32_t)-7, 4);
    tb_le(&data, 0, 4);
    tb_le(&data, 123456, 4);
    tb_byte(&data, 0, 1);
    tb_byte(&data, 1, 1);
    tb_byte(&data, 128, 1);
    tb_byte(&data, 255, 1);
    for (i = 0; i < 2; i++) {
        uint64_t u;
        memcpy(&u, &dd[i], 8);
        tb_le(&data, u, 8);
    }
    tb_le(&data, (uint64_t)-1234567890123ll, 8);
    st = st_write_open("good_half.safetensors", json, data.p, data.n, &f, NULL);
    tb_free(&data);
    check(st == PF_OK, "st_open    F16/BF16/I32/U8/F64/I64 file opens%s%s", st ? ": " : "", st ? pf_last_error() : "");
    if (st != PF_OK) return;
    for (which = 0; which < 4; which++) { /* F16 f32, F16 f64, BF16 f32, BF16 f64 */
        const pf_st_entry *e = pf_st_find(f, which < 2 ? "h" : "b");
        const double *want = which < 2 ? eh : eb;
        float g32[8];
        double g64[8];
        int ok = e != NULL, bad = -1;
        if (ok) ok = (which & 1 ? pf_st_read_f64(f, e, g64) : pf_st_read_f32(f, e, g32)) == PF_OK;
        for (i = 0; ok && i < 8; i++) {
            double g = which & 1 ? g64[i] : (double)g32[i];
            int same = i == 7 ? g != g : (g == want[i] && signbit(g) == signbit(want[i]));
            if (!same) bad = i, ok = 0;
        }
        check(ok, "st_read    %s -> %s: 1, -2.5, 0.333984375, max, min subnormal, -0, inf, nan%s",
              which < 2 ? "F16 " : "BF16", which & 1 ? "f64" : "f32",
              bad >= 0 ? " (first wrong element printed below)" : "");
        if (bad >= 0)
            printf("#   element %d: got %.17g, want %.17g\n", bad, which & 1 ? g64[bad] : (double)g32[bad],
                   want[bad]);
    }
    {
        float g[4];
        double gd[2];
        const pf_st_entry *ei = pf_st_find(f, "i"), *eu = pf_st_find(f, "u"), *ed = pf_st_find(f, "d"),
                          *el = pf_st_find(f, "l");
        int ok = ei && pf_st_read_f32(f, ei, g) == PF_OK && g[0] == -7.0f && g[1] == 0.0f && g[2] == 123456.0f;
        check(ok, "st_read    I32 -> f32");
        ok = eu && pf_st_read_f32(f, eu, g) == PF_OK && g[0] == 0 && g[1] == 1 && g[2] == 128 && g[3] == 255;
        check(ok, "st_read    U8 -> f32");
        ok = ed && pf_st_read_f32(f, ed, g) == PF_OK && g[0] == (float)0.1 && g[1] == -3.5f;
        ok = ok && pf_st_read_f64(f, ed, gd) == PF_OK && gd[0] == 0.1 && gd[1] == -3.5;
        check(ok, "st_read    F64 -> f32 (rounded) and f64 (exact)");
        ok = el && pf_st_read_f64(f, el, gd) == PF_OK && gd[0] == -1234567890123.0;
        check(ok, "st_read    I64 -> f64");
    }
    pf_st_close(f);
}

/* ---------------------------------------------------------------------- */
/* safetensors: malformed files */

/* The 8-byte length field, and headers over the 16 MiB limit. */
static void st_bad_length(void) {
    tbuf b;

    bad_st("empty file (0 bytes)", "st_empty.safetensors", "", 0);
    bad_st("3 bytes (inside the 8-byte length)", "st_3bytes.safetensors", "\x10\0\0", 3);
    bad_st_buf("header length 0", "st_hlen0.safetensors", st_bytes_len(0, "", 0, NULL, 0));
    bad_st_buf("header length 0, data follows", "st_hlen0_data.safetensors",
               st_bytes_len(0, "", 0, g_base_data, sizeof g_base_data));
    bad_st_buf("header length 2^60", "st_hlen_2e60.safetensors",
               st_bytes_len((uint64_t)1 << 60, BASE_JSON, strlen(BASE_JSON), g_base_data, 40));
    bad_st_buf("header length 2^64-1", "st_hlen_max.safetensors",
               st_bytes_len(~(uint64_t)0, BASE_JSON, strlen(BASE_JSON), g_base_data, 40));
    bad_st_buf("header length > file size", "st_hlen_past_end.safetensors",
               st_bytes_len(strlen(BASE_JSON) + 1000, BASE_JSON, strlen(BASE_JSON), g_base_data, 40));
    bad_st_buf("header length 2^31 claimed, small file", "st_hlen_2e31.safetensors",
               st_bytes_len((uint64_t)1 << 31, BASE_JSON, strlen(BASE_JSON), g_base_data, 40));
    bad_st_buf("wrong magic: a .npy file", "st_is_npy.safetensors",
               npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }", g_base_data, 40));
    bad_st_buf("wrong magic: PNG signature", "st_is_png.safetensors",
               st_bytes_len(0x0a1a0a0d474e5089ull, "\0\0\0\rIHDR", 8, NULL, 0));
    {   /* a real 17 MiB header: valid JSON padded with spaces, over the 16 MiB limit */
        size_t hl = (size_t)17 << 20;
        const char *j = "{\"__metadata__\":{\"pad\":\"x\"}}";
        b = st_bytes_len(hl, j, strlen(j), NULL, 0);
        tb_byte(&b, ' ', hl - strlen(j));
        bad_st_buf("header of 17 MiB (limit 16 MiB), real bytes", "st_header_17mib.safetensors", b);
    }
}

typedef struct {
    const char *label, *name, *json;
} st_json_case;

/* Each header over the first 24 bytes of g_base_data (40 where a tensor
   claims [24,40]), so that only the header is at fault. */
static void bad_st_json(const st_json_case *cases, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        char name[128];
        size_t dlen = strstr(cases[i].json, "[24,40]") ? 40 : 24;
        snprintf(name, sizeof name, "%s.safetensors", cases[i].name);
        bad_st_buf(cases[i].label, name, st_bytes(cases[i].json, g_base_data, dlen));
    }
}

/* JSON syntax */
static void st_bad_json_syntax(void) {
    static const st_json_case cases[] = {
        {"unterminated string", "st_json_unterminated_str", "{\"a"},
        {"unterminated object", "st_json_unterminated_obj",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"},
        {"unterminated array", "st_json_unterminated_arr", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3"},
        {"bad escape \\q in a key", "st_json_bad_escape", "{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                                                          "\"data_offsets\":[0,24]}}"},
        {"truncated \\u escape", "st_json_bad_u", "{\"a\\u12\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                                                  "\"data_offsets\":[0,24]}}"},
        {"escape at the very end", "st_json_escape_end", "{\"a\\"},
        {"header is an array", "st_json_array", "[1,2,3]"},
        {"header is a string", "st_json_string", "\"abc\""},
        {"header is a number", "st_json_number", "12345"},
        {"header is null", "st_json_null", "null"},
        {"missing colon", "st_json_no_colon", "{\"a\" {\"dtype\":\"F32\"}}"},
        {"trailing comma", "st_json_trailing_comma",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},}"},
        {"garbage after the object", "st_json_trailing_garbage",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}xyz"},
        {"single quotes", "st_json_single_quotes", "{'a':{'dtype':'F32','shape':[2,3],'data_offsets':[0,24]}}"},
        {"entry is not an object", "st_entry_array", "{\"a\":[1,2,3]}"},
    };
    bad_st_json(cases, sizeof cases / sizeof cases[0]);
}

/* entries: dtype, missing keys, shapes */
static void st_bad_json_entries(void) {
    static const st_json_case cases[] = {
        {"unknown dtype Q7", "st_dtype_q7", "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2,3],\"data_offsets\":[0,24]}}"},
        {"dtype is a number", "st_dtype_number", "{\"a\":{\"dtype\":4,\"shape\":[2,3],\"data_offsets\":[0,24]}}"},
        {"dtype f32 (lower case)", "st_dtype_lower",
         "{\"a\":{\"dtype\":\"f32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}"},
        {"missing dtype", "st_no_dtype", "{\"a\":{\"shape\":[2,3],\"data_offsets\":[0,24]}}"},
        {"missing shape", "st_no_shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,24]}}"},
        {"missing data_offsets", "st_no_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3]}}"},
        {"shape x offsets mismatch [2,4] in 24 B", "st_shape_mismatch",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,24]}}"},
        {"F16 [2,3] in 24 B (dtype size)", "st_dtype_size_mismatch",
         "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}"},
        {"negative dims [-2,-3] (product 6)", "st_shape_negative",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2,-3],\"data_offsets\":[0,24]}}"},
        {"9 dims (> PF_MAX_DIMS)", "st_shape_9dims",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,2,3],\"data_offsets\":[0,24]}}"},
        {"40 dims", "st_shape_40dims",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
         "1,1,1,1,1,1,1,2,3],\"data_offsets\":[0,24]}}"},
        {"shape product wraps to 24 B mod 2^64", "st_shape_wrap",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6,4611686018427387905],\"data_offsets\":[0,24]}}"},
        {"shape [2^62,2^62,2^62]", "st_shape_huge",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904,4611686018427387904],"
         "\"data_offsets\":[0,24]}}"},
        {"shape dim 1e400", "st_shape_1e400", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,24]}}"},
        {"shape dim 2.5", "st_shape_frac", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5,2.4],\"data_offsets\":[0,24]}}"},
        {"shape dim a string", "st_shape_string",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\",3],\"data_offsets\":[0,24]}}"},
        {"shape not an array", "st_shape_scalar", "{\"a\":{\"dtype\":\"F32\",\"shape\":6,\"data_offsets\":[0,24]}}"},
    };
    bad_st_json(cases, sizeof cases / sizeof cases[0]);
}

/* data_offsets, names and __metadata__ */
static void st_bad_json_offsets(void) {
    static const st_json_case cases[] = {
        {"data_offsets past the data [0,400]", "st_offsets_past_end",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}"},
        {"data_offsets begin > end [24,0]", "st_offsets_reversed",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[24,0]}}"},
        {"data_offsets negative [-24,0]", "st_offsets_negative",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[-24,0]}}"},
        {"data_offsets 3 numbers", "st_offsets_three",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24,40]}}"},
        {"data_offsets one number", "st_offsets_one", "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[24]}}"},
        {"data_offsets begin near 2^64", "st_offsets_wrap",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[18446744073709551600,8]}}"},
        {"data_offsets beyond 2^64", "st_offsets_2e64",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[36893488147419103232,36893488147419103256]}}"},
        {"overlapping tensors", "st_offsets_overlap",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}"},
        {"same range twice", "st_offsets_alias",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}"},
        {"duplicate tensor name", "st_duplicate_name",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]}}"},
        {"__metadata__ not an object", "st_meta_string", "{\"__metadata__\":\"x\"}"},
        {"__metadata__ value not a string (str->str map)", "st_meta_number", "{\"__metadata__\":{\"k\":1}}"},
    };
    bad_st_json(cases, sizeof cases / sizeof cases[0]);
}

/* Deep nesting, which a recursive parser must not follow down the stack,
   and a NUL byte that a C-string parser would stop at. */
static void st_bad_nesting(void) {
    tbuf b;
    size_t i;

    /* 10000 '[' and 10000 '{"a":' deep */
    b = st_bytes_len(0, "", 0, NULL, 0);
    b.n = 8;
    tb_str(&b, "{\"__metadata__\":");
    tb_byte(&b, '[', 10000);
    for (i = 0; i < 8; i++) b.p[i] = (unsigned char)(((b.n - 8) >> (8 * i)) & 0xff);
    bad_st_buf("10000 nested '[' (unterminated)", "st_deep_brackets.safetensors", b);
    b = st_bytes_len(0, "", 0, NULL, 0);
    tb_str(&b, "{\"x\":");
    for (i = 0; i < 10000; i++) tb_str(&b, "{\"a\":");
    tb_str(&b, "1");
    tb_byte(&b, '}', 10001);
    for (i = 0; i < 8; i++) b.p[i] = (unsigned char)(((b.n - 8) >> (8 * i)) & 0xff);
    bad_st_buf("10000 nested objects (closed)", "st_deep_objects.safetensors", b);
    /* a NUL byte inside the header */
    {
        static const char j[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}\0{\"b\":1}";
        bad_st_buf("NUL byte inside the header", "st_header_nul.safetensors",
                   st_bytes_len(sizeof j - 1, j, sizeof j - 1, g_base_data, 24));
    }
}

static void st_bad_data(void) {
    tbuf b;

    /* the data section: a hole between tensors, bytes after the last one
       (the format requires the data to be indexed entirely, without holes) */
    bad_st_buf("hole between tensors (must be fully indexed)", "st_hole.safetensors",
               st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[28,40]}}",
                        g_base_data, 40));
    b = st_bytes(BASE_JSON, g_base_data, 40);
    tb_le(&b, 0xdeadbeef, 4);
    bad_st_buf("4 bytes after the last tensor (fully indexed)", "st_trailing_bytes.safetensors", b);
}

static void test_st_bad(void) {
    st_bad_length();
    st_bad_json_syntax();
    st_bad_json_entries();
    st_bad_json_offsets();
    st_bad_nesting();
    st_bad_data();
}

/* Valid model files cut short at several points. */
static void test_st_truncated(const char *model_path) {
    size_t n, hl, cuts[9], k;
    unsigned char *full = read_file(model_path, &n);
    const char *labels[9] = {"cut at 1 byte (inside the length)", "cut at 7 bytes (inside the length)",
                             "cut at 8 bytes (length only)", "cut at 8+10 (inside the header)",
                             "cut at 8+hl/2 (inside the header)", "cut at 8+hl-1 (header minus 1)",
                             "cut at 8+hl (no data)", "cut inside the data", "cut 1 byte short"};
    if (!full || n < 16) {
        check(0, "truncated: cannot read %s back", model_path);
        free(full);
        return;
    }
    for (hl = 0, k = 0; k < 8; k++) hl |= (size_t)full[k] << (8 * k);
    cuts[0] = 1, cuts[1] = 7, cuts[2] = 8, cuts[3] = 18, cuts[4] = 8 + hl / 2, cuts[5] = 8 + hl - 1, cuts[6] = 8 + hl;
    cuts[7] = 8 + hl + (n - 8 - hl) / 2, cuts[8] = n - 1;
    for (k = 0; k < 9; k++) {
        char name[64];
        snprintf(name, sizeof name, "st_trunc_%lu.safetensors", (unsigned long)k);
        bad_st(labels[k], name, full, cuts[k] < n ? cuts[k] : n - 1);
    }
    free(full);
}

/* random bytes after a valid 8-byte header length */
static void st_preamble(unsigned char *buf, size_t len, int brace) {
    size_t k;
    if (len < 8) return;
    for (k = 0; k < 8; k++) buf[k] = (unsigned char)(((len - 8) >> (8 * k)) & 0xff);
    if (brace && len > 9) buf[8] = '{';
}

/* Random bytes, random bytes after a valid length, and byte flips in the
   header of a valid checkpoint. */
static void test_st_random(const char *model_path) {
    size_t n_full, hl, k;
    unsigned char *full = read_file(model_path, &n_full);
    int bad = random_files(12345, "st_random", "safetensors", st_preamble, READERS, TAGS, 2);
    check(bad == 0, "st_open+model_load: 160 random files (seed 12345, 0..4 KiB; 40 with a valid length) refused");

    /* byte flips inside the header of a valid checkpoint: these may stay valid,
       so only "no crash, and every refusal names the file" is required */
    if (full && n_full > 16) {
        int accepted = 0, refused = 0;
        for (hl = 0, k = 0; k < 8; k++) hl |= (size_t)full[k] << (8 * k);
        bad = 0;
        if (hl > 0 && 8 + hl <= n_full)
            bad = flip_files(full, n_full, 8, hl, "{}[]\":,0123456789-.eE \\x\x01\xff", "st_flip", "safetensors",
                             read_model, "model_load", &refused, &accepted);
        check(bad == 0, "model_load: 200 checkpoints with 1-4 bytes of the header changed: no crash, "
                        "every refusal names the file (%d refused, %d still valid)",
              refused, accepted);
    }
    free(full);
}

/* ---------------------------------------------------------------------- */
/* checkpoints: good and bad models */

/* pf_model_save -> pf_model_load, and what the saved file holds; the path
   goes to model_path for the truncation and random tests that follow. */
static void models_round_trip(const pf_model *m, char *model_path, size_t cap) {
    pf_model *back = NULL;
    pf_status st;
    const char *path = tmp_path("model_saved.safetensors");
    pf_st_file *f = NULL;
    const char *fmt = NULL, *c = NULL;
    pf_config pc;
    int ok;

    snprintf(model_path, cap, "%s", path);
    st = pf_model_save(m, path);
    check(st == PF_OK, "model_save tiny model (%lu parameters)%s%s", (unsigned long)m->n_params, st ? ": " : "",
          st ? pf_last_error() : "");
    st = pf_model_load(path, &back);
    ok = st == PF_OK && back && params_equal(m, back) && configs_equal(&m->cfg, &back->cfg) &&
         back->cfg.mean[0] == 0.25f && back->cfg.std[0] == 0.5f;
    check(ok, "model_load round trip: same config (mean/std too) and bit-identical parameters%s%s",
          st ? ": " : "", st ? pf_last_error() : "");
    pf_model_free(back);

    if (pf_st_open(path, &f) == PF_OK) {
        fmt = pf_st_meta(f, "format");
        c = pf_st_meta(f, "config");
    }
    ok = fmt && !strcmp(fmt, "paraformer") && c && pf_st_meta(f, "format_version") &&
         pf_config_from_json(c, strlen(c), &pc) == PF_OK && (pf_config_resolve(&pc), configs_equal(&pc, &m->cfg)) &&
         f->n == m->n_specs;
    check(ok, "model_save metadata: format=paraformer, format_version, config; one tensor per spec");
    pf_st_close(f);
}

/* writes `m` as tmp_path(name) through write_model and loads it into *back
   (left NULL when either step fails) */
static pf_status write_load(const char *name, const pf_model *m, const variant *v, pf_model **back) {
    const char *path = tmp_path("%s", name);
    pf_status st = write_model(path, m, v);
    *back = NULL;
    if (st == PF_OK) st = pf_model_load(path, back);
    return st;
}

/* Checkpoints written by hand through pf_st_write: F32 (checks write_model
   itself), F64, F16, BF16, with training state, with a minimal config. */
static void models_handmade(const pf_model *m, const pf_config *cfg) {
    pf_model *back = NULL, *q = NULL;
    pf_dtype dts[2] = {PF_F16, PF_BF16};
    pf_status st;
    variant v;
    size_t i;
    int t, ok;

    memset(&v, 0, sizeof v);
    v.dtype = PF_F32;
    st = write_load("model_handmade_f32.safetensors", m, &v, &back);
    check(st == PF_OK && params_equal(m, back), "model_load hand-written F32 checkpoint%s%s", st ? ": " : "",
          st ? pf_last_error() : "");
    pf_model_free(back);
    v.dtype = PF_F64;
    st = write_load("model_handmade_f64.safetensors", m, &v, &back);
    check(st == PF_OK && params_equal(m, back), "model_load F64 checkpoint (exact)%s%s", st ? ": " : "",
          st ? pf_last_error() : "");
    pf_model_free(back);
    /* F16 and BF16: parameters set to multiples of 1/8 in [-1, 1], exact in both */
    if (pf_model_create(cfg, &q) == PF_OK) {
        for (i = 0; i < q->n_params; i++) q->params[i] = (pf_real)((int)(i % 17) - 8) * (pf_real)0.125;
        for (t = 0; t < 2; t++) {
            v.dtype = dts[t];
            st = write_load(t ? "model_bf16.safetensors" : "model_f16.safetensors", q, &v, &back);
            check(st == PF_OK && params_equal(q, back), "model_load %s checkpoint (values k/8, exact)%s%s",
                  pf_dtype_name(dts[t]), st ? ": " : "", st ? pf_last_error() : "");
            pf_model_free(back);
        }
    }
    pf_model_free(q);
    v.dtype = PF_F32;
    /* training state (train.*) is ignored by the model loader */
    v.extra = "train.adam_m.head.weight";
    st = write_load("model_train_state.safetensors", m, &v, &back);
    check(st == PF_OK && params_equal(m, back), "model_load ignores train.* tensors%s%s", st ? ": " : "",
          st ? pf_last_error() : "");
    pf_model_free(back);
    v.extra = NULL;
    /* a config with only the required keys (docs/design.md §4): optional ones default */
    v.config = "{\"image_size\":8,\"channels\":1,\"patch_size\":4,\"dim\":8,\"heads\":2,\"mlp_dim\":16,"
               "\"branches\":2,\"depth\":1,\"classes\":3,\"residual\":\"prenorm\",\"aggregate\":\"delta\","
               "\"qkv_bias\":true,\"pool\":\"cls\"}";
    st = write_load("model_minimal_config.safetensors", m, &v, &back);
    ok = st == PF_OK && params_equal(m, back) && back->cfg.mean[0] == 0.0f && back->cfg.dropout == 0.0f &&
         (back->cfg.std[0] == 1.0f || back->cfg.std[0] == 0.0f);
    check(ok, "model_load config with the required keys only (mean 0, std 1, dropout 0)%s%s", st ? ": " : "",
          st ? pf_last_error() : "");
    pf_model_free(back);
}

/* writes `m` with variant v as NAME.safetensors, which pf_model_load must
   refuse (pf_st_open must accept it) */
static void bad_model_variant(const pf_model *m, const variant *v, const char *label, const char *base) {
    char name[128];
    const char *path;
    snprintf(name, sizeof name, "%s.safetensors", base);
    path = tmp_path("%s", name);
    if (write_model(path, m, v) != PF_OK) {
        check(0, "pf_st_write %s: %s", name, pf_last_error());
        return;
    }
    bad_model_file(label, path);
}

/* Well-formed files whose tensors do not fit the model's config. */
static void models_bad_tensors(const pf_model *m) {
    static const struct {
        const char *label, *name;
        int kind; /* 0 skip, 1 extra, 2 grow, 3 transpose, 4 I32, 5 no metadata, 6 no config */
        const char *tensor;
    } cases[] = {
        {"missing tensor head.bias", "model_missing_tensor", 0, "head.bias"},
        {"missing tensor branches.1.0.fc2.weight", "model_missing_branch_tensor", 0, "branches.1.0.fc2.weight"},
        {"unknown extra tensor extra.weight", "model_extra_tensor", 1, "extra.weight"},
        {"tensor of a third branch (2 in config)", "model_extra_branch", 1, "branches.2.0.ln1.weight"},
        {"embed.pos [2, T, D] (dim 0 grown)", "model_shape_pos", 2, "embed.pos"},
        {"head.weight [K+1, D]", "model_shape_head", 2, "head.weight"},
        {"qkv.weight transposed (same numel)", "model_transposed", 3, "branches.0.0.qkv.weight"},
        {"head.weight as I32", "model_dtype_i32", 4, "head.weight"},
        {"no __metadata__ at all", "model_no_metadata", 5, NULL},
        {"__metadata__ without config", "model_no_config", 6, NULL},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        variant v;
        memset(&v, 0, sizeof v);
        v.dtype = PF_F32;
        switch (cases[i].kind) {
        case 0: v.skip = cases[i].tensor; break;
        case 1: v.extra = cases[i].tensor; break;
        case 2: v.grow = cases[i].tensor; break;
        case 3: v.transpose = cases[i].tensor; break;
        case 4: v.int_dtype = cases[i].tensor; break;
        case 5: v.n_meta = -1; break;
        default: v.no_config = 1; break;
        }
        bad_model_variant(m, &v, cases[i].label, cases[i].name);
    }
}

/* The model's own config JSON with one piece replaced (`from` NULL: the
   whole config replaced), each of which pf_model_load must refuse. */
static void models_bad_configs(const pf_model *m) {
    static const struct {
        const char *label, *name, *from, *to;
    } cases[] = {
        {"config: heads 3 does not divide dim 8", "model_cfg_heads", "\"heads\": 2", "\"heads\": 3"},
        {"config: residual \"postnorm\"", "model_cfg_residual", "\"residual\": \"prenorm\"",
         "\"residual\": \"postnorm\""},
        {"config: aggregate \"max\"", "model_cfg_aggregate", "\"aggregate\": \"delta\"", "\"aggregate\": \"max\""},
        {"config: pool \"max\"", "model_cfg_pool", "\"pool\": \"cls\"", "\"pool\": \"max\""},
        {"config: image_size 10 (patch 4)", "model_cfg_image", "\"image_size\": 8", "\"image_size\": 10"},
        {"config: dim -8", "model_cfg_dim_negative", "\"dim\": 8", "\"dim\": -8"},
        {"config: dim 8.5", "model_cfg_dim_frac", "\"dim\": 8", "\"dim\": 8.5"},
        {"config: dim 1e30", "model_cfg_dim_huge", "\"dim\": 8", "\"dim\": 1e30"},
        {"config: qkv_bias \"maybe\"", "model_cfg_qkv_bias", "\"qkv_bias\": true", "\"qkv_bias\": \"maybe\""},
        {"config: qkv_bias false, file has qkv.bias", "model_cfg_qkv_false", "\"qkv_bias\": true",
         "\"qkv_bias\": false"},
        {"config: channels 17 (> PF_MAX_CHANNELS)", "model_cfg_channels", "\"channels\": 1", "\"channels\": 17"},
        {"config: format_version 99", "model_cfg_version", "\"format_version\": 1", "\"format_version\": 99"},
        {"config: dropout 1.5", "model_cfg_dropout", "\"dropout\": 0", "\"dropout\": 1.5"},
        {"config: std -0.5", "model_cfg_std_negative", "\"std\": [0.5]", "\"std\": [-0.5]"},
        {"config: dim 4096 x 16 x 16 (200 GB), tiny file", "model_cfg_enormous", "\"dim\": 8, \"heads\": 2, "
         "\"mlp_dim\": 16, \"branches\": 2, \"depth\": 1", "\"dim\": 4096, \"heads\": 1, \"mlp_dim\": 16384, "
         "\"branches\": 16, \"depth\": 16"},
        {"config: not JSON", "model_cfg_not_json", NULL, "{dim: 8"},
        {"config: a JSON array", "model_cfg_array", NULL, "[8, 1, 4]"},
        {"config: empty string", "model_cfg_empty", NULL, ""},
        {"config: required key missing (heads)", "model_cfg_no_heads", "\"heads\": 2, ", ""},
        /* found by fuzzing: a key longer than the parser's buffer, then a bad
           escape, left the buffer unterminated for the error message */
        {"config: a 70-character key with a bad escape", "model_cfg_long_key", NULL,
         "{\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\\x\": 1}"},
        {"config: a 70-character key, then a bad value", "model_cfg_long_key_value", NULL,
         "{\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\": tru}"},
    };
    char cfgjson[4096], buf[4096];
    size_t i;

    pf_config_to_json(&m->cfg, cfgjson, sizeof cfgjson);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *at = cases[i].from ? strstr(cfgjson, cases[i].from) : NULL;
        variant v;
        if (cases[i].from && !at) {
            check(0, "%s: the saved config has no `%s` to replace: %s", cases[i].label, cases[i].from, cfgjson);
            continue;
        }
        if (at)
            snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - cfgjson), cfgjson, cases[i].to,
                     at + strlen(cases[i].from));
        else
            snprintf(buf, sizeof buf, "%s", cases[i].to);
        memset(&v, 0, sizeof v);
        v.dtype = PF_F32;
        v.config = buf;
        bad_model_variant(m, &v, cases[i].label, cases[i].name);
    }
}

/* the PyTorch-written fixture */
static void models_torch_fixture(void) {
    const char *path = "tests/fixtures/torch_model.safetensors";
    pf_model *back = NULL;
    pf_status st = pf_model_load(path, &back);
    int ok = st == PF_OK && back->cfg.image_size == 16 && back->cfg.channels == 3 && back->cfg.dim == 16 &&
             back->cfg.heads == 2 && back->cfg.branches == 3 && back->cfg.depth == 2 && back->cfg.classes == 7 &&
             back->cfg.residual == PF_NORMED && back->cfg.aggregate == PF_AGG_SUM && back->cfg.no_qkv_bias == 1 &&
             back->cfg.pool == PF_POOL_MEAN && fabs(back->cfg.mean[2] - 0.6) < 1e-6 &&
             fabs(back->cfg.std[1] - 0.25) < 1e-6;
    check(ok, "model_load %s (written by PyTorch): config as documented%s%s", path, st ? ": " : "",
          st ? pf_last_error() : "");
    pf_model_free(back);
}

/* files that are not there, directories, unwritable destinations */
static void models_missing_files(const pf_model *m) {
    char why[1024];
    const char *missing = tmp_path("no_such_file.safetensors");
    const char *nodir = tmp_path("no_such_dir/model.safetensors");
    pf_status st;
    check(refuses(read_st, missing, why, sizeof why), "st_open    missing file: %s", why);
    check(refuses(read_model, missing, why, sizeof why), "model_load missing file: %s", why);
    check(refuses(read_st, tmp_dir, why, sizeof why), "st_open    a directory: %s", why);
    check(refuses(read_model, tmp_dir, why, sizeof why), "model_load a directory: %s", why);
    clear_error();
    st = pf_model_save(m, nodir);
    check(st != PF_OK && strstr(pf_last_error(), nodir) != NULL, "model_save into a missing directory: %s: %s",
          pf_status_name(st), pf_last_error());
}

static void test_models(char *model_path, size_t cap) {
    pf_config cfg;
    pf_model *m = NULL;

    cfg = tiny_config();
    cfg.channels = 1;
    cfg.mean[0] = 0.25f;
    cfg.std[0] = 0.5f;
    if (pf_model_create(&cfg, &m) != PF_OK) {
        check(0, "pf_model_create (tiny): %s", pf_last_error());
        return;
    }
    pf_model_init(m, 7, 0.0f);
    models_round_trip(m, model_path, cap);
    models_handmade(m, &cfg);
    models_bad_tensors(m);
    models_bad_configs(m);
    models_torch_fixture();
    models_missing_files(m);
    pf_model_free(m);
}

/* ---------------------------------------------------------------------- */

int main(void) {
    char model_path[1024] = "";
    if (!tmp_init("safetensors")) return test_summary();
    test_st_good();
    test_st_half();
    test_models(model_path, sizeof model_path);
    test_st_bad();
    if (model_path[0]) {
        test_st_truncated(model_path);
        test_st_random(model_path);
    }
    check(pf_guard_live == 0, "every allocation made through PF_MALLOC was freed (%ld live)", pf_guard_live);
    tmp_done();
    return test_summary();
}

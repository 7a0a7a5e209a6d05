/* make_corpus.c - writes the seed inputs of the fuzz harnesses that the
   program (build/paraformer) does not write itself; tests/fuzz/make_corpus.sh
   runs it after the program has made the models (`make fuzz-corpus`).

       make_corpus OUT FMNIST_DIR MODEL.safetensors [MORE.safetensors ...]

   into OUT/<harness>/ (every file deterministic, all small):
     safetensors/  MODEL rewritten with F16, BF16 and F64 tensors (pf_st_write)
     config/       pf_config_to_json of the presets, the "config" metadata of
                   each .safetensors given, and a lenient hand-written one
     npy/          pf_npy_save of every dtype, a scalar, an empty array, and
                   hand-built version 2.0 and 3.0 headers
     dataset/      fuzz_dataset inputs (see its top comment): IDX raw and
                   gzip, CIFAR-10/100 records raw and gzip with class names,
                   npy pairs, image folders; the images are the first ones of
                   FMNIST_DIR (fmnist:FMNIST_DIR)
     image/        PNG (gray, gray+alpha, RGB, RGBA), JPEG and BMP made from
                   those images with stb_image_write
   Build: with the library's usual flags plus -DPF_HAVE_STB and -lz (the
   Makefile builds build-fuzz/make_corpus). */
#define PARAFORMER_IMPLEMENTATION
#include "../../paraformer.h"
#ifdef PF_HAVE_STB
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_MAX_DIMENSIONS (1 << 14)
#define STBI_MALLOC(sz) pf_stbi_malloc(sz)
#define STBI_REALLOC(p, sz) pf_stbi_realloc(p, sz)
#define STBI_FREE(p) pf_stbi_free(p)
#include <stb/stb_image.h>
#endif
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include <zlib.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *out_dir;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("make_corpus: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}
static void check(pf_status st) {
    if (st != PF_OK) die("%s", pf_last_error());
}

/* a growable byte buffer */
typedef struct buf { unsigned char *p; size_t n, cap; } buf;
static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        if (!(b->p = (unsigned char *)realloc(b->p, b->cap))) die("out of memory");
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_be32(buf *b, uint32_t v) {
    unsigned char c[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    put(b, c, 4);
}
static void put_str(buf *b, const char *s) { put(b, s, strlen(s)); }

static void write_file(const char *sub, const char *name, const void *d, size_t n) {
    char path[1200];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, sub, name);
    if (!(f = fopen(path, "wb")) || (n && fwrite(d, 1, n, f) != n) || fclose(f)) die("cannot write %s", path);
}
static buf read_file(const char *path) {
    buf b = {0, 0, 0};
    unsigned char tmp[4096];
    size_t k;
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot read %s", path);
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) put(&b, tmp, k);
    fclose(f);
    return b;
}

/* gzip (deflate, no name, mtime 0) of d */
static buf gzip(const buf *d) {
    buf out = {0, 0, 0};
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) die("deflateInit2");
    out.cap = deflateBound(&z, (uLong)d->n) + 64;
    out.p = (unsigned char *)malloc(out.cap);
    z.next_in = d->p;
    z.avail_in = (uInt)d->n;
    z.next_out = out.p;
    z.avail_out = (uInt)out.cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) die("deflate");
    out.n = out.cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

/* stb_image_write into a buffer */
static void to_buf(void *ctx, void *d, int n) { put((buf *)ctx, d, (size_t)n); }
static buf image(char kind, const unsigned char *px, int w, int h, int c) {
    buf b = {0, 0, 0};
    int ok = kind == 'p' ? stbi_write_png_to_func(to_buf, &b, w, h, c, px, w * c)
           : kind == 'j' ? stbi_write_jpg_to_func(to_buf, &b, w, h, c, px, 90)
                         : stbi_write_bmp_to_func(to_buf, &b, w, h, c, px);
    if (!ok) die("stb_image_write failed");
    return b;
}

/* an image [h,w,c] from the gray fmnist images (crop, channels from
   consecutive images so that they differ; alpha a ramp) */
static unsigned char *from_fmnist(const pf_dataset *d, int h, int w, int c) {
    unsigned char *px = (unsigned char *)malloc((size_t)h * w * c);
    int y, x, k;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++)
            for (k = 0; k < c; k++)
                px[((size_t)y * w + x) * c + k] = (c == 2 || c == 4) && k == c - 1
                    ? (unsigned char)(255 * (x + y) / (w + h))
                    : d->images[(size_t)(k % d->n) * d->h * d->w + (size_t)(y % d->h) * d->w + (size_t)(x % d->w)];
    return px;
}

/* ---- safetensors: MODEL with other dtypes ---- */

static uint16_t to_f16(float f) {
    uint32_t x, sign, m, h;
    int e;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    e = (int)((x >> 23) & 0xff) - 127 + 15;
    m = x & 0x7fffffu;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        m |= 0x800000u;
        h = m >> (14 - e);
        if ((m >> (13 - e)) & 1) h++;
        return (uint16_t)(sign | h);
    }
    h = sign | (uint32_t)e << 10 | m >> 13;
    if (m & 0x1000u) h++;
    return (uint16_t)h;
}
static uint16_t to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

static void retyped(const char *model, pf_dtype dt, const char *name) {
    pf_st_file *f;
    pf_st_tensor *t;
    void **data;
    char path[1200];
    int i;
    size_t k, n;
    check(pf_st_open(model, &f));
    t = (pf_st_tensor *)calloc((size_t)f->n, sizeof *t);
    data = (void **)calloc((size_t)f->n, sizeof *data);
    for (i = 0; i < f->n; i++) {
        const pf_st_entry *e = &f->entries[i];
        float *v;
        n = pf_st_numel(e);
        v = (float *)malloc(n * sizeof(float) + 1);
        check(pf_st_read_f32(f, e, v));
        t[i].name = e->name;
        t[i].ndim = e->ndim;
        memcpy(t[i].shape, e->shape, sizeof e->shape);
        t[i].dtype = e->dtype == PF_F32 ? dt : e->dtype;
        if (e->dtype != PF_F32) { /* train.* integers: as they are */
            data[i] = malloc(e->end - e->begin + 1);
            check(pf_st_read_raw(f, e, data[i]));
        } else if (dt == PF_F64) {
            double *o = (double *)malloc(n * 8 + 1);
            for (k = 0; k < n; k++) o[k] = v[k];
            data[i] = o;
        } else {
            uint16_t *o = (uint16_t *)malloc(n * 2 + 1);
            for (k = 0; k < n; k++) o[k] = dt == PF_F16 ? to_f16(v[k]) : to_bf16(v[k]);
            data[i] = o;
        }
        t[i].data = data[i];
        free(v);
    }
    snprintf(path, sizeof path, "%s/safetensors/%s", out_dir, name);
    check(pf_st_write(path, t, f->n, (const char *const *)f->meta_keys, (const char *const *)f->meta_vals, f->n_meta));
    for (i = 0; i < f->n; i++) free(data[i]);
    free(data);
    free(t);
    pf_st_close(f);
}

/* ---- config ---- */

static void config_seeds(int argc, char **argv) {
    static const char *presets[] = {"paraformer", "vit", "paper"};
    char json[4096], name[64];
    pf_config c;
    pf_train_opts o;
    float es;
    int i, n;
    for (i = 0; i < 3; i++) {
        check(pf_config_preset(&c, presets[i]));
        pf_config_resolve(&c);
        n = pf_config_to_json(&c, json, sizeof json);
        snprintf(name, sizeof name, "preset_%s.json", presets[i]);
        write_file("config", name, json, (size_t)n);
    }
    check(pf_train_preset("fmnist-small", &c, &o, &es));
    pf_config_resolve(&c);
    c.mean[0] = 0.2860f;
    c.std[0] = 0.3530f;
    n = pf_config_to_json(&c, json, sizeof json);
    write_file("config", "preset_fmnist-small.json", json, (size_t)n);
    for (i = 3; i < argc; i++) { /* the "config" of each checkpoint, as its writer wrote it */
        pf_st_file *f;
        const char *cj, *base = strrchr(argv[i], '/');
        check(pf_st_open(argv[i], &f));
        if ((cj = pf_st_meta(f, "config")) != NULL) {
            snprintf(name, sizeof name, "meta_%.40s.json", base ? base + 1 : argv[i]);
            write_file("config", name, cj, strlen(cj));
        }
        pf_st_close(f);
    }
    { /* what the reader takes beyond what the writer writes */
        static const char lenient[] =
            "{ \"image_size\": \"28\", \"channels\": 1, \"patch_size\": 7.0, \"dim\": 16, \"heads\": 2,\n"
            "  \"mlp_dim\": 32, \"branches\": 2, \"depth\": 1, \"classes\": 10, \"residual\": \"normed\",\n"
            "  \"aggregate\": \"sum\", \"qkv_bias\": \"off\", \"pool\": \"mean\", \"dropout\": null,\n"
            "  \"emb_dropout\": 1e-1, \"mean\": [0.5], \"std\": null, \"format_version\": 1,\n"
            "  \"unknown\": {\"nested\": [true, false, null, -1.5e-3, \"\\u00e9\\n\"]} }";
        write_file("config", "lenient.json", lenient, sizeof lenient - 1);
    }
}

/* ---- npy ---- */

static void npy_seed(const char *name, pf_dtype dt, int ndim, const int64_t *shape) {
    pf_array a;
    char path[1200];
    size_t k;
    memset(&a, 0, sizeof a);
    a.dtype = dt;
    a.ndim = ndim;
    memcpy(a.shape, shape, sizeof(int64_t) * (size_t)ndim);
    a.nbytes = pf_array_numel(&a) * pf_dtype_size(dt);
    a.data = malloc(a.nbytes + 1);
    for (k = 0; k < pf_array_numel(&a); k++) { /* small values of each type */
        unsigned char *p = (unsigned char *)a.data + k * pf_dtype_size(dt);
        float f = (float)k * 0.5f - 1.0f;
        double d = (double)k * 0.25 - 1.0;
        int32_t i4 = (int32_t)k * 3 - 2;
        int64_t i8 = (int64_t)k * 7 - 3;
        uint16_t h = to_f16(f);
        switch (dt) {
        case PF_F32: memcpy(p, &f, 4); break;
        case PF_F64: memcpy(p, &d, 8); break;
        case PF_F16: memcpy(p, &h, 2); break;
        case PF_I32: memcpy(p, &i4, 4); break;
        case PF_I64: memcpy(p, &i8, 8); break;
        default: *p = (unsigned char)(k * 37); break;
        }
    }
    snprintf(path, sizeof path, "%s/npy/%s", out_dir, name);
    check(pf_npy_save(path, &a));
    free(a.data);
}

static void npy_hand(const char *name, int major, const char *dict, const void *d, size_t n) {
    buf b = {0, 0, 0};
    size_t hl = strlen(dict);
    unsigned char pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0,
                             (unsigned char)hl, (unsigned char)(hl >> 8), 0, 0};
    put(&b, pre, major == 1 ? 10 : 12);
    put_str(&b, dict);
    put(&b, d, n);
    write_file("npy", name, b.p, b.n);
    free(b.p);
}

static void npy_seeds(void) {
    static const int64_t s23[] = {2, 3}, s4[] = {4}, s22[] = {2, 2}, s244[] = {2, 4, 4}, s3[] = {3}, s03[] = {0, 3};
    static const float f[3] = {1.5f, -2.0f, 0.25f};
    npy_seed("f4_2x3.npy", PF_F32, 2, s23);
    npy_seed("f8_4.npy", PF_F64, 1, s4);
    npy_seed("f2_2x2.npy", PF_F16, 2, s22);
    npy_seed("u1_2x4x4.npy", PF_U8, 3, s244);
    npy_seed("i1_3.npy", PF_I8, 1, s3);
    npy_seed("i4_2x2.npy", PF_I32, 2, s22);
    npy_seed("i8_3.npy", PF_I64, 1, s3);
    npy_seed("f4_scalar.npy", PF_F32, 0, s3);
    npy_seed("f4_0x3.npy", PF_F32, 2, s03);
    npy_hand("v2_f4_3.npy", 2, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3L,)}\n", f, sizeof f);
    npy_hand("v3_u1_3.npy", 3, "{'shape': (3,), 'fortran_order': False, 'descr': 'u1'}      \n", "abc", 3);
}

/* ---- datasets (fuzz_dataset's input: format byte, length of A, A, B) ---- */

static void ds_seed(const char *name, int fmt, const buf *a, const buf *b) {
    buf o = {0, 0, 0};
    unsigned char h[3] = {(unsigned char)fmt, (unsigned char)(a->n & 255), (unsigned char)(a->n >> 8)};
    if (a->n > 65535) die("%s: file A too large", name);
    put(&o, h, 3);
    put(&o, a->p, a->n);
    if (b) put(&o, b->p, b->n);
    write_file("dataset", name, o.p, o.n);
    free(o.p);
}

static void dataset_seeds(const pf_dataset *d) {
    buf img = {0, 0, 0}, lab = {0, 0, 0}, rec10 = {0, 0, 0}, rec100 = {0, 0, 0}, names10 = {0, 0, 0},
        names100 = {0, 0, 0}, gi, gl, g10, g100, x = {0, 0, 0}, y = {0, 0, 0}, pa, pb, pc;
    int i, n = 3, k, p;
    char path[1200], line[32];
    unsigned char *px;
    /* IDX: 3 images of 28x28, their labels */
    put_be32(&img, 0x803); put_be32(&img, (uint32_t)n); put_be32(&img, 28); put_be32(&img, 28);
    put(&img, d->images, (size_t)n * 784);
    put_be32(&lab, 0x801); put_be32(&lab, (uint32_t)n);
    for (i = 0; i < n; i++) { unsigned char l = (unsigned char)d->labels[i]; put(&lab, &l, 1); }
    gi = gzip(&img);
    gl = gzip(&lab);
    ds_seed("fmnist_raw", 0, &img, &lab);
    ds_seed("fmnist_gz", 1, &gi, &gl);
    ds_seed("fmnist_raw_test_classes", 0x18, &img, &lab);
    /* CIFAR: 2 records, the image padded to 32x32, one plane per image */
    for (i = 0; i < 2; i++) {
        unsigned char l = (unsigned char)d->labels[i], coarse = (unsigned char)(i * 7), fine = (unsigned char)(l * 10 + i);
        put(&rec10, &l, 1);
        put(&rec100, &coarse, 1);
        put(&rec100, &fine, 1);
        for (k = 0; k < 3; k++)
            for (p = 0; p < 1024; p++) {
                int yy = p / 32 - 2, xx = p % 32 - 2;
                unsigned char v = yy >= 0 && yy < 28 && xx >= 0 && xx < 28 ? d->images[(size_t)((i + k) % n) * 784 + yy * 28 + xx] : 0;
                put(&rec10, &v, 1);
                put(&rec100, &v, 1);
            }
    }
    for (i = 0; i < 10; i++) { snprintf(line, sizeof line, "class %d\n", i); put_str(&names10, line); }
    for (i = 0; i < 100; i++) { snprintf(line, sizeof line, "c%d\r\n", i); put_str(&names100, line); }
    g10 = gzip(&rec10);
    g100 = gzip(&rec100);
    ds_seed("cifar10_raw", 2, &rec10, &names10);
    ds_seed("cifar10_gz", 3, &g10, NULL);
    ds_seed("cifar10_raw_test", 0x12, &rec10, NULL);
    ds_seed("cifar100_raw", 4, &rec100, &names100);
    ds_seed("cifar100_gz_classes", 0x0d, &g100, NULL);
    /* npy: uint8 [3,28,28] with int64 labels; [2,8,8,3] with uint8 labels */
    {
        pf_array a;
        int64_t l8[3];
        unsigned char l1[2] = {1, 0}, hwc[2 * 8 * 8 * 3];
        memset(&a, 0, sizeof a);
        a.dtype = PF_U8; a.ndim = 3; a.shape[0] = 3; a.shape[1] = 28; a.shape[2] = 28; a.data = d->images;
        snprintf(path, sizeof path, "%s/dataset/x.npy.tmp", out_dir);
        check(pf_npy_save(path, &a));
        x = read_file(path);
        for (i = 0; i < 3; i++) l8[i] = d->labels[i];
        a.dtype = PF_I64; a.ndim = 1; a.shape[0] = 3; a.data = l8;
        check(pf_npy_save(path, &a));
        y = read_file(path);
        ds_seed("npy_u1_nhw_i8", 6, &x, &y);
        free(x.p); free(y.p);
        for (i = 0; i < (int)sizeof hwc; i++) hwc[i] = d->images[i * 5 % 2352];
        a.dtype = PF_U8; a.ndim = 4; a.shape[0] = 2; a.shape[1] = 8; a.shape[2] = 8; a.shape[3] = 3; a.data = hwc;
        check(pf_npy_save(path, &a));
        x = read_file(path);
        a.dtype = PF_U8; a.ndim = 1; a.shape[0] = 2; a.data = l1;
        check(pf_npy_save(path, &a));
        y = read_file(path);
        ds_seed("npy_u1_nhwc_u1_classes", 0x0e, &x, &y);
        remove(path);
    }
    /* folders: a gray PNG and an RGB BMP of the same size (two classes);
       an RGB JPEG alone (one class) */
    px = from_fmnist(d, 28, 28, 1);
    pa = image('p', px, 28, 28, 1);
    free(px);
    px = from_fmnist(d, 28, 28, 3);
    pb = image('b', px, 28, 28, 3);
    free(px);
    px = from_fmnist(d, 16, 16, 3);
    pc = image('j', px, 16, 16, 3);
    free(px);
    ds_seed("folder_png_bmp", 7, &pa, &pb);
    ds_seed("folder_jpg", 7, &pc, NULL);
    free(img.p); free(lab.p); free(gi.p); free(gl.p); free(rec10.p); free(rec100.p); free(g10.p); free(g100.p);
    free(names10.p); free(names100.p); free(x.p); free(y.p); free(pa.p); free(pb.p); free(pc.p);
}

/* ---- images ---- */

static void image_seeds(const pf_dataset *d) {
    static const struct { const char *name; char kind; int w, h, c; } im[] = {
        {"gray_28.png", 'p', 28, 28, 1}, {"gray_alpha_12.png", 'p', 12, 12, 2}, {"rgb_20x10.png", 'p', 20, 10, 3},
        {"rgba_16.png", 'p', 16, 16, 4}, {"rgb_16.jpg", 'j', 16, 16, 3},     {"gray_8.jpg", 'j', 8, 8, 1},
        {"rgb_9x7.bmp", 'b', 9, 7, 3},   {"rgba_4.bmp", 'b', 4, 4, 4},
    };
    size_t i;
    for (i = 0; i < sizeof im / sizeof im[0]; i++) {
        unsigned char *px = from_fmnist(d, im[i].h, im[i].w, im[i].c);
        buf b = image(im[i].kind, px, im[i].w, im[i].h, im[i].c);
        write_file("image", im[i].name, b.p, b.n);
        free(b.p);
        free(px);
    }
}

int main(int argc, char **argv) {
    char spec[1200];
    pf_dataset d;
    if (argc < 4) {
        fprintf(stderr, "usage: make_corpus OUT FMNIST_DIR MODEL.safetensors [MORE.safetensors ...]\n");
        return 2;
    }
    out_dir = argv[1];
    stbi_write_png_compression_level = 9;
    snprintf(spec, sizeof spec, "fmnist:%s#limit=3", argv[2]);
    check(pf_dataset_load(spec, PF_SPLIT_TRAIN, &d));
    retyped(argv[3], PF_F16, "model_f16.safetensors");
    retyped(argv[3], PF_BF16, "model_bf16.safetensors");
    retyped(argv[3], PF_F64, "model_f64.safetensors");
    config_seeds(argc, argv);
    npy_seeds();
    dataset_seeds(&d);
    image_seeds(&d);
    pf_dataset_free(&d);
    return 0;
}

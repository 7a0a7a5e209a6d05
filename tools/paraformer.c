/* paraformer.c - the `paraformer` command-line program.

       paraformer init     --out M.safetensors [--preset P] [architecture flags]
       paraformer info     --model M [--json] [--tensors]
       paraformer predict  --model M --input X --output Y [--branches k] [--device D] ...
       paraformer train    --data SPEC --out M.safetensors [--preset P] [--schedule S] [--resume M] [--device D] ...
       paraformer eval     --model M --data SPEC [--sweep] [--json] [--device D]
       paraformer compress --model M --keep K --out M2
       paraformer expand   --model M --add J [--classes K2] --out M2
       paraformer bench    [--zoo vit12|pf4x3|...] [--dataset cifar|fmnist] [--threads N] [--json]
       paraformer plot     --log L.jsonl [--log L2.jsonl ...] --out F.svg [--title T] [--width W]

   A thin layer over paraformer.h: it parses flags, reads inputs and writes
   outputs; all model work is the library's. Each subcommand answers --help
   with every option and its default. Flags take `--flag value` or
   `--flag=value`. Exit status: 0 ok, 1 runtime error (files, model),
   2 usage error (flags). Errors go to stderr as `error: ...`.

   Build (stb_image optional, for .png/.jpg/.bmp input):
       gcc -std=c99 -O2 -Wall -Wextra -fopenmp -DPF_HAVE_STB -I. \
           tools/paraformer.c -o build/paraformer -lm
   With -DPF_WITH_CUDA and linked with paraformer_cuda.cu's object it takes
   --device cuda (make cuda: build/cuda/paraformer; make build/paraformer_emu:
   the backend emulated on the CPU, for the tests).
*/
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#ifdef PF_HAVE_STB
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_MAX_DIMENSIONS (1 << 14) // bounds what a hostile header makes it allocate
#include <stb/stb_image.h>             // the implementation (the header only saw the declarations)
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"

// ----------------------------------------------------------------------------
// errors

static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

// a library failure about `path`: the message, prefixed by the path unless it
// already names it
static void die_file(const char *path) {
    const char *e = pf_last_error();
    if (*e && strstr(e, path)) die(1, "%s", e);
    die(1, "%s: %s", path, *e ? e : "unknown error");
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die(1, "out of memory (%zu bytes)", n);
    return p;
}

// ----------------------------------------------------------------------------
// option parsing: a table per subcommand, one pass over argv

typedef struct optdef {
    const char *name; // "--dim"
    const char *arg;  // value placeholder in the help ("N"); NULL: a switch
    const char *def;  // default shown in the help
    const char *help;
} optdef;

typedef struct cli {
    const char *cmd;
    const optdef *o;
    int n_opts;
    int n;             // options given, in order:
    int *which;        // index into o
    const char **vals; // value ("" for a switch)
} cli;

static void usage_error(const cli *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: %s: ", c->cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'paraformer %s --help')\n", c->cmd);
    va_end(ap);
    exit(2);
}

static void print_options(const cli *c) {
    int k;
    printf("options:\n");
    for (k = 0; k < c->n_opts; k++) {
        char lhs[64];
        snprintf(lhs, sizeof lhs, "%s%s%s", c->o[k].name, c->o[k].arg ? " " : "",
                 c->o[k].arg ? c->o[k].arg : "");
        if (!strcmp(c->o[k].def, "required")) printf("  %-26s %s (required)\n", lhs, c->o[k].help);
        else printf("  %-26s %s (default: %s)\n", lhs, c->o[k].help, c->o[k].def);
    }
    printf("  %-26s show this help\n", "--help");
}

static int wants_help(int argc, char **argv) {
    int i;
    for (i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

// argv: the arguments after the subcommand name
static void cli_parse(cli *c, int argc, char **argv) {
    int i, k;
    c->n = 0;
    c->which = (int *)xmalloc((size_t)(argc + 1) * sizeof(int));
    c->vals = (const char **)xmalloc((size_t)(argc + 1) * sizeof(char *));
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *eq, *v;
        size_t len;
        int found = -1;
        if (strncmp(a, "--", 2) != 0) usage_error(c, "unexpected argument '%s'", a);
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        for (k = 0; k < c->n_opts; k++)
            if (strlen(c->o[k].name) == len && !strncmp(c->o[k].name, a, len)) found = k;
        if (found < 0) usage_error(c, "unknown option '%.*s'", (int)len, a);
        if (!c->o[found].arg) {
            if (eq) usage_error(c, "%s takes no value", c->o[found].name);
            v = "";
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            v = argv[++i];
        } else {
            usage_error(c, "%s needs a value (%s)", c->o[found].name, c->o[found].arg);
            v = "";
        }
        if (c->o[found].arg && !*v) usage_error(c, "%s: empty value", c->o[found].name);
        c->which[c->n] = found;
        c->vals[c->n++] = v;
    }
}

static void cli_free(cli *c) {
    free(c->which);
    free(c->vals);
}

// the last value given for option k, or NULL
static const char *cli_get(const cli *c, int k) {
    int i;
    for (i = c->n - 1; i >= 0; i--)
        if (c->which[i] == k) return c->vals[i];
    return NULL;
}

static const char *cli_need(const cli *c, int k) {
    const char *v = cli_get(c, k);
    if (!v) usage_error(c, "%s is required", c->o[k].name);
    return v;
}

// ----------------------------------------------------------------------------
// value parsing (usage errors exit 2 naming the option)

static long parse_int(const cli *c, int k, long lo, long hi) {
    const char *s = cli_get(c, k);
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || *end || errno == ERANGE)
        usage_error(c, "%s: '%s' is not an integer", c->o[k].name, s);
    if (v < lo || v > hi) usage_error(c, "%s: %ld is out of range %ld..%ld", c->o[k].name, v, lo, hi);
    return v;
}

static uint64_t parse_u64(const cli *c, int k) {
    const char *s = cli_get(c, k);
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (end == s || *end || errno == ERANGE || strchr(s, '-'))
        usage_error(c, "%s: '%s' is not an unsigned 64-bit integer", c->o[k].name, s);
    return (uint64_t)v;
}

static float parse_float(const cli *c, int k, double lo, double hi) {
    const char *s = cli_get(c, k);
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v))
        usage_error(c, "%s: '%s' is not a number", c->o[k].name, s);
    if (v < lo || v > hi) usage_error(c, "%s: %g is out of range %g..%g", c->o[k].name, v, lo, hi);
    return (float)v;
}

// one of `names` (n of them); returns its index
static int parse_choice(const cli *c, int k, const char *const *names, int n) {
    const char *s = cli_get(c, k);
    int i;
    for (i = 0; i < n; i++)
        if (!strcmp(s, names[i])) return i;
    fprintf(stderr, "error: %s: %s: '%s' is not one of ", c->cmd, c->o[k].name, s);
    for (i = 0; i < n; i++) fprintf(stderr, "%s%s", i ? "|" : "", names[i]);
    fprintf(stderr, " (see 'paraformer %s --help')\n", c->cmd);
    exit(2);
}

// "a,b,c" -> dst (at most max values); returns the count
static int parse_floats(const cli *c, int k, float *dst, int max) {
    const char *s = cli_get(c, k), *p = s;
    int n = 0;
    for (;;) {
        char *end;
        double v;
        errno = 0;
        v = strtod(p, &end);
        if (end == p || (*end && *end != ',') || errno == ERANGE || !isfinite(v))
            usage_error(c, "%s: '%s' is not a comma-separated list of numbers", c->o[k].name, s);
        if (n == max) usage_error(c, "%s: more than %d values", c->o[k].name, max);
        dst[n++] = (float)v;
        if (!*end) return n;
        p = end + 1;
    }
}

static const char *np_name(pf_dtype t) { // NumPy's name of a dtype
    static const char *const names[] = {"float32", "float64", "float16", "bfloat16",
                                        "uint8",   "int8",    "int32",   "int64"};
    return (int)t >= 0 && t < PF_DTYPE_COUNT ? names[t] : "unknown";
}

// "[2,3,32,32]"
static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t len = 0;
    int i;
    buf[0] = '\0';
    for (i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? "," : "[", (long long)shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, "%s", ndim ? "]" : "[]");
    return buf;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void print_floats(FILE *f, const float *v, int n) {
    int i;
    for (i = 0; i < n; i++) fprintf(f, "%s%g", i ? "," : "", v[i]);
}

// ----------------------------------------------------------------------------
// init

static const char *const RESIDUALS[] = {"prenorm", "normed"}; // PF_PRENORM, PF_NORMED
static const char *const AGGREGATES[] = {"delta", "sum"};     // PF_AGG_DELTA, PF_AGG_SUM
static const char *const POOLS[] = {"cls", "mean"};           // PF_POOL_CLS, PF_POOL_MEAN
static const char *const PRESETS[] = {"paraformer", "vit", "paper"};
static const char *const ONOFF[] = {"off", "on", "false", "true", "0", "1", "no", "yes"}; // index % 2

// the values each preset gives, one column per preset
static void print_presets(void) {
    pf_config p[3];
    int i;
    for (i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        if (pf_config_preset(&p[i], PRESETS[i]) != PF_OK) return;
        pf_config_resolve(&p[i]);
    }
    printf("\npreset values (flags override them):\n  %-14s", "");
    for (i = 0; i < 3; i++) printf(i < 2 ? " %-14s" : " %s", PRESETS[i]);
    printf("\n");
#define ROW(label, fmt, expr) do { printf("  %-14s", label); \
        for (i = 0; i < 3; i++) { char b[64]; const pf_config *c = &p[i]; snprintf(b, sizeof b, fmt, expr); \
            printf(i < 2 ? " %-14s" : " %s", b); (void)c; } printf("\n"); } while (0)
    ROW("--image-size", "%d", c->image_size);
    ROW("--channels", "%d", c->channels);
    ROW("--patch", "%d", c->patch_size);
    ROW("--dim", "%d", c->dim);
    ROW("--heads", "%d", c->heads);
    ROW("--mlp-dim", "%d", c->mlp_dim);
    ROW("--branches", "%d", c->branches);
    ROW("--depth", "%d", c->depth);
    ROW("--classes", "%d", c->classes);
    ROW("--residual", "%s", pf_residual_name(c->residual));
    ROW("--aggregate", "%s", pf_aggregate_name(c->aggregate));
    ROW("--qkv-bias", "%s", c->no_qkv_bias ? "off" : "on");
    ROW("--pool", "%s", pf_pool_name(c->pool));
    ROW("--dropout", "%g", c->dropout);
    ROW("--emb-dropout", "%g", c->emb_dropout);
    ROW("--mean", "%g (each)", c->mean[0]);
    ROW("--std", "%g (each)", c->std[0] == 0.0f ? 1.0f : c->std[0]);
    ROW("cls/pos init", "N(0, %g^2)", pf_preset_embed_std(PRESETS[i]));
#undef ROW
}

// The architecture flags, shared by init and bench: a command's option table
// holds ARCH_OPTDEFS at indices at .. at+A_N-1 (A_* relative to `at`).
enum { A_PRESET, A_IMAGE, A_CHANNELS, A_PATCH, A_DIM, A_HEADS, A_MLP, A_BRANCHES, A_DEPTH, A_CLASSES,
       A_RESIDUAL, A_AGGREGATE, A_QKV, A_POOL, A_DROPOUT, A_EMB_DROPOUT, A_MEAN, A_STD, A_N };
#define ARCH_OPTDEFS \
    {"--preset", "NAME", "paraformer", "paraformer | vit | paper"}, \
    {"--image-size", "N", "preset", "input image side (pixels)"}, \
    {"--channels", "N", "preset", "input channels"}, \
    {"--patch", "N", "preset", "patch side (divides the image size)"}, \
    {"--dim", "N", "preset", "token width D"}, \
    {"--heads", "N", "preset", "attention heads (divide D)"}, \
    {"--mlp-dim", "N", "preset", "MLP hidden width (4 x --dim when only --dim is given)"}, \
    {"--branches", "N", "preset", "parallel branches"}, \
    {"--depth", "N", "preset", "layers per branch"}, \
    {"--classes", "N", "preset", "output classes"}, \
    {"--residual", "prenorm|normed", "preset", "x+F(LN x) | LN x+F(LN x)"}, \
    {"--aggregate", "delta|sum", "preset", "X0+sum(B-X0) | sum(B)"}, \
    {"--qkv-bias", "on|off", "preset", "bias on the qkv projection (also true/false, 1/0)"}, \
    {"--pool", "cls|mean", "preset", "cls token | mean of all tokens"}, \
    {"--dropout", "F", "preset", "dropout after attn proj / GELU / fc2, in [0,1)"}, \
    {"--emb-dropout", "F", "preset", "dropout after the embedding, in [0,1)"}, \
    {"--mean", "a,b,c", "preset", "per-channel input mean on the [0,1] scale (one value: all)"}, \
    {"--std", "a,b,c", "preset", "per-channel input std (> 0; one value: all)"}

// --preset into cfg (usage error if unknown); returns the preset's name
static const char *arch_preset(const cli *c, int at, pf_config *cfg) {
    const char *preset = cli_get(c, at + A_PRESET) ? cli_get(c, at + A_PRESET) : "paraformer";
    memset(cfg, 0, sizeof *cfg);
    if (pf_config_preset(cfg, preset) != PF_OK)
        usage_error(c, "--preset: unknown preset '%s' (paraformer, vit, paper)", preset);
    return preset;
}

// the other architecture flags over cfg, then validation (exit 2 if invalid)
static void arch_flags(const cli *c, int at, pf_config *cfg) {
    int i;
    if (cli_get(c, at + A_IMAGE)) cfg->image_size = (int)parse_int(c, at + A_IMAGE, 1, INT_MAX);
    if (cli_get(c, at + A_CHANNELS)) cfg->channels = (int)parse_int(c, at + A_CHANNELS, 1, PF_MAX_CHANNELS);
    if (cli_get(c, at + A_PATCH)) cfg->patch_size = (int)parse_int(c, at + A_PATCH, 1, INT_MAX);
    if (cli_get(c, at + A_DIM)) {
        cfg->dim = (int)parse_int(c, at + A_DIM, 1, INT_MAX);
        cfg->mlp_dim = 0; // 4 x dim (resolve) unless --mlp-dim says otherwise
    }
    if (cli_get(c, at + A_HEADS)) cfg->heads = (int)parse_int(c, at + A_HEADS, 1, INT_MAX);
    if (cli_get(c, at + A_MLP)) cfg->mlp_dim = (int)parse_int(c, at + A_MLP, 1, INT_MAX);
    if (cli_get(c, at + A_BRANCHES)) cfg->branches = (int)parse_int(c, at + A_BRANCHES, 1, INT_MAX);
    if (cli_get(c, at + A_DEPTH)) cfg->depth = (int)parse_int(c, at + A_DEPTH, 1, INT_MAX);
    if (cli_get(c, at + A_CLASSES)) cfg->classes = (int)parse_int(c, at + A_CLASSES, 1, INT_MAX);
    if (cli_get(c, at + A_RESIDUAL)) cfg->residual = parse_choice(c, at + A_RESIDUAL, RESIDUALS, 2);
    if (cli_get(c, at + A_AGGREGATE)) cfg->aggregate = parse_choice(c, at + A_AGGREGATE, AGGREGATES, 2);
    if (cli_get(c, at + A_QKV)) cfg->no_qkv_bias = parse_choice(c, at + A_QKV, ONOFF, 8) % 2 == 0;
    if (cli_get(c, at + A_POOL)) cfg->pool = parse_choice(c, at + A_POOL, POOLS, 2);
    if (cli_get(c, at + A_DROPOUT)) cfg->dropout = parse_float(c, at + A_DROPOUT, 0.0, 0.999999);
    if (cli_get(c, at + A_EMB_DROPOUT)) cfg->emb_dropout = parse_float(c, at + A_EMB_DROPOUT, 0.0, 0.999999);
    pf_config_resolve(cfg); // channels known from here on
    for (i = 0; i < 2; i++) { // --mean, --std: one value or one per channel
        int k = at + (i ? A_STD : A_MEAN), n, j;
        float v[PF_MAX_CHANNELS], *dst = i ? cfg->std : cfg->mean;
        if (!cli_get(c, k)) continue;
        n = parse_floats(c, k, v, PF_MAX_CHANNELS);
        if (n != 1 && n != cfg->channels)
            usage_error(c, "%s: %d values for %d channels (give 1 or %d)", c->o[k].name, n, cfg->channels,
                        cfg->channels);
        for (j = 0; j < cfg->channels; j++) {
            dst[j] = v[n == 1 ? 0 : j];
            if (i && !(dst[j] > 0.0f)) usage_error(c, "--std: values must be > 0");
        }
    }
    if (pf_config_validate(cfg) != PF_OK) die(2, "%s: invalid configuration: %s", c->cmd, pf_last_error());
}

static int cmd_init(int argc, char **argv) {
    enum { O_OUT, O_ARCH, O_SEED = O_ARCH + A_N, O_N };
    static const optdef o[O_N] = {
        {"--out", "FILE", "required", "checkpoint to write (safetensors)"},
        ARCH_OPTDEFS,
        {"--seed", "S", "0", "initialisation seed (unsigned 64-bit)"},
    };
    cli c = {"init", o, O_N, 0, NULL, NULL};
    pf_config cfg;
    pf_model *m = NULL;
    const char *out, *preset;
    uint64_t seed = 0;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer init --out FILE [--preset NAME] [options]\n\n"
               "Creates a model with seeded initial weights (PyTorch's default distributions)\n"
               "and writes it as a safetensors checkpoint that PyTorch loads by name.\n\n");
        print_options(&c);
        print_presets();
        return 0;
    }
    cli_parse(&c, argc, argv);
    out = cli_need(&c, O_OUT);
    preset = arch_preset(&c, O_ARCH, &cfg);
    if (cli_get(&c, O_SEED)) seed = parse_u64(&c, O_SEED);
    arch_flags(&c, O_ARCH, &cfg);
    if (pf_model_create(&cfg, &m) != PF_OK) die(1, "init: %s", pf_last_error());
    pf_model_init(m, seed, pf_preset_embed_std(preset));
    if (pf_model_save(m, out) != PF_OK) die_file(out);
    printf("wrote %s: PF(%dx%d) dim %d heads %d, %dx%d input, %d classes, %zu parameters, seed %llu\n",
           out, m->cfg.branches, m->cfg.depth, m->cfg.dim, m->cfg.heads, m->cfg.image_size,
           m->cfg.image_size, m->cfg.classes, m->n_params, (unsigned long long)seed);
    pf_model_free(m);
    cli_free(&c);
    return 0;
}

// ----------------------------------------------------------------------------
// info

static long long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    long long n = -1;
    if (!f) return -1;
    if (fseek(f, 0, SEEK_END) == 0) n = (long long)ftell(f);
    fclose(f);
    return n;
}

// parameters of the model cut to its first k branches (compress --keep k)
static size_t prefix_params(const pf_model *m, int k) {
    return pf_model_part_size(m, PF_PART_STEM) + pf_model_part_size(m, PF_PART_HEAD) +
           (size_t)k * pf_model_part_size(m, PF_PART_BRANCH);
}

static int cmd_info(int argc, char **argv) {
    enum { O_MODEL, O_JSON, O_TENSORS, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint (safetensors)"},
        {"--json", NULL, "off", "print one JSON object"},
        {"--tensors", NULL, "off", "also list the file's tensors with dtype and shape"},
    };
    cli c = {"info", o, O_N, 0, NULL, NULL};
    const char *path;
    pf_model *m = NULL;
    pf_st_file *st = NULL;
    const pf_config *g;
    size_t *branch = NULL;
    char json[4096], sh[160];
    int json_out, tensors, b, i;
    long long bytes;
    const char *fv;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer info --model FILE [--json] [--tensors]\n\n"
               "Shows a checkpoint's configuration, parameter counts per part and file size.\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    path = cli_need(&c, O_MODEL);
    json_out = cli_get(&c, O_JSON) != NULL;
    tensors = cli_get(&c, O_TENSORS) != NULL;
    if (pf_model_load(path, &m) != PF_OK) die_file(path);
    if (pf_st_open(path, &st) != PF_OK) die_file(path);
    g = &m->cfg;
    bytes = file_size(path);
    fv = pf_st_meta(st, "format_version");
    if (!fv || !*fv || strspn(fv, "0123456789") != strlen(fv)) fv = NULL; // printed as a JSON number
    branch = (size_t *)xmalloc((size_t)g->branches * sizeof(size_t));
    for (b = 0; b < g->branches; b++) branch[b] = 0;
    for (i = 0; i < m->n_specs; i++) {
        const pf_tensor_spec *s = &m->specs[i];
        if (s->part == PF_PART_BRANCH && s->branch >= 0 && s->branch < g->branches)
            branch[s->branch] += s->numel;
    }
    if (json_out) {
        if (pf_config_to_json(g, json, sizeof json) < 0) snprintf(json, sizeof json, "null");
        printf("{\"file\": ");
        json_str(stdout, path);
        printf(", \"file_bytes\": %lld, \"format_version\": %s, \"config\": %s, \"tokens\": %d,\n", bytes,
               fv ? fv : "null", json, m->T);
        printf(" \"parameters\": {\"stem\": %zu, \"branches\": [", pf_model_part_size(m, PF_PART_STEM));
        for (b = 0; b < g->branches; b++) printf("%s%zu", b ? ", " : "", branch[b]);
        printf("], \"head\": %zu, \"total\": %zu},\n", pf_model_part_size(m, PF_PART_HEAD), m->n_params);
        printf(" \"prefix_params\": [");
        for (b = 1; b <= g->branches; b++) printf("%s%zu", b > 1 ? ", " : "", prefix_params(m, b));
        printf("],\n");
        printf(" \"n_tensors\": %d, \"train_state\": %s", st->n,
               pf_st_meta(st, "train_state") ? "true" : "false");
        if (tensors) {
            printf(",\n \"tensors\": [");
            for (i = 0; i < st->n; i++) {
                printf("%s\n  {\"name\": ", i ? "," : "");
                json_str(stdout, st->entries[i].name);
                printf(", \"dtype\": \"%s\", \"shape\": %s}", pf_dtype_name(st->entries[i].dtype),
                       shape_str(st->entries[i].shape, st->entries[i].ndim, sh, sizeof sh));
            }
            printf("]");
        }
        printf("}\n");
    } else {
        printf("file          %s (%lld bytes, format_version %s)\n", path, bytes, fv ? fv : "?");
        printf("image_size    %d\nchannels      %d\npatch_size    %d\ndim           %d\nheads         %d\n"
               "mlp_dim       %d\nbranches      %d\ndepth         %d\nclasses       %d\n",
               g->image_size, g->channels, g->patch_size, g->dim, g->heads, g->mlp_dim, g->branches,
               g->depth, g->classes);
        printf("residual      %s\naggregate     %s\nqkv_bias      %s\npool          %s\n",
               pf_residual_name(g->residual), pf_aggregate_name(g->aggregate), g->no_qkv_bias ? "off" : "on",
               pf_pool_name(g->pool));
        printf("dropout       %g\nemb_dropout   %g\nmean          ", g->dropout, g->emb_dropout);
        print_floats(stdout, g->mean, g->channels);
        printf("\nstd           ");
        print_floats(stdout, g->std, g->channels);
        printf("\ntokens        %d\n", m->T);
        printf("parameters    stem %zu", pf_model_part_size(m, PF_PART_STEM));
        for (b = 0; b < g->branches; b++) printf(", branch %d %zu", b, branch[b]);
        printf(", head %zu, total %zu\n", pf_model_part_size(m, PF_PART_HEAD), m->n_params);
        for (b = 1; b < g->branches; b++) /* the paper's compression: the first b branches */
            printf("%s keep %d of %d branches: %zu parameters, %.2fx smaller\n", b == 1 ? "compression " : "            ",
                   b, g->branches, prefix_params(m, b), (double)m->n_params / (double)prefix_params(m, b));
        printf("tensors       %d in the file%s\n", st->n,
               pf_st_meta(st, "train_state") ? " (with training state)" : "");
        if (tensors)
            for (i = 0; i < st->n; i++)
                printf("  %-40s %-4s %s\n", st->entries[i].name, pf_dtype_name(st->entries[i].dtype),
                       shape_str(st->entries[i].shape, st->entries[i].ndim, sh, sizeof sh));
    }
    free(branch);
    pf_st_close(st);
    pf_model_free(m);
    cli_free(&c);
    return 0;
}

// ----------------------------------------------------------------------------
// predict

// An .npy array -> normalised float input [N,C,S,S] (malloc'd); *n_out = N.
static float *load_npy_input(const char *path, const pf_config *g, int *n_out) {
    pf_array a;
    int C = g->channels, S = g->image_size, c, ok;
    int64_t n = 0;
    size_t per = (size_t)C * S * S, i, px;
    float *x;
    char got[160];
    if (pf_npy_load(path, &a) != PF_OK) die_file(path);
    shape_str(a.shape, a.ndim, got, sizeof got);
    if (a.dtype == PF_F32) {
        ok = a.ndim == 4 && a.shape[1] == C && a.shape[2] == S && a.shape[3] == S;
        if (!ok)
            die(1, "%s: expected float32 [N,%d,%d,%d] (the model's channels and image size), got float32 %s",
                path, C, S, S, got);
    } else if (a.dtype == PF_U8) {
        ok = (a.ndim == 4 && a.shape[1] == S && a.shape[2] == S && a.shape[3] == C) ||
             (a.ndim == 3 && C == 1 && a.shape[1] == S && a.shape[2] == S);
        char alt[64] = "";
        if (C == 1) snprintf(alt, sizeof alt, " or [N,%d,%d]", S, S);
        if (!ok)
            die(1, "%s: expected uint8 [N,%d,%d,%d]%s (the model's image size and channels), got uint8 %s",
                path, S, S, C, alt, got);
    } else {
        die(1, "%s: expected float32 [N,%d,%d,%d] (normalised) or uint8 [N,%d,%d,%d], got %s %s "
               "(convert with .astype(np.float32))", path, C, S, S, S, S, C, np_name(a.dtype), got);
    }
    n = a.shape[0];
    if (n < 0 || n > INT_MAX || (uint64_t)n > SIZE_MAX / sizeof(float) / per)
        die(1, "%s: %lld inputs is too many", path, (long long)n);
    *n_out = (int)n;
    if (a.dtype == PF_F32) return (float *)a.data; // used as is; PF_MALLOC is malloc here, so free() frees it
    x = (float *)xmalloc((size_t)n * per * sizeof(float));
    for (i = 0; i < (size_t)n; i++) // NHWC bytes -> NCHW, v/255 then (v-mean)/std
        for (px = 0; px < (size_t)S * S; px++)
            for (c = 0; c < C; c++) {
                float sd = g->std[c] == 0.0f ? 1.0f : g->std[c];
                float v = (float)((const unsigned char *)a.data)[(i * S * S + px) * C + c] / 255.0f;
                x[i * per + (size_t)c * S * S + px] = (v - g->mean[c]) / sd;
            }
    pf_array_free(&a);
    return x;
}

// image files -> normalised float input [N,C,S,S] (malloc'd)
static float *load_images(const char *const *files, int n, const pf_config *g) {
#ifndef PF_HAVE_STB
    (void)n; (void)g;
    die(1, "%s: image input needs stb_image, and this program was built without it "
           "(rebuild with -DPF_HAVE_STB, Debian package libstb-dev), or pass a .npy array", files[0]);
    return NULL;
#else
    size_t per = (size_t)g->channels * g->image_size * g->image_size;
    float *x;
    int i;
    if ((size_t)n > SIZE_MAX / sizeof(float) / per) die(1, "too many images (%d)", n);
    x = (float *)xmalloc((size_t)n * per * sizeof(float));
    for (i = 0; i < n; i++) {
        int w, h, ch;
        unsigned char *img;
        pf_status st = pf_image_load(files[i], &img, &h, &w, &ch);
        if (st != PF_OK) die_file(files[i]);
        st = pf_image_to_input(img, h, w, ch, g, x + (size_t)i * per);
        pf_image_free(img);
        if (st != PF_OK) die_file(files[i]);
    }
    return x;
#endif
}

// ----------------------------------------------------------------------------
// --device: the CPU, or the GPU backend (paraformer_cuda.cu, docs/design.md §5). The
// backend is linked only into a build compiled with -DPF_WITH_CUDA: make cuda
// (build/cuda/paraformer, real GPUs) or make build/paraformer_emu (the same
// source compiled for the CPU with the GPU primitives emulated, for the
// tests). Without it --device cuda is refused and nothing needs CUDA.

#define DEVICE_OPTDEFS \
    {"--device", "cpu|cuda[:N,...]", "cpu", "run on the CPU, or on CUDA device(s) N,... (cuda = cuda:0; needs a " \
                                           "build with the GPU backend)"}, \
    {"--bf16", NULL, "off", "GPU: bf16 GEMM operands with fp32 master weights and accumulation (off: fp32)"}

typedef struct device {
    int cuda;         // 0: the CPU
    int bf16;
    const char *spec; // --device as given ("cpu", "cuda:0,1")
#ifdef PF_WITH_CUDA
    pf_cuda_opts opts;
    pf_cuda *g;
    pf_backend be;
#endif
} device;

// --device and --bf16 at option indices k_dev, k_bf16; checked before any
// data is read. Usage errors exit 2, a missing backend or device exits 1.
static void parse_device(const cli *c, int k_dev, int k_bf16, device *dv) {
    const char *s = cli_get(c, k_dev) ? cli_get(c, k_dev) : "cpu";
    memset(dv, 0, sizeof *dv);
    dv->spec = s;
    dv->bf16 = cli_get(c, k_bf16) != NULL;
    if (!strcmp(s, "cpu")) {
        if (dv->bf16) usage_error(c, "--bf16 is for the GPU: add --device cuda");
        return;
    }
    if (strncmp(s, "cuda", 4) != 0 || (s[4] && s[4] != ':'))
        usage_error(c, "--device: '%s' is not cpu, cuda, cuda:N or cuda:N,M,...", s);
    dv->cuda = 1;
#ifndef PF_WITH_CUDA
    die(1, "--device %s: this build has no GPU backend: make cuda builds build/cuda/paraformer", s);
#else
    {
        int i, have;
        dv->opts = pf_cuda_opts_default();
        if (pf_cuda_parse_devices(s, &dv->opts) != PF_OK) usage_error(c, "--device: %s", pf_last_error());
        if (pf_cuda_opts_from_env(&dv->opts) != PF_OK) die(1, "%s", pf_last_error());
        // several processes (RANK/WORLD_SIZE) need the trainer and the
        // outputs split by rank, which this program does not do yet
        if (dv->opts.world_size > 1)
            die(1, "--device %s: WORLD_SIZE=%d: the program runs one process (several GPUs: --device cuda:0,1,...)",
                s, dv->opts.world_size);
        dv->opts.bf16 = dv->bf16;
        have = pf_cuda_device_count();
        if (have < 1) die(1, "--device %s: no CUDA device found (%s backend)", s, pf_cuda_backend());
        for (i = 0; i < dv->opts.n_devices; i++)
            if (dv->opts.devices[i] >= have)
                die(1, "--device %s: CUDA device %d does not exist (%d visible)", s, dv->opts.devices[i], have);
    }
#endif
}

// "cpu", or e.g. "cuda:0 (emulated backend, bf16)" for messages
static const char *device_label(const device *dv, char *buf, size_t cap) {
    if (!dv->cuda) return "cpu";
#ifdef PF_WITH_CUDA
    snprintf(buf, cap, "%s (%s backend, %s)", dv->spec, pf_cuda_backend(), dv->bf16 ? "bf16" : "fp32");
#else
    snprintf(buf, cap, "%s", dv->spec);
#endif
    return buf;
}

// the backend's name: "cpu", "cuda" or "emulated"
static const char *device_backend(const device *dv) {
#ifdef PF_WITH_CUDA
    if (dv->cuda) return pf_cuda_backend();
#endif
    (void)dv;
    return "cpu";
}

#ifdef PF_WITH_CUDA
// pf_backend over a pf_cuda (the trainer's and the evaluator's hook)
static pf_status be_forward(void *g, const pf_real *x, const int *labels, int B, float ls, float *loss) {
    return pf_cuda_forward((pf_cuda *)g, x, labels, B, ls, loss);
}
static pf_status be_backward(void *g) { return pf_cuda_backward((pf_cuda *)g); }
static pf_status be_step(void *g, const pf_optim *o, double *norm) { return pf_cuda_step((pf_cuda *)g, o, norm); }
static pf_status be_logits(void *g, pf_real *out) { return pf_cuda_logits((pf_cuda *)g, out); }
static pf_status be_download(void *g) { return pf_cuda_download((pf_cuda *)g); }
static pf_status be_upload(void *g) { return pf_cuda_upload((pf_cuda *)g); }
#endif

// Binds the device to m (which it uploads) for batches up to max_batch.
// Returns the backend for the trainer/evaluator: NULL on the CPU.
static const pf_backend *device_open(device *dv, pf_model *m, int max_batch) {
    if (!dv->cuda) return NULL;
#ifdef PF_WITH_CUDA
    dv->opts.max_batch = max_batch;
    if (pf_cuda_create(m, &dv->opts, &dv->g) != PF_OK) die(1, "--device %s: %s", dv->spec, pf_last_error());
    dv->be.ctx = dv->g;
    dv->be.max_batch = max_batch;
    dv->be.forward = be_forward;
    dv->be.backward = be_backward;
    dv->be.step = be_step;
    dv->be.logits = be_logits;
    dv->be.download = be_download;
    dv->be.upload = be_upload;
    return &dv->be;
#else
    (void)m; (void)max_batch;
    return NULL; // not reached: parse_device refused it
#endif
}

// pf_predict on the device (inference mode, chunks of the open's max_batch)
static pf_status device_predict(device *dv, pf_model *m, const float *x, int N, float *out) {
#ifdef PF_WITH_CUDA
    if (dv->g) return pf_cuda_predict(dv->g, x, N, out);
#endif
    (void)dv;
    return pf_predict(m, x, N, out);
}

static void device_close(device *dv) {
#ifdef PF_WITH_CUDA
    pf_cuda_free(dv->g);
    dv->g = NULL;
#endif
    (void)dv;
}

// the k largest of v[0..K) into idx[0..k) in descending order (idx holds K)
static void top_k(const float *v, int K, int k, int *idx) {
    int i, j, t;
    for (j = 0; j < K; j++) idx[j] = j;
    for (i = 0; i < k; i++)
        for (j = i + 1; j < K; j++)
            if (v[idx[j]] > v[idx[i]] || (v[idx[j]] == v[idx[i]] && idx[j] < idx[i]))
                t = idx[i], idx[i] = idx[j], idx[j] = t;
}

static int cmd_predict(int argc, char **argv) {
    enum { O_MODEL, O_INPUT, O_OUTPUT, O_BRANCHES, O_THREADS, O_BATCH, O_PROBS, O_TOP, O_DEVICE, O_BF16, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint (safetensors)"},
        {"--input", "X", "required", "a .npy array or image files (a,b,c; repeatable)"},
        {"--output", "Y", "required", "Y.npy (float32 [N,K]) or Y.csv (- : CSV on stdout)"},
        {"--branches", "k", "all", "use the first k branches"},
        {"--threads", "N", "OpenMP default", "threads"},
        {"--batch", "B", "64", "images per forward pass"},
        {"--probs", NULL, "off", "write softmax probabilities instead of logits"},
        {"--top", "k", "off", "print the k most likely classes per input (and add them to a CSV)"},
        DEVICE_OPTDEFS,
    };
    cli c = {"predict", o, O_N, 0, NULL, NULL};
    const char *model, *output, **files = NULL;
    device dv;
    char dev_buf[256];
    pf_model *m = NULL;
    float *x = NULL, *y = NULL;
    int N = 0, K, n_files = 0, is_npy = 0, probs, top = 0, active = 0, batch = 64, csv, i, j;
    int *idx = NULL;
    char *names = NULL; // --input values split at commas (files point into it)
    size_t names_len = 0;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer predict --model FILE --input X [--input X2 ...] --output Y [options]\n\n"
               "Writes class scores (logits, or probabilities with --probs) for the inputs:\n"
               "  X.npy float32 [N,C,H,W]   normalised already, used as is (C, H, W: the model's)\n"
               "  X.npy uint8 [N,H,W,C]     (or [N,H,W] for one channel) scaled to [0,1], then\n"
               "                            (v - mean)/std with the model's mean/std\n"
               "  .png .jpg .jpeg .bmp      the same after a bilinear resize to the model's size\n"
               "                            and channel conversion (gray <-> RGB, alpha dropped)\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    model = cli_need(&c, O_MODEL);
    output = cli_need(&c, O_OUTPUT);
    cli_need(&c, O_INPUT);
    csv = !strcmp(output, "-") || pf__ends_with_ci(output, ".csv");
    if (!csv && !pf__ends_with_ci(output, ".npy"))
        usage_error(&c, "--output: '%s' is neither .npy nor .csv (or - for CSV on stdout)", output);
    probs = cli_get(&c, O_PROBS) != NULL;
    if (cli_get(&c, O_BRANCHES)) active = (int)parse_int(&c, O_BRANCHES, 1, INT_MAX);
    if (cli_get(&c, O_TOP)) top = (int)parse_int(&c, O_TOP, 1, INT_MAX);
    if (cli_get(&c, O_BATCH)) batch = (int)parse_int(&c, O_BATCH, 1, 1 << 20);
    if (cli_get(&c, O_THREADS)) pf_set_threads((int)parse_int(&c, O_THREADS, 1, 4096));
    parse_device(&c, O_DEVICE, O_BF16, &dv);
    // every --input, split at commas
    for (i = 0; i < c.n; i++)
        if (c.which[i] == O_INPUT) names_len += strlen(c.vals[i]) + 1;
    names = (char *)xmalloc(names_len);
    files = (const char **)xmalloc(names_len * sizeof(char *));
    names_len = 0;
    for (i = 0; i < c.n; i++) {
        char *s;
        if (c.which[i] != O_INPUT) continue;
        s = strcpy(names + names_len, c.vals[i]);
        names_len += strlen(s) + 1;
        for (;;) {
            char *comma = strchr(s, ',');
            if (comma) *comma = '\0';
            if (!*s) usage_error(&c, "--input: empty file name in '%s'", c.vals[i]);
            if (pf__ends_with_ci(s, ".npy")) is_npy++;
            else if (!pf__ends_with_ci(s, ".png") && !pf__ends_with_ci(s, ".jpg") && !pf__ends_with_ci(s, ".jpeg") &&
                     !pf__ends_with_ci(s, ".bmp"))
                usage_error(&c, "--input: '%s' is not .npy, .png, .jpg, .jpeg or .bmp", s);
            files[n_files++] = s;
            if (!comma) break;
            s = comma + 1;
        }
    }
    if (is_npy && n_files > 1) usage_error(&c, "--input: a .npy input must be the only input");

    if (pf_model_load(model, &m) != PF_OK) die_file(model);
    K = m->cfg.classes;
    if (active > m->cfg.branches)
        usage_error(&c, "--branches %d: %s has %d branch%s", active, model, m->cfg.branches,
                    m->cfg.branches == 1 ? "" : "es");
    if (active && pf_model_set_active(m, active) != PF_OK) die(1, "%s", pf_last_error());
    if (top > K) usage_error(&c, "--top %d: %s has %d classes", top, model, K);
    if (is_npy) x = load_npy_input(files[0], &m->cfg, &N);
    else x = load_images(files, N = n_files, &m->cfg);
    if ((size_t)N > SIZE_MAX / sizeof(float) / (size_t)K) die(1, "too many inputs (%d)", N);
    y = (float *)xmalloc((size_t)N * K * sizeof(float));
    if (N > 0) {
        if (dv.cuda) device_open(&dv, m, batch < N ? batch : N);
        else if (pf_model_reserve(m, batch < N ? batch : N) != PF_OK) die(1, "%s", pf_last_error());
        if (device_predict(&dv, m, x, N, y) != PF_OK) die(1, "%s: %s", model, pf_last_error());
    }
    if (probs) // softmax per row
        for (i = 0; i < N; i++) {
            float *r = y + (size_t)i * K;
            double mx = r[0], s = 0.0;
            for (j = 1; j < K; j++) mx = r[j] > mx ? r[j] : mx;
            for (j = 0; j < K; j++) s += exp((double)r[j] - mx);
            for (j = 0; j < K; j++) r[j] = (float)(exp((double)r[j] - mx) / s);
        }
    idx = (int *)xmalloc((size_t)K * sizeof(int));
    if (csv) {
        FILE *f = strcmp(output, "-") ? fopen(output, "w") : stdout;
        if (!f) die(1, "%s: cannot open for writing (%s)", output, strerror(errno));
        for (j = 0; j < K; j++) fprintf(f, "%s%s_%d", j ? "," : "", probs ? "prob" : "logit", j);
        for (j = 0; j < top; j++) fprintf(f, ",top_%d", j + 1);
        fprintf(f, "\n");
        for (i = 0; i < N; i++) {
            const float *r = y + (size_t)i * K;
            for (j = 0; j < K; j++) fprintf(f, "%s%.9g", j ? "," : "", r[j]);
            if (top) top_k(r, K, top, idx);
            for (j = 0; j < top; j++) fprintf(f, ",%d", idx[j]);
            fprintf(f, "\n");
        }
        if (ferror(f) | (f == stdout ? fflush(f) : fclose(f))) die(1, "%s: write failed", output);
    } else {
        pf_array a;
        memset(&a, 0, sizeof a);
        a.dtype = PF_F32;
        a.ndim = 2;
        a.shape[0] = N;
        a.shape[1] = K;
        a.data = y;
        a.nbytes = (size_t)N * K * sizeof(float);
        if (pf_npy_save(output, &a) != PF_OK) die_file(output);
    }
    if (strcmp(output, "-")) {
        if (top)
            for (i = 0; i < N; i++) {
                top_k(y + (size_t)i * K, K, top, idx);
                printf("%s", is_npy ? "" : files[i]);
                if (is_npy) printf("%d", i);
                for (j = 0; j < top; j++)
                    printf("%s%d (%.4g)", j ? " " : ": ", idx[j], y[(size_t)i * K + idx[j]]);
                printf("\n");
            }
        printf("wrote %s: %s [%d,%d] from %d input%s, %d of %d branches%s%s\n", output,
               probs ? "probabilities" : "logits", N, K, N, N == 1 ? "" : "s", m->active, m->cfg.branches,
               dv.cuda ? ", on " : "", dv.cuda ? device_label(&dv, dev_buf, sizeof dev_buf) : "");
    }
    device_close(&dv);
    free(idx);
    free(y);
    free(x);
    free(files);
    free(names);
    pf_model_free(m);
    cli_free(&c);
    return 0;
}

// ----------------------------------------------------------------------------
// bench

// "vitN": one branch of N layers; "pfBxL": B branches of L layers, as PF(B×L)
// everywhere in this project (pf4x3: 4 branches of 3 layers). Returns 0 if the
// name is not one.
static int parse_zoo(const char *s, int *branches, int *depth) {
    char *end;
    long a, b;
    if (!strncmp(s, "vit", 3) && s[3] >= '0' && s[3] <= '9') {
        a = strtol(s + 3, &end, 10);
        if (*end || a < 1 || a > 100000) return 0;
        *branches = 1, *depth = (int)a;
        return 1;
    }
    if (!strncmp(s, "pf", 2) && s[2] >= '0' && s[2] <= '9') {
        a = strtol(s + 2, &end, 10);
        if (*end != 'x' || end[1] < '0' || end[1] > '9') return 0;
        b = strtol(end + 1, &end, 10);
        if (*end || a < 1 || a > 100000 || b < 1 || b > 100000) return 0;
        *branches = (int)a, *depth = (int)b;
        return 1;
    }
    return 0;
}

typedef struct bench_data {
    pf_model *m;
    const float *x;
    const int *labels;
    int B;
    pf_optim opt;
    const pf_backend *be; // NULL: the CPU
    int resident;         // device: the images already there (x = NULL), as PyTorch's benchmark keeps them
    device *dv;
    float *logits;        // inference output
} bench_data;

// one training step: forward with labels, backward, AdamW (on the device:
// queued, then waited for, so that the time is the step's; the loss is
// checked after the wait)
static void train_step(bench_data *d) {
    float loss = 0.0f;
    const pf_backend *be = d->be;
    if ((be ? be->forward(be->ctx, d->resident ? NULL : d->x, d->labels, d->B, 0.0f, NULL)
            : pf_forward(d->m, d->x, d->labels, d->B, 0.0f, &loss)) != PF_OK)
        die(1, "bench: %s", pf_last_error());
    if ((be ? be->backward(be->ctx) : pf_backward(d->m)) != PF_OK) die(1, "bench: %s", pf_last_error());
    if (be) {
        if (be->step(be->ctx, &d->opt, NULL) != PF_OK) die(1, "bench: %s", pf_last_error());
#ifdef PF_WITH_CUDA
        if (pf_cuda_sync((pf_cuda *)be->ctx) != PF_OK) die(1, "bench: %s", pf_last_error());
#endif
        loss = (float)d->m->loss;
    } else {
        pf_optim_step(d->m, &d->opt);
    }
    if (!isfinite(loss)) die(1, "bench: the training loss is not finite (%g)", (double)loss);
}

// what a timed call runs: a training step, inference on n images (CPU or
// device), or on the n images the last call left on the device (forward,
// logits to the host)
enum { BENCH_TRAIN, BENCH_PREDICT, BENCH_PREDICT_RESIDENT };
static void bench_call(bench_data *d, int what, int n) {
    if (what == BENCH_TRAIN) {
        train_step(d);
    } else if (what == BENCH_PREDICT) {
        if (device_predict(d->dv, d->m, d->x, n, d->logits) != PF_OK) die(1, "bench: %s", pf_last_error());
    } else {
#ifdef PF_WITH_CUDA
        if (pf_cuda_forward(d->dv->g, NULL, NULL, n, 0.0f, NULL) != PF_OK ||
            pf_cuda_logits(d->dv->g, d->logits) != PF_OK)
            die(1, "bench: %s", pf_last_error());
#endif
    }
}

// the median time of reps calls after warm untimed ones (t: reps scratch)
static double bench_median(bench_data *d, int what, int n, int warm, int reps, double *t) {
    int i;
    for (i = 0; i < warm; i++) bench_call(d, what, n);
    for (i = 0; i < reps; i++) {
        double t0 = pf_time();
        bench_call(d, what, n);
        t[i] = pf_time() - t0;
    }
    return median(t, reps);
}

static const char *const BENCH_ROW_HEADER =
    "| model  | threads | batch | train img/s | infer img/s | b1 latency ms | train GFLOP/s | % of peak | params    |\n"
    "|--------|--------:|------:|------------:|------------:|--------------:|--------------:|----------:|----------:|\n";

static int cmd_bench(int argc, char **argv) {
    enum { O_ZOO, O_DATASET, O_ARCH, O_BATCH = O_ARCH + A_N, O_INFER_BATCH, O_THREADS, O_WARM, O_REPS,
           O_PROFILE, O_SEED, O_PEAK, O_JSON, O_ROW, O_ROW_HEADER, O_DEVICE, O_BF16, O_N };
    static const optdef o[O_N] = {
        {"--zoo", "NAME", "off", "vitN = 1 branch x N layers, pfBxL = B branches x L layers (pf4x3: PF(4x3))"},
        {"--dataset", "cifar|fmnist", "cifar", "input shape: 32x32x3 | 28x28x1, 10 classes"},
        ARCH_OPTDEFS,
        {"--batch", "B", "128", "training batch (activations reserved for B)"},
        {"--infer-batch", "N", "batch", "images per timed inference call (pf_predict, chunks of --batch)"},
        {"--threads", "N", "all (OpenMP default)", "threads"},
        {"--warm", "W", "2", "untimed warm-up repeats before each measurement"},
        {"--reps", "R", "5", "timed repeats (medians reported; batch-1 latency: 3R)"},
        {"--profile-steps", "P", "2", "extra training steps timed per op (m->profile)"},
        {"--seed", "S", "0", "seed of the random input and labels"},
        {"--peak", NULL, "off", "also measure the FP32 FMA peak and report the share of it"},
        {"--json", NULL, "off", "print one JSON object"},
        {"--row", NULL, "off", "print one markdown table row (see --row-header)"},
        {"--row-header", NULL, "off", "print the header of the --row table and exit"},
        DEVICE_OPTDEFS,
    };
    cli c = {"bench", o, O_N, 0, NULL, NULL};
    pf_config cfg;
    pf_model *m = NULL;
    pf_profile prof;
    bench_data d;
    device dv;
    char name[64], dev_buf[160];
    const char *preset, *zoo;
    float *x, *logits;
    int *labels;
    int batch = 128, infer_batch, warm = 2, reps = 5, psteps = 2, threads, json, row, fmnist = 0, n_in, i, op;
    uint64_t seed = 0, rng;
    size_t per, k;
    double *t, t_train, t_train_host, t_infer, t_infer_host, t_b1, t_prof, flops = 0.0, op_s = 0.0, peak = 0.0, gflops;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer bench [--zoo NAME] [--dataset cifar|fmnist] [architecture flags as init]\n"
               "                        [--batch B] [--threads N] [--json]\n\n"
               "Times, on random normalised input (seeded), after --warm untimed repeats:\n"
               "  training    forward with labels + backward + AdamW step (pf_optim_default)\n"
               "  inference   pf_predict on --infer-batch images\n"
               "  latency     pf_predict on one image\n"
               "and reports the medians, then times --profile-steps more training steps per op\n"
               "(forward and backward ms, GFLOP/s, share of the step). The step's GFLOP/s is\n"
               "the profiled flop count of one step over the median step time. The model is\n"
               "the preset (default paraformer = pf4x3) with --zoo's branches and depth, the\n"
               "--dataset's input shape, then the architecture flags; initialised with seed 0.\n"
               "With --device cuda (build/cuda/paraformer) the same is timed on the GPU\n"
               "backend, each step waited for, no per-op profile: training and inference with\n"
               "the images left on the device (as PyTorch's benchmark keeps them), and again\n"
               "copied from the host in each call as the trainer does (train_host_img_s,\n"
               "infer_host_img_s); the batch-1 latency includes the copies both ways.\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    if (cli_get(&c, O_ROW_HEADER)) {
        fputs(BENCH_ROW_HEADER, stdout);
        cli_free(&c);
        return 0;
    }
    preset = arch_preset(&c, O_ARCH, &cfg);
    (void)preset;
    if ((zoo = cli_get(&c, O_ZOO)) && !parse_zoo(zoo, &cfg.branches, &cfg.depth))
        usage_error(&c, "--zoo: '%s' is not vitN or pfBxL (B branches of L layers: vit12, pf4x3, pf2x3)", zoo);
    if (cli_get(&c, O_DATASET)) {
        static const char *const DATASETS[] = {"cifar", "fmnist"};
        fmnist = parse_choice(&c, O_DATASET, DATASETS, 2);
        cfg.image_size = fmnist ? 28 : 32;
        cfg.channels = fmnist ? 1 : 3;
        cfg.classes = 10;
    }
    arch_flags(&c, O_ARCH, &cfg);
    if (cli_get(&c, O_BATCH)) batch = (int)parse_int(&c, O_BATCH, 1, 1 << 16);
    infer_batch = cli_get(&c, O_INFER_BATCH) ? (int)parse_int(&c, O_INFER_BATCH, 1, 1 << 20) : batch;
    if (cli_get(&c, O_THREADS)) pf_set_threads((int)parse_int(&c, O_THREADS, 1, 4096));
    if (cli_get(&c, O_WARM)) warm = (int)parse_int(&c, O_WARM, 0, 100000);
    if (cli_get(&c, O_REPS)) reps = (int)parse_int(&c, O_REPS, 1, 100000);
    if (cli_get(&c, O_PROFILE)) psteps = (int)parse_int(&c, O_PROFILE, 1, 100000);
    if (cli_get(&c, O_SEED)) seed = parse_u64(&c, O_SEED);
    json = cli_get(&c, O_JSON) != NULL;
    row = cli_get(&c, O_ROW) != NULL;
    if (json && row) usage_error(&c, "--json and --row exclude each other");
    parse_device(&c, O_DEVICE, O_BF16, &dv);
    if (dv.cuda && cli_get(&c, O_PEAK)) usage_error(&c, "--peak measures the CPU: not with --device cuda");
    threads = pf_get_threads();
    if (cfg.branches == 1) snprintf(name, sizeof name, "vit%d", cfg.depth);
    else snprintf(name, sizeof name, "pf%dx%d", cfg.branches, cfg.depth);

    // model, optimizer state, activations for `batch`
    if (pf_model_create(&cfg, &m) != PF_OK) die(1, "bench: %s", pf_last_error());
    pf_model_init(m, 0, 0.0f);
    if (pf_model_alloc_train(m) != PF_OK || (!dv.cuda && pf_model_reserve(m, batch) != PF_OK))
        die(1, "bench: %s", pf_last_error());
    // random input (enough for the larger of the two batches) and labels
    n_in = batch > infer_batch ? batch : infer_batch;
    per = (size_t)cfg.channels * cfg.image_size * cfg.image_size;
    if ((size_t)n_in > SIZE_MAX / sizeof(float) / per) die(1, "bench: batch too large");
    x = (float *)xmalloc((size_t)n_in * per * sizeof(float));
    labels = (int *)xmalloc((size_t)batch * sizeof(int));
    logits = (float *)xmalloc((size_t)n_in * cfg.classes * sizeof(float));
    t = (double *)xmalloc((size_t)(3 * reps + psteps) * sizeof(double));
    rng = seed;
    for (k = 0; k < (size_t)n_in * per; k++)
        x[k] = (float)pf__normal(&rng); /* the library's seeded splitmix64 + Box-Muller */
    for (i = 0; i < batch; i++) labels[i] = (int)(pf__next(&rng) % (uint64_t)cfg.classes);
    d.m = m, d.x = x, d.labels = labels, d.B = batch, d.opt = pf_optim_default(), d.resident = 0;
    d.dv = &dv, d.logits = logits;
    d.be = device_open(&dv, m, batch > infer_batch ? batch : infer_batch);

    // training steps (on a device: first with the images copied from the
    // host in each step, as the trainer does; then with them left on the
    // device, as PyTorch's benchmark does: the main figure)
    m->training = 1;
    t_train = t_train_host = bench_median(&d, BENCH_TRAIN, batch, warm, reps, t);
    if (dv.cuda) {
        d.resident = 1;
        t_train = bench_median(&d, BENCH_TRAIN, batch, warm, reps, t);
    }
    // per-op profile of further steps (the CPU's ops only)
    memset(&prof, 0, sizeof prof);
    m->profile = dv.cuda ? NULL : &prof;
    t_prof = pf_time();
    for (i = 0; i < (dv.cuda ? 0 : psteps); i++) train_step(&d);
    t_prof = dv.cuda ? 0.0 : (pf_time() - t_prof) / psteps;
    m->profile = NULL;
    for (op = 0; op < PF_OP_COUNT; op++) {
        flops += (prof.fwd_flops[op] + prof.bwd_flops[op]) / psteps;
        op_s += (prof.fwd_s[op] + prof.bwd_s[op]) / psteps;
    }
    gflops = flops / t_train / 1e9;
    // inference: a large batch, then batch-1 latency
    m->training = 0;
    t_infer = t_infer_host = bench_median(&d, BENCH_PREDICT, infer_batch, warm, reps, t);
    if (dv.cuda) t_infer = bench_median(&d, BENCH_PREDICT_RESIDENT, infer_batch, warm, reps, t); // the last call's images
    t_b1 = bench_median(&d, BENCH_PREDICT, 1, warm, 3 * reps, t);
    if (cli_get(&c, O_PEAK)) peak = fma_peak_gflops(threads);

    if (json) {
        printf("{\"model\": \"%s\", \"params\": %zu, \"threads\": %d, \"batch\": %d, \"infer_batch\": %d,\n", name,
               m->n_params, threads, batch, infer_batch);
        printf(" \"dataset\": \"%s\", \"image_size\": %d, \"channels\": %d, \"patch\": %d, \"dim\": %d, "
               "\"heads\": %d, \"mlp_dim\": %d, \"branches\": %d, \"depth\": %d, \"classes\": %d, \"tokens\": %d,\n",
               cfg.image_size == 28 && cfg.channels == 1 ? "fmnist" : cfg.image_size == 32 && cfg.channels == 3
               ? "cifar" : "custom", cfg.image_size, cfg.channels, cfg.patch_size, cfg.dim, cfg.heads, cfg.mlp_dim,
               cfg.branches, cfg.depth, cfg.classes, m->T);
        printf(" \"warm\": %d, \"reps\": %d, \"profile_steps\": %d, \"gemm_kernel\": \"%s\",\n", warm, reps,
               dv.cuda ? 0 : psteps, dv.cuda ? "cublas" : pf_gemm_kernel());
        printf(" \"device\": \"%s\", \"backend\": \"%s\", \"precision\": \"%s\",\n", dv.spec, device_backend(&dv),
               dv.bf16 ? "bf16" : "fp32");
        printf(" \"train_img_s\": %.2f, \"train_step_ms\": %.3f, \"infer_img_s\": %.2f, \"infer_batch_ms\": %.3f, "
               "\"latency_b1_ms\": %.3f,\n", batch / t_train, 1e3 * t_train, infer_batch / t_infer, 1e3 * t_infer,
               1e3 * t_b1);
        if (dv.cuda) {
            printf(" \"train_host_img_s\": %.2f, \"infer_host_img_s\": %.2f,\n", batch / t_train_host,
                   infer_batch / t_infer_host);
            printf(" \"ops\": {}}\n");
            goto done;
        }
        printf(" \"train_gflop_per_step\": %.4f, \"train_gflops\": %.2f, \"profiled_step_ms\": %.3f, "
               "\"unprofiled_ms\": %.3f,\n", flops / 1e9, gflops, 1e3 * t_prof, 1e3 * (t_prof - op_s));
        if (peak > 0) printf(" \"peak_gflops\": %.2f, \"peak_frac\": %.4f, \"peak_isa\": \"%s\",\n", peak,
                             gflops / peak, fma_peak_isa());
        printf(" \"ops\": {");
        for (op = 0; op < PF_OP_COUNT; op++) {
            double fs = prof.fwd_s[op] / psteps, bs = prof.bwd_s[op] / psteps;
            printf("%s\n  \"%s\": {\"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"fwd_gflops\": %.2f, \"bwd_gflops\": %.2f, "
                   "\"gflop_per_step\": %.4f, \"share\": %.4f}", op ? "," : "", pf_op_name(op), 1e3 * fs, 1e3 * bs,
                   fs > 0 ? prof.fwd_flops[op] / psteps / fs / 1e9 : 0.0,
                   bs > 0 ? prof.bwd_flops[op] / psteps / bs / 1e9 : 0.0,
                   (prof.fwd_flops[op] + prof.bwd_flops[op]) / psteps / 1e9, t_prof > 0 ? (fs + bs) / t_prof : 0.0);
        }
        printf("}}\n");
    } else if (row) {
        char pk[32] = "-";
        if (peak > 0) snprintf(pk, sizeof pk, "%.1f%%", 100.0 * gflops / peak);
        printf("| %-6s | %7d | %5d | %11.1f | %11.1f | %13.2f | %13.1f | %9s | %9zu |\n", name, threads, batch,
               batch / t_train, infer_batch / t_infer, 1e3 * t_b1, gflops, pk, m->n_params);
    } else {
        printf("model     %s: PF(%dx%d), dim %d, heads %d, mlp %d, %dx%dx%d input, patch %d, %d classes, "
               "%zu parameters\n", name, cfg.branches, cfg.depth, cfg.dim, cfg.heads, cfg.mlp_dim, cfg.image_size,
               cfg.image_size, cfg.channels, cfg.patch_size, cfg.classes, m->n_params);
        if (dv.cuda)
            printf("setup     %s, batch %d, inference batch %d, warm-up %d, medians of %d\n",
                   device_label(&dv, dev_buf, sizeof dev_buf), batch, infer_batch, warm, reps);
        else
            printf("setup     %d thread%s, batch %d, inference batch %d, warm-up %d, medians of %d, gemm kernel %s\n",
                   threads, threads == 1 ? "" : "s", batch, infer_batch, warm, reps, pf_gemm_kernel());
        printf("train     %9.2f img/s   step %.1f ms", batch / t_train, 1e3 * t_train);
        if (!dv.cuda) printf(", %.2f GFLOP, %.1f GFLOP/s", flops / 1e9, gflops);
        if (peak > 0) printf(" = %.1f%% of the %.0f GFLOP/s FMA peak (%s)", 100.0 * gflops / peak, peak,
                             fma_peak_isa());
        printf("\ninfer     %9.2f img/s   %d images in %.1f ms\n", infer_batch / t_infer, infer_batch,
               1e3 * t_infer);
        printf("latency   %9.3f ms      batch 1, median of %d\n", 1e3 * t_b1, 3 * reps);
        if (dv.cuda) {
            printf("          (train and infer with the images on the device; copied from the host each call:\n"
                   "          train %.2f img/s, infer %.2f img/s; latency includes the copies)\n",
                   batch / t_train_host, infer_batch / t_infer_host);
            goto done;
        }
        printf("\nper op, one training step (mean of %d profiled steps of %.1f ms):\n", psteps, 1e3 * t_prof);
        printf("  %-10s %9s %9s %11s %11s %9s %7s\n", "op", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s", "GFLOP",
               "share");
        for (op = 0; op < PF_OP_COUNT; op++) {
            double fs = prof.fwd_s[op] / psteps, bs = prof.bwd_s[op] / psteps;
            printf("  %-10s %9.2f %9.2f %11.1f %11.1f %9.3f %6.1f%%\n", pf_op_name(op), 1e3 * fs, 1e3 * bs,
                   fs > 0 ? prof.fwd_flops[op] / psteps / fs / 1e9 : 0.0,
                   bs > 0 ? prof.bwd_flops[op] / psteps / bs / 1e9 : 0.0,
                   (prof.fwd_flops[op] + prof.bwd_flops[op]) / psteps / 1e9,
                   t_prof > 0 ? 100.0 * (fs + bs) / t_prof : 0.0);
        }
        printf("  %-10s %19.2f %33s %6.1f%%\n", "(other)", 1e3 * (t_prof - op_s), "",
               t_prof > 0 ? 100.0 * (t_prof - op_s) / t_prof : 0.0);
    }
done:
    device_close(&dv);
    free(t);
    free(logits);
    free(labels);
    free(x);
    pf_model_free(m);
    cli_free(&c);
    return 0;
}

// ----------------------------------------------------------------------------
// train, eval, compress, expand

#include <signal.h>
#include <unistd.h>

static volatile int g_stop; // set by SIGINT/SIGTERM: the trainer stops before its next step

static void on_signal(int sig) {
    g_stop = 1;
    signal(sig, SIG_DFL); // a second Ctrl-C ends the program at once
}

// "2,5-7" (1-based, within 1..n) -> flags[0..n)
static void parse_branch_list(const cli *c, int k, int n, unsigned char *flags) {
    const char *s = cli_get(c, k), *p = s;
    memset(flags, 0, (size_t)n);
    for (;;) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p) break;
        if (*end == '-') { p = end + 1; b = strtol(p, &end, 10); if (end == p) break; }
        if (a < 1 || b < a || b > n) usage_error(c, "%s: '%s': branches are numbered 1..%d", c->o[k].name, s, n);
        for (; a <= b; a++) flags[a - 1] = 1;
        if (!*end) return;
        if (*end != ',') break;
        p = end + 1;
    }
    usage_error(c, "%s: '%s' is not a list like 3,5-6", c->o[k].name, s);
}

// The default evaluation split of a training spec: the same source @test
// (NULL for kinds with one split). The result is malloc'd.
static char *test_spec_of(const char *spec) {
    char *t, *at, *hash;
    size_t n = strlen(spec), pre;
    if (strncmp(spec, "fmnist", 6) && strncmp(spec, "cifar10", 7) && strncmp(spec, "cifar100", 8)) return NULL;
    t = (char *)xmalloc(n + 8);
    hash = strchr(spec, '#');
    at = strchr(spec, '@');
    if (at && hash && at > hash) at = NULL;
    pre = at ? (size_t)(at - spec) : hash ? (size_t)(hash - spec) : n; // an @train is replaced
    memcpy(t, spec, pre);
    snprintf(t + pre, n + 8 - pre, "@test%s", hash ? hash : "");
    return t;
}

static void load_data(const char *spec, int split, pf_dataset *d) {
    if (pf_dataset_load(spec, split, d) != PF_OK) die(1, "%s", pf_last_error());
}

typedef struct progress_ctx {
    int tty, quiet;
    double last_print;
    int n_branches;
} progress_ctx;

static void on_progress(const pf_train_info *p, void *user) {
    progress_ctx *ctx = (progress_ctx *)user;
    if (ctx->quiet) return;
    if (p->event == PF_EV_STEP) {
        double now = pf_time();
        if (!ctx->tty || (now - ctx->last_print < 0.2 && p->batch != p->batches)) return;
        ctx->last_print = now;
        {
            int w = 24, fill = p->batches ? (int)((double)w * p->batch / p->batches) : 0, i;
            char bar[32];
            for (i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
            bar[w] = 0;
            printf("\r  epoch %d stage %d [%d br] %-6s [%s] %d/%d  loss %.4f  acc %5.1f%%  %6.0f img/s  lr %.2e ",
                   p->epoch + 1, p->stage, p->active, p->pass, bar, p->batch, p->batches, p->loss, 100 * p->acc,
                   p->img_s, p->lr);
            fflush(stdout);
        }
    } else if (p->event == PF_EV_EVAL) {
        if (ctx->tty) printf("\r\033[K");
        printf("epoch %3d  stage %d  branches %d  step %7lld", p->epoch + 1, p->stage, p->active, (long long)p->step);
        if (isfinite(p->val_loss)) printf("  val loss %.4f  val acc %6.2f%%", p->val_loss, 100 * p->val_acc);
        printf("  %.0f s\n", p->time_s);
        fflush(stdout);
    } else if (p->event == PF_EV_STAGE) {
        if (ctx->tty) printf("\r\033[K");
        printf("stage %d: training branch%s 1..%d\n", p->stage, p->active > 1 ? "es" : "", p->active);
        fflush(stdout);
    }
}

static void print_sweep(const double *sweep, int n, const pf_model *m) {
    int k;
    printf("\nbranch sweep (test accuracy of the first k branches):\n   k   params     accuracy\n");
    for (k = 1; k <= n; k++) {
        printf("  %2d  %8zu   %7.2f%%\n", k, prefix_params(m, k), 100 * sweep[k - 1]);
    }
}

static int cmd_train(int argc, char **argv) {
    enum { O_DATA, O_TEST, O_VAL, O_ARCH, O_INIT = O_ARCH + A_N, O_RESUME, O_TRAIN_BRANCHES, O_TRAIN_HEAD,
           O_SCHEDULE, O_EPOCHS, O_BATCH, O_LR, O_OPTIMIZER, O_WD, O_LR_SCHED, O_WARMUP, O_MIN_LR, O_CLIP,
           O_SMOOTH, O_NEW_BRANCH, O_FREEZE_OLD, O_OLD_LR, O_PATIENCE, O_MIN_DELTA, O_PREFIX_CLIP, O_CROP,
           O_FLIP, O_RANDAUG, O_THREADS, O_DEVICE, O_BF16, O_SEED, O_OUT, O_LOG, O_LOG_EVERY, O_EVAL_BATCH, O_QUIET,
           O_N };
    static const optdef o[O_N] = {
        {"--data", "SPEC", "required", "training data: fmnist[:DIR] cifar10[:DIR] cifar100[:DIR] folder:DIR npy:X,Y "
                                       "[@train|@test] [#classes=LIST] [#limit=N]"},
        {"--test", "SPEC", "the @test split of --data", "data for the final evaluation and branch sweep ('none': skip)"},
        {"--val", "F|SPEC", "0.1", "validation: a seeded fraction of --data, or a dataset spec"},
        ARCH_OPTDEFS,
        {"--init", "FILE", "none", "start from these weights (architecture from the file)"},
        {"--resume", "FILE", "none", "continue the run saved in FILE (normally --out) bit-identically"},
        {"--train-branches", "LIST", "all", "train only these branches (1-based, e.g. 5-6), others and the stem frozen; "
                                             "joint schedule"},
        {"--train-head", "all|off|K", "all (off with --train-branches)", "train the head, freeze it, or train only its "
                                                                         "rows K.. (classes an expand added)"},
        {"--schedule", "staged|interleaved|joint", "staged", "progressive stages, the authors' loop, or all at once"},
        {"--epochs", "N[,N2,...]", "10", "staged: cap per stage (a list: stage 1, 2, ..., the last repeats); otherwise the total"},
        {"--batch", "N", "128", "images per step"},
        {"--lr", "F", "1e-3", "peak learning rate"},
        {"--optimizer", "adamw|adam", "adamw", "decoupled weight decay, or L2 in the gradient"},
        {"--wd", "F", "0.05", "weight decay (Linear weights only)"},
        {"--lr-schedule", "cosine|constant", "cosine", "warmup + cosine (per stage when staged), or constant"},
        {"--warmup", "EPOCHS", "1", "linear warmup length (fractions allowed)"},
        {"--min-lr", "F", "0", "cosine floor as a fraction of --lr"},
        {"--clip", "F", "0 (off)", "clip the global grad norm"},
        {"--label-smoothing", "F", "0", "label smoothing of the cross-entropy"},
        {"--new-branch", "zero|random", "zero", "staged: a new branch starts with zeroed output projections, or random"},
        {"--freeze-old", "on|off", "off", "staged: earlier branches stop training"},
        {"--old-lr", "F", "1", "staged: learning-rate multiplier of earlier branches, stem and head (from stage 2)"},
        {"--patience", "N", "3", "staged: evaluations without improvement that end a stage (0: epochs only)"},
        {"--min-delta", "F", "0", "staged: validation-loss improvement that counts"},
        {"--prefix-clip", "F", "1", "interleaved: grad-norm clip of the prefix steps"},
        {"--crop", "PAD", "0 (off)", "random crop with this zero padding"},
        {"--flip", "on|off", "off", "random horizontal flip"},
        {"--randaug", "N,M", "off", "RandAugment with N ops at magnitude M (0..30)"},
        {"--threads", "N", "all cores", "threads"},
        DEVICE_OPTDEFS,
        {"--seed", "N", "0", "initialisation, split, data order, augmentation, dropout"},
        {"--out", "FILE", "required", "checkpoint with training state, rewritten at every epoch end"},
        {"--log", "FILE", "none", "JSON-lines log, one object per event (paraformer plot reads it)"},
        {"--log-every", "N", "~20 per epoch", "steps per train log line"},
        {"--eval-batch", "N", "256", "batch of evaluations"},
        {"--quiet", NULL, "off", "only the final results"},
    };
    cli c = {"train", o, O_N, 0, NULL, NULL};
    pf_dataset all, train, val, test;
    pf_config cfg;
    pf_train_opts opts;
    pf_model *m = NULL;
    pf_trainer t;
    progress_ctx ctx;
    device dv;
    const char *preset = "paraformer", *resume, *init, *out, *test_s, *val_s;
    char *test_owned = NULL, args[1024], dev_buf[256];
    float embed_std = 0.02f;
    double val_frac = 0.1, loss = NAN, acc = NAN, *sweep = NULL;
    int i, have_test = 0, arch_given = 0;
    pf_status st;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer train --data SPEC --out M.safetensors [options]\n\n"
               "Trains a ParaFormer progressively (docs/design.md §3). The checkpoint at --out carries the training state and\n"
               "is rewritten atomically at every epoch end, so an interrupted run continues bit-identically with\n"
               "the same command plus --resume M.safetensors. At the end: test accuracy and the branch sweep.\n\n"
               "--preset also takes training recipes: fmnist-small (the tuned Fashion-MNIST run), paper (the\n"
               "authors' setup). Flags override the preset. Without --image-size/--channels/--classes/--mean/--std\n"
               "the model takes them from the data (mean/std: per-channel statistics of the training split).\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    out = cli_need(&c, O_OUT);
    resume = cli_get(&c, O_RESUME);
    init = cli_get(&c, O_INIT);
    for (i = O_ARCH + 1; i < O_ARCH + A_N; i++) arch_given |= cli_get(&c, i) != NULL;
    if (cli_get(&c, O_ARCH + A_PRESET)) preset = cli_get(&c, O_ARCH + A_PRESET);
    if (resume && init) usage_error(&c, "--resume and --init exclude each other");
    if (init && arch_given) usage_error(&c, "architecture flags do not apply with --init (the model comes from the file)");
    if (resume) { /* fail fast, before reading any data */
        pf_st_file *f;
        if (pf_st_open(resume, &f) != PF_OK) die_file(resume);
        if (!pf_st_meta(f, "train_state"))
            die(1, "%s: no \"train_state\" in the metadata: a model without training state (use --init to start a new "
                "run from its weights)", resume);
        pf_st_close(f);
    }
    if (pf_train_preset(preset, &cfg, &opts, &embed_std) != PF_OK)
        usage_error(&c, "--preset: unknown preset '%s' (fmnist-small, paper, paraformer, vit)", preset);
    // training options over the preset's
    if (cli_get(&c, O_SCHEDULE)) {
        static const char *const S[] = {"staged", "interleaved", "joint"};
        opts.schedule = parse_choice(&c, O_SCHEDULE, S, 3);
    }
    if (cli_get(&c, O_EPOCHS)) {
        float e[PF_TRAIN_MAX_LIST];
        int n = parse_floats(&c, O_EPOCHS, e, PF_TRAIN_MAX_LIST), i;
        for (i = 0; i < n; i++)
            if (e[i] != (float)(int)e[i] || e[i] < 1 || e[i] > 100000)
                usage_error(&c, "--epochs: '%s': each value must be an integer in 1..100000", cli_get(&c, O_EPOCHS));
        memset(opts.stage_epochs, 0, sizeof opts.stage_epochs);
        opts.epochs = (int)e[n - 1];
        if (n > 1) {
            if (opts.schedule != PF_SCHED_STAGED) usage_error(&c, "--epochs: a list of stage caps needs --schedule staged");
            for (i = 0; i < n; i++) opts.stage_epochs[i] = (int)e[i];
        }
    }
    if (cli_get(&c, O_BATCH)) opts.batch = (int)parse_int(&c, O_BATCH, 1, 65536);
    if (cli_get(&c, O_LR)) opts.optim.lr = parse_float(&c, O_LR, 1e-9, 9.99);
    if (cli_get(&c, O_OPTIMIZER)) {
        static const char *const S[] = {"adamw", "adam"};
        opts.optim.adam = parse_choice(&c, O_OPTIMIZER, S, 2);
    }
    if (cli_get(&c, O_WD)) opts.optim.weight_decay = parse_float(&c, O_WD, 0, 9.99);
    if (cli_get(&c, O_LR_SCHED)) {
        static const char *const S[] = {"cosine", "constant"};
        opts.lr_schedule = parse_choice(&c, O_LR_SCHED, S, 2);
    }
    if (cli_get(&c, O_WARMUP)) opts.warmup = parse_float(&c, O_WARMUP, 0, 100000);
    if (cli_get(&c, O_MIN_LR)) opts.min_lr = parse_float(&c, O_MIN_LR, 0, 1);
    if (cli_get(&c, O_CLIP)) opts.optim.clip = parse_float(&c, O_CLIP, 0, 1e9);
    if (cli_get(&c, O_SMOOTH)) opts.label_smoothing = parse_float(&c, O_SMOOTH, 0, 0.999);
    if (cli_get(&c, O_NEW_BRANCH)) {
        static const char *const S[] = {"zero", "random"};
        opts.new_branch = parse_choice(&c, O_NEW_BRANCH, S, 2);
    }
    if (cli_get(&c, O_FREEZE_OLD)) opts.freeze_old = parse_choice(&c, O_FREEZE_OLD, ONOFF, 8) % 2;
    if (cli_get(&c, O_OLD_LR)) opts.old_lr = parse_float(&c, O_OLD_LR, 0, 100);
    if (cli_get(&c, O_PATIENCE)) opts.patience = (int)parse_int(&c, O_PATIENCE, 0, 100000);
    if (cli_get(&c, O_MIN_DELTA)) opts.min_delta = parse_float(&c, O_MIN_DELTA, 0, 1e9);
    if (cli_get(&c, O_PREFIX_CLIP)) opts.prefix_clip = parse_float(&c, O_PREFIX_CLIP, 0, 1e9);
    if (cli_get(&c, O_CROP)) opts.aug.crop_pad = (int)parse_int(&c, O_CROP, 0, 64);
    if (cli_get(&c, O_FLIP)) opts.aug.flip = parse_choice(&c, O_FLIP, ONOFF, 8) % 2;
    if (cli_get(&c, O_RANDAUG)) {
        float v[2];
        if (parse_floats(&c, O_RANDAUG, v, 2) != 2 || v[0] != (int)v[0] || v[1] != (int)v[1])
            usage_error(&c, "--randaug: give N,M as two integers, e.g. 2,14");
        opts.aug.randaug_n = (int)v[0];
        opts.aug.randaug_m = (int)v[1];
    }
    if (cli_get(&c, O_SEED)) opts.seed = parse_u64(&c, O_SEED);
    if (cli_get(&c, O_LOG_EVERY)) opts.log_every = (int)parse_int(&c, O_LOG_EVERY, 1, INT_MAX);
    if (cli_get(&c, O_EVAL_BATCH)) opts.eval_batch = (int)parse_int(&c, O_EVAL_BATCH, 1, 65536);
    if (cli_get(&c, O_THREADS)) pf_set_threads((int)parse_int(&c, O_THREADS, 1, 1024));
    parse_device(&c, O_DEVICE, O_BF16, &dv);
    if (cli_get(&c, O_TRAIN_BRANCHES)) {
        if (opts.schedule != PF_SCHED_JOINT && cli_get(&c, O_SCHEDULE))
            usage_error(&c, "--train-branches trains some branches jointly: use --schedule joint (the default then)");
        opts.schedule = PF_SCHED_JOINT;
        opts.keep_trainable = 1;
    }
    if (pf_train_opts_validate(&opts) != PF_OK) usage_error(&c, "%s", pf_last_error());
    val_s = cli_get(&c, O_VAL);
    if (val_s) {
        char *end;
        double v = strtod(val_s, &end);
        if (end != val_s && !*end) {
            if (!(v >= 0 && v < 1)) usage_error(&c, "--val: a fraction must be in [0, 1)");
            val_frac = v;
            val_s = NULL;
        }
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    // data
    load_data(cli_need(&c, O_DATA), PF_SPLIT_TRAIN, &all);
    if (val_s) {
        train = all;
        load_data(val_s, PF_SPLIT_TEST, &val);
    } else if (val_frac > 0) {
        if (pf_dataset_split(&all, val_frac, opts.seed, &train, &val) != PF_OK) die(1, "%s", pf_last_error());
        pf_dataset_free(&all);
    } else {
        train = all;
        memset(&val, 0, sizeof val);
    }
    test_s = cli_get(&c, O_TEST);
    if (!test_s) test_s = test_owned = test_spec_of(cli_need(&c, O_DATA));
    if (test_s && strcmp(test_s, "none")) {
        load_data(test_s, PF_SPLIT_TEST, &test);
        have_test = 1;
    }

    // model (with --resume built as the first run built it: the trainer then
    // checks that the checkpoint's config is this one and loads its weights)
    if (init) {
        if (pf_model_load(init, &m) != PF_OK) die_file(init);
    } else {
        // the data decides what the flags and the preset leave open
        if (!cli_get(&c, O_ARCH + A_IMAGE) && strcmp(preset, "paper") && train.h == train.w) cfg.image_size = train.h;
        if (!cli_get(&c, O_ARCH + A_CHANNELS)) cfg.channels = train.c;
        if (!cli_get(&c, O_ARCH + A_CLASSES)) cfg.classes = train.classes;
        arch_flags(&c, O_ARCH, &cfg);
        if (!cli_get(&c, O_ARCH + A_MEAN) && !cli_get(&c, O_ARCH + A_STD) && strcmp(preset, "paper"))
            pf_dataset_stats(&train, cfg.mean, cfg.std);
        if (pf_model_create(&cfg, &m) != PF_OK) die(2, "train: %s", pf_last_error());
        pf_model_init(m, opts.seed, embed_std);
    }
    if (train.c != m->cfg.channels && !(train.c == 3 && m->cfg.channels == 1) && !(train.c == 1 && m->cfg.channels == 3))
        die(1, "%s has %d channels, the model %d", train.name, train.c, m->cfg.channels);
    if (pf_trainer_init(&t, m, &train, val.n ? &val : NULL, &opts) != PF_OK) die(1, "%s", pf_last_error());
    if (cli_get(&c, O_TRAIN_BRANCHES)) {
        const char *h = cli_get(&c, O_TRAIN_HEAD);
        parse_branch_list(&c, O_TRAIN_BRANCHES, m->cfg.branches, m->train_branch);
        m->train_stem = 0;
        m->train_head = 0;
        if (h && !strcmp(h, "all")) m->train_head = 1;
        else if (h && strcmp(h, "off")) {
            m->train_head = 1;
            m->head_rows_from = (int)parse_int(&c, O_TRAIN_HEAD, 0, m->cfg.classes - 1);
        }
    } else if (cli_get(&c, O_TRAIN_HEAD)) {
        usage_error(&c, "--train-head goes with --train-branches");
    }
    snprintf(args, sizeof args, "{\"data\":\"%.300s\",\"preset\":\"%.40s\"}", cli_need(&c, O_DATA), preset);
    for (i = 0; args[i]; i++) if (args[i] == '\\' || (unsigned char)args[i] < 0x20) args[i] = '_';
    t.meta_extra = args;
    if (resume && pf_trainer_resume(&t, resume) != PF_OK) die(1, "%s", pf_last_error());
    if (resume && strcmp(out, resume))
        fprintf(stderr, "note: resuming from %s, saving to %s\n", resume, out);
    if (cli_get(&c, O_LOG)) {
        if (pf_trainer_open_log(&t, cli_get(&c, O_LOG)) != PF_OK) die(1, "%s", pf_last_error());
        if (!resume) {
            char cj[2048], line[3072];
            pf_config_to_json(&m->cfg, cj, sizeof cj);
            snprintf(line, sizeof line, "{\"event\":\"start\",\"schedule\":\"%s\",\"branches\":%d,\"depth\":%d,"
                     "\"params\":%zu,\"train\":%d,\"val\":%d,\"preset\":\"%.40s\",\"device\":\"%.100s\","
                     "\"backend\":\"%s\",\"precision\":\"%s\",\"config\":%s}",
                     pf_schedule_name(opts.schedule), m->cfg.branches, m->cfg.depth, m->n_params, train.n, val.n,
                     preset, dv.spec, device_backend(&dv), dv.bf16 ? "bf16" : "fp32", cj);
            pf_trainer_log(&t, line);
        }
    }
    // the device last: it uploads the model as init or --resume left it
    t.backend = device_open(&dv, m, t.o.batch > t.o.eval_batch ? t.o.batch : t.o.eval_batch);
    t.out_path = out;
    t.stop = &g_stop;
    memset(&ctx, 0, sizeof ctx);
    ctx.tty = isatty(1);
    ctx.quiet = cli_get(&c, O_QUIET) != NULL;
    t.progress = on_progress;
    t.user = &ctx;
    if (!ctx.quiet && !dv.cuda)
        printf("train: %s, %d train / %d val images, %s, %d x %d branches x layers, %zu parameters, %d threads\n",
               train.name, train.n, val.n, pf_schedule_name(opts.schedule), m->cfg.branches, m->cfg.depth,
               m->n_params, pf_get_threads());
    else if (!ctx.quiet)
        printf("train: %s, %d train / %d val images, %s, %d x %d branches x layers, %zu parameters, on %s\n",
               train.name, train.n, val.n, pf_schedule_name(opts.schedule), m->cfg.branches, m->cfg.depth,
               m->n_params, device_label(&dv, dev_buf, sizeof dev_buf));
    if (resume && t.s.done && !ctx.quiet) printf("the run in %s has finished; evaluating it\n", resume);
    st = pf_trainer_run(&t);
    if (st == PF_ERR_INTERRUPTED) {
        if (ctx.tty) printf("\n");
        fprintf(stderr, "interrupted at epoch %d (step %lld). %s holds the last finished epoch; continue with the same "
                "command and --resume %s\n", t.s.epoch + 1, (long long)t.s.step, out, out);
    } else if (st != PF_OK) {
        die(1, "%s", pf_last_error());
    }
    if (st == PF_OK && have_test) {
        char line[4096];
        size_t len;
        int k;
        sweep = (double *)xmalloc((size_t)m->cfg.branches * sizeof(double));
        if (pf_evaluate_on(m, t.backend, &test, opts.eval_batch, &loss, &acc, NULL, sweep) != PF_OK)
            die(1, "%s", pf_last_error());
        len = (size_t)snprintf(line, sizeof line, "{\"event\":\"sweep\",\"split\":\"test\",\"step\":%lld,\"accuracy\":%.6g,"
                               "\"loss\":%.6g,\"sweep\":[", (long long)t.s.step, acc, loss);
        for (k = 0; k < m->active && len < sizeof line; k++)
            len += (size_t)snprintf(line + len, sizeof line - len, "%s%.6g", k ? "," : "", sweep[k]);
        if (len < sizeof line) snprintf(line + len, sizeof line - len, "]}");
        pf_trainer_log(&t, line);
        snprintf(line, sizeof line, "{\"event\":\"end\",\"step\":%lld,\"time_s\":%.1f,\"test_accuracy\":%.6g}",
                 (long long)t.s.step, t.s.time_s, acc);
        pf_trainer_log(&t, line);
        print_sweep(sweep, m->active, m);
        printf("test accuracy %.2f%% (%d images, %s), loss %.4f; model in %s\n", 100 * acc, test.n, test.name, loss, out);
    } else if (st == PF_OK) {
        printf("done; model in %s\n", out);
    }
    free(sweep);
    free(test_owned);
    pf_trainer_free(&t);
    device_close(&dv);
    pf_model_free(m);
    pf_dataset_free(&train);
    pf_dataset_free(&val);
    if (have_test) pf_dataset_free(&test);
    cli_free(&c);
    return st == PF_ERR_INTERRUPTED ? 130 : 0;
}

static int cmd_eval(int argc, char **argv) {
    enum { O_MODEL, O_DATA, O_SWEEP, O_JSON, O_BRANCHES, O_BATCH, O_THREADS, O_DEVICE, O_BF16, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint (safetensors)"},
        {"--data", "SPEC", "required", "dataset spec as for train (default split: test)"},
        {"--sweep", NULL, "off", "also the accuracy of every branch prefix k = 1..n, in one pass"},
        {"--json", NULL, "off", "print one JSON object (docs/design.md §4)"},
        {"--branches", "K", "all", "evaluate the first K branches"},
        {"--batch", "N", "256", "images per forward"},
        {"--threads", "N", "all cores", "threads"},
        DEVICE_OPTDEFS,
    };
    cli c = {"eval", o, O_N, 0, NULL, NULL};
    pf_model *m = NULL;
    pf_dataset d;
    device dv;
    const pf_backend *be;
    char dev_buf[256];
    double loss, acc, *per_class, *sweep = NULL;
    int k, K, do_sweep, batch = 256;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer eval --model FILE --data SPEC [--sweep] [--json]\n\n"
               "Accuracy, loss and per-class accuracy of a model on a dataset; with --sweep the accuracy of the first\n"
               "k branches for every k (the compression curve).\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    if (cli_get(&c, O_THREADS)) pf_set_threads((int)parse_int(&c, O_THREADS, 1, 1024));
    if (cli_get(&c, O_BATCH)) batch = (int)parse_int(&c, O_BATCH, 1, 65536);
    parse_device(&c, O_DEVICE, O_BF16, &dv);
    if (pf_model_load(cli_need(&c, O_MODEL), &m) != PF_OK) die_file(cli_need(&c, O_MODEL));
    if (cli_get(&c, O_BRANCHES)) pf_model_set_active(m, (int)parse_int(&c, O_BRANCHES, 1, m->cfg.branches));
    load_data(cli_need(&c, O_DATA), PF_SPLIT_TEST, &d);
    K = m->cfg.classes;
    do_sweep = cli_get(&c, O_SWEEP) != NULL;
    per_class = (double *)xmalloc((size_t)K * sizeof(double));
    if (do_sweep) sweep = (double *)xmalloc((size_t)m->active * sizeof(double));
    be = device_open(&dv, m, batch < d.n ? batch : d.n > 0 ? d.n : 1);
    if (pf_evaluate_on(m, be, &d, batch, &loss, &acc, per_class, sweep) != PF_OK) die(1, "%s", pf_last_error());
    if (cli_get(&c, O_JSON)) {
        printf("{\"accuracy\": %.6g, \"loss\": %.6g, \"n\": %d, \"branches\": %d, \"per_class\": [", acc, loss, d.n,
               m->active);
        for (k = 0; k < K; k++) {
            if (isfinite(per_class[k])) printf("%s%.6g", k ? ", " : "", per_class[k]);
            else printf("%snull", k ? ", " : "");
        }
        printf("]");
        if (do_sweep) {
            printf(", \"sweep\": [");
            for (k = 0; k < m->active; k++) printf("%s%.6g", k ? ", " : "", sweep[k]);
            printf("]");
        }
        printf(", \"model\": ");
        json_str(stdout, cli_need(&c, O_MODEL));
        printf(", \"data\": ");
        json_str(stdout, d.name);
        printf("}\n");
    } else {
        printf("%s on %s: accuracy %.2f%% (%d images), loss %.4f, %d branch%s%s%s\n\nper class:\n",
               cli_need(&c, O_MODEL), d.name, 100 * acc, d.n, loss, m->active, m->active > 1 ? "es" : "",
               dv.cuda ? ", on " : "", dv.cuda ? device_label(&dv, dev_buf, sizeof dev_buf) : "");
        for (k = 0; k < K; k++) {
            const char *name = d.class_names && k < d.classes ? d.class_names[k] : "";
            if (isfinite(per_class[k])) printf("  %3d %-16s %7.2f%%\n", k, name, 100 * per_class[k]);
            else printf("  %3d %-16s      --  (no images)\n", k, name);
        }
        if (do_sweep) print_sweep(sweep, m->active, m);
    }
    device_close(&dv);
    free(per_class);
    free(sweep);
    pf_dataset_free(&d);
    pf_model_free(m);
    cli_free(&c);
    return 0;
}

static int cmd_compress(int argc, char **argv) {
    enum { O_MODEL, O_KEEP, O_OUT, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint"},
        {"--keep", "K", "required", "branches to keep (the first K)"},
        {"--out", "FILE", "required", "the compressed model (no training state)"},
    };
    cli c = {"compress", o, O_N, 0, NULL, NULL};
    pf_model *m = NULL, *m2 = NULL;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer compress --model FILE --keep K --out FILE\n\n"
               "The paper's compression: keep the first K branches. The result predicts exactly like the full model\n"
               "evaluated on its first K branches (eval --branches K).\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    if (pf_model_load(cli_need(&c, O_MODEL), &m) != PF_OK) die_file(cli_need(&c, O_MODEL));
    if (pf_model_compress(m, (int)parse_int(&c, O_KEEP, 1, m->cfg.branches), &m2) != PF_OK) die(1, "%s", pf_last_error());
    if (pf_model_save(m2, cli_need(&c, O_OUT)) != PF_OK) die_file(cli_need(&c, O_OUT));
    printf("%s: %d of %d branches, %zu of %zu parameters (%.2fx smaller)\n", cli_need(&c, O_OUT), m2->cfg.branches,
           m->cfg.branches, m2->n_params, m->n_params, (double)m->n_params / (double)m2->n_params);
    pf_model_free(m);
    pf_model_free(m2);
    cli_free(&c);
    return 0;
}

static int cmd_expand(int argc, char **argv) {
    enum { O_MODEL, O_ADD, O_CLASSES, O_NEW_BRANCH, O_SEED, O_OUT, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint"},
        {"--add", "J", "0", "branches to append"},
        {"--classes", "K2", "unchanged", "grow the classifier to K2 outputs (old rows kept)"},
        {"--new-branch", "zero|random", "zero", "new branches start with zeroed output projections, or random"},
        {"--seed", "N", "0", "initialisation of the new tensors"},
        {"--out", "FILE", "required", "the expanded model (no training state)"},
    };
    static const char *const NB[] = {"zero", "random"};
    cli c = {"expand", o, O_N, 0, NULL, NULL};
    pf_model *m = NULL, *m2 = NULL;
    int add, classes = 0, nb = PF_NEW_ZERO;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer expand --model FILE --add J [--classes K2] --out FILE\n\n"
               "Continual learning: append J branches (and grow the classifier), then fine-tune only the new parts\n"
               "with `paraformer train --init FILE --train-branches LIST [--train-head K]`.\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    if (pf_model_load(cli_need(&c, O_MODEL), &m) != PF_OK) die_file(cli_need(&c, O_MODEL));
    add = cli_get(&c, O_ADD) ? (int)parse_int(&c, O_ADD, 0, 1024) : 0;
    if (cli_get(&c, O_CLASSES)) classes = (int)parse_int(&c, O_CLASSES, m->cfg.classes, 1 << 20);
    if (cli_get(&c, O_NEW_BRANCH)) nb = parse_choice(&c, O_NEW_BRANCH, NB, 2);
    if (pf_model_expand(m, add, classes, nb, cli_get(&c, O_SEED) ? parse_u64(&c, O_SEED) : 0, &m2) != PF_OK)
        usage_error(&c, "%s", pf_last_error());
    if (pf_model_save(m2, cli_need(&c, O_OUT)) != PF_OK) die_file(cli_need(&c, O_OUT));
    printf("%s: %d -> %d branches, %d -> %d classes, %zu parameters\n", cli_need(&c, O_OUT), m->cfg.branches,
           m2->cfg.branches, m->cfg.classes, m2->cfg.classes, m2->n_params);
    printf("fine-tune the new parts with:\n  paraformer train --init %s --train-branches %d-%d", cli_need(&c, O_OUT),
           m->cfg.branches + 1, m2->cfg.branches);
    if (m2->cfg.classes > m->cfg.classes) printf(" --train-head %d", m->cfg.classes);
    printf(" --data ... --out ...\n");
    pf_model_free(m);
    pf_model_free(m2);
    cli_free(&c);
    return 0;
}

// ----------------------------------------------------------------------------
// plot
//
// Training logs (JSON lines written by `paraformer train`) -> one self-contained
// SVG: loss and accuracy against the step with the stage starts marked, and
// accuracy against the number of branches from the last sweep. Each line is
// checked with the library's JSON reader and read with pf_json_number/
// numbers/string; unknown events and keys are ignored. A resume event drops
// what the log holds beyond the step it resumes from (it is logged again).

#define PLOT_MAX_LINE (1 << 20)  // bytes in one log line
#define PLOT_MAX_LINES 10000000L // lines in one log
#define PLOT_MAX_POINTS 2000     // points per drawn series (beyond: bins averaged)
#define PLOT_MAX_RUNS 32         // --log files
#define PLOT_MAX_SWEEP 64        // branch prefixes in a sweep
#define PLOT_MAX_WARN 5          // invalid-line warnings per log (then a count)

typedef struct series {
    double *x, *y;
    size_t n, cap;
    size_t bin; // logged points averaged into each drawn one (1: none)
} series;

typedef struct stage_mark {
    double step;
    int stage, active; // active 0: not logged
} stage_mark;

typedef struct plot_run {
    const char *path;
    char label[128], schedule[32], data[128], split[32];
    double branches, depth, params, test_acc; // NAN when not logged
    series loss, acc, vloss, vacc;            // train loss, train acc (%), val loss, val acc (%)
    stage_mark *marks;
    int n_marks, cap_marks;
    double sweep[PLOT_MAX_SWEEP], sweep_step; // percent (NAN: not finite)
    int n_sweep;
} plot_run;

static void *xrealloc_n(void *p, size_t *cap, size_t need, size_t elem) {
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    if (c > SIZE_MAX / elem) die(1, "out of memory");
    if (c != *cap) {
        p = realloc(p, c * elem);
        if (!p) die(1, "out of memory (%zu bytes)", c * elem);
        *cap = c;
    }
    return p;
}

static void series_add(series *s, double x, double y) {
    size_t cap;
    if (!(fabs(x) < 1e15 && fabs(y) < 1e12)) return; // NaN, inf, absurd
    if (s->n == s->cap) {
        cap = s->cap;
        s->x = (double *)xrealloc_n(s->x, &cap, s->n + 1, sizeof(double));
        cap = s->cap;
        s->y = (double *)xrealloc_n(s->y, &cap, s->n + 1, sizeof(double));
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

static void series_drop_after(series *s, double step) {
    size_t i, k = 0;
    for (i = 0; i < s->n; i++)
        if (s->x[i] <= step) s->x[k] = s->x[i], s->y[k++] = s->y[i];
    s->n = k;
}

static int cmp_xy(const void *a, const void *b) {
    const double *p = (const double *)a, *q = (const double *)b;
    return p[0] < q[0] ? -1 : p[0] > q[0] ? 1 : p[1] < q[1] ? -1 : p[1] > q[1];
}

// sorted by step, then consecutive bins averaged down to PLOT_MAX_POINTS
static void series_finish(series *s) {
    size_t i, k, b, n = 0;
    int sorted = 1;
    for (i = 1; i < s->n; i++)
        if (s->x[i] < s->x[i - 1]) sorted = 0;
    if (!sorted) {
        double *xy = (double *)xmalloc(2 * s->n * sizeof(double));
        for (i = 0; i < s->n; i++) xy[2 * i] = s->x[i], xy[2 * i + 1] = s->y[i];
        qsort(xy, s->n, 2 * sizeof(double), cmp_xy);
        for (i = 0; i < s->n; i++) s->x[i] = xy[2 * i], s->y[i] = xy[2 * i + 1];
        free(xy);
    }
    s->bin = (s->n + PLOT_MAX_POINTS - 1) / PLOT_MAX_POINTS;
    if (s->bin <= 1) {
        s->bin = 1;
        return;
    }
    for (i = 0; i < s->n; i += b) {
        double sx = 0.0, sy = 0.0;
        b = s->n - i < s->bin ? s->n - i : s->bin;
        for (k = i; k < i + b; k++) sx += s->x[k], sy += s->y[k];
        s->x[n] = sx / (double)b, s->y[n++] = sy / (double)b;
    }
    s->n = n;
}

static void series_free(series *s) {
    free(s->x);
    free(s->y);
}

// a finite number under `key`
static int log_num(const char *s, size_t n, const char *key, double *v) {
    return pf_json_number(s, n, key, v) && isfinite(*v);
}

// NULL when s[0..n) is one JSON object (the library's reader), else why not
static const char *json_object_error(const char *s, size_t n) {
    pf__json j;
    memset(&j, 0, sizeof j);
    j.s = s, j.n = n;
    if (pf__jpeek(&j) != '{') return "it does not start with {";
    if (!pf__jskip(&j)) return j.err ? j.err : "bad JSON";
    if (pf__jpeek(&j) != -1) return "text after the object";
    return NULL;
}

// One event into r; 0 when the line is no log event (no "event" string).
static int plot_event(plot_run *r, const char *s, size_t n) {
    char ev[32], str[128];
    double step = NAN, v, vals[PLOT_MAX_SWEEP];
    int k, i, has_step;
    if (!pf_json_string(s, n, "event", ev, sizeof ev)) return 0;
    has_step = log_num(s, n, "step", &step);
    if (!strcmp(ev, "start")) {
        if (pf_json_string(s, n, "name", str, sizeof str) && *str) snprintf(r->label, sizeof r->label, "%s", str);
        pf_json_string(s, n, "schedule", r->schedule, sizeof r->schedule); // the line is valid: all or nothing
        pf_json_string(s, n, "data", r->data, sizeof r->data);
        if (log_num(s, n, "branches", &v)) r->branches = v;
        if (log_num(s, n, "depth", &v)) r->depth = v;
        if (log_num(s, n, "params", &v)) r->params = v;
    } else if (!strcmp(ev, "resume") && has_step) { // what follows replaces what was logged after `step`
        series_drop_after(&r->loss, step);
        series_drop_after(&r->acc, step);
        series_drop_after(&r->vloss, step);
        series_drop_after(&r->vacc, step);
        for (i = k = 0; i < r->n_marks; i++)
            if (r->marks[i].step <= step) r->marks[k++] = r->marks[i];
        r->n_marks = k;
        if (r->n_sweep && r->sweep_step > step) r->n_sweep = 0;
        r->test_acc = NAN;
    } else if (!strcmp(ev, "train") && has_step) {
        if (log_num(s, n, "loss", &v)) series_add(&r->loss, step, v);
        if (log_num(s, n, "acc", &v)) series_add(&r->acc, step, 100.0 * v);
    } else if (!strcmp(ev, "eval") && has_step) {
        if (pf_json_string(s, n, "split", str, sizeof str) && strcmp(str, "val")) return 1;
        if (log_num(s, n, "loss", &v)) series_add(&r->vloss, step, v);
        if (log_num(s, n, "accuracy", &v)) series_add(&r->vacc, step, 100.0 * v);
    } else if (!strcmp(ev, "stage") && has_step) {
        stage_mark m;
        m.step = step;
        m.stage = log_num(s, n, "stage", &v) && v >= 0 && v < 1e6 ? (int)v : 0;
        m.active = log_num(s, n, "active", &v) && v >= 1 && v < 1e6 ? (int)v : 0;
        for (i = 0; i < r->n_marks; i++) // logged again after a resume
            if (r->marks[i].step == m.step && r->marks[i].stage == m.stage) return 1;
        if (r->n_marks == r->cap_marks) {
            size_t cap = (size_t)r->cap_marks;
            r->marks = (stage_mark *)xrealloc_n(r->marks, &cap, (size_t)r->n_marks + 1, sizeof(stage_mark));
            if (cap > INT_MAX) die(1, "%s: too many stage events", r->path);
            r->cap_marks = (int)cap;
        }
        r->marks[r->n_marks++] = m;
    } else if (!strcmp(ev, "sweep")) {
        if (pf_json_numbers(s, n, "sweep", vals, PLOT_MAX_SWEEP, &k) && k > 0) {
            for (i = 0; i < k; i++) r->sweep[i] = isfinite(vals[i]) ? 100.0 * vals[i] : NAN;
            r->n_sweep = k;
            r->sweep_step = has_step ? step : NAN;
            if (!pf_json_string(s, n, "split", r->split, sizeof r->split)) r->split[0] = '\0';
        }
    } else if (!strcmp(ev, "end")) {
        if (log_num(s, n, "test_accuracy", &v)) r->test_acc = 100.0 * v;
    }
    return 1;
}

// reads one log into r; dies (naming the file) on what cannot be a log
static void plot_read(plot_run *r, const char *path, char *buf) {
    FILE *f = fopen(path, "rb");
    const char *base = strrchr(path, '/'), *err;
    long lineno = 0, used = 0, bad = 0;
    size_t n;
    int ch, eof = 0;
    memset(r, 0, sizeof *r);
    r->path = path;
    r->branches = r->depth = r->params = r->test_acc = r->sweep_step = NAN;
    base = base ? base + 1 : path;
    snprintf(r->label, sizeof r->label, "%s", base);
    if (pf__ends_with_ci(r->label, ".jsonl")) r->label[strlen(r->label) - 6] = '\0';
    if (!f) die(1, "%s: cannot open: %s", path, strerror(errno));
    while (!eof) {
        for (n = 0;;) { // one line, without its newline
            if ((ch = getc(f)) == EOF) {
                eof = 1;
                break;
            }
            if (ch == '\n') break;
            if (n == PLOT_MAX_LINE)
                die(1, "%s:%ld: line longer than %d bytes (is this a training log?)", path, lineno + 1, PLOT_MAX_LINE);
            buf[n++] = (char)ch;
        }
        if (eof && ferror(f)) die(1, "%s: read error: %s", path, strerror(errno));
        if (eof && n == 0) break;
        buf[n] = '\0';
        if (++lineno > PLOT_MAX_LINES) die(1, "%s: more than %ld lines", path, PLOT_MAX_LINES);
        if (strspn(buf, " \t\r") >= n) continue; // blank (strspn stops at a NUL)
        if ((err = json_object_error(buf, n)) != NULL) {
            if (++bad <= PLOT_MAX_WARN)
                fprintf(stderr, "warning: %s:%ld: skipped, not a JSON object (%s)\n", path, lineno, err);
            continue;
        }
        used += plot_event(r, buf, n);
    }
    fclose(f);
    if (bad > PLOT_MAX_WARN)
        fprintf(stderr, "warning: %s: %ld more lines skipped, not JSON objects\n", path, bad - PLOT_MAX_WARN);
    if (lineno == 0) die(1, "%s: empty log", path);
    if (!used)
        die(1, "%s: no log events in its %ld line%s (expected one JSON object with an \"event\" per line)", path,
            lineno, lineno == 1 ? "" : "s");
    series_finish(&r->loss);
    series_finish(&r->acc);
    series_finish(&r->vloss);
    series_finish(&r->vacc);
}

static void plot_run_free(plot_run *r) {
    series_free(&r->loss);
    series_free(&r->acc);
    series_free(&r->vloss);
    series_free(&r->vacc);
    free(r->marks);
}

// --- SVG helpers -------------------------------------------------------------

// UTF-8 length of the sequence at s (1..4), 0 when invalid (or not XML 1.0)
static int utf8_len(const unsigned char *s) {
    unsigned cp;
    int n, i;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) n = 2, cp = s[0] & 0x1Fu;
    else if ((s[0] & 0xF0) == 0xE0) n = 3, cp = s[0] & 0x0Fu;
    else if ((s[0] & 0xF8) == 0xF0) n = 4, cp = s[0] & 0x07u;
    else return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp < 0xE000) || cp == 0xFFFE || cp == 0xFFFF)
        return 0;
    return n;
}

// characters (code points) in s, invalid bytes counted as one each
static size_t text_chars(const char *s) {
    size_t k = 0;
    int n;
    while (*s) {
        n = utf8_len((const unsigned char *)s);
        s += n ? n : 1, k++;
    }
    return k;
}

// s as XML text or attribute value, at most max characters (then "…");
// control characters become spaces, invalid UTF-8 '?'
static void svg_esc(FILE *f, const char *s, size_t max) {
    size_t k = 0;
    int n;
    for (; *s; k++) {
        unsigned char c = (unsigned char)*s;
        if (k == max) {
            fputs("\xE2\x80\xA6", f);
            return;
        }
        n = utf8_len((const unsigned char *)s);
        if (!n) fputc('?', f), n = 1;
        else if (n > 1) fwrite(s, 1, (size_t)n, f);
        else if (c == '&') fputs("&amp;", f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c == '"') fputs("&quot;", f);
        else if (c == '\'') fputs("&#39;", f);
        else fputc(c < 0x20 ? ' ' : c, f);
        s += n;
    }
}

// rough width of text in a sans-serif font of size px
static double text_w(const char *s, double px) { return 0.58 * px * (double)text_chars(s); }

static void svg_text(FILE *f, double x, double y, double size, const char *anchor, const char *fill,
                     const char *extra, const char *s, size_t max) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%g\"%s%s%s fill=\"%s\"%s%s>", x, y, size,
            anchor ? " text-anchor=\"" : "", anchor ? anchor : "", anchor ? "\"" : "", fill, extra ? " " : "",
            extra ? extra : "");
    svg_esc(f, s, max);
    fputs("</text>\n", f);
}

static const char *const PLOT_COLOURS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                           "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
#define PLOT_N_COLOURS ((int)(sizeof PLOT_COLOURS / sizeof PLOT_COLOURS[0]))
static const char *run_colour(int r) { return PLOT_COLOURS[r % PLOT_N_COLOURS]; }

// --- axes --------------------------------------------------------------------

typedef struct axis {
    double lo, hi;    // drawn range
    double t0, step;  // ticks t0, t0+step, ... <= hi
    double scale;     // tick labels divided by this (1, 1e3 "k", 1e6 "M")
    const char *unit; // after each tick label ("%" or "")
} axis;

// ticks at 1, 2 or 5 x 10^k covering [lo, hi], about `target` of them
static axis nice_axis(double lo, double hi, int target) {
    axis a;
    double raw, mag, f, top;
    if (!(hi - lo > 1e-12 * (fabs(lo) + fabs(hi)))) {
        double pad = lo != 0.0 ? 0.1 * fabs(lo) : 1.0;
        lo -= pad, hi += pad;
    }
    raw = (hi - lo) / target;
    mag = pow(10.0, floor(log10(raw)));
    f = raw / mag;
    a.step = (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
    a.lo = a.t0 = floor(lo / a.step + 1e-9) * a.step;
    a.hi = ceil(hi / a.step - 1e-9) * a.step;
    top = fabs(a.lo) > fabs(a.hi) ? fabs(a.lo) : fabs(a.hi);
    a.scale = top >= 1e7 && a.step >= 1e5 ? 1e6 : top >= 1e4 && a.step >= 100 ? 1e3 : 1.0;
    a.unit = "";
    return a;
}

static const char *tick_label(const axis *a, double v, char *buf, size_t cap) {
    double st = a->step / a->scale;
    int dec = st >= 1.0 ? 0 : (int)ceil(-log10(st) - 1e-9);
    if (fabs(v) < 1e-9 * a->step) v = 0.0; // no "-0"
    if (v == 0.0 && a->scale != 1.0) dec = 0; // "0", not "0k" or "0.0k"
    if (a->scale == 1e6 && fabs(v) >= 1e10) { // beyond what a log holds: 1e+14
        snprintf(buf, cap, "%.3g%s", v, a->unit);
        return buf;
    }
    snprintf(buf, cap, "%.*f%s%s", dec, v / a->scale,
             v == 0.0 ? "" : a->scale == 1e6 ? "M" : a->scale == 1e3 ? "k" : "", a->unit);
    return buf;
}

typedef struct frame {
    double x, y, w, h; // plot area (pixels)
    axis ax, ay;
} frame;

static double fx(const frame *p, double v) { return p->x + (v - p->ax.lo) / (p->ax.hi - p->ax.lo) * p->w; }
static double fy(const frame *p, double v) { return p->y + p->h - (v - p->ay.lo) / (p->ay.hi - p->ay.lo) * p->h; }

// grid, ticks, tick labels, axis lines and labels; a clip path `clip` for the data
static void draw_frame(FILE *f, const frame *p, const char *xlabel, const char *ylabel, const char *clip) {
    char b[64];
    double v;
    int i;
    fprintf(f, "<clipPath id=\"%s\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n", clip,
            p->x - 4, p->y - 4, p->w + 8, p->h + 8);
    fprintf(f, "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n");
    for (i = 0; i < 1000 && (v = p->ay.t0 + i * p->ay.step) <= p->ay.hi + 1e-9 * p->ay.step; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", p->x, fy(p, v), p->x + p->w, fy(p, v));
    for (i = 0; i < 1000 && (v = p->ax.t0 + i * p->ax.step) <= p->ax.hi + 1e-9 * p->ax.step; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", fx(p, v), p->y, fx(p, v), p->y + p->h);
    fprintf(f, "</g>\n<g font-size=\"11\" fill=\"#555\">\n");
    for (i = 0; i < 1000 && (v = p->ay.t0 + i * p->ay.step) <= p->ay.hi + 1e-9 * p->ay.step; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", p->x - 6, fy(p, v) + 4,
                tick_label(&p->ay, v, b, sizeof b));
    for (i = 0; i < 1000 && (v = p->ax.t0 + i * p->ax.step) <= p->ax.hi + 1e-9 * p->ax.step; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", fx(p, v), p->y + p->h + 16,
                tick_label(&p->ax, v, b, sizeof b));
    fprintf(f, "</g>\n<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#888\" stroke-width=\"1\"/>\n", p->x,
            p->y, p->y + p->h, p->x + p->w);
    svg_text(f, p->x + p->w / 2, p->y + p->h + 34, 12, "middle", "#333", NULL, xlabel, 200);
    fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\" "
               "fill=\"#333\">", p->x - 48, p->y + p->h / 2);
    svg_esc(f, ylabel, 200);
    fputs("</text>\n", f);
}

// a series as a line (dots: also a circle at each point; one point: a circle)
static void draw_series(FILE *f, const frame *p, const series *s, const char *colour, double width,
                        double opacity, int dots, const char *clip) {
    size_t i;
    if (!s->n) return;
    fprintf(f, "<g clip-path=\"url(#%s)\">\n", clip);
    if (s->n > 1) {
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"%g\" stroke-opacity=\"%g\" "
                   "stroke-linejoin=\"round\" d=\"", colour, width, opacity);
        for (i = 0; i < s->n; i++)
            fprintf(f, "%s%.1f %.1f%s", i ? "L" : "M", fx(p, s->x[i]), fy(p, s->y[i]), i % 12 == 11 ? "\n" : "");
        fputs("\"/>\n", f);
    }
    if (s->n == 1 || (dots && s->n <= 300))
        for (i = 0; i < s->n; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%g\" fill=\"%s\"/>\n", fx(p, s->x[i]), fy(p, s->y[i]),
                    dots ? 3.0 : 2.5, colour);
    fputs("</g>\n", f);
}

typedef struct mark_label {
    double x, x0, w; // the line, the label's left edge and width (pixels)
    int row;         // of the strip above the plot
    const char *colour;
    char text[48];
} mark_label;

static int cmp_label(const void *a, const void *b) {
    double u = ((const mark_label *)a)->x, v = ((const mark_label *)b)->x;
    return u < v ? -1 : u > v;
}

#define PLOT_MARK_ROWS 4

// The stage-start labels of all runs for frame p (only x is used), placed in
// rows so that they do not overlap; *rows gets the rows used. Free the result.
static mark_label *layout_marks(const frame *p, const plot_run *runs, int nr, int *n_out, int *rows) {
    mark_label *lab;
    double row_end[PLOT_MARK_ROWS];
    int r, i, k, n = 0, total = 0;
    *rows = 0;
    for (r = 0; r < nr; r++) total += runs[r].n_marks;
    lab = (mark_label *)xmalloc((size_t)(total ? total : 1) * sizeof *lab);
    for (r = 0; r < nr; r++)
        for (i = 0; i < runs[r].n_marks; i++) {
            const stage_mark *m = &runs[r].marks[i];
            mark_label *l = &lab[n++];
            l->x = fx(p, m->step);
            l->colour = nr == 1 ? "#555" : run_colour(r);
            if (m->active) snprintf(l->text, sizeof l->text, "stage %d (%d branch%s)", m->stage, m->active,
                                    m->active == 1 ? "" : "es");
            else snprintf(l->text, sizeof l->text, "stage %d", m->stage);
        }
    qsort(lab, (size_t)n, sizeof *lab, cmp_label);
    for (k = 0; k < PLOT_MARK_ROWS; k++) row_end[k] = -1e30;
    for (i = 0; i < n; i++) {
        lab[i].w = text_w(lab[i].text, 11) + 4;
        lab[i].x0 = lab[i].x + 3;
        if (lab[i].x0 + lab[i].w > p->x + p->w) lab[i].x0 = lab[i].x - 3 - lab[i].w; // left of its line
        for (k = 0; k < PLOT_MARK_ROWS && row_end[k] >= lab[i].x0; k++) {}
        if (k == PLOT_MARK_ROWS) { // every row taken there: the one that frees first
            int j;
            for (k = 0, j = 1; j < PLOT_MARK_ROWS; j++)
                if (row_end[j] < row_end[k]) k = j;
        }
        lab[i].row = k;
        row_end[k] = lab[i].x0 + lab[i].w + 6;
        if (k + 1 > *rows) *rows = k + 1;
    }
    *n_out = n;
    return lab;
}

// dashed lines at the stage starts from the label strip (`rows` rows of 15
// pixels above the plot) down to the x axis, labelled in the strip
static void draw_marks(FILE *f, const frame *p, const plot_run *runs, int nr, int rows) {
    int n, used, i;
    mark_label *lab = layout_marks(p, runs, nr, &n, &used);
    double top = p->y - 15.0 * rows - 2;
    (void)used;
    if (n) fprintf(f, "<g stroke-width=\"1.2\" stroke-dasharray=\"5 4\">\n");
    for (i = 0; i < n; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", lab[i].x,
                top + 15.0 * lab[i].row + 2, lab[i].x, p->y + p->h, lab[i].colour);
    if (n) fprintf(f, "</g>\n");
    for (i = 0; i < n; i++)
        svg_text(f, lab[i].x0 + 2, top + 15.0 * lab[i].row + 12, 11, NULL, lab[i].colour, NULL, lab[i].text, 48);
    free(lab);
}

typedef struct legend_item {
    const char *colour;
    int style; // 0 line, 1 line with a dot, 2 dot, 3 dashed line
    char text[80];
} legend_item;

// items right-aligned ending at x_right, baseline y
static void draw_legend(FILE *f, const legend_item *it, int n, double x_right, double y) {
    double x = x_right;
    int i;
    for (i = 0; i < n; i++) x -= 26 + text_w(it[i].text, 12) + 16;
    for (i = 0; i < n; i++) {
        if (it[i].style != 2)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%s\"%s/>\n",
                    x, y - 4, x + 20, y - 4, it[i].colour, it[i].style == 1 ? "2.2" : "1.6",
                    it[i].style == 3 ? " stroke-dasharray=\"5 4\"" : "");
        if (it[i].style == 1 || it[i].style == 2)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x + 10, y - 4, it[i].colour);
        svg_text(f, x + 26, y, 12, NULL, "#333", NULL, it[i].text, 80);
        x += 26 + text_w(it[i].text, 12) + 16;
    }
}

// --- the panels ----------------------------------------------------------------

static void series_range(const series *s, double *lo, double *hi) {
    size_t i;
    for (i = 0; i < s->n; i++) {
        if (s->y[i] < *lo) *lo = s->y[i];
        if (s->y[i] > *hi) *hi = s->y[i];
    }
}

// panel 1 or 2: loss (acc 0) or accuracy (acc 1) against the step
// (y: top of the panel; rows: of stage labels between its title and the plot)
static void plot_step_panel(FILE *f, const plot_run *runs, int nr, int acc, double x, double y, double w, double h,
                            const axis *ax, int rows) {
    const char *clip = acc ? "clip_acc" : "clip_loss";
    double lo = INFINITY, hi = -INFINITY, pad;
    frame p;
    legend_item it[3];
    size_t bin = 1;
    int r, n_it = 0, have_val = 0, have_train = 0;
    for (r = 0; r < nr; r++) {
        const series *t = acc ? &runs[r].acc : &runs[r].loss, *v = acc ? &runs[r].vacc : &runs[r].vloss;
        series_range(t, &lo, &hi);
        series_range(v, &lo, &hi);
        have_train |= t->n > 0, have_val |= v->n > 0;
        if (t->bin > bin) bin = t->bin;
    }
    if (lo > hi) lo = 0.0, hi = acc ? 100.0 : 1.0;
    pad = 0.04 * (hi - lo);
    p.x = x, p.y = y + 30 + 15.0 * rows, p.w = w, p.h = h;
    p.ax = *ax;
    p.ay = nice_axis(lo - pad, hi + pad, 5);
    if (acc) p.ay.unit = "%";
    if (p.ay.lo < 0.0 && lo >= 0.0) p.ay.lo = p.ay.t0 = 0.0; // no axis below 0 (or above 100%) without data there
    if (acc && p.ay.hi > 100.0 && hi <= 100.0) p.ay.hi = 100.0;
    svg_text(f, x, y + 14, 15, NULL, "#222", "font-weight=\"bold\"", acc ? "Accuracy" : "Loss", 40);
    if (have_train) {
        it[n_it].colour = nr == 1 ? PLOT_COLOURS[0] : "#555";
        it[n_it].style = 0;
        if (bin > 1) snprintf(it[n_it].text, sizeof it[n_it].text, "train (means of %zu logged values)", bin);
        else snprintf(it[n_it].text, sizeof it[n_it].text, "train");
        n_it++;
    }
    if (have_val) {
        it[n_it].colour = nr == 1 ? PLOT_COLOURS[1] : "#555";
        it[n_it].style = 1;
        snprintf(it[n_it].text, sizeof it[n_it].text, "validation");
        n_it++;
    }
    draw_legend(f, it, n_it, x + w, y + 14);
    draw_frame(f, &p, "step (optimizer steps)", acc ? "accuracy (%)" : "cross-entropy loss", clip);
    draw_marks(f, &p, runs, nr, rows);
    for (r = 0; r < nr; r++) {
        const char *ct = nr == 1 ? PLOT_COLOURS[0] : run_colour(r), *cv = nr == 1 ? PLOT_COLOURS[1] : run_colour(r);
        draw_series(f, &p, acc ? &runs[r].acc : &runs[r].loss, ct, 1.4, nr == 1 ? 0.9 : 0.6, 0, clip);
        draw_series(f, &p, acc ? &runs[r].vacc : &runs[r].vloss, cv, 2.2, 1.0, 1, clip);
    }
    if (!have_train && !have_val)
        svg_text(f, p.x + p.w / 2, p.y + p.h / 2, 13, "middle", "#888", NULL,
                 acc ? "no accuracy logged yet" : "no loss logged yet", 60);
}

// panel 3: accuracy against the number of branches (each run's last sweep)
static void plot_sweep_panel(FILE *f, const plot_run *runs, int nr, double x, double y, double w, double h) {
    double lo = INFINITY, hi = -INFINITY, pad;
    char b[160], note[160];
    frame p;
    int r, i, nmax = 0, missing = 0;
    const char *split = NULL;
    for (r = 0; r < nr; r++) {
        if (!runs[r].n_sweep) {
            missing++;
            continue;
        }
        if (runs[r].n_sweep > nmax) nmax = runs[r].n_sweep;
        for (i = 0; i < runs[r].n_sweep; i++)
            if (isfinite(runs[r].sweep[i])) {
                if (runs[r].sweep[i] < lo) lo = runs[r].sweep[i];
                if (runs[r].sweep[i] > hi) hi = runs[r].sweep[i];
            }
        if (!split) split = runs[r].split;
        else if (strcmp(split, runs[r].split)) split = "";
    }
    if (split && *split) snprintf(b, sizeof b, "Accuracy vs branches used (last sweep, %s split)", split);
    else snprintf(b, sizeof b, "Accuracy vs branches used (last sweep)");
    svg_text(f, x, y + 14, 15, NULL, "#222", "font-weight=\"bold\"", b, 160);
    if (lo > hi) { // no sweep with a finite value
        svg_text(f, x, y + 36, 13, NULL, "#888", NULL,
                 "no sweep yet: the accuracy of each number of branches appears after a sweep event",
                 (size_t)(w / (0.58 * 13)));
        return;
    }
    pad = 0.15 * (hi - lo) > 0.5 ? 0.15 * (hi - lo) : 0.5;
    p.x = x, p.y = y + 30, p.w = w, p.h = h;
    p.ay = nice_axis(lo - pad, hi + 1.5 * pad, 5);
    p.ay.unit = "%";
    if (p.ay.lo < 0.0 && lo >= 0.0) p.ay.lo = p.ay.t0 = 0.0;
    if (p.ay.hi > 100.0 && hi <= 100.0) p.ay.hi = 100.0;
    p.ax.lo = 0.5, p.ax.hi = nmax + 0.5, p.ax.t0 = 1.0, p.ax.scale = 1.0, p.ax.unit = "";
    p.ax.step = nmax <= 20 ? 1.0 : nice_axis(1.0, nmax, 10).step;
    note[0] = '\0';
    if (p.ay.lo > 0.0) snprintf(note, sizeof note, "y axis starts at %s, not 0", tick_label(&p.ay, p.ay.lo, b, 64));
    if (missing) {
        size_t len = strlen(note);
        snprintf(note + len, sizeof note - len, "%s%d run%s without a sweep yet", len ? "; " : "", missing,
                 missing == 1 ? "" : "s");
    }
    if (*note) svg_text(f, x + w, y + 14, 12, "end", "#777", "font-style=\"italic\"", note, 160);
    draw_frame(f, &p, "branches used (the first k of the model's branches)", "accuracy (%)", "clip_sweep");
    for (r = 0; r < nr; r++) {
        const plot_run *u = &runs[r];
        const char *col = nr == 1 ? PLOT_COLOURS[0] : run_colour(r);
        int first = 1;
        if (!u->n_sweep) continue;
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" d=\"", col);
        for (i = 0; i < u->n_sweep; i++)
            if (isfinite(u->sweep[i])) {
                fprintf(f, "%s%.1f %.1f", first ? "M" : "L", fx(&p, i + 1.0), fy(&p, u->sweep[i]));
                first = 0;
            }
        fputs("\"/>\n", f);
        for (i = 0; i < u->n_sweep; i++)
            if (isfinite(u->sweep[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", fx(&p, i + 1.0),
                        fy(&p, u->sweep[i]), col);
    }
    // the values beside the points (left of them, where the lines leave to
    // the right; right of the last k); at each k the labels are taken from
    // the top down and pushed down until they are 14 px apart
    for (i = 0; i < nmax; i++) {
        int order[PLOT_MAX_RUNS], n = 0, j, q, last_k = i == nmax - 1;
        double last = -1e9;
        for (r = 0; r < nr; r++)
            if (i < runs[r].n_sweep && isfinite(runs[r].sweep[i])) order[n++] = r;
        for (j = 1; j < n; j++) // insertion sort by value, highest first
            for (q = j; q > 0 && runs[order[q]].sweep[i] > runs[order[q - 1]].sweep[i]; q--) {
                int t = order[q];
                order[q] = order[q - 1], order[q - 1] = t;
            }
        for (j = 0; j < n; j++) {
            const plot_run *u = &runs[order[j]];
            double ly = fy(&p, u->sweep[i]) + 4;
            if (ly < last + 14) ly = last + 14;
            last = ly;
            snprintf(b, sizeof b, "%.1f%%", u->sweep[i]);
            svg_text(f, fx(&p, i + 1.0) + (last_k ? 8 : -8), ly, 12, last_k ? "start" : "end",
                     nr == 1 ? PLOT_COLOURS[0] : run_colour(order[j]),
                     "font-weight=\"bold\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\"", b, 16);
        }
    }
}

// "300k", "1.2M"
static const char *count_str(double v, char *buf, size_t cap) {
    if (v >= 1e6) snprintf(buf, cap, "%.3gM", v / 1e6);
    else if (v >= 1e3) snprintf(buf, cap, "%.3gk", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
    return buf;
}

static void plot_svg(FILE *f, const plot_run *runs, int nr, const char *title, int W) {
    const double ml = 72, mr = 36, pw = W - ml - mr, ph = floor(0.27 * W), sh = floor(0.22 * W);
    const double top = 44 + 20.0 * nr + 10;
    double step_max = 0.0, H, y1, y2, y3;
    int r, i, any_sweep = 0, rows, n_lab, show_label;
    char b[128], t[128];
    frame px;
    mark_label *lab;
    for (r = 0; r < nr; r++) {
        const series *s[4] = {&runs[r].loss, &runs[r].acc, &runs[r].vloss, &runs[r].vacc};
        for (i = 0; i < 4; i++)
            if (s[i]->n && s[i]->x[s[i]->n - 1] > step_max) step_max = s[i]->x[s[i]->n - 1];
        for (i = 0; i < runs[r].n_marks; i++)
            if (runs[r].marks[i].step > step_max) step_max = runs[r].marks[i].step;
        any_sweep |= runs[r].n_sweep > 0;
    }
    // the step axis of panels 1 and 2, and the rows their stage labels need
    memset(&px, 0, sizeof px);
    px.x = ml, px.w = pw;
    px.ax = nice_axis(0.0, step_max > 10.0 ? step_max : 10.0, 8); // steps are whole numbers
    lab = layout_marks(&px, runs, nr, &n_lab, &rows);
    free(lab);
    y1 = top;
    y2 = y1 + 30 + 15.0 * rows + ph + 50;
    y3 = y2 + 30 + 15.0 * rows + ph + 50;
    H = y3 + (any_sweep ? 30 + sh + 46 : 50);
    show_label = nr > 1 || (title && strcmp(title, runs[0].label));
    if (!title) {
        if (nr == 1) title = runs[0].label;
        else snprintf(t, sizeof t, "%d training runs", nr), title = t;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", W, H, W, H);
    fputs("<title>", f);
    svg_esc(f, title, 200);
    fputs("</title>\n", f);
    fprintf(f, "<rect width=\"%d\" height=\"%.0f\" fill=\"#fff\"/>\n", W, H);
    svg_text(f, ml, 30, 20, NULL, "#111", "font-weight=\"bold\"", title, 90);
    // one line per run: colour, label, what its start and end events said
    for (r = 0; r < nr; r++) {
        const plot_run *u = &runs[r];
        double y = 44 + 20.0 * r + 10, x = ml;
        char d[400];
        size_t len = 0;
        d[0] = '\0';
#define ADD(...) (len += (size_t)snprintf(d + len, len < sizeof d ? sizeof d - len : 0, __VA_ARGS__))
        if (*u->schedule) ADD("%s schedule", u->schedule);
        if (isfinite(u->branches)) ADD("%s%.0f branch%s", len ? ", " : "", u->branches, u->branches == 1 ? "" : "es");
        if (isfinite(u->depth)) ADD(" \xC3\x97 depth %.0f", u->depth); // U+00D7 multiplication sign
        if (isfinite(u->params)) ADD("%s%s parameters", len ? ", " : "", count_str(u->params, b, sizeof b));
        if (isfinite(u->test_acc)) ADD("%stest accuracy %.2f%%", len ? ", " : "", u->test_acc);
        if (*u->data) ADD("%s%s", len ? ", " : "", u->data);
#undef ADD
        if (nr > 1) {
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"4\"/>\n", x,
                    y - 4, x + 20, y - 4, run_colour(r));
            x += 28;
        }
        if (show_label) {
            svg_text(f, x, y, 13, NULL, "#222", "font-weight=\"bold\"", u->label, 60);
            x += text_w(u->label, 13) + 12;
        }
        if (*d && x < W - mr - 40) svg_text(f, x, y, 13, NULL, "#555", NULL, d, (size_t)((W - mr - x) / (0.58 * 13)));
    }
    plot_step_panel(f, runs, nr, 0, ml, y1, pw, ph, &px.ax, rows);
    plot_step_panel(f, runs, nr, 1, ml, y2, pw, ph, &px.ax, rows);
    plot_sweep_panel(f, runs, nr, ml, y3, pw, sh);
    fputs("</svg>\n", f);
}

static int cmd_plot(int argc, char **argv) {
    enum { O_LOG, O_OUT, O_TITLE, O_WIDTH, O_N };
    static const optdef o[O_N] = {
        {"--log", "FILE", "required", "training log (JSON lines of paraformer train); repeat to overlay runs"},
        {"--out", "FILE", "required", "the SVG to write (via FILE.tmp, renamed when complete)"},
        {"--title", "TEXT", "the run's name, or \"N training runs\"", "title at the top"},
        {"--width", "W", "1000", "width in pixels, 400..10000 (the height follows)"},
    };
    cli c = {"plot", o, O_N, 0, NULL, NULL};
    const char *out, *title;
    char *buf, tmp[4096];
    plot_run *runs;
    FILE *f;
    int i, nr = 0, width = 1000;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer plot --log L.jsonl [--log L2.jsonl ...] --out F.svg [--title T] [--width W]\n\n"
               "Draws training logs as one SVG: loss and accuracy (train and validation)\n"
               "against the step with the stage starts marked, and the accuracy of each\n"
               "number of branches from the last sweep. Several logs are overlaid, one\n"
               "colour each, labelled by the start event's \"name\" or the file name.\n"
               "Lines that are not JSON are skipped with a warning; a resume event drops\n"
               "what the log holds beyond its step; more than %d points of a series are\n"
               "averaged in bins. Limits: %d bytes a line, %ld lines a log.\n\n",
               PLOT_MAX_POINTS, PLOT_MAX_LINE, PLOT_MAX_LINES);
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    cli_need(&c, O_LOG);
    out = cli_need(&c, O_OUT);
    title = cli_get(&c, O_TITLE);
    if (cli_get(&c, O_WIDTH)) width = (int)parse_int(&c, O_WIDTH, 400, 10000);
    for (i = 0; i < c.n; i++) {
        if (c.which[i] != O_LOG) continue;
        if (!strcmp(c.vals[i], out)) usage_error(&c, "--out %s is also a --log", out);
        if (++nr > PLOT_MAX_RUNS) usage_error(&c, "more than %d --log files", PLOT_MAX_RUNS);
    }
    runs = (plot_run *)xmalloc((size_t)nr * sizeof *runs);
    buf = (char *)xmalloc(PLOT_MAX_LINE + 1);
    for (i = nr = 0; i < c.n; i++)
        if (c.which[i] == O_LOG) plot_read(&runs[nr++], c.vals[i], buf);
    free(buf);
    if (!(f = pf__open_tmp(out, tmp, sizeof tmp))) die_file(out);
    plot_svg(f, runs, nr, title, width);
    if (pf__commit(f, tmp, out, !ferror(f)) != PF_OK) die_file(out);
    printf("wrote %s: %d run%s\n", out, nr, nr == 1 ? "" : "s");
    for (i = 0; i < nr; i++) plot_run_free(&runs[i]);
    free(runs);
    cli_free(&c);
    return 0;
}

// ----------------------------------------------------------------------------
// main

static void usage(FILE *f) {
    fprintf(f, "paraformer %s - ParaFormer (shallow parallel transformers) on the CPU\n\n"
               "usage: paraformer <command> [options]      (paraformer <command> --help for its options)\n\n"
               "commands:\n"
               "  init      create a model with seeded initial weights (safetensors)\n"
               "  info      show a checkpoint's configuration, parameter counts and tensors\n"
               "  predict   class scores (logits or probabilities) for .npy arrays or images\n"
               "  train     train progressively on a dataset (checkpoints, resume, log, branch sweep)\n"
               "  eval      accuracy, per-class accuracy and the branch sweep on a dataset\n"
               "  compress  keep the first k branches (the paper's compression)\n"
               "  expand    append branches / grow the classifier (continual learning)\n"
               "  bench     training and inference speed, per-op GFLOP/s (random input)\n"
               "  plot      training logs (JSON lines) as an SVG: loss, accuracy, accuracy per branch count\n"
               "  help      this list; `paraformer help <command>` for a command's options\n\n"
               "predict, eval and train take --device cpu|cuda[:N,...] (cuda: a build with the GPU backend,\n"
               "make cuda). --version prints the version (and the GPU backend, if linked).\n", PF_VERSION);
}

// argv: the command's arguments (after its name)
static int run_command(const char *cmd, int argc, char **argv) {
    if (!strcmp(cmd, "init")) return cmd_init(argc, argv);
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "predict")) return cmd_predict(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "train")) return cmd_train(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "compress")) return cmd_compress(argc, argv);
    if (!strcmp(cmd, "expand")) return cmd_expand(argc, argv);
    if (!strcmp(cmd, "plot")) return cmd_plot(argc, argv);
    fprintf(stderr, "error: unknown command '%s' (commands: init, info, predict, train, eval, compress, expand, bench, "
            "plot; "
            "see 'paraformer --help')\n",
            cmd);
    return 2;
}

int main(int argc, char **argv) {
    static char help_arg[] = "--help";
    const char *cmd = argc > 1 ? argv[1] : "help";
    if (argc < 2) { /* no command: usage on stderr, exit 2 */
        usage(stderr);
        return 2;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        char *sub[1];
        sub[0] = help_arg;
        if (argc > 2 && !strcmp(cmd, "help")) return run_command(argv[2], 1, sub);
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
#ifdef PF_WITH_CUDA
        printf("paraformer %s (GPU backend: %s)\n", PF_VERSION, pf_cuda_backend());
#else
        printf("paraformer %s\n", PF_VERSION);
#endif
        return 0;
    }
    return run_command(cmd, argc - 2, argv + 2);
}

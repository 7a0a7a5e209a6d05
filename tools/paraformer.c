/* paraformer.c - the `paraformer` command-line program.

       paraformer init     --out M.safetensors [--preset P] [architecture flags]
       paraformer info     --model M [--json] [--tensors]
       paraformer predict  --model M --input X --output Y [--branches k] ...
       paraformer bench    [--zoo vit12|pf3x4|...] [--dataset cifar|fmnist] [--threads N] [--json]

   A thin layer over paraformer.h: it parses flags, reads inputs and writes
   outputs; all model work is the library's. Each subcommand answers --help
   with every option and its default. Flags take `--flag value` or
   `--flag=value`. Exit status: 0 ok, 1 runtime error (files, model),
   2 usage error (flags). Errors go to stderr as `error: ...`.

   Build (stb_image optional, for .png/.jpg/.bmp input):
       gcc -std=c99 -O2 -Wall -Wextra -fopenmp -DPF_HAVE_STB -I. \
           tools/paraformer.c -o build/paraformer -lm
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

static int ends_with(const char *s, const char *suffix) { // case-insensitive
    size_t n = strlen(s), m = strlen(suffix), i;
    if (m > n) return 0;
    for (i = 0; i < m; i++) {
        char a = s[n - m + i], b = suffix[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != b) return 0;
    }
    return 1;
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
    enum { O_MODEL, O_INPUT, O_OUTPUT, O_BRANCHES, O_THREADS, O_BATCH, O_PROBS, O_TOP, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint (safetensors)"},
        {"--input", "X", "required", "a .npy array or image files (a,b,c; repeatable)"},
        {"--output", "Y", "required", "Y.npy (float32 [N,K]) or Y.csv (- : CSV on stdout)"},
        {"--branches", "k", "all", "use the first k branches"},
        {"--threads", "N", "OpenMP default", "threads"},
        {"--batch", "B", "64", "images per forward pass"},
        {"--probs", NULL, "off", "write softmax probabilities instead of logits"},
        {"--top", "k", "off", "print the k most likely classes per input (and add them to a CSV)"},
    };
    cli c = {"predict", o, O_N, 0, NULL, NULL};
    const char *model, *output, **files = NULL;
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
    csv = !strcmp(output, "-") || ends_with(output, ".csv");
    if (!csv && !ends_with(output, ".npy"))
        usage_error(&c, "--output: '%s' is neither .npy nor .csv (or - for CSV on stdout)", output);
    probs = cli_get(&c, O_PROBS) != NULL;
    if (cli_get(&c, O_BRANCHES)) active = (int)parse_int(&c, O_BRANCHES, 1, INT_MAX);
    if (cli_get(&c, O_TOP)) top = (int)parse_int(&c, O_TOP, 1, INT_MAX);
    if (cli_get(&c, O_BATCH)) batch = (int)parse_int(&c, O_BATCH, 1, 1 << 20);
    if (cli_get(&c, O_THREADS)) pf_set_threads((int)parse_int(&c, O_THREADS, 1, 4096));
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
            if (ends_with(s, ".npy")) is_npy++;
            else if (!ends_with(s, ".png") && !ends_with(s, ".jpg") && !ends_with(s, ".jpeg") &&
                     !ends_with(s, ".bmp"))
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
        if (pf_model_reserve(m, batch < N ? batch : N) != PF_OK) die(1, "%s", pf_last_error());
        if (pf_predict(m, x, N, y) != PF_OK) die(1, "%s: %s", model, pf_last_error());
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
        printf("wrote %s: %s [%d,%d] from %d input%s, %d of %d branches\n", output,
               probs ? "probabilities" : "logits", N, K, N, N == 1 ? "" : "s", m->active, m->cfg.branches);
    }
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

// "vitN": one branch of N layers; "pfLxB": B branches of L layers (the names
// of shared/anchors/torch_anchor.py). Returns 0 if the name is not one.
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
        *depth = (int)a, *branches = (int)b;
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
} bench_data;

// one training step: forward with labels, backward, AdamW
static void train_step(bench_data *d) {
    float loss = 0.0f;
    if (pf_forward(d->m, d->x, d->labels, d->B, 0.0f, &loss) != PF_OK) die(1, "bench: %s", pf_last_error());
    if (!isfinite(loss)) die(1, "bench: the training loss is not finite (%g)", (double)loss);
    if (pf_backward(d->m) != PF_OK) die(1, "bench: %s", pf_last_error());
    pf_optim_step(d->m, &d->opt);
}

static const char *const BENCH_ROW_HEADER =
    "| model  | threads | batch | train img/s | infer img/s | b1 latency ms | train GFLOP/s | % of peak | params    |\n"
    "|--------|--------:|------:|------------:|------------:|--------------:|--------------:|----------:|----------:|\n";

static int cmd_bench(int argc, char **argv) {
    enum { O_ZOO, O_DATASET, O_ARCH, O_BATCH = O_ARCH + A_N, O_INFER_BATCH, O_THREADS, O_WARM, O_REPS,
           O_PROFILE, O_SEED, O_PEAK, O_JSON, O_ROW, O_ROW_HEADER, O_N };
    static const optdef o[O_N] = {
        {"--zoo", "NAME", "off", "vitN = 1 branch x N layers, pfLxB = B branches x L layers (torch_anchor's names)"},
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
    };
    cli c = {"bench", o, O_N, 0, NULL, NULL};
    pf_config cfg;
    pf_model *m = NULL;
    pf_profile prof;
    bench_data d;
    char name[64];
    const char *preset, *zoo;
    float *x, *logits;
    int *labels;
    int batch = 128, infer_batch, warm = 2, reps = 5, psteps = 2, threads, json, row, fmnist = 0, n_in, i, op;
    uint64_t seed = 0, rng;
    size_t per, k;
    double *t, t_train, t_infer, t_b1, t_prof, flops = 0.0, op_s = 0.0, peak = 0.0, gflops;
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
               "the preset (default paraformer = pf3x4) with --zoo's branches and depth, the\n"
               "--dataset's input shape, then the architecture flags; initialised with seed 0.\n\n");
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
        usage_error(&c, "--zoo: '%s' is not vitN or pfLxB (for example vit12, pf3x4, pf3x2)", zoo);
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
    threads = pf_get_threads();
    if (cfg.branches == 1) snprintf(name, sizeof name, "vit%d", cfg.depth);
    else snprintf(name, sizeof name, "pf%dx%d", cfg.depth, cfg.branches);

    // model, optimizer state, activations for `batch`
    if (pf_model_create(&cfg, &m) != PF_OK) die(1, "bench: %s", pf_last_error());
    pf_model_init(m, 0, 0.0f);
    if (pf_model_alloc_train(m) != PF_OK || pf_model_reserve(m, batch) != PF_OK)
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
    d.m = m, d.x = x, d.labels = labels, d.B = batch, d.opt = pf_optim_default();

    // training steps
    m->training = 1;
    for (i = 0; i < warm; i++) train_step(&d);
    for (i = 0; i < reps; i++) {
        double t0 = pf_time();
        train_step(&d);
        t[i] = pf_time() - t0;
    }
    t_train = median(t, reps);
    // per-op profile of further steps
    memset(&prof, 0, sizeof prof);
    m->profile = &prof;
    t_prof = pf_time();
    for (i = 0; i < psteps; i++) train_step(&d);
    t_prof = (pf_time() - t_prof) / psteps;
    m->profile = NULL;
    for (op = 0; op < PF_OP_COUNT; op++) {
        flops += (prof.fwd_flops[op] + prof.bwd_flops[op]) / psteps;
        op_s += (prof.fwd_s[op] + prof.bwd_s[op]) / psteps;
    }
    gflops = flops / t_train / 1e9;
    // inference: a large batch, then batch-1 latency
    m->training = 0;
    for (i = 0; i < warm; i++)
        if (pf_predict(m, x, infer_batch, logits) != PF_OK) die(1, "bench: %s", pf_last_error());
    for (i = 0; i < reps; i++) {
        double t0 = pf_time();
        if (pf_predict(m, x, infer_batch, logits) != PF_OK) die(1, "bench: %s", pf_last_error());
        t[i] = pf_time() - t0;
    }
    t_infer = median(t, reps);
    for (i = 0; i < warm; i++)
        if (pf_predict(m, x, 1, logits) != PF_OK) die(1, "bench: %s", pf_last_error());
    for (i = 0; i < 3 * reps; i++) {
        double t0 = pf_time();
        if (pf_predict(m, x, 1, logits) != PF_OK) die(1, "bench: %s", pf_last_error());
        t[i] = pf_time() - t0;
    }
    t_b1 = median(t, 3 * reps);
    if (cli_get(&c, O_PEAK)) peak = fma_peak_gflops(threads);

    if (json) {
        printf("{\"model\": \"%s\", \"params\": %zu, \"threads\": %d, \"batch\": %d, \"infer_batch\": %d,\n", name,
               m->n_params, threads, batch, infer_batch);
        printf(" \"dataset\": \"%s\", \"image_size\": %d, \"channels\": %d, \"patch\": %d, \"dim\": %d, "
               "\"heads\": %d, \"mlp_dim\": %d, \"branches\": %d, \"depth\": %d, \"classes\": %d, \"tokens\": %d,\n",
               cfg.image_size == 28 && cfg.channels == 1 ? "fmnist" : cfg.image_size == 32 && cfg.channels == 3
               ? "cifar" : "custom", cfg.image_size, cfg.channels, cfg.patch_size, cfg.dim, cfg.heads, cfg.mlp_dim,
               cfg.branches, cfg.depth, cfg.classes, m->T);
        printf(" \"warm\": %d, \"reps\": %d, \"profile_steps\": %d, \"gemm_kernel\": \"%s\",\n", warm, reps, psteps,
               pf_gemm_kernel());
        printf(" \"train_img_s\": %.2f, \"train_step_ms\": %.3f, \"infer_img_s\": %.2f, \"infer_batch_ms\": %.3f, "
               "\"latency_b1_ms\": %.3f,\n", batch / t_train, 1e3 * t_train, infer_batch / t_infer, 1e3 * t_infer,
               1e3 * t_b1);
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
        printf("setup     %d thread%s, batch %d, inference batch %d, warm-up %d, medians of %d, gemm kernel %s\n",
               threads, threads == 1 ? "" : "s", batch, infer_batch, warm, reps, pf_gemm_kernel());
        printf("train     %9.2f img/s   step %.1f ms, %.2f GFLOP, %.1f GFLOP/s", batch / t_train, 1e3 * t_train,
               flops / 1e9, gflops);
        if (peak > 0) printf(" = %.1f%% of the %.0f GFLOP/s FMA peak (%s)", 100.0 * gflops / peak, peak,
                             fma_peak_isa());
        printf("\ninfer     %9.2f img/s   %d images in %.1f ms\n", infer_batch / t_infer, infer_batch,
               1e3 * t_infer);
        printf("latency   %9.3f ms      batch 1, median of %d\n", 1e3 * t_b1, 3 * reps);
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
    free(t);
    free(logits);
    free(labels);
    free(x);
    pf_model_free(m);
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
               "  bench     training and inference speed, per-op GFLOP/s (random input)\n"
               "  help      this list; `paraformer help <command>` for a command's options\n\n"
               "--version prints the version.\n", PF_VERSION);
}

// argv: the command's arguments (after its name)
static int run_command(const char *cmd, int argc, char **argv) {
    if (!strcmp(cmd, "init")) return cmd_init(argc, argv);
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "predict")) return cmd_predict(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    fprintf(stderr, "error: unknown command '%s' (commands: init, info, predict, bench; see 'paraformer --help')\n",
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
        printf("paraformer %s\n", PF_VERSION);
        return 0;
    }
    return run_command(cmd, argc - 2, argv + 2);
}

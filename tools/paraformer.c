/* paraformer.c - the `paraformer` command-line program.

       paraformer init     --out M.safetensors [--preset P] [architecture flags]
       paraformer info     --model M [--json] [--tensors]
       paraformer predict  --model M --input X --output Y [--branches k] [--resize] [--device D] ...
       paraformer train    --data SPEC --out M.safetensors [--preset P] [--schedule S] [--resume M] [--device D] ...
       paraformer eval     --model M --data SPEC [--sweep] [--json] [--resize] [--device D]
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
#define STBI_MALLOC(sz) pf_stbi_malloc(sz) // and what a lying chunk length makes it ask for
#define STBI_REALLOC(p, sz) pf_stbi_realloc(p, sz)
#define STBI_FREE(p) pf_stbi_free(p)
#include <stb/stb_image.h>             // the implementation (the header only saw the declarations)
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

// The library's last message without a leading "CMD: ": messages of the
// library's command-like functions (pf_model_expand: "expand: nothing to
// add ...") already name the command that the CLI's own prefix names.
static const char *lib_error(const char *cmd) {
    const char *e = pf_last_error();
    size_t n = strlen(cmd);
    if (!strncmp(e, cmd, n) && e[n] == ':' && e[n + 1] == ' ') return e + n + 2;
    return e;
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
// output paths, checked before any work starts: a run that would fail to
// write its result fails at once, not after the work

// the folder part of path ("." when it has none) in buf
static const char *dir_of(const char *path, char *buf, size_t cap) {
    const char *slash = strrchr(path, '/');
    size_t n;
    if (!slash) return ".";
    for (n = (size_t)(slash - path); n > 0 && path[n - 1] == '/'; n--) {} // "a//b"
    if (n == 0) return "/";
    if (n >= cap) n = cap - 1;
    memcpy(buf, path, n);
    buf[n] = '\0';
    return buf;
}

static int same_inode(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

// 1 when paths a and b are the same file: the same device and inode when
// both exist; when neither does (two outputs yet to be written), the same
// name in the same folder; one existing and one not: different files
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    const char *na = strrchr(a, '/'), *nb = strrchr(b, '/');
    char da[4096], db[4096];
    if (ea || eb) return ea && eb && same_inode(&sa, &sb);
    na = na ? na + 1 : a;
    nb = nb ? nb + 1 : b;
    if (strcmp(na, nb)) return 0;
    if (stat(dir_of(a, da, sizeof da), &sa) != 0 || stat(dir_of(b, db, sizeof db), &sb) != 0) return !strcmp(a, b);
    return same_inode(&sa, &sb);
}

// how an output is written: replaced atomically (PATH.tmp renamed onto it),
// or appended to (a log, created when it is not there)
enum { OUT_REPLACE, OUT_APPEND };

// The output `path` given to option `opt` can be written: the path is not a
// folder, and its folder exists and takes a new file (a temporary next to
// the target, created and removed at once, as the atomic write creates it);
// OUT_APPEND to an existing file needs that file writable instead. Else
// exit 1 naming the path and the reason.
static void check_output(const char *cmd, const char *opt, const char *path, int how) {
    struct stat sb;
    char buf[4096];
    const char *dir = dir_of(path, buf, sizeof buf);
    pf_atomic a;
    if (stat(dir, &sb) != 0)
        die(1, "%s: %s %s: cannot write there: %s %s", cmd, opt, path, dir,
            errno == ENOENT ? "does not exist" : strerror(errno));
    if (!S_ISDIR(sb.st_mode)) die(1, "%s: %s %s: cannot write there: %s is not a folder", cmd, opt, path, dir);
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) die(1, "%s: %s %s: is a folder (give a file name)", cmd, opt, path);
        if (how == OUT_APPEND) {
            if (access(path, W_OK) != 0) die(1, "%s: %s %s: cannot append to it: %s", cmd, opt, path, strerror(errno));
            return;
        }
    }
    errno = 0;
    if (pf_atomic_open(&a, path) != PF_OK)
        die(1, "%s: %s %s: cannot create a file in %s: %s", cmd, opt, path, dir, errno ? strerror(errno) : pf_last_error());
    pf_atomic_abort(&a);
}

// An output that is the same file as an input (of option in_opt) would
// destroy the input: usage error.
static void check_not_input(const cli *c, const char *out_opt, const char *out, const char *in_opt, const char *in) {
    if (same_file(out, in))
        usage_error(c, "%s %s is the same file as %s %s: write the output to another file", out_opt, out, in_opt, in);
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
    {"--preset", "NAME", "paraformer", "paraformer | vit | paper (train also: fmnist-small, cifar10-small)"}, \
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
    check_output("init", "--out", out, OUT_REPLACE);
    if (pf_model_create(&cfg, &m) != PF_OK) die(1, "init: %s", lib_error("init"));
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

// What `info` shows: the model as loaded and the file as it is (its tensors
// include any training state, which the model leaves out).
typedef struct info_view {
    const char *path;
    const pf_model *m;
    const pf_st_file *st;
    const size_t *branch; // parameters per branch
    long long bytes;
    const char *fv;       // format_version, when a whole number (else NULL)
    int tensors;          // --tensors
} info_view;

static void info_print_json(const info_view *v) {
    const pf_model *m = v->m;
    const pf_st_file *st = v->st;
    char json[4096], sh[160];
    int b, i;
    if (pf_config_to_json(&m->cfg, json, sizeof json) < 0) snprintf(json, sizeof json, "null");
    printf("{\"file\": ");
    json_str(stdout, v->path);
    printf(", \"file_bytes\": %lld, \"format_version\": %s, \"config\": %s, \"tokens\": %d,\n", v->bytes,
           v->fv ? v->fv : "null", json, m->T);
    printf(" \"parameters\": {\"stem\": %zu, \"branches\": [", pf_model_part_size(m, PF_PART_STEM));
    for (b = 0; b < m->cfg.branches; b++) printf("%s%zu", b ? ", " : "", v->branch[b]);
    printf("], \"head\": %zu, \"total\": %zu},\n", pf_model_part_size(m, PF_PART_HEAD), m->n_params);
    printf(" \"prefix_params\": [");
    for (b = 1; b <= m->cfg.branches; b++) printf("%s%zu", b > 1 ? ", " : "", prefix_params(m, b));
    printf("],\n");
    printf(" \"n_tensors\": %d, \"train_state\": %s", st->n, pf_st_meta(st, "train_state") ? "true" : "false");
    if (v->tensors) {
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
}

static void info_print_text(const info_view *v) {
    const pf_model *m = v->m;
    const pf_config *g = &m->cfg;
    const pf_st_file *st = v->st;
    char sh[160];
    int b, i;
    printf("file          %s (%lld bytes, format_version %s)\n", v->path, v->bytes, v->fv ? v->fv : "?");
    printf("image_size    %d\nchannels      %d\npatch_size    %d\ndim           %d\nheads         %d\n"
           "mlp_dim       %d\nbranches      %d\ndepth         %d\nclasses       %d\n",
           g->image_size, g->channels, g->patch_size, g->dim, g->heads, g->mlp_dim, g->branches, g->depth, g->classes);
    printf("residual      %s\naggregate     %s\nqkv_bias      %s\npool          %s\n",
           pf_residual_name(g->residual), pf_aggregate_name(g->aggregate), g->no_qkv_bias ? "off" : "on",
           pf_pool_name(g->pool));
    printf("dropout       %g\nemb_dropout   %g\nmean          ", g->dropout, g->emb_dropout);
    print_floats(stdout, g->mean, g->channels);
    printf("\nstd           ");
    print_floats(stdout, g->std, g->channels);
    printf("\ntokens        %d\n", m->T);
    printf("parameters    stem %zu", pf_model_part_size(m, PF_PART_STEM));
    for (b = 0; b < g->branches; b++) printf(", branch %d %zu", b, v->branch[b]);
    printf(", head %zu, total %zu\n", pf_model_part_size(m, PF_PART_HEAD), m->n_params);
    for (b = 1; b < g->branches; b++) /* the paper's compression: the first b branches */
        printf("%s keep %d of %d branches: %zu parameters, %.2fx smaller\n", b == 1 ? "compression " : "            ",
               b, g->branches, prefix_params(m, b), (double)m->n_params / (double)prefix_params(m, b));
    printf("tensors       %d in the file%s\n", st->n, pf_st_meta(st, "train_state") ? " (with training state)" : "");
    if (v->tensors)
        for (i = 0; i < st->n; i++)
            printf("  %-40s %-4s %s\n", st->entries[i].name, pf_dtype_name(st->entries[i].dtype),
                   shape_str(st->entries[i].shape, st->entries[i].ndim, sh, sizeof sh));
}

static int cmd_info(int argc, char **argv) {
    enum { O_MODEL, O_JSON, O_TENSORS, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint (safetensors)"},
        {"--json", NULL, "off", "print one JSON object"},
        {"--tensors", NULL, "off", "also list the file's tensors with dtype and shape"},
    };
    cli c = {"info", o, O_N, 0, NULL, NULL};
    info_view v;
    pf_model *m = NULL;
    pf_st_file *st = NULL;
    size_t *branch;
    int b, i;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer info --model FILE [--json] [--tensors]\n\n"
               "Shows a checkpoint's configuration, parameter counts per part and file size.\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    memset(&v, 0, sizeof v);
    v.path = cli_need(&c, O_MODEL);
    v.tensors = cli_get(&c, O_TENSORS) != NULL;
    if (pf_model_load(v.path, &m) != PF_OK) die_file(v.path);
    if (pf_st_open(v.path, &st) != PF_OK) die_file(v.path);
    v.m = m;
    v.st = st;
    v.bytes = file_size(v.path);
    v.fv = pf_st_meta(st, "format_version");
    if (!v.fv || !*v.fv || strspn(v.fv, "0123456789") != strlen(v.fv)) v.fv = NULL; // printed as a JSON number
    branch = (size_t *)xmalloc((size_t)m->cfg.branches * sizeof(size_t));
    for (b = 0; b < m->cfg.branches; b++) branch[b] = 0;
    for (i = 0; i < m->n_specs; i++) {
        const pf_tensor_spec *s = &m->specs[i];
        if (s->part == PF_PART_BRANCH && s->branch >= 0 && s->branch < m->cfg.branches) branch[s->branch] += s->numel;
    }
    v.branch = branch;
    if (cli_get(&c, O_JSON)) info_print_json(&v);
    else info_print_text(&v);
    free(branch);
    pf_st_close(st);
    pf_model_free(m);
    cli_free(&c);
    return 0;
}

// ----------------------------------------------------------------------------
// data of another shape than the model's: refused unless --resize

#define RESIZE_HELP "resize and convert images of another size or channel count to the model's (else refused)"

// Images of h x w x c that are not the model's input (S x S x C) are refused
// (exit 1) naming both shapes, unless resize: then the library resizes them
// bilinearly and converts the channels (pf_image_to_input, pf_dataset_batch).
// `what` names the data; `extra` (may be "") follows its shape.
static void check_shape(const char *cmd, const char *model, const pf_config *g, const char *what, int h, int w,
                        int c, const char *extra, int resize) {
    if (resize || (h == g->image_size && w == g->image_size && c == g->channels)) return;
    die(1, "%s: %s takes %dx%dx%d images; %s has %dx%dx%d%s: pass --resize to resize and convert them", cmd, model,
        g->image_size, g->image_size, g->channels, what, h, w, c, extra);
}

// The classes a dataset asks of a model: those of its source (d->classes:
// 10 for fmnist, the subfolders of a folder, max label + 1 for npy), or
// with #classes=LIST in its spec (d->name) the largest label kept + 1
// (*selected = 1).
static int data_classes(const pf_dataset *d, int *selected) {
    size_t rest = 0;
    int i, k = 0, split;
    *selected = pf_dataset_spec_split(d->name, PF_SPLIT_TEST, &split, NULL, &rest) == PF_OK &&
                strstr(d->name + rest, "#classes=") != NULL;
    if (!*selected) return d->classes;
    for (i = 0; i < d->n; i++) k = d->labels[i] + 1 > k ? d->labels[i] + 1 : k;
    return k;
}

// A dataset of more classes than the model's K is refused (exit 1): the
// model cannot score them. Fewer are fine (a subset of its classes).
static void check_classes(const char *cmd, const char *model, int K, const pf_dataset *d) {
    int selected, k = data_classes(d, &selected);
    char keep[32], has[48];
    if (k <= K) return;
    if (K == 1) snprintf(keep, sizeof keep, "0");
    else snprintf(keep, sizeof keep, "0-%d", K - 1);
    if (selected) snprintf(has, sizeof has, "labels up to %d", k - 1);
    else snprintf(has, sizeof has, "%d", k);
    die(1, "%s: %s has %d classes; %s has %s: keep the model's with #classes=%s, or grow the model with expand "
        "--classes %d", cmd, model, K, d->name, has, keep, k);
}

// ----------------------------------------------------------------------------
// predict

// An .npy array -> normalised float input [N,C,S,S] (malloc'd); *n_out = N.
// uint8 images of another size or channel count need resize (else exit 1
// naming both shapes); float32 must be the model's shape exactly.
static float *load_npy_input(const char *path, const char *model, const pf_config *g, int resize, int *n_out) {
    pf_array a;
    int C = g->channels, S = g->image_size, c, ok, exact = 0;
    int64_t n = 0;
    size_t per = (size_t)C * S * S, i, px;
    float *x;
    char got[160];
    if (pf_npy_load(path, &a) != PF_OK) die_file(path);
    shape_str(a.shape, a.ndim, got, sizeof got);
    if (a.dtype == PF_F32) {
        ok = a.ndim == 4 && a.shape[1] == C && a.shape[2] == S && a.shape[3] == S;
        if (!ok)
            die(1, "%s: expected float32 [N,%d,%d,%d] (the model's channels and image size; --resize does not apply "
                   "to normalised input), got float32 %s", path, C, S, S, got);
    } else if (a.dtype == PF_U8) {
        char alt[64] = "";
        exact = (a.ndim == 4 && a.shape[1] == S && a.shape[2] == S && a.shape[3] == C) ||
                (a.ndim == 3 && C == 1 && a.shape[1] == S && a.shape[2] == S);
        // images of another shape: [N,H,W,c] with c 1..4, or [N,H,W] (one channel)
        ok = exact || (a.ndim == 4 && a.shape[3] >= 1 && a.shape[3] <= 4) || a.ndim == 3;
        if (C == 1) snprintf(alt, sizeof alt, " or [N,%d,%d]", S, S);
        if (!ok)
            die(1, "%s: expected uint8 [N,%d,%d,%d]%s (the model's image size and channels; with --resize [N,H,W,c], "
                   "c 1..4, or [N,H,W]), got uint8 %s", path, S, S, C, alt, got);
        if (!exact) {
            char extra[200];
            snprintf(extra, sizeof extra, " (uint8 %s)", got);
            if (a.shape[1] < 1 || a.shape[2] < 1 || a.shape[1] > INT_MAX || a.shape[2] > INT_MAX)
                die(1, "%s: uint8 %s holds no images of a usable size", path, got);
            check_shape("predict", model, g, path, (int)a.shape[1], (int)a.shape[2],
                        a.ndim == 4 ? (int)a.shape[3] : 1, extra, resize);
        }
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
    if (!exact) { // --resize: each image resized and converted as an image file is
        int h = (int)a.shape[1], w = (int)a.shape[2], ch = a.ndim == 4 ? (int)a.shape[3] : 1;
        size_t src = (size_t)h * w * ch;
        for (i = 0; i < (size_t)n; i++)
            if (pf_image_to_input((const unsigned char *)a.data + i * src, h, w, ch, g, x + i * per) != PF_OK)
                die(1, "%s: image %zu: %s", path, i, pf_last_error());
        pf_array_free(&a);
        return x;
    }
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

// image files -> normalised float input [N,C,S,S] (malloc'd). Every image
// is read and checked before any is used: one of another size or channel
// count than the model's is refused (naming it, and how many more differ)
// unless resize.
static float *load_images(const char *const *files, int n, const char *model, const pf_config *g, int resize) {
#ifndef PF_HAVE_STB
    (void)n; (void)g; (void)model; (void)resize;
    die(1, "%s: image input needs stb_image, and this program was built without it "
           "(rebuild with -DPF_HAVE_STB, Debian package libstb-dev), or pass a .npy array", files[0]);
    return NULL;
#else
    size_t per = (size_t)g->channels * g->image_size * g->image_size;
    float *x;
    int i, odd = -1, n_odd = 0, oh = 0, ow = 0, oc = 0;
    if ((size_t)n > SIZE_MAX / sizeof(float) / per) die(1, "too many images (%d)", n);
    x = (float *)xmalloc((size_t)n * per * sizeof(float));
    for (i = 0; i < n; i++) {
        int w, h, ch;
        unsigned char *img;
        pf_status st = pf_image_load(files[i], &img, &h, &w, &ch);
        if (st != PF_OK) die_file(files[i]);
        if (!resize && (h != g->image_size || w != g->image_size || ch != g->channels)) {
            if (odd < 0) odd = i, oh = h, ow = w, oc = ch;
            n_odd++;
        }
        if (odd < 0) st = pf_image_to_input(img, h, w, ch, g, x + (size_t)i * per); // after a refusal: only checked
        pf_image_free(img);
        if (st != PF_OK) die_file(files[i]);
    }
    if (odd >= 0) {
        char extra[96] = "";
        if (n_odd > 1) snprintf(extra, sizeof extra, " (and %d more of the %d images differ)", n_odd - 1, n);
        check_shape("predict", model, g, files[odd], oh, ow, oc, extra, 0);
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
    {"--bf16", NULL, "off", "bf16 GEMM operands, fp32 accumulation, master weights and optimizer state: on the GPU, " \
                            "or on a CPU with AVX512_BF16 (off: fp32)"}

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
        if (dv->bf16 && pf_set_bf16(1) != PF_OK) die(1, "--bf16: %s", pf_last_error());
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
    if (!dv->cuda) return dv->bf16 ? "cpu (bf16)" : "cpu";
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

// Binds the device to m (which it uploads) for batches up to max_batch.
// Returns the backend for the trainer/evaluator: NULL on the CPU.
static const pf_backend *device_open(device *dv, pf_model *m, int max_batch) {
    if (!dv->cuda) return NULL;
#ifdef PF_WITH_CUDA
    dv->opts.max_batch = max_batch;
    if (pf_cuda_create(m, &dv->opts, &dv->g) != PF_OK || pf_cuda_as_backend(dv->g, &dv->be) != PF_OK)
        die(1, "--device %s: %s", dv->spec, pf_last_error());
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

static int is_image_name(const char *s) {
    return pf_path_has_ext(s, ".png") || pf_path_has_ext(s, ".jpg") || pf_path_has_ext(s, ".jpeg") ||
           pf_path_has_ext(s, ".bmp");
}

// Every --input value, split at commas, into *files (pointing into *names;
// both malloc'd). Returns the count; *is_npy counts the .npy ones.
static int predict_inputs(const cli *c, int k_input, const char ***files, char **names, int *is_npy) {
    size_t len = 0;
    int i, n = 0;
    for (i = 0; i < c->n; i++)
        if (c->which[i] == k_input) len += strlen(c->vals[i]) + 1;
    *names = (char *)xmalloc(len);
    *files = (const char **)xmalloc(len * sizeof(char *));
    *is_npy = 0;
    len = 0;
    for (i = 0; i < c->n; i++) {
        char *s;
        if (c->which[i] != k_input) continue;
        s = strcpy(*names + len, c->vals[i]);
        len += strlen(s) + 1;
        for (;;) {
            char *comma = strchr(s, ',');
            if (comma) *comma = '\0';
            if (!*s) usage_error(c, "--input: empty file name in '%s'", c->vals[i]);
            if (pf_path_has_ext(s, ".npy")) ++*is_npy;
            else if (!is_image_name(s)) usage_error(c, "--input: '%s' is not .npy, .png, .jpg, .jpeg or .bmp", s);
            (*files)[n++] = s;
            if (!comma) break;
            s = comma + 1;
        }
    }
    if (*is_npy && n > 1) usage_error(c, "--input: a .npy input must be the only input");
    return n;
}

// logits -> softmax probabilities, row by row, in double for the sums
static void softmax_rows(float *y, int N, int K) {
    int i, j;
    for (i = 0; i < N; i++) {
        float *r = y + (size_t)i * K;
        double mx = r[0], s = 0.0;
        for (j = 1; j < K; j++) mx = r[j] > mx ? r[j] : mx;
        for (j = 0; j < K; j++) s += exp((double)r[j] - mx);
        for (j = 0; j < K; j++) r[j] = (float)(exp((double)r[j] - mx) / s);
    }
}

// The scores y [N,K] as CSV with top-k columns ("-": stdout), or as .npy;
// a file is written to a temporary one and renamed into place.
static void predict_write(const char *output, int csv, int probs, const float *y, int N, int K, int top) {
    int *idx = (int *)xmalloc((size_t)K * sizeof(int)), i, j;
    if (csv) {
        int to_file = strcmp(output, "-") != 0;
        pf_atomic out;
        FILE *f = stdout;
        if (to_file) {
            if (pf_atomic_open(&out, output) != PF_OK) die_file(output);
            f = out.f;
        }
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
        if (to_file ? pf_atomic_commit(&out) != PF_OK : ferror(f) | fflush(f)) die(1, "%s: write failed (%s)", output,
                                                                                    to_file ? pf_last_error() : strerror(errno));
    } else {
        pf_array a;
        memset(&a, 0, sizeof a);
        a.dtype = PF_F32;
        a.ndim = 2;
        a.shape[0] = N;
        a.shape[1] = K;
        a.data = (void *)y;
        a.nbytes = (size_t)N * K * sizeof(float);
        if (pf_npy_save(output, &a) != PF_OK) die_file(output);
    }
    free(idx);
}

// "name: c1 (s1) c2 (s2) ..." per input (the row number for a .npy)
static void predict_print_top(const float *y, int N, int K, int top, const char *const *files, int is_npy) {
    int *idx = (int *)xmalloc((size_t)K * sizeof(int)), i, j;
    for (i = 0; i < N; i++) {
        top_k(y + (size_t)i * K, K, top, idx);
        printf("%s", is_npy ? "" : files[i]);
        if (is_npy) printf("%d", i);
        for (j = 0; j < top; j++) printf("%s%d (%.4g)", j ? " " : ": ", idx[j], y[(size_t)i * K + idx[j]]);
        printf("\n");
    }
    free(idx);
}

static int cmd_predict(int argc, char **argv) {
    enum { O_MODEL, O_INPUT, O_OUTPUT, O_BRANCHES, O_THREADS, O_BATCH, O_PROBS, O_TOP, O_RESIZE, O_DEVICE, O_BF16, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint (safetensors)"},
        {"--input", "X", "required", "a .npy array or image files (a,b,c; repeatable)"},
        {"--output", "Y", "required", "Y.npy (float32 [N,K]) or Y.csv (- : CSV on stdout)"},
        {"--branches", "k", "all", "use the first k branches"},
        {"--threads", "N", "OpenMP default", "threads"},
        {"--batch", "B", "64", "images per forward pass"},
        {"--probs", NULL, "off", "write softmax probabilities instead of logits"},
        {"--top", "k", "off", "print the k most likely classes per input (and add them to a CSV)"},
        {"--resize", NULL, "off", RESIZE_HELP ": uint8 arrays and image files"},
        DEVICE_OPTDEFS,
    };
    cli c = {"predict", o, O_N, 0, NULL, NULL};
    const char *model, *output, **files = NULL;
    device dv;
    char dev_buf[256], *names = NULL; // names: the --input values split at commas (files point into it)
    pf_model *m = NULL;
    float *x = NULL, *y = NULL;
    int N = 0, K, n_files, is_npy, probs, top = 0, active = 0, batch = 64, csv, resize;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer predict --model FILE --input X [--input X2 ...] --output Y [options]\n\n"
               "Writes class scores (logits, or probabilities with --probs) for the inputs:\n"
               "  X.npy float32 [N,C,H,W]   normalised already, used as is (C, H, W: the model's)\n"
               "  X.npy uint8 [N,H,W,C]     (or [N,H,W] for one channel) scaled to [0,1], then\n"
               "                            (v - mean)/std with the model's mean/std\n"
               "  .png .jpg .jpeg .bmp      the same\n"
               "uint8 arrays and images must have the model's size and channels (info --model shows them):\n"
               "others are refused, naming both shapes, unless --resize resizes them bilinearly and converts\n"
               "the channels (gray <-> RGB, alpha dropped). Every input is checked before any is scored.\n\n");
        print_options(&c);
        return 0;
    }
    cli_parse(&c, argc, argv);
    model = cli_need(&c, O_MODEL);
    output = cli_need(&c, O_OUTPUT);
    cli_need(&c, O_INPUT);
    csv = !strcmp(output, "-") || pf_path_has_ext(output, ".csv");
    if (!csv && !pf_path_has_ext(output, ".npy"))
        usage_error(&c, "--output: '%s' is neither .npy nor .csv (or - for CSV on stdout)", output);
    probs = cli_get(&c, O_PROBS) != NULL;
    if (cli_get(&c, O_BRANCHES)) active = (int)parse_int(&c, O_BRANCHES, 1, INT_MAX);
    if (cli_get(&c, O_TOP)) top = (int)parse_int(&c, O_TOP, 1, INT_MAX);
    if (cli_get(&c, O_BATCH)) batch = (int)parse_int(&c, O_BATCH, 1, 1 << 20);
    if (cli_get(&c, O_THREADS)) pf_set_threads((int)parse_int(&c, O_THREADS, 1, 4096));
    parse_device(&c, O_DEVICE, O_BF16, &dv);
    n_files = predict_inputs(&c, O_INPUT, &files, &names, &is_npy);
    if (strcmp(output, "-")) { // before reading anything: the output can be written and is no input
        int i;
        check_not_input(&c, "--output", output, "--model", model);
        for (i = 0; i < n_files; i++) check_not_input(&c, "--output", output, "--input", files[i]);
        check_output("predict", "--output", output, OUT_REPLACE);
    }

    if (pf_model_load(model, &m) != PF_OK) die_file(model);
    K = m->cfg.classes;
    if (active > m->cfg.branches)
        usage_error(&c, "--branches %d: %s has %d branch%s", active, model, m->cfg.branches,
                    m->cfg.branches == 1 ? "" : "es");
    if (active && pf_model_set_active(m, active) != PF_OK) die(1, "%s", pf_last_error());
    if (top > K) usage_error(&c, "--top %d: %s has %d classes", top, model, K);
    resize = cli_get(&c, O_RESIZE) != NULL;
    if (is_npy) x = load_npy_input(files[0], model, &m->cfg, resize, &N);
    else x = load_images(files, N = n_files, model, &m->cfg, resize);
    if ((size_t)N > SIZE_MAX / sizeof(float) / (size_t)K) die(1, "too many inputs (%d)", N);
    y = (float *)xmalloc((size_t)N * K * sizeof(float));
    if (N > 0) {
        if (dv.cuda) device_open(&dv, m, batch < N ? batch : N);
        else if (pf_model_reserve(m, batch < N ? batch : N) != PF_OK) die(1, "%s", pf_last_error());
        if (device_predict(&dv, m, x, N, y) != PF_OK) die(1, "%s: %s", model, pf_last_error());
    }
    if (probs) softmax_rows(y, N, K);
    predict_write(output, csv, probs, y, N, K, top);
    if (strcmp(output, "-")) {
        if (top) predict_print_top(y, N, K, top, files, is_npy);
        printf("wrote %s: %s [%d,%d] from %d input%s, %d of %d branches%s%s\n", output,
               probs ? "probabilities" : "logits", N, K, N, N == 1 ? "" : "s", m->active, m->cfg.branches,
               dv.cuda || dv.bf16 ? ", on " : "", dv.cuda || dv.bf16 ? device_label(&dv, dev_buf, sizeof dev_buf) : "");
    }
    device_close(&dv);
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
        die(1, "bench: %s", lib_error("bench"));
    if ((be ? be->backward(be->ctx) : pf_backward(d->m)) != PF_OK) die(1, "bench: %s", lib_error("bench"));
    if (be) {
        if (be->step(be->ctx, &d->opt, NULL) != PF_OK) die(1, "bench: %s", lib_error("bench"));
#ifdef PF_WITH_CUDA
        if (pf_cuda_sync((pf_cuda *)be->ctx) != PF_OK) die(1, "bench: %s", lib_error("bench"));
#endif
        loss = (float)d->m->loss;
    } else {
        if (pf_optim_step(d->m, &d->opt, NULL) != PF_OK) die(1, "%s", pf_last_error());
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
        if (device_predict(d->dv, d->m, d->x, n, d->logits) != PF_OK) die(1, "bench: %s", lib_error("bench"));
    } else {
#ifdef PF_WITH_CUDA
        if (pf_cuda_forward(d->dv->g, NULL, NULL, n, 0.0f, NULL) != PF_OK ||
            pf_cuda_logits(d->dv->g, d->logits) != PF_OK)
            die(1, "bench: %s", lib_error("bench"));
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

enum { BE_ZOO, BE_DATASET, BE_ARCH, BE_BATCH = BE_ARCH + A_N, BE_INFER_BATCH, BE_THREADS, BE_WARM, BE_REPS,
       BE_PROFILE, BE_SEED, BE_PEAK, BE_JSON, BE_ROW, BE_ROW_HEADER, BE_DEVICE, BE_BF16, BE_N };
static const optdef BENCH_OPTS[BE_N] = {
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
    {"--peak", NULL, "off", "also measure the FP32 FMA peak (with --bf16 also the vdpbf16ps peak) and report the share of it"},
    {"--json", NULL, "off", "print one JSON object"},
    {"--row", NULL, "off", "print one markdown table row (see --row-header)"},
    {"--row-header", NULL, "off", "print the header of the --row table and exit"},
    DEVICE_OPTDEFS,
};

// What `bench` runs (the flags) and what it measured (seconds, medians),
// between the flags, the measurement and the three report formats.
typedef struct bench_job {
    cli c;
    pf_config cfg;
    char name[64];          // vitN or pfBxL
    int batch, infer_batch, warm, reps, psteps, threads, json, row, peak_on;
    uint64_t seed;
    device dv;
    pf_model *m;
    pf_profile prof;        // psteps profiled steps (the CPU only)
    double t_train, t_train_host, t_infer, t_infer_host, t_b1, t_prof;
    double flops, op_s, peak, peak16, gflops; // per step; peak 0: not measured; peak16: the bf16 one
} bench_job;

// the flags (parsed); the model's shape: the preset, --zoo, --dataset, then
// the architecture flags (usage errors exit 2)
static void bench_flags(bench_job *j) {
    const cli *c = &j->c;
    const char *zoo;
    arch_preset(c, BE_ARCH, &j->cfg);
    if ((zoo = cli_get(c, BE_ZOO)) && !parse_zoo(zoo, &j->cfg.branches, &j->cfg.depth))
        usage_error(c, "--zoo: '%s' is not vitN or pfBxL (B branches of L layers: vit12, pf4x3, pf2x3)", zoo);
    if (cli_get(c, BE_DATASET)) {
        static const char *const DATASETS[] = {"cifar", "fmnist"};
        int fmnist = parse_choice(c, BE_DATASET, DATASETS, 2);
        j->cfg.image_size = fmnist ? 28 : 32;
        j->cfg.channels = fmnist ? 1 : 3;
        j->cfg.classes = 10;
    }
    arch_flags(c, BE_ARCH, &j->cfg);
    j->batch = cli_get(c, BE_BATCH) ? (int)parse_int(c, BE_BATCH, 1, 1 << 16) : 128;
    j->infer_batch = cli_get(c, BE_INFER_BATCH) ? (int)parse_int(c, BE_INFER_BATCH, 1, 1 << 20) : j->batch;
    if (cli_get(c, BE_THREADS)) pf_set_threads((int)parse_int(c, BE_THREADS, 1, 4096));
    j->warm = cli_get(c, BE_WARM) ? (int)parse_int(c, BE_WARM, 0, 100000) : 2;
    j->reps = cli_get(c, BE_REPS) ? (int)parse_int(c, BE_REPS, 1, 100000) : 5;
    j->psteps = cli_get(c, BE_PROFILE) ? (int)parse_int(c, BE_PROFILE, 1, 100000) : 2;
    if (cli_get(c, BE_SEED)) j->seed = parse_u64(c, BE_SEED);
    j->json = cli_get(c, BE_JSON) != NULL;
    j->row = cli_get(c, BE_ROW) != NULL;
    if (j->json && j->row) usage_error(c, "--json and --row exclude each other");
    parse_device(c, BE_DEVICE, BE_BF16, &j->dv);
    j->peak_on = cli_get(c, BE_PEAK) != NULL;
    if (j->dv.cuda && j->peak_on) usage_error(c, "--peak measures the CPU: not with --device cuda");
    j->threads = pf_get_threads();
    if (j->cfg.branches == 1) snprintf(j->name, sizeof j->name, "vit%d", j->cfg.depth);
    else snprintf(j->name, sizeof j->name, "pf%dx%d", j->cfg.branches, j->cfg.depth);
}

// The timings: the model on seeded random input (the library's stream, so
// that every run and every build times the same numbers), training steps,
// a per-op profile of a few more, inference and batch-1 latency.
static void bench_measure(bench_job *j) {
    const pf_config *cfg = &j->cfg;
    int n_in = j->batch > j->infer_batch ? j->batch : j->infer_batch, i, op;
    size_t per = (size_t)cfg->channels * cfg->image_size * cfg->image_size, k;
    pf_rng rng = pf_rng_seed(j->seed);
    bench_data d;
    float *x, *logits;
    int *labels;
    double *t;
    if (pf_model_create(cfg, &j->m) != PF_OK) die(1, "bench: %s", lib_error("bench"));
    pf_model_init(j->m, 0, 0.0f);
    if (pf_model_alloc_train(j->m) != PF_OK || (!j->dv.cuda && pf_model_reserve(j->m, j->batch) != PF_OK))
        die(1, "bench: %s", lib_error("bench"));
    if ((size_t)n_in > SIZE_MAX / sizeof(float) / per) die(1, "bench: batch too large");
    x = (float *)xmalloc((size_t)n_in * per * sizeof(float));
    labels = (int *)xmalloc((size_t)j->batch * sizeof(int));
    logits = (float *)xmalloc((size_t)n_in * cfg->classes * sizeof(float));
    t = (double *)xmalloc((size_t)(3 * j->reps + j->psteps) * sizeof(double));
    for (k = 0; k < (size_t)n_in * per; k++) x[k] = (float)pf_rng_normal(&rng);
    for (i = 0; i < j->batch; i++) labels[i] = (int)(pf_rng_next(&rng) % (uint64_t)cfg->classes);
    d.m = j->m, d.x = x, d.labels = labels, d.B = j->batch, d.opt = pf_optim_default(), d.resident = 0;
    d.dv = &j->dv, d.logits = logits;
    d.be = device_open(&j->dv, j->m, n_in);

    // training steps (on a device: first with the images copied from the
    // host in each step, as the trainer does; then with them left on the
    // device, as PyTorch's benchmark does: the main figure)
    j->m->training = 1;
    j->t_train = j->t_train_host = bench_median(&d, BENCH_TRAIN, j->batch, j->warm, j->reps, t);
    if (j->dv.cuda) {
        d.resident = 1;
        j->t_train = bench_median(&d, BENCH_TRAIN, j->batch, j->warm, j->reps, t);
    }
    // per-op profile of further steps (the CPU's ops only)
    memset(&j->prof, 0, sizeof j->prof);
    j->m->profile = j->dv.cuda ? NULL : &j->prof;
    j->t_prof = pf_time();
    for (i = 0; i < (j->dv.cuda ? 0 : j->psteps); i++) train_step(&d);
    j->t_prof = j->dv.cuda ? 0.0 : (pf_time() - j->t_prof) / j->psteps;
    j->m->profile = NULL;
    for (op = 0; op < PF_OP_COUNT; op++) {
        j->flops += (j->prof.fwd_flops[op] + j->prof.bwd_flops[op]) / j->psteps;
        j->op_s += (j->prof.fwd_s[op] + j->prof.bwd_s[op]) / j->psteps;
    }
    j->gflops = j->flops / j->t_train / 1e9;
    // inference: a large batch, then batch-1 latency
    j->m->training = 0;
    j->t_infer = j->t_infer_host = bench_median(&d, BENCH_PREDICT, j->infer_batch, j->warm, j->reps, t);
    if (j->dv.cuda) // the last call's images, left on the device
        j->t_infer = bench_median(&d, BENCH_PREDICT_RESIDENT, j->infer_batch, j->warm, j->reps, t);
    j->t_b1 = bench_median(&d, BENCH_PREDICT, 1, j->warm, 3 * j->reps, t);
    if (j->peak_on) j->peak = fma_peak_gflops(j->threads);
    if (j->peak_on && j->dv.bf16) j->peak16 = bf16_peak_gflops(j->threads);
    free(t);
    free(logits);
    free(labels);
    free(x);
}

// GFLOP/s of one op's forward or backward in the profiled steps (fs, bs:
// its seconds per step)
static double op_gflops(const bench_job *j, int op, int bwd, double sec) {
    return sec > 0 ? (bwd ? j->prof.bwd_flops[op] : j->prof.fwd_flops[op]) / j->psteps / sec / 1e9 : 0.0;
}

static void bench_print_json(const bench_job *j) {
    const pf_config *cfg = &j->cfg;
    int op;
    printf("{\"model\": \"%s\", \"params\": %zu, \"threads\": %d, \"batch\": %d, \"infer_batch\": %d,\n", j->name,
           j->m->n_params, j->threads, j->batch, j->infer_batch);
    printf(" \"dataset\": \"%s\", \"image_size\": %d, \"channels\": %d, \"patch\": %d, \"dim\": %d, "
           "\"heads\": %d, \"mlp_dim\": %d, \"branches\": %d, \"depth\": %d, \"classes\": %d, \"tokens\": %d,\n",
           cfg->image_size == 28 && cfg->channels == 1 ? "fmnist" : cfg->image_size == 32 && cfg->channels == 3
           ? "cifar" : "custom", cfg->image_size, cfg->channels, cfg->patch_size, cfg->dim, cfg->heads, cfg->mlp_dim,
           cfg->branches, cfg->depth, cfg->classes, j->m->T);
    printf(" \"warm\": %d, \"reps\": %d, \"profile_steps\": %d, \"gemm_kernel\": \"%s\",\n", j->warm, j->reps,
           j->dv.cuda ? 0 : j->psteps, j->dv.cuda ? "cublas" : pf_gemm_kernel());
    printf(" \"device\": \"%s\", \"backend\": \"%s\", \"precision\": \"%s\",\n", j->dv.spec, device_backend(&j->dv),
           j->dv.bf16 ? "bf16" : "fp32");
    printf(" \"train_img_s\": %.2f, \"train_step_ms\": %.3f, \"infer_img_s\": %.2f, \"infer_batch_ms\": %.3f, "
           "\"latency_b1_ms\": %.3f,\n", j->batch / j->t_train, 1e3 * j->t_train, j->infer_batch / j->t_infer,
           1e3 * j->t_infer, 1e3 * j->t_b1);
    if (j->dv.cuda) {
        printf(" \"train_host_img_s\": %.2f, \"infer_host_img_s\": %.2f,\n", j->batch / j->t_train_host,
               j->infer_batch / j->t_infer_host);
        printf(" \"ops\": {}}\n");
        return;
    }
    printf(" \"train_gflop_per_step\": %.4f, \"train_gflops\": %.2f, \"profiled_step_ms\": %.3f, "
           "\"unprofiled_ms\": %.3f,\n", j->flops / 1e9, j->gflops, 1e3 * j->t_prof, 1e3 * (j->t_prof - j->op_s));
    if (j->peak > 0) printf(" \"peak_gflops\": %.2f, \"peak_frac\": %.4f, \"peak_isa\": \"%s\",\n", j->peak,
                            j->gflops / j->peak, fma_peak_isa());
    if (j->peak16 > 0) printf(" \"bf16_peak_gflops\": %.2f, \"bf16_peak_frac\": %.4f,\n", j->peak16, j->gflops / j->peak16);
    printf(" \"ops\": {");
    for (op = 0; op < PF_OP_COUNT; op++) {
        double fs = j->prof.fwd_s[op] / j->psteps, bs = j->prof.bwd_s[op] / j->psteps;
        printf("%s\n  \"%s\": {\"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"fwd_gflops\": %.2f, \"bwd_gflops\": %.2f, "
               "\"gflop_per_step\": %.4f, \"share\": %.4f}", op ? "," : "", pf_op_name(op), 1e3 * fs, 1e3 * bs,
               op_gflops(j, op, 0, fs), op_gflops(j, op, 1, bs),
               (j->prof.fwd_flops[op] + j->prof.bwd_flops[op]) / j->psteps / 1e9, j->t_prof > 0 ? (fs + bs) / j->t_prof : 0.0);
    }
    printf("}}\n");
}

static void bench_print_row(const bench_job *j) {
    char pk[32] = "-";
    if (j->peak > 0) snprintf(pk, sizeof pk, "%.1f%%", 100.0 * j->gflops / j->peak);
    printf("| %-6s | %7d | %5d | %11.1f | %11.1f | %13.2f | %13.1f | %9s | %9zu |\n", j->name, j->threads, j->batch,
           j->batch / j->t_train, j->infer_batch / j->t_infer, 1e3 * j->t_b1, j->gflops, pk, j->m->n_params);
}

static void bench_print_text(const bench_job *j) {
    const pf_config *cfg = &j->cfg;
    char dev_buf[160];
    int op;
    printf("model     %s: PF(%dx%d), dim %d, heads %d, mlp %d, %dx%dx%d input, patch %d, %d classes, "
           "%zu parameters\n", j->name, cfg->branches, cfg->depth, cfg->dim, cfg->heads, cfg->mlp_dim, cfg->image_size,
           cfg->image_size, cfg->channels, cfg->patch_size, cfg->classes, j->m->n_params);
    if (j->dv.cuda)
        printf("setup     %s, batch %d, inference batch %d, warm-up %d, medians of %d\n",
               device_label(&j->dv, dev_buf, sizeof dev_buf), j->batch, j->infer_batch, j->warm, j->reps);
    else
        printf("setup     %d thread%s, batch %d, inference batch %d, warm-up %d, medians of %d, gemm kernel %s\n",
               j->threads, j->threads == 1 ? "" : "s", j->batch, j->infer_batch, j->warm, j->reps, pf_gemm_kernel());
    printf("train     %9.2f img/s   step %.1f ms", j->batch / j->t_train, 1e3 * j->t_train);
    if (!j->dv.cuda) printf(", %.2f GFLOP, %.1f GFLOP/s", j->flops / 1e9, j->gflops);
    if (j->peak > 0) printf(" = %.1f%% of the %.0f GFLOP/s FMA peak (%s)", 100.0 * j->gflops / j->peak, j->peak,
                            fma_peak_isa());
    if (j->peak16 > 0) printf(", %.1f%% of the %.0f GFLOP/s bf16 peak (vdpbf16ps)", 100.0 * j->gflops / j->peak16,
                              j->peak16);
    printf("\ninfer     %9.2f img/s   %d images in %.1f ms\n", j->infer_batch / j->t_infer, j->infer_batch,
           1e3 * j->t_infer);
    printf("latency   %9.3f ms      batch 1, median of %d\n", 1e3 * j->t_b1, 3 * j->reps);
    if (j->dv.cuda) {
        printf("          (train and infer with the images on the device; copied from the host each call:\n"
               "          train %.2f img/s, infer %.2f img/s; latency includes the copies)\n",
               j->batch / j->t_train_host, j->infer_batch / j->t_infer_host);
        return;
    }
    printf("\nper op, one training step (mean of %d profiled steps of %.1f ms):\n", j->psteps, 1e3 * j->t_prof);
    printf("  %-10s %9s %9s %11s %11s %9s %7s\n", "op", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s", "GFLOP", "share");
    for (op = 0; op < PF_OP_COUNT; op++) {
        double fs = j->prof.fwd_s[op] / j->psteps, bs = j->prof.bwd_s[op] / j->psteps;
        printf("  %-10s %9.2f %9.2f %11.1f %11.1f %9.3f %6.1f%%\n", pf_op_name(op), 1e3 * fs, 1e3 * bs,
               op_gflops(j, op, 0, fs), op_gflops(j, op, 1, bs),
               (j->prof.fwd_flops[op] + j->prof.bwd_flops[op]) / j->psteps / 1e9,
               j->t_prof > 0 ? 100.0 * (fs + bs) / j->t_prof : 0.0);
    }
    printf("  %-10s %19.2f %33s %6.1f%%\n", "(other)", 1e3 * (j->t_prof - j->op_s), "",
           j->t_prof > 0 ? 100.0 * (j->t_prof - j->op_s) / j->t_prof : 0.0);
}

static int cmd_bench(int argc, char **argv) {
    bench_job j;
    memset(&j, 0, sizeof j);
    j.c.cmd = "bench";
    j.c.o = BENCH_OPTS;
    j.c.n_opts = BE_N;
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
        print_options(&j.c);
        return 0;
    }
    cli_parse(&j.c, argc, argv);
    if (cli_get(&j.c, BE_ROW_HEADER)) { // for scripts that build a table of rows: no model, no timing
        fputs(BENCH_ROW_HEADER, stdout);
        cli_free(&j.c);
        return 0;
    }
    bench_flags(&j);
    bench_measure(&j);
    if (j.json) bench_print_json(&j);
    else if (j.row) bench_print_row(&j);
    else bench_print_text(&j);
    device_close(&j.dv);
    pf_model_free(j.m);
    cli_free(&j.c);
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

// The options of `train`, at file scope: the flags, model, run and report
// steps below all read them (TR_* are their indices).
enum { TR_DATA, TR_TEST, TR_VAL, TR_ARCH, TR_INIT = TR_ARCH + A_N, TR_RESIZE, TR_RESUME, TR_TRAIN_BRANCHES, TR_TRAIN_HEAD,
       TR_SCHEDULE, TR_EPOCHS, TR_BATCH, TR_LR, TR_OPTIMIZER, TR_WD, TR_LR_SCHED, TR_WARMUP, TR_MIN_LR, TR_CLIP,
       TR_SMOOTH, TR_NEW_BRANCH, TR_FREEZE_OLD, TR_OLD_LR, TR_PATIENCE, TR_MIN_DELTA, TR_PREFIX_CLIP, TR_CROP,
       TR_FLIP, TR_RANDAUG, TR_ERASE, TR_MIXUP, TR_CUTMIX, TR_EMA, TR_DROP_PATH, TR_THREADS, TR_DEVICE, TR_BF16, TR_SEED, TR_OUT, TR_OVERWRITE,
       TR_LOG, TR_LOG_EVERY, TR_EVAL_BATCH,
       TR_QUIET, TR_N };
static const optdef TRAIN_OPTS[TR_N] = {
    {"--data", "SPEC", "required", "training data: fmnist[:DIR] cifar10[:DIR] cifar100[:DIR] folder:DIR npy:X,Y "
                                   "[@train|@test] [#classes=LIST] [#limit=N]"},
    {"--test", "SPEC", "the @test split of --data", "data for the final evaluation and branch sweep ('none': skip)"},
    {"--val", "F|SPEC", "0.1", "validation: a seeded fraction of --data, or a dataset spec (its @test split unless it names @train)"},
    ARCH_OPTDEFS,
    {"--init", "FILE", "none", "start from these weights (architecture from the file)"},
    {"--resize", NULL, "off", "with --init: " RESIZE_HELP},
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
    {"--lr-schedule", "cosine|cosine-run|constant", "cosine", "warmup + cosine (per stage when staged; cosine-run: over the whole run), or constant"},
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
    {"--randaug", "N,M", "off", "RandAugment with N (0..16) ops at magnitude M (0..30)"},
    {"--erase", "P", "0 (off)", "random erasing with probability P (0..1): a rectangle of the input gets noise"},
    {"--mixup", "ALPHA", "0 (off)", "MixUp: each batch blended with itself reversed, lambda ~ Beta(ALPHA, ALPHA) (CPU only)"},
    {"--cutmix", "ALPHA", "0 (off)", "CutMix: a box pasted from the reversed batch, Beta(ALPHA, ALPHA); with --mixup, one "
                                      "of the two per batch (CPU only)"},
    {"--ema", "DECAY", "0 (off)", "average the weights (e.g. 0.999): validation uses the average, and the final model "
                                  "is it (CPU only)"},
    {"--drop-path", "P", "0 (off)", "stochastic depth: each residual sub-layer of an image dropped, in layer l of a "
                                    "branch of depth L with probability P*l/(L-1) (CPU only)"},
    {"--threads", "N", "all cores", "threads"},
    DEVICE_OPTDEFS,
    {"--seed", "N", "0", "initialisation, split, data order, augmentation, dropout"},
    {"--out", "FILE", "required", "checkpoint with training state, rewritten at every epoch end; an existing "
                                  "FILE is refused unless --resume names it or --overwrite is given"},
    {"--overwrite", NULL, "off", "replace an existing --out (a model of another run) with this run's"},
    {"--log", "FILE", "none", "JSON-lines log, one object per event (paraformer plot reads it)"},
    {"--log-every", "N", "~20 per epoch", "steps per train log line"},
    {"--eval-batch", "N", "256", "batch of evaluations"},
    {"--quiet", NULL, "off", "only the final results"},
};

// What `train` carries from one step to the next: the flags, then the data
// and the model they select, then the trainer that runs them.
typedef struct train_job {
    cli c;
    const char *preset, *resume, *init, *out;
    const char *val_spec;   // --val as a dataset spec; NULL: val_frac of --data
    double val_frac;
    pf_config cfg;          // the preset's, before the data and the flags
    pf_train_opts opts;
    float embed_std;
    device dv;
    pf_dataset train, val, test;
    int have_test;
    pf_model *m;
    pf_trainer t;
    progress_ctx progress;
    char args[1024];        // train_args metadata
} train_job;

// The training options over the preset's (usage errors exit 2).
static void train_opts_flags(const cli *c, pf_train_opts *opts) {
    if (cli_get(c, TR_SCHEDULE)) {
        static const char *const S[] = {"staged", "interleaved", "joint"};
        opts->schedule = parse_choice(c, TR_SCHEDULE, S, 3);
    }
    if (cli_get(c, TR_EPOCHS)) {
        float e[PF_TRAIN_MAX_LIST];
        int n = parse_floats(c, TR_EPOCHS, e, PF_TRAIN_MAX_LIST), i;
        for (i = 0; i < n; i++)
            if (e[i] != (float)(int)e[i] || e[i] < 1 || e[i] > 100000)
                usage_error(c, "--epochs: '%s': each value must be an integer in 1..100000", cli_get(c, TR_EPOCHS));
        memset(opts->stage_epochs, 0, sizeof opts->stage_epochs);
        opts->epochs = (int)e[n - 1];
        if (n > 1) {
            if (opts->schedule != PF_SCHED_STAGED) usage_error(c, "--epochs: a list of stage caps needs --schedule staged");
            for (i = 0; i < n; i++) opts->stage_epochs[i] = (int)e[i];
        }
    }
    if (cli_get(c, TR_BATCH)) opts->batch = (int)parse_int(c, TR_BATCH, 1, 65536);
    if (cli_get(c, TR_LR)) opts->optim.lr = parse_float(c, TR_LR, 1e-9, 9.99);
    if (cli_get(c, TR_OPTIMIZER)) {
        static const char *const S[] = {"adamw", "adam"};
        opts->optim.adam = parse_choice(c, TR_OPTIMIZER, S, 2);
    }
    if (cli_get(c, TR_WD)) opts->optim.weight_decay = parse_float(c, TR_WD, 0, 9.99);
    if (cli_get(c, TR_LR_SCHED)) {
        static const char *const S[] = {"cosine", "constant", "cosine-run"};
        opts->lr_schedule = parse_choice(c, TR_LR_SCHED, S, 3);
    }
    if (cli_get(c, TR_WARMUP)) opts->warmup = parse_float(c, TR_WARMUP, 0, 100000);
    if (cli_get(c, TR_MIN_LR)) opts->min_lr = parse_float(c, TR_MIN_LR, 0, 1);
    if (cli_get(c, TR_CLIP)) opts->optim.clip = parse_float(c, TR_CLIP, 0, 1e9);
    if (cli_get(c, TR_SMOOTH)) opts->label_smoothing = parse_float(c, TR_SMOOTH, 0, 0.999);
    if (cli_get(c, TR_NEW_BRANCH)) {
        static const char *const S[] = {"zero", "random"};
        opts->new_branch = parse_choice(c, TR_NEW_BRANCH, S, 2);
    }
    if (cli_get(c, TR_FREEZE_OLD)) opts->freeze_old = parse_choice(c, TR_FREEZE_OLD, ONOFF, 8) % 2;
    if (cli_get(c, TR_OLD_LR)) opts->old_lr = parse_float(c, TR_OLD_LR, 0, 100);
    if (cli_get(c, TR_PATIENCE)) opts->patience = (int)parse_int(c, TR_PATIENCE, 0, 100000);
    if (cli_get(c, TR_MIN_DELTA)) opts->min_delta = parse_float(c, TR_MIN_DELTA, 0, 1e9);
    if (cli_get(c, TR_PREFIX_CLIP)) opts->prefix_clip = parse_float(c, TR_PREFIX_CLIP, 0, 1e9);
    if (cli_get(c, TR_CROP)) opts->aug.crop_pad = (int)parse_int(c, TR_CROP, 0, PF_AUG_MAX_PAD);
    if (cli_get(c, TR_FLIP)) opts->aug.flip = parse_choice(c, TR_FLIP, ONOFF, 8) % 2;
    if (cli_get(c, TR_RANDAUG)) {
        float v[2];
        if (parse_floats(c, TR_RANDAUG, v, 2) != 2 || v[0] != (int)v[0] || v[1] != (int)v[1])
            usage_error(c, "--randaug: give N,M as two integers, e.g. 2,14");
        opts->aug.randaug_n = (int)v[0];
        opts->aug.randaug_m = (int)v[1];
    }
    if (cli_get(c, TR_ERASE)) opts->aug.erase_p = parse_float(c, TR_ERASE, 0, 1);
    if (cli_get(c, TR_MIXUP)) opts->mixup = parse_float(c, TR_MIXUP, 0, 100);
    if (cli_get(c, TR_CUTMIX)) opts->cutmix = parse_float(c, TR_CUTMIX, 0, 100);
    if (cli_get(c, TR_EMA)) opts->ema = parse_float(c, TR_EMA, 0, 0.99999);
    if (cli_get(c, TR_DROP_PATH)) opts->drop_path = parse_float(c, TR_DROP_PATH, 0, 0.99);
    if (cli_get(c, TR_SEED)) opts->seed = parse_u64(c, TR_SEED);
    if (cli_get(c, TR_LOG_EVERY)) opts->log_every = (int)parse_int(c, TR_LOG_EVERY, 1, INT_MAX);
    if (cli_get(c, TR_EVAL_BATCH)) opts->eval_batch = (int)parse_int(c, TR_EVAL_BATCH, 1, 65536);
}

// The outputs, checked before any data is read: --out and --log can be
// written, neither is an input, and an existing --out is replaced only when
// --resume continues that very file or --overwrite says so (it may be a
// finished model of another run).
static void train_outputs(const train_job *j) {
    const cli *c = &j->c;
    const char *log = cli_get(c, TR_LOG);
    struct stat sb;
    if (j->init) check_not_input(c, "--out", j->out, "--init", j->init);
    if (log) {
        check_not_input(c, "--log", log, "--out", j->out);
        if (j->init) check_not_input(c, "--log", log, "--init", j->init);
        if (j->resume) check_not_input(c, "--log", log, "--resume", j->resume);
    }
    check_output("train", "--out", j->out, OUT_REPLACE);
    if (log) { // appended to; on --resume first cut back by an atomic rewrite
        if (j->resume) check_output("train", "--log", log, OUT_REPLACE);
        check_output("train", "--log", log, OUT_APPEND);
    }
    if (stat(j->out, &sb) == 0 && !cli_get(c, TR_OVERWRITE) && !(j->resume && same_file(j->out, j->resume)))
        die(1, "train: --out %s exists%s: pass --overwrite to replace it, or --resume %s to continue the run it holds",
            j->out, j->resume ? " and is not the --resume file" : "", j->out);
}

// Step 1: the flags, checked before any data is read (all but those that
// need the model), so that a typo fails at once, not after a long load.
static void train_flags(train_job *j, int argc, char **argv) {
    cli *c = &j->c;
    const char *val;
    int i, arch_given = 0;
    cli_parse(c, argc, argv);
    j->out = cli_need(c, TR_OUT);
    j->resume = cli_get(c, TR_RESUME);
    j->init = cli_get(c, TR_INIT);
    j->preset = cli_get(c, TR_ARCH + A_PRESET) ? cli_get(c, TR_ARCH + A_PRESET) : "paraformer";
    for (i = TR_ARCH + 1; i < TR_ARCH + A_N; i++) arch_given |= cli_get(c, i) != NULL;
    if (j->resume && j->init) usage_error(c, "--resume and --init exclude each other");
    if (j->init && arch_given) usage_error(c, "architecture flags do not apply with --init (the model comes from the file)");
    if (cli_get(c, TR_RESIZE) && !j->init)
        usage_error(c, "--resize goes with --init (a new model takes its input shape from the data or from "
                       "--image-size/--channels)");
    if (j->resume) {
        pf_st_file *f;
        if (pf_st_open(j->resume, &f) != PF_OK) die_file(j->resume);
        if (!pf_st_meta(f, "train_state"))
            die(1, "%s: no \"train_state\" in the metadata: a model without training state (use --init to start a new "
                "run from its weights)", j->resume);
        pf_st_close(f);
    }
    if (pf_train_preset(j->preset, &j->cfg, &j->opts, &j->embed_std) != PF_OK)
        usage_error(c, "--preset: unknown preset '%s' (fmnist-small, cifar10-small, paper, paraformer, vit)", j->preset);
    train_opts_flags(c, &j->opts);
    if (cli_get(c, TR_THREADS)) pf_set_threads((int)parse_int(c, TR_THREADS, 1, 1024));
    parse_device(c, TR_DEVICE, TR_BF16, &j->dv);
    if (j->dv.cuda && (j->opts.mixup > 0 || j->opts.cutmix > 0 || j->opts.ema > 0 || j->opts.drop_path > 0))
        usage_error(c, "%s runs on the CPU only: the GPU backend takes hard labels, keeps the weights on the device "
                    "and has no stochastic depth", j->opts.mixup > 0 ? "--mixup" : j->opts.cutmix > 0 ? "--cutmix"
                    : j->opts.ema > 0 ? "--ema" : "--drop-path");
    if (cli_get(c, TR_TRAIN_BRANCHES)) {
        if (j->opts.schedule != PF_SCHED_JOINT && cli_get(c, TR_SCHEDULE))
            usage_error(c, "--train-branches trains some branches jointly: use --schedule joint (the default then)");
        j->opts.schedule = PF_SCHED_JOINT;
        j->opts.keep_trainable = 1;
    }
    if (pf_train_opts_validate(&j->opts) != PF_OK) usage_error(c, "%s", lib_error("train"));
    j->val_frac = 0.1;
    if ((val = cli_get(c, TR_VAL)) != NULL) {
        char *end;
        double v = strtod(val, &end);
        if (end == val || *end) j->val_spec = val;
        else if (!(v >= 0 && v < 1)) usage_error(c, "--val: a fraction must be in [0, 1)");
        else j->val_frac = v;
    }
    train_outputs(j);
    // from here on a signal stops the trainer at its next step (the run is
    // then continued with --resume), before it would kill a half-read input
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
}

// The default test set of a training spec: the @test split of the same
// source (NULL for kinds with one split). The result is malloc'd.
static char *test_spec_of(const char *spec) {
    size_t at, rest, n = strlen(spec);
    int split;
    char *t;
    if (strncmp(spec, "fmnist", 6) && strncmp(spec, "cifar10", 7) && strncmp(spec, "cifar100", 8)) return NULL;
    if (pf_dataset_spec_split(spec, PF_SPLIT_TRAIN, &split, &at, &rest) != PF_OK) die(1, "%s", pf_last_error());
    t = (char *)xmalloc(n + 8);
    snprintf(t, n + 8, "%.*s@test%s", (int)at, spec, spec + rest); // an @train is replaced
    return t;
}

// Step 2: the training, validation and test sets.
static void train_data(train_job *j) {
    const char *data = cli_need(&j->c, TR_DATA), *test = cli_get(&j->c, TR_TEST);
    char *test_owned = NULL;
    pf_dataset all;
    load_data(data, PF_SPLIT_TRAIN, &all);
    if (j->val_spec) {
        j->train = all;
        load_data(j->val_spec, PF_SPLIT_TEST, &j->val);
    } else if (j->val_frac > 0) {
        if (pf_dataset_split(&all, j->val_frac, j->opts.seed, &j->train, &j->val) != PF_OK) die(1, "%s", pf_last_error());
        pf_dataset_free(&all);
    } else {
        j->train = all;
    }
    if (!test) test = test_owned = test_spec_of(data);
    if (test && strcmp(test, "none")) {
        load_data(test, PF_SPLIT_TEST, &j->test);
        j->have_test = 1;
    }
    free(test_owned);
}

// The model of a new run: the preset, fitted to the data where the flags
// leave it open (not the paper preset's fixed 224 input and normalisation),
// then the flags.
static pf_model *train_new_model(train_job *j) {
    const cli *c = &j->c;
    int paper = !strcmp(j->preset, "paper"), fit = 0;
    pf_model *m = NULL;
    if (!cli_get(c, TR_ARCH + A_IMAGE) && !paper) fit |= PF_FIT_IMAGE_SIZE;
    if (!cli_get(c, TR_ARCH + A_CHANNELS)) fit |= PF_FIT_CHANNELS;
    if (!cli_get(c, TR_ARCH + A_CLASSES)) fit |= PF_FIT_CLASSES;
    if (pf_config_fit(&j->cfg, &j->train, fit) != PF_OK) die(1, "%s", pf_last_error());
    arch_flags(c, TR_ARCH, &j->cfg);
    // the statistics after the flags: they need not be computed when given
    if (!cli_get(c, TR_ARCH + A_MEAN) && !cli_get(c, TR_ARCH + A_STD) && !paper &&
        pf_config_fit(&j->cfg, &j->train, PF_FIT_NORM) != PF_OK)
        die(1, "%s", pf_last_error());
    if (pf_model_create(&j->cfg, &m) != PF_OK) die(2, "train: %s", lib_error("train"));
    pf_model_init(m, j->opts.seed, j->embed_std);
    return m;
}

// --train-branches / --train-head: what trains when fine-tuning an expand
static void train_branch_flags(train_job *j) {
    const cli *c = &j->c;
    pf_model *m = j->m;
    const char *h = cli_get(c, TR_TRAIN_HEAD);
    if (!cli_get(c, TR_TRAIN_BRANCHES)) {
        if (h) usage_error(c, "--train-head goes with --train-branches");
        return;
    }
    parse_branch_list(c, TR_TRAIN_BRANCHES, m->cfg.branches, m->train_branch);
    m->train_stem = 0;
    m->train_head = 0;
    if (h && !strcmp(h, "all")) m->train_head = 1;
    else if (h && strcmp(h, "off")) {
        m->train_head = 1;
        m->head_rows_from = (int)parse_int(c, TR_TRAIN_HEAD, 0, m->cfg.classes - 1);
    }
}

// Step 3: the model (with --resume built as the first run built it: the
// trainer then checks that the checkpoint's config is this one and loads its
// weights), the trainer, its log and its device.
static void train_model(train_job *j) {
    const cli *c = &j->c;
    pf_trainer *t = &j->t;
    int i;
    if (j->init) { // the data must fit the model, as for eval
        int resize = cli_get(c, TR_RESIZE) != NULL;
        if (pf_model_load(j->init, &j->m) != PF_OK) die_file(j->init);
        check_shape("train", j->init, &j->m->cfg, j->train.name, j->train.h, j->train.w, j->train.c, "", resize);
        check_classes("train", j->init, j->m->cfg.classes, &j->train);
        if (j->val_spec) {
            check_shape("train", j->init, &j->m->cfg, j->val.name, j->val.h, j->val.w, j->val.c, " (--val)", resize);
            check_classes("train", j->init, j->m->cfg.classes, &j->val);
        }
        if (j->have_test) {
            check_shape("train", j->init, &j->m->cfg, j->test.name, j->test.h, j->test.w, j->test.c, " (--test)", resize);
            check_classes("train", j->init, j->m->cfg.classes, &j->test);
        }
    } else {
        j->m = train_new_model(j);
    }
    if (j->train.c != j->m->cfg.channels && !(j->train.c == 3 && j->m->cfg.channels == 1) &&
        !(j->train.c == 1 && j->m->cfg.channels == 3))
        die(1, "%s has %d channels, the model %d", j->train.name, j->train.c, j->m->cfg.channels);
    if (pf_trainer_init(t, j->m, &j->train, j->val.n ? &j->val : NULL, &j->opts) != PF_OK) die(1, "%s", pf_last_error());
    train_branch_flags(j);
    snprintf(j->args, sizeof j->args, "{\"data\":\"%.300s\",\"preset\":\"%.40s\"}", cli_need(c, TR_DATA), j->preset);
    for (i = 0; j->args[i]; i++) if (j->args[i] == '\\' || (unsigned char)j->args[i] < 0x20) j->args[i] = '_';
    t->meta_extra = j->args;
    if (j->resume && pf_trainer_resume(t, j->resume) != PF_OK) die(1, "%s", pf_last_error());
    if (j->resume && strcmp(j->out, j->resume))
        fprintf(stderr, "note: resuming from %s, saving to %s\n", j->resume, j->out);
    if (cli_get(c, TR_LOG) && pf_trainer_open_log(t, cli_get(c, TR_LOG)) != PF_OK) die(1, "%s", pf_last_error());
    t->log_preset = j->preset;
    t->log_device = j->dv.spec;
    t->log_backend = device_backend(&j->dv);
    t->log_precision = j->dv.bf16 ? "bf16" : "fp32";
    // the device last: it uploads the model as init or --resume left it
    t->backend = device_open(&j->dv, j->m, t->o.batch > t->o.eval_batch ? t->o.batch : t->o.eval_batch);
    t->out_path = j->out;
}

// Step 4: the run, with progress on stdout; Ctrl-C or SIGTERM stop it at the
// next step, and the last epoch's checkpoint is where --resume continues.
static pf_status train_run(train_job *j) {
    pf_trainer *t = &j->t;
    const pf_model *m = j->m;
    char dev_buf[256];
    pf_status st;
    t->stop = &g_stop;
    j->progress.tty = isatty(1);
    j->progress.quiet = cli_get(&j->c, TR_QUIET) != NULL;
    t->progress = on_progress;
    t->user = &j->progress;
    if (!j->progress.quiet && !j->dv.cuda)
        printf("train: %s, %d train / %d val images, %s, %d x %d branches x layers, %zu parameters, %d threads\n",
               j->train.name, j->train.n, j->val.n, pf_schedule_name(t->o.schedule), m->cfg.branches, m->cfg.depth,
               m->n_params, pf_get_threads());
    else if (!j->progress.quiet)
        printf("train: %s, %d train / %d val images, %s, %d x %d branches x layers, %zu parameters, on %s\n",
               j->train.name, j->train.n, j->val.n, pf_schedule_name(t->o.schedule), m->cfg.branches, m->cfg.depth,
               m->n_params, device_label(&j->dv, dev_buf, sizeof dev_buf));
    if (j->resume && t->s.done && !j->progress.quiet) printf("the run in %s has finished; evaluating it\n", j->resume);
    st = pf_trainer_run(t);
    if (st == PF_ERR_INTERRUPTED) {
        if (j->progress.tty) printf("\n");
        fprintf(stderr, "interrupted at epoch %d (step %lld). %s holds the last finished epoch; continue with the same "
                "command and --resume %s\n", t->s.epoch + 1, (long long)t->s.step, j->out, j->out);
    } else if (st != PF_OK) {
        die(1, "%s", pf_last_error());
    }
    return st;
}

// Step 5: a finished run's test accuracy and branch sweep (the library logs
// them as the run's last events).
static void train_report(train_job *j) {
    double loss = NAN, acc = NAN, *sweep;
    if (!j->have_test) {
        printf("done; model in %s\n", j->out);
        return;
    }
    sweep = (double *)xmalloc((size_t)j->m->cfg.branches * sizeof(double));
    if (pf_trainer_report(&j->t, &j->test, &loss, &acc, sweep) != PF_OK) die(1, "%s", pf_last_error());
    print_sweep(sweep, j->m->active, j->m);
    printf("test accuracy %.2f%% (%d images, %s), loss %.4f; model in %s\n", 100 * acc, j->test.n, j->test.name, loss,
           j->out);
    free(sweep);
}

static int cmd_train(int argc, char **argv) {
    train_job j;
    pf_status st;
    memset(&j, 0, sizeof j);
    j.c.cmd = "train";
    j.c.o = TRAIN_OPTS;
    j.c.n_opts = TR_N;
    if (wants_help(argc, argv)) {
        printf("usage: paraformer train --data SPEC --out M.safetensors [options]\n\n"
               "Trains a ParaFormer progressively (docs/design.md §3). The checkpoint at --out carries the training state and\n"
               "is rewritten atomically at every epoch end, so an interrupted run continues bit-identically with\n"
               "the same command plus --resume M.safetensors. At the end: test accuracy and the branch sweep.\n"
               "An existing file at --out is refused (it may be another run's finished model) unless --resume\n"
               "names that file or --overwrite is given; --out and --log are checked before any data is read.\n\n"
               "--preset also takes training recipes: fmnist-small (the tuned Fashion-MNIST run), cifar10-small\n"
               "(CIFAR-10 in under an hour on 2 cores with --bf16), paper (the authors' setup). Flags override the preset. Without --image-size/--channels/--classes/--mean/--std\n"
               "the model takes them from the data (mean/std: per-channel statistics of the training split).\n"
               "With --init the model comes from the file and the data must fit it, as for eval: images of its\n"
               "size and channels (others are refused unless --resize) and at most its classes.\n\n");
        print_options(&j.c);
        return 0;
    }
    train_flags(&j, argc, argv);
    train_data(&j);
    train_model(&j);
    st = train_run(&j);
    if (st == PF_OK) train_report(&j);
    pf_trainer_free(&j.t);
    device_close(&j.dv);
    pf_model_free(j.m);
    pf_dataset_free(&j.train);
    pf_dataset_free(&j.val);
    if (j.have_test) pf_dataset_free(&j.test);
    cli_free(&j.c);
    return st == PF_ERR_INTERRUPTED ? 130 : 0;
}

static int cmd_eval(int argc, char **argv) {
    enum { O_MODEL, O_DATA, O_SWEEP, O_JSON, O_BRANCHES, O_BATCH, O_RESIZE, O_THREADS, O_DEVICE, O_BF16, O_N };
    static const optdef o[O_N] = {
        {"--model", "FILE", "required", "checkpoint (safetensors)"},
        {"--data", "SPEC", "required", "dataset spec as for train (default split: test)"},
        {"--sweep", NULL, "off", "also the accuracy of every branch prefix k = 1..n, in one pass"},
        {"--json", NULL, "off", "print one JSON object (docs/design.md §4.4)"},
        {"--branches", "K", "all", "evaluate the first K branches"},
        {"--batch", "N", "256", "images per forward"},
        {"--resize", NULL, "off", RESIZE_HELP},
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
        printf("usage: paraformer eval --model FILE --data SPEC [--sweep] [--json] [--resize]\n\n"
               "Accuracy, loss and per-class accuracy of a model on a dataset; with --sweep the accuracy of the first\n"
               "k branches for every k (the compression curve).\n\n"
               "The data's images must have the model's size and channels (info --model shows them): others are\n"
               "refused, naming both shapes, unless --resize resizes and converts them. The data may have fewer\n"
               "classes than the model (a subset of its classes, e.g. SPEC#classes=0-4), not more: a 5-class model\n"
               "on 10-class data is refused (keep the model's classes with #classes=LIST).\n\n");
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
    check_shape("eval", cli_need(&c, O_MODEL), &m->cfg, d.name, d.h, d.w, d.c, "", cli_get(&c, O_RESIZE) != NULL);
    check_classes("eval", cli_need(&c, O_MODEL), K, &d);
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
               dv.cuda || dv.bf16 ? ", on " : "", dv.cuda || dv.bf16 ? device_label(&dv, dev_buf, sizeof dev_buf) : "");
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
    cli_need(&c, O_KEEP);
    check_not_input(&c, "--out", cli_need(&c, O_OUT), "--model", cli_need(&c, O_MODEL));
    check_output("compress", "--out", cli_need(&c, O_OUT), OUT_REPLACE);
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
    check_not_input(&c, "--out", cli_need(&c, O_OUT), "--model", cli_need(&c, O_MODEL));
    check_output("expand", "--out", cli_need(&c, O_OUT), OUT_REPLACE);
    if (pf_model_load(cli_need(&c, O_MODEL), &m) != PF_OK) die_file(cli_need(&c, O_MODEL));
    add = cli_get(&c, O_ADD) ? (int)parse_int(&c, O_ADD, 0, 1024) : 0;
    if (cli_get(&c, O_CLASSES)) classes = (int)parse_int(&c, O_CLASSES, m->cfg.classes, 1 << 20);
    if (cli_get(&c, O_NEW_BRANCH)) nb = parse_choice(&c, O_NEW_BRANCH, NB, 2);
    if (pf_model_expand(m, add, classes, nb, cli_get(&c, O_SEED) ? parse_u64(&c, O_SEED) : 0, &m2) != PF_OK)
        usage_error(&c, "%s", lib_error("expand"));
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
// plot: the log reading and the SVG are in plot.h

#include "plot.h"

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
    plot_run *runs;
    pf_atomic svg;
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
        if (same_file(out, c.vals[i])) usage_error(&c, "--out %s is also a --log (%s)", out, c.vals[i]);
        if (++nr > PLOT_MAX_RUNS) usage_error(&c, "more than %d --log files", PLOT_MAX_RUNS);
    }
    check_output("plot", "--out", out, OUT_REPLACE);
    runs = (plot_run *)xmalloc((size_t)nr * sizeof *runs);
    for (i = nr = 0; i < c.n; i++)
        if (c.which[i] == O_LOG) plot_read(&runs[nr++], c.vals[i]);
    if (pf_atomic_open(&svg, out) != PF_OK) die_file(out);
    plot_svg(svg.f, runs, nr, title, width);
    if (pf_atomic_commit(&svg) != PF_OK) die_file(out);
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
               "predict, eval, train and bench take --device cpu|cuda[:N,...] (cuda: a build with the GPU backend,\n"
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

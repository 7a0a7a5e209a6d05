/* test_interop.c - PyTorch <-> C, without PyTorch: committed fixtures
   written by tools/make_fixtures.py (see tests/fixtures/README.md).

   1. torch_model.safetensors (written by PyTorch from tools/torch_ref.py's Net)
      predicts torch_logits.npy here, through the library and through
      `build/paraformer predict`, for float32 NCHW and uint8 NHWC input.
   2. `build/paraformer init` with the fixture's flags writes a file
      byte-identical to c_init.safetensors, which PyTorch loaded by name
      (strict) when the fixture was made; its logits in PyTorch
      (c_init_logits.npy) match ours.
   Tolerance 1e-4 relative (max|ours - ref| / max|ref|); the references are
   PyTorch's float64 logits from the F32 weights. Run from the repo root. */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4
#define FIX "tests/fixtures/"
#define TMP "build/tmp_interop"

#include "pf_test.h"
static const char *EXE = "build/paraformer"; /* or $PARAFORMER_EXE */


/* rel err of float32 logits vs a float64 reference array */
static double compare(const float *ours, const pf_array *ref) {
    const double *r = (const double *)ref->data;
    size_t n = pf_array_numel(ref), i;
    double md = 0, mr = 0;
    for (i = 0; i < n; i++) {
        double d = fabs((double)ours[i] - r[i]);
        if (!(d <= md)) md = d; /* NaN propagates */
        if (fabs(r[i]) > mr) mr = fabs(r[i]);
    }
    return md / mr;
}

static int load(const char *path, pf_array *a, pf_dtype want) {
    if (pf_npy_load(path, a) != PF_OK) { check(0, "%s", pf_last_error()); return 0; }
    if (a->dtype != want) { check(0, "%s: unexpected dtype", path); pf_array_free(a); return 0; }
    return 1;
}

/* predicts through the program and compares its .npy output */
static void cli_predict(const char *model, const char *input, const char *ref_path, const char *what) {
    char cmd[1024];
    pf_array out, ref;
    snprintf(cmd, sizeof cmd, "%s predict --model %s --input %s --output " TMP "/out.npy > " TMP "/log.txt 2>&1",
             EXE, model, input);
    if (system(cmd) != 0) { check(0, "%s: `%s` failed (see " TMP "/log.txt)", what, cmd); return; }
    if (!load(TMP "/out.npy", &out, PF_F32)) return;
    if (!load(ref_path, &ref, PF_F64)) { pf_array_free(&out); return; }
    if (pf_array_numel(&out) != pf_array_numel(&ref) || out.ndim != 2 || out.shape[0] != ref.shape[0]) {
        check(0, "%s: output shape differs from the reference", what);
    } else {
        double e = compare((const float *)out.data, &ref);
        check(e <= TOL, "%s: rel err %.2e", what, e);
    }
    pf_array_free(&out);
    pf_array_free(&ref);
}

static int same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int ca, cb, same = fa && fb;
    while (same) {
        ca = fgetc(fa);
        cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

int main(void) {
    pf_model *m;
    pf_array x, ref;
    float *logits;
    if (getenv("PARAFORMER_EXE")) EXE = getenv("PARAFORMER_EXE");
    printf("# test_interop (tolerance %.0e relative, program %s)\n", TOL, EXE);
    if (system("mkdir -p " TMP) != 0) { printf("cannot create " TMP "\n0 passed, 1 failed\n"); return 1; }

    /* 1. a model written by PyTorch, through the library */
    if (pf_model_load(FIX "torch_model.safetensors", &m) != PF_OK) {
        check(0, "load torch_model.safetensors: %s", pf_last_error());
    } else {
        check(m->cfg.residual == PF_NORMED && m->cfg.aggregate == PF_AGG_SUM && m->cfg.no_qkv_bias &&
                  m->cfg.pool == PF_POOL_MEAN && m->cfg.classes == 7 && fabs(m->cfg.std[1] - 0.25) < 1e-7,
              "PyTorch's checkpoint config (normed, sum, no qkv bias, mean pool, 7 classes, std) is read");
        if (load(FIX "torch_input.npy", &x, PF_F32)) {
            if (load(FIX "torch_logits.npy", &ref, PF_F64)) {
                int N = (int)x.shape[0];
                logits = (float *)malloc(sizeof(float) * (size_t)N * m->cfg.classes);
                pf_model_reserve(m, 2); /* two chunks and a remainder */
                if (pf_predict(m, (const float *)x.data, N, logits) == PF_OK)
                    check(compare(logits, &ref) <= TOL, "torch -> C library logits: rel err %.2e", compare(logits, &ref));
                else
                    check(0, "pf_predict: %s", pf_last_error());
                free(logits);
                pf_array_free(&ref);
            }
            pf_array_free(&x);
        }
        pf_model_free(m);
    }
    /* ... and through the program, float32 NCHW and uint8 NHWC */
    cli_predict(FIX "torch_model.safetensors", FIX "torch_input.npy", FIX "torch_logits.npy",
                "torch -> `paraformer predict` float32 NCHW");
    cli_predict(FIX "torch_model.safetensors", FIX "torch_input_u8.npy", FIX "torch_logits_u8.npy",
                "torch -> `paraformer predict` uint8 NHWC (scaled, normalised with the model's mean/std)");

    /* 2. `paraformer init` is deterministic and PyTorch loaded its output */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s init --out " TMP "/c_init.safetensors --image-size 16 --channels 1 --patch 4 "
             "--dim 16 --heads 4 --mlp-dim 48 --branches 2 --depth 2 --classes 6 --residual prenorm "
             "--aggregate delta --qkv-bias on --pool cls --seed 11 > " TMP "/log.txt 2>&1", EXE);
    if (system(cmd) != 0) {
        check(0, "paraformer init failed (see " TMP "/log.txt)");
    } else {
        check(same_bytes(TMP "/c_init.safetensors", FIX "c_init.safetensors"),
              "`paraformer init --seed 11` is byte-identical to the file PyTorch loaded (strict, by name)");
        cli_predict(TMP "/c_init.safetensors", FIX "c_init_input.npy", FIX "c_init_logits.npy",
                    "C init -> PyTorch logits match `paraformer predict`");
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

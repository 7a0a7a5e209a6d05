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
   PyTorch's float64 logits from the F32 weights. Run from the repo root;
   the program's outputs go to a temporary directory (kept on failure). */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PF_TEST_FILES
#include "pf_test.h"

#define TOL 1e-4
#define FIX "tests/fixtures/"

static const char *EXE = "build/paraformer"; /* or $PARAFORMER_EXE */

/* rel err of float32 logits vs a float64 reference array */
static double compare(const float *ours, const pf_array *ref) {
    return rel_err_ref(ours, (const double *)ref->data, pf_array_numel(ref));
}

static int load(const char *path, pf_array *a, pf_dtype want) {
    if (pf_npy_load(path, a) != PF_OK) { check(0, "%s", pf_last_error()); return 0; }
    if (a->dtype != want) { check(0, "%s: unexpected dtype", path); pf_array_free(a); return 0; }
    return 1;
}

/* predicts through the program and compares its .npy output */
static void cli_predict(const char *model, const char *input, const char *ref_path, const char *what) {
    char cmd[2048];
    const char *out_path = tmp_path("out.npy"), *log = tmp_path("log.txt");
    pf_array out, ref;
    snprintf(cmd, sizeof cmd, "%s predict --model '%s' --input '%s' --output '%s' > '%s' 2>&1", EXE, model, input,
             out_path, log);
    if (system(cmd) != 0) { check(0, "%s: `%s` failed (see %s)", what, cmd, log); return; }
    if (!load(out_path, &out, PF_F32)) return;
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

int main(void) {
    pf_model *m;
    pf_array x, ref;
    float *logits;
    char cmd[2048];
    const char *c_init, *log;
    if (getenv("PARAFORMER_EXE")) EXE = getenv("PARAFORMER_EXE");
    printf("# test_interop (tolerance %.0e relative, program %s)\n", TOL, EXE);
    if (!tmp_init("interop")) return test_summary();

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
    c_init = tmp_path("c_init.safetensors");
    log = tmp_path("log.txt");
    snprintf(cmd, sizeof cmd, "%s init --out '%s' --image-size 16 --channels 1 --patch 4 "
             "--dim 16 --heads 4 --mlp-dim 48 --branches 2 --depth 2 --classes 6 --residual prenorm "
             "--aggregate delta --qkv-bias on --pool cls --seed 11 > '%s' 2>&1", EXE, c_init, log);
    if (system(cmd) != 0) {
        check(0, "paraformer init failed (see %s)", log);
    } else {
        check(same_file(c_init, FIX "c_init.safetensors"),
              "`paraformer init --seed 11` is byte-identical to the file PyTorch loaded (strict, by name)");
        cli_predict(c_init, FIX "c_init_input.npy", FIX "c_init_logits.npy",
                    "C init -> PyTorch logits match `paraformer predict`");
    }
    tmp_done();
    return test_summary();
}

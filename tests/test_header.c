/* test_header.c - paraformer.h compiled the way a user compiles it.

   The Makefile builds this file, with -Wall -Wextra -Werror, as:
     test_header_c          C99, implementation here, declarations used from a
                            second C file (tests/test_header_tu2.c)
     test_header_c_static   C99 with PF_STATIC: both files carry a private copy
     test_header_cpp        the same two files compiled as C++11
     test_header_cpp_static C++11 with PF_STATIC
     test_header_mixed      this file as C, the second file as C++ (extern "C")
   and runs each: a tiny model is created, initialised, run forward and
   backward, and every number that comes out must be finite. This is a smoke
   test of the build, not of the maths (tests/test_ops.c, test_model.c).

   Prints one line per check and `N passed, M failed`; exits 1 on failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"
#include "pf_test.h" /* the harness is held to the same flags */

#ifdef PF_HEADER_TU2
#ifdef __cplusplus
extern "C"
#endif
    int
    pf_test_tu2(char *msg, size_t cap); /* tests/test_header_tu2.c */
#endif

/* `what: detail` (`what` alone for an empty detail) */
static void check_d(int ok, const char *what, const char *detail) {
    check(ok, "%s%s%s", what, detail && detail[0] ? ": " : "", detail ? detail : "");
}

static int all_finite(const pf_real *a, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!(a[i] == a[i]) || a[i] - a[i] != 0) return 0; /* NaN or inf */
    return 1;
}

int main(void) {
    enum { B = 2, IN = 3 * 8 * 8 };
    pf_config cfg, bad, back;
    pf_model *m = NULL;
    pf_real x[B * IN];
    float xf[3 * IN], out[3 * 3];
    int labels[B] = {0, 2};
    float loss = -1.0f;
    char json[1024], buf[256];
    const char *presets[3] = {"paraformer", "vit", "paper"};
    pf_status st;
    int i, n;

#if defined(__cplusplus)
    printf("# compiled as C++ (%ld)%s\n", (long)__cplusplus, sizeof(pf_real) == 8 ? ", PF_DOUBLE" : "");
#else
    printf("# compiled as C (%ld)%s\n", (long)__STDC_VERSION__, sizeof(pf_real) == 8 ? ", PF_DOUBLE" : "");
#endif
#ifdef PF_STATIC
    printf("# PF_STATIC\n");
#endif
    check_d(strcmp(PF_VERSION, "") != 0, "PF_VERSION defined", PF_VERSION);

    /* presets and config validation */
    for (i = 0; i < 3; i++) {
        pf_config c;
        st = pf_config_preset(&c, presets[i]);
        if (st == PF_OK) st = pf_config_validate(&c);
        snprintf(buf, sizeof buf, "%s -> %s", presets[i], pf_status_name(st));
        check_d(st == PF_OK, "preset validates", buf);
    }
    {
        pf_config c;
        st = pf_config_preset(&c, "no-such-preset");
        check_d(st == PF_ERR_ARG && pf_last_error()[0] != 0, "unknown preset refused", pf_last_error());
    }
    bad = tiny_config();
    bad.heads = 3; /* 8 % 3 != 0 */
    st = pf_config_validate(&bad);
    check_d(st != PF_OK && pf_last_error()[0] != 0, "heads not dividing dim refused", pf_last_error());

    /* config JSON round trip */
    cfg = tiny_config();
    cfg.residual = PF_NORMED;
    cfg.aggregate = PF_AGG_SUM;
    cfg.pool = PF_POOL_MEAN;
    cfg.no_qkv_bias = 1;
    pf_config_resolve(&cfg);
    n = pf_config_to_json(&cfg, json, sizeof json);
    memset(&back, 0, sizeof back);
    st = n > 0 ? pf_config_from_json(json, (size_t)n, &back) : PF_ERR_ARG;
    if (st == PF_OK) pf_config_resolve(&back);
    check_d(st == PF_OK && back.dim == cfg.dim && back.heads == cfg.heads && back.residual == PF_NORMED &&
              back.aggregate == PF_AGG_SUM && back.pool == PF_POOL_MEAN && back.no_qkv_bias == 1 &&
              back.branches == 2 && back.image_size == 8,
          "config JSON round trip", n > 0 ? json : pf_last_error());

    /* a tiny model: forward, backward, one optimizer step, forward again */
    cfg = tiny_config();
    st = pf_model_create(&cfg, &m);
    check_d(st == PF_OK && m != NULL, "pf_model_create", st == PF_OK ? "" : pf_last_error());
    if (st != PF_OK || !m) goto done;
    snprintf(buf, sizeof buf, "T=%d, %lu parameters", m->T, (unsigned long)m->n_params);
    check_d(m->T == 5 && m->n_params > 0, "model shape", buf);
    pf_model_init(m, 42, 0.0f);
    check_d(all_finite(m->params, m->n_params), "initialised parameters finite", "");
    st = pf_model_reserve(m, B);
    if (st == PF_OK) st = pf_model_alloc_train(m);
    check_d(st == PF_OK, "reserve activations and training state", st == PF_OK ? "" : pf_last_error());
    if (st != PF_OK) goto done;
    for (i = 0; i < B * IN; i++) x[i] = (pf_real)sin(0.37 * i) * (pf_real)1.5;
    st = pf_forward(m, x, labels, B, 0.0f, &loss);
    snprintf(buf, sizeof buf, "loss %.6f", loss);
    check_d(st == PF_OK && all_finite(m->logits, (size_t)B * 3) && loss > 0 && loss == loss && loss < 100,
          "forward: finite logits and loss", st == PF_OK ? buf : pf_last_error());
    st = pf_backward(m);
    check_d(st == PF_OK && all_finite(m->grads, m->n_params), "backward: finite gradients",
          st == PF_OK ? "" : pf_last_error());
    {
        pf_optim opt = pf_optim_default();
        float loss2 = -1.0f;
        pf_optim_step(m, &opt, NULL);
        st = pf_forward(m, x, labels, B, 0.0f, &loss2);
        snprintf(buf, sizeof buf, "loss %.6f -> %.6f", loss, loss2);
        check_d(st == PF_OK && all_finite(m->params, m->n_params) && loss2 == loss2 && loss2 < loss,
              "AdamW step lowers the loss on the same batch", buf);
    }
    /* pf_predict on float input, more images than the reserved batch */
    for (i = 0; i < 3 * IN; i++) xf[i] = (float)cos(0.11 * i);
    st = pf_predict(m, xf, 3, out);
    {
        int ok = st == PF_OK;
        for (i = 0; i < 9; i++) ok = ok && out[i] == out[i] && out[i] - out[i] == 0;
        check_d(ok, "pf_predict (N=3 > max_batch=2): finite logits", st == PF_OK ? "" : pf_last_error());
    }

#ifdef PF_HEADER_TU2
    {
        char msg[256] = "";
        int bad_tu2 = pf_test_tu2(msg, sizeof msg);
        check_d(bad_tu2 == 0, "second translation unit uses the API", msg);
    }
#endif

done:
    pf_model_free(m);
    return test_summary();
}

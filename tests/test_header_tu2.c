/* test_header_tu2.c - the second translation unit of tests/test_header.c.

   Without PF_STATIC it includes paraformer.h *without* the implementation, so
   the program only links if the declarations match the definitions in
   test_header.c (C, C++, or one of each: extern "C"). With PF_STATIC it
   carries its own private copy of the implementation, as a user would in
   each file, and the program only links if that copy defines no external
   symbol. Returns the number of failed checks; msg says which. */
#include <stdio.h>
#include <string.h>

#ifdef PF_STATIC
#define PARAFORMER_IMPLEMENTATION
#endif
#include "../paraformer.h"
#include "pf_test.h"

#ifdef __cplusplus
extern "C"
#endif
    int
    pf_test_tu2(char *msg, size_t cap);

int pf_test_tu2(char *msg, size_t cap) {
    pf_config c;
    pf_model *m = NULL;
    pf_real x[1 * 1 * 4 * 4];
    float loss = 0.0f;
    int i, bad = 0;
    pf_status st;

    c = shape_config(4, 1, 2, 4, 1, 8, 1, 1, 2);
    st = pf_model_create(&c, &m);
    if (st != PF_OK) {
        snprintf(msg, cap, "pf_model_create: %s", pf_last_error());
        return 1;
    }
    pf_model_init(m, 1, 0.0f);
    st = pf_model_reserve(m, 1);
    for (i = 0; i < 16; i++) x[i] = (pf_real)(i % 5) * (pf_real)0.25;
    if (st == PF_OK) st = pf_forward(m, x, NULL, 1, 0.0f, &loss);
    if (st != PF_OK) {
        snprintf(msg, cap, "%s: %s", pf_status_name(st), pf_last_error());
        bad++;
    } else if (!(m->logits[0] == m->logits[0]) || !(m->logits[1] == m->logits[1])) {
        snprintf(msg, cap, "logits not finite");
        bad++;
    } else {
        snprintf(msg, cap, "T=%d, logits %.4f %.4f, F32 is %lu bytes", m->T, (double)m->logits[0],
                 (double)m->logits[1], (unsigned long)pf_dtype_size(PF_F32));
    }
    if (pf_dtype_size(PF_F32) != 4 || strcmp(pf_dtype_name(PF_BF16), "BF16") != 0) {
        snprintf(msg, cap, "dtype table: F32 %lu bytes, BF16 named %s", (unsigned long)pf_dtype_size(PF_F32),
                 pf_dtype_name(PF_BF16));
        bad++;
    }
    pf_model_free(m);
    return bad;
}

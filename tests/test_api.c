/* test_api.c - misuse of the public API: a NULL model, array or path, or a
   call out of order, is refused with PF_ERR_ARG and a message naming the
   function and the argument. Never a crash (the SAN=1 build runs this under
   AddressSanitizer), never a silent no-op. */
#define _POSIX_C_SOURCE 200809L
#define PF_TEST_FILES
#include <stdio.h>
#include <string.h>
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"
#include "pf_test.h"

/* st is PF_ERR_ARG and the message names every one of the words */
static void refused(pf_status st, const char *call, const char *w1, const char *w2) {
    const char *e = pf_last_error();
    check(st == PF_ERR_ARG && strstr(e, w1) && (!w2 || strstr(e, w2)), "%s refused: %s", call,
          st == PF_OK ? "[BUT IT RETURNED PF_OK]" : e);
}

static void clear_error(void) { pf_fail(PF_OK, "%s", ""); }

int main(void) {
    pf_config c = tiny_config();
    pf_model *m = NULL, *back = (pf_model *)1;
    pf_real x[4 * 3 * 8 * 8];
    float xf[4 * 3 * 8 * 8], out[4 * 3], loss = 0;
    int y[4] = {0, 1, 2, 0}, i;
    const char *path;
    tmp_init("api");
    path = tmp_path("m.safetensors");
    for (i = 0; i < 4 * 3 * 8 * 8; i++) x[i] = xf[i] = (float)(i % 7) * 0.1f;

    clear_error();
    refused(pf_model_create(&c, NULL), "pf_model_create(cfg, NULL)", "pf_model_create", "out");
    refused(pf_model_create(NULL, &m), "pf_model_create(NULL, &m)", "pf_model_create", "config");
    check(m == NULL, "a refused pf_model_create leaves *out NULL");
    if (pf_model_create(&c, &m) != PF_OK) { check(0, "pf_model_create: %s", pf_last_error()); return test_summary(); }
    pf_model_init(m, 1, 0.0f);

    refused(pf_model_reserve(NULL, 4), "pf_model_reserve(NULL, 4)", "pf_model_reserve", "model");
    refused(pf_model_reserve(m, 0), "pf_model_reserve(m, 0)", "batch", NULL);
    check(pf_model_reserve(m, 4) == PF_OK, "pf_model_reserve(m, 4)");
    refused(pf_forward(m, NULL, y, 4, 0.0f, &loss), "pf_forward(m, NULL, ...)", "pf_forward", "input");
    refused(pf_forward(NULL, x, y, 4, 0.0f, &loss), "pf_forward(NULL, ...)", "pf_forward", "model");
    refused(pf_forward(m, x, y, 5, 0.0f, &loss), "pf_forward with a batch above the reserve", "batch", NULL);
    refused(pf_backward(NULL), "pf_backward(NULL)", "pf_backward", "model");
    refused(pf_predict(m, xf, 4, NULL), "pf_predict(m, x, 4, NULL)", "pf_predict", "output");
    refused(pf_predict(m, NULL, 4, out), "pf_predict(m, NULL, 4, out)", "pf_predict", "input");
    refused(pf_predict(NULL, xf, 4, out), "pf_predict(NULL, ...)", "pf_predict", "model");
    refused(pf_predict(m, xf, -1, out), "pf_predict(m, x, -1, out)", "pf_predict", NULL);
    check(pf_predict(m, NULL, 0, NULL) == PF_OK, "pf_predict of 0 images needs no arrays");
    refused(pf_model_alloc_train(NULL), "pf_model_alloc_train(NULL)", "pf_model_alloc_train", "model");
    {
        pf_optim o = pf_optim_default();
        double norm = -1;
        refused(pf_optim_step(m, &o, &norm), "pf_optim_step before pf_model_alloc_train", "pf_optim_step",
                "pf_model_alloc_train");
        check(norm == 0, "a refused step reports no norm");
        refused(pf_optim_step(NULL, &o, NULL), "pf_optim_step(NULL, ...)", "pf_optim_step", "model");
        refused(pf_optim_step(m, NULL, NULL), "pf_optim_step(m, NULL, ...)", "pf_optim_step", "optimizer");
        o.clip = 1.0f;
        check(pf_model_alloc_train(m) == PF_OK && pf_forward(m, x, y, 4, 0.0f, &loss) == PF_OK &&
                  pf_backward(m) == PF_OK && pf_optim_step(m, &o, &norm) == PF_OK && norm > 0,
              "with training state the step runs and reports the clipped norm (%g)", norm);
    }

    refused(pf_model_save(NULL, path), "pf_model_save(NULL, path)", "pf_model_save", "model");
    refused(pf_model_save(m, NULL), "pf_model_save(m, NULL)", "pf_model_save", "path");
    refused(pf_model_load(path, NULL), "pf_model_load(path, NULL)", "pf_model_load", "out");
    refused(pf_model_load(NULL, &back), "pf_model_load(NULL, &m)", "pf_model_load", "path");
    check(back == NULL, "a refused pf_model_load leaves *out NULL");
    check(pf_model_save(m, path) == PF_OK && pf_model_load(path, &back) == PF_OK && back,
          "with real arguments the same calls work (%s)", pf_last_error());
    pf_model_free(back);
    {   /* files, datasets, evaluation, the trainer */
        pf_st_file *f = (pf_st_file *)1;
        pf_array arr;
        pf_dataset d;
        pf_trainer t;
        pf_train_opts o = pf_train_opts_default();
        pf_model *out2 = (pf_model *)1;
        pf_config cc;
        refused(pf_st_open(path, NULL), "pf_st_open(path, NULL)", "pf_st_open", "out");
        refused(pf_st_open(NULL, &f), "pf_st_open(NULL, &f)", "pf_st_open", "path");
        check(f == NULL, "a refused pf_st_open leaves *out NULL");
        refused(pf_st_write(NULL, NULL, 0, NULL, NULL, 0), "pf_st_write(NULL, ...)", "pf_st_write", "path");
        refused(pf_st_write(path, NULL, 3, NULL, NULL, 0), "pf_st_write(path, NULL, 3 tensors)", "pf_st_write", "3 tensors");
        refused(pf_npy_load(path, NULL), "pf_npy_load(path, NULL)", "pf_npy_load", "out");
        refused(pf_npy_load(NULL, &arr), "pf_npy_load(NULL, &a)", "pf_npy_load", "path");
        refused(pf_npy_save(path, NULL), "pf_npy_save(path, NULL)", "pf_npy_save", "array");
        memset(&arr, 0, sizeof arr);
        arr.dtype = PF_F32; arr.ndim = 1; arr.shape[0] = 4; arr.nbytes = 16;
        refused(pf_npy_save(path, &arr), "pf_npy_save of an array without data", "pf_npy_save", "data");
        refused(pf_dataset_load("fmnist", PF_SPLIT_TRAIN, NULL), "pf_dataset_load(spec, split, NULL)", "no dataset", NULL);
        refused(pf_dataset_batch(NULL, NULL, 1, &c, NULL, 0, 0, x), "pf_dataset_batch(NULL, ...)", "pf_dataset_batch",
                "dataset");
        memset(&d, 0, sizeof d);
        refused(pf_evaluate(NULL, &d, 8, NULL, NULL, NULL, NULL), "pf_evaluate(NULL, ...)", "pf_evaluate", "model");
        refused(pf_evaluate(m, NULL, 8, NULL, NULL, NULL, NULL), "pf_evaluate(m, NULL, ...)", "pf_evaluate", "dataset");
        refused(pf_model_compress(NULL, 1, &out2), "pf_model_compress(NULL, ...)", "pf_model_compress", "model");
        check(out2 == NULL, "a refused pf_model_compress leaves *out NULL");
        refused(pf_model_expand(m, 1, 0, PF_NEW_ZERO, 1, NULL), "pf_model_expand(m, ..., NULL)", "pf_model_expand", "out");
        refused(pf_trainer_init(NULL, m, &d, NULL, &o), "pf_trainer_init(NULL, ...)", "pf_trainer_init", "trainer");
        refused(pf_trainer_init(&t, m, NULL, NULL, &o), "pf_trainer_init without a training set", "pf_trainer_init",
                "training set");
        refused(pf_trainer_run(NULL), "pf_trainer_run(NULL)", "pf_trainer_run", "trainer");
        memset(&t, 0, sizeof t);
        refused(pf_trainer_run(&t), "pf_trainer_run before pf_trainer_init", "pf_trainer_run", "pf_trainer_init");
        refused(pf_trainer_save(&t, path), "pf_trainer_save before pf_trainer_init", "pf_trainer_save", "model");
        refused(pf_trainer_resume(NULL, path), "pf_trainer_resume(NULL, path)", "pf_trainer_resume", "trainer");
        refused(pf_config_from_json(NULL, 4, &cc), "pf_config_from_json(NULL, ...)", "pf_config_from_json", "JSON");
        refused(pf_config_validate(NULL), "pf_config_validate(NULL)", "pf_config_validate", "config");
        refused(pf_config_preset(NULL, "vit"), "pf_config_preset(NULL, ...)", "pf_config_preset", "config");
    }
    pf_fail(PF_ERR_IO, "inner reason");
    check(pf_fail(PF_ERR_ARG, "outer: %s", pf_last_error()) == PF_ERR_ARG &&
              !strcmp(pf_last_error(), "outer: inner reason"),
          "pf_fail can quote pf_last_error() (%s)", pf_last_error());
    pf_model_free(NULL); /* like free(NULL) */
    pf_model_free(m);
    tmp_done();
    return test_summary();
}

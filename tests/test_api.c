/* test_api.c - misuse of the public API: a NULL model, array or path, or a
   call out of order, is refused with PF_ERR_ARG and a message naming the
   function and the argument. Never a crash (the SAN=1 build runs this under
   AddressSanitizer), never a silent no-op. */
#define _POSIX_C_SOURCE 200809L
#define PF_TEST_FILES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
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
        {   /* tensors pf_st_write cannot write: each refused, naming it */
            static const float one[2] = {1, 2};
            const char *keys[1] = {NULL}, *vals[1] = {"v"};
            const char *wpath = tmp_path("w.safetensors");
            pf_st_tensor w[2];
            memset(w, 0, sizeof w);
            w[0].name = "a"; w[0].dtype = PF_F32; w[0].ndim = 1; w[0].shape[0] = 2; w[0].data = one;
            w[1] = w[0]; w[1].name = "b";
            check(pf_st_write(wpath, w, 2, NULL, NULL, 0) == PF_OK, "pf_st_write of two good tensors");
            w[1].name = NULL;
            refused(pf_st_write(wpath, w, 2, NULL, NULL, 0), "pf_st_write of a tensor without a name", "pf_st_write", "no name");
            w[1].name = "a";
            refused(pf_st_write(wpath, w, 2, NULL, NULL, 0), "pf_st_write of two tensors named a", "pf_st_write", "two tensors");
            w[1].name = "b"; w[1].ndim = PF_MAX_DIMS + 1;
            refused(pf_st_write(wpath, w, 2, NULL, NULL, 0), "pf_st_write of rank 9", "pf_st_write", "rank");
            w[1].ndim = 1; w[1].shape[0] = -2;
            refused(pf_st_write(wpath, w, 2, NULL, NULL, 0), "pf_st_write of a negative dimension", "pf_st_write", "-2");
            w[1].shape[0] = INT64_MAX;
            refused(pf_st_write(wpath, w, 2, NULL, NULL, 0), "pf_st_write of 2^63 elements", "pf_st_write", "dimension 0");
            w[1].shape[0] = 2; w[1].dtype = (pf_dtype)99;
            refused(pf_st_write(wpath, w, 2, NULL, NULL, 0), "pf_st_write of dtype 99", "pf_st_write", "dtype 99");
            w[1].dtype = PF_F32; w[1].data = NULL;
            refused(pf_st_write(wpath, w, 2, NULL, NULL, 0), "pf_st_write of a tensor without data", "pf_st_write", "no data");
            w[1].data = one;
            refused(pf_st_write(wpath, w, 2, keys, vals, 1), "pf_st_write of a metadata entry without a key", "pf_st_write",
                    "no key");
        }
        refused(pf_npy_load(path, NULL), "pf_npy_load(path, NULL)", "pf_npy_load", "out");
        refused(pf_npy_load(NULL, &arr), "pf_npy_load(NULL, &a)", "pf_npy_load", "path");
        refused(pf_npy_save(path, NULL), "pf_npy_save(path, NULL)", "pf_npy_save", "array");
        memset(&arr, 0, sizeof arr);
        arr.dtype = PF_F32; arr.ndim = 1; arr.shape[0] = 4; arr.nbytes = 16;
        refused(pf_npy_save(path, &arr), "pf_npy_save of an array without data", "pf_npy_save", "data");
        arr.data = xf; arr.nbytes = 8; /* the shape needs 16 */
        refused(pf_npy_save(path, &arr), "pf_npy_save of an array smaller than its shape", "pf_npy_save", "holds 8");
        arr.nbytes = 16; arr.shape[0] = -4;
        refused(pf_npy_save(path, &arr), "pf_npy_save of a negative dimension", "pf_npy_save", "-4");
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
    {   /* the rest of the API: value-returning functions return a neutral
           value (0, NULL, -1) and set the last error; the others refuse */
        pf_rng r = pf_rng_seed(1);
        double v = 7, norm;
        int n = 5, dev[4];
        char buf[64];
        float A[4] = {1, 2, 3, 4}, C[4], mean[3], sd[3];
        pf_optim o = pf_optim_default();
        pf_adam_step as;
        pf_layer_ptrs L;
        pf_dataset d, d2, d3;
        pf_train_opts to;
        pf_config cc;
        pf_trainer t;
        pf_st_file *f = NULL;
        int idx[1] = {0};
        unsigned char px[12] = {0}, *pix = (unsigned char *)1;
        clear_error();
        check(pf_rng_next(NULL) == 0 && strstr(pf_last_error(), "pf_rng_next"), "pf_rng_next(NULL) is 0 (%s)", pf_last_error());
        check(pf_rng_normal(NULL) == 0 && strstr(pf_last_error(), "pf_rng_normal"), "pf_rng_normal(NULL) is 0");
        check(pf_rng_uniform(&r) >= 0, "a real generator still draws");
        check(!pf_json_number(NULL, 4, "a", &v) && strstr(pf_last_error(), "JSON"), "pf_json_number(NULL, ...) finds nothing (%s)",
              pf_last_error());
        check(!pf_json_number("{\"a\": 1}", 8, NULL, &v) && strstr(pf_last_error(), "key"), "pf_json_number without a key");
        check(!pf_json_numbers("{\"a\": [1, 2]}", 13, "a", NULL, 2, &n) && strstr(pf_last_error(), "room"),
              "pf_json_numbers without room (%s)", pf_last_error());
        check(!pf_json_string("{\"a\": \"x\"}", 10, "a", buf, 0) && strstr(pf_last_error(), "cap 0"),
              "pf_json_string with cap 0 (%s)", pf_last_error());
        check(pf_json_number("{\"a\": 1}", 8, "a", &v) && v == 1, "with real arguments the lookup works");
        check(pf_config_tokens(NULL) == 0, "pf_config_tokens(NULL) is 0");
        memset(&cc, 0, sizeof cc);
        check(pf_config_tokens(&cc) == 0, "pf_config_tokens of an unresolved config is 0 (no division by zero)");
        pf_config_resolve(NULL); /* nothing to resolve, no crash */
        check(pf_config_to_json(NULL, buf, sizeof buf) == -1 && strstr(pf_last_error(), "config"), "pf_config_to_json(NULL, ...)");
        check(pf_config_to_json(&c, NULL, 100) == -1 && strstr(pf_last_error(), "buffer"), "pf_config_to_json(c, NULL, ...)");

        refused(pf_gemm(0, 0, -1, 2, 2, A, 2, A, 2, C, 2, 0), "pf_gemm with M = -1", "pf_gemm", "M=-1");
        refused(pf_gemm(0, 0, 2, 2, 2, A, 2, A, 2, NULL, 2, 0), "pf_gemm with C NULL", "pf_gemm", "C is NULL");
        refused(pf_gemm(0, 0, 2, 2, 2, NULL, 2, A, 2, C, 2, 0), "pf_gemm with A NULL", "pf_gemm", "A is NULL");
        refused(pf_gemm(0, 0, 2, 2, 2, A, 1, A, 2, C, 2, 0), "pf_gemm with lda < K", "pf_gemm", "lda 1");
        refused(pf_gemm(0, 1, 2, 2, 2, A, 2, A, 1, C, 2, 0), "pf_gemm with ldb < K (B transposed)", "pf_gemm", "ldb 1 < K");
        refused(pf_gemm(0, 0, 2, 2, 2, A, 2, A, 2, C, 1, 0), "pf_gemm with ldc < N", "pf_gemm", "ldc 1");
        check(pf_gemm(0, 0, 0, 2, 2, NULL, 2, NULL, 2, NULL, 2, 0) == PF_OK, "pf_gemm with M = 0 needs no matrices");
        check(pf_gemm(0, 0, 2, 2, 2, A, 2, A, 2, C, 2, 0) == PF_OK && C[0] == 7 && C[3] == 22,
              "pf_gemm with real arguments: [[1,2],[3,4]]^2 = [[7,10],[15,22]] (%g %g)", C[0], C[3]);

        check(pf_model_find(NULL, "head.weight") == NULL && pf_model_find(m, NULL) == NULL, "pf_model_find with NULL finds nothing");
        check(pf_model_find(m, "head.weight") != NULL, "pf_model_find(m, \"head.weight\")");
        check(pf_model_part_size(NULL, PF_PART_HEAD) == 0, "pf_model_part_size(NULL) is 0");
        L = pf_model_layer(m, m->params, m->cfg.branches, 0);
        check(!L.qkv_w && !L.fc2_b && strstr(pf_last_error(), "out of range"), "pf_model_layer of a branch past the last: NULL pointers (%s)",
              pf_last_error());
        L = pf_model_layer(m, NULL, 0, 0);
        check(!L.ln1_w && strstr(pf_last_error(), "buffer"), "pf_model_layer without a buffer");
        L = pf_model_layer(m, m->params, 0, m->cfg.depth - 1);
        check(L.ln1_w && L.fc2_b, "pf_model_layer of the last layer of branch 0");
        refused(pf_model_init(NULL, 1, 0.0f), "pf_model_init(NULL, ...)", "pf_model_init", "model");
        refused(pf_model_init(m, 1, NAN), "pf_model_init with embed_std NaN", "pf_model_init", "embed_std");
        refused(pf_model_set_active(NULL, 1), "pf_model_set_active(NULL, 1)", "pf_model_set_active", "model");
        pf_model_changed(NULL);
        check(pf_param_trainable(NULL, &m->specs[0]) == 0 && pf_param_trainable(m, NULL) == 0, "pf_param_trainable with NULL is 0");
        check(pf_param_train_from(NULL, &m->specs[0]) == 0, "pf_param_train_from(NULL, ...) is 0");
        check(pf_grad_norm(NULL) == 0 && pf_clip_grad_norm(NULL, 1.0) == 0, "grad norm of no model is 0");
        norm = pf_grad_norm(m);
        check(norm > 0 && pf_clip_grad_norm(m, -1.0) == norm && pf_grad_norm(m) == norm &&
                  pf_clip_grad_norm(m, NAN) == norm && pf_grad_norm(m) == norm,
              "pf_clip_grad_norm with max_norm -1 or NaN clips nothing (norm %g stays)", norm);
        check(!pf_adam_step_of(m, &o, -1, &as) && strstr(pf_last_error(), "out of range"), "pf_adam_step_of tensor -1");
        check(!pf_adam_step_of(m, &o, m->n_specs, &as), "pf_adam_step_of tensor n_specs");
        check(!pf_adam_step_of(m, NULL, 0, &as) && strstr(pf_last_error(), "NULL"), "pf_adam_step_of without settings");
        refused(pf_optim_validate(NULL), "pf_optim_validate(NULL)", "pf_optim_validate", "settings");
        o.beta1 = 1.0f;
        refused(pf_optim_step(m, &o, NULL), "pf_optim_step with beta1 = 1 (a division by zero)", "pf_optim_step", "betas");
        o = pf_optim_default(); o.eps = 0;
        refused(pf_optim_step(m, &o, NULL), "pf_optim_step with eps = 0", "pf_optim_step", "eps");
        o = pf_optim_default(); o.lr = NAN;
        refused(pf_optim_step(m, &o, NULL), "pf_optim_step with lr NaN", "pf_optim_step", "learning rate");
        o = pf_optim_default(); o.adam = 2;
        refused(pf_optim_step(m, &o, NULL), "pf_optim_step with adam = 2", "pf_optim_step", "adam 2");
        o = pf_optim_default(); o.lr = 0;
        check(pf_optim_validate(&o) == PF_OK, "lr 0 is a valid step (a schedule's end)");

        check(pf_st_numel(NULL) == 0 && pf_array_numel(NULL) == 0, "numel of NULL is 0");
        check(pf_st_find(NULL, "x") == NULL && pf_st_meta(NULL, "config") == NULL, "lookups in no file find nothing");
        if (pf_st_open(path, &f) == PF_OK) {
            const pf_st_entry *e = pf_st_find(f, "head.weight");
            pf_st_entry fake;
            float *dst = e ? (float *)malloc(pf_st_numel(e) * sizeof(float)) : NULL;
            check(e && dst, "the saved model has head.weight");
            check(pf_st_find(f, NULL) == NULL && pf_st_meta(f, NULL) == NULL, "lookups of a NULL name find nothing");
            if (e && dst) {
                refused(pf_st_read_f32(NULL, e, dst), "pf_st_read_f32(NULL, ...)", "pf_st_read_f32", "file");
                refused(pf_st_read_f32(f, NULL, dst), "pf_st_read_f32(f, NULL, ...)", "pf_st_read_f32", "entry");
                refused(pf_st_read_f64(f, e, NULL), "pf_st_read_f64(f, e, NULL)", "pf_st_read_f64", "destination");
                fake = *e;
                fake.end = fake.begin + ((uint64_t)1 << 40);
                refused(pf_st_read_raw(f, &fake, dst), "pf_st_read_raw of an entry that is not the file's (1 TiB long)",
                        "pf_st_read_raw", "not one of this file's");
                check(pf_st_read_f32(f, e, dst) == PF_OK, "the same read with the file's own entry works");
            }
            free(dst);
            pf_st_close(f);
        } else {
            check(0, "pf_st_open(%s): %s", path, pf_last_error());
        }
        refused(pf_image_to_input(NULL, 2, 2, 3, &c, xf), "pf_image_to_input(NULL, ...)", "pf_image_to_input", "image");
        refused(pf_image_to_input(px, 2, 2, 3, NULL, xf), "pf_image_to_input without a config", "pf_image_to_input", "config");
        refused(pf_image_to_input(px, 2, 2, 3, &c, NULL), "pf_image_to_input without an output", "pf_image_to_input", "output");
        refused(pf_image_load("x.png", NULL, &n, &n, &n), "pf_image_load(path, NULL, ...)", "pf_image_load", "pixels");
        refused(pf_image_load(NULL, &pix, &n, &n, &n), "pf_image_load(NULL, ...)", "pf_image_load", "path");
        check(pix == NULL, "a refused pf_image_load leaves *pixels NULL");
        refused(pf_image_load("x.png", &pix, NULL, &n, &n), "pf_image_load without h", "pf_image_load", "h, w or c");
        pf_image_free(NULL);

        /* a dataset filled in by hand that its arrays cannot hold */
        memset(&d, 0, sizeof d);
        d.n = 2; d.h = 2; d.w = 2; d.c = 3; d.classes = 3;
        snprintf(d.name, sizeof d.name, "hand-made");
        refused(pf_dataset_subset(&d, idx, 1, &d2), "pf_dataset_subset of a dataset without pixels", "pf_dataset_subset",
                "no pixels");
        refused(pf_dataset_split(&d, 0.5, 1, &d2, &d3), "pf_dataset_split of a dataset without pixels", "pf_dataset_split",
                "no pixels");
        refused(pf_dataset_stats(&d, mean, sd), "pf_dataset_stats of a dataset without pixels", "pf_dataset_stats", "no pixels");
        refused(pf_config_fit(&cc, &d, PF_FIT_ALL), "pf_config_fit on a dataset without pixels", "pf_config_fit", "no pixels");
        refused(pf_dataset_batch(&d, idx, 1, &c, NULL, 0, 0, x), "pf_dataset_batch of a dataset without pixels",
                "pf_dataset_batch", "no pixels");
        refused(pf_evaluate(m, &d, 8, NULL, NULL, NULL, NULL), "pf_evaluate on a dataset without pixels", "pf_evaluate",
                "no pixels");
        to = pf_train_opts_default();
        refused(pf_trainer_init(&t, m, &d, NULL, &to), "pf_trainer_init on a dataset without pixels", "pf_trainer_init",
                "no pixels");
        d.images = px;
        d.c = PF_MAX_CHANNELS + 1;
        refused(pf_dataset_stats(&d, mean, sd), "pf_dataset_stats of 17 channels", "pf_dataset_stats", "2x2x17");
        d.c = 3;
        refused(pf_dataset_stats(&d, mean, sd), "pf_dataset_stats of a dataset without labels", "pf_dataset_stats", "labels");
        d.labels = idx; d.n = 1;
        refused(pf_dataset_stats(&d, NULL, sd), "pf_dataset_stats(d, NULL, std)", "pf_dataset_stats", "mean or std");
        refused(pf_dataset_subset(&d, NULL, 1, &d2), "pf_dataset_subset(d, NULL, 1, ...)", "pf_dataset_subset", "idx");
        refused(pf_dataset_subset(&d, idx, 1, NULL), "pf_dataset_subset(..., NULL)", "pf_dataset_subset", "out");
        refused(pf_dataset_split(&d, 0.5, 1, NULL, &d3), "pf_dataset_split(..., NULL, val)", "pf_dataset_split", "train or val");
        check(pf_dataset_stats(&d, mean, sd) == PF_OK && mean[0] == 0 && sd[0] == 0, "with pixels and labels, stats work");
        refused(pf_augment_image(NULL, 2, 2, 3, NULL, 1, 0, px), "pf_augment_image(NULL, ...)", "pf_augment_image", "source");
        refused(pf_augment_image(px, 2, 2, 3, NULL, 1, 0, NULL), "pf_augment_image without a destination", "pf_augment_image",
                "destination");
        refused(pf_train_preset(NULL, &cc, &to, NULL), "pf_train_preset(NULL, ...)", "pf_train_preset", "name");
        refused(pf_train_preset("fmnist-small", &cc, NULL, NULL), "pf_train_preset without options", "pf_train_preset", "options");
        check(pf_train_preset("fmnist-small", &cc, &to, NULL) == PF_OK, "pf_train_preset with embed_std NULL");
        refused(pf_train_opts_validate(NULL), "pf_train_opts_validate(NULL)", "pf_train_opts_validate", "options");
        refused(pf_branch_plan(4, 2, NULL, NULL), "pf_branch_plan without device_of", "pf_branch_plan", "device_of");
        check(pf_branch_plan(4, 2, NULL, dev) == PF_OK && dev[3] == 1, "pf_branch_plan with real arguments");
        check(pf_collective_plan(NULL, 8, 1, 1, 100, NULL, 0) == -1 && strstr(pf_last_error(), "config"),
              "pf_collective_plan(NULL, ...) is -1");
        pf_trainer_log(NULL, "{}");
        memset(&t, 0, sizeof t);
        pf_trainer_log(&t, NULL);
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

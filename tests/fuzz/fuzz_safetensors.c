/* fuzz_safetensors.c - libFuzzer harness: the input is a safetensors file.

   pf_st_open, then every tensor through pf_st_read_f32 (each dtype's
   conversion); then pf_model_load. A model that loads and is small (at most
   1e6 parameters, 64 Ki input values, 2^20 attention scores per layer) is
   used as the program uses one: pf_predict on one zero image; one training
   step (pf_model_alloc_train, pf_forward, pf_backward, pf_optim_step);
   pf_model_compress to 1 branch; pf_model_expand by 1 branch and 1 class;
   and pf_trainer_resume against the same file, for a trainer on a tiny
   in-memory dataset with the options of the corpus's checkpoint
   (tests/fuzz/make_corpus.sh: `paraformer train --epochs 1 --batch 8`, the
   rest default), then pf_predict again. Corpus: tests/fuzz/corpus/safetensors. */
#include "fuzz_common.h"

#include <math.h>

/* small enough to run through forward/backward in a few milliseconds */
static int small_model(const pf_model *m) {
    const pf_config *c = &m->cfg;
    return m->n_params <= 1000000 && (double)c->channels * c->image_size * c->image_size <= 65536 &&
           (double)m->T * m->T * c->heads <= (1 << 20);
}

static void use_model(pf_model *m, const char *path) {
    const pf_config *c = &m->cfg;
    size_t in = (size_t)c->channels * c->image_size * c->image_size;
    float *x = (float *)calloc(in, sizeof(float)), *out = (float *)calloc((size_t)c->classes, sizeof(float)), loss;
    int label = c->classes - 1;
    pf_optim o = pf_optim_default();
    pf_model *other = NULL;
    pf_status st;
    if (!x || !out) abort();

    fz_note("predict", pf_predict(m, x, 1, out));

    st = pf_model_alloc_train(m);
    if (st == PF_OK) st = pf_model_reserve(m, 1);
    if (st == PF_OK) st = pf_forward(m, x, &label, 1, 0.1f, &loss);
    if (st == PF_OK) st = pf_backward(m);
    if (st == PF_OK) st = pf_optim_step(m, &o, NULL);
    fz_note("train step", st);

    fz_note("compress", st = pf_model_compress(m, 1, &other));
    pf_model_free(other);
    other = NULL;
    fz_note("expand", st = pf_model_expand(m, 1, c->classes + 1, PF_NEW_ZERO, 7, &other));
    pf_model_free(other);

    { /* resume: 8 one-pixel images of class 0, the corpus checkpoint's options */
        static unsigned char images[8];
        static int labels[8];
        pf_dataset d;
        pf_train_opts to = pf_train_opts_default();
        pf_trainer t;
        memset(&d, 0, sizeof d);
        d.n = 8; d.h = d.w = d.c = 1; d.classes = 1;
        d.images = images; d.labels = labels;
        snprintf(d.name, sizeof d.name, "fuzz");
        to.epochs = 1;
        to.batch = 8;
        st = pf_trainer_init(&t, m, &d, NULL, &to);
        fz_note("trainer init", st);
        if (st == PF_OK) {
            /* this is not the checkpoint's data: take its fingerprint as
               ours, so that the resume goes on past the data check */
            pf_st_file *sf = NULL;
            const char *sj, *at;
            if (pf_st_open(path, &sf) == PF_OK && (sj = pf_st_meta(sf, "train_state")) &&
                (at = strstr(sj, "\"hash\":\"")) != NULL)
                t.data_hash = strtoull(at + 8, NULL, 16);
            pf_st_close(sf);
            fz_note("trainer resume", st = pf_trainer_resume(&t, path));
            if (st == PF_OK) fz_note("predict resumed", pf_predict(m, x, 1, out));
            pf_trainer_free(&t);
        }
    }
    free(x);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[1100];
    pf_st_file *f = NULL;
    pf_model *m = NULL;
    pf_status st;
    int i;
    fz_write("in.safetensors", data, size, path, sizeof path);

    fz_note("st_open", st = pf_st_open(path, &f));
    if (st == PF_OK) {
        (void)pf_st_meta(f, "config");
        for (i = 0; i < f->n; i++) {
            const pf_st_entry *e = pf_st_find(f, f->entries[i].name);
            float *v;
            if (e != &f->entries[i]) abort(); /* names are unique: find gives back the same entry */
            v = (float *)malloc(pf_st_numel(e) * sizeof(float) + 1);
            if (!v) abort();
            (void)pf_st_read_f32(f, e, v);
            free(v);
        }
        pf_st_close(f);
    }

    fz_note("model_load", st = pf_model_load(path, &m));
    if (st == PF_OK && small_model(m)) use_model(m, path);
    pf_model_free(m);
    return 0;
}

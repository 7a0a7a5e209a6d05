/* train_fmnist.c - train a ParaFormer progressively on Fashion-MNIST with
   nothing but paraformer.h: branch 1 first, then branches 1..2, and so on,
   each new branch learning what the earlier ones left over. Prints the
   accuracy of every branch prefix at the end (the compression curve).

       cc -std=c99 -O2 -fopenmp -DPF_HAVE_ZLIB -I. examples/train_fmnist.c -o train_fmnist -lm -lz
       ./train_fmnist --data data/fmnist-sample --epochs 3
*/
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    printf("usage: train_fmnist [--data DIR] [--epochs N] [--threads N] [--seed N] [--out FILE]\n\n"
           "Trains the fmnist-small ParaFormer stage by stage on the Fashion-MNIST IDX files in DIR and prints\n"
           "the test accuracy of the first k branches for every k.\n\n"
           "  --data DIR     folder with the four IDX files, .gz or raw (default: data/fmnist-sample)\n"
           "  --epochs N     epochs per stage (default: the preset's, 15 then 20)\n"
           "  --threads N    threads (default: all cores)\n"
           "  --seed N       initialisation, split, data order, augmentation (default: 0)\n"
           "  --out FILE     checkpoint with training state (default: fmnist.safetensors)\n");
}

static void on_progress(const pf_train_info *p, void *user) {
    (void)user;
    if (p->event == PF_EV_STAGE) printf("stage %d: branches 1..%d\n", p->stage, p->active);
    if (p->event == PF_EV_EVAL)
        printf("  epoch %2d  val loss %.4f  val acc %5.2f%%  (%.0f s)\n", p->epoch + 1, p->val_loss, 100 * p->val_acc,
               p->time_s);
}

int main(int argc, char **argv) {
    const char *dir = "data/fmnist-sample", *out = "fmnist.safetensors";
    char spec[600];
    pf_dataset all, train, val, test;
    pf_config cfg;
    pf_train_opts opts;
    pf_model *m;
    pf_trainer t;
    float embed_std;
    double acc, loss, *sweep;
    uint64_t seed = 0;
    int i, k, epochs = 0;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        if (!v) { fprintf(stderr, "error: %s needs a value (see --help)\n", a); return 2; }
        if (!strcmp(a, "--data")) dir = v;
        else if (!strcmp(a, "--epochs")) epochs = atoi(v);
        else if (!strcmp(a, "--threads")) pf_set_threads(atoi(v));
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--out")) out = v;
        else { fprintf(stderr, "error: unknown option %s (see --help)\n", a); return 2; }
        i++;
    }
    /* data: the training split, 10 % of it held out for the stage decisions */
    snprintf(spec, sizeof spec, "fmnist:%s@train", dir);
    PF_TRY(pf_dataset_load(spec, PF_SPLIT_TRAIN, &all));
    snprintf(spec, sizeof spec, "fmnist:%s@test", dir);
    PF_TRY(pf_dataset_load(spec, PF_SPLIT_TEST, &test));
    PF_TRY(pf_dataset_split(&all, 0.1, seed, &train, &val));
    /* the recipe: model and training options together */
    PF_TRY(pf_train_preset("fmnist-small", &cfg, &opts, &embed_std));
    pf_dataset_stats(&train, cfg.mean, cfg.std); /* normalisation, saved in the checkpoint */
    if (epochs > 0) { /* the same cap for every stage */
        opts.epochs = epochs;
        memset(opts.stage_epochs, 0, sizeof opts.stage_epochs);
    }
    opts.seed = seed;
    PF_TRY(pf_model_create(&cfg, &m));
    pf_model_init(m, seed, embed_std);
    printf("%d train / %d val / %d test images, PF(%dx%d), %zu parameters\n", train.n, val.n, test.n,
           cfg.branches, cfg.depth, m->n_params);
    /* train; the checkpoint is rewritten at every epoch end */
    PF_TRY(pf_trainer_init(&t, m, &train, &val, &opts));
    t.out_path = out;
    t.progress = on_progress;
    PF_TRY(pf_trainer_run(&t));
    /* the branch sweep: accuracy of the first k branches, all from one pass */
    sweep = (double *)malloc((size_t)cfg.branches * sizeof(double));
    PF_TRY(pf_evaluate(m, &test, 256, &loss, &acc, NULL, sweep));
    printf("\ntest accuracy of the first k branches:\n");
    for (k = 1; k <= cfg.branches; k++) printf("  k = %d   %6.2f%%\n", k, 100 * sweep[k - 1]);
    printf("model with training state in %s\n", out);
    free(sweep);
    pf_trainer_free(&t);
    pf_model_free(m);
    pf_dataset_free(&all); pf_dataset_free(&train); pf_dataset_free(&val); pf_dataset_free(&test);
    return 0;
}

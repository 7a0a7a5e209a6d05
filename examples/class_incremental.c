/* class_incremental.c - continual learning by adding a branch: learn
   Fashion-MNIST classes 0-4, then grow the model by one branch and five
   classifier rows and learn classes 5-9 while everything old stays frozen.

       cc -std=c99 -O2 -fopenmp -DPF_HAVE_ZLIB -I. examples/class_incremental.c -o class_incremental -lm -lz
       ./class_incremental --data data/fmnist-sample

   The second phase sees all ten classes (the old ones replayed): trained on
   the new classes alone, the new classifier rows are never told "no" on an
   old-class image and win on every image. */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    printf("usage: class_incremental [--data DIR] [--epochs N] [--threads N]\n\n"
           "  --data DIR     folder with the Fashion-MNIST IDX files (default: data/fmnist-sample)\n"
           "  --epochs N     epochs of each phase (default: 6)\n"
           "  --threads N    threads (default: all cores)\n");
}

static pf_dataset load(const char *dir, const char *rest, int split) {
    char spec[600];
    pf_dataset d;
    snprintf(spec, sizeof spec, "fmnist:%s%s", dir, rest);
    PF_TRY(pf_dataset_load(spec, split, &d));
    return d;
}

/* mean accuracy over classes lo..hi */
static double class_mean(const double *per, int lo, int hi) {
    double s = 0;
    int k;
    for (k = lo; k <= hi; k++) s += per[k];
    return s / (hi - lo + 1);
}

static void train(pf_model *m, const pf_dataset *d, pf_train_opts *o) {
    pf_trainer t;
    PF_TRY(pf_trainer_init(&t, m, d, NULL, o));
    PF_TRY(pf_trainer_run(&t));
    pf_trainer_free(&t);
}

int main(int argc, char **argv) {
    const char *dir = "data/fmnist-sample";
    pf_dataset old_tr, all_tr, test;
    pf_config cfg;
    pf_train_opts o;
    pf_model *m, *m2;
    float embed_std;
    double per[10], acc, loss;
    int i, epochs = 6;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        if (!v) { fprintf(stderr, "error: %s needs a value (see --help)\n", a); return 2; }
        if (!strcmp(a, "--data")) dir = v;
        else if (!strcmp(a, "--epochs")) epochs = atoi(v);
        else if (!strcmp(a, "--threads")) pf_set_threads(atoi(v));
        else { fprintf(stderr, "error: unknown option %s (see --help)\n", a); return 2; }
        i++;
    }
    old_tr = load(dir, "@train#classes=0-4", PF_SPLIT_TRAIN);
    all_tr = load(dir, "@train", PF_SPLIT_TRAIN);
    test = load(dir, "@test", PF_SPLIT_TEST);

    /* phase 1: two branches, five classes, trained jointly */
    PF_TRY(pf_train_preset("fmnist-small", &cfg, &o, &embed_std));
    cfg.branches = 2;
    cfg.classes = 5;
    pf_dataset_stats(&all_tr, cfg.mean, cfg.std);
    o.schedule = PF_SCHED_JOINT;
    o.epochs = epochs;
    memset(o.stage_epochs, 0, sizeof o.stage_epochs); /* the preset's are for staged */
    PF_TRY(pf_model_create(&cfg, &m));
    pf_model_init(m, 1, embed_std);
    train(m, &old_tr, &o);

    /* phase 2: one more branch (its output projections zeroed, so the model
       still computes what it did) and five more classes; only the new branch
       and the new classifier rows train */
    PF_TRY(pf_model_expand(m, 1, 10, PF_NEW_ZERO, 2, &m2));
    o.keep_trainable = 1;
    m2->train_stem = 0;
    m2->train_branch[0] = m2->train_branch[1] = 0;
    m2->head_rows_from = 5;
    train(m2, &all_tr, &o);

    {
        pf_dataset old_te = load(dir, "@test#classes=0-4", PF_SPLIT_TEST);
        PF_TRY(pf_evaluate(m, &old_te, 256, &loss, &acc, NULL, NULL));
        pf_dataset_free(&old_te);
    }
    PF_TRY(pf_evaluate(m2, &test, 256, &loss, NULL, per, NULL));
    printf("before expanding: classes 0-4 %.2f%% (a 5-class model)\n", 100 * acc);
    printf("after  expanding: classes 0-4 %.2f%%, classes 5-9 %.2f%% (10-way)\n", 100 * class_mean(per, 0, 4),
           100 * class_mean(per, 5, 9));
    printf("parameters: %zu -> %zu; the old %zu are bitwise unchanged\n", m->n_params, m2->n_params,
           pf_model_part_size(m, PF_PART_STEM) + 2 * pf_model_part_size(m, PF_PART_BRANCH));
    pf_model_free(m);
    pf_model_free(m2);
    pf_dataset_free(&old_tr); pf_dataset_free(&all_tr); pf_dataset_free(&test);
    return 0;
}

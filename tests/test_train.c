/* test_train.c - progressive training end to end on the shipped
   Fashion-MNIST sample (data/fmnist-sample): the schedules, the branch sweep,
   compress/expand, byte-identical resume, option validation.

   A tiny model (28x28x1, patch 7, width 16, 3 branches x 1 layer) keeps it to
   seconds. Every check states what it holds the trainer to. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"
#define PF_TEST_FILES
#include "pf_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE "fmnist:data/fmnist-sample"

/* the model trained here: 28x28x1 in patches of 7, width 16, 3 branches x 1 layer */
static pf_config train_config(int classes) {
    pf_config c = shape_config(28, 1, 7, 16, 2, 32, 3, 1, classes);
    c.mean[0] = 0.286f; c.std[0] = 0.353f;
    return c;
}

static pf_train_opts tiny_opts(int schedule) {
    pf_train_opts o = pf_train_opts_default();
    o.schedule = schedule;
    o.epochs = 2;
    o.batch = 50;
    o.optim.lr = 3e-3f;
    o.warmup = 0.5f;
    o.patience = 0;
    o.seed = 7;
    o.aug.crop_pad = 2;
    o.aug.flip = 1;
    return o;
}

/* ---- reading a JSON-lines log back ---- */

typedef struct logline { char event[16]; double step, stage, active, loss, lr; } logline;

static int read_log(const char *path, logline *out, int cap) {
    FILE *f = fopen(path, "rb");
    char line[4096];
    int n = 0;
    if (!f) return -1;
    while (n < cap && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        logline *l = &out[n];
        memset(l, 0, sizeof *l);
        l->loss = l->stage = l->active = l->step = l->lr = NAN;
        if (!pf_json_string(line, len, "event", l->event, sizeof l->event)) continue;
        pf_json_number(line, len, "step", &l->step);
        pf_json_number(line, len, "stage", &l->stage);
        pf_json_number(line, len, "active", &l->active);
        pf_json_number(line, len, "loss", &l->loss);
        pf_json_number(line, len, "lr", &l->lr);
        n++;
    }
    fclose(f);
    return n;
}

/* ---- running a schedule, optionally stopping after `stop_at` steps ---- */

static volatile int g_stop;
static int64_t g_stop_at;
static void on_progress(const pf_train_info *p, void *user) {
    (void)user;
    if (g_stop_at > 0 && p->step >= g_stop_at) g_stop = 1;
}

static pf_status run(const pf_dataset *tr, const pf_dataset *va, const pf_train_opts *o, const char *ckpt,
                     const char *log, int resume, int64_t stop_at, int threads, int64_t *steps) {
    pf_config c = train_config(10);
    pf_model *m;
    pf_trainer t;
    pf_status st;
    pf_set_threads(threads);
    if ((st = pf_model_create(&c, &m)) != PF_OK) return st;
    pf_model_init(m, 3, 0.0f);
    if ((st = pf_trainer_init(&t, m, tr, va, o)) != PF_OK) { pf_model_free(m); return st; }
    if (resume && (st = pf_trainer_resume(&t, ckpt)) != PF_OK) goto done;
    if (log && (st = pf_trainer_open_log(&t, log)) != PF_OK) goto done;
    t.out_path = ckpt;
    g_stop = 0;
    g_stop_at = stop_at;
    t.stop = &g_stop;
    t.progress = on_progress;
    st = pf_trainer_run(&t);
    if (steps) *steps = t.s.step;
done:
    pf_trainer_free(&t);
    pf_model_free(m);
    return st;
}

static void test_staged(const pf_dataset *tr, const pf_dataset *va) {
    const char *ckpt = tmp_path("staged.safetensors"), *log = tmp_path("staged.jsonl");
    logline L[400];
    int n, i, s, stages_seen = 0, order_ok = 1, all_fall = 1, nondecr = 1;
    double prev_active = 0;
    pf_train_opts o = tiny_opts(PF_SCHED_STAGED);
    int64_t steps = 0;
    o.log_every = 2;
    check(run(tr, va, &o, ckpt, log, 0, 0, 2, &steps) == PF_OK, "staged: runs");
    check(steps == 3 * 2 * 12, "staged: 3 stages x 2 epochs x 12 batches = 72 steps (got %lld)", (long long)steps);
    n = read_log(log, L, 400);
    for (i = 0; i < n; i++) {
        if (!strcmp(L[i].event, "stage")) {
            stages_seen++;
            order_ok &= L[i].stage == stages_seen && L[i].active == stages_seen;
        }
        if (!strcmp(L[i].event, "train")) {
            nondecr &= L[i].active >= prev_active;
            prev_active = L[i].active;
        }
    }
    check(stages_seen == 3 && order_ok, "staged: branches activate in order 1, 2, 3 (%d stage events)", stages_seen);
    check(nondecr, "staged: the active branch count never goes down");
    for (s = 1; s <= 3; s++) { /* loss falls within each stage: last train line below the first */
        double first = NAN, last = NAN;
        for (i = 0; i < n; i++)
            if (!strcmp(L[i].event, "train") && L[i].stage == s) {
                if (isnan(first)) first = L[i].loss;
                last = L[i].loss;
            }
        check(last < first, "staged: train loss falls within stage %d (%.4f -> %.4f)", s, first, last);
        all_fall &= last < first;
    }
    (void)all_fall;
}

/* epochs per stage: caps 1, 2, then 2 again for stage 3 */
/* The learning rate that every step of a staged run logs: a fresh warmup
   and cosine in each stage (cosine), or one over the whole run
   (cosine-run), each against pf__lr_at's formula. */
static void test_lr_span(const pf_dataset *tr, const pf_dataset *va) {
    const char *ckpt = tmp_path("span.safetensors");
    static logline L[400];
    int k, n, i, seen, ok, restart, decr;
    double prev;
    for (k = 0; k < 2; k++) {
        const char *log = tmp_path(k ? "span1.jsonl" : "span0.jsonl");
        pf_train_opts o = tiny_opts(PF_SCHED_STAGED);
        o.lr_schedule = k ? PF_LR_COSINE_RUN : PF_LR_COSINE;
        o.log_every = 1;
        o.min_lr = 0.1f;
        check(run(tr, va, &o, ckpt, log, 0, 0, 1, NULL) == PF_OK, "%s: runs", k ? "cosine-run" : "cosine");
        n = read_log(log, L, 400);
        seen = 0; ok = 1; restart = 0; decr = 1; prev = INFINITY;
        for (i = 0; i < n; i++) {
            int64_t s;
            double want;
            if (strcmp(L[i].event, "train")) continue;
            s = (int64_t)L[i].step - 1; /* 0-based step of this line; 12 per epoch, 2 epochs per stage */
            want = k ? pf__lr_at(&o, s, 72, 12) : pf__lr_at(&o, s % 24, 24, 12);
            ok &= fabs(L[i].lr - want) <= 1e-5 * want; /* the log has 6 digits */
            if (s == 24) restart = L[i].lr < 0.2 * o.optim.lr; /* stage 2's first step */
            if (k && s >= 6) decr &= L[i].lr <= prev;
            prev = L[i].lr;
            seen++;
        }
        check(seen == 72 && ok, "%s: all 72 steps log pf__lr_at's rate (%d lines)", k ? "cosine-run" : "cosine", seen);
        if (!k) check(restart, "cosine: stage 2 starts a new warmup");
        else check(!restart && decr, "cosine-run: no warmup at stage 2; the rate only falls after the first warmup");
    }
}

static void test_stage_epochs(const pf_dataset *tr, const pf_dataset *va) {
    const char *ckpt = tmp_path("stage_epochs.safetensors"), *log = tmp_path("stage_epochs.jsonl");
    logline L[400];
    pf_train_opts o = tiny_opts(PF_SCHED_STAGED);
    int64_t steps = 0;
    double ends[4];
    int n, i, k = 0;
    o.stage_epochs[0] = 1; o.stage_epochs[1] = 2;
    check(run(tr, va, &o, ckpt, log, 0, 0, 2, &steps) == PF_OK, "stage epochs 1,2: runs");
    check(steps == (1 + 2 + 2) * 12, "stage epochs 1,2: (1 + 2 + 2) x 12 = 60 steps (got %lld)", (long long)steps);
    n = read_log(log, L, 400);
    for (i = 0; i < n; i++)
        if (!strcmp(L[i].event, "stage_end") && k < 4) ends[k++] = L[i].step;
    check(k == 3 && ends[0] == 12 && ends[1] == 36 && ends[2] == 60, "stage epochs 1,2: stages end at steps 12, 36, 60");
    o.stage_epochs[0] = 2; o.stage_epochs[1] = 0; o.stage_epochs[2] = 3;
    check(pf_train_opts_validate(&o) != PF_OK, "a stage-epochs list with a gap is refused: %s", pf_last_error());
    o.stage_epochs[2] = 0;
    o.schedule = PF_SCHED_JOINT;
    check(pf_train_opts_validate(&o) != PF_OK, "stage epochs without the staged schedule are refused: %s", pf_last_error());
}

/* zeroed output projections: a new branch contributes exactly nothing */
static void test_zero_branch(void) {
    pf_config c = train_config(10);
    pf_model *m, *m2;
    float *x, *l1, *l2;
    int i, same = 1, n = 4;
    size_t per = 28 * 28;
    pf_model_create(&c, &m);
    pf_model_init(m, 11, 0.0f);
    x = (float *)malloc(per * n * sizeof(float));
    l1 = (float *)malloc(10 * n * sizeof(float));
    l2 = (float *)malloc(10 * n * sizeof(float));
    for (i = 0; i < (int)per * n; i++) x[i] = (float)sin(0.37 * i);
    pf_model_set_active(m, 2);
    pf_predict(m, x, n, l1);
    pf__zero_branch_out(m, 2);
    pf_model_set_active(m, 3);
    pf_predict(m, x, n, l2);
    for (i = 0; i < 10 * n; i++) same &= l1[i] == l2[i];
    check(same, "zero-initialised branch 3 leaves the logits of branches 1..2 bitwise unchanged (prenorm, delta)");
    /* expand by one zeroed branch: the same function */
    pf_model_set_active(m, 3);
    pf_predict(m, x, n, l1);
    check(pf_model_expand(m, 1, 0, PF_NEW_ZERO, 5, &m2) == PF_OK && m2->cfg.branches == 4, "expand adds a branch");
    pf_predict(m2, x, n, l2);
    for (same = 1, i = 0; i < 10 * n; i++) same &= l1[i] == l2[i];
    check(same, "expand with a zeroed branch: bitwise the same logits");
    pf_model_free(m2);
    free(x); free(l1); free(l2);
    pf_model_free(m);
}

/* Frozen parts are skipped by the backward pass: with the stem and branches
   1..2 frozen, branch 3's and the head's gradients equal those of a full
   backward bitwise, and the frozen branches' gradient memory is not touched
   (the staged schedule freezes old parts at --old-lr 0 this way). */
static void test_frozen_skip(void) {
    pf_config c = train_config(10);
    pf_model *m;
    pf_real *x, *full;
    int labels[4] = {1, 3, 5, 7}, i, t, n = 4, same = 1, untouched = 1, some = 0;
    size_t per = 28 * 28, np;
    float loss;
    pf_model_create(&c, &m);
    pf_model_init(m, 21, 0.0f);
    for (t = 0; t < m->n_specs; t++) /* nonzero output projections everywhere */
        if (m->specs[t].part == PF_PART_BRANCH)
            for (i = 0; i < (int)m->specs[t].numel; i++) m->params[m->specs[t].offset + i] += (pf_real)(0.01 * sin(0.1 * i + t));
    pf_model_alloc_train(m);
    pf_model_reserve(m, n);
    np = m->n_params;
    x = (pf_real *)malloc(per * n * sizeof(pf_real));
    full = (pf_real *)malloc(np * sizeof(pf_real));
    for (i = 0; i < (int)per * n; i++) x[i] = (pf_real)sin(0.23 * i);
    pf_forward(m, x, labels, n, 0.0f, &loss);
    pf_backward(m);
    memcpy(full, m->grads, np * sizeof(pf_real));
    for (i = 0; i < (int)np; i++) m->grads[i] = (pf_real)12345;
    m->train_stem = 0; m->train_branch[0] = m->train_branch[1] = 0;
    pf_forward(m, x, labels, n, 0.0f, &loss);
    pf_backward(m);
    for (t = 0; t < m->n_specs; t++) {
        const pf_tensor_spec *s = &m->specs[t];
        int live = s->part == PF_PART_HEAD || (s->part == PF_PART_BRANCH && s->branch == 2);
        size_t j;
        for (j = 0; j < s->numel; j++) {
            if (live) { same &= m->grads[s->offset + j] == full[s->offset + j]; some |= full[s->offset + j] != 0; }
            else untouched &= m->grads[s->offset + j] == (pf_real)12345;
        }
    }
    check(same && some, "stem and branches 1-2 frozen: branch 3's and the head's gradients equal a full backward's bitwise");
    check(untouched, "the frozen stem's and branches' gradients are skipped (memory untouched)");
    free(x); free(full);
    pf_model_free(m);
}

static void test_sweep_and_compress(const pf_dataset *te) {
    const char *ckpt = tmp_path("staged.safetensors");
    pf_model *m, *mk;
    double sweep[3], acc, loss;
    int k, ok = 1;
    if (pf_model_load(ckpt, &m) != PF_OK) { check(0, "load the staged model: %s", pf_last_error()); return; }
    check(pf_evaluate(m, te, 64, &loss, &acc, NULL, sweep) == PF_OK, "evaluate with the sweep");
    check(sweep[2] == acc, "sweep at k = n equals the plain accuracy (%.4f, %.4f)", sweep[2], acc);
    for (k = 1; k <= 3; k++) {
        double acck, lossk;
        if (pf_model_compress(m, k, &mk) != PF_OK) { ok = 0; break; }
        pf_evaluate(mk, te, 64, &lossk, &acck, NULL, NULL);
        check(acck == sweep[k - 1], "compress --keep %d evaluates exactly like prefix %d of the sweep (%.4f vs %.4f)", k,
              k, acck, sweep[k - 1]);
        check(mk->n_params == pf_model_part_size(m, PF_PART_STEM) + pf_model_part_size(m, PF_PART_HEAD) +
                                  (size_t)k * pf_model_part_size(m, PF_PART_BRANCH),
              "compressed to %d branches has stem + head + %d branches of parameters", k, k);
        pf_model_free(mk);
    }
    check(ok, "compress works for k = 1..3");
    check(pf_model_compress(m, 0, &mk) != PF_OK && pf_model_compress(m, 4, &mk) != PF_OK,
          "compress refuses keep = 0 and keep > branches");
    printf("     (staged tiny model on 500 test images: sweep %.3f %.3f %.3f)\n", sweep[0], sweep[1], sweep[2]);
    check(acc > 0.35, "the tiny staged model learned something (chance is 0.1): test accuracy %.3f > 0.35", acc);
    pf_model_free(m);
}

/* An interrupted run resumed with 1 thread ends as the uninterrupted one
   with 2. With random erasing (erase_p > 0) the files are erase_*, so that
   full.safetensors stays the plain joint run test_resume_refusals reads. */
/* mix: MixUp and CutMix (alpha 0.8 and 1), a weight average (0.9) and
   drop-path (0.3) */
static void test_resume(const pf_dataset *tr, const pf_dataset *va, int schedule, int64_t stop_at, float erase_p,
                        int mix) {
    const char *tag = mix ? "mix_" : erase_p > 0 ? "erase_" : "";
    const char *full = tmp_path("%sfull.safetensors", tag), *part = tmp_path("%spart.safetensors", tag);
    const char *lfull = tmp_path("%sfull.jsonl", tag), *lpart = tmp_path("%spart.jsonl", tag);
    pf_train_opts o = tiny_opts(schedule);
    int64_t s1 = 0, s2 = 0, s3 = 0;
    pf_status st;
    char name[64];
    o.aug.erase_p = erase_p;
    if (mix) { o.mixup = 0.8f; o.cutmix = 1.0f; o.ema = 0.9f; o.drop_path = 0.3f; }
    snprintf(name, sizeof name, "%s%s", pf_schedule_name(schedule),
             mix ? " with MixUp, CutMix, ema and drop-path" : erase_p > 0 ? " with erasing" : "");
    remove(lfull);
    remove(lpart);
    check(run(tr, va, &o, full, lfull, 0, 0, 2, &s1) == PF_OK, "%s: uninterrupted run", name);
    st = run(tr, va, &o, part, lpart, 0, stop_at, 2, &s2);
    check(st == PF_ERR_INTERRUPTED && s2 >= stop_at && s2 < s1, "%s: a run stopped after %lld steps reports it (%s)",
          name, (long long)s2, pf_status_name(st));
    st = run(tr, va, &o, part, lpart, 1, 0, 1, &s3); /* the rest with 1 thread */
    check(st == PF_OK && s3 == s1, "%s: resumed run finishes at the same step (%lld, %lld)", name, (long long)s3,
          (long long)s1);
    check(same_file(full, part), "%s: resumed (1 thread) and uninterrupted (2 threads) checkpoints are byte-identical",
          name);
    if (mix) { /* the finished run's model is the weight average */
        pf_model *fm = NULL;
        pf_st_file *f = NULL;
        const pf_st_entry *e;
        float *ema = NULL;
        int same = 0, moved = 0;
        size_t i;
        if (pf_model_load(full, &fm) == PF_OK && pf_st_open(full, &f) == PF_OK && (e = pf_st_find(f, "train.ema")) &&
            e->shape[0] == (int64_t)fm->n_params && (ema = (float *)malloc(fm->n_params * sizeof(float))) &&
            pf_st_read_raw(f, e, ema) == PF_OK) {
            same = 1;
            for (i = 0; i < fm->n_params; i++) same &= (float)fm->params[i] == ema[i];
        }
        { /* and it differs from the last step's weights, which the stopped run's log cannot show: compare
             with a run of the same options without the average */
            pf_train_opts q = o;
            pf_model *pm = NULL;
            const char *plain = tmp_path("mix_plain.safetensors");
            q.ema = 0.0f;
            if (run(tr, va, &q, plain, NULL, 0, 0, 2, NULL) == PF_OK && pf_model_load(plain, &pm) == PF_OK && fm)
                for (i = 0; i < fm->n_params; i++) moved += fm->params[i] != pm->params[i];
            pf_model_free(pm);
        }
        check(same && moved > 0, "%s: the final weights are train.ema bit for bit (and differ from the run without "
              "it in %d values)", name, moved);
        free(ema);
        pf_st_close(f);
        pf_model_free(fm);
    }
    {
        logline a[400], b[400];
        int na = read_log(lfull, a, 400), nb = read_log(lpart, b, 400), i, same = na == nb;
        for (i = 0; same && i < na; i++)
            same = !strcmp(a[i].event, b[i].event) &&
                   (a[i].step == b[i].step || (isnan(a[i].step) && isnan(b[i].step))) && /* "start": no step */
                   (a[i].loss == b[i].loss || (isnan(a[i].loss) && isnan(b[i].loss)));
        check(same && na > 0, "%s: the resumed log reads as the uninterrupted one (%d and %d lines)", name, na, nb);
    }
    {   /* the "start" event names the erasing probability only when it is on */
        FILE *f = fopen(lfull, "rb");
        char line[4096] = "";
        if (f) { if (!fgets(line, sizeof line, f)) line[0] = 0; fclose(f); }
        check(strstr(line, "\"event\":\"start\"") && !strstr(line, "\"erase_p\"") == !(erase_p > 0) &&
                  (!(erase_p > 0) || strstr(line, "\"erase_p\":0.5,")),
              "%s: the log's start event %s \"erase_p\"", name, erase_p > 0 ? "holds" : "has no");
    }
}

/* pf__trainer_mix against the same draws worked by hand: MixUp blends image
   i with image n-1-i, CutMix swaps one box between them; the soft targets */
static void test_mix_cases(void) {
    pf_config c = shape_config(8, 2, 4, 16, 2, 32, 1, 1, 3);
    pf_model *m = NULL;
    pf_trainer t;
    pf_real x[5 * 2 * 64], x0[5 * 2 * 64], tg[15];
    int labels[5] = {0, 2, 1, 1, 0}, n = 5, k, i, j, ok;
    check(pf_model_create(&c, &m) == PF_OK, "mix: a model of 8x8x2, 3 classes");
    if (!m) return;
    for (i = 0; i < n * 128; i++) x0[i] = (pf_real)((i * 37) % 101) / 10 - 5;
    for (k = 0; k < 2; k++) {
        uint64_t r;
        double lam, on = 1 - 0.1 + 0.1 / 3, off = 0.1 / 3;
        memset(&t, 0, sizeof t);
        t.m = m; t.x = x; t.labels = labels; t.targets = tg;
        t.o = pf_train_opts_default();
        t.o.seed = 11; t.o.label_smoothing = 0.1f;
        if (k) t.o.cutmix = 1.0f; else t.o.mixup = 0.4f;
        memcpy(x, x0, sizeof x);
        pf__trainer_mix(&t, n, 300);
        r = pf_mix64(11 ^ pf_mix64(300 ^ PF__MIX_STREAM));
        lam = pf__beta(&r, k ? 1.0 : 0.4);
        ok = 1;
        if (!k) {
            for (i = 0; i < n; i++)
                for (j = 0; j < 128; j++) {
                    double want = i == 2 ? x0[i * 128 + j] : lam * x0[i * 128 + j] + (1 - lam) * x0[(n - 1 - i) * 128 + j];
                    ok &= fabs(x[i * 128 + j] - want) <= 1e-6 * (1 + fabs(want));
                }
            check(ok && lam > 0 && lam < 1, "MixUp: image i = lam x_i + (1 - lam) x_(4-i), the middle one unchanged "
                  "(lam %.4f)", lam);
        } else {
            int hh = (int)(8 * sqrt(1 - lam)) / 2, cy = (int)(pf__next(&r) % 8), cx = (int)(pf__next(&r) % 8);
            int y0 = cy - hh < 0 ? 0 : cy - hh, y1 = cy + hh > 8 ? 8 : cy + hh;
            int x0b = cx - hh < 0 ? 0 : cx - hh, x1b = cx + hh > 8 ? 8 : cx + hh, ch, y, xx, inside = 0;
            for (i = 0; i < n; i++)
                for (ch = 0; ch < 2; ch++)
                    for (y = 0; y < 8; y++)
                        for (xx = 0; xx < 8; xx++) {
                            int in = y >= y0 && y < y1 && xx >= x0b && xx < x1b, src = in ? n - 1 - i : i;
                            size_t at = (size_t)ch * 64 + (size_t)y * 8 + (size_t)xx;
                            ok &= x[(size_t)i * 128 + at] == x0[(size_t)src * 128 + at];
                            inside += in && i == 0 && ch == 0;
                        }
            lam = 1.0 - inside / 64.0;
            check(ok, "CutMix: the box [%d,%d)x[%d,%d) of image i comes from image 4-i, the rest stays", y0, y1, x0b,
                  x1b);
        }
        ok = 1;
        for (i = 0; i < n; i++)
            for (j = 0; j < 3; j++) {
                double want = off + (j == labels[i] ? lam * (on - off) : 0) + (j == labels[n - 1 - i] ? (1 - lam) * (on - off) : 0);
                ok &= fabs(tg[i * 3 + j] - want) < 1e-6;
            }
        check(ok, "%s: targets = lam·smooth(y_i) + (1 - lam)·smooth(y_(4-i)), smoothing 0.1 (lam %.4f)",
              k ? "CutMix" : "MixUp", lam);
    }
    pf_model_free(m);
}

/* Beta draws, the soft-target loss and its gradient, the weight average */
static void test_mix_and_ema(const pf_dataset *tr) {
    { /* Beta(a, a): mean 1/2, variance 1/(4(2a + 1)) */
        static const double as[3] = {0.4, 1.0, 2.5};
        int k, i;
        for (k = 0; k < 3; k++) {
            uint64_t r = 5;
            double s = 0, s2 = 0, a = as[k], var, want = 1.0 / (4 * (2 * a + 1));
            int in = 1;
            for (i = 0; i < 40000; i++) {
                double v = pf__beta(&r, a);
                in &= v >= 0 && v <= 1;
                s += v; s2 += v * v;
            }
            s /= 40000; var = s2 / 40000 - s * s;
            check(in && fabs(s - 0.5) < 0.01 && fabs(var - want) < 0.05 * want,
                  "Beta(%.1f, %.1f): 40000 draws in [0, 1], mean %.4f, variance %.4f (%.4f)", a, a, s, var, want);
        }
    }
    test_mix_cases();
    { /* soft targets: the loss and every gradient are linear in the targets */
        pf_config c = train_config(10);
        pf_model *m = NULL;
        pf_real x[6 * 784], tg[60];
        int la[6], lb[6], i, j, nb = 6;
        float lam = 0.3f, l_a, l_b, l_s;
        pf_real *ga = NULL, *gb = NULL;
        double worst = 0, scale = 0;
        pf_status st;
        pf_set_threads(2);
        check(pf_model_create(&c, &m) == PF_OK && pf_model_alloc_train(m) == PF_OK && pf_model_reserve(m, 6) == PF_OK,
              "soft targets: a model");
        if (!m) return;
        pf_model_init(m, 4, 0.0f);
        for (i = 0; i < nb; i++) { la[i] = tr->labels[i]; lb[i] = tr->labels[nb + i]; }
        pf_dataset_batch(tr, (const int[]){0, 1, 2, 3, 4, 5}, nb, &c, NULL, 0, 0, x);
        ga = (pf_real *)malloc(m->n_params * sizeof(pf_real));
        gb = (pf_real *)malloc(m->n_params * sizeof(pf_real));
        pf_forward(m, x, la, nb, 0.0f, &l_a); pf_backward(m); memcpy(ga, m->grads, m->n_params * sizeof(pf_real));
        pf_forward(m, x, lb, nb, 0.0f, &l_b); pf_backward(m); memcpy(gb, m->grads, m->n_params * sizeof(pf_real));
        for (i = 0; i < nb; i++)
            for (j = 0; j < 10; j++) tg[i * 10 + j] = (j == la[i] ? lam : 0) + (j == lb[i] ? 1 - lam : 0);
        st = pf_forward_soft(m, x, tg, nb, &l_s);
        check(st == PF_OK && pf_backward(m) == PF_OK, "soft targets: forward, backward");
        for (i = 0; i < (int)m->n_params; i++) {
            double want = lam * ga[i] + (1 - lam) * gb[i];
            if (fabs(m->grads[i] - want) > worst) worst = fabs(m->grads[i] - want);
            if (fabs(want) > scale) scale = fabs(want);
        }
        check(fabs(l_s - (lam * l_a + (1 - lam) * l_b)) < 1e-5 * l_s,
              "soft loss = 0.3 L(a) + 0.7 L(b): %.6f vs %.6f", l_s, lam * l_a + (1 - lam) * l_b);
        check(worst <= 1e-5 * scale, "soft gradients = 0.3 g(a) + 0.7 g(b): worst %.2e of max %.2e", worst, scale);
        for (i = 0; i < 60; i++) tg[i] = (pf_real)0.1; /* uniform: what label smoothing 1 gives */
        pf_forward(m, x, la, nb, 1.0f, &l_a);
        st = pf_forward_soft(m, x, tg, nb, &l_s);
        check(st == PF_OK && fabs(l_s - l_a) < 1e-5 * l_a, "soft uniform targets = label smoothing 1 (%.6f, %.6f)",
              l_s, l_a);
        tg[7] = NAN;
        st = pf_forward_soft(m, x, tg, nb, &l_s);
        check(st == PF_ERR_ARG && strstr(pf_last_error(), "image 0, class 7"), "a NaN target is refused: %s",
              pf_last_error());
        tg[7] = -0.1f;
        check(pf_forward_soft(m, x, tg, nb, &l_s) == PF_ERR_ARG, "a negative target is refused");
        check(pf_forward_soft(m, x, NULL, nb, &l_s) == PF_ERR_ARG, "NULL targets are refused");
        free(ga); free(gb);
        pf_model_free(m);
    }
    { /* ema: d = min(decay, (1 + n)/(10 + n)) after step n */
        pf_config c = train_config(10);
        pf_model *m = NULL;
        pf_trainer t;
        size_t i;
        int ok = 1;
        check(pf_model_create(&c, &m) == PF_OK, "ema: a model");
        if (!m) return;
        memset(&t, 0, sizeof t);
        t.m = m;
        t.o.ema = 0.5f;
        t.ema = (pf_real *)malloc(m->n_params * sizeof(pf_real));
        for (i = 0; i < m->n_params; i++) { t.ema[i] = 1; m->params[i] = 3; }
        t.s.step = 0; /* d = 0.1: 0.1·1 + 0.9·3 */
        pf__ema_update(&t);
        for (i = 0; i < m->n_params; i++) ok &= fabs(t.ema[i] - 2.8) < 1e-6;
        t.s.step = 100; /* d = min(0.5, 101/110) = 0.5: 0.5·2.8 + 0.5·3 */
        pf__ema_update(&t);
        for (i = 0; i < m->n_params; i++) ok &= fabs(t.ema[i] - 2.9) < 1e-6;
        check(ok, "ema: 1 -> 2.8 after step 0 (decay 0.1), -> 2.9 after step 100 (decay 0.5) toward 3");
        free(t.ema);
        pf_model_free(m);
    }
}

static void test_interleaved_steps(const pf_dataset *tr, const pf_dataset *va) {
    pf_train_opts o = tiny_opts(PF_SCHED_INTERLEAVED);
    int64_t steps = 0;
    const char *ckpt = tmp_path("inter.safetensors");
    o.epochs = 1;
    check(run(tr, va, &o, ckpt, NULL, 0, 0, 2, &steps) == PF_OK, "interleaved runs");
    check(steps == 12 * (3 + 1), "interleaved: each batch one step per prefix 1..3, then a joint pass: %lld steps",
          (long long)steps);
    o = tiny_opts(PF_SCHED_JOINT);
    check(run(tr, va, &o, ckpt, NULL, 0, 0, 2, &steps) == PF_OK && steps == 2 * 12, "joint: one step per batch (%lld)",
          (long long)steps);
}

/* class-incremental: learn classes 0-4, expand by a branch and 5 rows, then
   train on all ten classes (the old ones replayed) with the stem, the old
   branches, the final LayerNorm and the old rows frozen. Bound: old-class
   accuracy (argmax over all 10) drops by at most 25 points; measured for
   this tiny model: 0.554 -> 0.399. Without replay the new rows take every
   image (0.554 -> 0.000): they are never told "no" on an old-class image. */
static void test_expand_incremental(void) {
    pf_dataset old_tr, old_te, new_tr, all_te;
    pf_config c = train_config(5);
    pf_model *m, *m2;
    pf_trainer t;
    pf_train_opts o = tiny_opts(PF_SCHED_JOINT);
    double acc_old_before, acc_old_after, acc_new, loss, per[10];
    size_t i;
    int same = 1;
    pf_set_threads(2);
    if (pf_dataset_load(SAMPLE "@train#classes=0-4#limit=800", PF_SPLIT_TRAIN, &old_tr) != PF_OK ||
        pf_dataset_load(SAMPLE "@test#classes=0-4", PF_SPLIT_TEST, &old_te) != PF_OK ||
        pf_dataset_load(SAMPLE "@train#limit=1200", PF_SPLIT_TRAIN, &new_tr) != PF_OK ||
        pf_dataset_load(SAMPLE "@test", PF_SPLIT_TEST, &all_te) != PF_OK) {
        check(0, "class subsets load: %s", pf_last_error());
        return;
    }
    c.branches = 2;
    pf_model_create(&c, &m);
    pf_model_init(m, 1, 0.0f);
    o.epochs = 4;
    pf_trainer_init(&t, m, &old_tr, NULL, &o);
    check(pf_trainer_run(&t) == PF_OK, "train on classes 0-4");
    pf_trainer_free(&t);
    pf_evaluate(m, &old_te, 100, &loss, &acc_old_before, NULL, NULL);
    check(pf_model_expand(m, 1, 10, PF_NEW_ZERO, 2, &m2) == PF_OK && m2->cfg.branches == 3 && m2->cfg.classes == 10,
          "expand: +1 branch, 5 -> 10 classes");
    o.keep_trainable = 1;
    pf_trainer_init(&t, m2, &new_tr, NULL, &o);
    m2->train_branch[0] = m2->train_branch[1] = 0;
    m2->train_branch[2] = 1;
    m2->train_stem = 0;
    m2->head_rows_from = 5;
    check(pf_trainer_run(&t) == PF_OK, "fine-tune the new branch and rows on classes 5-9");
    pf_trainer_free(&t);
    for (i = 0; i < pf_model_part_size(m, PF_PART_STEM) + 2 * pf_model_part_size(m, PF_PART_BRANCH); i++)
        same &= m->params[i] == m2->params[i];
    check(same, "the stem and the old branches are bitwise unchanged");
    {
        const pf_tensor_spec *a = pf_model_find(m, "head.weight"), *b = pf_model_find(m2, "head.weight");
        const pf_tensor_spec *ln1 = pf_model_find(m, "ln.weight"), *ln2 = pf_model_find(m2, "ln.weight");
        check(!memcmp(m->params + a->offset, m2->params + b->offset, a->numel * sizeof(pf_real)) &&
                  !memcmp(m->params + ln1->offset, m2->params + ln2->offset, ln1->numel * sizeof(pf_real)),
              "the old classifier rows and the final LayerNorm are bitwise unchanged");
    }
    pf_evaluate(m2, &all_te, 100, &loss, &acc_new, per, NULL);
    {
        double old_mean = 0, new_mean = 0;
        int k;
        for (k = 0; k < 5; k++) old_mean += per[k] / 5;
        for (k = 5; k < 10; k++) new_mean += per[k] / 5;
        acc_old_after = old_mean;
        printf("     (old classes %.3f before, %.3f after; new classes %.3f)\n", acc_old_before, acc_old_after, new_mean);
        check(new_mean > 0.3, "the new classes are learned (chance 0.1): %.3f > 0.3", new_mean);
        check(acc_old_after >= acc_old_before - 0.25,
              "old-class accuracy stays within 25 points of before, with no old data replayed (%.3f -> %.3f)",
              acc_old_before, acc_old_after);
    }
    pf_model_free(m);
    pf_model_free(m2);
    pf_dataset_free(&old_tr); pf_dataset_free(&old_te); pf_dataset_free(&new_tr); pf_dataset_free(&all_te);
}

static void test_validation(void) {
    pf_train_opts o;
    pf_config c;
    float es;
    struct { const char *what; int field; double v; } bad[] = {
        {"epochs 0", 0, 0}, {"batch 0", 1, 0}, {"lr 0", 2, 0}, {"lr NaN", 2, NAN}, {"beta1 1", 3, 1},
        {"label smoothing 1", 4, 1}, {"warmup beyond epochs", 5, 99}, {"min lr 2", 6, 2}, {"patience -1", 7, -1},
        {"schedule 7", 8, 7}, {"old lr -1", 9, -1}, {"crop 65", 10, 65}, {"randaug m 31", 11, 31},
        {"keep_trainable with staged", 12, 1}, {"erase p 1.5", 13, 1.5}, {"erase p NaN", 13, NAN},
        {"mixup -1", 14, -1}, {"mixup NaN", 14, NAN}, {"cutmix 101", 15, 101}, {"ema 1", 16, 1}, {"ema NaN", 16, NAN},
        {"lr schedule 3", 17, 3}, {"drop path 1", 18, 1}, {"drop path -0.1", 18, -0.1}, {"drop path NaN", 18, NAN},
    };
    size_t i;
    o = pf_train_opts_default();
    check(pf_train_opts_validate(&o) == PF_OK, "the default options are valid");
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = pf_train_opts_default();
        switch (bad[i].field) {
        case 0: o.epochs = (int)bad[i].v; break;
        case 1: o.batch = (int)bad[i].v; break;
        case 2: o.optim.lr = (float)bad[i].v; break;
        case 3: o.optim.beta1 = (float)bad[i].v; break;
        case 4: o.label_smoothing = (float)bad[i].v; break;
        case 5: o.warmup = (float)bad[i].v; break;
        case 6: o.min_lr = (float)bad[i].v; break;
        case 7: o.patience = (int)bad[i].v; break;
        case 8: o.schedule = (int)bad[i].v; break;
        case 9: o.old_lr = (float)bad[i].v; break;
        case 10: o.aug.crop_pad = (int)bad[i].v; break;
        case 11: o.aug.randaug_n = 2; o.aug.randaug_m = (int)bad[i].v; break;
        case 12: o.keep_trainable = 1; break;
        case 13: o.aug.erase_p = (float)bad[i].v; break;
        case 14: o.mixup = (float)bad[i].v; break;
        case 15: o.cutmix = (float)bad[i].v; break;
        case 16: o.ema = (float)bad[i].v; break;
        case 17: o.lr_schedule = (int)bad[i].v; break;
        case 18: o.drop_path = (float)bad[i].v; break;
        }
        check(pf_train_opts_validate(&o) == PF_ERR_ARG && *pf_last_error(), "options refused: %s (%s)", bad[i].what,
              pf_last_error());
    }
    check(pf_train_preset("fmnist-small", &c, &o, &es) == PF_OK && pf_train_opts_validate(&o) == PF_OK &&
              pf_config_validate(&c) == PF_OK,
          "preset fmnist-small is valid");
    {   /* cifar10-small: a 32x32x3 model of at most 2.5M parameters, staged
           over its 3 branches, with crop, flip and random erasing */
        pf_model *cm = NULL;
        int made = pf_train_preset("cifar10-small", &c, &o, &es) == PF_OK && pf_train_opts_validate(&o) == PF_OK &&
                   pf_config_validate(&c) == PF_OK && pf_model_create(&c, &cm) == PF_OK;
        check(made && cm->n_params <= 2500000 &&
                  c.image_size == 32 && c.channels == 3 && c.classes == 10 && o.schedule == PF_SCHED_STAGED &&
                  o.stage_epochs[c.branches - 1] > 0 && o.aug.crop_pad == 4 && o.aug.flip && o.aug.erase_p > 0 &&
                  c.branches == 2 && c.depth == 3 && o.lr_schedule == PF_LR_COSINE_RUN && o.old_lr == 0.3f,
              "preset cifar10-small: valid, 32x32x3, %zu parameters (<= 2.5M), PF(%dx3) staged under cosine-run, old "
              "branch at 0.3, crop, flip, erasing",
              cm ? cm->n_params : 0, c.branches);
        pf_model_free(cm);
    }
    check(pf_train_preset("paper", &c, &o, &es) == PF_OK && o.schedule == PF_SCHED_INTERLEAVED && o.optim.adam &&
              o.lr_schedule == PF_LR_CONSTANT && es == 1.0f,
          "preset paper: interleaved, Adam, constant lr, N(0,1) embeddings");
    check(pf_train_preset("nope", &c, &o, &es) == PF_ERR_ARG, "unknown preset refused");
    { /* the learning-rate schedule */
        pf_train_opts q = pf_train_opts_default();
        q.optim.lr = 1.0f; q.warmup = 1.0f; q.min_lr = 0.1f;
        /* (min_lr is a float: 0.1f, hence 1e-6) */
        check(fabs(pf__lr_at(&q, 0, 100, 10) - 0.1) < 1e-6 && fabs(pf__lr_at(&q, 9, 100, 10) - 1.0) < 1e-6,
              "warmup rises linearly over its epoch: lr(0) = 0.1, lr(9) = 1");
        check(fabs(pf__lr_at(&q, 10, 100, 10) - 1.0) < 1e-6 && fabs(pf__lr_at(&q, 55, 100, 10) - 0.55) < 1e-6 &&
                  fabs(pf__lr_at(&q, 100, 100, 10) - 0.1) < 1e-6,
              "cosine from lr to min_lr: 1 at the end of warmup, 0.55 half way, 0.1 at the end");
    }
}

/* Copies checkpoint src to dst with one change: in train_state, the value
   of "key" replaced by `value` (key NULL: none), and train.steps[0] set to
   steps0 (when steps0_set). The hostile-checkpoint cases of resume. */
static int tamper(const char *src, const char *dst, const char *key, const char *value, int steps0_set,
                  int64_t steps0) {
    pf_st_file *f = NULL;
    pf_st_tensor *t = NULL;
    void **data = NULL;
    const char *vals[16];
    char state[8192];
    int i, ok = 0, n = 0;
    if (pf_st_open(src, &f) != PF_OK || f->n_meta > 16) goto out;
    t = (pf_st_tensor *)calloc((size_t)f->n, sizeof *t);
    data = (void **)calloc((size_t)f->n, sizeof *data);
    if (!t || !data) goto out;
    for (i = 0; i < f->n; i++, n++) {
        const pf_st_entry *e = &f->entries[i];
        if (!(data[i] = malloc((size_t)(e->end - e->begin) + 1)) || pf_st_read_raw(f, e, data[i]) != PF_OK) goto out;
        t[i].name = e->name, t[i].dtype = e->dtype, t[i].ndim = e->ndim, t[i].data = data[i];
        memcpy(t[i].shape, e->shape, sizeof t[i].shape);
        if (steps0_set && !strcmp(e->name, "train.steps")) memcpy(data[i], &steps0, sizeof steps0);
    }
    for (i = 0; i < f->n_meta; i++) {
        vals[i] = f->meta_vals[i];
        if (key && !strcmp(f->meta_keys[i], "train_state")) { /* "key":<number> -> "key":value */
            char pat[64];
            const char *at, *end;
            snprintf(pat, sizeof pat, "\"%s\":", key);
            if (!(at = strstr(f->meta_vals[i], pat))) goto out;
            at += strlen(pat);
            end = at + strspn(at, "-+.0123456789eE");
            snprintf(state, sizeof state, "%.*s%s%s", (int)(at - f->meta_vals[i]), f->meta_vals[i], value, end);
            vals[i] = state;
        }
    }
    ok = pf_st_write(dst, t, f->n, (const char *const *)f->meta_keys, vals, f->n_meta) == PF_OK;
out:
    for (i = 0; data && i < n; i++) free(data[i]);
    free(data);
    free(t);
    pf_st_close(f);
    return ok;
}

static void test_resume_refusals(const pf_dataset *tr, const pf_dataset *va) {
    const char *ckpt = tmp_path("full.safetensors"); /* the joint run of test_resume */
    const char *plain = tmp_path("plain.safetensors");
    pf_train_opts o = tiny_opts(PF_SCHED_JOINT);
    pf_config c = train_config(10);
    pf_model *m;
    pf_trainer t;
    pf_model_create(&c, &m);
    pf_model_init(m, 3, 0.0f);
    pf_model_save(m, plain);
    o.optim.lr = 1e-2f;
    pf_trainer_init(&t, m, tr, va, &o);
    check(pf_trainer_resume(&t, ckpt) == PF_ERR_ARG && strstr(pf_last_error(), "lr"),
          "resume with another learning rate is refused, naming it (%s)", pf_last_error());
    check(pf_trainer_resume(&t, plain) == PF_ERR_FORMAT && strstr(pf_last_error(), "train_state"),
          "resume from a model without training state is refused (%s)", pf_last_error());
    pf_trainer_free(&t);
    {   /* random erasing: its option is saved only when on, so a checkpoint
           without it (all before it existed) resumes as erase_p 0, and any
           other probability is refused, naming it, either way round */
        const char *ckpt_e = tmp_path("erase_full.safetensors"); /* test_resume's erase_p 0.5 joint run */
        pf_st_file *f = NULL;
        const char *sj;
        int absent = 0, present = 0;
        if (pf_st_open(ckpt, &f) == PF_OK && (sj = pf_st_meta(f, "train_state")) != NULL) absent = !strstr(sj, "erase_p");
        pf_st_close(f);
        f = NULL;
        if (pf_st_open(ckpt_e, &f) == PF_OK && (sj = pf_st_meta(f, "train_state")) != NULL)
            present = strstr(sj, "\"erase_p\":0.5,") != NULL;
        pf_st_close(f);
        check(absent && present, "the options hold \"erase_p\" only when erasing is on (0.5 here)");
        o = tiny_opts(PF_SCHED_JOINT);
        o.aug.erase_p = 0.25f;
        pf_trainer_init(&t, m, tr, va, &o);
        check(pf_trainer_resume(&t, ckpt) == PF_ERR_ARG && strstr(pf_last_error(), "\"erase_p\" is 0.25 now, not set"),
              "resume of a checkpoint without erasing with erase_p 0.25 is refused, naming it (%s)", pf_last_error());
        check(pf_trainer_resume(&t, ckpt_e) == PF_ERR_ARG && strstr(pf_last_error(), "\"erase_p\" is 0.25 now, 0.5"),
              "resume of an erase_p 0.5 run with 0.25 is refused, naming it (%s)", pf_last_error());
        pf_trainer_free(&t);
        o.aug.erase_p = 0.0f;
        pf_trainer_init(&t, m, tr, va, &o);
        check(pf_trainer_resume(&t, ckpt_e) == PF_ERR_ARG &&
                  strstr(pf_last_error(), "\"erase_p\" is not set now, 0.5 in the checkpoint"),
              "resume of an erase_p 0.5 run without erasing is refused, naming it (%s)", pf_last_error());
        check(pf_trainer_resume(&t, ckpt) == PF_OK,
              "a checkpoint without \"erase_p\" (as before it existed) resumes as erase_p 0 (%s)", pf_last_error());
        pf_trainer_free(&t);
        o.aug.erase_p = 0.5f;
        pf_trainer_init(&t, m, tr, va, &o);
        check(pf_trainer_resume(&t, ckpt_e) == PF_OK, "an erase_p 0.5 run resumes with erase_p 0.5 (%s)", pf_last_error());
        pf_trainer_free(&t);
    }
    {   /* hostile counters: refused, naming the field, before any conversion
           (UBSan: no double->int overflow, no ++ past INT_MAX / INT64_MAX) */
        static const struct { const char *key, *value; } bad[] = {
            {"epoch", "3e9"}, {"epoch", "2147483647"}, {"stage_epoch", "2147483647"}, {"bad_evals", "-1"},
            {"step", "9.3e18"}, {"samples", "1e300"}, {"dropout_counter", "0.5"}, {"done", "2"}, {"stage", "99"},
        };
        const char *evil = tmp_path("evil.safetensors");
        size_t i;
        o = tiny_opts(PF_SCHED_JOINT);
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            pf_trainer_init(&t, m, tr, va, &o);
            check(tamper(ckpt, evil, bad[i].key, bad[i].value, 0, 0) &&
                      pf_trainer_resume(&t, evil) == PF_ERR_FORMAT && strstr(pf_last_error(), bad[i].key),
                  "resume refuses train_state \"%s\": %s (%s)", bad[i].key, bad[i].value, pf_last_error());
            pf_trainer_free(&t);
        }
        pf_trainer_init(&t, m, tr, va, &o);
        check(tamper(ckpt, evil, NULL, NULL, 1, INT64_MAX) && pf_trainer_resume(&t, evil) == PF_ERR_FORMAT &&
                  strstr(pf_last_error(), "train.steps"),
              "resume refuses a train.steps of INT64_MAX (%s)", pf_last_error());
        pf_trainer_free(&t);
        pf_trainer_init(&t, m, tr, va, &o);
        check(tamper(ckpt, evil, NULL, NULL, 1, -3) && pf_trainer_resume(&t, evil) == PF_ERR_FORMAT &&
                  strstr(pf_last_error(), "train.steps"),
              "resume refuses a negative train.steps (%s)", pf_last_error());
        pf_trainer_free(&t);
        pf_trainer_init(&t, m, tr, va, &o);
        check(tamper(ckpt, evil, "train", "-5", 0, 0) && pf_trainer_resume(&t, evil) == PF_ERR_FORMAT &&
                  strstr(pf_last_error(), "\"data\""),
              "resume refuses a data fingerprint with -5 training images (%s)", pf_last_error());
        pf_trainer_free(&t);
        {   /* other data: fewer images, or the same count with one pixel or
               one label changed, is not the run the checkpoint continues */
            pf_dataset fewer, changed;
            int *idx = (int *)malloc((size_t)tr->n * sizeof *idx), k;
            for (k = 0; k < tr->n; k++) idx[k] = k;
            if (pf_dataset_subset(tr, idx, tr->n - 1, &fewer) == PF_OK) {
                pf_trainer_init(&t, m, &fewer, va, &o);
                check(pf_trainer_resume(&t, ckpt) == PF_ERR_ARG && strstr(pf_last_error(), "other data") &&
                          strstr(pf_last_error(), "this one has"),
                      "resume on one training image fewer is refused (%s)", pf_last_error());
                pf_trainer_free(&t);
                pf_dataset_free(&fewer);
            }
            if (pf_dataset_subset(tr, idx, tr->n, &changed) == PF_OK) {
                changed.images[17] ^= 1;
                pf_trainer_init(&t, m, &changed, va, &o);
                check(pf_trainer_resume(&t, ckpt) == PF_ERR_ARG && strstr(pf_last_error(), "other data"),
                      "resume on data with one pixel changed is refused (%s)", pf_last_error());
                pf_trainer_free(&t);
                changed.images[17] ^= 1;
                changed.labels[3] = (changed.labels[3] + 1) % changed.classes;
                pf_trainer_init(&t, m, &changed, va, &o);
                check(pf_trainer_resume(&t, ckpt) == PF_ERR_ARG && strstr(pf_last_error(), "other data"),
                      "resume on data with one label changed is refused (%s)", pf_last_error());
                pf_trainer_free(&t);
                pf_trainer_init(&t, m, &changed, NULL, &o);
                check(pf_trainer_resume(&t, ckpt) == PF_ERR_ARG && strstr(pf_last_error(), "other data"),
                      "resume without the validation set is refused (%s)", pf_last_error());
                pf_trainer_free(&t);
                pf_dataset_free(&changed);
            }
            free(idx);
        }
        pf_trainer_init(&t, m, tr, va, &o);
        check(tamper(ckpt, evil, NULL, NULL, 0, 0) && pf_trainer_resume(&t, evil) == PF_OK,
              "an untampered copy resumes (the tamper helper changes only what it is told: %s)",
              pf_last_error());
        pf_trainer_free(&t);
    }
    pf_model_free(m);
}

/* the library writes the whole log: "start" first (a fresh run), then
   pf_trainer_report's "sweep" and "end", which hold the test figures */
static void test_report_log(const pf_dataset *tr, const pf_dataset *te) {
    const char *log = tmp_path("report.jsonl");
    pf_train_opts o = tiny_opts(PF_SCHED_JOINT);
    pf_config c = train_config(10);
    pf_model *m;
    pf_trainer t;
    double loss = NAN, acc = NAN, ref = NAN, sweep[3] = {NAN, NAN, NAN};
    char line[4096], first[4096] = "", prev[4096] = "", last[4096] = "";
    int lines = 0, valid = 1;
    FILE *f;
    o.epochs = 1;
    pf_model_create(&c, &m);
    pf_model_init(m, 3, 0.0f);
    pf_trainer_init(&t, m, tr, NULL, &o);
    t.log_preset = "tiny";
    check(pf_trainer_open_log(&t, log) == PF_OK && pf_trainer_run(&t) == PF_OK, "report: a one-epoch joint run");
    check(pf_trainer_report(&t, te, &loss, &acc, sweep) == PF_OK, "report: the test set evaluates");
    pf_evaluate(m, te, 256, NULL, &ref, NULL, NULL);
    check(acc == ref && sweep[2] == acc && loss > 0, "report: the accuracy of pf_evaluate, the sweep's last (%g)", acc);
    check(pf_trainer_report(&t, NULL, NULL, NULL, NULL) == PF_ERR_ARG, "report: no test set is refused");
    pf_trainer_free(&t);
    pf_model_free(m);
    if ((f = fopen(log, "rb")) != NULL) {
        while (fgets(line, sizeof line, f)) {
            valid &= pf_json_check(line, strlen(line), 1) == PF_OK;
            if (!lines++) memcpy(first, line, sizeof line);
            memcpy(prev, last, sizeof last);
            memcpy(last, line, sizeof line);
        }
        fclose(f);
    }
    check(valid && lines > 3, "report: every log line is one JSON object (%d lines)", lines);
    check(strstr(first, "{\"event\":\"start\",\"schedule\":\"joint\",\"branches\":3,\"depth\":1,") &&
          strstr(first, "\"train\":600,\"val\":0,\"preset\":\"tiny\",\"device\":\"cpu\",\"backend\":\"cpu\","
                        "\"precision\":\"fp32\",\"config\":{"),
          "report: the log starts with the start event: %.200s", first);
    check(!strncmp(prev, "{\"event\":\"sweep\",\"split\":\"test\",", 32) && !strncmp(last, "{\"event\":\"end\",", 15),
          "report: the log ends with the sweep and end events");
}

/* A loss that turns non-finite stops the run with PF_ERR_NONFINITE naming
   the step, before the step that would spread it, and the checkpoint of the
   last finished epoch stays as it was; a model with a NaN weight is refused
   by pf_model_load. */
static void test_divergence(const pf_dataset *tr, const pf_dataset *va) {
    const char *out = tmp_path("diverge.safetensors"), *nan_model = tmp_path("nan.safetensors");
    pf_train_opts o = tiny_opts(PF_SCHED_JOINT);
    pf_config c = train_config(10);
    pf_model *m, *back = NULL;
    pf_trainer t;
    size_t n = 0, n2 = 0;
    unsigned char *before, *after;
    pf_status st;
    o.epochs = 2;
    pf_model_create(&c, &m);
    pf_model_init(m, 3, 0.0f);
    pf_trainer_init(&t, m, tr, va, &o);
    t.out_path = out;
    check(pf_trainer_run(&t) == PF_OK, "divergence: a good run writes its checkpoint");
    before = (unsigned char *)read_file(out, &n);
    pf_trainer_free(&t);
    pf_trainer_init(&t, m, tr, va, &o); /* the trained model trains on, into the same file */
    t.out_path = out;
    m->params[m->specs[0].offset] = (pf_real)NAN; /* as if the last step had blown up */
    pf_model_changed(m);
    st = pf_trainer_run(&t);
    check(st == PF_ERR_NONFINITE && strstr(pf_last_error(), "diverged") && strstr(pf_last_error(), "step") &&
              strstr(pf_last_error(), out),
          "divergence: a NaN loss stops the run, naming the step and the checkpoint (%s)", pf_last_error());
    check(pf_trainer_save(&t, out) == PF_ERR_NONFINITE && strstr(pf_last_error(), "embed.proj.weight"),
          "divergence: pf_trainer_save will not write a model with a NaN weight (%s)", pf_last_error());
    after = (unsigned char *)read_file(out, &n2);
    check(before && after && n == n2 && !memcmp(before, after, n), "divergence: the last good checkpoint is untouched");
    free(before);
    free(after);
    pf_trainer_free(&t);
    check(pf_model_save(m, nan_model) == PF_OK, "a model with a NaN weight can be saved (for the next check)");
    st = pf_model_load(nan_model, &back);
    check(st == PF_ERR_NONFINITE && back == NULL && strstr(pf_last_error(), nan_model) &&
              strstr(pf_last_error(), m->specs[0].name),
          "pf_model_load refuses a NaN weight, naming the file and the tensor (%s)", pf_last_error());
    pf_model_free(m);
}

int main(void) {
    pf_dataset all, tr, va, te;
    if (!tmp_init("train")) return test_summary();
    if (pf_dataset_load(SAMPLE "#limit=660", PF_SPLIT_TRAIN, &all) != PF_OK ||
        pf_dataset_load(SAMPLE "#limit=500", PF_SPLIT_TEST, &te) != PF_OK) {
        check(0, "the sample data loads: %s", pf_last_error());
        tmp_done();
        return test_summary();
    }
    pf_dataset_split(&all, 60.0 / 660, 1, &tr, &va);
    check(tr.n == 600 && va.n == 60, "600 training and 60 validation images");
    test_validation();
    test_zero_branch();
    test_frozen_skip();
    test_staged(&tr, &va);
    test_stage_epochs(&tr, &va);
    test_lr_span(&tr, &va);
    test_sweep_and_compress(&te);
    test_interleaved_steps(&tr, &va);
    test_resume(&tr, &va, PF_SCHED_STAGED, 29, 0.0f, 0);
    test_resume(&tr, &va, PF_SCHED_INTERLEAVED, 61, 0.0f, 0); /* 48 steps per epoch */
    test_resume(&tr, &va, PF_SCHED_JOINT, 13, 0.0f, 0);
    test_resume(&tr, &va, PF_SCHED_JOINT, 13, 0.5f, 0);
    test_resume(&tr, &va, PF_SCHED_STAGED, 29, 0.0f, 1);
    test_mix_and_ema(&tr);
    test_resume_refusals(&tr, &va);
    test_expand_incremental();
    test_report_log(&tr, &te);
    test_divergence(&tr, &va);
    pf_dataset_free(&all); pf_dataset_free(&tr); pf_dataset_free(&va); pf_dataset_free(&te);
    tmp_done();
    return test_summary();
}

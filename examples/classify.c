/* classify.c - classify image files with a saved ParaFormer.

       cc -std=c99 -O2 -fopenmp -DPF_HAVE_STB -I. examples/classify.c -o classify -lm
       ./classify --model fmnist.safetensors --names fmnist shirt.png boot.jpg

   Each image (PNG, JPEG, BMP) is resized to the model's input, converted to
   its channels, scaled to [0,1] and normalised with the mean/std stored in
   the checkpoint; prints the top classes with their probabilities. */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"
/* stb_image's implementation, its allocations bounded by the library */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_MAX_DIMENSIONS (1 << 14)
#define STBI_MALLOC(sz) pf_stbi_malloc(sz)
#define STBI_REALLOC(p, sz) pf_stbi_realloc(p, sz)
#define STBI_FREE(p) pf_stbi_free(p)
#include <stb/stb_image.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const FMNIST[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static void usage(void) {
    printf("usage: classify --model FILE [--top K] [--branches K] [--names fmnist] IMAGE...\n\n"
           "  --model FILE    checkpoint (safetensors) written by paraformer train / init\n"
           "  --top K         classes to show per image (default: 3)\n"
           "  --branches K    use the first K branches only (default: all)\n"
           "  --names fmnist  print Fashion-MNIST class names (default: class numbers)\n");
}

int main(int argc, char **argv) {
    const char *model = NULL, **names = NULL;
    pf_model *m;
    float *x, *logits;
    int i, top = 3, branches = 0, n_img = 0;
    const char **images = (const char **)malloc((size_t)argc * sizeof(char *));
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); free(images); return 0; }
        if (strncmp(a, "--", 2)) { images[n_img++] = a; continue; }
        if (!v) { fprintf(stderr, "error: %s needs a value (see --help)\n", a); free(images); return 2; }
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--top")) top = atoi(v);
        else if (!strcmp(a, "--branches")) branches = atoi(v);
        else if (!strcmp(a, "--names") && !strcmp(v, "fmnist")) names = (const char **)FMNIST;
        else { fprintf(stderr, "error: bad option %s %s (see --help)\n", a, v); free(images); return 2; }
        i++;
    }
    if (!model || !n_img) {
        fprintf(stderr, "error: give --model and at least one image (see --help)\n");
        free(images);
        return 2;
    }
    PF_TRY(pf_model_load(model, &m));
    if (branches) PF_TRY(pf_model_set_active(m, branches));
    if (names && m->cfg.classes != 10) names = NULL;
    if (top < 1 || top > m->cfg.classes) top = m->cfg.classes < 3 ? m->cfg.classes : 3;
    x = (float *)malloc((size_t)m->cfg.channels * m->cfg.image_size * m->cfg.image_size * sizeof(float));
    logits = (float *)malloc((size_t)m->cfg.classes * sizeof(float));
    for (i = 0; i < n_img; i++) {
        unsigned char *px;
        int h, w, c, k, j;
        double mx, sum = 0;
        PF_TRY(pf_image_load(images[i], &px, &h, &w, &c));
        PF_TRY(pf_image_to_input(px, h, w, c, &m->cfg, x));
        pf_image_free(px);
        PF_TRY(pf_predict(m, x, 1, logits));
        /* softmax, then the top classes by repeated selection */
        for (mx = logits[0], k = 1; k < m->cfg.classes; k++) if (logits[k] > mx) mx = logits[k];
        for (k = 0; k < m->cfg.classes; k++) sum += exp(logits[k] - mx);
        printf("%s:", images[i]);
        for (j = 0; j < top; j++) {
            int best = -1;
            for (k = 0; k < m->cfg.classes; k++)
                if (logits[k] > -INFINITY && (best < 0 || logits[k] > logits[best])) best = k;
            if (names) printf("  %s %.1f%%", names[best], 100 * exp(logits[best] - mx) / sum);
            else printf("  class %d %.1f%%", best, 100 * exp(logits[best] - mx) / sum);
            logits[best] = -INFINITY;
        }
        printf("\n");
    }
    free(x); free(logits); free(images);
    pf_model_free(m);
    return 0;
}

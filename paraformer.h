/* paraformer.h - ParaFormer (shallow parallel transformers) on the CPU.
   Single-header library in the style of stb. MIT license at the end.

   ParaFormer (Wang, Wei, Li, arXiv 2510.15425) is a Vision Transformer whose
   layers are arranged as `branches` parallel stacks of `depth` layers. Every
   branch reads the same embedded input X0 and their outputs are aggregated:

       X0  = [cls ; patches(x) Wp^T + bp] + pos                 [T, D]
       B_b = L_{b,depth} o ... o L_{b,1} (X0)        b = 0..n-1
       agg = X0 + sum_b (B_b - X0)     ("delta")   |   sum_b B_b   ("sum")
       out = head( LN( pool(agg) ) )          pool = cls token | mean of tokens

   With one branch, prenorm and delta the model is a standard pre-LN ViT.

   USAGE
       Do this in *one* C or C++ file:
           #define PARAFORMER_IMPLEMENTATION
           #include "paraformer.h"
       Other files just #include "paraformer.h".

       pf_config cfg; pf_model *m; float loss;
       pf_config_preset(&cfg, "paraformer");        // 4 branches x 3 layers
       cfg.classes = 10;
       PF_TRY(pf_model_create(&cfg, &m));
       pf_model_init(m, 42, 0.0f);                  // seeded, PyTorch-like
       PF_TRY(pf_model_reserve(m, 64));             // activations for B <= 64
       PF_TRY(pf_model_alloc_train(m));             // gradients, Adam moments
       PF_TRY(pf_forward(m, x, labels, 64, 0.0f, &loss)); // x: [B,C,H,W] normalised
       PF_TRY(pf_backward(m));                      // m->grads
       pf_optim opt = pf_optim_default();
       PF_TRY(pf_optim_step(m, &opt, NULL));       // AdamW
       pf_model_save(m, "model.safetensors");       // PyTorch reads it

   OPTIONS (define before including)
       PF_STATIC          all functions static (private copy per file)
       PF_DOUBLE          compute in double (pf_real = double); the tests use
                          this for finite-difference checks
       PF_MALLOC(sz) / PF_REALLOC(p,sz) / PF_FREE(p)   allocator (all or none)
       PF_ASSERT(x)       assert macro (default: assert.h)
       PF_HAVE_ZLIB       read .gz datasets through zlib (link with -lz); without
                          it a .gz file is refused with a message saying so
       PF_HAVE_STB        read PNG/JPEG/BMP (pf_image_load, folder datasets)
                          through stb_image: the header includes
                          <stb/stb_image.h> for the declarations, and one file
                          of the program compiles stb's implementation
                          (#define STB_IMAGE_IMPLEMENTATION, then #include
                          <stb/stb_image.h>, after this header), with
                          STBI_MALLOC/STBI_REALLOC/STBI_FREE set to
                          pf_stbi_malloc/_realloc/_free and STBI_MAX_DIMENSIONS
                          to 16384, so that a hostile file cannot make
                          stb_image allocate without bound
       PF_DATASET_MAX_BYTES  most bytes one dataset file may (decompress to)
                          (default 1 GiB: stops gzip bombs)
       PF_IMAGE_MAX_PIXELS   most pixels of one image file (default 2^25,
                          e.g. 5792 x 5792; raise it for larger photos)
       OpenMP is used when the file is compiled with -fopenmp. Every parallel
       loop gives each output element to exactly one thread, so the results
       are bitwise identical for any number of threads.

   CONVENTIONS
       Functions that can fail return pf_status and set pf_last_error(), a
       readable message naming the file and the problem. The library never
       exits. Weights keep PyTorch's [out, in] layout. Tensor names and the
       checkpoint format are those of docs/design.md §4 (the state_dict of
       the PyTorch reference `Net`).

   FAST PATH
       For float the ops run on a packed, cache-blocked GEMM (pf_gemm, with
       AVX-512 / AVX2 micro-kernels picked at run time) and AVX-512 element
       loops; pf_use_reference(1) or PF_DOUBLE runs the plain loops that read
       like the math. Both give the same bits for any thread count.

   VERSION HISTORY
       0.2  (2026-11)  fast CPU path: GEMM kernels, per-head attention GEMMs,
                       fused GELU, vector LayerNorm/softmax, packed-weight
                       cache for pf_predict, per-op profiling.
       0.1  (2026-11)  first release: model, forward/backward, AdamW/Adam,
                       safetensors and .npy I/O.
*/

/* CONTENTS
   The declarations (the API) and the implementation follow the same order,
   bottom-up: each part uses only the parts above it. Search for a title.

   API                                       IMPLEMENTATION
   status and errors; random numbers         status and errors; threads, the
                                             clock and per-op profiling;
                                             random numbers
   small JSON lookups                        a small JSON reader
   configuration                             configuration
   GEMM, threads                             GEMM; vector math
   parameters (the spec table, the model)    the parameter spec table; ops
                                             (forward/backward pairs); the
                                             model: forward; backward
   optimizer                                 optimizer: AdamW / Adam
   files: safetensors and .npy               file helpers; safetensors; .npy
   datasets                                  datasets: an 8-bit image to the
                                             model's input; datasets: readers;
                                             datasets: augmentation;
                                             datasets: batches
   compute backends                          (declarations only: the CPU is the
                                             model's own functions)
   evaluation, compress and expand           evaluation with the branch sweep;
                                             compress and expand
   the trainer                               the trainer: options and presets;
                                             stages, passes, the log;
                                             checkpoints with training state
   multi-device plan                         multi-device plan
   GPU backend                               (paraformer_cuda.cu)
   MIT license                               at the end of the file
*/

#ifndef PARAFORMER_H
#define PARAFORMER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>  /* FILE, for pf_atomic; fprintf, for PF_TRY */
#include <stdlib.h> /* exit, for PF_TRY */

#ifdef PF_STATIC
#if defined(__GNUC__)
#define PFDEF static __attribute__((unused))
#else
#define PFDEF static
#endif
#else
#ifdef __cplusplus
#define PFDEF extern "C"
#else
#define PFDEF extern
#endif
#endif
/* The GPU backend's functions (pf_cuda_*) live in their own object
   (paraformer_cuda.cu): extern even under PF_STATIC. */
#ifdef __cplusplus
#define PFEXTDEF extern "C"
#else
#define PFEXTDEF extern
#endif

#define PF_VERSION "0.2"
#define PF_FORMAT_VERSION 1
#define PF_MAX_CHANNELS 16 /* mean/std arrays */
#define PF_MAX_DIMS 8      /* tensor rank in files */

#ifdef PF_DOUBLE
typedef double pf_real;
#else
typedef float pf_real;
#endif

/* ---------------------------------------------------------------------- */
/* status and errors */

typedef enum pf_status {
    PF_OK = 0,
    PF_ERR_ARG,    /* bad argument or flag */
    PF_ERR_CONFIG, /* invalid configuration */
    PF_ERR_NOMEM,  /* allocation failed */
    PF_ERR_IO,     /* could not open/read/write a file */
    PF_ERR_FORMAT, /* file content is malformed */
    PF_ERR_SHAPE,  /* well-formed but wrong shape/dtype for this use */
    PF_ERR_INTERRUPTED, /* stopped on request (pf_trainer.stop) */
    PF_ERR_NONFINITE   /* a NaN or an infinity where numbers must be finite */
} pf_status;

/* The message of the last failure in this thread ("" if none). Don't free. */
PFDEF const char *pf_last_error(void);
PFDEF const char *pf_status_name(pf_status s);
/* Sets the last error (printf-style) and returns `s`. For programs too. */
PFDEF pf_status pf_fail(pf_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---------------------------------------------------------------------- */
/* random numbers: the splitmix64 stream the library draws its own numbers
   from (docs/design.md §3.8), public so that a program's seeded inputs are
   as reproducible as the library's and need no second generator. */

typedef struct pf_rng {
    uint64_t state; /* the whole state: a copy replays the stream */
} pf_rng;
/* A stream whose state starts at `seed`. */
PFDEF pf_rng pf_rng_seed(uint64_t seed);
/* The next 64 random bits. These three return 0 for a NULL generator, and
   the last error names the function. */
PFDEF uint64_t pf_rng_next(pf_rng *r);
/* Uniform in [0, 1), 53 bits of one draw. */
PFDEF double pf_rng_uniform(pf_rng *r);
/* Standard normal (Box-Muller: two draws per value), as the cls/pos
   initialisation draws it. */
PFDEF double pf_rng_normal(pf_rng *r);

/* ---------------------------------------------------------------------- */
/* small JSON lookups in the top level of one object (metadata, logs).
   Each returns 1 when `key` is there with the right type, else 0 (also
   for a NULL argument, which sets the last error). */
PFDEF int pf_json_number(const char *json, size_t len, const char *key, double *v);
/* A number array (a scalar counts as one element); *n gets the count. */
PFDEF int pf_json_numbers(const char *json, size_t len, const char *key, double *v, int cap, int *n);
/* A string, NUL-terminated and truncated to cap-1 bytes. */
PFDEF int pf_json_string(const char *json, size_t len, const char *key, char *out, size_t cap);
/* PF_OK when json[0..len) is one well-formed JSON value (an object when
   `object` is set) with nothing but white space after it. Else
   PF_ERR_FORMAT, and the last error says why in a few words ("text after
   the object"): a line of a log cut short by a crash is not an event. */
PFDEF pf_status pf_json_check(const char *json, size_t len, int object);

/* ---------------------------------------------------------------------- */
/* configuration: architecture only (what a checkpoint stores). Zero means
   default: image 32, channels 3, patch 4, dim 192, heads 3, mlp_dim 4*dim,
   branches 4, depth 3, classes 10, prenorm, delta, qkv bias on, cls pool,
   dropout 0, mean 0, std 1. */

enum { PF_PRENORM = 0, PF_NORMED = 1 };     /* x+F(LN x)  |  LN x+F(LN x) */
enum { PF_AGG_DELTA = 0, PF_AGG_SUM = 1 };  /* X0+sum(B-X0) | sum(B)      */
enum { PF_POOL_CLS = 0, PF_POOL_MEAN = 1 }; /* token 0 | mean of all T    */

typedef struct pf_config {
    int image_size, channels, patch_size;
    int dim, heads, mlp_dim;
    int branches, depth, classes;
    int residual;    /* PF_PRENORM | PF_NORMED */
    int aggregate;   /* PF_AGG_DELTA | PF_AGG_SUM */
    int pool;        /* PF_POOL_CLS | PF_POOL_MEAN */
    int no_qkv_bias; /* 0: qkv has a bias (default), 1: no bias */
    float dropout;     /* after attn proj, after GELU, after fc2 */
    float emb_dropout; /* after the embedding (cls + pos) */
    float mean[PF_MAX_CHANNELS], std[PF_MAX_CHANNELS]; /* [0,1]-scale input
                          normalisation; std 0 means 1 */
} pf_config;

/* Fills `c` with a named preset: "paraformer" (default, 4x3 at 192),
   "vit" (one branch of 12 layers), "paper" (the authors' released config:
   224/16, 8 branches x 2 layers, normed, sum, no qkv bias, dropout 0.1,
   mean 0.5 std 0.2). Returns PF_ERR_ARG for an unknown name. */
PFDEF pf_status pf_config_preset(pf_config *c, const char *name);
/* The std of the cls/pos initialisation a preset uses (0.02; 1 for paper). */
PFDEF float pf_preset_embed_std(const char *name);
/* Replaces zero fields by their defaults (in place). */
PFDEF void pf_config_resolve(pf_config *c);
/* Resolves and checks; on failure the last error says what is wrong. */
PFDEF pf_status pf_config_validate(pf_config *c);
/* Tokens T = (image/patch)^2 + 1 of a resolved config (0 for NULL or an
   unresolved one). */
PFDEF int pf_config_tokens(const pf_config *c);
/* The config as the JSON object string of docs/design.md §4. Returns the length
   written (excluding NUL) or -1 if cap is too small (or c or buf is NULL). */
PFDEF int pf_config_to_json(const pf_config *c, char *buf, size_t cap);
/* Parses such a JSON object (lenient about optional keys and bool forms). */
PFDEF pf_status pf_config_from_json(const char *json, size_t len, pf_config *c);
PFDEF const char *pf_residual_name(int r);
PFDEF const char *pf_aggregate_name(int a);
PFDEF const char *pf_pool_name(int p);

/* ---------------------------------------------------------------------- */
/* GEMM (float): C[M,N] = (accumulate ? C : 0) + op(A)[M,K] op(B)[K,N], all
   row-major with leading dimensions lda/ldb/ldc; op(X) = X^T when ta/tb.
   Packed, cache-blocked, AVX-512/AVX2 micro-kernels chosen at run time, a
   portable kernel otherwise. Each element of C belongs to one thread and its
   k-sum runs in a fixed order, so results are identical for any number of
   threads. No allocation: packing buffers are thread-local statics.
   PF_ERR_ARG for a negative size, a leading dimension below its row length
   or a NULL matrix that the sizes need (M or N of 0 does nothing). */
PFDEF pf_status pf_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc, int accumulate);
/* The micro-kernel pf_gemm uses here: "avx512", "avx2" or "generic"; in
   bf16 mode (pf_set_bf16) "avx512_bf16". */
PFDEF const char *pf_gemm_kernel(void);
/* bf16 GEMMs (mixed precision, as the GPU's bf16): while on, every GEMM of
   the library (pf_gemm, and through it the model's linear layers and
   attention, forward and backward) rounds its operands A and B to bf16
   (round to nearest even) and accumulates their products in fp32; C, the
   master weights, the optimizer state and everything outside the GEMMs stay
   fp32. Needs AVX512_BF16 (vdpbf16ps): elsewhere pf_set_bf16(1) returns
   PF_ERR_ARG with a message naming the missing instruction set, and the
   mode stays off. Results are the same bits for any thread count, and the
   same as pf_gemm_bf16_ref, the scalar reference of the same arithmetic.
   A process-wide setting, like the thread count. */
PFDEF pf_status pf_set_bf16(int on);
PFDEF int pf_get_bf16(void);
/* NULL when this machine runs the bf16 GEMM, else the reason ("needs
   AVX512_BF16 (vdpbf16ps), which this CPU lacks", ...). */
PFDEF const char *pf_bf16_missing(void);
/* x rounded to bf16 as the hardware does (vcvtneps2bf16: nearest even,
   NaN kept quiet, subnormals to signed zero), back in a float. */
PFDEF float pf_bf16_round(float x);
/* The scalar reference of the bf16 GEMM, on any machine: C (+)= op(A) op(B)
   with each product of two bf16-rounded operands added in the kernel's
   order: k in pairs (2p, 2p+1) from p = 0 up, in each pair 2p+1 first, each
   addition one fp32 rounding with subnormals flushed to zero (the
   semantics of vdpbf16ps). Plain loops; for tests. */
PFDEF pf_status pf_gemm_bf16_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                                 float *C, int ldc, int accumulate);
/* 1: the model runs the plain reference loops instead of the fast kernels
   (the tests compare the two). Always the reference under PF_DOUBLE. */
PFDEF void pf_use_reference(int on);

/* Threads used by parallel loops (no effect without OpenMP). */
PFDEF void pf_set_threads(int n);
PFDEF int pf_get_threads(void);

/* ---------------------------------------------------------------------- */
/* parameters: one spec table drives layout, I/O, init, decay and tests */

enum { PF_PART_STEM = 0, PF_PART_BRANCH = 1, PF_PART_HEAD = 2 };
enum { /* what a tensor is (init and reporting) */
    PF_KIND_WEIGHT = 0, PF_KIND_BIAS, PF_KIND_LN_WEIGHT, PF_KIND_LN_BIAS, PF_KIND_EMBED
};

typedef struct pf_tensor_spec {
    char name[64];      /* docs/design.md §4 name, e.g. "branches.1.0.qkv.weight" */
    int ndim;
    int shape[4];
    size_t offset;      /* into params/grads/m/v, in elements */
    size_t numel;
    int decay;          /* 1: weight decay applies (Linear weights) */
    int kind;           /* PF_KIND_* */
    int part;           /* PF_PART_* */
    int branch, layer;  /* -1 outside branches */
    int fan_in;         /* Linear in_features (init bound 1/sqrt(fan_in)) */
} pf_tensor_spec;

/* Pointers into the parameter buffer of one layer (also used for grads). */
typedef struct pf_layer_ptrs {
    pf_real *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    pf_real *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} pf_layer_ptrs;

/* Saved activations of one layer of one branch, for a batch of B. */
typedef struct pf_layer_acts {
    pf_real *ln1_mean, *ln1_rstd; /* [B,T] */
    pf_real *u1;                  /* [B,T,D] LN1 output */
    pf_real *qkv;                 /* [B,T,3D] */
    pf_real *att;                 /* [B,h,T,T] softmax probabilities */
    pf_real *atty;                /* [B,T,D] attention output, heads concat */
    pf_real *x1;                  /* [B,T,D] after the attention residual */
    pf_real *ln2_mean, *ln2_rstd; /* [B,T] */
    pf_real *u2;                  /* [B,T,D] LN2 output */
    pf_real *h;                   /* [B,T,M] fc1 output (pre-GELU) */
    pf_real *g;                   /* [B,T,M] GELU output (after dropout) */
    pf_real *x2;                  /* [B,T,D] layer output */
} pf_layer_acts;

/* Per-op profile (optional): forward, backward and optimizer add their
   wall time and floating-point operations here when m->profile is set. */
enum {
    PF_OP_EMBED = 0, PF_OP_LAYERNORM, PF_OP_QKV, PF_OP_ATTENTION, PF_OP_PROJ, PF_OP_FC1, PF_OP_GELU,
    PF_OP_FC2, PF_OP_RESIDUAL, PF_OP_HEAD, PF_OP_OPTIM, PF_OP_COUNT
};
typedef struct pf_profile {
    double fwd_s[PF_OP_COUNT], bwd_s[PF_OP_COUNT];         /* seconds */
    double fwd_flops[PF_OP_COUNT], bwd_flops[PF_OP_COUNT]; /* flops (2 per FMA) */
} pf_profile;
PFDEF const char *pf_op_name(int op);
/* Wall-clock seconds (monotonic where OpenMP is there). */
PFDEF double pf_time(void);

typedef struct pf_model {
    pf_config cfg;          /* resolved */
    int T, n_patches, patch_dim; /* tokens, (H/P)^2, C*P*P */
    int n_specs;
    pf_tensor_spec *specs;  /* stem, branch 0 .. n-1 (layer-major), head */
    size_t n_params;
    size_t stem_size, branch_size, head_size; /* elements; branch b starts at
                               stem_size + b*branch_size, head after them */
    int branch_spec_count;  /* specs per branch */
    pf_real *params;
    pf_real *grads;         /* NULL until pf_model_alloc_train */
    pf_real *adam_m, *adam_v;
    int64_t *steps;         /* optimizer step per spec (bias correction) */
    /* what runs and what trains */
    int active;             /* branches used by forward (prefix), default all */
    unsigned char *train_branch; /* [branches] 1: branch b gets optimizer steps */
    int train_stem, train_head;  /* default 1 */
    float *lr_scale;        /* [branches] learning-rate multiplier (default 1) */
    float shared_lr_scale;  /* the same for the stem and the head (default 1) */
    int head_rows_from;     /* > 0: of the head only the rows (classes) from
                               this one on train, and the final LN is frozen
                               (fine-tuning the classes an expand added) */
    int training;           /* 1: dropout on */
    float drop_path;        /* stochastic depth while training (0: off): layer
                               l of a branch of depth L drops each residual
                               sub-layer of an image with probability
                               drop_path * l / (L - 1) (drop_path when L = 1),
                               keeping it scaled by 1 / (1 - that); in [0, 1)
                               (a training forward refuses others); CPU only */
    uint64_t dropout_seed;  /* dropout masks = hash(seed, counter, site, i) */
    uint64_t dropout_counter; /* advanced by every training forward */
    /* activations (pf_model_reserve) */
    int max_batch, B;       /* capacity, batch of the last forward */
    const int *labels;      /* labels of the last forward (borrowed) */
    const pf_real *targets; /* soft targets [B,K] of the last forward
                               (pf_forward_soft; borrowed), else NULL */
    float label_smoothing;  /* of the last forward */
    double loss;            /* mean loss of the last forward with labels */
    void *acts_mem, *scratch_mem;
    pf_real *patches;       /* [B,np,C*P*P] */
    pf_real *x0;            /* [B,T,D] embedded input */
    pf_real *agg;           /* [B,T,D] aggregated branches */
    pf_real *pooled;        /* [B,D] */
    pf_real *lnf_mean, *lnf_rstd; /* [B] */
    pf_real *uf;            /* [B,D] final LN output */
    pf_real *logits;        /* [B,K] */
    pf_real *probs;         /* [B,K] softmax */
    pf_layer_acts *acts;    /* [branches*depth], branch-major */
    pf_profile *profile;    /* NULL, or where ops add time and flops (not owned) */
    /* inference cache: Linear weights pre-packed for the GEMM (pf_predict) */
    uint64_t params_gen;    /* bumped by pf_optim_step/pf_model_init/pf_model_changed */
    uint64_t wpack_gen;     /* params_gen the cache was built from */
    float *wpack;           /* NULL until pf_predict builds it */
    size_t *wpack_off;      /* per spec: offset into wpack, or (size_t)-1 */
    int wpack_on;           /* set while pf_predict runs with a valid cache */
} pf_model;

/* Creates a model for `cfg` (validated; parameters zero). *out is NULL on
   failure. Free with pf_model_free. */
PFDEF pf_status pf_model_create(const pf_config *cfg, pf_model **out);
PFDEF void pf_model_free(pf_model *m);
/* Seeded initialisation, PyTorch's defaults in distribution: Linear weight and
   bias U(+-1/sqrt(fan_in)), LayerNorm 1/0, cls and pos N(0, embed_std^2)
   (embed_std <= 0 means 0.02). Each tensor draws from its own stream seeded by
   (seed, name), so adding branches never changes the existing ones.
   PF_ERR_ARG for a NULL model or an embed_std that is not finite or > 1000. */
PFDEF pf_status pf_model_init(pf_model *m, uint64_t seed, float embed_std);
/* Allocates gradients, Adam moments and step counters (zeroed). */
PFDEF pf_status pf_model_alloc_train(pf_model *m);
/* Allocates activations for batches up to B (no allocation in a step). */
PFDEF pf_status pf_model_reserve(pf_model *m, int B);
/* Uses the first k branches (1..branches) in forward/backward. */
PFDEF pf_status pf_model_set_active(pf_model *m, int k);
/* The spec named `name`, or NULL. */
PFDEF const pf_tensor_spec *pf_model_find(const pf_model *m, const char *name);
/* Parameter (or gradient when buf = m->grads) pointers of layer l of branch b
   (all NULL, and the last error set, for a NULL model or buffer or a branch or
   layer out of range). */
PFDEF pf_layer_ptrs pf_model_layer(const pf_model *m, pf_real *buf, int b, int l);
/* Number of parameters of a part (PF_PART_*; for branches: one branch). */
PFDEF size_t pf_model_part_size(const pf_model *m, int part);

/* Forward pass on x [B,C,H,W] (normalised). With labels (may be NULL) it also
   computes the mean softmax cross-entropy with label smoothing into *loss.
   Logits are in m->logits [B,K]. Requires B <= m->max_batch. */
PFDEF pf_status pf_forward(pf_model *m, const pf_real *x, const int *labels, int B,
                           float label_smoothing, float *loss);
/* The same with soft targets [B,K] (MixUp, CutMix, distillation): the loss
   is mean_b -sum_j targets[b,j]·log softmax(z_b)_j. Each row is usually a
   distribution (sums to 1); entries must be finite and >= 0. The targets
   are borrowed until pf_backward. */
PFDEF pf_status pf_forward_soft(pf_model *m, const pf_real *x, const pf_real *targets, int B, float *loss);
/* Backward pass of the last forward (which must have had labels): writes
   (not accumulates) the gradients of the head and of the trainable parts
   (pf_optim_step): active branches with train_branch set, and the stem when
   train_stem is set. A branch that does not train is skipped when the stem
   does not train either (nothing below it needs its input gradient); the
   gradients of skipped parts keep whatever they held. */
PFDEF pf_status pf_backward(pf_model *m);
/* Call after writing m->params directly (pf_predict keeps a packed copy of
   the weights and rebuilds it only when the parameters changed). */
PFDEF void pf_model_changed(pf_model *m);
/* Convenience: forward on float input of any batch size in chunks of
   max_batch, logits written to out [N,K]. Inference mode (no dropout); the
   Linear weights are packed once and reused across calls. */
PFDEF pf_status pf_predict(pf_model *m, const float *x, int N, float *out);

/* Dropout masks, the same on the CPU and the GPU (docs/design.md §3.8). The
   mask of element i at a site is a pure function of (seed, counter, site, i):
   nothing is stored, any thread count and either device drop the same
   elements. Inline here so that paraformer_cuda.cu compiles the same code
   for its kernels. */
#if defined(__CUDACC__)
#define PF_HOST_DEVICE __host__ __device__
#else
#define PF_HOST_DEVICE
#endif
/* splitmix64's finaliser: every random stream and hash of the library */
PF_HOST_DEVICE static inline uint64_t pf_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* The site of a dropout: 0 after the embedding; for layer l of branch b,
   k = 0 after the attention projection, 1 after GELU, 2 after fc2. */
PF_HOST_DEVICE static inline int pf_dropout_site(int depth, int b, int l, int k) {
    return 1 + 3 * (b * depth + l) + k;
}
/* The key of a site in the forward with m->dropout_seed and
   m->dropout_counter (the counter advances once per training forward). */
PF_HOST_DEVICE static inline uint64_t pf_dropout_key(uint64_t seed, uint64_t counter, int site) {
    return pf_mix64(seed ^ pf_mix64(counter * 0x100000001b3ULL + (uint64_t)site));
}
/* 1 when element i of the site with this key is kept at drop rate p (the
   kept ones are scaled by 1/(1-p)). */
PF_HOST_DEVICE static inline int pf_dropout_kept(uint64_t key, size_t i, float p) {
    uint64_t r = pf_mix64(key ^ pf_mix64((uint64_t)i + 0x632be59bd9b4e019ULL));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0) >= (double)p;
}

/* ---------------------------------------------------------------------- */
/* optimizer */

typedef struct pf_optim {
    int adam;           /* 0: AdamW (decoupled decay), 1: Adam (L2 in grad) */
    float lr, beta1, beta2, eps, weight_decay;
    float clip;         /* > 0: clip the global grad norm to this */
} pf_optim;

/* lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 (torch's AdamW
   defaults), no clipping. */
PFDEF pf_optim pf_optim_default(void);
/* PF_OK for settings a step can use: adam 0 or 1, lr in [0, 10) (a
   scheduled lr may reach 0), betas in [0, 1), eps > 0, weight decay in
   [0, 10), clip >= 0, all finite. Else PF_ERR_ARG naming the field.
   pf_optim_step, the GPU step and pf_train_opts_validate all check this. */
PFDEF pf_status pf_optim_validate(const pf_optim *o);
/* Global L2 norm of the gradients that exist (trainable, active tensors). */
PFDEF double pf_grad_norm(const pf_model *m);
/* torch.nn.utils.clip_grad_norm_: scales grads by max/(norm+1e-6) when that
   is < 1. Returns the norm before clipping. A max_norm that is not > 0 (or
   NaN) clips nothing; a NULL model or one without gradients has norm 0. */
PFDEF double pf_clip_grad_norm(pf_model *m, double max_norm);
/* One optimizer step (clips first if o->clip > 0) on the tensors that exist:
   stem/head if trainable, branches b < active with train_branch[b]. Others
   take no step at all (no decay, no moment update, no step count), like
   parameters without a gradient in PyTorch. *norm (when not NULL) gets the
   grad norm before clipping when clipping was done, else 0. A model without
   training state (pf_model_alloc_train) is an error, not a silent no-op. */
PFDEF pf_status pf_optim_step(pf_model *m, const pf_optim *o, double *norm);

/* The rules of one optimizer step that the CPU and the GPU backend both
   apply (paraformer_cuda.cu calls these rather than restating them). */
/* 1 when tensor s takes gradients now: the stem and head when they train,
   branches below m->active that train (the head's bias-free tensors stop
   when only rows from head_rows_from train). */
PFDEF int pf_param_trainable(const pf_model *m, const pf_tensor_spec *s);
/* The first element of a trainable tensor that trains: 0, or for the head
   the first of the rows from head_rows_from (new classes only). */
PFDEF size_t pf_param_train_from(const pf_model *m, const pf_tensor_spec *s);
/* What AdamW does to tensor t (m->specs[t]) this step. */
typedef struct pf_adam_step {
    size_t from;        /* elements [from, numel) update */
    float lr;           /* o->lr times the tensor's multiplier */
    double step_size;   /* lr / (1 - beta1^step) */
    double bc2_sqrt;    /* sqrt(1 - beta2^step) */
} pf_adam_step;
/* 0 when tensor t takes no step at all (not trainable, or a zero learning
   rate: PyTorch's parameter without a gradient); else 1, with *a filled in
   and the tensor's step counter m->steps[t] advanced. 0 and the last error
   for a NULL argument, a model without training state or t out of range. */
PFDEF int pf_adam_step_of(pf_model *m, const pf_optim *o, int t, pf_adam_step *a);

/* ---------------------------------------------------------------------- */
/* files: safetensors (checkpoints) and .npy (arrays) */

/* An atomic file write (docs/design.md §4.7), so that a crash or a failed
   write never leaves a half-written file under PATH: pf_atomic_open
   creates PATH.tmp, the caller writes to a->f, and pf_atomic_commit
   flushes, fsyncs, closes and renames it onto PATH. When a write to a->f
   failed, or the commit itself fails, the temporary is removed and PATH is
   left as it was; pf_atomic_abort does the same after the caller's own
   errors. Checkpoints and .npy files are written this way. */
typedef struct pf_atomic {
    FILE *f;          /* the temporary, open for writing ("wb") */
    char path[4096];  /* the destination */
    char tmp[4100];   /* path + ".tmp" */
} pf_atomic;
PFDEF pf_status pf_atomic_open(pf_atomic *a, const char *path);
PFDEF pf_status pf_atomic_commit(pf_atomic *a);
PFDEF void pf_atomic_abort(pf_atomic *a);
/* 1 when path ends with ext (".npy"), ignoring ASCII case; else 0. */
PFDEF int pf_path_has_ext(const char *path, const char *ext);

typedef enum pf_dtype {
    PF_F32 = 0, PF_F64, PF_F16, PF_BF16, PF_U8, PF_I8, PF_I32, PF_I64, PF_DTYPE_COUNT
} pf_dtype;
PFDEF size_t pf_dtype_size(pf_dtype t);
PFDEF const char *pf_dtype_name(pf_dtype t); /* safetensors name: "F32" */

/* One tensor entry of a safetensors file. */
typedef struct pf_st_entry {
    char *name;
    pf_dtype dtype;
    int ndim;
    int64_t shape[PF_MAX_DIMS];
    uint64_t begin, end; /* byte offsets in the data section */
} pf_st_entry;

/* An open, validated safetensors file. */
typedef struct pf_st_file {
    char path[512];
    void *fp;               /* FILE* */
    uint64_t header_len, data_start, data_len;
    int n, n_meta;
    pf_st_entry *entries;
    int *by_name;           /* entry indices sorted by name (pf_st_find) */
    char **meta_keys, **meta_vals;
} pf_st_file;

/* Opens and validates (header size, JSON, dtypes, shapes, offsets against
   the file size) before allocating anything proportional to the data. */
PFDEF pf_status pf_st_open(const char *path, pf_st_file **out);
PFDEF void pf_st_close(pf_st_file *f);
PFDEF const pf_st_entry *pf_st_find(const pf_st_file *f, const char *name);
PFDEF const char *pf_st_meta(const pf_st_file *f, const char *key); /* or NULL */
PFDEF size_t pf_st_numel(const pf_st_entry *e);
/* Reads an entry converted to float / double (from F32, F64, F16, BF16, and
   integer types); dst holds pf_st_numel(e) values. */
PFDEF pf_status pf_st_read_f32(pf_st_file *f, const pf_st_entry *e, float *dst);
PFDEF pf_status pf_st_read_f64(pf_st_file *f, const pf_st_entry *e, double *dst);
/* Reads raw bytes (end - begin) of an entry. */
PFDEF pf_status pf_st_read_raw(pf_st_file *f, const pf_st_entry *e, void *dst);

/* A tensor to write. */
typedef struct pf_st_tensor {
    const char *name;
    pf_dtype dtype;
    int ndim;
    int64_t shape[PF_MAX_DIMS];
    const void *data;
} pf_st_tensor;
/* Writes a safetensors file atomically (temporary file, fsync, rename).
   meta: n_meta key/value string pairs for __metadata__. */
PFDEF pf_status pf_st_write(const char *path, const pf_st_tensor *t, int n,
                            const char *const *meta_keys, const char *const *meta_vals, int n_meta);

/* Saves the model parameters as F32 with metadata format/format_version/
   config (atomically). */
PFDEF pf_status pf_model_save(const pf_model *m, const char *path);
/* Loads a model: config from __metadata__, every tensor by name with the
   right shape (F32/F16/BF16/F64 accepted), tensors named "train.*" ignored,
   any other unknown tensor refused. */
PFDEF pf_status pf_model_load(const char *path, pf_model **out);

/* A dense array (from/to .npy). */
typedef struct pf_array {
    pf_dtype dtype;
    int ndim;
    int64_t shape[PF_MAX_DIMS];
    void *data;     /* owned; free with pf_array_free */
    size_t nbytes;
} pf_array;
/* Reads .npy v1/v2/v3: <f4 <f8 |u1 |i1 <i4 <i8 (also <f2), C order only.
   Validates the header and that the file holds exactly the data. */
PFDEF pf_status pf_npy_load(const char *path, pf_array *out);
/* Writes .npy v1.0 atomically: the numel(shape) x dtype-size bytes at
   a->data, which a->nbytes must cover (PF_ERR_ARG otherwise). */
PFDEF pf_status pf_npy_save(const char *path, const pf_array *a);
PFDEF void pf_array_free(pf_array *a);
PFDEF size_t pf_array_numel(const pf_array *a);

/* Converts an 8-bit image [h,w,c] (c = 1..4) to one model input [C,S,S]:
   bilinear resize (half-pixel centres, like torch's align_corners=False) to
   the model's size, channels adapted (gray -> replicated, RGB(A) -> gray by
   ITU-R 601 luma, alpha dropped), scaled to [0,1], then (v - mean)/std. */
PFDEF pf_status pf_image_to_input(const unsigned char *img, int h, int w, int c,
                                  const pf_config *cfg, float *out);

/* ---------------------------------------------------------------------- */
/* datasets: 8-bit images [n, h, w, c] with integer labels, read in their
   original formats, and the batches built from them. */

enum { PF_SPLIT_TRAIN = 0, PF_SPLIT_TEST = 1 };

typedef struct pf_dataset {
    int n, h, w, c;             /* n images of h x w pixels, c channels */
    unsigned char *images;      /* [n,h,w,c] (HWC), owned */
    int *labels;                /* [n], each in 0..classes-1, owned */
    int classes;                /* label range of the source (10, 100, ...) */
    char **class_names;         /* [classes] or NULL, owned */
    char name[512];             /* the spec it came from, for messages/logs */
} pf_dataset;

/* Loads a dataset from a spec string:
       fmnist[:DIR]    Fashion-MNIST IDX files (raw or .gz) in DIR
       cifar10[:DIR]   data_batch_{1..5}.bin / test_batch.bin (raw or .gz)
       cifar100[:DIR]  train.bin / test.bin (raw or .gz), fine labels
       folder:DIR      DIR/<class>/<image>.png/.jpg/.jpeg/.bmp, classes sorted
       npy:X.npy,Y.npy uint8 [N,H,W,C] or [N,H,W] images, integer labels [N]
   then optionally @train or @test (default: default_split; folder and npy
   have one split and ignore it) and options, each after a '#':
       #classes=LIST   keep only these labels (e.g. 0-4,7); labels keep
                       their values, so a model can grow into the others
       #limit=N        the first N images (after the class selection)
   A bare fmnist/cifar10/cifar100 reads $PARAFORMER_DATA/fashion-mnist,
   .../cifar-10-batches-bin or .../cifar-100-binary. .gz files need the
   library built with PF_HAVE_ZLIB (zlib), folders PF_HAVE_STB (stb_image);
   without them the error says so. Every file is validated (magic, sizes,
   counts, label range) before anything proportional to it is allocated.
   Details: where both FILE and FILE.gz exist the uncompressed one is read;
   a .gz is streamed, its buffer grows only as data arrives, and a file may
   hold (decompress to) at most PF_DATASET_MAX_BYTES (1 GiB). IDX files must
   match exactly (no trailing bytes); CIFAR batches may hold any positive
   whole number of records, all five training batches must be there, and
   class names come from batches.meta.txt / fine_label_names.txt when those
   have a name per class, else the standard ones. A folder's images must all
   have the size of the first one (else an error names the odd file) and
   are converted to its channel count; hidden entries are skipped. npy
   labels must be in 0..99999 and classes = max label + 1. The split is
   found by pf_dataset_spec_split. */
PFDEF pf_status pf_dataset_load(const char *spec, int default_split, pf_dataset *out);
/* The split of a spec, by the one rule pf_dataset_load reads it with: the
   '@' of a split is the last one before the first '#', unless a '/' or ','
   follows it (then it belongs to a path). *split gets PF_SPLIT_TRAIN or
   PF_SPLIT_TEST for "@train" / "@test", or default_split when the spec
   names none. spec[0..*at) is the spec without its split and options, and
   spec + *rest its options ("#..." or ""), so that the same source's test
   split is spec[0..at) "@test" spec+rest. at and rest may be NULL.
   PF_ERR_ARG for another word after the '@'. */
PFDEF pf_status pf_dataset_spec_split(const char *spec, int default_split, int *split, size_t *at, size_t *rest);
PFDEF void pf_dataset_free(pf_dataset *d);
/* The images idx[0..n) of d as a new dataset (copies; names kept). */
PFDEF pf_status pf_dataset_subset(const pf_dataset *d, const int *idx, int n, pf_dataset *out);
/* Seeded split: round(frac * n) images chosen by (seed) go to `val`, the rest
   to `train`, each in their original order. Same seed, same split. */
PFDEF pf_status pf_dataset_split(const pf_dataset *d, double frac, uint64_t seed, pf_dataset *train,
                                 pf_dataset *val);
/* Per-channel mean and (biased) std of the pixels on the [0,1] scale
   (d->c values each; 0 for an empty dataset). */
PFDEF pf_status pf_dataset_stats(const pf_dataset *d, float *mean, float *std);
/* Fits a config to a dataset, so that a model needs no flags the data
   already answers: the parts of `what` (PF_FIT_*) are taken from d. The
   image size only from square images (others keep c's); the
   normalisation is d's per-channel mean and std (pf_dataset_stats). The
   other fields are left as they are; validate the result as usual. */
enum { PF_FIT_IMAGE_SIZE = 1, PF_FIT_CHANNELS = 2, PF_FIT_CLASSES = 4, PF_FIT_NORM = 8, PF_FIT_ALL = 15 };
PFDEF pf_status pf_config_fit(pf_config *c, const pf_dataset *d, int what);

/* Training augmentation (all off when zero). The limits hold wherever an
   augmentation is used: pf_dataset_batch, pf_augment_image and the trainer. */
#define PF_AUG_MAX_PAD 64   /* crop_pad */
#define PF_AUG_MAX_OPS 16   /* randaug_n */
#define PF_AUG_MAX_MAG 30   /* randaug_m (torchvision's 31 bins) */
typedef struct pf_augment {
    int crop_pad;   /* > 0: random crop of the original size from the image
                       zero-padded by this many pixels on each side */
    int flip;       /* 1: horizontal flip with probability 1/2 */
    int randaug_n;  /* > 0: RandAugment (torchvision's op set), n ops ... */
    int randaug_m;  /* ... at magnitude m of 0..30 */
    float erase_p;  /* > 0: random erasing (timm's RandomErasing, mode
                       'pixel') with this probability per image, in [0, 1];
                       on the model input, so pf_dataset_batch only */
} pf_augment;

/* Builds model input x [B, C, S, S] (cfg's channels, image_size, mean/std)
   from images idx[0..B) of d: augmented at the source resolution when aug is
   not NULL, then channels adapted and resized as pf_image_to_input does,
   then (aug->erase_p > 0) randomly erased: a rectangle of the normalised
   input, every channel, replaced by standard normal values.
   The randomness of image i comes from (seed, counter + i) alone, so a batch
   is the same for any thread count and can be rebuilt after a resume. */
PFDEF pf_status pf_dataset_batch(const pf_dataset *d, const int *idx, int B, const pf_config *cfg,
                                 const pf_augment *aug, uint64_t seed, uint64_t counter, pf_real *x);
/* The augmentation pf_dataset_batch applies to one image [h,w,c] (c 1..4),
   with the randomness of (seed, counter): dst (h*w*c bytes, not src) is
   image i of a batch built with (seed, counter - i), before resizing and
   random erasing (erase_p is checked but not applied: it works on the
   model input, in pf_dataset_batch). */
PFDEF pf_status pf_augment_image(const unsigned char *src, int h, int w, int c, const pf_augment *aug, uint64_t seed,
                                 uint64_t counter, unsigned char *dst);

/* Reads an image file (PNG, JPEG, BMP; needs PF_HAVE_STB) into 8-bit pixels
   [h, w, c] allocated with PF_MALLOC (free with pf_image_free). Refuses
   images larger than 16384 on a side or PF_IMAGE_MAX_PIXELS in all, and
   JPEGs that would trip known stb_image bugs. */
PFDEF pf_status pf_image_load(const char *path, unsigned char **pixels, int *h, int *w, int *c);
PFDEF void pf_image_free(unsigned char *pixels);
/* stb_image's allocator (define STBI_MALLOC(sz) as pf_stbi_malloc(sz), and
   the other two alike, where stb_image's implementation is compiled):
   PF_MALLOC & co., but refusing any one allocation above the bound that
   pf_image_load sets from the image's declared size (256 MiB outside it),
   so that a PNG whose chunk lengths lie fails cleanly instead of asking
   for gigabytes. */
PFDEF void *pf_stbi_malloc(size_t n);
PFDEF void *pf_stbi_realloc(void *p, size_t n);
PFDEF void pf_stbi_free(void *p);

/* ---------------------------------------------------------------------- */
/* compute backends: what the trainer and the evaluator run on (the CPU
   model itself, or the GPU of paraformer_cuda.cu) */

/* A compute backend for the trainer and the evaluator (a GPU: docs/design.md §5).
   Function pointers over a context, so that the header never depends on
   the backend: a program that links paraformer_cuda.cu fills one with thin
   wrappers around pf_cuda_* (tools/paraformer.c under PF_WITH_CUDA); every
   other program leaves pf_trainer.backend NULL and runs on the CPU.

   Each call mirrors the CPU function named beside it and returns PF_OK or
   sets the last error. The backend holds its own copy of the parameters,
   gradients, Adam moments and activations; the model stays the place of
   the flags of what runs and trains (active, training, train_branch,
   lr_scale, shared_lr_scale, train_stem, train_head, head_rows_from), the
   step counters, the dropout counter and m->loss, which the backend reads
   and advances as the CPU functions do. Grad clipping, learning-rate
   scales and frozen branches are the step's business (the flags and the
   pf_optim passed), as in pf_optim_step.

   The two copies are kept in step by whoever touches the host's: download
   before the host reads parameters or moments (a checkpoint, a host-side
   evaluation, compress), upload after it writes them (pf_model_init,
   pf_model_changed, a resume, zeroing a new branch). The trainer does both
   for its own reads and writes: it uploads at the start of pf_trainer_run
   and after pf_trainer_resume, downloads in pf_trainer_save and when
   pf_trainer_run returns, and around the zeroing of a staged branch. */
typedef struct pf_backend {
    void *ctx;           /* the first argument of every call */
    int max_batch;       /* most images one forward takes (0: no limit) */
    /* pf_forward: x [B,C,H,W]; sets m->loss (and *loss when not NULL) */
    pf_status (*forward)(void *ctx, const pf_real *x, const int *labels, int B, float label_smoothing,
                         float *loss);
    pf_status (*backward)(void *ctx);                               /* pf_backward */
    pf_status (*step)(void *ctx, const pf_optim *o, double *norm);  /* pf_optim_step; norm may be NULL */
    pf_status (*logits)(void *ctx, pf_real *out);                   /* m->logits [B,K] of the last forward */
    pf_status (*download)(void *ctx);   /* parameters, gradients, moments -> the model */
    pf_status (*upload)(void *ctx);     /* the model's parameters (and moments) -> the backend */
} pf_backend;

/* ---------------------------------------------------------------------- */
/* evaluation with the branch sweep, compress and expand */

/* Accuracy and mean loss (no smoothing) of the first m->active branches on d;
   per_class [classes] (NaN for a class with no images) and, when sweep is
   not NULL, sweep[k-1] = accuracy of the first k branches for k = 1..active,
   all from one pass (a prefix gives bitwise the logits of a model cut to k
   branches). Any of the outputs may be NULL. */
PFDEF pf_status pf_evaluate(pf_model *m, const pf_dataset *d, int batch, double *loss, double *accuracy,
                            double *per_class, double *sweep);
/* pf_evaluate through a backend (NULL: pf_evaluate itself). The backend
   gives logits, not the branch outputs to re-aggregate, so the sweep runs
   one forward per prefix k (m->active = k, restored after): up to `active`
   forwards per batch instead of one. Batches are at most be->max_batch. */
PFDEF pf_status pf_evaluate_on(pf_model *m, const pf_backend *be, const pf_dataset *d, int batch, double *loss,
                               double *accuracy, double *per_class, double *sweep);

/* The paper's compression: a new model of the first `keep` branches. */
PFDEF pf_status pf_model_compress(const pf_model *m, int keep, pf_model **out);
/* Expansion for continual learning: a new model with `add` more branches
   (seeded initialisation as pf_model_init gives them; new_branch
   PF_NEW_ZERO zeroes their output projections) and `classes` outputs
   (>= the old count; the new head rows are initialised, the old ones kept). */
PFDEF pf_status pf_model_expand(const pf_model *m, int add, int classes, int new_branch, uint64_t seed,
                                pf_model **out);

/* ---------------------------------------------------------------------- */
/* the trainer: the schedules of docs/design.md §3, checkpoints that carry
   the training state */


enum { PF_SCHED_STAGED = 0, PF_SCHED_INTERLEAVED = 1, PF_SCHED_JOINT = 2 };
#define PF_TRAIN_MAX_LIST 16 /* entries of pf_train_opts.stage_epochs */
enum { PF_NEW_ZERO = 0, PF_NEW_RANDOM = 1 };  /* how a staged branch starts */
enum { PF_LR_COSINE = 0, PF_LR_CONSTANT = 1, PF_LR_COSINE_RUN = 2 };
PFDEF const char *pf_schedule_name(int schedule); /* "staged", ... */

typedef struct pf_train_opts {
    int schedule;        /* PF_SCHED_* */
    int epochs;          /* staged: the cap of each stage; else the total */
    int stage_epochs[PF_TRAIN_MAX_LIST]; /* staged, optional: the cap of stage
                            1, 2, ... (0 ends the list; stages past its end
                            take its last value); all 0: epochs for every stage */
    int batch;           /* images per step (the last batch may be smaller) */
    pf_optim optim;      /* optim.lr is the peak learning rate */
    int lr_schedule;     /* PF_LR_COSINE: linear warmup, then cosine from lr
                            to min_lr*lr over the run (over each stage when
                            staged); PF_LR_COSINE_RUN: the same, over the
                            whole run also when staged (one warmup, no
                            restart at a stage); PF_LR_CONSTANT: lr throughout */
    float warmup;        /* warmup length in epochs (may be fractional) */
    float min_lr;        /* cosine floor as a fraction of lr */
    float label_smoothing;
    int new_branch;      /* staged: PF_NEW_ZERO zeroes a new branch's output
                            projections (proj, fc2) so the function does not
                            jump (exactly, for prenorm + delta); PF_NEW_RANDOM
                            keeps its seeded random initialisation */
    int freeze_old;      /* staged: 1 = earlier branches stop training */
    float old_lr;        /* staged: lr multiplier, from stage 2 on, of the
                            earlier branches and of the stem and head they
                            share with the new one (1: all at full rate) */
    int patience;        /* staged: evaluations without an improvement of
                            more than min_delta in validation loss that end a
                            stage (0: only the epoch cap ends it) */
    float min_delta;
    float prefix_clip;   /* interleaved: grad-norm clip of the prefix steps */
    int keep_trainable;  /* joint: keep m->train_branch/train_stem/
                            train_head/head_rows_from as the caller set them
                            (fine-tuning new branches after pf_model_expand) */
    int log_every;       /* steps per "train" log line; 0: ~20 per epoch */
    int eval_batch;      /* batch of evaluations */
    pf_augment aug;      /* training augmentation */
    float mixup;         /* > 0: MixUp, lambda ~ Beta(mixup, mixup) (0: off) */
    float cutmix;        /* > 0: CutMix, lambda ~ Beta(cutmix, cutmix); with
                            both on, each batch takes one of the two, 50/50.
                            Targets are soft (label smoothing folded in);
                            CPU only (the GPU backend takes hard labels) */
    float ema;           /* > 0: decay of an exponential moving average of the
                            weights; validation uses it and the model becomes
                            it when the run ends (0: off; CPU only) */
    float drop_path;     /* stochastic depth rate of the deepest layer of each
                            branch (pf_model.drop_path during the run; 0: off;
                            CPU only) */
    uint64_t seed;       /* data order, augmentation and dropout */
} pf_train_opts;

/* staged, 10 epochs, batch 128, AdamW lr 1e-3 wd 0.05, cosine with 1 warmup
   epoch to 0, new branches zeroed, old branches at lr x1, patience 3,
   prefix clip 1, eval batch 256, no augmentation, seed 0. */
PFDEF pf_train_opts pf_train_opts_default(void);
/* Checks the options; the last error says what is wrong. */
PFDEF pf_status pf_train_opts_validate(const pf_train_opts *o);
/* A training recipe: the model and the options together.
     "fmnist-small"  ~0.3M-parameter ParaFormer for 28x28x1 (Fashion-MNIST),
                     staged, tuned to pass 90 % test accuracy in 20 minutes
                     on 2 CPU cores
     "cifar10-small" ~1.2M-parameter PF(2x3) for 32x32x3 (CIFAR-10), staged
                     32+20 epochs under one cosine (cosine-run), old branch
                     at 0.3 of the rate, crop, flip, random erasing; under an
                     hour on 2 CPU cores with bf16 (docs/results.md §7)
     "paper"         the authors' released setup: the "paper" model preset,
                     interleaved, Adam 1e-4 constant, batch 500, 300 epochs,
                     RandAugment(2, 14), crop (pad 4), flip
   Any model preset name ("paraformer", "vit") gives that model with
   pf_train_opts_default(). *embed_std (when not NULL) gets the cls/pos
   init std. */
PFDEF pf_status pf_train_preset(const char *name, pf_config *c, pf_train_opts *o, float *embed_std);

/* Where a run is: everything besides the parameters and the optimizer
   moments that an exact resume needs (the data order, augmentation and
   learning rate are functions of these and the options). */
typedef struct pf_train_state {
    int stage;           /* staged: branches in training (1..n); else n */
    int epoch;           /* epochs completed */
    int stage_epoch;     /* epochs completed in this stage */
    int bad_evals;       /* evaluations since the best validation loss */
    int done;            /* 1: the schedule has finished */
    int64_t step;        /* optimizer steps taken */
    int64_t samples;     /* images drawn (augmentation counter) */
    double best_val;     /* best validation loss of this stage */
    double time_s;       /* training wall time of this process (not saved:
                            checkpoints are reproducible to the byte) */
    int64_t log_lines;   /* lines in the log when this state was saved */
} pf_train_state;

/* What the progress callback sees. */
enum { PF_EV_STEP = 0, PF_EV_EVAL, PF_EV_STAGE, PF_EV_EPOCH };
typedef struct pf_train_info {
    int event;           /* PF_EV_*: after a step, after the validation of an
                            epoch, at a stage start, after an epoch's save */
    const char *pass;    /* "train", "prefix" (interleaved), "joint" */
    int stage, active, epoch, epochs; /* epoch: 0-based, being trained */
    int batch, batches;  /* position in this pass over the data */
    int64_t step;
    double loss, acc;    /* running means over this pass */
    double lr, img_s, time_s;
    double val_loss, val_acc; /* PF_EV_EVAL (NaN without a validation set) */
} pf_train_info;

typedef struct pf_trainer {
    pf_model *m;                  /* not owned */
    const pf_dataset *train, *val; /* not owned; val may be NULL */
    pf_train_opts o;
    pf_train_state s;
    const char *out_path;         /* checkpoint rewritten (atomically) at every
                                     epoch and stage end; NULL: none */
    const char *meta_extra;       /* optional JSON object string saved as
                                     "train_args" metadata (the program's
                                     command line, for the record) */
    void (*progress)(const pf_train_info *info, void *user);
    void *user;
    volatile int *stop;           /* when *stop becomes non-zero (a signal
                                     handler), run returns PF_ERR_INTERRUPTED
                                     before the next step */
    const pf_backend *backend;    /* NULL: the CPU; else forward, backward,
                                     step and evaluations run there (not
                                     owned; set after pf_trainer_init) */
    /* what the log's "start" event records beyond the trainer's own
       figures, so that a log says where its numbers came from (not owned;
       NULL: preset "", device and backend "cpu" without a backend and
       "unknown" with one, precision "fp32") */
    const char *log_preset;       /* the recipe or model preset */
    const char *log_device;       /* "cpu", "cuda:0,1", ... */
    const char *log_backend;      /* "cpu", "cuda", "emulated" */
    const char *log_precision;    /* "fp32", "bf16" */
    /* private */
    void *log;                    /* FILE* of the JSON-lines log */
    pf_real *x, *logits;          /* a batch; its logits from the backend */
    pf_real *targets;             /* [batch, K] soft targets (MixUp/CutMix) */
    pf_real *ema;                 /* [n_params] weight average (opts ema > 0) */
    int *perm, *labels, n_batches;
    double t_start;
    uint64_t data_hash;           /* fingerprint of train and val (saved) */
} pf_trainer;

/* Sets up a trainer for m on `train` (and `val` for the stage decisions and
   the eval log lines): allocates the optimizer state and the batch buffers,
   and puts the model in the state of the schedule's start (stage 1). The
   activations are allocated by pf_trainer_run (on the host only without a
   backend). */
PFDEF pf_status pf_trainer_init(pf_trainer *t, pf_model *m, const pf_dataset *train, const pf_dataset *val,
                                const pf_train_opts *o);
/* Continues from a checkpoint written by this trainer: loads parameters,
   Adam moments, step counters and the state; the options must match those
   the run was started with (the error names the first that differs), and
   so must the data (the same training and validation images and labels,
   checked by a fingerprint the checkpoint keeps). */
PFDEF pf_status pf_trainer_resume(pf_trainer *t, const char *path);
/* Opens the JSON-lines log (appends; after a resume it is first cut back to
   its lines at the checkpoint, so it reads as if never interrupted). */
PFDEF pf_status pf_trainer_open_log(pf_trainer *t, const char *path);
/* Appends one line to the log (a JSON object string). */
PFDEF void pf_trainer_log(pf_trainer *t, const char *json);
/* Trains until the schedule is done (or *stop). A fresh run (no step taken
   yet) first logs the "start" event. */
PFDEF pf_status pf_trainer_run(pf_trainer *t);
/* The end of a finished run: the accuracy and loss (no smoothing) of the
   model on `test` through the trainer's backend, with the branch sweep,
   logged as the "sweep" and "end" events, so that the log holds the whole
   run (docs/design.md §4.5). loss, accuracy and sweep (m->active values)
   receive the results; each may be NULL. */
PFDEF pf_status pf_trainer_report(pf_trainer *t, const pf_dataset *test, double *loss, double *accuracy,
                                  double *sweep);
/* Writes the model with its training state ("train.*" tensors and the
   "train_state" metadata) atomically. */
PFDEF pf_status pf_trainer_save(pf_trainer *t, const char *path);
PFDEF void pf_trainer_free(pf_trainer *t);

/* ---------------------------------------------------------------------- */
/* multi-device plan (docs/design.md §5): which device runs which branch, and the
   collectives of one training step. Plain C, so the CPU tests check the
   plan that the GPU backend (paraformer_cuda.cu) executes. */

/* Assigns branches 0..n-1 to devices 0..d-1 (1 <= d <= n: no device idles).
   cost NULL: round-robin, branch b on device b % d. Otherwise longest first:
   branches by decreasing cost (ties: lower index first) each go to the
   device with the least total cost so far (ties: lower device).
   device_of[b] receives the device of branch b. */
PFDEF pf_status pf_branch_plan(int n, int d, const double *cost, int *device_of);

enum { PF_COLL_BROADCAST = 0, PF_COLL_REDUCE = 1, PF_COLL_ALLREDUCE = 2 };
typedef struct pf_collective {
    int op;             /* PF_COLL_*, all sums */
    int root;           /* broadcast/reduce root device (rank); -1: all-reduce */
    size_t count;       /* elements */
    const char *what;   /* "x0", "branch outputs", "d aggregate", "d x0", "grads" */
} pf_collective;
/* The collectives of one training step, in order, for `devices` devices
   holding branches (device 0 also holds the stem and head) and `replicas`
   data-parallel copies of that arrangement, batch B per replica:
     forward:  broadcast X0 [B,T,D] from device 0; each device sums the
               deltas of its branches; reduce (sum) onto device 0;
     backward: broadcast dL/d(aggregate) [B,T,D] from device 0; each device
               backpropagates its branches; reduce dL/dX0 onto device 0;
     then, with replicas > 1, all-reduce the gradients (n_params).
   One device and one replica: no collectives. Returns how many were
   written, or -1 with the last error set (also when cap is too small). */
PFDEF int pf_collective_plan(const pf_config *c, int B, int devices, int replicas, size_t n_params,
                             pf_collective *out, int cap);

/* ---------------------------------------------------------------------- */
/* GPU backend (paraformer_cuda.cu, docs/design.md §5). Declared here, implemented in
   that file: link build/paraformer_cuda.o (make cuda) with the program, or
   build/paraformer_cuda_emu.o, the same source compiled for the CPU with the
   GPU primitives emulated (make test runs the backend's tests on it).

   A context is bound to one pf_model (borrowed; it must outlive the
   context). The model keeps the small state on the host: the flags of what
   runs and trains (active, training, train_branch, lr_scale, train_stem,
   train_head, head_rows_from), the per-tensor step counters, the dropout
   counter and the loss. The device holds the parameters, gradients, Adam
   moments and activations: pf_cuda_download copies them back into the
   model (for saving), pf_cuda_upload sends the model's values to the device.

   Layout on every device: [stem | its branches, each one contiguous slice of
   branch_size with the CPU's layout | head], so the same layer of all its
   active branches runs as one strided-batched GEMM. With several devices the
   branches are spread by pf_branch_plan, device 0 holds the stem and head,
   and a step runs the collectives of pf_collective_plan through NCCL. */

typedef struct pf_cuda pf_cuda;

typedef struct pf_cuda_opts {
    int devices[16];   /* CUDA device ids this process drives (default: {0}) */
    int n_devices;     /* how many of devices[] are used (default 1) */
    int replicas;      /* data-parallel copies; n_devices * world_size must be
                          a multiple (default 1). Each replica spreads the
                          branches over its share of the devices. */
    int bf16;          /* 0: fp32 (TF32 off); 1: bf16 weights and activations
                          for the GEMMs, fp32 master weights and accumulation */
    int cost_plan;     /* 0: branches round-robin; 1: longest-first by cost
                          (equal costs: round-robin order) */
    int max_batch;     /* images per forward per process (default 256) */
    int collectives;   /* 1: run the collectives even on one device (a
                          single-rank NCCL communicator): the multi-device
                          path, which must give the plain path's results */
    /* several processes (torchrun style): rank, world size; rank 0 writes the
       NCCL unique id to id_file (or reads it from PF_NCCL_ID, hex) and the
       others read it. pf_cuda_opts_from_env fills these from RANK,
       WORLD_SIZE, LOCAL_RANK (device) and PF_NCCL_ID_FILE. */
    int rank, world_size;
    char id_file[512];
    char nccl_id[2 * 128 + 1]; /* or the id itself, hex (PF_NCCL_ID) */
    /* Switches to measure what each GPU feature buys and to test the paths
       it replaces: PF_CUDA_AUTO (0, the default) lets the backend choose,
       PF_CUDA_OFF turns the feature off, PF_CUDA_ON forces it where it is
       possible but not automatic. */
    int graphs;          /* CUDA graphs on one device (inference, step) */
    int fused_attention; /* attention in shared memory (off: a thread per
                            row, global memory) */
    int tc_attention;    /* bf16 attention on tensor cores */
    int row_fused;       /* bf16: all of a layer but attention in one launch
                            (auto: inference with few blocks; on: any batch,
                            training too) */
    int att_tiles;       /* > 0: query tiles per attention block (0: chosen) */
    int row_tiles;       /* 1..4: row tiles per fused-rows block (0: the most
                            that fit) */
    int check_launches;  /* on: wait for each kernel and GEMM and report a
                            fault against its line in paraformer_cuda.cu
                            (slow; auto: on only in a build with
                            -DPF_CUDA_DEBUG, make cuda CUDA_DEBUG=1) */
} pf_cuda_opts;
enum { PF_CUDA_AUTO = 0, PF_CUDA_ON = 1, PF_CUDA_OFF = -1 };

PFEXTDEF pf_cuda_opts pf_cuda_opts_default(void);
/* Fills o from the environment, the only place the backend reads it:
   RANK, WORLD_SIZE, LOCAL_RANK, PF_NCCL_ID_FILE and PF_NCCL_ID (several
   processes), and the switches PF_CUDA_GRAPHS, PF_CUDA_FUSED_ATTENTION,
   PF_CUDA_TC_ATTENTION, PF_CUDA_ROW_FUSED, PF_CUDA_CHECK_LAUNCHES ("0" off,
   "1" on) and
   PF_CUDA_ATT_TILES, PF_CUDA_ROW_TILES (counts). Variables not set leave
   their fields as they are; a malformed value is an error naming it. */
PFEXTDEF pf_status pf_cuda_opts_from_env(pf_cuda_opts *o);
/* Parses "cuda", "cuda:1" or "cuda:0,1,2" into o->devices. */
PFEXTDEF pf_status pf_cuda_parse_devices(const char *spec, pf_cuda_opts *o);
/* "cuda" (real GPUs) or "emulated" (the CPU build of the backend). */
PFEXTDEF const char *pf_cuda_backend(void);
/* Number of visible devices (0 when none; emulated: 8). */
PFEXTDEF int pf_cuda_device_count(void);
/* Creates the context for m on the devices of o and uploads m (its
   parameters, and its Adam moments when it has them). Errors: no device, a
   device id out of range, out of device memory, a model too large. */
PFEXTDEF pf_status pf_cuda_create(pf_model *m, const pf_cuda_opts *o, pf_cuda **out);
PFEXTDEF void pf_cuda_free(pf_cuda *g);
/* The model's parameters (and Adam moments if allocated) to the devices. */
PFEXTDEF pf_status pf_cuda_upload(pf_cuda *g);
/* Parameters, gradients and Adam moments from the devices into the model
   (each branch from the device that owns it). */
PFEXTDEF pf_status pf_cuda_download(pf_cuda *g);
/* pf_forward on the GPU: x [B,C,H,W] float on the host, B <= max_batch
   (and a multiple of the replicas); x NULL: the images the last call with
   the same B left on the device. Returns once the work is queued. *loss
   (when loss is not NULL: waits for it) as pf_forward; m->loss is set then,
   or else by the next pf_cuda_logits or pf_cuda_sync. Inference (no labels,
   m->training 0) on one device runs as a CUDA graph per batch size from the
   second call of that size on (PF_CUDA_GRAPHS=0: never). */
PFEXTDEF pf_status pf_cuda_forward(pf_cuda *g, const float *x, const int *labels, int B, float label_smoothing,
                                   float *loss);
/* Logits [B,K] of the last forward, to the host. */
PFEXTDEF pf_status pf_cuda_logits(pf_cuda *g, float *out);
/* pf_backward on the GPU (gradients of every active branch are written). */
PFEXTDEF pf_status pf_cuda_backward(pf_cuda *g);
/* pf_optim_step on the GPU, PyTorch's per-parameter semantics (the step
   counters in the model advance); *norm gets the grad norm when clipping
   (asking for it waits for the devices; NULL: nothing waits). */
PFEXTDEF pf_status pf_cuda_step(pf_cuda *g, const pf_optim *o, double *norm);
/* pf_predict on the GPU (inference mode, chunks of max_batch). */
PFEXTDEF pf_status pf_cuda_predict(pf_cuda *g, const float *x, int N, float *out);
/* The context as the compute backend of the trainer and the evaluator
   (pf_trainer_init, pf_evaluate_on): fills *be, which refers to g. */
PFEXTDEF pf_status pf_cuda_as_backend(pf_cuda *g, pf_backend *be);
/* The device of branch b (index into opts.devices), for reports. */
PFEXTDEF int pf_cuda_branch_device(const pf_cuda *g, int b);
/* Kernels and GEMMs this context has run, on all its devices (a CUDA
   graph's replay counts those it holds): the tests hold a layer's count
   to the same for any number of branches. */
PFEXTDEF unsigned long long pf_cuda_launches(const pf_cuda *g);
/* Waits until every device has finished the work queued so far (forward,
   backward and step return once their work is queued; for timing), and
   sets m->loss of the last forward with labels. */
PFEXTDEF pf_status pf_cuda_sync(pf_cuda *g);
/* The collectives the last forward + backward ran, in order (the tests
   compare them with pf_collective_plan). Returns how many were written. */
PFEXTDEF int pf_cuda_trace(const pf_cuda *g, pf_collective *out, int cap);

/* For programs: print the error and exit(1) on failure. */
#define PF_TRY(call) do { pf_status pf__s = (call); if (pf__s != PF_OK) { \
    fprintf(stderr, "error: %s\n", pf_last_error()); exit(1); } } while (0)

#endif /* PARAFORMER_H */

/* ====================================================================== */
/*                            IMPLEMENTATION                              */
/* ====================================================================== */
#ifdef PARAFORMER_IMPLEMENTATION
#ifndef PARAFORMER_IMPLEMENTATION_DONE
#define PARAFORMER_IMPLEMENTATION_DONE

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define PF__HAVE_FSYNC 1
#endif
#ifdef PF_HAVE_ZLIB
#include <zlib.h>
#endif
#if defined(PF_HAVE_STB) && !defined(STBI_INCLUDE_STB_IMAGE_H)
#include <stb/stb_image.h> /* declarations; the program compiles stb's implementation */
#endif

#if defined(PF_MALLOC) && defined(PF_FREE) && defined(PF_REALLOC)
#elif !defined(PF_MALLOC) && !defined(PF_FREE) && !defined(PF_REALLOC)
#define PF_MALLOC(sz) malloc(sz)
#define PF_REALLOC(p, sz) realloc(p, sz)
#define PF_FREE(p) free(p)
#else
#error "define all or none of PF_MALLOC, PF_FREE, PF_REALLOC"
#endif
#ifndef PF_ASSERT
#include <assert.h>
#define PF_ASSERT(x) assert(x)
#endif

/* OpenMP on outer loops only; without OpenMP the pragmas vanish. */
#ifdef _OPENMP
#define PF__STR(x) #x
#define PF__OMP(x) _Pragma(PF__STR(omp x))
#else
#define PF__OMP(x)
#endif

#ifdef PF_DOUBLE
#define PF__EXP exp
#define PF__LOG log
#define PF__SQRT sqrt
#define PF__ERF erf
#else
#define PF__EXP expf
#define PF__LOG logf
#define PF__SQRT sqrtf
#define PF__ERF erff
#endif

#define PF__CALLOC(T, n) ((T *)pf__calloc((size_t)(n), sizeof(T)))

/* A public function's check of a pointer argument: a NULL is an error
   naming the function and the argument, never a crash (stb never exits,
   and neither does this library). */
#define PF__MAX_SIDE 16384 /* pixels on a side of any image, file or argument */
#define PF__NEED(p, fn, what) do { if (!(p)) return pf_fail(PF_ERR_ARG, "%s: %s is NULL", fn, what); } while (0)

static void *pf__calloc(size_t n, size_t size) {
    void *p;
    if (size && n > (size_t)-1 / size) return NULL;
    p = PF_MALLOC(n * size > 0 ? n * size : 1);
    if (p) memset(p, 0, n * size);
    return p;
}

/* ---------------------------------------------------------------------- */
/* status and errors: the thread's last-error message */

#if defined(_MSC_VER)
#define PF__TLS __declspec(thread)
#elif defined(__cplusplus) && __cplusplus >= 201103L
#define PF__TLS thread_local
#elif defined(__GNUC__)
#define PF__TLS __thread
#else
#define PF__TLS
#endif

static PF__TLS char pf__err[768];

PFDEF const char *pf_last_error(void) { return pf__err; }

PFDEF pf_status pf_fail(pf_status s, const char *fmt, ...) {
    char msg[sizeof pf__err]; /* the arguments may be pf_last_error() itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt ? fmt : "(no message)", ap);
    va_end(ap);
    memcpy(pf__err, msg, sizeof msg);
    return s;
}

PFDEF const char *pf_status_name(pf_status s) {
    switch (s) {
    case PF_OK: return "ok";
    case PF_ERR_ARG: return "bad argument";
    case PF_ERR_CONFIG: return "invalid configuration";
    case PF_ERR_NOMEM: return "out of memory";
    case PF_ERR_IO: return "I/O error";
    case PF_ERR_FORMAT: return "malformed file";
    case PF_ERR_SHAPE: return "wrong shape or type";
    case PF_ERR_INTERRUPTED: return "interrupted";
    case PF_ERR_NONFINITE: return "non-finite number";
    }
    return "unknown status";
}

/* ---------------------------------------------------------------------- */
/* threads, the clock and per-op profiling */

PFDEF void pf_set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

PFDEF int pf_get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

PFDEF double pf_time(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

PFDEF const char *pf_op_name(int op) {
    static const char *names[PF_OP_COUNT] = {"embed", "layernorm", "qkv", "attention", "proj", "fc1",
                                             "gelu", "fc2", "residual", "head", "optimizer"};
    return op >= 0 && op < PF_OP_COUNT ? names[op] : "?";
}

/* Adds the time since t0 to op; returns the time now (0 when not profiling). */
static double pf__lap(pf_model *m, int bwd, int op, double t0, double flops) {
    double t;
    if (!m->profile) return 0.0;
    t = pf_time();
    if (bwd) { m->profile->bwd_s[op] += t - t0; m->profile->bwd_flops[op] += flops; }
    else { m->profile->fwd_s[op] += t - t0; m->profile->fwd_flops[op] += flops; }
    return t;
}

/* Times `stmt` into m->profile (dir: fwd or bwd) when profiling is on. */
#define PF__PROF_fwd 0
#define PF__PROF_bwd 1
#define PF__PROF(m, dir, op, flops, stmt) do { \
        double pf__t0 = (m)->profile ? pf_time() : 0.0; \
        stmt; \
        pf__lap((m), PF__PROF_##dir, (op), pf__t0, (double)(flops)); \
    } while (0)

/* ---------------------------------------------------------------------- */
/* random numbers: splitmix64 streams (seeded per tensor by name; the
   finaliser pf_mix64 is inline in the API, shared with the GPU backend) */

static uint64_t pf__next(uint64_t *s) { *s += 0x9e3779b97f4a7c15ULL; return pf_mix64(*s); }
/* perm = a Fisher-Yates shuffle of 0..n-1 drawn from the stream s */
static void pf__shuffle(int *perm, int n, uint64_t *s) {
    int i;
    for (i = 0; i < n; i++) perm[i] = i;
    for (i = n - 1; i > 0; i--) {
        int j = (int)(pf__next(s) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
static double pf__uniform(uint64_t *s) { return (double)(pf__next(s) >> 11) * (1.0 / 9007199254740992.0); }
static double pf__normal(uint64_t *s) { /* Box-Muller, one value per call */
    double u1 = pf__uniform(s), u2 = pf__uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
/* The public stream wraps the private one, so both draw the same numbers. */
PFDEF pf_rng pf_rng_seed(uint64_t seed) {
    pf_rng r;
    r.state = seed;
    return r;
}
/* a NULL generator draws 0 and sets the last error (no status to return) */
#define PF__RNG_NEED(r, fn) if (!(r)) return (pf_fail(PF_ERR_ARG, "%s: the generator is NULL", fn), 0)
PFDEF uint64_t pf_rng_next(pf_rng *r) { PF__RNG_NEED(r, "pf_rng_next"); return pf__next(&r->state); }
PFDEF double pf_rng_uniform(pf_rng *r) { PF__RNG_NEED(r, "pf_rng_uniform"); return pf__uniform(&r->state); }
PFDEF double pf_rng_normal(pf_rng *r) { PF__RNG_NEED(r, "pf_rng_normal"); return pf__normal(&r->state); }
static uint64_t pf__hash_str(uint64_t h, const char *s) { /* FNV-1a then mix */
    h ^= 0xcbf29ce484222325ULL;
    while (*s) { h ^= (unsigned char)*s++; h *= 0x100000001b3ULL; }
    return pf_mix64(h);
}

/* ---------------------------------------------------------------------- */
/* a small JSON reader (safetensors headers, configs). Depth-limited,
   bounds-checked, never reads past len. */

typedef struct pf__json {
    const char *s;
    size_t n, i;
    int depth;
    const char *err;
} pf__json;

#define PF__JSON_MAX_DEPTH 64

static void pf__jws(pf__json *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r')) j->i++;
}
static int pf__jpeek(pf__json *j) { pf__jws(j); return j->i < j->n ? (unsigned char)j->s[j->i] : -1; }
static int pf__jexpect(pf__json *j, char c) {
    if (pf__jpeek(j) != (unsigned char)c) { if (!j->err) j->err = "unexpected character"; return 0; }
    j->i++;
    return 1;
}
static void pf__utf8(char *out, size_t cap, size_t *k, unsigned cp) {
    unsigned char b[4]; int n, t;
    if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (unsigned char)(0xC0 | (cp >> 6)); b[1] = (unsigned char)(0x80 | (cp & 63)); n = 2; }
    else if (cp < 0x10000) { b[0] = (unsigned char)(0xE0 | (cp >> 12)); b[1] = (unsigned char)(0x80 | ((cp >> 6) & 63)); b[2] = (unsigned char)(0x80 | (cp & 63)); n = 3; }
    else { b[0] = (unsigned char)(0xF0 | (cp >> 18)); b[1] = (unsigned char)(0x80 | ((cp >> 12) & 63)); b[2] = (unsigned char)(0x80 | ((cp >> 6) & 63)); b[3] = (unsigned char)(0x80 | (cp & 63)); n = 4; }
    for (t = 0; t < n; t++) {
        if (*k + 1 < cap) { out[*k] = (char)b[t]; out[*k + 1] = 0; }
        (*k)++;
    }
}
static int pf__jhex4(pf__json *j, unsigned *v) {
    int t; *v = 0;
    if (j->i + 4 > j->n) return 0;
    for (t = 0; t < 4; t++) {
        char c = j->s[j->i++]; unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        *v = *v * 16 + d;
    }
    return 1;
}
/* Parses a string into out (NUL-terminated, truncated to cap-1; *len gets
   the full decoded length). out may be NULL to skip. */
/* A JSON string into out (truncated to cap-1 bytes). out stays a terminated
   string at every step, also when the string turns out malformed: callers
   name it in their error messages. */
static int pf__jstring(pf__json *j, char *out, size_t cap, size_t *len) {
    size_t k = 0;
    if (out && cap) out[0] = 0;
    if (!pf__jexpect(j, '"')) { j->err = "expected a string"; return 0; }
    for (;;) {
        unsigned char c;
        if (j->i >= j->n) { j->err = "unterminated string"; return 0; }
        c = (unsigned char)j->s[j->i++];
        if (c == '"') break;
        if (c < 0x20) { j->err = "control character in string"; return 0; }
        if (c == '\\') {
            char e;
            if (j->i >= j->n) { j->err = "unterminated string"; return 0; }
            e = j->s[j->i++];
            switch (e) {
            case '"': c = '"'; break; case '\\': c = '\\'; break; case '/': c = '/'; break;
            case 'b': c = '\b'; break; case 'f': c = '\f'; break; case 'n': c = '\n'; break;
            case 'r': c = '\r'; break; case 't': c = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (!pf__jhex4(j, &cp)) { j->err = "bad \\u escape"; return 0; }
                if (cp >= 0xD800 && cp < 0xDC00) {
                    if (j->i + 2 > j->n || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u') { j->err = "bad surrogate pair"; return 0; }
                    j->i += 2;
                    if (!pf__jhex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF) { j->err = "bad surrogate pair"; return 0; }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (out) pf__utf8(out, cap, &k, cp); else k++;
                continue;
            }
            default: j->err = "bad escape in string"; return 0;
            }
        }
        if (out && k + 1 < cap) { out[k] = (char)c; out[k + 1] = 0; }
        k++;
    }
    if (out && cap) out[k < cap ? k : cap - 1] = 0;
    if (len) *len = k;
    return 1;
}
static int pf__jnumber(pf__json *j, double *v) {
    char buf[64]; size_t k = 0; char *end;
    pf__jws(j);
    while (j->i < j->n && k < sizeof buf - 1) {
        char c = j->s[j->i];
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') buf[k++] = c, j->i++;
        else break;
    }
    buf[k] = 0;
    if (!k) { j->err = "expected a number"; return 0; }
    *v = strtod(buf, &end);
    if (*end) { j->err = "bad number"; return 0; }
    return 1;
}
static int pf__jlit(pf__json *j, const char *lit) {
    size_t L = strlen(lit);
    pf__jws(j);
    if (j->i + L <= j->n && !memcmp(j->s + j->i, lit, L)) { j->i += L; return 1; }
    return 0;
}
static int pf__jskip(pf__json *j) { /* skips any value */
    int c = pf__jpeek(j);
    if (c == '"') return pf__jstring(j, NULL, 0, NULL);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        if (++j->depth > PF__JSON_MAX_DEPTH) { j->err = "nesting too deep"; return 0; }
        j->i++;
        if (pf__jpeek(j) == close) { j->i++; j->depth--; return 1; }
        for (;;) {
            if (c == '{') { if (!pf__jstring(j, NULL, 0, NULL) || !pf__jexpect(j, ':')) return 0; }
            if (!pf__jskip(j)) return 0;
            if (pf__jpeek(j) == ',') { j->i++; continue; }
            if (!pf__jexpect(j, close)) { j->err = "expected , or closing bracket"; return 0; }
            break;
        }
        j->depth--;
        return 1;
    }
    if (c == 't') { if (pf__jlit(j, "true")) return 1; }
    else if (c == 'f') { if (pf__jlit(j, "false")) return 1; }
    else if (c == 'n') { if (pf__jlit(j, "null")) return 1; }
    else { double v; return pf__jnumber(j, &v); }
    j->err = "bad literal";
    return 0;
}
/* Object iteration: call pf__jobj_begin, then while pf__jobj_next(key) ...
   parse or skip the value. Returns 0 at the end or on error (check j->err). */
static int pf__jobj_begin(pf__json *j) {
    if (!pf__jexpect(j, '{')) { j->err = "expected an object"; return 0; }
    if (++j->depth > PF__JSON_MAX_DEPTH) { j->err = "nesting too deep"; return 0; }
    return 1;
}
static int pf__jobj_next(pf__json *j, int *first, char *key, size_t cap) {
    int c = pf__jpeek(j);
    if (*first) {
        *first = 0;
        if (c == '}') { j->i++; j->depth--; return 0; }
    } else {
        if (c == '}') { j->i++; j->depth--; return 0; }
        if (c != ',') { j->err = "expected , or }"; return 0; }
        j->i++;
    }
    if (!pf__jstring(j, key, cap, NULL)) { key[0] = 0; return 0; } /* no half-read name in a message */
    if (!pf__jexpect(j, ':')) { j->err = "expected :"; return 0; }
    return 1;
}
/* Array of numbers into v[0..cap); *n gets the count. A scalar number is
   accepted as a one-element array. */
static int pf__jnumarray(pf__json *j, double *v, int cap, int *n) {
    int first = 1;
    *n = 0;
    if (pf__jpeek(j) != '[') { if (cap < 1) return 0; *n = 1; return pf__jnumber(j, v); }
    j->i++;
    for (;;) {
        int c = pf__jpeek(j);
        if (c == ']') { j->i++; return 1; }
        if (!first) { if (c != ',') { j->err = "expected , or ]"; return 0; } j->i++; }
        first = 0;
        if (*n >= cap) { j->err = "array too long"; return 0; }
        if (!pf__jnumber(j, &v[*n])) return 0;
        (*n)++;
    }
}


/* Finds `key` in the top level of the object; leaves j at its value. */
static int pf__jfind(pf__json *j, const char *json, size_t len, const char *key) {
    char k[256];
    int first = 1;
    memset(j, 0, sizeof *j);
    j->s = json; j->n = len;
    if (!pf__jobj_begin(j)) return 0;
    while (pf__jobj_next(j, &first, k, sizeof k)) {
        if (!strcmp(k, key)) return 1;
        if (!pf__jskip(j)) return 0;
    }
    return 0;
}
/* the lookups' arguments: 0 (not found) and the last error for a NULL one */
static int pf__json_args(const char *json, const char *key, const void *out, const char *fn) {
    if (json && key && out) return 1;
    pf_fail(PF_ERR_ARG, "%s: %s is NULL", fn, !json ? "the JSON text" : !key ? "the key" : "the output");
    return 0;
}
PFDEF int pf_json_number(const char *json, size_t len, const char *key, double *v) {
    pf__json j;
    if (!pf__json_args(json, key, v, "pf_json_number")) return 0;
    return pf__jfind(&j, json, len, key) && pf__jnumber(&j, v);
}
PFDEF int pf_json_numbers(const char *json, size_t len, const char *key, double *v, int cap, int *n) {
    pf__json j;
    if (!pf__json_args(json, key, n, "pf_json_numbers")) return 0;
    *n = 0;
    if (cap < 0 || (cap > 0 && !v)) return (pf_fail(PF_ERR_ARG, "pf_json_numbers: room for %d numbers at %p", cap, (void *)v), 0);
    return pf__jfind(&j, json, len, key) && pf__jnumarray(&j, v, cap, n);
}
PFDEF int pf_json_string(const char *json, size_t len, const char *key, char *out, size_t cap) {
    pf__json j;
    if (!pf__json_args(json, key, out, "pf_json_string")) return 0;
    if (!cap) return (pf_fail(PF_ERR_ARG, "pf_json_string: no room for the string (cap 0)"), 0);
    return pf__jfind(&j, json, len, key) && pf__jpeek(&j) == '"' && pf__jstring(&j, out, cap, NULL);
}
PFDEF pf_status pf_json_check(const char *json, size_t len, int object) {
    pf__json j;
    if (!json) return pf_fail(PF_ERR_ARG, "no JSON text");
    memset(&j, 0, sizeof j);
    j.s = json;
    j.n = len;
    if (object && pf__jpeek(&j) != '{') return pf_fail(PF_ERR_FORMAT, "it does not start with {");
    if (!pf__jskip(&j)) return pf_fail(PF_ERR_FORMAT, "%s", j.err ? j.err : "bad JSON");
    if (pf__jpeek(&j) != -1) return pf_fail(PF_ERR_FORMAT, "text after the %s", object ? "object" : "value");
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* configuration */

PFDEF const char *pf_residual_name(int r) { return r == PF_NORMED ? "normed" : "prenorm"; }
PFDEF const char *pf_aggregate_name(int a) { return a == PF_AGG_SUM ? "sum" : "delta"; }
PFDEF const char *pf_pool_name(int p) { return p == PF_POOL_MEAN ? "mean" : "cls"; }

PFDEF void pf_config_resolve(pf_config *c) {
    int i;
    if (!c) return;
    if (!c->image_size) c->image_size = 32;
    if (!c->channels) c->channels = 3;
    if (!c->patch_size) c->patch_size = 4;
    if (!c->dim) c->dim = 192;
    if (!c->heads) c->heads = 3;
    if (!c->mlp_dim) c->mlp_dim = 4 * c->dim;
    if (!c->branches) c->branches = 4;
    if (!c->depth) c->depth = 3;
    if (!c->classes) c->classes = 10;
    for (i = 0; i < PF_MAX_CHANNELS; i++)
        if (c->std[i] == 0.0f) c->std[i] = 1.0f;
}

PFDEF pf_status pf_config_preset(pf_config *c, const char *name) {
    int i;
    PF__NEED(c, "pf_config_preset", "the config");
    memset(c, 0, sizeof *c);
    if (!name || !strcmp(name, "paraformer") || !strcmp(name, "default")) {
        /* zero = defaults: PF(4x3) at width 192 on 32x32x3 */
    } else if (!strcmp(name, "vit")) {
        c->branches = 1; c->depth = 12;
    } else if (!strcmp(name, "paper")) {
        /* the authors' released configuration (docs/design.md §2) */
        c->image_size = 224; c->patch_size = 16; c->dim = 192; c->heads = 3; c->mlp_dim = 768;
        c->branches = 8; c->depth = 2; c->residual = PF_NORMED; c->aggregate = PF_AGG_SUM;
        c->no_qkv_bias = 1; c->dropout = 0.1f; c->emb_dropout = 0.1f;
        for (i = 0; i < PF_MAX_CHANNELS; i++) { c->mean[i] = 0.5f; c->std[i] = 0.2f; }
    } else {
        pf_config_resolve(c);
        return pf_fail(PF_ERR_ARG, "unknown preset '%s' (known: paraformer, vit, paper)", name);
    }
    pf_config_resolve(c);
    return PF_OK;
}

PFDEF float pf_preset_embed_std(const char *name) {
    return (name && !strcmp(name, "paper")) ? 1.0f : 0.02f;
}

PFDEF int pf_config_tokens(const pf_config *c) {
    int g;
    if (!c || c->image_size < 1 || c->patch_size < 1) return 0;
    g = c->image_size / c->patch_size;
    return g * g + 1;
}

PFDEF pf_status pf_config_validate(pf_config *c) {
    int i;
    PF__NEED(c, "pf_config_validate", "the config");
    pf_config_resolve(c);
#define PF__RANGE(f, lo, hi) if (c->f < (lo) || c->f > (hi)) \
        return pf_fail(PF_ERR_CONFIG, "config: " #f " = %d is out of range [%d, %d]", c->f, lo, hi)
    PF__RANGE(image_size, 1, 8192);
    PF__RANGE(channels, 1, PF_MAX_CHANNELS);
    PF__RANGE(patch_size, 1, 1024);
    PF__RANGE(dim, 1, 65536);
    PF__RANGE(heads, 1, 4096);
    PF__RANGE(mlp_dim, 1, 1 << 20);
    PF__RANGE(branches, 1, 1024);
    PF__RANGE(depth, 1, 1024);
    PF__RANGE(classes, 1, 1 << 20);
#undef PF__RANGE
    if (c->image_size % c->patch_size)
        return pf_fail(PF_ERR_CONFIG, "config: patch_size %d does not divide image_size %d", c->patch_size, c->image_size);
    if (c->dim % c->heads)
        return pf_fail(PF_ERR_CONFIG, "config: heads %d does not divide dim %d", c->heads, c->dim);
    if (pf_config_tokens(c) > 16385)
        return pf_fail(PF_ERR_CONFIG, "config: %d tokens is too many (image_size/patch_size too large)", pf_config_tokens(c));
    if ((double)c->channels * c->patch_size * c->patch_size > (1 << 24))
        return pf_fail(PF_ERR_CONFIG, "config: patch too large");
    if (c->residual != PF_PRENORM && c->residual != PF_NORMED)
        return pf_fail(PF_ERR_CONFIG, "config: residual must be prenorm or normed");
    if (c->aggregate != PF_AGG_DELTA && c->aggregate != PF_AGG_SUM)
        return pf_fail(PF_ERR_CONFIG, "config: aggregate must be delta or sum");
    if (c->pool != PF_POOL_CLS && c->pool != PF_POOL_MEAN)
        return pf_fail(PF_ERR_CONFIG, "config: pool must be cls or mean");
    if (c->no_qkv_bias != 0 && c->no_qkv_bias != 1)
        return pf_fail(PF_ERR_CONFIG, "config: no_qkv_bias must be 0 or 1");
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return pf_fail(PF_ERR_CONFIG, "config: dropout %g must be in [0, 1)", c->dropout);
    if (!(c->emb_dropout >= 0.0f && c->emb_dropout < 1.0f))
        return pf_fail(PF_ERR_CONFIG, "config: emb_dropout %g must be in [0, 1)", c->emb_dropout);
    for (i = 0; i < c->channels; i++) {
        if (!(c->std[i] > 0.0f) || !isfinite(c->std[i]) || !isfinite(c->mean[i]))
            return pf_fail(PF_ERR_CONFIG, "config: mean/std of channel %d must be finite with std > 0", i);
    }
    return PF_OK;
}

static int pf__appendf(char *buf, size_t cap, size_t *k, const char *fmt, ...) {
    va_list ap; int r;
    va_start(ap, fmt);
    r = vsnprintf(*k < cap ? buf + *k : NULL, *k < cap ? cap - *k : 0, fmt, ap);
    va_end(ap);
    if (r < 0) return 0;
    *k += (size_t)r;
    return 1;
}

PFDEF int pf_config_to_json(const pf_config *c, char *buf, size_t cap) {
    size_t k = 0; int i;
    if (!c || !buf || !cap)
        return pf_fail(PF_ERR_ARG, "pf_config_to_json: %s", !c ? "the config is NULL" : "no buffer"), -1;
    pf__appendf(buf, cap, &k,
                "{\"image_size\": %d, \"channels\": %d, \"patch_size\": %d, \"dim\": %d, \"heads\": %d, "
                "\"mlp_dim\": %d, \"branches\": %d, \"depth\": %d, \"classes\": %d, \"residual\": \"%s\", "
                "\"aggregate\": \"%s\", \"qkv_bias\": %s, \"pool\": \"%s\", \"dropout\": %.9g, "
                "\"emb_dropout\": %.9g, \"mean\": [",
                c->image_size, c->channels, c->patch_size, c->dim, c->heads, c->mlp_dim, c->branches,
                c->depth, c->classes, pf_residual_name(c->residual), pf_aggregate_name(c->aggregate),
                c->no_qkv_bias ? "false" : "true", pf_pool_name(c->pool), (double)c->dropout,
                (double)c->emb_dropout);
    for (i = 0; i < c->channels && i < PF_MAX_CHANNELS; i++) pf__appendf(buf, cap, &k, "%s%.9g", i ? ", " : "", (double)c->mean[i]);
    pf__appendf(buf, cap, &k, "], \"std\": [");
    for (i = 0; i < c->channels && i < PF_MAX_CHANNELS; i++) pf__appendf(buf, cap, &k, "%s%.9g", i ? ", " : "", (double)(c->std[i] == 0.0f ? 1.0f : c->std[i]));
    pf__appendf(buf, cap, &k, "], \"format_version\": %d}", PF_FORMAT_VERSION);
    if (k >= cap) return -1;
    return (int)k;
}

/* A JSON value read as an integer (number or numeric string). */
static int pf__jint(pf__json *j, int *out) {
    double v;
    if (pf__jpeek(j) == '"') {
        char s[64]; char *end;
        if (!pf__jstring(j, s, sizeof s, NULL)) return 0;
        v = strtod(s, &end);
        if (end == s || *end) { j->err = "expected an integer"; return 0; }
    } else if (!pf__jnumber(j, &v)) return 0;
    if (v != floor(v) || v < -2147483647.0 || v > 2147483647.0) { j->err = "expected an integer"; return 0; }
    *out = (int)v;
    return 1;
}
/* A boolean given as true/false, 1/0 or "true"/"false"/"on"/"off"/"1"/"0". */
static int pf__jbool(pf__json *j, int *out) {
    int c = pf__jpeek(j);
    if (c == 't' && pf__jlit(j, "true")) { *out = 1; return 1; }
    if (c == 'f' && pf__jlit(j, "false")) { *out = 0; return 1; }
    if (c == '"') {
        char s[16];
        if (!pf__jstring(j, s, sizeof s, NULL)) return 0;
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "on") || !strcmp(s, "1") || !strcmp(s, "yes")) { *out = 1; return 1; }
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "off") || !strcmp(s, "0") || !strcmp(s, "no")) { *out = 0; return 1; }
    } else {
        double v;
        if (pf__jnumber(j, &v) && (v == 0.0 || v == 1.0)) { *out = v != 0.0; return 1; }
    }
    j->err = "expected a boolean";
    return 0;
}

PFDEF pf_status pf_config_from_json(const char *json, size_t len, pf_config *c) {
    static const char *required[] = {"image_size", "channels", "patch_size", "dim", "heads", "mlp_dim",
                                     "branches", "depth", "classes", "residual", "aggregate", "qkv_bias", "pool"};
    pf__json j; char key[64]; int first = 1, i, seen = 0;
    key[0] = 0; /* the message names the key being read, none before the first */
    PF__NEED(c, "pf_config_from_json", "the config");
    PF__NEED(json, "pf_config_from_json", "the JSON text");
    memset(c, 0, sizeof *c);
    memset(&j, 0, sizeof j);
    j.s = json; j.n = len;
    if (!pf__jobj_begin(&j)) return pf_fail(PF_ERR_FORMAT, "config is not a JSON object");
    while (pf__jobj_next(&j, &first, key, sizeof key)) {
        int *ip = NULL, bit = -1;
        for (i = 0; i < 13; i++) if (!strcmp(key, required[i])) bit = i;
        if (bit >= 0) seen |= 1 << bit;
        if (!strcmp(key, "image_size")) ip = &c->image_size;
        else if (!strcmp(key, "channels")) ip = &c->channels;
        else if (!strcmp(key, "patch_size")) ip = &c->patch_size;
        else if (!strcmp(key, "dim")) ip = &c->dim;
        else if (!strcmp(key, "heads")) ip = &c->heads;
        else if (!strcmp(key, "mlp_dim")) ip = &c->mlp_dim;
        else if (!strcmp(key, "branches")) ip = &c->branches;
        else if (!strcmp(key, "depth")) ip = &c->depth;
        else if (!strcmp(key, "classes")) ip = &c->classes;
        if (ip) {
            if (!pf__jint(&j, ip)) break;
            if (*ip <= 0) return pf_fail(PF_ERR_CONFIG, "config: %s must be positive, got %d", key, *ip);
        } else if (!strcmp(key, "residual") || !strcmp(key, "aggregate") || !strcmp(key, "pool")) {
            char v[32];
            if (!pf__jstring(&j, v, sizeof v, NULL)) break;
            if (!strcmp(key, "residual")) {
                if (!strcmp(v, "prenorm")) c->residual = PF_PRENORM;
                else if (!strcmp(v, "normed")) c->residual = PF_NORMED;
                else return pf_fail(PF_ERR_CONFIG, "config: residual '%s' is not prenorm or normed", v);
            } else if (!strcmp(key, "aggregate")) {
                if (!strcmp(v, "delta")) c->aggregate = PF_AGG_DELTA;
                else if (!strcmp(v, "sum")) c->aggregate = PF_AGG_SUM;
                else return pf_fail(PF_ERR_CONFIG, "config: aggregate '%s' is not delta or sum", v);
            } else {
                if (!strcmp(v, "cls")) c->pool = PF_POOL_CLS;
                else if (!strcmp(v, "mean")) c->pool = PF_POOL_MEAN;
                else return pf_fail(PF_ERR_CONFIG, "config: pool '%s' is not cls or mean", v);
            }
        } else if (!strcmp(key, "qkv_bias")) {
            int b;
            if (!pf__jbool(&j, &b)) break;
            c->no_qkv_bias = !b;
        } else if (!strcmp(key, "dropout") || !strcmp(key, "emb_dropout")) {
            double v;
            if (pf__jpeek(&j) == 'n' && pf__jlit(&j, "null")) continue;
            if (!pf__jnumber(&j, &v)) break;
            if (!strcmp(key, "dropout")) c->dropout = (float)v; else c->emb_dropout = (float)v;
        } else if (!strcmp(key, "mean") || !strcmp(key, "std")) {
            double v[PF_MAX_CHANNELS]; int n, t;
            float *dst = !strcmp(key, "mean") ? c->mean : c->std;
            if (pf__jpeek(&j) == 'n' && pf__jlit(&j, "null")) continue;
            if (!pf__jnumarray(&j, v, PF_MAX_CHANNELS, &n)) break;
            for (t = 0; t < PF_MAX_CHANNELS; t++) dst[t] = (float)(n == 1 ? v[0] : t < n ? v[t] : (dst == c->std ? 1.0 : 0.0));
        } else if (!strcmp(key, "format_version")) {
            int v;
            if (!pf__jint(&j, &v)) break;
            if (v > PF_FORMAT_VERSION) return pf_fail(PF_ERR_FORMAT, "config: format_version %d is newer than this library (%d)", v, PF_FORMAT_VERSION);
        } else if (!pf__jskip(&j)) break; /* unknown keys are ignored */
    }
    if (j.err) return pf_fail(PF_ERR_FORMAT, "config JSON: %s at byte %zu (key '%s')", j.err, j.i, key);
    for (i = 0; i < 13; i++)
        if (!(seen & (1 << i))) return pf_fail(PF_ERR_CONFIG, "config: missing key '%s'", required[i]);
    return pf_config_validate(c);
}

/* ---------------------------------------------------------------------- */
/* GEMM: packed, cache-blocked, with micro-kernels for AVX-512 and AVX2
   chosen at run time and a portable one for everything else.

   C[M,N] (+)= op(A)[M,K] op(B)[K,N]. Blocking (the classic Goto/BLIS
   scheme): for each block of NC columns and KC depth, B is packed into
   panels of PF__NR columns ([kc][NR], zero-padded) shared by all threads;
   then each thread takes micro-rows of MR rows of A, packs them ([kc][MR],
   in L1) and runs the micro-kernel against every B panel (streamed from L2).
   The k-sum of each C element runs in ascending k inside one thread, so
   the bits do not depend on the thread count. */

#define PF__NR 32  /* columns per packed B panel (two 16-float vectors) */
#define PF__MR 12  /* largest micro-kernel row count */
#ifndef PF__KC
#define PF__KC 384
#endif
/* depth block: A micro-panel 12 x 384 x 4 B = 18 KB (L1) */
#define PF__NC 768 /* column block: packed B 384 x 768 x 4 B = 1.2 MB (L2) */

/* micro-kernel: c[mr,nr] (+)= a[kc][MR] . b[kc][NR]; load_c: add to c */
typedef void (*pf__kernel_fn)(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr,
                              int load_c);

/* writes a full MR x NR register tile or the valid part of it */
static void pf__store_tile(float *c, long ldc, const float *t, int mr, int nr, int load_c) {
    int i, j;
    for (i = 0; i < mr; i++)
        for (j = 0; j < nr; j++) c[i * ldc + j] = load_c ? c[i * ldc + j] + t[i * PF__NR + j] : t[i * PF__NR + j];
}

/* portable kernel (MR 4): plain loops the compiler vectorises */
static void pf__kernel_generic(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr,
                               int load_c) {
    float t[4 * PF__NR];
    int i, j, k;
    for (i = 0; i < 4; i++)
        for (j = 0; j < PF__NR; j++) t[i * PF__NR + j] = (load_c && i < mr && j < nr) ? c[i * ldc + j] : 0.0f;
    for (k = 0; k < kc; k++, a += 4, b += PF__NR)
        for (i = 0; i < 4; i++)
            for (j = 0; j < PF__NR; j++) t[i * PF__NR + j] += a[i] * b[j];
    pf__store_tile(c, ldc, t, mr, nr, 0);
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(PF_NO_SIMD)
#include <cpuid.h>
#include <immintrin.h>
#define PF__X86 1

/* AVX-512 kernel: 12 x 32 tile in 24 zmm accumulators; per k two vector
   loads of B and 12 broadcasts of A (a[i*rs + k*cs]: packed A is rs 1,
   cs 12; A read in place is rs lda, cs 1 or rs 1, cs lda) feed 24 FMAs.
   Rows i >= mr of A are never read when A is packed (they are zeros) and
   never stored. bias: every row starts from bias[0..nr) instead of C or 0. */
__attribute__((target("avx512f"))) static void pf__kernel_avx512_direct(int kc, const float *a, long rs, long cs,
                                                                       const float *b, float *c, long ldc, int mr,
                                                                       int nr, int load_c, const float *bias) {
    int full = mr == 12 && nr == PF__NR;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    __m512 c80 = c00, c81 = c00, c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;
    int k;
    if (bias) { /* start every row from the bias (nr valid columns) */
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
        __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1);
        c00 = _mm512_maskz_loadu_ps(m0, bias); c01 = _mm512_maskz_loadu_ps(m1, bias + 16);
        c10 = c20 = c30 = c40 = c50 = c60 = c70 = c80 = c90 = ca0 = cb0 = c00;
        c11 = c21 = c31 = c41 = c51 = c61 = c71 = c81 = c91 = ca1 = cb1 = c01;
    } else if (load_c && full) {
#define PF__LD(r, i) r##0 = _mm512_loadu_ps(c + (i) * ldc); r##1 = _mm512_loadu_ps(c + (i) * ldc + 16)
        PF__LD(c0, 0); PF__LD(c1, 1); PF__LD(c2, 2); PF__LD(c3, 3); PF__LD(c4, 4); PF__LD(c5, 5);
        PF__LD(c6, 6); PF__LD(c7, 7); PF__LD(c8, 8); PF__LD(c9, 9); PF__LD(ca, 10); PF__LD(cb, 11);
#undef PF__LD
    }
    for (k = 0; k < kc; k++, a += cs, b += PF__NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), t;
#define PF__FMA(r, i) t = _mm512_set1_ps(a[(i) * rs]); r##0 = _mm512_fmadd_ps(t, b0, r##0); r##1 = _mm512_fmadd_ps(t, b1, r##1)
        PF__FMA(c0, 0); PF__FMA(c1, 1); PF__FMA(c2, 2); PF__FMA(c3, 3); PF__FMA(c4, 4); PF__FMA(c5, 5);
        PF__FMA(c6, 6); PF__FMA(c7, 7); PF__FMA(c8, 8); PF__FMA(c9, 9); PF__FMA(ca, 10); PF__FMA(cb, 11);
#undef PF__FMA
    }
    if (full) {
#define PF__ST(r, i) _mm512_storeu_ps(c + (i) * ldc, r##0); _mm512_storeu_ps(c + (i) * ldc + 16, r##1)
        PF__ST(c0, 0); PF__ST(c1, 1); PF__ST(c2, 2); PF__ST(c3, 3); PF__ST(c4, 4); PF__ST(c5, 5);
        PF__ST(c6, 6); PF__ST(c7, 7); PF__ST(c8, 8); PF__ST(c9, 9); PF__ST(ca, 10); PF__ST(cb, 11);
#undef PF__ST
    } else {
        float t[12 * PF__NR];
#define PF__ST(r, i) _mm512_storeu_ps(t + (i) * PF__NR, r##0); _mm512_storeu_ps(t + (i) * PF__NR + 16, r##1)
        PF__ST(c0, 0); PF__ST(c1, 1); PF__ST(c2, 2); PF__ST(c3, 3); PF__ST(c4, 4); PF__ST(c5, 5);
        PF__ST(c6, 6); PF__ST(c7, 7); PF__ST(c8, 8); PF__ST(c9, 9); PF__ST(ca, 10); PF__ST(cb, 11);
#undef PF__ST
        _mm256_zeroupper(); /* leaving AVX-512 state dirty slows later SSE code */
        pf__store_tile(c, ldc, t, mr, nr, bias ? 0 : load_c);
    }
}
/* the same kernel on a packed A micro-panel ([kc][12]) */
static void pf__kernel_avx512(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr,
                              int load_c) {
    pf__kernel_avx512_direct(kc, a, 1, 12, b, c, ldc, mr, nr, load_c, NULL);
}

/* AVX2 kernel: 6 x 32 tile computed as two 6 x 16 halves (12 ymm
   accumulators each) over the same packed panels. */
__attribute__((target("avx2,fma"))) static void pf__kernel_avx2(int kc, const float *a, const float *b, float *c,
                                                               long ldc, int mr, int nr, int load_c) {
    float t[6 * PF__NR];
    int h, k;
    for (h = 0; h < 2; h++) {
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
        __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        const float *ap = a, *bp = b + 16 * h;
        for (k = 0; k < kc; k++, ap += 6, bp += PF__NR) {
            __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8), s;
#define PF__FMA(r, i) s = _mm256_broadcast_ss(ap + i); r##0 = _mm256_fmadd_ps(s, b0, r##0); r##1 = _mm256_fmadd_ps(s, b1, r##1)
            PF__FMA(c0, 0); PF__FMA(c1, 1); PF__FMA(c2, 2); PF__FMA(c3, 3); PF__FMA(c4, 4); PF__FMA(c5, 5);
#undef PF__FMA
        }
#define PF__ST(r, i) _mm256_storeu_ps(t + (i) * PF__NR + 16 * h, r##0); _mm256_storeu_ps(t + (i) * PF__NR + 16 * h + 8, r##1)
        PF__ST(c0, 0); PF__ST(c1, 1); PF__ST(c2, 2); PF__ST(c3, 3); PF__ST(c4, 4); PF__ST(c5, 5);
#undef PF__ST
    }
    _mm256_zeroupper();
    pf__store_tile(c, ldc, t, mr, nr, load_c);
}
#endif

/* the kernel for this machine, chosen once */
typedef struct pf__kernel { pf__kernel_fn fn; int mr; const char *name; } pf__kernel;
static const pf__kernel pf__kernels[] = { /* best first */
#ifdef PF__X86
    {pf__kernel_avx512, 12, "avx512"},
    {pf__kernel_avx2, 6, "avx2"},
#endif
    {pf__kernel_generic, 4, "generic"},
};
static int pf__kernel_runs_here(const pf__kernel *k) {
#ifdef PF__X86
    __builtin_cpu_init();
    if (k->fn == pf__kernel_avx512) return __builtin_cpu_supports("avx512f");
    if (k->fn == pf__kernel_avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return k->fn == pf__kernel_generic;
}
/* the best kernel this machine runs, or the one named (NULL if it can't) */
static const pf__kernel *pf__pick_kernel(const char *name) {
    size_t i;
    for (i = 0; i < sizeof pf__kernels / sizeof *pf__kernels; i++)
        if ((!name || !strcmp(name, pf__kernels[i].name)) && pf__kernel_runs_here(&pf__kernels[i]))
            return &pf__kernels[i];
    return NULL;
}
static pf__kernel pf__kern;
static int pf__kern_ready;
static pf__kernel pf__get_kernel(void) {
    if (!pf__kern_ready) { pf__kern = *pf__pick_kernel(NULL); pf__kern_ready = 1; } /* idempotent: races write the same */
    return pf__kern;
}

static int pf__bf16; /* pf_set_bf16 */
static const char *pf__bf16_kernel_name(void);
PFDEF const char *pf_gemm_kernel(void) { return pf__bf16 ? pf__bf16_kernel_name() : pf__get_kernel().name; }

/* For tests: use the named kernel ("generic", "avx2", "avx512") if this
   machine has it. Returns 1 on success. Not thread-safe. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((unused))
#endif
static int pf__force_kernel(const char *name) {
    const pf__kernel *k = pf__pick_kernel(name);
    if (!k) return 0;
    pf__kern = *k;
    pf__kern_ready = 1;
    return 1;
}

/* packing buffers: B block shared by the team (owned by the calling
   thread), A micro-panel private to each thread; 64-byte aligned */
#if defined(__GNUC__) || defined(__clang__)
#define PF__ALIGN64 __attribute__((aligned(64)))
#define PF__PREFETCH(p) __builtin_prefetch(p)           /* into L1 */
#define PF__PREFETCH_L2(p) __builtin_prefetch(p, 0, 2) /* into L2 */
#else
#define PF__ALIGN64
#define PF__PREFETCH(p) ((void)0)
#define PF__PREFETCH_L2(p) ((void)0)
#endif
static PF__TLS float pf__bpack[PF__KC * PF__NC] PF__ALIGN64;
static PF__TLS float pf__apack[PF__KC * PF__MR] PF__ALIGN64;

static void pf__linear_backward(pf_real *dinp, pf_real *dW, pf_real *dbias, const pf_real *dout,
                                const pf_real *inp, const pf_real *W, int N, int IC, int OC);
/* An epilogue runs on rows [i0, i0+mr) x columns [j0, j0+nc) of C as soon
   as they are final, while they are still in cache (e.g. GELU after fc1). */
typedef void (*pf__epi_fn)(void *ctx, int i0, int mr, int j0, int nc);
static void pf__gemm_x(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                       float *C, int ldc, int accumulate, const float *bias, int par, pf__epi_fn epi, void *ctx);
static void pf__gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
                     int ldc, int accumulate, const float *bias) {
    pf__gemm_x(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, bias, 1, NULL, NULL);
}
static void pf__gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                          float *C, int ldc, int accumulate, const float *bias, int par, pf__epi_fn epi, void *ctx);
/* B pre-packed by pf__pack_b (ta = 0 only); NULL: pack as usual */
static PF__TLS const float *pf__bpre;

/* Size (floats) and contents of B (or B^T) packed for a GEMM with ta = 0,
   block by block in the order pf__gemm_x walks them. dst NULL: size only. */
static size_t pf__pack_b(float *dst, const float *B, int ldb, int tb, int N, int K) {
    size_t off = 0;
    int jc, pc, p, k, j;
    for (jc = 0; jc < N; jc += PF__NC) {
        int nc = N - jc < PF__NC ? N - jc : PF__NC, npanel = (nc + PF__NR - 1) / PF__NR;
        for (pc = 0; pc < K; pc += PF__KC) {
            int kc = K - pc < PF__KC ? K - pc : PF__KC;
            for (p = 0; p < npanel && dst; p++) {
                float *d = dst + off + (size_t)p * kc * PF__NR;
                int j0 = jc + p * PF__NR, nr = N - j0 < PF__NR ? N - j0 : PF__NR;
                for (k = 0; k < kc; k++, d += PF__NR)
                    for (j = 0; j < PF__NR; j++)
                        d[j] = j >= nr ? 0.0f : tb ? B[(size_t)(j0 + j) * ldb + pc + k] : B[(size_t)(pc + k) * ldb + j0 + j];
            }
            off += (size_t)npanel * kc * PF__NR;
        }
    }
    return off;
}
/* One (column block, depth block) of pf__gemm_x on thread tid of nth: pack
   this thread's share of the B panels, wait for the team, then run this
   thread's share of the micro-rows. With nth 1 no OpenMP is involved at all
   (the small per-head GEMMs of attention run that way inside a parallel loop). */
static void pf__gemm_block(int ta, int tb, int M, int N, const float *A, int lda, const float *B, int ldb, float *C,
                           int ldc, int jc, int nc, int pc, int kc, int K, int load_c, const float *bz, float *bp,
                           int pack, pf__kernel kern, pf__epi_fn epi, void *ctx, int tid, int nth) {
    int MR = kern.mr, npanel = (nc + PF__NR - 1) / PF__NR, nmicro = (M + MR - 1) / MR, p, r;
    /* pack B[pc:pc+kc, jc:jc+nc] into panels [kc][NR] */
    for (p = tid * npanel / nth; pack && p < (tid + 1) * npanel / nth; p++) {
        float *dst = bp + (size_t)p * kc * PF__NR;
        int j0 = jc + p * PF__NR, nr = N - j0 < PF__NR ? N - j0 : PF__NR, k, j;
        if (!tb) { /* rows of B: contiguous copies (memcpy is vectorised) */
            for (k = 0; k < kc; k++, dst += PF__NR) {
                memcpy(dst, B + (size_t)(pc + k) * ldb + j0, (size_t)nr * sizeof(float));
                for (j = nr; j < PF__NR; j++) dst[j] = 0.0f;
            }
        } else { /* B^T: 32 rows of B walked together, one column per k */
            for (k = 0; k < kc; k++, dst += PF__NR) {
                const float *src = B + (size_t)j0 * ldb + pc + k;
                for (j = 0; j < nr; j++) dst[j] = src[(size_t)j * ldb];
                for (j = nr; j < PF__NR; j++) dst[j] = 0.0f;
            }
        }
    }
    if (nth > 1) {
        PF__OMP(barrier)
    }
    /* micro-rows of A against every panel */
    for (r = tid * nmicro / nth; r < (tid + 1) * nmicro / nth; r++) {
        int i0 = r * MR, mr = M - i0 < MR ? M - i0 : MR, i, k, q;
        float *ap = pf__apack;
        int lc = load_c;
#ifdef PF__X86
        if (MR == 12 && mr == 12) { /* AVX-512, full rows: read A in place */
            const float *a0 = !ta ? A + (size_t)i0 * lda + pc : A + (size_t)pc * lda + i0;
            long rs = !ta ? lda : 1, cs = !ta ? 1 : lda;
            for (q = 0; q < npanel; q++) {
                int j0 = q * PF__NR, nr = nc - j0 < PF__NR ? nc - j0 : PF__NR;
                pf__kernel_avx512_direct(kc, a0, rs, cs, bp + (size_t)q * kc * PF__NR, C + (size_t)i0 * ldc + jc + j0,
                                         ldc, 12, nr, load_c, bz ? bz + j0 : NULL);
            }
            if (epi && pc + kc >= K) epi(ctx, i0, mr, jc, nc);
            continue;
        }
#endif
        if (!ta) { /* rows of A: read each row once, contiguously */
            for (i = 0; i < MR; i++) {
                const float *src = A + (size_t)(i0 + i) * lda + pc;
                if (i < mr) for (k = 0; k < kc; k++) ap[k * MR + i] = src[k];
                else for (k = 0; k < kc; k++) ap[k * MR + i] = 0.0f;
            }
        } else { /* columns of A^T: MR contiguous values per k */
            for (k = 0; k < kc; k++) {
                const float *src = A + (size_t)(pc + k) * lda + i0;
                for (i = 0; i < MR; i++) ap[k * MR + i] = i < mr ? src[i] : 0.0f;
            }
        }
        if (bz) { /* these rows start from the bias */
            for (i = 0; i < mr; i++) memcpy(C + (size_t)(i0 + i) * ldc + jc, bz, (size_t)nc * sizeof(float));
            lc = 1;
        }
        for (q = 0; q < npanel; q++) {
            int j0 = q * PF__NR, nr = nc - j0 < PF__NR ? nc - j0 : PF__NR;
            kern.fn(kc, ap, bp + (size_t)q * kc * PF__NR, C + (size_t)i0 * ldc + jc + j0, ldc, mr, nr, lc);
        }
        if (epi && pc + kc >= K) epi(ctx, i0, mr, jc, nc);
    }
}

/* par 0: run on the calling thread only (inside a parallel loop) */
static void pf__gemm_x(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                       float *C, int ldc, int accumulate, const float *bias, int par, pf__epi_fn epi, void *ctx) {
    pf__kernel kern = pf__get_kernel();
    int jc, pc, nth = par ? pf_get_threads() : 1;
    float *bp = pf__bpack;
    const float *bpre = ta ? NULL : pf__bpre;
    size_t bpre_off = 0;
    pf__bpre = NULL; /* one use, whatever happens below */
    if (M <= 0 || N <= 0) return;
    if (pf__bf16 && K > 0) { pf__gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, bias, par, epi, ctx); return; }
    if (K <= 0) { /* C = bias or 0 (or unchanged) */
        int i, j;
        if (!accumulate)
            for (i = 0; i < M; i++)
                for (j = 0; j < N; j++) C[(size_t)i * ldc + j] = bias ? bias[j] : 0.0f;
        if (epi) epi(ctx, 0, M, 0, N);
        return;
    }
    for (jc = 0; jc < N; jc += PF__NC) {
        int nc = N - jc < PF__NC ? N - jc : PF__NC, npanel = (nc + PF__NR - 1) / PF__NR;
        /* with A^T the 12 values per k sit in different cache lines: a
           shorter depth keeps those lines and the B panel in L1 */
        int KCB = ta ? PF__KC / 3 : PF__KC;
        for (pc = 0; pc < K; pc += KCB) {
            int kc = K - pc < KCB ? K - pc : KCB, load_c = accumulate || pc > 0;
            const float *bz = bias && pc == 0 && !accumulate ? bias + jc : NULL; /* C starts from the bias */
            if (bpre) { bp = (float *)(bpre + bpre_off); bpre_off += (size_t)npanel * kc * PF__NR; }
            if (nth > 1) {
                PF__OMP(parallel)
                {
#ifdef _OPENMP
                    pf__gemm_block(ta, tb, M, N, A, lda, B, ldb, C, ldc, jc, nc, pc, kc, K, load_c, bz, bp, !bpre,
                                   kern, epi, ctx, omp_get_thread_num(), omp_get_num_threads());
#endif
                }
            } else {
                pf__gemm_block(ta, tb, M, N, A, lda, B, ldb, C, ldc, jc, nc, pc, kc, K, load_c, bz, bp, !bpre, kern,
                               epi, ctx, 0, 1);
            }
        }
    }
}

/* ---- bf16 GEMM: the same blocking over operands rounded to bf16 ----
   Packed formats hold bf16 pairs in 32-bit words: a word is the bf16 of
   op(X) at k = 2p (low half) and k = 2p + 1 (high half), zero past K. B
   panels are [kc/2][NR] words; the A micro-panel holds 12 rows of words,
   word (i, p) at a[i*rs + p*cs] (rows of A: rs = kc/2, cs = 1; A^T: rs 1,
   cs 12). The kernel adds the products of one word pair per k pair, the
   odd one first, each addition rounded once (vdpbf16ps); the portable
   kernel does the same arithmetic in plain C (pf_gemm_bf16_ref's order). */

static uint32_t pf__f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float pf__u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
/* fp32 -> bf16 bits as vcvtneps2bf16 (Intel SDM convert_fp32_to_bfloat16) */
static uint16_t pf__bf16_bits(float f) {
    uint32_t u = pf__f2u(f);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);      /* zero, subnormal: signed 0 */
    if ((u & 0x7F800000u) == 0x7F800000u)                                      /* inf; NaN made quiet */
        return (uint16_t)((u >> 16) | ((u & 0x007FFFFFu) ? 0x0040u : 0u));
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);                 /* nearest even */
}
static float pf__bf16_float(uint16_t h) { return pf__u2f((uint32_t)h << 16); }
/* fp32 addition results as vdpbf16ps leaves them: subnormals to signed 0 */
static float pf__ftz(float x) { return fabsf(x) < FLT_MIN ? (x < 0 || (x == 0 && signbit(x)) ? -0.0f : 0.0f) : x; }
/* acc + lo/hi products of the word pair, as one lane of vdpbf16ps */
static float pf__dp_pair(float acc, uint32_t a, uint32_t b) {
    acc = pf__ftz(fmaf(pf__bf16_float((uint16_t)(a >> 16)), pf__bf16_float((uint16_t)(b >> 16)), pf__ftz(acc)));
    return pf__ftz(fmaf(pf__bf16_float((uint16_t)a), pf__bf16_float((uint16_t)b), acc));
}

PFDEF float pf_bf16_round(float x) { return pf__bf16_float(pf__bf16_bits(x)); }

/* the bf16 kernel's signature: c[mr,nr] (+)= words a . panel b over kp pairs */
typedef void (*pf__bkernel_fn)(int kp, const uint32_t *a, long rs, long cs, const uint32_t *b, float *c, long ldc,
                               int mr, int nr, int load_c);
static void pf__bkernel_generic(int kp, const uint32_t *a, long rs, long cs, const uint32_t *b, float *c, long ldc,
                                int mr, int nr, int load_c) {
    int i, j, p;
    for (i = 0; i < mr; i++)
        for (j = 0; j < nr; j++) {
            float acc = load_c ? c[i * ldc + j] : 0.0f;
            for (p = 0; p < kp; p++) acc = pf__dp_pair(acc, a[i * rs + p * cs], b[(size_t)p * PF__NR + j]);
            c[i * ldc + j] = acc;
        }
}
/* n floats to bf16 bits */
static void pf__bf16_row_generic(uint16_t *dst, const float *src, int n) {
    int i;
    for (i = 0; i < n; i++) dst[i] = pf__bf16_bits(src[i]);
}
/* n words: bf16 of r0[j] (low half) and r1[j] (high half; r1 NULL: 0) */
static void pf__bf16_pairs_generic(uint32_t *dst, const float *r0, const float *r1, int n) {
    int j;
    for (j = 0; j < n; j++) dst[j] = (uint32_t)pf__bf16_bits(r0[j]) | (r1 ? (uint32_t)pf__bf16_bits(r1[j]) << 16 : 0u);
}

#ifdef PF__X86
#define PF__BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
/* 12 x 32 tile in 24 accumulators, one vdpbf16ps per (row, half) per pair */
PF__BF16_TARGET static void pf__bkernel_avx512(int kp, const uint32_t *a, long rs, long cs, const uint32_t *b,
                                               float *c, long ldc, int mr, int nr, int load_c) {
    int full = mr == 12 && nr == PF__NR, p;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    __m512 c80 = c00, c81 = c00, c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;
    if (load_c && full) {
#define PF__LD(r, i) r##0 = _mm512_loadu_ps(c + (i) * ldc); r##1 = _mm512_loadu_ps(c + (i) * ldc + 16)
        PF__LD(c0, 0); PF__LD(c1, 1); PF__LD(c2, 2); PF__LD(c3, 3); PF__LD(c4, 4); PF__LD(c5, 5);
        PF__LD(c6, 6); PF__LD(c7, 7); PF__LD(c8, 8); PF__LD(c9, 9); PF__LD(ca, 10); PF__LD(cb, 11);
#undef PF__LD
    } else if (load_c) { /* a partial tile: its valid part, zeros elsewhere */
        float t[12 * PF__NR];
        int i, j;
        for (i = 0; i < 12; i++)
            for (j = 0; j < PF__NR; j++) t[i * PF__NR + j] = i < mr && j < nr ? c[i * ldc + j] : 0.0f;
#define PF__LD(r, i) r##0 = _mm512_loadu_ps(t + (i) * PF__NR); r##1 = _mm512_loadu_ps(t + (i) * PF__NR + 16)
        PF__LD(c0, 0); PF__LD(c1, 1); PF__LD(c2, 2); PF__LD(c3, 3); PF__LD(c4, 4); PF__LD(c5, 5);
        PF__LD(c6, 6); PF__LD(c7, 7); PF__LD(c8, 8); PF__LD(c9, 9); PF__LD(ca, 10); PF__LD(cb, 11);
#undef PF__LD
    }
    for (p = 0; p < kp; p++, a += cs, b += PF__NR) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)b), b1 = (__m512bh)_mm512_load_si512((const void *)(b + 16));
        __m512bh t;
#define PF__DP(r, i) t = (__m512bh)_mm512_set1_epi32((int)a[(i) * rs]); r##0 = _mm512_dpbf16_ps(r##0, t, b0); r##1 = _mm512_dpbf16_ps(r##1, t, b1)
        PF__DP(c0, 0); PF__DP(c1, 1); PF__DP(c2, 2); PF__DP(c3, 3); PF__DP(c4, 4); PF__DP(c5, 5);
        PF__DP(c6, 6); PF__DP(c7, 7); PF__DP(c8, 8); PF__DP(c9, 9); PF__DP(ca, 10); PF__DP(cb, 11);
#undef PF__DP
    }
    if (full) {
#define PF__ST(r, i) _mm512_storeu_ps(c + (i) * ldc, r##0); _mm512_storeu_ps(c + (i) * ldc + 16, r##1)
        PF__ST(c0, 0); PF__ST(c1, 1); PF__ST(c2, 2); PF__ST(c3, 3); PF__ST(c4, 4); PF__ST(c5, 5);
        PF__ST(c6, 6); PF__ST(c7, 7); PF__ST(c8, 8); PF__ST(c9, 9); PF__ST(ca, 10); PF__ST(cb, 11);
#undef PF__ST
    } else {
        float t[12 * PF__NR];
#define PF__ST(r, i) _mm512_storeu_ps(t + (i) * PF__NR, r##0); _mm512_storeu_ps(t + (i) * PF__NR + 16, r##1)
        PF__ST(c0, 0); PF__ST(c1, 1); PF__ST(c2, 2); PF__ST(c3, 3); PF__ST(c4, 4); PF__ST(c5, 5);
        PF__ST(c6, 6); PF__ST(c7, 7); PF__ST(c8, 8); PF__ST(c9, 9); PF__ST(ca, 10); PF__ST(cb, 11);
#undef PF__ST
        _mm256_zeroupper();
        pf__store_tile(c, ldc, t, mr, nr, 0);
    }
}
PF__BF16_TARGET static void pf__bf16_row_avx512(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512((void *)(dst + i), (__m512i)h);
    }
    for (; i < n; i += 16) {
        int r = n - i < 16 ? n - i : 16;
        __mmask16 m = (__mmask16)((1u << r) - 1);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16((void *)(dst + i), m, (__m256i)h);
    }
    _mm256_zeroupper();
}

PF__BF16_TARGET static void pf__bf16_pairs_avx512(uint32_t *dst, const float *r0, const float *r1, int n) {
    /* both rows in one vector (r0's 16 values in lanes 0..15, r1's in
       16..31); word t of the result = lanes t and 16 + t */
    static const uint16_t inter[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    __m512i idx = _mm512_loadu_si512((const void *)inter);
    int j;
    for (j = 0; j < n; j += 16) {
        int r = n - j < 16 ? n - j : 16;
        __mmask16 m = (__mmask16)((1u << r) - 1);
        __m512 lo = _mm512_maskz_loadu_ps(m, r0 + j), hi = r1 ? _mm512_maskz_loadu_ps(m, r1 + j) : _mm512_setzero_ps();
        __m512i w = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_mask_storeu_epi32((void *)(dst + j), m, w);
    }
    _mm256_zeroupper();
}
#endif

/* the bf16 kernel and converters this machine runs (NULL kernel: none) */
typedef struct pf__bkernel {
    pf__bkernel_fn fn;
    void (*row)(uint16_t *, const float *, int);
    void (*pairs)(uint32_t *, const float *, const float *, int);
    const char *name;
} pf__bkernel;
static int pf__bf16_hw(void) {
#ifdef PF__X86
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl"))
        return 0;
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return 0;
    return (eax >> 5) & 1; /* CPUID.(EAX=7,ECX=1):EAX[5] AVX512_BF16 */
#else
    return 0;
#endif
}
static pf__bkernel pf__bkern;
static pf__bkernel pf__get_bkernel(void) {
    if (!pf__bkern.fn) {
        pf__bkernel k = {pf__bkernel_generic, pf__bf16_row_generic, pf__bf16_pairs_generic, "generic"};
#ifdef PF__X86
        if (pf__bf16_hw()) {
            k.fn = pf__bkernel_avx512; k.row = pf__bf16_row_avx512; k.pairs = pf__bf16_pairs_avx512;
            k.name = "avx512_bf16";
        }
#endif
        pf__bkern = k; /* idempotent: races write the same */
    }
    return pf__bkern;
}
/* For tests: the emulated ("generic") or the hardware ("avx512_bf16") bf16
   kernel, and the bf16 mode on with it even where the hardware lacks it.
   Returns 1 on success. Not thread-safe. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((unused))
#endif
static int pf__force_bf16(const char *name, int on) {
    pf__bkernel k = {pf__bkernel_generic, pf__bf16_row_generic, pf__bf16_pairs_generic, "generic"};
    if (name && !strcmp(name, "avx512_bf16")) {
#ifdef PF__X86
        if (!pf__bf16_hw()) return 0;
        k.fn = pf__bkernel_avx512; k.row = pf__bf16_row_avx512; k.pairs = pf__bf16_pairs_avx512;
        k.name = "avx512_bf16";
#else
        return 0;
#endif
    } else if (name && strcmp(name, "generic")) return 0;
    pf__bkern = k;
    pf__bf16 = on != 0;
    return 1;
}

static const char *pf__bf16_kernel_name(void) { return pf__get_bkernel().name; }

PFDEF const char *pf_bf16_missing(void) {
#ifdef PF_DOUBLE
    return "is not in the PF_DOUBLE build (its model runs the double reference loops)";
#elif defined(PF__X86)
    if (pf__bf16_hw()) return NULL;
    return "needs AVX512_BF16 (vdpbf16ps), which this CPU lacks (see the avx512_bf16 flag in lscpu)";
#else
    return "needs AVX512_BF16 (vdpbf16ps), an x86-64 instruction set; this build is not for x86-64";
#endif
}
PFDEF pf_status pf_set_bf16(int on) {
    const char *why = on ? pf_bf16_missing() : NULL;
    if (why) { pf__bf16 = 0; return pf_fail(PF_ERR_ARG, "bf16 on the CPU %s", why); }
    pf__bf16 = on != 0;
    if (on) pf__bkern.fn = NULL; /* pick the hardware kernel */
    return PF_OK;
}
PFDEF int pf_get_bf16(void) { return pf__bf16; }

/* thread-local packing buffers of the bf16 path (words; a row of bf16).
   A^T and B are packed from runs of their rows (PF__AG micro-rows of A^T, a
   thread's whole share of B's panels at once), each run prefetched PF__APF
   rows ahead: packing one micro-row's 12 values per row left the loads
   waiting on memory (40 % of a weight-gradient GEMM's time) */
#define PF__KCB (2 * PF__KC) /* depth block: bf16 words take the bytes of fp32's */
#define PF__AG 8
#ifndef PF__APF
#define PF__APF 16
#endif
static PF__TLS uint32_t pf__bpack16[(PF__KCB / 2) * PF__NC] PF__ALIGN64;
static PF__TLS uint32_t pf__apack16[(PF__KCB / 2) * PF__MR * PF__AG] PF__ALIGN64;
static PF__TLS uint16_t pf__brow16[PF__KCB + 2] PF__ALIGN64;

/* Rows pc + 2k and pc + 2k + 1 of X (ld apart), columns c0 .. c0 + ncol, as
   words (bf16 pairs), dealt out to npan panels of w words: panel q's word j
   of pair k at dst[(q * kp + k) * w + j], zero past ncol; npan * w <= PF__NC */
static void pf__pack_row_pairs(uint32_t *dst, const float *X, int ld, int pc, int kc, int c0, int ncol, int npan, int w,
                               pf__bkernel kern) {
    uint32_t run[PF__NC];
    int kp = (kc + 1) / 2, k, j, q;
    for (k = 0; k < kp; k++) {
        const float *r0 = X + (size_t)(pc + 2 * k) * ld + c0;
        if (2 * k + PF__APF + 1 < kc)
            for (j = 0; j < ncol; j += 16) {
                PF__PREFETCH(r0 + (size_t)PF__APF * ld + j);
                PF__PREFETCH(r0 + (size_t)(PF__APF + 1) * ld + j);
            }
        kern.pairs(run, r0, 2 * k + 1 < kc ? r0 + ld : NULL, ncol);
        for (j = ncol; j < npan * w; j++) run[j] = 0;
        for (q = 0; q < npan; q++) memcpy(dst + ((size_t)q * kp + k) * w, run + q * w, (size_t)w * sizeof(uint32_t));
    }
}

/* pf__gemm_block on bf16 words: pack B's panels (this thread's share) as
   words, wait, pack each micro-row of A (of A^T: PF__AG at a time) as
   words, run the kernel */
static void pf__gemm_block_bf16(int ta, int tb, int M, int N, const float *A, int lda, const float *B, int ldb,
                                float *C, int ldc, int jc, int nc, int pc, int kc, int K, int load_c, const float *bz,
                                uint32_t *bp, pf__bkernel kern, pf__epi_fn epi, void *ctx, int tid, int nth) {
    int npanel = (nc + PF__NR - 1) / PF__NR, nmicro = (M + 11) / 12, kp = (kc + 1) / 2, p, r;
    uint16_t *t0 = pf__brow16;
    if (!tb) { /* rows 2q and 2q+1 of B, interleaved: this thread's panels, a row run at a time */
        int p0 = tid * npanel / nth, p1 = (tid + 1) * npanel / nth, j0 = jc + p0 * PF__NR;
        int ncol = N - j0 < (p1 - p0) * PF__NR ? N - j0 : (p1 - p0) * PF__NR;
        if (p1 > p0) pf__pack_row_pairs(bp + (size_t)p0 * kp * PF__NR, B, ldb, pc, kc, j0, ncol, p1 - p0, PF__NR, kern);
    } else { /* B^T: row j of the source holds column j's k run, already in pairs */
        for (p = tid * npanel / nth; p < (tid + 1) * npanel / nth; p++) {
            uint32_t *dst = bp + (size_t)p * kp * PF__NR;
            int j0 = jc + p * PF__NR, nr = N - j0 < PF__NR ? N - j0 : PF__NR, k, j;
            for (j = 0; j < nr; j++) { /* the row's bf16 run, read as words, down column j */
                kern.row(t0, B + (size_t)(j0 + j) * ldb + pc, kc);
                t0[kc] = 0;
                for (k = 0; k < kp; k++) memcpy(dst + (size_t)k * PF__NR + j, t0 + 2 * k, sizeof(uint32_t));
            }
            for (k = 0; k < kp && nr < PF__NR; k++)
                for (j = nr; j < PF__NR; j++) dst[(size_t)k * PF__NR + j] = 0;
        }
    }
    if (nth > 1) {
        PF__OMP(barrier)
    }
    for (r = tid * nmicro / nth; r < (tid + 1) * nmicro / nth; r++) {
        int i0 = r * 12, mr = M - i0 < 12 ? M - i0 : 12, i, q, lc = load_c;
        uint32_t *ap;
        long rs, cs;
        if (!ta) { /* rows of A: each row's words are its bf16 run */
            ap = pf__apack16;
            for (i = 0; i < mr; i++) {
                uint16_t *row = (uint16_t *)(ap + (size_t)i * kp);
                kern.row(row, A + (size_t)(i0 + i) * lda + pc, kc);
                if (kc & 1) row[kc] = 0;
            }
            rs = kp; cs = 1;
        } else { /* columns of A^T: 12 values per k, paired with the next k */
            int g = (r - tid * nmicro / nth) % PF__AG;
            if (!g) { /* pack the next PF__AG micro-rows at once: longer runs of each row of A */
                int rend = (tid + 1) * nmicro / nth, ng = rend - r < PF__AG ? rend - r : PF__AG;
                int ncol = M - i0 < ng * 12 ? M - i0 : ng * 12;
                pf__pack_row_pairs(pf__apack16, A, lda, pc, kc, i0, ncol, ng, 12, kern);
            }
            ap = pf__apack16 + (size_t)g * kp * 12;
            rs = 1; cs = 12;
        }
        if (bz) { /* these rows start from the bias */
            for (i = 0; i < mr; i++) memcpy(C + (size_t)(i0 + i) * ldc + jc, bz, (size_t)nc * sizeof(float));
            lc = 1;
        }
        for (q = 0; q < npanel; q++) {
            int j0 = q * PF__NR, nr = nc - j0 < PF__NR ? nc - j0 : PF__NR;
            kern.fn(kp, ap, rs, cs, bp + (size_t)q * kp * PF__NR, C + (size_t)i0 * ldc + jc + j0, ldc, mr, nr, lc);
        }
        if (epi && pc + kc >= K) epi(ctx, i0, mr, jc, nc);
    }
}

/* pf__gemm_x in bf16 (the caller has checked the sizes) */
static void pf__gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                          float *C, int ldc, int accumulate, const float *bias, int par, pf__epi_fn epi, void *ctx) {
    pf__bkernel kern = pf__get_bkernel();
    int jc, pc, nth = par ? pf_get_threads() : 1;
    uint32_t *bp = pf__bpack16;
    for (jc = 0; jc < N; jc += PF__NC) {
        int nc = N - jc < PF__NC ? N - jc : PF__NC;
        for (pc = 0; pc < K; pc += PF__KCB) { /* even: k pairs never straddle two blocks */
            int kc = K - pc < PF__KCB ? K - pc : PF__KCB, load_c = accumulate || pc > 0;
            const float *bz = bias && pc == 0 && !accumulate ? bias + jc : NULL;
            if (nth > 1) {
                PF__OMP(parallel)
                {
#ifdef _OPENMP
                    pf__gemm_block_bf16(ta, tb, M, N, A, lda, B, ldb, C, ldc, jc, nc, pc, kc, K, load_c, bz, bp, kern,
                                        epi, ctx, omp_get_thread_num(), omp_get_num_threads());
#endif
                }
            } else {
                pf__gemm_block_bf16(ta, tb, M, N, A, lda, B, ldb, C, ldc, jc, nc, pc, kc, K, load_c, bz, bp, kern, epi,
                                    ctx, 0, 1);
            }
        }
    }
}

PFDEF pf_status pf_gemm_bf16_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                                 float *C, int ldc, int accumulate) {
    int i, j, k;
    if (M < 0 || N < 0 || K < 0) return pf_fail(PF_ERR_ARG, "pf_gemm_bf16_ref: sizes M=%d N=%d K=%d", M, N, K);
    if (!M || !N) return PF_OK;
    PF__NEED(C, "pf_gemm_bf16_ref", "C");
    if (ldc < N) return pf_fail(PF_ERR_ARG, "pf_gemm_bf16_ref: ldc %d < N %d", ldc, N);
    if (K > 0) {
        PF__NEED(A, "pf_gemm_bf16_ref", "A");
        PF__NEED(B, "pf_gemm_bf16_ref", "B");
        if (lda < (ta ? M : K)) return pf_fail(PF_ERR_ARG, "pf_gemm_bf16_ref: lda %d < %s %d", lda, ta ? "M" : "K", ta ? M : K);
        if (ldb < (tb ? K : N)) return pf_fail(PF_ERR_ARG, "pf_gemm_bf16_ref: ldb %d < %s %d", ldb, tb ? "K" : "N", tb ? K : N);
    }
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            float acc = accumulate ? C[(size_t)i * ldc + j] : 0.0f;
            for (k = 0; k < K; k += 2) { /* operands past K are zeros */
                float a0 = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b0 = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                float a1 = k + 1 >= K ? 0.0f : ta ? A[(size_t)(k + 1) * lda + i] : A[(size_t)i * lda + k + 1];
                float b1 = k + 1 >= K ? 0.0f : tb ? B[(size_t)j * ldb + k + 1] : B[(size_t)(k + 1) * ldb + j];
                uint32_t wa = (uint32_t)pf__bf16_bits(a0) | (uint32_t)pf__bf16_bits(a1) << 16;
                uint32_t wb = (uint32_t)pf__bf16_bits(b0) | (uint32_t)pf__bf16_bits(b1) << 16;
                acc = pf__dp_pair(acc, wa, wb);
            }
            C[(size_t)i * ldc + j] = acc;
        }
    return PF_OK;
}

PFDEF pf_status pf_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc, int accumulate) {
    if (M < 0 || N < 0 || K < 0) return pf_fail(PF_ERR_ARG, "pf_gemm: sizes M=%d N=%d K=%d", M, N, K);
    if (!M || !N) return PF_OK;
    PF__NEED(C, "pf_gemm", "C");
    if (ldc < N) return pf_fail(PF_ERR_ARG, "pf_gemm: ldc %d < N %d", ldc, N);
    if (K > 0) {
        PF__NEED(A, "pf_gemm", "A");
        PF__NEED(B, "pf_gemm", "B");
        if (lda < (ta ? M : K)) return pf_fail(PF_ERR_ARG, "pf_gemm: lda %d < %s %d", lda, ta ? "M" : "K", ta ? M : K);
        if (ldb < (tb ? K : N)) return pf_fail(PF_ERR_ARG, "pf_gemm: ldb %d < %s %d", ldb, tb ? "K" : "N", tb ? K : N);
    }
    pf__gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, NULL);
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* vector math for the fast path (AVX-512): exp, erf, and the row/element
   loops built on them. Accuracy: exp within 2 ulp (Cephes polynomial after
   Cody-Waite reduction, vscalefps for 2^n); erf within 1.2e-7 absolute (the
   erfc rational-exponential fit of Numerical Recipes 6.2, whose fractional
   error is < 1.2e-7 everywhere) - the level of float32 rounding. */
#if defined(PF__X86) && !defined(PF_DOUBLE)
#define PF__VEC512 1
#define PF__AVX512 __attribute__((target("avx512f")))

PF__AVX512 static __m512 pf__exp16(__m512 x) {
    __m512 n, r, p;
    /* (the masked forms avoid _mm512_undefined_ps, which g++ 12 warns about) */
    x = _mm512_mask_min_ps(x, 0xFFFF, x, _mm512_set1_ps(88.37626f));
    x = _mm512_mask_max_ps(x, 0xFFFF, x, _mm512_set1_ps(-103.0f));
    n = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    n = _mm512_mask_roundscale_ps(n, 0xFFFF, n, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_mask_scalef_ps(p, 0xFFFF, p, n);
}

PF__AVX512 static __m512 pf__erf16(__m512 x) {
    __m512 z = _mm512_abs_ps(x), t, p, e, d;
    /* t = 1 / (1 + z/2): 14-bit reciprocal estimate and one Newton step
       (relative error ~1e-8, below float rounding; a divide is 4x slower) */
    d = _mm512_fmadd_ps(_mm512_set1_ps(0.5f), z, _mm512_set1_ps(1.0f));
    t = _mm512_mask_rcp14_ps(d, 0xFFFF, d);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
    p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    e = pf__exp16(_mm512_sub_ps(p, _mm512_mul_ps(z, z)));
    e = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(t, e)); /* erf(|x|) */
    return _mm512_mask_sub_ps(e, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps(), e);
}

static __mmask16 pf__tail(int n) { return (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1); }
/* horizontal sum / max in a fixed order (the _mm512_reduce_* helpers warn in g++ 12) */
PF__AVX512 static float pf__hsum16(__m512 v) {
    float t[16], s = 0;
    int i;
    _mm512_storeu_ps(t, v);
    for (i = 0; i < 8; i++) t[i] += t[i + 8];
    for (i = 0; i < 4; i++) t[i] += t[i + 4];
    for (i = 0; i < 4; i++) s += t[i];
    return s;
}
PF__AVX512 static float pf__hmax16(__m512 v) {
    float t[16], m;
    int i;
    _mm512_storeu_ps(t, v);
    m = t[0];
    for (i = 1; i < 16; i++) m = t[i] > m ? t[i] : m;
    return m;
}

/* y = GELU(x) on n elements (one thread) */
PF__AVX512 static void pf__gelu_fwd16(float *y, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 k = pf__tail((int)(n - i < 16 ? n - i : 16));
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 c = _mm512_fmadd_ps(_mm512_set1_ps(0.5f), pf__erf16(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f))),
                                   _mm512_set1_ps(0.5f));
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(v, c));
    }
}
/* dx = dy * GELU'(x), GELU'(x) = Phi(x) + x phi(x) */
PF__AVX512 static void pf__gelu_bwd16(float *dx, const float *dy, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 k = pf__tail((int)(n - i < 16 ? n - i : 16));
        __m512 v = _mm512_maskz_loadu_ps(k, x + i), g = _mm512_maskz_loadu_ps(k, dy + i);
        __m512 cdf = _mm512_fmadd_ps(_mm512_set1_ps(0.5f), pf__erf16(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f))),
                                     _mm512_set1_ps(0.5f));
        __m512 pdf = _mm512_mul_ps(pf__exp16(_mm512_mul_ps(_mm512_mul_ps(v, v), _mm512_set1_ps(-0.5f))),
                                   _mm512_set1_ps(0.39894228040143267794f));
        _mm512_mask_storeu_ps(dx + i, k, _mm512_mul_ps(g, _mm512_fmadd_ps(v, pdf, cdf)));
    }
}
/* row[0..n) = softmax(scale * row) in place */
PF__AVX512 static void pf__softmax16(float *row, int n, float scale) {
    __m512 mx = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps(), sc = _mm512_set1_ps(scale), inv;
    int j;
    float m;
    for (j = 0; j < n; j += 16) {
        __mmask16 k = pf__tail(n - j);
        mx = _mm512_mask_max_ps(mx, k, mx, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + j), sc));
    }
    m = pf__hmax16(mx);
    for (j = 0; j < n; j += 16) {
        __mmask16 k = pf__tail(n - j);
        __m512 e = pf__exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, row + j), sc, _mm512_set1_ps(m)));
        e = _mm512_maskz_mov_ps(k, e);
        sum = _mm512_add_ps(sum, e);
        _mm512_mask_storeu_ps(row + j, k, e);
    }
    inv = _mm512_set1_ps(1.0f / pf__hsum16(sum));
    for (j = 0; j < n; j += 16) {
        __mmask16 k = pf__tail(n - j);
        _mm512_mask_storeu_ps(row + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + j), inv));
    }
}
/* softmax backward: ds = p * (dp - sum(p dp)) * scale, in place over dp */
PF__AVX512 static void pf__softmax_bwd16(float *dp, const float *p, int n, float scale) {
    __m512 acc = _mm512_setzero_ps(), s;
    int j;
    for (j = 0; j < n; j += 16) {
        __mmask16 k = pf__tail(n - j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, p + j), _mm512_maskz_loadu_ps(k, dp + j), acc);
    }
    s = _mm512_set1_ps(pf__hsum16(acc));
    for (j = 0; j < n; j += 16) {
        __mmask16 k = pf__tail(n - j);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp + j), s);
        d = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + j), d), _mm512_set1_ps(scale));
        _mm512_mask_storeu_ps(dp + j, k, d);
    }
}

/* LayerNorm rows (see pf__layernorm_forward / _backward for the math) */
PF__AVX512 static void pf__ln_fwd16(float *y, float *mean, float *rstd, const float *x, const float *w,
                                    const float *b, int C) {
    __m512 acc = _mm512_setzero_ps(), mu, rs;
    float m, v;
    int j;
    for (j = 0; j < C; j += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(pf__tail(C - j), x + j));
    m = pf__hsum16(acc) / (float)C;
    mu = _mm512_set1_ps(m);
    acc = _mm512_setzero_ps();
    for (j = 0; j < C; j += 16) {
        __mmask16 k = pf__tail(C - j);
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + j), mu);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    v = pf__hsum16(acc) / (float)C;
    rs = _mm512_set1_ps(1.0f / sqrtf(v + 1e-5f));
    for (j = 0; j < C; j += 16) {
        __mmask16 k = pf__tail(C - j);
        __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mu), rs);
        _mm512_mask_storeu_ps(y + j, k, _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(k, w + j), _mm512_maskz_loadu_ps(k, b + j)));
    }
    *mean = m;
    *rstd = 1.0f / sqrtf(v + 1e-5f);
}
PF__AVX512 static void pf__ln_bwd16(float *dx, const float *dy, const float *x, const float *w, float mean, float rstd,
                                    int C, int acc_out) {
    __m512 s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), mu = _mm512_set1_ps(mean), rs = _mm512_set1_ps(rstd);
    __m512 a, c;
    int j;
    for (j = 0; j < C; j += 16) {
        __mmask16 k = pf__tail(C - j);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + j), _mm512_maskz_loadu_ps(k, w + j));
        __m512 xh = _mm512_maskz_mul_ps(k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mu), rs);
        s1 = _mm512_add_ps(s1, g);
        s2 = _mm512_fmadd_ps(g, xh, s2);
    }
    a = _mm512_set1_ps(pf__hsum16(s1) / (float)C);
    c = _mm512_set1_ps(pf__hsum16(s2) / (float)C);
    for (j = 0; j < C; j += 16) {
        __mmask16 k = pf__tail(C - j);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + j), _mm512_maskz_loadu_ps(k, w + j));
        __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mu), rs);
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(g, a), _mm512_mul_ps(xh, c)), rs);
        if (acc_out) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, dx + j));
        _mm512_mask_storeu_ps(dx + j, k, v);
    }
}
/* s[c0..c1) = column sums of x [N, C] over rows in order, c1 - c0 <= 32 */
PF__AVX512 static void pf__colsum16(float *s, const float *x, int N, int C, int c0, int c1) {
    __mmask16 k0 = pf__tail(c1 - c0), k1 = pf__tail(c1 - c0 - 16 > 0 ? c1 - c0 - 16 : 0);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int n;
    for (n = 0; n < N; n++) {
        const float *r = x + (size_t)n * C + c0;
        a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(k0, r));
        a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(k1, r + 16));
    }
    _mm512_mask_storeu_ps(s + c0, k0, a0);
    _mm512_mask_storeu_ps(s + c0 + 16, k1, a1);
}

/* dw[c0..c1), db[c0..c1) = column sums over N rows of dy*xhat and dy (rows
   in order), c1 - c0 <= 32 */
PF__AVX512 static void pf__ln_colsum16(float *dw, float *db, const float *dy, const float *x, const float *mean,
                                       const float *rstd, int N, int C, int c0, int c1) {
    __mmask16 k0 = pf__tail(c1 - c0), k1 = pf__tail(c1 - c0 - 16 > 0 ? c1 - c0 - 16 : 0);
    __m512 w0 = _mm512_setzero_ps(), w1 = w0, b0 = w0, b1 = w0;
    int n;
    for (n = 0; n < N; n++) {
        const float *g = dy + (size_t)n * C + c0, *xr = x + (size_t)n * C + c0;
        __m512 mu = _mm512_set1_ps(mean[n]), rs = _mm512_set1_ps(rstd[n]);
        __m512 g0 = _mm512_maskz_loadu_ps(k0, g), g1 = _mm512_maskz_loadu_ps(k1, g + 16);
        __m512 x0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k0, xr), mu), rs);
        __m512 x1 = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k1, xr + 16), mu), rs);
        w0 = _mm512_fmadd_ps(g0, x0, w0); w1 = _mm512_fmadd_ps(g1, x1, w1);
        b0 = _mm512_add_ps(b0, g0); b1 = _mm512_add_ps(b1, g1);
    }
    _mm512_mask_storeu_ps(dw + c0, k0, w0); _mm512_mask_storeu_ps(dw + c0 + 16, k1, w1);
    _mm512_mask_storeu_ps(db + c0, k0, b0); _mm512_mask_storeu_ps(db + c0 + 16, k1, b1);
}
#endif

#ifndef PF_DOUBLE
#ifdef PF__VEC512
static int pf__avx512(void) { return pf__get_kernel().mr == 12; }
#endif

/* softmax of a scaled row in place (any machine) */
static void pf__softmax_row(float *row, int n, float scale) {
    float mx = -INFINITY, sum = 0;
    int j;
#ifdef PF__VEC512
    if (pf__avx512()) { pf__softmax16(row, n, scale); return; }
#endif
    for (j = 0; j < n; j++) if (row[j] * scale > mx) mx = row[j] * scale;
    for (j = 0; j < n; j++) { row[j] = expf(row[j] * scale - mx); sum += row[j]; }
    for (j = 0; j < n; j++) row[j] /= sum;
}
static void pf__softmax_row_bwd(float *dp, const float *p, int n, float scale) {
    float s = 0;
    int j;
#ifdef PF__VEC512
    if (pf__avx512()) { pf__softmax_bwd16(dp, p, n, scale); return; }
#endif
    for (j = 0; j < n; j++) s += p[j] * dp[j];
    for (j = 0; j < n; j++) dp[j] = p[j] * (dp[j] - s) * scale;
}

/* prefetch n rows of w floats, ld apart, into L2: the next head's slices
   of qkv (rows 2.3 KB apart) were read at memory latency, a row at a time */
static void pf__prefetch_rows(const float *p, int n, int w, size_t ld) {
    int i, j;
    for (i = 0; i < n; i++)
        for (j = 0; j < w; j += 16) PF__PREFETCH_L2(p + (size_t)i * ld + j);
}

/* Fast attention: per (image, head), S = Q K^T, row softmax, Y = P V as
   small GEMMs on the calling thread; the T x T tile stays in L1/L2. */
static void pf__attention_forward_fast(float *out, float *att, const float *qkv, int B, int T, int D, int H) {
    int bh, hd = D / H;
    float scale = 1.0f / sqrtf((float)hd);
    PF__OMP(parallel for schedule(static))
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, i;
        const float *q = qkv + (size_t)b * T * 3 * D + h * hd, *k = q + D, *v = q + 2 * D;
        float *S = att + (size_t)bh * T * T;
        if (bh + 1 < B * H) { /* the next head's q, k, v */
            const float *qn = qkv + (size_t)((bh + 1) / H) * T * 3 * D + ((bh + 1) % H) * hd;
            pf__prefetch_rows(qn, T, hd, 3 * (size_t)D);
            pf__prefetch_rows(qn + D, T, hd, 3 * (size_t)D);
            pf__prefetch_rows(qn + 2 * D, T, hd, 3 * (size_t)D);
        }
        pf__gemm_x(0, 1, T, T, hd, q, 3 * D, k, 3 * D, S, T, 0, NULL, 0, NULL, NULL);
        for (i = 0; i < T; i++) pf__softmax_row(S + (size_t)i * T, T, scale);
        pf__gemm_x(0, 0, T, hd, T, S, T, v, 3 * D, out + (size_t)b * T * D + h * hd, D, 0, NULL, 0, NULL, NULL);
    }
}
static void pf__attention_backward_fast(float *dqkv, float *datt, const float *dout, const float *qkv,
                                        const float *att, int B, int T, int D, int H) {
    int bh, hd = D / H;
    float scale = 1.0f / sqrtf((float)hd);
    PF__OMP(parallel for schedule(static))
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, i;
        const float *q = qkv + (size_t)b * T * 3 * D + h * hd, *k = q + D, *v = q + 2 * D;
        const float *P = att + (size_t)bh * T * T, *dy = dout + (size_t)b * T * D + h * hd;
        float *dP = datt + (size_t)bh * T * T, *dq = dqkv + (size_t)b * T * 3 * D + h * hd;
        if (bh + 1 < B * H) { /* the next head's q, k, v and dY */
            int bn = (bh + 1) / H, hn = (bh + 1) % H;
            const float *qn = qkv + (size_t)bn * T * 3 * D + hn * hd;
            pf__prefetch_rows(qn, T, hd, 3 * (size_t)D);
            pf__prefetch_rows(qn + D, T, hd, 3 * (size_t)D);
            pf__prefetch_rows(qn + 2 * D, T, hd, 3 * (size_t)D);
            pf__prefetch_rows(dout + (size_t)bn * T * D + hn * hd, T, hd, (size_t)D);
        }
        pf__gemm_x(0, 1, T, T, hd, dy, D, v, 3 * D, dP, T, 0, NULL, 0, NULL, NULL);          /* dP = dY V^T */
        pf__gemm_x(1, 0, T, hd, T, P, T, dy, D, dq + 2 * D, 3 * D, 0, NULL, 0, NULL, NULL);  /* dV = P^T dY */
        for (i = 0; i < T; i++) pf__softmax_row_bwd(dP + (size_t)i * T, P + (size_t)i * T, T, scale);
        pf__gemm_x(0, 0, T, hd, T, dP, T, k, 3 * D, dq, 3 * D, 0, NULL, 0, NULL, NULL);      /* dQ = dS K */
        pf__gemm_x(1, 0, T, hd, T, dP, T, q, 3 * D, dq + D, 3 * D, 0, NULL, 0, NULL, NULL);  /* dK = dS^T Q */
    }
}
#endif

#ifdef PF__VEC512
/* GELU fused into the GEMM epilogues (AVX-512, no dropout): fc1 forward
   writes h and g = GELU(h) while the rows are in cache; fc2's backward
   turns dg into dh = dg * GELU'(h) the same way. */
typedef struct pf__gelu_ctx { float *out; const float *h; int ld; } pf__gelu_ctx;
static void pf__epi_gelu_fwd(void *ctx, int i0, int mr, int j0, int nc) {
    pf__gelu_ctx *c = (pf__gelu_ctx *)ctx;
    int i;
    for (i = i0; i < i0 + mr; i++)
        pf__gelu_fwd16(c->out + (size_t)i * c->ld + j0, c->h + (size_t)i * c->ld + j0, (size_t)nc);
}
static void pf__epi_gelu_bwd(void *ctx, int i0, int mr, int j0, int nc) {
    pf__gelu_ctx *c = (pf__gelu_ctx *)ctx;
    int i;
    for (i = i0; i < i0 + mr; i++) {
        float *d = c->out + (size_t)i * c->ld + j0;
        pf__gelu_bwd16(d, d, c->h + (size_t)i * c->ld + j0, (size_t)nc);
    }
}
/* h = u W^T + b, g = GELU(h) */
static void pf__fc1_gelu_forward(float *h, float *g, const float *u, const float *W, const float *b, int N, int IC,
                                 int OC) {
    pf__gelu_ctx c;
    c.out = g; c.h = h; c.ld = OC;
    pf__gemm_x(0, 1, N, OC, IC, u, IC, W, IC, h, OC, 0, b, 1, pf__epi_gelu_fwd, &c);
}
/* fc2 backward with dh = (dout W) * GELU'(h): dW, db as pf__linear_backward */
static void pf__fc2_gelu_backward(float *dh, float *dW, float *db, const float *dout, const float *g, const float *h,
                                  const float *W, int N, int IC, int OC) {
    pf__gelu_ctx c;
    c.out = dh; c.h = h; c.ld = IC;
    pf__gemm_x(0, 0, N, IC, OC, dout, OC, W, IC, dh, IC, 0, NULL, 1, pf__epi_gelu_bwd, &c);
    pf__linear_backward(NULL, dW, db, dout, g, W, N, IC, OC);
}
#define PF__FUSE_GELU(drop) (!(drop) && PF__FAST && pf__avx512())
#else
#define PF__FUSE_GELU(drop) 0
#endif

/* ---------------------------------------------------------------------- */
/* the parameter spec table: stem, branch 0..n-1 (each the same layout), head */

static void pf__spec(pf_model *m, int *k, size_t *off, const char *name, int ndim, int d0, int d1, int d2,
                     int kind, int part, int branch, int layer, int fan_in) {
    pf_tensor_spec *s = &m->specs[*k];
    int i;
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    s->shape[0] = d0; s->shape[1] = d1; s->shape[2] = d2;
    s->numel = 1;
    for (i = 0; i < ndim; i++) s->numel *= (size_t)s->shape[i];
    s->offset = *off;
    s->kind = kind;
    s->decay = kind == PF_KIND_WEIGHT;
    s->part = part;
    s->branch = branch;
    s->layer = layer;
    s->fan_in = fan_in;
    *off += s->numel;
    (*k)++;
}

static void pf__build_specs(pf_model *m) {
    const pf_config *c = &m->cfg;
    int D = c->dim, M = c->mlp_dim, k = 0, b, l;
    size_t off = 0;
    char nm[64];
    pf__spec(m, &k, &off, "embed.proj.weight", 2, D, m->patch_dim, 0, PF_KIND_WEIGHT, PF_PART_STEM, -1, -1, m->patch_dim);
    pf__spec(m, &k, &off, "embed.proj.bias", 1, D, 0, 0, PF_KIND_BIAS, PF_PART_STEM, -1, -1, m->patch_dim);
    pf__spec(m, &k, &off, "embed.cls", 3, 1, 1, D, PF_KIND_EMBED, PF_PART_STEM, -1, -1, 0);
    pf__spec(m, &k, &off, "embed.pos", 3, 1, m->T, D, PF_KIND_EMBED, PF_PART_STEM, -1, -1, 0);
    m->stem_size = off;
    for (b = 0; b < c->branches; b++) {
        for (l = 0; l < c->depth; l++) {
#define PF__BSPEC(suffix, ndim, d0, d1, kind, fan) \
            snprintf(nm, sizeof nm, "branches.%d.%d." suffix, b, l); \
            pf__spec(m, &k, &off, nm, ndim, d0, d1, 0, kind, PF_PART_BRANCH, b, l, fan)
            PF__BSPEC("ln1.weight", 1, D, 0, PF_KIND_LN_WEIGHT, 0);
            PF__BSPEC("ln1.bias", 1, D, 0, PF_KIND_LN_BIAS, 0);
            PF__BSPEC("qkv.weight", 2, 3 * D, D, PF_KIND_WEIGHT, D);
            if (!c->no_qkv_bias) { PF__BSPEC("qkv.bias", 1, 3 * D, 0, PF_KIND_BIAS, D); }
            PF__BSPEC("proj.weight", 2, D, D, PF_KIND_WEIGHT, D);
            PF__BSPEC("proj.bias", 1, D, 0, PF_KIND_BIAS, D);
            PF__BSPEC("ln2.weight", 1, D, 0, PF_KIND_LN_WEIGHT, 0);
            PF__BSPEC("ln2.bias", 1, D, 0, PF_KIND_LN_BIAS, 0);
            PF__BSPEC("fc1.weight", 2, M, D, PF_KIND_WEIGHT, D);
            PF__BSPEC("fc1.bias", 1, M, 0, PF_KIND_BIAS, D);
            PF__BSPEC("fc2.weight", 2, D, M, PF_KIND_WEIGHT, M);
            PF__BSPEC("fc2.bias", 1, D, 0, PF_KIND_BIAS, M);
#undef PF__BSPEC
        }
        if (b == 0) m->branch_size = off - m->stem_size;
    }
    pf__spec(m, &k, &off, "ln.weight", 1, D, 0, 0, PF_KIND_LN_WEIGHT, PF_PART_HEAD, -1, -1, 0);
    pf__spec(m, &k, &off, "ln.bias", 1, D, 0, 0, PF_KIND_LN_BIAS, PF_PART_HEAD, -1, -1, 0);
    pf__spec(m, &k, &off, "head.weight", 2, c->classes, D, 0, PF_KIND_WEIGHT, PF_PART_HEAD, -1, -1, D);
    pf__spec(m, &k, &off, "head.bias", 1, c->classes, 0, 0, PF_KIND_BIAS, PF_PART_HEAD, -1, -1, D);
    m->head_size = off - m->stem_size - (size_t)c->branches * m->branch_size;
    m->n_params = off;
    m->n_specs = k;
}

static pf_status pf__model_new(const pf_config *cfg, pf_model **out, int alloc_params);

PFDEF pf_status pf_model_create(const pf_config *cfg, pf_model **out) {
    PF__NEED(out, "pf_model_create", "out");
    *out = NULL;
    PF__NEED(cfg, "pf_model_create", "the config");
    return pf__model_new(cfg, out, 1);
}

/* alloc_params 0: specs only (pf_model_load checks a file before it
   allocates the parameters) */
static pf_status pf__model_new(const pf_config *cfg, pf_model **out, int alloc_params) {
    pf_model *m;
    pf_config c = *cfg;
    pf_status st;
    double total;
    int per_layer;
    *out = NULL;
    if ((st = pf_config_validate(&c)) != PF_OK) return st;
    /* refuse models whose parameter count would not fit comfortably */
    total = (double)c.dim * c.channels * c.patch_size * c.patch_size + (double)pf_config_tokens(&c) * c.dim +
            (double)c.branches * c.depth * (4.0 * c.dim * c.dim + 2.0 * c.dim * c.mlp_dim) + (double)c.classes * c.dim;
    if (total > 4e9) return pf_fail(PF_ERR_CONFIG, "config: %.3g parameters is too many", total);
    m = PF__CALLOC(pf_model, 1);
    if (!m) return pf_fail(PF_ERR_NOMEM, "out of memory creating the model");
    m->cfg = c;
    m->n_patches = (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
    m->T = m->n_patches + 1;
    m->patch_dim = c.channels * c.patch_size * c.patch_size;
    per_layer = c.no_qkv_bias ? 11 : 12;
    m->branch_spec_count = per_layer * c.depth;
    m->specs = PF__CALLOC(pf_tensor_spec, 8 + (size_t)c.branches * m->branch_spec_count);
    m->train_branch = PF__CALLOC(unsigned char, c.branches);
    m->lr_scale = PF__CALLOC(float, c.branches);
    if (!m->specs || !m->train_branch || !m->lr_scale) { pf_model_free(m); return pf_fail(PF_ERR_NOMEM, "out of memory creating the model"); }
    pf__build_specs(m);
    m->params = alloc_params ? PF__CALLOC(pf_real, m->n_params) : NULL;
    if (alloc_params && !m->params) {
        pf_model_free(m);
        return pf_fail(PF_ERR_NOMEM, "out of memory: %zu parameters", (size_t)total);
    }
    memset(m->train_branch, 1, (size_t)c.branches);
    for (per_layer = 0; per_layer < c.branches; per_layer++) m->lr_scale[per_layer] = 1.0f;
    m->shared_lr_scale = 1.0f;
    m->train_stem = m->train_head = 1;
    m->active = c.branches;
    *out = m;
    return PF_OK;
}

PFDEF void pf_model_free(pf_model *m) {
    if (!m) return;
    PF_FREE(m->specs); PF_FREE(m->train_branch); PF_FREE(m->lr_scale); PF_FREE(m->params); PF_FREE(m->grads);
    PF_FREE(m->adam_m); PF_FREE(m->adam_v); PF_FREE(m->steps);
    PF_FREE(m->acts_mem); PF_FREE(m->scratch_mem); PF_FREE(m->acts);
    PF_FREE(m->wpack); PF_FREE(m->wpack_off);
    PF_FREE(m);
}

PFDEF const pf_tensor_spec *pf_model_find(const pf_model *m, const char *name) {
    int i;
    if (!m || !name) return NULL;
    for (i = 0; i < m->n_specs; i++)
        if (!strcmp(m->specs[i].name, name)) return &m->specs[i];
    return NULL;
}

PFDEF size_t pf_model_part_size(const pf_model *m, int part) {
    if (!m) return 0;
    return part == PF_PART_STEM ? m->stem_size : part == PF_PART_BRANCH ? m->branch_size : m->head_size;
}

PFDEF pf_layer_ptrs pf_model_layer(const pf_model *m, pf_real *buf, int b, int l) {
    /* every layer of every branch has the same internal layout */
    const pf_config *c;
    size_t D, M, layer_size;
    pf_real *p;
    pf_layer_ptrs L;
    memset(&L, 0, sizeof L);
    if (!m || !buf || b < 0 || b >= m->cfg.branches || l < 0 || l >= m->cfg.depth) {
        pf_fail(PF_ERR_ARG, "pf_model_layer: %s", !m ? "the model is NULL" : !buf ? "the buffer is NULL"
                                                  : "branch or layer out of range");
        return L;
    }
    c = &m->cfg;
    D = (size_t)c->dim; M = (size_t)c->mlp_dim;
    layer_size = m->branch_size / (size_t)c->depth;
    p = buf + m->stem_size + (size_t)b * m->branch_size + (size_t)l * layer_size;
    L.ln1_w = p; p += D;
    L.ln1_b = p; p += D;
    L.qkv_w = p; p += 3 * D * D;
    if (c->no_qkv_bias) L.qkv_b = NULL; else { L.qkv_b = p; p += 3 * D; }
    L.proj_w = p; p += D * D;
    L.proj_b = p; p += D;
    L.ln2_w = p; p += D;
    L.ln2_b = p; p += D;
    L.fc1_w = p; p += M * D;
    L.fc1_b = p; p += M;
    L.fc2_w = p; p += D * M;
    L.fc2_b = p;
    return L;
}

/* stem and head pointers into a buffer */
#define PF__STEM_W(m, buf) ((buf))
#define PF__STEM_B(m, buf) ((buf) + (size_t)(m)->cfg.dim * (m)->patch_dim)
#define PF__STEM_CLS(m, buf) (PF__STEM_B(m, buf) + (m)->cfg.dim)
#define PF__STEM_POS(m, buf) (PF__STEM_CLS(m, buf) + (m)->cfg.dim)
#define PF__HEAD(m, buf) ((buf) + (m)->stem_size + (size_t)(m)->cfg.branches * (m)->branch_size)

PFDEF pf_status pf_model_init(pf_model *m, uint64_t seed, float embed_std) {
    int i;
    double estd = embed_std > 0.0f ? (double)embed_std : 0.02;
    PF__NEED(m, "pf_model_init", "the model");
    if (!isfinite(embed_std) || embed_std > 1e3f) return pf_fail(PF_ERR_ARG, "pf_model_init: embed_std %g", embed_std);
    for (i = 0; i < m->n_specs; i++) {
        const pf_tensor_spec *s = &m->specs[i];
        pf_real *p = m->params + s->offset;
        uint64_t st = pf__hash_str(seed, s->name);
        double bound = s->fan_in > 0 ? 1.0 / sqrt((double)s->fan_in) : 0.0;
        size_t j;
        for (j = 0; j < s->numel; j++) {
            switch (s->kind) {
            case PF_KIND_WEIGHT: case PF_KIND_BIAS: p[j] = (pf_real)((2.0 * pf__uniform(&st) - 1.0) * bound); break;
            case PF_KIND_LN_WEIGHT: p[j] = 1; break;
            case PF_KIND_LN_BIAS: p[j] = 0; break;
            default: p[j] = (pf_real)(estd * pf__normal(&st)); break;
            }
        }
    }
    m->dropout_seed = pf_mix64(seed ^ 0x5eedd20b0u);
    m->params_gen++;
    return PF_OK;
}

PFDEF void pf_model_changed(pf_model *m) { if (m) m->params_gen++; }



PFDEF pf_status pf_model_alloc_train(pf_model *m) {
    PF__NEED(m, "pf_model_alloc_train", "the model");
    if (m->grads) return PF_OK;
    m->grads = PF__CALLOC(pf_real, m->n_params);
    m->adam_m = PF__CALLOC(pf_real, m->n_params);
    m->adam_v = PF__CALLOC(pf_real, m->n_params);
    m->steps = PF__CALLOC(int64_t, m->n_specs);
    if (!m->grads || !m->adam_m || !m->adam_v || !m->steps) {
        PF_FREE(m->grads); PF_FREE(m->adam_m); PF_FREE(m->adam_v); PF_FREE(m->steps);
        m->grads = m->adam_m = m->adam_v = NULL; m->steps = NULL;
        return pf_fail(PF_ERR_NOMEM, "out of memory for gradients and optimizer state (%zu parameters)", m->n_params);
    }
    return PF_OK;
}

PFDEF pf_status pf_model_set_active(pf_model *m, int k) {
    PF__NEED(m, "pf_model_set_active", "the model");
    if (k < 1 || k > m->cfg.branches)
        return pf_fail(PF_ERR_ARG, "active branches %d must be in 1..%d", k, m->cfg.branches);
    m->active = k;
    return PF_OK;
}

/* Scratch for backward (shared by all branches, used one branch at a time). */
typedef struct pf__scratch {
    pf_real *dx0;    /* [B,T,D] gradient into X0 */
    pf_real *dagg;   /* [B,T,D] gradient of the aggregate */
    pf_real *dcur;   /* [B,T,D] gradient of the current layer output */
    pf_real *dres;   /* [B,T,D] */
    pf_real *du;     /* [B,T,D] */
    pf_real *datty;  /* [B,T,D] */
    pf_real *dqkv;   /* [B,T,3D] */
    pf_real *dh;     /* [B,T,M] */
    pf_real *datt;   /* [B,h,T,T] */
    pf_real *dpatch; /* [B,np,D] */
    pf_real *dpool;  /* [B,D] */
    pf_real *duf;    /* [B,D] */
    pf_real *dlogits;/* [B,K] */
} pf__scratch;

static pf__scratch pf__get_scratch(const pf_model *m) {
    pf__scratch s;
    size_t B = (size_t)m->max_batch, T = (size_t)m->T, D = (size_t)m->cfg.dim, M = (size_t)m->cfg.mlp_dim;
    size_t H = (size_t)m->cfg.heads, NP = (size_t)m->n_patches;
    pf_real *p = (pf_real *)m->scratch_mem;
    s.dx0 = p; p += B * T * D;
    s.dagg = p; p += B * T * D;
    s.dcur = p; p += B * T * D;
    s.dres = p; p += B * T * D;
    s.du = p; p += B * T * D;
    s.datty = p; p += B * T * D;
    s.dqkv = p; p += 3 * B * T * D;
    s.dh = p; p += B * T * M;
    s.datt = p; p += B * H * T * T;
    s.dpatch = p; p += B * NP * D;
    s.dpool = p; p += B * D;
    s.duf = p; p += B * D;
    s.dlogits = p;
    return s;
}

static pf_status pf__model_reserve(pf_model *m, int B);
PFDEF pf_status pf_model_reserve(pf_model *m, int B) {
    PF__NEED(m, "pf_model_reserve", "the model");
    return pf__model_reserve(m, B);
}
static pf_status pf__model_reserve(pf_model *m, int B) {
    const pf_config *c = &m->cfg;
    size_t Bz, T = (size_t)m->T, D = (size_t)c->dim, M = (size_t)c->mlp_dim, H = (size_t)c->heads;
    size_t K = (size_t)c->classes, NP = (size_t)m->n_patches, PD = (size_t)m->patch_dim;
    size_t nl = (size_t)c->branches * (size_t)c->depth, per_layer, stem, scratch, i;
    double total;
    pf_real *p;
    if (B < 1) return pf_fail(PF_ERR_ARG, "batch size %d must be >= 1", B);
    if (B <= m->max_batch) return PF_OK;
    Bz = (size_t)B;
    per_layer = Bz * T * (4 + 8 * D + 2 * M) + Bz * H * T * T;
    stem = Bz * NP * PD + 2 * Bz * T * D + 2 * Bz * D + 2 * Bz + 2 * Bz * K;
    scratch = Bz * T * D * 9 + Bz * T * M + Bz * H * T * T + Bz * NP * D + 2 * Bz * D + Bz * K;
    total = ((double)per_layer * (double)nl + (double)stem + (double)scratch) * sizeof(pf_real);
    if (total > 1.5e11) return pf_fail(PF_ERR_NOMEM, "activations for batch %d would need %.1f GB", B, total / 1e9);
    PF_FREE(m->acts_mem); PF_FREE(m->scratch_mem); PF_FREE(m->acts);
    m->acts_mem = m->scratch_mem = NULL; m->acts = NULL; m->max_batch = 0;
    m->acts_mem = pf__calloc(per_layer * nl + stem, sizeof(pf_real));
    m->scratch_mem = pf__calloc(scratch, sizeof(pf_real));
    m->acts = PF__CALLOC(pf_layer_acts, nl);
    if (!m->acts_mem || !m->scratch_mem || !m->acts) {
        PF_FREE(m->acts_mem); PF_FREE(m->scratch_mem); PF_FREE(m->acts);
        m->acts_mem = m->scratch_mem = NULL; m->acts = NULL;
        return pf_fail(PF_ERR_NOMEM, "out of memory: activations for batch %d need %.1f GB", B, total / 1e9);
    }
    p = (pf_real *)m->acts_mem;
    m->patches = p; p += Bz * NP * PD;
    m->x0 = p; p += Bz * T * D;
    m->agg = p; p += Bz * T * D;
    m->pooled = p; p += Bz * D;
    m->lnf_mean = p; p += Bz;
    m->lnf_rstd = p; p += Bz;
    m->uf = p; p += Bz * D;
    m->logits = p; p += Bz * K;
    m->probs = p; p += Bz * K;
    for (i = 0; i < nl; i++) {
        pf_layer_acts *a = &m->acts[i];
        a->ln1_mean = p; p += Bz * T;
        a->ln1_rstd = p; p += Bz * T;
        a->u1 = p; p += Bz * T * D;
        a->qkv = p; p += Bz * T * 3 * D;
        a->att = p; p += Bz * H * T * T;
        a->atty = p; p += Bz * T * D;
        a->x1 = p; p += Bz * T * D;
        a->ln2_mean = p; p += Bz * T;
        a->ln2_rstd = p; p += Bz * T;
        a->u2 = p; p += Bz * T * D;
        a->h = p; p += Bz * T * M;
        a->g = p; p += Bz * T * M;
        a->x2 = p; p += Bz * T * D;
    }
    m->max_batch = B;
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* ops: <op>_forward / <op>_backward pairs. Argument order: outputs, saved
   stats, inputs, weights, sizes. Gradients carry a d prefix. Backward
   functions write (=) their outputs unless the name says "accumulate". */

/* dot product with 8 independent partial sums: vectorises without
   -ffast-math and is the same for every thread count */
static pf_real pf__dot(const pf_real *a, const pf_real *b, int n) {
    pf_real s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3];
        s4 += a[i + 4] * b[i + 4]; s5 += a[i + 5] * b[i + 5]; s6 += a[i + 6] * b[i + 6]; s7 += a[i + 7] * b[i + 7];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
}

static int pf__reference; /* pf_use_reference */
PFDEF void pf_use_reference(int on) { pf__reference = on != 0; }

#ifdef PF_DOUBLE
#define PF__FAST 0
#else
#define PF__FAST (!pf__reference)
#endif

/* Linear (torch.nn.Linear): out[N,OC] = inp[N,IC] W[OC,IC]^T + bias[OC] */
static void pf__linear_forward(pf_real *out, const pf_real *inp, const pf_real *W, const pf_real *bias,
                               int N, int IC, int OC) {
    int n;
#ifndef PF_DOUBLE
    if (PF__FAST) { pf__gemm(0, 1, N, OC, IC, inp, IC, W, IC, out, OC, 0, bias); return; }
#endif
    PF__OMP(parallel for schedule(static))
    for (n = 0; n < N; n++) {
        const pf_real *x = inp + (size_t)n * IC;
        pf_real *y = out + (size_t)n * OC;
        int o;
        for (o = 0; o < OC; o++) y[o] = (bias ? bias[o] : 0) + pf__dot(x, W + (size_t)o * IC, IC);
    }
}

/* dinp = dout W (may be NULL), dW = dout^T inp, dbias = sum_n dout (may be
   NULL). Each output row is owned by one thread; sums run in a fixed order. */
static void pf__linear_backward(pf_real *dinp, pf_real *dW, pf_real *dbias, const pf_real *dout,
                                const pf_real *inp, const pf_real *W, int N, int IC, int OC) {
    int n, o;
#ifndef PF_DOUBLE
    if (PF__FAST) {
        if (dinp) pf__gemm(0, 0, N, IC, OC, dout, OC, W, IC, dinp, IC, 0, NULL); /* dX = dY W */
        pf__gemm(1, 0, OC, IC, N, dout, OC, inp, IC, dW, IC, 0, NULL);          /* dW = dY^T X */
        if (dbias) { /* column sums, 32 columns per task, rows in order */
            int nchunk = (OC + 31) / 32, ch;
            PF__OMP(parallel for schedule(static))
            for (ch = 0; ch < nchunk; ch++) {
                int o0 = ch * 32, o1 = o0 + 32 < OC ? o0 + 32 : OC, nn, oo;
#ifdef PF__VEC512
                if (pf__avx512()) { pf__colsum16(dbias, dout, N, OC, o0, o1); continue; }
#endif
                for (oo = o0; oo < o1; oo++) dbias[oo] = 0;
                for (nn = 0; nn < N; nn++)
                    for (oo = o0; oo < o1; oo++) dbias[oo] += dout[(size_t)nn * OC + oo];
            }
        }
        return;
    }
#endif
    if (dinp) {
        PF__OMP(parallel for schedule(static))
        for (n = 0; n < N; n++) {
            pf_real *dx = dinp + (size_t)n * IC;
            const pf_real *dy = dout + (size_t)n * OC;
            int i, oo;
            for (i = 0; i < IC; i++) dx[i] = 0;
            for (oo = 0; oo < OC; oo++) {
                const pf_real g = dy[oo], *w = W + (size_t)oo * IC;
                for (i = 0; i < IC; i++) dx[i] += g * w[i];
            }
        }
    }
    PF__OMP(parallel for schedule(static))
    for (o = 0; o < OC; o++) {
        pf_real *dw = dW + (size_t)o * IC, db = 0;
        int i, nn;
        for (i = 0; i < IC; i++) dw[i] = 0;
        for (nn = 0; nn < N; nn++) {
            const pf_real g = dout[(size_t)nn * OC + o], *x = inp + (size_t)nn * IC;
            db += g;
            if (g != 0) for (i = 0; i < IC; i++) dw[i] += g * x[i];
        }
        if (dbias) dbias[o] = db;
    }
}

/* LayerNorm (torch.nn.LayerNorm, eps 1e-5, biased variance) over the last
   dimension C of N rows: out = (x - mean) * rstd * w + b. */
static void pf__layernorm_forward(pf_real *out, pf_real *mean, pf_real *rstd, const pf_real *inp,
                                  const pf_real *w, const pf_real *b, int N, int C) {
    int n;
#ifdef PF__VEC512
    if (PF__FAST && pf__avx512()) {
        PF__OMP(parallel for schedule(static))
        for (n = 0; n < N; n++)
            pf__ln_fwd16(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, w, b, C);
        return;
    }
#endif
    PF__OMP(parallel for schedule(static))
    for (n = 0; n < N; n++) {
        const pf_real *x = inp + (size_t)n * C;
        pf_real *y = out + (size_t)n * C, mu = 0, var = 0, rs;
        int i;
        for (i = 0; i < C; i++) mu += x[i];
        mu /= (pf_real)C;
        for (i = 0; i < C; i++) var += (x[i] - mu) * (x[i] - mu);
        var /= (pf_real)C;
        rs = (pf_real)1 / PF__SQRT(var + (pf_real)1e-5);
        for (i = 0; i < C; i++) y[i] = (x[i] - mu) * rs * w[i] + b[i];
        mean[n] = mu;
        rstd[n] = rs;
    }
}

/* dinp = LN backward of dout; dw/db get sum over rows (each column owned by
   one thread). dinp accumulates when acc is 1. */
static void pf__layernorm_backward(pf_real *dinp, pf_real *dw, pf_real *db, const pf_real *dout,
                                   const pf_real *inp, const pf_real *w, const pf_real *mean,
                                   const pf_real *rstd, int N, int C, int acc) {
    int n, i, done = 0;
#ifdef PF__VEC512
    if (PF__FAST && pf__avx512()) {
        PF__OMP(parallel for schedule(static))
        for (n = 0; n < N; n++)
            pf__ln_bwd16(dinp + (size_t)n * C, dout + (size_t)n * C, inp + (size_t)n * C, w, mean[n], rstd[n], C, acc);
        done = 1;
    }
#endif
    PF__OMP(parallel for schedule(static) if (!done))
    for (n = 0; n < N * !done; n++) {
        const pf_real *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        pf_real *dx = dinp + (size_t)n * C, mu = mean[n], rs = rstd[n], s1 = 0, s2 = 0;
        int k;
        for (k = 0; k < C; k++) {
            pf_real g = dy[k] * w[k];
            s1 += g;
            s2 += g * (x[k] - mu) * rs;
        }
        s1 /= (pf_real)C;
        s2 /= (pf_real)C;
        for (k = 0; k < C; k++) {
            pf_real v = (dy[k] * w[k] - s1 - (x[k] - mu) * rs * s2) * rs;
            dx[k] = acc ? dx[k] + v : v;
        }
    }
    /* dw, db: column sums over rows in order, 32 columns per task so each
       pass reads whole cache lines */
#ifdef PF__VEC512
    if (done) {
        PF__OMP(parallel for schedule(static))
        for (i = 0; i < (C + 31) / 32; i++)
            pf__ln_colsum16(dw, db, dout, inp, mean, rstd, N, C, i * 32, i * 32 + 32 < C ? i * 32 + 32 : C);
        return;
    }
#endif
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < (C + 31) / 32; i++) {
        int c0 = i * 32, c1 = c0 + 32 < C ? c0 + 32 : C, nn, k;
        for (k = c0; k < c1; k++) dw[k] = db[k] = 0;
        for (nn = 0; nn < N; nn++) {
            const pf_real *g = dout + (size_t)nn * C, *x = inp + (size_t)nn * C;
            pf_real mu = mean[nn], rs = rstd[nn];
            for (k = c0; k < c1; k++) {
                dw[k] += g[k] * ((x[k] - mu) * rs);
                db[k] += g[k];
            }
        }
    }
}

/* GELU, exact (torch.nn.functional.gelu, approximate='none'):
   0.5 x (1 + erf(x / sqrt 2)) */
static void pf__gelu_forward(pf_real *out, const pf_real *inp, size_t n) {
    size_t i;
#ifdef PF__VEC512
    if (PF__FAST && pf__avx512()) {
        size_t nch = (n + 4095) / 4096, ch;
        PF__OMP(parallel for schedule(static))
        for (ch = 0; ch < nch; ch++)
            pf__gelu_fwd16(out + ch * 4096, inp + ch * 4096, n - ch * 4096 < 4096 ? n - ch * 4096 : 4096);
        return;
    }
#endif
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < n; i++) out[i] = (pf_real)0.5 * inp[i] * (1 + PF__ERF(inp[i] * (pf_real)0.70710678118654752440));
}
static void pf__gelu_backward(pf_real *dinp, const pf_real *dout, const pf_real *inp, size_t n) {
    size_t i;
#ifdef PF__VEC512
    if (PF__FAST && pf__avx512()) {
        size_t nch = (n + 4095) / 4096, ch;
        PF__OMP(parallel for schedule(static))
        for (ch = 0; ch < nch; ch++)
            pf__gelu_bwd16(dinp + ch * 4096, dout + ch * 4096, inp + ch * 4096, n - ch * 4096 < 4096 ? n - ch * 4096 : 4096);
        return;
    }
#endif
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < n; i++) {
        pf_real x = inp[i];
        pf_real cdf = (pf_real)0.5 * (1 + PF__ERF(x * (pf_real)0.70710678118654752440));
        pf_real pdf = PF__EXP((pf_real)-0.5 * x * x) * (pf_real)0.39894228040143267794;
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}

/* Multi-head self-attention core (no mask), per (image, head):
   q,k,v from qkv [B,T,3D] (q | k | v, heads contiguous inside each);
   att [B,h,T,T] = softmax(q k^T / sqrt(D/h)); out [B,T,D] = att v. */
static void pf__attention_forward(pf_real *out, pf_real *att, const pf_real *qkv, int B, int T, int D, int H) {
    int bh, hd = D / H;
    pf_real scale = (pf_real)1 / PF__SQRT((pf_real)hd);
#ifndef PF_DOUBLE
    if (PF__FAST) { pf__attention_forward_fast(out, att, qkv, B, T, D, H); return; }
#endif
    PF__OMP(parallel for schedule(static))
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, i, j, d;
        const pf_real *base = qkv + (size_t)b * T * 3 * D;
        for (i = 0; i < T; i++) {
            const pf_real *q = base + (size_t)i * 3 * D + h * hd;
            pf_real *a = att + ((size_t)bh * T + i) * T, mx = -1e30f, sum = 0;
            pf_real *y = out + ((size_t)b * T + i) * D + h * hd;
            for (j = 0; j < T; j++) {
                a[j] = pf__dot(q, base + (size_t)j * 3 * D + D + h * hd, hd) * scale;
                if (a[j] > mx) mx = a[j];
            }
            for (j = 0; j < T; j++) { a[j] = PF__EXP(a[j] - mx); sum += a[j]; }
            for (j = 0; j < T; j++) a[j] /= sum;
            for (d = 0; d < hd; d++) y[d] = 0;
            for (j = 0; j < T; j++) {
                const pf_real *v = base + (size_t)j * 3 * D + 2 * D + h * hd, p = a[j];
                for (d = 0; d < hd; d++) y[d] += p * v[d];
            }
        }
    }
}

/* dqkv [B,T,3D] (=) from dout [B,T,D]; datt is scratch [B,h,T,T]. Each
   (image, head) owns its slices of dq, dk, dv. */
static void pf__attention_backward(pf_real *dqkv, pf_real *datt, const pf_real *dout, const pf_real *qkv,
                                   const pf_real *att, int B, int T, int D, int H) {
    int bh, hd = D / H;
    pf_real scale = (pf_real)1 / PF__SQRT((pf_real)hd);
#ifndef PF_DOUBLE
    if (PF__FAST) { pf__attention_backward_fast(dqkv, datt, dout, qkv, att, B, T, D, H); return; }
#endif
    PF__OMP(parallel for schedule(static))
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, i, j, d;
        const pf_real *base = qkv + (size_t)b * T * 3 * D;
        pf_real *dbase = dqkv + (size_t)b * T * 3 * D;
        for (i = 0; i < T; i++) { /* zero this head's dq, dk, dv */
            pf_real *r = dbase + (size_t)i * 3 * D + h * hd;
            for (d = 0; d < hd; d++) r[d] = r[D + d] = r[2 * D + d] = 0;
        }
        for (i = 0; i < T; i++) {
            const pf_real *a = att + ((size_t)bh * T + i) * T;
            const pf_real *dy = dout + ((size_t)b * T + i) * D + h * hd;
            pf_real *da = datt + ((size_t)bh * T + i) * T, s = 0;
            const pf_real *q = base + (size_t)i * 3 * D + h * hd;
            pf_real *dq = dbase + (size_t)i * 3 * D + h * hd;
            for (j = 0; j < T; j++) { /* dP = dy . v, dv += P dy */
                const pf_real *v = base + (size_t)j * 3 * D + 2 * D + h * hd;
                pf_real *dv = dbase + (size_t)j * 3 * D + 2 * D + h * hd;
                da[j] = pf__dot(dy, v, hd);
                for (d = 0; d < hd; d++) dv[d] += a[j] * dy[d];
                s += a[j] * da[j];
            }
            for (j = 0; j < T; j++) { /* softmax backward, then scores */
                const pf_real *k = base + (size_t)j * 3 * D + D + h * hd;
                pf_real *dk = dbase + (size_t)j * 3 * D + D + h * hd;
                pf_real ds = a[j] * (da[j] - s) * scale;
                for (d = 0; d < hd; d++) { dq[d] += ds * k[d]; dk[d] += ds * q[d]; }
            }
        }
    }
}

/* Inverted dropout with the masks of pf_dropout_kept (declared with the
   model: the GPU backend uses the same functions). */
static uint64_t pf__site_key(const pf_model *m, int site) {
    return pf_dropout_key(m->dropout_seed, m->dropout_counter, site);
}
static void pf__dropout(pf_real *x, size_t n, uint64_t key, float p) {
    const pf_real scale = (pf_real)(1.0 / (1.0 - (double)p));
    size_t i;
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < n; i++) x[i] *= pf_dropout_kept(key, i, p) ? scale : (pf_real)0;
}
/* Stochastic depth: the B images of x (rows of `per` values) each kept with
   probability 1 - p and scaled by 1/(1-p), or zeroed. Image n's draw is
   pf_dropout_kept of the site's key mixed with PF__DROP_PATH_STREAM, so it
   is independent of the site's dropout (same key, other stream). */
#define PF__DROP_PATH_STREAM 0x64726f7070617468ULL /* "droppath" */
static int pf__drop_path_kept(uint64_t key, int n, float p) {
    return pf_dropout_kept(pf_mix64(key ^ PF__DROP_PATH_STREAM), (size_t)n, p);
}
static void pf__drop_path(pf_real *x, int B, size_t per, uint64_t key, float p) {
    const pf_real scale = (pf_real)(1.0 / (1.0 - (double)p));
    int n;
    PF__OMP(parallel for schedule(static))
    for (n = 0; n < B; n++) {
        pf_real f = pf__drop_path_kept(key, n, p) ? scale : (pf_real)0;
        size_t i;
        for (i = 0; i < per; i++) x[(size_t)n * per + i] *= f;
    }
}
/* layer l's drop-path rate (0 when not training) */
static float pf__drop_path_rate(const pf_model *m, int l) {
    int L = m->cfg.depth;
    if (!m->training || !(m->drop_path > 0.0f)) return 0.0f;
    return L > 1 ? (float)((double)m->drop_path * l / (L - 1)) : m->drop_path;
}

/* The next GEMM on this thread uses the cached packed copy of weight W
   (inference with a valid cache only). */
static void pf__use_wpack(const pf_model *m, const pf_real *W) {
#ifndef PF_DOUBLE
    size_t off = (size_t)(W - m->params);
    int lo = 0, hi = m->n_specs - 1;
    if (!m->wpack_on || pf__reference) return;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (m->specs[mid].offset == off) {
            if (m->wpack_off[mid] != (size_t)-1) pf__bpre = m->wpack + m->wpack_off[mid];
            return;
        }
        if (m->specs[mid].offset < off) lo = mid + 1; else hi = mid - 1;
    }
#else
    (void)m; (void)W;
#endif
}

/* Builds (or refreshes) the packed-weight cache. */
static pf_status pf__build_wpack(pf_model *m) {
#ifndef PF_DOUBLE
    size_t total = 0;
    int s;
    if (pf__reference) return PF_OK;
    if (m->wpack && m->wpack_gen == m->params_gen) return PF_OK;
    if (!m->wpack) {
        m->wpack_off = PF__CALLOC(size_t, m->n_specs);
        if (!m->wpack_off) return pf_fail(PF_ERR_NOMEM, "out of memory for the weight cache");
        for (s = 0; s < m->n_specs; s++) {
            const pf_tensor_spec *sp = &m->specs[s];
            if (sp->kind != PF_KIND_WEIGHT) { m->wpack_off[s] = (size_t)-1; continue; }
            m->wpack_off[s] = total;
            total += pf__pack_b(NULL, NULL, sp->shape[1], 1, sp->shape[0], sp->shape[1]);
            total = (total + 15) / 16 * 16; /* keep every copy 64-byte aligned */
        }
        m->wpack = (float *)PF_MALLOC(total * sizeof(float) + 64);
        if (!m->wpack) { PF_FREE(m->wpack_off); m->wpack_off = NULL; return pf_fail(PF_ERR_NOMEM, "out of memory for the weight cache"); }
    }
    if (((uintptr_t)m->wpack & 63) != 0) { /* packed panels are read with aligned loads */
        PF_FREE(m->wpack); PF_FREE(m->wpack_off); m->wpack = NULL; m->wpack_off = NULL;
        return PF_OK; /* no cache: pf_predict packs per call */
    }
    PF__OMP(parallel for schedule(dynamic))
    for (s = 0; s < m->n_specs; s++) {
        const pf_tensor_spec *sp = &m->specs[s];
        if (m->wpack_off[s] == (size_t)-1) continue;
        pf__pack_b(m->wpack + m->wpack_off[s], m->params + sp->offset, sp->shape[1], 1, sp->shape[0], sp->shape[1]);
    }
    m->wpack_gen = m->params_gen;
#else
    (void)m;
    (void)pf__pack_b;
#endif
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* the model: forward */

/* patches [B,np,C*P*P] from images [B,C,H,W], flattened in (c, py, px) order */
static void pf__patchify(pf_real *patches, const pf_real *x, int B, int C, int S, int P) {
    int G = S / P, n;
    PF__OMP(parallel for schedule(static))
    for (n = 0; n < B * G * G; n++) {
        int b = n / (G * G), p = n % (G * G), gy = p / G, gx = p % G, c, py, px;
        pf_real *out = patches + (size_t)n * C * P * P;
        for (c = 0; c < C; c++)
            for (py = 0; py < P; py++)
                for (px = 0; px < P; px++)
                    *out++ = x[(((size_t)b * C + c) * S + gy * P + py) * S + gx * P + px];
    }
}

static void pf__layer_forward(pf_model *m, int b, int l, const pf_real *xin, int B) {
    const pf_config *c = &m->cfg;
    int T = m->T, D = c->dim, M = c->mlp_dim, N = B * T;
    size_t ND = (size_t)N * D, i;
    double nd = (double)N * D, nm = (double)N * M;
    pf_layer_ptrs P = pf_model_layer(m, m->params, b, l);
    pf_layer_acts *a = &m->acts[b * c->depth + l];
    int drop = m->training && c->dropout > 0.0f;
    float dpath = pf__drop_path_rate(m, l);
    const pf_real *res;
    /* attention sub-layer: x1 = (x | LN x) + Drop(Attn(LN x)) */
    PF__PROF(m, fwd, PF_OP_LAYERNORM, 8 * nd,
             pf__layernorm_forward(a->u1, a->ln1_mean, a->ln1_rstd, xin, P.ln1_w, P.ln1_b, N, D));
    pf__use_wpack(m, P.qkv_w);
    PF__PROF(m, fwd, PF_OP_QKV, 6 * nd * D, pf__linear_forward(a->qkv, a->u1, P.qkv_w, P.qkv_b, N, D, 3 * D));
    PF__PROF(m, fwd, PF_OP_ATTENTION, 4.0 * B * T * T * D,
             pf__attention_forward(a->atty, a->att, a->qkv, B, T, D, c->heads));
    pf__use_wpack(m, P.proj_w);
    PF__PROF(m, fwd, PF_OP_PROJ, 2 * nd * D, pf__linear_forward(a->x1, a->atty, P.proj_w, P.proj_b, N, D, D));
    res = c->residual == PF_PRENORM ? xin : a->u1;
    PF__PROF(m, fwd, PF_OP_RESIDUAL, nd, {
        if (drop) pf__dropout(a->x1, ND, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 0)), c->dropout);
        if (dpath > 0.0f) pf__drop_path(a->x1, B, (size_t)T * D, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 0)), dpath);
        PF__OMP(parallel for schedule(static))
        for (i = 0; i < ND; i++) a->x1[i] += res[i];
    });
    /* MLP sub-layer: x2 = (x1 | LN x1) + Drop(fc2(Drop(GELU(fc1(LN x1))))) */
    PF__PROF(m, fwd, PF_OP_LAYERNORM, 8 * nd,
             pf__layernorm_forward(a->u2, a->ln2_mean, a->ln2_rstd, a->x1, P.ln2_w, P.ln2_b, N, D));
#ifdef PF__VEC512
    pf__use_wpack(m, P.fc1_w);
    if (PF__FUSE_GELU(drop)) { /* profiled as fc1 */
        PF__PROF(m, fwd, PF_OP_FC1, 2 * nm * D, pf__fc1_gelu_forward(a->h, a->g, a->u2, P.fc1_w, P.fc1_b, N, D, M));
    } else
#endif
    {
        pf__use_wpack(m, P.fc1_w);
        PF__PROF(m, fwd, PF_OP_FC1, 2 * nm * D, pf__linear_forward(a->h, a->u2, P.fc1_w, P.fc1_b, N, D, M));
        PF__PROF(m, fwd, PF_OP_GELU, nm, {
            pf__gelu_forward(a->g, a->h, (size_t)N * M);
            if (drop) pf__dropout(a->g, (size_t)N * M, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 1)), c->dropout);
        });
    }
    pf__use_wpack(m, P.fc2_w);
    PF__PROF(m, fwd, PF_OP_FC2, 2 * nm * D, pf__linear_forward(a->x2, a->g, P.fc2_w, P.fc2_b, N, M, D));
    res = c->residual == PF_PRENORM ? a->x1 : a->u2;
    PF__PROF(m, fwd, PF_OP_RESIDUAL, nd, {
        if (drop) pf__dropout(a->x2, ND, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 2)), c->dropout);
        if (dpath > 0.0f) pf__drop_path(a->x2, B, (size_t)T * D, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 2)), dpath);
        PF__OMP(parallel for schedule(static))
        for (i = 0; i < ND; i++) a->x2[i] += res[i];
    });
}

/* agg = X0 + sum_{b<k} (B_b - X0)  |  sum_{b<k} B_b, over the first k
   branches (a prefix evaluates exactly like a model cut to k branches) */
static void pf__aggregate(pf_model *m, int k, int B) {
    const pf_config *c = &m->cfg;
    size_t ND = (size_t)B * m->T * c->dim, i;
    double t0 = m->profile ? pf_time() : 0.0;
    /* same association as the PyTorch reference's sum() */
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < ND; i++) {
        pf_real s = 0;
        int bb;
        for (bb = 0; bb < k; bb++) {
            pf_real o = m->acts[bb * c->depth + c->depth - 1].x2[i];
            s += c->aggregate == PF_AGG_DELTA ? o - m->x0[i] : o;
        }
        m->agg[i] = c->aggregate == PF_AGG_DELTA ? m->x0[i] + s : s;
    }
    pf__lap(m, 0, PF_OP_RESIDUAL, t0, (double)ND * k);
}

/* pool, final LayerNorm, head, and (with labels) the mean softmax
   cross-entropy into m->loss */
static void pf__head_forward(pf_model *m, const int *labels, const pf_real *targets, int B, float label_smoothing) {
    const pf_config *c = &m->cfg;
    int T = m->T, D = c->dim, K = c->classes, b;
    size_t TD = (size_t)T * D;
    const pf_real *head = PF__HEAD(m, m->params);
    double total = 0, t0 = m->profile ? pf_time() : 0.0;
    /* pool, final LayerNorm, head */
    PF__OMP(parallel for schedule(static))
    for (b = 0; b < B; b++) {
        const pf_real *a = m->agg + (size_t)b * TD;
        pf_real *p = m->pooled + (size_t)b * D;
        int d, t;
        if (c->pool == PF_POOL_CLS) {
            for (d = 0; d < D; d++) p[d] = a[d];
        } else {
            for (d = 0; d < D; d++) {
                pf_real s = 0;
                for (t = 0; t < T; t++) s += a[(size_t)t * D + d];
                p[d] = s / (pf_real)T;
            }
        }
    }
    pf__layernorm_forward(m->uf, m->lnf_mean, m->lnf_rstd, m->pooled, head, head + D, B, D);
    pf__use_wpack(m, head + 2 * D);
    pf__linear_forward(m->logits, m->uf, head + 2 * D, head + 2 * D + (size_t)K * D, B, D, K);
    /* softmax cross-entropy with label smoothing (torch.nn.functional.cross_entropy):
       loss = (1-eps) * (-log p_y) + eps * mean_c(-log p_c) */
    for (b = 0; b < B; b++) {
        const pf_real *z = m->logits + (size_t)b * K;
        pf_real *p = m->probs + (size_t)b * K, mx = z[0], s = 0;
        int j;
        double lse, sumlog = 0;
        for (j = 1; j < K; j++) if (z[j] > mx) mx = z[j];
        for (j = 0; j < K; j++) { p[j] = PF__EXP(z[j] - mx); s += p[j]; }
        for (j = 0; j < K; j++) p[j] /= s;
        if (targets) { /* soft: -sum_j t_j log p_j */
            const pf_real *tb = targets + (size_t)b * K;
            lse = (double)mx + log((double)s);
            for (j = 0; j < K; j++) total -= (double)tb[j] * ((double)z[j] - lse);
        } else if (labels) {
            lse = (double)mx + log((double)s);
            for (j = 0; j < K; j++) sumlog += (double)z[j] - lse;
            total += -(1.0 - label_smoothing) * ((double)z[labels[b]] - lse) - label_smoothing * sumlog / K;
        }
    }
    pf__lap(m, 0, PF_OP_HEAD, t0, 2.0 * B * D * K);
    m->loss = labels || targets ? total / B : 0.0;
}

static pf_status pf__forward(pf_model *m, const pf_real *x, const int *labels, const pf_real *targets, int B,
                             float label_smoothing, float *loss) {
    const pf_config *c = &m->cfg;
    int T = m->T, D = c->dim, K = c->classes, NP = m->n_patches, k = m->active, b, l, n;
    size_t TD = (size_t)T * D, ND = (size_t)B * TD;
    const pf_real *pw = PF__STEM_W(m, m->params), *pb = PF__STEM_B(m, m->params);
    const pf_real *cls = PF__STEM_CLS(m, m->params), *pos = PF__STEM_POS(m, m->params);
    double t0;
    if (B < 1 || B > m->max_batch)
        return pf_fail(PF_ERR_ARG, "batch %d is outside 1..%d (call pf_model_reserve)", B, m->max_batch);
    if (k < 1 || k > c->branches) return pf_fail(PF_ERR_ARG, "active branches %d outside 1..%d", k, c->branches);
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
        return pf_fail(PF_ERR_ARG, "label smoothing %g must be in [0, 1]", label_smoothing);
    if (m->training && !(m->drop_path >= 0.0f && m->drop_path < 1.0f))
        return pf_fail(PF_ERR_ARG, "drop-path rate (m->drop_path) %g must be in [0, 1)", m->drop_path);
    if (labels)
        for (n = 0; n < B; n++)
            if (labels[n] < 0 || labels[n] >= K) return pf_fail(PF_ERR_ARG, "label %d of image %d outside 0..%d", labels[n], n, K - 1);
    if (targets)
        for (n = 0; n < B * K; n++)
            if (!(targets[n] >= 0) || !isfinite((double)targets[n]))
                return pf_fail(PF_ERR_ARG, "soft target %g of image %d, class %d: must be finite and >= 0",
                               (double)targets[n], n / K, n % K);
    m->B = B;
    m->labels = labels;
    m->targets = targets;
    m->label_smoothing = label_smoothing;
    if (m->training) m->dropout_counter++;
    t0 = m->profile ? pf_time() : 0.0;
    /* embedding: X0 = Drop([cls ; patches Wp^T + bp] + pos) */
    pf__patchify(m->patches, x, B, c->channels, c->image_size, c->patch_size);
    for (b = 0; b < B; b++) {
        pf__use_wpack(m, pw);
        pf__linear_forward(m->x0 + (size_t)b * TD + D, m->patches + (size_t)b * NP * m->patch_dim, pw, pb, NP,
                           m->patch_dim, D);
    }
    PF__OMP(parallel for schedule(static))
    for (b = 0; b < B; b++) {
        pf_real *x0 = m->x0 + (size_t)b * TD;
        size_t j;
        for (j = 0; j < (size_t)D; j++) x0[j] = cls[j];
        for (j = 0; j < TD; j++) x0[j] += pos[j];
    }
    if (m->training && c->emb_dropout > 0.0f) pf__dropout(m->x0, ND, pf__site_key(m, 0), c->emb_dropout);
    pf__lap(m, 0, PF_OP_EMBED, t0, 2.0 * B * NP * m->patch_dim * D);
    /* branches, each reading X0 */
    for (b = 0; b < k; b++)
        for (l = 0; l < c->depth; l++)
            pf__layer_forward(m, b, l, l ? m->acts[b * c->depth + l - 1].x2 : m->x0, B);
    pf__aggregate(m, k, B);
    pf__head_forward(m, labels, targets, B, label_smoothing);
    if (loss) *loss = (float)m->loss;
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* the model: backward */

static void pf__layer_backward(pf_model *m, pf__scratch *s, int b, int l, const pf_real *xin, int B) {
    /* in: s->dcur = d(layer output); out: s->dcur = d(layer input) */
    const pf_config *c = &m->cfg;
    int T = m->T, D = c->dim, M = c->mlp_dim, N = B * T;
    size_t ND = (size_t)N * D, NM = (size_t)N * M, i;
    double nd = (double)N * D, nm = (double)N * M;
    pf_layer_ptrs P = pf_model_layer(m, m->params, b, l), G = pf_model_layer(m, m->grads, b, l);
    pf_layer_acts *a = &m->acts[b * c->depth + l];
    int drop = m->training && c->dropout > 0.0f, prenorm = c->residual == PF_PRENORM;
    float dpath = pf__drop_path_rate(m, l);
    pf_real *dproj;
    /* MLP sub-layer */
    PF__PROF(m, bwd, PF_OP_RESIDUAL, nd, {
        memcpy(s->dres, s->dcur, ND * sizeof(pf_real));
        if (drop) pf__dropout(s->dres, ND, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 2)), c->dropout);
        if (dpath > 0.0f) pf__drop_path(s->dres, B, (size_t)T * D, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 2)), dpath);
    });
#ifdef PF__VEC512
    if (PF__FUSE_GELU(drop)) { /* profiled as fc2 */
        PF__PROF(m, bwd, PF_OP_FC2, 4 * nm * D,
                 pf__fc2_gelu_backward(s->dh, G.fc2_w, G.fc2_b, s->dres, a->g, a->h, P.fc2_w, N, M, D));
    } else
#endif
    {
        PF__PROF(m, bwd, PF_OP_FC2, 4 * nm * D, pf__linear_backward(s->dh, G.fc2_w, G.fc2_b, s->dres, a->g, P.fc2_w, N, M, D));
        PF__PROF(m, bwd, PF_OP_GELU, nm, {
            if (drop) pf__dropout(s->dh, NM, pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 1)), c->dropout);
            pf__gelu_backward(s->dh, s->dh, a->h, NM);
        });
    }
    PF__PROF(m, bwd, PF_OP_FC1, 4 * nm * D, pf__linear_backward(s->du, G.fc1_w, G.fc1_b, s->dh, a->u2, P.fc1_w, N, D, M));
    PF__PROF(m, bwd, PF_OP_LAYERNORM, 12 * nd, {
        if (prenorm) { /* dx1 = dx2 + LN2'(du2) */
            memcpy(s->dres, s->dcur, ND * sizeof(pf_real));
            pf__layernorm_backward(s->dres, G.ln2_w, G.ln2_b, s->du, a->x1, P.ln2_w, a->ln2_mean, a->ln2_rstd, N, D, 1);
        } else { /* dx1 = LN2'(du2 + dx2) */
            PF__OMP(parallel for schedule(static))
            for (i = 0; i < ND; i++) s->du[i] += s->dcur[i];
            pf__layernorm_backward(s->dres, G.ln2_w, G.ln2_b, s->du, a->x1, P.ln2_w, a->ln2_mean, a->ln2_rstd, N, D, 0);
        }
    });
    /* attention sub-layer; s->dres = dx1 */
    dproj = s->dres;
    if (drop || dpath > 0.0f) {
        PF__PROF(m, bwd, PF_OP_RESIDUAL, nd, {
            uint64_t key = pf__site_key(m, pf_dropout_site(m->cfg.depth, b, l, 0));
            memcpy(s->du, s->dres, ND * sizeof(pf_real));
            if (drop) pf__dropout(s->du, ND, key, c->dropout);
            if (dpath > 0.0f) pf__drop_path(s->du, B, (size_t)T * D, key, dpath);
        });
        dproj = s->du;
    }
    PF__PROF(m, bwd, PF_OP_PROJ, 4 * nd * D, pf__linear_backward(s->datty, G.proj_w, G.proj_b, dproj, a->atty, P.proj_w, N, D, D));
    PF__PROF(m, bwd, PF_OP_ATTENTION, 8.0 * B * T * T * D,
             pf__attention_backward(s->dqkv, s->datt, s->datty, a->qkv, a->att, B, T, D, c->heads));
    PF__PROF(m, bwd, PF_OP_QKV, 12 * nd * D, pf__linear_backward(s->du, G.qkv_w, G.qkv_b, s->dqkv, a->u1, P.qkv_w, N, D, 3 * D));
    PF__PROF(m, bwd, PF_OP_LAYERNORM, 12 * nd, {
        if (prenorm) { /* dx = dx1 + LN1'(du1) */
            memcpy(s->dcur, s->dres, ND * sizeof(pf_real));
            pf__layernorm_backward(s->dcur, G.ln1_w, G.ln1_b, s->du, xin, P.ln1_w, a->ln1_mean, a->ln1_rstd, N, D, 1);
        } else { /* dx = LN1'(du1 + dx1) */
            PF__OMP(parallel for schedule(static))
            for (i = 0; i < ND; i++) s->du[i] += s->dres[i];
            pf__layernorm_backward(s->dcur, G.ln1_w, G.ln1_b, s->du, xin, P.ln1_w, a->ln1_mean, a->ln1_rstd, N, D, 0);
        }
    });
}

static pf_status pf__backward(pf_model *m) {
    const pf_config *c = &m->cfg;
    int B = m->B, T = m->T, D = c->dim, K = c->classes, NP = m->n_patches, k = m->active, b, l;
    size_t TD = (size_t)T * D, ND = (size_t)B * TD, i;
    pf__scratch s;
    const pf_real *head = PF__HEAD(m, m->params);
    pf_real *ghead = PF__HEAD(m, m->grads);
    pf_real eps = (pf_real)m->label_smoothing;
    double t0 = m->profile ? pf_time() : 0.0;
    if (!m->grads) return pf_fail(PF_ERR_ARG, "pf_backward: call pf_model_alloc_train first");
    if ((!m->labels && !m->targets) || B < 1) return pf_fail(PF_ERR_ARG, "pf_backward: the last forward had no labels");
    s = pf__get_scratch(m);
    /* cross-entropy: dlogits = (softmax - target) / B, target = (1-eps) onehot + eps/K;
       soft targets t: (softmax·sum_j t_j - t) / B (the gradient for any t >= 0) */
    for (b = 0; b < B; b++) {
        int j;
        if (m->targets) {
            const pf_real *tb = m->targets + (size_t)b * K;
            pf_real sum = 0;
            for (j = 0; j < K; j++) sum += tb[j];
            for (j = 0; j < K; j++)
                s.dlogits[(size_t)b * K + j] = (m->probs[(size_t)b * K + j] * sum - tb[j]) / (pf_real)B;
            continue;
        }
        for (j = 0; j < K; j++) {
            pf_real t = eps / (pf_real)K + (j == m->labels[b] ? 1 - eps : 0);
            s.dlogits[(size_t)b * K + j] = (m->probs[(size_t)b * K + j] - t) / (pf_real)B;
        }
    }
    /* head and final LayerNorm */
    pf__linear_backward(s.duf, ghead + 2 * D, ghead + 2 * D + (size_t)K * D, s.dlogits, m->uf, head + 2 * D, B, D, K);
    pf__layernorm_backward(s.dpool, ghead, ghead + D, s.duf, m->pooled, head, m->lnf_mean, m->lnf_rstd, B, D, 0);
    /* pooling */
    PF__OMP(parallel for schedule(static))
    for (b = 0; b < B; b++) {
        pf_real *da = s.dagg + (size_t)b * TD;
        const pf_real *dp = s.dpool + (size_t)b * D;
        size_t t, d;
        for (t = 0; t < (size_t)T; t++)
            for (d = 0; d < (size_t)D; d++)
                da[t * D + d] = c->pool == PF_POOL_CLS ? (t == 0 ? dp[d] : 0) : dp[d] / (pf_real)T;
    }
    t0 = pf__lap(m, 1, PF_OP_HEAD, t0, 4.0 * B * D * K);
    /* aggregation: delta gives X0 the gradient (1 - k) dagg directly */
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < ND; i++) s.dx0[i] = c->aggregate == PF_AGG_DELTA ? (pf_real)(1 - k) * s.dagg[i] : 0;
    /* branches, each adding its input gradient into dX0 (fixed order) */
    for (b = 0; b < k; b++) {
        if (!m->train_branch[b] && !m->train_stem) continue; /* frozen, and nothing below trains */
        memcpy(s.dcur, s.dagg, ND * sizeof(pf_real));
        for (l = c->depth - 1; l >= 0; l--)
            pf__layer_backward(m, &s, b, l, l ? m->acts[b * c->depth + l - 1].x2 : m->x0, B);
        t0 = m->profile ? pf_time() : 0.0;
        PF__OMP(parallel for schedule(static))
        for (i = 0; i < ND; i++) s.dx0[i] += s.dcur[i];
        pf__lap(m, 1, PF_OP_RESIDUAL, t0, (double)ND);
    }
    if (!m->train_stem) return PF_OK;
    t0 = m->profile ? pf_time() : 0.0;
    /* embedding */
    if (m->training && c->emb_dropout > 0.0f) pf__dropout(s.dx0, ND, pf__site_key(m, 0), c->emb_dropout);
    {
        pf_real *gcls = PF__STEM_CLS(m, m->grads), *gpos = PF__STEM_POS(m, m->grads);
        size_t j;
        PF__OMP(parallel for schedule(static))
        for (j = 0; j < TD; j++) {
            pf_real sum = 0;
            int bb;
            for (bb = 0; bb < B; bb++) sum += s.dx0[(size_t)bb * TD + j];
            gpos[j] = sum;
            if (j < (size_t)D) gcls[j] = sum;
        }
        PF__OMP(parallel for schedule(static))
        for (b = 0; b < B; b++)
            memcpy(s.dpatch + (size_t)b * NP * D, s.dx0 + (size_t)b * TD + D, (size_t)NP * D * sizeof(pf_real));
        pf__linear_backward(NULL, PF__STEM_W(m, m->grads), PF__STEM_B(m, m->grads), s.dpatch, m->patches,
                            PF__STEM_W(m, m->params), B * NP, m->patch_dim, D);
    }
    pf__lap(m, 1, PF_OP_EMBED, t0, 2.0 * B * NP * m->patch_dim * D);
    return PF_OK;
}

static pf_status pf__predict(pf_model *m, const float *x, int N, float *out) {
    const pf_config *c = &m->cfg;
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    int n0, saved = m->training;
    pf_status st = PF_OK;
#ifdef PF_DOUBLE
    pf_real *buf;
#endif
    if (N < 0) return pf_fail(PF_ERR_ARG, "pf_predict: N = %d", N);
    if (!N) return PF_OK;
    if (!m->max_batch && (st = pf_model_reserve(m, N < 64 ? N : 64)) != PF_OK) return st;
#ifdef PF_DOUBLE
    buf = PF__CALLOC(pf_real, per * (size_t)m->max_batch);
    if (!buf) return pf_fail(PF_ERR_NOMEM, "pf_predict: out of memory");
#endif
    m->training = 0;
    if ((st = pf__build_wpack(m)) != PF_OK) {
#ifdef PF_DOUBLE
        PF_FREE(buf);
#endif
        m->training = saved;
        return st;
    }
    m->wpack_on = m->wpack != NULL;
    for (n0 = 0; n0 < N && st == PF_OK; n0 += m->max_batch) {
        int B = N - n0 < m->max_batch ? N - n0 : m->max_batch, j;
#ifdef PF_DOUBLE
        size_t t;
        for (t = 0; t < per * (size_t)B; t++) buf[t] = x[(size_t)n0 * per + t];
        st = pf_forward(m, buf, NULL, B, 0.0f, NULL);
#else
        st = pf_forward(m, x + (size_t)n0 * per, NULL, B, 0.0f, NULL);
#endif
        for (j = 0; st == PF_OK && j < B * c->classes; j++) out[(size_t)n0 * c->classes + j] = (float)m->logits[j];
    }
    m->training = saved;
    m->wpack_on = 0;
#ifdef PF_DOUBLE
    PF_FREE(buf);
#endif
    return st;
}

/* The public entry points check what they are given (PF__NEED); the
   bodies above trust it. */
PFDEF pf_status pf_forward(pf_model *m, const pf_real *x, const int *labels, int B, float label_smoothing,
                           float *loss) {
    PF__NEED(m, "pf_forward", "the model");
    PF__NEED(x, "pf_forward", "the input x");
    return pf__forward(m, x, labels, NULL, B, label_smoothing, loss);
}
PFDEF pf_status pf_forward_soft(pf_model *m, const pf_real *x, const pf_real *targets, int B, float *loss) {
    PF__NEED(m, "pf_forward_soft", "the model");
    PF__NEED(x, "pf_forward_soft", "the input x");
    PF__NEED(targets, "pf_forward_soft", "the targets");
    return pf__forward(m, x, NULL, targets, B, 0.0f, loss);
}
PFDEF pf_status pf_backward(pf_model *m) {
    PF__NEED(m, "pf_backward", "the model");
    return pf__backward(m);
}
PFDEF pf_status pf_predict(pf_model *m, const float *x, int N, float *out) {
    PF__NEED(m, "pf_predict", "the model");
    if (N < 0) return pf_fail(PF_ERR_ARG, "pf_predict: N = %d images", N);
    if (N > 0) {
        PF__NEED(x, "pf_predict", "the input x");
        PF__NEED(out, "pf_predict", "the output");
    }
    return pf__predict(m, x, N, out);
}

/* ---------------------------------------------------------------------- */
/* optimizer: AdamW / Adam with PyTorch 1.13's semantics */

PFDEF pf_optim pf_optim_default(void) {
    pf_optim o;
    memset(&o, 0, sizeof o);
    o.lr = 1e-3f; o.beta1 = 0.9f; o.beta2 = 0.999f; o.eps = 1e-8f; o.weight_decay = 0.01f;
    return o;
}

/* Does this tensor have a gradient and take optimizer steps? */
PFDEF int pf_param_trainable(const pf_model *m, const pf_tensor_spec *s) {
    if (!m || !s) return 0;
    if (s->part == PF_PART_STEM) return m->train_stem;
    if (s->part == PF_PART_HEAD)
        return m->train_head && (m->head_rows_from <= 0 || s->kind == PF_KIND_WEIGHT || s->kind == PF_KIND_BIAS);
    return s->branch < m->active && m->train_branch[s->branch];
}
PFDEF size_t pf_param_train_from(const pf_model *m, const pf_tensor_spec *s) {
    size_t from;
    if (!m || !s || s->part != PF_PART_HEAD || m->head_rows_from <= 0) return 0;
    from = (size_t)(m->head_rows_from < m->cfg.classes ? m->head_rows_from : m->cfg.classes);
    return s->kind == PF_KIND_WEIGHT ? from * (size_t)m->cfg.dim : from;
}

PFDEF double pf_grad_norm(const pf_model *m) {
    double total = 0;
    int t;
    if (!m || !m->grads) return 0;
    for (t = 0; t < m->n_specs; t++) {
        const pf_tensor_spec *s = &m->specs[t];
        const pf_real *g = m->grads + s->offset;
        double sum = 0;
        size_t i;
        if (!pf_param_trainable(m, s)) continue;
        for (i = pf_param_train_from(m, s); i < s->numel; i++) sum += (double)g[i] * (double)g[i];
        total += sum;
    }
    return sqrt(total);
}

PFDEF double pf_clip_grad_norm(pf_model *m, double max_norm) {
    double norm = pf_grad_norm(m), coef = max_norm / (norm + 1e-6);
    int t;
    if (m && m->grads && max_norm > 0.0 && coef < 1.0) {
        for (t = 0; t < m->n_specs; t++) {
            const pf_tensor_spec *s = &m->specs[t];
            pf_real *g = m->grads + s->offset;
            size_t i;
            if (!pf_param_trainable(m, s)) continue;
            for (i = pf_param_train_from(m, s); i < s->numel; i++) g[i] = (pf_real)(g[i] * (pf_real)coef);
        }
    }
    return norm;
}

PFDEF int pf_adam_step_of(pf_model *m, const pf_optim *o, int t, pf_adam_step *a) {
    const pf_tensor_spec *s;
    int64_t step;
    if (!m || !o || !a || !m->steps || t < 0 || t >= m->n_specs) {
        pf_fail(PF_ERR_ARG, "pf_adam_step_of: %s", !m || !o || !a ? "NULL argument"
                            : !m->steps ? "no training state (pf_model_alloc_train)" : "tensor index out of range");
        return 0;
    }
    s = &m->specs[t];
    a->lr = o->lr * (s->part == PF_PART_BRANCH ? m->lr_scale[s->branch] : m->shared_lr_scale);
    if (!pf_param_trainable(m, s) || a->lr == 0.0f) return 0; /* no gradient: no step at all */
    step = ++m->steps[t];
    a->from = pf_param_train_from(m, s);
    /* bias corrections in double, as torch computes them in Python */
    a->step_size = (double)a->lr / (1.0 - pow((double)o->beta1, (double)step));
    a->bc2_sqrt = sqrt(1.0 - pow((double)o->beta2, (double)step));
    return 1;
}

PFDEF pf_status pf_optim_validate(const pf_optim *p) {
    PF__NEED(p, "pf_optim_validate", "o (the optimizer settings)");
    if (p->adam != 0 && p->adam != 1) return pf_fail(PF_ERR_ARG, "optimizer: adam %d must be 0 (AdamW) or 1 (Adam)", p->adam);
    if (!(p->lr >= 0.0f && p->lr < 10.0f)) return pf_fail(PF_ERR_ARG, "learning rate %g must be in [0, 10)", p->lr);
    if (!(p->beta1 >= 0.0f && p->beta1 < 1.0f) || !(p->beta2 >= 0.0f && p->beta2 < 1.0f))
        return pf_fail(PF_ERR_ARG, "Adam betas (%g, %g) must be in [0, 1)", p->beta1, p->beta2);
    if (!(p->eps > 0.0f) || !isfinite(p->eps)) return pf_fail(PF_ERR_ARG, "Adam eps %g must be > 0", p->eps);
    if (!(p->weight_decay >= 0.0f && p->weight_decay < 10.0f))
        return pf_fail(PF_ERR_ARG, "weight decay %g must be in [0, 10)", p->weight_decay);
    if (!(p->clip >= 0.0f) || !isfinite(p->clip)) return pf_fail(PF_ERR_ARG, "grad clip %g must be >= 0", p->clip);
    return PF_OK;
}

PFDEF pf_status pf_optim_step(pf_model *m, const pf_optim *o, double *norm_out) {
    double norm = 0, t0;
    int t;
    PF__NEED(m, "pf_optim_step", "the model");
    PF__NEED(o, "pf_optim_step", "o (the optimizer settings)");
    if (norm_out) *norm_out = 0;
    if (!m->grads) return pf_fail(PF_ERR_ARG, "pf_optim_step: the model has no gradients (call pf_model_alloc_train)");
    if (pf_optim_validate(o) != PF_OK) return pf_fail(PF_ERR_ARG, "pf_optim_step: %s", pf_last_error());
    t0 = m->profile ? pf_time() : 0.0;
    if (o->clip > 0.0f) norm = pf_clip_grad_norm(m, o->clip);
    for (t = 0; t < m->n_specs; t++) {
        const pf_tensor_spec *s = &m->specs[t];
        pf_real *p = m->params + s->offset, *g = m->grads + s->offset;
        pf_real *mm = m->adam_m + s->offset, *vv = m->adam_v + s->offset;
        pf_real b1 = (pf_real)o->beta1, b2 = (pf_real)o->beta2, eps = (pf_real)o->eps;
        pf_real wd = s->decay ? (pf_real)o->weight_decay : 0, lr, step_size, bc2_sqrt;
        pf_adam_step a;
        size_t i;
        if (!pf_adam_step_of(m, o, t, &a)) continue;
        lr = (pf_real)a.lr, step_size = (pf_real)a.step_size, bc2_sqrt = (pf_real)a.bc2_sqrt;
        PF__OMP(parallel for schedule(static))
        for (i = a.from; i < s->numel; i++) {
            pf_real gi = g[i];
            if (o->adam) gi = gi + p[i] * wd;        /* Adam: L2 term in the gradient */
            else p[i] = p[i] * (1 - lr * wd);        /* AdamW: decoupled decay */
            mm[i] = mm[i] * b1 + gi * (1 - b1);
            vv[i] = vv[i] * b2 + gi * gi * (1 - b2);
            p[i] = p[i] - step_size * (mm[i] / (PF__SQRT(vv[i]) / bc2_sqrt + eps));
        }
    }
    pf__lap(m, 1, PF_OP_OPTIM, t0, 12.0 * (double)m->n_params);
    m->params_gen++;
    if (norm_out) *norm_out = norm;
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* file helpers */

#if !defined(__cplusplus) && defined(PF__HAVE_FSYNC)
/* POSIX; declared here because strict -std=c99 hides them in the headers */
int fileno(FILE *);
int fsync(int);
#endif

PFDEF size_t pf_dtype_size(pf_dtype t) {
    static const size_t sz[PF_DTYPE_COUNT] = {4, 8, 2, 2, 1, 1, 4, 8};
    return (unsigned)t < PF_DTYPE_COUNT ? sz[t] : 0;
}
PFDEF const char *pf_dtype_name(pf_dtype t) {
    static const char *nm[PF_DTYPE_COUNT] = {"F32", "F64", "F16", "BF16", "U8", "I8", "I32", "I64"};
    return (unsigned)t < PF_DTYPE_COUNT ? nm[t] : "?";
}

static float pf__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, f = h & 1023, bits;
    float out;
    if (e == 31) bits = sign | 0x7F800000u | (f << 13);          /* inf / nan */
    else if (e) bits = sign | ((e + 112) << 23) | (f << 13);     /* normal */
    else if (!f) bits = sign;                                     /* zero */
    else {                                                        /* subnormal */
        out = (float)f * (1.0f / 16777216.0f);
        return sign ? -out : out;
    }
    memcpy(&out, &bits, 4);
    return out;
}
static float pf__bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}
static uint64_t pf__rd64le(const unsigned char *b) {
    uint64_t v = 0; int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}
/* element i of a little-endian buffer of type t as double */
static double pf__elem(const unsigned char *p, pf_dtype t) {
    switch (t) {
    case PF_F32: { float f; memcpy(&f, p, 4); return f; }
    case PF_F64: { double d; memcpy(&d, p, 8); return d; }
    case PF_F16: return pf__f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
    case PF_BF16: return pf__bf16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
    case PF_U8: return p[0];
    case PF_I8: return (signed char)p[0];
    case PF_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case PF_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    default: return 0;
    }
}

/* size of an open file, or -1 */
static long long pf__file_size(FILE *f) {
    long sz;
    if (fseek(f, 0, SEEK_END) != 0) return -1;
    sz = ftell(f);
    if (sz < 0 || sz == 0x7fffffffL || (sizeof(long) > 4 && sz == (long)(~0UL >> 1)) || fseek(f, 0, SEEK_SET) != 0)
        return -1; /* LONG_MAX: a directory */
    return (long long)sz;
}

/* Opens path.tmp for an atomic write; pf__commit renames it into place. */
static FILE *pf__open_tmp(const char *path, char *tmp, size_t cap) {
    FILE *f;
    if ((size_t)snprintf(tmp, cap, "%s.tmp", path) >= cap) { pf_fail(PF_ERR_ARG, "%s: path too long", path); return NULL; }
    f = fopen(tmp, "wb");
    if (!f) pf_fail(PF_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    return f;
}
static pf_status pf__commit(FILE *f, const char *tmp, const char *path, int ok) {
    if (ok && fflush(f) != 0) ok = 0;
#ifdef PF__HAVE_FSYNC
    if (ok && fsync(fileno(f)) != 0) ok = 0;
#endif
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        int e = errno;
        remove(tmp);
        return pf_fail(PF_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return pf_fail(PF_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    return PF_OK;
}
/* The public writer keeps the temporary's name with the file, where the
   private pair passes it around; the work is theirs. */
PFDEF pf_status pf_atomic_open(pf_atomic *a, const char *path) {
    size_t n;
    if (!a || !path || !*path) return pf_fail(PF_ERR_ARG, "atomic write: no file to write");
    a->f = NULL;
    a->tmp[0] = 0;
    if ((n = strlen(path)) >= sizeof a->path) return pf_fail(PF_ERR_ARG, "%.200s...: path too long", path);
    memcpy(a->path, path, n + 1);
    a->f = pf__open_tmp(path, a->tmp, sizeof a->tmp);
    return a->f ? PF_OK : PF_ERR_IO;
}
PFDEF pf_status pf_atomic_commit(pf_atomic *a) {
    pf_status st;
    if (!a || !a->f) return pf_fail(PF_ERR_ARG, "atomic write: no file open");
    st = pf__commit(a->f, a->tmp, a->path, !ferror(a->f));
    a->f = NULL;
    return st;
}
PFDEF void pf_atomic_abort(pf_atomic *a) {
    if (!a || !a->f) return;
    fclose(a->f);
    remove(a->tmp);
    a->f = NULL;
}

PFDEF int pf_path_has_ext(const char *path, const char *ext) {
    size_t n, k, i;
    if (!path || !ext) return 0;
    n = strlen(path);
    k = strlen(ext);
    if (k > n) return 0;
    for (i = 0; i < k; i++) {
        int a = (unsigned char)path[n - k + i], b = (unsigned char)ext[i];
        if (a >= 'A' && a <= 'Z') a += 'a' - 'A';
        if (b >= 'A' && b <= 'Z') b += 'a' - 'A';
        if (a != b) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------- */
/* safetensors: u64 header length, JSON header, raw little-endian data
   (https://github.com/huggingface/safetensors, format section) */

#define PF__ST_MAX_HEADER (16u << 20)

static int pf__dtype_from_name(const char *s) {
    int t;
    for (t = 0; t < PF_DTYPE_COUNT; t++)
        if (!strcmp(s, pf_dtype_name((pf_dtype)t))) return t;
    return -1;
}

PFDEF size_t pf_st_numel(const pf_st_entry *e) {
    size_t n = 1; int i;
    if (!e) return 0;
    for (i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    return n;
}

PFDEF void pf_st_close(pf_st_file *f) {
    int i;
    if (!f) return;
    if (f->fp) fclose((FILE *)f->fp);
    for (i = 0; i < f->n; i++) PF_FREE(f->entries[i].name);
    for (i = 0; i < f->n_meta; i++) { PF_FREE(f->meta_keys[i]); PF_FREE(f->meta_vals[i]); }
    PF_FREE(f->entries); PF_FREE(f->by_name); PF_FREE(f->meta_keys); PF_FREE(f->meta_vals);
    PF_FREE(f);
}

static char *pf__strndup(const char *s, size_t n) {
    char *d = (char *)PF_MALLOC(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

/* Parses a JSON string value into a fresh allocation. */
static char *pf__jstring_dup(pf__json *j) {
    size_t save = j->i, len;
    char *out;
    if (!pf__jstring(j, NULL, 0, &len)) return NULL;
    j->i = save;
    out = (char *)PF_MALLOC(len + 1);
    if (!out) { j->err = "out of memory"; return NULL; }
    if (!pf__jstring(j, out, len + 1, NULL)) { PF_FREE(out); return NULL; }
    return out;
}

/* Parses one tensor description {"dtype":..,"shape":[..],"data_offsets":[a,b]}. */
static int pf__st_entry(pf__json *j, pf_st_entry *e, char *why, size_t cap) {
    char key[32];
    int first = 1, have = 0;
    if (!pf__jobj_begin(j)) return 0;
    while (pf__jobj_next(j, &first, key, sizeof key)) {
        if (!strcmp(key, "dtype")) {
            char d[16]; int t;
            if (!pf__jstring(j, d, sizeof d, NULL)) return 0;
            if ((t = pf__dtype_from_name(d)) < 0) { snprintf(why, cap, "unsupported dtype '%s'", d); return 0; }
            e->dtype = (pf_dtype)t;
            have |= 1;
        } else if (!strcmp(key, "shape") || !strcmp(key, "data_offsets")) {
            double v[PF_MAX_DIMS + 1]; int n, i, off = key[0] == 'd';
            if (pf__jpeek(j) != '[') { j->err = "expected an array"; return 0; }
            if (!pf__jnumarray(j, v, PF_MAX_DIMS + 1, &n)) {
                if (j->err && !strcmp(j->err, "array too long")) snprintf(why, cap, "%s has too many entries", key);
                return 0;
            }
            for (i = 0; i < n; i++)
                if (!(v[i] >= 0 && v[i] <= 9007199254740992.0 && v[i] == floor(v[i]))) {
                    snprintf(why, cap, "%s has a bad value %g", key, v[i]);
                    return 0;
                }
            if (off) {
                if (n != 2) { snprintf(why, cap, "data_offsets must have 2 entries"); return 0; }
                e->begin = (uint64_t)v[0]; e->end = (uint64_t)v[1];
                have |= 4;
            } else {
                if (n > PF_MAX_DIMS) { snprintf(why, cap, "shape has more than %d dimensions", PF_MAX_DIMS); return 0; }
                e->ndim = n;
                for (i = 0; i < n; i++) e->shape[i] = (int64_t)v[i];
                have |= 2;
            }
        } else if (!pf__jskip(j)) return 0;
    }
    if (j->err) return 0;
    if (have != 7) { snprintf(why, cap, "needs dtype, shape and data_offsets"); return 0; }
    return 1;
}

static PF__TLS const pf_st_entry *pf__sort_base; /* qsort has no context argument */
static int pf__cmp_name_idx(const void *a, const void *b) {
    return strcmp(pf__sort_base[*(const int *)a].name, pf__sort_base[*(const int *)b].name);
}
static int pf__cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int pf__cmp_begin(const void *a, const void *b) {
    const pf_st_entry *x = *(const pf_st_entry *const *)a, *y = *(const pf_st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* A JSON syntax error in the header, at the byte where it was found. */
static pf_status pf__st_bad_json(const pf_st_file *f, const pf__json *j) {
    return pf_fail(PF_ERR_FORMAT, "%s: bad JSON header: %s at byte %zu", f->path, j->err ? j->err : "syntax error", 8 + j->i);
}

/* The __metadata__ object (j at its value): string values only. */
static pf_status pf__st_meta_parse(pf_st_file *f, pf__json *j) {
    int first = 1, cap = 0;
    char key[256];
    if (!pf__jobj_begin(j)) return pf__st_bad_json(f, j);
    while (pf__jobj_next(j, &first, key, sizeof key)) {
        char *v;
        if (pf__jpeek(j) != '"')
            return pf_fail(PF_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", f->path, key);
        if (f->n_meta == cap) {
            int nc = cap ? 2 * cap : 8;
            char **nk = (char **)PF_REALLOC(f->meta_keys, (size_t)nc * sizeof(char *)), **nv;
            if (!nk) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", f->path);
            f->meta_keys = nk;
            if (!(nv = (char **)PF_REALLOC(f->meta_vals, (size_t)nc * sizeof(char *))))
                return pf_fail(PF_ERR_NOMEM, "%s: out of memory", f->path);
            f->meta_vals = nv;
            cap = nc;
        }
        if (!(v = pf__jstring_dup(j))) return pf__st_bad_json(f, j);
        f->meta_vals[f->n_meta] = v;
        f->meta_keys[f->n_meta] = pf__strndup(key, strlen(key));
        if (!f->meta_keys[f->n_meta]) { PF_FREE(v); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", f->path); }
        f->n_meta++;
    }
    return j->err ? pf__st_bad_json(f, j) : PF_OK;
}

/* The JSON header: the metadata and one entry per tensor. */
static pf_status pf__st_header_parse(pf_st_file *f, pf__json *j) {
    int first = 1, cap = 0;
    char key[256], why[160];
    pf_status st;
    if (pf__jpeek(j) != '{') return pf_fail(PF_ERR_FORMAT, "%s: header does not start with '{': not a safetensors file", f->path);
    pf__jobj_begin(j);
    while (pf__jobj_next(j, &first, key, sizeof key)) {
        if (!strcmp(key, "__metadata__")) {
            if ((st = pf__st_meta_parse(f, j)) != PF_OK) return st;
            continue;
        }
        if (f->n == cap) {
            int nc = cap ? 2 * cap : 64;
            pf_st_entry *ne = (pf_st_entry *)PF_REALLOC(f->entries, (size_t)nc * sizeof(pf_st_entry));
            if (!ne) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", f->path);
            f->entries = ne;
            cap = nc;
        }
        memset(&f->entries[f->n], 0, sizeof(pf_st_entry));
        why[0] = 0;
        if (!pf__st_entry(j, &f->entries[f->n], why, sizeof why))
            return why[0] ? pf_fail(PF_ERR_FORMAT, "%s: tensor '%s': %s", f->path, key, why) : pf__st_bad_json(f, j);
        f->entries[f->n].name = pf__strndup(key, strlen(key));
        if (!f->entries[f->n].name) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", f->path);
        f->n++;
    }
    if (j->err) return pf__st_bad_json(f, j);
    pf__jws(j);
    if (j->i != j->n) return pf_fail(PF_ERR_FORMAT, "%s: trailing bytes after the JSON header at offset %zu", f->path, 8 + j->i);
    return PF_OK;
}

/* Each entry's size from its dtype and shape, within the data section. */
static pf_status pf__st_check_entries(const pf_st_file *f) {
    int i, d;
    for (i = 0; i < f->n; i++) {
        const pf_st_entry *e = &f->entries[i];
        uint64_t bytes = pf_dtype_size(e->dtype);
        for (d = 0; d < e->ndim; d++) {
            if (e->shape[d] && bytes > ((uint64_t)1 << 62) / (uint64_t)e->shape[d])
                return pf_fail(PF_ERR_FORMAT, "%s: tensor '%s': shape is too large", f->path, e->name);
            bytes *= (uint64_t)e->shape[d];
        }
        if (e->begin > e->end)
            return pf_fail(PF_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", f->path, e->name,
                           (unsigned long long)e->begin, (unsigned long long)e->end);
        if (e->end > f->data_len)
            return pf_fail(PF_ERR_FORMAT, "%s: tensor '%s': data_offsets end %llu is past the end of the data (%llu bytes): truncated file?",
                           f->path, e->name, (unsigned long long)e->end, (unsigned long long)f->data_len);
        if (e->end - e->begin != bytes)
            return pf_fail(PF_ERR_FORMAT, "%s: tensor '%s': %s shape needs %llu bytes but data_offsets span %llu", f->path,
                           e->name, pf_dtype_name(e->dtype), (unsigned long long)bytes,
                           (unsigned long long)(e->end - e->begin));
    }
    return PF_OK;
}

/* The sorted name index (a name twice is refused), and the tensors tile the
   data section exactly: no overlap, hole or tail that could hide data. */
static pf_status pf__st_index(pf_st_file *f) {
    pf_st_entry **sorted;
    pf_status st = PF_OK;
    uint64_t at = 0;
    int i;
    f->by_name = (int *)PF_MALLOC((size_t)(f->n ? f->n : 1) * sizeof(int));
    if (!f->by_name) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", f->path);
    for (i = 0; i < f->n; i++) f->by_name[i] = i;
    pf__sort_base = f->entries;
    qsort(f->by_name, (size_t)f->n, sizeof(int), pf__cmp_name_idx);
    for (i = 1; i < f->n; i++)
        if (!strcmp(f->entries[f->by_name[i]].name, f->entries[f->by_name[i - 1]].name))
            return pf_fail(PF_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path, f->entries[f->by_name[i]].name);
    if (f->n == 0)
        return f->data_len ? pf_fail(PF_ERR_FORMAT, "%s: %llu data bytes but no tensors", f->path, (unsigned long long)f->data_len)
                           : PF_OK;
    sorted = (pf_st_entry **)PF_MALLOC((size_t)f->n * sizeof(pf_st_entry *));
    if (!sorted) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", f->path);
    for (i = 0; i < f->n; i++) sorted[i] = &f->entries[i];
    qsort(sorted, (size_t)f->n, sizeof *sorted, pf__cmp_begin);
    for (i = 0; i < f->n && st == PF_OK; i++) {
        if (sorted[i]->begin < at)
            st = pf_fail(PF_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", f->path,
                         sorted[i - 1]->name, sorted[i]->name);
        else if (sorted[i]->begin > at)
            st = pf_fail(PF_ERR_FORMAT, "%s: data bytes %llu..%llu belong to no tensor (before '%s')", f->path,
                         (unsigned long long)at, (unsigned long long)sorted[i]->begin, sorted[i]->name);
        at = sorted[i]->end;
    }
    if (st == PF_OK && at != f->data_len)
        st = pf_fail(PF_ERR_FORMAT, "%s: %llu bytes after the last tensor's data", f->path, (unsigned long long)(f->data_len - at));
    PF_FREE(sorted);
    return st;
}

PFDEF pf_status pf_st_open(const char *path, pf_st_file **out) {
    FILE *fp;
    pf_st_file *f = NULL;
    unsigned char lenb[8];
    char *hdr = NULL;
    long long size;
    uint64_t hl;
    pf__json j;
    pf_status st;
    PF__NEED(out, "pf_st_open", "out");
    *out = NULL;
    PF__NEED(path, "pf_st_open", "the path");
    fp = fopen(path, "rb");
    if (!fp) return pf_fail(PF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size = pf__file_size(fp);
    if (size < 0) { fclose(fp); return pf_fail(PF_ERR_IO, "%s: cannot determine the file size", path); }
    if (size < 8) { fclose(fp); return pf_fail(PF_ERR_FORMAT, "%s: file is %lld bytes, too short for a safetensors header", path, size); }
    if (fread(lenb, 1, 8, fp) != 8) { fclose(fp); return pf_fail(PF_ERR_IO, "%s: cannot read the header length", path); }
    hl = pf__rd64le(lenb);
    if (hl > PF__ST_MAX_HEADER) {
        fclose(fp);
        return pf_fail(PF_ERR_FORMAT, "%s: header length %llu exceeds the %u MiB limit (not a safetensors file?)", path,
                       (unsigned long long)hl, PF__ST_MAX_HEADER >> 20);
    }
    if (hl > (uint64_t)size - 8) {
        fclose(fp);
        return pf_fail(PF_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%lld bytes): truncated or not safetensors",
                       path, (unsigned long long)hl, size);
    }
    if (hl < 2) { fclose(fp); return pf_fail(PF_ERR_FORMAT, "%s: header length %llu is too small", path, (unsigned long long)hl); }
    f = PF__CALLOC(pf_st_file, 1);
    hdr = (char *)PF_MALLOC((size_t)hl + 1);
    if (!f || !hdr) { fclose(fp); PF_FREE(f); PF_FREE(hdr); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); }
    f->fp = fp;
    snprintf(f->path, sizeof f->path, "%s", path);
    f->header_len = hl;
    f->data_start = 8 + hl;
    f->data_len = (uint64_t)size - 8 - hl;
    if (fread(hdr, 1, (size_t)hl, fp) != (size_t)hl) {
        st = pf_fail(PF_ERR_IO, "%s: cannot read the header", path);
    } else {
        hdr[hl] = 0;
        memset(&j, 0, sizeof j);
        j.s = hdr; j.n = (size_t)hl;
        st = pf__st_header_parse(f, &j);
        if (st == PF_OK) st = pf__st_check_entries(f);
        if (st == PF_OK) st = pf__st_index(f);
    }
    PF_FREE(hdr);
    if (st != PF_OK) { pf_st_close(f); return st; }
    *out = f;
    return PF_OK;
}

PFDEF const pf_st_entry *pf_st_find(const pf_st_file *f, const char *name) {
    int lo = 0, hi = f && name ? f->n - 1 : -1;
    while (lo <= hi) { /* binary search in the name index */
        int mid = lo + (hi - lo) / 2, c = strcmp(f->entries[f->by_name[mid]].name, name);
        if (!c) return &f->entries[f->by_name[mid]];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

PFDEF const char *pf_st_meta(const pf_st_file *f, const char *key) {
    int i;
    if (!f || !key) return NULL;
    for (i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

/* a read's arguments: an open file, one of its own entries, a destination */
static pf_status pf__st_read_args(const pf_st_file *f, const pf_st_entry *e, const void *dst, const char *fn) {
    PF__NEED(f, fn, "the file");
    PF__NEED(e, fn, "the entry");
    PF__NEED(dst, fn, "the destination");
    if (e < f->entries || e >= f->entries + f->n)
        return pf_fail(PF_ERR_ARG, "%s: %s: the entry is not one of this file's (use pf_st_find on it)", fn, f->path);
    return PF_OK;
}
PFDEF pf_status pf_st_read_raw(pf_st_file *f, const pf_st_entry *e, void *dst) {
    FILE *fp;
    size_t n;
    pf_status st = pf__st_read_args(f, e, dst, "pf_st_read_raw");
    if (st != PF_OK) return st;
    fp = (FILE *)f->fp;
    n = (size_t)(e->end - e->begin);
    if (fseek(fp, (long)(f->data_start + e->begin), SEEK_SET) != 0 || fread(dst, 1, n, fp) != n)
        return pf_fail(PF_ERR_IO, "%s: tensor '%s': cannot read %zu bytes at offset %llu", f->path, e->name, n,
                       (unsigned long long)(f->data_start + e->begin));
    return PF_OK;
}

/* reads and converts in bounded chunks */
static pf_status pf__st_read_conv(pf_st_file *f, const pf_st_entry *e, float *d32, double *d64) {
    unsigned char buf[1 << 14];
    FILE *fp = (FILE *)f->fp;
    size_t es = pf_dtype_size(e->dtype), n = pf_st_numel(e), done = 0, i;
    if (fseek(fp, (long)(f->data_start + e->begin), SEEK_SET) != 0)
        return pf_fail(PF_ERR_IO, "%s: tensor '%s': cannot seek", f->path, e->name);
    while (done < n) {
        size_t chunk = n - done < sizeof buf / es ? n - done : sizeof buf / es;
        if (fread(buf, es, chunk, fp) != chunk)
            return pf_fail(PF_ERR_IO, "%s: tensor '%s': file ended while reading the data", f->path, e->name);
        for (i = 0; i < chunk; i++) {
            double v = pf__elem(buf + i * es, e->dtype);
            if (d32) d32[done + i] = (float)v; else d64[done + i] = v;
        }
        done += chunk;
    }
    return PF_OK;
}
PFDEF pf_status pf_st_read_f32(pf_st_file *f, const pf_st_entry *e, float *dst) {
    pf_status st = pf__st_read_args(f, e, dst, "pf_st_read_f32");
    if (st != PF_OK) return st;
    if (e->dtype == PF_F32) return pf_st_read_raw(f, e, dst);
    return pf__st_read_conv(f, e, dst, NULL);
}
PFDEF pf_status pf_st_read_f64(pf_st_file *f, const pf_st_entry *e, double *dst) {
    pf_status st = pf__st_read_args(f, e, dst, "pf_st_read_f64");
    if (st != PF_OK) return st;
    if (e->dtype == PF_F64) return pf_st_read_raw(f, e, dst);
    return pf__st_read_conv(f, e, NULL, dst);
}

/* writes a JSON string literal with escapes */
static void pf__json_str(char *buf, size_t cap, size_t *k, const char *s) {
    pf__appendf(buf, cap, k, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') pf__appendf(buf, cap, k, "\\%c", ch);
        else if (ch < 0x20) pf__appendf(buf, cap, k, "\\u%04x", ch);
        else pf__appendf(buf, cap, k, "%c", ch);
    }
    pf__appendf(buf, cap, k, "\"");
}

PFDEF pf_status pf_st_write(const char *path, const pf_st_tensor *t, int n, const char *const *meta_keys,
                            const char *const *meta_vals, int n_meta) {
    size_t cap = 0, k, hl, i;
    char *hdr = NULL, tmp[1024];
    uint64_t off;
    unsigned char lenb[8];
    FILE *f;
    int pass, ok = 1, d;
    PF__NEED(path, "pf_st_write", "the path");
    if (n < 0 || (n > 0 && !t)) return pf_fail(PF_ERR_ARG, "%s: pf_st_write: %d tensors at %p", path, n, (const void *)t);
    if (n_meta < 0 || (n_meta > 0 && (!meta_keys || !meta_vals)))
        return pf_fail(PF_ERR_ARG, "%s: pf_st_write: %d metadata entries without their keys or values", path, n_meta);
    for (i = 0; i < (size_t)n_meta; i++)
        if (!meta_keys[i] || !meta_vals[i])
            return pf_fail(PF_ERR_ARG, "%s: pf_st_write: metadata entry %zu has no %s", path, i, !meta_keys[i] ? "key" : "value");
    for (i = 0; i < (size_t)n; i++) { /* each tensor: a name, a dtype, a shape, its data */
        uint64_t bytes;
        size_t j;
        if (!t[i].name || !t[i].name[0]) return pf_fail(PF_ERR_ARG, "%s: pf_st_write: tensor %zu has no name", path, i);
        if (!strcmp(t[i].name, "__metadata__"))
            return pf_fail(PF_ERR_ARG, "%s: pf_st_write: a tensor cannot be named __metadata__ (the format's metadata key)", path);
        if (!pf_dtype_size(t[i].dtype))
            return pf_fail(PF_ERR_ARG, "%s: pf_st_write: tensor '%s' has dtype %d", path, t[i].name, (int)t[i].dtype);
        if (t[i].ndim < 0 || t[i].ndim > PF_MAX_DIMS)
            return pf_fail(PF_ERR_ARG, "%s: pf_st_write: tensor '%s' has rank %d (0..%d)", path, t[i].name, t[i].ndim,
                           PF_MAX_DIMS);
        bytes = pf_dtype_size(t[i].dtype);
        for (d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0 || (t[i].shape[d] > 0 && bytes > ((uint64_t)1 << 62) / (uint64_t)t[i].shape[d]))
                return pf_fail(PF_ERR_ARG, "%s: pf_st_write: tensor '%s' dimension %d is %lld", path, t[i].name, d,
                               (long long)t[i].shape[d]);
            bytes *= (uint64_t)t[i].shape[d];
        }
        if (bytes > SIZE_MAX / 2) return pf_fail(PF_ERR_ARG, "%s: pf_st_write: tensor '%s' is too large", path, t[i].name);
        if (bytes && !t[i].data) return pf_fail(PF_ERR_ARG, "%s: pf_st_write: tensor '%s' has no data", path, t[i].name);
        for (j = 0; j < i; j++)
            if (!strcmp(t[j].name, t[i].name))
                return pf_fail(PF_ERR_ARG, "%s: pf_st_write: two tensors are named '%s'", path, t[i].name);
    }
    for (pass = 0; pass < 2; pass++) { /* pass 0 measures, pass 1 writes */
        k = 0; off = 0;
        pf__appendf(hdr, cap, &k, "{");
        if (n_meta > 0) {
            pf__appendf(hdr, cap, &k, "\"__metadata__\":{");
            for (i = 0; i < (size_t)n_meta; i++) {
                if (i) pf__appendf(hdr, cap, &k, ",");
                pf__json_str(hdr, cap, &k, meta_keys[i]);
                pf__appendf(hdr, cap, &k, ":");
                pf__json_str(hdr, cap, &k, meta_vals[i]);
            }
            pf__appendf(hdr, cap, &k, "}");
        }
        for (i = 0; i < (size_t)n; i++) {
            uint64_t bytes = pf_dtype_size(t[i].dtype);
            for (d = 0; d < t[i].ndim; d++) bytes *= (uint64_t)t[i].shape[d];
            pf__appendf(hdr, cap, &k, "%s", (n_meta > 0 || i) ? "," : "");
            pf__json_str(hdr, cap, &k, t[i].name);
            pf__appendf(hdr, cap, &k, ":{\"dtype\":\"%s\",\"shape\":[", pf_dtype_name(t[i].dtype));
            for (d = 0; d < t[i].ndim; d++) pf__appendf(hdr, cap, &k, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
            pf__appendf(hdr, cap, &k, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                        (unsigned long long)(off + bytes));
            off += bytes;
        }
        pf__appendf(hdr, cap, &k, "}");
        if (pass == 0) {
            cap = k + 16;
            hdr = (char *)PF_MALLOC(cap);
            if (!hdr) return pf_fail(PF_ERR_NOMEM, "%s: out of memory for the header", path);
        }
    }
    hl = (k + 7) / 8 * 8; /* pad with spaces so the data starts 8-aligned */
    while (k < hl) hdr[k++] = ' ';
    for (d = 0; d < 8; d++) lenb[d] = (unsigned char)((uint64_t)hl >> (8 * d));
    f = pf__open_tmp(path, tmp, sizeof tmp);
    if (!f) { PF_FREE(hdr); return PF_ERR_IO; }
    ok = fwrite(lenb, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
    for (i = 0; ok && i < (size_t)n; i++) {
        size_t bytes = pf_dtype_size(t[i].dtype);
        for (d = 0; d < t[i].ndim; d++) bytes *= (size_t)t[i].shape[d];
        if (bytes && fwrite(t[i].data, 1, bytes, f) != bytes) ok = 0;
    }
    PF_FREE(hdr);
    return pf__commit(f, tmp, path, ok);
}

/* shapes match when equal after dropping leading 1s ([1,1,D] == [D]) */
static int pf__same_shape(const int *a, int na, const int64_t *b, int nb) {
    while (na > 1 && a[0] == 1) a++, na--;
    while (nb > 1 && b[0] == 1) b++, nb--;
    if (na != nb) return 0;
    while (na--) if ((int64_t)a[na] != b[na]) return 0;
    return 1;
}

static void pf__shape_str(char *buf, size_t cap, const int64_t *s, int n) {
    size_t k = 0; int i;
    pf__appendf(buf, cap, &k, "[");
    for (i = 0; i < n; i++) pf__appendf(buf, cap, &k, "%s%lld", i ? ", " : "", (long long)s[i]);
    pf__appendf(buf, cap, &k, "]");
}

static pf_status pf__model_save_with(const pf_model *m, const char *path, const pf_st_tensor *extra, int n_extra,
                                     const char *const *xkeys, const char *const *xvals, int n_xmeta);
PFDEF pf_status pf_model_save(const pf_model *m, const char *path) {
    PF__NEED(m, "pf_model_save", "the model");
    PF__NEED(path, "pf_model_save", "the path");
    return pf__model_save_with(m, path, NULL, 0, NULL, NULL, 0);
}

/* PF_OK when every parameter of m is finite; else PF_ERR_NONFINITE naming
   `what`, how many are not and the first tensor holding one. */
static pf_status pf__params_finite(const pf_model *m, const char *what) {
    size_t bad = 0, i;
    int s, first = -1;
    for (s = 0; s < m->n_specs; s++) {
        const pf_real *p = m->params + m->specs[s].offset;
        size_t n0 = bad;
        for (i = 0; i < m->specs[s].numel; i++) bad += !isfinite(p[i]);
        if (bad > n0 && first < 0) first = s;
    }
    if (!bad) return PF_OK;
    return pf_fail(PF_ERR_NONFINITE, "%s: %zu parameter%s not finite (NaN or infinite; the first in '%s'): a diverged or "
                   "damaged model", what, bad, bad == 1 ? " is" : "s are", m->specs[first].name);
}

/* the model and n_extra more tensors and metadata entries (training state) */
static pf_status pf__model_save_with(const pf_model *m, const char *path, const pf_st_tensor *extra, int n_extra,
                                     const char *const *xkeys, const char *const *xvals, int n_xmeta) {
    char cfg[2048], version[16];
    const char *keys[8] = {"format", "format_version", "config"}, *vals[8];
    pf_st_tensor *t;
    float *buf;
    size_t i;
    int s, d;
    pf_status st;
    if (pf_config_to_json(&m->cfg, cfg, sizeof cfg) < 0) return pf_fail(PF_ERR_ARG, "%s: config too long", path);
    if (n_xmeta > 5) return pf_fail(PF_ERR_ARG, "%s: too many metadata entries", path);
    snprintf(version, sizeof version, "%d", PF_FORMAT_VERSION);
    vals[0] = "paraformer"; vals[1] = version; vals[2] = cfg;
    for (s = 0; s < n_xmeta; s++) { keys[3 + s] = xkeys[s]; vals[3 + s] = xvals[s]; }
    t = PF__CALLOC(pf_st_tensor, (size_t)m->n_specs + (size_t)n_extra);
    buf = PF__CALLOC(float, m->n_params);
    if (!t || !buf) { PF_FREE(t); PF_FREE(buf); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); }
    for (i = 0; i < m->n_params; i++) buf[i] = (float)m->params[i];
    for (s = 0; s < m->n_specs; s++) {
        const pf_tensor_spec *sp = &m->specs[s];
        t[s].name = sp->name;
        t[s].dtype = PF_F32;
        t[s].ndim = sp->ndim;
        for (d = 0; d < sp->ndim; d++) t[s].shape[d] = sp->shape[d];
        t[s].data = buf + sp->offset;
    }
    for (s = 0; s < n_extra; s++) t[m->n_specs + s] = extra[s];
    st = pf_st_write(path, t, m->n_specs + n_extra, keys, vals, 3 + n_xmeta);
    PF_FREE(t);
    PF_FREE(buf);
    return st;
}

PFDEF pf_status pf_model_load(const char *path, pf_model **out) {
    pf_st_file *f;
    pf_model *m = NULL;
    pf_config cfg;
    const char *cj;
    pf_status st;
    int s, i;
    PF__NEED(out, "pf_model_load", "out");
    *out = NULL;
    PF__NEED(path, "pf_model_load", "the path");
    if ((st = pf_st_open(path, &f)) != PF_OK) return st;
    cj = pf_st_meta(f, "config");
    if (!cj) {
        pf_st_close(f);
        return pf_fail(PF_ERR_FORMAT, "%s: no config in __metadata__: heads and residual form cannot be inferred from "
                       "shapes; a ParaFormer checkpoint needs \"config\" (docs/design.md §4.1)", path);
    }
    if ((st = pf_config_from_json(cj, strlen(cj), &cfg)) != PF_OK) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", pf_last_error());
        pf_st_close(f);
        return pf_fail(st, "%s: %s", path, msg);
    }
    /* a hostile config must not make us allocate: the file has to hold at
       least one tensor per spec before the specs are built */
    if ((double)cfg.branches * cfg.depth * 11 > (double)f->n) {
        int n = f->n;
        pf_st_close(f);
        return pf_fail(PF_ERR_SHAPE, "%s: the config needs %d x %d layers but the file has only %d tensors", path,
                       cfg.branches, cfg.depth, n);
    }
    if ((st = pf__model_new(&cfg, &m, 0)) != PF_OK) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", pf_last_error());
        pf_st_close(f);
        return pf_fail(st, "%s: %s", path, msg);
    }
    /* every tensor of the config must be there with the right shape */
    for (s = 0; s < m->n_specs; s++) {
        const pf_tensor_spec *sp = &m->specs[s];
        const pf_st_entry *e = pf_st_find(f, sp->name);
        char got[128], want[128];
        int64_t ws[4];
        for (i = 0; i < sp->ndim; i++) ws[i] = sp->shape[i];
        if (!e) { st = pf_fail(PF_ERR_SHAPE, "%s: missing tensor '%s' (the config needs it)", path, sp->name); goto fail; }
        if (e->dtype != PF_F32 && e->dtype != PF_F16 && e->dtype != PF_BF16 && e->dtype != PF_F64) {
            st = pf_fail(PF_ERR_SHAPE, "%s: tensor '%s' has dtype %s, expected F32 (or F16/BF16/F64)", path, sp->name,
                         pf_dtype_name(e->dtype));
            goto fail;
        }
        if (!pf__same_shape(sp->shape, sp->ndim, e->shape, e->ndim)) {
            pf__shape_str(got, sizeof got, e->shape, e->ndim);
            pf__shape_str(want, sizeof want, ws, sp->ndim);
            st = pf_fail(PF_ERR_SHAPE, "%s: tensor '%s' has shape %s, the config needs %s", path, sp->name, got, want);
            goto fail;
        }
    }
    { /* any tensor outside the spec table (and not "train.*") is refused */
        const char **names = (const char **)PF_MALLOC((size_t)m->n_specs * sizeof(char *));
        if (!names) { st = pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); goto fail; }
        for (s = 0; s < m->n_specs; s++) names[s] = m->specs[s].name;
        qsort(names, (size_t)m->n_specs, sizeof(char *), pf__cmp_str);
        for (i = 0; i < f->n; i++) {
            const char *key = f->entries[i].name;
            if (strncmp(key, "train.", 6) && !bsearch(&key, names, (size_t)m->n_specs, sizeof(char *), pf__cmp_str)) {
                st = pf_fail(PF_ERR_SHAPE, "%s: unexpected tensor '%s' (not part of this config)", path, key);
                break;
            }
        }
        PF_FREE(names);
        if (st != PF_OK) goto fail;
    }
    /* shapes match, so the file holds every parameter: now allocate */
    m->params = PF__CALLOC(pf_real, m->n_params);
    if (!m->params) { st = pf_fail(PF_ERR_NOMEM, "%s: out of memory for %zu parameters", path, m->n_params); goto fail; }
    for (s = 0; s < m->n_specs; s++) {
        const pf_st_entry *e = pf_st_find(f, m->specs[s].name);
#ifdef PF_DOUBLE
        st = pf_st_read_f64(f, e, m->params + m->specs[s].offset);
#else
        st = pf_st_read_f32(f, e, m->params + m->specs[s].offset);
#endif
        if (st != PF_OK) goto fail;
    }
    /* a NaN or infinite weight makes every prediction meaningless (NaN
       logits, argmax class 0): refused, not loaded with a warning */
    if ((st = pf__params_finite(m, path)) != PF_OK) goto fail;
    pf_st_close(f);
    *out = m;
    return PF_OK;
fail:
    pf_st_close(f);
    pf_model_free(m);
    return st;
}

/* ---------------------------------------------------------------------- */
/* .npy (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html) */

#define PF__NPY_MAX_HEADER (1u << 20)

PFDEF size_t pf_array_numel(const pf_array *a) {
    size_t n = 1; int i;
    if (!a) return 0;
    for (i = 0; i < a->ndim; i++) n *= (size_t)a->shape[i];
    return n;
}
PFDEF void pf_array_free(pf_array *a) {
    if (!a) return;
    PF_FREE(a->data);
    a->data = NULL;
    a->nbytes = 0;
}

/* The header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } */
static int pf__npy_header(const char *h, size_t n, char *descr, size_t dcap, int *fortran, int64_t *shape, int *ndim,
                          const char **why) {
    size_t i = 0;
    int have = 0;
#define PF__WS() while (i < n && (h[i] == ' ' || h[i] == '\n' || h[i] == '\t' || h[i] == '\r')) i++
    PF__WS();
    if (i >= n || h[i++] != '{') { *why = "header is not a dict"; return 0; }
    for (;;) {
        char key[32], q;
        size_t k = 0;
        PF__WS();
        if (i < n && h[i] == '}') { i++; break; }
        if (i >= n || (h[i] != '\'' && h[i] != '"')) { *why = "expected a quoted key"; return 0; }
        q = h[i++];
        while (i < n && h[i] != q) { if (k + 1 < sizeof key) key[k++] = h[i]; i++; }
        if (i >= n) { *why = "unterminated key"; return 0; }
        key[k] = 0; i++;
        PF__WS();
        if (i >= n || h[i++] != ':') { *why = "expected ':'"; return 0; }
        PF__WS();
        if (!strcmp(key, "descr")) {
            k = 0;
            if (i >= n || (h[i] != '\'' && h[i] != '"')) { *why = "descr is not a string (structured arrays are not supported)"; return 0; }
            q = h[i++];
            while (i < n && h[i] != q) { if (k + 1 < dcap) descr[k++] = h[i]; i++; }
            if (i >= n) { *why = "unterminated descr"; return 0; }
            descr[k] = 0; i++;
            have |= 1;
        } else if (!strcmp(key, "fortran_order")) {
            if (i + 4 <= n && !memcmp(h + i, "True", 4)) { *fortran = 1; i += 4; }
            else if (i + 5 <= n && !memcmp(h + i, "False", 5)) { *fortran = 0; i += 5; }
            else { *why = "fortran_order is not True/False"; return 0; }
            have |= 2;
        } else if (!strcmp(key, "shape")) {
            if (i >= n || h[i++] != '(') { *why = "shape is not a tuple"; return 0; }
            *ndim = 0;
            for (;;) {
                uint64_t v = 0;
                int digits = 0;
                PF__WS();
                if (i < n && h[i] == ')') { i++; break; }
                while (i < n && h[i] >= '0' && h[i] <= '9') {
                    if (v > ((uint64_t)1 << 62) / 10) { *why = "shape dimension too large"; return 0; }
                    v = v * 10 + (uint64_t)(h[i++] - '0');
                    digits++;
                }
                if (i < n && h[i] == 'L') i++; /* python 2 longs */
                if (!digits) { *why = "bad shape (negative or not an integer)"; return 0; }
                if (*ndim >= PF_MAX_DIMS) { *why = "too many dimensions"; return 0; }
                shape[(*ndim)++] = (int64_t)v;
                PF__WS();
                if (i < n && h[i] == ',') { i++; continue; }
                if (i < n && h[i] == ')') { i++; break; }
                *why = "bad shape tuple";
                return 0;
            }
            have |= 4;
        } else { *why = "unknown key in header"; return 0; }
        PF__WS();
        if (i < n && h[i] == ',') { i++; continue; }
        if (i < n && h[i] == '}') { i++; break; }
        *why = "expected ',' or '}'";
        return 0;
    }
    PF__WS();
    if (i != n) { *why = "bytes after the header dict"; return 0; }
    if (have != 7) { *why = "header needs descr, fortran_order and shape"; return 0; }
#undef PF__WS
    return 1;
}

PFDEF pf_status pf_npy_load(const char *path, pf_array *out) {
    FILE *fp;
    unsigned char pre[12];
    char *hdr = NULL, descr[32];
    long long size;
    uint64_t hl, pre_len, bytes;
    int major, fortran = 0, i;
    const char *why = NULL;
    pf_array a;
    PF__NEED(out, "pf_npy_load", "out");
    memset(out, 0, sizeof *out);
    PF__NEED(path, "pf_npy_load", "the path");
    memset(&a, 0, sizeof a);
    fp = fopen(path, "rb");
    if (!fp) return pf_fail(PF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size = pf__file_size(fp);
    if (size < 10 || fread(pre, 1, 10, fp) != 10) {
        fclose(fp);
        return pf_fail(PF_ERR_FORMAT, "%s: file is %lld bytes, too short for a .npy header", path, size);
    }
    if (memcmp(pre, "\x93NUMPY", 6)) { fclose(fp); return pf_fail(PF_ERR_FORMAT, "%s: not a .npy file (bad magic)", path); }
    major = pre[6];
    if (major == 1) { hl = (uint64_t)pre[8] | ((uint64_t)pre[9] << 8); pre_len = 10; }
    else if (major == 2 || major == 3) {
        if (size < 12 || fread(pre + 10, 1, 2, fp) != 2) { fclose(fp); return pf_fail(PF_ERR_FORMAT, "%s: truncated .npy header", path); }
        hl = (uint64_t)pre[8] | ((uint64_t)pre[9] << 8) | ((uint64_t)pre[10] << 16) | ((uint64_t)pre[11] << 24);
        pre_len = 12;
    } else { fclose(fp); return pf_fail(PF_ERR_FORMAT, "%s: unsupported .npy version %d.%d", path, major, pre[7]); }
    if (hl > PF__NPY_MAX_HEADER) { fclose(fp); return pf_fail(PF_ERR_FORMAT, "%s: .npy header length %llu is too large", path, (unsigned long long)hl); }
    if (pre_len + hl > (uint64_t)size) {
        fclose(fp);
        return pf_fail(PF_ERR_FORMAT, "%s: .npy header length %llu runs past the end of the file (%lld bytes)", path,
                       (unsigned long long)hl, size);
    }
    hdr = (char *)PF_MALLOC((size_t)hl + 1);
    if (!hdr) { fclose(fp); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); }
    if (fread(hdr, 1, (size_t)hl, fp) != (size_t)hl) { PF_FREE(hdr); fclose(fp); return pf_fail(PF_ERR_IO, "%s: cannot read the header", path); }
    hdr[hl] = 0;
    if (!pf__npy_header(hdr, (size_t)hl, descr, sizeof descr, &fortran, a.shape, &a.ndim, &why)) {
        PF_FREE(hdr); fclose(fp);
        return pf_fail(PF_ERR_FORMAT, "%s: bad .npy header: %s", path, why);
    }
    PF_FREE(hdr);
    if (fortran) { fclose(fp); return pf_fail(PF_ERR_FORMAT, "%s: Fortran-order arrays are not supported (save with C order)", path); }
    if (!strcmp(descr, "<f4")) a.dtype = PF_F32;
    else if (!strcmp(descr, "<f8")) a.dtype = PF_F64;
    else if (!strcmp(descr, "<f2")) a.dtype = PF_F16;
    else if (!strcmp(descr, "|u1") || !strcmp(descr, "<u1") || !strcmp(descr, "u1")) a.dtype = PF_U8;
    else if (!strcmp(descr, "|i1") || !strcmp(descr, "<i1") || !strcmp(descr, "i1")) a.dtype = PF_I8;
    else if (!strcmp(descr, "<i4")) a.dtype = PF_I32;
    else if (!strcmp(descr, "<i8")) a.dtype = PF_I64;
    else {
        fclose(fp);
        return pf_fail(PF_ERR_SHAPE, "%s: unsupported dtype '%s' (supported: <f4 <f8 <f2 |u1 |i1 <i4 <i8, little-endian)", path, descr);
    }
    bytes = pf_dtype_size(a.dtype);
    for (i = 0; i < a.ndim; i++) {
        if (a.shape[i] && bytes > ((uint64_t)1 << 62) / (uint64_t)a.shape[i]) {
            fclose(fp);
            return pf_fail(PF_ERR_FORMAT, "%s: shape is too large", path);
        }
        bytes *= (uint64_t)a.shape[i];
    }
    if (bytes != (uint64_t)size - pre_len - hl) {
        fclose(fp);
        return pf_fail(PF_ERR_FORMAT, "%s: the header's shape needs %llu data bytes but the file has %llu (%s)", path,
                       (unsigned long long)bytes, (unsigned long long)((uint64_t)size - pre_len - hl),
                       bytes > (uint64_t)size - pre_len - hl ? "truncated" : "extra bytes");
    }
    a.nbytes = (size_t)bytes;
    a.data = PF_MALLOC(a.nbytes ? a.nbytes : 1);
    if (!a.data) { fclose(fp); return pf_fail(PF_ERR_NOMEM, "%s: out of memory for %zu bytes", path, a.nbytes); }
    if (a.nbytes && fread(a.data, 1, a.nbytes, fp) != a.nbytes) {
        PF_FREE(a.data); fclose(fp);
        return pf_fail(PF_ERR_IO, "%s: cannot read the data", path);
    }
    fclose(fp);
    *out = a;
    return PF_OK;
}

PFDEF pf_status pf_npy_save(const char *path, const pf_array *a) {
    static const char *descr[PF_DTYPE_COUNT] = {"<f4", "<f8", "<f2", NULL, "|u1", "|i1", "<i4", "<i8"};
    char hdr[512], tmp[1024];
    size_t k = 0, total, bytes;
    unsigned char pre[10];
    FILE *f;
    int i, ok;
    PF__NEED(path, "pf_npy_save", "the path");
    PF__NEED(a, "pf_npy_save", "the array");
    if (a->nbytes && !a->data) return pf_fail(PF_ERR_ARG, "%s: pf_npy_save: the array's data is NULL", path);
    if ((unsigned)a->dtype >= PF_DTYPE_COUNT || !descr[a->dtype]) return pf_fail(PF_ERR_ARG, "%s: dtype cannot be stored in .npy", path);
    if (a->ndim < 0 || a->ndim > PF_MAX_DIMS) return pf_fail(PF_ERR_ARG, "%s: bad rank %d", path, a->ndim);
    bytes = pf_dtype_size(a->dtype);
    for (i = 0; i < a->ndim; i++) {
        if (a->shape[i] < 0 || (a->shape[i] > 0 && bytes > ((size_t)1 << 62) / (size_t)a->shape[i]))
            return pf_fail(PF_ERR_ARG, "%s: pf_npy_save: dimension %d is %lld", path, i, (long long)a->shape[i]);
        bytes *= (size_t)a->shape[i];
    }
    if (bytes > a->nbytes) /* never read past what the array holds */
        return pf_fail(PF_ERR_ARG, "%s: pf_npy_save: the shape needs %zu bytes but the array holds %zu (nbytes)", path,
                       bytes, a->nbytes);
    pf__appendf(hdr, sizeof hdr, &k, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr[a->dtype]);
    for (i = 0; i < a->ndim; i++) pf__appendf(hdr, sizeof hdr, &k, "%lld,%s", (long long)a->shape[i], i + 1 < a->ndim ? " " : "");
    pf__appendf(hdr, sizeof hdr, &k, "), }");
    total = (10 + k + 1 + 63) / 64 * 64; /* 64-byte aligned, ends with '\n' */
    if (total - 10 > sizeof hdr) return pf_fail(PF_ERR_ARG, "%s: header too long", path);
    while (10 + k + 1 < total) hdr[k++] = ' ';
    hdr[k++] = '\n';
    memcpy(pre, "\x93NUMPY\x01\x00", 8);
    pre[8] = (unsigned char)(k & 255);
    pre[9] = (unsigned char)(k >> 8);
    f = pf__open_tmp(path, tmp, sizeof tmp);
    if (!f) return PF_ERR_IO;
    ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, k, f) == k && (!bytes || fwrite(a->data, 1, bytes, f) == bytes);
    return pf__commit(f, tmp, path, ok);
}

/* ---------------------------------------------------------------------- */
/* datasets: an 8-bit image to the model's input (resize, normalise) */

PFDEF pf_status pf_image_to_input(const unsigned char *img, int h, int w, int c, const pf_config *cfg, float *out) {
    int S, C, ch, y, x;
    PF__NEED(img, "pf_image_to_input", "the image");
    PF__NEED(cfg, "pf_image_to_input", "the config");
    PF__NEED(out, "pf_image_to_input", "the output");
    S = cfg->image_size; C = cfg->channels;
    if (S < 1 || S > PF__MAX_SIDE || C < 1 || C > PF_MAX_CHANNELS)
        return pf_fail(PF_ERR_CONFIG, "pf_image_to_input: the config's image size %d / channels %d are not usable (resolve it first)", S, C);
    if (h < 1 || w < 1 || c < 1 || c > 4) return pf_fail(PF_ERR_ARG, "image of %dx%d with %d channels is not supported", w, h, c);
    if (C != 1 && C != 3 && C != c) return pf_fail(PF_ERR_SHAPE, "a %d-channel image cannot feed a %d-channel model", c, C);
    for (ch = 0; ch < C; ch++) {
        double mean = cfg->mean[ch], sd = cfg->std[ch] != 0.0f ? cfg->std[ch] : 1.0;
        for (y = 0; y < S; y++) {
            /* bilinear with half-pixel centres (torch interpolate, align_corners=False) */
            double sy = ((double)y + 0.5) * h / S - 0.5, ly;
            int y0, y1;
            if (sy < 0) sy = 0;
            y0 = (int)sy; if (y0 > h - 1) y0 = h - 1;
            y1 = y0 + 1 < h ? y0 + 1 : h - 1;
            ly = sy - y0;
            for (x = 0; x < S; x++) {
                double sx = ((double)x + 0.5) * w / S - 0.5, lx, v = 0;
                int x0, x1, t;
                if (sx < 0) sx = 0;
                x0 = (int)sx; if (x0 > w - 1) x0 = w - 1;
                x1 = x0 + 1 < w ? x0 + 1 : w - 1;
                lx = sx - x0;
                for (t = 0; t < 4; t++) {
                    int yy = t < 2 ? y0 : y1, xx = (t & 1) ? x1 : x0;
                    double wt = (t < 2 ? 1 - ly : ly) * ((t & 1) ? lx : 1 - lx);
                    const unsigned char *px = img + ((size_t)yy * w + xx) * c;
                    double val;
                    if (C == c) val = px[ch];
                    else if (C == 1) val = c >= 3 ? 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2] : px[0];
                    else val = c >= 3 ? px[ch] : px[0]; /* C == 3 */
                    v += wt * val;
                }
                out[((size_t)ch * S + y) * S + x] = (float)((v / 255.0 - mean) / sd);
            }
        }
    }
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* datasets: readers (bounded input streams, .gz; Fashion-MNIST, CIFAR,
   image files and folders, .npy pairs) and the spec that picks one */

/* What one dataset file may decompress to (a gzip bomb stops here). */
#ifndef PF_DATASET_MAX_BYTES
#define PF_DATASET_MAX_BYTES ((uint64_t)1 << 30)
#endif
#define PF__MAX_LABEL 100000    /* npy labels must be below this */

#if defined(PF_HAVE_STB) && (defined(__unix__) || defined(__APPLE__))
#include <dirent.h>
#define PF__HAVE_DIRENT 1
#endif

static const char *const pf__fmnist_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
static const char *const pf__cifar10_names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                                  "dog", "frog", "horse", "ship", "truck"};
static const char *const pf__cifar100_names[100] = {
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm"};

PFDEF void pf_dataset_free(pf_dataset *d) {
    int i;
    if (!d) return;
    if (d->class_names)
        for (i = 0; i < d->classes; i++) PF_FREE(d->class_names[i]);
    PF_FREE(d->class_names);
    PF_FREE(d->images);
    PF_FREE(d->labels);
    memset(d, 0, sizeof *d);
}

/* d->class_names = copies of names[0..k) (d->classes must be k) */
static pf_status pf__set_names(pf_dataset *d, const char *const *names, int k) {
    int i;
    if (!names) return PF_OK;
    d->class_names = PF__CALLOC(char *, k);
    if (!d->class_names) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", d->name);
    for (i = 0; i < k; i++)
        if (!(d->class_names[i] = pf__strndup(names[i], strlen(names[i]))))
            return pf_fail(PF_ERR_NOMEM, "%s: out of memory", d->name);
    return PF_OK;
}

/* path = dir/name; 0 (and an error) when it does not fit */
static int pf__join(char *path, size_t cap, const char *dir, const char *name) {
    size_t n = strlen(dir);
    const char *sep = n && dir[n - 1] == '/' ? "" : "/";
    if ((size_t)snprintf(path, cap, "%s%s%s", dir, sep, name) >= cap) {
        pf_fail(PF_ERR_ARG, "%s/%s: path too long", dir, name);
        return 0;
    }
    return 1;
}

/* path = dir/base if that file opens, else dir/base.gz if that does (the
   uncompressed file wins when both exist) */
static pf_status pf__find_file(char *path, size_t cap, const char *dir, const char *base, const char *what) {
    char gz[1100];
    FILE *f;
    int e;
    if (!pf__join(path, cap, dir, base)) return PF_ERR_ARG;
    if ((f = fopen(path, "rb")) != NULL) { fclose(f); return PF_OK; }
    e = errno;
    if ((size_t)snprintf(gz, sizeof gz, "%s.gz", path) >= sizeof gz || strlen(gz) >= cap)
        return pf_fail(PF_ERR_ARG, "%s.gz: path too long", path);
    if ((f = fopen(gz, "rb")) != NULL) { fclose(f); memcpy(path, gz, strlen(gz) + 1); return PF_OK; }
    return pf_fail(PF_ERR_IO, "%s[.gz]: cannot open the %s: %s", path, what, strerror(e));
}

/* A dataset file being read: plain, or gzip through zlib (streaming). */
typedef struct pf__in {
    const char *path;
    FILE *f;
    void *gz;       /* gzFile */
    long long left; /* plain files: bytes not yet read; gzip: -1 (unknown) */
} pf__in;

static void pf__in_close(pf__in *in) {
    if (in->f) fclose(in->f);
#ifdef PF_HAVE_ZLIB
    if (in->gz) gzclose((gzFile)in->gz);
#endif
    in->f = NULL;
    in->gz = NULL;
}

static pf_status pf__in_open(pf__in *in, const char *path) {
    memset(in, 0, sizeof *in);
    in->path = path;
    in->left = -1;
    if (pf_path_has_ext(path, ".gz")) {
#ifdef PF_HAVE_ZLIB
        unsigned char mg[2] = {0, 0};
        size_t got;
        FILE *f = fopen(path, "rb");
        if (!f) return pf_fail(PF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        got = fread(mg, 1, 2, f);
        fclose(f);
        if (got != 2 || mg[0] != 0x1f || mg[1] != 0x8b)
            return pf_fail(PF_ERR_FORMAT, "%s: not a gzip file (it does not start with the gzip magic 1f 8b)", path);
        in->gz = (void *)gzopen(path, "rb");
        if (!in->gz) return pf_fail(PF_ERR_IO, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
        gzbuffer((gzFile)in->gz, 1u << 17);
        return PF_OK;
#else
        return pf_fail(PF_ERR_IO, "%s: .gz input needs the library built with PF_HAVE_ZLIB (zlib); gunzip it or rebuild",
                       path);
#endif
    }
    in->f = fopen(path, "rb");
    if (!in->f) return pf_fail(PF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    in->left = pf__file_size(in->f);
    if (in->left < 0) {
        pf__in_close(in);
        return pf_fail(PF_ERR_IO, "%s: cannot determine the size (not a regular file?)", path);
    }
    return PF_OK;
}

/* Reads up to n bytes; *got < n only at the end of the data. A gzip stream
   that ends early or is corrupt is an error. */
static pf_status pf__in_read(pf__in *in, void *dst, size_t n, size_t *got) {
    *got = 0;
    if (in->f) {
        *got = n ? fread(dst, 1, n, in->f) : 0;
        if (*got < n && ferror(in->f)) return pf_fail(PF_ERR_IO, "%s: read error", in->path);
        in->left -= (long long)*got;
        return PF_OK;
    }
#ifdef PF_HAVE_ZLIB
    while (*got < n) {
        size_t want = n - *got;
        int r, err = Z_OK;
        const char *msg;
        if (want > (1u << 30)) want = 1u << 30;
        r = gzread((gzFile)in->gz, (unsigned char *)dst + *got, (unsigned)want);
        if (r > 0) { *got += (size_t)r; if ((size_t)r == want) continue; }
        msg = gzerror((gzFile)in->gz, &err);
        if (r < 0 || (err != Z_OK && err != Z_BUF_ERROR))
            return pf_fail(PF_ERR_FORMAT, "%s: corrupt gzip data (zlib: %s)", in->path, msg && *msg ? msg : "error");
        if (err == Z_BUF_ERROR)
            return pf_fail(PF_ERR_FORMAT, "%s: truncated gzip file (the compressed stream ends early)", in->path);
        break; /* the end of the stream */
    }
#endif
    return PF_OK;
}

/* Exactly n bytes (a header), else a truncation error naming `what`. */
static pf_status pf__in_exact(pf__in *in, void *dst, size_t n, const char *what) {
    size_t got;
    pf_status st = pf__in_read(in, dst, n, &got);
    if (st != PF_OK) return st;
    if (got != n)
        return pf_fail(PF_ERR_FORMAT, "%s: truncated: the file ends after %zu bytes, inside the %s (%zu bytes)", in->path,
                       got, what, n);
    return PF_OK;
}

/* The rest of the input in a new PF_MALLOC buffer. want > 0: exactly `want`
   bytes of `what` must remain (else truncated / trailing bytes); want == 0:
   any positive whole number of `rec`-byte records up to PF_DATASET_MAX_BYTES.
   Plain files are checked against their size before anything is allocated;
   gzip data grows the buffer only as it arrives, so a lying header or a
   gzip bomb costs no more memory than the data it really holds. */
static pf_status pf__in_rest(pf__in *in, uint64_t want, size_t rec, const char *what, unsigned char **buf,
                             size_t *len) {
    uint64_t limit = want ? want : (uint64_t)PF_DATASET_MAX_BYTES;
    unsigned char *b = NULL;
    size_t n = 0, cap, got;
    pf_status st;
    *buf = NULL;
    *len = 0;
    if (limit >= (uint64_t)((size_t)-1 >> 1)) return pf_fail(PF_ERR_FORMAT, "%s: %s too large for this machine", in->path, what);
    if (in->f) { /* plain: the size is known */
        uint64_t have = (uint64_t)in->left;
        if (want && have != want)
            return pf_fail(PF_ERR_FORMAT, "%s: the header announces %llu bytes of %s but the file has %llu (%s)", in->path,
                           (unsigned long long)want, what, (unsigned long long)have,
                           have < want ? "truncated" : "trailing bytes");
        if (!want && have > limit)
            return pf_fail(PF_ERR_FORMAT, "%s: %llu bytes is more than the %llu a dataset file may have", in->path,
                           (unsigned long long)have, (unsigned long long)limit);
        if (!want && (have == 0 || have % rec))
            return pf_fail(PF_ERR_FORMAT, "%s: %llu bytes is not a whole positive number of %zu-byte records (%s)",
                           in->path, (unsigned long long)have, rec, what);
        b = (unsigned char *)PF_MALLOC((size_t)have ? (size_t)have : 1);
        if (!b) return pf_fail(PF_ERR_NOMEM, "%s: out of memory for %llu bytes", in->path, (unsigned long long)have);
        if ((st = pf__in_read(in, b, (size_t)have, &got)) != PF_OK || got != (size_t)have) {
            PF_FREE(b);
            return st != PF_OK ? st : pf_fail(PF_ERR_IO, "%s: read error (file changed while reading?)", in->path);
        }
        *buf = b;
        *len = (size_t)have;
        return PF_OK;
    }
    cap = limit + 1 < ((size_t)1 << 20) ? (size_t)limit + 1 : ((size_t)1 << 20);
    for (;;) {
        if (n == cap) {
            size_t nc;
            unsigned char *nb;
            if ((uint64_t)n > limit) break; /* one byte past the limit: enough to tell */
            nc = (uint64_t)cap * 2 > limit + 1 ? (size_t)limit + 1 : cap * 2;
            nb = (unsigned char *)PF_REALLOC(b, nc);
            if (!nb) { PF_FREE(b); return pf_fail(PF_ERR_NOMEM, "%s: out of memory for %zu bytes", in->path, nc); }
            b = nb;
            cap = nc;
        } else if (!b) {
            b = (unsigned char *)PF_MALLOC(cap);
            if (!b) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", in->path);
        }
        if ((st = pf__in_read(in, b + n, cap - n, &got)) != PF_OK) { PF_FREE(b); return st; }
        n += got;
        if (n < cap) break; /* the end */
    }
    if ((uint64_t)n > limit) {
        PF_FREE(b);
        if (want)
            return pf_fail(PF_ERR_FORMAT, "%s: trailing bytes after the %llu bytes of %s the header announces", in->path,
                           (unsigned long long)want, what);
        return pf_fail(PF_ERR_FORMAT, "%s: decompresses to more than %llu bytes, the most a dataset file may have "
                       "(PF_DATASET_MAX_BYTES; a gzip bomb?)", in->path, (unsigned long long)limit);
    }
    if (want && (uint64_t)n < want) {
        PF_FREE(b);
        return pf_fail(PF_ERR_FORMAT, "%s: truncated: the header announces %llu bytes of %s but the data ends after %zu",
                       in->path, (unsigned long long)want, what, n);
    }
    if (!want && (n == 0 || n % rec)) {
        PF_FREE(b);
        return pf_fail(PF_ERR_FORMAT, "%s: %zu bytes (decompressed) is not a whole positive number of %zu-byte records (%s)",
                       in->path, n, rec, what);
    }
    *buf = b;
    *len = n;
    return PF_OK;
}

/* ---- Fashion-MNIST (IDX, http://yann.lecun.com/exdb/mnist/ format) ---- */

static uint32_t pf__rd32be(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Opens an IDX file of unsigned bytes with `rank` dimensions, reads dims. */
static pf_status pf__idx_open(pf__in *in, const char *path, int rank, uint32_t *dims) {
    unsigned char h[16];
    uint32_t magic, expect = 0x00000800u | (uint32_t)rank;
    int i;
    pf_status st = pf__in_open(in, path);
    if (st != PF_OK) return st;
    if ((st = pf__in_exact(in, h, 4 + 4 * (size_t)rank, "IDX header")) != PF_OK) { pf__in_close(in); return st; }
    magic = pf__rd32be(h);
    if (magic != expect) {
        pf__in_close(in);
        return pf_fail(PF_ERR_FORMAT, "%s: bad magic 0x%08x (expected 0x%08x: IDX unsigned bytes, %d dimension%s)", path,
                       (unsigned)magic, (unsigned)expect, rank, rank > 1 ? "s" : "");
    }
    for (i = 0; i < rank; i++) dims[i] = pf__rd32be(h + 4 + 4 * i);
    return PF_OK;
}

static pf_status pf__load_fmnist(const char *dir, int split, pf_dataset *d) {
    const char *pre = split == PF_SPLIT_TEST ? "t10k" : "train";
    char ip[1024], lp[1024], base[64];
    uint32_t id[3], ld[1];
    pf__in ii, li;
    unsigned char *lab = NULL;
    size_t len, i;
    uint64_t bytes;
    pf_status st;
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", pre);
    if ((st = pf__find_file(ip, sizeof ip, dir, base, "Fashion-MNIST images")) != PF_OK) return st;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", pre);
    if ((st = pf__find_file(lp, sizeof lp, dir, base, "Fashion-MNIST labels")) != PF_OK) return st;
    if ((st = pf__idx_open(&li, lp, 1, ld)) != PF_OK) return st;
    if ((st = pf__idx_open(&ii, ip, 3, id)) != PF_OK) { pf__in_close(&li); return st; }
    if (id[0] != ld[0])
        st = pf_fail(PF_ERR_FORMAT, "%s: %u labels, but %s has %u images", lp, (unsigned)ld[0], ip, (unsigned)id[0]);
    else if (id[0] == 0 || id[0] > 0x7fffffffu)
        st = pf_fail(PF_ERR_FORMAT, "%s: image count %u is out of range (1..2^31-1)", ip, (unsigned)id[0]);
    else if (id[1] < 1 || id[1] > PF__MAX_SIDE || id[2] < 1 || id[2] > PF__MAX_SIDE)
        st = pf_fail(PF_ERR_FORMAT, "%s: image size %ux%u is out of range (1..%d)", ip, (unsigned)id[1], (unsigned)id[2],
                     PF__MAX_SIDE);
    else if ((bytes = (uint64_t)id[0] * id[1] * id[2]) > (uint64_t)PF_DATASET_MAX_BYTES)
        st = pf_fail(PF_ERR_FORMAT, "%s: %u images of %ux%u are %llu bytes, more than a dataset file may have", ip,
                     (unsigned)id[0], (unsigned)id[1], (unsigned)id[2], (unsigned long long)bytes);
    else if ((st = pf__in_rest(&li, id[0], 1, "labels", &lab, &len)) == PF_OK) {
        for (i = 0; i < len && st == PF_OK; i++)
            if (lab[i] > 9) st = pf_fail(PF_ERR_FORMAT, "%s: label %d of item %zu is out of range (0..9)", lp, lab[i], i);
        if (st == PF_OK) st = pf__in_rest(&ii, bytes, 1, "pixels", &d->images, &len);
    }
    pf__in_close(&ii);
    pf__in_close(&li);
    if (st == PF_OK) {
        d->n = (int)id[0];
        d->h = (int)id[1];
        d->w = (int)id[2];
        d->c = 1;
        d->classes = 10;
        d->labels = PF__CALLOC(int, d->n);
        if (!d->labels) st = pf_fail(PF_ERR_NOMEM, "%s: out of memory", ip);
        else for (i = 0; i < (size_t)d->n; i++) d->labels[i] = lab[i];
        if (st == PF_OK) st = pf__set_names(d, pf__fmnist_names, 10);
    }
    PF_FREE(lab);
    return st;
}

/* ---- CIFAR-10 / CIFAR-100, binary version
   (https://www.cs.toronto.edu/~kriz/cifar.html): records of label byte(s)
   then 1024 R, 1024 G, 1024 B bytes (32x32 row-major planes) ---- */

/* Class names, one per line, from dir/file if it has at least k non-empty
   lines; otherwise NULL (the caller keeps the standard names). */
static char **pf__read_names(const char *dir, const char *file, int k) {
    char path[1100], line[256];
    char **names;
    FILE *f;
    int n = 0;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path) return NULL;
    if (!(f = fopen(path, "rb"))) return NULL;
    names = PF__CALLOC(char *, k);
    while (names && n < k && fgets(line, sizeof line, f)) {
        size_t m = strlen(line);
        while (m && (line[m - 1] == '\n' || line[m - 1] == '\r' || line[m - 1] == ' ' || line[m - 1] == '\t')) m--;
        if (!m) continue;
        if (!(names[n] = pf__strndup(line, m))) break;
        n++;
    }
    fclose(f);
    if (names && n < k) {
        while (n > 0) PF_FREE(names[--n]);
        PF_FREE(names);
        names = NULL;
    }
    return names;
}

static pf_status pf__load_cifar(const char *dir, int split, int hundred, pf_dataset *d) {
    const size_t rec = hundred ? 3074 : 3073;
    const char *what = hundred ? "CIFAR-100 batch" : "CIFAR-10 batch";
    char path[1024], base[64], missing[64] = "";
    int f, nf = hundred || split == PF_SPLIT_TEST ? 1 : 5, loaded = 0;
    size_t ml = 0;
    pf_status st = PF_OK;
    d->h = d->w = 32;
    d->c = 3;
    d->classes = hundred ? 100 : 10;
    for (f = 0; f < nf && st == PF_OK; f++) {
        pf__in in;
        unsigned char *buf = NULL, *img;
        int *lab;
        size_t len, r, nrec, p;
        if (hundred) snprintf(base, sizeof base, "%s.bin", split == PF_SPLIT_TEST ? "test" : "train");
        else if (split == PF_SPLIT_TEST) snprintf(base, sizeof base, "test_batch.bin");
        else snprintf(base, sizeof base, "data_batch_%d.bin", f + 1);
        if ((st = pf__find_file(path, sizeof path, dir, base, what)) != PF_OK) {
            /* CIFAR-10's training split: the batches that are there (a
               slice of the set), named in the dataset's name */
            if (nf == 1 || st != PF_ERR_IO) break;
            pf__appendf(missing, sizeof missing, &ml, "%s%d", ml ? "," : "", f + 1);
            st = PF_OK;
            continue;
        }
        loaded++;
        if ((st = pf__in_open(&in, path)) != PF_OK) break;
        st = pf__in_rest(&in, 0, rec, hundred ? "coarse label, fine label, 3072 pixels" : "label, 3072 pixels", &buf, &len);
        pf__in_close(&in);
        if (st != PF_OK) break;
        nrec = len / rec;
        if (nrec > (size_t)0x7fffffff - (size_t)d->n) {
            PF_FREE(buf);
            st = pf_fail(PF_ERR_FORMAT, "%s: too many images in total", path);
            break;
        }
        img = (unsigned char *)PF_REALLOC(d->images, ((size_t)d->n + nrec) * 3072);
        if (img) d->images = img;
        lab = img ? (int *)PF_REALLOC(d->labels, ((size_t)d->n + nrec) * sizeof(int)) : NULL;
        if (lab) d->labels = lab;
        if (!img || !lab) {
            PF_FREE(buf);
            st = pf_fail(PF_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        for (r = 0; r < nrec && st == PF_OK; r++) {
            const unsigned char *s = buf + r * rec;
            unsigned char *o = d->images + ((size_t)d->n + r) * 3072;
            if (hundred && s[0] >= 20)
                st = pf_fail(PF_ERR_FORMAT, "%s: record %zu has coarse label %d (expected 0..19)", path, r, s[0]);
            else if (s[rec - 3073] >= d->classes)
                st = pf_fail(PF_ERR_FORMAT, "%s: record %zu has %slabel %d (expected 0..%d)", path, r,
                             hundred ? "fine " : "", s[rec - 3073], d->classes - 1);
            d->labels[(size_t)d->n + r] = s[rec - 3073];
            s += rec - 3072;
            for (p = 0; p < 1024; p++) { /* CHW planes -> HWC */
                o[3 * p] = s[p];
                o[3 * p + 1] = s[1024 + p];
                o[3 * p + 2] = s[2048 + p];
            }
        }
        PF_FREE(buf);
        d->n += (int)nrec;
    }
    if (st == PF_OK && nf > 1 && !loaded)
        st = pf_fail(PF_ERR_IO, "%s: no CIFAR-10 training batch (data_batch_1.bin .. data_batch_5.bin, or .bin.gz)", dir);
    if (st == PF_OK && ml) {
        size_t len = strlen(d->name);
        pf__appendf(d->name, sizeof d->name, &len, " (%d of 5 training batches; data_batch_%s missing)", loaded, missing);
    }
    if (st == PF_OK) {
        d->class_names = pf__read_names(dir, hundred ? "fine_label_names.txt" : "batches.meta.txt", d->classes);
        if (!d->class_names) st = pf__set_names(d, hundred ? pf__cifar100_names : pf__cifar10_names, d->classes);
    }
    return st;
}

/* ---- image files (stb_image) ---- */

#ifndef PF_IMAGE_MAX_PIXELS
#define PF_IMAGE_MAX_PIXELS ((size_t)1 << 25)
#endif
/* the largest single allocation stb_image may make now (0: the default) */
static PF__TLS size_t pf__stbi_bound;
#define PF__STBI_DEFAULT_BOUND ((size_t)256 << 20)

PFDEF void *pf_stbi_malloc(size_t n) {
    void *p;
    if (n > (pf__stbi_bound ? pf__stbi_bound : PF__STBI_DEFAULT_BOUND)) return NULL;
    /* zeroed: stb_image 2.27 reads Huffman tables a hostile JPEG never
       defined (found by fuzzing; uninitialised memory otherwise) */
    if ((p = PF_MALLOC(n ? n : 1)) != NULL) memset(p, 0, n ? n : 1);
    return p;
}
PFDEF void *pf_stbi_realloc(void *p, size_t n) {
    if (n > (pf__stbi_bound ? pf__stbi_bound : PF__STBI_DEFAULT_BOUND)) return NULL;
    return PF_REALLOC(p, n ? n : 1);
}
PFDEF void pf_stbi_free(void *p) { if (p) PF_FREE(p); }

#ifdef PF_HAVE_STB
/* Debian's stb_image (2.27) overruns its Huffman tables when a JPEG DHT table
   declares more than 256 codes (nothings/stb#1289, fixed upstream later).
   This walks the markers as stb_image does and refuses such a file before
   decoding. */
static int pf__jpeg_tables_ok(const unsigned char *p, size_t n) {
    size_t i = 2, end, j, len;
    int k, sum;
    while (i + 1 < n) {
        unsigned m = p[i + 1];
        if (p[i] != 0xFF || m == 0xFF) { i++; continue; }                               /* entropy data, fill */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD9)) { i += 2; continue; } /* no length */
        if (i + 3 >= n) break;
        len = (size_t)p[i + 2] << 8 | p[i + 3];
        end = i + 2 + len;
        for (j = i + 4; m == 0xC4 && j < end; j += 17 + (size_t)sum) { /* DHT: class/id, 16 counts, symbols */
            for (sum = 0, k = 1; k <= 16; k++) sum += j + k < n ? p[j + k] : 0;
            if (sum > 256) return 0;
        }
        i = end;
    }
    return 1;
}

/* pf_image_load with `want` channels (0: the file's own) */
static pf_status pf__image_load(const char *path, int want, unsigned char **pixels, int *h, int *w, int *c) {
    FILE *f = fopen(path, "rb");
    long long size;
    unsigned char *buf, *img;
    int iw = 0, ih = 0, ic = 0, known;
    size_t bytes, jpeg_at;
    *pixels = NULL;
    *h = *w = *c = 0;
    if (!f) return pf_fail(PF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size = pf__file_size(f);
    if (size < 0 || size > (1LL << 30)) {
        fclose(f);
        return pf_fail(PF_ERR_IO, "%s: cannot read the image (size unknown or over 1 GiB)", path);
    }
    buf = (unsigned char *)PF_MALLOC(size ? (size_t)size : 1);
    if (!buf) { fclose(f); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) { fclose(f); PF_FREE(buf); return pf_fail(PF_ERR_IO, "%s: read error", path); }
    fclose(f);
    { /* stb_image takes any number of 0xFF fill bytes before the JPEG start
         marker (found by fuzzing): check from the last of them */
        size_t k = 0;
        while (k < (size_t)size && buf[k] == 0xFF) k++;
        jpeg_at = k >= 1 && k < (size_t)size && buf[k] == 0xD8 ? k - 1 : (size_t)-1;
    }
    if (jpeg_at != (size_t)-1 && !pf__jpeg_tables_ok(buf + jpeg_at, (size_t)size - jpeg_at)) {
        PF_FREE(buf);
        return pf_fail(PF_ERR_FORMAT, "%s: cannot read the image (corrupt JPEG: a Huffman table has more than 256 codes)", path);
    }
    pf__stbi_bound = 2 * (size_t)size + ((size_t)16 << 20); /* the header probe reads, it does not decode */
    known = stbi_info_from_memory(buf, (int)size, &iw, &ih, &ic);
    pf__stbi_bound = 0;
    if (!known) {
        PF_FREE(buf);
        return pf_fail(PF_ERR_FORMAT, "%s: cannot read the image (%s)", path, stbi_failure_reason());
    }
    if (iw < 1 || ih < 1 || iw > PF__MAX_SIDE || ih > PF__MAX_SIDE) {
        PF_FREE(buf);
        return pf_fail(PF_ERR_FORMAT, "%s: cannot read the image (%dx%d: more than %d pixels on a side)", path, iw, ih,
                       PF__MAX_SIDE);
    }
    if ((size_t)iw * (size_t)ih > PF_IMAGE_MAX_PIXELS) {
        PF_FREE(buf);
        return pf_fail(PF_ERR_FORMAT, "%s: cannot read the image (%dx%d: more than PF_IMAGE_MAX_PIXELS = %zu pixels)", path,
                       iw, ih, (size_t)PF_IMAGE_MAX_PIXELS);
    }
    /* what decoding this image can need at once: 16-bit RGBA rows with their
       filter bytes, twice over (stb grows buffers by doubling), and the
       file's own bytes; nothing a lying chunk length asks for beyond that */
    pf__stbi_bound = 2 * ((size_t)iw * 8 + 1) * (size_t)ih + 2 * (size_t)size + ((size_t)1 << 20);
    img = stbi_load_from_memory(buf, (int)size, &iw, &ih, &ic, want);
    pf__stbi_bound = 0;
    PF_FREE(buf);
    if (!img) return pf_fail(PF_ERR_FORMAT, "%s: cannot read the image (%s)", path, stbi_failure_reason());
    if (want) ic = want;
    if (iw < 1 || ih < 1 || iw > PF__MAX_SIDE || ih > PF__MAX_SIDE || ic < 1 || ic > 4) {
        stbi_image_free(img);
        return pf_fail(PF_ERR_FORMAT, "%s: cannot read the image (decoded as %dx%d with %d channels)", path, iw, ih, ic);
    }
    bytes = (size_t)iw * (size_t)ih * (size_t)ic;
    *pixels = (unsigned char *)PF_MALLOC(bytes); /* the caller frees with PF_FREE */
    if (!*pixels) { stbi_image_free(img); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); }
    memcpy(*pixels, img, bytes);
    stbi_image_free(img);
    *h = ih;
    *w = iw;
    *c = ic;
    return PF_OK;
}
#endif

PFDEF pf_status pf_image_load(const char *path, unsigned char **pixels, int *h, int *w, int *c) {
    PF__NEED(pixels, "pf_image_load", "pixels");
    *pixels = NULL;
    PF__NEED(h && w && c, "pf_image_load", "h, w or c");
    PF__NEED(path, "pf_image_load", "the path");
#ifdef PF_HAVE_STB
    return pf__image_load(path, 0, pixels, h, w, c);
#else
    *pixels = NULL;
    *h = *w = *c = 0;
    return pf_fail(PF_ERR_IO, "%s: image input needs the library built with PF_HAVE_STB (stb_image, Debian package "
                   "libstb-dev); convert the images to .npy or rebuild", path);
#endif
}

PFDEF void pf_image_free(unsigned char *pixels) { if (pixels) PF_FREE(pixels); }

/* ---- folder:DIR, DIR/<class>/<image> ---- */

#ifdef PF__HAVE_DIRENT
static void pf__free_list(char **v, int n) {
    int i;
    for (i = 0; i < n; i++) PF_FREE(v[i]);
    PF_FREE(v);
}

/* Sorted names in dir (no dot files): subfolders when dirs, else image files. */
static pf_status pf__list_dir(const char *dir, int dirs, char ***out, int *n_out) {
    DIR *dp = opendir(dir), *sub;
    struct dirent *e;
    char **v = NULL, **nv, path[1100];
    int n = 0, cap = 0, keep;
    *out = NULL;
    *n_out = 0;
    if (!dp) return pf_fail(PF_ERR_IO, "%s: cannot open the folder: %s", dir, strerror(errno));
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
        sub = opendir(path);
        if (sub) closedir(sub);
        keep = dirs ? sub != NULL
                    : !sub && (pf_path_has_ext(e->d_name, ".png") || pf_path_has_ext(e->d_name, ".jpg") ||
                               pf_path_has_ext(e->d_name, ".jpeg") || pf_path_has_ext(e->d_name, ".bmp"));
        if (!keep) continue;
        if (n == cap) {
            if (cap >= (1 << 26)) { closedir(dp); pf__free_list(v, n); return pf_fail(PF_ERR_ARG, "%s: too many entries", dir); }
            cap = cap ? cap * 2 : 64;
            nv = (char **)PF_REALLOC(v, (size_t)cap * sizeof(char *));
            if (!nv) { closedir(dp); pf__free_list(v, n); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", dir); }
            v = nv;
        }
        if (!(v[n] = pf__strndup(e->d_name, strlen(e->d_name)))) {
            closedir(dp);
            pf__free_list(v, n);
            return pf_fail(PF_ERR_NOMEM, "%s: out of memory", dir);
        }
        n++;
    }
    closedir(dp);
    if (n > 1) qsort(v, (size_t)n, sizeof(char *), pf__cmp_str);
    *out = v;
    *n_out = n;
    return PF_OK;
}
#endif

/* The classes are the subfolders sorted by name (bytewise), the images of
   each its .png/.jpg/.jpeg/.bmp files (any case) sorted by name. All images
   must have the size of the first one; their channels are converted to the
   first one's. */
static pf_status pf__load_folder(const char *dir, pf_dataset *d) {
#ifndef PF_HAVE_STB
    (void)d;
    return pf_fail(PF_ERR_IO, "%s: image folders need the library built with PF_HAVE_STB (stb_image, Debian package "
                   "libstb-dev); convert the images to .npy (npy:X.npy,Y.npy) or rebuild", dir);
#elif !defined(PF__HAVE_DIRENT)
    (void)d;
    return pf_fail(PF_ERR_IO, "%s: image folders need POSIX opendir/readdir, which this platform lacks; convert the "
                   "images to .npy (npy:X.npy,Y.npy)", dir);
#else
    char **cls = NULL, ***files = NULL, path[2200], first[2200];
    int ncls = 0, *nfiles = NULL, k, j;
    size_t total = 0, per = 0, at = 0;
    pf_status st = pf__list_dir(dir, 1, &cls, &ncls);
    if (st != PF_OK) return st;
    if (ncls == 0) { PF_FREE(cls); return pf_fail(PF_ERR_FORMAT, "%s: no class subfolders (expected DIR/<class>/<image>)", dir); }
    files = PF__CALLOC(char **, ncls);
    nfiles = PF__CALLOC(int, ncls);
    if (!files || !nfiles) st = pf_fail(PF_ERR_NOMEM, "%s: out of memory", dir);
    for (k = 0; k < ncls && st == PF_OK; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, cls[k]);
        if ((st = pf__list_dir(path, 0, &files[k], &nfiles[k])) != PF_OK) break;
        if (!nfiles[k]) st = pf_fail(PF_ERR_FORMAT, "%s: no images (.png .jpg .jpeg .bmp) in this class folder", path);
        total += (size_t)nfiles[k];
        if (total > 0x7fffffff) st = pf_fail(PF_ERR_FORMAT, "%s: too many images", dir);
    }
    if (st == PF_OK) {
        d->classes = ncls;
        d->n = (int)total;
        d->labels = PF__CALLOC(int, total);
        if (!d->labels) st = pf_fail(PF_ERR_NOMEM, "%s: out of memory", dir);
    }
    for (k = 0; k < ncls && st == PF_OK; k++)
        for (j = 0; j < nfiles[k] && st == PF_OK; j++) {
            unsigned char *px = NULL;
            int h, w, c;
            snprintf(path, sizeof path, "%s/%s/%s", dir, cls[k], files[k][j]);
            if ((st = pf__image_load(path, at ? d->c : 0, &px, &h, &w, &c)) != PF_OK) break;
            if (!at) {
                d->h = h; d->w = w; d->c = c;
                per = (size_t)h * w * c;
                memcpy(first, path, strlen(path) + 1);
                if (total > ((size_t)-1 >> 1) / per || !(d->images = (unsigned char *)PF_MALLOC(total * per)))
                    st = pf_fail(PF_ERR_NOMEM, "%s: out of memory for %zu images of %dx%dx%d", dir, total, h, w, c);
            } else if (h != d->h || w != d->w) {
                st = pf_fail(PF_ERR_SHAPE, "%s: the image is %dx%d but the first one (%s) is %dx%d; all images of a "
                             "folder dataset must have the same size", path, w, h, first, d->w, d->h);
            }
            if (st == PF_OK) {
                memcpy(d->images + at * per, px, per);
                d->labels[at] = k;
                at++;
            }
            PF_FREE(px);
        }
    if (st == PF_OK) st = pf__set_names(d, (const char *const *)cls, ncls);
    for (k = 0; files && k < ncls; k++) pf__free_list(files[k], nfiles[k]);
    PF_FREE(files);
    PF_FREE(nfiles);
    pf__free_list(cls, ncls);
    return st;
#endif
}

/* ---- npy:X.npy,Y.npy ---- */

/* "U8 [2, 3]" */
static void pf__array_str(const pf_array *a, char *s, size_t cap) {
    size_t k = strlen(pf_dtype_name(a->dtype)) + 1;
    snprintf(s, cap, "%s ", pf_dtype_name(a->dtype));
    if (k < cap) pf__shape_str(s + k, cap - k, a->shape, a->ndim);
}

static pf_status pf__load_npy(const char *xp, const char *yp, pf_dataset *d) {
    pf_array x, y;
    char sh[128];
    size_t i;
    int64_t mx = -1;
    pf_status st = pf_npy_load(xp, &x);
    if (st != PF_OK) return st;
    pf__array_str(&x, sh, sizeof sh);
    if (x.dtype != PF_U8 || (x.ndim != 3 && x.ndim != 4) || x.shape[0] < 1 || x.shape[0] > 0x7fffffff ||
        x.shape[1] < 1 || x.shape[1] > PF__MAX_SIDE || x.shape[2] < 1 || x.shape[2] > PF__MAX_SIDE ||
        (x.ndim == 4 && (x.shape[3] < 1 || x.shape[3] > 4))) {
        pf_array_free(&x);
        return pf_fail(PF_ERR_SHAPE, "%s: expected uint8 images [N,H,W,C] (C = 1..4) or [N,H,W] with N, H, W >= 1, got %s",
                       xp, sh);
    }
    if ((st = pf_npy_load(yp, &y)) != PF_OK) { pf_array_free(&x); return st; }
    pf__array_str(&y, sh, sizeof sh);
    if ((y.dtype != PF_U8 && y.dtype != PF_I32 && y.dtype != PF_I64) || y.ndim != 1)
        st = pf_fail(PF_ERR_SHAPE, "%s: expected integer labels [N] (uint8, int32 or int64), got %s", yp, sh);
    else if (y.shape[0] != x.shape[0])
        st = pf_fail(PF_ERR_SHAPE, "%s: %lld labels, but %s has %lld images", yp, (long long)y.shape[0], xp,
                     (long long)x.shape[0]);
    else if (!(d->labels = PF__CALLOC(int, y.shape[0])))
        st = pf_fail(PF_ERR_NOMEM, "%s: out of memory", yp);
    for (i = 0; st == PF_OK && i < (size_t)y.shape[0]; i++) {
        int64_t v;
        if (y.dtype == PF_I64) memcpy(&v, (const unsigned char *)y.data + i * 8, 8); /* exact: no trip through double */
        else v = (int64_t)pf__elem((const unsigned char *)y.data + i * pf_dtype_size(y.dtype), y.dtype); /* u8, i32 */
        if (v < 0 || v >= PF__MAX_LABEL)
            st = pf_fail(PF_ERR_FORMAT, "%s: label %lld of item %zu is out of range (0..%d)", yp, (long long)v, i,
                         PF__MAX_LABEL - 1);
        else {
            d->labels[i] = (int)v;
            if (v > mx) mx = v;
        }
    }
    if (st == PF_OK) {
        d->n = (int)x.shape[0];
        d->h = (int)x.shape[1];
        d->w = (int)x.shape[2];
        d->c = x.ndim == 4 ? (int)x.shape[3] : 1;
        d->images = (unsigned char *)x.data; /* PF_MALLOC'd by pf_npy_load */
        d->classes = (int)mx + 1;
        x.data = NULL;
    }
    pf_array_free(&x);
    pf_array_free(&y);
    return st;
}

/* ---- the spec ---- */

/* A decimal number of at most 9 digits; the end in *end. -1 if none. */
static long pf__num(const char *s, const char **end) {
    long v = 0;
    int k = 0;
    while (s[k] >= '0' && s[k] <= '9' && k < 10) v = v * 10 + (s[k++] - '0');
    *end = s + k;
    return k == 0 || k > 9 ? -1 : v;
}

/* #classes=LIST (e.g. 0-4,7). keep == NULL: syntax only; else marks keep[]
   and checks the range against `classes`. */
static pf_status pf__parse_classes(const char *list, const char *spec, unsigned char *keep, int classes) {
    const char *s = list, *e;
    if (!*s) return pf_fail(PF_ERR_ARG, "dataset spec '%s': #classes= needs a list such as 0-4,7", spec);
    for (;;) {
        long a = pf__num(s, &e), b = a, v;
        if (a >= 0 && *e == '-') b = pf__num(e + 1, &e);
        if (a < 0 || b < 0 || (*e && *e != ',') || b < a)
            return pf_fail(PF_ERR_ARG, "dataset spec '%s': bad #classes list '%s' (expected numbers and ranges "
                           "lo-hi with lo <= hi separated by commas, e.g. 0-4,7)", spec, list);
        if (keep) {
            if (b >= classes)
                return pf_fail(PF_ERR_ARG, "dataset spec '%s': class %ld in #classes is out of range (the dataset has %d "
                               "classes, 0..%d)", spec, b, classes, classes - 1);
            for (v = a; v <= b; v++) keep[v] = 1;
        }
        if (!*e) break;
        s = e + 1;
    }
    return PF_OK;
}

#define PF__SPEC_KINDS "fmnist[:DIR], cifar10[:DIR], cifar100[:DIR], folder:DIR, npy:X.npy,Y.npy"

/* One rule for the split, so that the loader and a program deriving the
   test set of a training spec never read one spec two ways. */
PFDEF pf_status pf_dataset_spec_split(const char *spec, int default_split, int *split, size_t *at, size_t *rest) {
    size_t end, a, i;
    if (!spec || !split) return pf_fail(PF_ERR_ARG, "dataset spec split: no spec or no place for the split");
    *split = default_split;
    end = strcspn(spec, "#");
    for (a = end, i = end; i > 0; i--)
        if (spec[i - 1] == '@') { a = i - 1; break; }
    if (a < end && (memchr(spec + a, '/', end - a) || memchr(spec + a, ',', end - a))) a = end; /* a path's '@' */
    if (at) *at = a;
    if (rest) *rest = end;
    if (a == end) return PF_OK;
    if (end - a == 6 && !strncmp(spec + a, "@train", 6)) *split = PF_SPLIT_TRAIN;
    else if (end - a == 5 && !strncmp(spec + a, "@test", 5)) *split = PF_SPLIT_TEST;
    else return pf_fail(PF_ERR_ARG, "dataset spec '%s': unknown split '%.*s' (valid: @train, @test)", spec,
                        (int)(end - a), spec + a);
    return PF_OK;
}

/* The '#' options, each checked before any file is read, so that a typo
   fails at once and not after a large dataset has loaded. opts: the text
   after the first '#' (NULL: none), cut in place; *classes points into it. */
static pf_status pf__spec_options(char *opts, const char *spec, const char **classes, long *limit) {
    char *o, *next;
    pf_status st;
    for (o = opts; o; o = next) {
        if ((next = strchr(o, '#')) != NULL) *next++ = 0;
        if (!strncmp(o, "classes=", 8)) {
            *classes = o + 8;
            if ((st = pf__parse_classes(*classes, spec, NULL, 0)) != PF_OK) return st;
        } else if (!strncmp(o, "limit=", 6)) {
            const char *e;
            *limit = pf__num(o + 6, &e);
            if (*limit < 1 || *e)
                return pf_fail(PF_ERR_ARG, "dataset spec '%s': #limit=%s is not a positive whole number (at most 9 digits)",
                               spec, o + 6);
        } else {
            return pf_fail(PF_ERR_ARG, "dataset spec '%s': unknown option '#%s' (valid: #classes=LIST such as 0-4,7; "
                           "#limit=N)", spec, o);
        }
    }
    return PF_OK;
}

/* KIND[:ARG] (cut in place) -> *k, the reader (0 fmnist, 1 cifar10,
   2 cifar100, 3 folder, 4 npy), and *arg. A bare fmnist/cifar name reads
   the conventional folder under $PARAFORMER_DATA (built in dir), so that
   specs and scripts stay the same on every machine. */
static pf_status pf__spec_source(const char *spec, char *kind, char **arg, char *dir, size_t cap, int *k) {
    static const char *sub[3] = {"fashion-mnist", "cifar-10-batches-bin", "cifar-100-binary"};
    const char *env;
    char *a = strchr(kind, ':');
    if (a) *a++ = 0;
    *k = !strcmp(kind, "fmnist") ? 0 : !strcmp(kind, "cifar10") ? 1 : !strcmp(kind, "cifar100") ? 2
       : !strcmp(kind, "folder") ? 3 : !strcmp(kind, "npy") ? 4 : -1;
    if (*k < 0)
        return pf_fail(PF_ERR_ARG, "dataset spec '%s': unknown kind '%s' (valid: %s)", spec, kind, PF__SPEC_KINDS);
    if (a && !*a) return pf_fail(PF_ERR_ARG, "dataset spec '%s': empty path after '%s:'", spec, kind);
    if (*k <= 2 && !a) {
        env = getenv("PARAFORMER_DATA");
        if (!env || !*env)
            return pf_fail(PF_ERR_ARG, "dataset spec '%s': no folder given and $PARAFORMER_DATA is not set; write "
                           "%s:DIR or set PARAFORMER_DATA to the folder that holds %s/", spec, kind, sub[*k]);
        if (!pf__join(dir, cap, env, sub[*k])) return PF_ERR_ARG;
        a = dir;
    }
    if (*k >= 3 && !a)
        return pf_fail(PF_ERR_ARG, "dataset spec '%s': %s needs %s", spec, kind, *k == 3 ? "a folder: folder:DIR"
                       : "two files: npy:X.npy,Y.npy");
    *arg = a;
    return PF_OK;
}

/* #classes=LIST: the images of those classes, in order. Labels keep their
   values, so that a model can later grow into the classes left out. */
static pf_status pf__dataset_keep_classes(pf_dataset *d, const char *list, const char *spec) {
    unsigned char *keep = PF__CALLOC(unsigned char, d->classes);
    size_t per = (size_t)d->h * d->w * d->c;
    int i, n;
    pf_status st;
    if (!keep) return pf_fail(PF_ERR_NOMEM, "%s: out of memory", d->name);
    if ((st = pf__parse_classes(list, spec, keep, d->classes)) == PF_OK) {
        for (i = n = 0; i < d->n; i++)
            if (keep[d->labels[i]]) {
                if (n != i) memcpy(d->images + (size_t)n * per, d->images + (size_t)i * per, per);
                d->labels[n++] = d->labels[i];
            }
        if (!n) st = pf_fail(PF_ERR_ARG, "dataset spec '%s': no image has a class of #classes=%s", spec, list);
        d->n = n;
    }
    PF_FREE(keep);
    return st;
}

PFDEF pf_status pf_dataset_load(const char *spec, int default_split, pf_dataset *out) {
    char buf[1024], dir[1100], *arg = NULL;
    const char *classes = NULL;
    long limit = -1;
    size_t at, rest;
    int split, k;
    pf_status st;
    pf_dataset d;
    if (!out) return pf_fail(PF_ERR_ARG, "dataset spec '%s': no dataset to load into", spec ? spec : "");
    memset(out, 0, sizeof *out);
    memset(&d, 0, sizeof d);
    if (!spec || !*spec) return pf_fail(PF_ERR_ARG, "empty dataset spec (expected %s)", PF__SPEC_KINDS);
    if (strlen(spec) >= sizeof buf) return pf_fail(PF_ERR_ARG, "dataset spec '%.64s...' is too long", spec);
    if (default_split != PF_SPLIT_TRAIN && default_split != PF_SPLIT_TEST)
        return pf_fail(PF_ERR_ARG, "dataset spec '%s': default split %d is neither PF_SPLIT_TRAIN nor PF_SPLIT_TEST", spec,
                       default_split);
    if ((st = pf_dataset_spec_split(spec, default_split, &split, &at, &rest)) != PF_OK) return st;
    memcpy(buf, spec, strlen(spec) + 1);
    buf[at] = 0; /* at <= rest: buf is KIND[:ARG] */
    if ((st = pf__spec_options(spec[rest] ? buf + rest + 1 : NULL, spec, &classes, &limit)) != PF_OK) return st;
    if ((st = pf__spec_source(spec, buf, &arg, dir, sizeof dir, &k)) != PF_OK) return st;
    /* the name: the spec, with the split made explicit where there is one */
    if (k <= 2) {
        size_t len = 0;
        pf__appendf(d.name, sizeof d.name, &len, "%.*s@%s%s", (int)at, spec, split == PF_SPLIT_TEST ? "test" : "train",
                    spec + rest);
    } else {
        snprintf(d.name, sizeof d.name, "%s", spec);
    }
    if (k == 0) st = pf__load_fmnist(arg, split, &d);
    else if (k <= 2) st = pf__load_cifar(arg, split, k == 2, &d);
    else if (k == 3) st = pf__load_folder(arg, &d);
    else {
        char *comma = strrchr(arg, ',');
        if (!comma || comma == arg || !comma[1]) {
            st = pf_fail(PF_ERR_ARG, "dataset spec '%s': npy needs two files: npy:X.npy,Y.npy", spec);
        } else {
            *comma = 0;
            st = pf__load_npy(arg, comma + 1, &d);
        }
    }
    if (st == PF_OK && classes) st = pf__dataset_keep_classes(&d, classes, spec);
    if (st == PF_OK && limit > 0 && limit < d.n) d.n = (int)limit;
    if (st != PF_OK) { pf_dataset_free(&d); return st; }
    *out = d;
    return PF_OK;
}

/* A dataset a caller passes in: not NULL, and a shape its arrays can hold
   (a loaded one always is; one filled in by hand may not be). */
static pf_status pf__dataset_args(const pf_dataset *d, const char *fn) {
    PF__NEED(d, fn, "the dataset");
    if (d->n < 0 || (d->n > 0 && (d->h < 1 || d->w < 1 || d->c < 1 || d->c > PF_MAX_CHANNELS ||
                                  d->h > PF__MAX_SIDE || d->w > PF__MAX_SIDE || d->classes < 1)))
        return pf_fail(PF_ERR_ARG, "%s: dataset '%.200s' has %d images of %dx%dx%d in %d classes", fn, d->name, d->n, d->h,
                       d->w, d->c, d->classes);
    if (d->n > 0 && (!d->images || !d->labels))
        return pf_fail(PF_ERR_ARG, "%s: dataset '%.200s' has %d images but no %s", fn, d->name, d->n,
                       !d->images ? "pixels" : "labels");
    return PF_OK;
}

PFDEF pf_status pf_dataset_subset(const pf_dataset *d, const int *idx, int n, pf_dataset *out) {
    size_t per;
    int i;
    pf_dataset s;
    pf_status st;
    PF__NEED(out, "pf_dataset_subset", "out");
    memset(out, 0, sizeof *out);
    if ((st = pf__dataset_args(d, "pf_dataset_subset")) != PF_OK) return st;
    if (n > 0) PF__NEED(idx, "pf_dataset_subset", "idx");
    per = (size_t)d->h * d->w * d->c;
    if (n < 0) return pf_fail(PF_ERR_ARG, "%s: subset of %d images", d->name, n);
    for (i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= d->n)
            return pf_fail(PF_ERR_ARG, "%s: subset index %d (item %d) is out of range (0..%d)", d->name, idx[i], i, d->n - 1);
    memset(&s, 0, sizeof s);
    s.n = n; s.h = d->h; s.w = d->w; s.c = d->c; s.classes = d->classes;
    memcpy(s.name, d->name, sizeof s.name);
    s.images = (unsigned char *)pf__calloc((size_t)n, per);
    s.labels = PF__CALLOC(int, n);
    if (!s.images || !s.labels) { pf_dataset_free(&s); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", d->name); }
    for (i = 0; i < n; i++) {
        memcpy(s.images + (size_t)i * per, d->images + (size_t)idx[i] * per, per);
        s.labels[i] = d->labels[idx[i]];
    }
    if (d->class_names && (st = pf__set_names(&s, (const char *const *)d->class_names, d->classes)) != PF_OK) {
        pf_dataset_free(&s);
        return st;
    }
    *out = s;
    return PF_OK;
}

/* A seeded Fisher-Yates shuffle of 0..n-1; the first round(frac*n) go to
   val. Each part is then taken in the original order. */
PFDEF pf_status pf_dataset_split(const pf_dataset *d, double frac, uint64_t seed, pf_dataset *train, pf_dataset *val) {
    int *perm, *tr, *va, i, nv, nt;
    unsigned char *in_val;
    uint64_t s = pf_mix64(seed ^ 0x73706c6974ULL); /* "split" */
    pf_status st;
    PF__NEED(train && val, "pf_dataset_split", "train or val");
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if ((st = pf__dataset_args(d, "pf_dataset_split")) != PF_OK) return st;
    if (!(frac >= 0.0 && frac <= 1.0)) return pf_fail(PF_ERR_ARG, "%s: split fraction %g is not in [0, 1]", d->name, frac);
    nv = (int)floor(frac * d->n + 0.5);
    if (nv > d->n) nv = d->n;
    nt = d->n - nv;
    perm = PF__CALLOC(int, d->n);
    in_val = PF__CALLOC(unsigned char, d->n);
    tr = PF__CALLOC(int, nt);
    va = PF__CALLOC(int, nv);
    if (!perm || !in_val || !tr || !va) {
        PF_FREE(perm); PF_FREE(in_val); PF_FREE(tr); PF_FREE(va);
        return pf_fail(PF_ERR_NOMEM, "%s: out of memory", d->name);
    }
    pf__shuffle(perm, d->n, &s);
    for (i = 0; i < nv; i++) in_val[perm[i]] = 1;
    for (i = nv = nt = 0; i < d->n; i++) {
        if (in_val[i]) va[nv++] = i;
        else tr[nt++] = i;
    }
    st = pf_dataset_subset(d, tr, nt, train);
    if (st == PF_OK) st = pf_dataset_subset(d, va, nv, val);
    if (st == PF_OK) {
        size_t k = strlen(train->name);
        size_t k2 = k;
        pf__appendf(train->name, sizeof train->name, &k, " (train part of a split, %d%% val, seed %llu)",
                    (int)(100 * frac + 0.5), (unsigned long long)seed);
        pf__appendf(val->name, sizeof val->name, &k2, " (val part of a split, %d%%, seed %llu)", (int)(100 * frac + 0.5),
                    (unsigned long long)seed);
    } else {
        pf_dataset_free(train);
    }
    PF_FREE(perm); PF_FREE(in_val); PF_FREE(tr); PF_FREE(va);
    return st;
}

/* Exact integer sums, then mean and biased variance in double. */
PFDEF pf_status pf_dataset_stats(const pf_dataset *d, float *mean, float *std) {
    uint64_t s1[PF_MAX_CHANNELS], s2[PF_MAX_CHANNELS];
    size_t i, px;
    int c, C;
    pf_status st = pf__dataset_args(d, "pf_dataset_stats");
    if (st != PF_OK) return st;
    PF__NEED(mean && std, "pf_dataset_stats", "mean or std");
    px = d->n > 0 ? (size_t)d->n * d->h * d->w : 0;
    C = d->c < 1 ? 0 : d->c < PF_MAX_CHANNELS ? d->c : PF_MAX_CHANNELS;
    memset(s1, 0, sizeof s1);
    memset(s2, 0, sizeof s2);
    for (i = 0; i < px; i++)
        for (c = 0; c < C; c++) {
            unsigned v = d->images[i * (size_t)d->c + c];
            s1[c] += v;
            s2[c] += (uint64_t)v * v;
        }
    for (c = 0; c < C; c++) {
        double m = px ? (double)s1[c] / (double)px : 0.0, var = px ? (double)s2[c] / (double)px - m * m : 0.0;
        mean[c] = (float)(m / 255.0);
        std[c] = (float)(sqrt(var > 0 ? var : 0.0) / 255.0);
    }
    return PF_OK;
}

PFDEF pf_status pf_config_fit(pf_config *c, const pf_dataset *d, int what) {
    pf_status st;
    PF__NEED(c, "pf_config_fit", "the config");
    if ((st = pf__dataset_args(d, "pf_config_fit")) != PF_OK) return st;
    if (what & ~PF_FIT_ALL) return pf_fail(PF_ERR_ARG, "config fit: unknown parts 0x%x", (unsigned)what);
    /* the model's input is square: a non-square source keeps the size
       asked for and is resized to it */
    if ((what & PF_FIT_IMAGE_SIZE) && d->h == d->w) c->image_size = d->h;
    if (what & PF_FIT_CHANNELS) c->channels = d->c;
    if (what & PF_FIT_CLASSES) c->classes = d->classes;
    if (what & PF_FIT_NORM) return pf_dataset_stats(d, c->mean, c->std);
    return PF_OK;
}

/* ---- augmentation, on 8-bit HWC images at the source resolution ----
   RandAugment follows torchvision.transforms.RandAugment (v0.13+,
   num_magnitude_bins 31, nearest interpolation, fill 0) on a uint8 tensor:
   each of n ops is drawn uniformly from the 14 below, a signed magnitude
   gets a random sign, and the op is applied as torchvision's functional
   tensor code does (float32 blends truncated back to uint8, the affine ops
   on pixel centres with nearest rounding half to even). Deviations: the
   affine coordinates are computed in double (torchvision: float32), so a
   sample exactly on a half-pixel tie may round the other way; the means and
   the 3x3 smoothing of Contrast/Sharpness sum in a fixed order; Color and
   Contrast on 2- or 4-channel images leave the alpha channel alone (gray +
   alpha counts as gray), where torchvision only takes 1 or 3 channels. */

enum { PF__RA_IDENTITY, PF__RA_SHEAR_X, PF__RA_SHEAR_Y, PF__RA_TRANSLATE_X, PF__RA_TRANSLATE_Y, PF__RA_ROTATE,
       PF__RA_BRIGHTNESS, PF__RA_COLOR, PF__RA_CONTRAST, PF__RA_SHARPNESS, PF__RA_POSTERIZE, PF__RA_SOLARIZE,
       PF__RA_AUTOCONTRAST, PF__RA_EQUALIZE, PF__RA_COUNT };

/* ---------------------------------------------------------------------- */
/* datasets: augmentation (crop with padding, flips, RandAugment) */

/* torchvision's _blend: (r * a + (1 - r) * b).clamp(0, 255), truncated */
static unsigned char pf__blend(float r, float r1, float a, float b) {
    float v = r * a + r1 * b;
    if (!(v > 0.0f)) return 0;
    return v >= 255.0f ? 255 : (unsigned char)v;
}

/* gray of one RGB pixel as torchvision's rgb_to_grayscale for uint8 */
static float pf__gray(const unsigned char *p) {
    float v = 0.2989f * (float)p[0] + 0.587f * (float)p[1] + 0.114f * (float)p[2];
    return (float)(unsigned char)(v >= 255.0f ? 255.0f : v);
}

/* dst = src sampled at M (2x3, centred coordinates with y down) for each
   output pixel centre, nearest, zero outside */
static void pf__affine(const unsigned char *src, unsigned char *dst, int h, int w, int c, const double *M) {
    int x, y, k;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            double cx = x - 0.5 * w + 0.5, cy = y - 0.5 * h + 0.5;
            double sx = M[0] * cx + M[1] * cy + M[2] + 0.5 * w - 0.5;
            double sy = M[3] * cx + M[4] * cy + M[5] + 0.5 * h - 0.5;
            double rx = nearbyint(sx), ry = nearbyint(sy);
            unsigned char *o = dst + ((size_t)y * w + x) * c;
            if (rx >= 0 && rx < w && ry >= 0 && ry < h) {
                const unsigned char *p = src + ((size_t)ry * w + (size_t)rx) * c;
                for (k = 0; k < c; k++) o[k] = p[k];
            } else {
                for (k = 0; k < c; k++) o[k] = 0;
            }
        }
}

/* The sampling matrix of a geometric op (torchvision's F.affine and
   F.rotate conventions; the shears with center [0, 0]). */
static void pf__ra_matrix(int op, double mag, int h, int w, double *M) {
    double a = mag * 3.14159265358979323846 / 180.0;
    M[0] = 1, M[1] = 0, M[2] = 0, M[3] = 0, M[4] = 1, M[5] = 0;
    switch (op) {
    case PF__RA_SHEAR_X: M[1] = mag; M[2] = mag * 0.5 * h; break;       /* shear=[atan(mag) deg, 0] */
    case PF__RA_SHEAR_Y: M[3] = mag; M[5] = mag * 0.5 * w; break;
    case PF__RA_TRANSLATE_X: M[2] = -(double)(long)mag; break;         /* translate=[int(mag), 0] */
    case PF__RA_TRANSLATE_Y: M[5] = -(double)(long)mag; break;
    case PF__RA_ROTATE: M[0] = cos(a); M[1] = -sin(a); M[3] = sin(a); M[4] = cos(a); break; /* counter-clockwise */
    }
}

/* adjust_contrast: blend with the mean of the gray image */
static void pf__ra_contrast(unsigned char *img, size_t n, int c, int cc, float r, float r1) {
    double s = 0;
    float m;
    size_t i;
    int k;
    for (i = 0; i < n; i++) s += cc == 3 ? pf__gray(img + i * c) : img[i * c];
    m = (float)(s / (double)n);
    for (i = 0; i < n; i++)
        for (k = 0; k < cc; k++) img[i * c + k] = pf__blend(r, r1, img[i * c + k], m);
}

/* adjust_sharpness: blend with the 3x3 smoothed image ([1 1 1; 1 5 1; 1 1 1]/13,
   the border pixels kept) */
static void pf__ra_sharpness(unsigned char *img, unsigned char *tmp, int h, int w, int c, float r, float r1) {
    const float w1 = 1.0f / 13.0f, w5 = 5.0f / 13.0f;
    size_t i, n = (size_t)h * w;
    int x, y, dx, dy, k;
    if (h <= 2 || w <= 2) return;
    memcpy(tmp, img, n * c);
    for (y = 1; y < h - 1; y++)
        for (x = 1; x < w - 1; x++)
            for (k = 0; k < c; k++) {
                float s = 0.0f;
                for (dy = -1; dy <= 1; dy++)
                    for (dx = -1; dx <= 1; dx++)
                        s += (dx || dy ? w1 : w5) * (float)img[((size_t)(y + dy) * w + x + dx) * c + k];
                s = (float)nearbyint(s);
                tmp[((size_t)y * w + x) * c + k] = s >= 255.0f ? 255 : (unsigned char)s;
            }
    for (i = 0; i < n * c; i++) img[i] = pf__blend(r, r1, img[i], tmp[i]);
}

/* autocontrast: per channel, stretch [min, max] to [0, 255] */
static void pf__ra_autocontrast(unsigned char *img, size_t n, int c) {
    size_t i;
    int k;
    for (k = 0; k < c; k++) {
        unsigned char lo = 255, hi = 0;
        float mn, scale;
        for (i = 0; i < n; i++) {
            unsigned char v = img[i * c + k];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        mn = lo == hi ? 0.0f : (float)lo;
        scale = 255.0f / ((lo == hi ? 255.0f : (float)hi) - mn);
        for (i = 0; i < n; i++) {
            float v = ((float)img[i * c + k] - mn) * scale;
            img[i * c + k] = !(v > 0.0f) ? 0 : v >= 255.0f ? 255 : (unsigned char)v;
        }
    }
}

/* equalize: per channel histogram equalisation (torchvision's _scale_channel) */
static void pf__ra_equalize(unsigned char *img, size_t n, int c) {
    size_t i;
    int k;
    for (k = 0; k < c; k++) {
        size_t hist[256], lut[256], step = 0, cum = 0, last = 0;
        int v;
        memset(hist, 0, sizeof hist);
        for (i = 0; i < n; i++) hist[img[i * c + k]]++;
        for (v = 0; v < 256; v++)
            if (hist[v]) { step += last; last = hist[v]; } /* all nonzero bins but the last */
        step /= 255;
        if (!step) continue;
        for (v = 0; v < 256; v++) {
            size_t l = v ? (cum + step / 2) / step : 0;
            lut[v] = l > 255 ? 255 : l;
            cum += hist[v];
        }
        for (i = 0; i < n; i++) img[i * c + k] = (unsigned char)lut[img[i * c + k]];
    }
}

/* one RandAugment op in place on img; tmp holds h*w*c bytes */
static void pf__ra_op(int op, double mag, unsigned char *img, unsigned char *tmp, int h, int w, int c) {
    size_t n = (size_t)h * w, i;
    int k, cc = c >= 3 ? 3 : 1; /* colour channels (the rest is alpha) */
    double M[6];
    float r = (float)(1.0 + mag), r1 = (float)(1.0 - (1.0 + mag));
    switch (op) {
    case PF__RA_SHEAR_X: case PF__RA_SHEAR_Y: case PF__RA_TRANSLATE_X: case PF__RA_TRANSLATE_Y: case PF__RA_ROTATE:
        pf__ra_matrix(op, mag, h, w, M);
        pf__affine(img, tmp, h, w, c, M);
        memcpy(img, tmp, n * c);
        return;
    case PF__RA_BRIGHTNESS: /* blend with black */
        for (i = 0; i < n * c; i++) img[i] = pf__blend(r, r1, img[i], 0.0f);
        return;
    case PF__RA_COLOR: /* adjust_saturation: blend with the gray image */
        if (cc < 3) return;
        for (i = 0; i < n; i++) {
            unsigned char *p = img + i * c;
            float g = pf__gray(p);
            for (k = 0; k < 3; k++) p[k] = pf__blend(r, r1, p[k], g);
        }
        return;
    case PF__RA_CONTRAST: pf__ra_contrast(img, n, c, cc, r, r1); return;
    case PF__RA_SHARPNESS: pf__ra_sharpness(img, tmp, h, w, c, r, r1); return;
    case PF__RA_POSTERIZE: { /* keep the top `bits` bits */
        unsigned char mask = (unsigned char)(0xFF << (8 - (int)mag));
        for (i = 0; i < n * c; i++) img[i] &= mask;
        return;
    }
    case PF__RA_SOLARIZE: /* invert the pixels >= threshold */
        for (i = 0; i < n * c; i++)
            if ((float)img[i] >= (float)mag) img[i] = (unsigned char)(255 - img[i]);
        return;
    case PF__RA_AUTOCONTRAST: pf__ra_autocontrast(img, n, c); return;
    case PF__RA_EQUALIZE: pf__ra_equalize(img, n, c); return;
    default: return; /* identity */
    }
}

/* the stream of image `counter` under `seed` */
static uint64_t pf__aug_stream(uint64_t seed, uint64_t counter) {
    return pf_mix64(pf_mix64(seed ^ 0x6175676d656e74ULL) ^ counter); /* "augment" */
}

static int pf__below(uint64_t *s, int n) { return (int)(pf__next(s) % (uint64_t)n); }

/* dst = augmented src (crop, flip, RandAugment in that order); tmp: h*w*c */
static void pf__augment(const pf_augment *aug, const unsigned char *src, int h, int w, int c, uint64_t s,
                        unsigned char *dst, unsigned char *tmp) {
    size_t row = (size_t)w * c;
    int y, x, k, i;
    if (aug->crop_pad > 0) { /* torchvision RandomCrop(size, padding=p): offsets uniform in [0, 2p] */
        int p = aug->crop_pad, oy = pf__below(&s, 2 * p + 1) - p, ox = pf__below(&s, 2 * p + 1) - p;
        for (y = 0; y < h; y++) {
            int sy = y + oy;
            for (x = 0; x < w; x++) {
                int sx = x + ox;
                for (k = 0; k < c; k++)
                    dst[y * row + (size_t)x * c + k] =
                        sy >= 0 && sy < h && sx >= 0 && sx < w ? src[sy * row + (size_t)sx * c + k] : 0;
            }
        }
    } else {
        memcpy(dst, src, (size_t)h * row);
    }
    if (aug->flip && (pf__next(&s) >> 63))
        for (y = 0; y < h; y++)
            for (x = 0; x < w / 2; x++)
                for (k = 0; k < c; k++) {
                    unsigned char *a = dst + y * row + (size_t)x * c + k, *b = dst + y * row + (size_t)(w - 1 - x) * c + k, t = *a;
                    *a = *b;
                    *b = t;
                }
    for (i = 0; i < aug->randaug_n; i++) {
        int op = pf__below(&s, PF__RA_COUNT), m = aug->randaug_m;
        double mag = 0;
        switch (op) {
        case PF__RA_SHEAR_X: case PF__RA_SHEAR_Y: mag = 0.3 * m / 30.0; break;
        case PF__RA_TRANSLATE_X: mag = 150.0 / 331.0 * w * m / 30.0; break;
        case PF__RA_TRANSLATE_Y: mag = 150.0 / 331.0 * h * m / 30.0; break;
        case PF__RA_ROTATE: mag = 30.0 * m / 30.0; break;
        case PF__RA_BRIGHTNESS: case PF__RA_COLOR: case PF__RA_CONTRAST: case PF__RA_SHARPNESS: mag = 0.9 * m / 30.0; break;
        case PF__RA_POSTERIZE: mag = 8 - (int)floor(m / 7.5 + 0.5); break;
        case PF__RA_SOLARIZE: mag = 255.0 - 255.0 * m / 30.0; break;
        default: break;
        }
        if (op >= PF__RA_SHEAR_X && op <= PF__RA_SHARPNESS && (pf__next(&s) >> 63)) mag = -mag; /* signed ops */
        pf__ra_op(op, mag, dst, tmp, h, w, c);
    }
}

/* Random erasing (Zhong et al. 2017, as timm's RandomErasing with mode
   'pixel' and one rectangle) of one model input x [C,S,S] in place, drawn
   from the stream s: one uniform u, nothing more unless u < p; then up to
   10 tries of a rectangle of area U(0.02, 1/3)·S·S and aspect ratio h/w =
   exp(U(log 0.3, log 1/0.3)), h = round(sqrt(area·r)), w =
   round(sqrt(area/r)) (halves up); the first with h < S and w < S is placed
   at top, left uniform in [0, S-h] and [0, S-w] and filled, channel by
   channel and row by row, with standard normal values (as floats). */
#define PF__ERASE_TRIES 10
#define PF__ERASE_STREAM 0x6572617365ULL /* "erase" */
static void pf__erase(pf_real *x, int C, int S, double p, uint64_t s) {
    double lo = log(0.3), hi = log(1.0 / 0.3), area = (double)S * S;
    int t, k, y, i;
    if (!(pf__uniform(&s) < p)) return;
    for (t = 0; t < PF__ERASE_TRIES; t++) {
        double a = area * (0.02 + pf__uniform(&s) * (1.0 / 3.0 - 0.02));
        double r = exp(lo + pf__uniform(&s) * (hi - lo));
        int h = (int)floor(sqrt(a * r) + 0.5), w = (int)floor(sqrt(a / r) + 0.5), top, left;
        if (h >= S || w >= S) continue;
        top = pf__below(&s, S - h + 1);
        left = pf__below(&s, S - w + 1);
        for (k = 0; k < C; k++)
            for (y = top; y < top + h; y++) {
                pf_real *row = x + ((size_t)k * S + (size_t)y) * S + left;
                for (i = 0; i < w; i++) row[i] = (pf_real)(float)pf__normal(&s);
            }
        return;
    }
}

static pf_status pf__check_aug(const pf_augment *aug) {
    if (!aug) return PF_OK;
    if (aug->erase_p != aug->erase_p)
        return pf_fail(PF_ERR_ARG, "augmentation: the random-erasing probability is NaN (give a value in [0, 1])");
    if (!(aug->erase_p >= 0.0f && aug->erase_p <= 1.0f))
        return pf_fail(PF_ERR_ARG, "augmentation: the random-erasing probability %g is out of range [0, 1]",
                       (double)aug->erase_p);
    if (aug->crop_pad < 0 || aug->crop_pad > PF_AUG_MAX_PAD)
        return pf_fail(PF_ERR_ARG, "augmentation: crop padding %d is out of range (0..%d)", aug->crop_pad, PF_AUG_MAX_PAD);
    if (aug->randaug_n < 0 || aug->randaug_n > PF_AUG_MAX_OPS)
        return pf_fail(PF_ERR_ARG, "augmentation: RandAugment op count %d is out of range (0..%d)", aug->randaug_n,
                       PF_AUG_MAX_OPS);
    if (aug->randaug_m < 0 || aug->randaug_m > PF_AUG_MAX_MAG)
        return pf_fail(PF_ERR_ARG, "augmentation: RandAugment magnitude %d is out of range (0..%d)", aug->randaug_m,
                       PF_AUG_MAX_MAG);
    return PF_OK;
}

PFDEF pf_status pf_augment_image(const unsigned char *src, int h, int w, int c, const pf_augment *aug, uint64_t seed,
                                 uint64_t counter, unsigned char *dst) {
    unsigned char *tmp;
    pf_status st = pf__check_aug(aug);
    if (st != PF_OK) return st;
    PF__NEED(src, "pf_augment_image", "the source image");
    PF__NEED(dst, "pf_augment_image", "the destination");
    if (h < 1 || w < 1 || c < 1 || c > 4 || h > PF__MAX_SIDE || w > PF__MAX_SIDE)
        return pf_fail(PF_ERR_ARG, "augmentation: image of %dx%d with %d channels is not supported", w, h, c);
    if (!(tmp = (unsigned char *)PF_MALLOC((size_t)h * w * c))) return pf_fail(PF_ERR_NOMEM, "augmentation: out of memory");
    pf__augment(aug, src, h, w, c, pf__aug_stream(seed, counter), dst, tmp);
    PF_FREE(tmp);
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* datasets: batches */

static pf_status pf__dataset_batch(const pf_dataset *d, const int *idx, int B, const pf_config *cfg, const pf_augment *aug,
                                 uint64_t seed, uint64_t counter, pf_real *x) {
    int S = cfg->image_size, C = cfg->channels, i, nt = pf_get_threads(), use_aug, use_erase;
    size_t hwc = (size_t)d->h * d->w * d->c, per = (size_t)C * S * S, scratch;
    unsigned char *buf = NULL;
    float *fbuf = NULL;
    pf_status st = pf__check_aug(aug);
    if (st != PF_OK) return st;
    if (B < 0) return pf_fail(PF_ERR_ARG, "%s: batch of %d images", d->name, B);
    if (S < 1 || C < 1 || C > PF_MAX_CHANNELS)
        return pf_fail(PF_ERR_CONFIG, "%s: the config's image size %d / channels %d are not usable (resolve it first)",
                       d->name, S, C);
    if (d->h < 1 || d->w < 1 || d->c < 1 || d->c > 4)
        return pf_fail(PF_ERR_ARG, "%s: images of %dx%d with %d channels are not supported", d->name, d->w, d->h, d->c);
    if (C != 1 && C != 3 && C != d->c)
        return pf_fail(PF_ERR_SHAPE, "%s: %d-channel images cannot feed a %d-channel model", d->name, d->c, C);
    for (i = 0; i < B; i++)
        if (idx[i] < 0 || idx[i] >= d->n)
            return pf_fail(PF_ERR_ARG, "%s: batch index %d (item %d) is out of range (0..%d)", d->name, idx[i], i, d->n - 1);
    use_aug = aug && (aug->crop_pad > 0 || aug->flip || aug->randaug_n > 0);
    use_erase = aug && aug->erase_p > 0.0f; /* off: not one number drawn */
    if (nt < 1) nt = 1;
    scratch = use_aug ? 2 * hwc : 0;
    if (scratch && !(buf = (unsigned char *)pf__calloc((size_t)nt, scratch)))
        return pf_fail(PF_ERR_NOMEM, "%s: out of memory", d->name);
#ifdef PF_DOUBLE
    if (!(fbuf = PF__CALLOC(float, (size_t)nt * per))) { PF_FREE(buf); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", d->name); }
#endif
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < B; i++) {
        int t = 0;
        const unsigned char *img = d->images + (size_t)idx[i] * hwc;
        float *o;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        if (use_aug) {
            unsigned char *a = buf + (size_t)t * scratch;
            pf__augment(aug, img, d->h, d->w, d->c, pf__aug_stream(seed, counter + (uint64_t)i), a, a + hwc);
            img = a;
        }
#ifdef PF_DOUBLE
        o = fbuf + (size_t)t * per;
#else
        o = x + (size_t)i * per;
#endif
        (void)pf_image_to_input(img, d->h, d->w, d->c, cfg, o); /* checked above: cannot fail */
#ifdef PF_DOUBLE
        {
            size_t j;
            for (j = 0; j < per; j++) x[(size_t)i * per + j] = o[j];
        }
#endif
        if (use_erase) /* its own stream: the draws above are the same with it on or off */
            pf__erase(x + (size_t)i * per, C, S, aug->erase_p,
                      pf_mix64(pf__aug_stream(seed, counter + (uint64_t)i) ^ PF__ERASE_STREAM));
    }
    PF_FREE(buf);
    PF_FREE(fbuf);
    return PF_OK;
}
PFDEF pf_status pf_dataset_batch(const pf_dataset *d, const int *idx, int B, const pf_config *cfg, const pf_augment *aug,
                                 uint64_t seed, uint64_t counter, pf_real *x) {
    pf_status st = pf__dataset_args(d, "pf_dataset_batch");
    if (st != PF_OK) return st;
    PF__NEED(cfg, "pf_dataset_batch", "the config");
    if (B > 0) {
        PF__NEED(idx, "pf_dataset_batch", "idx");
        PF__NEED(x, "pf_dataset_batch", "the output x");
    }
    return pf__dataset_batch(d, idx, B, cfg, aug, seed, counter, x);
}

/* ---------------------------------------------------------------------- */
/* evaluation with the branch sweep */

/* the class with the largest logit (the first of equal ones) */
static int pf__argmax(const pf_real *z, int K) {
    int j, best = 0;
    for (j = 1; j < K; j++) if (z[j] > z[best]) best = j;
    return best;
}

/* evaluation input: a non-empty dataset whose labels are classes of m */
static pf_status pf__eval_check(const pf_model *m, const pf_dataset *d) {
    int i, K = m->cfg.classes;
    if (!d || d->n < 1) return pf_fail(PF_ERR_ARG, "evaluate: the dataset is empty");
    for (i = 0; i < d->n; i++)
        if (d->labels[i] < 0 || d->labels[i] >= K)
            return pf_fail(PF_ERR_SHAPE, "%s: image %d has label %d but the model has %d classes", d->name, i,
                           d->labels[i], K);
    return PF_OK;
}

/* evaluation results from the counts: hits and images per class, hits of
   each prefix 1..k, the summed loss, over n images */
static void pf__eval_results(int K, int k, int n, const int *hit, const int *cnt, const int *hitk, double total,
                             double *loss, double *accuracy, double *per_class, double *sweep) {
    int i, h = 0;
    for (i = 0; i < K; i++) {
        h += hit[i];
        if (per_class) per_class[i] = cnt[i] ? (double)hit[i] / cnt[i] : NAN;
    }
    if (loss) *loss = total / n;
    if (accuracy) *accuracy = (double)h / n;
    for (i = 0; sweep && i < k; i++) sweep[i] = (double)hitk[i] / n;
}

static pf_status pf__evaluate(pf_model *m, const pf_dataset *d, int batch, double *loss, double *accuracy,
                            double *per_class, double *sweep) {
    const pf_config *c = &m->cfg;
    int K = c->classes, k = m->active, n0, saved = m->training;
    int *idx = NULL, *hit = NULL, *cnt = NULL, *hitk = NULL;
    pf_real *x = NULL;
    double total = 0;
    pf_status st = PF_OK;
    if ((st = pf__eval_check(m, d)) != PF_OK) return st;
    if (batch < 1) batch = 256;
    if (batch > d->n) batch = d->n;
    if (m->max_batch < batch && (st = pf_model_reserve(m, batch)) != PF_OK) return st;
    batch = m->max_batch < batch ? m->max_batch : batch;
    idx = PF__CALLOC(int, batch);
    hit = PF__CALLOC(int, K);
    cnt = PF__CALLOC(int, K);
    hitk = PF__CALLOC(int, k);
    x = PF__CALLOC(pf_real, (size_t)batch * c->channels * c->image_size * c->image_size);
    if (!idx || !hit || !cnt || !hitk || !x) { st = pf_fail(PF_ERR_NOMEM, "evaluate: out of memory"); goto done; }
    m->training = 0;
    if ((st = pf__build_wpack(m)) != PF_OK) goto done;
    m->wpack_on = m->wpack != NULL;
    for (n0 = 0; n0 < d->n; n0 += batch) {
        int B = d->n - n0 < batch ? d->n - n0 : batch, b, kk;
        for (b = 0; b < B; b++) idx[b] = n0 + b;
        if ((st = pf_dataset_batch(d, idx, B, c, NULL, 0, 0, x)) != PF_OK) break;
        if ((st = pf_forward(m, x, d->labels + n0, B, 0.0f, NULL)) != PF_OK) break;
        total += m->loss * B;
        for (b = 0; b < B; b++) {
            int y = d->labels[n0 + b];
            cnt[y]++;
            hit[y] += pf__argmax(m->logits + (size_t)b * K, K) == y;
        }
        /* the sweep: the branch outputs of this batch are still in the
           activations, so each prefix only re-aggregates and runs the head
           (with one branch the forward's logits are already prefix 1) */
        for (kk = 1; sweep && kk <= k; kk++) {
            if (k > 1) {
                pf__aggregate(m, kk, B);
                pf__head_forward(m, NULL, NULL, B, 0.0f);
            }
            for (b = 0; b < B; b++) hitk[kk - 1] += pf__argmax(m->logits + (size_t)b * K, K) == d->labels[n0 + b];
        }
    }
    if (st == PF_OK) pf__eval_results(K, k, d->n, hit, cnt, hitk, total, loss, accuracy, per_class, sweep);
done:
    m->training = saved;
    m->wpack_on = 0;
    PF_FREE(idx); PF_FREE(hit); PF_FREE(cnt); PF_FREE(hitk); PF_FREE(x);
    return st;
}
PFDEF pf_status pf_evaluate(pf_model *m, const pf_dataset *d, int batch, double *loss, double *accuracy,
                            double *per_class, double *sweep) {
    pf_status st;
    PF__NEED(m, "pf_evaluate", "the model");
    if ((st = pf__dataset_args(d, "pf_evaluate")) != PF_OK) return st;
    return pf__evaluate(m, d, batch, loss, accuracy, per_class, sweep);
}

static pf_status pf__evaluate_on(pf_model *m, const pf_backend *be, const pf_dataset *d, int batch, double *loss,
                               double *accuracy, double *per_class, double *sweep) {
    const pf_config *c = &m->cfg;
    int K = c->classes, k = m->active, n0, saved = m->training;
    int *idx = NULL, *hit = NULL, *cnt = NULL, *hitk = NULL;
    pf_real *x = NULL, *z = NULL;
    double total = 0;
    pf_status st = PF_OK;
    if (!be) return pf_evaluate(m, d, batch, loss, accuracy, per_class, sweep);
    if ((st = pf__eval_check(m, d)) != PF_OK) return st;
    if (batch < 1) batch = 256;
    if (be->max_batch > 0 && batch > be->max_batch) batch = be->max_batch;
    if (batch > d->n) batch = d->n;
    idx = PF__CALLOC(int, batch);
    hit = PF__CALLOC(int, K);
    cnt = PF__CALLOC(int, K);
    hitk = PF__CALLOC(int, k);
    x = PF__CALLOC(pf_real, (size_t)batch * c->channels * c->image_size * c->image_size);
    z = PF__CALLOC(pf_real, (size_t)batch * K);
    if (!idx || !hit || !cnt || !hitk || !x || !z) { st = pf_fail(PF_ERR_NOMEM, "evaluate: out of memory"); goto done; }
    m->training = 0;
    for (n0 = 0; n0 < d->n; n0 += batch) {
        int B = d->n - n0 < batch ? d->n - n0 : batch, b, kk;
        for (b = 0; b < B; b++) idx[b] = n0 + b;
        if ((st = pf_dataset_batch(d, idx, B, c, NULL, 0, 0, x)) != PF_OK) break;
        if ((st = be->forward(be->ctx, x, d->labels + n0, B, 0.0f, NULL)) != PF_OK) break;
        if ((st = be->logits(be->ctx, z)) != PF_OK) break;
        total += m->loss * B;
        for (b = 0; b < B; b++) {
            int y = d->labels[n0 + b], hk = pf__argmax(z + (size_t)b * K, K) == y;
            cnt[y]++;
            hit[y] += hk;
            hitk[k - 1] += hk;
        }
        /* the sweep: a forward of each shorter prefix */
        for (kk = 1; sweep && kk < k && st == PF_OK; kk++) {
            m->active = kk;
            if ((st = be->forward(be->ctx, x, NULL, B, 0.0f, NULL)) != PF_OK) break;
            if ((st = be->logits(be->ctx, z)) != PF_OK) break;
            for (b = 0; b < B; b++) hitk[kk - 1] += pf__argmax(z + (size_t)b * K, K) == d->labels[n0 + b];
        }
        m->active = k;
        if (st != PF_OK) break;
    }
    if (st == PF_OK) pf__eval_results(K, k, d->n, hit, cnt, hitk, total, loss, accuracy, per_class, sweep);
done:
    m->active = k;
    m->training = saved;
    PF_FREE(idx); PF_FREE(hit); PF_FREE(cnt); PF_FREE(hitk); PF_FREE(x); PF_FREE(z);
    return st;
}
PFDEF pf_status pf_evaluate_on(pf_model *m, const pf_backend *be, const pf_dataset *d, int batch, double *loss,
                               double *accuracy, double *per_class, double *sweep) {
    pf_status st;
    PF__NEED(m, "pf_evaluate_on", "the model");
    if ((st = pf__dataset_args(d, "pf_evaluate_on")) != PF_OK) return st;
    return pf__evaluate_on(m, be, d, batch, loss, accuracy, per_class, sweep);
}

/* ---------------------------------------------------------------------- */
/* compress and expand */

/* copies every tensor of `src` whose name and shape exist in `dst` */
static void pf__copy_common(pf_model *dst, const pf_model *src) {
    int s;
    for (s = 0; s < dst->n_specs; s++) {
        const pf_tensor_spec *d = &dst->specs[s], *o = pf_model_find(src, d->name);
        if (o && o->numel == d->numel && o->ndim == d->ndim)
            memcpy(dst->params + d->offset, src->params + o->offset, d->numel * sizeof(pf_real));
    }
    pf_model_changed(dst);
}

static pf_status pf__model_compress(const pf_model *m, int keep, pf_model **out) {
    pf_config c = m->cfg;
    pf_status st;
    *out = NULL;
    if (keep < 1 || keep > c.branches)
        return pf_fail(PF_ERR_ARG, "compress: keep %d branches, the model has 1..%d", keep, c.branches);
    c.branches = keep;
    if ((st = pf_model_create(&c, out)) != PF_OK) return st;
    pf__copy_common(*out, m);
    return PF_OK;
}
PFDEF pf_status pf_model_compress(const pf_model *m, int keep, pf_model **out) {
    PF__NEED(out, "pf_model_compress", "out");
    *out = NULL;
    PF__NEED(m, "pf_model_compress", "the model");
    return pf__model_compress(m, keep, out);
}

/* zeroes the output projections (proj, fc2: weight and bias) of branch b */
static void pf__zero_branch_out(pf_model *m, int b) {
    int l;
    for (l = 0; l < m->cfg.depth; l++) {
        pf_layer_ptrs P = pf_model_layer(m, m->params, b, l);
        int D = m->cfg.dim, M = m->cfg.mlp_dim;
        memset(P.proj_w, 0, (size_t)D * D * sizeof(pf_real));
        memset(P.proj_b, 0, (size_t)D * sizeof(pf_real));
        memset(P.fc2_w, 0, (size_t)D * M * sizeof(pf_real));
        memset(P.fc2_b, 0, (size_t)D * sizeof(pf_real));
    }
    pf_model_changed(m);
}

static pf_status pf__model_expand(const pf_model *m, int add, int classes, int new_branch, uint64_t seed,
                                pf_model **out) {
    pf_config c = m->cfg;
    pf_status st;
    int b, K0 = m->cfg.classes, D = m->cfg.dim;
    *out = NULL;
    if (add < 0 || add > 1024) return pf_fail(PF_ERR_ARG, "expand: add %d branches (0..1024)", add);
    if (classes == 0) classes = K0;
    if (classes < K0) return pf_fail(PF_ERR_ARG, "expand: %d classes is fewer than the model's %d", classes, K0);
    if (!add && classes == K0) return pf_fail(PF_ERR_ARG, "expand: nothing to add (no branches, no classes)");
    c.branches += add;
    c.classes = classes;
    if ((st = pf_model_create(&c, out)) != PF_OK) return st;
    pf_model_init(*out, seed, 0.0f); /* new tensors; the old ones are copied over */
    pf__copy_common(*out, m);
    { /* the head grows: old rows copied, new rows keep their initialisation */
        const pf_tensor_spec *ow = pf_model_find(m, "head.weight"), *ob = pf_model_find(m, "head.bias");
        const pf_tensor_spec *nw = pf_model_find(*out, "head.weight"), *nb = pf_model_find(*out, "head.bias");
        memcpy((*out)->params + nw->offset, m->params + ow->offset, (size_t)K0 * D * sizeof(pf_real));
        memcpy((*out)->params + nb->offset, m->params + ob->offset, (size_t)K0 * sizeof(pf_real));
    }
    if (new_branch == PF_NEW_ZERO)
        for (b = m->cfg.branches; b < c.branches; b++) pf__zero_branch_out(*out, b);
    return PF_OK;
}
PFDEF pf_status pf_model_expand(const pf_model *m, int add, int classes, int new_branch, uint64_t seed,
                                pf_model **out) {
    PF__NEED(out, "pf_model_expand", "out");
    *out = NULL;
    PF__NEED(m, "pf_model_expand", "the model");
    return pf__model_expand(m, add, classes, new_branch, seed, out);
}

/* ---------------------------------------------------------------------- */
/* the trainer: options and presets */

PFDEF const char *pf_schedule_name(int s) {
    return s == PF_SCHED_INTERLEAVED ? "interleaved" : s == PF_SCHED_JOINT ? "joint" : "staged";
}

PFDEF pf_train_opts pf_train_opts_default(void) {
    pf_train_opts o;
    memset(&o, 0, sizeof o);
    o.schedule = PF_SCHED_STAGED;
    o.epochs = 10;
    o.batch = 128;
    o.optim = pf_optim_default();
    o.optim.weight_decay = 0.05f;
    o.lr_schedule = PF_LR_COSINE;
    o.warmup = 1.0f;
    o.new_branch = PF_NEW_ZERO;
    o.old_lr = 1.0f;
    o.patience = 3;
    o.prefix_clip = 1.0f;
    o.eval_batch = 256;
    return o;
}

PFDEF pf_status pf_train_preset(const char *name, pf_config *c, pf_train_opts *o, float *embed_std) {
    PF__NEED(name, "pf_train_preset", "the name");
    PF__NEED(c, "pf_train_preset", "the config");
    PF__NEED(o, "pf_train_preset", "o (the options)");
    *o = pf_train_opts_default();
    memset(c, 0, sizeof *c);
    if (!strcmp(name, "fmnist-small")) {
        /* PF(2x2) at width 80 (MLP 320) with 7x7 patches (T = 17), 0.32M
           parameters: stage 1 trains branch 1 for 15 epochs, stage 2 adds
           branch 2 (zeroed output projections) and trains everything for
           20 more. Shallow branches: with 4-layer branches (PF(2x4) at
           width 64) branch 1 alone already reached what both did, and the
           sweep stayed flat; docs/results.md says what was tried. */
        c->image_size = 28; c->channels = 1; c->patch_size = 7;
        c->dim = 80; c->heads = 4; c->mlp_dim = 320;
        c->branches = 2; c->depth = 2; c->classes = 10;
        o->schedule = PF_SCHED_STAGED;
        o->stage_epochs[0] = 15;
        o->stage_epochs[1] = 20;
        o->epochs = 20;
        o->batch = 128;
        o->optim.lr = 3e-3f;
        o->optim.weight_decay = 0.05f;
        o->warmup = 0.5f;
        o->min_lr = 0.02f;
        o->label_smoothing = 0.1f;
        o->freeze_old = 0; /* branch 1, stem and head keep training at the */
        o->old_lr = 1.0f;  /* full rate: frozen, branch 2 learned nothing */
        o->patience = 0;   /* each stage runs its epochs (stage 2 dips first) */
        o->aug.crop_pad = 1;
        o->aug.flip = 1;
        if (embed_std) *embed_std = 0.02f;
        return PF_OK;
    }
    if (!strcmp(name, "cifar10-small")) {
        /* PF(2x3) at width 128 (MLP 512, 4 heads), patch 4 (T = 65), 1.2M
           parameters, for CIFAR-10 on 2 CPU cores in under an hour (with
           --bf16): branch 1 for 32 epochs, then 20 more after adding
           branch 2 (zeroed output projections; branch 1, stem and head at
           0.3 of the rate, so that branch 2 learns what branch 1 leaves),
           under one warmup and cosine for the whole run (cosine-run: a
           stage does not restart the rate, which cost 8 points of
           validation accuracy at every stage). Crop (pad 4), flip and
           random erasing (p 0.25); no RandAugment, MixUp or CutMix, which
           a run this short cannot use. docs/results.md §7 gives the runs
           that chose it: 3 branches of 2 layers reached 78 % with a flat
           sweep. */
        c->image_size = 32; c->channels = 3; c->patch_size = 4;
        c->dim = 128; c->heads = 4; c->mlp_dim = 512;
        c->branches = 2; c->depth = 3; c->classes = 10;
        o->schedule = PF_SCHED_STAGED;
        o->stage_epochs[0] = 32;
        o->stage_epochs[1] = 20;
        o->epochs = 20;
        o->lr_schedule = PF_LR_COSINE_RUN;
        o->batch = 128;
        o->optim.lr = 2e-3f;
        o->optim.weight_decay = 0.05f;
        o->warmup = 1.0f;
        o->min_lr = 0.01f;
        o->label_smoothing = 0.1f;
        o->freeze_old = 0;
        o->old_lr = 0.3f;
        o->patience = 0;
        o->aug.crop_pad = 4;
        o->aug.flip = 1;
        o->aug.erase_p = 0.25f;
        if (embed_std) *embed_std = 0.02f;
        return PF_OK;
    }
    if (!strcmp(name, "paper")) {
        pf_config_preset(c, "paper");
        o->schedule = PF_SCHED_INTERLEAVED;
        o->epochs = 300;
        o->batch = 500;
        o->optim.adam = 1;
        o->optim.lr = 1e-4f;
        o->optim.weight_decay = 0.0f;
        o->lr_schedule = PF_LR_CONSTANT;
        o->warmup = 0.0f;
        o->prefix_clip = 1.0f;
        o->aug.crop_pad = 4;
        o->aug.flip = 1;
        o->aug.randaug_n = 2;
        o->aug.randaug_m = 14;
        if (embed_std) *embed_std = pf_preset_embed_std("paper");
        return PF_OK;
    }
    if (embed_std) *embed_std = pf_preset_embed_std(name);
    if (pf_config_preset(c, name) != PF_OK)
        return pf_fail(PF_ERR_ARG, "unknown preset '%s' (fmnist-small, cifar10-small, paper, paraformer, vit)", name);
    return PF_OK;
}

PFDEF pf_status pf_train_opts_validate(const pf_train_opts *o) {
    const pf_optim *p;
    PF__NEED(o, "pf_train_opts_validate", "o (the options)");
    p = &o->optim;
    if (o->schedule < PF_SCHED_STAGED || o->schedule > PF_SCHED_JOINT)
        return pf_fail(PF_ERR_ARG, "schedule %d is not staged, interleaved or joint", o->schedule);
    if (o->epochs < 1 || o->epochs > 100000) return pf_fail(PF_ERR_ARG, "epochs %d outside 1..100000", o->epochs);
    {
        int i, end = 0;
        for (i = 0; i < PF_TRAIN_MAX_LIST; i++) {
            int e = o->stage_epochs[i];
            if (e == 0) { end = 1; continue; }
            if (end || e < 1 || e > 100000)
                return pf_fail(PF_ERR_ARG, "stage %d epochs %d: the list must be values in 1..100000 then zeros", i + 1, e);
            if (o->schedule != PF_SCHED_STAGED)
                return pf_fail(PF_ERR_ARG, "epochs per stage need the staged schedule");
            if (!(o->warmup <= (float)e))
                return pf_fail(PF_ERR_ARG, "warmup %g epochs must be in [0, epochs of stage %d = %d]", o->warmup, i + 1, e);
        }
    }
    if (o->batch < 1 || o->batch > 65536) return pf_fail(PF_ERR_ARG, "batch %d outside 1..65536", o->batch);
    if (o->eval_batch < 1 || o->eval_batch > 65536)
        return pf_fail(PF_ERR_ARG, "eval batch %d outside 1..65536", o->eval_batch);
    if (!(p->lr > 0.0f && p->lr < 10.0f)) return pf_fail(PF_ERR_ARG, "learning rate %g must be in (0, 10)", p->lr);
    if (pf_optim_validate(p) != PF_OK) return PF_ERR_ARG;
    if (!(o->prefix_clip >= 0.0f) || !isfinite(o->prefix_clip)) return pf_fail(PF_ERR_ARG, "grad clip must be >= 0");
    if (o->lr_schedule != PF_LR_COSINE && o->lr_schedule != PF_LR_CONSTANT && o->lr_schedule != PF_LR_COSINE_RUN)
        return pf_fail(PF_ERR_ARG, "lr schedule %d is not cosine, cosine-run or constant", o->lr_schedule);
    if (!(o->warmup >= 0.0f && o->warmup <= (float)o->epochs))
        return pf_fail(PF_ERR_ARG, "warmup %g epochs must be in [0, epochs = %d]", o->warmup, o->epochs);
    if (!(o->min_lr >= 0.0f && o->min_lr <= 1.0f)) return pf_fail(PF_ERR_ARG, "min lr fraction %g must be in [0, 1]", o->min_lr);
    if (!(o->label_smoothing >= 0.0f && o->label_smoothing < 1.0f))
        return pf_fail(PF_ERR_ARG, "label smoothing %g must be in [0, 1)", o->label_smoothing);
    if (!(o->mixup >= 0.0f && o->mixup <= 100.0f))
        return pf_fail(PF_ERR_ARG, "mixup alpha %g must be in [0, 100]", o->mixup);
    if (!(o->cutmix >= 0.0f && o->cutmix <= 100.0f))
        return pf_fail(PF_ERR_ARG, "cutmix alpha %g must be in [0, 100]", o->cutmix);
    if (!(o->ema >= 0.0f && o->ema < 1.0f)) return pf_fail(PF_ERR_ARG, "ema decay %g must be in [0, 1)", o->ema);
    if (!(o->drop_path >= 0.0f && o->drop_path < 1.0f))
        return pf_fail(PF_ERR_ARG, "drop-path rate %g must be in [0, 1)", o->drop_path);
    if (o->new_branch != PF_NEW_ZERO && o->new_branch != PF_NEW_RANDOM)
        return pf_fail(PF_ERR_ARG, "new-branch %d is not zero or random", o->new_branch);
    if (!(o->old_lr >= 0.0f && o->old_lr <= 100.0f)) return pf_fail(PF_ERR_ARG, "old-branch lr multiplier %g must be in [0, 100]", o->old_lr);
    if (o->patience < 0) return pf_fail(PF_ERR_ARG, "patience %d must be >= 0", o->patience);
    if (!(o->min_delta >= 0.0f)) return pf_fail(PF_ERR_ARG, "min-delta %g must be >= 0", o->min_delta);
    if (o->keep_trainable && o->schedule != PF_SCHED_JOINT)
        return pf_fail(PF_ERR_ARG, "keeping the caller's trainable branches needs the joint schedule");
    if (o->log_every < 0) return pf_fail(PF_ERR_ARG, "log-every %d must be >= 0", o->log_every);
    return pf__check_aug(&o->aug);
}

/* ---------------------------------------------------------------------- */
/* the trainer: stages, passes, the log */

PFDEF void pf_trainer_free(pf_trainer *t) {
    if (!t) return;
    if (t->log) fclose((FILE *)t->log);
    PF_FREE(t->x); PF_FREE(t->logits); PF_FREE(t->perm); PF_FREE(t->labels); PF_FREE(t->targets); PF_FREE(t->ema);
    memset(t, 0, sizeof *t);
}

/* the epoch cap of stage `stage` (1-based) */
static int pf__stage_cap(const pf_train_opts *o, int stage) {
    int i, cap = o->epochs;
    for (i = 0; i < PF_TRAIN_MAX_LIST && i < stage && o->stage_epochs[i] > 0; i++) cap = o->stage_epochs[i];
    return cap;
}

/* which branches run and train in the current stage */
static void pf__trainer_apply_stage(pf_trainer *t) {
    pf_model *m = t->m;
    int n = m->cfg.branches, b;
    if (t->o.keep_trainable) { m->active = n; return; }
    m->train_stem = m->train_head = 1;
    m->head_rows_from = 0;
    m->shared_lr_scale = 1.0f;
    if (t->o.schedule == PF_SCHED_STAGED) {
        /* old parts at learning rate 0 take no step: mark them frozen, so
           the backward pass skips them (the same weights, less work) */
        int old_still = t->o.old_lr == 0.0f;
        m->active = t->s.stage;
        if (t->s.stage > 1) {
            m->shared_lr_scale = t->o.old_lr;
            m->train_stem = m->train_head = !old_still;
        }
        for (b = 0; b < n; b++) {
            int old = b < t->s.stage - 1;
            m->train_branch[b] = !(old && (t->o.freeze_old || old_still));
            m->lr_scale[b] = old ? t->o.old_lr : 1.0f;
        }
    } else {
        m->active = n;
        for (b = 0; b < n; b++) { m->train_branch[b] = 1; m->lr_scale[b] = 1.0f; }
    }
}

/* A fingerprint of a dataset's shape, pixels and labels (a resume must see
   the data its run was trained on: the data order is a function of it). */
static uint64_t pf__dataset_hash(uint64_t h, const pf_dataset *d) {
    size_t i, bytes;
    if (!d) return pf_mix64(h ^ 0x6e6f6e65u); /* "none" */
    h = pf_mix64(h ^ (uint64_t)(unsigned)d->n);
    h = pf_mix64(h ^ ((uint64_t)(unsigned)d->h << 32 | (uint64_t)(unsigned)d->w));
    h = pf_mix64(h ^ ((uint64_t)(unsigned)d->c << 32 | (uint64_t)(unsigned)d->classes));
    bytes = (size_t)d->n * d->h * d->w * d->c;
    for (i = 0; i + 8 <= bytes; i += 8) {
        uint64_t w = 0;
        int b;
        for (b = 7; b >= 0; b--) w = w << 8 | d->images[i + (size_t)b]; /* little-endian on any machine */
        h = pf_mix64(h ^ w);
    }
    for (; i < bytes; i++) h = pf_mix64(h ^ d->images[i]);
    for (i = 0; i < (size_t)d->n; i++) h = pf_mix64(h ^ (uint64_t)(unsigned)d->labels[i]);
    return h;
}

static pf_status pf__trainer_init(pf_trainer *t, pf_model *m, const pf_dataset *train, const pf_dataset *val,
                                const pf_train_opts *o) {
    const pf_config *c = &m->cfg;
    pf_status st;
    int B = o->batch, i;
    memset(t, 0, sizeof *t);
    if ((st = pf_train_opts_validate(o)) != PF_OK) return st;
    if (!train || train->n < 1) return pf_fail(PF_ERR_ARG, "trainer: the training set is empty");
    for (i = 0; i < train->n; i++)
        if (train->labels[i] < 0 || train->labels[i] >= c->classes)
            return pf_fail(PF_ERR_SHAPE, "%s: image %d has label %d but the model has %d classes (--classes)",
                           train->name, i, train->labels[i], c->classes);
    t->m = m;
    t->train = train;
    t->val = val && val->n > 0 ? val : NULL;
    t->data_hash = pf__dataset_hash(pf__dataset_hash(0, t->train), t->val);
    t->o = *o;
    if (B > train->n) B = train->n;
    t->o.batch = B;
    t->n_batches = (train->n + B - 1) / B;
    if ((st = pf_model_alloc_train(m)) != PF_OK) return st;
    t->x = PF__CALLOC(pf_real, (size_t)B * c->channels * c->image_size * c->image_size);
    t->logits = PF__CALLOC(pf_real, (size_t)B * c->classes);
    t->perm = PF__CALLOC(int, train->n);
    t->labels = PF__CALLOC(int, B);
    if (o->mixup > 0.0f || o->cutmix > 0.0f) t->targets = PF__CALLOC(pf_real, (size_t)B * c->classes);
    if (o->ema > 0.0f) t->ema = PF__CALLOC(pf_real, m->n_params);
    if (!t->x || !t->logits || !t->perm || !t->labels || ((o->mixup > 0.0f || o->cutmix > 0.0f) && !t->targets) ||
        (o->ema > 0.0f && !t->ema)) {
        pf_trainer_free(t);
        return pf_fail(PF_ERR_NOMEM, "trainer: out of memory");
    }
    t->s.stage = o->schedule == PF_SCHED_STAGED ? 1 : c->branches;
    t->s.best_val = INFINITY;
    m->dropout_seed = pf_mix64(o->seed ^ 0xd20b0u);
    m->dropout_counter = 0;
    pf__trainer_apply_stage(t);
    return PF_OK;
}
PFDEF pf_status pf_trainer_init(pf_trainer *t, pf_model *m, const pf_dataset *train, const pf_dataset *val,
                                const pf_train_opts *o) {
    pf_status st;
    PF__NEED(t, "pf_trainer_init", "the trainer");
    PF__NEED(m, "pf_trainer_init", "the model");
    PF__NEED(train, "pf_trainer_init", "the training set");
    PF__NEED(o, "pf_trainer_init", "o (the options)");
    if ((st = pf__dataset_args(train, "pf_trainer_init")) != PF_OK) return st;
    if (val && (st = pf__dataset_args(val, "pf_trainer_init")) != PF_OK) return st;
    return pf__trainer_init(t, m, train, val, o);
}

/* the learning rate at batch `it` of a span of `total` batches */
static double pf__lr_at(const pf_train_opts *o, int64_t it, int64_t total, int n_batches) {
    double lr = o->optim.lr, w = (double)o->warmup * n_batches, p;
    if (o->lr_schedule == PF_LR_CONSTANT) return lr;
    if (w >= 1.0 && (double)it < w) return lr * ((double)it + 1.0) / w;
    p = total > w ? ((double)it - w) / ((double)total - w) : 1.0;
    if (p > 1.0) p = 1.0;
    return lr * (o->min_lr + (1.0 - o->min_lr) * 0.5 * (1.0 + cos(3.141592653589793 * p)));
}

/* the seeded order of pass `pass` of epoch `epoch` */
static void pf__trainer_order(pf_trainer *t, int epoch, int pass) {
    uint64_t r = pf_mix64(t->o.seed ^ pf_mix64(((uint64_t)epoch << 8) + (uint64_t)pass + 0x0bdeu));
    pf__shuffle(t->perm, t->train->n, &r);
}

static void pf__json_num(char *buf, size_t cap, size_t *len, const char *key, double v) {
    if (*len >= cap) return;
    if (isfinite(v)) *len += (size_t)snprintf(buf + *len, cap - *len, ",\"%s\":%.6g", key, v);
    else *len += (size_t)snprintf(buf + *len, cap - *len, ",\"%s\":null", key);
}

PFDEF void pf_trainer_log(pf_trainer *t, const char *json) {
    if (!t || !json || !t->log) return;
    fputs(json, (FILE *)t->log);
    fputc('\n', (FILE *)t->log);
    fflush((FILE *)t->log);
    t->s.log_lines++;
}

/* closes the object that line[0..len) opened and logs it */
static void pf__trainer_log_object(pf_trainer *t, char *line, size_t cap, size_t len) {
    if (len + 2 < cap) { line[len++] = '}'; line[len] = 0; pf_trainer_log(t, line); }
}

/* the progress record of an event: position filled in, the figures NaN
   (each caller adds the ones it has) */
static pf_train_info pf__trainer_info(const pf_trainer *t, int event, const char *pass) {
    pf_train_info info;
    memset(&info, 0, sizeof info);
    info.event = event;
    info.pass = pass;
    info.stage = t->s.stage;
    info.active = t->m->active;
    info.epoch = t->s.epoch;
    info.epochs = t->o.schedule == PF_SCHED_STAGED ? pf__stage_cap(&t->o, t->s.stage) : t->o.epochs;
    info.step = t->s.step;
    info.loss = info.acc = info.val_loss = info.val_acc = NAN;
    return info;
}

/* A non-finite loss: the run stops before the step that would spread it
   into the weights; the checkpoint on disk is the last finished epoch's. */
static pf_status pf__diverged(const pf_trainer *t) {
    return pf_fail(PF_ERR_NONFINITE, "training diverged: the loss is %g at step %lld (epoch %d); lower the learning "
                   "rate or clip the gradients%s%s%s", t->m->loss, (long long)t->s.step + 1, t->s.epoch + 1,
                   t->out_path ? " (" : "", t->out_path ? t->out_path : "",
                   t->out_path ? " keeps the last finished epoch, to resume from)" : "");
}

/* Gamma(a) by Marsaglia and Tsang (2000), a < 1 as Gamma(a + 1)·U^(1/a) */
static double pf__gamma(uint64_t *r, double a) {
    double boost = 1.0, d, c;
    int tries;
    if (a < 1.0) { boost = pow(pf__uniform(r), 1.0 / a); a += 1.0; }
    d = a - 1.0 / 3.0;
    c = 1.0 / sqrt(9.0 * d);
    for (tries = 0; tries < 1000; tries++) { /* each try is accepted with p > 0.95 */
        double z = pf__normal(r), v = 1.0 + c * z, u;
        if (v <= 0.0) continue;
        v = v * v * v;
        u = pf__uniform(r);
        if (u < 1.0 - 0.0331 * z * z * z * z || log(u) < 0.5 * z * z + d * (1.0 - v + log(v))) return boost * d * v;
    }
    return boost * d;
}

/* Beta(a, a) as X/(X+Y) of two Gamma(a) draws */
static double pf__beta(uint64_t *r, double a) {
    double x = pf__gamma(r, a), y = pf__gamma(r, a);
    return x + y > 0.0 ? x / (x + y) : 0.5;
}

#define PF__MIX_STREAM 0x6d69787570ULL /* "mixup" */

/* MixUp or CutMix of the nb images in t->x, image i with image nb-1-i (the
   batch reversed, as timm's Mixup in batch mode), and their soft targets
   (docs/design.md §3.5). The draws come from the stream of (seed, counter):
   which of the two (when both are on), lambda, then CutMix's box centre. */
static void pf__trainer_mix(pf_trainer *t, int nb, uint64_t counter) {
    const pf_config *c = &t->m->cfg;
    int K = c->classes, S = c->image_size, C = c->channels, i, j, ch, y, x;
    size_t img = (size_t)C * S * S;
    uint64_t r = pf_mix64(t->o.seed ^ pf_mix64(counter ^ PF__MIX_STREAM));
    int cut = t->o.cutmix > 0.0f && (t->o.mixup <= 0.0f || pf__uniform(&r) < 0.5);
    double lam = pf__beta(&r, cut ? t->o.cutmix : t->o.mixup);
    double off = (double)t->o.label_smoothing / K, on = 1.0 - (double)t->o.label_smoothing + off;
    if (cut) { /* a box of area ~(1 - lam) S^2 from the partner; lam becomes the kept fraction */
        int hh = (int)(S * sqrt(1.0 - lam)) / 2, cy = (int)(pf__next(&r) % (uint64_t)S);
        int cx = (int)(pf__next(&r) % (uint64_t)S);
        int y0 = cy - hh < 0 ? 0 : cy - hh, y1 = cy + hh > S ? S : cy + hh;
        int x0 = cx - hh < 0 ? 0 : cx - hh, x1 = cx + hh > S ? S : cx + hh;
        for (i = 0; i < nb / 2; i++) {
            pf_real *a = t->x + (size_t)i * img, *b = t->x + (size_t)(nb - 1 - i) * img;
            for (ch = 0; ch < C; ch++)
                for (y = y0; y < y1; y++)
                    for (x = x0; x < x1; x++) {
                        size_t k = ((size_t)ch * S + y) * S + x;
                        pf_real v = a[k];
                        a[k] = b[k];
                        b[k] = v;
                    }
        }
        lam = 1.0 - (double)(y1 - y0) * (x1 - x0) / ((double)S * S);
    } else {
        pf_real l1 = (pf_real)lam, l2 = (pf_real)(1.0 - lam);
        for (i = 0; i < nb / 2; i++) {
            pf_real *a = t->x + (size_t)i * img, *b = t->x + (size_t)(nb - 1 - i) * img;
            size_t k;
            for (k = 0; k < img; k++) {
                pf_real u = a[k], v = b[k];
                a[k] = l1 * u + l2 * v;
                b[k] = l1 * v + l2 * u;
            }
        }
    }
    for (i = 0; i < nb; i++) {
        pf_real *tg = t->targets + (size_t)i * K;
        for (j = 0; j < K; j++) tg[j] = (pf_real)off;
        tg[t->labels[i]] += (pf_real)(lam * (on - off));
        tg[t->labels[nb - 1 - i]] += (pf_real)((1.0 - lam) * (on - off));
    }
}

/* ema = d·ema + (1 - d)·params, d = min(decay, (1 + n)/(10 + n)) after step
   n (TensorFlow's ExponentialMovingAverage with num_updates), so that the
   average follows the weights closely while they move fast */
static void pf__ema_update(pf_trainer *t) {
    const pf_model *m = t->m;
    double d = (double)t->o.ema, w = (1.0 + (double)t->s.step) / (10.0 + (double)t->s.step);
    pf_real a, b;
    size_t i;
    if (w < d) d = w;
    a = (pf_real)d;
    b = (pf_real)(1.0 - d);
    PF__OMP(parallel for schedule(static))
    for (i = 0; i < m->n_params; i++) t->ema[i] = a * t->ema[i] + b * m->params[i];
}

/* trades the weights and their average (evaluations with the average) */
static void pf__ema_swap(pf_trainer *t) {
    pf_real *p = t->m->params;
    t->m->params = t->ema;
    t->ema = p;
    pf_model_changed(t->m);
}

/* one pass over the training data: `prefix` 1 takes a step per branch prefix
   1..n for every batch (the interleaved schedule's first pass) */
static pf_status pf__trainer_pass(pf_trainer *t, const char *pass_name, int pass, int prefix, int64_t span_pos,
                                  int64_t span_total) {
    pf_model *m = t->m;
    const pf_backend *be = t->backend;
    const pf_dataset *d = t->train;
    int n = m->cfg.branches, bi, B = t->o.batch;
    int log_every = t->o.log_every > 0 ? t->o.log_every : (t->n_batches * (prefix ? n : 1) + 19) / 20;
    double sum_loss = 0, sum_acc = 0, win_loss = 0, win_acc = 0, t0 = pf_time(), t_win = t0;
    int64_t seen = 0, win_seen = 0, win_steps = 0;
    pf_status st;
    pf__trainer_order(t, t->s.epoch, pass);
    for (bi = 0; bi < t->n_batches; bi++) {
        int b0 = bi * B, nb = d->n - b0 < B ? d->n - b0 : B, i, kk;
        int k_lo = prefix ? 1 : m->active, k_hi = prefix ? n : m->active;
        double lr = pf__lr_at(&t->o, span_pos + bi, span_total, t->n_batches);
        pf_optim opt = t->o.optim;
        opt.lr = (float)lr;
        if (prefix) opt.clip = t->o.prefix_clip;
        if (t->stop && *t->stop) return pf_fail(PF_ERR_INTERRUPTED, "interrupted");
        for (i = 0; i < nb; i++) t->labels[i] = d->labels[t->perm[b0 + i]];
        if ((st = pf_dataset_batch(d, t->perm + b0, nb, &m->cfg, &t->o.aug, t->o.seed, (uint64_t)t->s.samples, t->x)) != PF_OK)
            return st;
        if (t->targets) pf__trainer_mix(t, nb, (uint64_t)t->s.samples);
        t->s.samples += nb;
        for (kk = k_lo; kk <= k_hi; kk++) {
            int hits = 0, K = m->cfg.classes;
            const pf_real *z = m->logits;
            if (prefix) m->active = kk;
            if (be) {
                if ((st = be->forward(be->ctx, t->x, t->labels, nb, t->o.label_smoothing, NULL)) != PF_OK) return st;
                if ((st = be->logits(be->ctx, t->logits)) != PF_OK) return st;
                if (!isfinite(m->loss)) return pf__diverged(t);
                if ((st = be->backward(be->ctx)) != PF_OK) return st;
                if ((st = be->step(be->ctx, &opt, NULL)) != PF_OK) return st;
                z = t->logits;
            } else {
                st = t->targets ? pf_forward_soft(m, t->x, t->targets, nb, NULL)
                                : pf_forward(m, t->x, t->labels, nb, t->o.label_smoothing, NULL);
                if (st != PF_OK) return st;
                if (!isfinite(m->loss)) return pf__diverged(t);
                if ((st = pf_backward(m)) != PF_OK) return st;
                if ((st = pf_optim_step(m, &opt, NULL)) != PF_OK) return st;
            }
            t->s.step++;
            if (t->ema) pf__ema_update(t);
            for (i = 0; i < nb; i++) hits += pf__argmax(z + (size_t)i * K, K) == t->labels[i];
            if (kk == k_hi) { /* the running figures follow the full prefix */
                sum_loss += m->loss * nb; sum_acc += hits; seen += nb;
                win_loss += m->loss * nb; win_acc += hits; win_seen += nb;
            }
            win_steps++;
            if (win_steps >= log_every || (bi == t->n_batches - 1 && kk == k_hi)) {
                double now = pf_time();
                char line[512];
                size_t len = 0;
                len += (size_t)snprintf(line, sizeof line, "{\"event\":\"train\",\"pass\":\"%s\",\"step\":%lld,\"epoch\":%d,"
                                        "\"stage\":%d,\"active\":%d", pass_name, (long long)t->s.step, t->s.epoch,
                                        t->s.stage, prefix ? n : m->active);
                pf__json_num(line, sizeof line, &len, "loss", win_seen ? win_loss / win_seen : NAN);
                pf__json_num(line, sizeof line, &len, "acc", win_seen ? win_acc / win_seen : NAN);
                pf__json_num(line, sizeof line, &len, "lr", lr);
                pf__json_num(line, sizeof line, &len, "img_s", now > t_win ? (double)win_seen / (now - t_win) : 0.0);
                pf__json_num(line, sizeof line, &len, "time_s", t->s.time_s + (now - t->t_start));
                pf__trainer_log_object(t, line, sizeof line, len);
                win_loss = win_acc = 0; win_seen = 0; win_steps = 0; t_win = now;
            }
        }
        if (prefix) m->active = n;
        if (t->progress) {
            pf_train_info info = pf__trainer_info(t, PF_EV_STEP, pass_name);
            double now = pf_time();
            info.batch = bi + 1; info.batches = t->n_batches;
            info.loss = seen ? sum_loss / seen : NAN; info.acc = seen ? sum_acc / seen : NAN;
            info.lr = lr; info.img_s = now > t0 ? (double)seen / (now - t0) : 0.0;
            info.time_s = t->s.time_s + (now - t->t_start);
            t->progress(&info, t->user);
        }
    }
    return PF_OK;
}

static void pf__trainer_stage_start(pf_trainer *t) {
    char line[256];
    pf__trainer_apply_stage(t);
    snprintf(line, sizeof line, "{\"event\":\"stage\",\"stage\":%d,\"step\":%lld,\"active\":%d}", t->s.stage,
             (long long)t->s.step, t->m->active);
    pf_trainer_log(t, line);
    if (t->progress) {
        pf_train_info info = pf__trainer_info(t, PF_EV_STAGE, "train");
        t->progress(&info, t->user);
    }
}

/* The "start" event: what a reader of the log needs before the numbers
   (the model, the data sizes, where it ran), written once by a fresh run.
   The caller's names are cut as the program always cut them (40 and 100
   bytes), so that logs stay comparable across versions. */
static void pf__trainer_log_start(pf_trainer *t) {
    const pf_model *m = t->m;
    const char *where = t->backend ? "unknown" : "cpu";
    char cfg[2048], preset[41], device[101], line[4096];
    size_t len = 0;
    if (!t->log) return;
    if (pf_config_to_json(&m->cfg, cfg, sizeof cfg) < 0) snprintf(cfg, sizeof cfg, "null");
    snprintf(preset, sizeof preset, "%s", t->log_preset ? t->log_preset : "");
    snprintf(device, sizeof device, "%s", t->log_device ? t->log_device : where);
    pf__appendf(line, sizeof line, &len, "{\"event\":\"start\",\"schedule\":\"%s\",\"branches\":%d,\"depth\":%d,"
                "\"params\":%zu,\"train\":%d,\"val\":%d,\"preset\":", pf_schedule_name(t->o.schedule), m->cfg.branches,
                m->cfg.depth, m->n_params, t->train->n, t->val ? t->val->n : 0);
    pf__json_str(line, sizeof line, &len, preset);
    pf__appendf(line, sizeof line, &len, ",\"device\":");
    pf__json_str(line, sizeof line, &len, device);
    pf__appendf(line, sizeof line, &len, ",\"backend\":");
    pf__json_str(line, sizeof line, &len, t->log_backend ? t->log_backend : where);
    pf__appendf(line, sizeof line, &len, ",\"precision\":");
    pf__json_str(line, sizeof line, &len, t->log_precision ? t->log_precision : "fp32");
    if (t->o.aug.erase_p > 0.0f) /* only when on, as in the checkpoint's options */
        pf__appendf(line, sizeof line, &len, ",\"erase_p\":%.9g", (double)t->o.aug.erase_p);
    pf__appendf(line, sizeof line, &len, ",\"config\":%s}", cfg);
    if (len < sizeof line) pf_trainer_log(t, line);
}

/* The passes of one epoch. The span is what the cosine decays over: the
   stage (staged, so that every new branch gets a full schedule), the run
   (joint, and staged with cosine-run: the sum of the stage caps, so a stage
   that patience ends early only shortens the run's tail), or the run's two
   passes per epoch (interleaved). */
static pf_status pf__trainer_passes(pf_trainer *t) {
    int64_t nb = t->n_batches, span;
    pf_status st;
    int s;
    if (t->o.schedule == PF_SCHED_STAGED && t->o.lr_schedule == PF_LR_COSINE_RUN) {
        for (span = 0, s = 1; s <= t->m->cfg.branches; s++) span += pf__stage_cap(&t->o, s);
        return pf__trainer_pass(t, "train", 0, 0, (int64_t)t->s.epoch * nb, span * nb);
    }
    if (t->o.schedule == PF_SCHED_STAGED)
        return pf__trainer_pass(t, "train", 0, 0, (int64_t)t->s.stage_epoch * nb,
                                (int64_t)pf__stage_cap(&t->o, t->s.stage) * nb);
    if (t->o.schedule == PF_SCHED_JOINT)
        return pf__trainer_pass(t, "train", 0, 0, (int64_t)t->s.epoch * nb, (int64_t)t->o.epochs * nb);
    span = (int64_t)t->o.epochs * 2 * nb;
    st = pf__trainer_pass(t, "prefix", 0, 1, (int64_t)t->s.epoch * 2 * nb, span);
    if (st == PF_OK) st = pf__trainer_pass(t, "joint", 1, 0, ((int64_t)t->s.epoch * 2 + 1) * nb, span);
    return st;
}

/* Validation after an epoch (NaN without a validation set, so that the
   log and the progress callback see every epoch either way). */
static pf_status pf__trainer_validate(pf_trainer *t, double *vl, double *va) {
    pf_model *m = t->m;
    char line[512];
    size_t len = 0;
    double now;
    pf_status st;
    *vl = *va = NAN;
    if (t->val) {
        if (t->ema) pf__ema_swap(t);
        st = pf_evaluate_on(m, t->backend, t->val, t->o.eval_batch, vl, va, NULL, NULL);
        if (t->ema) pf__ema_swap(t);
        if (st != PF_OK) return st;
    }
    now = pf_time();
    len += (size_t)snprintf(line, sizeof line, "{\"event\":\"eval\",\"split\":\"val\",\"step\":%lld,\"epoch\":%d,"
                            "\"stage\":%d,\"active\":%d", (long long)t->s.step, t->s.epoch, t->s.stage, m->active);
    pf__json_num(line, sizeof line, &len, "loss", *vl);
    pf__json_num(line, sizeof line, &len, "accuracy", *va);
    pf__json_num(line, sizeof line, &len, "time_s", t->s.time_s + (now - t->t_start));
    pf__trainer_log_object(t, line, sizeof line, len);
    if (t->progress) {
        pf_train_info info = pf__trainer_info(t, PF_EV_EVAL, "train");
        info.epoch = t->s.epoch - 1; /* the one just trained */
        info.val_loss = *vl; info.val_acc = *va;
        info.time_s = t->s.time_s + (now - t->t_start);
        t->progress(&info, t->user);
    }
    return PF_OK;
}

/* What the schedule does after an epoch with validation loss vl. Staged:
   end the stage on patience or its cap, then start the next one, whose
   branch is zeroed on the host (the backend's values there and back). */
static pf_status pf__trainer_decide(pf_trainer *t, double vl) {
    pf_model *m = t->m;
    const pf_backend *be = t->backend;
    const char *reason = "epochs";
    char line[256];
    int end_stage = 0;
    pf_status st;
    if (t->o.schedule != PF_SCHED_STAGED) {
        if (t->s.epoch >= t->o.epochs) t->s.done = 1;
        return PF_OK;
    }
    if (isfinite(vl) && vl < t->s.best_val - t->o.min_delta) { t->s.best_val = vl; t->s.bad_evals = 0; }
    else if (isfinite(vl)) t->s.bad_evals++;
    if (t->o.patience > 0 && t->s.bad_evals >= t->o.patience) { end_stage = 1; reason = "patience"; }
    if (t->s.stage_epoch >= pf__stage_cap(&t->o, t->s.stage)) end_stage = 1;
    if (!end_stage) return PF_OK;
    snprintf(line, sizeof line, "{\"event\":\"stage_end\",\"stage\":%d,\"step\":%lld,\"reason\":\"%s\","
             "\"best_val_loss\":%.6g}", t->s.stage, (long long)t->s.step, reason,
             isfinite(t->s.best_val) ? t->s.best_val : -1.0);
    pf_trainer_log(t, line);
    if (t->s.stage >= m->cfg.branches) {
        t->s.done = 1;
        return PF_OK;
    }
    t->s.stage++;
    t->s.stage_epoch = 0;
    t->s.bad_evals = 0;
    t->s.best_val = INFINITY;
    if (t->o.new_branch == PF_NEW_ZERO) {
        if (be && (st = be->download(be->ctx)) != PF_OK) return st;
        pf__zero_branch_out(m, t->s.stage - 1);
        if (be && (st = be->upload(be->ctx)) != PF_OK) return st;
    }
    if (t->ema) { /* the new branch's average starts at its weights */
        size_t off = m->stem_size + (size_t)(t->s.stage - 1) * m->branch_size;
        memcpy(t->ema + off, m->params + off, m->branch_size * sizeof(pf_real));
    }
    pf__trainer_stage_start(t);
    return PF_OK;
}

/* One epoch. The checkpoint is written only here, after the schedule's
   decision, so that a resume always starts at an epoch boundary with the
   next stage already set up. */
static pf_status pf__trainer_epoch(pf_trainer *t) {
    pf_model *m = t->m;
    double vl, va, now;
    pf_status st;
    pf__trainer_apply_stage(t);
    t->m->training = 1;
    if ((st = pf__trainer_passes(t)) != PF_OK) return st;
    t->s.epoch++;
    t->s.stage_epoch++;
    if ((st = pf__trainer_validate(t, &vl, &va)) != PF_OK) return st;
    if ((st = pf__trainer_decide(t, vl)) != PF_OK) return st;
    if (t->s.done && t->ema) { /* the run's model is the average */
        memcpy(m->params, t->ema, m->n_params * sizeof(pf_real));
        pf_model_changed(m);
    }
    now = pf_time();
    t->s.time_s += now - t->t_start;
    t->t_start = now;
    if (t->out_path && (st = pf_trainer_save(t, t->out_path)) != PF_OK) return st;
    if (t->progress) {
        pf_train_info info = pf__trainer_info(t, PF_EV_EPOCH, "train");
        info.epoch = t->s.epoch - 1;
        info.val_loss = vl; info.val_acc = va; info.time_s = t->s.time_s;
        t->progress(&info, t->user);
    }
    return PF_OK;
}

static pf_status pf__trainer_run(pf_trainer *t) {
    pf_model *m = t->m;
    const pf_backend *be = t->backend;
    pf_status st;
    if (be && be->max_batch > 0 && be->max_batch < t->o.batch)
        return pf_fail(PF_ERR_ARG, "trainer: batch %d, but the backend takes at most %d", t->o.batch, be->max_batch);
    if (be && (t->targets || t->ema || t->o.drop_path > 0.0f))
        return pf_fail(PF_ERR_ARG, "trainer: %s runs on the CPU only (the GPU backend takes hard labels, keeps the "
                       "weights on the device and has no stochastic depth)",
                       t->ema ? "the weight average (ema)" : t->targets ? "MixUp/CutMix" : "drop-path");
    /* the host's values to the backend (pf_model_init, a resume, anything
       the caller did before), or the activations on the host */
    if (be) st = be->upload(be->ctx);
    else st = pf_model_reserve(m, t->o.batch > t->o.eval_batch ? t->o.batch : t->o.eval_batch);
    if (st != PF_OK) return st;
    t->t_start = pf_time();
    m->training = 1;
    m->drop_path = t->o.drop_path;
    if (t->s.step == 0 && t->s.epoch == 0) { /* fresh; a resume starts at an epoch's end */
        if (t->ema) memcpy(t->ema, m->params, m->n_params * sizeof(pf_real));
        pf__trainer_log_start(t);
        if (t->o.schedule == PF_SCHED_STAGED && !t->o.keep_trainable) pf__trainer_stage_start(t);
    }
    st = PF_OK;
    while (!t->s.done && st == PF_OK) st = pf__trainer_epoch(t);
    if (st == PF_OK) pf__trainer_apply_stage(t);
    m->training = 0;
    m->drop_path = 0.0f;
    return st;
}

PFDEF pf_status pf_trainer_run(pf_trainer *t) {
    pf_status st, st2;
    PF__NEED(t, "pf_trainer_run", "the trainer");
    PF__NEED(t->m, "pf_trainer_run", "the trainer's model (call pf_trainer_init)");
    st = pf__trainer_run(t);
    /* finished or stopped: the model holds what the backend trained */
    if (t->backend && (st == PF_OK || st == PF_ERR_INTERRUPTED) &&
        (st2 = t->backend->download(t->backend->ctx)) != PF_OK)
        st = st2;
    return st;
}

static pf_status pf__trainer_report(pf_trainer *t, const pf_dataset *test, double *loss, double *accuracy,
                                  double *sweep) {
    double l = NAN, a = NAN, *sw;
    size_t cap, len = 0;
    char *line;
    int k, n;
    pf_status st;
    if (!t || !t->m || !test) return pf_fail(PF_ERR_ARG, "trainer report: no trainer or no test set");
    n = t->m->active;
    cap = 256 + 24 * (size_t)n; /* one sweep value: at most ",-1.23457e-308" */
    sw = PF__CALLOC(double, n);
    line = PF__CALLOC(char, cap);
    if (!sw || !line) { PF_FREE(sw); PF_FREE(line); return pf_fail(PF_ERR_NOMEM, "trainer report: out of memory"); }
    st = pf_evaluate_on(t->m, t->backend, test, t->o.eval_batch, &l, &a, NULL, sw);
    if (st == PF_OK) {
        pf__appendf(line, cap, &len, "{\"event\":\"sweep\",\"split\":\"test\",\"step\":%lld", (long long)t->s.step);
        pf__json_num(line, cap, &len, "accuracy", a);
        pf__json_num(line, cap, &len, "loss", l);
        pf__appendf(line, cap, &len, ",\"sweep\":[");
        for (k = 0; k < n; k++) {
            if (isfinite(sw[k])) pf__appendf(line, cap, &len, "%s%.6g", k ? "," : "", sw[k]);
            else pf__appendf(line, cap, &len, "%snull", k ? "," : "");
        }
        pf__appendf(line, cap, &len, "]}");
        pf_trainer_log(t, line);
        len = 0;
        pf__appendf(line, cap, &len, "{\"event\":\"end\",\"step\":%lld,\"time_s\":%.1f", (long long)t->s.step,
                    t->s.time_s);
        pf__json_num(line, cap, &len, "test_accuracy", a);
        pf__trainer_log_object(t, line, cap, len);
        if (loss) *loss = l;
        if (accuracy) *accuracy = a;
        if (sweep) memcpy(sweep, sw, (size_t)n * sizeof *sw);
    }
    PF_FREE(sw);
    PF_FREE(line);
    return st;
}
PFDEF pf_status pf_trainer_report(pf_trainer *t, const pf_dataset *test, double *loss, double *accuracy,
                                  double *sweep) {
    PF__NEED(t, "pf_trainer_report", "the trainer");
    PF__NEED(t->m, "pf_trainer_report", "the trainer's model");
    if (test) {
        pf_status st = pf__dataset_args(test, "pf_trainer_report");
        if (st != PF_OK) return st;
    }
    return pf__trainer_report(t, test, loss, accuracy, sweep);
}

/* ---------------------------------------------------------------------- */
/* the trainer: checkpoints with training state */

static const char *pf__lr_schedule_name(int s) {
    return s == PF_LR_CONSTANT ? "constant" : s == PF_LR_COSINE_RUN ? "cosine-run" : "cosine";
}

/* the options that decide the trajectory, as JSON (saved and compared) */
static int pf__train_opts_json(const pf_train_opts *o, char *buf, size_t cap) {
    const pf_optim *p = &o->optim;
    char list[16 * PF_TRAIN_MAX_LIST + 32] = "", opt[160] = "";
    int i, n, e = 0;
    const size_t cap_opt = sizeof opt;
    /* keys written only when on: a checkpoint without them (older) resumes as 0 */
    if (o->aug.erase_p > 0.0f) e += snprintf(opt + e, cap_opt - (size_t)e, ",\"erase_p\":%.9g", (double)o->aug.erase_p);
    if (o->mixup > 0.0f) e += snprintf(opt + e, cap_opt - (size_t)e, ",\"mixup\":%.9g", (double)o->mixup);
    if (o->cutmix > 0.0f) e += snprintf(opt + e, cap_opt - (size_t)e, ",\"cutmix\":%.9g", (double)o->cutmix);
    if (o->ema > 0.0f) e += snprintf(opt + e, cap_opt - (size_t)e, ",\"ema\":%.9g", (double)o->ema);
    if (o->drop_path > 0.0f) snprintf(opt + e, cap_opt - (size_t)e, ",\"drop_path\":%.9g", (double)o->drop_path);
    if (o->stage_epochs[0] > 0) { /* only when given, so older checkpoints still resume */
        n = snprintf(list, sizeof list, ",\"stage_epochs\":[");
        for (i = 0; i < PF_TRAIN_MAX_LIST && o->stage_epochs[i] > 0; i++)
            n += snprintf(list + n, sizeof list - (size_t)n, "%s%d", i ? "," : "", o->stage_epochs[i]);
        snprintf(list + n, sizeof list - (size_t)n, "]");
    }
    return snprintf(buf, cap,
                    "{\"schedule\":\"%s\",\"epochs\":%d,\"batch\":%d,\"optimizer\":\"%s\",\"lr\":%.9g,\"beta1\":%.9g,"
                    "\"beta2\":%.9g,\"eps\":%.9g,\"weight_decay\":%.9g,\"clip\":%.9g,\"lr_schedule\":\"%s\","
                    "\"warmup\":%.9g,\"min_lr\":%.9g,\"label_smoothing\":%.9g,\"new_branch\":\"%s\",\"freeze_old\":%d,"
                    "\"old_lr\":%.9g,\"patience\":%d,\"min_delta\":%.9g,\"prefix_clip\":%.9g,\"keep_trainable\":%d,"
                    "\"crop_pad\":%d,\"flip\":%d,\"randaug_n\":%d,\"randaug_m\":%d%s,\"seed\":%llu%s}",
                    pf_schedule_name(o->schedule), o->epochs, o->batch, p->adam ? "adam" : "adamw", p->lr, p->beta1,
                    p->beta2, p->eps, p->weight_decay, p->clip, pf__lr_schedule_name(o->lr_schedule),
                    o->warmup, o->min_lr, o->label_smoothing, o->new_branch == PF_NEW_ZERO ? "zero" : "random",
                    o->freeze_old, o->old_lr, o->patience, o->min_delta, o->prefix_clip, o->keep_trainable,
                    o->aug.crop_pad, o->aug.flip, o->aug.randaug_n, o->aug.randaug_m, opt, (unsigned long long)o->seed,
                    list);
}

/* The arguments of the trainer's file functions (save, resume, open_log). */
static pf_status pf__trainer_path_args(const pf_trainer *t, const char *path, const char *fn) {
    PF__NEED(t, fn, "the trainer");
    PF__NEED(t->m, fn, "the trainer's model");
    PF__NEED(path, fn, "the path");
    return PF_OK;
}

static pf_status pf__trainer_save(pf_trainer *t, const char *path) {
    pf_model *m = t->m;
    char state[2048], opts[1536];
    const char *keys[2] = {"train_state", "train_args"}, *vals[2];
    pf_st_tensor extra[5];
    int64_t *flags = NULL;
    float *mv = NULL;
    int n_extra = 4;
    pf_status st;
    int b, n = m->cfg.branches;
    size_t i;
    if (t->backend && (st = t->backend->download(t->backend->ctx)) != PF_OK) return st;
    /* a diverged model never replaces the last good checkpoint */
    if (pf__params_finite(m, "training diverged") != PF_OK) /* (pf_fail may quote pf_last_error) */
        return pf_fail(PF_ERR_NONFINITE, "%s (step %lld); %s keeps the last finished epoch: resume from it with a lower "
                       "learning rate", pf_last_error(), (long long)t->s.step, path);
    if (pf__train_opts_json(&t->o, opts, sizeof opts) >= (int)sizeof opts)
        return pf_fail(PF_ERR_ARG, "%s: training options too long", path);
    if (snprintf(state, sizeof state,
                 "{\"version\":1,\"stage\":%d,\"epoch\":%d,\"stage_epoch\":%d,\"bad_evals\":%d,\"done\":%d,"
                 "\"step\":%lld,\"samples\":%lld,\"best_val\":%.17g,\"log_lines\":%lld,"
                 "\"dropout_counter\":%llu,\"data\":{\"train\":%d,\"val\":%d,\"hash\":\"%016llx\"},"
                 "\"options\":%s}",
                 t->s.stage, t->s.epoch, t->s.stage_epoch, t->s.bad_evals, t->s.done, (long long)t->s.step,
                 (long long)t->s.samples, isfinite(t->s.best_val) ? t->s.best_val : -1.0,
                 (long long)t->s.log_lines, (unsigned long long)m->dropout_counter, t->train->n,
                 t->val ? t->val->n : 0, (unsigned long long)t->data_hash, opts) >= (int)sizeof state)
        return pf_fail(PF_ERR_ARG, "%s: training state too long", path);
    vals[0] = state;
    vals[1] = t->meta_extra ? t->meta_extra : "{}";
    /* Adam moments (float32 like the parameters), per-tensor steps, and the
       trainable flags of each branch */
    mv = PF__CALLOC(float, (t->ema ? 3 : 2) * m->n_params);
    flags = PF__CALLOC(int64_t, (size_t)n + 3);
    if (!mv || !flags) { PF_FREE(mv); PF_FREE(flags); return pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); }
    for (i = 0; i < m->n_params; i++) { mv[i] = (float)m->adam_m[i]; mv[m->n_params + i] = (float)m->adam_v[i]; }
    if (t->ema)
        for (i = 0; i < m->n_params; i++) mv[2 * m->n_params + i] = (float)t->ema[i];
    for (b = 0; b < n; b++) flags[b] = m->train_branch[b];
    flags[n] = m->train_stem; flags[n + 1] = m->train_head; flags[n + 2] = m->head_rows_from;
    memset(extra, 0, sizeof extra);
    extra[0].name = "train.adam_m"; extra[0].dtype = PF_F32; extra[0].ndim = 1; extra[0].shape[0] = (int64_t)m->n_params; extra[0].data = mv;
    extra[1].name = "train.adam_v"; extra[1].dtype = PF_F32; extra[1].ndim = 1; extra[1].shape[0] = (int64_t)m->n_params; extra[1].data = mv + m->n_params;
    extra[2].name = "train.steps"; extra[2].dtype = PF_I64; extra[2].ndim = 1; extra[2].shape[0] = m->n_specs; extra[2].data = m->steps;
    extra[3].name = "train.trainable"; extra[3].dtype = PF_I64; extra[3].ndim = 1; extra[3].shape[0] = n + 3; extra[3].data = flags;
    if (t->ema) {
        extra[4].name = "train.ema"; extra[4].dtype = PF_F32; extra[4].ndim = 1;
        extra[4].shape[0] = (int64_t)m->n_params; extra[4].data = mv + 2 * m->n_params;
        n_extra = 5;
    }
    st = pf__model_save_with(m, path, extra, n_extra, keys, vals, 2);
    PF_FREE(mv);
    PF_FREE(flags);
    return st;
}
PFDEF pf_status pf_trainer_save(pf_trainer *t, const char *path) {
    pf_status st = pf__trainer_path_args(t, path, "pf_trainer_save");
    return st != PF_OK ? st : pf__trainer_save(t, path);
}

/* The first key of JSON object `now` whose value differs from the same
   key's in `then` (or that `then` lacks), else the first key of `then` that
   `now` lacks (a key written only when set, such as "erase_p"): 1 with the
   key and the two values ("not set" for a missing one) in msg as `"key" is
   A now, B in the checkpoint`; 0 when both have the same keys and values. */
static int pf__json_first_diff(const char *now, const char *then, size_t then_len, char *msg, size_t cap) {
    pf__json j, k;
    char key[64];
    int first = 1;
    memset(&j, 0, sizeof j);
    j.s = now; j.n = strlen(now);
    if (!pf__jobj_begin(&j)) return 0;
    while (pf__jobj_next(&j, &first, key, sizeof key)) {
        size_t v0, v1, w0 = 0, w1 = 0;
        int found;
        pf__jws(&j);
        v0 = j.i;
        if (!pf__jskip(&j)) return 0;
        v1 = j.i;
        if ((found = pf__jfind(&k, then, then_len, key)) != 0) {
            pf__jws(&k);
            w0 = k.i;
            found = pf__jskip(&k);
            w1 = k.i;
        }
        if (!found || v1 - v0 != w1 - w0 || memcmp(now + v0, then + w0, v1 - v0)) {
            snprintf(msg, cap, "\"%s\" is %.*s now, %.*s in the checkpoint", key, (int)(v1 - v0 > 200 ? 200 : v1 - v0),
                     now + v0, found ? (int)(w1 - w0 > 200 ? 200 : w1 - w0) : 7, found ? then + w0 : "not set");
            return 1;
        }
    }
    memset(&j, 0, sizeof j);
    j.s = then; j.n = then_len;
    first = 1;
    if (!pf__jobj_begin(&j)) return 0;
    while (pf__jobj_next(&j, &first, key, sizeof key)) {
        size_t w0;
        pf__jws(&j);
        w0 = j.i;
        if (!pf__jskip(&j)) return 0;
        if (!pf__jfind(&k, now, strlen(now), key)) {
            snprintf(msg, cap, "\"%s\" is not set now, %.*s in the checkpoint", key,
                     (int)(j.i - w0 > 200 ? 200 : j.i - w0), then + w0);
            return 1;
        }
    }
    return 0;
}

/* The saved options must be this run's: the data order, the learning rate
   and the stages are functions of them, so a resume under others would not
   be the run it claims to continue. The error names the first that differs. */
static pf_status pf__resume_check_opts(const pf_trainer *t, const char *path, const char *sj) {
    char opts_now[1536], msg[512];
    const char *then = NULL;
    pf__json j;
    size_t then_len = 0;
    if (pf__jfind(&j, sj, strlen(sj), "options") && pf__jpeek(&j) == '{') {
        size_t i0 = j.i;
        if (pf__jskip(&j)) then = sj + i0, then_len = j.i - i0;
    }
    if (!then) return pf_fail(PF_ERR_ARG, "%s: the checkpoint's train_state saved no training options", path);
    pf__train_opts_json(&t->o, opts_now, sizeof opts_now);
    if (strlen(opts_now) == then_len && !memcmp(opts_now, then, then_len)) return PF_OK;
    if (!pf__json_first_diff(opts_now, then, then_len, msg, sizeof msg))
        snprintf(msg, sizeof msg, "the checkpoint has options this version does not set");
    return pf_fail(PF_ERR_ARG, "%s: the run was started with other training options: %s; resume with the options it "
                   "was started with", path, msg);
}

/* The data must be the run's too (its order and the stage decisions come
   from it): the fingerprint of the training and validation sets, when the
   checkpoint has one (train_state "data", written since the format had it). */
static pf_status pf__resume_check_data(const pf_trainer *t, const char *path, const char *sj) {
    pf__json j;
    char hash[24], now[24];
    double n_tr = -1, n_va = -1;
    size_t i0;
    if (!pf__jfind(&j, sj, strlen(sj), "data")) return PF_OK; /* an older checkpoint: nothing to compare */
    i0 = j.i;
    if (pf__jpeek(&j) != '{' || !pf__jskip(&j) || !pf_json_string(sj + i0, j.i - i0, "hash", hash, sizeof hash) ||
        !pf_json_number(sj + i0, j.i - i0, "train", &n_tr) || !pf_json_number(sj + i0, j.i - i0, "val", &n_va) ||
        !(n_tr >= 0 && n_tr <= 1e10) || !(n_va >= 0 && n_va <= 1e10))
        return pf_fail(PF_ERR_FORMAT, "%s: train_state \"data\" is not {\"train\": N, \"val\": N, \"hash\": HEX}", path);
    snprintf(now, sizeof now, "%016llx", (unsigned long long)t->data_hash);
    if (!strcmp(now, hash)) return PF_OK;
    return pf_fail(PF_ERR_ARG, "%s: the run was trained on other data: the checkpoint's run had %.0f training and %.0f "
                   "validation images (fingerprint %.16s), this one has %d and %d (fingerprint %s); resume with the "
                   "data it was started with", path, n_tr, n_va, hash, t->train->n, t->val ? t->val->n : 0, now);
}

#define PF__STATE_MAX_INT 1.0e9              /* epochs, evaluations */
#define PF__STATE_MAX_I64 9007199254740992.0 /* 2^53: steps, images, lines */

/* The run's counters from train_state. Each must be a whole number in
   range before it is trusted: a hand-edited or damaged state fails here,
   not as an out-of-range stage or a negative step count later. */
static pf_status pf__resume_state(pf_trainer *t, const char *path, const char *sj) {
    double v;
    int n = t->m->cfg.branches;
    /* int fields stay far below INT_MAX (the run adds to them), the 64-bit
       counters below 2^53 (exact in the double they were written from) */
#define PF__STATE_INT(key, dst, max) do { \
        if (!pf_json_number(sj, strlen(sj), key, &v) || v != floor(v) || !(v >= 0 && v <= (max))) \
            return pf_fail(PF_ERR_FORMAT, "%s: train_state has no valid \"%s\" (a whole number in 0..%.0f)", path, \
                           key, (double)(max)); \
        dst = v; \
    } while (0)
    PF__STATE_INT("stage", t->s.stage, n);
    PF__STATE_INT("epoch", t->s.epoch, PF__STATE_MAX_INT);
    PF__STATE_INT("stage_epoch", t->s.stage_epoch, PF__STATE_MAX_INT);
    PF__STATE_INT("bad_evals", t->s.bad_evals, PF__STATE_MAX_INT);
    PF__STATE_INT("done", t->s.done, 1);
    PF__STATE_INT("step", t->s.step, PF__STATE_MAX_I64);
    PF__STATE_INT("samples", t->s.samples, PF__STATE_MAX_I64);
    PF__STATE_INT("log_lines", t->s.log_lines, PF__STATE_MAX_I64);
    PF__STATE_INT("dropout_counter", t->m->dropout_counter, PF__STATE_MAX_I64);
#undef PF__STATE_INT
    if (!pf_json_number(sj, strlen(sj), "best_val", &v)) return pf_fail(PF_ERR_FORMAT, "%s: train_state has no best_val", path);
    t->s.best_val = v < 0 ? INFINITY : v;
    if (t->s.stage < 1 || t->s.stage > n)
        return pf_fail(PF_ERR_FORMAT, "%s: train_state stage %d outside 1..%d", path, t->s.stage, n);
    return PF_OK;
}

/* The train.* tensors into the model: Adam moments, step counters and the
   trainable flags, each checked for dtype and shape before it is read. */
static pf_status pf__resume_tensors(pf_trainer *t, pf_st_file *f, const char *path) {
    static const char *const names[4] = {"train.adam_m", "train.adam_v", "train.steps", "train.trainable"};
    pf_model *m = t->m;
    const pf_st_entry *e[4];
    float *mv = NULL;
    int64_t *flags = NULL;
    pf_status st;
    int i, n = m->cfg.branches;
    size_t j;
    for (i = 0; i < 4; i++) {
        int64_t want = i < 2 ? (int64_t)m->n_params : i == 2 ? m->n_specs : n + 3;
        e[i] = pf_st_find(f, names[i]);
        if (!e[i] || e[i]->ndim != 1 || e[i]->shape[0] != want || e[i]->dtype != (i < 2 ? PF_F32 : PF_I64))
            return pf_fail(PF_ERR_FORMAT, "%s: tensor %s is missing or not %s[%lld]", path, names[i],
                           i < 2 ? "F32" : "I64", (long long)want);
    }
    mv = PF__CALLOC(float, m->n_params);
    flags = PF__CALLOC(int64_t, (size_t)n + 3);
    if (!mv || !flags) { st = pf_fail(PF_ERR_NOMEM, "%s: out of memory", path); goto done; }
    if ((st = pf_st_read_raw(f, e[0], mv)) != PF_OK) goto done;
    for (j = 0; j < m->n_params; j++) m->adam_m[j] = mv[j];
    if ((st = pf_st_read_raw(f, e[1], mv)) != PF_OK) goto done;
    for (j = 0; j < m->n_params; j++) m->adam_v[j] = mv[j];
    if ((st = pf_st_read_raw(f, e[2], m->steps)) != PF_OK) goto done;
    for (i = 0; i < m->n_specs; i++) /* each step adds one: stay far from INT64_MAX */
        if (m->steps[i] < 0 || (double)m->steps[i] > PF__STATE_MAX_I64) {
            st = pf_fail(PF_ERR_FORMAT, "%s: train.steps[%d] (%s) is %lld, outside 0..2^53", path, i, m->specs[i].name,
                         (long long)m->steps[i]);
            goto done;
        }
    if ((st = pf_st_read_raw(f, e[3], flags)) != PF_OK) goto done;
    if (flags[n + 2] < 0 || flags[n + 2] > m->cfg.classes) {
        st = pf_fail(PF_ERR_FORMAT, "%s: train.trainable's head_rows_from %lld is outside 0..%d", path,
                     (long long)flags[n + 2], m->cfg.classes);
        goto done;
    }
    for (i = 0; i < n; i++) m->train_branch[i] = flags[i] != 0;
    m->train_stem = flags[n] != 0;
    m->train_head = flags[n + 1] != 0;
    m->head_rows_from = (int)flags[n + 2];
    if (t->ema) { /* the options match (checked before), so the run saved it */
        const pf_st_entry *ee = pf_st_find(f, "train.ema");
        if (!ee || ee->ndim != 1 || ee->shape[0] != (int64_t)m->n_params || ee->dtype != PF_F32) {
            st = pf_fail(PF_ERR_FORMAT, "%s: tensor train.ema (the weight average) is missing or not F32[%zu]", path,
                         m->n_params);
            goto done;
        }
        if ((st = pf_st_read_raw(f, ee, mv)) != PF_OK) goto done;
        for (j = 0; j < m->n_params; j++) {
            if (!isfinite(mv[j])) {
                st = pf_fail(PF_ERR_FORMAT, "%s: train.ema[%zu] is not finite", path, j);
                goto done;
            }
            t->ema[j] = mv[j];
        }
    }
done:
    PF_FREE(mv);
    PF_FREE(flags);
    return st;
}

static pf_status pf__trainer_resume(pf_trainer *t, const char *path) {
    pf_model *m = t->m, *saved = NULL;
    pf_st_file *f = NULL;
    const char *sj;
    char cfg_now[2048], cfg_then[2048];
    pf_status st;
    if ((st = pf_model_load(path, &saved)) != PF_OK) return st;
    pf_config_to_json(&m->cfg, cfg_now, sizeof cfg_now);
    pf_config_to_json(&saved->cfg, cfg_then, sizeof cfg_then);
    if (strcmp(cfg_now, cfg_then)) {
        char msg[512];
        if (!pf__json_first_diff(cfg_now, cfg_then, strlen(cfg_then), msg, sizeof msg))
            snprintf(msg, sizeof msg, "the checkpoint's config has keys this version does not write");
        pf_model_free(saved);
        if (!strncmp(msg, "\"mean\"", 6) || !strncmp(msg, "\"std\"", 5)) /* fitted to the data */
            return pf_fail(PF_ERR_ARG, "%s: the run was trained on other data: the input normalisation fitted to it "
                           "differs (%s); resume with the data it was started with", path, msg);
        return pf_fail(PF_ERR_ARG, "%s: the checkpoint's model is not the one of this run: %s", path, msg);
    }
    if ((st = pf_st_open(path, &f)) != PF_OK) { pf_model_free(saved); return st; }
    if (!(sj = pf_st_meta(f, "train_state")))
        st = pf_fail(PF_ERR_FORMAT, "%s: no \"train_state\" in the metadata: a model without training state "
                     "(use --init to start a new run from its weights)", path);
    if (st == PF_OK) st = pf__resume_check_opts(t, path, sj);
    if (st == PF_OK) st = pf__resume_state(t, path, sj);
    if (st == PF_OK) st = pf__resume_tensors(t, f, path);
    if (st == PF_OK) st = pf__resume_check_data(t, path, sj);
    if (st == PF_OK) {
        memcpy(m->params, saved->params, m->n_params * sizeof(pf_real));
        pf_model_changed(m);
        pf__trainer_apply_stage(t);
        if (t->backend) st = t->backend->upload(t->backend->ctx);
    }
    pf_st_close(f);
    pf_model_free(saved);
    return st;
}
PFDEF pf_status pf_trainer_resume(pf_trainer *t, const char *path) {
    pf_status st = pf__trainer_path_args(t, path, "pf_trainer_resume");
    return st != PF_OK ? st : pf__trainer_resume(t, path);
}

/* The line number (from 0) of the last "start" event in the log f, 0 when
   there is none; f is left at its beginning. A log given to several runs
   holds them one after the other, each from its "start" line. */
static int64_t pf__log_run_start(FILE *f) {
    static const char start[] = "{\"event\":\"start\"";
    const size_t len = sizeof start - 1;
    int64_t line = 0, last = 0;
    size_t at = 0; /* bytes of this line that matched `start`; len + 1: no match */
    int ch;
    while ((ch = getc(f)) != EOF) {
        if (ch == '\n') { line++; at = 0; continue; }
        if (at >= len) continue;
        if (ch != start[at]) at = len + 1;
        else if (++at == len) last = line;
    }
    rewind(f);
    return last;
}

static pf_status pf__trainer_open_log(pf_trainer *t, const char *path) {
    FILE *f;
    pf_status st;
    if (t->log) { fclose((FILE *)t->log); t->log = NULL; }
    if (t->s.log_lines > 0) { /* keep the lines written up to the checkpoint (rewritten atomically) */
        char tmp[1100];
        int64_t lines = 0, keep;
        int ch = 0, ok = 1;
        FILE *w;
        if (!(f = fopen(path, "rb")))
            return pf_fail(PF_ERR_IO, "%s: cannot open the log to continue it: %s", path, strerror(errno));
        /* the run's lines count from its own "start": earlier runs that used
           the same log stay as they are */
        keep = pf__log_run_start(f) + t->s.log_lines;
        if (!(w = pf__open_tmp(path, tmp, sizeof tmp))) { fclose(f); return PF_ERR_IO; }
        while (lines < keep && (ch = getc(f)) != EOF) {
            if (putc(ch, w) == EOF) { ok = 0; break; }
            lines += ch == '\n';
        }
        fclose(f);
        if (ok && lines < keep) {
            fclose(w);
            remove(tmp);
            return pf_fail(PF_ERR_IO, "%s: the run's part of the log has %lld lines, fewer than the %lld it had at the checkpoint",
                           path, (long long)(lines - (keep - t->s.log_lines)), (long long)t->s.log_lines);
        }
        if ((st = pf__commit(w, tmp, path, ok)) != PF_OK) return st;
    }
    if (!(f = fopen(path, "ab"))) return pf_fail(PF_ERR_IO, "%s: cannot open the log: %s", path, strerror(errno));
    t->log = f;
    return PF_OK;
}
PFDEF pf_status pf_trainer_open_log(pf_trainer *t, const char *path) {
    pf_status st = pf__trainer_path_args(t, path, "pf_trainer_open_log");
    return st != PF_OK ? st : pf__trainer_open_log(t, path);
}

/* ---------------------------------------------------------------------- */
/* multi-device plan: branches to devices, the collectives of a step */

PFDEF pf_status pf_branch_plan(int n, int d, const double *cost, int *device_of) {
    double load[256];
    int b;
    if (n < 1 || d < 1 || d > n) return pf_fail(PF_ERR_ARG, "branch plan: %d devices for %d branches (need 1..branches)", d, n);
    if (d > 256) return pf_fail(PF_ERR_ARG, "branch plan: %d devices (at most 256)", d);
    PF__NEED(device_of, "pf_branch_plan", "device_of");
    if (!cost) {
        for (b = 0; b < n; b++) device_of[b] = b % d;
        return PF_OK;
    }
    for (b = 0; b < n; b++)
        if (!(cost[b] >= 0.0) || !isfinite(cost[b])) return pf_fail(PF_ERR_ARG, "branch plan: cost of branch %d is %g", b, cost[b]);
    memset(load, 0, sizeof load);
    for (b = 0; b < n; b++) device_of[b] = -1;
    for (;;) { /* the costliest unplaced branch onto the least-loaded device */
        int best = -1, dev = 0, i;
        for (i = 0; i < n; i++)
            if (device_of[i] < 0 && (best < 0 || cost[i] > cost[best])) best = i;
        if (best < 0) break;
        for (i = 1; i < d; i++)
            if (load[i] < load[dev]) dev = i;
        device_of[best] = dev;
        load[dev] += cost[best];
    }
    return PF_OK;
}

PFDEF int pf_collective_plan(const pf_config *c, int B, int devices, int replicas, size_t n_params,
                             pf_collective *out, int cap) {
    pf_config r;
    size_t act;
    int n = 0, i;
    pf_collective seq[5];
    if (!c || cap < 0 || (cap > 0 && !out))
        return pf_fail(PF_ERR_ARG, "pf_collective_plan: %s", !c ? "the config is NULL" : "no room for the plan"), -1;
    r = *c;
    pf_config_resolve(&r);
    if (pf_config_validate(&r) != PF_OK) return -1;
    if (B < 1 || devices < 1 || devices > r.branches || replicas < 1) {
        pf_fail(PF_ERR_ARG, "collective plan: batch %d, %d devices for %d branches, %d replicas", B, devices, r.branches,
                replicas);
        return -1;
    }
    act = (size_t)B * (size_t)((r.image_size / r.patch_size) * (r.image_size / r.patch_size) + 1) * (size_t)r.dim;
    if (devices > 1) {
        seq[n].op = PF_COLL_BROADCAST; seq[n].root = 0; seq[n].count = act; seq[n++].what = "x0";
        seq[n].op = PF_COLL_REDUCE; seq[n].root = 0; seq[n].count = act; seq[n++].what = "branch outputs";
        seq[n].op = PF_COLL_BROADCAST; seq[n].root = 0; seq[n].count = act; seq[n++].what = "d aggregate";
        seq[n].op = PF_COLL_REDUCE; seq[n].root = 0; seq[n].count = act; seq[n++].what = "d x0";
    }
    if (replicas > 1) { seq[n].op = PF_COLL_ALLREDUCE; seq[n].root = -1; seq[n].count = n_params; seq[n++].what = "grads"; }
    if (n > cap) {
        pf_fail(PF_ERR_ARG, "collective plan: %d collectives, room for %d", n, cap);
        return -1;
    }
    for (i = 0; i < n; i++) out[i] = seq[i];
    return n;
}

#endif /* PARAFORMER_IMPLEMENTATION_DONE */
#endif /* PARAFORMER_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
MIT License

Copyright (c) 2026 The ParaFormer-C authors

Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
*/

/* paraformer_cuda.cu - the GPU backend of paraformer.h (docs/design.md §5).

   One translation unit: it includes paraformer.h for the model, the plan and
   the declarations of the pf_cuda_* API, and implements them with the CUDA
   runtime, cuBLAS and NCCL.

       nvcc -O2 -arch=sm_90 --extended-lambda -c paraformer_cuda.cu    (make cuda)

   The same file compiled as plain C++ with -DPF_CUDA_EMULATE runs every
   kernel body on the CPU: memory is host memory, a kernel launch is a loop
   over its indices (a block kernel: each phase for every thread of the
   block, then the next phase), a GEMM is pf_gemm, a collective is a loop
   over the emulated devices, a CUDA graph is the list of launches recorded
   at capture, replayed. make test builds it that way, so the backend's
   layout, indexing, branch batching, multi-device plan, graphs and
   optimizer are checked against the CPU model on every machine; make
   test-cuda runs the same tests on a real GPU.

   How a step runs (per device; device 0 of each replica holds stem and head):
       embed      patches -> GEMM -> + bias, cls, pos -> X0     (device 0)
       broadcast  X0 to the other devices of the replica
       layers     for l = 0..depth-1, all local active branches at once:
                  LN, one strided-batched GEMM (branches are the batch),
                  attention per (image, head, branch), ...
                  (small bf16 inference batches: attention, then the
                  rest of the layer as one launch, pfc_rows_fused)
       reduce     sum of the branch deltas onto device 0, aggregate, head
   Backward mirrors it (broadcast dL/dagg, reduce dL/dX0), then with several
   replicas the gradients are all-reduced. AdamW is one launch per device
   over a table of the trainable tensors. Every output element belongs to
   one thread and every sum runs in a fixed order: results are the same run
   to run, whatever the batch was before.

   Two kinds of kernel, both written as lambdas so that the emulated build
   runs the same bodies: pfc_for (a thread per element or row) and
   pfc_blocks (a block of threads running phases separated by barriers,
   with shared memory: LayerNorm 8 rows per block, attention per (image,
   head, query tile) with the T x T scores on chip, the second pass of the
   column sums). On one device the forward, backward and optimizer step each
   run as a CUDA graph after their second call (pfc_graph_run); nothing in
   a step waits for the host unless the caller asks for a value (the loss,
   the gradient norm, the logits). */

#include "paraformer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PF_CUDA_EMULATE
#include <functional>
#include <new>
#include <vector>
#define PFC_HD
#define PFC_LAMBDA [=]
/* an emulated CUDA graph: the launches recorded while capturing, with the
   arguments they were given then (pfc_graph_run) */
typedef std::vector<std::function<pf_status()> > pfc_emu_ops;
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <nccl.h>
#include <sys/stat.h>
#include <time.h>
#define PFC_HD __host__ __device__
#define PFC_LAMBDA [=] __device__
#endif

#define PFC_MAX_DEV 16
#define PFC_BLAS_WS ((size_t)32 << 20) /* bytes of cuBLAS workspace per device */
#define PFC_MAX_HD 256 /* head width: the attention kernels keep rows of it per thread */
#define PFC_EMU_SMEM (227 * 1024) /* shared memory per block of an emulated device (an H100's) */

/* ---------------------------------------------------------------------- */
/* primitives: memory, launches, GEMM, collectives (real or emulated) */

/* the optimizer's tables (built on the host each step, copied with one
   transfer): a chunk of at most 4096 gradients whose squares are summed,
   and a tensor AdamW updates, with its step's constants */
struct pfc_chunk {
    size_t off, n;   /* first element (local layout), count */
};
struct pfc_seg {
    size_t off, n, start; /* first element, count, elements in the segments before it */
    float step_size, bc2_sqrt, lr, wd;
};

struct pfc_twin {
    const float *f;  /* an activation buffer of n floats */
    uint16_t *b;     /* its bf16 twin */
    size_t n;
};
struct pfc_dev {
    int id;          /* CUDA device id (emulated: a number) */
    int replica;     /* which data-parallel copy */
    int pos;         /* position in its replica's group; 0 holds stem/head */
    int lrep;        /* which slice of this process's batch its replica takes */
    int nb;          /* branches held here */
    int gb[64];      /* their global indices, ascending */
    size_t n_local;  /* parameters in the local layout */
    size_t smem_max; /* shared memory one block may use (bytes) */
    mutable unsigned long long launches; /* kernels and GEMMs run (pf_cuda_launches; the launchers take a const device) */
    mutable int attr_err; /* the first failed cudaFuncSetAttribute (a cudaError_t; 0: none), reported by pfc_launch_status */
    int check;            /* checked launches (opts.check_launches): each kernel and GEMM waited for and its error kept */
    mutable int fault;    /* the first kernel or GEMM that failed (a cudaError_t; 0: none), reported by pfc_launch_status */
    mutable int fault_line; /* its launch's line in this file (0: not known, launches unchecked) */
    mutable const char *fault_what; /* and what it was */
#ifdef PF_CUDA_EMULATE
    pfc_emu_ops *rec; /* capturing a graph: launches are appended here, not run */
    mutable unsigned long long block_runs; /* block launches run (which order their threads take) */
#endif
    int sms;         /* streaming multiprocessors */
    float *params, *grads, *adam_m, *adam_v;
    uint16_t *wbf;   /* bf16 copy of params (bf16 mode) */
    pfc_twin *twins; /* bf16 mode: activations written in bf16 too, for the GEMMs that read them */
    int n_twins;
    uint16_t **u1b, **attyb, **u2b, **gtw, *patchesb; /* those twins (of u1, atty, u2, g, patches) */
    uint16_t *dcurb, *dresb, *dub, *dhb, *dqkvb; /* the backward's: passed to its GEMMs by name (pfc_gemm_bf) */
    uint16_t *dattyb; /* the tensor-core attention's dy, from its GEMM in bf16 */
    uint16_t *ufb, *dlogitsb, *dpatchb; /* the head's and the embedding's (uf a twin; the others by name) */
    uint16_t *gob; /* bf16 outputs of the GEMMs whose result the next kernel adds to the fp32 residual stream */
    uint16_t **qkvb, **hb; /* bf16 outputs of the qkv GEMM (for the tensor-core attention) and of fc1 */
    int *d_gb;       /* gb on the device */
    uint64_t *ctr;   /* the model's dropout counter of the last forward, on the device */
    /* activations, per layer [nb][B][T][..] */
    float *patches, *etmp, *x0, *agg, *psum;
    float *pooled, *lnf_mean, *lnf_rstd, *uf, *logits, *probs;
    double *rowloss, *sumsq;
    double *clipv;   /* the gradient norm and the clip coefficient (2 doubles) */
    pfc_chunk *chunks, *host_chunks; /* clipping: the gradient chunks to square and sum */
    pfc_seg *segs, *host_segs;       /* AdamW: the tensors to update, one launch */
    int *labels;
    float *xin;
    float **u1, **qkv, **att, **atty, **x1, **u2, **h, **g, **x2;
    float **ln1_mean, **ln1_rstd, **ln2_mean, **ln2_rstd;
    /* backward scratch */
    float *dlogits, *duf, *dpool, *dagg, *dx0, *dcur, *dres, *du, *dh, *datty, *dqkv, *datt, *dpatch;
    float *colpart;  /* partial column sums (pfc_colsums) */
    void *blas_ws;   /* cuBLAS's workspace (set, so that graph capture allocates nothing) */
#ifndef PF_CUDA_EMULATE
    cudaStream_t stream;
    cublasHandle_t blas;
    ncclComm_t group_comm, pos_comm; /* within the replica; across replicas */
#endif
};


/* A captured CUDA graph of one part of a step (pfc_graph_run), for the
   launch sizes and constants in its key */
#define PFC_KEY 8
#define PFC_GRAPHS_FWD 8
#define PFC_GRAPHS_BWD 4
#define PFC_GRAPHS_STEP 4
struct pfc_graph {
    uint64_t key[PFC_KEY]; /* key[0] = 0: unused */
    unsigned long long launches; /* the kernels and GEMMs it holds */
#ifdef PF_CUDA_EMULATE
    pfc_emu_ops *exec;     /* NULL: seen once, not captured yet */
#else
    cudaGraphExec_t exec;  /* NULL: seen once, not captured yet */
#endif
};
static void pfc_graph_free(pfc_graph *s);

struct pf_cuda {
    pf_model *m;
    pf_cuda_opts o;
    int ndev;                 /* local devices */
    int group;                /* devices per replica (all processes) */
    int nlrep;                /* replicas this process takes part in */
    int device_of[64];        /* branch -> position in the group */
    pfc_dev dev[PFC_MAX_DEV];
    int max_batch;            /* per process */
    int B, Bper;              /* last forward: per process, per replica */
    size_t denom;             /* images of the step over all replicas */
    int has_labels;
    float ls;
    int fwd_active;
    int check;                /* checked launches (opts.check_launches; pfc_after_launch) */
    int wmma;                 /* every device takes bf16 tensor-core tiles (compute capability 8.0 on, and code built for it) */
    int fused_att;            /* attention in shared memory (pfc_attention_fwd) */
    int tc_att;               /* bf16: that attention on tensor cores (pfc_attention_fwd_tc; opts.tc_attention) */
    int att_tiles;            /* query tiles per forward attention block: 0 automatic (opts.att_tiles) */
    int row_fused;            /* bf16: a layer's rows in one launch (pfc_rows_fused) for inference when the blocks do
                                 not fill the GPU (-1), always (1: opts.row_fused on), never (0: off, or it cannot run) */
    int row_tiles;            /* their row tiles per block: 0 automatic (opts.row_tiles: N when it fits; tests) */
    int input_B;              /* images on the devices (xin) from the last forward given x */
    int loss_pending;         /* m->loss not yet summed (pfc_finish_loss) */
    int use_graphs;           /* one device: steps as CUDA graphs (opts.graphs) */
    pfc_graph fwd_graphs[PFC_GRAPHS_FWD], bwd_graphs[PFC_GRAPHS_BWD], step_graphs[PFC_GRAPHS_STEP];
    double host_norm;         /* several devices: the last clip norm */
    pf_collective trace[16];  /* collectives of the last forward + backward */
    int n_trace;
    double *host_loss;        /* [max_batch] */
};

static int pfc_rf_possible(const pf_cuda *g, size_t smem_max);

/* offsets of one layer's tensors inside a branch slice (elements) */
struct pfc_layer_off {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

static pfc_layer_off pfc_layer(const pf_model *m, int l) {
    pf_layer_ptrs P = pf_model_layer(m, m->params, 0, l);
    const float *base = m->params + m->stem_size;
    pfc_layer_off o;
    o.ln1_w = (size_t)(P.ln1_w - base); o.ln1_b = (size_t)(P.ln1_b - base);
    o.qkv_w = (size_t)(P.qkv_w - base); o.qkv_b = P.qkv_b ? (size_t)(P.qkv_b - base) : (size_t)-1;
    o.proj_w = (size_t)(P.proj_w - base); o.proj_b = (size_t)(P.proj_b - base);
    o.ln2_w = (size_t)(P.ln2_w - base); o.ln2_b = (size_t)(P.ln2_b - base);
    o.fc1_w = (size_t)(P.fc1_w - base); o.fc1_b = (size_t)(P.fc1_b - base);
    o.fc2_w = (size_t)(P.fc2_w - base); o.fc2_b = (size_t)(P.fc2_b - base);
    return o;
}

#ifdef PF_CUDA_EMULATE
#define PFC_CHECK(call) (call)
static pf_status pfc_set_device(const pfc_dev *d) { (void)d; return PF_OK; }
/* an emulated device has 4 GiB, so "out of device memory" happens as on a
   GPU; each block (256-byte aligned) keeps its size in front of it and starts as NaN bytes
   (a GPU's allocations are zeroed, which would hide a read of memory that
   nothing wrote) */
#define PFC_EMU_MEMORY ((size_t)4 << 30)
static size_t pfc_emu_used[64];
static pf_status pfc_alloc(const pfc_dev *d, void **p, size_t bytes) {
    size_t *used = &pfc_emu_used[d->id & 63];
    char *blk;
    *p = NULL;
    if (bytes > PFC_EMU_MEMORY - *used)
        return pf_fail(PF_ERR_NOMEM, "GPU %d (emulated): out of device memory: %zu MiB more needed, %zu of %zu MiB free",
                       d->id, bytes >> 20, (PFC_EMU_MEMORY - *used) >> 20, PFC_EMU_MEMORY >> 20);
    if (!(blk = (char *)aligned_alloc(256, (bytes + 256 + 255) & ~(size_t)255))) /* (aligned as cudaMalloc's) */
        return pf_fail(PF_ERR_NOMEM, "GPU %d (emulated): out of host memory for %zu bytes", d->id, bytes);
    memset(blk + 256, 0xff, bytes); /* NaN (and -1) until written: a read of memory nothing wrote shows in the results */
    memcpy(blk, &bytes, sizeof bytes);
    *used += bytes;
    *p = blk + 256;
    return PF_OK;
}
static void pfc_release(const pfc_dev *d, void *p) {
    size_t bytes;
    if (!p) return;
    memcpy(&bytes, (char *)p - 256, sizeof bytes);
    pfc_emu_used[d->id & 63] -= bytes;
    free((char *)p - 256);
}
/* a copy between host and device, or waiting for the device, while a graph
   is captured: refused, as by a GPU (copies from pageable host memory and
   synchronisation are not allowed in stream capture) */
static pf_status pfc_emu_capturing(const pfc_dev *d, const char *what) {
    return pf_fail(PF_ERR_IO, "GPU %d (emulated): %s while capturing a CUDA graph: not allowed on a GPU", d->id, what);
}
static pf_status pfc_h2d(const pfc_dev *d, void *dst, const void *src, size_t bytes) {
    if (d->rec) return pfc_emu_capturing(d, "a copy to the device");
    if (bytes) memcpy(dst, src, bytes);
    return PF_OK;
}
static pf_status pfc_d2h(const pfc_dev *d, void *dst, const void *src, size_t bytes) {
    if (d->rec) return pfc_emu_capturing(d, "a copy to the host");
    if (bytes) memcpy(dst, src, bytes);
    return PF_OK;
}
static pf_status pfc_sync(const pfc_dev *d) { return d->rec ? pfc_emu_capturing(d, "cudaStreamSynchronize") : PF_OK; }
/* fault injection, to test how a fault is reported: the n-th launch after
   pf_cuda_emu_fault(n) fails as a kernel fault would (not one recorded into
   a graph: replays run as recorded) */
static unsigned long long pfc_emu_fault_in;
extern "C" void pf_cuda_emu_fault(unsigned long long n) { pfc_emu_fault_in = n; }
static void pfc_after_launch(const pfc_dev *d, const char *what, int line) {
    if (d->rec || !pfc_emu_fault_in || --pfc_emu_fault_in) return;
    if (d->fault) return;
    d->fault = 700; /* (cudaErrorIllegalAddress) */
    d->fault_line = d->check ? line : 0;
    d->fault_what = what;
}
/* a launch: run now, or recorded (with the values it captured) when a graph
   is being captured, to run when the graph is replayed */
static pf_status pfc_emu_launch(const pfc_dev *d, const std::function<pf_status()> &run) {
    if (!d->rec) return run();
    d->rec->push_back(run);
    return PF_OK;
}
template <class F> static void pfc_for_at(int line, const pfc_dev *d, size_t n, F f) {
    if (!n) return;
    d->launches++;
    pfc_emu_launch(d, [=]() {
        long long i, nn = (long long)n;
#pragma omp parallel for schedule(static)
        for (i = 0; i < nn; i++) f((size_t)i);
        return PF_OK;
    });
    pfc_after_launch(d, "the kernel (pfc_for)", line);
}
/* blocks of nthr threads with `smem` bytes of shared memory, each running
   its phases in order with a barrier after each: phase(block, thread, smem).
   Emulated: per block, every thread runs phase 1, then phase 2, ... As a
   race detector, blocks run a phase's threads in ascending and descending
   order by turns (block b of the n-th block launch run descending when
   b + n is odd, so a single-block kernel runs both ways over its launches,
   replayed graphs included), and all of a block's shared memory
   (PFC_EMU_SMEM bytes, not only the requested ones) starts as NaN bytes: a thread that reads what another writes in the same
   phase (a missing barrier), or shared memory nothing wrote, changes the
   results, which the tests compare with the CPU. */
template <class F> static int pfc_emu_phase(size_t b, int desc, int nthr, float *sm, const F &f) {
    int t;
    if (desc)
        for (t = nthr - 1; t >= 0; t--) f(b, t, sm);
    else
        for (t = 0; t < nthr; t++) f(b, t, sm);
    return 0;
}
template <class... F> static void pfc_blocks_at(int line, const pfc_dev *d, size_t nblk, int nthr, size_t smem,
                                               F... phases) {
    if (!nblk) return;
    d->launches++;
    if (smem > PFC_EMU_SMEM) { /* as d->smem_max says, never */
        fprintf(stderr, "pfc_blocks: %zu bytes of shared memory per block (at most %d)\n", smem, PFC_EMU_SMEM);
        abort();
    }
    pfc_emu_launch(d, [=]() {
        long long b, nb = (long long)nblk;
        size_t flip = (size_t)(d->block_runs++ % 2);
#pragma omp parallel for schedule(static)
        for (b = 0; b < nb; b++) {
            alignas(128) static thread_local float sm[PFC_EMU_SMEM / 4]; /* aligned as a GPU's shared memory */
            memset(sm, 0xff, sizeof sm);
            int order[] = {pfc_emu_phase((size_t)b, (int)(((size_t)b + flip) % 2), nthr, sm, phases)...};
            (void)order;
        }
        return PF_OK;
    });
    pfc_after_launch(d, "the block kernel (pfc_blocks)", line);
}
#else
/* errors a kernel raises while it runs (they show at the next wait) */
static int pfc_kernel_fault(cudaError_t e) {
    return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorMisalignedAddress ||
           e == cudaErrorIllegalInstruction || e == cudaErrorInvalidPc || e == cudaErrorHardwareStackError ||
           e == cudaErrorAssert || e == cudaErrorLaunchTimeout;
}
static pf_status pfc_cuda_fail(cudaError_t e, const char *what, int dev) {
    if (e == cudaErrorMemoryAllocation)
        return pf_fail(PF_ERR_NOMEM, "GPU %d: out of device memory (%s)", dev, what);
    return pf_fail(PF_ERR_IO, "GPU %d: %s failed: %s%s", dev, what, cudaGetErrorString(e),
                   pfc_kernel_fault(e) ? " (a kernel faulted earlier; PF_CUDA_CHECK_LAUNCHES=1 names it)" : "");
}
/* a checked launch (d->check): its launch error and, outside graph
   capture, a wait for it, so that a fault is kept against the kernel that
   raised it (by its line in this file) rather than showing at a later
   wait; reported by pfc_launch_status */
static void pfc_after_launch(const pfc_dev *d, const char *what, int line) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    cudaError_t e;
    if (!d->check || d->fault) return;
    e = cudaGetLastError();
    if (e == cudaSuccess && cudaStreamIsCapturing(d->stream, &cs) == cudaSuccess && cs == cudaStreamCaptureStatusNone)
        e = cudaStreamSynchronize(d->stream);
    if (e == cudaSuccess) return;
    d->fault = (int)e;
    d->fault_line = line;
    d->fault_what = what;
}
#define PFC_CUDA(d, call) do { cudaError_t pfc__e = (call); \
    if (pfc__e != cudaSuccess) return pfc_cuda_fail(pfc__e, #call, (d)->id); } while (0)
static pf_status pfc_set_device(const pfc_dev *d) { PFC_CUDA(d, cudaSetDevice(d->id)); return PF_OK; }
static pf_status pfc_alloc(const pfc_dev *d, void **p, size_t bytes) {
    cudaError_t e;
    *p = NULL;
    e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        return pf_fail(PF_ERR_NOMEM, "GPU %d: out of device memory: %zu MiB more needed, %zu of %zu MiB free", d->id,
                       bytes >> 20, fr >> 20, tot >> 20);
    }
    return cudaMemsetAsync(*p, 0, bytes ? bytes : 1, d->stream) == cudaSuccess ? PF_OK
           : pf_fail(PF_ERR_IO, "GPU %d: cudaMemset failed", d->id);
}
static void pfc_release(const pfc_dev *d, void *p) { (void)d; if (p) cudaFree(p); }
static pf_status pfc_h2d(const pfc_dev *d, void *dst, const void *src, size_t bytes) {
    if (bytes) PFC_CUDA(d, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, d->stream));
    return PF_OK;
}
static pf_status pfc_d2h(const pfc_dev *d, void *dst, const void *src, size_t bytes) {
    if (bytes) {
        PFC_CUDA(d, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, d->stream));
        PFC_CUDA(d, cudaStreamSynchronize(d->stream));
    }
    return PF_OK;
}
static pf_status pfc_sync(const pfc_dev *d) { PFC_CUDA(d, cudaStreamSynchronize(d->stream)); return PF_OK; }
__global__ void pfc_probe_kernel(void) {} /* its attributes: what the code was built for */
template <class F> __global__ void pfc_for_kernel(size_t n, F f) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) f(i);
}
template <class F> static void pfc_for_at(int line, const pfc_dev *d, size_t n, F f) {
    if (!n) return;
    d->launches++;
    pfc_for_kernel<<<(unsigned)((n + 255) / 256), 256, 0, d->stream>>>(n, f);
    pfc_after_launch(d, "the kernel (pfc_for)", line);
}
/* blocks of nthr threads with `smem` bytes of shared memory, each running
   its phases in order with a barrier after each: phase(block, thread, smem) */
template <class... F> __global__ void pfc_blocks_kernel(F... phases) {
    extern __shared__ __align__(128) float pfc_smem[];
    int order[] = {(phases((size_t)blockIdx.x, (int)threadIdx.x, pfc_smem), __syncthreads(), 0)...};
    (void)order;
}
template <class... F> static void pfc_blocks_at(int line, const pfc_dev *d, size_t nblk, int nthr, size_t smem,
                                               F... phases) {
    if (!nblk) return;
    d->launches++;
    if (smem > 48 * 1024) { /* the device's maximum: a later launch must never lower what a captured graph needs */
        cudaError_t e = cudaFuncSetAttribute(pfc_blocks_kernel<F...>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)d->smem_max);
        if (e != cudaSuccess && !d->attr_err) d->attr_err = (int)e;
    }
    pfc_blocks_kernel<<<(unsigned)nblk, nthr, smem, d->stream>>>(phases...);
    pfc_after_launch(d, "the block kernel (pfc_blocks)", line);
}
#endif
/* (the launchers take their call's line, which names the kernel in a fault) */
#define pfc_for(...) pfc_for_at(__LINE__, __VA_ARGS__)
#define pfc_blocks(...) pfc_blocks_at(__LINE__, __VA_ARGS__)

/* bf16: round to nearest even, as __float2bfloat16_rn (NaN kept NaN) */
PFC_HD static inline uint16_t pfc_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
PFC_HD static inline float pfc_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* a product rounded on its own (never fused into an FMA with what follows):
   the attention's forward and backward must compute the same scores */
PFC_HD static inline float pfc_mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

/* dropout: the header's masks (pf_dropout_kept, pf_dropout_key,
   pf_dropout_site), so both sides drop the same elements; the factor an
   element of the site with this key is multiplied by */
PFC_HD static inline float pfc_keep(uint64_t key, size_t i, float p) {
    return pf_dropout_kept(key, i, p) ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
}

/* bf16 mode: the bf16 twin of a GEMM operand, at the same offset: the
   weights' copy (wbf) or the twin its producer writes beside an activation
   (u1, atty, u2, g, patches); NULL when it has none */
static const uint16_t *pfc_twin_of(const pfc_dev *d, const float *p) {
    int i;
    if (!d->wbf) return NULL;
    if (p >= d->params && p < d->params + d->n_local) return d->wbf + (p - d->params);
    for (i = 0; i < d->n_twins; i++)
        if (p >= d->twins[i].f && p < d->twins[i].f + d->twins[i].n) return d->twins[i].b + (p - d->twins[i].f);
    return NULL;
}

/* C[M,N] (row-major, ldc) = beta C + op(A) op(B), `batch` times with element
   strides sA, sB, sC. In bf16 mode A and B are rounded to bf16 (the products
   accumulate in fp32): read from their twins, written by the kernels that
   produce them (Ab, Bb when given, else the weights' copy and the forward
   activations' twins). Twinned activations may hold no fp32 values at all
   (pfc_layers_forward). */
static pf_status pfc_gemm_bf_at(int line, pf_cuda *g, pfc_dev *d, int ta, int tb, int M, int N, int K, const float *A,
                                int lda, long long sA, const float *B, int ldb, long long sB, float *C, int ldc,
                                long long sC, int batch, int beta, const uint16_t *Ab, const uint16_t *Bb, uint16_t *Cb) {
    int bf = g->o.bf16;
    if (!bf) Ab = Bb = NULL;
    if (Cb && (!bf || beta)) return pf_fail(PF_ERR_ARG, "pf_cuda: a bf16 GEMM output needs bf16 mode and beta 0");
    if (bf && !Ab) Ab = pfc_twin_of(d, A);
    if (bf && !Bb) Bb = pfc_twin_of(d, B);
    if (M <= 0 || N <= 0 || batch <= 0) return PF_OK;
    if (bf && (!Ab || !Bb)) /* (every GEMM's operands have one: a new GEMM needs its producers to write it) */
        return pf_fail(PF_ERR_ARG, "pf_cuda: internal error: a bf16 GEMM operand (%dx%dx%d) has no bf16 copy", M, N, K);
    d->launches++; /* (one strided-batched call, whatever the batch of branches) */
#ifdef PF_CUDA_EMULATE
    pf_status st;
    (void)g;
    st = pfc_emu_launch(d, [=]() {
        int b;
        for (b = 0; b < batch; b++) {
            if (!bf) {
                pf_gemm(ta, tb, M, N, K, A + b * sA, lda, B + b * sB, ldb, C + b * sC, ldc, beta);
            } else { /* exact bf16 inputs, fp32 products */
                size_t na = ta ? (size_t)K * lda : (size_t)M * lda, nbb = tb ? (size_t)N * ldb : (size_t)K * ldb, i;
                float *fa = (float *)malloc(na * 4), *fb = (float *)malloc(nbb * 4);
                if (!fa || !fb) { free(fa); free(fb); return pf_fail(PF_ERR_NOMEM, "emulated bf16 GEMM: out of memory"); }
                float *fc = Cb ? (float *)malloc((size_t)M * N * 4) : NULL;
                if (Cb && !fc) { free(fa); free(fb); return pf_fail(PF_ERR_NOMEM, "emulated bf16 GEMM: out of memory"); }
                for (i = 0; i < na; i++) fa[i] = pfc_from_bf16(Ab[b * sA + (long long)i]);
                for (i = 0; i < nbb; i++) fb[i] = pfc_from_bf16(Bb[b * sB + (long long)i]);
                if (Cb) { /* fp32 sums, rounded once on the way out (as cuBLAS) */
                    int r, j;
                    pf_gemm(ta, tb, M, N, K, fa, lda, fb, ldb, fc, N, 0);
                    for (r = 0; r < M; r++)
                        for (j = 0; j < N; j++) Cb[b * sC + (long long)r * ldc + j] = pfc_to_bf16(fc[(size_t)r * N + j]);
                } else {
                    pf_gemm(ta, tb, M, N, K, fa, lda, fb, ldb, C + b * sC, ldc, beta);
                }
                free(fa); free(fb); free(fc);
            }
        }
        return PF_OK;
    });
    pfc_after_launch(d, "the GEMM (cuBLAS)", line);
    return st;
#else
    {
        const float one = 1.0f, fbeta = beta ? 1.0f : 0.0f;
        cublasStatus_t st;
        cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        cudaDataType_t ty = bf ? CUDA_R_16BF : CUDA_R_32F;
        const void *pa = bf ? (const void *)Ab : (const void *)A, *pb = bf ? (const void *)Bb : (const void *)B;
        /* row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T */
        st = cublasGemmStridedBatchedEx(d->blas, opB, opA, N, M, K, &one, pb, ty, ldb, sB, pa, ty, lda, sA, &fbeta,
                                        Cb ? (void *)Cb : (void *)C, Cb ? CUDA_R_16BF : CUDA_R_32F, ldc, sC, batch,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS)
            return pf_fail(PF_ERR_IO, "GPU %d: cuBLAS GEMM %dx%dx%d (batch %d) at line %d of paraformer_cuda.cu failed: %s",
                           d->id, M, N, K, batch, line, cublasGetStatusString(st));
        pfc_after_launch(d, "the GEMM (cuBLAS)", line);
    }
#endif
    return PF_OK;
}

/* (without twins named: those pfc_twin_of finds) */
static pf_status pfc_gemm_at(int line, pf_cuda *g, pfc_dev *d, int ta, int tb, int M, int N, int K, const float *A,
                             int lda, long long sA, const float *B, int ldb, long long sB, float *C, int ldc,
                             long long sC, int batch, int beta) {
    return pfc_gemm_bf_at(line, g, d, ta, tb, M, N, K, A, lda, sA, B, ldb, sB, C, ldc, sC, batch, beta, NULL, NULL, NULL);
}
#define pfc_gemm_bf(...) pfc_gemm_bf_at(__LINE__, __VA_ARGS__)
#define pfc_gemm(...) pfc_gemm_at(__LINE__, __VA_ARGS__)

/* Collectives among the devices of this process (and, through NCCL, of the
   other processes). Emulated: sums in rank order over the local devices. */
enum { PFC_GROUP = 0, PFC_POS = 1 };
static void pfc_note(pf_cuda *g, int op, size_t count, const char *what) {
    if (g->n_trace < 16) {
        pf_collective *c = &g->trace[g->n_trace++];
        c->op = op;
        c->root = op == PF_COLL_ALLREDUCE ? -1 : 0;
        c->count = count;
        c->what = what;
    }
}
static pf_status pfc_broadcast(pf_cuda *g, int which, float **bufs, size_t count, const char *what) {
    int i;
    pfc_note(g, PF_COLL_BROADCAST, count, what);
#ifdef PF_CUDA_EMULATE
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        int j;
        if (which == PFC_GROUP && d->pos != 0) {
            for (j = 0; j < g->ndev; j++)
                if (g->dev[j].replica == d->replica && g->dev[j].pos == 0) memcpy(bufs[i], bufs[j], count * 4);
        }
    }
    return PF_OK;
#else
    ncclResult_t r;
    if ((r = ncclGroupStart()) != ncclSuccess) goto fail;
    for (i = 0; i < g->ndev; i++)
        if ((r = ncclBroadcast(bufs[i], bufs[i], count, ncclFloat, 0, which == PFC_GROUP ? g->dev[i].group_comm
                                                                                           : g->dev[i].pos_comm,
                               g->dev[i].stream)) != ncclSuccess) {
            ncclGroupEnd();
            goto fail;
        }
    if ((r = ncclGroupEnd()) != ncclSuccess) goto fail;
    return PF_OK;
fail:
    return pf_fail(PF_ERR_IO, "NCCL broadcast of %zu floats failed: %s", count, ncclGetErrorString(r));
#endif
}
/* sum of bufs over the group onto position 0 (reduce), or onto every member
   of the communicator (all = 1, all-reduce) */
static pf_status pfc_reduce(pf_cuda *g, int which, float **bufs, const size_t *counts, int all, const char *what) {
    int i;
    pfc_note(g, all ? PF_COLL_ALLREDUCE : PF_COLL_REDUCE, counts[0], what);
#ifdef PF_CUDA_EMULATE
    int key;
    for (key = 0; key < PFC_MAX_DEV; key++) { /* each communicator: same replica (group) or same pos */
        int members[PFC_MAX_DEV], n = 0, j;
        size_t e;
        for (j = 0; j < g->ndev; j++)
            if ((which == PFC_GROUP ? g->dev[j].replica : g->dev[j].pos) == key) members[n++] = j;
        if (n < 2) continue;
        /* members are in rank order: position (group) or replica (pos) */
        for (e = 0; e < counts[members[0]]; e++) {
            float s = bufs[members[0]][e];
            for (j = 1; j < n; j++) s += bufs[members[j]][e];
            bufs[members[0]][e] = s;
            if (all) for (j = 1; j < n; j++) bufs[members[j]][e] = s;
        }
    }
    (void)i;
    return PF_OK;
#else
    ncclResult_t r;
    if ((r = ncclGroupStart()) != ncclSuccess) goto fail;
    for (i = 0; i < g->ndev; i++) {
        ncclComm_t c = which == PFC_GROUP ? g->dev[i].group_comm : g->dev[i].pos_comm;
        r = all ? ncclAllReduce(bufs[i], bufs[i], counts[i], ncclFloat, ncclSum, c, g->dev[i].stream)
                : ncclReduce(bufs[i], bufs[i], counts[i], ncclFloat, ncclSum, 0, c, g->dev[i].stream);
        if (r != ncclSuccess) { ncclGroupEnd(); goto fail; }
    }
    if ((r = ncclGroupEnd()) != ncclSuccess) goto fail;
    return PF_OK;
fail:
    return pf_fail(PF_ERR_IO, "NCCL %s of %zu floats failed: %s", all ? "all-reduce" : "reduce", counts[0],
                   ncclGetErrorString(r));
#endif
}

/* ---------------------------------------------------------------------- */
/* kernels shared by the passes: column sums, LayerNorm, attention (lambdas
   run by pfc_for, an element per thread, or pfc_blocks, phases per block) */

/* Column sums out[br * ostride + k] = sum over the rows n of branch br of
   val(n, k), k < C: first sums over chunks of PFC_CHUNK rows (threads over
   branch x chunk x column, so neighbouring threads read neighbouring
   columns), then over the chunks, in a fixed order (deterministic: chunk c
   goes to slice c mod 16, each slice sums in order, then the slices). The
   partial sums need nbr * ceil(rows_per_branch / PFC_CHUNK) * C floats of
   d->colpart (twice that with a second output: val returns both values of
   a row and column, .a for out0 and .b for out1). */
#define PFC_CHUNK 64
struct pfc_f2 {
    float a, b;
};
/* the second pass of the column sums: out0 (and out1, out2) from the
   partial sums in d->colpart, [nout][nbr][nch][C]: a block per (output,
   branch, 32 columns) sums 16 slices of the chunks, then the slices */
static void pfc_colsums_finish(pfc_dev *d, float *out0, float *out1, float *out2, size_t ostride, int nbr, size_t nch,
                               int C) {
    const size_t np = (size_t)nbr * nch * C;
    const int nout = out2 ? 3 : out1 ? 2 : 1, ncg = (C + 31) / 32;
    const float *part = d->colpart;
    pfc_blocks(d, (size_t)nout * nbr * ncg, 512, 4 * 16 * 33,
        PFC_LAMBDA(size_t blk, int tid, float *sm) {
            const size_t o = blk / ((size_t)nbr * ncg), br = blk / ncg % nbr, k = (blk % ncg) * 32 + tid % 32;
            const float *pp = part + o * np;
            size_t ch;
            float s = 0;
            if (k < (size_t)C)
                for (ch = (size_t)(tid / 32); ch < nch; ch += 16) s += pp[(br * nch + ch) * C + k];
            sm[tid / 32 * 33 + tid % 32] = s;
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) {
            const size_t o = blk / ((size_t)nbr * ncg), br = blk / ncg % nbr, k = (blk % ncg) * 32 + tid;
            float s = 0;
            int sl;
            if (tid >= 32 || k >= (size_t)C) return;
            for (sl = 0; sl < 16; sl++) s += sm[sl * 33 + tid];
            (o == 2 ? out2 : o ? out1 : out0)[br * ostride + k] = s;
        });
}

template <class V>
static void pfc_colsums(pfc_dev *d, float *out0, float *out1, size_t ostride, int nbr, size_t rows_per_branch, int C,
                        V val) {
    const size_t nch = (rows_per_branch + PFC_CHUNK - 1) / PFC_CHUNK, np = (size_t)nbr * nch * C;
    const int nout = out1 ? 2 : 1;
    float *part = d->colpart; /* [nout][nbr][nch][C] */
    pfc_for(d, np, PFC_LAMBDA(size_t i) {
        size_t k = i % C, ch = i / C % nch, br = i / C / nch;
        size_t n = br * rows_per_branch + ch * PFC_CHUNK, end = br * rows_per_branch + rows_per_branch;
        float s0 = 0, s1 = 0;
        if (end > n + PFC_CHUNK) end = n + PFC_CHUNK;
        for (; n < end; n++) {
            pfc_f2 v = val(n, (int)k);
            s0 += v.a;
            s1 += v.b;
        }
        part[i] = s0;
        if (nout == 2) part[np + i] = s1;
    });
    pfc_colsums_finish(d, out0, out1, NULL, ostride, nbr, nch, C);
}
/* LayerNorm over rows of width C; the weights of row r are those of branch
   r / rows_per_branch (stride bstride), its input row r % rows_per_branch of
   that branch's input (stride in_bstride: rows_per_branch * C, or 0 when the
   branches share one input, as the first layer shares X0) */
#define PFC_LN_ROWS 8 /* rows per block, 32 threads each */
/* (pre: when has_pre, pre(i) first computes and stores input element i =
   row * C + column of the block's rows: an element-wise epilogue fused into
   the LayerNorm of its output, one launch and one pass less; post1, post2:
   two more phases (block, thread, shared memory) on the block's output
   rows, R = PFC_LN_ROWS of them from row block R) */
template <class F, class P1, class P2>
static void pfc_layernorm_fwd_post(pfc_dev *d, float *out, uint16_t *outb, float *mean, float *rstd, const float *inp,
                                   size_t in_bstride, const float *w, const float *b, size_t rows, int C,
                                   size_t rows_per_branch, size_t bstride, int has_pre, F pre, P1 post1, P2 post2) {
    /* shared memory: partial sums [R][33], mean [R], rstd [R] */
    const int R = PFC_LN_ROWS;
    pfc_blocks(d, (rows + R - 1) / R, 32 * R, 4 * (33 * R + 2 * R),
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* the input, when an epilogue makes it */
            const size_t r = blk * R + tid / 32;
            int i;
            (void)sm;
            if (!has_pre || r >= rows) return;
            for (i = tid % 32; i < C; i += 32) pre(r * C + i);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* partial sums of x */
            const size_t r = blk * R + tid / 32;
            const float *x = inp + r / rows_per_branch * in_bstride + (r % rows_per_branch) * C;
            float s = 0;
            int i;
            if (r >= rows) return;
            for (i = tid % 32; i < C; i += 32) s += x[i];
            sm[tid / 32 * 33 + tid % 32] = s;
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* mean */
            float s = 0;
            int t;
            if (tid >= R || blk * R + tid >= rows) return;
            for (t = 0; t < 32; t++) s += sm[tid * 33 + t];
            sm[33 * R + tid] = s / (float)C;
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* partial sums of (x - mean)^2 */
            const size_t r = blk * R + tid / 32;
            const float *x = inp + r / rows_per_branch * in_bstride + (r % rows_per_branch) * C;
            float s = 0, mu;
            int i;
            if (r >= rows) return;
            mu = sm[33 * R + tid / 32];
            for (i = tid % 32; i < C; i += 32) s += (x[i] - mu) * (x[i] - mu);
            sm[tid / 32 * 33 + tid % 32] = s;
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* 1 / standard deviation */
            const size_t r = blk * R + tid;
            float s = 0;
            int t;
            if (tid >= R || r >= rows) return;
            for (t = 0; t < 32; t++) s += sm[tid * 33 + t];
            sm[34 * R + tid] = 1.0f / sqrtf(s / (float)C + 1e-5f);
            mean[r] = sm[33 * R + tid];
            rstd[r] = sm[34 * R + tid];
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* y = (x - mean) rstd w + b */
            const size_t r = blk * R + tid / 32, br = r / rows_per_branch;
            const float *x = inp + br * in_bstride + (r % rows_per_branch) * C;
            const float *ww = w + br * bstride, *bb = b + br * bstride;
            float *y = out ? out + r * C : NULL, mu, rs;
            int i;
            if (r >= rows) return;
            mu = sm[33 * R + tid / 32], rs = sm[34 * R + tid / 32];
            for (i = tid % 32; i < C; i += 32) {
                const float v = (x[i] - mu) * rs * ww[i] + bb[i];
                if (out) y[i] = v;
                if (outb) outb[r * C + i] = pfc_to_bf16(v);
            }
        },
        post1, post2);
}
template <class F>
static void pfc_layernorm_fwd_pre(pfc_dev *d, float *out, uint16_t *outb, float *mean, float *rstd, const float *inp,
                                  size_t in_bstride, const float *w, const float *b, size_t rows, int C,
                                  size_t rows_per_branch, size_t bstride, int has_pre, F pre) {
    pfc_layernorm_fwd_post(d, out, outb, mean, rstd, inp, in_bstride, w, b, rows, C, rows_per_branch, bstride, has_pre,
                           pre, PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; (void)tid; (void)sm; },
                           PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; (void)tid; (void)sm; });
}
static void pfc_layernorm_fwd(pfc_dev *d, float *out, uint16_t *outb, float *mean, float *rstd, const float *inp,
                              size_t in_bstride, const float *w, const float *b, size_t rows, int C,
                              size_t rows_per_branch, size_t bstride) {
    pfc_layernorm_fwd_pre(d, out, outb, mean, rstd, inp, in_bstride, w, b, rows, C, rows_per_branch, bstride, 0,
                          PFC_LAMBDA(size_t i) { (void)i; });
}
static void pfc_colsum(pfc_dev *d, float *db, const float *dout, int nbr, size_t rows_per_branch, int C,
                       size_t bstride);
/* dinp = LN backward of dout (bf16: doutb when not NULL) (+ extra, when not NULL, added to dout first),
   plus res when res is not NULL (the residual's gradient); dw/db: column
   sums per branch of g xhat and g (g = dout + extra), and with dsum of
   dinp itself (a bias gradient that reads dinp), each block summing its
   rows (blocks never straddle branches) into d->colpart and
   pfc_colsums_finish adding the blocks: the inputs are read once. (For
   widths whose per-block rows would not fit in 48 KB of shared memory:
   column-sum passes afterwards.) */
static void pfc_layernorm_bwd(pfc_dev *d, float *dinp, uint16_t *dinpb, float *dw, float *db, float *dsum,
                              const float *dout, const uint16_t *doutb, const float *extra, const float *res, const float *inp,
                              size_t in_bstride, const float *w, const float *mean, const float *rstd,
                              size_t rows_per_branch, int C, size_t bstride, int nbr) {
    /* shared memory: partial sums of g w and g w xhat [2][R][33], then g xhat, g (and dinp) [2 | 3][R][C] */
    const int R = PFC_LN_ROWS, NT = 32 * R, nout = dsum ? 3 : 2;
    const size_t bpb = (rows_per_branch + R - 1) / R, np = (size_t)nbr * bpb * C; /* blocks per branch */
    const int fused = 4 * (66 * R + nout * (size_t)R * C) <= 48 * 1024;
    float *part = d->colpart;
    pfc_blocks(d, (size_t)nbr * bpb, NT, 4 * (66 * R + (fused ? nout * (size_t)R * C : 0)),
        PFC_LAMBDA(size_t blk, int tid, float *sm) {
            const size_t br = blk / bpb, rr = (blk % bpb) * R + tid / 32, r = br * rows_per_branch + rr;
            const float *x = inp + br * in_bstride + rr * C, *dy = dout + r * C;
            const float *ex = extra ? extra + r * C : NULL, *ww = w + br * bstride;
            float mu, rs, s1 = 0, s2 = 0;
            int k;
            if (rr >= rows_per_branch) return;
            mu = mean[r], rs = rstd[r];
            for (k = tid % 32; k < C; k += 32) {
                const float dyk = doutb ? pfc_from_bf16(doutb[r * C + k]) : dy[k];
                float gk = (ex ? dyk + ex[k] : dyk) * ww[k];
                s1 += gk;
                s2 += gk * (x[k] - mu) * rs;
            }
            sm[tid / 32 * 33 + tid % 32] = s1;
            sm[(R + tid / 32) * 33 + tid % 32] = s2;
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) {
            float s1 = 0, s2 = 0;
            int t;
            if (tid >= R || (blk % bpb) * R + tid >= rows_per_branch) return;
            for (t = 0; t < 32; t++) s1 += sm[tid * 33 + t], s2 += sm[(R + tid) * 33 + t];
            sm[tid * 33] = s1 / (float)C;
            sm[(R + tid) * 33] = s2 / (float)C;
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* dx; g xhat and g kept for the column sums */
            const size_t br = blk / bpb, rr = (blk % bpb) * R + tid / 32, r = br * rows_per_branch + rr;
            const float *x = inp + br * in_bstride + rr * C, *dy = dout + r * C;
            const float *ex = extra ? extra + r * C : NULL, *ww = w + br * bstride;
            float *dx = dinp + r * C, mu, rs, s1, s2;
            float *ga = sm + 66 * R + (size_t)(tid / 32) * C, *gb = ga + (size_t)R * C;
            const float *rr_ = res ? res + r * C : NULL;
            int k;
            if (rr >= rows_per_branch) return;
            mu = mean[r], rs = rstd[r], s1 = sm[tid / 32 * 33], s2 = sm[(R + tid / 32) * 33];
            for (k = tid % 32; k < C; k += 32) {
                const float dyk = doutb ? pfc_from_bf16(doutb[r * C + k]) : dy[k];
                const float g = ex ? dyk + ex[k] : dyk, xh = (x[k] - mu) * rs;
                float v = (g * ww[k] - s1 - xh * s2) * rs;
                dx[k] = rr_ ? rr_[k] + v : v;
                if (dinpb) dinpb[r * C + k] = pfc_to_bf16(dx[k]);
                if (!fused) continue;
                ga[k] = g * xh;
                gb[k] = g;
                if (nout == 3) gb[(size_t)R * C + k] = dx[k];
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* the block's column sums, its rows in order */
            const size_t br = blk / bpb, ch = blk % bpb, r0 = ch * R;
            const int nr = rows_per_branch - r0 < (size_t)R ? (int)(rows_per_branch - r0) : R;
            const float *ga = sm + 66 * R;
            int k, i, o;
            if (!fused) return;
            for (o = 0; o < nout; o++)
                for (k = tid; k < C; k += NT) {
                    float s = 0;
                    for (i = 0; i < nr; i++) s += ga[((size_t)o * R + i) * C + k];
                    part[o * np + (br * bpb + ch) * C + k] = s;
                }
        });
    if (fused) {
        pfc_colsums_finish(d, dw, db, dsum, bstride, nbr, bpb, C);
        return;
    }
    pfc_colsums(d, dw, db, bstride, nbr, rows_per_branch, C, PFC_LAMBDA(size_t n, int k) {
        const float dyk = doutb ? pfc_from_bf16(doutb[n * C + k]) : dout[n * C + k];
        const float gk = extra ? dyk + extra[n * C + k] : dyk;
        pfc_f2 v;
        v.a = gk * ((inp[n / rows_per_branch * in_bstride + (n % rows_per_branch) * C + k] - mean[n]) * rstd[n]);
        v.b = gk;
        return v;
    });
    if (dsum) pfc_colsum(d, dsum, dinp, nbr, rows_per_branch, C, bstride);
}
/* out[r, :] += bias of r's branch */
static void pfc_add_bias(pfc_dev *d, float *out, const float *bias, size_t rows, int C, size_t rows_per_branch,
                         size_t bstride) {
    pfc_for(d, rows * C, PFC_LAMBDA(size_t i) {
        size_t r = i / C;
        out[i] += bias[(r / rows_per_branch) * bstride + i % C];
    });
}
/* db (per branch) = column sums of dout */
static void pfc_colsum(pfc_dev *d, float *db, const float *dout, int nbr, size_t rows_per_branch, int C,
                       size_t bstride) {
    pfc_colsums(d, db, NULL, bstride, nbr, rows_per_branch, C, PFC_LAMBDA(size_t n, int k) {
        pfc_f2 v;
        v.a = dout[n * C + k], v.b = 0.0f;
        return v;
    });
}

/* Block-wide products over shared memory, for the attention kernels: each
   of the NT threads takes tiles of outputs so that one value read from
   shared memory feeds several multiply-adds; each output is one thread's
   sum over the inner index in order (deterministic).

   pfc_tile_abt: C[i][j] = scale * sum_e A[i][e] B[j][e], i < I, j < J: 2 x 4
   tiles, rows {ip, ip + NI}, columns {jq + r NJ} (neighbouring threads read
   neighbouring rows of B: with rows padded to an odd length, different
   banks). */
PFC_HD static inline void pfc_tile_abt(int tid, int NT, float *C, int ldc, const float *A, int lda, const float *B,
                                       int ldb, int I, int J, int E, float scale) {
    const int NI = (I + 1) / 2, NJ = (J + 3) / 4;
    int t, e, r, c;
    for (t = tid; t < NI * NJ; t += NT) {
        const int ip = t / NJ, jq = t % NJ;
        const int i1 = ip + NI < I ? ip + NI : ip;
        int j[4];
        float acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
        for (c = 0; c < 4; c++) j[c] = jq + c * NJ < J ? jq + c * NJ : jq;
        for (e = 0; e < E; e++) {
            const float a0 = A[ip * lda + e], a1 = A[i1 * lda + e];
            for (c = 0; c < 4; c++) {
                const float b = B[j[c] * ldb + e];
                acc[0][c] += a0 * b;
                acc[1][c] += a1 * b;
            }
        }
        for (r = 0; r < 2; r++) {
            if (r && ip + NI >= I) break;
            for (c = 0; c < 4; c++)
                if (jq + c * NJ < J) C[(r ? i1 : ip) * ldc + j[c]] = acc[r][c] * scale;
        }
    }
}
/* pfc_tile_aw: Y[i][e] = sum_j W(i, j) X[j][e], i < I, e < E, j < J, with
   W(i, j) = W[i][j] (wt 0) or W[j][i] (wt 1): 4 x 2 tiles, rows {ip + r NI},
   columns {eq, eq + NE} (neighbouring threads: neighbouring columns). Y may
   be global memory (row stride ldy). */
PFC_HD static inline void pfc_tile_aw(int tid, int NT, float *Y, uint16_t *Yb, size_t ldy, const float *W, int ldw, int wt,
                                      const float *X, int ldx, int I, int E, int J) {
    const int NI = (I + 3) / 4, NE = (E + 1) / 2;
    int t, j, r;
    for (t = tid; t < NI * NE; t += NT) {
        const int ip = t / NE, eq = t % NE, e1 = eq + NE < E ? eq + NE : eq;
        int i[4];
        float acc[4][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
        for (r = 0; r < 4; r++) i[r] = ip + r * NI < I ? ip + r * NI : ip;
        for (j = 0; j < J; j++) {
            const float x0 = X[j * ldx + eq], x1 = X[j * ldx + e1];
            for (r = 0; r < 4; r++) {
                const float w = wt ? W[j * ldw + i[r]] : W[i[r] * ldw + j];
                acc[r][0] += w * x0;
                acc[r][1] += w * x1;
            }
        }
        for (r = 0; r < 4; r++) {
            if (ip + r * NI >= I) break;
            Y[i[r] * ldy + eq] = acc[r][0];
            if (eq + NE < E) Y[i[r] * ldy + e1] = acc[r][1];
            if (Yb) {
                Yb[i[r] * ldy + eq] = pfc_to_bf16(acc[r][0]);
                if (eq + NE < E) Yb[i[r] * ldy + e1] = pfc_to_bf16(acc[r][1]);
            }
        }
    }
}

/* Tensor-core tiles, for the bf16 attention: C (16 x 16 floats, row stride
   ldc) = sum over ks steps k of A_k B_k, A_k (16 x 16 bf16) at A + k as and
   B_k at B + k bs, with A laid out row-major (AT 0: element (i, k) at
   A[i lda + k]) or column-major (AT 1: at A[k lda + i]), B likewise (BT 0:
   (k, j) at B[k ldb + j]; BT 1: at B[j ldb + k]). Products of bf16 values
   are exact in fp32 and summed in fp32. All 32 threads of a warp call it
   with the same arguments (nvcuda::wmma); pointers must be 32-byte aligned,
   lda, ldb multiples of 8 and ldc of 4 (the emulated build checks this and
   has lane 0 compute the warp's tile). */
#ifdef PF_CUDA_EMULATE
#define PFC_DEV
typedef uint16_t pfc_bf;
static inline pfc_bf pfc_bf_of(float f) { return pfc_to_bf16(f); }
static inline float pfc_bf_val(pfc_bf h) { return pfc_from_bf16(h); }
static void pfc_mma_check(const void *p, int ld, int mult, const char *what) {
    if ((uintptr_t)p % 32 || ld % mult) {
        fprintf(stderr, "pfc_mma16: %s %p with row stride %d breaks wmma's rules (32-byte address, stride of %d)\n",
                what, p, ld, mult);
        abort();
    }
}
template <int AT, int BT>
static void pfc_mma16(float *C, int ldc, const pfc_bf *A, int lda, int as, const pfc_bf *B, int ldb, int bs, int ks,
                      int lane) {
    int i, j, k, kk;
    if (lane) return;
    pfc_mma_check(C, ldc, 4, "C");
    for (k = 0; k < ks; k++) {
        pfc_mma_check(A + k * as, lda, 8, "A");
        pfc_mma_check(B + k * bs, ldb, 8, "B");
    }
    for (i = 0; i < 16; i++)
        for (j = 0; j < 16; j++) {
            float s = 0;
            for (k = 0; k < ks; k++) {
                const pfc_bf *a = A + k * as, *b = B + k * bs;
                for (kk = 0; kk < 16; kk++)
                    s += pfc_bf_val(AT ? a[kk * lda + i] : a[i * lda + kk]) * pfc_bf_val(BT ? b[j * ldb + kk] : b[kk * ldb + j]);
            }
            C[i * ldc + j] = s;
        }
}
#else
#define PFC_DEV __device__
typedef __nv_bfloat16 pfc_bf;
__device__ static inline pfc_bf pfc_bf_of(float f) { return __float2bfloat16_rn(f); }
__device__ static inline float pfc_bf_val(pfc_bf h) { return __bfloat162float(h); }
template <int T> struct pfc_layout { typedef nvcuda::wmma::row_major type; };
template <> struct pfc_layout<1> { typedef nvcuda::wmma::col_major type; };
template <int AT, int BT>
__device__ static inline void pfc_mma16(float *C, int ldc, const pfc_bf *A, int lda, int as, const pfc_bf *B, int ldb,
                                        int bs, int ks, int lane) {
#if __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, typename pfc_layout<AT>::type> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, typename pfc_layout<BT>::type> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    int k;
    (void)lane;
    wmma::fill_fragment(acc, 0.0f);
    for (k = 0; k < ks; k++) {
        wmma::load_matrix_sync(fa, A + k * as, lda);
        wmma::load_matrix_sync(fb, B + k * bs, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(C, acc, ldc, wmma::mem_row_major);
#else
    (void)C; (void)ldc; (void)A; (void)lda; (void)as; (void)B; (void)ldb; (void)bs; (void)ks; (void)lane;
    __trap(); /* not reached: the tensor-core attention needs compute capability 8.0 (pf_cuda_create checks) */
#endif
}
#endif


/* C_r = A_r B for the rt (1 to 4) row tiles of a block: A_r = A + 16 r lda,
   16 x 16 ks bf16, row-major (shared memory); B 16 ks x 16 bf16,
   column-major (B[j ldb + k]; global memory), each of its fragments loaded
   once for all rt. Without epi (scratch NULL) C_r goes to C + 16 r ldc
   (fp32); with it, each C_r is staged in the warp's scratch (16 x 16
   floats, 32-byte aligned) and epi(r, i, j, value) runs on each element,
   the 256 divided among the lanes (emulated: lane 0 does the warp's
   work, as in pfc_mma16). */
#define PFC_MAX_RT 4
#ifdef PF_CUDA_EMULATE
template <class E>
static void pfc_mma_rows(int rt, float *C, int ldc, const pfc_bf *A, int lda, const pfc_bf *B, int ldb, int ks,
                         float *scratch, int lane, E epi) {
    int r, i, j, k;
    if (lane) return;
    if (C) pfc_mma_check(C, ldc, 4, "C");
    if (scratch) pfc_mma_check(scratch, 16, 4, "scratch");
    for (k = 0; k < ks; k++) {
        pfc_mma_check(B + k * 16, ldb, 8, "B");
        for (r = 0; r < rt; r++) pfc_mma_check(A + (size_t)r * 16 * lda + k * 16, lda, 8, "A");
    }
    for (r = 0; r < rt; r++) {
        const pfc_bf *a = A + (size_t)r * 16 * lda;
        for (i = 0; i < 16; i++)
            for (j = 0; j < 16; j++) {
                float s = 0;
                for (k = 0; k < 16 * ks; k++) s += pfc_bf_val(a[i * lda + k]) * pfc_bf_val(B[j * ldb + k]);
                if (scratch) scratch[i * 16 + j] = s;
                else C[(size_t)(r * 16 + i) * ldc + j] = s;
            }
        if (scratch)
            for (i = 0; i < 256; i++) epi(r, i / 16, i % 16, scratch[i]);
    }
}
#else
template <class E>
__device__ static inline void pfc_mma_rows(int rt, float *C, int ldc, const pfc_bf *A, int lda, const pfc_bf *B,
                                           int ldb, int ks, float *scratch, int lane, E epi) {
#if __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[PFC_MAX_RT];
    int k, r, e;
#pragma unroll
    for (r = 0; r < PFC_MAX_RT; r++) wmma::fill_fragment(acc[r], 0.0f);
    for (k = 0; k < ks; k++) {
        wmma::load_matrix_sync(fb, B + k * 16, ldb);
#pragma unroll
        for (r = 0; r < PFC_MAX_RT; r++)
            if (r < rt) {
                wmma::load_matrix_sync(fa, A + (size_t)r * 16 * lda + k * 16, lda);
                wmma::mma_sync(acc[r], fa, fb, acc[r]);
            }
    }
#pragma unroll
    for (r = 0; r < PFC_MAX_RT; r++)
        if (r < rt) {
            if (!scratch) {
                wmma::store_matrix_sync(C + (size_t)r * 16 * ldc, acc[r], ldc, wmma::mem_row_major);
            } else {
                wmma::store_matrix_sync(scratch, acc[r], 16, wmma::mem_row_major);
                __syncwarp();
                for (e = lane; e < 256; e += 32) epi(r, e / 16, e % 16, scratch[e]);
                __syncwarp(); /* (the next tile reuses the scratch) */
            }
        }
#else
    (void)rt; (void)C; (void)ldc; (void)A; (void)lda; (void)B; (void)ldb; (void)ks; (void)scratch; (void)lane; (void)epi;
    __trap(); /* not reached: the fused rows need the tensor-core attention, compute capability 8.0 */
#endif
}
#endif

/* Attention of nimg = branches x images (nper images per branch), H heads of
   width hd = D / H, over qkv rows [q | k | v] (width 3D), plus the qkv bias
   of the image's branch (bias + branch * bstride, when bias is not NULL):
   P = softmax(q k^T / sqrt(hd)) per (image, head), y = P v into atty (width
   D). P goes to att ([nimg][H][T][T]) when keep is set (training: the
   backward reads it).

   Fused (g->fused_att): a block of PFC_ATT_THREADS per (image, head, tile of
   query rows) keeps k, v, its queries and their scores in shared memory
   (rows padded to an odd length); one tile of all T rows when the pairs
   alone fill the GPU, else tiles of up to PFC_ATT_QROWS rows (batch 1). Otherwise, for sequences whose backward
   block would not fit: a thread per query row, with the bias added to qkv
   beforehand (pfc_layers_forward does). Every sum runs in a fixed order. */
#define PFC_ATT_THREADS 256
#define PFC_ATT_QROWS 32    /* with few (image, head) pairs: at most this many query rows per forward block */
#define PFC_ATT_MANY 1024   /* this many pairs fill a GPU: one block per pair, k and v loaded once */
static int pfc_att_tiles(const pf_cuda *g, int T, size_t pairs) {
    int n = pairs >= PFC_ATT_MANY ? 1 : (T + PFC_ATT_QROWS - 1) / PFC_ATT_QROWS;
    if (g->att_tiles) n = g->att_tiles < T ? g->att_tiles : T; /* opts.att_tiles (tests) */
    return n;
}
static size_t pfc_att_smem(int T, int hd, int backward, int tiles) {
    const size_t lq = (size_t)hd | 1, ls = (size_t)T | 1, qt = (size_t)(T + tiles - 1) / tiles;
    return 4 * (backward ? 4 * T * lq + 2 * T * ls + T : 2 * T * lq + qt * lq + qt * ls + qt);
}
/* bf16 attention on tensor cores (g->tc_att: bf16 mode, compute capability
   8.0 or later): the fused kernels' blocks and passes, with q, k, v, dy, P
   and dS rounded to bf16 in shared memory and the products as 16 x 16 tiles
   (pfc_mma16, a warp per output tile); softmax, dS and every sum of the
   scores in fp32. A training forward keeps each row's max and sum (in att:
   2 floats per row instead of T) and the backward recomputes P from q k^T
   with them, bit for bit, as flash attention does. T and hd are padded
   to multiples of 16 with zeros; rows of bf16 by 8 more elements, rows of
   floats by 4. Layout of a block's shared memory (byte offsets, each
   32-byte aligned): */
struct pfc_tcl {
    int Tp, Hp, QT, NQ, LB, LP, LF, LO; /* padded T, hd; query rows and tiles; row strides (bf16: LB, LP; float: LF, LO) */
    size_t k, v, q, dy, s, p, ds, r, red, total; /* k, v [Tp][LB], q [QT][LB], dy [Tp][LB], scores / output [QT][LF | LO] (float),
                                               P [QT][LP], dS [Tp][LP], row sums [QT] (float; backward:
                                               [3][Tp]: r, the forward's row max and sum); red: per row,
                                               32 partial maxima or sums (float; forward [2][QT][33]:
                                               the maxima, then the sums and the max; backward [Tp][33]) */
};
static size_t pfc_up32(size_t n) { return (n + 31) & ~(size_t)31; }
static pfc_tcl pfc_tc_layout(int T, int hd, int backward, int tiles) {
    pfc_tcl L;
    size_t o = 0;
    L.Tp = (T + 15) & ~15;
    L.Hp = (hd + 15) & ~15;
    L.QT = backward ? L.Tp : ((T + tiles - 1) / tiles + 15) & ~15;
    L.NQ = (T + L.QT - 1) / L.QT;
    L.LB = L.Hp + 8, L.LP = L.Tp + 8, L.LF = L.Tp + 4, L.LO = L.Hp + 4;
    L.k = o, o += pfc_up32((size_t)L.Tp * L.LB * 2);
    L.v = o, o += pfc_up32((size_t)L.Tp * L.LB * 2);
    L.q = o, o += pfc_up32((size_t)L.QT * L.LB * 2);
    L.dy = o, o += backward ? pfc_up32((size_t)L.Tp * L.LB * 2) : 0;
    L.s = o, o += pfc_up32((size_t)L.QT * (L.LF > L.LO ? L.LF : L.LO) * 4);
    L.p = o, o += pfc_up32((size_t)L.QT * L.LP * 2);
    L.ds = o, o += backward ? pfc_up32((size_t)L.Tp * L.LP * 2) : 0;
    L.r = o, o += pfc_up32((size_t)L.QT * 4 * (backward ? 3 : 1)); /* (backward: r, then the rows' max and sum) */
    L.red = o, o += pfc_up32((size_t)L.QT * 33 * 4 * (backward ? 1 : 2));
    L.total = o;
    return L;
}
#define PFC_BF(sm, off) ((pfc_bf *)((char *)(sm) + (off)))
#define PFC_FL(sm, off) ((float *)((char *)(sm) + (off)))
/* a block's k, v (all rows) and q (rows i0 .. i0 + QT) of one (image, head),
   with the bias (bq, may be NULL) added, as bf16, zero past T and hd; and dy
   (all rows) when given. src: the image's first qkv row (bf16, from the
   GEMM) at the head. */
PFC_DEV static inline void pfc_tc_load(const pfc_tcl &L, float *sm, int tid, const uint16_t *src, const float *bq,
                                       const uint16_t *dy_src, int T, int D, int hd, int i0) {
    const int Hp = L.Hp, LB = L.LB;
    pfc_bf *k = PFC_BF(sm, L.k), *v = PFC_BF(sm, L.v), *q = PFC_BF(sm, L.q), *dy = PFC_BF(sm, L.dy);
    int idx;
    for (idx = tid; idx < L.Tp * Hp; idx += PFC_ATT_THREADS) {
        const int t = idx / Hp, e = idx % Hp, ok = t < T && e < hd;
        const uint16_t *r = src + (size_t)t * 3 * D + e;
        k[t * LB + e] = pfc_bf_of(ok ? pfc_from_bf16(r[D]) + (bq ? bq[D + e] : 0.0f) : 0.0f);
        v[t * LB + e] = pfc_bf_of(ok ? pfc_from_bf16(r[2 * D]) + (bq ? bq[2 * D + e] : 0.0f) : 0.0f);
        if (dy_src) dy[t * LB + e] = pfc_bf_of(ok ? pfc_from_bf16(dy_src[(size_t)t * D + e]) : 0.0f); /* (exact) */
    }
    for (idx = tid; idx < L.QT * Hp; idx += PFC_ATT_THREADS) {
        const int t = i0 + idx / Hp, e = idx % Hp, ok = t < T && e < hd;
        q[idx / Hp * LB + e] = pfc_bf_of(ok ? pfc_from_bf16(src[(size_t)t * 3 * D + e]) + (bq ? bq[e] : 0.0f) : 0.0f);
    }
}

/* backward products over the padded T into the scores' space (a warp per
   16 x 16 tile): which 0: dq = dS k, 1: dk = dS^T q, 2: dv = P^T dy */
PFC_DEV static inline void pfc_tc_grad(const pfc_tcl &L, float *sm, int tid, int which) {
    const int nj = L.Hp / 16;
    int t;
    for (t = tid / 32; t < L.Tp / 16 * nj; t += PFC_ATT_THREADS / 32) {
        const int ti = t / nj, tj = t % nj;
        float *C = PFC_FL(sm, L.s) + ti * 16 * L.LO + tj * 16;
        if (which == 0)
            pfc_mma16<0, 0>(C, L.LO, PFC_BF(sm, L.ds) + ti * 16 * L.LP, L.LP, 16, PFC_BF(sm, L.k) + tj * 16, L.LB,
                            16 * L.LB, L.Tp / 16, tid % 32);
        else
            pfc_mma16<1, 0>(C, L.LO, PFC_BF(sm, which == 1 ? L.ds : L.p) + ti * 16, L.LP, 16 * L.LP,
                            PFC_BF(sm, which == 1 ? L.q : L.dy) + tj * 16, L.LB, 16 * L.LB, L.Tp / 16, tid % 32);
    }
}
/* the staged T x hd result of image img, head h into part `which` (q, k,
   v) of the qkv gradient, in bf16 only (dqkvb: its GEMMs read nothing
   else); with part (the qkv bias's gradient), its column sums over the T
   rows into part[img][which][h][hd] (pfc_colsums_finish adds them over the
   images) */
PFC_DEV static inline void pfc_tc_store(const pfc_tcl &L, const float *sm, int tid, uint16_t *dqkvb, float *part,
                                        size_t img, size_t h, int which, int T, int D, int hd) {
    const float *O = (const float *)((const char *)sm + L.s);
    const size_t off = img * T * 3 * D + which * D + h * hd;
    int idx, t;
    for (idx = tid; idx < T * hd; idx += PFC_ATT_THREADS) {
        const size_t o = off + (size_t)(idx / hd) * 3 * D + idx % hd;
        dqkvb[o] = pfc_to_bf16(O[idx / hd * L.LO + idx % hd]);
    }
    if (part)
        for (idx = tid; idx < hd; idx += PFC_ATT_THREADS) {
            float s = 0;
            for (t = 0; t < T; t++) s += O[t * L.LO + idx];
            part[img * 3 * D + which * D + h * hd + idx] = s;
        }
}

static void pfc_attention_fwd_tc(pf_cuda *g, pfc_dev *d, const uint16_t *qkv, const float *bias, size_t bstride,
                                 size_t nper, float *att, int keep, uint16_t *attyb, size_t nimg, int T, int D, int H) {
    const int hd = D / H, NT = PFC_ATT_THREADS;
    const pfc_tcl L = pfc_tc_layout(T, hd, 0, pfc_att_tiles(g, T, nimg * H));
    const int NQ = L.NQ, QT = L.QT;
    const float scale = 1.0f / sqrtf((float)hd);
    pfc_blocks(d, nimg * H * NQ, NT, L.total,
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* load */
            const size_t img = blk / NQ / H, h = blk / NQ % H;
            pfc_tc_load(L, sm, tid, qkv + img * T * 3 * D + h * hd, bias ? bias + img / nper * bstride + h * hd : NULL,
                        NULL, T, D, hd, (int)(blk % NQ) * QT);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* S = q k^T, a warp per 16 x 16 tile */
            const int nj = L.Tp / 16;
            int t;
            (void)blk;
            for (t = tid / 32; t < QT / 16 * nj; t += NT / 32)
                pfc_mma16<0, 1>(PFC_FL(sm, L.s) + t / nj * 16 * L.LF + t % nj * 16, L.LF,
                                PFC_BF(sm, L.q) + t / nj * 16 * L.LB, L.LB, 16, PFC_BF(sm, L.k) + t % nj * 16 * L.LB, L.LB,
                                16, L.Hp / 16, tid % 32);
        },
        /* softmax rows: 32 threads per row, each over the columns j = lane mod 32 */
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* s scale, and 32 partial maxima per row */
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            float *S = PFC_FL(sm, L.s), *pm = PFC_FL(sm, L.red);
            int idx, j;
            for (idx = tid; idx < nq * 32; idx += NT) {
                float *row = S + idx / 32 * L.LF, mx = -1e30f;
                for (j = idx % 32; j < T; j += 32) { row[j] = pfc_mul_rn(row[j], scale); if (row[j] > mx) mx = row[j]; }
                pm[idx / 32 * 33 + idx % 32] = mx;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* the row's max, exp(s scale - max), 32 partial sums */
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            float *S = PFC_FL(sm, L.s), *pm = PFC_FL(sm, L.red), *ps = pm + QT * 33;
            int idx, j, l;
            for (idx = tid; idx < nq * 32; idx += NT) {
                float *row = S + idx / 32 * L.LF, mx = pm[idx / 32 * 33], sum = 0;
                for (l = 1; l < 32; l++) mx = pm[idx / 32 * 33 + l] > mx ? pm[idx / 32 * 33 + l] : mx;
                for (j = idx % 32; j < T; j += 32) { row[j] = expf(row[j] - mx); sum += row[j]; }
                ps[idx / 32 * 33 + idx % 32] = sum;
                if (idx % 32 == 0) ps[idx / 32 * 33 + 32] = mx;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* the row sums (and with them the maxima, kept for a backward) */
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            const float *ps = PFC_FL(sm, L.red) + QT * 33;
            float *rsum = PFC_FL(sm, L.r), *stats = keep ? att + ((blk / NQ) * T + i0) * 2 : NULL;
            int i, l;
            for (i = tid; i < nq; i += NT) {
                float sum = 0;
                for (l = 0; l < 32; l++) sum += ps[i * 33 + l];
                rsum[i] = sum;
                if (stats) stats[2 * i] = ps[i * 33 + 32], stats[2 * i + 1] = sum;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* P = exp / sum, in bf16 for P v */
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            const float *S = PFC_FL(sm, L.s), *rsum = PFC_FL(sm, L.r);
            pfc_bf *P = PFC_BF(sm, L.p);
            int idx;
            for (idx = tid; idx < QT * L.Tp; idx += NT) {
                const int i = idx / L.Tp, j = idx % L.Tp, ok = i < nq && j < T;
                P[i * L.LP + j] = pfc_bf_of(ok ? S[i * L.LF + j] / rsum[i] : 0.0f);
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* y = P v (into the scores' space) */
            const int nj = L.Hp / 16;
            int t;
            (void)blk;
            for (t = tid / 32; t < QT / 16 * nj; t += NT / 32)
                pfc_mma16<0, 0>(PFC_FL(sm, L.s) + t / nj * 16 * L.LO + t % nj * 16, L.LO,
                                PFC_BF(sm, L.p) + t / nj * 16 * L.LP, L.LP, 16, PFC_BF(sm, L.v) + t % nj * 16, L.LB,
                                16 * L.LB, L.Tp / 16, tid % 32);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* store y */
            const size_t img = blk / NQ / H, h = blk / NQ % H;
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            const float *Y = PFC_FL(sm, L.s);
            int idx;
            for (idx = tid; idx < nq * hd; idx += NT) {
                const size_t o = (img * T + i0 + idx / hd) * D + h * hd + idx % hd;
                attyb[o] = pfc_to_bf16(Y[idx / hd * L.LO + idx % hd]); /* (only GEMMs read it) */
            }
        });
}

/* its backward: one block per (image, head); dP, dq, dk, dv as tiles, each
   output staged in the scores' space before it is stored (with part: the
   qkv bias's gradient summed over each image's rows as well, so dqkv needs
   no fp32 copy and no column-sum pass reads it) */
static void pfc_attention_bwd_tc(pfc_dev *d, const uint16_t *qkv, const float *bias, size_t bstride, size_t nper,
                                 const float *att, const uint16_t *datty, uint16_t *dqkvb, float *part,
                                 size_t nimg, int T, int D, int H) {
    const int hd = D / H, NT = PFC_ATT_THREADS;
    const pfc_tcl L = pfc_tc_layout(T, hd, 1, 1);
    const float scale = 1.0f / sqrtf((float)hd);
    pfc_blocks(d, nimg * H, NT, L.total,
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* load q, k, v (+ bias), dy, each row's max and sum */
            const size_t img = blk / H, h = blk % H;
            const float *stats = att + blk * T * 2;
            float *ml = PFC_FL(sm, L.r) + L.Tp;
            int idx;
            pfc_tc_load(L, sm, tid, qkv + img * T * 3 * D + h * hd, bias ? bias + img / nper * bstride + h * hd : NULL,
                        datty + img * T * D + h * hd, T, D, hd, 0);
            for (idx = tid; idx < 2 * T; idx += NT) ml[idx % 2 * L.Tp + idx / 2] = stats[idx];
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* S = q k^T, as in the forward */
            const int nj = L.Tp / 16;
            int t;
            (void)blk;
            for (t = tid / 32; t < nj * nj; t += NT / 32)
                pfc_mma16<0, 1>(PFC_FL(sm, L.s) + t / nj * 16 * L.LF + t % nj * 16, L.LF,
                                PFC_BF(sm, L.q) + t / nj * 16 * L.LB, L.LB, 16, PFC_BF(sm, L.k) + t % nj * 16 * L.LB, L.LB,
                                16, L.Hp / 16, tid % 32);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* P = exp(s scale - max) / sum: the forward's values, in bf16 */
            const float *S = PFC_FL(sm, L.s), *mx = PFC_FL(sm, L.r) + L.Tp, *sum = mx + L.Tp;
            pfc_bf *P = PFC_BF(sm, L.p);
            int idx;
            (void)blk;
            for (idx = tid; idx < L.Tp * L.Tp; idx += NT) {
                const int i = idx / L.Tp, j = idx % L.Tp;
                P[i * L.LP + j] = pfc_bf_of(i < T && j < T ? expf(pfc_mul_rn(S[i * L.LF + j], scale) - mx[i]) / sum[i] : 0.0f);
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* dP = dy v^T */
            const int nj = L.Tp / 16;
            int t;
            (void)blk;
            for (t = tid / 32; t < nj * nj; t += NT / 32)
                pfc_mma16<0, 1>(PFC_FL(sm, L.s) + t / nj * 16 * L.LF + t % nj * 16, L.LF,
                                PFC_BF(sm, L.dy) + t / nj * 16 * L.LB, L.LB, 16, PFC_BF(sm, L.v) + t % nj * 16 * L.LB,
                                L.LB, 16, L.Hp / 16, tid % 32);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* r_i = sum_j P_ij dP_ij: 32 partial sums per row */
            const float *dP = PFC_FL(sm, L.s);
            const pfc_bf *P = PFC_BF(sm, L.p);
            float *pr = PFC_FL(sm, L.red);
            int idx, j;
            (void)blk;
            for (idx = tid; idx < T * 32; idx += NT) {
                const int i = idx / 32;
                float s = 0;
                for (j = idx % 32; j < T; j += 32) s += pfc_bf_val(P[i * L.LP + j]) * dP[i * L.LF + j];
                pr[i * 33 + idx % 32] = s;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* r_i: the partial sums added */
            const float *pr = PFC_FL(sm, L.red);
            float *r = PFC_FL(sm, L.r);
            int i, l;
            (void)blk;
            for (i = tid; i < T; i += NT) {
                float s = 0;
                for (l = 0; l < 32; l++) s += pr[i * 33 + l];
                r[i] = s;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* dS = P (dP - r) scale, as bf16 */
            const float *dP = PFC_FL(sm, L.s), *r = PFC_FL(sm, L.r);
            const pfc_bf *P = PFC_BF(sm, L.p);
            pfc_bf *dS = PFC_BF(sm, L.ds);
            int idx;
            (void)blk;
            for (idx = tid; idx < L.Tp * L.Tp; idx += NT) {
                const int i = idx / L.Tp, j = idx % L.Tp;
                dS[i * L.LP + j] = pfc_bf_of(i < T && j < T ? pfc_bf_val(P[i * L.LP + j]) * (dP[i * L.LF + j] - r[i]) * scale : 0.0f);
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; pfc_tc_grad(L, sm, tid, 0); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { pfc_tc_store(L, sm, tid, dqkvb, part, blk / H, blk % H, 0, T, D, hd); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; pfc_tc_grad(L, sm, tid, 1); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { pfc_tc_store(L, sm, tid, dqkvb, part, blk / H, blk % H, 1, T, D, hd); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; pfc_tc_grad(L, sm, tid, 2); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { pfc_tc_store(L, sm, tid, dqkvb, part, blk / H, blk % H, 2, T, D, hd); });
}

static void pfc_attention_fwd(pf_cuda *g, pfc_dev *d, const float *qkv, const uint16_t *qkvb, const float *bias,
                              size_t bstride, size_t nper, float *att, int keep, float *atty, uint16_t *attyb,
                              size_t nimg, int T, int D, int H) {
    const int hd = D / H, NT = PFC_ATT_THREADS, LQ = hd | 1, LS = T | 1, NQ = pfc_att_tiles(g, T, nimg * H);
    const int QT = (T + NQ - 1) / NQ; /* query rows per tile; the last may have fewer */
    const float scale = 1.0f / sqrtf((float)hd);
    if (g->tc_att) {
        pfc_attention_fwd_tc(g, d, qkvb, bias, bstride, nper, att, keep, attyb, nimg, T, D, H);
        return;
    }
    if (!g->fused_att) {
        pfc_for(d, nimg * H * T, PFC_LAMBDA(size_t idx) { /* a thread per query row; att is its scratch */
            size_t i = idx % T, bh = idx / T, h = bh % H, img = bh / H;
            const float *base = qkv + img * T * 3 * D, *q = base + i * 3 * D + h * hd;
            float *a = att + (img * H + h) * T * T + i * T, *y = atty + (img * T + i) * D + h * hd, mx = -1e30f, sum = 0;
            float qv[PFC_MAX_HD], acc[PFC_MAX_HD];
            int j, e;
            for (e = 0; e < hd; e++) { qv[e] = q[e]; acc[e] = 0; }
            for (j = 0; j < T; j++) {
                const float *kk = base + (size_t)j * 3 * D + D + h * hd;
                float s = 0, sj;
                for (e = 0; e < hd; e++) s += qv[e] * kk[e];
                sj = s * scale;
                a[j] = sj;
                if (sj > mx) mx = sj;
            }
            for (j = 0; j < T; j++) { float ej = expf(a[j] - mx); a[j] = ej; sum += ej; }
            for (j = 0; j < T; j++) {
                const float *v = base + (size_t)j * 3 * D + 2 * D + h * hd, pj = a[j] / sum;
                a[j] = pj;
                for (e = 0; e < hd; e++) acc[e] += pj * v[e];
            }
            for (e = 0; e < hd; e++) {
                y[e] = acc[e];
                if (attyb) attyb[y - atty + e] = pfc_to_bf16(acc[e]);
            }
        });
        return;
    }
    /* block = (image, head, tile); shared memory: k [T][LQ], v [T][LQ],
       queries [QT][LQ], scores [QT][LS], row sums [QT] */
    pfc_blocks(d, nimg * H * NQ, NT, pfc_att_smem(T, hd, 0, NQ),
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* load k, v and the tile's queries (+ bias) */
            const size_t img = blk / NQ / H, h = blk / NQ % H;
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            const float *bq = bias ? bias + img / nper * bstride + h * hd : NULL;
            float *k = sm, *v = k + T * LQ, *q = v + T * LQ;
            int idx;
            for (idx = tid; idx < T * hd; idx += NT) {
                const int t = idx / hd, e = idx % hd;
                const float *src = qkv + (img * T + t) * 3 * D + h * hd + e;
                k[t * LQ + e] = src[D] + (bq ? bq[D + e] : 0.0f);
                v[t * LQ + e] = src[2 * D] + (bq ? bq[2 * D + e] : 0.0f);
                if (t >= i0 && t < i0 + nq) q[(t - i0) * LQ + e] = src[0] + (bq ? bq[e] : 0.0f);
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* scores */
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            const float *k = sm, *q = k + 2 * T * LQ;
            pfc_tile_abt(tid, NT, sm + 2 * T * LQ + QT * LQ, LS, q, LQ, k, LQ, nq, T, hd, scale);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* per row: exp(s - max), their sum */
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            float *S = sm + 2 * T * LQ + QT * LQ, *rsum = S + QT * LS;
            int i, j;
            for (i = tid; i < nq; i += NT) {
                float *row = S + i * LS, mx = -1e30f, sum = 0;
                for (j = 0; j < T; j++) if (row[j] > mx) mx = row[j];
                for (j = 0; j < T; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
                rsum[i] = sum;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* P = exp / sum, kept and stored */
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            float *S = sm + 2 * T * LQ + QT * LQ, *rsum = S + QT * LS;
            float *out = keep ? att + (blk / NQ) * T * T + (size_t)i0 * T : NULL;
            int idx;
            for (idx = tid; idx < nq * T; idx += NT) {
                const int i = idx / T, j = idx % T;
                const float pij = S[i * LS + j] / rsum[i];
                S[i * LS + j] = pij;
                if (out) out[idx] = pij;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* y = P v */
            const size_t img = blk / NQ / H, h = blk / NQ % H;
            const int i0 = (int)(blk % NQ) * QT, nq = T - i0 < QT ? T - i0 : QT;
            const float *v = sm + T * LQ, *S = sm + 2 * T * LQ + QT * LQ;
            pfc_tile_aw(tid, NT, atty + (img * T + i0) * D + h * hd, attyb ? attyb + (img * T + i0) * D + h * hd : NULL,
                        (size_t)D, S, LS, 0, v, LQ, nq, hd, T);
        });
}

/* Attention backward: from P (att) and dy (datty), dS = P (dP - rowsum(P dP))
   / sqrt(hd) with dP = dy v^T, then dq = dS k, dk = dS^T q, dv = P^T dy into
   dqkv; one block per (image, head) (the bias as in the forward). The
   thread-per-row fallback keeps dS in datt between its passes. */
static void pfc_attention_bwd(pf_cuda *g, pfc_dev *d, const float *qkv, const uint16_t *qkvb, const float *bias,
                              size_t bstride, size_t nper,
                              const float *att, const float *datty, const uint16_t *dattyb, float *dqkv, uint16_t *dqkvb,
                              float *part, float *datt,
                              size_t nimg, int T, int D, int H) {
    const int hd = D / H, NT = PFC_ATT_THREADS, LQ = hd | 1, LS = T | 1;
    const float scale = 1.0f / sqrtf((float)hd);
    if (g->tc_att) {
        pfc_attention_bwd_tc(d, qkvb, bias, bstride, nper, att, dattyb, dqkvb, part, nimg, T, D, H);
        return;
    }
    if (!g->fused_att) {
        pfc_for(d, nimg * H * T, PFC_LAMBDA(size_t idx) { /* per query row i: dS, dq */
            size_t i = idx % T, bh = idx / T, h = bh % H, img = bh / H;
            const float *base = qkv + img * T * 3 * D, *a = att + (img * H + h) * T * T + i * T;
            const float *dy = datty + (img * T + i) * D + h * hd;
            float *ds = datt + (img * H + h) * T * T + i * T, *dq = dqkv + (img * T + i) * 3 * D + h * hd, s = 0;
            float dyv[PFC_MAX_HD], acc[PFC_MAX_HD];
            int j, e;
            for (e = 0; e < hd; e++) { dyv[e] = dy[e]; acc[e] = 0; }
            for (j = 0; j < T; j++) {
                const float *v = base + (size_t)j * 3 * D + 2 * D + h * hd;
                float t = 0;
                for (e = 0; e < hd; e++) t += dyv[e] * v[e];
                ds[j] = t;
                s += a[j] * t;
            }
            for (j = 0; j < T; j++) {
                const float *kk = base + (size_t)j * 3 * D + D + h * hd;
                float dsj = a[j] * (ds[j] - s) * scale;
                ds[j] = dsj;
                for (e = 0; e < hd; e++) acc[e] += dsj * kk[e];
            }
            for (e = 0; e < hd; e++) {
                dq[e] = acc[e];
                if (dqkvb) dqkvb[dq - dqkv + e] = pfc_to_bf16(acc[e]);
            }
        });
        pfc_for(d, nimg * H * T, PFC_LAMBDA(size_t idx) { /* per key row j: dk, dv */
            size_t j = idx % T, bh = idx / T, h = bh % H, img = bh / H;
            const float *base = qkv + img * T * 3 * D;
            float *dk = dqkv + (img * T + j) * 3 * D + D + h * hd, *dv = dk + D;
            float ak[PFC_MAX_HD], av[PFC_MAX_HD];
            size_t i;
            int e;
            for (e = 0; e < hd; e++) ak[e] = av[e] = 0;
            for (i = 0; i < (size_t)T; i++) {
                float sij = datt[(img * H + h) * T * T + i * T + j], pij = att[(img * H + h) * T * T + i * T + j];
                const float *q = base + i * 3 * D + h * hd, *dy = datty + (img * T + i) * D + h * hd;
                for (e = 0; e < hd; e++) { ak[e] += sij * q[e]; av[e] += pij * dy[e]; }
            }
            for (e = 0; e < hd; e++) {
                dk[e] = ak[e], dv[e] = av[e];
                if (dqkvb) dqkvb[dk - dqkv + e] = pfc_to_bf16(ak[e]), dqkvb[dv - dqkv + e] = pfc_to_bf16(av[e]);
            }
        });
        return;
    }
    /* shared memory: q, k, v, dy [T][LQ]; P, dS [T][LS]; row sums [T] */
    pfc_blocks(d, nimg * H, NT, pfc_att_smem(T, hd, 1, 1),
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* load q, k, v (+ bias), dy, P */
            const size_t img = blk / H, h = blk % H;
            const float *bq = bias ? bias + img / nper * bstride + h * hd : NULL;
            float *q = sm, *k = q + T * LQ, *v = k + T * LQ, *dy = v + T * LQ, *P = dy + T * LQ;
            const float *a = att + blk * T * T;
            int idx;
            for (idx = tid; idx < T * hd; idx += NT) {
                const int t = idx / hd, e = idx % hd;
                const float *src = qkv + (img * T + t) * 3 * D + h * hd + e;
                q[t * LQ + e] = src[0] + (bq ? bq[e] : 0.0f);
                k[t * LQ + e] = src[D] + (bq ? bq[D + e] : 0.0f);
                v[t * LQ + e] = src[2 * D] + (bq ? bq[2 * D + e] : 0.0f);
                dy[t * LQ + e] = datty[(img * T + t) * D + h * hd + e];
            }
            for (idx = tid; idx < T * T; idx += NT) P[idx / T * LS + idx % T] = a[idx];
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* dP = dy v^T */
            (void)blk;
            pfc_tile_abt(tid, NT, sm + 4 * T * LQ + T * LS, LS, sm + 3 * T * LQ, LQ, sm + 2 * T * LQ, LQ, T, T, hd, 1.0f);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* r_i = sum_j P_ij dP_ij */
            const float *P = sm + 4 * T * LQ, *dS = P + T * LS;
            float *r = sm + 4 * T * LQ + 2 * T * LS;
            int i, j;
            (void)blk;
            for (i = tid; i < T; i += NT) {
                float s = 0;
                for (j = 0; j < T; j++) s += P[i * LS + j] * dS[i * LS + j];
                r[i] = s;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* dS = P (dP - r) scale */
            const float *P = sm + 4 * T * LQ, *r = P + 2 * T * LS;
            float *dS = sm + 4 * T * LQ + T * LS;
            int idx;
            (void)blk;
            for (idx = tid; idx < T * T; idx += NT) {
                const int i = idx / T, j = idx % T;
                dS[i * LS + j] = P[i * LS + j] * (dS[i * LS + j] - r[i]) * scale;
            }
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* dq = dS k, dk = dS^T q, dv = P^T dy */
            const size_t img = blk / H, h = blk % H;
            const float *q = sm, *k = q + T * LQ, *dy = k + 2 * T * LQ, *P = dy + T * LQ, *dS = P + T * LS;
            float *dst = dqkv + img * T * 3 * D + h * hd;
            uint16_t *db = dqkvb ? dqkvb + img * T * 3 * D + h * hd : NULL;
            pfc_tile_aw(tid, NT, dst, db, (size_t)3 * D, dS, LS, 0, k, LQ, T, hd, T);
            pfc_tile_aw(tid, NT, dst + D, db ? db + D : NULL, (size_t)3 * D, dS, LS, 1, q, LQ, T, hd, T);
            pfc_tile_aw(tid, NT, dst + 2 * D, db ? db + 2 * D : NULL, (size_t)3 * D, P, LS, 1, dy, LQ, T, hd, T);
        });
}

/* ---------------------------------------------------------------------- */
/* context */

PFDEF pf_cuda_opts pf_cuda_opts_default(void) {
    pf_cuda_opts o;
    memset(&o, 0, sizeof o);
    o.n_devices = 1;
    o.replicas = 1;
    o.max_batch = 256;
    o.world_size = 1;
    return o;
}

/* a public function's pointer argument: PF_ERR_ARG naming it when NULL */
#define PFC_NEED(p, fn, what) do { if (!(p)) return pf_fail(PF_ERR_ARG, "%s: %s is NULL", fn, what); } while (0)

PFDEF pf_status pf_cuda_parse_devices(const char *spec, pf_cuda_opts *o) {
    const char *p;
    int n = 0;
    PFC_NEED(o, "pf_cuda_parse_devices", "o (the options)");
    if (!spec || strncmp(spec, "cuda", 4) != 0 || (spec[4] && spec[4] != ':'))
        return pf_fail(PF_ERR_ARG, "device '%s': expected cpu, cuda, cuda:N or cuda:N,M,...", spec ? spec : "");
    if (!spec[4]) { o->devices[0] = 0; o->n_devices = 1; return PF_OK; }
    p = spec + 5;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1023 || (*end && *end != ','))
            return pf_fail(PF_ERR_ARG, "device '%s': '%s' is not a device number", spec, p);
        if (n == 16) return pf_fail(PF_ERR_ARG, "device '%s': at most 16 devices per process", spec);
        o->devices[n++] = (int)v;
        p = *end ? end + 1 : end;
        if (*end && !*p) return pf_fail(PF_ERR_ARG, "device '%s': trailing comma", spec);
    }
    if (!n) return pf_fail(PF_ERR_ARG, "device '%s': no device numbers after ':'", spec);
    o->n_devices = n;
    return PF_OK;
}

static int pfc_env_int(const char *name, int *out) {
    const char *s = getenv(name);
    char *end;
    long v;
    if (!s || !*s) return 0;
    v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 1 << 20) return -1;
    *out = (int)v;
    return 1;
}

/* an on/off switch: "0" off, "1" on; 0 when unset, -1 when malformed */
static int pfc_env_switch(const char *name, int *out) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    if (strcmp(s, "0") && strcmp(s, "1")) return -1;
    *out = s[0] == '1' ? PF_CUDA_ON : PF_CUDA_OFF;
    return 1;
}

static pf_status pfc_switches_from_env(pf_cuda_opts *o) {
    static const char *const sw[] = {"PF_CUDA_GRAPHS", "PF_CUDA_FUSED_ATTENTION", "PF_CUDA_TC_ATTENTION",
                                     "PF_CUDA_ROW_FUSED", "PF_CUDA_CHECK_LAUNCHES"};
    static const char *const num[] = {"PF_CUDA_ATT_TILES", "PF_CUDA_ROW_TILES"};
    int *swf[] = {&o->graphs, &o->fused_attention, &o->tc_attention, &o->row_fused, &o->check_launches};
    int *numf[] = {&o->att_tiles, &o->row_tiles};
    const char *id = getenv("PF_NCCL_ID");
    int i;
    for (i = 0; i < 5; i++)
        if (pfc_env_switch(sw[i], swf[i]) < 0) return pf_fail(PF_ERR_ARG, "%s must be 0 (off) or 1 (on)", sw[i]);
    for (i = 0; i < 2; i++)
        if (pfc_env_int(num[i], numf[i]) < 0) return pf_fail(PF_ERR_ARG, "%s must be a non-negative integer", num[i]);
    if (id && *id) {
        if (strlen(id) >= sizeof o->nccl_id) return pf_fail(PF_ERR_ARG, "PF_NCCL_ID is too long");
        strcpy(o->nccl_id, id);
    }
    return PF_OK;
}

PFDEF pf_status pf_cuda_opts_from_env(pf_cuda_opts *o) {
    int rank = 0, world = 1, local = 0, r1, r2, r3;
    const char *f = getenv("PF_NCCL_ID_FILE");
    pf_status st;
    if (!o) return pf_fail(PF_ERR_ARG, "pf_cuda_opts_from_env: o is NULL");
    if ((st = pfc_switches_from_env(o)) != PF_OK) return st;
    r1 = pfc_env_int("RANK", &rank);
    r2 = pfc_env_int("WORLD_SIZE", &world);
    r3 = pfc_env_int("LOCAL_RANK", &local);
    if (r1 < 0 || r2 < 0 || r3 < 0) return pf_fail(PF_ERR_ARG, "RANK, WORLD_SIZE and LOCAL_RANK must be non-negative integers");
    if (!r2) return PF_OK; /* not launched as several processes */
    if (world < 1 || rank >= world) return pf_fail(PF_ERR_ARG, "RANK %d is not below WORLD_SIZE %d", rank, world);
    o->rank = rank;
    o->world_size = world;
    if (r3) { o->devices[0] = local; o->n_devices = 1; }
    if (f && *f) {
        if (strlen(f) >= sizeof o->id_file) return pf_fail(PF_ERR_ARG, "PF_NCCL_ID_FILE is too long");
        strcpy(o->id_file, f);
    }
    return PF_OK;
}

PFDEF const char *pf_cuda_backend(void) {
#ifdef PF_CUDA_EMULATE
    return "emulated";
#else
    return "cuda";
#endif
}

PFDEF int pf_cuda_device_count(void) {
#ifdef PF_CUDA_EMULATE
    return 8;
#else
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
#endif
}

PFDEF int pf_cuda_trace(const pf_cuda *g, pf_collective *out, int cap) {
    int i;
    if (!g || (cap > 0 && !out)) return 0;
    for (i = 0; i < g->n_trace && i < cap; i++) out[i] = g->trace[i];
    return i;
}

static pf_status pfc_finish_loss(pf_cuda *g);
PFDEF pf_status pf_cuda_sync(pf_cuda *g) {
    int i;
    pf_status st;
    PFC_NEED(g, "pf_cuda_sync", "the context");
    if ((st = pfc_finish_loss(g)) != PF_OK) return st;
    for (i = 0; i < g->ndev; i++) {
        if ((st = pfc_set_device(&g->dev[i])) != PF_OK) return st;
        if ((st = pfc_sync(&g->dev[i])) != PF_OK) return st;
    }
    return PF_OK;
}

PFDEF unsigned long long pf_cuda_launches(const pf_cuda *g) {
    unsigned long long n = 0;
    int i;
    if (!g) return 0;
    for (i = 0; i < g->ndev; i++) n += g->dev[i].launches;
    return n;
}

PFDEF int pf_cuda_branch_device(const pf_cuda *g, int b) {
    return g && b >= 0 && b < g->m->cfg.branches ? g->device_of[b] : -1;
}

static size_t pfc_head_start(const pf_model *m, int nb) { return m->stem_size + (size_t)nb * m->branch_size; }

static void pfc_free_dev(pfc_dev *d, int depth) {
    void *flat[] = {d->params, d->grads, d->adam_m, d->adam_v, d->wbf, d->d_gb, d->ctr, d->patches, d->etmp,
                    d->x0, d->agg, d->psum, d->pooled, d->lnf_mean, d->lnf_rstd, d->uf, d->logits, d->probs,
                    d->rowloss, d->sumsq, d->clipv, d->chunks, d->segs, d->labels, d->xin, d->dlogits, d->duf, d->dpool, d->dagg, d->dx0, d->dcur,
                    d->dres, d->du, d->dh, d->datty, d->dqkv, d->datt, d->dpatch, d->colpart, d->blas_ws};
    float **per[] = {d->u1, d->qkv, d->att, d->atty, d->x1, d->u2, d->h, d->g, d->x2,
                     d->ln1_mean, d->ln1_rstd, d->ln2_mean, d->ln2_rstd};
    uint16_t **tw[] = {d->u1b, d->attyb, d->u2b, d->gtw, d->qkvb, d->hb};
    size_t i;
    int l;
    pfc_set_device(d);
    for (i = 0; i < sizeof flat / sizeof flat[0]; i++) pfc_release(d, flat[i]);
    pfc_release(d, d->patchesb);
    {
        uint16_t *btw[] = {d->dcurb, d->dresb, d->dub, d->dhb, d->dqkvb, d->dattyb, d->ufb, d->dlogitsb, d->dpatchb, d->gob};
        for (i = 0; i < sizeof btw / sizeof btw[0]; i++) pfc_release(d, btw[i]);
    }
    for (i = 0; i < sizeof tw / sizeof tw[0]; i++) {
        if (!tw[i]) continue;
        for (l = 0; l < depth; l++) pfc_release(d, tw[i][l]);
        free(tw[i]);
    }
    free(d->twins);
    free(d->host_chunks);
    free(d->host_segs);
    for (i = 0; i < sizeof per / sizeof per[0]; i++) {
        if (!per[i]) continue;
        for (l = 0; l < depth; l++) pfc_release(d, per[i][l]);
        free(per[i]);
    }
#ifndef PF_CUDA_EMULATE
    if (d->blas) cublasDestroy(d->blas);
    if (d->group_comm) ncclCommDestroy(d->group_comm);
    if (d->pos_comm) ncclCommDestroy(d->pos_comm);
    if (d->stream) cudaStreamDestroy(d->stream);
#endif
    memset(d, 0, sizeof *d);
}

PFDEF void pf_cuda_free(pf_cuda *g) {
    int i;
    if (!g) return;
#ifndef PF_CUDA_EMULATE
    if (g->ndev) cudaSetDevice(g->dev[0].id);
#endif
    for (i = 0; i < PFC_GRAPHS_FWD; i++) pfc_graph_free(&g->fwd_graphs[i]);
    for (i = 0; i < PFC_GRAPHS_BWD; i++) pfc_graph_free(&g->bwd_graphs[i]);
    for (i = 0; i < PFC_GRAPHS_STEP; i++) pfc_graph_free(&g->step_graphs[i]);
    for (i = 0; i < g->ndev; i++) pfc_free_dev(&g->dev[i], g->m->cfg.depth);
    free(g->host_loss);
    free(g);
}

/* allocations of one device */
static pf_status pfc_alloc_dev(pf_cuda *g, pfc_dev *d) {
    const pf_model *m = g->m;
    const pf_config *c = &m->cfg;
    size_t B = (size_t)g->max_batch / g->nlrep, T = m->T, D = c->dim, M = c->mlp_dim, H = c->heads, K = c->classes;
    size_t nb = d->nb ? d->nb : 1, NP = m->n_patches, pd = m->patch_dim;
    size_t BTD = B * T * D;
    pf_status st;
    int l;
#define PFC_A(ptr, n) do { if ((st = pfc_alloc(d, (void **)&(ptr), (size_t)(n) * sizeof(*(ptr)))) != PF_OK) return st; } while (0)
    PFC_A(d->params, d->n_local);
    PFC_A(d->grads, d->n_local);
    PFC_A(d->adam_m, d->n_local);
    PFC_A(d->adam_v, d->n_local);
    PFC_A(d->d_gb, 64);
    PFC_A(d->ctr, 1);
    if ((st = pfc_h2d(d, d->d_gb, d->gb, sizeof d->gb)) != PF_OK) return st;
    PFC_A(d->xin, B * c->channels * c->image_size * c->image_size);
    PFC_A(d->labels, B);
    PFC_A(d->patches, B * NP * pd);
    PFC_A(d->etmp, B * NP * D);
    PFC_A(d->x0, BTD);
    PFC_A(d->agg, BTD);
    PFC_A(d->psum, BTD);
    PFC_A(d->pooled, B * D);
    PFC_A(d->lnf_mean, B);
    PFC_A(d->lnf_rstd, B);
    PFC_A(d->uf, B * D);
    PFC_A(d->logits, B * K);
    PFC_A(d->probs, B * K);
    PFC_A(d->rowloss, B);
    {   /* clipping: squared sums per 4096 gradients (at most one partial chunk per tensor) */
        size_t nch = d->n_local / 4096 + (size_t)m->n_specs + 1;
        PFC_A(d->sumsq, nch);
        PFC_A(d->chunks, nch);
        PFC_A(d->segs, m->n_specs);
        PFC_A(d->clipv, 2);
        d->host_chunks = (pfc_chunk *)malloc(nch * sizeof *d->host_chunks);
        d->host_segs = (pfc_seg *)malloc((size_t)m->n_specs * sizeof *d->host_segs);
        if (!d->host_chunks || !d->host_segs) return pf_fail(PF_ERR_NOMEM, "out of host memory");
    }
    PFC_A(d->dlogits, B * K);
    PFC_A(d->duf, B * D);
    PFC_A(d->dpool, B * D);
    PFC_A(d->dagg, BTD);
    PFC_A(d->dx0, BTD);
    PFC_A(d->dpatch, B * NP * D);
    PFC_A(d->dcur, nb * BTD);
    PFC_A(d->dres, nb * BTD);
    PFC_A(d->du, nb * BTD);
    /* (fp32 buffers that bf16 mode or the tensor-core attention never use are not allocated: NULL) */
    if (!g->tc_att) PFC_A(d->datty, nb * BTD);
    if (!g->o.bf16) PFC_A(d->dh, nb * B * T * M);
    if (!g->tc_att) PFC_A(d->dqkv, nb * B * T * 3 * D);
    if (!g->fused_att) PFC_A(d->datt, nb * B * H * T * T);
    {
        size_t widest = 3 * D > M ? 3 * D : M; /* (LayerNorm's two sums: 2D) */
        if (widest < K) widest = K;
        /* partial column sums: pfc_colsums (chunks of PFC_CHUNK rows, at most
           2 outputs of width 2D), the attention's qkv-bias sums (an image's
           rows, width 3D), LayerNorm's backward (blocks of PFC_LN_ROWS rows,
           up to 3 outputs of width D) */
        size_t n1 = (B * T + PFC_CHUNK - 1) / PFC_CHUNK * widest, n2 = B * 3 * D;
        size_t n3 = 3 * ((B * T + PFC_LN_ROWS - 1) / PFC_LN_ROWS) * D, n = n1 > n2 ? n1 : n2;
        PFC_A(d->colpart, nb * (n > n3 ? n : n3));
    }
    {
        float ***per[] = {&d->u1, &d->qkv, &d->att, &d->atty, &d->x1, &d->u2, &d->h, &d->g, &d->x2,
                          &d->ln1_mean, &d->ln1_rstd, &d->ln2_mean, &d->ln2_rstd};
        /* (att: P [H][T][T] per token row, or with the tensor cores each row's max and sum [H][2]) */
        /* (0: not allocated; qkv and h come from their GEMMs in bf16 with the tensor cores, bf16) */
        size_t width[] = {D, g->tc_att ? 0 : 3 * D, g->tc_att ? H * 2 : H * T, D, D, D, g->o.bf16 ? 0 : M, M, D, 1, 1, 1, 1};
        size_t i;
        for (i = 0; i < sizeof per / sizeof per[0]; i++) {
            *per[i] = (float **)calloc((size_t)c->depth, sizeof(float *));
            if (!*per[i]) return pf_fail(PF_ERR_NOMEM, "out of host memory");
            for (l = 0; l < c->depth; l++)
                if (width[i]) PFC_A((*per[i])[l], nb * B * T * width[i]);
        }
    }
#ifndef PF_CUDA_EMULATE
    if ((st = pfc_alloc(d, &d->blas_ws, PFC_BLAS_WS)) != PF_OK) return st;
    if (cublasSetWorkspace(d->blas, d->blas_ws, PFC_BLAS_WS) != CUBLAS_STATUS_SUCCESS)
        return pf_fail(PF_ERR_IO, "GPU %d: cublasSetWorkspace failed", d->id);
#endif
    if (g->o.bf16) { /* the weights' bf16 copy; the twins of the forward GEMMs' activations */
        uint16_t ***tw[] = {&d->u1b, &d->attyb, &d->u2b, &d->gtw};
        float **fl[] = {d->u1, d->atty, d->u2, d->g};
        size_t width[] = {D, D, D, M};
        size_t i;
        PFC_A(d->wbf, d->n_local);
        PFC_A(d->dcurb, nb * BTD);
        PFC_A(d->dresb, nb * BTD);
        PFC_A(d->dub, nb * BTD);
        PFC_A(d->dhb, nb * B * T * M);
        PFC_A(d->dqkvb, nb * B * T * 3 * D);
        if (g->tc_att) PFC_A(d->dattyb, nb * BTD);
        PFC_A(d->ufb, B * D);
        PFC_A(d->gob, nb * BTD);
        PFC_A(d->dlogitsb, B * K);
        PFC_A(d->dpatchb, B * NP * D);
        d->qkvb = (uint16_t **)calloc((size_t)c->depth, sizeof(uint16_t *));
        d->hb = (uint16_t **)calloc((size_t)c->depth, sizeof(uint16_t *));
        if (!d->qkvb || !d->hb) return pf_fail(PF_ERR_NOMEM, "out of host memory");
        for (l = 0; l < c->depth; l++) {
            if (g->tc_att) PFC_A(d->qkvb[l], nb * B * T * 3 * D);
            PFC_A(d->hb[l], nb * B * T * M);
        }
        d->twins = (pfc_twin *)calloc((size_t)4 * c->depth + 2, sizeof(pfc_twin));
        if (!d->twins) return pf_fail(PF_ERR_NOMEM, "out of host memory");
        d->twins[d->n_twins++] = pfc_twin{d->uf, d->ufb, B * D};
        PFC_A(d->patchesb, B * NP * pd);
        d->twins[d->n_twins++] = pfc_twin{d->patches, d->patchesb, B * NP * pd};
        for (i = 0; i < 4; i++) {
            *tw[i] = (uint16_t **)calloc((size_t)c->depth, sizeof(uint16_t *));
            if (!*tw[i]) return pf_fail(PF_ERR_NOMEM, "out of host memory");
            for (l = 0; l < c->depth; l++) {
                PFC_A((*tw[i])[l], nb * B * T * width[i]);
                d->twins[d->n_twins++] = pfc_twin{fl[i][l], (*tw[i])[l], nb * B * T * width[i]};
            }
        }
    }
#undef PFC_A
    return PF_OK;
}

#ifndef PF_CUDA_EMULATE
/* the NCCL unique id: rank 0 makes it and writes it (hex) to the id file;
   the others wait for the file (or read PF_NCCL_ID). A file written more
   than PFC_ID_STALE_S seconds before a rank asks is an earlier run's and is
   never read (rank 0 also removes the file once every rank has joined). */
#define PFC_ID_STALE_S 120
static pf_status pfc_nccl_id(const pf_cuda_opts *o, ncclUniqueId *id) {
    const char *env = o->nccl_id;
    char hex[2 * NCCL_UNIQUE_ID_BYTES + 2];
    size_t i;
    if (env && *env) {
        if (strlen(env) != 2 * NCCL_UNIQUE_ID_BYTES) return pf_fail(PF_ERR_ARG, "PF_NCCL_ID: expected %d hex digits", 2 * NCCL_UNIQUE_ID_BYTES);
        for (i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) {
            unsigned v;
            if (sscanf(env + 2 * i, "%2x", &v) != 1) return pf_fail(PF_ERR_ARG, "PF_NCCL_ID: not hex");
            id->internal[i] = (char)v;
        }
        return PF_OK;
    }
    if (!o->id_file[0]) return pf_fail(PF_ERR_ARG, "several processes need PF_NCCL_ID_FILE (a path all ranks see) or PF_NCCL_ID");
    if (o->rank == 0) {
        char tmp[600];
        FILE *f;
        ncclResult_t r = ncclGetUniqueId(id);
        if (r != ncclSuccess) return pf_fail(PF_ERR_IO, "ncclGetUniqueId failed: %s", ncclGetErrorString(r));
        for (i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) sprintf(hex + 2 * i, "%02x", (unsigned char)id->internal[i]);
        snprintf(tmp, sizeof tmp, "%s.tmp", o->id_file);
        if (!(f = fopen(tmp, "w")) || fprintf(f, "%s\n", hex) < 0 || fclose(f) != 0 || rename(tmp, o->id_file) != 0)
            return pf_fail(PF_ERR_IO, "%s: cannot write the NCCL id", o->id_file);
        return PF_OK;
    }
    {
        int tries;
        time_t asked = time(NULL);
        for (tries = 0; tries < 600; tries++) { /* up to 60 s */
            struct stat sb;
            FILE *f = stat(o->id_file, &sb) == 0 && sb.st_mtime + PFC_ID_STALE_S >= asked ? fopen(o->id_file, "r") : NULL;
            if (f) {
                size_t n = fread(hex, 1, 2 * NCCL_UNIQUE_ID_BYTES, f);
                fclose(f);
                if (n == 2 * NCCL_UNIQUE_ID_BYTES) {
                    for (i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) {
                        unsigned v;
                        char two[3] = {hex[2 * i], hex[2 * i + 1], 0};
                        if (sscanf(two, "%2x", &v) != 1) return pf_fail(PF_ERR_FORMAT, "%s: not an NCCL id", o->id_file);
                        id->internal[i] = (char)v;
                    }
                    return PF_OK;
                }
            }
            {
                struct timespec ts = {0, 100000000};
                nanosleep(&ts, NULL);
            }
        }
        return pf_fail(PF_ERR_IO, "%s: no NCCL id from rank 0 after 60 s", o->id_file);
    }
}
#endif

#ifndef PF_CUDA_EMULATE
/* The communicators: one over all devices of all processes, split by
   replica (the branch collectives) and by position (the replicas' gradient
   all-reduce) */
static pf_status pfc_comms_init(pf_cuda *g, int world_dev) {
    const pf_cuda_opts *o = &g->o;
    pf_status st;
    int i;
    ncclComm_t world[PFC_MAX_DEV];
    ncclResult_t r = ncclSuccess;
    memset(world, 0, sizeof world);
    if (o->world_size == 1) {
        r = ncclCommInitAll(world, g->ndev, o->devices);
    } else {
        ncclUniqueId id;
        if ((st = pfc_nccl_id(o, &id)) != PF_OK) return st;
        ncclGroupStart();
        for (i = 0; i < g->ndev && r == ncclSuccess; i++) {
            cudaSetDevice(g->dev[i].id);
            r = ncclCommInitRank(&world[i], world_dev, id, o->rank * o->n_devices + i);
        }
        if (ncclGroupEnd() != ncclSuccess && r == ncclSuccess) r = ncclSystemError;
        /* every rank has joined (the init is collective): the id is spent */
        if (r == ncclSuccess && o->rank == 0 && !o->nccl_id[0] && o->id_file[0]) remove(o->id_file);
    }
    if (r == ncclSuccess) {
        ncclGroupStart();
        ncclResult_t e;
        for (i = 0; i < g->ndev && r == ncclSuccess; i++)
            r = ncclCommSplit(world[i], g->dev[i].replica, g->dev[i].pos, &g->dev[i].group_comm, NULL);
        if ((e = ncclGroupEnd()) != ncclSuccess && r == ncclSuccess) r = e;
        if (r == ncclSuccess) {
            ncclGroupStart();
            for (i = 0; i < g->ndev && r == ncclSuccess; i++)
                r = ncclCommSplit(world[i], g->dev[i].pos, g->dev[i].replica, &g->dev[i].pos_comm, NULL);
            if ((e = ncclGroupEnd()) != ncclSuccess && r == ncclSuccess) r = e;
        }
    }
    for (i = 0; i < g->ndev; i++) if (world[i]) ncclCommDestroy(world[i]);
    if (r != ncclSuccess) return pf_fail(PF_ERR_IO, "NCCL setup over %d devices failed: %s", world_dev, ncclGetErrorString(r));
    return PF_OK;
}
#endif

/* Device i of the context: its place in the replicas and the plan, its
   stream and cuBLAS handle, and the attention kernels it can run (the
   context's choice narrows to what every device can) */
static pf_status pfc_dev_open(pf_cuda *g, int i, int total) {
    const pf_model *m = g->m;
    const pf_config *c = &m->cfg;
    const pf_cuda_opts *o = &g->o;
    pfc_dev *d = &g->dev[i];
    int gd = o->rank * o->n_devices + i, b;
    d->id = o->devices[i];
    d->check = g->check;
    d->replica = gd / total;
    d->pos = gd % total;
    d->lrep = d->replica - (o->rank * o->n_devices) / total;
    d->nb = 0;
    for (b = 0; b < c->branches; b++)
        if (g->device_of[b] == d->pos) d->gb[d->nb++] = b;
    d->n_local = pfc_head_start(m, d->nb) + m->head_size;
    d->smem_max = PFC_EMU_SMEM;
    d->sms = 132; /* (an H100's; the real count below) */
#ifndef PF_CUDA_EMULATE
    if (cudaSetDevice(d->id) != cudaSuccess || cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking) != cudaSuccess) {
        cudaError_t e = cudaGetLastError();
        return pf_fail(PF_ERR_IO, "CUDA device %d cannot be used: %s", d->id, cudaGetErrorString(e));
    }
    if (cublasCreate(&d->blas) != CUBLAS_STATUS_SUCCESS) return pf_fail(PF_ERR_IO, "GPU %d: cublasCreate failed", d->id);
    cublasSetStream(d->blas, d->stream);
    {
        int smem = 0;
        if (cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, d->id) == cudaSuccess)
            d->smem_max = (size_t)smem;
        if (cudaDeviceGetAttribute(&smem, cudaDevAttrMultiProcessorCount, d->id) == cudaSuccess) d->sms = smem;
    }
    /* fp32 means fp32: no TF32 (CUBLAS_COMPUTE_32F everywhere) and, in
       the fp32 path, no reduced-precision shortcuts either */
    cublasSetMathMode(d->blas, o->bf16 ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH);
#endif
    /* attention in shared memory when its backward block fits (else the
       thread-per-row kernels); in bf16 on tensor cores when the device
       and the code built for it take bf16 wmma (8.0 on) and its block fits */
    if (pfc_att_smem(m->T, c->dim / c->heads, 1, 1) > d->smem_max) g->fused_att = 0;
    {
        int major = 8, ptx = 80;
#ifndef PF_CUDA_EMULATE
        cudaFuncAttributes fa;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d->id) != cudaSuccess) major = 0;
        ptx = cudaFuncGetAttributes(&fa, pfc_probe_kernel) == cudaSuccess ? fa.ptxVersion : 0;
#endif
        if (major < 8 || ptx < 80) g->wmma = 0;
        if (!g->wmma || !g->fused_att || pfc_tc_layout(m->T, c->dim / c->heads, 1, 1).total > d->smem_max)
            g->tc_att = 0;
    }
    return PF_OK;
}

static void pfc_clear_errors(pf_cuda *g);
PFDEF pf_status pf_cuda_create(pf_model *m, const pf_cuda_opts *opts, pf_cuda **out) {
    pf_cuda *g;
    const pf_config *c = m ? &m->cfg : NULL;
    pf_cuda_opts o = opts ? *opts : pf_cuda_opts_default();
    int i, b, total, have, world_dev;
    pf_status st;
    if (!m || !out) return pf_fail(PF_ERR_ARG, "pf_cuda_create: %s is NULL", !m ? "the model" : "out");
    *out = NULL;
    if (o.n_devices < 1 || o.n_devices > PFC_MAX_DEV) return pf_fail(PF_ERR_ARG, "pf_cuda: %d devices (1..%d)", o.n_devices, PFC_MAX_DEV);
    if (o.world_size < 1) o.world_size = 1;
    if (o.replicas < 1) o.replicas = 1;
    if (o.max_batch < 1) o.max_batch = 256;
    if (c->branches > 64) return pf_fail(PF_ERR_CONFIG, "pf_cuda: at most 64 branches (model has %d)", c->branches);
    if (c->dim / c->heads > PFC_MAX_HD)
        return pf_fail(PF_ERR_CONFIG, "pf_cuda: head width %d (dim %d / %d heads) above the backend's %d",
                       c->dim / c->heads, c->dim, c->heads, PFC_MAX_HD);
    have = pf_cuda_device_count();
    if (have < 1) return pf_fail(PF_ERR_IO, "no CUDA device found (is a GPU visible? CUDA_VISIBLE_DEVICES=%s)",
                                 getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "(unset)");
    for (i = 0; i < o.n_devices; i++)
        if (o.devices[i] < 0 || o.devices[i] >= have)
            return pf_fail(PF_ERR_ARG, "CUDA device %d does not exist (%d visible)", o.devices[i], have);
    world_dev = o.n_devices * o.world_size;
    if (world_dev % o.replicas) return pf_fail(PF_ERR_ARG, "pf_cuda: %d devices in all cannot hold %d replicas", world_dev, o.replicas);
    total = world_dev / o.replicas; /* devices per replica */
    if (total > c->branches) return pf_fail(PF_ERR_ARG, "pf_cuda: %d devices per replica but only %d branches", total, c->branches);
#ifdef PF_CUDA_EMULATE
    if (o.world_size > 1) return pf_fail(PF_ERR_ARG, "the emulated backend runs one process (WORLD_SIZE %d)", o.world_size);
#endif
    if (!(g = (pf_cuda *)calloc(1, sizeof *g))) return pf_fail(PF_ERR_NOMEM, "out of host memory");
    g->m = m;
    g->o = o;
    g->ndev = o.n_devices;
    g->group = total;
    /* the replicas this process takes part in share its batch */
    g->nlrep = (o.rank * o.n_devices + o.n_devices - 1) / total - (o.rank * o.n_devices) / total + 1;
    g->max_batch = o.max_batch - o.max_batch % g->nlrep;
    if (g->max_batch < g->nlrep) g->max_batch = g->nlrep;
    {
        double cost[64];
        for (b = 0; b < c->branches; b++) cost[b] = 1.0; /* equal branches: the cost plan is round-robin */
        if ((st = pf_branch_plan(c->branches, total, o.cost_plan ? cost : NULL, g->device_of)) != PF_OK) {
            free(g);
            return st;
        }
    }
    g->host_loss = (double *)calloc((size_t)g->max_batch, sizeof(double));
    if (!g->host_loss) { pf_cuda_free(g); return pf_fail(PF_ERR_NOMEM, "out of host memory"); }
    g->use_graphs = o.graphs != PF_CUDA_OFF;
    /* the attention kernels: narrowed per device below */
    g->fused_att = o.fused_attention != PF_CUDA_OFF;
    g->wmma = 1;
#ifdef PF_CUDA_DEBUG
    g->check = o.check_launches != PF_CUDA_OFF; /* (a debug build: on unless turned off) */
#else
    g->check = o.check_launches == PF_CUDA_ON;
#endif
    g->tc_att = o.bf16 && g->fused_att && o.tc_attention != PF_CUDA_OFF;
    g->att_tiles = o.att_tiles > 0 ? o.att_tiles : 0;
    for (i = 0; i < g->ndev; i++)
        if ((st = pfc_dev_open(g, i, total)) != PF_OK) { pf_cuda_free(g); return st; }
    /* the fused rows (bf16), where every device can run them */
    g->row_fused = o.row_fused == PF_CUDA_OFF ? 0 : o.row_fused == PF_CUDA_ON ? 1 : -1;
    g->row_tiles = o.row_tiles > 0 && o.row_tiles <= PFC_MAX_RT ? o.row_tiles : 0;
    for (i = 0; i < g->ndev; i++)
        if (!pfc_rf_possible(g, g->dev[i].smem_max)) g->row_fused = 0;
    /* (allocated once every device had its say: the buffers depend on the attention kernels) */
    for (i = 0; i < g->ndev; i++)
        if ((st = pfc_set_device(&g->dev[i])) != PF_OK || (st = pfc_alloc_dev(g, &g->dev[i])) != PF_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", pf_last_error());
            pf_cuda_free(g);
            if (st != PF_ERR_NOMEM) return pf_fail(st, "%s", why);
            return pf_fail(st, "model too large for GPU %d at batch %d: %s (a smaller --batch, or more devices)",
                           o.devices[i], o.max_batch, why);
        }
#ifndef PF_CUDA_EMULATE
    if ((world_dev > 1 || o.collectives) && (st = pfc_comms_init(g, world_dev)) != PF_OK) { pf_cuda_free(g); return st; }
#endif
    pfc_clear_errors(g); /* what the set-up left (pfc_launch_status) */
    if ((st = pf_cuda_upload(g)) != PF_OK) { pf_cuda_free(g); return st; }
    *out = g;
    return PF_OK;
}

/* copies between the model's layout and a device's [stem | its branches | head] */
static pf_status pfc_xfer(pf_cuda *g, pfc_dev *d, float *dev_buf, float *host_buf, int up) {
    const pf_model *m = g->m;
    size_t hs = pfc_head_start(m, m->cfg.branches), ls = pfc_head_start(m, d->nb);
    pf_status st;
    int j;
#define PFC_X(doff, hoff, n) (up ? pfc_h2d(d, dev_buf + (doff), host_buf + (hoff), (n) * 4) \
                                 : pfc_d2h(d, host_buf + (hoff), dev_buf + (doff), (n) * 4))
    if (d->pos == 0 && (st = PFC_X(0, 0, m->stem_size)) != PF_OK) return st;
    for (j = 0; j < d->nb; j++)
        if ((st = PFC_X(m->stem_size + (size_t)j * m->branch_size, m->stem_size + (size_t)d->gb[j] * m->branch_size,
                        m->branch_size)) != PF_OK) return st;
    if (d->pos == 0 && (st = PFC_X(ls, hs, m->head_size)) != PF_OK) return st;
#undef PFC_X
    return PF_OK;
}

static void pfc_refresh_bf16(pf_cuda *g, pfc_dev *d) {
    if (g->o.bf16) {
        const float *p = d->params;
        uint16_t *w = d->wbf;
        pfc_for(d, d->n_local, PFC_LAMBDA(size_t i) { w[i] = pfc_to_bf16(p[i]); });
    }
}

PFDEF pf_status pf_cuda_upload(pf_cuda *g) {
    int i;
    pf_status st;
    PFC_NEED(g, "pf_cuda_upload", "the context");
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if ((st = pfc_xfer(g, d, d->params, g->m->params, 1)) != PF_OK) return st;
        if (g->m->adam_m) {
            if ((st = pfc_xfer(g, d, d->adam_m, g->m->adam_m, 1)) != PF_OK) return st;
            if ((st = pfc_xfer(g, d, d->adam_v, g->m->adam_v, 1)) != PF_OK) return st;
        }
        pfc_refresh_bf16(g, d);
        if ((st = pfc_sync(d)) != PF_OK) return st;
    }
    return PF_OK;
}

PFDEF pf_status pf_cuda_download(pf_cuda *g) {
    int i;
    pf_status st;
    PFC_NEED(g, "pf_cuda_download", "the context");
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if (d->replica != g->dev[0].replica) continue; /* the replicas hold the same values */
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if ((st = pfc_xfer(g, d, d->params, g->m->params, 0)) != PF_OK) return st;
        if (g->m->grads && (st = pfc_xfer(g, d, d->grads, g->m->grads, 0)) != PF_OK) return st;
        if (g->m->adam_m) {
            if ((st = pfc_xfer(g, d, d->adam_m, g->m->adam_m, 0)) != PF_OK) return st;
            if ((st = pfc_xfer(g, d, d->adam_v, g->m->adam_v, 0)) != PF_OK) return st;
        }
    }
    pf_model_changed(g->m);
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* forward */

/* active local branches: the first `na` of d->gb (they are ascending) */
static int pfc_active_local(const pfc_dev *d, int k) {
    int j, n = 0;
    for (j = 0; j < d->nb; j++) n += d->gb[j] < k;
    return n;
}

/* ---------------------------------------------------------------------- */
/* bf16: the row-wise part of a layer in one launch (g->row_fused;
   opts.row_fused off, or on at any batch and in training too).

   Everything in a layer but attention works on each token row alone: the
   projection with its residual, LN2, fc1, GELU, fc2 with its residual, and
   the next layer's LN1 and qkv GEMM. At batch 1 those are 6 launches and
   5 GEMMs of 65 rows each, too small to fill a GPU, each a few
   microseconds. Here a block of 256 threads takes 16 rt rows of one branch
   (rt row tiles, 1 to 4) through all of them, with the rows in shared
   memory and the GEMMs as 16 x 16 tensor-core tiles (pfc_mma_rows: a warp
   per column tile, for all rt row tiles) reading the bf16 weights from
   global memory; a layer is then the attention kernel and this one. The
   arithmetic is the unfused bf16 path's: bf16 operands, fp32 sums, GEMM
   outputs rounded to bf16 before the bias, fp32 residual stream and
   LayerNorm statistics; only the order of the sums differs. Used, with
   rt = 1, for inference when those blocks do not fill the GPU (small
   batches); forced on (opts.row_fused on), with the most rows that fit,
   at any batch and for a training forward too (which then also stores what
   the backward reads). Any attention kernel can follow: the next layer's
   qkv is written in bf16 for the tensor-core attention, else in fp32 (with
   the qkv bias when the thread-per-row attention, which does not add it,
   reads it). Needs tensor cores (g->wmma), sizes that are multiples of 16,
   32-byte aligned weights and no dropout. */
struct pfc_rfl {
    int R, LA, LG, LF;                     /* rows (16 per row tile); row strides: bf16 [D + 8], [M + 8]; float [D + 4] */
    size_t x, u, a, gb, f, red, scr, total; /* byte offsets: x, u [R][D] float (u: the normed residual only);
                                              a [R][LA], gb [R][LG] bf16; f [R][LF] float (projection, fc2);
                                              red [2][R][17] float; scr [8][256] float (a warp's tile) */
};
static pfc_rfl pfc_rf_layout(int D, int M, int rt, int prenorm) {
    pfc_rfl L;
    size_t o = 0;
    L.R = 16 * rt, L.LA = D + 8, L.LG = M + 8, L.LF = D + 4;
    L.x = o, o += pfc_up32((size_t)L.R * D * 4);
    L.u = o, o += prenorm ? 0 : pfc_up32((size_t)L.R * D * 4);
    L.a = o, o += pfc_up32((size_t)L.R * L.LA * 2);
    L.gb = o, o += pfc_up32((size_t)L.R * L.LG * 2);
    L.f = o, o += pfc_up32((size_t)L.R * L.LF * 4);
    L.red = o, o += pfc_up32((size_t)2 * L.R * 17 * 4);
    L.scr = o, o += (size_t)(PFC_ATT_THREADS / 32) * 256 * 4;
    L.total = o;
    return L;
}
/* LayerNorm of the block's R rows of x (width C, fp32 in shared memory),
   in three phases (stage 0, 1, 2), 16 threads per row (rows tid / 16 + 16 q),
   each over the columns tid % 16 + 16 k: 0 partial sums; 1 the mean (every
   thread of the row adds the 16 partial sums itself, in the same order)
   and partial sums of squares about it; 2 1 / standard deviation likewise,
   and y = (x - mean) rstd w + b into out (fp32) and outb (bf16, row stride
   lb), either may be NULL; with keep.mean (a training forward), the first
   keep.n rows' mean, 1 / standard deviation and y (bf16: the backward's
   GEMMs read only that) to the global rows keep.row0 on as well */
struct pfc_rf_keep {
    float *mean, *rstd;
    uint16_t *yb;
    size_t row0;
    int n;
};
PFC_DEV static inline void pfc_rf_ln(int stage, int tid, int R, const float *x, int C, float *red, const float *w,
                                     const float *b, float *out, pfc_bf *outb, int lb, pfc_rf_keep keep = pfc_rf_keep()) {
    const int l = tid % 16;
    int r, c, k;
    for (r = tid / 16; r < R; r += PFC_ATT_THREADS / 16) {
        const float *xr = x + r * C;
        float *ps = red + r * 17, *pq = red + (R + r) * 17, s = 0, mu = 0;
        if (stage == 0) {
            for (c = l; c < C; c += 16) s += xr[c];
            ps[l] = s;
            continue;
        }
        for (k = 0; k < 16; k++) mu += ps[k];
        mu /= (float)C;
        if (stage == 1) {
            for (c = l; c < C; c += 16) s += (xr[c] - mu) * (xr[c] - mu);
            pq[l] = s;
            continue;
        }
        for (k = 0; k < 16; k++) s += pq[k];
        s = 1.0f / sqrtf(s / (float)C + 1e-5f);
        if (keep.mean && r >= keep.n) keep.mean = NULL; /* (rows past the end: not stored) */
        if (keep.mean && l == 0) keep.mean[keep.row0 + r] = mu, keep.rstd[keep.row0 + r] = s;
        for (c = l; c < C; c += 16) {
            const float y = (xr[c] - mu) * s * w[c] + b[c];
            if (out) out[r * C + c] = y;
            if (outb) outb[r * lb + c] = pfc_bf_of(y);
            if (keep.mean) keep.yb[(keep.row0 + r) * C + c] = pfc_to_bf16(y);
        }
    }
}
/* the block's F [16 rt][N] (fp32, row stride lf) = A [16 rt][K] (bf16,
   row stride la) W^T, W [N][K] bf16: a warp per 16-column tile */
struct pfc_no_epi {
    PFC_HD void operator()(int, int, int, float) const {}
};
PFC_DEV static inline void pfc_rf_gemm(int rt, int tid, float *F, int lf, const pfc_bf *A, int la, const pfc_bf *W, int N,
                                       int K) {
    int t;
    for (t = tid / 32; t < N / 16; t += PFC_ATT_THREADS / 32)
        pfc_mma_rows(rt, F + t * 16, lf, A, la, W + (size_t)t * 16 * K, K, K / 16, NULL, tid % 32, pfc_no_epi());
}
/* whether the fused rows can run for this model (sizes, alignment, shared
   memory for one row tile); g->row_fused says whether they do */
static int pfc_rf_possible(const pf_cuda *g, size_t smem_max) {
    const pf_model *m = g->m;
    const pf_config *c = &m->cfg;
    int l;
    if (!g->o.bf16 || !g->wmma || c->dim % 16 || c->mlp_dim % 16 || m->stem_size % 16 || m->branch_size % 16 ||
        pfc_rf_layout(c->dim, c->mlp_dim, 1, c->residual == PF_PRENORM).total > smem_max)
        return 0;
    for (l = 0; l < c->depth; l++) {
        pfc_layer_off o = pfc_layer(m, l);
        if (o.qkv_w % 16 || o.proj_w % 16 || o.fc1_w % 16 || o.fc2_w % 16) return 0;
    }
    return 1;
}
/* the rows of the na branches (N token rows each) from layer lm's
   attention output on: lm's projection, residual, LN2, MLP and residual
   into x2[lm] (input xin, branch stride xstride); then, when ln >= 0
   (lm + 1, or layer 0 with lm = -1 and xin = X0), layer ln's LN1 and qkv
   GEMM into qkvb[ln], which the attention kernel reads next. Blocks of rt
   row tiles. */
static void pfc_rows_fused(pf_cuda *g, pfc_dev *d, int lm, int ln, int na, size_t N, const float *xin, size_t xstride,
                           int rt, int keep) {
    const pf_model *m = g->m;
    const int D = m->cfg.dim, M = m->cfg.mlp_dim, prenorm = m->cfg.residual == PF_PRENORM, NW = PFC_ATT_THREADS / 32;
    const pfc_rfl L = pfc_rf_layout(D, M, rt, prenorm);
    const int R = L.R, LA = L.LA, LG = L.LG, LF = L.LF;
    const size_t BS = m->branch_size, nt = (N + R - 1) / R;
    const float *W = d->params + m->stem_size;
    const pfc_bf *Wb = (const pfc_bf *)(d->wbf + m->stem_size);
    const pfc_layer_off o = pfc_layer(m, lm >= 0 ? lm : 0), on = pfc_layer(m, ln >= 0 ? ln : 0);
    const uint16_t *atty = lm >= 0 ? d->attyb[lm] : NULL;
    float *x2 = lm >= 0 ? d->x2[lm] : NULL;
    /* the next layer's qkv: bf16 for the tensor-core attention, else fp32
       (with the bias added when the attention does not add it) */
    const int nxt = ln >= 0;
    uint16_t *qkvb = nxt && g->tc_att ? d->qkvb[ln] : NULL;
    float *qkvf = nxt && !g->tc_att ? d->qkv[ln] : NULL;
    const float *bq = nxt && !g->fused_att && on.qkv_b != (size_t)-1 ? W + on.qkv_b : NULL;
    /* a training forward also stores what the backward reads: x1, the
       LayerNorms' statistics and outputs (bf16), fc1's output (bf16,
       before its bias) and GELU's */
    float *x1g = keep && lm >= 0 ? d->x1[lm] : NULL;
    uint16_t *hbg = keep && lm >= 0 ? d->hb[lm] : NULL, *gtwg = keep && lm >= 0 ? d->gtw[lm] : NULL;
    pfc_rf_keep k2 = {NULL, NULL, NULL, 0, 0}, k1 = k2;
    if (keep && lm >= 0) k2.mean = d->ln2_mean[lm], k2.rstd = d->ln2_rstd[lm], k2.yb = d->u2b[lm];
    if (keep && ln >= 0) k1.mean = d->ln1_mean[ln], k1.rstd = d->ln1_rstd[ln], k1.yb = d->u1b[ln];
    pfc_blocks(d, (size_t)na * nt, PFC_ATT_THREADS, L.total,
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* the rows of x (zero past N) and of the attention output */
            const size_t j = blk / nt, r0 = blk % nt * R;
            float *X = PFC_FL(sm, L.x);
            pfc_bf *A = PFC_BF(sm, L.a);
            int idx;
            for (idx = tid; idx < R * D; idx += PFC_ATT_THREADS) {
                const size_t r = r0 + idx / D;
                X[idx] = r < N ? xin[j * xstride + r * D + idx % D] : 0.0f;
                if (atty) A[idx / D * LA + idx % D] = pfc_bf_of(r < N ? pfc_from_bf16(atty[(j * N + r) * D + idx % D]) : 0.0f);
            }
        },
        /* the normed residual adds LN1(x) (u), recomputed here */
        PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; if (atty && !prenorm) pfc_rf_ln(0, tid, R, PFC_FL(sm, L.x), D, PFC_FL(sm, L.red), NULL, NULL, NULL, NULL, 0); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; if (atty && !prenorm) pfc_rf_ln(1, tid, R, PFC_FL(sm, L.x), D, PFC_FL(sm, L.red), NULL, NULL, NULL, NULL, 0); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) {
            const size_t j = blk / nt;
            if (atty && !prenorm)
                pfc_rf_ln(2, tid, R, PFC_FL(sm, L.x), D, PFC_FL(sm, L.red), W + j * BS + o.ln1_w, W + j * BS + o.ln1_b,
                          PFC_FL(sm, L.u), NULL, 0);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* the projection, into f */
            if (atty) pfc_rf_gemm(rt, tid, PFC_FL(sm, L.f), LF, PFC_BF(sm, L.a), LA, Wb + blk / nt * BS + o.proj_w, D, D);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* x1 = (x | u) + (proj + b) into x, and LN2's partial sums */
            const size_t j = blk / nt, r0 = blk % nt * R;
            const float *F = PFC_FL(sm, L.f), *res = PFC_FL(sm, prenorm ? L.x : L.u), *bp = W + j * BS + o.proj_b;
            float *X = PFC_FL(sm, L.x);
            int r, c;
            if (!atty) return;
            for (r = tid / 16; r < R; r += PFC_ATT_THREADS / 16)
                for (c = tid % 16; c < D; c += 16) {
                    X[r * D + c] = (pfc_from_bf16(pfc_to_bf16(F[r * LF + c])) + bp[c]) + res[r * D + c];
                    if (x1g && r0 + r < N) x1g[(j * N + r0 + r) * D + c] = X[r * D + c];
                }
            pfc_rf_ln(0, tid, R, X, D, PFC_FL(sm, L.red), NULL, NULL, NULL, NULL, 0);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; if (atty) pfc_rf_ln(1, tid, R, PFC_FL(sm, L.x), D, PFC_FL(sm, L.red), NULL, NULL, NULL, NULL, 0); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* u2 = LN2(x1): fp32 into u (the normed residual), bf16 into a for fc1 */
            const size_t j = blk / nt, r0 = blk % nt * R;
            pfc_rf_keep k = k2;
            k.row0 = j * N + r0, k.n = N - r0 < (size_t)R ? (int)(N - r0) : R;
            if (atty)
                pfc_rf_ln(2, tid, R, PFC_FL(sm, L.x), D, PFC_FL(sm, L.red), W + j * BS + o.ln2_w, W + j * BS + o.ln2_b,
                          prenorm ? NULL : PFC_FL(sm, L.u), PFC_BF(sm, L.a), LA, k);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* g = GELU(u2 W1^T + b1) (the product rounded to bf16 first), bf16 */
            const size_t j = blk / nt, r0 = blk % nt * R;
            const float *b1 = W + j * BS + o.fc1_b;
            pfc_bf *G = PFC_BF(sm, L.gb);
            int t;
            if (atty)
                for (t = tid / 32; t < M / 16; t += NW)
                    pfc_mma_rows(rt, NULL, 0, PFC_BF(sm, L.a), LA, Wb + j * BS + o.fc1_w + (size_t)t * 16 * D, D, D / 16,
                                 PFC_FL(sm, L.scr) + tid / 32 * 256, tid % 32, PFC_LAMBDA(int r, int i, int jj, float v) {
                        const int c = t * 16 + jj;
                        const size_t row = r0 + (size_t)r * 16 + i;
                        const uint16_t h = pfc_to_bf16(v);
                        const float x = pfc_from_bf16(h) + b1[c], y = 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
                        G[(r * 16 + i) * LG + c] = pfc_bf_of(y);
                        if (hbg && row < N) hbg[(j * N + row) * M + c] = h, gtwg[(j * N + row) * M + c] = pfc_to_bf16(y);
                    });
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* fc2, into f */
            if (atty) pfc_rf_gemm(rt, tid, PFC_FL(sm, L.f), LF, PFC_BF(sm, L.gb), LG, Wb + blk / nt * BS + o.fc2_w, D, M);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* x2 = (x1 | u2) + (fc2 + b2) into x, stored; the next LN1's partial sums */
            const size_t j = blk / nt, r0 = blk % nt * R;
            const float *F = PFC_FL(sm, L.f), *res = PFC_FL(sm, prenorm ? L.x : L.u), *b2 = W + j * BS + o.fc2_b;
            float *X = PFC_FL(sm, L.x);
            int r, c;
            if (atty)
                for (r = tid / 16; r < R; r += PFC_ATT_THREADS / 16)
                    for (c = tid % 16; c < D; c += 16) {
                        const float v = (pfc_from_bf16(pfc_to_bf16(F[r * LF + c])) + b2[c]) + res[r * D + c];
                        X[r * D + c] = v;
                        if (r0 + r < N) x2[(j * N + r0 + r) * D + c] = v;
                    }
            if (nxt) pfc_rf_ln(0, tid, R, X, D, PFC_FL(sm, L.red), NULL, NULL, NULL, NULL, 0);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { (void)blk; if (nxt) pfc_rf_ln(1, tid, R, PFC_FL(sm, L.x), D, PFC_FL(sm, L.red), NULL, NULL, NULL, NULL, 0); },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* the next layer's u1 = LN1(x), bf16 into a */
            const size_t j = blk / nt, r0 = blk % nt * R;
            pfc_rf_keep k = k1;
            k.row0 = j * N + r0, k.n = N - r0 < (size_t)R ? (int)(N - r0) : R;
            if (nxt)
                pfc_rf_ln(2, tid, R, PFC_FL(sm, L.x), D, PFC_FL(sm, L.red), W + j * BS + on.ln1_w, W + j * BS + on.ln1_b,
                          NULL, PFC_BF(sm, L.a), LA, k);
        },
        PFC_LAMBDA(size_t blk, int tid, float *sm) { /* its qkv GEMM, stored as the GEMM's output (bf16 or fp32) */
            const size_t j = blk / nt, r0 = blk % nt * R;
            int t;
            if (nxt)
                for (t = tid / 32; t < 3 * D / 16; t += NW)
                    pfc_mma_rows(rt, NULL, 0, PFC_BF(sm, L.a), LA, Wb + j * BS + on.qkv_w + (size_t)t * 16 * D, D, D / 16,
                                 PFC_FL(sm, L.scr) + tid / 32 * 256, tid % 32, PFC_LAMBDA(int r, int i, int jj, float v) {
                        const size_t row = r0 + (size_t)r * 16 + i, e = (j * N + row) * 3 * D + t * 16 + jj;
                        if (row >= N) return;
                        if (qkvb) qkvb[e] = pfc_to_bf16(v);
                        else qkvf[e] = bq ? v + bq[j * BS + t * 16 + jj] : v;
                    });
        });
}
/* row tiles per block of the fused rows for na branches of N rows: 0 when
   they do not run (dropout, off; unforced: a training forward, or a batch
   that fills the GPU); 1 for small batches; forced: the most that fit
   (with opts.row_tiles N: N, or the most that fit below it) */
static int pfc_rf_tiles(const pf_cuda *g, const pfc_dev *d, int na, size_t N, int keep, int drop) {
    const pf_config *c = &g->m->cfg;
    int rt;
    if (!g->row_fused || drop || (keep && g->row_fused < 0)) return 0;
    if (!g->row_tiles && (size_t)na * ((N + 15) / 16) <= (size_t)d->sms) return 1;
    if (g->row_fused < 0 && !g->row_tiles) return 0;
    for (rt = g->row_tiles ? g->row_tiles : PFC_MAX_RT; rt > 1; rt--)
        if (pfc_rf_layout(c->dim, c->mlp_dim, rt, c->residual == PF_PRENORM).total <= d->smem_max) break;
    return rt;
}

static pf_status pfc_layers_forward(pf_cuda *g, pfc_dev *d, int na, int B, int img0) {
    const pf_model *m = g->m;
    const pf_config c = m->cfg;
    const int T = m->T, D = c.dim, M = c.mlp_dim, H = c.heads;
    const size_t N = (size_t)B * T, BS = m->branch_size;
    const int drop = m->training && c.dropout > 0.0f, prenorm = c.residual == PF_PRENORM;
    const float p = c.dropout;
    const uint64_t seed = m->dropout_seed, *ctr = d->ctr; /* the counter: read on the device (graphs) */
    const int *gbp = d->d_gb, depth = c.depth;
    const int keep = g->has_labels; /* what only a backward reads (P, the MLP's pre-activation) is kept */
    /* bf16: every GEMM reads u1, atty, u2, g from their twins, so their fp32
       values are written only when something else reads them (the normed
       residual reads u1, u2; the fp32 attention kernels write atty anyway) */
    const int tw = d->wbf != NULL, f32_u = !tw || !prenorm;
    /* bf16: the projection's and fc2's outputs in bf16 (d->gob), added to the fp32 residual stream by the next kernel */
    uint16_t *gob = d->gob;
    float *W = d->params + m->stem_size;
    pf_status st;
    int l, rt;
    if (!na) return PF_OK;
    if ((rt = pfc_rf_tiles(g, d, na, N, keep, drop)) > 0) {
        /* the fused rows (small inference batches, or forced): a layer is its attention and one launch for the rows */
        pfc_rows_fused(g, d, -1, 0, na, N, d->x0, 0, rt, keep);
        for (l = 0; l < depth; l++) {
            pfc_layer_off o = pfc_layer(m, l);
            const int tc = g->tc_att; /* (else the fp32 attention kernels, with the qkv bias added when they do not add it) */
            pfc_attention_fwd(g, d, tc ? NULL : d->qkv[l], tc ? d->qkvb[l] : NULL,
                              o.qkv_b != (size_t)-1 && g->fused_att ? W + o.qkv_b : NULL, BS, (size_t)B, d->att[l], keep,
                              tc ? NULL : d->atty[l], d->attyb[l], (size_t)na * B, T, D, H);
            pfc_rows_fused(g, d, l, l + 1 < depth ? l + 1 : -1, na, N, l ? d->x2[l - 1] : d->x0, l ? N * D : 0, rt, keep);
        }
        return PF_OK;
    }
    for (l = 0; l < depth; l++) {
        pfc_layer_off o = pfc_layer(m, l);
        const float *xin = l ? d->x2[l - 1] : d->x0;
        const size_t xstride = l ? N * D : 0; /* X0 is shared by the branches */
        float *u1 = d->u1[l], *qkv = d->qkv[l], *att = d->att[l], *atty = d->atty[l], *x1 = d->x1[l];
        float *u2 = d->u2[l], *hh = d->h[l], *gg = d->g[l], *x2 = d->x2[l];
        const size_t rows = (size_t)na * N;
        /* (the LN1 of the later layers ran with the previous layer's last epilogue) */
        if (l == 0)
            pfc_layernorm_fwd(d, f32_u ? u1 : NULL, tw ? d->u1b[0] : NULL, d->ln1_mean[0], d->ln1_rstd[0], xin, xstride,
                              W + o.ln1_w, W + o.ln1_b, rows, D, N, BS);
        /* qkv = u1 Wqkv^T (+ b): one GEMM for all branches (in bf16 for the tensor-core attention) */
        if ((st = pfc_gemm_bf(g, d, 0, 1, (int)N, 3 * D, D, u1, D, (long long)N * D, W + o.qkv_w, D, (long long)BS, qkv,
                              3 * D, (long long)N * 3 * D, na, 0, NULL, NULL, g->tc_att ? d->qkvb[l] : NULL)) != PF_OK)
            return st;
        /* (the fused attention adds the qkv bias as it loads q, k, v) */
        if (o.qkv_b != (size_t)-1 && !g->fused_att) pfc_add_bias(d, qkv, W + o.qkv_b, rows, 3 * D, N, BS);
        pfc_attention_fwd(g, d, qkv, g->tc_att ? d->qkvb[l] : NULL, o.qkv_b != (size_t)-1 && g->fused_att ? W + o.qkv_b : NULL,
                          BS, (size_t)B, att, keep, atty, tw ? d->attyb[l] : NULL, (size_t)na * B, T, D, H);
        /* x1 = (x | u1) + Drop(atty Wp^T + bp), then u2 = LN2(x1) in the same launch */
        if ((st = pfc_gemm_bf(g, d, 0, 1, (int)N, D, D, atty, D, (long long)N * D, W + o.proj_w, D, (long long)BS, x1, D,
                              (long long)N * D, na, 0, NULL, NULL, gob)) != PF_OK) return st;
        {
            const float *bias = W + o.proj_b;
            pfc_layernorm_fwd_pre(d, f32_u ? u2 : NULL, tw ? d->u2b[l] : NULL, d->ln2_mean[l], d->ln2_rstd[l], x1, N * D,
                                  W + o.ln2_w, W + o.ln2_b, rows, D, N,
                                  BS, 1, PFC_LAMBDA(size_t i) {
                size_t br = i / (N * D), e = i % (N * D);
                float v = (gob ? pfc_from_bf16(gob[i]) : x1[i]) + bias[br * BS + e % D];
                if (drop) v *= pfc_keep(pf_dropout_key(seed, *ctr, pf_dropout_site(depth, gbp[br], l, 0)), (size_t)img0 * T * D + e, p);
                x1[i] = v + (prenorm ? xin[br * xstride + e] : u1[i]);
            });
        }
        /* h = u2 W1^T (bf16: into hb) */
        if ((st = pfc_gemm_bf(g, d, 0, 1, (int)N, M, D, u2, D, (long long)N * D, W + o.fc1_w, D, (long long)BS, hh, M,
                              (long long)N * M, na, 0, NULL, NULL, tw ? d->hb[l] : NULL)) != PF_OK) return st;
        {   /* g = Drop(GELU(h + b1)) (a backward adds b1 to h again) */
            const float *bias = W + o.fc1_b;
            uint16_t *ggb = tw ? d->gtw[l] : NULL;
            const uint16_t *hhb = tw ? d->hb[l] : NULL;
            pfc_for(d, rows * M, PFC_LAMBDA(size_t i) {
                size_t br = i / (N * M), e = i % (N * M);
                float x = (hhb ? pfc_from_bf16(hhb[i]) : hh[i]) + bias[br * BS + e % M], v;
                v = 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
                if (drop) v *= pfc_keep(pf_dropout_key(seed, *ctr, pf_dropout_site(depth, gbp[br], l, 1)), (size_t)img0 * T * M + e, p);
                if (!ggb) gg[i] = v;
                if (ggb) ggb[i] = pfc_to_bf16(v);
            });
        }
        if ((st = pfc_gemm_bf(g, d, 0, 1, (int)N, D, M, gg, M, (long long)N * M, W + o.fc2_w, M, (long long)BS, x2, D,
                              (long long)N * D, na, 0, NULL, NULL, gob)) != PF_OK) return st;
        {   /* x2 = (x1 | u2) + Drop(g W2^T + b2); with the next layer's LN1 when there is one */
            const float *bias = W + o.fc2_b;
            auto epi = PFC_LAMBDA(size_t i) {
                size_t br = i / (N * D), e = i % (N * D);
                float v = (gob ? pfc_from_bf16(gob[i]) : x2[i]) + bias[br * BS + e % D];
                if (drop) v *= pfc_keep(pf_dropout_key(seed, *ctr, pf_dropout_site(depth, gbp[br], l, 2)), (size_t)img0 * T * D + e, p);
                x2[i] = v + (prenorm ? x1[i] : u2[i]);
            };
            if (l + 1 < depth) {
                pfc_layer_off on = pfc_layer(m, l + 1);
                pfc_layernorm_fwd_pre(d, f32_u ? d->u1[l + 1] : NULL, tw ? d->u1b[l + 1] : NULL, d->ln1_mean[l + 1],
                                      d->ln1_rstd[l + 1], x2, N * D, W + on.ln1_w,
                                      W + on.ln1_b, rows, D, N, BS, 1, epi);
            } else {
                pfc_for(d, rows * D, epi);
            }
        }
    }
    return PF_OK;
}

/* root of each replica: embedding into d->x0 from d->xin */
static pf_status pfc_embed_forward(pf_cuda *g, pfc_dev *d, int B, int img0) {
    const pf_model *m = g->m;
    const pf_config c = m->cfg;
    const int T = m->T, D = c.dim, NP = m->n_patches, pd = m->patch_dim, C = c.channels, S = c.image_size,
              P = c.patch_size, G = S / P;
    const float *xin = d->xin, *W = d->params, *bias = d->params + (size_t)D * pd, *cls = bias + D, *pos = cls + D;
    float *patches = d->patches, *etmp = d->etmp, *x0 = d->x0;
    uint16_t *pb = d->patchesb;
    const int drop = m->training && c.emb_dropout > 0.0f;
    const float p = c.emb_dropout;
    const uint64_t seed = m->dropout_seed, *ctr = d->ctr;
    pf_status st;
    pfc_for(d, (size_t)B * NP * pd, PFC_LAMBDA(size_t i) {
        size_t n = i / pd, r = i % pd, b = n / NP, pp = n % NP;
        int ch = (int)(r / (P * P)), py = (int)(r / P % P), px = (int)(r % P), gy = (int)(pp / G), gx = (int)(pp % G);
        const float v = xin[(((size_t)b * C + ch) * S + gy * P + py) * S + gx * P + px];
        if (pb) pb[i] = pfc_to_bf16(v); /* bf16: the GEMMs read only the twin */
        else patches[i] = v;
    });
    if ((st = pfc_gemm(g, d, 0, 1, B * NP, D, pd, patches, pd, 0, W, pd, 0, etmp, D, 0, 1, 0)) != PF_OK) return st;
    pfc_for(d, (size_t)B * T * D, PFC_LAMBDA(size_t i) {
        size_t b = i / ((size_t)T * D), td = i % ((size_t)T * D), t = td / D, e = td % D;
        float v = t == 0 ? cls[e] + pos[td] : (etmp[(b * NP + t - 1) * D + e] + bias[e]) + pos[td];
        if (drop) v *= pfc_keep(pf_dropout_key(seed, *ctr, 0), (size_t)img0 * T * D + i, p);
        x0[i] = v;
    });
    return PF_OK;
}

/* the aggregate's element e of [B][T][D] from the na branch outputs x2
   ([na][B][T][D], ND = B T D apart): X0 + the sum of their deltas, or their
   sum */
PFC_HD static inline float pfc_agg_at(const float *x2, const float *x0, int na, size_t ND, size_t e, int delta) {
    float s = 0;
    int j;
    for (j = 0; j < na; j++) s += delta ? x2[j * ND + e] - x0[e] : x2[j * ND + e];
    return delta ? x0[e] + s : s;
}

/* root: pool, final LN, head, softmax, per-image loss; the pooling reads
   d->agg, or with x2 (the na branches all on this device) aggregates the
   rows it pools itself (for the cls token: one row of T) */
static pf_status pfc_head_forward(pf_cuda *g, pfc_dev *d, int B, int with_labels, float ls, const float *x2, int na) {
    const pf_model *m = g->m;
    const pf_config c = m->cfg;
    const int T = m->T, D = c.dim, K = c.classes, pool = c.pool, delta = c.aggregate == PF_AGG_DELTA;
    const size_t ND = (size_t)B * T * D;
    const float *head = d->params + pfc_head_start(m, d->nb);
    const float *agg = d->agg, *x0 = d->x0;
    float *pooled = d->pooled, *logits = d->logits, *probs = d->probs;
    const int *labels = d->labels;
    double *rowloss = d->rowloss;
    /* pooling (the cls token or the mean over tokens), the final LN, the
       head's logits (fp32 sums, a thread per row and class) and the
       softmax with the per-image loss (a thread per row): one launch */
    const float *Wh = head + 2 * D, *hb = head + 2 * D + (size_t)K * D;
    const float *uf = d->uf;
    const int R = PFC_LN_ROWS;
    pfc_layernorm_fwd_post(d, d->uf, d->ufb, d->lnf_mean, d->lnf_rstd, pooled, (size_t)B * D, head, head + D, (size_t)B, D,
                           (size_t)B, 0, 1, PFC_LAMBDA(size_t i) {
        size_t b = i / D, e = i % D;
        if (pool == PF_POOL_CLS) pooled[i] = x2 ? pfc_agg_at(x2, x0, na, ND, b * T * D + e, delta) : agg[b * T * D + e];
        else {
            float s = 0;
            int t;
            for (t = 0; t < T; t++) s += x2 ? pfc_agg_at(x2, x0, na, ND, (b * T + t) * D + e, delta) : agg[(b * T + t) * D + e];
            pooled[i] = s / (float)T;
        }
    },
    PFC_LAMBDA(size_t blk, int tid, float *sm) { /* logits */
        int idx, e;
        (void)sm;
        for (idx = tid; idx < R * K; idx += 32 * R) {
            const size_t r = blk * R + idx / K;
            const int j = idx % K;
            float s = 0;
            if (r >= (size_t)B) continue;
            for (e = 0; e < D; e++) s += uf[r * D + e] * Wh[(size_t)j * D + e];
            logits[r * K + j] = s + hb[j];
        }
    },
    PFC_LAMBDA(size_t blk, int tid, float *sm) { /* softmax, loss */
        const size_t b = blk * R + tid;
        float *z, *pr, mx, s = 0;
        int j;
        (void)sm;
        if (tid >= R || b >= (size_t)B) return;
        z = logits + b * K, pr = probs + b * K;
        mx = z[0];
        for (j = 1; j < K; j++) if (z[j] > mx) mx = z[j];
        for (j = 0; j < K; j++) { pr[j] = expf(z[j] - mx); s += pr[j]; }
        for (j = 0; j < K; j++) pr[j] /= s;
        if (with_labels) {
            double lse = (double)mx + log((double)s), sumlog = 0;
            for (j = 0; j < K; j++) sumlog += (double)z[j] - lse;
            rowloss[b] = -(1.0 - ls) * ((double)z[labels[b]] - lse) - ls * sumlog / K;
        }
    });
    return PF_OK;
}

/* The device work of a forward pass, from the images in xin to the logits
   (and per-image losses with labels): queued, nothing waited for. */
static pf_status pfc_forward_work(pf_cuda *g, int Bper, int k, int with_labels, float label_smoothing) {
    pf_model *m = g->m;
    const pf_config *c = &m->cfg;
    const size_t TD = (size_t)m->T * c->dim;
    const int coll = g->group > 1 || g->o.collectives; /* the branch sums travel between devices */
    float *bufs[PFC_MAX_DEV];
    pf_status st;
    int i;
    /* embedding on each replica's root (its slice of the batch) */
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if (d->pos != 0) continue;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if ((st = pfc_embed_forward(g, d, Bper, d->replica * Bper)) != PF_OK) return st;
    }
    if (coll) {
        for (i = 0; i < g->ndev; i++) bufs[i] = g->dev[i].x0;
        if ((st = pfc_broadcast(g, PFC_GROUP, bufs, (size_t)Bper * TD, "x0")) != PF_OK) return st;
    }
    /* branches, then each device's sum of its branch outputs (or deltas) to
       send; with the branches on one device the head aggregates what it
       pools itself */
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        int na = pfc_active_local(d, k), img0 = d->replica * Bper;
        const size_t ND = (size_t)Bper * TD;
        const float *x2 = d->x2[c->depth - 1], *x0 = d->x0;
        float *psum = d->psum;
        const int delta = c->aggregate == PF_AGG_DELTA;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if ((st = pfc_layers_forward(g, d, na, Bper, img0)) != PF_OK) return st;
        if (coll)
            pfc_for(d, ND, PFC_LAMBDA(size_t e) {
                float s = 0;
                int j;
                for (j = 0; j < na; j++) s += delta ? x2[j * ND + e] - x0[e] : x2[j * ND + e];
                psum[e] = s;
            });
    }
    if (coll) {
        size_t counts[PFC_MAX_DEV];
        for (i = 0; i < g->ndev; i++) { bufs[i] = g->dev[i].psum; counts[i] = (size_t)Bper * TD; }
        if ((st = pfc_reduce(g, PFC_GROUP, bufs, counts, 0, "branch outputs")) != PF_OK) return st;
    }
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        const float *psum = d->psum, *x0 = d->x0;
        float *agg = d->agg;
        const int delta = c->aggregate == PF_AGG_DELTA;
        if (d->pos != 0) continue;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if (coll) pfc_for(d, (size_t)Bper * TD, PFC_LAMBDA(size_t e) { agg[e] = delta ? x0[e] + psum[e] : psum[e]; });
        if ((st = pfc_head_forward(g, d, Bper, with_labels, label_smoothing, coll ? NULL : d->x2[c->depth - 1],
                                   pfc_active_local(d, k))) != PF_OK) return st;
    }
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* CUDA graphs: the parts of a step */

/* CUDA graphs (one device, no collectives): each part of a step (forward,
   backward, optimizer) runs as a graph per key, the launch sizes and
   constants its kernels were captured with; what changes from step to step
   (images, labels, the dropout counter, the optimizer's tables) is copied
   to fixed device addresses before the launch. The second call with a key
   is captured (the first warms cuBLAS up) and every later one replays it
   with a single launch; the oldest entry makes room. Emulated, a graph is
   the list of launches recorded while capturing, each with the arguments it
   had then, and a replay runs that list: a value missing from the key
   shows as a stale argument, as on a GPU. */
typedef pf_status (*pfc_work_fn)(pf_cuda *g, const void *arg);
static int pfc_graphs_on(const pf_cuda *g) { return g->use_graphs && g->ndev == 1 && !g->o.collectives; }
#ifdef PF_CUDA_EMULATE
static void pfc_graph_free(pfc_graph *s) { delete s->exec; s->exec = NULL; }
static pf_status pfc_graph_launch(pfc_dev *d, pfc_graph *s) {
    size_t i;
    pf_status st;
    for (i = 0; i < s->exec->size(); i++)
        if ((st = (*s->exec)[i]()) != PF_OK) return st;
    (void)d;
    return PF_OK;
}
static pf_status pfc_capture(pf_cuda *g, pfc_graph *s, pfc_work_fn work, const void *arg) {
    pfc_dev *d = &g->dev[0];
    pf_status st;
    if (!(s->exec = new (std::nothrow) pfc_emu_ops)) return pf_fail(PF_ERR_NOMEM, "out of host memory");
    d->rec = s->exec;
    st = work(g, arg);
    d->rec = NULL;
    if (st != PF_OK) pfc_graph_free(s);
    return st;
}
#else
static void pfc_graph_free(pfc_graph *s) { if (s->exec) cudaGraphExecDestroy(s->exec); s->exec = NULL; }
static pf_status pfc_graph_launch(pfc_dev *d, pfc_graph *s) {
    PFC_CUDA(d, cudaGraphLaunch(s->exec, d->stream));
    pfc_after_launch(d, "a CUDA graph", -1); /* (its kernels were checked as they were captured) */
    return PF_OK;
}
static pf_status pfc_capture(pf_cuda *g, pfc_graph *s, pfc_work_fn work, const void *arg) {
    pfc_dev *d = &g->dev[0];
    cudaGraph_t graph = NULL;
    cudaError_t e;
    pf_status st;
    PFC_CUDA(d, cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeRelaxed));
    st = work(g, arg);
    e = cudaStreamEndCapture(d->stream, &graph);
    if (st != PF_OK) { if (graph) cudaGraphDestroy(graph); return st; }
    if (e != cudaSuccess) return pfc_cuda_fail(e, "capturing a CUDA graph", d->id);
    e = cudaGraphInstantiate(&s->exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) { s->exec = NULL; return pfc_cuda_fail(e, "cudaGraphInstantiate", d->id); }
    return PF_OK;
}
#endif
static pf_status pfc_graph_run(pf_cuda *g, pfc_graph *cache, int n, const uint64_t *key, pfc_work_fn work,
                               const void *arg) {
    pfc_dev *d = &g->dev[0];
    pfc_graph *slot = NULL;
    pf_status st;
    int i;
    for (i = 0; i < n && !slot; i++)
        if (!memcmp(cache[i].key, key, sizeof cache[i].key)) slot = &cache[i];
    if (slot && slot->exec) { /* captured: replay */
        d->launches += slot->launches;
        return pfc_graph_launch(d, slot);
    }
    if (!slot) { /* first time: run it plainly, remember the key (in the oldest slot) */
        pfc_graph_free(&cache[n - 1]);
        memmove(cache + 1, cache, (size_t)(n - 1) * sizeof *cache);
        memcpy(cache[0].key, key, sizeof cache[0].key);
        cache[0].exec = NULL;
        return work(g, arg);
    }
    slot->launches = d->launches; /* second time: capture, then launch */
    st = pfc_capture(g, slot, work, arg);
    slot->launches = d->launches - slot->launches;
    return st != PF_OK ? st : pfc_graph_launch(d, slot);
}

/* a kernel launch that failed (too many threads or too much shared memory
   for the device, an invalid configuration) leaves its error for
   cudaGetLastError only: asked after each part of a step. What the set-up
   left there (NCCL's probes of kernels not built for this GPU do) is
   cleared once, at the end of pf_cuda_create (pfc_clear_errors); nothing
   else is cleared, so an error shows in the part that raised it. A failed
   cudaFuncSetAttribute is reported here too, and first the fault a checked
   launch kept (pfc_after_launch), with the kernel's line. */
static pf_status pfc_launch_status(pf_cuda *g) {
    int i;
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if (d->fault) { /* a checked launch (or, emulated, an injected fault) */
#ifdef PF_CUDA_EMULATE
            const char *why = "an illegal memory access was encountered (emulated fault)";
#else
            const char *why = cudaGetErrorString((cudaError_t)d->fault);
#endif
            const int line = d->fault_line;
            d->fault = 0;
            if (line > 0)
                return pf_fail(PF_ERR_IO, "GPU %d: %s launched at line %d of paraformer_cuda.cu failed: %s", d->id,
                               d->fault_what, line, why);
            if (line < 0)
                return pf_fail(PF_ERR_IO, "GPU %d: a kernel of a CUDA graph failed: %s (PF_CUDA_GRAPHS=0 with "
                               "PF_CUDA_CHECK_LAUNCHES=1 names it)", d->id, why);
            return pf_fail(PF_ERR_IO, "GPU %d: a kernel failed: %s (PF_CUDA_CHECK_LAUNCHES=1 names it)", d->id, why);
        }
#ifndef PF_CUDA_EMULATE
        cudaError_t e;
        if (d->attr_err) {
            e = (cudaError_t)d->attr_err;
            d->attr_err = 0;
            return pf_fail(PF_ERR_IO, "GPU %d: allowing %zu bytes of shared memory per block failed: %s", d->id,
                           d->smem_max, cudaGetErrorString(e));
        }
        cudaSetDevice(d->id);
        if ((e = cudaGetLastError()) != cudaSuccess)
            return pf_fail(PF_ERR_IO, "GPU %d: a kernel launch failed: %s%s", d->id, cudaGetErrorString(e),
                           d->check || !pfc_kernel_fault(e) ? "" : " (PF_CUDA_CHECK_LAUNCHES=1 names the kernel)");
#endif
    }
    return PF_OK;
}
static void pfc_clear_errors(pf_cuda *g) {
#ifndef PF_CUDA_EMULATE
    int i;
    for (i = 0; i < g->ndev; i++) {
        cudaSetDevice(g->dev[i].id);
        cudaGetLastError();
    }
#else
    (void)g;
#endif
}
/* one part of a step: as a graph (pfc_graph_run) when graphs are on, else
   directly; then the launches' status */
static pf_status pfc_run_part(pf_cuda *g, pfc_graph *cache, int n, const uint64_t *key, pfc_work_fn work,
                              const void *arg) {
    pf_status st = pfc_graphs_on(g) ? pfc_graph_run(g, cache, n, key, work, arg) : work(g, arg);
    return st != PF_OK ? st : pfc_launch_status(g);
}

struct pfc_fwd_args {
    int Bper, k, with_labels;
    float ls;
};
static pf_status pfc_forward_run(pf_cuda *g, const void *arg) {
    const pfc_fwd_args *a = (const pfc_fwd_args *)arg;
    return pfc_forward_work(g, a->Bper, a->k, a->with_labels, a->ls);
}
/* the model's dropout rates and seed, for keys (kernels capture them) */
static uint64_t pfc_dropout_key(const pf_model *m) {
    uint32_t p1, p2;
    memcpy(&p1, &m->cfg.dropout, 4);
    memcpy(&p2, &m->cfg.emb_dropout, 4);
    return m->training ? ((uint64_t)p1 << 32 | p2) ^ pf_mix64(m->dropout_seed) : 0;
}

/* m->loss of the last forward with labels: its per-image losses to the host,
   summed in order (waits for the forward) */
static pf_status pfc_finish_loss(pf_cuda *g) {
    double total = 0;
    pf_status st;
    int i, n;
    if (!g->loss_pending) return PF_OK;
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if (d->pos != 0) continue;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if ((st = pfc_d2h(d, g->host_loss + (size_t)d->lrep * g->Bper, d->rowloss, (size_t)g->Bper * 8)) != PF_OK)
            return st;
    }
    for (n = 0; n < g->B; n++) total += g->host_loss[n];
    g->m->loss = total / g->B;
    g->loss_pending = 0;
    return PF_OK;
}

PFDEF pf_status pf_cuda_forward(pf_cuda *g, const float *x, const int *labels, int B, float label_smoothing, float *loss) {
    pf_model *m;
    const pf_config *c;
    size_t per;
    int k, i, n, Bper;
    pf_status st;
    PFC_NEED(g, "pf_cuda_forward", "the context");
    m = g->m; c = &m->cfg;
    per = (size_t)c->channels * c->image_size * c->image_size;
    k = m->active;
    if (B < 1 || B > g->max_batch) return pf_fail(PF_ERR_ARG, "pf_cuda_forward: batch %d outside 1..%d", B, g->max_batch);
    if (B % g->nlrep) return pf_fail(PF_ERR_ARG, "pf_cuda_forward: batch %d is not a multiple of the %d replicas", B, g->nlrep);
    if (k < 1 || k > c->branches) return pf_fail(PF_ERR_ARG, "active branches %d outside 1..%d", k, c->branches);
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) return pf_fail(PF_ERR_ARG, "label smoothing %g must be in [0, 1]", label_smoothing);
    if (m->training && m->drop_path > 0.0f)
        return pf_fail(PF_ERR_ARG, "pf_cuda_forward: drop-path (stochastic depth, m->drop_path %g) runs on the CPU only",
                       (double)m->drop_path);
    if (!x && g->input_B != B)
        return pf_fail(PF_ERR_ARG, "pf_cuda_forward: no images on the device for a batch of %d (x is NULL)", B);
    if (labels)
        for (n = 0; n < B; n++)
            if (labels[n] < 0 || labels[n] >= c->classes)
                return pf_fail(PF_ERR_ARG, "label %d of image %d outside 0..%d", labels[n], n, c->classes - 1);
    Bper = B / g->nlrep;
    g->denom = (size_t)Bper * g->o.replicas;
    g->B = B;
    g->Bper = Bper;
    g->has_labels = labels != NULL;
    g->loss_pending = 0;
    g->ls = label_smoothing;
    g->fwd_active = k;
    if (m->training) m->dropout_counter++;
    g->n_trace = 0;
    /* the dropout counter to every device; the images (unless they are
       already there) and labels to each replica's root */
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if (m->training && (c->dropout > 0.0f || c->emb_dropout > 0.0f) &&
            (st = pfc_h2d(d, d->ctr, &m->dropout_counter, sizeof m->dropout_counter)) != PF_OK) return st;
        if (d->pos != 0) continue;
        if (x && (st = pfc_h2d(d, d->xin, x + (size_t)d->lrep * Bper * per, (size_t)Bper * per * 4)) != PF_OK) return st;
        if (labels && (st = pfc_h2d(d, d->labels, labels + (size_t)d->lrep * Bper, (size_t)Bper * sizeof(int))) != PF_OK)
            return st;
    }
    if (x) g->input_B = B;
    {
        pfc_fwd_args a = {Bper, k, labels != NULL, label_smoothing};
        uint64_t key[PFC_KEY] = {1, (uint64_t)Bper, (uint64_t)k, (uint64_t)(labels != NULL), 0,
                                 (uint64_t)m->training, pfc_dropout_key(m), 0};
        memcpy(&key[4], &label_smoothing, 4);
        st = pfc_run_part(g, g->fwd_graphs, PFC_GRAPHS_FWD, key, pfc_forward_run, &a);
    }
    if (st != PF_OK) return st;
    /* the loss (mean over the batch of this process): now if asked for,
       else when the logits are fetched or the devices synchronised */
    m->loss = 0.0;
    g->loss_pending = labels != NULL;
    if (loss) {
        if ((st = pfc_finish_loss(g)) != PF_OK) return st;
        *loss = (float)m->loss;
    }
    return PF_OK;
}

PFDEF pf_status pf_cuda_logits(pf_cuda *g, float *out) {
    int i, K;
    pf_status st;
    PFC_NEED(g, "pf_cuda_logits", "the context");
    PFC_NEED(out, "pf_cuda_logits", "the output");
    K = g->m->cfg.classes;
    if ((st = pfc_finish_loss(g)) != PF_OK) return st;
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if (d->pos != 0) continue;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if ((st = pfc_d2h(d, out + (size_t)d->lrep * g->Bper * K, d->logits, (size_t)g->Bper * K * 4)) != PF_OK)
            return st;
    }
    return PF_OK;
}

PFDEF pf_status pf_cuda_predict(pf_cuda *g, const float *x, int N, float *out) {
    pf_model *m;
    size_t per;
    int K, R, saved, n0 = 0;
    pf_status st = PF_OK;
    PFC_NEED(g, "pf_cuda_predict", "the context");
    if (N < 0) return pf_fail(PF_ERR_ARG, "pf_cuda_predict: N = %d", N);
    if (N > 0) {
        PFC_NEED(x, "pf_cuda_predict", "the input x");
        PFC_NEED(out, "pf_cuda_predict", "the output");
    }
    m = g->m;
    per = (size_t)m->cfg.channels * m->cfg.image_size * m->cfg.image_size;
    K = m->cfg.classes; R = g->nlrep; saved = m->training;
    m->training = 0;
    while (n0 < N && st == PF_OK) {
        int left = N - n0, B = left < g->max_batch ? left : g->max_batch;
        B -= B % R;
        if (B > 0) {
            st = pf_cuda_forward(g, x + (size_t)n0 * per, NULL, B, 0.0f, NULL);
            if (st == PF_OK) st = pf_cuda_logits(g, out + (size_t)n0 * K);
            n0 += B;
        } else { /* fewer images than replicas: pad with copies of the last */
            float *tmp = (float *)malloc((size_t)R * per * 4), *lg = (float *)malloc((size_t)R * K * 4);
            int r;
            if (!tmp || !lg) st = pf_fail(PF_ERR_NOMEM, "out of memory");
            for (r = 0; st == PF_OK && r < R; r++) memcpy(tmp + r * per, x + (size_t)(n0 + (r < left ? r : left - 1)) * per, per * 4);
            if (st == PF_OK) st = pf_cuda_forward(g, tmp, NULL, R, 0.0f, NULL);
            if (st == PF_OK) st = pf_cuda_logits(g, lg);
            if (st == PF_OK) memcpy(out + (size_t)n0 * K, lg, (size_t)left * K * 4);
            free(tmp);
            free(lg);
            n0 = N;
        }
    }
    m->training = saved;
    return st;
}

/* pf_backend over a context: the trainer's and the evaluator's hooks */
static pf_status pfc_be_forward(void *g, const pf_real *x, const int *labels, int B, float ls, float *loss) {
    return pf_cuda_forward((pf_cuda *)g, x, labels, B, ls, loss);
}
static pf_status pfc_be_backward(void *g) { return pf_cuda_backward((pf_cuda *)g); }
static pf_status pfc_be_step(void *g, const pf_optim *o, double *norm) { return pf_cuda_step((pf_cuda *)g, o, norm); }
static pf_status pfc_be_logits(void *g, pf_real *out) { return pf_cuda_logits((pf_cuda *)g, out); }
static pf_status pfc_be_download(void *g) { return pf_cuda_download((pf_cuda *)g); }
static pf_status pfc_be_upload(void *g) { return pf_cuda_upload((pf_cuda *)g); }

PFDEF pf_status pf_cuda_as_backend(pf_cuda *g, pf_backend *be) {
    if (!g || !be) return pf_fail(PF_ERR_ARG, "pf_cuda_as_backend: %s is NULL", !g ? "the context" : "be");
    memset(be, 0, sizeof *be);
    be->ctx = g;
    be->max_batch = g->max_batch;
    be->forward = pfc_be_forward;
    be->backward = pfc_be_backward;
    be->step = pfc_be_step;
    be->logits = pfc_be_logits;
    be->download = pfc_be_download;
    be->upload = pfc_be_upload;
    return PF_OK;
}

/* ---------------------------------------------------------------------- */
/* backward */

/* out = in masked as the forward's dropout at layer l, site k (0: after the
   projection, 2: after the MLP) masked it: per branch, n_per elements of
   images from img0 on */
static void pfc_dropout_grad(const pf_model *m, pfc_dev *d, float *out, uint16_t *outb, const float *in, size_t n,
                             size_t n_per, int img0, int l, int k) {
    const uint64_t seed = m->dropout_seed, *ctr = d->ctr;
    const int *gbp = d->d_gb, depth = m->cfg.depth;
    const float p = m->cfg.dropout;
    const size_t off = (size_t)img0 * m->T * m->cfg.dim; /* the site's elements are counted from image 0 */
    pfc_for(d, n, PFC_LAMBDA(size_t i) {
        size_t br = i / n_per, e = i % n_per;
        out[i] = in[i] * pfc_keep(pf_dropout_key(seed, *ctr, pf_dropout_site(depth, gbp[br], l, k)), off + e, p);
        if (outb) outb[i] = pfc_to_bf16(out[i]);
    });
}

static pf_status pfc_layers_backward(pf_cuda *g, pfc_dev *d, int na, int B, int img0) {
    const pf_model *m = g->m;
    const pf_config c = m->cfg;
    const int T = m->T, D = c.dim, M = c.mlp_dim, H = c.heads, depth = c.depth;
    const size_t N = (size_t)B * T, BS = m->branch_size, rows = (size_t)na * N;
    const int drop = m->training && c.dropout > 0.0f, prenorm = c.residual == PF_PRENORM;
    const float p = c.dropout;
    const uint64_t seed = m->dropout_seed, *ctr = d->ctr; /* the counter: read on the device (graphs) */
    const int *gbp = d->d_gb;
    float *W = d->params + m->stem_size, *GW = d->grads + m->stem_size;
    float *dcur = d->dcur, *dres = d->dres, *du = d->du, *dh = d->dh, *datty = d->datty, *dqkv = d->dqkv, *datt = d->datt;
    pf_status st;
    int l;
    for (l = depth - 1; l >= 0; l--) {
        pfc_layer_off o = pfc_layer(m, l);
        const float *xin = l ? d->x2[l - 1] : d->x0;
        const size_t xstride = l ? N * D : 0;
        const float *u1 = d->u1[l], *qkv = d->qkv[l], *att = d->att[l], *atty = d->atty[l], *x1 = d->x1[l];
        const float *u2 = d->u2[l], *hh = d->h[l], *gg = d->g[l];
        /* MLP: its output's gradient gm = Drop'(dcur) (in dres; without dropout dcur itself) */
        const float *gm = drop ? dres : dcur, *gp;
        const uint16_t *gmb = drop ? d->dresb : d->dcurb, *gpb = drop ? d->dub : d->dresb; /* their twins */
        uint16_t *dhb = d->dhb; /* NULL in fp32 */
        if (drop) pfc_dropout_grad(m, d, dres, d->dresb, dcur, rows * D, N * D, img0, l, 2);
        /* dh = gm W2; dW2 = gm^T g; db2 */
        if ((st = pfc_gemm_bf(g, d, 0, 0, (int)N, M, D, gm, D, (long long)N * D, W + o.fc2_w, M, (long long)BS, dh, M,
                              (long long)N * M, na, 0, gmb, NULL, dhb)) != PF_OK) return st; /* (bf16: into dhb) */
        if ((st = pfc_gemm_bf(g, d, 1, 0, D, M, (int)N, gm, D, (long long)N * D, gg, M, (long long)N * M, GW + o.fc2_w, M,
                              (long long)BS, na, 0, gmb, NULL, NULL)) != PF_OK) return st;
        if (drop || l == depth - 1) pfc_colsum(d, GW + o.fc2_b, gm, na, N, D, BS); /* (else layer l + 1's LN1 backward summed it) */
        {   /* dh = GELU'(h + b1) Drop'(dh), summed into db1 as it is made (one pass; bf16: only the twin is written) */
            const float *b1 = W + o.fc1_b;
            const uint16_t *hhb = dhb ? d->hb[l] : NULL; /* bf16: h and the GEMM's dh are bf16 (dh in dhb) */
            pfc_colsums(d, GW + o.fc1_b, NULL, BS, na, N, M, PFC_LAMBDA(size_t n, int k) {
                const size_t i = n * M + k, br = n / N, e = i % (N * M);
                float v = dhb ? pfc_from_bf16(dhb[i]) : dh[i], x = (hhb ? pfc_from_bf16(hhb[i]) : hh[i]) + b1[br * BS + k];
                float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
                float pdf = expf(-0.5f * x * x) * 0.39894228040143267794f;
                pfc_f2 s;
                if (drop) v *= pfc_keep(pf_dropout_key(seed, *ctr, pf_dropout_site(depth, gbp[br], l, 1)), (size_t)img0 * T * M + e, p);
                v *= cdf + x * pdf;
                if (dhb) dhb[i] = pfc_to_bf16(v);
                else dh[i] = v;
                s.a = v, s.b = 0.0f;
                return s;
            });
        }
        if ((st = pfc_gemm_bf(g, d, 0, 0, (int)N, D, M, dh, M, (long long)N * M, W + o.fc1_w, D, (long long)BS, du, D,
                              (long long)N * D, na, 0, dhb, NULL, d->gob)) != PF_OK) return st; /* (bf16: du in gob) */
        if ((st = pfc_gemm_bf(g, d, 1, 0, M, D, (int)N, dh, M, (long long)N * M, u2, D, (long long)N * D, GW + o.fc1_w, D,
                              (long long)BS, na, 0, dhb, NULL, NULL)) != PF_OK) return st;
        /* LN2: prenorm dx1 = dcur + LN2'(du); normed dx1 = LN2'(du + dcur); into dres */
        pfc_layernorm_bwd(d, dres, d->dresb, GW + o.ln2_w, GW + o.ln2_b, drop ? NULL : GW + o.proj_b, du, d->gob, prenorm ? NULL : dcur, prenorm ? dcur : NULL, x1,
                          N * D, W + o.ln2_w, d->ln2_mean[l], d->ln2_rstd[l], N, D, BS, na);
        /* attention: the projection's gradient gp = Drop'(dx1) (in du; without dropout dres itself) */
        gp = drop ? du : dres;
        if (drop) pfc_dropout_grad(m, d, du, d->dub, dres, rows * D, N * D, img0, l, 0);
        /* datty = gp Wp (in bf16 for the tensor-core attention) */
        if ((st = pfc_gemm_bf(g, d, 0, 0, (int)N, D, D, gp, D, (long long)N * D, W + o.proj_w, D, (long long)BS, datty, D,
                              (long long)N * D, na, 0, gpb, NULL, g->tc_att ? d->dattyb : NULL)) != PF_OK) return st;
        if ((st = pfc_gemm_bf(g, d, 1, 0, D, D, (int)N, gp, D, (long long)N * D, atty, D, (long long)N * D, GW + o.proj_w,
                              D, (long long)BS, na, 0, gpb, NULL, NULL)) != PF_OK) return st;
        if (drop) pfc_colsum(d, GW + o.proj_b, gp, na, N, D, BS); /* (else: the LN2 backward summed it) */
        {   /* (on tensor cores the attention's backward also sums the qkv bias's gradient per image) */
            const int qb = o.qkv_b != (size_t)-1, fuse = qb && g->tc_att;
            pfc_attention_bwd(g, d, qkv, g->tc_att ? d->qkvb[l] : NULL, qb && g->fused_att ? W + o.qkv_b : NULL, BS,
                              (size_t)B, att, datty, d->dattyb, dqkv,
                              d->dqkvb, fuse ? d->colpart : NULL, datt, (size_t)na * B, T, D, H);
            if (fuse) pfc_colsums_finish(d, GW + o.qkv_b, NULL, NULL, BS, na, (size_t)B, 3 * D);
            else if (qb) pfc_colsum(d, GW + o.qkv_b, dqkv, na, N, 3 * D, BS);
        }
        /* qkv: du = dqkv Wqkv; dWqkv = dqkv^T u1; dbqkv */
        if ((st = pfc_gemm_bf(g, d, 0, 0, (int)N, D, 3 * D, dqkv, 3 * D, (long long)N * 3 * D, W + o.qkv_w, D,
                              (long long)BS, du, D, (long long)N * D, na, 0, d->dqkvb, NULL, d->gob)) != PF_OK) return st;
        if ((st = pfc_gemm_bf(g, d, 1, 0, 3 * D, D, (int)N, dqkv, 3 * D, (long long)N * 3 * D, u1, D, (long long)N * D,
                              GW + o.qkv_w, D, (long long)BS, na, 0, d->dqkvb, NULL, NULL)) != PF_OK) return st;
        /* LN1: prenorm dx = dx1 + LN1'(du); normed dx = LN1'(du + dx1); into dcur */
        pfc_layernorm_bwd(d, dcur, d->dcurb, GW + o.ln1_w, GW + o.ln1_b,
                          drop || l == 0 ? NULL : GW + pfc_layer(m, l - 1).fc2_b, du, d->gob, prenorm ? NULL : dres, prenorm ? dres : NULL, xin,
                          xstride, W + o.ln1_w, d->ln1_mean[l], d->ln1_rstd[l], N, D, BS, na);
    }
    return PF_OK;
}

static pf_status pfc_backward_work(pf_cuda *g, const void *arg) {
    pf_model *m = g->m;
    const pf_config c = m->cfg;
    const int T = m->T, D = c.dim, K = c.classes, NP = m->n_patches, pd = m->patch_dim, k = g->fwd_active;
    const int Bper = g->Bper;
    const size_t TD = (size_t)T * D, ND = (size_t)Bper * TD;
    const float eps = g->ls, denom = (float)g->denom; /* the mean over every replica's images */
    const int delta = c.aggregate == PF_AGG_DELTA, pool = c.pool;
    float *bufs[PFC_MAX_DEV];
    pf_status st;
    int i;
    (void)arg;
    /* head, final LN, pooling on each replica's root */
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        const float *head = d->params + pfc_head_start(m, d->nb);
        float *ghead = d->grads + pfc_head_start(m, d->nb);
        float *dlogits = d->dlogits, *dagg = d->dagg, *dpool = d->dpool;
        uint16_t *dlb = d->dlogitsb; /* bf16 only */
        const float *probs = d->probs;
        const int *labels = d->labels;
        if (d->pos != 0) continue;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        pfc_for(d, (size_t)Bper * K, PFC_LAMBDA(size_t e) { /* (softmax - target) / B, as the CPU */
            size_t b = e / K;
            int j = (int)(e % K);
            float t = eps / (float)K + (j == labels[b] ? 1 - eps : 0);
            dlogits[e] = (probs[e] - t) / denom;
            if (dlb) dlb[e] = pfc_to_bf16(dlogits[e]);
        });
        if ((st = pfc_gemm_bf(g, d, 0, 0, Bper, D, K, dlogits, K, 0, head + 2 * D, D, 0, d->duf, D, 0, 1, 0, dlb, NULL,
                              NULL)) != PF_OK) return st;
        if ((st = pfc_gemm_bf(g, d, 1, 0, K, D, Bper, dlogits, K, 0, d->uf, D, 0, ghead + 2 * D, D, 0, 1, 0, dlb, NULL,
                              NULL)) != PF_OK) return st;
        pfc_colsum(d, ghead + 2 * D + (size_t)K * D, dlogits, 1, (size_t)Bper, K, 0);
        pfc_layernorm_bwd(d, dpool, NULL, ghead, ghead + D, NULL, d->duf, NULL, NULL, NULL, d->pooled, (size_t)Bper * D, head,
                          d->lnf_mean, d->lnf_rstd, (size_t)Bper, D, 0, 1);
        pfc_for(d, ND, PFC_LAMBDA(size_t e) {
            size_t b = e / TD, t = (e % TD) / D, dd = e % D;
            dagg[e] = pool == PF_POOL_CLS ? (t == 0 ? dpool[b * D + dd] : 0.0f) : dpool[b * D + dd] / (float)T;
        });
    }
    if (g->group > 1 || g->o.collectives) {
        for (i = 0; i < g->ndev; i++) bufs[i] = g->dev[i].dagg;
        if ((st = pfc_broadcast(g, PFC_GROUP, bufs, ND, "d aggregate")) != PF_OK) return st;
    }
    /* branches: each device backpropagates its active branches, sums their
       input gradients into dX0 (device 0 starts from the aggregation's) */
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        int na = pfc_active_local(d, k), img0 = d->replica * Bper;
        float *dcur = d->dcur, *dx0 = d->dx0;
        uint16_t *dcurb = d->dcurb;
        const float *dagg = d->dagg;
        const int root = d->pos == 0;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        pfc_for(d, (size_t)na * ND, PFC_LAMBDA(size_t e) {
            dcur[e] = dagg[e % ND];
            if (dcurb) dcurb[e] = pfc_to_bf16(dcur[e]);
        });
        if ((st = pfc_layers_backward(g, d, na, Bper, img0)) != PF_OK) return st;
        pfc_for(d, ND, PFC_LAMBDA(size_t e) {
            float s = root && delta ? (float)(1 - k) * dagg[e] : 0.0f;
            int j;
            for (j = 0; j < na; j++) s += dcur[j * ND + e];
            dx0[e] = s;
        });
    }
    if (g->group > 1 || g->o.collectives) {
        size_t counts[PFC_MAX_DEV];
        for (i = 0; i < g->ndev; i++) { bufs[i] = g->dev[i].dx0; counts[i] = ND; }
        if ((st = pfc_reduce(g, PFC_GROUP, bufs, counts, 0, "d x0")) != PF_OK) return st;
    }
    /* embedding */
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        int img0 = d->replica * Bper;
        float *dx0 = d->dx0, *dpatch = d->dpatch, *gs = d->grads;
        uint16_t *dpb = d->dpatchb; /* bf16 only */
        float *gb = gs + (size_t)D * pd, *gcls = gb + D, *gpos = gcls + D;
        const int drop = m->training && c.emb_dropout > 0.0f;
        const float p = c.emb_dropout;
        const uint64_t seed = m->dropout_seed, *ctr = d->ctr;
        if (d->pos != 0) continue;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if (drop) pfc_for(d, ND, PFC_LAMBDA(size_t e) { dx0[e] *= pfc_keep(pf_dropout_key(seed, *ctr, 0), (size_t)img0 * TD + e, p); });
        pfc_for(d, TD, PFC_LAMBDA(size_t j) {
            float s = 0;
            int bb;
            for (bb = 0; bb < Bper; bb++) s += dx0[(size_t)bb * TD + j];
            gpos[j] = s;
            if (j < (size_t)D) gcls[j] = s;
        });
        pfc_for(d, (size_t)Bper * NP * D, PFC_LAMBDA(size_t e) {
            size_t b = e / ((size_t)NP * D), r = e % ((size_t)NP * D);
            dpatch[e] = dx0[b * TD + D + r];
            if (dpb) dpb[e] = pfc_to_bf16(dpatch[e]);
        });
        if ((st = pfc_gemm_bf(g, d, 1, 0, D, pd, Bper * NP, dpatch, D, 0, d->patches, pd, 0, gs, pd, 0, 1, 0, dpb, NULL,
                              NULL)) != PF_OK) return st;
        pfc_colsum(d, gb, dpatch, 1, (size_t)Bper * NP, D, 0);
    }
    /* data parallel: sum the gradients over the replicas (devices at the
       same position hold the same branches, so the same layout) */
    if (g->o.replicas > 1 || g->o.collectives) {
        size_t counts[PFC_MAX_DEV];
        for (i = 0; i < g->ndev; i++) { bufs[i] = g->dev[i].grads; counts[i] = g->dev[i].n_local; }
        if ((st = pfc_reduce(g, PFC_POS, bufs, counts, 1, "grads")) != PF_OK) return st;
    }
    return PF_OK;
}

PFDEF pf_status pf_cuda_backward(pf_cuda *g) {
    const pf_model *m;
    PFC_NEED(g, "pf_cuda_backward", "the context");
    m = g->m;
    if (!g->has_labels || g->B < 1) return pf_fail(PF_ERR_ARG, "pf_cuda_backward: the last forward had no labels");
    {
        uint64_t key[PFC_KEY] = {2, (uint64_t)g->Bper, (uint64_t)g->fwd_active, (uint64_t)g->denom, 0,
                                 (uint64_t)m->training, pfc_dropout_key(m), 0};
        memcpy(&key[4], &g->ls, 4);
        return pfc_run_part(g, g->bwd_graphs, PFC_GRAPHS_BWD, key, pfc_backward_work, NULL);
    }
}

/* ---------------------------------------------------------------------- */
/* optimizer */

/* is spec s trainable (the CPU's rule) and where does it live on device d
   (offset into the local layout, or -1 when d does not hold it) */
static long long pfc_spec_local(const pf_cuda *g, const pfc_dev *d, const pf_tensor_spec *s) {
    const pf_model *m = g->m;
    int j;
    if (s->part == PF_PART_STEM) return d->pos == 0 ? (long long)s->offset : -1;
    if (s->part == PF_PART_HEAD)
        return d->pos == 0 ? (long long)(pfc_head_start(m, d->nb) + (s->offset - pfc_head_start(m, m->cfg.branches))) : -1;
    for (j = 0; j < d->nb; j++)
        if (d->gb[j] == s->branch)
            return (long long)(m->stem_size + (size_t)j * m->branch_size +
                               (s->offset - m->stem_size - (size_t)s->branch * m->branch_size));
    return -1;
}

/* The optimizer step, in three parts:
   1. tables (host): per device, the chunks of at most 4096 trainable
      gradients whose squares are summed for clipping (the first replica's
      devices: the replicas hold the same sums), and the tensors AdamW
      updates with their step's constants (bias corrections, learning rate,
      decay); each copied to its device with one transfer;
   2. clipping (devices): the chunks' squared sums (one launch, a block per
      chunk), then one
      thread adds them in order (tensor by tensor, as the specs list them)
      and, on a single device, turns the total into the coefficient without
      the host: clipv = {norm, coefficient}. Several devices add their
      totals on the host in device order and receive the coefficient;
   3. AdamW (devices): one launch over every tensor of the table, each
      thread finding its tensor by binary search; gradients are first scaled
      by the clip coefficient when it is below 1 (and left scaled, as on the
      CPU).
   On one device, 2 and 3 run as a CUDA graph (the tables live at fixed
   addresses, so the graph reads each step's). */
struct pfc_step_args {
    double clip;          /* 0: no clipping */
    size_t nch[PFC_MAX_DEV], nseg[PFC_MAX_DEV], total[PFC_MAX_DEV];
    float b1, b2, eps;
    int adam;
};

static pf_status pfc_step_tables(pf_cuda *g, const pf_optim *o, pfc_step_args *a) {
    pf_model *m = g->m;
    pf_status st;
    int i, t;
    memset(a, 0, sizeof *a);
    a->clip = o->clip > 0.0f ? (double)o->clip : 0.0;
    a->b1 = o->beta1, a->b2 = o->beta2, a->eps = o->eps, a->adam = o->adam;
    for (i = 0; a->clip > 0 && i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        pfc_chunk *ch = d->host_chunks;
        size_t nch = 0;
        if (d->replica != g->dev[0].replica) continue;
        for (t = 0; t < m->n_specs; t++) {
            const pf_tensor_spec *s = &m->specs[t];
            long long off = pfc_spec_local(g, d, s);
            size_t from = pf_param_train_from(m, s), n = s->numel - from, at;
            if (off < 0 || !pf_param_trainable(m, s)) continue;
            for (at = 0; at < n; at += 4096) {
                ch[nch].off = (size_t)off + from + at;
                ch[nch].n = n - at < 4096 ? n - at : 4096;
                nch++;
            }
        }
        a->nch[i] = nch;
    }
    for (t = 0; t < m->n_specs; t++) {
        const pf_tensor_spec *s = &m->specs[t];
        pf_adam_step as;
        if (!pf_adam_step_of(m, o, t, &as)) continue;
        for (i = 0; i < g->ndev; i++) {
            pfc_dev *d = &g->dev[i];
            long long off = pfc_spec_local(g, d, s);
            pfc_seg *sg = &d->host_segs[a->nseg[i]];
            if (off < 0) continue;
            sg->off = (size_t)off + as.from;
            sg->n = s->numel - as.from;
            sg->start = a->total[i];
            sg->step_size = (float)as.step_size;
            sg->bc2_sqrt = (float)as.bc2_sqrt;
            sg->lr = as.lr;
            sg->wd = s->decay ? o->weight_decay : 0.0f;
            a->total[i] += sg->n;
            a->nseg[i]++;
        }
    }
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if ((st = pfc_h2d(d, d->chunks, d->host_chunks, a->nch[i] * sizeof(pfc_chunk))) != PF_OK) return st;
        if ((st = pfc_h2d(d, d->segs, d->host_segs, a->nseg[i] * sizeof(pfc_seg))) != PF_OK) return st;
    }
    return PF_OK;
}

static pf_status pfc_step_work(pf_cuda *g, const void *arg) {
    const pfc_step_args *a = (const pfc_step_args *)arg;
    pf_status st;
    int i;
    for (i = 0; a->clip > 0 && i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        const pfc_chunk *dch = d->chunks;
        const float *gr = d->grads;
        double *ss = d->sumsq, *cv = d->clipv;
        const size_t nch = a->nch[i];
        const int alone = g->ndev == 1;
        const double clip = a->clip;
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        /* a block per chunk: thread t squares elements t, t + 256, ...
           (neighbouring threads, neighbouring elements), then thread 0 adds
           the 256 partial sums in order */
        pfc_blocks(d, nch, 256, 256 * sizeof(double),
            PFC_LAMBDA(size_t c, int tid, float *sm) {
                const float *p = gr + dch[c].off;
                double sq = 0;
                size_t e;
                for (e = (size_t)tid; e < dch[c].n; e += 256) sq += (double)p[e] * (double)p[e];
                ((double *)sm)[tid] = sq;
            },
            PFC_LAMBDA(size_t c, int tid, float *sm) {
                double sq = 0;
                int t;
                if (tid) return;
                for (t = 0; t < 256; t++) sq += ((double *)sm)[t];
                ss[c] = sq;
            });
        pfc_for(d, 1, PFC_LAMBDA(size_t unused) {
            double sum = 0;
            size_t c;
            (void)unused;
            for (c = 0; c < nch; c++) sum += ss[c];
            cv[0] = alone ? sqrt(sum) : sum;
            cv[1] = clip / (sqrt(sum) + 1e-6);
        });
    }
    if (a->clip > 0 && g->ndev > 1) { /* the devices' totals, added on the host */
        double total = 0, v[2];
        for (i = 0; i < g->ndev; i++) {
            if (g->dev[i].replica != g->dev[0].replica) continue;
            if ((st = pfc_set_device(&g->dev[i])) != PF_OK) return st;
            if ((st = pfc_d2h(&g->dev[i], v, g->dev[i].clipv, sizeof(double))) != PF_OK) return st;
            total += v[0];
        }
        v[0] = sqrt(total);
        v[1] = a->clip / (v[0] + 1e-6);
        g->host_norm = v[0];
        for (i = 0; i < g->ndev; i++) {
            if ((st = pfc_set_device(&g->dev[i])) != PF_OK) return st;
            if ((st = pfc_h2d(&g->dev[i], g->dev[i].clipv, v, sizeof v)) != PF_OK) return st;
        }
    }
    for (i = 0; i < g->ndev; i++) {
        pfc_dev *d = &g->dev[i];
        const pfc_seg *segs = d->segs;
        float *p = d->params, *gr = d->grads, *mm = d->adam_m, *vv = d->adam_v;
        uint16_t *wbf = d->wbf; /* bf16: the weights' copy follows (the others never change) */
        const double *cv = d->clipv;
        const float b1 = a->b1, b2 = a->b2, eps = a->eps;
        const int adam = a->adam, clip = a->clip > 0, ns = (int)a->nseg[i];
        if ((st = pfc_set_device(d)) != PF_OK) return st;
        if (ns) pfc_for(d, a->total[i], PFC_LAMBDA(size_t k) {
            int lo = 0, hi = ns - 1;
            size_t e;
            float gi, pi, mi, vi, wd, lr;
            while (lo < hi) { /* the last tensor starting at or before k */
                int mid = (lo + hi + 1) / 2;
                if (segs[mid].start <= k) lo = mid;
                else hi = mid - 1;
            }
            e = segs[lo].off + (k - segs[lo].start);
            wd = segs[lo].wd, lr = segs[lo].lr;
            gi = gr[e], pi = p[e];
            if (clip && cv[1] < 1.0) { gi = gi * (float)cv[1]; gr[e] = gi; }
            if (adam) gi = gi + pi * wd;
            else pi = pi * (1 - lr * wd);
            mi = mm[e] * b1 + gi * (1 - b1);
            vi = vv[e] * b2 + gi * gi * (1 - b2);
            mm[e] = mi;
            vv[e] = vi;
            p[e] = pi - segs[lo].step_size * (mi / (sqrtf(vi) / segs[lo].bc2_sqrt + eps));
            if (wbf) wbf[e] = pfc_to_bf16(p[e]);
        });
    }
    return PF_OK;
}

PFDEF pf_status pf_cuda_step(pf_cuda *g, const pf_optim *o, double *norm_out) {
    pf_model *m;
    pfc_step_args a;
    pf_status st;
    PFC_NEED(g, "pf_cuda_step", "the context");
    PFC_NEED(o, "pf_cuda_step", "o (the optimizer settings)");
    if (pf_optim_validate(o) != PF_OK) return pf_fail(PF_ERR_ARG, "pf_cuda_step: %s", pf_last_error());
    m = g->m;
    if (!m->steps) return pf_fail(PF_ERR_ARG, "pf_cuda_step: call pf_model_alloc_train on the model first");
    if ((st = pfc_step_tables(g, o, &a)) != PF_OK) return st;
    {
        uint64_t key[PFC_KEY] = {3, a.nch[0], a.nseg[0], a.total[0], 0, 0, (uint64_t)a.adam, 0};
        memcpy(&key[4], &a.clip, 8);
        memcpy(&key[5], &a.b1, 4);
        memcpy((char *)&key[5] + 4, &a.b2, 4);
        memcpy(&key[7], &a.eps, 4);
        st = pfc_run_part(g, g->step_graphs, PFC_GRAPHS_STEP, key, pfc_step_work, &a);
    }
    if (st != PF_OK) return st;
    if (norm_out) { /* one device: the norm is on it (this waits); several: the host has it */
        double v = g->ndev > 1 ? g->host_norm : 0.0;
        if (a.clip > 0 && g->ndev == 1) {
            if ((st = pfc_set_device(&g->dev[0])) != PF_OK) return st;
            if ((st = pfc_d2h(&g->dev[0], &v, g->dev[0].clipv, sizeof v)) != PF_OK) return st;
        }
        *norm_out = a.clip > 0 ? v : 0.0;
    }
    m->params_gen++;
    return PF_OK;
}

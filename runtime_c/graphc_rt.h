/* graphc runtime: hand-written kernels and the weights loader compiled into every generated library.
 *
 * Conventions (every kernel follows them):
 *  - all tensors are dense, row-major (C-contiguous) float32 unless the name says otherwise;
 *  - sizes and strides are int64_t element counts;
 *  - `nthreads` is the context's thread count; kernels parallelise with
 *    `#pragma omp parallel for num_threads(nthreads)` and never read OMP_NUM_THREADS themselves;
 *  - no kernel allocates: scratch memory comes from the caller's arena through a `work` pointer whose
 *    size the matching *_work_floats() function returns (a compile-time known formula);
 *  - kernels that can fail on data (an index out of range) return a gc_status, the others are void.
 * The symbols are all prefixed gc_ and have hidden visibility in the final library (only the model's
 * NAME_* API is exported).
 */
#ifndef GRAPHC_RT_H
#define GRAPHC_RT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Tests build the runtime alone with -DGC_INTERNAL= to call the kernels directly. */
#ifndef GC_INTERNAL
#if defined(__GNUC__)
#define GC_INTERNAL __attribute__((visibility("hidden")))
#else
#define GC_INTERNAL
#endif
#endif

/* Instruction-set dispatch (gc_dispatch.c). A default-target library holds the kernel files compiled
 * once per ISA level with -DGC_ISA=generic|avx2|avx512: these names then become gc_sgemm_avx2, ... and
 * gc_dispatch.c defines the plain names as calls through the table of the level chosen at create.
 * gc_index.c (gc_embedding: a memcpy per row) has no ISA-specific code and is compiled once. */
#ifdef GC_ISA
#define GC_ISA_CAT2(a, b) a##_##b
#define GC_ISA_CAT(a, b) GC_ISA_CAT2(a, b)
#define GC_ISA_NAME(f) GC_ISA_CAT(f, GC_ISA)
#define gc_sgemm GC_ISA_NAME(gc_sgemm)
#define gc_sgemm_batched GC_ISA_NAME(gc_sgemm_batched)
#define gc_sgemm_ep GC_ISA_NAME(gc_sgemm_ep)
#define gc_sgemm_ep_packed GC_ISA_NAME(gc_sgemm_ep_packed)
#define gc_sgemm_pack_b GC_ISA_NAME(gc_sgemm_pack_b)
#define gc_sgemm_pack_b_floats GC_ISA_NAME(gc_sgemm_pack_b_floats)
#define gc_conv2d_work_floats GC_ISA_NAME(gc_conv2d_work_floats)
#define gc_conv2d GC_ISA_NAME(gc_conv2d)
#define gc_conv_transpose2d_work_floats GC_ISA_NAME(gc_conv_transpose2d_work_floats)
#define gc_conv_transpose2d GC_ISA_NAME(gc_conv_transpose2d)
#define gc_max_pool2d GC_ISA_NAME(gc_max_pool2d)
#define gc_avg_pool2d GC_ISA_NAME(gc_avg_pool2d)
#define gc_adaptive_avg_pool2d GC_ISA_NAME(gc_adaptive_avg_pool2d)
#define gc_layer_norm GC_ISA_NAME(gc_layer_norm)
#define gc_rms_norm GC_ISA_NAME(gc_rms_norm)
#define gc_batch_norm GC_ISA_NAME(gc_batch_norm)
#define gc_group_norm GC_ISA_NAME(gc_group_norm)
#define gc_softmax GC_ISA_NAME(gc_softmax)
#define gc_reduce GC_ISA_NAME(gc_reduce)
#define gc_argreduce GC_ISA_NAME(gc_argreduce)
#define gc_sdpa_work_floats GC_ISA_NAME(gc_sdpa_work_floats)
#define gc_sdpa GC_ISA_NAME(gc_sdpa)
#define gc_act GC_ISA_NAME(gc_act)
#endif

/* Status codes shared by the runtime and every generated library (NAME_status mirrors them).
 * Only ever append new codes at the end. */
typedef enum gc_status {
    GC_OK = 0,
    GC_ERR_INVALID_ARGUMENT = -1, /* null pointer, bad dimension, out-of-range dynamic dim */
    GC_ERR_IO = -2,               /* weights file missing / unreadable */
    GC_ERR_FORMAT = -3,           /* weights file corrupt or truncated */
    GC_ERR_MISMATCH = -4,         /* weights of another model: name, dtype, shape or fingerprint */
    GC_ERR_OUT_OF_MEMORY = -5,
    GC_ERR_INDEX = -6,            /* an index tensor holds a value out of range */
    GC_ERR_INTERNAL = -7,
    GC_ERR_DEVICE = -8            /* no usable device: no GPU or a GPU call failed (CUDA), or a CPU
                                     without the instruction sets the library was built for */
} gc_status;

GC_INTERNAL const char *gc_status_string(int status);

/* The most threads a context runs with: NAME_set_num_threads rejects more, a default above it (a huge
 * OMP_NUM_THREADS) is clamped. OpenMP fails to start absurd counts, and a run must not crash. */
#define GC_MAX_THREADS 1024
#define GC_MAX_THREADS_MESSAGE "the thread count must be 1..1024"

/* ------------------------------------------------------------------ instruction sets (gc_dispatch.c) */
/* Checks that this CPU has every instruction set the library was compiled to require (GC_REQUIRED_ISA,
 * from the compiler's flags) and, in a default-target library, picks the kernels' ISA level: the best
 * the CPU has, lowered (never raised) by the environment variable GRAPHC_ISA=generic|avx2|avx512.
 * Call it before anything else in create: it runs only baseline x86-64 code. On failure it returns
 * GC_ERR_DEVICE and writes which features the CPU lacks into err. The choice is made once per process. */
GC_INTERNAL int gc_isa_check(char *err, size_t errlen);
/* the level the kernels run at: "generic", "avx2", "avx512" (default target), else "fixed" */
GC_INTERNAL const char *gc_isa_name(void);

/* ------------------------------------------------------------------ threads (gc_threadpool.c) */
/* A context's pool of worker threads (started on demand, at most GC_MAX_THREADS - 1). The caller takes
 * part in every job and claims tasks from the same counter, so a worker that the OS has not scheduled
 * yet delays nothing; idle workers spin briefly, then sleep. */
typedef struct gc_pool gc_pool;
GC_INTERNAL gc_pool *gc_pool_new(void);
GC_INTERNAL void gc_pool_free(gc_pool *pool);
/* binds pool (may be NULL) to the calling thread for gc_parallel_for; returns the previous one */
GC_INTERNAL gc_pool *gc_pool_enter(gc_pool *pool);
/* 1 when a pool is bound to the calling thread (a context's run): the generated code's OpenMP loops then
 * run on this thread alone, since libgomp's workers spin for milliseconds after a parallel region and
 * hold the core the pool's worker needs for the next kernel (convnext_t measured 4x the CPU time) */
GC_INTERNAL int gc_pool_bound(void);
/* fn(arg, i) for i in [0, n) on up to nthreads threads: the calling thread's pool, else an OpenMP loop
 * (no pool bound: the runtime's tests, GRAPHC_THREADING=openmp). Tasks must not depend on which thread
 * runs them, and must not themselves run parallel loops. */
GC_INTERNAL void gc_parallel_for(int64_t n, int nthreads, void (*fn)(void *arg, int64_t i), void *arg);

/* Adaptive threads: which of a context's two options, its thread count (0) or one thread (1), the next run
 * uses, from the recorded runs (seconds, and the run's arena bytes so runs of other dims compare). The
 * policy (gc_threadpool.c) depends on the recorded runs alone. Zero-initialised is the start. */
#define GC_PICK_SAMPLES 5 /* the length of s[][] below (a literal there: tests parse this header with cffi) */
typedef struct gc_thread_picker {
    double s[2][5];               /* the latest recorded seconds per byte of each option, a ring */
    int count[2], next[2];        /* samples held, the ring's next slot */
    int last;                     /* the option of the previous run + 1 (0: none yet) */
    int probing, probe;           /* the slower option under re-measurement, and its samples to go */
    double settle;                /* seconds on the current option since the last switch */
    double probe_seconds;         /* seconds of the last probe */
    double since_seconds;         /* seconds on the faster option since the last probe */
    int64_t since;                /* runs on the faster option since the last probe */
} gc_thread_picker;
GC_INTERNAL int gc_picker_one(const gc_thread_picker *t);
GC_INTERNAL void gc_picker_record(gc_thread_picker *t, int one, double seconds, double bytes);

/* ------------------------------------------------------------------ activations (gc_act.c) */
/* y[i] = f(x[i]) for i in [0, n), vectorised (errors bounded in gc_vmath.h); y may be x. */
enum { GC_ACT_EXP = 1, GC_ACT_SIGMOID = 2, GC_ACT_SILU = 3, GC_ACT_TANH = 4, GC_ACT_GELU = 5, GC_ACT_GELU_TANH = 6,
       /* epilogue kinds only (conv): max(x, 0); min(max(x, lo), hi); x * min(max(x + 3, 0), 6) / 6 */
       GC_ACT_RELU = 7, GC_ACT_CLAMP = 8, GC_ACT_HARDSWISH = 9 };
GC_INTERNAL void gc_act(int kind, int64_t n, const float *x, float *y, int nthreads);

/* The epilogue a product applies to each element v of its output while the tile is in cache:
 *     v = v + row_bias[row]                        (when row_bias is not NULL)
 *     v = act(v) * scale + residual                (res_first 0)
 *     v = act(v + residual) * scale                (res_first 1)
 * act 0 is none, else a GC_ACT_* kind (RELU, CLAMP and HARDSWISH included); scale 1 is none;
 * residual (NULL: none) is laid out like the output (same row stride) and must not overlap it.
 * row_bias holds one value per output row (a conv's bias per output channel, GEMM rows being channels);
 * the product's own bias argument is per column. */
typedef struct gc_epilogue {
    int act;
    float lo, hi;          /* GC_ACT_CLAMP's bounds */
    float scale;
    const float *residual;
    const float *row_bias;
    int res_first;
} gc_epilogue;

/* ------------------------------------------------------------------ GEMM (gc_gemm.c) */
/* C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C + bias[N]
 * op(A) = A (lda = row stride) or A^T when transA; likewise B. bias may be NULL.
 * beta == 0 means C is write-only (may hold garbage on entry). */
GC_INTERNAL void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                          int64_t ldc, const float *bias, int nthreads);

/* C[M,N] = epilogue(op(A) @ op(B) + bias): gc_sgemm with alpha 1 and beta 0, then ep (NULL: none) on
 * every element as its tile of C is finished. */
GC_INTERNAL void gc_sgemm_ep(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                             const float *bias, const gc_epilogue *ep, int nthreads);

/* Constant B (a linear layer's weight) packed once into the micro-kernel's panels of this ISA level:
 * gc_sgemm_pack_b copies op(B)[K,N] into Bp, which holds gc_sgemm_pack_b_floats(N, K) floats (64-byte
 * aligned). gc_sgemm_ep_packed is gc_sgemm_ep with that copy as well: the shapes gc_sgemm_ep packs B for
 * read Bp instead (the same floats in the same order, so the same bits), the others read B. Bp must come
 * from the same process's gc_sgemm_pack_b (the level is chosen once per process). */
GC_INTERNAL size_t gc_sgemm_pack_b_floats(int64_t N, int64_t K);
GC_INTERNAL void gc_sgemm_pack_b(int transB, int64_t N, int64_t K, const float *B, int64_t ldb, float *Bp);
GC_INTERNAL void gc_sgemm_ep_packed(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A,
                                    int64_t lda, const float *B, int64_t ldb, const float *Bp, float *C,
                                    int64_t ldc, const float *bias, const gc_epilogue *ep, int nthreads);

/* Batched: for b in [0,batch): C_b = op(A_b) @ op(B_b) (+bias), with element strides between batch items
 * (a stride of 0 broadcasts). */
GC_INTERNAL void gc_sgemm_batched(int transA, int transB, int64_t batch, int64_t M, int64_t N, int64_t K,
                                  const float *A, int64_t lda, int64_t strideA, const float *B, int64_t ldb,
                                  int64_t strideB, float *C, int64_t ldc, int64_t strideC, const float *bias,
                                  int nthreads);

/* ------------------------------------------------------------------ convolution (gc_conv.c) */
/* N-d convolution for 1 or 2 spatial dims, described by one struct so the generated code stays short.
 * x[N, C, H, W] (for 1-d: H = 1, kh = 1, stride_h = 1, pad_h = 0, dil_h = 1)
 * w[OC, C/groups, KH, KW], bias[OC] or NULL, y[N, OC, OH, OW]. */
typedef struct gc_conv2d_params {
    int64_t n, c, h, w;        /* input */
    int64_t oc, kh, kw;        /* filters */
    int64_t oh, ow;            /* output (precomputed by the compiler) */
    int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
    /* epilogue, applied to every output as it is written (all 0 / NULL: none):
     * y = act(conv + bias + res) with res_first, else act(conv + bias) + res; act is 0 or a GC_ACT_* kind,
     * GC_ACT_CLAMP clamps to [act_lo, act_hi]; res is NULL or a tensor of y's shape (never y itself). */
    int act, res_first;
    float act_lo, act_hi;
    const float *res;
    /* NULL, or pool[N, OC]: the mean of every output plane (after the epilogue), the same sums as
     * gc_adaptive_avg_pool2d to 1x1 makes (a squeeze-excitation's pooling, read while the plane is in cache) */
    float *pool;
    /* NULL, or in_scale[N, C]: x[n, c] is taken times in_scale[n, c] (a squeeze-excitation's channel
     * scaling folded into the conv that reads it); the weights are scaled per image into the work */
    const float *in_scale;
} gc_conv2d_params;

GC_INTERNAL size_t gc_conv2d_work_floats(const gc_conv2d_params *p, int nthreads);
GC_INTERNAL void gc_conv2d(const gc_conv2d_params *p, const float *x, const float *w, const float *bias,
                           float *y, float *work, int nthreads);

/* Transposed convolution (PyTorch ConvTranspose2d): x[N, C, H, W], w[C, OC/groups, KH, KW],
 * y[N, OC, OH, OW] with OH = (H-1)*stride_h - 2*pad_h + dil_h*(KH-1) + output_padding_h + 1. */
typedef struct gc_conv_transpose2d_params {
    int64_t n, c, h, w;
    int64_t oc, kh, kw;
    int64_t oh, ow;
    int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
} gc_conv_transpose2d_params;

GC_INTERNAL size_t gc_conv_transpose2d_work_floats(const gc_conv_transpose2d_params *p, int nthreads);
GC_INTERNAL void gc_conv_transpose2d(const gc_conv_transpose2d_params *p, const float *x, const float *w,
                                     const float *bias, float *y, float *work, int nthreads);

/* ------------------------------------------------------------------ pooling (gc_pool.c) */
typedef struct gc_pool2d_params {
    int64_t n, c, h, w, oh, ow;
    int64_t kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    int count_include_pad;   /* avg only */
    int64_t divisor_override; /* avg only; 0 = none */
} gc_pool2d_params;

/* max pool: padding acts as -inf (PyTorch semantics); windows are clipped to the input */
GC_INTERNAL void gc_max_pool2d(const gc_pool2d_params *p, const float *x, float *y, int nthreads);
GC_INTERNAL void gc_avg_pool2d(const gc_pool2d_params *p, const float *x, float *y, int nthreads);
/* PyTorch adaptive pooling bins: start = floor(i*H/OH), end = ceil((i+1)*H/OH) */
GC_INTERNAL void gc_adaptive_avg_pool2d(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh, int64_t ow,
                                        const float *x, float *y, int nthreads);

/* ------------------------------------------------------------------ normalisation (gc_norm.c) */
/* Tensors are seen as [outer, n] rows (layer/rms norm over the last n elements, weight/bias of length n,
 * each may be NULL). */
GC_INTERNAL void gc_layer_norm(int64_t outer, int64_t n, const float *x, const float *weight,
                               const float *bias, float eps, float *y, int nthreads);
GC_INTERNAL void gc_rms_norm(int64_t outer, int64_t n, const float *x, const float *weight, float eps,
                             float *y, int nthreads);
/* x[N, C, inner]; mean/var/weight/bias of length C (weight/bias may be NULL). Eval-mode batch norm. */
GC_INTERNAL void gc_batch_norm(int64_t n, int64_t c, int64_t inner, const float *x, const float *mean,
                               const float *var, const float *weight, const float *bias, float eps, float *y,
                               int nthreads);
/* x[N, C, inner], groups divide C; weight/bias of length C or NULL. */
GC_INTERNAL void gc_group_norm(int64_t n, int64_t c, int64_t inner, int64_t groups, const float *x,
                               const float *weight, const float *bias, float eps, float *y, int nthreads);

/* ------------------------------------------------------------------ softmax and reductions (gc_reduce.c) */
/* The tensor is seen as [outer, n, inner]; the operation runs along n. */
GC_INTERNAL void gc_softmax(int64_t outer, int64_t n, int64_t inner, const float *x, float *y, int log,
                            int nthreads);

typedef enum gc_reduce_kind { GC_REDUCE_SUM = 0, GC_REDUCE_MEAN = 1, GC_REDUCE_MAX = 2, GC_REDUCE_MIN = 3,
                              GC_REDUCE_PROD = 4 } gc_reduce_kind;
GC_INTERNAL void gc_reduce(int kind, int64_t outer, int64_t n, int64_t inner, const float *x, float *y,
                           int nthreads);
/* argmax / argmin along n (first index of the extreme, NaN counts as the maximum like PyTorch) */
GC_INTERNAL void gc_argreduce(int is_min, int64_t outer, int64_t n, int64_t inner, const float *x, int64_t *y,
                              int nthreads);

/* ------------------------------------------------------------------ attention (gc_attention.c) */
/* Scaled dot-product attention, PyTorch semantics.
 * q[B, H, Tq, D], k[B, H, Tk, D], v[B, H, Tk, Dv] -> out[B, H, Tq, Dv], each addressed through its
 * (batch, head, row) element strides with the last dim contiguous: q[b*q_sb + h*q_sh + i*q_st + c].
 * mask: additive float mask or NULL, addressed as mask[b*m_sb + h*m_sh + i*m_sq + j*m_sk]
 * (strides of 0 broadcast). causal: key j is masked out for query i when j > i (PyTorch's is_causal,
 * top-left aligned). Rows that are fully masked produce zeros like PyTorch 2.x. out must not overlap
 * q, k, v or mask. work: gc_sdpa_work_floats(tq, tk, d, dv, nthreads) floats. */
typedef struct gc_sdpa_params {
    int64_t b, h, tq, tk, d, dv;
    const float *q;
    int64_t q_sb, q_sh, q_st;
    const float *k;
    int64_t k_sb, k_sh, k_st;
    const float *v;
    int64_t v_sb, v_sh, v_st;
    const float *mask;
    int64_t m_sb, m_sh, m_sq, m_sk;
    float scale;
    int causal;
    float *out;
    int64_t o_sb, o_sh, o_st;
} gc_sdpa_params;

GC_INTERNAL size_t gc_sdpa_work_floats(int64_t tq, int64_t tk, int64_t d, int64_t dv, int nthreads);
GC_INTERNAL void gc_sdpa(const gc_sdpa_params *p, float *work, int nthreads);

/* ------------------------------------------------------------------ indexing (gc_index.c) */
/* out[i, :] = table[idx[i], :] for i < n; table[V, D]; negative or >= V index -> GC_ERR_INDEX */
GC_INTERNAL int gc_embedding(int64_t n, const int64_t *idx, int64_t v, int64_t d, const float *table,
                             float *out, int nthreads);

/* ------------------------------------------------------------------ weights (gc_safetensors.c) */
/* A parsed safetensors blob (the file mapped with mmap, or bytes baked into the library).
 * Parsing validates everything before anything is trusted: header length within the blob, JSON
 * well-formed, every tensor's dtype known, shape * itemsize == end - begin, offsets inside the data
 * area and non-overlapping. Errors write a message (naming the tensor or the byte offset) into err. */
typedef struct gc_st_tensor {
    const char *name;     /* NUL-terminated, owned by the gc_st */
    int dtype;            /* gc_dtype */
    int ndim;
    int64_t shape[8];
    const void *data;     /* points into the blob */
    size_t nbytes;
} gc_st_tensor;

typedef enum gc_dtype { GC_F32 = 0, GC_F64 = 1, GC_F16 = 2, GC_BF16 = 3, GC_I8 = 4, GC_I16 = 5, GC_I32 = 6,
                        GC_I64 = 7, GC_U8 = 8, GC_BOOL = 9 } gc_dtype;

typedef struct gc_st {
    const unsigned char *blob; /* whole file */
    size_t size;
    int mapped;                /* 1 when blob is an mmap the gc_st owns */
    int owned;                 /* 1 when blob is a malloc'ed copy of the file the gc_st owns */
    int ntensors;
    gc_st_tensor *tensors;
    int nmeta;
    char **meta_keys;          /* __metadata__ string entries */
    char **meta_values;
    char *strings;             /* storage for names/keys/values */
} gc_st;

/* parse bytes that stay valid for the lifetime of st (baked weights) */
GC_INTERNAL int gc_st_open_memory(gc_st *st, const void *blob, size_t size, char *err, size_t errlen);
/* open a file and parse it: map_file 0 reads it into a private (64-byte aligned) copy, so later changes
 * to the file never reach st; 1 maps it (read-only, MAP_PRIVATE: no copy, the pages are the page cache's,
 * but truncating the file then makes a read SIGBUS and writing it in place changes what st sees) */
GC_INTERNAL int gc_st_load_file(gc_st *st, const char *path, int map_file, char *err, size_t errlen);
/* gc_st_load_file(st, path, 1, ...): the mapping */
GC_INTERNAL int gc_st_open_file(gc_st *st, const char *path, char *err, size_t errlen);
/* gc_st_load_file(st, path, 0, ...): the copy */
GC_INTERNAL int gc_st_read_file(gc_st *st, const char *path, char *err, size_t errlen);
GC_INTERNAL void gc_st_close(gc_st *st);
GC_INTERNAL const gc_st_tensor *gc_st_find(const gc_st *st, const char *name);
GC_INTERNAL const char *gc_st_meta(const gc_st *st, const char *key); /* NULL when absent */
/* find name and check dtype and shape; on mismatch write "tensor 'name': expected f32[3,4], file has ..." */
GC_INTERNAL int gc_st_expect(const gc_st *st, const char *name, int dtype, int ndim, const int64_t *shape,
                             const void **data, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* GRAPHC_RT_H */

/* graphc runtime: instruction-set checks and the kernels' ISA dispatch.
 *
 * Every library names the x86 features its own code was compiled to use in GC_REQUIRED_ISA (the build
 * derives it from the compiler's predefined macros, e.g. "sse4.2 popcnt avx2 fma"); create calls
 * gc_isa_check() first, which refuses a CPU that lacks any of them with the list of what is missing,
 * before a single such instruction runs (this file is always compiled for baseline x86-64).
 *
 * A default-target library (GC_DISPATCH) also holds the kernel files compiled three times, for the
 * x86-64-v2 (generic), x86-64-v3 (avx2: AVX2 + FMA) and x86-64-v4 (avx512: AVX-512 F/BW/DQ/VL/CD)
 * levels, with suffixed names (graphc_rt.h, GC_ISA). The plain gc_* names below call the variant of
 * the best level the CPU supports, as OpenBLAS's DYNAMIC_ARCH and ONNX Runtime's MLAS do. The choice is
 * made once per process; GRAPHC_ISA=generic|avx2|avx512 lowers it (a level above the CPU's is never
 * taken), and it masks the CPU's features for the check as well, so a library built for a higher level
 * is refused under a lower GRAPHC_ISA exactly as on a CPU of that level.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graphc_rt.h"

#ifndef GC_REQUIRED_ISA
#define GC_REQUIRED_ISA ""
#endif

enum { LEVEL_GENERIC = 0, LEVEL_AVX2 = 1, LEVEL_AVX512 = 2 };
static const char *const level_names[] = {"generic", "avx2", "avx512"};

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define GC_X86 1
#endif

/* A feature the CPU may have: its name (as in GC_REQUIRED_ISA and __builtin_cpu_supports) and the
 * lowest GRAPHC_ISA level that keeps it (GRAPHC_ISA=generic hides AVX and up, avx2 hides AVX-512). */
typedef struct feature {
    const char *name;
    int level;
    int present;
} feature;

static int cpu_features(feature *out, int cap)
{
    int n = 0;
#ifdef GC_X86
    __builtin_cpu_init();
#define GC_FEATURE(str, lvl) \
    if (n < cap) out[n++] = (feature){str, lvl, __builtin_cpu_supports(str) != 0};
    GC_FEATURE("sse3", LEVEL_GENERIC)
    GC_FEATURE("ssse3", LEVEL_GENERIC)
    GC_FEATURE("sse4.1", LEVEL_GENERIC)
    GC_FEATURE("sse4.2", LEVEL_GENERIC)
    GC_FEATURE("popcnt", LEVEL_GENERIC)
    GC_FEATURE("avx", LEVEL_AVX2)
    GC_FEATURE("avx2", LEVEL_AVX2)
    GC_FEATURE("fma", LEVEL_AVX2)
    GC_FEATURE("bmi", LEVEL_AVX2)
    GC_FEATURE("bmi2", LEVEL_AVX2)
    GC_FEATURE("avx512f", LEVEL_AVX512)
    GC_FEATURE("avx512vl", LEVEL_AVX512)
    GC_FEATURE("avx512bw", LEVEL_AVX512)
    GC_FEATURE("avx512dq", LEVEL_AVX512)
    GC_FEATURE("avx512cd", LEVEL_AVX512)
#undef GC_FEATURE
#else
    (void)out;
    (void)cap;
#endif
    return n;
}

/* What the process may use: the CPU's features below the GRAPHC_ISA cap, and the best kernel level. */
typedef struct isa_state {
    int ready;
    int level;      /* the kernels' level */
    int cap;        /* GRAPHC_ISA, or LEVEL_AVX512 when unset */
    int bad_env;    /* GRAPHC_ISA holds something else */
    int nfeatures;
    feature features[24];
} isa_state;

static isa_state state;

static int has(const isa_state *s, const char *name)
{
    for (int i = 0; i < s->nfeatures; i++)
        if (strcmp(s->features[i].name, name) == 0)
            return s->features[i].present && s->features[i].level <= s->cap;
    return 0;
}

static void detect(isa_state *s)
{
    s->cap = LEVEL_AVX512;
    const char *env = getenv("GRAPHC_ISA");
    if (env && *env) {
        int found = 0;
        for (int l = 0; l < 3; l++)
            if (strcmp(env, level_names[l]) == 0) {
                s->cap = l;
                found = 1;
            }
        s->bad_env = !found;
    }
    s->nfeatures = cpu_features(s->features, (int)(sizeof s->features / sizeof s->features[0]));
    s->level = LEVEL_GENERIC;
    if (has(s, "avx") && has(s, "avx2") && has(s, "fma") && has(s, "bmi") && has(s, "bmi2"))
        s->level = LEVEL_AVX2;
    if (s->level == LEVEL_AVX2 && has(s, "avx512f") && has(s, "avx512vl") && has(s, "avx512bw") &&
        has(s, "avx512dq") && has(s, "avx512cd"))
        s->level = LEVEL_AVX512;
}

/* Detection is idempotent, so concurrent first calls may both run it; `ready` is published last. */
static const isa_state *isa(void)
{
    if (!__atomic_load_n(&state.ready, __ATOMIC_ACQUIRE)) {
        isa_state s = {0};
        detect(&s);
        s.ready = 1;
        state = s; /* identical bytes whoever writes them */
        __atomic_store_n(&state.ready, 1, __ATOMIC_RELEASE);
    }
    return &state;
}

int gc_isa_check(char *err, size_t errlen)
{
    const isa_state *s = isa();
    if (s->bad_env) {
        if (err && errlen)
            snprintf(err, errlen, "GRAPHC_ISA='%.40s' is not one of generic, avx2, avx512", getenv("GRAPHC_ISA"));
        return GC_ERR_INVALID_ARGUMENT;
    }
    /* every space-separated name of GC_REQUIRED_ISA the CPU (within GRAPHC_ISA) lacks */
    char missing[256] = "";
    size_t used = 0;
    const char *p = GC_REQUIRED_ISA;
    while (*p) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ') q++;
        if (q > p) {
            char name[32];
            const size_t len = (size_t)(q - p) < sizeof name - 1 ? (size_t)(q - p) : sizeof name - 1;
            memcpy(name, p, len);
            name[len] = '\0';
            if (!has(s, name) && used + len + 3 < sizeof missing) {
                if (used) {
                    memcpy(missing + used, ", ", 2);
                    used += 2;
                }
                memcpy(missing + used, name, len + 1);
                used += len;
            }
        }
        p = q;
    }
    if (used) {
        if (err && errlen)
            snprintf(err, errlen, "this CPU lacks %s, which this library was compiled to use (its target requires "
                     "%s%s); rebuild it with target='default' (one library for every x86-64 CPU) or a lower "
                     "--target", missing, GC_REQUIRED_ISA,
                     s->cap < LEVEL_AVX512 ? "; GRAPHC_ISA lowers what the CPU offers" : "");
        return GC_ERR_DEVICE;
    }
    return GC_OK;
}

#ifndef GC_DISPATCH

const char *gc_isa_name(void)
{
    return "fixed";
}

#else /* a default-target library: the kernels of three levels and the table that picks one */

const char *gc_isa_name(void)
{
    return level_names[isa()->level];
}

/* the variants: gc_sgemm_generic, gc_sgemm_avx2, gc_sgemm_avx512, ... (same types as the plain names);
 * weak: a library links only the kernel files its model calls (build.needed_runtime), the variants of
 * the others are never picked */
#define GC_VARIANTS(f) extern __typeof__(f) f##_generic GC_WEAK, f##_avx2 GC_WEAK, f##_avx512 GC_WEAK;
#define GC_WEAK __attribute__((weak, visibility("hidden")))
GC_VARIANTS(gc_sgemm)
GC_VARIANTS(gc_sgemm_batched)
GC_VARIANTS(gc_sgemm_ep)
GC_VARIANTS(gc_sgemm_ep_packed)
GC_VARIANTS(gc_sgemm_pack_b)
GC_VARIANTS(gc_sgemm_pack_b_floats)
GC_VARIANTS(gc_conv2d_work_floats)
GC_VARIANTS(gc_conv2d)
GC_VARIANTS(gc_conv_transpose2d_work_floats)
GC_VARIANTS(gc_conv_transpose2d)
GC_VARIANTS(gc_max_pool2d)
GC_VARIANTS(gc_avg_pool2d)
GC_VARIANTS(gc_adaptive_avg_pool2d)
GC_VARIANTS(gc_layer_norm)
GC_VARIANTS(gc_rms_norm)
GC_VARIANTS(gc_batch_norm)
GC_VARIANTS(gc_group_norm)
GC_VARIANTS(gc_softmax)
GC_VARIANTS(gc_reduce)
GC_VARIANTS(gc_argreduce)
GC_VARIANTS(gc_sdpa_work_floats)
GC_VARIANTS(gc_sdpa)
GC_VARIANTS(gc_act)

/* PICK(f): the chosen level's variant of f */
#define PICK(f) (isa()->level == LEVEL_AVX512 ? f##_avx512 : isa()->level == LEVEL_AVX2 ? f##_avx2 : f##_generic)

void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, int nthreads)
{
    PICK(gc_sgemm)(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, nthreads);
}

void gc_sgemm_ep(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float *C, int64_t ldc, const float *bias, const gc_epilogue *ep,
                 int nthreads)
{
    PICK(gc_sgemm_ep)(transA, transB, M, N, K, A, lda, B, ldb, C, ldc, bias, ep, nthreads);
}

size_t gc_sgemm_pack_b_floats(int64_t N, int64_t K)
{
    return PICK(gc_sgemm_pack_b_floats)(N, K);
}

void gc_sgemm_pack_b(int transB, int64_t N, int64_t K, const float *B, int64_t ldb, float *Bp)
{
    PICK(gc_sgemm_pack_b)(transB, N, K, B, ldb, Bp);
}

void gc_sgemm_ep_packed(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, const float *Bp, float *C, int64_t ldc, const float *bias,
                        const gc_epilogue *ep, int nthreads)
{
    PICK(gc_sgemm_ep_packed)(transA, transB, M, N, K, A, lda, B, ldb, Bp, C, ldc, bias, ep, nthreads);
}

void gc_sgemm_batched(int transA, int transB, int64_t batch, int64_t M, int64_t N, int64_t K, const float *A,
                      int64_t lda, int64_t strideA, const float *B, int64_t ldb, int64_t strideB, float *C,
                      int64_t ldc, int64_t strideC, const float *bias, int nthreads)
{
    PICK(gc_sgemm_batched)(transA, transB, batch, M, N, K, A, lda, strideA, B, ldb, strideB, C, ldc, strideC, bias,
                           nthreads);
}

size_t gc_conv2d_work_floats(const gc_conv2d_params *p, int nthreads)
{
    return PICK(gc_conv2d_work_floats)(p, nthreads);
}

void gc_conv2d(const gc_conv2d_params *p, const float *x, const float *w, const float *bias, float *y, float *work,
               int nthreads)
{
    PICK(gc_conv2d)(p, x, w, bias, y, work, nthreads);
}

size_t gc_conv_transpose2d_work_floats(const gc_conv_transpose2d_params *p, int nthreads)
{
    return PICK(gc_conv_transpose2d_work_floats)(p, nthreads);
}

void gc_conv_transpose2d(const gc_conv_transpose2d_params *p, const float *x, const float *w, const float *bias,
                         float *y, float *work, int nthreads)
{
    PICK(gc_conv_transpose2d)(p, x, w, bias, y, work, nthreads);
}

void gc_max_pool2d(const gc_pool2d_params *p, const float *x, float *y, int nthreads)
{
    PICK(gc_max_pool2d)(p, x, y, nthreads);
}

void gc_avg_pool2d(const gc_pool2d_params *p, const float *x, float *y, int nthreads)
{
    PICK(gc_avg_pool2d)(p, x, y, nthreads);
}

void gc_adaptive_avg_pool2d(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh, int64_t ow, const float *x,
                            float *y, int nthreads)
{
    PICK(gc_adaptive_avg_pool2d)(n, c, h, w, oh, ow, x, y, nthreads);
}

void gc_layer_norm(int64_t outer, int64_t n, const float *x, const float *weight, const float *bias, float eps,
                   float *y, int nthreads)
{
    PICK(gc_layer_norm)(outer, n, x, weight, bias, eps, y, nthreads);
}

void gc_rms_norm(int64_t outer, int64_t n, const float *x, const float *weight, float eps, float *y, int nthreads)
{
    PICK(gc_rms_norm)(outer, n, x, weight, eps, y, nthreads);
}

void gc_batch_norm(int64_t n, int64_t c, int64_t inner, const float *x, const float *mean, const float *var,
                   const float *weight, const float *bias, float eps, float *y, int nthreads)
{
    PICK(gc_batch_norm)(n, c, inner, x, mean, var, weight, bias, eps, y, nthreads);
}

void gc_group_norm(int64_t n, int64_t c, int64_t inner, int64_t groups, const float *x, const float *weight,
                   const float *bias, float eps, float *y, int nthreads)
{
    PICK(gc_group_norm)(n, c, inner, groups, x, weight, bias, eps, y, nthreads);
}

void gc_softmax(int64_t outer, int64_t n, int64_t inner, const float *x, float *y, int log, int nthreads)
{
    PICK(gc_softmax)(outer, n, inner, x, y, log, nthreads);
}

void gc_reduce(int kind, int64_t outer, int64_t n, int64_t inner, const float *x, float *y, int nthreads)
{
    PICK(gc_reduce)(kind, outer, n, inner, x, y, nthreads);
}

void gc_argreduce(int is_min, int64_t outer, int64_t n, int64_t inner, const float *x, int64_t *y, int nthreads)
{
    PICK(gc_argreduce)(is_min, outer, n, inner, x, y, nthreads);
}

size_t gc_sdpa_work_floats(int64_t tq, int64_t tk, int64_t d, int64_t dv, int nthreads)
{
    return PICK(gc_sdpa_work_floats)(tq, tk, d, dv, nthreads);
}

void gc_sdpa(const gc_sdpa_params *p, float *work, int nthreads)
{
    PICK(gc_sdpa)(p, work, nthreads);
}

void gc_act(int kind, int64_t n, const float *x, float *y, int nthreads)
{
    PICK(gc_act)(kind, n, x, y, nthreads);
}

#endif /* GC_DISPATCH */

/* graphc runtime: the transcendental activations on a contiguous float32 array, y[i] = f(x[i]).
 *
 * The generated elementwise loops call libm one element at a time (expf, and GELU through double erf),
 * which measured 0.2-0.3 GFLOP/s: SiLU was a third of EfficientNet-B0's time, GELU a quarter of
 * ConvNeXt-T's. Here every function is evaluated on whole vectors by gc_vmath.h (errors stated and
 * tested there), at the ISA level the library dispatches to; the last partial vector goes through a
 * zero-padded copy, so every element gets the same operations wherever it sits and the result does not
 * depend on the thread count. y may be x (in place).
 *
 *   GC_ACT_EXP        e^x
 *   GC_ACT_SIGMOID    1 / (1 + e^-x)
 *   GC_ACT_SILU       x / (1 + e^-x)
 *   GC_ACT_TANH       tanh x
 *   GC_ACT_GELU       x Phi(x)                       (exact GELU, Phi the Gaussian CDF)
 *   GC_ACT_GELU_TANH  x / (1 + e^{-2u}), u = sqrt(2/pi) (x + 0.044715 x^3)   (= x (1 + tanh u) / 2)
 */
#include <math.h>
#include <string.h>

#include "graphc_rt.h"
#include "gc_vmath.h"

/* elements per task of the parallel loop: large enough that a task outlasts its claim */
#define GC_ACT_CHUNK 16384

#if GC_VW > 1
static GC_ALWAYS_INLINE gc_vf act_vec(int kind, gc_vf x)
{
    return gc_vact(kind, x, 0.0f, 0.0f);
}

/* one kind per loop, so each loop body is straight-line vector code */
#define GC_ACT_LOOP(K)                                                          \
    for (; i + GC_VW <= n; i += GC_VW) vstore(y + i, act_vec(K, vload(x + i))); \
    break;

static void act_span(int kind, int64_t n, const float *x, float *y)
{
    int64_t i = 0;
    switch (kind) {
    case GC_ACT_EXP: GC_ACT_LOOP(GC_ACT_EXP)
    case GC_ACT_SIGMOID: GC_ACT_LOOP(GC_ACT_SIGMOID)
    case GC_ACT_SILU: GC_ACT_LOOP(GC_ACT_SILU)
    case GC_ACT_TANH: GC_ACT_LOOP(GC_ACT_TANH)
    case GC_ACT_GELU: GC_ACT_LOOP(GC_ACT_GELU)
    default: GC_ACT_LOOP(GC_ACT_GELU_TANH)
    }
    if (i < n) {
        float buf[GC_VW] = {0};
        memcpy(buf, x + i, (size_t)(n - i) * sizeof(float));
        vstore(buf, act_vec(kind, vload(buf)));
        memcpy(y + i, buf, (size_t)(n - i) * sizeof(float));
    }
}
#else /* no vector extensions: libm */
static void act_span(int kind, int64_t n, const float *x, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        switch (kind) {
        case GC_ACT_EXP: y[i] = expf(v); break;
        case GC_ACT_SIGMOID: y[i] = 1.0f / (1.0f + expf(-v)); break;
        case GC_ACT_SILU: y[i] = v / (1.0f + expf(-v)); break;
        case GC_ACT_TANH: y[i] = tanhf(v); break;
        case GC_ACT_GELU: y[i] = (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440))); break;
        default: y[i] = (float)(0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
        }
    }
}
#endif

typedef struct act_job {
    int kind;
    int64_t n;
    const float *x;
    float *y;
} act_job;

static void act_chunk(void *arg, int64_t t)
{
    const act_job *j = arg;
    const int64_t lo = t * GC_ACT_CHUNK, hi = lo + GC_ACT_CHUNK < j->n ? lo + GC_ACT_CHUNK : j->n;
    act_span(j->kind, hi - lo, j->x + lo, j->y + lo);
}

void gc_act(int kind, int64_t n, const float *x, float *y, int nthreads)
{
    if (n <= 0)
        return;
    const int64_t chunks = (n + GC_ACT_CHUNK - 1) / GC_ACT_CHUNK;
    if (nthreads <= 1 || chunks == 1) {
        act_span(kind, n, x, y);
        return;
    }
    const act_job job = {kind, n, x, y};
    gc_parallel_for(chunks, nthreads, act_chunk, (void *)&job);
}

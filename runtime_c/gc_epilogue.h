/* gc_epilogue.h: the epilogue that products apply to their output while it is still in cache, on
 * gc_vmath.h's gc_vact (the activations gc_act.c runs, whose errors gc_vmath.h states). Internal to the
 * runtime (gc_gemm.c's fused epilogues).
 *
 * gc_epilogue_rows computes, on each element v of a rows x cols block of C (row stride ldc),
 *     v = v + row_bias;  v = act(v) * scale + residual     (res_first: v = act(v + residual) * scale)
 * (each step only when the epilogue has it) with the residual in C's layout. Every element takes the same
 * vector operations wherever it sits (the last partial vector of a row goes through zero-padded copies),
 * and gc_epilogue_vec is the one sequence of them, which the GEMM micro-kernel also applies to tiles still
 * in registers: results do not depend on tile or thread boundaries. They equal the separate passes'
 * results, except that the compiler may fuse the scale's multiply with the residual's add (one rounding
 * less).
 */
#ifndef GC_EPILOGUE_H
#define GC_EPILOGUE_H

#include <string.h>

#include "graphc_rt.h"
#include "gc_vmath.h"

#if GC_VW > 1
/* The activation of the epilogue: gc_vact, with RELU and CLAMP as one x86 max / min each (gc_vmax(a, b)
 * = a > b ? a : b): RELU gives gc_vact's bits exactly (x < 0 ? 0 : x, NaN and -0 stay), CLAMP as well
 * except that a zero input at a zero bound keeps its sign (ReLU6 of -0 is -0, not +0). NaN stays NaN. */
static GC_ALWAYS_INLINE gc_vf gc_epilogue_act(int kind, gc_vf v, float lo, float hi)
{
    if (kind == GC_ACT_RELU)
        return gc_vmax(vset1(0.0f), v);
    if (kind == GC_ACT_CLAMP)
        return gc_vmin(vset1(hi), gc_vmax(vset1(lo), v));
    return gc_vact(kind, v, lo, hi);
}

/* one vector of the epilogue: rb is its row's bias (read only with ep->row_bias), res its residual (NULL:
 * none) */
static GC_ALWAYS_INLINE gc_vf gc_epilogue_vec(const gc_epilogue *ep, int kind, gc_vf v, float rb, const float *res)
{
    if (ep->row_bias)
        v = v + vset1(rb);
    if (res && ep->res_first)
        v = v + vload(res);
    if (kind)
        v = gc_epilogue_act(kind, v, ep->lo, ep->hi);
    if (ep->scale != 1.0f)
        v = v * vset1(ep->scale);
    if (res && !ep->res_first)
        v = v + vload(res);
    return v;
}

static GC_ALWAYS_INLINE void gc_epilogue_span(const gc_epilogue *ep, int kind, int64_t n, float *c, float rb,
                                              const float *res)
{
    int64_t j = 0;
    for (; j + GC_VW <= n; j += GC_VW)
        vstore(c + j, gc_epilogue_vec(ep, kind, vload(c + j), rb, res ? res + j : NULL));
    if (j < n) {
        float buf[GC_VW] = {0}, rbuf[GC_VW] = {0};
        memcpy(buf, c + j, (size_t)(n - j) * sizeof(float));
        if (res)
            memcpy(rbuf, res + j, (size_t)(n - j) * sizeof(float));
        vstore(buf, gc_epilogue_vec(ep, kind, vload(buf), rb, res ? rbuf : NULL));
        memcpy(c + j, buf, (size_t)(n - j) * sizeof(float));
    }
}

/* one loop per activation kind, so each is straight-line vector code */
#define GC_EPILOGUE_CASE(K)                                                                             \
    case K:                                                                                             \
        for (int64_t r = 0; r < rows; r++)                                                              \
            gc_epilogue_span(ep, K, cols, c + r * ldc, rbias ? rbias[r] : 0.0f, res ? res + r * ldc : NULL); \
        break;

/* rbias: ep->row_bias at the block's first row (NULL when ep has none) */
static inline void gc_epilogue_rows(const gc_epilogue *ep, int64_t rows, int64_t cols, float *c, int64_t ldc,
                                    const float *res, const float *rbias)
{
    switch (ep->act) {
    GC_EPILOGUE_CASE(0)
    GC_EPILOGUE_CASE(GC_ACT_EXP)
    GC_EPILOGUE_CASE(GC_ACT_SIGMOID)
    GC_EPILOGUE_CASE(GC_ACT_SILU)
    GC_EPILOGUE_CASE(GC_ACT_TANH)
    GC_EPILOGUE_CASE(GC_ACT_GELU)
    GC_EPILOGUE_CASE(GC_ACT_GELU_TANH)
    GC_EPILOGUE_CASE(GC_ACT_RELU)
    GC_EPILOGUE_CASE(GC_ACT_CLAMP)
    GC_EPILOGUE_CASE(GC_ACT_HARDSWISH)
    default: break;
    }
}
#undef GC_EPILOGUE_CASE

#else /* no vector extensions: libm, element by element */
#include <math.h>

static inline float gc_act_scalar(int kind, float v, float lo, float hi)
{
    switch (kind) {
    case GC_ACT_EXP: return expf(v);
    case GC_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case GC_ACT_SILU: return v / (1.0f + expf(-v));
    case GC_ACT_TANH: return tanhf(v);
    case GC_ACT_GELU: return (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
    case GC_ACT_RELU: return v < 0.0f ? 0.0f : v;
    case GC_ACT_CLAMP: return v < lo ? lo : v > hi ? hi : v;
    case GC_ACT_HARDSWISH: {
        const float t = v + 3.0f < 0.0f ? 0.0f : v + 3.0f > 6.0f ? 6.0f : v + 3.0f;
        return v * t / 6.0f;
    }
    case GC_ACT_GELU_TANH:
        return (float)(0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
    default: return v;
    }
}

static inline void gc_epilogue_rows(const gc_epilogue *ep, int64_t rows, int64_t cols, float *c, int64_t ldc,
                                    const float *res, const float *rbias)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            float v = c[r * ldc + j];
            if (rbias) v = v + rbias[r];
            if (res && ep->res_first) v = v + res[r * ldc + j];
            v = gc_act_scalar(ep->act, v, ep->lo, ep->hi);
            if (ep->scale != 1.0f) v = v * ep->scale;
            if (res && !ep->res_first) v = v + res[r * ldc + j];
            c[r * ldc + j] = v;
        }
}
#endif

#endif /* GC_EPILOGUE_H */

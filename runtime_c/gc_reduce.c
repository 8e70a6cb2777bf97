/* graphc runtime: softmax / log_softmax, reductions and arg-reductions along one axis.
 *
 * The tensor is viewed as [outer, n, inner] and the operation runs along n. When inner == 1 the rows are
 * contiguous and are processed one by one. Otherwise the kernels walk a block of up to GC_BLOCK adjacent
 * columns at once (all of n for those columns), so every memory access stays unit-stride and the
 * per-column state fits in small stack arrays: no scratch memory is needed. Every output element is
 * produced by one thread in a fixed order, so results do not depend on the thread count.
 *
 * NaN semantics follow PyTorch: a NaN anywhere in a softmax row makes the whole row NaN, and so does
 * +inf or a row made only of -inf; max/min/argmax/argmin treat NaN as the extreme value (argmax and
 * argmin both return the first NaN). Sums and products accumulate in double.
 */
#include <math.h>

#include "graphc_rt.h"
#include "gc_simd.h"

#define GC_BLOCK 64
#define LANES 8
#define GC_REDUCE_PARALLEL_MIN 16384

/* ------------------------------------------------------------------ softmax */

/* max of x[0..n) ignoring NaN (n > 0); eight lanes so the compiler vectorises it */
static float row_max(const float *x, int64_t n)
{
    float m[LANES];
    for (int l = 0; l < LANES; l++)
        m[l] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++)
            m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
    for (; i < n; i++)
        m[0] = x[i] > m[0] ? x[i] : m[0];
    float r = m[0];
    for (int l = 1; l < LANES; l++)
        r = m[l] > r ? m[l] : r;
    return r;
}

/* Contiguous row. The max may skip NaN: a NaN still turns the sum, hence the whole row, into NaN (and
 * so does +inf, through inf - inf). */
static void softmax_row(const float *x, float *y, int64_t n, int use_log)
{
    const float m = row_max(x, n);
    double sum = 0.0;
    int64_t i = 0;
    if (use_log) {
        for (int64_t j = 0; j < n; j++)
            sum += expf(x[j] - m);
        const float lse = (float)log(sum);
        for (; i + LANES <= n; i += LANES) {
            float v[LANES];
            for (int l = 0; l < LANES; l++)
                v[l] = (x[i + l] - m) - lse;
            for (int l = 0; l < LANES; l++)
                y[i + l] = v[l];
        }
        for (; i < n; i++)
            y[i] = (x[i] - m) - lse;
    } else {
        for (int64_t j = 0; j < n; j++) {
            const float e = expf(x[j] - m);
            y[j] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / sum);
        for (; i + LANES <= n; i += LANES)
            for (int l = 0; l < LANES; l++)
                y[i + l] *= inv;
        for (; i < n; i++)
            y[i] *= inv;
    }
}

/* columns [0, bw) of x/y, which point at element (o, 0, i0); consecutive j are `inner` apart */
static void softmax_cols(const float *x, float *y, int64_t n, int64_t inner, int bw, int use_log)
{
    float m[GC_BLOCK];
    double sum[GC_BLOCK];
    for (int c = 0; c < bw; c++) {
        m[c] = -INFINITY;
        sum[c] = 0.0;
    }
    for (int64_t j = 0; j < n; j++) {
        const float *xr = x + j * inner;
        for (int c = 0; c < bw; c++)
            m[c] = xr[c] > m[c] ? xr[c] : m[c]; /* NaN skipped, as in softmax_row */
    }
    for (int64_t j = 0; j < n; j++) {
        const float *xr = x + j * inner;
        float *yr = y + j * inner;
        for (int c = 0; c < bw; c++) {
            const float e = expf(xr[c] - m[c]);
            sum[c] += e;
            if (!use_log)
                yr[c] = e;
        }
    }
    if (use_log) {
        float lse[GC_BLOCK];
        for (int c = 0; c < bw; c++)
            lse[c] = (float)log(sum[c]);
        for (int64_t j = 0; j < n; j++) {
            const float *xr = x + j * inner;
            float *yr = y + j * inner;
            for (int c = 0; c < bw; c++)
                yr[c] = (xr[c] - m[c]) - lse[c];
        }
    } else {
        float inv[GC_BLOCK];
        for (int c = 0; c < bw; c++)
            inv[c] = (float)(1.0 / sum[c]);
        for (int64_t j = 0; j < n; j++) {
            float *yr = y + j * inner;
            for (int c = 0; c < bw; c++)
                yr[c] *= inv[c];
        }
    }
}

void gc_softmax(int64_t outer, int64_t n, int64_t inner, const float *x, float *y, int log_output,
                int nthreads)
{
    if (outer <= 0 || n <= 0 || inner <= 0)
        return;
    if (nthreads < 1)
        nthreads = 1;
    const int64_t work = outer * n * inner;
    (void)work; /* only read by the OpenMP if-clause */
    if (inner == 1) {
        GC_PARALLEL_FOR(work >= GC_REDUCE_PARALLEL_MIN)
        for (int64_t o = 0; o < outer; o++)
            softmax_row(x + o * n, y + o * n, n, log_output);
        return;
    }
    const int64_t nblocks = (inner + GC_BLOCK - 1) / GC_BLOCK;
    GC_PARALLEL_FOR(work >= GC_REDUCE_PARALLEL_MIN)
    for (int64_t t = 0; t < outer * nblocks; t++) {
        const int64_t o = t / nblocks, i0 = (t % nblocks) * GC_BLOCK;
        const int bw = (int)(inner - i0 < GC_BLOCK ? inner - i0 : GC_BLOCK);
        const int64_t off = o * n * inner + i0;
        softmax_cols(x + off, y + off, n, inner, bw, log_output);
    }
}

/* ------------------------------------------------------------------ reductions */

static void reduce_cols(int kind, const float *x, float *y, int64_t n, int64_t inner, int bw)
{
    double acc[GC_BLOCK];
    double init;
    switch (kind) {
    case GC_REDUCE_MAX:
        init = -INFINITY;
        break;
    case GC_REDUCE_MIN:
        init = INFINITY;
        break;
    case GC_REDUCE_PROD:
        init = 1.0;
        break;
    default:
        init = 0.0;
        break;
    }
    for (int c = 0; c < bw; c++)
        acc[c] = init;
    for (int64_t j = 0; j < n; j++) {
        const float *xr = x + j * inner;
        switch (kind) {
        case GC_REDUCE_MAX:
            for (int c = 0; c < bw; c++)
                if (xr[c] > acc[c] || xr[c] != xr[c])
                    acc[c] = xr[c];
            break;
        case GC_REDUCE_MIN:
            for (int c = 0; c < bw; c++)
                if (xr[c] < acc[c] || xr[c] != xr[c])
                    acc[c] = xr[c];
            break;
        case GC_REDUCE_PROD:
            for (int c = 0; c < bw; c++)
                acc[c] *= xr[c];
            break;
        default:
            for (int c = 0; c < bw; c++)
                acc[c] += xr[c];
            break;
        }
    }
    const double div = kind == GC_REDUCE_MEAN ? (double)n : 1.0;
    for (int c = 0; c < bw; c++)
        y[c] = (float)(acc[c] / div);
}

void gc_reduce(int kind, int64_t outer, int64_t n, int64_t inner, const float *x, float *y, int nthreads)
{
    if (outer <= 0 || inner <= 0 || n < 0)
        return;
    if (nthreads < 1)
        nthreads = 1;
    const int64_t nblocks = (inner + GC_BLOCK - 1) / GC_BLOCK;
    GC_PARALLEL_FOR(outer * n * inner >= GC_REDUCE_PARALLEL_MIN)
    for (int64_t t = 0; t < outer * nblocks; t++) {
        const int64_t o = t / nblocks, i0 = (t % nblocks) * GC_BLOCK;
        const int bw = (int)(inner - i0 < GC_BLOCK ? inner - i0 : GC_BLOCK);
        reduce_cols(kind, x + o * n * inner + i0, y + o * inner + i0, n, inner, bw);
    }
}

static void argreduce_cols(int is_min, const float *x, int64_t *y, int64_t n, int64_t inner, int bw)
{
    float best[GC_BLOCK];
    int64_t idx[GC_BLOCK];
    for (int c = 0; c < bw; c++) {
        best[c] = n > 0 ? x[c] : 0.0f;
        idx[c] = 0;
    }
    for (int64_t j = 1; j < n; j++) {
        const float *xr = x + j * inner;
        for (int c = 0; c < bw; c++) {
            const float v = xr[c];
            const int better = is_min ? v < best[c] : v > best[c];
            /* the first NaN wins and is never replaced */
            if (better || (v != v && best[c] == best[c])) {
                best[c] = v;
                idx[c] = j;
            }
        }
    }
    for (int c = 0; c < bw; c++)
        y[c] = idx[c];
}

void gc_argreduce(int is_min, int64_t outer, int64_t n, int64_t inner, const float *x, int64_t *y,
                  int nthreads)
{
    if (outer <= 0 || inner <= 0 || n < 0)
        return;
    if (nthreads < 1)
        nthreads = 1;
    const int64_t nblocks = (inner + GC_BLOCK - 1) / GC_BLOCK;
    GC_PARALLEL_FOR(outer * n * inner >= GC_REDUCE_PARALLEL_MIN)
    for (int64_t t = 0; t < outer * nblocks; t++) {
        const int64_t o = t / nblocks, i0 = (t % nblocks) * GC_BLOCK;
        const int bw = (int)(inner - i0 < GC_BLOCK ? inner - i0 : GC_BLOCK);
        argreduce_cols(is_min, x + o * n * inner + i0, y + o * inner + i0, n, inner, bw);
    }
}

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
#include "gc_vmath.h"

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
#if GC_VW > 1
/* e^(x - max) on whole vectors (gc_vexp, 1.5e-7), summed in float vectors over chunks of 256 elements
 * whose totals add in double; the last partial vector goes through a copy padded with -inf (e^-inf = 0,
 * and a row whose max is -inf or +inf is NaN whatever the padding adds) */
#define GC_SOFTMAX_CHUNK 256
static inline double vsum_double(gc_vf v)
{
    float t[GC_VW];
    vstore(t, v);
    double s = 0.0;
    for (int l = 0; l < GC_VW; l++)
        s += t[l];
    return s;
}

static void softmax_row(const float *x, float *y, int64_t n, int use_log)
{
    const float m = row_max(x, n);
    const gc_vf vm = vset1(m);
    double sum = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += GC_SOFTMAX_CHUNK) {
        const int64_t c1 = n - c0 < GC_SOFTMAX_CHUNK ? n : c0 + GC_SOFTMAX_CHUNK;
        gc_vf s = vset1(0.0f);
        int64_t j = c0;
        for (; j + GC_VW <= c1; j += GC_VW) {
            const gc_vf e = gc_vexp(vload(x + j) - vm);
            if (!use_log)
                vstore(y + j, e);
            s += e;
        }
        if (j < c1) {
            float buf[GC_VW];
            for (int l = 0; l < GC_VW; l++)
                buf[l] = j + l < c1 ? x[j + l] : -INFINITY;
            const gc_vf e = gc_vexp(vload(buf) - vm);
            s += e;
            if (!use_log) {
                vstore(buf, e);
                for (int64_t l = 0; j + l < c1; l++)
                    y[j + l] = buf[l];
            }
        }
        sum += vsum_double(s);
    }
    int64_t i = 0;
    if (use_log) {
        const gc_vf vl = vset1((float)log(sum));
        for (; i + GC_VW <= n; i += GC_VW)
            vstore(y + i, (vload(x + i) - vm) - vl);
        const float lse = (float)log(sum);
        for (; i < n; i++)
            y[i] = (x[i] - m) - lse;
    } else {
        const float inv = (float)(1.0 / sum);
        const gc_vf vi = vset1(inv);
        for (; i + GC_VW <= n; i += GC_VW)
            vstore(y + i, vload(y + i) * vi);
        for (; i < n; i++)
            y[i] *= inv;
    }
}
#else
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

#endif

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

typedef struct softmax_job {
    const float *x;
    float *y;
    int64_t outer, n, rows_per_task;
    int use_log;
} softmax_job;

static void softmax_task(void *arg, int64_t t)
{
    const softmax_job *j = arg;
    const int64_t r0 = t * j->rows_per_task;
    const int64_t r1 = r0 + j->rows_per_task < j->outer ? r0 + j->rows_per_task : j->outer;
    for (int64_t r = r0; r < r1; r++)
        softmax_row(j->x + r * j->n, j->y + r * j->n, j->n, j->use_log);
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
    if (inner == 1) { /* rows in tasks of about 8192 elements on the context's pool */
        int64_t per = 8192 / n;
        per = per < 1 ? 1 : per;
        const softmax_job job = {x, y, outer, n, per, log_output};
        gc_parallel_for((outer + per - 1) / per, work >= GC_REDUCE_PARALLEL_MIN ? nthreads : 1, softmax_task,
                        (void *)&job);
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

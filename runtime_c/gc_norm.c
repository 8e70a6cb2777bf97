/* graphc runtime: normalisation kernels (layer, RMS, batch and group norm), PyTorch semantics.
 *
 * Statistics use two passes: the mean first, then the sums of the deviations d = x - mean and of d^2,
 * with the usual correction term (var = (sum d^2 - (sum d)^2 / n) / n), so a large common offset in the
 * data does not destroy the variance the way E[x^2] - E[x]^2 would. The variance is the biased one
 * (divide by n) and eps is added inside the square root, as in PyTorch.
 *
 * Speed without giving up accuracy: the sums run in float vectors (gc_vf, as wide as the ISA the file is
 * compiled for) over chunks of CHUNK elements (short sums, so float is accurate) and the chunk totals are
 * added in double. Layer and RMS norm write each row in one more pass, y = d * rstd * w + b, so a row is
 * read three times while it sits in L1. Rows are split into tasks for the context's thread pool
 * (gc_parallel_for); every row is computed by exactly one thread in a fixed order, so the result does not
 * depend on the thread count. In-place use (y == x) is fine: every vector is loaded before it is stored.
 */
#include <math.h>

#include "graphc_rt.h"
#include "gc_simd.h"

/* Spawning a thread team costs a few microseconds: below this many elements stay single-threaded. */
#define GC_NORM_PARALLEL_MIN 16384
/* elements per task of the row-parallel loops (whole rows, at least one) */
#define GC_NORM_TASK 8192
#define CHUNK 256

/* The mean as an unevaluated float sum hi + lo: (x - hi) - lo keeps the precision of the double mean
 * (x - hi is exact when x is close to the mean), which matters when the data sit on a large offset. */
typedef struct split_mean {
    float hi, lo;
} split_mean;

static split_mean split(double mean)
{
    split_mean m;
    m.hi = (float)mean;
    m.lo = (float)(mean - (double)m.hi);
    return m;
}

/* the lanes of v added in double as a tree (depth log2 of the width instead of a chain of width adds:
 * for short rows these sums were most of the time) */
static inline double vsum_double(gc_vf v)
{
    float t[GC_VW];
    vstore(t, v);
    double d[GC_VW];
    for (int l = 0; l < GC_VW; l++)
        d[l] = t[l];
    for (int w = GC_VW / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            d[l] += d[l + w];
    return d[0];
}

/* sums of d = (x - m.hi) - m.lo (want_sum) and of d^2 (want_sq) over x[0..n); always inlined with
 * constant flags, so each caller computes only the sums it uses */
static GC_ALWAYS_INLINE void deviation_sums_k(const int want_sum, const int want_sq, const float *x, int64_t n,
                                              split_mean m, double *sum_out, double *sumsq_out)
{
    const gc_vf hi = vset1(m.hi), lo = vset1(m.lo);
    double sum = 0.0, sumsq = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
        const int64_t len = n - c0 < CHUNK ? n - c0 : CHUNK;
        const float *xc = x + c0;
        gc_vf s0 = vset1(0.0f), s1 = vset1(0.0f), q0 = vset1(0.0f), q1 = vset1(0.0f);
        int64_t i = 0;
        for (; i + 2 * GC_VW <= len; i += 2 * GC_VW) {
            const gc_vf d0 = (vload(xc + i) - hi) - lo, d1 = (vload(xc + i + GC_VW) - hi) - lo;
            if (want_sum) {
                s0 += d0;
                s1 += d1;
            }
            if (want_sq) {
                q0 = vfma(d0, d0, q0);
                q1 = vfma(d1, d1, q1);
            }
        }
        for (; i + GC_VW <= len; i += GC_VW) {
            const gc_vf d0 = (vload(xc + i) - hi) - lo;
            if (want_sum)
                s0 += d0;
            if (want_sq)
                q0 = vfma(d0, d0, q0);
        }
        float ts = 0.0f, tq = 0.0f;
        for (; i < len; i++) {
            const float d = (xc[i] - m.hi) - m.lo;
            ts += d;
            tq += d * d;
        }
        if (want_sum)
            sum += vsum_double(s0 + s1) + ts;
        if (want_sq)
            sumsq += vsum_double(q0 + q1) + tq;
    }
    *sum_out = sum;
    *sumsq_out = sumsq;
}

static void deviation_sums(const float *x, int64_t n, split_mean m, double *sum_out, double *sumsq_out)
{
    deviation_sums_k(1, 1, x, n, m, sum_out, sumsq_out);
}

static double plain_sum(const float *x, int64_t n)
{
    const split_mean zero = {0.0f, 0.0f};
    double sum, unused;
    deviation_sums_k(1, 0, x, n, zero, &sum, &unused);
    return sum;
}

static double square_sum(const float *x, int64_t n)
{
    const split_mean zero = {0.0f, 0.0f};
    double unused, sumsq;
    deviation_sums_k(0, 1, x, n, zero, &unused, &sumsq);
    return sumsq;
}

/* mean and biased variance of x[0..n) (n > 0) */
static void row_moments(const float *x, int64_t n, split_mean *mean_out, double *var_out)
{
    const double inv_n = 1.0 / (double)n; /* off the dependency chain of the sums */
    double sum, sumsq;
    /* the first pass's mean, rounded to float, is only the shift of the second pass: that pass measures
     * how far off it is (sum / n) and corrects both the mean and the variance */
    const split_mean m = {(float)(plain_sum(x, n) * inv_n), 0.0f};
    deviation_sums(x, n, m, &sum, &sumsq);
    const double dm = sum * inv_n;
    const double var = sumsq * inv_n - dm * dm;
    *mean_out = split((double)m.hi + dm);
    *var_out = var > 0.0 ? var : 0.0;
}

static float inv_std(double var, float eps)
{
    return (float)(1.0 / sqrt(var + (double)eps));
}

/* y = ((x - m.hi) - m.lo) * scale + shift */
static void normalize(const float *x, float *y, int64_t n, split_mean m, float scale, float shift)
{
    const gc_vf hi = vset1(m.hi), lo = vset1(m.lo), sc = vset1(scale), sh = vset1(shift);
    int64_t i = 0;
    for (; i + GC_VW <= n; i += GC_VW)
        vstore(y + i, vfma((vload(x + i) - hi) - lo, sc, sh));
    for (; i < n; i++)
        y[i] = ((x[i] - m.hi) - m.lo) * scale + shift;
}

/* y = ((x - m.hi) - m.lo) * rstd * w + b over one row; w and/or b may be NULL */
static void normalize_row(const float *x, float *y, int64_t n, split_mean m, float rstd, const float *w,
                          const float *b)
{
    const gc_vf hi = vset1(m.hi), lo = vset1(m.lo), r = vset1(rstd);
    int64_t i = 0;
    if (w && b)
        for (; i + GC_VW <= n; i += GC_VW)
            vstore(y + i, vfma(((vload(x + i) - hi) - lo) * r, vload(w + i), vload(b + i)));
    else if (w)
        for (; i + GC_VW <= n; i += GC_VW)
            vstore(y + i, ((vload(x + i) - hi) - lo) * r * vload(w + i));
    else if (b)
        for (; i + GC_VW <= n; i += GC_VW)
            vstore(y + i, ((vload(x + i) - hi) - lo) * r + vload(b + i));
    else
        for (; i + GC_VW <= n; i += GC_VW)
            vstore(y + i, ((vload(x + i) - hi) - lo) * r);
    for (; i < n; i++) {
        float v = ((x[i] - m.hi) - m.lo) * rstd;
        if (w)
            v *= w[i];
        if (b)
            v += b[i];
        y[i] = v;
    }
}

/* layer / RMS norm over rows [t * rows_per_task, ...) */
typedef struct row_job {
    int rms;
    int64_t outer, n, rows_per_task;
    const float *x, *w, *b;
    float eps;
    float *y;
} row_job;

static void row_task(void *arg, int64_t t)
{
    const row_job *j = arg;
    const int64_t r0 = t * j->rows_per_task;
    const int64_t r1 = r0 + j->rows_per_task < j->outer ? r0 + j->rows_per_task : j->outer;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = j->x + r * j->n;
        float *yr = j->y + r * j->n;
        if (j->rms) {
            const split_mean zero = {0.0f, 0.0f};
            normalize_row(xr, yr, j->n, zero, inv_std(square_sum(xr, j->n) / (double)j->n, j->eps), j->w, NULL);
        } else {
            split_mean m;
            double var;
            row_moments(xr, j->n, &m, &var);
            normalize_row(xr, yr, j->n, m, inv_std(var, j->eps), j->w, j->b);
        }
    }
}

static void rows_norm(int rms, int64_t outer, int64_t n, const float *x, const float *weight, const float *bias,
                      float eps, float *y, int nthreads)
{
    if (outer <= 0 || n <= 0)
        return;
    int64_t per = GC_NORM_TASK / n;
    per = per < 1 ? 1 : per;
    const row_job job = {rms, outer, n, per, x, weight, bias, eps, y};
    const int64_t tasks = (outer + per - 1) / per;
    gc_parallel_for(tasks, outer * n >= GC_NORM_PARALLEL_MIN ? nthreads : 1, row_task, (void *)&job);
}

void gc_layer_norm(int64_t outer, int64_t n, const float *x, const float *weight, const float *bias,
                   float eps, float *y, int nthreads)
{
    rows_norm(0, outer, n, x, weight, bias, eps, y, nthreads);
}

void gc_rms_norm(int64_t outer, int64_t n, const float *x, const float *weight, float eps, float *y,
                 int nthreads)
{
    rows_norm(1, outer, n, x, weight, NULL, eps, y, nthreads);
}

void gc_batch_norm(int64_t n, int64_t c, int64_t inner, const float *x, const float *mean, const float *var,
                   const float *weight, const float *bias, float eps, float *y, int nthreads)
{
    if (n <= 0 || c <= 0 || inner <= 0)
        return;
    if (nthreads < 1)
        nthreads = 1;
    const int64_t rows = n * c;
    GC_PARALLEL_FOR(rows * inner >= GC_NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t ch = r % c;
        const split_mean m = {mean[ch], 0.0f};
        float scale = inv_std((double)var[ch], eps);
        if (weight)
            scale *= weight[ch];
        normalize(x + r * inner, y + r * inner, inner, m, scale, bias ? bias[ch] : 0.0f);
    }
}

void gc_group_norm(int64_t n, int64_t c, int64_t inner, int64_t groups, const float *x, const float *weight,
                   const float *bias, float eps, float *y, int nthreads)
{
    if (n <= 0 || c <= 0 || inner <= 0 || groups <= 0 || c % groups != 0)
        return;
    if (nthreads < 1)
        nthreads = 1;
    const int64_t per_group = c / groups; /* channels in one group */
    const int64_t rows = n * groups;
    GC_PARALLEL_FOR(rows * per_group * inner >= GC_NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t ch0 = (r % groups) * per_group;
        const float *xg = x + r * per_group * inner; /* the group's channels are contiguous */
        float *yg = y + r * per_group * inner;
        split_mean m;
        double var;
        row_moments(xg, per_group * inner, &m, &var);
        const float rstd = inv_std(var, eps);
        for (int64_t cc = 0; cc < per_group; cc++) {
            const float scale = weight ? rstd * weight[ch0 + cc] : rstd;
            const float shift = bias ? bias[ch0 + cc] : 0.0f;
            normalize(xg + cc * inner, yg + cc * inner, inner, m, scale, shift);
        }
    }
}

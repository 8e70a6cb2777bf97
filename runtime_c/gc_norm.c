/* graphc runtime: normalisation kernels (layer, RMS, batch and group norm), PyTorch semantics.
 *
 * Statistics use two passes: the mean first, then the sums of the deviations d = x - mean and of d^2,
 * with the usual correction term (var = (sum d^2 - (sum d)^2 / n) / n), so a large common offset in the
 * data does not destroy the variance the way E[x^2] - E[x]^2 would. The variance is the biased one
 * (divide by n) and eps is added inside the square root, as in PyTorch.
 *
 * Speed without giving up accuracy: the sums run in LANES float lanes over chunks of CHUNK elements
 * (short sums, so float is accurate; independent lanes, so the compiler vectorises them even at -O2)
 * and the chunk totals are added in double. Element-wise loops work in blocks of LANES that load
 * everything before storing, which the compiler vectorises without proving x and y apart (in-place use
 * with y == x is fine). Every row is computed by exactly one thread in a fixed order, so the result does
 * not depend on the thread count.
 */
#include <math.h>

#include "graphc_rt.h"
#include "gc_simd.h"

/* Spawning a thread team costs a few microseconds: below this many elements stay single-threaded. */
#define GC_NORM_PARALLEL_MIN 16384
#define LANES 8
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

/* sums of d = (x - m.hi) - m.lo and of d^2 over x[0..n) */
static void deviation_sums(const float *x, int64_t n, split_mean m, double *sum_out, double *sumsq_out)
{
    double sum = 0.0, sumsq = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
        const int64_t len = n - c0 < CHUNK ? n - c0 : CHUNK;
        const float *xc = x + c0;
        float s[LANES] = {0}, sq[LANES] = {0};
        int64_t i = 0;
        for (; i + LANES <= len; i += LANES)
            for (int l = 0; l < LANES; l++) {
                const float d = (xc[i + l] - m.hi) - m.lo;
                s[l] += d;
                sq[l] += d * d;
            }
        for (; i < len; i++) {
            const float d = (xc[i] - m.hi) - m.lo;
            s[0] += d;
            sq[0] += d * d;
        }
        for (int l = 0; l < LANES; l++) {
            sum += s[l];
            sumsq += sq[l];
        }
    }
    *sum_out = sum;
    *sumsq_out = sumsq;
}

/* mean and biased variance of x[0..n) (n > 0) */
static void row_moments(const float *x, int64_t n, split_mean *mean_out, double *var_out)
{
    const split_mean zero = {0.0f, 0.0f};
    double sum, sumsq;
    deviation_sums(x, n, zero, &sum, &sumsq);
    const split_mean m = split(sum / (double)n);
    deviation_sums(x, n, m, &sum, &sumsq);
    /* the first pass's mean is only approximate (float partial sums): the second pass measures how far
     * off it is (sum / n) and corrects both the mean and the variance */
    const double var = (sumsq - sum * sum / (double)n) / (double)n;
    *mean_out = split((double)m.hi + (double)m.lo + sum / (double)n);
    *var_out = var > 0.0 ? var : 0.0;
}

static float inv_std(double var, float eps)
{
    return (float)(1.0 / sqrt(var + (double)eps));
}

/* y = ((x - m.hi) - m.lo) * scale + shift */
static void normalize(const float *x, float *y, int64_t n, split_mean m, float scale, float shift)
{
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        float v[LANES];
        for (int l = 0; l < LANES; l++)
            v[l] = ((x[i + l] - m.hi) - m.lo) * scale + shift;
        for (int l = 0; l < LANES; l++)
            y[i + l] = v[l];
    }
    for (; i < n; i++)
        y[i] = ((x[i] - m.hi) - m.lo) * scale + shift;
}

/* y = y * w + b element-wise; w and/or b may be NULL */
static void affine(float *y, const float *w, const float *b, int64_t n)
{
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        float v[LANES];
        if (w && b)
            for (int l = 0; l < LANES; l++)
                v[l] = y[i + l] * w[i + l] + b[i + l];
        else if (w)
            for (int l = 0; l < LANES; l++)
                v[l] = y[i + l] * w[i + l];
        else
            for (int l = 0; l < LANES; l++)
                v[l] = y[i + l] + b[i + l];
        for (int l = 0; l < LANES; l++)
            y[i + l] = v[l];
    }
    for (; i < n; i++)
        y[i] = w && b ? y[i] * w[i] + b[i] : w ? y[i] * w[i] : y[i] + b[i];
}

void gc_layer_norm(int64_t outer, int64_t n, const float *x, const float *weight, const float *bias,
                   float eps, float *y, int nthreads)
{
    if (outer <= 0 || n <= 0)
        return;
    if (nthreads < 1)
        nthreads = 1;
    GC_PARALLEL_FOR(outer * n >= GC_NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < outer; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        split_mean m;
        double var;
        row_moments(xr, n, &m, &var);
        normalize(xr, yr, n, m, inv_std(var, eps), 0.0f);
        if (weight || bias)
            affine(yr, weight, bias, n);
    }
}

void gc_rms_norm(int64_t outer, int64_t n, const float *x, const float *weight, float eps, float *y,
                 int nthreads)
{
    if (outer <= 0 || n <= 0)
        return;
    if (nthreads < 1)
        nthreads = 1;
    GC_PARALLEL_FOR(outer * n >= GC_NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < outer; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        const split_mean zero = {0.0f, 0.0f};
        double sum, sumsq;
        deviation_sums(xr, n, zero, &sum, &sumsq);
        normalize(xr, yr, n, zero, inv_std(sumsq / (double)n, eps), 0.0f);
        if (weight)
            affine(yr, weight, NULL, n);
    }
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

/* graphc runtime: normalisation kernels (layer, RMS, batch and group norm), PyTorch semantics.
 *
 * Statistics use a two-pass algorithm accumulated in double (mean first, then the sum of squared
 * deviations, with the usual correction term), so a large common offset in the data does not destroy
 * the variance the way E[x^2] - E[x]^2 would. The variance is the biased one (divide by n) and eps is
 * added inside the square root, as in PyTorch. Every row is computed by exactly one thread, so the
 * result does not depend on the thread count.
 */
#include <math.h>

#include "graphc_rt.h"

/* Spawning a thread team costs a few microseconds: below this many elements stay single-threaded. */
#define GC_NORM_PARALLEL_MIN 16384

#ifdef _OPENMP
#define GC_PRAGMA(x) _Pragma(#x)
#define GC_PARALLEL_FOR(cond) GC_PRAGMA(omp parallel for num_threads(nthreads) schedule(static) if (cond))
#else
#define GC_PARALLEL_FOR(cond)
#endif

/* mean and biased variance of x[0..n) (n > 0) */
static void row_moments(const float *x, int64_t n, double *mean_out, double *var_out)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    const double mean = sum / (double)n;
    double sq = 0.0, corr = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)x[i] - mean;
        sq += d * d;
        corr += d;
    }
    double var = (sq - corr * corr / (double)n) / (double)n;
    *mean_out = mean;
    *var_out = var > 0.0 ? var : 0.0;
}

static float inv_std(double var, float eps)
{
    return (float)(1.0 / sqrt(var + (double)eps));
}

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
        double mean, var;
        row_moments(xr, n, &mean, &var);
        const split_mean m = split(mean);
        const float rstd = inv_std(var, eps);
        for (int64_t i = 0; i < n; i++) {
            float v = ((xr[i] - m.hi) - m.lo) * rstd;
            if (weight)
                v *= weight[i];
            if (bias)
                v += bias[i];
            yr[i] = v;
        }
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
        double sq = 0.0;
        for (int64_t i = 0; i < n; i++)
            sq += (double)xr[i] * (double)xr[i];
        const float rrms = inv_std(sq / (double)n, eps);
        for (int64_t i = 0; i < n; i++)
            yr[i] = weight ? xr[i] * rrms * weight[i] : xr[i] * rrms;
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
        const float m = mean[ch];
        float scale = inv_std((double)var[ch], eps);
        if (weight)
            scale *= weight[ch];
        const float shift = bias ? bias[ch] : 0.0f;
        const float *xr = x + r * inner;
        float *yr = y + r * inner;
        for (int64_t i = 0; i < inner; i++)
            yr[i] = (xr[i] - m) * scale + shift;
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
        double mean, var;
        row_moments(xg, per_group * inner, &mean, &var);
        const split_mean m = split(mean);
        const float rstd = inv_std(var, eps);
        for (int64_t cc = 0; cc < per_group; cc++) {
            const float scale = weight ? rstd * weight[ch0 + cc] : rstd;
            const float shift = bias ? bias[ch0 + cc] : 0.0f;
            const float *xr = xg + cc * inner;
            float *yr = yg + cc * inner;
            for (int64_t i = 0; i < inner; i++)
                yr[i] = ((xr[i] - m.hi) - m.lo) * scale + shift;
        }
    }
}

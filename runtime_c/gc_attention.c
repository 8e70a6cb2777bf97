/* graphc runtime: scaled dot-product attention (PyTorch semantics, math path).
 *
 * For each (batch, head) pair and query row i:
 *     s_j = (q_i . k_j) * scale + mask[b, h, i, j]   for the keys j the row may see (j <= i when causal)
 *     out_i = sum_j softmax(s)_j * v_j
 * The loop runs over the B*H*Tq query rows in parallel; each thread keeps the scores of the row it is
 * working on in its own slice of `work`, so there is no sharing between threads and the result does not
 * depend on the thread count. Rows are assigned in contiguous chunks, so a thread walks the query rows
 * of one head in order and that head's K and V stay in its cache.
 *
 * A row whose every visible score is -inf (fully masked) produces zeros, as PyTorch 2.x's
 * scaled_dot_product_attention does (a NaN would poison every later layer of a padded batch).
 * With no keys at all (Tk == 0) the output is zero, the value of an empty sum.
 */
#include <math.h>
#include <string.h>

#include "graphc_rt.h"
#include "gc_simd.h"

#define GC_SDPA_PARALLEL_MIN 16384

/* Each thread's score row starts on a 64-byte boundary (relative to work) so threads do not share lines. */
static int64_t score_row_stride(int64_t tk)
{
    return (tk + 15) / 16 * 16;
}

size_t gc_sdpa_work_floats(int64_t tq, int64_t tk, int nthreads)
{
    (void)tq;
    if (tk <= 0)
        return 0;
    if (nthreads < 1)
        nthreads = 1;
    return (size_t)nthreads * (size_t)score_row_stride(tk);
}

static float dot(const float *a, const float *b, int64_t n)
{
    /* eight independent partial sums in a fixed order: the compiler can keep them in one vector
     * register, and the result does not depend on anything but the inputs */
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++)
        acc[0] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* y += a * x, in blocks of eight so the compiler vectorises it even at -O2 */
static void axpy(float *restrict y, float a, const float *restrict x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            y[i + l] += a * x[i + l];
    for (; i < n; i++)
        y[i] += a * x[i];
}

void gc_sdpa(int64_t b, int64_t h, int64_t tq, int64_t tk, int64_t d, int64_t dv, const float *q,
             const float *k, const float *v, const float *mask, int64_t mask_sb, int64_t mask_sh,
             int64_t mask_sq, int64_t mask_sk, float scale, int causal, float *out, float *work,
             int nthreads)
{
    if (b <= 0 || h <= 0 || tq <= 0 || dv <= 0 || d < 0)
        return;
    const int64_t rows = b * h * tq;
    if (tk <= 0) {
        memset(out, 0, (size_t)(rows * dv) * sizeof(float));
        return;
    }
    if (nthreads < 1)
        nthreads = 1;
    const int64_t stride = score_row_stride(tk);
    GC_PARALLEL_FOR(rows * tk * (d + dv) >= GC_SDPA_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *s = work + (int64_t)GC_THREAD_ID() * stride;
        const int64_t bh = r / tq, i = r % tq;
        const int64_t bi = bh / h, hi = bh % h;
        const float *qi = q + r * d;
        const float *kh = k + bh * tk * d;
        const float *vh = v + bh * tk * dv;
        const float *mrow = mask ? mask + bi * mask_sb + hi * mask_sh + i * mask_sq : NULL;
        float *o = out + r * dv;
        const int64_t nkeys = causal && i + 1 < tk ? i + 1 : tk;

        float m = -INFINITY;
        for (int64_t j = 0; j < nkeys; j++) {
            float sj = dot(qi, kh + j * d, d) * scale;
            if (mrow)
                sj += mrow[j * mask_sk];
            s[j] = sj;
            if (sj > m || sj != sj)
                m = sj;
        }
        if (m == -INFINITY) { /* fully masked row */
            for (int64_t c = 0; c < dv; c++)
                o[c] = 0.0f;
            continue;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < nkeys; j++) {
            const float e = expf(s[j] - m);
            s[j] = e;
            sum += e;
        }
        for (int64_t c = 0; c < dv; c++)
            o[c] = 0.0f;
        for (int64_t j = 0; j < nkeys; j++)
            axpy(o, s[j], vh + j * dv, dv);
        const float inv = (float)(1.0 / sum);
        for (int64_t c = 0; c < dv; c++)
            o[c] *= inv;
    }
}

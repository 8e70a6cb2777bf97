/* graphc runtime: 2-d max / average / adaptive average pooling over x[N, C, H, W] (PyTorch semantics).
 *
 * The compiler has already folded ceil_mode into oh / ow (windows that would start in the right padding
 * are not part of the output). Max and average pooling work one output row at a time, tap by tap: for
 * tap (i, j) the valid span of output columns reads a unit- or constant-stride input row, so the inner
 * loops have no bounds checks and vectorise. Planes (n, c) are independent: runs of them are the tasks of
 * one gc_parallel_for job (the context's pool, never an OpenMP region: libgomp's workers spin for
 * milliseconds after a region, holding the core the pool's worker needs for the next kernel).
 */
#include <math.h>

#include "graphc_rt.h"
#include "gc_simd.h"

/* below this many output elements x taps, threads cost more than they save */
#define GC_POOL_PARALLEL_MIN 32768.0

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
/* Planes [0, planes) in runs of `per`: about four tasks per thread, so a late worker holds a small piece */
typedef struct planes_job planes_job;
struct planes_job {
    void (*plane)(const planes_job *j, int64_t q);
    const gc_pool2d_params *p;
    int64_t h, w, oh, ow; /* adaptive pooling's sizes */
    const float *x;
    float *y;
    int64_t planes, per;
};

static void planes_task(void *arg, int64_t t)
{
    const planes_job *j = arg;
    const int64_t q1 = (t + 1) * j->per < j->planes ? (t + 1) * j->per : j->planes;
    for (int64_t q = t * j->per; q < q1; q++) j->plane(j, q);
}

static void run_planes(planes_job *j, int nthreads)
{
    const int64_t want = nthreads > 1 ? 4 * (int64_t)nthreads : 1;
    j->per = (j->planes + want - 1) / want;
    if (j->per < 1) j->per = 1;
    gc_parallel_for((j->planes + j->per - 1) / j->per, nthreads, planes_task, j);
}

static inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -(-a / b); }

/* The output indices o in [0, n_out) whose input index o * stride + offset falls inside [0, n_in). */
static void valid_range(int64_t n_out, int64_t n_in, int64_t stride, int64_t offset, int64_t *lo, int64_t *hi)
{
    *lo = max64(0, ceil_div(-offset, stride));
    *hi = min64(n_out, floor_div(n_in - 1 - offset, stride) + 1);
    if (*hi < *lo) *hi = *lo;
}

/* Column taps whose valid output spans are computed once per plane (wider windows compute the rest on
 * the fly): the spans need divisions, far too slow to redo for every output row. */
#define GC_TAP_CACHE 16

typedef struct tap_spans {
    int64_t lo[GC_TAP_CACHE], hi[GC_TAP_CACHE];
} tap_spans;

static void spans_init(tap_spans *t, int64_t kw, int64_t ow, int64_t w, int64_t stride, int64_t dil, int64_t pad)
{
    for (int64_t j = 0; j < kw && j < GC_TAP_CACHE; j++)
        valid_range(ow, w, stride, j * dil - pad, &t->lo[j], &t->hi[j]);
}

static inline void spans_get(const tap_spans *t, int64_t j, int64_t ow, int64_t w, int64_t stride, int64_t off,
                             int64_t *lo, int64_t *hi)
{
    if (j < GC_TAP_CACHE) {
        *lo = t->lo[j];
        *hi = t->hi[j];
    } else {
        valid_range(ow, w, stride, off, lo, hi);
    }
}

/* ------------------------------------------------------------------ max pooling */

/* max that lets a NaN win, like PyTorch's pooling */
static inline float nan_max(float m, float v) { return (v > m || v != v) ? v : m; }

/* yr[o] = max(yr[o], xr[o * stride + off]) over [lo, hi), the common strides as constants so the loop
 * vectorises */
static inline void max_span(float *restrict yr, const float *restrict xr, int64_t lo, int64_t hi, int64_t stride,
                            int64_t off)
{
    if (stride == 1)
        for (int64_t o = lo; o < hi; o++) yr[o] = nan_max(yr[o], xr[o + off]);
    else if (stride == 2)
        for (int64_t o = lo; o < hi; o++) yr[o] = nan_max(yr[o], xr[2 * o + off]);
    else
        for (int64_t o = lo; o < hi; o++) yr[o] = nan_max(yr[o], xr[o * stride + off]);
}

/* One plane: y starts at -inf and every tap raises its valid span, row by row. */
static void max_plane(const gc_pool2d_params *p, const float *x, float *y)
{
    const int64_t H = p->h, W = p->w, OW = p->ow, sw = p->stride_w;
    tap_spans spans;
    spans_init(&spans, p->kw, OW, W, sw, p->dil_w, p->pad_w);
    for (int64_t oh = 0; oh < p->oh; oh++) {
        float *restrict yr = y + oh * OW;
        for (int64_t ow = 0; ow < OW; ow++) yr[ow] = -INFINITY;
        for (int64_t i = 0; i < p->kh; i++) {
            const int64_t ih = oh * p->stride_h - p->pad_h + i * p->dil_h;
            if (ih < 0 || ih >= H) continue;
            for (int64_t j = 0; j < p->kw; j++) {
                const int64_t off = j * p->dil_w - p->pad_w;
                int64_t lo, hi;
                spans_get(&spans, j, OW, W, sw, off, &lo, &hi);
                max_span(yr, x + ih * W, lo, hi, sw, off);
            }
        }
    }
}

static void max_job_plane(const planes_job *j, int64_t q)
{
    const gc_pool2d_params *p = j->p;
    max_plane(p, j->x + q * p->h * p->w, j->y + q * p->oh * p->ow);
}

/* ------------------------------------------------------------------ 2 x 2, stride 2 max pooling */

/* The most common max pool (LeNet, VGG, U-Net) as whole vectors: per output row, the two input rows are
 * maxed lane by lane, then even and odd lanes are split by a shuffle and maxed (y[o] from x[2o], x[2o+1]
 * of both rows). The taps combine in another order than max_plane's, which changes nothing but which of
 * +0 / -0 or of two NaNs wins. LeNet's 6 x 28 x 28 pool: 3.6 -> 0.4 us (AMD EPYC Zen 4, AVX-512). */
#if GC_VW > 1
typedef int32_t gc_pool_vi __attribute__((vector_size(GC_VW * sizeof(int32_t))));

/* lane-wise nan_max(m, v) */
static inline gc_vf vnan_max(gc_vf m, gc_vf v)
{
    const gc_pool_vi take = (v > m) | (v != v);
    return (gc_vf)(((gc_pool_vi)v & take) | ((gc_pool_vi)m & ~take));
}

/* VW outputs from 2 x VW input columns of rows r0 and r1 */
static inline gc_vf max2x2_vec(gc_vf a0, gc_vf a1, gc_vf b0, gc_vf b1)
{
    const gc_vf lo = vnan_max(a0, b0), hi = vnan_max(a1, b1);
    return vnan_max(GC_EVENS(lo, hi), GC_ODDS(lo, hi));
}
#endif

static inline float max2x2_one(const float *r0, const float *r1, int64_t o)
{
    return nan_max(nan_max(r0[2 * o], r1[2 * o]), nan_max(r0[2 * o + 1], r1[2 * o + 1]));
}

/* output row oh of a plane from input rows r0 = 2 oh and r1 = r0 + 1 */
static inline void max2x2_row(const float *r0, const float *r1, float *yr, int64_t OW)
{
    int64_t o = 0;
#if GC_VW > 1
    for (; o + GC_VW <= OW; o += GC_VW)
        vstore(yr + o, max2x2_vec(vload(r0 + 2 * o), vload(r0 + 2 * o + GC_VW), vload(r1 + 2 * o),
                                  vload(r1 + 2 * o + GC_VW)));
#if GC_VW == 16
    if (o < OW) { /* the last OW - o < 16 outputs from 2 (OW - o) inputs per row, masked */
        const int64_t n = 2 * (OW - o);
        const gc_mask16 m0 = (gc_mask16)(n >= 16 ? 0xFFFF : (1u << n) - 1u);
        const gc_mask16 m1 = (gc_mask16)(n > 16 ? (1u << (n - 16)) - 1u : 0u);
        const gc_vf v = max2x2_vec(vload_mask(m0, r0 + 2 * o), vload_mask(m1, r0 + 2 * o + 16),
                                   vload_mask(m0, r1 + 2 * o), vload_mask(m1, r1 + 2 * o + 16));
        vstore_mask(yr + o, (gc_mask16)((1u << (OW - o)) - 1u), v);
        return;
    }
#endif
#endif
    for (; o < OW; o++) yr[o] = max2x2_one(r0, r1, o);
}

/* output rows [q0, q1) counted over all planes (row q is row q % OH of plane q / OH) */
static void max2x2_rows(const gc_pool2d_params *p, const float *x, float *y, int64_t q0, int64_t q1)
{
    const int64_t W = p->w, OW = p->ow, OH = p->oh, in_plane = p->h * W;
    int64_t plane = q0 / OH, oh = q0 % OH;
    const float *xp = x + plane * in_plane;
    float *yr = y + q0 * OW;
    for (int64_t q = q0; q < q1; q++, yr += OW) {
        max2x2_row(xp + 2 * oh * W, xp + (2 * oh + 1) * W, yr, OW);
        if (++oh == OH) {
            oh = 0;
            xp += in_plane;
        }
    }
}

static void max2x2_job_plane(const planes_job *j, int64_t q)
{
    max2x2_rows(j->p, j->x, j->y, q * j->p->oh, (q + 1) * j->p->oh);
}

static int is_max2x2(const gc_pool2d_params *p)
{
    return p->kh == 2 && p->kw == 2 && p->stride_h == 2 && p->stride_w == 2 && p->pad_h == 0 && p->pad_w == 0 &&
           p->dil_h == 1 && p->dil_w == 1 && 2 * p->oh <= p->h && 2 * p->ow <= p->w;
}

/* ------------------------------------------------------------------ separable max pooling */

/* Other windows with dil_w 1 and stride_w 1 or 2 (ResNet's 3 x 3 / 2 pad 1, SPP's 5 x 5 / 1 pad 2), one
 * output row at a time: the window's valid input rows are maxed column by column into a row buffer with
 * -inf in the padding columns (every buffer float read is written), then each output takes the max of its
 * kw consecutive buffer floats, whole vectors at a time (stride 2: even / odd lanes, GC_EVENS / GC_ODDS).
 * max_plane ran 9 strided passes per output row: ResNet-18's 64 x 112 x 112 pool took 974 us on Zen 3
 * (AVX2) against ONNX Runtime's 218. As for 2 x 2, only which of +0 / -0 or of two NaNs wins can differ. */
#define GC_POOL_ROW_FLOATS 4096

/* floats of the row buffer: every column an output reads, padding included */
static int64_t sep_row_floats(const gc_pool2d_params *p)
{
    return (p->ow - 1) * p->stride_w + p->kw;
}

static int is_max_separable(const gc_pool2d_params *p)
{
    return GC_VW > 1 && p->dil_w == 1 && (p->stride_w == 1 || p->stride_w == 2) && p->kh * p->kw > 1 && p->kh <= 64 &&
           sep_row_floats(p) + 2 * GC_VW <= GC_POOL_ROW_FLOATS && p->pad_w < p->kw;
}

#if GC_VW > 1
/* output row oh of one plane xp into yr, with the row buffer buf */
static void max_sep_row(const gc_pool2d_params *p, const float *xp, int64_t oh, float *yr, float *buf)
{
    const int64_t W = p->w, OW = p->ow, kw = p->kw, n = sep_row_floats(p), pw = p->pad_w;
    const int64_t c1 = min64(W, n - pw); /* input columns [0, c1) land in the buffer at pw + c */
    const float *rows[64];
    int nr = 0;
    for (int64_t i = 0; i < p->kh; i++) {
        const int64_t ih = oh * p->stride_h - p->pad_h + i * p->dil_h;
        if (ih >= 0 && ih < p->h && nr < 64) rows[nr++] = xp + ih * W;
    }
    int64_t b = 0;
    for (; b < pw; b++) buf[b] = -INFINITY;
    if (nr == 0) {
        for (int64_t c = 0; c < c1; c++) buf[pw + c] = -INFINITY;
    } else {
        int64_t c = 0;
        for (; c + GC_VW <= c1; c += GC_VW) {
            gc_vf m = vload(rows[0] + c);
            for (int r = 1; r < nr; r++) m = vnan_max(m, vload(rows[r] + c));
            vstore(buf + pw + c, m);
        }
        for (; c < c1; c++) {
            float m = rows[0][c];
            for (int r = 1; r < nr; r++) m = nan_max(m, rows[r][c]);
            buf[pw + c] = m;
        }
    }
    for (b = pw + c1; b < n + 2 * GC_VW; b++) buf[b] = -INFINITY; /* right padding, and what vectors overread */
    int64_t o = 0;
    if (p->stride_w == 1) {
        for (; o + GC_VW <= OW; o += GC_VW) {
            gc_vf m = vload(buf + o);
            for (int64_t j = 1; j < kw; j++) m = vnan_max(m, vload(buf + o + j));
            vstore(yr + o, m);
        }
    } else {
        for (; o + GC_VW <= OW; o += GC_VW) {
            const float *bo = buf + 2 * o;
            gc_vf lo = vload(bo), hi = vload(bo + GC_VW);
            gc_vf m = GC_EVENS(lo, hi); /* tap 0 */
            for (int64_t j = 1; j < kw; j++) {
                if (j % 2) {
                    m = vnan_max(m, GC_ODDS(lo, hi));
                } else {
                    lo = vload(bo + j);
                    hi = vload(bo + j + GC_VW);
                    m = vnan_max(m, GC_EVENS(lo, hi));
                }
            }
            vstore(yr + o, m);
        }
    }
    for (; o < OW; o++) {
        float m = buf[o * p->stride_w];
        for (int64_t j = 1; j < kw; j++) m = nan_max(m, buf[o * p->stride_w + j]);
        yr[o] = m;
    }
}

static void max_sep_job_plane(const planes_job *j, int64_t q)
{
    const gc_pool2d_params *p = j->p;
    _Alignas(64) float buf[GC_POOL_ROW_FLOATS];
    const float *xp = j->x + q * p->h * p->w;
    float *yp = j->y + q * p->oh * p->ow;
    for (int64_t oh = 0; oh < p->oh; oh++) max_sep_row(p, xp, oh, yp + oh * p->ow, buf);
}
#endif

void gc_max_pool2d(const gc_pool2d_params *p, const float *x, float *y, int nthreads)
{
    const int64_t planes = p->n * p->c, out_plane = p->oh * p->ow;
    const int nt = (double)planes * (double)out_plane * (double)(p->kh * p->kw) < GC_POOL_PARALLEL_MIN ? 1 : nthreads;
    if (is_max2x2(p)) {
        if (nt <= 1) {
            max2x2_rows(p, x, y, 0, planes * p->oh);
        } else {
            planes_job j = {max2x2_job_plane, p, 0, 0, 0, 0, x, y, planes, 0};
            run_planes(&j, nt);
        }
        return;
    }
#if GC_VW > 1
    if (is_max_separable(p)) {
        planes_job j = {max_sep_job_plane, p, 0, 0, 0, 0, x, y, planes, 0};
        run_planes(&j, nt);
        return;
    }
#endif
    planes_job j = {max_job_plane, p, 0, 0, 0, 0, x, y, planes, 0};
    run_planes(&j, nt);
}

/* ------------------------------------------------------------------ average pooling */

/* One plane, PyTorch's avg_pool2d: window [start, start + k) clipped to [-pad, size + pad) gives the
 * count_include_pad divisor, clipped to [0, size) the count of real pixels; the sum covers the latter.
 * (PyTorch's avg_pool2d has no dilation, so dil_h / dil_w are not used.) */
static void avg_plane(const gc_pool2d_params *p, const float *x, float *y)
{
    const int64_t H = p->h, W = p->w, OW = p->ow, sw = p->stride_w;
    tap_spans spans;
    spans_init(&spans, p->kw, OW, W, sw, 1, p->pad_w);
    for (int64_t oh = 0; oh < p->oh; oh++) {
        float *restrict yr = y + oh * OW;
        const int64_t h0 = oh * p->stride_h - p->pad_h, h1 = min64(h0 + p->kh, H + p->pad_h);
        const int64_t hin0 = max64(h0, 0), hin1 = min64(h1, H);
        /* sums over the valid taps */
        for (int64_t ow = 0; ow < OW; ow++) yr[ow] = 0.0f;
        for (int64_t ih = hin0; ih < hin1; ih++) {
            const float *restrict xr = x + ih * W;
            for (int64_t j = 0; j < p->kw; j++) {
                const int64_t off = j - p->pad_w;
                int64_t lo, hi;
                spans_get(&spans, j, OW, W, sw, off, &lo, &hi);
                if (sw == 1)
                    for (int64_t ow = lo; ow < hi; ow++) yr[ow] += xr[ow + off];
                else if (sw == 2)
                    for (int64_t ow = lo; ow < hi; ow++) yr[ow] += xr[2 * ow + off];
                else
                    for (int64_t ow = lo; ow < hi; ow++) yr[ow] += xr[ow * sw + off];
            }
        }
        /* divide by the window size each output position is defined to have */
        for (int64_t ow = 0; ow < OW; ow++) {
            int64_t div;
            if (p->divisor_override) {
                div = p->divisor_override;
            } else {
                const int64_t w0 = ow * sw - p->pad_w, w1 = min64(w0 + p->kw, W + p->pad_w);
                if (p->count_include_pad)
                    div = (h1 - h0) * (w1 - w0);
                else
                    div = (hin1 - hin0) * (min64(w1, W) - max64(w0, 0));
            }
            yr[ow] /= (float)div;
        }
    }
}

static void avg_job_plane(const planes_job *j, int64_t q)
{
    const gc_pool2d_params *p = j->p;
    avg_plane(p, j->x + q * p->h * p->w, j->y + q * p->oh * p->ow);
}

void gc_avg_pool2d(const gc_pool2d_params *p, const float *x, float *y, int nthreads)
{
    const int64_t planes = p->n * p->c, out_plane = p->oh * p->ow;
    const int nt = (double)planes * (double)out_plane * (double)(p->kh * p->kw) < GC_POOL_PARALLEL_MIN ? 1 : nthreads;
    planes_job j = {avg_job_plane, p, 0, 0, 0, 0, x, y, planes, 0};
    run_planes(&j, nt);
}

/* ------------------------------------------------------------------ adaptive average pooling */

/* One plane: bin (i, j) covers rows [floor(i*H/OH), ceil((i+1)*H/OH)) and the same for columns. */
static void adaptive_avg_plane(int64_t h, int64_t w, int64_t oh, int64_t ow, const float *x, float *y)
{
    if (oh == 1 && ow == 1) { /* global average pooling */
        y[0] = (float)(gc_sum_floats(x, h * w) / (double)(h * w));
        return;
    }
    for (int64_t i = 0; i < oh; i++) {
        const int64_t h0 = i * h / oh, h1 = ((i + 1) * h + oh - 1) / oh;
        for (int64_t j = 0; j < ow; j++) {
            const int64_t w0 = j * w / ow, w1 = ((j + 1) * w + ow - 1) / ow;
            double s = 0.0;
            for (int64_t r = h0; r < h1; r++) s += gc_sum_floats(x + r * w + w0, w1 - w0);
            y[i * ow + j] = (float)(s / (double)((h1 - h0) * (w1 - w0)));
        }
    }
}

static void adaptive_job_plane(const planes_job *j, int64_t q)
{
    adaptive_avg_plane(j->h, j->w, j->oh, j->ow, j->x + q * j->h * j->w, j->y + q * j->oh * j->ow);
}

void gc_adaptive_avg_pool2d(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh, int64_t ow, const float *x,
                            float *y, int nthreads)
{
    const int64_t planes = n * c;
    /* every input element is read about once when the output is smaller than the input */
    const int nt = (double)planes * (double)(h * w + oh * ow) < GC_POOL_PARALLEL_MIN ? 1 : nthreads;
    planes_job j = {adaptive_job_plane, NULL, h, w, oh, ow, x, y, planes, 0};
    run_planes(&j, nt);
}

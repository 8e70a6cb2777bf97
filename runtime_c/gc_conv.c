/* graphc runtime: 2-d convolution and transposed convolution (PyTorch semantics), on top of gc_sgemm.
 *
 * conv2d, per image n and group g:  Y[OCg, OH*OW] = W_g[OCg, Cg*KH*KW] @ col[Cg*KH*KW, OH*OW] (+ bias)
 *   - col is the im2col unfolding of x_g into `work`, one chunk of output positions (gemm columns) at
 *     a time so that it stays in L2 until the gemm has packed it;
 *   - a 1x1 / stride 1 / no padding conv needs no col: x_g itself is the [Cg, H*W] right operand;
 *   - one input channel per group (depthwise, incl. channel multipliers, and single-channel inputs)
 *     runs a direct per-plane loop instead, with no work memory.
 * conv_transpose2d, per image and group:  col[OCg*KH*KW, H*W] = W_g^T @ x_g, then col2im scatters col
 * into y (initialised with the bias); a 1x1 / stride 1 / no padding one writes into y directly.
 *
 * Threads: the work is cut into tasks (conv2d: image x group x chunk; conv_transpose2d: image x group).
 * When there are enough tasks each thread takes whole ones with its own column buffer (work = that many
 * buffers); otherwise tasks run one after the other with the threads inside im2col / col2im and
 * gc_sgemm (work = one buffer). The *_plan() functions make that choice for both the *_work_floats
 * function and the kernel, so they always agree.
 */
#include <string.h>

#include "graphc_rt.h"

#ifdef _OPENMP
#define GC_PRAGMA(x) _Pragma(#x)
#else
#define GC_PRAGMA(x)
#endif

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* floor(a / b) and ceil(a / b) for b > 0 and any sign of a */
static inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -(-a / b); }

/* The output indices o in [0, n_out) whose input index o * stride + offset falls inside [0, n_in). */
static void valid_range(int64_t n_out, int64_t n_in, int64_t stride, int64_t offset, int64_t *lo, int64_t *hi)
{
    *lo = max64(0, ceil_div(-offset, stride));
    *hi = min64(n_out, floor_div(n_in - 1 - offset, stride) + 1);
    if (*hi < *lo) *hi = *lo;
}

/* ------------------------------------------------------------------ shared planning */

enum { CONV_DIRECT, CONV_GEMM_DIRECT, CONV_COLUMNS };

typedef struct conv_plan {
    int kind;            /* CONV_DIRECT: per-plane loops; CONV_GEMM_DIRECT: gemm on x, no col;
                          * CONV_COLUMNS: gemm through a column buffer (im2col / col2im) */
    int64_t items;       /* images x groups */
    int64_t chunk;       /* conv2d: output positions (gemm columns) per task */
    int64_t chunks;      /* conv2d: tasks per item */
    int task_threads;    /* > 1: threads take whole tasks (one col buffer each); 1: threads inside tasks */
    size_t col_floats;   /* one column buffer (0 without one) */
} conv_plan;

/* A conv2d column chunk holds about this many floats (1 MiB): im2col writes it and the gemm's packing
 * reads it back while it is still in L2 (about 20% faster than one im2col of the whole image on 56x56
 * and larger outputs). Fewer than GC_CONV_MIN_CHUNK output positions per chunk and repacking the
 * weights for every chunk starts to show. Both can be tuned with -D. */
#ifndef GC_CONV_CHUNK_FLOATS
#define GC_CONV_CHUNK_FLOATS (256 * 1024)
#endif
#ifndef GC_CONV_MIN_CHUNK
#define GC_CONV_MIN_CHUNK 384
#endif

/* Threads take whole tasks when tasks split evenly enough or are too small to split inside. */
static int task_threads(int64_t tasks, double flops_per_task, int nthreads)
{
    if (nthreads <= 1 || tasks < nthreads) return 1;
    if (tasks % nthreads == 0 || tasks >= 4 * (int64_t)nthreads || flops_per_task < 2.0e6) return nthreads;
    return 1;
}

static conv_plan conv2d_plan(const gc_conv2d_params *p, int nthreads)
{
    conv_plan pl;
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups;
    const int64_t ckk = cg * p->kh * p->kw, ohw = p->oh * p->ow;
    pl.items = p->n * p->groups;
    pl.col_floats = 0;
    pl.chunk = ohw;
    pl.chunks = 1;
    if (cg == 1) {
        pl.kind = CONV_DIRECT; /* parallel over output planes, no tasks */
        pl.task_threads = 1;
        return pl;
    }
    const int direct = p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
                       p->pad_w == 0 && p->oh == p->h && p->ow == p->w;
    pl.kind = direct ? CONV_GEMM_DIRECT : CONV_COLUMNS;
    if (!direct) {
        /* output positions in L2-sized chunks; with few items and threads, make the task count even */
        const int64_t max_chunk = max64(GC_CONV_MIN_CHUNK, GC_CONV_CHUNK_FLOATS / ckk);
        int64_t chunks = (ohw + max_chunk - 1) / max_chunk;
        if (nthreads > 1 && pl.items < 4 * (int64_t)nthreads && ohw >= 2 * GC_CONV_MIN_CHUNK)
            while ((pl.items * chunks) % nthreads) chunks++;
        pl.chunk = min64(ohw, ((ohw + chunks - 1) / chunks + 15) / 16 * 16); /* whole vectors */
        pl.chunks = (ohw + pl.chunk - 1) / pl.chunk;
        pl.col_floats = (size_t)(ckk * pl.chunk);
    }
    pl.task_threads = task_threads(pl.items * pl.chunks, (double)ocg * (double)pl.chunk * (double)ckk, nthreads);
    return pl;
}

static conv_plan conv_transpose2d_plan(const gc_conv_transpose2d_params *p, int nthreads)
{
    conv_plan pl;
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups;
    const int64_t okk = ocg * p->kh * p->kw, hw = p->h * p->w;
    pl.items = p->n * p->groups;
    pl.chunk = hw;
    pl.chunks = 1;
    pl.task_threads = task_threads(pl.items, (double)okk * (double)hw * (double)cg, nthreads);
    pl.col_floats = 0;
    if (p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0 &&
        p->oh == p->h && p->ow == p->w) {
        pl.kind = CONV_GEMM_DIRECT;
    } else {
        pl.kind = CONV_COLUMNS;
        pl.col_floats = (size_t)(okk * hw);
    }
    return pl;
}

/* y[rows, plane] = bias[row] (0 without bias): the gemm then accumulates onto it */
static void fill_rows(float *y, int64_t rows, int64_t plane, const float *bias)
{
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * plane;
        const float b = bias ? bias[r] : 0.0f;
        for (int64_t i = 0; i < plane; i++) yr[i] = b;
    }
}

/* ------------------------------------------------------------------ conv2d */

/* Column taps whose valid output spans are computed once per plane (wider kernels compute the rest on
 * the fly): the spans need divisions, far too slow to redo for every output row. */
#define GC_TAP_CACHE 16

/* yr[o] += wv * xr[o * stride + off] for o in [lo, hi), with the common strides as constants so the
 * loop vectorises */
static inline void axpy_span(float *restrict yr, const float *restrict xr, float wv, int64_t lo, int64_t hi,
                             int64_t stride, int64_t off)
{
    if (stride == 1)
        for (int64_t o = lo; o < hi; o++) yr[o] += wv * xr[o + off];
    else if (stride == 2)
        for (int64_t o = lo; o < hi; o++) yr[o] += wv * xr[2 * o + off];
    else
        for (int64_t o = lo; o < hi; o++) yr[o] += wv * xr[o * stride + off];
}

/* One output plane of a one-input-channel-per-group conv: y[OH, OW] = sum over taps of w * x (+ b),
 * row by row (the output row stays in L1), each tap adding w times a strided input row to its valid span. */
static void conv_plane_direct(const gc_conv2d_params *p, const float *x, const float *w, float b, float *y)
{
    const int64_t H = p->h, W = p->w, OW = p->ow, sw = p->stride_w;
    int64_t lo_c[GC_TAP_CACHE], hi_c[GC_TAP_CACHE];
    for (int64_t j = 0; j < p->kw && j < GC_TAP_CACHE; j++)
        valid_range(OW, W, sw, j * p->dil_w - p->pad_w, &lo_c[j], &hi_c[j]);
    for (int64_t oh = 0; oh < p->oh; oh++) {
        float *restrict yr = y + oh * OW;
        for (int64_t ow = 0; ow < OW; ow++) yr[ow] = b;
        for (int64_t i = 0; i < p->kh; i++) {
            const int64_t ih = oh * p->stride_h - p->pad_h + i * p->dil_h;
            if (ih < 0 || ih >= H) continue;
            const float *restrict xr = x + ih * W;
            for (int64_t j = 0; j < p->kw; j++) {
                const int64_t off = j * p->dil_w - p->pad_w;
                int64_t lo, hi;
                if (j < GC_TAP_CACHE) {
                    lo = lo_c[j];
                    hi = hi_c[j];
                } else {
                    valid_range(OW, W, sw, off, &lo, &hi);
                }
                axpy_span(yr, xr, w[i * p->kw + j], lo, hi, sw, off);
            }
        }
    }
}

/* Output plane q = (image, output channel) of a one-input-channel-per-group conv. */
static void conv_plane_direct_q(const gc_conv2d_params *p, int64_t q, const float *x, const float *w,
                                const float *bias, float *y)
{
    const int64_t n = q / p->oc, oc = q % p->oc, c = oc / (p->oc / p->groups);
    conv_plane_direct(p, x + (n * p->c + c) * p->h * p->w, w + oc * p->kh * p->kw, bias ? bias[oc] : 0.0f,
                      y + q * p->oh * p->ow);
}

/* Rows [r0, r1) of the im2col matrix of one group's channels xg[Cg, H, W], for output positions
 * [q0, q1) only (row-major over OH x OW): row (c, i, j) holds the input pixel under tap (i, j) of
 * channel c, or 0 in the padding. col rows are q1 - q0 long. */
static void im2col_rows(const gc_conv2d_params *p, const float *xg, int64_t r0, int64_t r1, int64_t q0,
                        int64_t q1, float *col)
{
    const int64_t H = p->h, W = p->w, OW = p->ow, sw = p->stride_w;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t c = r / (p->kh * p->kw), i = r / p->kw % p->kh, j = r % p->kw;
        const float *xc = xg + c * H * W;
        const int64_t off = j * p->dil_w - p->pad_w;
        int64_t lo, hi;
        valid_range(OW, W, sw, off, &lo, &hi);
        /* walk the range one output-row segment [ow0, ow1) at a time */
        for (int64_t q = q0; q < q1;) {
            const int64_t oh = q / OW, ow0 = q % OW, ow1 = min64(OW, ow0 + (q1 - q));
            float *restrict d = col + r * (q1 - q0) + (q - q0); /* d[ow - ow0] is output (oh, ow) */
            const int64_t ih = oh * p->stride_h - p->pad_h + i * p->dil_h;
            const int64_t a = ih < 0 || ih >= H ? ow1 : max64(ow0, min64(lo, ow1)); /* zeros before */
            const int64_t b = ih < 0 || ih >= H ? ow1 : max64(a, min64(hi, ow1));   /* copies, then zeros */
            const float *restrict xr = xc + (ih < 0 || ih >= H ? 0 : ih * W);
            for (int64_t ow = ow0; ow < a; ow++) d[ow - ow0] = 0.0f;
            if (sw == 1)
                for (int64_t ow = a; ow < b; ow++) d[ow - ow0] = xr[ow + off];
            else if (sw == 2) /* constant stride: vectorised gather */
                for (int64_t ow = a; ow < b; ow++) d[ow - ow0] = xr[2 * ow + off];
            else
                for (int64_t ow = a; ow < b; ow++) d[ow - ow0] = xr[ow * sw + off];
            for (int64_t ow = b; ow < ow1; ow++) d[ow - ow0] = 0.0f;
            q += ow1 - ow0;
        }
    }
}

/* One task, output positions [q0, q1) of one (image, group) item, with `nt` threads inside: im2col
 * (unless the plan needs none), bias, gemm into the matching columns of y. */
static void conv2d_task(const gc_conv2d_params *p, const conv_plan *pl, int64_t task, const float *x,
                        const float *w, const float *bias, float *y, float *col, int nt)
{
    const int64_t item = task / pl->chunks, n = item / p->groups, g = item % p->groups;
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups;
    const int64_t ckk = cg * p->kh * p->kw, ohw = p->oh * p->ow;
    const int64_t q0 = task % pl->chunks * pl->chunk, q1 = min64(ohw, q0 + pl->chunk), width = q1 - q0;
    const float *xg = x + (n * p->c + g * cg) * p->h * p->w;
    float *yg = y + (n * p->oc + g * ocg) * ohw + q0;
    const float *bg = bias ? bias + g * ocg : NULL;

    const float *rhs = xg + q0; /* [ckk, width] right operand, rows ldb apart */
    int64_t ldb = ohw;
    if (pl->kind == CONV_COLUMNS) {
        if (nt > 1 && ckk > 1) {
            GC_PRAGMA(omp parallel for num_threads(nt) schedule(static))
            for (int64_t r = 0; r < ckk; r++) im2col_rows(p, xg, r, r + 1, q0, q1, col);
        } else {
            im2col_rows(p, xg, 0, ckk, q0, q1, col);
        }
        rhs = col;
        ldb = width;
    }
    /* bias varies along gemm rows, so it goes in first and the gemm accumulates (beta = 1) */
    if (bg)
        for (int64_t o = 0; o < ocg; o++)
            for (int64_t q = 0; q < width; q++) yg[o * ohw + q] = bg[o];
    gc_sgemm(0, 0, ocg, width, ckk, 1.0f, w + g * ocg * ckk, ckk, rhs, ldb, bg ? 1.0f : 0.0f, yg, ohw, NULL, nt);
}

size_t gc_conv2d_work_floats(const gc_conv2d_params *p, int nthreads)
{
    const conv_plan pl = conv2d_plan(p, nthreads);
    return pl.col_floats * (size_t)pl.task_threads;
}

void gc_conv2d(const gc_conv2d_params *p, const float *x, const float *w, const float *bias, float *y,
               float *work, int nthreads)
{
    if (p->n <= 0 || p->oc <= 0 || p->oh <= 0 || p->ow <= 0) return;
    const conv_plan pl = conv2d_plan(p, nthreads);
    const int64_t ohw = p->oh * p->ow;

    if (pl.kind == CONV_DIRECT) {
        /* one input channel per group: output planes are independent, spread them over the threads */
        const int64_t planes = p->n * p->oc;
        const int nt = (double)planes * (double)ohw * (double)(p->kh * p->kw) < 65536.0 ? 1 : nthreads;
        if (nt <= 1) {
            for (int64_t q = 0; q < planes; q++) conv_plane_direct_q(p, q, x, w, bias, y);
            return;
        }
        GC_PRAGMA(omp parallel for num_threads(nt) schedule(static))
        for (int64_t q = 0; q < planes; q++) conv_plane_direct_q(p, q, x, w, bias, y);
        return;
    }

    const int64_t tasks = pl.items * pl.chunks;
    if (pl.task_threads > 1) {
        /* thread t runs tasks t, t + T, ... with column buffer t */
        const int T = pl.task_threads;
        GC_PRAGMA(omp parallel for num_threads(T) schedule(static))
        for (int t = 0; t < T; t++)
            for (int64_t task = t; task < tasks; task += T)
                conv2d_task(p, &pl, task, x, w, bias, y, pl.col_floats ? work + (size_t)t * pl.col_floats : NULL,
                            1);
    } else {
        for (int64_t task = 0; task < tasks; task++) conv2d_task(p, &pl, task, x, w, bias, y, work, nthreads);
    }
}

/* ------------------------------------------------------------------ conv_transpose2d */

/* Scatter-add rows [oc0, oc1) of one group's output channels from col[OCg*KH*KW, H*W] into yg[OCg, OH, OW]:
 * input pixel (ih, iw) under tap (i, j) lands on (ih*sh - ph + i*dh, iw*sw - pw + j*dw). Each output
 * channel only receives its own col rows, so channel ranges can run in parallel. */
static void col2im_channels(const gc_conv_transpose2d_params *p, const float *col, int64_t oc0, int64_t oc1,
                            float *yg)
{
    const int64_t H = p->h, W = p->w, OH = p->oh, OW = p->ow, hw = H * W;
    for (int64_t oc = oc0; oc < oc1; oc++) {
        float *yc = yg + oc * OH * OW;
        for (int64_t i = 0; i < p->kh; i++) {
            int64_t ih_lo, ih_hi;
            valid_range(H, OH, p->stride_h, i * p->dil_h - p->pad_h, &ih_lo, &ih_hi);
            for (int64_t j = 0; j < p->kw; j++) {
                const int64_t off = j * p->dil_w - p->pad_w;
                int64_t iw_lo, iw_hi;
                valid_range(W, OW, p->stride_w, off, &iw_lo, &iw_hi);
                const float *src = col + ((oc * p->kh + i) * p->kw + j) * hw;
                for (int64_t ih = ih_lo; ih < ih_hi; ih++) {
                    const int64_t oh = ih * p->stride_h - p->pad_h + i * p->dil_h;
                    float *restrict yr = yc + oh * OW;
                    const float *restrict sr = src + ih * W;
                    if (p->stride_w == 1)
                        for (int64_t iw = iw_lo; iw < iw_hi; iw++) yr[iw + off] += sr[iw];
                    else
                        for (int64_t iw = iw_lo; iw < iw_hi; iw++) yr[iw * p->stride_w + off] += sr[iw];
                }
            }
        }
    }
}

/* One (image, group) item with `nt` threads inside: gemm into col (or straight into y), then col2im. */
static void conv_transpose2d_item(const gc_conv_transpose2d_params *p, const conv_plan *pl, int64_t item,
                                  const float *x, const float *w, const float *bias, float *y, float *col, int nt)
{
    const int64_t n = item / p->groups, g = item % p->groups;
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups;
    const int64_t okk = ocg * p->kh * p->kw, hw = p->h * p->w, ohw = p->oh * p->ow;
    const float *xg = x + (n * p->c + g * cg) * hw;
    const float *wg = w + g * cg * okk; /* [cg, okk], used transposed */
    float *yg = y + (n * p->oc + g * ocg) * ohw;
    const float *bg = bias ? bias + g * ocg : NULL;

    if (pl->kind == CONV_GEMM_DIRECT) {
        if (bg) fill_rows(yg, ocg, ohw, bg);
        gc_sgemm(1, 0, ocg, hw, cg, 1.0f, wg, okk, xg, hw, bg ? 1.0f : 0.0f, yg, hw, NULL, nt);
        return;
    }
    gc_sgemm(1, 0, okk, hw, cg, 1.0f, wg, okk, xg, hw, 0.0f, col, hw, NULL, nt);
    fill_rows(yg, ocg, ohw, bg);
    if (nt > 1 && ocg > 1) {
        GC_PRAGMA(omp parallel for num_threads(nt) schedule(static))
        for (int64_t oc = 0; oc < ocg; oc++) col2im_channels(p, col, oc, oc + 1, yg);
    } else {
        col2im_channels(p, col, 0, ocg, yg);
    }
}

size_t gc_conv_transpose2d_work_floats(const gc_conv_transpose2d_params *p, int nthreads)
{
    const conv_plan pl = conv_transpose2d_plan(p, nthreads);
    return pl.col_floats * (size_t)pl.task_threads;
}

void gc_conv_transpose2d(const gc_conv_transpose2d_params *p, const float *x, const float *w, const float *bias,
                         float *y, float *work, int nthreads)
{
    if (p->n <= 0 || p->oc <= 0 || p->oh <= 0 || p->ow <= 0) return;
    const conv_plan pl = conv_transpose2d_plan(p, nthreads);
    if (pl.task_threads > 1) {
        const int T = pl.task_threads;
        GC_PRAGMA(omp parallel for num_threads(T) schedule(static))
        for (int t = 0; t < T; t++)
            for (int64_t it = t; it < pl.items; it += T)
                conv_transpose2d_item(p, &pl, it, x, w, bias, y,
                                      pl.col_floats ? work + (size_t)t * pl.col_floats : NULL, 1);
    } else {
        for (int64_t it = 0; it < pl.items; it++) conv_transpose2d_item(p, &pl, it, x, w, bias, y, work, nthreads);
    }
}

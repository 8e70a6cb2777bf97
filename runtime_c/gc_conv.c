/* graphc runtime: 2-d convolution and transposed convolution (PyTorch semantics).
 *
 * conv2d, per image n and group g, by one of four paths (conv2d_plan picks it):
 *   - spatial (kernels with several taps, up to 16 a side; strided or padded 1x1s over at most
 *     GC_SP_MAX_1X1_C channels):
 *     a direct convolution. The input is copied into zero-padded "phase planes" (one per stride phase,
 *     so that every tap reads consecutive floats for consecutive output positions), then register tiles
 *     of GC_SP_MR output channels x GC_SP_NV vectors of output positions accumulate one broadcast weight
 *     times one input vector per FMA over every (input channel, tap). No im2col, weights read in place: on the
 *     small-channel convolutions of CIFAR-style ResNets this runs 2-3x faster than im2col + gemm, and
 *     1.1-1.5x faster on deep 3x3 layers. Small images, whose wide rows would waste many lanes, with
 *     output channels in blocks of 64 run tiles of 6 output positions x 64 channels instead (AVX-512;
 *     the weights are repacked channel-minor for that). Work: the planes of one band of output rows per
 *     thread (and the repacked weights).
 *   - im2col + gemm (the rest):  Y[OCg, OH*OW] = W_g[OCg, Cg*KH*KW] @ col[Cg*KH*KW, OH*OW] (+ bias), col
 *     being the im2col unfolding of x_g into `work`, one chunk of output positions (gemm columns) at a
 *     time so that it stays in L2 until the gemm has packed it;
 *   - a 1x1 / stride 1 / no padding conv needs no col: x_g itself is the [Cg, H*W] right operand;
 *   - one input channel per group (depthwise, incl. channel multipliers, and single-channel inputs)
 *     runs a direct per-plane loop instead, with no work memory.
 * conv_transpose2d, per image and group:  col[OCg*KH*KW, H*W] = W_g^T @ x_g, then col2im scatters col
 * into y (initialised with the bias); a 1x1 / stride 1 / no padding one writes into y directly.
 *
 * Threads: the work is cut into tasks (conv2d: image x group x chunk, or x band of output rows on the
 * spatial path; conv_transpose2d: image x group). When there are enough tasks each thread takes whole
 * ones with its own column buffer / planes (work = that many buffers); otherwise tasks run one after the
 * other with the threads inside im2col / col2im and gc_sgemm (work = one buffer); the spatial path makes
 * enough bands instead. The *_plan() functions make that choice for both the *_work_floats function and
 * the kernel, so they always agree. Every output element is summed in the same order whichever thread
 * and tile computes it: results are bit-identical for any thread count.
 */
#include <math.h>
#include <string.h>

#include "graphc_rt.h"
#include "gc_simd.h"
#include "gc_vmath.h"


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

enum { CONV_DIRECT, CONV_GEMM_DIRECT, CONV_COLUMNS, CONV_SPATIAL, CONV_DEPTHWISE };

/* p has an epilogue (an activation or a residual, graphc_rt.h) */
static inline int has_epilogue(const gc_conv2d_params *p)
{
    return p->act != 0 || p->res != NULL;
}


/* Spatial direct convolution (conv2d, CONV_SPATIAL): a register tile of GC_SP_MR output channels x
 * GC_SP_NV vectors of output positions accumulates over every (input channel, tap) with one broadcast
 * weight times one input vector per FMA; no im2col. See "conv2d, spatial path" below. */
#ifndef GC_SP_MR /* 8 x 3 on AVX-512 measured faster than 6 x 4, 4 x 6 (same) or 12 x 2 */
#define GC_SP_MR (GC_VW == 16 ? 8 : 4)
#endif
#ifndef GC_SP_NV
#define GC_SP_NV 3
#endif
#define GC_SP_TILE (GC_SP_NV * GC_VW)
/* Depth blocking (AVX2 and generic; 0: none): with more than GC_SP_KC_C input channels, a chunk's tiles
 * run GC_SP_KC_C channels (x taps) at a time over groups of GC_SP_KC_B blocks of output channels, so that
 * a tile's inputs for those k stay in L1 while the group's blocks pass over them (64 channels x 3x3 taps
 * of a tile's inputs are ~90 KB: every block re-read them from L2, and the tiles ran at 74% of the FMA
 * peak on Zen 3 against 84% with 32 channels). The partial sums wait in a stack buffer between depth
 * blocks; every output still sums its k in order from the bias, so the bits do not change. Only for bands
 * of at least 2 * GC_SP_CHUNK tiles: on 14x14 and 7x7 images (3 to 9 tiles) it was 5-10% slower. */
#ifndef GC_SP_KC_C
#define GC_SP_KC_C (GC_VW == 16 ? 0 : 16)
#endif
#ifndef GC_SP_KC_B
#define GC_SP_KC_B 8
#endif
/* Small images waste lanes on the wide rows (8x8 outputs, padding 1: 80 lanes for 64 positions). With
 * less than GC_SP_CV_EFF of the lanes used and output channels in blocks of GC_SP_CV_OC, AVX-512 tiles
 * take GC_SP_CV_P output positions x GC_SP_CV_OC channels instead (spatial_cv_tile): 7-16% faster on
 * 8x8 .. 14x14 images. Its transposed stores need at least GC_SP_CV_MIN_CKK multiply-adds per output to
 * pay off, and a block's weights, re-read for every tile, must stay in L2 (GC_SP_CV_WFLOATS). */
#define GC_SP_CV_OC 64
#define GC_SP_CV_P 6
#ifndef GC_SP_CV_EFF
#define GC_SP_CV_EFF 0.92
#endif
#ifndef GC_SP_CV_MIN_CKK
#define GC_SP_CV_MIN_CKK 128
#endif
#ifndef GC_SP_CV_WFLOATS
#define GC_SP_CV_WFLOATS (128 * 1024)
#endif
#ifndef GC_SP_CHUNK
#define GC_SP_CHUNK 8 /* tiles per chunk (see spatial_task) */
#endif
#define GC_SP_MAX_K 16 /* kernel rows / columns the spatial path handles */
#define GC_SP_MAX_TAPS 64 /* taps of the depthwise path */
#define GC_SP_MAX_CKK 4608 /* input channels x taps per group (the tap offset table lives on the stack) */
#ifndef GC_SP_MAX_1X1_C
#define GC_SP_MAX_1X1_C 32
#endif
/* Below this many multiply-adds per call the threads would cost more than they save. */
#ifndef GC_SP_MIN_THREAD_MACS
#define GC_SP_MIN_THREAD_MACS 262144.0
#endif

/* Input bands: the output rows are cut into bands whose phase planes (below) take at most about this
 * many floats, so that they stay in L2 while every block of output channels passes over them. */
#ifndef GC_SP_BAND_FLOATS
#define GC_SP_BAND_FLOATS (128 * 1024)
#endif

/* The input of one band of output rows of one (image, group) item, rearranged for CONV_SPATIAL: per input
 * channel one zero-padded "phase plane" per (row phase a, column phase b) that a tap reads,
 * a = (i*dil_h) % stride_h, b = (j*dil_w) % stride_w; plane element (r, s) is the padded input at
 * ((r0 + r)*stride_h + a, s*stride_w + b) for a band starting at output row r0. Tap (i, j) of output
 * (r0 + oh, ow) then reads plane (a, b) at (oh + i*dil_h/stride_h, ow + j*dil_w/stride_w): a stride-1
 * access, so consecutive output positions are consecutive floats. Output positions are numbered over
 * "wide" rows of pw >= ow columns (q = oh*pw + ow; the columns past ow are computed and dropped), which
 * makes every tap one constant offset from q. Plane rows are pw floats apart too: a tap reading past
 * the right end of a row lands at the start of the next row, which holds zeros there (the left padding),
 * so a row needs only max(left, right) padding columns, not both (3x3, padding 1: pw = ow + 1). */
typedef struct spatial_geom {
    int64_t na, nb;        /* row / column phases in use */
    int64_t arow[GC_SP_MAX_K], bcol[GC_SP_MAX_K]; /* their phase values */
    int64_t tap_a[GC_SP_MAX_K], tap_b[GC_SP_MAX_K]; /* phase index of each kernel row / column */
    int64_t pw;            /* plane row pitch = wide row length */
    int64_t clo[GC_SP_MAX_K], chi[GC_SP_MAX_K]; /* per column phase: the columns [clo, chi) holding input */
    int64_t maxoff;        /* largest column offset of a tap: (kw-1)*dil_w/stride_w */
    int64_t halo;          /* plane rows past a band's output rows: (kh-1)*dil_h/stride_h */
    int64_t bh, bands;     /* output rows per band (the last one may have fewer), bands per item */
    int64_t plane;         /* floats per plane, incl. the zero tail that a band's last tile reads */
    int64_t cstride;       /* floats per input channel: na * nb * plane */
    int64_t ocb;           /* blocks of GC_SP_MR output channels per group */
    int64_t ocparts;       /* tasks per band, each a range of the blocks (one image, few bands) */
    int threads;           /* threads taking whole (item, band) tasks, each with its own planes */
    int chanvec;           /* tiles of output positions x GC_SP_CV_OC channels (see spatial_cv_tile) */
    int wide;              /* depthwise: vectors over wide positions instead of per output row */
} spatial_geom;

typedef struct conv_plan {
    int kind;            /* CONV_DIRECT: per-plane loops; CONV_GEMM_DIRECT: gemm on x, no col;
                          * CONV_COLUMNS: gemm through a column buffer (im2col / col2im);
                          * CONV_SPATIAL: direct register-tiled loops over phase planes */
    int64_t items;       /* images x groups */
    int64_t chunk;       /* conv2d: output positions (gemm columns) per task */
    int64_t chunks;      /* conv2d: tasks per item */
    int task_threads;    /* > 1: threads take whole tasks (one col buffer each); 1: threads inside tasks */
    size_t col_floats;   /* one column buffer (0 without one); CONV_SPATIAL: one item's phase planes */
    size_t pack_floats;  /* CONV_SPATIAL by channel vectors: the packed weights, before the buffers */
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
/* A 1x1 conv writes at most about this many floats per gemm call (256 KiB). */
#ifndef GC_CONV_EPI_FLOATS
#define GC_CONV_EPI_FLOATS (64 * 1024)
#endif

/* Threads take whole tasks when tasks split evenly enough or are too small to split inside. */
static int task_threads(int64_t tasks, double flops_per_task, int nthreads)
{
    if (nthreads <= 1 || tasks < nthreads) return 1;
    if (tasks % nthreads == 0 || tasks >= 4 * (int64_t)nthreads || flops_per_task < 2.0e6) return nthreads;
    return 1;
}

/* Floats per plane for bands of bh output rows: the rows with their halo, or up to the furthest float
 * that the whole vectors of the band's last tile read. */
static int64_t spatial_plane_floats(const spatial_geom *g, int64_t bh)
{
    const int64_t wide = bh * g->pw;
    const int64_t reach = (wide + GC_VW - 1) / GC_VW * GC_VW + g->halo * g->pw + g->maxoff;
    return (max64((bh + g->halo) * g->pw, reach) + 15) / 16 * 16;
}

/* The CONV_SPATIAL geometry of p for nthreads; 0 when the spatial path cannot run it (kernel too large). */
static int spatial_geometry(const gc_conv2d_params *p, int nthreads, spatial_geom *g)
{
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups, items = p->n * p->groups;
    if (p->n <= 0 || p->oh <= 0 || p->ow <= 0 || p->kh > GC_SP_MAX_K || p->kw > GC_SP_MAX_K ||
        cg * p->kh * p->kw > GC_SP_MAX_CKK)
        return 0;
    g->na = g->nb = 0;
    for (int64_t i = 0; i < p->kh; i++) {
        const int64_t a = i * p->dil_h % p->stride_h;
        int64_t k = 0;
        while (k < g->na && g->arow[k] != a) k++;
        if (k == g->na) g->arow[g->na++] = a;
        g->tap_a[i] = k;
    }
    for (int64_t j = 0; j < p->kw; j++) {
        const int64_t b = j * p->dil_w % p->stride_w;
        int64_t k = 0;
        while (k < g->nb && g->bcol[k] != b) k++;
        if (k == g->nb) g->bcol[g->nb++] = b;
        g->tap_b[j] = k;
    }
    /* pitch: every column that holds input fits in a row, and no tap reaching past a row's end gets to
     * the input of the next row: ow - 1 + offset - pw < clo for every tap of the phase */
    g->maxoff = (p->kw - 1) * p->dil_w / p->stride_w;
    g->pw = p->ow;
    for (int64_t bi = 0; bi < g->nb; bi++) {
        int64_t off = 0; /* largest offset of the phase's taps */
        for (int64_t j = 0; j < p->kw; j++)
            if (g->tap_b[j] == bi) off = max64(off, j * p->dil_w / p->stride_w);
        valid_range(p->ow + off, p->w, p->stride_w, g->bcol[bi] - p->pad_w, &g->clo[bi], &g->chi[bi]);
        if (g->chi[bi] > g->clo[bi]) g->pw = max64(g->pw, max64(g->chi[bi], p->ow + off - g->clo[bi]));
    }
    g->halo = (p->kh - 1) * p->dil_h / p->stride_h;
    g->ocb = (ocg + GC_SP_MR - 1) / GC_SP_MR;
    const double macs = (double)items * (double)ocg * (double)(p->oh * p->ow) * (double)(cg * p->kh * p->kw);
    const int T = nthreads > 1 && macs >= GC_SP_MIN_THREAD_MACS ? nthreads : 1;
    /* bands within the L2 budget; with fewer items than threads x 4, enough bands to split evenly */
    const int64_t row_floats = max64(1, cg * g->na * g->nb * g->pw);
    int64_t bands = (p->oh + max64(1, GC_SP_BAND_FLOATS / row_floats - g->halo) - 1) /
                    max64(1, GC_SP_BAND_FLOATS / row_floats - g->halo);
    /* output positions x channel vectors when the wide rows waste many lanes (small images) */
    const double lanes = (double)((p->oh * g->pw + GC_VW - 1) / GC_VW * GC_VW);
    const int64_t ckk = cg * p->kh * p->kw;
    g->chanvec = GC_VW == 16 && ocg % GC_SP_CV_OC == 0 && ckk >= GC_SP_CV_MIN_CKK &&
                 ckk * GC_SP_CV_OC <= GC_SP_CV_WFLOATS && (double)(p->oh * p->ow) < GC_SP_CV_EFF * lanes;
    /* Too few (item, band) tasks for the threads: split each band's blocks of output channels over them
     * when there are enough blocks (the band's planes are then built by every task of the band, a small
     * cost next to its multiply-adds), rather than cutting more bands: each thread then reads only its
     * share of the weights (7x7 x 512 channels: 9.4 MB a call), and the bands keep the tiles and the
     * lanes of one thread. Otherwise, enough bands to split evenly. */
    g->ocparts = 1;
    if (T > 1 && items < 4 * (int64_t)T && (items * bands) % T) {
        if (!g->chanvec && g->ocb >= 2 * (int64_t)T)
            g->ocparts = T;
        else
            while ((items * bands) % T && bands < p->oh) bands++;
    }
    g->bh = (p->oh + bands - 1) / bands;
    g->bands = (p->oh + g->bh - 1) / g->bh;
    g->plane = spatial_plane_floats(g, g->bh);
    g->cstride = g->na * g->nb * g->plane;
    g->threads = (int)min64(T, items * g->bands * g->ocparts);
    return 1;
}

static int depthwise_ok(const gc_conv2d_params *p)
{
    return p->groups == p->c && p->oc == p->c && p->c > 0 && p->dil_h == 1 && p->dil_w == 1 &&
           p->stride_h >= 1 && p->stride_h <= 2 && p->stride_w >= 1 && p->stride_w <= 2 && p->kh <= GC_SP_MAX_K &&
           p->kw <= GC_SP_MAX_K && p->kh * p->kw <= GC_SP_MAX_TAPS && p->kh * p->kw > 1;
}

/* Depthwise slots: runs of consecutive (plane, band) tasks, each slot with its own plane buffer; with
 * several threads 4 slots per thread, claimed one at a time, so that a thread the OS runs late (a busy
 * machine, a worker still waking up) leaves its share to the others instead of doubling the time. */
static int64_t depthwise_slots(const gc_conv2d_params *p, const spatial_geom *g)
{
    return g->threads <= 1 ? 1 : min64(p->n * p->c * g->bands, 4 * (int64_t)g->threads);
}

/* Square 3x3, 5x5 or 7x7 kernels at equal strides (1 or 2): the depthwise tiles with constant taps. */
static int depthwise_square(const gc_conv2d_params *p)
{
    return GC_VW > 1 && p->kh == p->kw && (p->kh == 3 || p->kh == 5 || p->kh == 7) && p->stride_h == p->stride_w;
}

#if GC_VW == 8
/* Square stride-2 kernels on AVX2 read the band's input rows as they are (zero-padded copies, no phase
 * planes) and deinterleave them in the tiles (dw_tile_s2). */
static int depthwise_raw2(const gc_conv2d_params *p)
{
    return depthwise_square(p) && p->stride_h == 2;
}
#endif

/* The spatial geometry with planes long enough for whole vectors at the end of every output row; for
 * square kernels plane rows of whole vectors (written by aligned stores, dw_planes). */
static int depthwise_geometry(const gc_conv2d_params *p, int nthreads, spatial_geom *g)
{
    if (!spatial_geometry(p, nthreads, g)) return 0;
#if GC_VW == 8
    if (depthwise_raw2(p)) {
        /* the band's 2 (bh - 1) + K input rows, each with its padding (so that a row's zeros are its own),
         * pw floats apart; the tail holds what the last row's whole vectors read past it */
        const int64_t nvec = (p->ow + GC_VW - 1) / GC_VW;
        g->pw = (p->w + 2 * p->pad_w + GC_VW - 1) / GC_VW * GC_VW;
        g->plane = ((2 * (g->bh - 1) + p->kh) * g->pw + 2 * nvec * GC_VW + p->kw + 2 * GC_VW + 15) / 16 * 16;
        g->cstride = g->plane;
        g->wide = 0;
        return 1;
    }
#endif
    if (depthwise_square(p)) {
        g->pw = (g->pw + GC_VW - 1) / GC_VW * GC_VW;
        g->plane = spatial_plane_floats(g, g->bh);
    }
    const int64_t reach = (g->bh - 1 + g->halo) * g->pw + g->maxoff + (p->ow + GC_VW - 1) / GC_VW * GC_VW;
    g->plane = (max64(g->plane, reach) + 15) / 16 * 16;
    g->cstride = g->na * g->nb * g->plane;
    /* narrow rows (7x7 images on AVX-512: 7 of 16 lanes) run vectors over the wide positions of the band
     * when that takes at most 3/4 of the vectors */
    const int64_t row_vectors = g->bh * ((p->ow + GC_VW - 1) / GC_VW);
    const int64_t wide_vectors = (g->bh * g->pw + GC_VW - 1) / GC_VW;
    g->wide = 4 * wide_vectors <= 3 * row_vectors;
    return 1;
}

static conv_plan conv2d_plan(const gc_conv2d_params *p, int nthreads)
{
    conv_plan pl;
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups;
    const int64_t ckk = cg * p->kh * p->kw, ohw = p->oh * p->ow;
    pl.items = p->n * p->groups;
    pl.col_floats = 0;
    pl.pack_floats = 0;
    pl.chunk = ohw;
    pl.chunks = 1;
    spatial_geom dg;
    if (depthwise_ok(p) && depthwise_geometry(p, nthreads, &dg)) {
        pl.kind = CONV_DEPTHWISE;
        pl.col_floats = (size_t)dg.cstride;
        pl.task_threads = (int)depthwise_slots(p, &dg); /* plane buffers */
        return pl;
    }
    /* one input channel per group: the per-plane loops, unless there are enough output channels per
     * group to fill the spatial path's register tiles (LeNet's first conv: 6 channels, 5x5 taps) */
    spatial_geom sg;
    if (cg == 1 && ocg >= 4 && p->kh * p->kw > 1 && spatial_geometry(p, nthreads, &sg)) {
        pl.kind = CONV_SPATIAL;
        pl.col_floats = (size_t)(cg * sg.cstride);
        pl.pack_floats = sg.chanvec ? (size_t)(p->oc * ckk) : 0;
        pl.task_threads = sg.threads;
        return pl;
    }
    if (cg == 1) {
        pl.kind = CONV_DIRECT; /* parallel over output planes, no tasks */
        pl.task_threads = 1;
        return pl;
    }
    const int direct = p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
                       p->pad_w == 0 && p->oh == p->h && p->ow == p->w;
    /* Kernels with several taps (up to GC_SP_MAX_K a side: ViT's 16x16 / 16 patch embedding, 256 one-tap
     * phase planes a channel, ran 1.13x faster than im2col + gemm at 1 thread and 1.8x at 2, an 11x11 / 4
     * 1.25x, a 9x9 1.5x) run the spatial path; 1x1 kernels only when strided or padded and with
     * few channels: the gemm on x itself is faster for a plain 1x1; from 64 channels on, im2col + gemm
     * is as fast for a strided one (1x1 s2 measured: 32 channels 5-17% faster spatial, 64 -9..+8%,
     * 128..256 -8..+10%). */
    if (!direct && (p->kh * p->kw > 1 || ckk <= GC_SP_MAX_1X1_C) && spatial_geometry(p, nthreads, &sg)) {
        pl.kind = CONV_SPATIAL;
        pl.col_floats = (size_t)(cg * sg.cstride);
        pl.pack_floats = sg.chanvec ? (size_t)(p->oc * ckk) : 0;
        pl.task_threads = sg.threads;
        return pl;
    }
    pl.kind = direct ? CONV_GEMM_DIRECT : CONV_COLUMNS;
    if (direct && ohw > 2 * GC_CONV_MIN_CHUNK) {
        /* output columns in chunks of about GC_CONV_EPI_FLOATS outputs: tasks for the threads (the bias and
         * epilogue go into the gemm's store now, so a chunk no longer has to stay in L2 for a second pass;
         * one chunk for the whole image measured the same on 1 thread) */
        const int64_t chunk = max64(GC_CONV_MIN_CHUNK, GC_CONV_EPI_FLOATS / max64(1, ocg));
        pl.chunks = (ohw + chunk - 1) / chunk;
        if (nthreads > 1 && pl.items < 4 * (int64_t)nthreads)
            while ((pl.items * pl.chunks) % nthreads) pl.chunks++;
        pl.chunk = min64(ohw, ((ohw + pl.chunks - 1) / pl.chunks + 15) / 16 * 16);
        pl.chunks = (ohw + pl.chunk - 1) / pl.chunk;
    }
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

/* ------------------------------------------------------------------ epilogue */

#if GC_VW == 1
static float epi_clamp(float v, float lo, float hi)
{
    const float l = v <= lo ? lo : v;
    return l >= hi ? hi : l;
}

static float epi_scalar(int kind, float v, float lo, float hi)
{
    switch (kind) {
    case GC_ACT_EXP: return expf(v);
    case GC_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case GC_ACT_SILU: return v / (1.0f + expf(-v));
    case GC_ACT_TANH: return tanhf(v);
    case GC_ACT_GELU: return (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
    case GC_ACT_RELU: return v < 0 ? 0.0f : v;
    case GC_ACT_CLAMP: return epi_clamp(v, lo, hi);
    case GC_ACT_HARDSWISH: return v * epi_clamp(v + 3.0f, 0.0f, 6.0f) / 6.0f;
    default: return (float)(0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
    }
}
#endif


/* The epilogue of p (graphc_rt.h) on one vector v of outputs, r holding the residual's values there. */
static GC_ALWAYS_INLINE gc_vf epi_vec(const gc_conv2d_params *p, gc_vf v, gc_vf r)
{
    if (p->res && p->res_first) v = v + r;
#if GC_VW > 1
    if (p->act) v = gc_vact(p->act, v, p->act_lo, p->act_hi);
#else
    if (p->act) v = epi_scalar(p->act, v, p->act_lo, p->act_hi);
#endif
    if (p->res && !p->res_first) v = v + r;
    return v;
}

/* epi_vec with the activation kind a constant (so that gc_vact's switch folds away) */
static GC_ALWAYS_INLINE gc_vf epi_vec_kind(const int kind, const gc_conv2d_params *p, gc_vf v, gc_vf r)
{
    if (p->res && p->res_first) v = v + r;
#if GC_VW > 1
    if (kind) v = gc_vact(kind, v, p->act_lo, p->act_hi);
#else
    if (kind) v = epi_scalar(kind, v, p->act_lo, p->act_hi);
#endif
    if (p->res && !p->res_first) v = v + r;
    return v;
}

static GC_ALWAYS_INLINE void epilogue_span_kind(const int kind, const gc_conv2d_params *p, float *y, const float *res,
                                                float bias, int64_t n)
{
    int64_t i = 0;
    const gc_vf zero = vset1(0.0f), b = vset1(bias);
    for (; i + GC_VW <= n; i += GC_VW)
        vstore(y + i, epi_vec_kind(kind, p, vload(y + i) + b, res ? vload(res + i) : zero));
    if (i < n) {
        float t[GC_VW] = {0}, r[GC_VW] = {0};
        memcpy(t, y + i, (size_t)(n - i) * sizeof(float));
        if (res) memcpy(r, res + i, (size_t)(n - i) * sizeof(float));
        vstore(t, epi_vec_kind(kind, p, vload(t) + b, vload(r)));
        memcpy(y + i, t, (size_t)(n - i) * sizeof(float));
    }
}

/* The epilogue on y[0, n) in place, res[0, n) the residual at the same outputs (NULL without one), one
 * loop per activation kind. The last partial vector goes through a zero-padded copy: every output gets
 * the same operations wherever it sits, so the results do not depend on the split into tasks. */
static void epilogue_span(const gc_conv2d_params *p, float *y, const float *res, float bias, int64_t n)
{
    switch (p->act) {
#define GC_EPI_CASE(k)                                  \
    case k: epilogue_span_kind(k, p, y, res, bias, n); \
        return;
    GC_EPI_CASE(GC_ACT_EXP)
    GC_EPI_CASE(GC_ACT_SIGMOID)
    GC_EPI_CASE(GC_ACT_SILU)
    GC_EPI_CASE(GC_ACT_TANH)
    GC_EPI_CASE(GC_ACT_GELU)
    GC_EPI_CASE(GC_ACT_GELU_TANH)
    GC_EPI_CASE(GC_ACT_RELU)
    GC_EPI_CASE(GC_ACT_CLAMP)
    GC_EPI_CASE(GC_ACT_HARDSWISH)
#undef GC_EPI_CASE
    default: epilogue_span_kind(0, p, y, res, bias, n); return;
    }
}

/* The epilogue on `rows` spans of len outputs, stride apart, starting at output offset off of y; bias
 * (NULL: none, the conv added it) holds one value per row, added first. */
static void epilogue_rows(const gc_conv2d_params *p, float *y, int64_t off, int64_t rows, int64_t len,
                          int64_t stride, const float *bias)
{
    if (!has_epilogue(p) && !bias) return;
    for (int64_t r = 0; r < rows; r++)
        epilogue_span(p, y + off + r * stride, p->res ? p->res + off + r * stride : NULL, bias ? bias[r] : 0.0f,
                      len);
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
    epilogue_rows(p, y, q * p->oh * p->ow, 1, p->oh * p->ow, 0, NULL);
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
/* one im2col row per pool task */
typedef struct im2col_job {
    const gc_conv2d_params *p;
    const float *xg;
    int64_t q0, q1;
    float *col;
} im2col_job;

static void im2col_row(void *vj, int64_t r)
{
    const im2col_job *j = vj;
    im2col_rows(j->p, j->xg, r, r + 1, j->q0, j->q1, j->col);
}

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
            const im2col_job job = {p, xg, q0, q1, col};
            gc_parallel_for(ckk, nt, im2col_row, (void *)&job);
        } else {
            im2col_rows(p, xg, 0, ckk, q0, q1, col);
        }
        rhs = col;
        ldb = width;
    }
    /* the bias (one per gemm row) and the epilogue go into the gemm's store, applied to each micro-tile
     * while it is in registers (ReLU / clamp, residual) or in L1 (the other activations): no second pass
     * over the chunk */
    const float *wg = w + g * ocg * ckk;
    if (!bg && !has_epilogue(p)) {
        gc_sgemm(0, 0, ocg, width, ckk, 1.0f, wg, ckk, rhs, ldb, 0.0f, yg, ohw, NULL, nt);
        return;
    }
    const gc_epilogue ep = {.act = p->act, .lo = p->act_lo, .hi = p->act_hi, .scale = 1.0f,
                            .residual = p->res ? p->res + (yg - y) : NULL, .row_bias = bg,
                            .res_first = p->res_first};
    gc_sgemm_ep(0, 0, ocg, width, ckk, wg, ckk, rhs, ldb, yg, ohw, NULL, &ep, nt);
}

/* ------------------------------------------------------------------ conv2d, spatial path */

/* copy_floats: d[0, n) = s[0, n); zero_floats: d[0, n) = 0. Whole vectors, then a masked (AVX-512) or
 * scalar tail: the spans here are short (an image row), too short for a libc call to pay off. */
static inline void copy_floats(float *restrict d, const float *restrict s, int64_t n)
{
    int64_t i = 0;
    for (; i + GC_VW <= n; i += GC_VW) vstore(d + i, vload(s + i));
#if GC_VW == 16
    if (i < n) {
        const gc_mask16 m = (gc_mask16)((1u << (n - i)) - 1u);
        vstore_mask(d + i, m, vload_mask(m, s + i));
    }
#else
    for (; i < n; i++) d[i] = s[i];
#endif
}

static inline void zero_floats(float *d, int64_t n)
{
    int64_t i = 0;
    for (; i + GC_VW <= n; i += GC_VW) vstore(d + i, vset1(0.0f));
    for (; i < n; i++) d[i] = 0.0f;
}

/* The first ne even columns of input row xr to de[0, ne), the first no odd ones to dd[0, no). */
static void deinterleave_row(const float *restrict xr, int64_t ne, int64_t no, float *restrict de,
                             float *restrict dd)
{
    int64_t m = 0;
#if GC_VW > 1
    for (; m + GC_VW <= ne && m + GC_VW <= no; m += GC_VW) {
        const gc_vf a = vload(xr + 2 * m), b = vload(xr + 2 * m + GC_VW);
        vstore(de + m, GC_EVENS(a, b));
        vstore(dd + m, GC_ODDS(a, b));
    }
#endif
#if GC_VW == 16
    for (; m < ne || m < no; m += GC_VW) { /* the rest in masked steps of up to 2 * 16 input columns */
        const int64_t e = min64(ne - m, GC_VW), o = min64(no - m, GC_VW);
        const int64_t n_in = max64(2 * e - 1, 2 * o); /* input columns 2m .. 2m + n_in - 1 are read */
        const gc_mask16 la = (gc_mask16)((1u << min64(n_in, GC_VW)) - 1u);
        const gc_mask16 lb = (gc_mask16)((1u << max64(0, n_in - GC_VW)) - 1u);
        const gc_vf a = vload_mask(la, xr + 2 * m);
        const gc_vf b = vload_mask(lb, xr + 2 * m + GC_VW);
        vstore_mask(de + m, (gc_mask16)((1u << max64(0, e)) - 1u), GC_EVENS(a, b));
        vstore_mask(dd + m, (gc_mask16)((1u << max64(0, o)) - 1u), GC_ODDS(a, b));
    }
#else
    for (int64_t i = m; i < ne; i++) de[i] = xr[2 * i];
    for (int64_t i = m; i < no; i++) dd[i] = xr[2 * i + 1];
#endif
}

/* The phase planes of one item xg[Cg, H, W] for the band of output rows from r0 with `rows` rows (see
 * spatial_geom): each channel's planes are zeroed in one sweep, then the input rows are copied in
 * (stride 2 with both column phases in use: one deinterleaving pass per row). */
static void spatial_planes(const gc_conv2d_params *p, const spatial_geom *g, const float *xg, int64_t r0,
                           int64_t rows, float *planes)
{
    const int64_t cg = p->c / p->groups, H = p->h, W = p->w, pw = g->pw, sw = p->stride_w;
    const int64_t *lo = g->clo, *hi = g->chi; /* plane columns holding input, per column phase */
    for (int64_t c = 0; c < cg; c++) {
        float *dc = planes + c * g->cstride;
        zero_floats(dc, g->cstride);
        for (int64_t ai = 0; ai < g->na; ai++) {
            const int64_t ih0 = r0 * p->stride_h + g->arow[ai] - p->pad_h; /* input row of plane row 0 */
            int64_t rlo, rhi; /* plane rows r reading input row ih0 + r*sh, inside [0, H) */
            valid_range(rows + g->halo, H, p->stride_h, ih0, &rlo, &rhi);
            float *da = dc + ai * g->nb * g->plane;
            for (int64_t r = rlo; r < rhi; r++) {
                const float *xr = xg + (c * H + ih0 + r * p->stride_h) * W;
                if (sw == 2 && g->nb == 2) {
                    /* input column iw goes to phase (iw + pad_w) % 2, column (iw + pad_w) / 2: the even
                     * columns fill phase bie from column lo, the odd ones the other phase */
                    const int64_t bie = g->bcol[0] == (p->pad_w & 1) ? 0 : 1, bio = 1 - bie;
                    deinterleave_row(xr, hi[bie] - lo[bie], hi[bio] - lo[bio], da + bie * g->plane + r * pw + lo[bie],
                                     da + bio * g->plane + r * pw + lo[bio]);
                    continue;
                }
                for (int64_t bi = 0; bi < g->nb; bi++) {
                    float *restrict d = da + bi * g->plane + r * pw;
                    const int64_t off = g->bcol[bi] - p->pad_w; /* plane column s reads input s*sw + off */
                    if (sw == 1)
                        copy_floats(d + lo[bi], xr + lo[bi] + off, hi[bi] - lo[bi]);
                    else if (sw == 2)
                        for (int64_t s = lo[bi]; s < hi[bi]; s++) d[s] = xr[2 * s + off];
                    else
                        for (int64_t s = lo[bi]; s < hi[bi]; s++) d[s] = xr[s * sw + off];
                }
            }
        }
    }
}

/* Where the vectors of a tile go in y. The lanes of vector v are the wide positions q0 + v*VW + lane;
 * the ones of wide row oh with a column below ow land at y[(q - oh*(pw - ow))], so each (vector, row)
 * piece is one masked store at offset off of lane 0 (AVX-512); other ISAs spill the tile and copy. */
#define GC_SP_PIECES (GC_VW + 1) /* pieces per vector: one per wide row it touches */
typedef struct sp_pieces {
    int64_t q0, qn;                           /* the tile: wide positions [q0, q0 + qn) */
    int n[GC_SP_NV];                          /* pieces of vector v */
    int64_t off[GC_SP_NV][GC_SP_PIECES];      /* y offset of lane 0 */
    unsigned mask[GC_SP_NV][GC_SP_PIECES];    /* lanes stored */
} sp_pieces;

static void spatial_pieces(int64_t q0, int64_t qn, int64_t pw, int64_t ow, sp_pieces *ps)
{
    ps->q0 = q0;
    ps->qn = qn;
    for (int v = 0; v < GC_SP_NV; v++) {
        const int64_t qv = q0 + v * GC_VW, lanes = min64(GC_VW, q0 + qn - qv);
        ps->n[v] = 0;
        for (int64_t oh = lanes > 0 ? qv / pw : 0; lanes > 0 && oh * pw < qv + lanes; oh++) {
            const int64_t l0 = max64(0, oh * pw - qv), l1 = min64(lanes, oh * pw + ow - qv);
            if (l1 <= l0) continue;
            ps->off[v][ps->n[v]] = qv - oh * (pw - ow);
            ps->mask[v][ps->n[v]] = (unsigned)(((1ull << l1) - 1) & ~((1ull << l0) - 1));
            ps->n[v]++;
        }
    }
}

#if GC_VW == 1
/* Copy the valid part of a spilled tile (mr rows, positions [q0, q0 + qn) of the wide numbering) into y,
 * whose rows (output channels) are ohw apart: one span per wide row, minus its columns past ow. */
static void spatial_store(const float *tile, int64_t mr, int64_t q0, int64_t qn, int64_t pw, int64_t ow,
                          int64_t ohw, float *y)
{
    int64_t oh = q0 / pw, col = q0 - oh * pw;
    for (int64_t t = 0; t < qn; oh++, col = 0) {
        const int64_t run = min64(qn - t, pw - col), n = min64(run, ow - col);
        for (int64_t r = 0; n > 0 && r < mr; r++)
            copy_floats(y + r * ohw + oh * ow + col, tile + r * GC_SP_TILE + t, n);
        t += run;
    }
}
#endif

#if GC_VW > 1
/* Store vectors v0 .. v0 + NV - 1 of a tile (rows r < mr of acc, in registers) into y as the pieces say,
 * with p's epilogue (activation, residual: res has y's layout, NULL without one) applied on the way: one
 * pass over the outputs instead of a second one over the band. The lanes outside a piece's mask are
 * neither read nor written (lane 0's address may lie before y's row). */
/* Store row vector o (vector v of the pieces ps) into yr, the residual at rr (same layout), with the
 * epilogue when epi. */
static GC_ALWAYS_INLINE void spatial_store_vec(const sp_pieces *ps, int v, gc_vf o, float *yr, const float *rr,
                                               const gc_conv2d_params *p, int epi)
{
    for (int j = 0; j < ps->n[v]; j++) {
        const int64_t off = ps->off[v][j];
#if GC_VW == 16
        const gc_mask16 m = (gc_mask16)ps->mask[v][j];
        /* lane 0's address may lie before y's row: only the masked lanes are read or written */
        const uintptr_t at = (uintptr_t)(off * (int64_t)sizeof(float));
        gc_vf t = o;
        if (epi) t = epi_vec(p, t, rr ? vload_mask(m, (const void *)((uintptr_t)rr + at)) : vset1(0.0f));
        vstore_mask((void *)((uintptr_t)yr + at), m, t);
#else
        /* AVX2 / SSE: no cheap masked store (vmaskmovps is microcoded on AMD); a piece of all lanes is one
         * store, the others (a wide row's first or last vector) go lane by lane through a spilled vector,
         * the epilogue applied to the whole vector with zeros in the residual's other lanes, so every
         * output gets the same operations wherever it sits */
        const unsigned m = ps->mask[v][j];
        if (m == (1u << GC_VW) - 1u) {
            gc_vf t = o;
            if (epi) t = epi_vec(p, t, rr ? vload(rr + off) : vset1(0.0f));
            vstore(yr + off, t);
        } else {
            const int l0 = __builtin_ctz(m), l1 = 32 - __builtin_clz(m); /* the lanes [l0, l1) */
            float r[GC_VW] = {0}, t[GC_VW];
            if (epi && rr)
                for (int l = l0; l < l1; l++) r[l] = rr[off + l];
            vstore(t, epi ? epi_vec(p, o, vload(r)) : o);
            for (int l = l0; l < l1; l++) yr[off + l] = t[l];
        }
#endif
    }
}

static GC_ALWAYS_INLINE void spatial_store_vectors(int NV, gc_vf acc[GC_SP_MR][GC_SP_NV], int64_t mr,
                                                   const sp_pieces *ps, int v0, float *y, int64_t ohw,
                                                   const gc_conv2d_params *p, const float *res)
{
    const int epi = has_epilogue(p);
    for (int v = 0; v < NV; v++)
#pragma GCC unroll 16
        for (int r = 0; r < GC_SP_MR; r++)
            if (r < mr) spatial_store_vec(ps, v0 + v, acc[r][v], y + r * ohw, res ? res + r * ohw : NULL, p, epi);
}
#endif

#if GC_VW == 16
typedef float gc_vf8 __attribute__((vector_size(8 * sizeof(float))));
#if defined(GC_X86_HEADER)
#define gc_fmadd8(a, b, c) ((gc_vf8)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#else
#define gc_fmadd8 __builtin_ia32_vfmaddps256
#endif

/* The tile's vector v0 alone when it holds at most 8 outputs: 8-lane vectors, whose FMAs take half the
 * issue slots of 16-lane ones where the 512-bit units are two 256-bit halves (Zen 4), summed over k in the
 * same order as spatial_tile (bits unchanged). Widened to 16 lanes for the store (the pieces' masks cover
 * lanes below 8 only). */
static GC_NOINLINE void spatial_tile_half(int64_t ckk, const int64_t *koff, const float *restrict xq,
                                          const float *restrict w, const float *bias, int64_t mr,
                                          const sp_pieces *ps, int v0, float *y, int64_t ohw,
                                          const gc_conv2d_params *p, const float *res)
{
    gc_vf8 acc[GC_SP_MR];
    const float *wr[GC_SP_MR];
    for (int r = 0; r < GC_SP_MR; r++) {
        acc[r] = (bias && r < mr ? bias[r] : 0.0f) - (gc_vf8){0};
        wr[r] = w + (r < mr ? r : mr - 1) * ckk;
    }
    const float *xv0 = xq + v0 * GC_VW;
    for (int64_t k = 0; k < ckk; k++) {
        gc_vf8 xv;
        memcpy(&xv, xv0 + koff[k], sizeof xv);
#pragma GCC unroll 16
        for (int r = 0; r < GC_SP_MR; r++) acc[r] = gc_fmadd8(wr[r][k] - (gc_vf8){0}, xv, acc[r]);
    }
    gc_vf wide[GC_SP_MR][GC_SP_NV];
    const gc_vf8 zero = {0};
    for (int r = 0; r < GC_SP_MR; r++)
        wide[r][0] = __builtin_shufflevector(acc[r], zero, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    spatial_store_vectors(1, wide, mr, ps, v0, y, ohw, p, res);
}

/* Bands of 49 to 56 wide positions (7x7 images: 7 rows of 8): GC_SP_MX_MR output channels x (3 vectors of
 * 16 + one of 8 lanes) in one tile, so the last 8 positions share the tile's broadcast weights instead of
 * running alone (spatial_tile_half: one broadcast per FMA). The same order over k as spatial_tile. ps: the
 * pieces of the 48 first positions, ps8 those of the last 8 (its vector 0). */
#define GC_SP_MX_MR 6
static GC_NOINLINE void spatial_tile_mixed(int64_t ckk, const int64_t *koff, const float *restrict xq,
                                           const float *restrict w, const float *bias, int64_t mr,
                                           const sp_pieces *ps, const sp_pieces *ps8, float *y, int64_t ohw,
                                           const gc_conv2d_params *p, const float *res)
{
    gc_vf acc[GC_SP_MX_MR][3];
    gc_vf8 acc8[GC_SP_MX_MR];
    const float *wr[GC_SP_MX_MR];
    for (int r = 0; r < GC_SP_MX_MR; r++) {
        const float b = bias && r < mr ? bias[r] : 0.0f;
        for (int v = 0; v < 3; v++) acc[r][v] = vset1(b);
        acc8[r] = b - (gc_vf8){0};
        wr[r] = w + (r < mr ? r : mr - 1) * ckk;
    }
    for (int64_t k = 0; k < ckk; k++) {
        const float *xk = xq + koff[k];
        gc_vf xv[3];
        gc_vf8 x8;
        for (int v = 0; v < 3; v++) xv[v] = vload(xk + v * GC_VW);
        memcpy(&x8, xk + 3 * GC_VW, sizeof x8);
#pragma GCC unroll 16
        for (int r = 0; r < GC_SP_MX_MR; r++) {
            const gc_vf a = vset1(wr[r][k]);
            for (int v = 0; v < 3; v++) acc[r][v] = vfma(a, xv[v], acc[r][v]);
            /* the broadcast's low half (the same register): no second broadcast */
            acc8[r] = gc_fmadd8(__builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7), x8, acc8[r]);
        }
    }
    const int epi = has_epilogue(p);
    const gc_vf8 zero = {0};
#pragma GCC unroll 16
    for (int r = 0; r < GC_SP_MX_MR; r++)
        if (r < mr) {
            float *yr = y + r * ohw;
            const float *rr = res ? res + r * ohw : NULL;
            for (int v = 0; v < 3; v++) spatial_store_vec(ps, v, acc[r][v], yr, rr, p, epi);
            spatial_store_vec(ps8, 0,
                              __builtin_shufflevector(acc8[r], zero, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              yr, rr, p, epi);
        }
}
#endif

/* The micro-kernel: GC_SP_MR output channels x NV vectors of consecutive (wide) output positions, over
 * k = (input channel, tap) in [0, ckk): the input vector at xq + koff[k] times the weight of each output
 * channel, broadcast from its row w + r*ckk (rows past mr repeat the last valid one), summed in the same
 * order for every output, so tiles and threads never change a bit. Bias (mr entries, or NULL) is the
 * initial value; the mr valid rows are stored into y (rows ohw apart) as the pieces say. Always inlined
 * with a constant NV. */
static GC_ALWAYS_INLINE void spatial_tile(int NV, int64_t k0, int64_t k1, int64_t ckk, const int64_t *koff,
                                          const float *restrict xq, const float *restrict w, const float *bias,
                                          int64_t mr, const float *part_in, float *part_out, const sp_pieces *ps,
                                          int64_t pw, int64_t ow, float *y, int64_t ohw, const gc_conv2d_params *p,
                                          const float *res)
{
    gc_vf acc[GC_SP_MR][GC_SP_NV];
    const float *wr[GC_SP_MR];
    for (int r = 0; r < GC_SP_MR; r++) {
        const gc_vf b = vset1(bias && r < mr ? bias[r] : 0.0f);
        for (int v = 0; v < NV; v++) acc[r][v] = part_in ? vload(part_in + r * GC_SP_TILE + v * GC_VW) : b;
        wr[r] = w + (r < mr ? r : mr - 1) * ckk;
    }
    for (int64_t k = k0; k < k1; k++) {
        const float *xk = xq + koff[k];
        gc_vf xv[GC_SP_NV];
        for (int v = 0; v < NV; v++) xv[v] = vload(xk + v * GC_VW);
#pragma GCC unroll 16
        for (int r = 0; r < GC_SP_MR; r++) {
            const gc_vf a = vset1(wr[r][k]);
            for (int v = 0; v < NV; v++) acc[r][v] = vfma(a, xv[v], acc[r][v]);
        }
    }
    if (part_out) { /* a depth block before the last: the partial sums wait for the next */
        for (int r = 0; r < GC_SP_MR; r++)
            for (int v = 0; v < NV; v++) vstore(part_out + r * GC_SP_TILE + v * GC_VW, acc[r][v]);
        return;
    }
#if GC_VW > 1
    (void)pw;
    (void)ow;
    spatial_store_vectors(NV, acc, mr, ps, 0, y, ohw, p, res);
#else
    (void)p;
    (void)res;
    _Alignas(64) float tile[GC_SP_MR * GC_SP_TILE];
    for (int r = 0; r < GC_SP_MR; r++)
        for (int v = 0; v < NV; v++) vstore(tile + r * GC_SP_TILE + v * GC_VW, acc[r][v]);
    spatial_store(tile, mr, ps->q0, ps->qn, pw, ow, ohw, y);
#endif
}

/* One out-of-line copy of the micro-kernel per NV: inlined into a bigger caller, gcc may keep the
 * accumulators in memory (a store per FMA), in a function of their own they stay in registers. */
#define GC_SP_TILE_FN(NV)                                                                                     \
    static GC_NOINLINE void spatial_tile_##NV(int64_t k0, int64_t k1, int64_t ckk, const int64_t *koff,      \
                                             const float *xq, const float *w, const float *bias, int64_t mr,   \
                                             const float *part_in, float *part_out, const sp_pieces *ps,       \
                                             int64_t pw, int64_t ow, float *y, int64_t ohw,                    \
                                             const gc_conv2d_params *p, const float *res)                      \
    {                                                                                                         \
        spatial_tile(NV, k0, k1, ckk, koff, xq, w, bias, mr, part_in, part_out, ps, pw, ow, y, ohw, p, res); \
    }
GC_SP_TILE_FN(1)
#if GC_SP_NV >= 2
GC_SP_TILE_FN(2)
#endif
#if GC_SP_NV >= 3
GC_SP_TILE_FN(3)
#endif
#if GC_SP_NV >= 4
GC_SP_TILE_FN(4)
#endif
#if GC_SP_NV >= 5
GC_SP_TILE_FN(5)
#endif
#if GC_SP_NV >= 6
GC_SP_TILE_FN(6)
#endif
#undef GC_SP_TILE_FN

#if GC_VW == 16
/* Transpose a 16 x 16 block held in 16 vectors (4 rounds of the perfect shuffle). */
static inline void transpose16(gc_vf r[16])
{
    for (int round = 0; round < 4; round++) {
        gc_vf t[16];
        for (int i = 0; i < 8; i++) {
            t[2 * i] = __builtin_shufflevector(r[i], r[i + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            t[2 * i + 1] =
                __builtin_shufflevector(r[i], r[i + 8], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        }
        for (int i = 0; i < 16; i++) r[i] = t[i];
    }
}

/* Channel vectors: the weights of every group repacked as [Cg*KH*KW][OCg] (a k row holds all output
 * channels), 16 x 16 blocks transposed in registers. */
static void spatial_cv_pack(const gc_conv2d_params *p, const float *w, float *pack)
{
    const int64_t ocg = p->oc / p->groups, ckk = p->c / p->groups * p->kh * p->kw;
    for (int64_t g = 0; g < p->groups; g++) {
        const float *src = w + g * ocg * ckk;
        float *dst = pack + g * ocg * ckk;
        for (int64_t o0 = 0; o0 < ocg; o0 += 16) {
            int64_t k0 = 0;
            for (; k0 + 16 <= ckk; k0 += 16) {
                gc_vf r[16];
                for (int i = 0; i < 16; i++) r[i] = vload(src + (o0 + i) * ckk + k0);
                transpose16(r);
                for (int i = 0; i < 16; i++) vstore(dst + (k0 + i) * ocg + o0, r[i]);
            }
            for (; k0 < ckk; k0++)
                for (int i = 0; i < 16; i++) dst[k0 * ocg + o0 + i] = src[(o0 + i) * ckk + k0];
        }
    }
}

/* The channel-vector micro-kernel: GC_SP_CV_P output positions (plane offsets poff, np of them valid) x
 * GC_SP_CV_OC output channels (4 vectors), over k in [0, ckk): one broadcast input value per position
 * times the 4 weight vectors of row k of wp ([ckk][ocg], ocg apart), bias first, the same order as
 * everywhere. The tile is transposed through memory into y, where the positions are consecutive. */
static GC_NOINLINE void spatial_cv_tile(int64_t ckk, const int64_t *koff, const float *planes, const int64_t *poff,
                                        const float *wp, int64_t ocg, const float *bias, float *y, int64_t ohw,
                                        int64_t np)
{
    enum { P = GC_SP_CV_P, OV = GC_SP_CV_OC / 16 };
    gc_vf acc[P][OV];
    const float *xp[P];
    for (int q = 0; q < P; q++) {
        xp[q] = planes + poff[q < np ? q : np - 1];
        for (int v = 0; v < OV; v++) acc[q][v] = bias ? vload(bias + 16 * v) : vset1(0.0f);
    }
    for (int64_t k = 0; k < ckk; k++) {
        const int64_t off = koff[k];
        gc_vf wv[OV];
        for (int v = 0; v < OV; v++) wv[v] = vload(wp + k * ocg + 16 * v);
        for (int q = 0; q < P; q++) {
            const gc_vf a = vset1(xp[q][off]);
            for (int v = 0; v < OV; v++) acc[q][v] = vfma(a, wv[v], acc[q][v]);
        }
    }
    _Alignas(64) float tile[P][GC_SP_CV_OC];
    for (int q = 0; q < P; q++)
        for (int v = 0; v < OV; v++) vstore(&tile[q][16 * v], acc[q][v]);
    for (int64_t o = 0; o < GC_SP_CV_OC; o++)
        for (int64_t q = 0; q < np; q++) y[o * ohw + q] = tile[q][o];
}
#endif

/* One task: the band of output rows [r0, r0 + rows) of item (image n, group grp), planes built into
 * `planes` first; then every (block of GC_SP_MR output channels, tile) of the band. */
static void spatial_band(const gc_conv2d_params *p, const spatial_geom *g, int64_t task, const float *x,
                         const float *w, const float *pack, const float *bias, float *y, float *planes)
{
    const int64_t part = task % g->ocparts, band = task / g->ocparts;
    const int64_t item = band / g->bands, n = item / p->groups, grp = item % p->groups;
    const int64_t r0 = band % g->bands * g->bh, rows = min64(g->bh, p->oh - r0);
    /* this task's blocks of output channels */
    const int64_t b0 = g->ocb * part / g->ocparts, b1 = g->ocb * (part + 1) / g->ocparts;
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups, taps = p->kh * p->kw, ckk = cg * taps;
    const int64_t ohw = p->oh * p->ow, wide = rows * g->pw, tiles = (wide + GC_SP_TILE - 1) / GC_SP_TILE;
    const float *wg = w + grp * ocg * ckk, *bg = bias ? bias + grp * ocg : NULL;
    float *yg = y + (n * p->oc + grp * ocg) * ohw + r0 * p->ow;
    spatial_planes(p, g, x + (n * p->c + grp * cg) * p->h * p->w, r0, rows, planes);

    int64_t koff[GC_SP_MAX_CKK]; /* plane offset of k = (channel, tap) */
    for (int64_t i = 0; i < p->kh; i++)
        for (int64_t j = 0; j < p->kw; j++)
            koff[i * p->kw + j] = (g->tap_a[i] * g->nb + g->tap_b[j]) * g->plane +
                                  i * p->dil_h / p->stride_h * g->pw + j * p->dil_w / p->stride_w;
    for (int64_t k = taps; k < ckk; k++) koff[k] = koff[k - taps] + g->cstride;
#if GC_VW == 16
    if (g->chanvec) { /* tiles of GC_SP_CV_P consecutive output positions x GC_SP_CV_OC channels */
        const int64_t npos = rows * p->ow;
        (void)w;
        for (int64_t o0 = 0; o0 < ocg; o0 += GC_SP_CV_OC)
            for (int64_t q0 = 0; q0 < npos; q0 += GC_SP_CV_P) {
                const int64_t np = min64(GC_SP_CV_P, npos - q0);
                int64_t poff[GC_SP_CV_P];
                for (int64_t q = 0; q < np; q++) poff[q] = (q0 + q) / p->ow * g->pw + (q0 + q) % p->ow;
                spatial_cv_tile(ckk, koff, planes, poff, pack + grp * ocg * ckk + o0, ocg, bg ? bg + o0 : NULL,
                                yg + o0 * ohw + q0, ohw, np);
            }
        return;
    }
#else
    (void)pack;
#endif
#if GC_VW == 16
    if (wide > GC_SP_TILE && wide <= GC_SP_TILE + 8) { /* one mixed tile (3 vectors + 8 lanes) per block */
        sp_pieces ps, ps8;
        spatial_pieces(0, GC_SP_TILE, g->pw, p->ow, &ps);
        spatial_pieces(GC_SP_TILE, wide - GC_SP_TILE, g->pw, p->ow, &ps8);
        const int64_t o_hi = min64(ocg, b1 * GC_SP_MR);
        for (int64_t o0 = b0 * GC_SP_MR; o0 < o_hi; o0 += GC_SP_MX_MR) {
            float *yo = yg + o0 * ohw;
            spatial_tile_mixed(ckk, koff, planes, wg + o0 * ckk, bg ? bg + o0 : NULL, min64(GC_SP_MX_MR, o_hi - o0),
                               &ps, &ps8, yo, ohw, p, p->res ? p->res + (yo - y) : NULL);
        }
        return;
    }
#endif
    /* chunks of tiles: their pieces are worked out once, every block of output channels runs over the
     * chunk (its weights stay in L1 across the chunk's tiles, the chunk's input across the blocks); with
     * depth blocking (GC_SP_KC_C), per depth block and group of blocks, every tile of the chunk passes
     * its inputs of that depth block to each block of the group */
    const int64_t kc = GC_SP_KC_C > 0 && cg > GC_SP_KC_C && tiles >= 2 * GC_SP_CHUNK ? GC_SP_KC_C * taps : ckk;
    const int64_t kb = kc < ckk ? GC_SP_KC_B : b1 - b0; /* blocks per group */
    sp_pieces pcs[GC_SP_CHUNK];
#if GC_SP_KC_C > 0
    _Alignas(64) float psum[GC_SP_KC_B * GC_SP_CHUNK * GC_SP_MR * GC_SP_TILE];
#else
    float *psum = NULL;
#endif
    for (int64_t t0 = 0; t0 < tiles; t0 += GC_SP_CHUNK) {
        const int64_t nt = min64(tiles - t0, GC_SP_CHUNK);
        for (int64_t t = 0; t < nt; t++) {
            const int64_t q0 = (t0 + t) * GC_SP_TILE;
            spatial_pieces(q0, min64(GC_SP_TILE, wide - q0), g->pw, p->ow, &pcs[t]);
        }
        for (int64_t gb0 = b0; gb0 < b1; gb0 += kb) {
            const int64_t gb1 = min64(b1, gb0 + kb);
            for (int64_t k0 = 0; k0 < ckk; k0 += kc) {
                const int64_t k1 = min64(ckk, k0 + kc);
                /* the chunk without depth blocks: block-major (a block's weights stay in L1 over the tiles);
                 * with them: tile-major (a tile's inputs of the depth block stay in L1 over the blocks) */
                for (int64_t u = 0; u < (gb1 - gb0) * nt; u++) {
                    const int64_t t = kc < ckk ? u / (gb1 - gb0) : u % nt;
                    const int64_t blk = kc < ckk ? gb0 + u % (gb1 - gb0) : gb0 + u / nt;
                    const sp_pieces *ps = &pcs[t];
                    const int64_t o0 = blk * GC_SP_MR, mr = min64(GC_SP_MR, ocg - o0);
                    const float *wo = wg + o0 * ckk, *xq = planes + ps->q0, *b = bg ? bg + o0 : NULL;
                    float *yo = yg + o0 * ohw;
                    const float *ro = p->res ? p->res + (yo - y) : NULL;
                    float *pt = kc < ckk ? psum + ((blk - gb0) * GC_SP_CHUNK + t) * GC_SP_MR * GC_SP_TILE : NULL;
                    const float *pin = k0 > 0 ? pt : NULL;
                    float *pout = k1 < ckk ? pt : NULL;
                    int64_t nv = (ps->qn + GC_VW - 1) / GC_VW; /* the last tile may have fewer vectors */
#if GC_VW == 16
                    if (ps->qn - (nv - 1) * GC_VW <= 8) { /* a last vector of at most 8 outputs: 8-lane FMAs */
                        spatial_tile_half(ckk, koff, xq, wo, b, mr, ps, (int)(nv - 1), yo, ohw, p, ro);
                        if (--nv == 0) continue;
                    }
#endif
#define GC_SP_CASE(NV)                                                                                   \
    case NV:                                                                                             \
        spatial_tile_##NV(k0, k1, ckk, koff, xq, wo, b, mr, pin, pout, ps, g->pw, p->ow, yo, ohw, p, ro); \
        break;
                    switch (nv) {
#if GC_SP_NV >= 6
                        GC_SP_CASE(6)
#endif
#if GC_SP_NV >= 5
                        GC_SP_CASE(5)
#endif
#if GC_SP_NV >= 4
                        GC_SP_CASE(4)
#endif
#if GC_SP_NV >= 3
                        GC_SP_CASE(3)
#endif
#if GC_SP_NV >= 2
                        GC_SP_CASE(2)
#endif
                    default:
                        GC_SP_CASE(1)
                    }
#undef GC_SP_CASE
                }
            }
        }
    }
    (void)psum;
}

/* One task and its epilogue, on the band's outputs while they are still in cache. */
static void spatial_task(const gc_conv2d_params *p, const spatial_geom *g, int64_t task, const float *x,
                         const float *w, const float *pack, const float *bias, float *y, float *planes)
{
    spatial_band(p, g, task, x, w, pack, bias, y, planes);
    /* vector register tiles apply the epilogue as they store; channel-vector tiles and the scalar build,
     * which store through a spilled tile, in one pass over the band here */
    if (has_epilogue(p) && (GC_VW == 1 || g->chanvec)) {
        const int64_t part = task % g->ocparts, band = task / g->ocparts;
        const int64_t item = band / g->bands, n = item / p->groups, grp = item % p->groups;
        const int64_t r0 = band % g->bands * g->bh, rows = min64(g->bh, p->oh - r0), ocg = p->oc / p->groups;
        const int64_t ohw = p->oh * p->ow;
        const int64_t o0 = g->ocb * part / g->ocparts * GC_SP_MR;
        const int64_t o1 = min64(ocg, g->ocb * (part + 1) / g->ocparts * GC_SP_MR);
        epilogue_rows(p, y, (n * p->oc + grp * ocg + o0) * ohw + r0 * p->ow, o1 - o0, rows * p->ow, ohw, NULL);
    }
}

/* CONV_SPATIAL: (item, band, block range) tasks; thread t runs tasks t, t + T, ... with its own planes in
 * work. */
/* pool task t: the spatial tasks t, t + T, ... with plane buffer t */
typedef struct spatial_job {
    const gc_conv2d_params *p;
    const spatial_geom *g;
    int64_t tasks;
    int T;
    const float *x, *w, *pack, *bias;
    float *y, *planes;
    size_t buf;
} spatial_job;

static void spatial_slot(void *vj, int64_t t)
{
    const spatial_job *j = vj;
    for (int64_t task = t; task < j->tasks; task += j->T)
        spatial_task(j->p, j->g, task, j->x, j->w, j->pack, j->bias, j->y, j->planes + (size_t)t * j->buf);
}

static void conv2d_spatial(const gc_conv2d_params *p, const float *x, const float *w, const float *bias, float *y,
                           float *work, int nthreads)
{
    spatial_geom g;
    spatial_geometry(p, nthreads, &g);
    const int64_t tasks = p->n * p->groups * g.bands * g.ocparts;
    const size_t buf = (size_t)(p->c / p->groups * g.cstride);
    float *pack = NULL, *planes = work;
#if GC_VW == 16
    if (g.chanvec) {
        pack = work;
        planes = work + (size_t)(p->oc * (p->c / p->groups) * p->kh * p->kw);
        spatial_cv_pack(p, w, pack);
    }
#endif
    if (g.threads <= 1) {
        for (int64_t t = 0; t < tasks; t++) spatial_task(p, &g, t, x, w, pack, bias, y, planes);
        return;
    }
    const spatial_job job = {p, &g, tasks, g.threads, x, w, pack, bias, y, planes, buf};
    gc_parallel_for(g.threads, g.threads, spatial_slot, (void *)&job);
}

/* ------------------------------------------------------------------ pooled outputs */

typedef struct pool_job {
    const gc_conv2d_params *p;
    const float *y;
} pool_job;

static void pool_plane(void *vj, int64_t q)
{
    const pool_job *j = vj;
    const int64_t ohw = j->p->oh * j->p->ow;
    j->p->pool[q] = (float)(gc_sum_floats(j->y + q * ohw, ohw) / (double)ohw);
}

/* The pooled outputs from y, one plane per pool task. */
static void pool_pass(const gc_conv2d_params *p, const float *y, int nthreads)
{
    const int64_t planes = p->n * p->oc;
    const pool_job job = {p, y};
    const int nt = (double)planes * (double)(p->oh * p->ow) < 65536.0 ? 1 : nthreads;
    if (nt <= 1) {
        for (int64_t q = 0; q < planes; q++) pool_plane((void *)&job, q);
        return;
    }
    gc_parallel_for(planes, nt, pool_plane, (void *)&job);
}

/* ------------------------------------------------------------------ conv2d, depthwise path */

/* Depthwise (groups == C == OC, stride 1 or 2, dilation 1, at most GC_SP_MAX_K taps a side): one task
 * per (image, channel) plane and band of output rows. The band's input goes into zero-padded phase
 * planes exactly as on the spatial path (spatial_planes with one channel per group), so every tap of
 * an output row reads consecutive floats; each output row is then computed in blocks of up to
 * GC_DW_NV vectors of output columns, bias first, one broadcast weight times one input vector per FMA
 * over the taps in order (so every output is summed the same way wherever it sits), and the epilogue
 * is applied in registers before the store. The last vector of a row is stored under a mask
 * (AVX-512) or through a copy; the planes carry a tail so that its loads stay inside. */
#ifndef GC_DW_NV
#define GC_DW_NV 4
#endif


/* Store v's first n lanes (n <= GC_VW) at y. */
static GC_ALWAYS_INLINE void store_lanes(float *y, gc_vf v, int64_t n)
{
    if (n == GC_VW) {
        vstore(y, v);
        return;
    }
#if GC_VW == 16
    vstore_mask(y, (gc_mask16)((1u << n) - 1u), v);
#elif GC_VW == 8
    vstore_mask8(y, vmask8(0, n), v);
#else
    float b[GC_VW];
    vstore(b, v);
    memcpy(y, b, (size_t)n * sizeof(float));
#endif
}

/* Load n lanes (n <= GC_VW) from r, the others 0. */
static GC_ALWAYS_INLINE gc_vf load_lanes(const float *r, int64_t n)
{
    if (n == GC_VW) return vload(r);
#if GC_VW == 16
    return vload_mask((gc_mask16)((1u << n) - 1u), r);
#elif GC_VW == 8
    return vload_mask8(vmask8(0, n), r);
#else
    float b[GC_VW] = {0};
    memcpy(b, r, (size_t)n * sizeof(float));
    return vload(b);
#endif
}

/* NV vectors of one output row: columns [c0, c0 + NV*VW) (the last vector has `last` valid lanes), the
 * input of tap k at xr + koff[k] (stride-1 plane columns), weights wk[taps]. */
static GC_ALWAYS_INLINE void dw_block(int NV, const gc_conv2d_params *p, const float *restrict xr,
                                      const int64_t *koff, const float *restrict wk, int64_t taps, float b,
                                      float *yr, const float *rr, int64_t last)
{
    gc_vf acc[GC_DW_NV];
    for (int v = 0; v < NV; v++) acc[v] = vset1(b);
    for (int64_t k = 0; k < taps; k++) {
        const float *xk = xr + koff[k];
        const gc_vf wv = vset1(wk[k]);
        for (int v = 0; v < NV; v++) acc[v] = vfma(wv, vload(xk + v * GC_VW), acc[v]);
    }
    for (int v = 0; v < NV; v++) {
        const int64_t n = v == NV - 1 ? last : GC_VW;
        gc_vf o = acc[v];
        if (has_epilogue(p)) o = epi_vec(p, o, rr ? load_lanes(rr + v * GC_VW, n) : vset1(0.0f));
        store_lanes(yr + v * GC_VW, o, n);
    }
}

#define GC_DW_FN(NV)                                                                                        \
    static GC_NOINLINE void dw_block_##NV(const gc_conv2d_params *p, const float *xr, const int64_t *koff,  \
                                          const float *wk, int64_t taps, float b, float *yr, const float *rr, \
                                          int64_t last)                                                     \
    {                                                                                                       \
        dw_block(NV, p, xr, koff, wk, taps, b, yr, rr, last);                                               \
    }
GC_DW_FN(1)
GC_DW_FN(2)
GC_DW_FN(3)
GC_DW_FN(4)
#undef GC_DW_FN

/* Two output rows at once (stride 1 down the rows): row 1's tap (i, j) reads the input row that row 0's
 * tap (i + 1, j) reads, so each input vector is loaded once for both (kh + 1 instead of 2 kh row loads per
 * column). Each row's taps are summed in the same order as dw_block's, so the results are the same bits. */
static GC_ALWAYS_INLINE void dw_block2(int NV, const gc_conv2d_params *p, const float *restrict xr, int64_t pw,
                                       const int64_t *coff, const float *restrict wk, float b, float *yr,
                                       const float *rr, int64_t ow, int64_t last)
{
    const int64_t kh = p->kh, kw = p->kw;
    gc_vf a0[GC_DW_NV], a1[GC_DW_NV];
    for (int v = 0; v < NV; v++) a0[v] = a1[v] = vset1(b);
    for (int64_t j = 0; j < kw; j++) { /* input row 0: row 0's taps only */
        const float *xk = xr + coff[j];
        const gc_vf wv = vset1(wk[j]);
        for (int v = 0; v < NV; v++) a0[v] = vfma(wv, vload(xk + v * GC_VW), a0[v]);
    }
    for (int64_t i = 1; i < kh; i++)
        for (int64_t j = 0; j < kw; j++) {
            const float *xk = xr + i * pw + coff[j];
            const gc_vf w0 = vset1(wk[i * kw + j]), w1 = vset1(wk[(i - 1) * kw + j]);
            for (int v = 0; v < NV; v++) {
                const gc_vf xv = vload(xk + v * GC_VW);
                a0[v] = vfma(w0, xv, a0[v]);
                a1[v] = vfma(w1, xv, a1[v]);
            }
        }
    for (int64_t j = 0; j < kw; j++) { /* input row kh: row 1's last taps */
        const float *xk = xr + kh * pw + coff[j];
        const gc_vf wv = vset1(wk[(kh - 1) * kw + j]);
        for (int v = 0; v < NV; v++) a1[v] = vfma(wv, vload(xk + v * GC_VW), a1[v]);
    }
    for (int v = 0; v < NV; v++) {
        const int64_t n = v == NV - 1 ? last : GC_VW;
        gc_vf o0 = a0[v], o1 = a1[v];
        if (has_epilogue(p)) {
            o0 = epi_vec(p, o0, rr ? load_lanes(rr + v * GC_VW, n) : vset1(0.0f));
            o1 = epi_vec(p, o1, rr ? load_lanes(rr + ow + v * GC_VW, n) : vset1(0.0f));
        }
        store_lanes(yr + v * GC_VW, o0, n);
        store_lanes(yr + ow + v * GC_VW, o1, n);
    }
}

#define GC_DW2_FN(NV)                                                                                          \
    static GC_NOINLINE void dw_block2_##NV(const gc_conv2d_params *p, const float *xr, int64_t pw,             \
                                           const int64_t *coff, const float *wk, float b, float *yr,           \
                                           const float *rr, int64_t ow, int64_t last)                          \
    {                                                                                                          \
        dw_block2(NV, p, xr, pw, coff, wk, b, yr, rr, ow, last);                                               \
    }
GC_DW2_FN(1)
GC_DW2_FN(2)
GC_DW2_FN(3)
GC_DW2_FN(4)
#undef GC_DW2_FN

/* ------------------------------------------------------------------ depthwise, square kernels */

/* the tile loops below have constant trip counts: unrolled, so accumulators and weights stay in registers */
#if defined(__clang__)
#define GC_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define GC_UNROLL _Pragma("GCC unroll 64")
#else
#define GC_UNROLL
#endif

/* Input columns c0 .. c0 + VW - 1 of row xr (W columns), zeros outside [0, W). */
static GC_ALWAYS_INLINE gc_vf load_cols(const float *xr, int64_t W, int64_t c0)
{
    if (c0 >= 0 && c0 + GC_VW <= W) return vload(xr + c0);
    const int64_t lo = max64(0, -c0), hi = min64(GC_VW, W - c0);
    if (hi <= lo) return vset1(0.0f);
#if GC_VW == 16
    /* the masked-off lanes are not read: the address may lie before the row */
    const gc_mask16 m = (gc_mask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
    return vload_mask(m, (const float *)((uintptr_t)xr + (uintptr_t)(c0 * (int64_t)sizeof(float))));
#elif GC_VW == 8
    return vload_mask8(vmask8(lo, hi), (const float *)((uintptr_t)xr + (uintptr_t)(c0 * (int64_t)sizeof(float))));
#else
    float t[GC_VW] = {0};
    for (int64_t l = lo; l < hi; l++) t[l] = xr[c0 + l];
    return vload(t);
#endif
}

/* nv vectors to d: input row xr (W columns) from column -pad, zeros outside [0, W): the vectors wholly
 * inside the row in a loop of plain loads, the few at its ends through load_cols. */
static GC_ALWAYS_INLINE void dw_copy_row(const float *restrict xr, int64_t W, int64_t pad, float *restrict d,
                                         int64_t nv)
{
    const int64_t klo = min64(nv, (pad + GC_VW - 1) / GC_VW); /* first vector with c0 >= 0 */
    const int64_t khi = max64(klo, min64(nv, W + pad >= GC_VW ? (W + pad - GC_VW) / GC_VW + 1 : 0));
    int64_t k = 0;
    for (; k < klo; k++) vstore(d + k * GC_VW, load_cols(xr, W, k * GC_VW - pad));
    const float *s = xr + klo * GC_VW - pad;
    float *t = d + klo * GC_VW;
    for (int64_t e = (khi - klo) * GC_VW, i = 0; i < e; i += GC_VW) vstore(t + i, vload(s + i));
    for (k = khi; k < nv; k++) vstore(d + k * GC_VW, load_cols(xr, W, k * GC_VW - pad));
}

/* The phase planes of one channel xc[H, W] for the band of output rows from r0 with `rows` rows: the
 * planes spatial_planes makes for one channel (the input where it falls, zeros everywhere else), each
 * row (pw a multiple of VW, see depthwise_geometry) written as whole vectors that a masked load of the
 * input row fills, with no division per row. Stride 1 loads the row's columns; stride 2 with both
 * column phases loads twice as many and deinterleaves them; other strides go through spatial_planes. */
static void dw_planes(const gc_conv2d_params *p, const spatial_geom *g, const float *xc, int64_t r0, int64_t rows,
                      float *planes)
{
    const int64_t sw = p->stride_w;
#if GC_VW == 8
    if (depthwise_raw2(p)) { /* input rows 2 r0 - pad_h .. with pad_w zeros before each (see depthwise_geometry) */
        const int64_t H = p->h, W = p->w, pw = g->pw, nv = pw / GC_VW, n = 2 * (rows - 1) + p->kh;
        for (int64_t r = 0; r < n; r++) {
            const int64_t ih = 2 * r0 - p->pad_h + r;
            float *d = planes + r * pw;
            if (ih < 0 || ih >= H) {
                zero_floats(d, pw);
                continue;
            }
            dw_copy_row(xc + ih * W, W, p->pad_w, d, nv);
        }
        zero_floats(planes + n * pw, g->plane - n * pw);
        return;
    }
#endif
#if GC_VW > 1
    if (g->pw % GC_VW == 0 && ((sw == 1 && g->nb == 1) || (sw == 2 && g->nb == 2))) {
        const int64_t H = p->h, W = p->w, pw = g->pw, plane = g->plane, nv = pw / GC_VW;
        for (int64_t ai = 0; ai < g->na; ai++) {
            const int64_t ih0 = r0 * p->stride_h + g->arow[ai] - p->pad_h; /* input row of plane row 0 */
            int64_t rlo, rhi;
            valid_range(rows + g->halo, H, p->stride_h, ih0, &rlo, &rhi);
            float *da = planes + ai * g->nb * plane;
            for (int64_t bi = 0; bi < g->nb; bi++) {
                zero_floats(da + bi * plane, rlo * pw);
                zero_floats(da + bi * plane + rhi * pw, plane - rhi * pw);
            }
            for (int64_t r = rlo; r < rhi; r++) {
                const float *xr = xc + (ih0 + r * p->stride_h) * W;
                float *d = da + r * pw;
                if (sw == 1) {
                    dw_copy_row(xr, W, p->pad_w, d, nv);
                    continue;
                }
                float *de = d + (g->bcol[0] == 0 ? 0 : plane), *dd = d + (g->bcol[0] == 0 ? plane : 0);
                for (int64_t k = 0; k < nv; k++) { /* plane column s of phase b reads input 2s + b - pad_w */
                    const int64_t c0 = 2 * k * GC_VW - p->pad_w;
                    const gc_vf a = load_cols(xr, W, c0), b = load_cols(xr, W, c0 + GC_VW);
                    vstore(de + k * GC_VW, GC_EVENS(a, b));
                    vstore(dd + k * GC_VW, GC_ODDS(a, b));
                }
            }
        }
        return;
    }
#endif
    spatial_planes(p, g, xc, r0, rows, planes);
}

/* R output rows x NV vectors of output columns from column c (y and the planes pl at the tile's first
 * row; the last vector has `last` valid lanes), K x K taps with the weights wv in registers. Stride 1 reads each input vector once for all R rows (output row r's tap (i, j) is input
 * row r + i at column c + j); stride 2 reads tap t of row r at r * pw + koff[t]. Every output starts
 * from the bias and adds its taps in (i, j) order, as dw_block does, whatever R and NV. */
static GC_ALWAYS_INLINE void dw_tile(const int K, const int S, const int ACT, const int R, const int NV,
                                     const float *restrict pl, int64_t pw, const int64_t *koff, const gc_vf *wv,
                                     gc_vf bv, float lo, float hi, float *y, int64_t ow, int64_t c, int64_t last)
{
    gc_vf acc[4][4];
    GC_UNROLL
    for (int r = 0; r < R; r++) {
        GC_UNROLL
        for (int v = 0; v < NV; v++) acc[r][v] = bv;
    }
    if (S == 1) {
        GC_UNROLL
        for (int ii = 0; ii < R + K - 1; ii++) {
            GC_UNROLL
            for (int j = 0; j < K; j++) {
                GC_UNROLL
                for (int v = 0; v < NV; v++) {
                    const gc_vf xv = vload(pl + ii * pw + c + v * GC_VW + j);
                    GC_UNROLL
                    for (int r = 0; r < R; r++)
                        if (ii - r >= 0 && ii - r < K) acc[r][v] = vfma(wv[(ii - r) * K + j], xv, acc[r][v]);
                }
            }
        }
    } else {
        GC_UNROLL
        for (int t = 0; t < K * K; t++) {
            GC_UNROLL
            for (int r = 0; r < R; r++) {
                GC_UNROLL
                for (int v = 0; v < NV; v++)
                    acc[r][v] = vfma(wv[t], vload(pl + r * pw + koff[t] + c + v * GC_VW), acc[r][v]);
            }
        }
    }
    GC_UNROLL
    for (int r = 0; r < R; r++) {
        GC_UNROLL
        for (int v = 0; v < NV; v++) {
#if GC_VW > 1
            if (ACT) acc[r][v] = gc_vact(ACT, acc[r][v], lo, hi);
#endif
            store_lanes(y + r * ow + c + v * GC_VW, acc[r][v], v == NV - 1 ? last : GC_VW);
        }
    }
}

#if GC_VW == 8
/* Stride 2 on AVX2: R output rows x NV vectors of output columns from column c, from the band's padded
 * input rows pl (pw apart, the tile's first row first). Tap (i, j) of output column c + t reads row
 * 2 r + i at column 2 (c + t) + j: the even (j = 2m) and odd (j = 2m + 1) lanes of the 16 floats from
 * 2c + 2m, split by one in-lane shuffle each (vshufps), which leaves the output columns in the order
 * c + (0 1 4 5 2 3 6 7); one cross-lane permute per output vector puts them back before the store. Every
 * input vector serves each output row whose taps read it; every output starts from the bias and adds
 * its taps in (i, j) order, as dw_tile does. */
static GC_ALWAYS_INLINE void dw_tile_s2(const int K, const int ACT, const int R, const int NV,
                                        const float *restrict pl, int64_t pw, const gc_vf *wv, gc_vf bv,
                                        float lo, float hi, float *y, int64_t ow, int64_t c, int64_t last)
{
    gc_vf acc[4][4];
    GC_UNROLL
    for (int r = 0; r < R; r++) {
        GC_UNROLL
        for (int v = 0; v < NV; v++) acc[r][v] = bv;
    }
    GC_UNROLL
    for (int ii = 0; ii < 2 * R + K - 2; ii++) {
        GC_UNROLL
        for (int v = 0; v < NV; v++) {
            const float *xr = pl + ii * pw + 2 * (c + v * GC_VW);
            GC_UNROLL
            for (int m = 0; 2 * m < K; m++) {
                const gc_vf a = vload(xr + 2 * m), b = vload(xr + 2 * m + GC_VW);
                const gc_vf e = __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14);
                GC_UNROLL
                for (int r = 0; r < R; r++)
                    if (ii - 2 * r >= 0 && ii - 2 * r < K)
                        acc[r][v] = vfma(wv[(ii - 2 * r) * K + 2 * m], e, acc[r][v]);
                if (2 * m + 1 < K) {
                    const gc_vf o = __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
                    GC_UNROLL
                    for (int r = 0; r < R; r++)
                        if (ii - 2 * r >= 0 && ii - 2 * r < K)
                            acc[r][v] = vfma(wv[(ii - 2 * r) * K + 2 * m + 1], o, acc[r][v]);
                }
            }
        }
    }
    GC_UNROLL
    for (int r = 0; r < R; r++) {
        GC_UNROLL
        for (int v = 0; v < NV; v++) {
            gc_vf o = __builtin_shufflevector(acc[r][v], acc[r][v], 0, 1, 4, 5, 2, 3, 6, 7);
            if (ACT) o = gc_vact(ACT, o, lo, hi);
            store_lanes(y + r * ow + c + v * GC_VW, o, v == NV - 1 ? last : GC_VW);
        }
    }
}
#endif

/* One band of `rows` output rows (y at its first row) from its planes, bias included, no epilogue: tiles
 * of 4 rows x 1 vector for rows of one vector, else 2 rows x 2 vectors, so that four accumulators hide
 * the FMA latency. */
static GC_ALWAYS_INLINE void dw_band(const int K, const int S, const int ACT, const gc_conv2d_params *p,
                                     const float *pl, int64_t pw,
                                     const int64_t *koff, const float *wk, float b, float *y, int64_t rows)
{
    gc_vf wv[K * K];
    GC_UNROLL
    for (int t = 0; t < K * K; t++) wv[t] = vset1(wk[t]);
    const gc_vf bv = vset1(b);
    const int64_t ow = p->ow, nvec = (ow + GC_VW - 1) / GC_VW, last = ow - (nvec - 1) * GC_VW;
    int64_t r = 0;
#if GC_VW == 8
    if (S == 2) { /* the band's input rows (depthwise_raw2) */
#ifndef GC_DW2_R
#define GC_DW2_R 4
#define GC_DW2_NV 1
#endif
#define GC_DW_TILE2(R, NV, r, c, n)                                                                            \
    dw_tile_s2(K, ACT, R, NV, pl + 2 * (r) * pw, pw, wv, bv, p->act_lo, p->act_hi, y + (r) * ow, ow, c, n)
        for (; r + GC_DW2_R <= rows; r += GC_DW2_R) {
            int64_t v = 0;
            for (; v + GC_DW2_NV < nvec; v += GC_DW2_NV) GC_DW_TILE2(GC_DW2_R, GC_DW2_NV, r, v * GC_VW, GC_VW);
            for (; v < nvec; v++) GC_DW_TILE2(GC_DW2_R, 1, r, v * GC_VW, v + 1 == nvec ? last : GC_VW);
        }
        for (; r < rows; r++) {
            int64_t v = 0;
            for (; v + 2 < nvec; v += 2) GC_DW_TILE2(1, 2, r, v * GC_VW, GC_VW);
            for (; v < nvec; v++) GC_DW_TILE2(1, 1, r, v * GC_VW, v + 1 == nvec ? last : GC_VW);
        }
#undef GC_DW_TILE2
        return;
    }
#endif
#define GC_DW_TILE(R, NV, r, c, n)                                                                             \
    dw_tile(K, S, ACT, R, NV, pl + (r) * pw, pw, koff, wv, bv, p->act_lo, p->act_hi, y + (r) * ow, ow, c, n)
    if (nvec == 1) {
        for (; r + 4 <= rows; r += 4) GC_DW_TILE(4, 1, r, 0, last);
        for (; r + 2 <= rows; r += 2) GC_DW_TILE(2, 1, r, 0, last);
        for (; r < rows; r++) GC_DW_TILE(1, 1, r, 0, last);
        return;
    }
    for (; r + 2 <= rows; r += 2) {
        int64_t v = 0;
        for (; v + 2 <= nvec; v += 2) GC_DW_TILE(2, 2, r, v * GC_VW, v + 2 == nvec ? last : GC_VW);
        if (v < nvec) GC_DW_TILE(2, 1, r, v * GC_VW, last);
    }
    for (; r < rows; r++) {
        int64_t v = 0;
        for (; v + 2 <= nvec; v += 2) GC_DW_TILE(1, 2, r, v * GC_VW, v + 2 == nvec ? last : GC_VW);
        if (v < nvec) GC_DW_TILE(1, 1, r, v * GC_VW, last);
    }
#undef GC_DW_TILE
}

#define GC_DW_BAND_FN(K, S, ACT)                                                                            \
    static GC_NOINLINE void dw_band_##K##_##S##_##ACT(const gc_conv2d_params *p, const float *pl, int64_t pw,  \
                                                      const int64_t *koff, const float *wk, float b, float *y, \
                                                      int64_t rows)                                            \
    {                                                                                                          \
        dw_band(K, S, ACT, p, pl, pw, koff, wk, b, y, rows);                                                   \
    }
/* no activation (any epilogue then runs as a pass over the band), and MobileNet's ReLU6 (3x3, 5x5) and
 * EfficientNet's SiLU (3x3; 5x5 measured no faster on AVX-512: its 25 weights and SiLU's constants spill;
 * 5x5 stride 1 on AVX2, see GC_DW_SILU5) applied to the accumulators before the store: 10-18% faster on
 * ReLU6 layers than the pass, 15% on SiLU 3x3 */
/* (kernel, stride, activation in the store), in the order dw_variant indexes */
#define GC_DW_VARIANTS(X)                                                                               \
    X(3, 1, 0) X(3, 2, 0) X(5, 1, 0) X(5, 2, 0) X(7, 1, 0) X(7, 2, 0) X(3, 1, GC_ACT_CLAMP)              \
    X(3, 2, GC_ACT_CLAMP) X(5, 1, GC_ACT_CLAMP) X(5, 2, GC_ACT_CLAMP) X(3, 1, GC_ACT_SILU) X(3, 2, GC_ACT_SILU)  \
    X(5, 1, GC_ACT_SILU)
GC_DW_VARIANTS(GC_DW_BAND_FN)
#undef GC_DW_BAND_FN

typedef void (*dw_band_fn)(const gc_conv2d_params *, const float *, int64_t, const int64_t *, const float *, float,
                           float *, int64_t);
#define GC_DW_BAND_NAME(K, S, ACT) dw_band_##K##_##S##_##ACT,
static const dw_band_fn dw_bands[] = {GC_DW_VARIANTS(GC_DW_BAND_NAME)};
#undef GC_DW_BAND_NAME

#if GC_VW == 16
/* Rows of at most 8 outputs (7x7 images) on AVX-512: R rows of one 8-lane vector, whose FMAs and loads
 * take half the issue slots of 16-lane ones where the 512-bit units are two 256-bit halves (Zen 4), the
 * taps in the same order as dw_tile. Widened to 16 lanes for the masked store. */
static GC_ALWAYS_INLINE void dw_tile8(const int K, const int S, const int ACT, const int R, const float *restrict pl,
                                      int64_t pw, const int64_t *koff, const gc_vf8 *wv, gc_vf8 bv, float lo,
                                      float hi, float *y, int64_t ow)
{
    gc_vf8 acc[4], xv;
    GC_UNROLL
    for (int r = 0; r < R; r++) acc[r] = bv;
    if (S == 1) {
        GC_UNROLL
        for (int ii = 0; ii < R + K - 1; ii++) {
            GC_UNROLL
            for (int j = 0; j < K; j++) {
                memcpy(&xv, pl + ii * pw + j, sizeof xv);
                GC_UNROLL
                for (int r = 0; r < R; r++)
                    if (ii - r >= 0 && ii - r < K) acc[r] = gc_fmadd8(wv[(ii - r) * K + j], xv, acc[r]);
            }
        }
    } else {
        GC_UNROLL
        for (int t = 0; t < K * K; t++) {
            GC_UNROLL
            for (int r = 0; r < R; r++) {
                memcpy(&xv, pl + r * pw + koff[t], sizeof xv);
                acc[r] = gc_fmadd8(wv[t], xv, acc[r]);
            }
        }
    }
    const gc_vf8 zero = {0};
    const gc_mask16 m = (gc_mask16)((1u << ow) - 1u);
    GC_UNROLL
    for (int r = 0; r < R; r++) {
        gc_vf v = __builtin_shufflevector(acc[r], zero, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        if (ACT) v = gc_vact(ACT, v, lo, hi);
        vstore_mask(y + r * ow, m, v);
    }
}

static GC_ALWAYS_INLINE void dw_band8(const int K, const int S, const int ACT, const gc_conv2d_params *p,
                                      const float *pl,
                                      int64_t pw, const int64_t *koff, const float *wk, float b, float *y,
                                      int64_t rows)
{
    gc_vf8 wv[K * K];
    GC_UNROLL
    for (int t = 0; t < K * K; t++) wv[t] = wk[t] - (gc_vf8){0};
    const gc_vf8 bv = b - (gc_vf8){0};
    const int64_t ow = p->ow;
    int64_t r = 0;
    const float lo = p->act_lo, hi = p->act_hi;
    for (; r + 4 <= rows; r += 4) dw_tile8(K, S, ACT, 4, pl + r * pw, pw, koff, wv, bv, lo, hi, y + r * ow, ow);
    for (; r + 2 <= rows; r += 2) dw_tile8(K, S, ACT, 2, pl + r * pw, pw, koff, wv, bv, lo, hi, y + r * ow, ow);
    for (; r < rows; r++) dw_tile8(K, S, ACT, 1, pl + r * pw, pw, koff, wv, bv, lo, hi, y + r * ow, ow);
}

#define GC_DW_BAND8_FN(K, S, ACT)                                                                             \
    static GC_NOINLINE void dw_band8_##K##_##S##_##ACT(const gc_conv2d_params *p, const float *pl, int64_t pw, \
                                                       const int64_t *koff, const float *wk, float b, float *y, \
                                                       int64_t rows)                                          \
    {                                                                                                         \
        dw_band8(K, S, ACT, p, pl, pw, koff, wk, b, y, rows);                                                 \
    }
GC_DW_VARIANTS(GC_DW_BAND8_FN)
#undef GC_DW_BAND8_FN
#define GC_DW_BAND8_NAME(K, S, ACT) dw_band8_##K##_##S##_##ACT,
static const dw_band_fn dw_bands8[] = {GC_DW_VARIANTS(GC_DW_BAND8_NAME)};
#undef GC_DW_BAND8_NAME
#endif

/* p's entry in GC_DW_VARIANTS' order: ReLU6 (3x3, 5x5) and SiLU (3x3) go into the store when there is no
 * residual (*fused = 1), every other epilogue runs as a pass over the band */
/* SiLU in the 5x5 stride-1 stores on AVX2: 4-17% faster than the pass there (672 / 480 channels 14x14,
 * 1152 7x7); at stride 2 (the in-tile deinterleave) 3% slower */
#ifndef GC_DW_SILU5
#define GC_DW_SILU5 (GC_VW == 8)
#endif
static int dw_variant(const gc_conv2d_params *p, int *fused)
{
    const int s = p->stride_h == 1 ? 0 : 1;
    if (!p->res && p->act == GC_ACT_CLAMP && p->kh <= 5) {
        *fused = 1;
        return 6 + (p->kh == 3 ? 0 : 2) + s;
    }
    if (!p->res && p->act == GC_ACT_SILU && (p->kh == 3 || (GC_DW_SILU5 && p->kh == 5 && !s))) {
        *fused = 1;
        return p->kh == 3 ? 10 + s : 12;
    }
    return (p->kh == 3 ? 0 : p->kh == 5 ? 2 : 4) + s;
}

/* The band function of p: square 3x3, 5x5 or 7x7 kernels at equal strides 1 or 2 (NULL for the others);
 * *fused = 1 when it applies p's whole epilogue itself (no residual; see above), else the epilogue is a
 * pass over each band's outputs. */
static dw_band_fn dw_band_of(const gc_conv2d_params *p, int *fused)
{
    *fused = 0;
    if (!depthwise_square(p)) return NULL;
    const int v = dw_variant(p, fused);
#if GC_VW == 16
    if (p->ow <= 8) return dw_bands8[v]; /* 8-lane rows */
#endif
    return dw_bands[v];
}

/* One task: band task % bands of plane task / bands = (image n, channel c). */
static void depthwise_task(const gc_conv2d_params *p, const spatial_geom *g, const int64_t *koff, dw_band_fn band,
                           int fused, int64_t task, const float *x, const float *w, const float *bias, float *y, float *planes)
{
    const int64_t q = task / g->bands, c = q % p->c;
    const int64_t r0 = task % g->bands * g->bh, rows = min64(g->bh, p->oh - r0), taps = p->kh * p->kw;
    const float *wk = w + c * taps;
    const float b = bias ? bias[c] : 0.0f;
    const int64_t ow = p->ow, step = GC_DW_NV * GC_VW;
    if (band) {
        const int64_t yoff = q * p->oh * ow + r0 * ow;
        dw_planes(p, g, x + q * p->h * p->w, r0, rows, planes);
        band(p, planes, g->pw, koff, wk, b, y + yoff, rows);
        if (!fused) epilogue_rows(p, y, yoff, 1, rows * ow, 0, NULL); /* on the band's outputs, still in L1 */
        return;
    }
    spatial_planes(p, g, x + q * p->h * p->w, r0, rows, planes);
    if (g->wide) {
        /* blocks of wide positions q = r*pw + col into a tile, whose columns below ow are copied out row by
         * row; the epilogue then runs over the band's outputs (consecutive in y, in L1) */
        gc_conv2d_params plain = *p;
        plain.act = 0;
        plain.res = NULL;
        _Alignas(64) float tile[GC_DW_NV * GC_VW];
        const int64_t wide = rows * g->pw, y0 = q * p->oh * ow + r0 * ow;
        for (int64_t q0 = 0; q0 < wide; q0 += step) {
            const int64_t qn = min64(step, wide - q0);
            switch ((qn + GC_VW - 1) / GC_VW) {
            case 4: dw_block_4(&plain, planes + q0, koff, wk, taps, b, tile, NULL, GC_VW); break;
            case 3: dw_block_3(&plain, planes + q0, koff, wk, taps, b, tile, NULL, GC_VW); break;
            case 2: dw_block_2(&plain, planes + q0, koff, wk, taps, b, tile, NULL, GC_VW); break;
            default: dw_block_1(&plain, planes + q0, koff, wk, taps, b, tile, NULL, GC_VW); break;
            }
            int64_t r = q0 / g->pw, col = q0 - r * g->pw;
            for (int64_t t = 0; t < qn; r++, col = 0) {
                const int64_t run = min64(qn - t, g->pw - col), n = min64(run, ow - col);
                if (n > 0) copy_floats(y + y0 + r * ow + col, tile + t, n);
                t += run;
            }
        }
        epilogue_rows(p, y, y0, 1, rows * ow, 0, NULL);
        return;
    }
    int64_t r = 0;
    if (p->stride_h == 1) { /* pairs of rows; one row phase, so tap (i, j) is at i * pw + coff[j] */
        int64_t coff[GC_SP_MAX_K];
        for (int64_t j = 0; j < p->kw; j++) coff[j] = koff[j];
        for (; r + 1 < rows; r += 2) {
            const float *xr = planes + r * g->pw;
            const int64_t yoff = q * p->oh * ow + (r0 + r) * ow;
            float *yr = y + yoff;
            const float *rr = p->res ? p->res + yoff : NULL;
            int64_t c0 = 0;
            for (; c0 + step <= ow; c0 += step)
                dw_block2_4(p, xr + c0, g->pw, coff, wk, b, yr + c0, rr ? rr + c0 : NULL, ow, GC_VW);
            if (c0 < ow) {
                const int64_t left = ow - c0, nv = (left + GC_VW - 1) / GC_VW, last = left - (nv - 1) * GC_VW;
                const float *xc = xr + c0, *rc = rr ? rr + c0 : NULL;
                switch (nv) {
                case 4: dw_block2_4(p, xc, g->pw, coff, wk, b, yr + c0, rc, ow, last); break;
                case 3: dw_block2_3(p, xc, g->pw, coff, wk, b, yr + c0, rc, ow, last); break;
                case 2: dw_block2_2(p, xc, g->pw, coff, wk, b, yr + c0, rc, ow, last); break;
                default: dw_block2_1(p, xc, g->pw, coff, wk, b, yr + c0, rc, ow, last); break;
                }
            }
        }
    }
    for (; r < rows; r++) {
        const float *xr = planes + r * g->pw;
        const int64_t yoff = q * p->oh * ow + (r0 + r) * ow;
        float *yr = y + yoff;
        const float *rr = p->res ? p->res + yoff : NULL;
        int64_t c0 = 0;
        for (; c0 + step <= ow; c0 += step)
            dw_block_4(p, xr + c0, koff, wk, taps, b, yr + c0, rr ? rr + c0 : NULL, GC_VW);
        if (c0 < ow) {
            const int64_t left = ow - c0, nv = (left + GC_VW - 1) / GC_VW, last = left - (nv - 1) * GC_VW;
            const float *xc = xr + c0, *rc = rr ? rr + c0 : NULL;
            switch (nv) {
            case 4: dw_block_4(p, xc, koff, wk, taps, b, yr + c0, rc, last); break;
            case 3: dw_block_3(p, xc, koff, wk, taps, b, yr + c0, rc, last); break;
            case 2: dw_block_2(p, xc, koff, wk, taps, b, yr + c0, rc, last); break;
            default: dw_block_1(p, xc, koff, wk, taps, b, yr + c0, rc, last); break;
            }
        }
    }
}

/* A task and, when it holds the whole plane, the plane's pooled output. */
static void depthwise_task_pool(const gc_conv2d_params *p, const spatial_geom *g, const int64_t *koff,
                                dw_band_fn band, int fused, int64_t task, const float *x, const float *w, const float *bias,
                                float *y, float *planes)
{
    depthwise_task(p, g, koff, band, fused, task, x, w, bias, y, planes);
    if (p->pool && g->bands == 1) {
        const int64_t ohw = p->oh * p->ow;
        p->pool[task] = (float)(gc_sum_floats(y + task * ohw, ohw) / (double)ohw);
    }
}

typedef struct depthwise_job {
    const gc_conv2d_params *p;
    const spatial_geom *g;
    const int64_t *koff;
    dw_band_fn band;
    int fused;
    int64_t tasks, slots;
    const float *x, *w, *bias;
    float *y, *planes;
    size_t buf;
} depthwise_job;

static void depthwise_slot(void *vj, int64_t t)
{
    const depthwise_job *j = vj;
    for (int64_t task = j->tasks * t / j->slots; task < j->tasks * (t + 1) / j->slots; task++)
        depthwise_task_pool(j->p, j->g, j->koff, j->band, j->fused, task, j->x, j->w, j->bias, j->y,
                            j->planes + (size_t)t * j->buf);
}

static void conv2d_depthwise(const gc_conv2d_params *p, const float *x, const float *w, const float *bias, float *y,
                             float *work, int nthreads)
{
    spatial_geom g;
    depthwise_geometry(p, nthreads, &g);
    const int64_t tasks = p->n * p->c * g.bands;
    /* where tap (i, j) of an output reads, from the output's position in the phase planes */
    int64_t koff[GC_SP_MAX_TAPS];
    for (int64_t i = 0; i < p->kh; i++)
        for (int64_t j = 0; j < p->kw; j++)
            koff[i * p->kw + j] = (g.tap_a[i] * g.nb + g.tap_b[j]) * g.plane + i / p->stride_h * g.pw +
                                  j / p->stride_w;
    int fused;
    const dw_band_fn band = dw_band_of(p, &fused);
    if (g.threads <= 1) {
        for (int64_t t = 0; t < tasks; t++) depthwise_task_pool(p, &g, koff, band, fused, t, x, w, bias, y, work);
        return;
    }
    const int64_t slots = depthwise_slots(p, &g);
    const depthwise_job job = {p, &g, koff, band, fused, tasks, slots, x, w, bias, y, work, (size_t)g.cstride};
    gc_parallel_for(slots, g.threads, depthwise_slot, (void *)&job);
}

typedef struct direct_job {
    const gc_conv2d_params *p;
    const float *x, *w, *bias;
    float *y;
} direct_job;

static void direct_plane(void *vj, int64_t q)
{
    const direct_job *j = vj;
    conv_plane_direct_q(j->p, q, j->x, j->w, j->bias, j->y);
}

typedef struct task_job {
    const gc_conv2d_params *p;
    const conv_plan *pl;
    int64_t tasks;
    int T;
    const float *x, *w, *bias;
    float *y, *work;
} task_job;

static void task_slot(void *vj, int64_t t)
{
    const task_job *j = vj;
    float *col = j->pl->col_floats ? j->work + (size_t)t * j->pl->col_floats : NULL;
    for (int64_t task = t; task < j->tasks; task += j->T)
        conv2d_task(j->p, j->pl, task, j->x, j->w, j->bias, j->y, col, 1);
}

static void task_one(void *vj, int64_t task)
{
    const task_job *j = vj;
    conv2d_task(j->p, j->pl, task, j->x, j->w, j->bias, j->y, NULL, 1);
}

/* A 1x1 conv with 1x1 outputs: y[n, o] = epilogue(bias[o] + w[o, :] . x[n, group of o, :]), one dot
 * product per output in a fixed order (vector partial sums, then their lanes, then the tail). */
typedef struct gemv_job {
    const gc_conv2d_params *p;
    const float *x, *w, *bias;
    float *y;
    int T; /* pool tasks: task t takes rows [rows * t / T, rows * (t + 1) / T) */
} gemv_job;

static void gemv_rows(const gemv_job *j, int64_t r0, int64_t r1)
{
    const gc_conv2d_params *p = j->p;
    const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t n = r / p->oc, o = r % p->oc;
        const float *xr = j->x + n * p->c + o / ocg * cg, *wr = j->w + o * cg;
        gc_vf acc = vset1(0.0f);
        int64_t c = 0;
        for (; c + GC_VW <= cg; c += GC_VW) acc = vfma(vload(wr + c), vload(xr + c), acc);
        float lanes[GC_VW];
        vstore(lanes, acc);
        float sum = 0.0f;
        for (int l = 0; l < GC_VW; l++) sum += lanes[l];
        for (; c < cg; c++) sum += wr[c] * xr[c];
        j->y[r] = sum + (j->bias ? j->bias[o] : 0.0f);
    }
    epilogue_rows(p, j->y, r0, 1, r1 - r0, 0, NULL);
}

static void gemv_slot(void *vj, int64_t t)
{
    const gemv_job *j = vj;
    const int64_t rows = j->p->n * j->p->oc;
    gemv_rows(j, rows * t / j->T, rows * (t + 1) / j->T);
}

/* With an input scale: one image at a time, its weights scaled into the start of the work. */
static gc_conv2d_params one_image(const gc_conv2d_params *p)
{
    gc_conv2d_params q = *p;
    q.n = 1;
    q.in_scale = NULL;
    return q;
}

static size_t scaled_weight_floats(const gc_conv2d_params *p)
{
    return ((size_t)(p->oc * (p->c / p->groups) * p->kh * p->kw) + 15) / 16 * 16;
}

size_t gc_conv2d_work_floats(const gc_conv2d_params *p, int nthreads)
{
    if (p->in_scale) {
        const gc_conv2d_params q = one_image(p);
        return scaled_weight_floats(p) + gc_conv2d_work_floats(&q, nthreads);
    }
    const conv_plan pl = conv2d_plan(p, nthreads);
    return pl.pack_floats + pl.col_floats * (size_t)pl.task_threads;
}

static void conv2d_run(const gc_conv2d_params *p, const conv_plan *plan, const float *x, const float *w,
                       const float *bias, float *y, float *work, int nthreads);

void gc_conv2d(const gc_conv2d_params *p, const float *x, const float *w, const float *bias, float *y,
               float *work, int nthreads)
{
    if (p->n <= 0 || p->oc <= 0 || p->oh <= 0 || p->ow <= 0) return;
    if (p->in_scale) {
        /* conv(x * s) = conv with w[o, c, :, :] * s[n, c]: per image, the weights scaled (OC x C/groups x
         * taps multiplies, fewer than the C x H x W of scaling x when OC < H x W), then the plain conv */
        const int64_t cg = p->c / p->groups, ocg = p->oc / p->groups, taps = p->kh * p->kw;
        const int64_t hw = p->h * p->w, ohw = p->oh * p->ow;
        gc_conv2d_params q = one_image(p);
        float *ws = work, *rest = work + scaled_weight_floats(p);
        for (int64_t n = 0; n < p->n; n++) {
            const float *s = p->in_scale + n * p->c;
            for (int64_t o = 0; o < p->oc; o++) {
                const float *sg = s + o / ocg * cg, *wo = w + o * cg * taps;
                float *d = ws + o * cg * taps;
                for (int64_t c = 0; c < cg; c++)
                    for (int64_t t = 0; t < taps; t++) d[c * taps + t] = wo[c * taps + t] * sg[c];
            }
            q.res = p->res ? p->res + n * p->oc * ohw : NULL;
            q.pool = p->pool ? p->pool + n * p->oc : NULL;
            gc_conv2d(&q, x + n * p->c * hw, ws, bias, y + n * p->oc * ohw, rest, nthreads);
        }
        return;
    }
    const conv_plan pl = conv2d_plan(p, nthreads);
    conv2d_run(p, &pl, x, w, bias, y, work, nthreads);
    if (p->pool) {
        /* the depthwise path pools each plane in its task when a task holds the whole plane */
        spatial_geom g;
        const int inline_pool = pl.kind == CONV_DEPTHWISE && depthwise_geometry(p, nthreads, &g) && g.bands == 1;
        if (!inline_pool) pool_pass(p, y, nthreads);
    }
}

static void conv2d_run(const gc_conv2d_params *p, const conv_plan *plan, const float *x, const float *w,
                       const float *bias, float *y, float *work, int nthreads)
{
    const conv_plan pl = *plan;
    const int64_t ohw = p->oh * p->ow;

    if (pl.kind == CONV_DIRECT) {
        /* one input channel per group: output planes are independent, spread them over the threads */
        const int64_t planes = p->n * p->oc;
        const int nt = (double)planes * (double)ohw * (double)(p->kh * p->kw) < 65536.0 ? 1 : nthreads;
        if (nt <= 1) {
            for (int64_t q = 0; q < planes; q++) conv_plane_direct_q(p, q, x, w, bias, y);
            return;
        }
        const direct_job job = {p, x, w, bias, y};
        gc_parallel_for(planes, nt, direct_plane, (void *)&job);
        return;
    }
    if (pl.kind == CONV_SPATIAL) {
        conv2d_spatial(p, x, w, bias, y, work, nthreads);
        return;
    }
    if (pl.kind == CONV_DEPTHWISE) {
        conv2d_depthwise(p, x, w, bias, y, work, nthreads);
        return;
    }

    if (pl.kind == CONV_GEMM_DIRECT && ohw == 1) {
        /* 1x1 outputs (squeeze-excitation convs): dot products, far cheaper than a gemm's packing for N = 1 */
        const int64_t rows = p->n * p->oc;
        const int nt = (double)rows * (double)(p->c / p->groups) < 262144.0 ? 1 : nthreads;
        const gemv_job job = {p, x, w, bias, y, nt};
        if (nt <= 1)
            gemv_rows(&job, 0, rows);
        else
            gc_parallel_for(nt, nt, gemv_slot, (void *)&job);
        return;
    }
    const int64_t tasks = pl.items * pl.chunks;
    if (pl.task_threads > 1 && pl.kind == CONV_GEMM_DIRECT) {
        /* no column buffer: the threads claim the tasks one at a time (a late thread leaves its share) */
        const task_job job = {p, &pl, tasks, pl.task_threads, x, w, bias, y, work};
        gc_parallel_for(tasks, pl.task_threads, task_one, (void *)&job);
    } else if (pl.task_threads > 1) {
        /* pool task t runs tasks t, t + T, ... with column buffer t */
        const task_job job = {p, &pl, tasks, pl.task_threads, x, w, bias, y, work};
        gc_parallel_for(pl.task_threads, pl.task_threads, task_slot, (void *)&job);
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

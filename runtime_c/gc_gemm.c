/* graphc runtime: single-precision GEMM (gc_sgemm, gc_sgemm_batched).
 *
 * Three code paths, picked by shape and layout:
 *  - packed (BLIS style): op(A) and op(B) are copied block by block into small contiguous buffers
 *    (A in MR-row micro-panels, B in NR-column micro-panels) and a register-blocked MR x NR micro-kernel
 *    runs over them. Handles every layout; used for all "real" matrix products.
 *  - dot: op(A) rows and op(B) columns both contiguous along K (A not transposed, B transposed: the
 *    linear-layer layout; or a column-vector B) and M or N small (at most 4, or 16 when K >= 256).
 *    Tiles of up to 4 x 4 dot products (a single row of A: 8 columns), no packing.
 *  - axpy: B not transposed and M <= 4 (GEMV-like). C rows accumulate broadcast(A) * B rows, no packing.
 * Threads get disjoint rectangles of C; each one packs into its own stack buffers, so nothing is
 * allocated and no synchronisation happens inside a product. Every C element is summed in the same
 * order whichever thread computes it, so results are bit-identical for any thread count.
 *
 * The vector code uses GCC/Clang vector extensions sized by the target ISA (AVX-512, AVX, SSE/NEON);
 * other compilers get GC_VW = 1, i.e. plain scalar code through the same helpers.
 */
#include "graphc_rt.h"
#include "gc_simd.h"
#include "gc_epilogue.h"

#include <string.h>


/* Micro-tile: MR rows x NR = 2 vectors of columns. With 16 registers (AVX2/SSE/NEON) 6 x 2 vectors of
 * accumulators leave room for the B and A operands; on AVX-512 8 x 2 (16 of 32 registers) measured
 * faster than 12 x 2 or 14 x 2. */
#ifndef GC_MR
#if GC_VW == 16
#define GC_MR 8
#else
#define GC_MR 6
#endif
#endif
#ifndef GC_NV
#define GC_NV 2
#endif
#define GC_NR (GC_NV * GC_VW)

/* Cache blocking: the MC x KC block of A and the KC x NC block of B stay in L2 while KC x NR micro-panels
 * of B stream through L1 (with MR x NR FMAs per 2 vector loads, L2 keeps up). A long KC writes C fewer
 * times and amortises each micro-tile's start and epilogue: K = 384 (transformer widths) is one depth
 * block on AVX-512, two of 384 for K = 768, measured 3-10% faster than KC = 128 at M = 49..256 and
 * 2-5% on square products (Zen 4, 1 MiB L2). The AVX2 / SSE copies keep KC = 256 for the 256-512 KiB
 * L2 of the CPUs that run them. Only A is packed more than once (once per NC columns). Both buffers live
 * on the thread's stack: (MC + NC) * KC floats = 480 KiB (AVX-512) / 232 KiB (AVX2).
 * For tuning, -D can override GC_MR, GC_NV, and GC_KC with GC_MC and GC_NC. */
#ifndef GC_KC
#if GC_VW == 16
#define GC_KC 384
#define GC_MC 64
#define GC_NC 256
#else
#define GC_KC 256
#define GC_MC (GC_MR * 12)
#define GC_NC (GC_NR * (160 / GC_NR))
#endif
#endif

/* Blocking with B already packed (gc_sgemm_pack_b: constant weights packed once at create). Nothing is
 * copied for B, so its block only has to stay in L2 (KC x GC_NC_PRE floats, 768 / 256 KiB) and A's
 * block gets more rows: up to GC_A_PRE floats (192 KiB, on the stack), so that the token counts of
 * transformer layers (128 rows at K = 384) are packed once per depth block and stay in L2 while every B
 * micro-panel streams past them. */
#ifndef GC_NC_PRE
#define GC_NC_PRE (GC_NR * 16)
#endif
#ifndef GC_A_PRE
#define GC_A_PRE 49152
#endif


/* The lanes' sum as a tree: halves added as vectors (v[i] + v[i + VW/2], then quarters, ...) instead of
 * a chain of VW scalar adds, one per column of a GEMV: 1 x 120 x 400 (LeNet's first linear) 2.15 -> 1.93
 * us, 1 x 512 x 512 12.3 -> 11.5 us (AVX-512, AMD EPYC Zen 4; AVX2 5-20% too). Every dot product sums
 * its lanes here, so a C element gets the same bits whichever tile and thread computes it. */
#if GC_VW > 1
typedef float gc_vhalf __attribute__((vector_size(GC_VW * sizeof(float) / 2)));
#endif
#if GC_VW > 2
typedef float gc_vquarter __attribute__((vector_size(GC_VW * sizeof(float) / 4)));
#endif
#if GC_VW > 4
typedef float gc_veighth __attribute__((vector_size(GC_VW * sizeof(float) / 8)));
#endif
static inline float vsum(gc_vf v)
{
#if GC_VW == 1
    return v;
#else
    gc_vhalf h0, h1;
    memcpy(&h0, &v, sizeof h0);
    memcpy(&h1, (const char *)&v + sizeof h0, sizeof h1);
    const gc_vhalf h = h0 + h1;
#if GC_VW == 2
    return h[0];
#else
    gc_vquarter q0, q1;
    memcpy(&q0, &h, sizeof q0);
    memcpy(&q1, (const char *)&h + sizeof q0, sizeof q1);
    const gc_vquarter q = q0 + q1;
#if GC_VW == 4
    return q[0];
#else
    gc_veighth e0, e1;
    memcpy(&e0, &q, sizeof e0);
    memcpy(&e1, (const char *)&q + sizeof e0, sizeof e1);
    const gc_veighth e = e0 + e1;
#if GC_VW == 8
    return e[0];
#else
    return e[0] + e[1];
#endif
#endif
#endif
#endif
}

/* Interleave the low (ZIP_LO) or high (ZIP_HI) halves of two vectors: (a0 b0 a1 b1 ...). */
#if GC_VW == 16
#define GC_LO_IDX 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define GC_HI_IDX 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#define GC_LOG2_VW 4
#elif GC_VW == 8
#define GC_LO_IDX 0, 8, 1, 9, 2, 10, 3, 11
#define GC_HI_IDX 4, 12, 5, 13, 6, 14, 7, 15
#define GC_LOG2_VW 3
#elif GC_VW == 4
#define GC_LO_IDX 0, 4, 1, 5
#define GC_HI_IDX 2, 6, 3, 7
#define GC_LOG2_VW 2
#endif
#if GC_VW > 1
#if defined(__clang__) || __GNUC__ >= 12
#define ZIP_LO(a, b) __builtin_shufflevector(a, b, GC_LO_IDX)
#define ZIP_HI(a, b) __builtin_shufflevector(a, b, GC_HI_IDX)
#else
typedef int32_t gc_vi __attribute__((vector_size(GC_VW * sizeof(int32_t))));
#define ZIP_LO(a, b) __builtin_shuffle(a, b, (gc_vi){GC_LO_IDX})
#define ZIP_HI(a, b) __builtin_shuffle(a, b, (gc_vi){GC_HI_IDX})
#endif
#endif

/* Transpose a VW x VW block held in VW vectors: log2(VW) rounds of the perfect shuffle
 * r'[2i] = zip_lo(r[i], r[i + VW/2]), r'[2i+1] = zip_hi(r[i], r[i + VW/2]). */
static inline void vtranspose(gc_vf r[GC_VW])
{
#if GC_VW > 1
    for (int round = 0; round < GC_LOG2_VW; round++) {
        gc_vf t[GC_VW];
        for (int i = 0; i < GC_VW / 2; i++) {
            t[2 * i] = ZIP_LO(r[i], r[i + GC_VW / 2]);
            t[2 * i + 1] = ZIP_HI(r[i], r[i + GC_VW / 2]);
        }
        for (int i = 0; i < GC_VW; i++) r[i] = t[i];
    }
#else
    (void)r;
#endif
}


/* The scalar twin of vfma, so that edge elements round exactly like vector ones: results then do not
 * depend on where tile and thread boundaries fall (nthreads does not change a single bit). */
static inline float sfma(float a, float b, float acc)
{
#if GC_VW > 1 && (defined(__FMA__) || defined(__AVX512F__))
    return __builtin_fmaf(a, b, acc);
#else
    return acc + a * b;
#endif
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* A strided matrix view: element (i, j) is p[i * rs + j * cs]. op(A) and op(B) become views, so the
 * transposes only swap strides. */
typedef struct view {
    const float *p;
    int64_t rs, cs;
} view;

/* What to do with the product P (already summed over K) of a C element:
 * C = alpha * P + beta * C + bias[j]; beta == 0 never reads C. Then, once the element's sum over all of
 * K is in C, the fused epilogue `post` (gc_sgemm_ep) on the finished tile while it is in registers (the
 * packed path's activations without a libm-like function, see post_mode) or in L1. */
typedef struct epilogue {
    float alpha, beta;
    const float *bias;       /* indexed by the column of the C block, or NULL */
    const gc_epilogue *post; /* NULL: none, or not yet (a depth block before the last) */
    const float *cbase;      /* the whole C: post's residual is residual[c - cbase] */
    const float *rbias;      /* post's row bias at the first row of the C block (NULL: none) */
} epilogue;

/* the fused epilogue on the finished rows x cols block of C at c, rb: the row bias at its first row */
static void post_block(const epilogue *ep, int64_t rows, int64_t cols, float *c, int64_t ldc, const float *rb)
{
    if (!ep->post || rows <= 0 || cols <= 0) return;
    const float *res = ep->post->residual ? ep->post->residual + (c - ep->cbase) : NULL;
    gc_epilogue_rows(ep->post, rows, cols, c, ldc, res, rb);
}

/* How micro_tile applies post: not at all (POST_NONE), in registers before the store for activations
 * that cost a few instructions (0, RELU, CLAMP; scale 1), or on the stored tile (POST_LATE, in L1). Both
 * run gc_epilogue_vec, the same operations on every element. Registers measured 10-25% faster than a
 * second pass over the stored output on the small-K products of 1x1 convs (K = 16 .. 144). */
enum { POST_NONE = -1, POST_LATE = 100 };
static int post_mode(const gc_epilogue *post)
{
    if (!post) return POST_NONE;
#if GC_VW > 1
    if (post->scale == 1.0f && (post->act == 0 || post->act == GC_ACT_RELU || post->act == GC_ACT_CLAMP))
        return post->act;
#endif
    return POST_LATE;
}

static inline float finish1(float acc, const epilogue *ep, const float *c, int64_t j)
{
    float v = sfma(ep->alpha, acc, ep->bias ? ep->bias[j] : 0.0f);
    if (ep->beta != 0.0f) v = sfma(ep->beta, *c, v);
    return v;
}

static void scale_row(int64_t N, float beta, float *c, const float *bias)
{
    for (int64_t j = 0; j < N; j++) {
        const float v = beta != 0.0f ? beta * c[j] : 0.0f;
        c[j] = bias ? v + bias[j] : v;
    }
}

/* C = beta * C + bias over an M x N block (the K == 0 / alpha == 0 product). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc, const float *bias, int nthreads)
{
    if (nthreads <= 1) {
        for (int64_t i = 0; i < M; i++) scale_row(N, beta, C + i * ldc, bias);
        return;
    }
    GC_PRAGMA(omp parallel for num_threads(nthreads) schedule(static))
    for (int64_t i = 0; i < M; i++) scale_row(N, beta, C + i * ldc, bias);
}

/* ------------------------------------------------------------------ packed path */

/* Pack the mc x kc block of op(A) at a into MR-row micro-panels: ap[panel][k][r], rows past mc are 0.
 * One of the two strides is 1 (views come from row-major storage). */
static void pack_a(int64_t mc, int64_t kc, view a, float *restrict ap)
{
    const int64_t full = mc / GC_MR * GC_MR; /* rows in complete micro-panels */
    if (a.rs == 1) {
        /* transposed A: stored row k holds op(A)'s column k; walk k outermost so every source row
         * segment is read once, front to back */
        for (int64_t k = 0; k < kc; k++) {
            const float *s = a.p + k * a.cs;
            for (int64_t i0 = 0; i0 < full; i0 += GC_MR)
                memcpy(ap + i0 * kc + k * GC_MR, s + i0, GC_MR * sizeof(float));
        }
    } else {
        /* rows contiguous along k: transpose MR rows at a time, reading them in parallel */
        for (int64_t i0 = 0; i0 < full; i0 += GC_MR) {
            const float *rows[GC_MR];
            for (int r = 0; r < GC_MR; r++) rows[r] = a.p + (i0 + r) * a.rs;
            float *dst = ap + i0 * kc;
            for (int64_t k = 0; k < kc; k++)
                for (int r = 0; r < GC_MR; r++) dst[k * GC_MR + r] = rows[r][k];
        }
    }
    if (full < mc) {
        /* last, partial micro-panel */
        const float *src = a.p + full * a.rs;
        float *dst = ap + full * kc;
        for (int64_t k = 0; k < kc; k++) {
            int64_t r = 0;
            for (; r < mc - full; r++) dst[k * GC_MR + r] = src[r * a.rs + k * a.cs];
            for (; r < GC_MR; r++) dst[k * GC_MR + r] = 0.0f;
        }
    }
}

/* Pack the kc x nc block of op(B) at b into NR-column micro-panels: bp[panel][k][c], columns past nc
 * are 0. */
static void pack_b(int64_t kc, int64_t nc, view b, float *restrict bp)
{
    const int64_t full = nc / GC_NR * GC_NR; /* columns in complete micro-panels */
    if (b.cs == 1) {
        /* row-major B: walk k outermost, each stored row segment is read once, front to back */
        for (int64_t k = 0; k < kc; k++) {
            const float *s = b.p + k * b.rs;
            for (int64_t j0 = 0; j0 < full; j0 += GC_NR)
                memcpy(bp + j0 * kc + k * GC_NR, s + j0, GC_NR * sizeof(float));
        }
    } else {
        /* transposed B (linear-layer weights): VW x VW blocks, read as rows of the stored matrix,
         * transposed in registers and written as NR-wide packed rows */
        for (int64_t j0 = 0; j0 < full; j0 += GC_NR) {
            const float *src = b.p + j0 * b.cs;
            float *dst = bp + j0 * kc;
            int64_t k = 0;
            for (; k + GC_VW <= kc; k += GC_VW)
                for (int h = 0; h < GC_NV; h++) {
                    gc_vf blk[GC_VW];
                    for (int i = 0; i < GC_VW; i++) blk[i] = vload(src + (h * GC_VW + i) * b.cs + k);
                    vtranspose(blk);
                    for (int i = 0; i < GC_VW; i++) *(gc_vf *)(dst + (k + i) * GC_NR + h * GC_VW) = blk[i];
                }
            for (; k < kc; k++)
                for (int c = 0; c < GC_NR; c++) dst[k * GC_NR + c] = src[c * b.cs + k];
        }
    }
    if (full < nc) {
        /* last, partial micro-panel */
        const float *src = b.p + full * b.cs;
        float *dst = bp + full * kc;
        for (int64_t k = 0; k < kc; k++) {
            int64_t c = 0;
            for (; c < nc - full; c++) dst[k * GC_NR + c] = src[k * b.rs + c * b.cs];
            for (; c < GC_NR; c++) dst[k * GC_NR + c] = 0.0f;
        }
    }
}

/* The register-blocked core: an R x NR tile (R = MR, or the mr < MR rows of a bottom-edge tile, so they
 * cost mr / MR of a tile, not a whole one) of A-panel @ B-panel over kc, then the epilogue on the
 * R x nr valid corner of C (partial columns go through a scratch tile). Always inlined with a constant
 * R: rows past R are never computed. Each accumulator sums over k in order whatever R is, so a row's
 * bits do not depend on the tile it falls in. */
static GC_ALWAYS_INLINE void micro_tile(int R, int PM, int64_t kc, const float *restrict ap,
                                        const float *restrict bp, float *restrict c, int64_t ldc, int64_t nr,
                                        const epilogue *ep, const float *rb)
{
    gc_vf acc[GC_MR][GC_NV];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < GC_NV; v++) acc[r][v] = vset1(0.0f);
#if defined(__GNUC__)
    /* the C tile is read at the end: start fetching it now (C is large and usually not cached) */
    for (int r = 0; r < R; r++) {
        __builtin_prefetch(c + r * ldc, 1);
        __builtin_prefetch(c + r * ldc + nr - 1, 1);
    }
    /* and so is the fused epilogue's residual */
    if (PM != POST_NONE && PM != POST_LATE && ep->post->residual) {
        const float *res = ep->post->residual + (c - ep->cbase);
        for (int r = 0; r < R; r++) {
            __builtin_prefetch(res + r * ldc, 0);
            __builtin_prefetch(res + r * ldc + nr - 1, 0);
        }
    }
#endif

    /* k loop: NV vector loads of B, R broadcasts of A, R * NV FMAs */
    for (int64_t k = 0; k < kc; k++) {
        gc_vf b[GC_NV];
        for (int v = 0; v < GC_NV; v++) b[v] = *(const gc_vf *)(bp + v * GC_VW);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const gc_vf a = vset1(ap[r]);
            for (int v = 0; v < GC_NV; v++) acc[r][v] = vfma(a, b[v], acc[r][v]);
        }
        ap += GC_MR;
        bp += GC_NR;
    }

    const gc_vf valpha = vset1(ep->alpha), vbeta = vset1(ep->beta);
    if (nr == GC_NR) {
        /* whole columns: vector epilogue straight into C, with the fused one (gc_epilogue_vec's steps) while
         * the tile is in registers; resf / resl: the residual added before / after the activation */
        gc_vf vbias[GC_NV];
        for (int v = 0; v < GC_NV; v++) vbias[v] = ep->bias ? vload(ep->bias + v * GC_VW) : vset1(0.0f);
        /* the finished sums (alpha, column bias, beta * C), then the fused epilogue (gc_epilogue_vec's steps)
         * while the tile is in registers, each step one straight run over the tile (GC_TILE_LOOP) */
#define GC_TILE_LOOP(stmt)                                  \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)   \
        _Pragma("GCC unroll 4") for (int v = 0; v < GC_NV; v++) { stmt; }
        GC_TILE_LOOP(acc[r][v] = vfma(valpha, acc[r][v], vbias[v]))
        if (ep->beta != 0.0f) GC_TILE_LOOP(acc[r][v] = vfma(vbeta, vload(c + r * ldc + v * GC_VW), acc[r][v]))
#if GC_VW > 1
        if (PM != POST_NONE && PM != POST_LATE) {
            const gc_epilogue *post = ep->post;
            const float *res = post->residual ? post->residual + (c - ep->cbase) : NULL;
            const float lo = post->lo, hi = post->hi;
            if (rb) GC_TILE_LOOP(acc[r][v] = acc[r][v] + vset1(rb[r]))
            if (res && post->res_first) GC_TILE_LOOP(acc[r][v] = acc[r][v] + vload(res + r * ldc + v * GC_VW))
            if (PM != 0) GC_TILE_LOOP(acc[r][v] = gc_epilogue_act(PM, acc[r][v], lo, hi))
            if (res && !post->res_first) GC_TILE_LOOP(acc[r][v] = acc[r][v] + vload(res + r * ldc + v * GC_VW))
        }
#endif
        GC_TILE_LOOP(vstore(c + r * ldc + v * GC_VW, acc[r][v]))
#undef GC_TILE_LOOP
        if (PM == POST_LATE) post_block(ep, R, nr, c, ldc, rb);
        return;
    }
    /* right-edge tile: spill the accumulators, then a scalar epilogue (same rounding) on the valid part,
     * and the fused one on the stored part (gc_epilogue_rows: the same vector steps on zero-padded copies) */
    float tile[GC_MR * GC_NR];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < GC_NV; v++) vstore(tile + r * GC_NR + v * GC_VW, acc[r][v]);
    for (int r = 0; r < R; r++)
        for (int64_t j = 0; j < nr; j++) c[r * ldc + j] = finish1(tile[r * GC_NR + j], ep, &c[r * ldc + j], j);
    if (PM != POST_NONE) post_block(ep, R, nr, c, ldc, rb);
}

/* The tile of mr rows (a constant R in each case) for post mode PM. */
static GC_ALWAYS_INLINE void tiles(const int PM, int64_t kc, const float *restrict ap, const float *restrict bp,
                                   float *restrict c, int64_t ldc, int64_t mr, int64_t nr, const epilogue *ep,
                                   const float *rb)
{
    switch (mr) {
#if GC_MR > 7
    case 7: micro_tile(7, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
#endif
#if GC_MR > 6
    case 6: micro_tile(6, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
#endif
#if GC_MR > 5
    case 5: micro_tile(5, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
#endif
#if GC_MR > 4
    case 4: micro_tile(4, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
#endif
#if GC_MR > 3
    case 3: micro_tile(3, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
#endif
#if GC_MR > 2
    case 2: micro_tile(2, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
#endif
#if GC_MR > 1
    case 1: micro_tile(1, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
#endif
    default: micro_tile(GC_MR, PM, kc, ap, bp, c, ldc, nr, ep, rb); break;
    }
}

/* One micro-tile of mr <= MR rows: pm = post_mode(ep->post) (POST_NONE when ep->post is NULL: a depth
 * block before the last), rb the row bias at its first row. */
static void micro_kernel(int pm, int64_t kc, const float *restrict ap, const float *restrict bp, float *restrict c,
                         int64_t ldc, int64_t mr, int64_t nr, const epilogue *ep, const float *rb)
{
    switch (pm) {
    case POST_NONE: tiles(POST_NONE, kc, ap, bp, c, ldc, mr, nr, ep, rb); break;
#if GC_VW > 1
    case 0: tiles(0, kc, ap, bp, c, ldc, mr, nr, ep, rb); break;
    case GC_ACT_RELU: tiles(GC_ACT_RELU, kc, ap, bp, c, ldc, mr, nr, ep, rb); break;
    case GC_ACT_CLAMP: tiles(GC_ACT_CLAMP, kc, ap, bp, c, ldc, mr, nr, ep, rb); break;
#endif
    default: tiles(POST_LATE, kc, ap, bp, c, ldc, mr, nr, ep, rb); break;
    }
}

/* Block size for cutting len into ceil(len / max) nearly equal blocks, a multiple of align (max is one):
 * no thin last block that would not amortise its packing. */
static int64_t even_block(int64_t len, int64_t max, int64_t align)
{
    const int64_t blocks = ceil_div(len, max);
    return min64(max, ceil_div(ceil_div(len, blocks), align) * align);
}

/* Sequential packed GEMM of an M x N block of C: loops nc (columns) / kc (depth) / mc (rows) around the
 * micro-kernel. The first depth block applies beta and bias, later ones accumulate. The depth blocks
 * depend on K only, so every C element sums in the same order whatever part of C a thread owns. */
/* The depth blocks of a product: they depend on K only, so every C element sums in the same order for
 * any part of C a thread owns, packed B or not. */
static int64_t kc_block(int64_t K)
{
    return even_block(K, GC_KC, 1);
}

static void gemm_packed(int64_t M, int64_t N, int64_t K, view a, view b, float *C, int64_t ldc,
                        const epilogue *ep)
{
    _Alignas(64) float apack[GC_MC * GC_KC];
    _Alignas(64) float bpack[GC_KC * GC_NC];
    const int64_t nc_step = even_block(N, GC_NC, GC_NR), kc_step = kc_block(K);
    const int64_t mc_step = even_block(M, GC_MC, GC_MR);

    for (int64_t jc = 0; jc < N; jc += nc_step) {
        const int64_t nc = min64(nc_step, N - jc);
        for (int64_t pc = 0; pc < K; pc += kc_step) {
            const int64_t kc = min64(kc_step, K - pc);
            const view bb = {b.p + pc * b.rs + jc * b.cs, b.rs, b.cs};
            pack_b(kc, nc, bb, bpack);
            epilogue e = *ep;
            if (pc > 0) {
                e.beta = 1.0f;
                e.bias = NULL;
            } else if (ep->bias) {
                e.bias = ep->bias + jc;
            }
            if (pc + kc < K) e.post = NULL; /* not the last depth block: the sums are partial */
            const int pm = post_mode(e.post);
            for (int64_t ic = 0; ic < M; ic += mc_step) {
                const int64_t mc = min64(mc_step, M - ic);
                const view ab = {a.p + ic * a.rs + pc * a.cs, a.rs, a.cs};
                pack_a(mc, kc, ab, apack);
                /* micro-tiles of the mc x nc block, B micro-panel outermost so it stays in L1 */
                for (int64_t jr = 0; jr < nc; jr += GC_NR) {
                    epilogue et = e;
                    if (e.bias) et.bias = e.bias + jr;
                    for (int64_t ir = 0; ir < mc; ir += GC_MR)
                        micro_kernel(pm, kc, apack + ir * kc, bpack + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc,
                                     min64(GC_MR, mc - ir), min64(GC_NR, nc - jr), &et,
                                     e.post && e.rbias ? e.rbias + ic + ir : NULL);
                }
            }
        }
    }
}

/* gemm_packed with B already packed by gc_sgemm_pack_b: bp is the whole of op(B) as NR-column panels
 * bp[panel][k][c] over all of K (K * NR floats apart), starting at this block's first column. A depth
 * block of a panel is then the run of kc * NR floats at panel + pc * NR, the very floats (in the same
 * order) that pack_b would have copied, so the micro-kernel sums exactly as in gemm_packed. */
static void gemm_prepacked(int64_t M, int64_t N, int64_t K, view a, const float *bp, float *C, int64_t ldc,
                           const epilogue *ep)
{
    _Alignas(64) float apack[GC_A_PRE + GC_MR * GC_KC];
    const int64_t kc_step = kc_block(K), nc_step = even_block(N, GC_NC_PRE, GC_NR);
    const int64_t mc_max = max64(GC_MR, GC_A_PRE / kc_step / GC_MR * GC_MR);
    const int64_t mc_step = even_block(M, mc_max, GC_MR);

    for (int64_t jc = 0; jc < N; jc += nc_step) {
        const int64_t nc = min64(nc_step, N - jc);
        for (int64_t pc = 0; pc < K; pc += kc_step) {
            const int64_t kc = min64(kc_step, K - pc);
            epilogue e = *ep;
            if (pc > 0) {
                e.beta = 1.0f;
                e.bias = NULL;
            } else if (ep->bias) {
                e.bias = ep->bias + jc;
            }
            if (pc + kc < K) e.post = NULL;
            const int pm = post_mode(e.post);
            for (int64_t ic = 0; ic < M; ic += mc_step) {
                const int64_t mc = min64(mc_step, M - ic);
                const view ab = {a.p + ic * a.rs + pc * a.cs, a.rs, a.cs};
                pack_a(mc, kc, ab, apack);
                for (int64_t jr = 0; jr < nc; jr += GC_NR) {
                    epilogue et = e;
                    if (e.bias) et.bias = e.bias + jr;
                    const float *panel = bp + (jc + jr) * K + pc * GC_NR;
                    for (int64_t ir = 0; ir < mc; ir += GC_MR)
                        micro_kernel(pm, kc, apack + ir * kc, panel, C + (ic + ir) * ldc + jc + jr, ldc,
                                     min64(GC_MR, mc - ir), min64(GC_NR, nc - jr), &et,
                                     e.post && e.rbias ? e.rbias + ic + ir : NULL);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ dot path (A row-major, B^T) */

/* R x NC dot products over K: C[r][c] = A row r . B row c (both contiguous). Always inlined with
 * constant R and NC so the accumulators stay in registers. */
static GC_ALWAYS_INLINE void dot_tile(int R, int NC, int64_t K, const float *a, int64_t lda, const float *b,
                                      int64_t ldb, float *c, int64_t ldc, const epilogue *ep)
{
    gc_vf acc[4][4];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NC; j++) acc[r][j] = vset1(0.0f);
    int64_t k = 0;
    for (; k + GC_VW <= K; k += GC_VW) {
        gc_vf va[4], vb[4];
        for (int r = 0; r < R; r++) va[r] = vload(a + r * lda + k);
        for (int j = 0; j < NC; j++) vb[j] = vload(b + j * ldb + k);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < NC; j++) acc[r][j] = vfma(va[r], vb[j], acc[r][j]);
    }
#if GC_VW == 16
    if (k < K) { /* the last K - k < 16 products as masked (zero-filled) vectors */
        const gc_mask16 m = (gc_mask16)((1u << (K - k)) - 1u);
        gc_vf va[4], vb[4];
        for (int r = 0; r < R; r++) va[r] = vload_mask(m, a + r * lda + k);
        for (int j = 0; j < NC; j++) vb[j] = vload_mask(m, b + j * ldb + k);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < NC; j++) acc[r][j] = vfma(va[r], vb[j], acc[r][j]);
        k = K;
    }
#endif
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NC; j++) {
            float s = vsum(acc[r][j]);
            for (int64_t kk = k; kk < K; kk++) s = sfma(a[r * lda + kk], b[j * ldb + kk], s);
            c[r * ldc + j] = finish1(s, ep, &c[r * ldc + j], j);
        }
}

/* One row of A against NC rows of B (M = 1, the GEMV of a batch-1 linear layer): the same sums as
 * dot_tile(1, NC) (one vector accumulator per column, then vsum and the tail), so a column gets
 * the same bits whichever tile computes it. The product streams the weights (from L3 once they exceed
 * L2): 8 rows at a time measured 5-15% faster than 4 (784 x 512: 21.2 -> 17.7-20.4 us, ~90 GB/s, near
 * a plain sequential read's 96 GB/s on AMD EPYC Zen 4); software prefetch 256..2048 bytes ahead gained
 * nothing over the hardware's. */
#define GC_ROW_NC 8
static GC_ALWAYS_INLINE void dot_row(int NC, int64_t K, const float *a, const float *b, int64_t ldb, float *c,
                                     const epilogue *ep)
{
    gc_vf acc[GC_ROW_NC];
    for (int j = 0; j < NC; j++) acc[j] = vset1(0.0f);
    int64_t k = 0;
    for (; k + GC_VW <= K; k += GC_VW) {
        const gc_vf va = vload(a + k);
        for (int j = 0; j < NC; j++) acc[j] = vfma(va, vload(b + j * ldb + k), acc[j]);
    }
#if GC_VW == 16
    if (k < K) { /* as in dot_tile */
        const gc_mask16 m = (gc_mask16)((1u << (K - k)) - 1u);
        const gc_vf va = vload_mask(m, a + k);
        for (int j = 0; j < NC; j++) acc[j] = vfma(va, vload_mask(m, b + j * ldb + k), acc[j]);
        k = K;
    }
#endif
    for (int j = 0; j < NC; j++) {
        float s = vsum(acc[j]);
        for (int64_t kk = k; kk < K; kk++) s = sfma(a[kk], b[j * ldb + kk], s);
        c[j] = finish1(s, ep, &c[j], j);
    }
}

/* C block [m0, m1) x [n0, n1) with R x 4 tiles (R = 4 except at the bottom edge), single columns at the
 * right edge; every tile size is a compile-time constant. */
static void gemm_dot(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float *C, int64_t ldc, const epilogue *ep)
{
    if (m1 - m0 == 1) {
        const float *a = A + m0 * lda;
        float *c = C + m0 * ldc;
        int64_t j = n0;
        for (; j + GC_ROW_NC <= n1; j += GC_ROW_NC) {
            epilogue e = *ep;
            if (e.bias) e.bias += j;
            dot_row(GC_ROW_NC, K, a, B + j * ldb, ldb, c + j, &e);
        }
        for (; j < n1; j++) {
            epilogue e = *ep;
            if (e.bias) e.bias += j;
            dot_row(1, K, a, B + j * ldb, ldb, c + j, &e);
        }
        post_block(ep, 1, n1 - n0, c + n0, ldc, ep->rbias ? ep->rbias + m0 : NULL);
        return;
    }
    for (int64_t i = m0; i < m1; i += 4) {
        const int R = (int)min64(4, m1 - i);
        for (int64_t j = n0; j < n1;) {
            const int NC = n1 - j >= 4 ? 4 : 1;
            epilogue e = *ep;
            if (e.bias) e.bias += j;
            const float *a = A + i * lda, *b = B + j * ldb;
            float *c = C + i * ldc + j;
#define GC_DOT_CASE(r, n) \
    case (r) * 8 + (n): dot_tile((r), (n), K, a, lda, b, ldb, c, ldc, &e); break;
            switch (R * 8 + NC) {
                GC_DOT_CASE(1, 1) GC_DOT_CASE(1, 4) GC_DOT_CASE(2, 1) GC_DOT_CASE(2, 4)
                GC_DOT_CASE(3, 1) GC_DOT_CASE(3, 4) GC_DOT_CASE(4, 1) GC_DOT_CASE(4, 4)
            default: break;
            }
#undef GC_DOT_CASE
            j += NC;
        }
        post_block(ep, R, n1 - n0, C + i * ldc + n0, ldc, ep->rbias ? ep->rbias + i : NULL);
    }
}

/* ------------------------------------------------------------------ axpy path (B row-major, tiny M) */

/* R rows x NV vectors of C columns: C[r][cols] = sum_k op(A)[r][k] * B[k][cols]. Inlined with constant
 * R and NV (R <= 4, NV <= 4). */
static GC_ALWAYS_INLINE void axpy_tile(int R, int NV, int64_t K, view a, const float *b, int64_t ldb, float *c,
                                       int64_t ldc, const epilogue *ep)
{
    gc_vf acc[4][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = vset1(0.0f);
    for (int64_t k = 0; k < K; k++) {
        gc_vf vb[4];
        for (int v = 0; v < NV; v++) vb[v] = vload(b + k * ldb + v * GC_VW);
        for (int r = 0; r < R; r++) {
            const gc_vf va = vset1(a.p[r * a.rs + k * a.cs]);
            for (int v = 0; v < NV; v++) acc[r][v] = vfma(va, vb[v], acc[r][v]);
        }
    }
    const gc_vf valpha = vset1(ep->alpha), vbeta = vset1(ep->beta);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) {
            float *cp = c + r * ldc + v * GC_VW;
            gc_vf x = vfma(valpha, acc[r][v], ep->bias ? vload(ep->bias + v * GC_VW) : vset1(0.0f));
            if (ep->beta != 0.0f) x = vfma(vbeta, vload(cp), x);
            vstore(cp, x);
        }
}

/* C block [m0, m1) x [n0, n1): 4-vector-wide column strips, then 1-vector strips, then scalar columns. */
static void gemm_axpy(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, view a, const float *B,
                      int64_t ldb, float *C, int64_t ldc, const epilogue *ep)
{
    for (int64_t i = m0; i < m1; i += 4) {
        const int R = (int)min64(4, m1 - i);
        const view ai = {a.p + i * a.rs, a.rs, a.cs};
        int64_t j = n0;
        for (; j < n1;) {
            const int NV = n1 - j >= 4 * GC_VW ? 4 : n1 - j >= GC_VW ? 1 : 0;
            if (NV == 0) break;
            epilogue e = *ep;
            if (e.bias) e.bias += j;
            const float *b = B + j;
            float *c = C + i * ldc + j;
#define GC_AXPY_CASE(r, nv) \
    case (r) * 8 + (nv): axpy_tile((r), (nv), K, ai, b, ldb, c, ldc, &e); break;
            switch (R * 8 + NV) {
                GC_AXPY_CASE(1, 1) GC_AXPY_CASE(1, 4) GC_AXPY_CASE(2, 1) GC_AXPY_CASE(2, 4)
                GC_AXPY_CASE(3, 1) GC_AXPY_CASE(3, 4) GC_AXPY_CASE(4, 1) GC_AXPY_CASE(4, 4)
            default: break;
            }
#undef GC_AXPY_CASE
            j += NV * GC_VW;
        }
        /* leftover columns (fewer than one vector) */
        for (int r = 0; r < R; r++)
            for (int64_t jj = j; jj < n1; jj++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++) s = sfma(ai.p[r * a.rs + k * a.cs], B[k * ldb + jj], s);
                float *cp = C + (i + r) * ldc + jj;
                *cp = finish1(s, ep, cp, jj);
            }
        post_block(ep, R, n1 - n0, C + i * ldc + n0, ldc, ep->rbias ? ep->rbias + i : NULL);
    }
}

/* ------------------------------------------------------------------ driver */

/* Split C into tm x tn thread rectangles (tm * tn == T): minimise a rough cost model per thread, the
 * padded micro-tile work plus the packing traffic (B block once per rectangle, A once per NC strip). */
static void choose_grid(int64_t M, int64_t N, int T, int prepacked, int *tm_out, int *tn_out)
{
    double best = -1.0;
    for (int tm = 1; tm <= T; tm++) {
        if (T % tm) continue;
        const int tn = T / tm;
        const int64_t mt = ceil_div(ceil_div(M, tm), GC_MR) * GC_MR;
        const int64_t nt = ceil_div(ceil_div(N, tn), GC_NR) * GC_NR;
        if ((tm > 1 && mt * (tm - 1) >= M) || (tn > 1 && nt * (tn - 1) >= N)) continue; /* empty slices */
        const double fma_cost = (double)mt * (double)nt / (2.0 * GC_VW);
        /* packed B: nothing to pack for B, but each thread reads its B columns from memory; A is packed
         * once per GC_NC_PRE strip */
        const double pack_cost = prepacked ? 0.25 * (double)nt + 0.5 * (double)mt * (double)ceil_div(nt, GC_NC_PRE)
                                           : 0.5 * ((double)nt + (double)mt * (double)ceil_div(nt, GC_NC));
        const double cost = fma_cost + pack_cost;
        if (best < 0 || cost < best) {
            best = cost;
            *tm_out = tm;
            *tn_out = tn;
        }
    }
    if (best < 0) { /* nothing divides cleanly: split the longer side */
        *tm_out = M >= N ? T : 1;
        *tn_out = M >= N ? 1 : T;
    }
}

/* Slice t of n equal parts of [0, len), aligned to multiples of align. */
static void slice(int64_t len, int64_t parts, int64_t t, int64_t align, int64_t *lo, int64_t *hi)
{
    const int64_t step = ceil_div(ceil_div(len, parts), align) * align;
    *lo = min64(len, t * step);
    *hi = min64(len, *lo + step);
}

/* One gc_sgemm call, cut into T slices of C that threads run independently. */
enum gemm_path { PATH_PACKED, PATH_DOT, PATH_AXPY };
typedef struct gemm_job {
    int path;
    int64_t M, N, K;
    view a, b;
    const float *bp; /* packed op(B) (gc_sgemm_pack_b), or NULL */
    float *C;
    int64_t ldc;
    epilogue ep;
    int tm, tn;  /* packed path: thread grid */
    int split_n; /* dot path: slices are column ranges (else row ranges) */
    int T;
} gemm_job;

static void run_slice(const gemm_job *g, int t)
{
    int64_t lo, hi;
    switch (g->path) {
    case PATH_DOT:
        /* op(A) rows and op(B) columns are contiguous, a.rs / b.cs apart */
        if (g->split_n) {
            slice(g->N, g->T, t, 4, &lo, &hi);
            if (lo < hi) gemm_dot(0, g->M, lo, hi, g->K, g->a.p, g->a.rs, g->b.p, g->b.cs, g->C, g->ldc, &g->ep);
        } else {
            slice(g->M, g->T, t, 4, &lo, &hi);
            if (lo < hi) gemm_dot(lo, hi, 0, g->N, g->K, g->a.p, g->a.rs, g->b.p, g->b.cs, g->C, g->ldc, &g->ep);
        }
        break;
    case PATH_AXPY:
        slice(g->N, g->T, t, GC_VW, &lo, &hi);
        if (lo < hi) gemm_axpy(0, g->M, lo, hi, g->K, g->a, g->b.p, g->b.rs, g->C, g->ldc, &g->ep);
        break;
    default: {
        int64_t m0, m1, n0, n1;
        slice(g->M, g->tm, t / g->tn, GC_MR, &m0, &m1);
        slice(g->N, g->tn, t % g->tn, GC_NR, &n0, &n1);
        if (m0 >= m1 || n0 >= n1) break;
        const view at = {g->a.p + m0 * g->a.rs, g->a.rs, g->a.cs};
        const view bt = {g->b.p + n0 * g->b.cs, g->b.rs, g->b.cs};
        epilogue e = g->ep;
        if (e.bias) e.bias += n0;
        if (e.rbias) e.rbias += m0;
        if (g->bp)
            gemm_prepacked(m1 - m0, n1 - n0, g->K, at, g->bp + n0 * g->K, g->C + m0 * g->ldc + n0, g->ldc, &e);
        else
            gemm_packed(m1 - m0, n1 - n0, g->K, at, bt, g->C + m0 * g->ldc + n0, g->ldc, &e);
        break;
    }
    }
}

static void slice_task(void *g, int64_t t)
{
    run_slice(g, (int)t);
}

static void sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, const float *Bp, float beta, float *C, int64_t ldc,
                  const float *bias, const gc_epilogue *post, int nthreads)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc, bias, (double)M * N > 65536 ? nthreads : 1);
        const epilogue e = {alpha, beta, bias, post, C, post ? post->row_bias : NULL};
        post_block(&e, M, N, C, ldc, e.rbias);
        return;
    }
    gemm_job g = {.M = M, .N = N, .K = K, .C = C, .ldc = ldc,
                  .ep = {alpha, beta, bias, post, C, post ? post->row_bias : NULL}, .tm = 1, .tn = 1};
    g.a = transA ? (view){A, 1, lda} : (view){A, lda, 1};
    g.b = transB ? (view){B, 1, ldb} : (view){B, ldb, 1};

    /* threads only pay off above ~0.1 M multiply-adds */
    int T = nthreads < 1 ? 1 : nthreads;
    if ((double)M * (double)N * (double)K < 131072.0) T = 1;

    const int64_t short_side = min64(M, N);
    if (g.a.cs == 1 && g.b.rs == 1 && (short_side <= 4 || (short_side <= 16 && K >= 256))) {
        /* dot path (packing would cost about as much as the product), slices of the long side (at
         * least 16 rows / columns each) */
        g.path = PATH_DOT;
        g.split_n = N >= M;
        T = (int)min64(T, max64(1, (g.split_n ? N : M) / 16));
    } else if (!transB && M <= 4) {
        /* axpy path, column slices of at least 4 vectors */
        g.path = PATH_AXPY;
        T = (int)min64(T, max64(1, N / (4 * GC_VW)));
    } else {
        /* packed path, a tm x tn grid of C rectangles */
        g.path = PATH_PACKED;
        g.bp = Bp;
        if (T > 1) choose_grid(M, N, T, Bp != NULL, &g.tm, &g.tn);
        T = g.tm * g.tn;
    }
    g.T = T;

    if (T == 1) {
        run_slice(&g, 0);
        return;
    }
    gc_parallel_for(T, T, slice_task, &g);
}

void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, int nthreads)
{
    sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, NULL, beta, C, ldc, bias, NULL, nthreads);
}

void gc_sgemm_ep(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float *C, int64_t ldc, const float *bias, const gc_epilogue *ep,
                 int nthreads)
{
    sgemm(transA, transB, M, N, K, 1.0f, A, lda, B, ldb, NULL, 0.0f, C, ldc, bias, ep, nthreads);
}

size_t gc_sgemm_pack_b_floats(int64_t N, int64_t K)
{
    return N > 0 && K > 0 ? (size_t)(ceil_div(N, GC_NR) * GC_NR) * (size_t)K : 0;
}

void gc_sgemm_pack_b(int transB, int64_t N, int64_t K, const float *B, int64_t ldb, float *Bp)
{
    if (N <= 0 || K <= 0) return;
    pack_b(K, N, transB ? (view){B, 1, ldb} : (view){B, ldb, 1}, Bp);
}

void gc_sgemm_ep_packed(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, const float *Bp, float *C, int64_t ldc, const float *bias,
                        const gc_epilogue *ep, int nthreads)
{
    sgemm(transA, transB, M, N, K, 1.0f, A, lda, B, ldb, Bp, 0.0f, C, ldc, bias, ep, nthreads);
}

/* one product of a batch, single-threaded (gc_sgemm_batched's threads take whole products) */
typedef struct batch_job {
    int transA, transB;
    int64_t M, N, K;
    const float *A;
    int64_t lda, strideA;
    const float *B;
    int64_t ldb, strideB;
    float *C;
    int64_t ldc, strideC;
    const float *bias;
} batch_job;

static void batch_item(void *vj, int64_t i)
{
    const batch_job *j = vj;
    gc_sgemm(j->transA, j->transB, j->M, j->N, j->K, 1.0f, j->A + i * j->strideA, j->lda, j->B + i * j->strideB,
             j->ldb, 0.0f, j->C + i * j->strideC, j->ldc, j->bias, 1);
}

void gc_sgemm_batched(int transA, int transB, int64_t batch, int64_t M, int64_t N, int64_t K, const float *A,
                      int64_t lda, int64_t strideA, const float *B, int64_t ldb, int64_t strideB, float *C,
                      int64_t ldc, int64_t strideC, const float *bias, int nthreads)
{
    if (batch <= 0 || M <= 0 || N <= 0) return;
    /* Many small products: one product per thread at a time. Few or large ones: threads inside each. */
    const double work = (double)M * (double)N * (double)K;
    const int per_item = nthreads > 1 && batch >= nthreads && (work < 4.0e6 || batch % nthreads == 0);
    if (per_item) {
        const batch_job job = {transA, transB, M, N, K, A, lda, strideA, B, ldb, strideB, C, ldc, strideC, bias};
        gc_parallel_for(batch, nthreads, batch_item, (void *)&job);
    } else {
        for (int64_t i = 0; i < batch; i++)
            gc_sgemm(transA, transB, M, N, K, 1.0f, A + i * strideA, lda, B + i * strideB, ldb, 0.0f,
                     C + i * strideC, ldc, bias, nthreads);
    }
}

/* graphc runtime: scaled dot-product attention (PyTorch semantics), flash style.
 *
 *     s_j = (q_i . k_j) * scale + mask[b, h, i, j]   for the keys j the row may see (j <= i when causal)
 *     out_i = sum_j softmax(s)_j * v_j
 *
 * The scores never exist as a [Tq, Tk] matrix. A task takes one (batch, head) pair and a chunk of its
 * query rows; it walks the keys in blocks of KB: packs K's block transposed ([D][KB], so a score tile
 * is broadcast-q times key vectors) and V's block (rows padded to whole vectors), then for each block
 * of QB query rows computes the QB x KB scores with a register-blocked micro-kernel, folds them into
 * each row's running maximum m and sum l (online softmax: when m grows, the row's sum and output so
 * far are scaled by e^(m_old - m_new)), and adds P V to the row's output with a second micro-kernel.
 * After the last block the output rows are divided by l and written through the output strides.
 *
 * q, k, v and out are read and written through their (batch, head, row) strides with the last dim
 * contiguous, so the views a fused qkv projection gives ([B, T, 3, H, D] permuted) need no copies.
 * Query blocks are aligned to multiples of QB and key blocks to multiples of KB whatever the chunking,
 * and every score and output element is summed in a fixed order, so a row's result depends on nothing
 * but its inputs: not on the thread count, the chunking or which thread ran it.
 *
 * A row whose every visible score is -inf (fully masked) produces zeros, as PyTorch 2.x's
 * scaled_dot_product_attention does (a NaN would poison every later layer of a padded batch).
 * With no keys at all (Tk == 0) the output is zero, the value of an empty sum.
 */
#include <math.h>
#include <string.h>

#include "graphc_rt.h"
#include "gc_simd.h"
#include "gc_vmath.h"

#define QB 6 /* query rows per micro-tile */
#if GC_VW == 16 /* 32 vector registers: 6 x 4 accumulators */
#define NVK 4   /* vectors of keys per QK micro-tile */
#define NVO 4   /* vectors of output columns per PV micro-tile */
#else           /* 16 registers: 6 x 2 */
#define NVK 2
#define NVO 2
#endif
#define KW (NVK * GC_VW) /* keys per QK micro-tile */
#define SROW 128 /* floats between the score rows of a block (the largest key block: constant offsets) */
#define CHUNK_BLOCKS 32       /* at most this many query blocks per task (bounds the running state) */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* keys per block (at most SROW): the packed K^T and V blocks stay within about 64 KiB */
static int64_t key_block(int64_t d, int64_t dv)
{
    return max64(d, dv) <= 64 ? 128 : 64;
}

/* the layout of one thread's scratch (floats, each part a multiple of 16 so parts start 64 bytes apart) */
typedef struct layout {
    int64_t kb, dvp, chunk_rows;
    int64_t qp, kt, vp, s, o, m, l, size;
} layout;

static layout make_layout(int64_t tq, int64_t d, int64_t dv)
{
    layout L;
    L.kb = key_block(d, dv);
    L.dvp = round_up(dv > 0 ? dv : 1, GC_VW);
    L.chunk_rows = min64(round_up(tq, QB), (int64_t)QB * CHUNK_BLOCKS);
    int64_t at = 0;
    L.qp = at, at += round_up(QB * max64(d, 1), 16);
    L.kt = at, at += round_up(max64(d, 1) * L.kb, 16);
    L.vp = at, at += round_up(L.kb * L.dvp, 16);
    L.s = at, at += QB * SROW;
    L.o = at, at += round_up(L.chunk_rows * L.dvp, 16);
    L.m = at, at += round_up(L.chunk_rows, 16);
    L.l = at, at += round_up(L.chunk_rows, 16);
    L.size = at;
    return L;
}

size_t gc_sdpa_work_floats(int64_t tq, int64_t tk, int64_t d, int64_t dv, int nthreads)
{
    if (tk <= 0 || tq <= 0)
        return 0;
    if (nthreads < 1)
        nthreads = 1;
    return (size_t)nthreads * (size_t)make_layout(tq, d, dv).size;
}

/* ------------------------------------------------------------------ micro-kernels */

/* s[r][j0 .. j0 + NVC vectors) = sum_c qp[r][c] * kt[c][j0 ..] for the QB rows of the block */
static GC_ALWAYS_INLINE void qk_tile(int NVC, int64_t d, const float *restrict qp, const float *restrict kt,
                                     int64_t kb, float *restrict s, int64_t j0)
{
    gc_vf acc[QB][NVK];
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NVC; v++)
            acc[r][v] = vset1(0.0f);
    for (int64_t c = 0; c < d; c++) {
        gc_vf b[NVK];
        for (int v = 0; v < NVC; v++)
            b[v] = vload(kt + c * kb + j0 + v * GC_VW);
        for (int r = 0; r < QB; r++) {
            const gc_vf a = vset1(qp[r * d + c]);
            for (int v = 0; v < NVC; v++)
                acc[r][v] = vfma(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NVC; v++)
            vstore(s + r * SROW + j0 + v * GC_VW, acc[r][v]);
}

/* the scores of keys [0, n) (n a multiple of GC_VW): whole tiles of NVK vectors, then one narrower tile */
static void qk_block(int64_t d, const float *restrict qp, const float *restrict kt, int64_t kb, float *restrict s,
                     int64_t n)
{
    int64_t j = 0;
    for (; j + KW <= n; j += KW)
        qk_tile(NVK, d, qp, kt, kb, s, j);
    switch ((n - j) / GC_VW) {
#if NVK > 3
    case 3:
        qk_tile(3, d, qp, kt, kb, s, j);
        break;
#endif
#if NVK > 2
    case 2:
        qk_tile(2, d, qp, kt, kb, s, j);
        break;
#endif
    case 1:
        qk_tile(1, d, qp, kt, kb, s, j);
        break;
    default:
        break;
    }
}

/* o[r][c0 .. c0 + NVC vectors) += sum_{j < nk} p[r][j] * vb[j][c0 ..] for the QB rows of the block
 * (vb's rows vs floats apart) */
static GC_ALWAYS_INLINE void pv_tile(int NVC, int64_t nk, const float *restrict p,
                                     const float *restrict vb, int64_t vs, float *restrict o, int64_t dvp, int64_t c0)
{
    gc_vf acc[QB][NVO];
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NVC; v++)
            acc[r][v] = vload(o + r * dvp + c0 + v * GC_VW);
    for (int64_t j = 0; j < nk; j++) {
        gc_vf b[NVO];
        for (int v = 0; v < NVC; v++)
            b[v] = vload(vb + j * vs + c0 + v * GC_VW);
        for (int r = 0; r < QB; r++) {
            const gc_vf a = vset1(p[r * SROW + j]);
            for (int v = 0; v < NVC; v++)
                acc[r][v] = vfma(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NVC; v++)
            vstore(o + r * dvp + c0 + v * GC_VW, acc[r][v]);
}

/* o[r][0 .. dvp) += P V for the block: tiles of NVO vectors, then one narrower tile */
static void pv_block(int64_t nk, const float *restrict p, const float *restrict vb, int64_t vs,
                     float *restrict o, int64_t dvp)
{
    int64_t c = 0;
    for (; c + NVO * GC_VW <= dvp; c += NVO * GC_VW)
        pv_tile(NVO, nk, p, vb, vs, o, dvp, c);
    switch ((dvp - c) / GC_VW) {
#if NVO > 3
    case 3:
        pv_tile(3, nk, p, vb, vs, o, dvp, c);
        break;
#endif
#if NVO > 2
    case 2:
        pv_tile(2, nk, p, vb, vs, o, dvp, c);
        break;
#endif
    case 1:
        pv_tile(1, nk, p, vb, vs, o, dvp, c);
        break;
    default:
        break;
    }
}

/* horizontal max / sum of a vector, by halves (a fixed order: the same bits on every call) */
#if GC_VW == 16
#define GC_HALVES(x, y, OP)                                                                                  \
    y = __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7), x = OP(x, y);  \
    y = __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11), x = OP(x, y);  \
    y = __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13), x = OP(x, y);  \
    y = __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14), x = OP(x, y)
#elif GC_VW == 8
#define GC_HALVES(x, y, OP)                                                                                  \
    y = __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3), x = OP(x, y);                               \
    y = __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5), x = OP(x, y);                               \
    y = __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6), x = OP(x, y)
#elif GC_VW == 4
#define GC_HALVES(x, y, OP)                                                                                  \
    y = __builtin_shufflevector(x, x, 2, 3, 0, 1), x = OP(x, y);                                           \
    y = __builtin_shufflevector(x, x, 1, 0, 3, 2), x = OP(x, y)
#endif
#define GC_OP_MAX(a, b) gc_vmax(a, b)
#define GC_OP_ADD(a, b) ((a) + (b))

static inline float hmax(gc_vf x)
{
#if GC_VW == 1
    return x;
#else
    gc_vf y;
    GC_HALVES(x, y, GC_OP_MAX);
    return x[0];
#endif
}

static inline float hsum(gc_vf x)
{
#if GC_VW == 1
    return x;
#else
    gc_vf y;
    GC_HALVES(x, y, GC_OP_ADD);
    return x[0];
#endif
}

static inline gc_vf vmax2(gc_vf a, gc_vf b)
{
#if GC_VW == 1
    return a > b ? a : b;
#else
    return gc_vmax(a, b);
#endif
}

/* e^x for the softmax's x = s - max <= 0 (or -inf: exactly 0), cheaper than gc_vexp because nothing
 * overflows: x = n ln2 + r (Cody-Waite, |r| <= ln2/2), e^r by its degree-7 Taylor polynomial (truncation
 * below 6e-9), 2^n built straight from the exponent bits, within 2e-7 relative (the sdpa tests' sweeps).
 * Below -87.3 the result is 0: such a term is under 2^-126 of the row's largest (which is 1). A NaN
 * argument gives NaN (a NaN score the block's maximum missed poisons the row's sum and output). */
static inline gc_vf vexp_nonpos(gc_vf x)
{
#if GC_VW == 1
    return expf(x);
#else
    const gc_vf lo = vset1(-87.3f);
    const gc_vi32 under = x < lo;
    const gc_vf xc = gc_vmax(lo, x); /* a NaN stays NaN (and so does the result) */
    const gc_vf magic = vset1(12582912.0f); /* 1.5 * 2^23: t's low mantissa bits hold n */
    const gc_vf t = vfma(xc, vset1(1.44269504088896341f), magic);
    const gc_vf n = t - magic;
    gc_vf r = vfma(n, vset1(-0.693145751953125f), xc);
    r = vfma(n, vset1(-1.428606765330187e-06f), r);
    gc_vf p = vset1(1.0f / 5040.0f);
    p = vfma(p, r, vset1(1.0f / 720.0f));
    p = vfma(p, r, vset1(1.0f / 120.0f));
    p = vfma(p, r, vset1(1.0f / 24.0f));
    p = vfma(p, r, vset1(1.0f / 6.0f));
    p = vfma(p, r, vset1(0.5f));
    p = vfma(p, r, vset1(1.0f));
    p = vfma(p, r, vset1(1.0f));
    /* 2^n for n in [-126, 0]: (n + 127) << 23, and t's bits shifted by 23 are n << 23 (mod 2^32) */
    const gc_vf scale = (gc_vf)(((gc_vi32)t << 23) + (127 << 23));
    return (gc_vf)((gc_vi32)(p * scale) & ~under);
#endif
}

/* ------------------------------------------------------------------ packing */

/* r[0 .. GC_VW) (the rows of a GC_VW x GC_VW tile) transposed in registers: for h = GC_VW / 2 .. 1, rows
 * i and i + h (bit h of i clear) trade the h x h off-diagonal blocks of their 2h x 2h block; lo and hi
 * pick the lanes of the new rows i and i + h from (r[i], r[i + h]) */
#define TSTEP(h, lo, hi)                                                                                   \
    for (int i = 0; i < GC_VW; i++)                                                                        \
        if (!(i & (h))) {                                                                                  \
            const gc_vf a = r[i], b = r[i + (h)];                                                          \
            r[i] = __builtin_shufflevector(a, b, lo);                                                      \
            r[i + (h)] = __builtin_shufflevector(a, b, hi);                                                \
        }
#if GC_VW == 16
#define TLO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define THI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define TLO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define THI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define TLO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define THI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define TLO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define THI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#elif GC_VW == 8
#define TLO4 0, 1, 2, 3, 8, 9, 10, 11
#define THI4 4, 5, 6, 7, 12, 13, 14, 15
#define TLO2 0, 1, 8, 9, 4, 5, 12, 13
#define THI2 2, 3, 10, 11, 6, 7, 14, 15
#define TLO1 0, 8, 2, 10, 4, 12, 6, 14
#define THI1 1, 9, 3, 11, 5, 13, 7, 15
#elif GC_VW == 4
#define TLO2 0, 1, 4, 5
#define THI2 2, 3, 6, 7
#define TLO1 0, 4, 2, 6
#define THI1 1, 5, 3, 7
#endif

#if GC_VW > 1
static GC_ALWAYS_INLINE void transpose_tile(gc_vf r[GC_VW])
{
#if GC_VW == 16
    TSTEP(8, TLO8, THI8)
#endif
#if GC_VW >= 8
    TSTEP(4, TLO4, THI4)
#endif
    TSTEP(2, TLO2, THI2)
    TSTEP(1, TLO1, THI1)
}
#endif

/* kt[c][j] = k[j][c] for the block's nk keys (rows ks floats apart; kt's rows kb apart), zero lanes from
 * nk to nkp */
static void pack_kt(const float *restrict k, int64_t ks, int64_t nk, int64_t nkp, int64_t d, float *restrict kt,
                    int64_t kb)
{
    int64_t j = 0;
#if GC_VW > 1
    for (; j + GC_VW <= nk; j += GC_VW) {
        int64_t c = 0;
        for (; c + GC_VW <= d; c += GC_VW) {
            gc_vf r[GC_VW];
            for (int i = 0; i < GC_VW; i++)
                r[i] = vload(k + (j + i) * ks + c);
            transpose_tile(r);
            for (int i = 0; i < GC_VW; i++)
                vstore(kt + (c + i) * kb + j, r[i]);
        }
        for (; c < d; c++)
            for (int i = 0; i < GC_VW; i++)
                kt[c * kb + j + i] = k[(j + i) * ks + c];
    }
#endif
    for (; j < nk; j++)
        for (int64_t c = 0; c < d; c++)
            kt[c * kb + j] = k[j * ks + c];
    for (int64_t c = 0; c < d; c++)
        for (j = nk; j < nkp; j++)
            kt[c * kb + j] = 0.0f;
}

/* ------------------------------------------------------------------ one task */

typedef struct job {
    const gc_sdpa_params *p;
    layout L;
    float *work;
    int64_t chunks, chunk; /* query chunks per head and rows per chunk (a multiple of QB) */
    int64_t items, next;
} job;

/* One row's scores of the current key block (lim visible keys, the rest of the nkp lanes are set to
 * -inf) folded into its running state; the row of s becomes its probabilities (0 where masked). */
static void softmax_update(float *restrict s, int64_t lim, int64_t nkp, float *m, float *l, float *restrict o,
                           int64_t dvp)
{
#if GC_VW > 1
    gc_vi32 lane;
    for (int i = 0; i < GC_VW; i++)
        lane[i] = i;
    for (int64_t j = lim / GC_VW * GC_VW; j < nkp; j += GC_VW) {
        const gc_vi32 keep = lane < (gc_vi32){0} + (int32_t)(lim - j);
        vstore(s + j, gc_vselect(keep, vload(s + j), vset1(-INFINITY)));
    }
#else
    for (int64_t j = lim; j < nkp; j++)
        s[j] = -INFINITY;
#endif
    /* the block's maximum (a NaN score may or may not make it NaN: then the row is NaN from here on, and
     * if not, its exponential is NaN) */
    gc_vf vm = vset1(-INFINITY);
    for (int64_t j = 0; j < nkp; j += GC_VW)
        vm = vmax2(vm, vload(s + j));
    const float mb = hmax(vm);
    const float m_old = *m;
    float m_new = m_old > mb ? m_old : mb;
    if (m_new == -INFINITY) { /* nothing visible so far, unless a NaN hid from the maximum */
        int nan = 0;
        for (int64_t j = 0; j < nkp; j++)
            nan |= s[j] != s[j];
        if (!nan) { /* the row's state stays empty */
            memset(s, 0, (size_t)nkp * sizeof(float));
            return;
        }
        m_new = NAN;
    }
    const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
    float bsum;
    if (m_new != m_new || m_new == INFINITY) { /* a NaN or +inf score: the row is NaN from here on, as
                                                   * the reference's e^(inf - inf) makes it */
        for (int64_t j = 0; j < nkp; j++)
            s[j] = NAN;
        bsum = NAN;
    } else {
        const gc_vf vmn = vset1(m_new);
        gc_vf sum = vset1(0.0f);
        for (int64_t j = 0; j < nkp; j += GC_VW) {
            const gc_vf e = vexp_nonpos(vload(s + j) - vmn);
            vstore(s + j, e);
            sum = sum + e;
        }
        bsum = hsum(sum);
    }
    *l = *l * alpha + bsum;
    *m = m_new;
    if (alpha != 1.0f && m_old != -INFINITY) { /* (a row with no visible key so far has a zero output) */
        const gc_vf va = vset1(alpha);
        for (int64_t c = 0; c < dvp; c += GC_VW)
            vstore(o + c, vload(o + c) * va);
    }
}

static void run_item(const job *J, float *slot, int64_t item)
{
    const gc_sdpa_params *p = J->p;
    const layout *L = &J->L;
    const int64_t bh = item / J->chunks, chunk = item % J->chunks;
    const int64_t bi = bh / p->h, hi = bh % p->h;
    const int64_t r0 = chunk * J->chunk, r1 = min64(p->tq, r0 + J->chunk);
    if (r0 >= r1)
        return;
    const int64_t d = p->d, dv = p->dv, dvp = L->dvp, kb = L->kb;
    const float *q = p->q + bi * p->q_sb + hi * p->q_sh;
    const float *k = p->k + bi * p->k_sb + hi * p->k_sh;
    const float *v = p->v + bi * p->v_sb + hi * p->v_sh;
    float *out = p->out + bi * p->o_sb + hi * p->o_sh;
    const float *mask = p->mask ? p->mask + bi * p->m_sb + hi * p->m_sh : NULL;
    float *qp = slot + L->qp, *kt = slot + L->kt, *vp = slot + L->vp, *s = slot + L->s;
    float *o = slot + L->o, *m = slot + L->m, *l = slot + L->l;
    const float scale = p->scale;

    const int64_t rows = round_up(r1 - r0, QB);
    memset(o, 0, (size_t)(rows * dvp) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    /* V's rows are read in place when they are whole vectors, else packed with zero columns to dvp */
    const int in_place = dv == dvp;
    /* keys any row of the chunk sees */
    const int64_t nk_all = p->causal ? min64(p->tk, r1) : p->tk;
    for (int64_t j0 = 0; j0 < nk_all; j0 += kb) {
        const int64_t nk = min64(kb, nk_all - j0), nkp = round_up(nk, GC_VW);
        /* pack K^T [d][kb] (zero lanes past nk) and, unless read in place, V [nk][dvp] */
        pack_kt(k + j0 * p->k_st, p->k_st, nk, nkp, d, kt, kb);
        const float *vb = v + j0 * p->v_st;
        int64_t vs = p->v_st;
        if (!in_place) {
            for (int64_t j = 0; j < nk; j++) {
                memcpy(vp + j * dvp, v + (j0 + j) * p->v_st, (size_t)dv * sizeof(float));
                for (int64_t c = dv; c < dvp; c++)
                    vp[j * dvp + c] = 0.0f;
            }
            vb = vp, vs = dvp;
        }

        for (int64_t i0 = r0; i0 < r1; i0 += QB) {
            const int64_t nr = min64(QB, r1 - i0);
            /* keys this query block sees in the key block */
            const int64_t blk = p->causal ? min64(nk, i0 + nr - j0) : nk;
            if (blk <= 0)
                continue; /* causal: the block's rows see none of these keys (later rows may) */
            const int64_t blkp = round_up(blk, GC_VW);
            /* the block's query rows times the scale (rows past the chunk are zeros: their scores are
             * computed and dropped) */
            for (int64_t r = 0; r < nr; r++) {
                const float *qi = q + (i0 + r) * p->q_st;
                for (int64_t c = 0; c < d; c++)
                    qp[r * d + c] = qi[c] * scale;
            }
            if (nr < QB)
                memset(qp + nr * d, 0, (size_t)((QB - nr) * d) * sizeof(float));
            qk_block(d, qp, kt, kb, s, blkp);
            float *ob = o + (i0 - r0) * dvp;
            for (int64_t r = 0; r < nr; r++) {
                float *sr = s + r * SROW;
                const int64_t i = i0 + r;
                const int64_t lim = p->causal ? max64(0, min64(blk, i + 1 - j0)) : blk;
                if (mask) {
                    const float *mr = mask + i * p->m_sq + j0 * p->m_sk;
                    if (p->m_sk == 1) {
                        int64_t j = 0;
                        for (; j + GC_VW <= lim; j += GC_VW)
                            vstore(sr + j, vload(sr + j) + vload(mr + j));
                        for (; j < lim; j++)
                            sr[j] += mr[j];
                    } else {
                        for (int64_t j = 0; j < lim; j++)
                            sr[j] += mr[j * p->m_sk];
                    }
                }
                softmax_update(sr, lim, blkp, &m[i - r0], &l[i - r0], ob + r * dvp, dvp);
            }
            pv_block(blk, s, vb, vs, ob, dvp);
        }
    }
    for (int64_t i = r0; i < r1; i++) {
        const float li = l[i - r0];
        const float inv = li == 0.0f ? 0.0f : 1.0f / li; /* l == 0: fully masked, zeros */
        const float *oi = o + (i - r0) * dvp;
        float *dst = out + i * p->o_st;
        for (int64_t c = 0; c < dv; c++)
            dst[c] = oi[c] * inv;
    }
}

static void slot_task(void *arg, int64_t t)
{
    job *J = arg;
    float *slot = J->work + t * J->L.size;
    int64_t it;
    while ((it = __atomic_fetch_add(&J->next, 1, __ATOMIC_RELAXED)) < J->items)
        run_item(J, slot, it);
}

void gc_sdpa(const gc_sdpa_params *p, float *work, int nthreads)
{
    if (p->b <= 0 || p->h <= 0 || p->tq <= 0 || p->dv <= 0 || p->d < 0)
        return;
    if (p->tk <= 0) {
        for (int64_t bi = 0; bi < p->b; bi++)
            for (int64_t hi = 0; hi < p->h; hi++)
                for (int64_t i = 0; i < p->tq; i++)
                    memset(p->out + bi * p->o_sb + hi * p->o_sh + i * p->o_st, 0, (size_t)p->dv * sizeof(float));
        return;
    }
    if (nthreads < 1)
        nthreads = 1;
    job J = {.p = p, .L = make_layout(p->tq, p->d, p->dv), .work = work};
    const int64_t bh = p->b * p->h, qblocks = (p->tq + QB - 1) / QB;
    /* chunks per head: at most CHUNK_BLOCKS query blocks each, and enough tasks for the threads */
    int64_t chunks = (qblocks + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS;
    if (nthreads > 1)
        chunks = max64(chunks, min64(qblocks, (3 * nthreads + bh - 1) / bh));
    J.chunk = (qblocks + chunks - 1) / chunks * QB;
    J.chunks = (p->tq + J.chunk - 1) / J.chunk;
    J.items = bh * J.chunks;
    const double flops = 2.0 * (double)bh * (double)p->tq * (double)p->tk * (double)(p->d + p->dv);
    int T = flops < 2.0e5 ? 1 : nthreads;
    if (T > J.items)
        T = (int)J.items;
    if (T == 1) {
        for (int64_t it = 0; it < J.items; it++)
            run_item(&J, work, it);
        return;
    }
    gc_parallel_for(T, T, slot_task, &J);
}

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

#define QB 6                  /* query rows per micro-tile */
#define NV 2                  /* vectors of keys (QK) or of output columns (PV) per micro-tile */
#define KW (NV * GC_VW)       /* keys per QK micro-tile */
#define CHUNK_BLOCKS 32       /* at most this many query blocks per task (bounds the running state) */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* keys per block: the packed K^T and V blocks stay within about 64 KiB */
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
    L.s = at, at += round_up(QB * L.kb, 16);
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

/* s[r][j0 .. j0 + KW) = sum_d qp[r][d] * kt[d][j0 ..] for the QB rows of the block */
static GC_ALWAYS_INLINE void qk_tile(int64_t d, const float *restrict qp, const float *restrict kt, int64_t kb,
                                     float *restrict s, int64_t j0)
{
    gc_vf acc[QB][NV];
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = vset1(0.0f);
    for (int64_t c = 0; c < d; c++) {
        gc_vf b[NV];
        for (int v = 0; v < NV; v++)
            b[v] = vload(kt + c * kb + j0 + v * GC_VW);
        for (int r = 0; r < QB; r++) {
            const gc_vf a = vset1(qp[r * d + c]);
            for (int v = 0; v < NV; v++)
                acc[r][v] = vfma(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NV; v++)
            vstore(s + r * kb + j0 + v * GC_VW, acc[r][v]);
}

/* o[r][c0 .. c0 + NVC vectors) += sum_{j < nk} p[r][j] * vp[j][c0 ..] for the QB rows of the block */
static GC_ALWAYS_INLINE void pv_tile(int NVC, int64_t nk, const float *restrict p, int64_t kb,
                                     const float *restrict vp, int64_t dvp, float *restrict o, int64_t c0)
{
    gc_vf acc[QB][NV];
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NVC; v++)
            acc[r][v] = vload(o + r * dvp + c0 + v * GC_VW);
    for (int64_t j = 0; j < nk; j++) {
        gc_vf b[NV];
        for (int v = 0; v < NVC; v++)
            b[v] = vload(vp + j * dvp + c0 + v * GC_VW);
        for (int r = 0; r < QB; r++) {
            const gc_vf a = vset1(p[r * kb + j]);
            for (int v = 0; v < NVC; v++)
                acc[r][v] = vfma(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < QB; r++)
        for (int v = 0; v < NVC; v++)
            vstore(o + r * dvp + c0 + v * GC_VW, acc[r][v]);
}

static inline float hmax(gc_vf x)
{
#if GC_VW == 1
    return x;
#else
    float m = x[0];
    for (int i = 1; i < GC_VW; i++)
        m = x[i] > m ? x[i] : m;
    return m;
#endif
}

static inline float hsum(gc_vf x)
{
#if GC_VW == 1
    return x;
#else
    float s = 0.0f;
    for (int i = 0; i < GC_VW; i++)
        s += x[i];
    return s;
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
 * argument is not seen here (the caller takes NaN and +inf maxima apart). */
static inline gc_vf vexp_nonpos(gc_vf x)
{
#if GC_VW == 1
    return expf(x);
#else
    const gc_vf lo = vset1(-87.3f);
    const gc_vi32 under = x < lo;
    const gc_vf xc = gc_vmax(x, lo);
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
    for (int64_t j = lim; j < nkp; j++)
        s[j] = -INFINITY;
    /* the block's maximum; a NaN score makes it NaN (the row's output then is NaN, as PyTorch's) */
    gc_vf vm = vset1(-INFINITY);
#if GC_VW > 1
    gc_vi32 nan = {0};
#else
    int nan = 0;
#endif
    for (int64_t j = 0; j < nkp; j += GC_VW) {
        const gc_vf x = vload(s + j);
        vm = vmax2(vm, x);
        nan |= x != x;
    }
    float mb = hmax(vm);
#if GC_VW > 1
    for (int i = 0; i < GC_VW; i++)
        if (nan[i])
            mb = NAN;
#else
    if (nan)
        mb = NAN;
#endif
    const float m_old = *m;
    const float m_new = m_old > mb ? m_old : mb;
    if (m_new == -INFINITY) { /* nothing visible so far: the row's state stays empty */
        memset(s, 0, (size_t)nkp * sizeof(float));
        return;
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
    if (alpha != 1.0f) {
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

    const int64_t rows = round_up(r1 - r0, QB);
    memset(o, 0, (size_t)(rows * dvp) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    /* keys any row of the chunk sees */
    const int64_t nk_all = p->causal ? min64(p->tk, r1) : p->tk;
    for (int64_t j0 = 0; j0 < nk_all; j0 += kb) {
        const int64_t nk = min64(kb, nk_all - j0), nkp = round_up(nk, KW);
        /* pack K^T [d][kb] (zero lanes past nk) and V [nk][dvp] (zero columns past dv) */
        for (int64_t j = 0; j < nk; j++) {
            const float *kj = k + (j0 + j) * p->k_st;
            for (int64_t c = 0; c < d; c++)
                kt[c * kb + j] = kj[c];
            memcpy(vp + j * dvp, v + (j0 + j) * p->v_st, (size_t)dv * sizeof(float));
            for (int64_t c = dv; c < dvp; c++)
                vp[j * dvp + c] = 0.0f;
        }
        for (int64_t c = 0; c < d; c++)
            for (int64_t j = nk; j < nkp; j++)
                kt[c * kb + j] = 0.0f;

        for (int64_t i0 = r0; i0 < r1; i0 += QB) {
            const int64_t nr = min64(QB, r1 - i0);
            /* keys this query block sees in the key block */
            const int64_t blk = p->causal ? min64(nk, i0 + nr - j0) : nk;
            if (blk <= 0)
                continue; /* causal: the block's rows see none of these keys (later rows may) */
            const int64_t blkp = round_up(blk, KW);
            for (int64_t r = 0; r < QB; r++)
                for (int64_t c = 0; c < d; c++)
                    qp[r * d + c] = r < nr ? q[(i0 + r) * p->q_st + c] * p->scale : 0.0f;
            for (int64_t j = 0; j < blkp; j += KW)
                qk_tile(d, qp, kt, kb, s, j);
            float *ob = o + (i0 - r0) * dvp;
            for (int64_t r = 0; r < QB; r++) {
                float *sr = s + r * kb;
                if (r >= nr) {
                    memset(sr, 0, (size_t)blkp * sizeof(float));
                    continue;
                }
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
            int64_t c = 0;
            for (; c + NV * GC_VW <= dvp; c += NV * GC_VW)
                pv_tile(NV, blk, s, kb, vp, dvp, ob, c);
            for (; c < dvp; c += GC_VW)
                pv_tile(1, blk, s, kb, vp, dvp, ob, c);
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

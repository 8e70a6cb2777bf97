/* gc_vmath.h: exp, sigmoid, tanh and GELU on whole float vectors (gc_vf, as wide as the ISA the
 * including file is compiled for), branch-free so one code serves every lane. Internal to the runtime;
 * tests/test_runtime_act.py holds each to the error stated here (measured against float64 over a dense
 * sweep, at every ISA level: baseline SSE2 without FMA, AVX2 + FMA, AVX-512; the worst seen, then a
 * margin of 1.2 to 2).
 *
 *   gc_vexp(x):     x clamped to [-104, 89], x = n ln2 + r (Cody-Waite, |r| <= ln2/2), e^r by a degree-6
 *                   polynomial fitted for relative error (2e-9), 2^n applied by vscalefps on AVX-512, else
 *                   in two halves, so that the subnormal results and those just below FLT_MAX are right
 *                   and e^89 overflows to +inf, e^-104 to 0. Relative error 1.5e-7 (1.05e-7 seen) on
 *                   [-103, 88.7]; NaN stays NaN.
 *   gc_vsigmoid(x): 1 / (1 + e^-x), 2.5e-7 (1.53e-7 seen). SiLU x / (1 + e^-x): the same.
 *   gc_vtanh(x):    x P(x^2) / Q(x^2) on [-9.02, 9.02] (+-1 beyond), a degree-4 / degree-4 rational
 *                   fitted for relative error (2.1e-8), no exp: 4e-7 (2.7e-7 seen with FMA, 3.2e-7 without).
 *   gc_vgelu(x):    x Phi(x) (the exact, erf GELU, PyTorch's default), Phi(x) = (1 + erf(x / sqrt 2)) / 2
 *                   through erfc(z) = e^{-z^2} Q(1 / (1 + z / 2)), z = |x| / sqrt 2, Q a degree-10
 *                   polynomial fitted (weighted least squares) to e^{z^2} erfc(z) on [0, 10]: fit error
 *                   6e-9, 3e-7 once evaluated in float. z^2 comes from x^2 carried as head + tail, so the
 *                   exponent loses nothing for large |x|. Relative error 5e-7 while Phi(x) is a normal
 *                   float (x > -12); -inf gives NaN (-inf x 0), as PyTorch's and the reference's.
 *   GELU_TANH:      x / (1 + e^{-2u}), 2u = sqrt(8/pi) (x + 0.044715 x^3) in float: relative error 3.5e-7
 *                   for x >= 0 (1.3e-7 seen); for x < 0 |error| <= 2.5e-7 |x| like GELU's (6.3e-8 |x|
 *                   seen: the rounding of 2u, amplified by e^-2u, is relative to a result tiny there).
 * Every function is a fixed sequence of operations: a lane's result depends on nothing but its input,
 * so kernels give the same bits for any split into threads and any alignment.
 */
#ifndef GC_VMATH_H
#define GC_VMATH_H

#include <stdint.h>

#include "gc_simd.h"

#if GC_VW > 1
typedef int32_t gc_vi32 __attribute__((vector_size(GC_VW * sizeof(int32_t))));

/* lanes of a where mask is set (all ones), else b */
static GC_ALWAYS_INLINE gc_vf gc_vselect(gc_vi32 mask, gc_vf a, gc_vf b)
{
    return (gc_vf)(((gc_vi32)a & mask) | ((gc_vi32)b & ~mask));
}

static GC_ALWAYS_INLINE gc_vf gc_vabs(gc_vf x)
{
    return (gc_vf)((gc_vi32)x & 0x7fffffff);
}

/* min and max as the x86 instructions compute them: a < b ? a : b and a > b ? a : b (b when either is
 * NaN, b when both are zeros), one instruction instead of a compare and a blend */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && GC_VW == 16
static GC_ALWAYS_INLINE gc_vf gc_vmin(gc_vf a, gc_vf b)
{
    return __builtin_ia32_minps512_mask(a, b, a, (unsigned short)-1, 4 /* _MM_FROUND_CUR_DIRECTION */);
}

static GC_ALWAYS_INLINE gc_vf gc_vmax(gc_vf a, gc_vf b)
{
    return __builtin_ia32_maxps512_mask(a, b, a, (unsigned short)-1, 4);
}
#elif defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && GC_VW == 8
static GC_ALWAYS_INLINE gc_vf gc_vmin(gc_vf a, gc_vf b) { return __builtin_ia32_minps256(a, b); }
static GC_ALWAYS_INLINE gc_vf gc_vmax(gc_vf a, gc_vf b) { return __builtin_ia32_maxps256(a, b); }
#elif defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && GC_VW == 4
static GC_ALWAYS_INLINE gc_vf gc_vmin(gc_vf a, gc_vf b) { return __builtin_ia32_minps(a, b); }
static GC_ALWAYS_INLINE gc_vf gc_vmax(gc_vf a, gc_vf b) { return __builtin_ia32_maxps(a, b); }
#else
static GC_ALWAYS_INLINE gc_vf gc_vmin(gc_vf a, gc_vf b) { return gc_vselect(a < b, a, b); }
static GC_ALWAYS_INLINE gc_vf gc_vmax(gc_vf a, gc_vf b) { return gc_vselect(a > b, a, b); }
#endif

/* y * 2^n for integer-valued n in [-252, 254] (as floats): two factors, each a normal number, so
 * neither the subnormal results nor those just below FLT_MAX are lost */
static GC_ALWAYS_INLINE gc_vf gc_vldexp(gc_vf y, gc_vf n)
{
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__) && GC_VW == 16
    /* vscalefps: y * 2^n rounded once, subnormal and overflowing results included */
    return __builtin_ia32_scalefps512_mask(y, n, y, (unsigned short)-1, 4);
#else
    const gc_vi32 ni = __builtin_convertvector(n, gc_vi32);
    const gc_vi32 h = ni >> 1, l = ni - h;
    return (y * (gc_vf)((h + 127) << 23)) * (gc_vf)((l + 127) << 23);
#endif
}

static GC_ALWAYS_INLINE gc_vf gc_vexp(gc_vf x)
{
    /* x clamped to [-104, 89] (a NaN stays NaN: the instructions return their second operand then):
     * e^-104 rounds to 0 and e^89 overflows, in the scaling, so no select is needed afterwards */
    const gc_vf xc = gc_vmin(vset1(89.0f), gc_vmax(vset1(-104.0f), x));
    /* n = round(x / ln2) by the 1.5 * 2^23 trick (exact for |n| < 2^22) */
    const gc_vf magic = vset1(12582912.0f);
    const gc_vf n = vfma(xc, vset1(1.44269504088896341f), magic) - magic;
    gc_vf r = vfma(n, vset1(-0.693145751953125f), xc); /* ln2 head: 16 bits, n * head is exact */
    r = vfma(n, vset1(-1.428606765330187e-06f), r);     /* ln2 tail */
    /* e^r on [-ln2/2, ln2/2]: degree-6 polynomial fitted for relative error (2e-9) */
    gc_vf p = vset1(1.3843667693436146e-03f);
    p = vfma(p, r, vset1(8.374159224331379e-03f));
    p = vfma(p, r, vset1(4.166800156235695e-02f));
    p = vfma(p, r, vset1(1.6666431725025177e-01f));
    p = vfma(p, r, vset1(4.999999403953552e-01f));
    p = vfma(p, r, vset1(1.0f));
    p = vfma(p, r, vset1(1.0f));
    return gc_vldexp(p, n);
}

/* 1 / (1 + e^-x), the formula of the op's reference: 0 once e^-x overflows (x < -88.72) */
static GC_ALWAYS_INLINE gc_vf gc_vsigmoid(gc_vf x)
{
    return vset1(1.0f) / (vset1(1.0f) + gc_vexp(-x));
}

static GC_ALWAYS_INLINE gc_vf gc_vtanh(gc_vf x)
{
    /* x clamped to [-9.02, 9.02] (NaN stays NaN), where tanh rounds to +-1; tanh(x) = x P(x^2) / Q(x^2) */
    const gc_vf xc = gc_vmin(vset1(9.02f), gc_vmax(vset1(-9.02f), x));
    const gc_vf s = xc * xc;
    gc_vf p = vset1(1.3317899671960731e-08f);
    p = vfma(p, s, vset1(2.0582634533639066e-05f));
    p = vfma(p, s, vset1(3.4939837642014027e-03f));
    p = vfma(p, s, vset1(1.3379675149917603e-01f));
    p = vfma(p, s, vset1(1.0f));
    gc_vf q = vset1(7.76153797232837e-07f);
    q = vfma(q, s, vset1(3.2830089912749827e-04f));
    q = vfma(q, s, vset1(2.5870881974697113e-02f));
    q = vfma(q, s, vset1(4.671299159526825e-01f));
    q = vfma(q, s, vset1(1.0f));
    /* |y| <= 1 (the rational may round a hair above 1 near the clamp) */
    return gc_vmin(vset1(1.0f), gc_vmax(vset1(-1.0f), (xc * p) / q));
}

/* z * z as head + tail (head = the rounded product, tail = its rounding error) */
static GC_ALWAYS_INLINE void gc_vsquare2(gc_vf z, gc_vf *head, gc_vf *tail)
{
    *head = z * z;
#if defined(__FMA__) || defined(__AVX512F__)
    *tail = vfma(z, z, -*head);
#else /* Veltkamp's split: z = zh + zl with 12-bit halves, so their products are exact */
    const gc_vf c = z * vset1(4097.0f);
    const gc_vf zh = c - (c - z), zl = z - zh;
    *tail = ((zh * zh - *head) + vset1(2.0f) * zh * zl) + zl * zl;
#endif
}

static GC_ALWAYS_INLINE gc_vf gc_vphi(gc_vf x)
{
    const gc_vf ax = gc_vmin(gc_vabs(x), vset1(15.0f)); /* Phi(-15) is below every float */
    const gc_vf z = ax * vset1(0.707106781186547524f);
    const gc_vf t = vset1(1.0f) / (vset1(1.0f) + vset1(0.5f) * z);
    gc_vf q = vset1(2.775059969e-02f);
    q = vfma(q, t, vset1(-2.098704380e-01f));
    q = vfma(q, t, vset1(6.404951308e-01f));
    q = vfma(q, t, vset1(-9.660831745e-01f));
    q = vfma(q, t, vset1(6.834299128e-01f));
    q = vfma(q, t, vset1(-2.513931857e-01f));
    q = vfma(q, t, vset1(2.850836243e-01f));
    q = vfma(q, t, vset1(2.234444646e-01f));
    q = vfma(q, t, vset1(2.852903446e-01f));
    q = vfma(q, t, vset1(2.818441442e-01f));
    q = vfma(q, t, vset1(8.571408928e-06f));
    /* z^2 = x^2 / 2 from x itself (z's own rounding would cost 1e-5 at z = 8) as head + tail;
     * exp(-zh - zl) = exp(-zh) (1 - zl): |zl| <= 2^-24 zh, so the first-order term is all that counts */
    gc_vf zh, zl;
    gc_vsquare2(ax, &zh, &zl);
    zh = zh * vset1(0.5f);
    zl = zl * vset1(0.5f);
    const gc_vf half_erfc = vset1(0.5f) * q * gc_vexp(-zh) * (vset1(1.0f) - zl);
    const gc_vf y = gc_vselect(x < vset1(0.0f), half_erfc, vset1(1.0f) - half_erfc);
    return gc_vselect(x != x, x, y);
}

/* x Phi(x) (exact GELU). A cheaper form, 1/2 + x R(x^2) with R a rational (3x fewer cycles), was tried
 * and dropped: for x < 0 its error is absolute in Phi (about 5e-8), i.e. up to 5e-4 relative where Phi is
 * small (x < -2), and it gave 0 for -inf (PyTorch and the reference: NaN); the op-table tests compare
 * with the reference at 1e-6 relative. */
static GC_ALWAYS_INLINE gc_vf gc_vgelu(gc_vf x)
{
    return x * gc_vphi(x);
}

/* min(max(x, lo), hi) with NaN kept, like the generated code's gcx_fmax / gcx_fmin */
static GC_ALWAYS_INLINE gc_vf gc_vclamp(gc_vf x, float lo, float hi)
{
    const gc_vf l = gc_vselect(x <= vset1(lo), vset1(lo), x);
    return gc_vselect(l >= vset1(hi), vset1(hi), l);
}

/* The activation of kind k (a GC_ACT_* of graphc_rt.h) on one vector; lo, hi: GC_ACT_CLAMP's bounds.
 * RELU, CLAMP and HARDSWISH follow the generated code's scalar formulas (NaN stays NaN). Always inlined with a constant kind, so each caller's loop is straight-line. */
static GC_ALWAYS_INLINE gc_vf gc_vact(int kind, gc_vf x, float lo, float hi)
{
    switch (kind) {
    case 1: /* GC_ACT_EXP */
        return gc_vexp(x);
    case 2: /* GC_ACT_SIGMOID */
        return gc_vsigmoid(x);
    case 3: /* GC_ACT_SILU */
        return x / (vset1(1.0f) + gc_vexp(-x));
    case 4: /* GC_ACT_TANH */
        return gc_vtanh(x);
    case 5: /* GC_ACT_GELU */
        return gc_vgelu(x);
    case 7: /* GC_ACT_RELU: x < 0 ? 0 : x */
        return gc_vselect(x < vset1(0.0f), vset1(0.0f), x);
    case 8: /* GC_ACT_CLAMP: min(max(x, lo), hi) */
        return gc_vclamp(x, lo, hi);
    case 9: /* GC_ACT_HARDSWISH: x * min(max(x + 3, 0), 6) / 6 */
        return x * gc_vclamp(x + vset1(3.0f), 0.0f, 6.0f) / vset1(6.0f);
    default: { /* GC_ACT_GELU_TANH: x / (1 + e^-2u), 2u = x (c1 + c2 x^2) in float */
        const gc_vf a = x * vfma(vset1(0.0713548162726008f), x * x, vset1(1.5957691216057308f));
        return x / (vset1(1.0f) + gc_vexp(-a));
    }
    }
}
#endif /* GC_VW > 1 */

#endif /* GC_VMATH_H */

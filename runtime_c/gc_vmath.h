/* gc_vmath.h: exp, sigmoid, tanh and the Gaussian CDF on whole float vectors (gc_vf, as wide as the
 * ISA the including file is compiled for), branch-free so one code serves every lane. Internal to the
 * runtime; tests/test_runtime_act.py holds each to the relative error stated here (measured against
 * float64 over a dense sweep, at every ISA level; about twice the worst seen).
 *
 *   gc_vexp(x):     x = n ln2 + r (Cody-Waite, |r| <= ln2/2), e^r by its degree-7 Taylor polynomial
 *                   (truncation below 6e-9), 2^n applied in two halves so that the subnormal results
 *                   and those just below FLT_MAX are right. 1.5e-7 on [-103, 88.7]; +inf above 88.72,
 *                   0 below -103.97, NaN stays NaN.
 *   gc_vsigmoid(x): 1 / (1 + e^-x), 2.5e-7.
 *   gc_vtanh(x):    odd Taylor polynomial to x^13 for |x| < 0.4 (truncation below 1e-9), else
 *                   1 - 2 / (e^{2|x|} + 1) with x's sign. 2.5e-7.
 *   gc_vphi(x):     Phi(x) = (1 + erf(x / sqrt 2)) / 2 through erfc(z) = e^{-z^2} Q(1 / (1 + z / 2)),
 *                   z = |x| / sqrt 2, Q a degree-10 polynomial fitted (weighted least squares) to
 *                   e^{z^2} erfc(z) on [0, 10]: fit error 6e-9, 3e-7 once evaluated in float. z^2 comes
 *                   from x^2 carried as head + tail, so the exponent loses nothing for large |x|.
 *                   x Phi(x) (GELU) within 5e-7 while Phi(x) is a normal float (x > -12).
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

static GC_ALWAYS_INLINE gc_vf gc_vmin(gc_vf a, gc_vf b)
{
    return gc_vselect(a < b, a, b);
}

static GC_ALWAYS_INLINE gc_vf gc_vmax(gc_vf a, gc_vf b)
{
    return gc_vselect(a > b, a, b);
}

/* y * 2^n for integer-valued n in [-252, 254] (as floats): two factors, each a normal number, so
 * neither the subnormal results nor those just below FLT_MAX are lost */
static GC_ALWAYS_INLINE gc_vf gc_vldexp(gc_vf y, gc_vf n)
{
    const gc_vi32 ni = __builtin_convertvector(n, gc_vi32);
    const gc_vi32 h = ni >> 1, l = ni - h;
    return (y * (gc_vf)((h + 127) << 23)) * (gc_vf)((l + 127) << 23);
}

static GC_ALWAYS_INLINE gc_vf gc_vexp(gc_vf x)
{
    const gc_vf hi = vset1(88.7228394f), lo = vset1(-103.972084f);
    gc_vf xc = gc_vmin(gc_vmax(x, lo), hi); /* NaN becomes lo here; restored below */
    /* n = round(x / ln2) by the 1.5 * 2^23 trick (exact for |n| < 2^22) */
    const gc_vf magic = vset1(12582912.0f);
    const gc_vf n = (xc * vset1(1.44269504088896341f) + magic) - magic;
    gc_vf r = vfma(n, vset1(-0.693145751953125f), xc); /* ln2 head: 16 bits, n * head is exact */
    r = vfma(n, vset1(-1.428606765330187e-06f), r);     /* ln2 tail */
    gc_vf p = vset1(1.0f / 5040.0f);
    p = vfma(p, r, vset1(1.0f / 720.0f));
    p = vfma(p, r, vset1(1.0f / 120.0f));
    p = vfma(p, r, vset1(1.0f / 24.0f));
    p = vfma(p, r, vset1(1.0f / 6.0f));
    p = vfma(p, r, vset1(0.5f));
    p = vfma(p, r, vset1(1.0f));
    p = vfma(p, r, vset1(1.0f));
    gc_vf y = gc_vldexp(p, n);
    y = gc_vselect(x > hi, vset1(__builtin_inff()), y);
    y = gc_vselect(x < lo, vset1(0.0f), y);
    return gc_vselect(x != x, x, y);
}

/* x / (1 + e^-a) for a = ah + al carried in two floats (|al| < ulp(ah)), as x e / (1 + e) with
 * e = e^a for a < 0 so that e^-a never overflows; e^-|a| = e^-|ah| (1 - |a|'s tail) */
static GC_ALWAYS_INLINE gc_vf gc_vxsigmoid2(gc_vf x, gc_vf ah, gc_vf al)
{
    const gc_vf tail = gc_vselect(ah < vset1(0.0f), -al, al);
    const gc_vf e = gc_vexp(-gc_vabs(ah)) * (vset1(1.0f) - tail);
    const gc_vf r = x / (vset1(1.0f) + e);
    return gc_vselect(ah < vset1(0.0f), r * e, r);
}

/* 1 / (1 + e^-x), the formula of the op's reference: 0 once e^-x overflows (x < -88.72) */
static GC_ALWAYS_INLINE gc_vf gc_vsigmoid(gc_vf x)
{
    return vset1(1.0f) / (vset1(1.0f) + gc_vexp(-x));
}

static GC_ALWAYS_INLINE gc_vf gc_vtanh(gc_vf x)
{
    const gc_vf a = gc_vabs(x);
    const gc_vi32 sign = (gc_vi32)x & (int32_t)0x80000000u;
    /* large: 1 - 2 / (e^{2a} + 1) (e^{2a} = inf gives exactly 1) */
    const gc_vf big = vset1(1.0f) - vset1(2.0f) / (gc_vexp(a + a) + vset1(1.0f));
    /* small: a + a^3 P(a^2), Taylor coefficients of tanh */
    const gc_vf s = a * a;
    gc_vf p = vset1(21844.0f / 6081075.0f);
    p = vfma(p, s, vset1(-1382.0f / 155925.0f));
    p = vfma(p, s, vset1(62.0f / 2835.0f));
    p = vfma(p, s, vset1(-17.0f / 315.0f));
    p = vfma(p, s, vset1(2.0f / 15.0f));
    p = vfma(p, s, vset1(-1.0f / 3.0f));
    const gc_vf small = vfma(a * s, p, a);
    const gc_vf y = gc_vselect(a < vset1(0.4f), small, big);
    return gc_vselect(x != x, x, (gc_vf)((gc_vi32)y | sign));
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
typedef double gc_vd __attribute__((vector_size(GC_VW * sizeof(double))));

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
        return x * gc_vphi(x);
    case 7: /* GC_ACT_RELU: x < 0 ? 0 : x */
        return gc_vselect(x < vset1(0.0f), vset1(0.0f), x);
    case 8: /* GC_ACT_CLAMP: min(max(x, lo), hi) */
        return gc_vclamp(x, lo, hi);
    case 9: /* GC_ACT_HARDSWISH: x * min(max(x + 3, 0), 6) / 6 */
        return x * gc_vclamp(x + vset1(3.0f), 0.0f, 6.0f) / vset1(6.0f);
    default: { /* GC_ACT_GELU_TANH: 2u in double, since its float rounding would be amplified by e^-2u
                * (1e-5 relative at x = -10), then as head + tail floats */
        const gc_vd xd = __builtin_convertvector(gc_vmin(gc_vmax(x, vset1(-20.0f)), vset1(20.0f)), gc_vd);
        const gc_vd a = 1.5957691216057307118 * (xd + 0.044715 * xd * xd * xd);
        const gc_vf ah = __builtin_convertvector(a, gc_vf);
        const gc_vf al = __builtin_convertvector(a - __builtin_convertvector(ah, gc_vd), gc_vf);
        return gc_vxsigmoid2(x, ah, al);
    }
    }
}
#endif /* GC_VW > 1 */

#endif /* GC_VMATH_H */

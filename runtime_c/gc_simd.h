/* gc_simd.h: what every runtime kernel file includes — the OpenMP pragma macros (gc_omp.h: GC_PRAGMA,
 * GC_PARALLEL_FOR, GC_THREAD_ID) and float vectors sized by the target ISA, with unaligned load/store,
 * broadcast and FMA. Internal to the runtime: not part of graphc_rt.h's contract. */
#ifndef GC_SIMD_H
#define GC_SIMD_H

#include <string.h>

#include "gc_omp.h"

/* The few x86 instructions the kernels name (FMA, AVX-512 masked loads and stores). GCC gets them from
 * its builtins, the calls <immintrin.h>'s inline functions make: parsing that header costs about 0.15 s
 * of CPU per translation unit, more than many kernel files take to compile, and a default-target
 * runtime is 28 units. Other compilers (clang's builtins differ) include the header. */
#if defined(__GNUC__) && (defined(__FMA__) || defined(__AVX512F__))
#if defined(__clang__)
#include <immintrin.h>
#define GC_X86_HEADER 1
#endif
#endif

/* ------------------------------------------------------------------ vector helpers */
#if defined(__GNUC__)
#if defined(__AVX512F__)
#define GC_VW 16
#elif defined(__AVX__)
#define GC_VW 8
#else
#define GC_VW 4
#endif
typedef float gc_vf __attribute__((vector_size(GC_VW * sizeof(float))));
#define GC_ALWAYS_INLINE inline __attribute__((always_inline))
#define GC_NOINLINE __attribute__((noinline))
#else
#define GC_VW 1
typedef float gc_vf;
#define GC_ALWAYS_INLINE inline
#define GC_NOINLINE
#endif

static inline gc_vf vload(const float *p) /* unaligned load */
{
    gc_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, gc_vf v) /* unaligned store */
{
    memcpy(p, &v, sizeof v);
}

static inline gc_vf vset1(float x)
{
#if GC_VW == 1
    return x;
#else
    return x - (gc_vf){0}; /* scalar - vector broadcasts the scalar */
#endif
}

/* acc + a * b as one fused instruction when the ISA has FMA (vector a*b+c is only contracted under
 * -ffp-contract=fast, which -std=c11 turns off); gc_fmadd is _mm*_fmadd_ps. */
#if GC_VW == 16 || (GC_VW > 1 && defined(__FMA__))
#define GC_HAS_FMADD 1
#endif
#if defined(GC_HAS_FMADD) && defined(GC_X86_HEADER) && GC_VW == 16
#define gc_fmadd _mm512_fmadd_ps
#elif defined(GC_HAS_FMADD) && defined(GC_X86_HEADER) && GC_VW == 8
#define gc_fmadd _mm256_fmadd_ps
#elif defined(GC_HAS_FMADD) && defined(GC_X86_HEADER)
#define gc_fmadd _mm_fmadd_ps
#elif defined(GC_HAS_FMADD)
/* defined as <immintrin.h> defines its functions (the same attributes: the inliner weighs the same code) */
#define GC_INTRINSIC static __inline __attribute__((__gnu_inline__, __always_inline__, __artificial__))
GC_INTRINSIC gc_vf gc_fmadd(gc_vf a, gc_vf b, gc_vf c)
{
#if GC_VW == 16
    return __builtin_ia32_vfmaddps512_mask(a, b, c, (unsigned short)-1, 4 /* _MM_FROUND_CUR_DIRECTION */);
#elif GC_VW == 8
    return __builtin_ia32_vfmaddps256(a, b, c);
#else
    return __builtin_ia32_vfmaddps(a, b, c);
#endif
}
#endif

static inline gc_vf vfma(gc_vf a, gc_vf b, gc_vf acc)
{
#ifdef GC_HAS_FMADD
    return gc_fmadd(a, b, acc);
#else
    return acc + a * b;
#endif
}

#if GC_VW == 16 /* AVX-512 masked loads (zeros in the other lanes) and stores of the lanes in mask m */
typedef unsigned short gc_mask16;
#if defined(GC_X86_HEADER)
#define vload_mask(m, p) ((gc_vf)_mm512_maskz_loadu_ps((m), (p)))
#define vstore_mask(p, m, v) _mm512_mask_storeu_ps((p), (m), (__m512)(v))
#else
GC_INTRINSIC gc_vf vload_mask(gc_mask16 m, void const *p) /* _mm512_maskz_loadu_ps */
{
    return __builtin_ia32_loadups512_mask((const float *)p, (gc_vf){0}, m);
}

GC_INTRINSIC void vstore_mask(void *p, gc_mask16 m, gc_vf v) /* _mm512_mask_storeu_ps */
{
    __builtin_ia32_storeups512_mask((float *)p, v, m);
}
#endif
#endif

#if GC_VW == 8
/* AVX masked loads and stores (vmaskmovps: the masked-off lanes are neither read nor written, so the
 * address may lie before or past the row) of the lanes [lo, hi): a partial vector without a copy through
 * the stack, whose scalar stores a vector load then waits for (store forwarding fails: that copy took
 * more time than the multiply-adds of gc_conv.c's stride-2 depthwise layers). */
typedef int32_t gc_lanes8 __attribute__((vector_size(8 * sizeof(int32_t))));
static GC_ALWAYS_INLINE gc_lanes8 vmask8(int64_t lo, int64_t hi)
{
    const gc_lanes8 idx = {0, 1, 2, 3, 4, 5, 6, 7};
    return (idx >= (int32_t)lo) & (idx < (int32_t)hi);
}
#if defined(GC_X86_HEADER)
#define vload_mask8(m, p) ((gc_vf)_mm256_maskload_ps((const float *)(p), (__m256i)(m)))
#define vstore_mask8(p, m, v) _mm256_maskstore_ps((float *)(p), (__m256i)(m), (__m256)(v))
#else
#define vload_mask8(m, p) ((gc_vf)__builtin_ia32_maskloadps256((const gc_vf *)(p), (m)))
#define vstore_mask8(p, m, v) __builtin_ia32_maskstoreps256((gc_vf *)(p), (m), (v))
#endif
#endif

/* Even / odd lanes of two vectors: GC_EVENS(a, b) = (a0 a2 ... b0 b2 ...), GC_ODDS(a, b) = (a1 a3 ... b1 b3
 * ...) (stride-2 convolutions' input rows, 2 x 2 max pooling) */
#if GC_VW > 1
#if GC_VW == 16
#define GC_EVEN_IDX 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define GC_ODD_IDX 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#elif GC_VW == 8
#define GC_EVEN_IDX 0, 2, 4, 6, 8, 10, 12, 14
#define GC_ODD_IDX 1, 3, 5, 7, 9, 11, 13, 15
#else
#define GC_EVEN_IDX 0, 2, 4, 6
#define GC_ODD_IDX 1, 3, 5, 7
#endif
#if defined(__clang__) || __GNUC__ >= 12
#define GC_EVENS(a, b) __builtin_shufflevector(a, b, GC_EVEN_IDX)
#define GC_ODDS(a, b) __builtin_shufflevector(a, b, GC_ODD_IDX)
#else
typedef int32_t gc_lane_idx __attribute__((vector_size(GC_VW * sizeof(int32_t))));
#define GC_EVENS(a, b) __builtin_shuffle(a, b, (gc_lane_idx){GC_EVEN_IDX})
#define GC_ODDS(a, b) __builtin_shuffle(a, b, (gc_lane_idx){GC_ODD_IDX})
#endif
#endif

/* Sum of n floats: 8 independent float lanes (vectorisable) per chunk of 256, chunks added in double.
 * One definition for the pools and the conv's pooled output, which must give the same bits. */
static inline double gc_sum_floats(const float *x, int64_t n)
{
    double total = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += 256) {
        const int64_t c1 = n < c0 + 256 ? n : c0 + 256;
        float lanes[8] = {0};
        int64_t i = c0;
        for (; i + 8 <= c1; i += 8)
            for (int l = 0; l < 8; l++) lanes[l] += x[i + l];
        float rest = 0.0f;
        for (; i < c1; i++) rest += x[i];
        total += (double)((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                 (double)((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + (double)rest;
    }
    return total;
}

#endif /* GC_SIMD_H */

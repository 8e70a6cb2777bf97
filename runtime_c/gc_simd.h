/* gc_simd.h: what every runtime kernel file includes — the OpenMP pragma macros (GC_PRAGMA,
 * GC_PARALLEL_FOR, GC_THREAD_ID) and float vectors sized by the target ISA, with unaligned load/store,
 * broadcast and FMA. Internal to the runtime: not part of graphc_rt.h's contract. */
#ifndef GC_SIMD_H
#define GC_SIMD_H

#include <string.h>

/* "#pragma omp ..." only when OpenMP is on, so -Wall stays quiet without -fopenmp */
#ifdef _OPENMP
#include <omp.h>
#define GC_PRAGMA(x) _Pragma(#x)
#define GC_THREAD_ID() omp_get_thread_num()
#else
#define GC_PRAGMA(x)
#define GC_THREAD_ID() 0
#endif
/* a parallel loop over the function's `nthreads`, taken only when `cond` (the work pays for the team) */
#define GC_PARALLEL_FOR(cond) GC_PRAGMA(omp parallel for num_threads(nthreads) schedule(static) if (cond))

#if defined(__GNUC__) && (defined(__FMA__) || defined(__AVX512F__))
#include <immintrin.h>
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
 * -ffp-contract=fast, which -std=c11 turns off). */
static inline gc_vf vfma(gc_vf a, gc_vf b, gc_vf acc)
{
#if GC_VW == 16
    return _mm512_fmadd_ps(a, b, acc);
#elif GC_VW == 8 && defined(__FMA__)
    return _mm256_fmadd_ps(a, b, acc);
#elif GC_VW == 4 && defined(__FMA__)
    return _mm_fmadd_ps(a, b, acc);
#else
    return acc + a * b;
#endif
}

#endif /* GC_SIMD_H */

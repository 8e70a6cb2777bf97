/* gc_omp.h: the OpenMP pragma macros of the runtime's kernels and of the generated code (its
 * NAME_internal.h includes this file): "#pragma omp ..." only when OpenMP is on (-fopenmp), so a serial
 * build (graphc compile --no-openmp, or a toolchain without OpenMP) compiles the same sources into
 * loops on the calling thread, with -Wall quiet and no omp.h needed. */
#ifndef GC_OMP_H
#define GC_OMP_H

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

#endif /* GC_OMP_H */

/* graphc runtime: indexing kernels.
 *
 * gc_embedding validates every index before it writes anything, so a bad index leaves `out` untouched
 * instead of half-written (and never reads outside the table).
 */
#include <string.h>

#include "graphc_rt.h"
#include "gc_simd.h"

#define GC_INDEX_PARALLEL_MIN 16384

int gc_embedding(int64_t n, const int64_t *idx, int64_t v, int64_t d, const float *table, float *out,
                 int nthreads)
{
    if (n < 0 || v < 0 || d < 0 || (n > 0 && (!idx || (d > 0 && (!table || !out)))))
        return GC_ERR_INVALID_ARGUMENT;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= v)
            return GC_ERR_INDEX;
    if (d == 0)
        return GC_OK;
    if (nthreads < 1)
        nthreads = 1;
    GC_PARALLEL_FOR(n * d >= GC_INDEX_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * d, table + idx[i] * d, (size_t)d * sizeof(float));
    return GC_OK;
}

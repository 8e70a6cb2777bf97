/* graphc runtime: indexing kernels.
 *
 * gc_embedding validates every index before it writes anything, so a bad index leaves `out` untouched
 * instead of half-written (and never reads outside the table).
 */
#include <string.h>

#include "graphc_rt.h"
#include "gc_simd.h"

/* floats copied below which one thread does the whole gather (a 256 KiB copy takes microseconds) */
#define GC_INDEX_PARALLEL_MIN 65536

typedef struct embedding_job {
    const int64_t *idx;
    int64_t d;
    const float *table;
    float *out;
    int64_t n, tasks;
} embedding_job;

/* rows [n t / tasks, n (t + 1) / tasks) */
static void embedding_task(void *arg, int64_t t)
{
    const embedding_job *J = arg;
    const int64_t lo = J->n * t / J->tasks, hi = J->n * (t + 1) / J->tasks;
    for (int64_t i = lo; i < hi; i++)
        memcpy(J->out + i * J->d, J->table + J->idx[i] * J->d, (size_t)J->d * sizeof(float));
}

int gc_embedding(int64_t n, const int64_t *idx, int64_t v, int64_t d, const float *table, float *out,
                 int nthreads)
{
    if (n < 0 || v < 0 || d < 0 || (n > 0 && (!idx || (d > 0 && (!table || !out)))))
        return GC_ERR_INVALID_ARGUMENT;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= v)
            return GC_ERR_INDEX;
    if (d == 0 || n == 0)
        return GC_OK;
    /* on the context's pool (gc_parallel_for), not an OpenMP team: the team's threads would spin for
     * milliseconds after the copy, taking a core from the next kernel */
    const int64_t tasks = n * d < GC_INDEX_PARALLEL_MIN || nthreads <= 1 ? 1 : nthreads < n ? nthreads : n;
    const embedding_job J = {idx, d, table, out, n, tasks};
    gc_parallel_for(tasks, nthreads, embedding_task, (void *)&J);
    return GC_OK;
}

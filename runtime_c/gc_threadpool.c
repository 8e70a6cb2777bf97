/* graphc runtime: the per-context thread pool behind gc_parallel_for.
 *
 * Why not only OpenMP: an OpenMP loop with a static schedule hands each thread its share up front and
 * ends at a barrier, so when another process holds one of the cores, the whole loop waits for the
 * descheduled thread (a 2-thread context measured 3.8x slower than a 1-thread one with one busy
 * neighbour). Here, as in ONNX Runtime's pool, the calling thread takes part and every task is claimed
 * from a shared counter: the caller runs whatever no worker has claimed, so a late worker costs nothing,
 * and the caller waits only for tasks a worker has actually started. Workers spin briefly after a job
 * (the next kernel's job usually follows within microseconds), then sleep on a condition variable.
 *
 * The job word packs (job tag << 32 | next task index) so a worker claims a task of the job it read
 * with one compare-and-swap; a claim for an older job fails, and a claimed index below n proves the job
 * is still running, so the fn/arg read before the claim are that job's. Results do not depend on which
 * thread runs a task: kernels give each task a fixed piece of the output.
 *
 * The job's fields are rewritten while a late worker may still be reading the previous job's (it read
 * the old tag, then was descheduled), so they are atomics and the word works as a seqlock: an odd tag,
 * stored before the fields (which are stored with release order), marks a job being written; the even
 * tag after them opens it. A worker that read a field of the next job (an acquire load) then sees at
 * least the odd tag, so its claim fails, instead of claiming index n of the old job with the new job's
 * n and fn (a task run twice, a done count one too high). ThreadSanitizer reported the plain fields as
 * a data race (tests/test_hardening.py).
 *
 * run_v binds the context's pool to the calling thread (gc_pool_enter); kernels called without a pool
 * (the runtime's own tests, GRAPHC_THREADING=openmp) fall back to an OpenMP loop.
 */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "graphc_rt.h"
#include "gc_simd.h"

#if defined(__x86_64__) || defined(__i386__)
#define GC_CPU_RELAX() __builtin_ia32_pause() /* _mm_pause() without parsing <immintrin.h> */
#elif defined(__aarch64__)
#define GC_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define GC_CPU_RELAX() ((void)0)
#endif

/* spins before a worker sleeps: about 500 us of pause instructions on Zen 4 (24 ns each), longer than a
 * short run on one thread (adaptive threads re-measuring it), since a worker woken on a loaded machine
 * can take milliseconds to get a core back; after the first GC_POOL_SPINS_ALONE the worker yields its
 * core every GC_POOL_YIELD_EVERY pauses, so on a busy machine a neighbour (or this context's own caller,
 * when the scheduler put both on one core) runs instead of the spin; on an idle core sched_yield returns
 * at once */
#define GC_POOL_SPINS 20000
#define GC_POOL_SPINS_ALONE 1000
#define GC_POOL_YIELD_EVERY 128

struct gc_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t threads[GC_MAX_THREADS];
    int nworkers;                 /* started so far (grown on demand) */
    int quit;
    int sleepers;                 /* workers waiting on `wake` */
    uint64_t word;                /* tag << 32 | next task */
    int64_t done;                 /* tasks finished in the current job */
    /* the current job (stable while its tag is current and a task is unclaimed or running) */
    void (*fn)(void *, int64_t);
    void *arg;
    int64_t n;
    uint32_t tag;                 /* the current job's (even) tag: written by the pool's caller alone */
#ifdef __linux__
    cpu_set_t allowed;            /* the process's CPUs when the pool was made */
    int nallowed;
    int excluded;                 /* the caller's CPU the workers are kept off (-1: none yet) */
#endif
};

static __thread gc_pool *current;

/* a job the worker has not seen yet, and open (an even tag: an odd one is a job still being written) */
#define OPEN_JOB(tag, seen) ((tag) != (seen) && !((tag) & 1u))

/* claim one task of job `tag`; -1 when the job has none left or is no longer the current one */
static int64_t claim(gc_pool *p, uint32_t tag, int64_t n)
{
    uint64_t w = __atomic_load_n(&p->word, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((uint32_t)(w >> 32) != tag || (int64_t)(uint32_t)w >= n)
            return -1;
        if (__atomic_compare_exchange_n(&p->word, &w, w + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return (int64_t)(uint32_t)w;
    }
}

static void run_tasks(gc_pool *p, uint32_t tag, int64_t n, void (*fn)(void *, int64_t), void *arg)
{
    int64_t i;
    while ((i = claim(p, tag, n)) >= 0) {
        fn(arg, i);
        __atomic_fetch_add(&p->done, 1, __ATOMIC_RELEASE);
    }
}

static void *worker(void *vp)
{
    gc_pool *p = vp;
    uint32_t seen = (uint32_t)(__atomic_load_n(&p->word, __ATOMIC_ACQUIRE) >> 32);
    for (;;) {
        uint32_t tag = seen;
        for (int s = 0; s < GC_POOL_SPINS; s++) {
            tag = (uint32_t)(__atomic_load_n(&p->word, __ATOMIC_ACQUIRE) >> 32);
            if (OPEN_JOB(tag, seen) || __atomic_load_n(&p->quit, __ATOMIC_ACQUIRE))
                break;
            if (s >= GC_POOL_SPINS_ALONE && s % GC_POOL_YIELD_EVERY == 0)
                sched_yield();
            else
                GC_CPU_RELAX();
        }
        if (!OPEN_JOB(tag, seen)) {
            pthread_mutex_lock(&p->lock);
            __atomic_fetch_add(&p->sleepers, 1, __ATOMIC_SEQ_CST);
            while (!__atomic_load_n(&p->quit, __ATOMIC_SEQ_CST) &&
                   !OPEN_JOB((uint32_t)(__atomic_load_n(&p->word, __ATOMIC_SEQ_CST) >> 32), seen))
                pthread_cond_wait(&p->wake, &p->lock);
            __atomic_fetch_sub(&p->sleepers, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&p->lock);
        }
        if (__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE))
            return NULL;
        tag = (uint32_t)(__atomic_load_n(&p->word, __ATOMIC_ACQUIRE) >> 32);
        if (tag & 1u)
            continue; /* the next job is being written: its even tag follows within nanoseconds */
        seen = tag;
        /* the job's fields were written before its tag was published; if they are already the next job's,
         * the claim below sees the tag that moved on and fails */
        void (*fn)(void *, int64_t) = __atomic_load_n(&p->fn, __ATOMIC_ACQUIRE);
        void *arg = __atomic_load_n(&p->arg, __ATOMIC_ACQUIRE);
        const int64_t n = __atomic_load_n(&p->n, __ATOMIC_ACQUIRE);
        run_tasks(p, tag, n, fn, arg);
    }
}

gc_pool *gc_pool_new(void)
{
    gc_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
#ifdef __linux__
    p->excluded = -1;
    if (sched_getaffinity(0, sizeof p->allowed, &p->allowed) == 0)
        p->nallowed = CPU_COUNT(&p->allowed);
#endif
    return p;
}

void gc_pool_free(gc_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    __atomic_store_n(&p->quit, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

gc_pool *gc_pool_enter(gc_pool *p)
{
    gc_pool *prev = current;
    current = p;
    return prev;
}

int gc_pool_bound(void)
{
    return current != NULL;
}

/* start workers until there are `want` (fewer if the system refuses threads: the caller does the rest) */
static void grow(gc_pool *p, int want)
{
    while (p->nworkers < want && p->nworkers < GC_MAX_THREADS) {
        if (pthread_create(&p->threads[p->nworkers], NULL, worker, p) != 0)
            break;
        p->nworkers++;
#ifdef __linux__
        p->excluded = -1; /* the new worker gets the mask below */
#endif
    }
}

/* Keep the workers off the caller's CPU. A worker woken on a loaded machine is often placed on its
 * waker's CPU and can stay there for whole runs (measured: a 2-thread BERT layer's worker queued behind
 * its caller in up to half of the samples, the context at 1-thread speed for seconds); there it only
 * takes turns with the caller. The mask is the process's CPUs less the caller's, set again when the
 * caller moves; with one CPU allowed nothing is restricted. */
static void keep_off_caller(gc_pool *p)
{
#ifdef __linux__
    if (p->nallowed < 2 || p->nworkers == 0)
        return;
    const int cpu = sched_getcpu();
    if (cpu < 0 || cpu == p->excluded || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &p->allowed))
        return;
    cpu_set_t m = p->allowed;
    CPU_CLR(cpu, &m);
    for (int i = 0; i < p->nworkers; i++)
        pthread_setaffinity_np(p->threads[i], sizeof m, &m);
    p->excluded = cpu;
#else
    (void)p;
#endif
}

void gc_parallel_for(int64_t n, int nthreads, void (*fn)(void *, int64_t), void *arg)
{
    if (n <= 0)
        return;
    gc_pool *p = current;
    if (n == 1 || nthreads <= 1) {
        for (int64_t i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    if (!p || n > UINT32_MAX) {
        const int T = nthreads;
        (void)T;
        GC_PRAGMA(omp parallel for num_threads(T) schedule(dynamic, 1))
        for (int64_t i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    grow(p, (int)(n < nthreads ? n : nthreads) - 1);
    keep_off_caller(p);
    /* publish the job: an odd tag (no task can be claimed), the fields, then the even tag with the task
     * counter at 0 */
    const uint32_t tag = p->tag + 2;
    p->tag = tag;
    __atomic_store_n(&p->word, (uint64_t)(tag - 1) << 32, __ATOMIC_RELAXED);
    __atomic_store_n(&p->fn, fn, __ATOMIC_RELEASE);
    __atomic_store_n(&p->arg, arg, __ATOMIC_RELEASE);
    __atomic_store_n(&p->n, n, __ATOMIC_RELEASE);
    __atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&p->word, (uint64_t)tag << 32, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p->sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
    run_tasks(p, tag, n, fn, arg);
    /* every task is claimed: wait for the ones workers are still running. A worker that takes long was
     * most likely descheduled (a busy machine): after a spin the caller yields its core, which that
     * worker may be waiting for */
    for (int s = 0; __atomic_load_n(&p->done, __ATOMIC_ACQUIRE) < n; s++) {
        if (s < GC_POOL_SPINS_ALONE)
            GC_CPU_RELAX();
        else
            sched_yield();
    }
}

/* ------------------------------------------------------------------ adaptive threads
 *
 * A context with nthreads > 1 also has one thread as an option: with a busy neighbour process holding a
 * core, a worker that claimed a task and was then descheduled makes the caller wait for it, and one
 * thread can win. The policy is robust to single noisy runs and leans to the context's thread count:
 * - after a switch of option, runs are not recorded until GC_PICK_SETTLE seconds (GC_PICK_SETTLE_N to
 *   n threads) and at least one run have passed: the caches hold the other option's data, and the
 *   workers were asleep: on a loaded machine a woken worker waits for the running task's slice (a
 *   2-thread MLP b1 context ran at 1-thread speed for ~3 ms after each switch, and a 300 us window
 *   kept it on one thread);
 * - each option's time is the median of its last GC_PICK_SAMPLES recorded runs (seconds per arena
 *   byte, so runs of other dims compare), never one sample;
 * - until each option has GC_PICK_MIN samples the options take turns;
 * - one thread is chosen only when its median is GC_PICK_MARGIN faster (noise never moves a quiet
 *   machine's context to one thread; on a busy one, staying costs at most the margin);
 * - the slower option is re-measured (GC_PICK_PROBE recorded runs) after at least 8 runs and after
 *   the faster option ran long enough that the probe's extra time is GC_PICK_BUDGET of it, at most
 *   GC_PICK_WAIT seconds: a wrong choice (one noisy spell) is undone within two probes. */
#define GC_PICK_MIN 2
#define GC_PICK_PROBE 2
#define GC_PICK_SETTLE 300e-6
#define GC_PICK_SETTLE_N 2e-3
#define GC_PICK_MARGIN 0.05
#define GC_PICK_BUDGET 0.03
#define GC_PICK_WAIT 2.0

static double picker_median(const gc_thread_picker *t, int o)
{
    double v[GC_PICK_SAMPLES];
    const int n = t->count[o];
    for (int i = 0; i < n; i++) { /* insertion sort of at most GC_PICK_SAMPLES values */
        double x = t->s[o][i];
        int j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* the faster option: one thread only when it is GC_PICK_MARGIN faster than the context's count */
static int picker_best(const gc_thread_picker *t)
{
    return picker_median(t, 1) < (1.0 - GC_PICK_MARGIN) * picker_median(t, 0);
}

int gc_picker_one(const gc_thread_picker *t)
{
    if (t->count[0] < GC_PICK_MIN || t->count[1] < GC_PICK_MIN) {
        const int last = t->last - 1;
        if (last >= 0 && t->count[last] < GC_PICK_MIN)
            return last; /* the option is still warming up */
        return t->count[1] < t->count[0];
    }
    if (t->probe > 0)
        return t->probing;
    return picker_best(t);
}

void gc_picker_record(gc_thread_picker *t, int one, double seconds, double bytes)
{
    one = one != 0;
    if (t->last != one + 1) {
        t->last = one + 1;
        t->settle = -1.0; /* this run is not recorded, whatever its length */
    }
    const int record = t->settle >= (one ? GC_PICK_SETTLE : GC_PICK_SETTLE_N);
    t->settle = (t->settle < 0.0 ? 0.0 : t->settle) + seconds;
    if (record) {
        t->s[one][t->next[one]] = seconds / (bytes > 0.0 ? bytes : 1.0);
        t->next[one] = (t->next[one] + 1) % GC_PICK_SAMPLES;
        if (t->count[one] < GC_PICK_SAMPLES)
            t->count[one]++;
    }
    if (t->count[0] < GC_PICK_MIN || t->count[1] < GC_PICK_MIN)
        return;
    if (t->probe > 0) {
        if (one == t->probing) {
            t->probe_seconds += seconds;
            if (record && --t->probe == 0)
                t->since = 0, t->since_seconds = 0.0;
        }
        return;
    }
    const int best = picker_best(t);
    if (one != best)
        return;
    t->since++;
    t->since_seconds += seconds;
    const double fast = picker_median(t, best), slow = picker_median(t, !best);
    const double gap = slow > fast ? 1.0 - fast / slow : 0.0; /* the share of a probe's time it loses */
    double wait = t->probe_seconds * gap / GC_PICK_BUDGET;
    wait = wait < GC_PICK_WAIT ? wait : GC_PICK_WAIT;
    if (t->since >= 8 && t->since_seconds >= wait) {
        t->probing = !best;
        t->probe = GC_PICK_PROBE;
        t->probe_seconds = 0.0;
    }
}

/* A test tool: just enough of the CUDA runtime, on the CPU, to run graphc's generated CUDA sources on a
 * machine without a GPU (tests/test_cuda_emulation.py). It is not part of graphc.
 *
 * The generated .cu files are compiled as C++ with this folder first on the include path, after the
 * test rewrote every launch "k<<<grid, block, smem, stream>>>(args)" into
 * "gcx_emu_launch(k, grid, block, smem, stream, args)".
 *
 * Execution model. A launch runs its blocks one after the other; the threads of a block are fibers
 * (ucontext) on the calling thread, each running until its next __syncthreads() or its end, round robin,
 * so a block's threads meet at every barrier as on a GPU. __shared__ becomes `static`: the blocks of a
 * launch run one at a time, so a static local is the block's shared memory. What it checks: launch
 * configurations (as CUDA would reject them), that the threads of a block wait at the same barrier
 * (a __syncthreads() reached by only some threads, or by different call sites, fails the run), and it
 * fills every cudaMalloc'ed buffer with 0xFF bytes (NaN as float) so reads of unwritten memory show up.
 * What it cannot show: races between threads that a GPU would interleave differently, warp-level
 * behaviour, memory-model effects, speed.
 *
 * Environment: GC_EMU_NO_DEVICE=1 makes cudaGetDeviceCount report cudaErrorNoDevice.
 */
#ifndef GCX_EMU_CUDA_RUNTIME_H
#define GCX_EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __syncthreads() gcx_emu::syncthreads()

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct gcx_emu_uint3 {
    unsigned x, y, z;
};

inline gcx_emu_uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef struct gcx_emu_stream *cudaStream_t;

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

namespace gcx_emu {

constexpr size_t kStack = 128 * 1024;

struct Fiber {
    ucontext_t ctx;
    bool done;
    void *barrier; /* the call site of the barrier it waits at */
};

inline std::mutex lock;
inline cudaError_t last_error = cudaSuccess;   /* cudaGetLastError */
inline cudaError_t sticky_error = cudaSuccess; /* a failed kernel: reported by every later sync */
inline ucontext_t scheduler;
inline std::vector<Fiber> fibers;
inline std::vector<char *> stacks;
inline std::function<void()> *body;
inline unsigned current;

inline void set_error(cudaError_t e) { last_error = e; }

inline void entry() { (*body)(); fibers[current].done = true; }

__attribute__((noinline)) inline void syncthreads()
{
    fibers[current].barrier = __builtin_return_address(0);
    swapcontext(&fibers[current].ctx, &scheduler);
}

inline void fail_kernel(const char *what)
{
    fprintf(stderr, "cuda emulation: %s\n", what);
    sticky_error = cudaErrorLaunchFailure;
}

/* run every block of the grid, each block's threads as fibers */
inline void run_grid(dim3 grid, dim3 block, std::function<void()> &fn)
{
    const unsigned nt = block.x * block.y * block.z;
    while (stacks.size() < nt)
        stacks.push_back((char *)malloc(kStack));
    fibers.resize(nt);
    body = &fn;
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, bz};
                for (unsigned t = 0; t < nt; t++) {
                    Fiber &f = fibers[t];
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = stacks[t];
                    f.ctx.uc_stack.ss_size = kStack;
                    f.ctx.uc_link = &scheduler;
                    makecontext(&f.ctx, entry, 0);
                    f.done = false;
                }
                for (;;) {
                    unsigned waiting = 0, finished = 0;
                    void *site = nullptr;
                    bool mixed = false;
                    for (unsigned t = 0; t < nt; t++) {
                        Fiber &f = fibers[t];
                        if (f.done)
                            continue;
                        current = t;
                        threadIdx = {t % block.x, t / block.x % block.y, t / (block.x * block.y)};
                        f.barrier = nullptr;
                        swapcontext(&scheduler, &f.ctx);
                        if (f.done) {
                            finished++;
                        } else {
                            if (waiting && f.barrier != site)
                                mixed = true;
                            site = f.barrier;
                            waiting++;
                        }
                    }
                    if (waiting == 0)
                        break;
                    if (mixed || finished) {
                        fail_kernel(mixed ? "the threads of a block wait at different __syncthreads()"
                                          : "some threads of a block returned while others wait at __syncthreads()");
                        return; /* the waiting fibers are abandoned */
                    }
                }
            }
}

} // namespace gcx_emu

/* a launch argument as the kernel's parameter type (NULL arrives as an integer through the template) */
template <class P, class A>
inline P gcx_emu_arg(A a)
{
    if constexpr (std::is_pointer_v<P> && std::is_integral_v<A>)
        return a == 0 ? nullptr : throw "an integer passed for a pointer";
    else
        return a;
}

template <class... P, class... A>
inline void gcx_emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A... args)
{
    (void)smem;
    (void)stream;
    std::lock_guard<std::mutex> guard(gcx_emu::lock);
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || threads == 0 ||
        threads > 1024 || block.z > 64) {
        gcx_emu::set_error(cudaErrorInvalidConfiguration);
        return;
    }
    std::tuple<P...> params(gcx_emu_arg<P>(args)...);
    std::function<void()> fn = [&] { std::apply(kernel, params); };
    gcx_emu::run_grid(grid, block, fn);
}

static inline const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}

static inline cudaError_t cudaGetLastError(void)
{
    const cudaError_t e = gcx_emu::last_error;
    gcx_emu::last_error = cudaSuccess;
    return e;
}

static inline cudaError_t cudaGetDeviceCount(int *count)
{
    const char *no = getenv("GC_EMU_NO_DEVICE");
    if (no && *no && strcmp(no, "0") != 0) {
        *count = 0;
        return gcx_emu::last_error = cudaErrorNoDevice;
    }
    *count = 1;
    return cudaSuccess;
}

static inline cudaError_t cudaGetDevice(int *device) { *device = 0; return cudaSuccess; }
static inline cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }

static inline cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    *stream = (cudaStream_t)malloc(1);
    return cudaSuccess;
}
static inline cudaError_t cudaStreamDestroy(cudaStream_t stream) { free(stream); return cudaSuccess; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return gcx_emu::sticky_error; }

static inline cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    *ptr = aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!*ptr)
        return gcx_emu::last_error = cudaErrorMemoryAllocation;
    memset(*ptr, 0xFF, bytes);
    return cudaSuccess;
}
static inline cudaError_t cudaFree(void *ptr) { free(ptr); return cudaSuccess; }

static inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind)
{
    memmove(dst, src, bytes);
    return cudaSuccess;
}
static inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t)
{
    return cudaMemcpy(dst, src, bytes, kind);
}
static inline cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t)
{
    memset(dst, value, bytes);
    return cudaSuccess;
}

#endif /* GCX_EMU_CUDA_RUNTIME_H */

// Host-side runtime layer of the C ABI: the per-thread error record, build and
// device facts, pointer classification, memory and stream helpers.  No kernel
// here does real work; the one kernel below only answers "can this GPU run
// code from this build?".
#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "common.cuh"
#include "int4mm.h"

#ifndef INT4MM_COMPILED_TARGETS
#define INT4MM_COMPILED_TARGETS "unknown"
#endif

namespace {

// ---- per-thread error record --------------------------------------------

thread_local char g_message[1024] = "";
thread_local int g_cuda_error = 0;
thread_local const char *g_cuda_error_name = "";  // static string from cudaGetErrorName

void vrecord(const char *fmt, va_list ap) { std::vsnprintf(g_message, sizeof g_message, fmt, ap); }

void record(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vrecord(fmt, ap);
    va_end(ap);
}

// Errors that mean "there is no usable driver or GPU", as opposed to a call
// that failed on a working GPU.
bool is_no_device_error(cudaError_t e) {
    switch (e) {
        case cudaErrorInitializationError:
        case cudaErrorStubLibrary:
        case cudaErrorInsufficientDriver:
        case cudaErrorNoDevice:
        case cudaErrorDevicesUnavailable:
        case cudaErrorSystemNotReady:
        case cudaErrorSystemDriverMismatch:
        case cudaErrorCompatNotSupportedOnDevice:
            return true;
        default:
            return false;
    }
}

// Errors that mean "this build has no code this GPU can run".
bool is_unsupported_error(cudaError_t e) {
    return e == cudaErrorNoKernelImageForDevice || e == cudaErrorUnsupportedPtxVersion ||
           e == cudaErrorInvalidPtx || e == cudaErrorJitCompilerNotFound;
}

int major_of(int v) { return v / 1000; }
int minor_of(int v) { return (v % 1000) / 10; }

void record_no_device(cudaError_t e, const char *what) {
    switch (e) {
        case cudaErrorInsufficientDriver: {
            int driver = 0;
            if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
            if (driver == 0) {
                record("no NVIDIA driver was found (libcuda.so.1 could not be loaded): "
                       "int4mm needs an NVIDIA GPU and driver");
            } else {
                record("the NVIDIA driver supports CUDA %d.%d but this build of int4mm uses the "
                       "CUDA %d.%d runtime: install a newer NVIDIA driver (or an int4mm build for an "
                       "older CUDA)",
                       major_of(driver), minor_of(driver), major_of(CUDART_VERSION),
                       minor_of(CUDART_VERSION));
            }
            break;
        }
        case cudaErrorNoDevice:
            record("the NVIDIA driver is loaded but reports no CUDA GPU (check CUDA_VISIBLE_DEVICES "
                   "and nvidia-smi): int4mm needs an NVIDIA GPU");
            break;
        case cudaErrorStubLibrary:
            record("the CUDA driver library found is a stub, not a real driver (%s failed): "
                   "install the NVIDIA driver or fix LD_LIBRARY_PATH so libcuda.so.1 is the real one",
                   what);
            break;
        case cudaErrorSystemDriverMismatch:
            record("the NVIDIA kernel module and the user-space driver library have different "
                   "versions (%s failed): reinstall the driver or reboot",
                   what);
            break;
        case cudaErrorDevicesUnavailable:
            record("every CUDA GPU is busy or unavailable (%s failed; a GPU in exclusive-process "
                   "mode is in use by another process)",
                   what);
            break;
        default:
            record("the CUDA driver could not be initialized (%s failed: %s): check that the "
                   "NVIDIA driver works (nvidia-smi)",
                   what, cudaGetErrorString(e));
            break;
    }
}

void record_unsupported(cudaError_t e, const char *what) {
    int dev = -1, major = 0, minor = 0;
    if (cudaGetDevice(&dev) == cudaSuccess) {
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    }
    // Hopper's fast paths are built as the arch-specific sm_90a target.
    const char *suffix = (major == 9 && minor == 0) ? "a" : "";
    if (e == cudaErrorNoKernelImageForDevice) {
        record("this build of int4mm has no code for this GPU (compute capability %d.%d; "
               "compiled targets: %s; %s failed with %s): install an int4mm wheel built for "
               "sm_%d%d%s, or rebuild with INT4MM_CUDA_ARCHS including %d%d%s",
               major, minor, INT4MM_COMPILED_TARGETS, what, cudaGetErrorName(e), major, minor,
               suffix, major, minor, suffix);
    } else {
        record("the NVIDIA driver could not compile this build's PTX for this GPU (compute "
               "capability %d.%d; compiled targets: %s; %s failed with %s): update the NVIDIA "
               "driver, or install an int4mm wheel built for sm_%d%d%s",
               major, minor, INT4MM_COMPILED_TARGETS, what, cudaGetErrorName(e), major, minor,
               suffix);
    }
}

// ---- stream_wait event pool -----------------------------------------------
//
// stream_wait records an event on the producer and makes the waiter wait on
// it.  cudaStreamWaitEvent captures the event's state at the time of the call,
// so an event can be handed back to the pool right after and re-recorded by
// the next caller.  Events are taken out under a mutex and used outside it,
// so concurrent threads never share one.  The pool is never destroyed: at
// process exit the driver may already be gone.

constexpr int kMaxPooledPerDevice = 16;

struct EventPool {
    std::mutex mutex;
    std::vector<std::vector<cudaEvent_t>> free_by_device;
};

EventPool &event_pool() {
    static EventPool *pool = new EventPool();
    return *pool;
}

int4mm_status take_event(int device, cudaEvent_t *ev) {
    EventPool &pool = event_pool();
    {
        std::lock_guard<std::mutex> lock(pool.mutex);
        if (device < static_cast<int>(pool.free_by_device.size()) &&
            !pool.free_by_device[device].empty()) {
            *ev = pool.free_by_device[device].back();
            pool.free_by_device[device].pop_back();
            return INT4MM_OK;
        }
    }
    INT4MM_CUDA_TRY(cudaEventCreateWithFlags(ev, cudaEventDisableTiming));
    return INT4MM_OK;
}

void give_event(int device, cudaEvent_t ev) {
    EventPool &pool = event_pool();
    {
        std::lock_guard<std::mutex> lock(pool.mutex);
        if (device >= static_cast<int>(pool.free_by_device.size()))
            pool.free_by_device.resize(device + 1);
        if (pool.free_by_device[device].size() < kMaxPooledPerDevice) {
            pool.free_by_device[device].push_back(ev);
            return;
        }
    }
    cudaEventDestroy(ev);
}

// "Legacy default stream" has two spellings in CAI v3 (0 and 1).
uintptr_t canonical_stream(uintptr_t s) { return s == 0 ? 1 : s; }

}  // namespace

// The probe behind kernels_loadable: cudaFuncGetAttributes on it fails with
// cudaErrorNoKernelImageForDevice when no SASS or usable PTX in this build
// matches the GPU.
__global__ void int4mm_probe_kernel() {}

namespace int4mm {

int4mm_status fail(int4mm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vrecord(fmt, ap);
    va_end(ap);
    return status;
}

int4mm_status fail_cuda(cudaError_t err, const char *what) {
    g_cuda_error = static_cast<int>(err);
    g_cuda_error_name = cudaGetErrorName(err);
    // Reset the runtime's non-sticky last error so a later, unrelated
    // launch check does not report this failure again.
    cudaGetLastError();
    if (is_no_device_error(err)) {
        record_no_device(err, what);
        return INT4MM_ERR_NO_DEVICE;
    }
    if (is_unsupported_error(err)) {
        record_unsupported(err, what);
        return INT4MM_ERR_UNSUPPORTED;
    }
    record("%s failed: %s (%s)", what, cudaGetErrorString(err), g_cuda_error_name);
    return INT4MM_ERR_CUDA;
}

void clear_error() {
    g_message[0] = '\0';
    g_cuda_error = 0;
    g_cuda_error_name = "";
}

namespace {
constexpr int kMaxCachedDevices = 64;
struct AttrSlot {
    std::atomic<int> ready{0};
    DeviceAttrs value;
};
AttrSlot g_attrs[kMaxCachedDevices];
std::mutex g_attrs_mutex;
}  // namespace

int4mm_status device_attrs(int device, DeviceAttrs *out) {
    const bool cached = device >= 0 && device < kMaxCachedDevices;
    if (cached && g_attrs[device].ready.load(std::memory_order_acquire)) {
        *out = g_attrs[device].value;
        return INT4MM_OK;
    }
    DeviceAttrs a;
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&a.major, cudaDevAttrComputeCapabilityMajor, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&a.minor, cudaDevAttrComputeCapabilityMinor, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&a.sms, cudaDevAttrMultiProcessorCount, device));
    int mem_khz = 0, bus_bits = 0;  // some devices report neither: bandwidth stays unknown
    if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess)
        a.dram_bytes_per_s = 2.0 * mem_khz * 1e3 * bus_bits / 8.0;
    else
        (void)cudaGetLastError();  // not sticky: drop it
    if (cached) {
        std::lock_guard<std::mutex> lock(g_attrs_mutex);
        if (!g_attrs[device].ready.load(std::memory_order_relaxed)) {
            g_attrs[device].value = a;
            g_attrs[device].ready.store(1, std::memory_order_release);
        }
    }
    *out = a;
    return INT4MM_OK;
}

bool pdl_enabled() {
    static const bool on = [] {
        const char *v = std::getenv("INT4MM_PDL");
        return v == nullptr || std::strcmp(v, "0") != 0;
    }();
    return on;
}

}  // namespace int4mm

using int4mm::clear_error;
using int4mm::DeviceGuard;
using int4mm::fail;
using int4mm::fail_cuda;

extern "C" {

// ---- errors ------------------------------------------------------------------

const char *int4mm_last_error_message(void) { return g_message; }
int int4mm_last_cuda_error(void) { return g_cuda_error; }
const char *int4mm_last_cuda_error_name(void) { return g_cuda_error_name; }

// ---- build and runtime facts -------------------------------------------------

int int4mm_cuda_runtime_version(void) { return CUDART_VERSION; }

const char *int4mm_compiled_targets(void) { return INT4MM_COMPILED_TARGETS; }

int4mm_status int4mm_driver_version(int *version) {
    clear_error();
    if (version == nullptr) return fail(INT4MM_ERR_INVALID_ARGUMENT, "version is NULL");
    *version = 0;
    int v = 0;
    cudaError_t e = cudaDriverGetVersion(&v);
    if (e != cudaSuccess) {
        int4mm_status s = fail_cuda(e, "cudaDriverGetVersion");
        if (s == INT4MM_ERR_NO_DEVICE) {
            clear_error();
            return INT4MM_OK;  // no driver: version 0, by contract
        }
        return s;
    }
    *version = v;
    return INT4MM_OK;
}

int4mm_status int4mm_device_count(int *count) {
    clear_error();
    if (count == nullptr) return fail(INT4MM_ERR_INVALID_ARGUMENT, "count is NULL");
    *count = 0;
    int n = 0;
    INT4MM_CUDA_TRY(cudaGetDeviceCount(&n));
    *count = n;
    return INT4MM_OK;
}

int4mm_status int4mm_get_device_info(int device, int4mm_device_info *info) {
    clear_error();
    if (info == nullptr) return fail(INT4MM_ERR_INVALID_ARGUMENT, "info is NULL");
    std::memset(info, 0, sizeof *info);
    int count = 0;
    INT4MM_CUDA_TRY(cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
        return fail(INT4MM_ERR_INVALID_ARGUMENT,
                    "device %d does not exist: %d CUDA device(s) are visible (ordinals 0..%d)",
                    device, count, count - 1);
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;

    cudaDeviceProp prop;
    INT4MM_CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    std::snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);

    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&info->major, cudaDevAttrComputeCapabilityMajor, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&info->minor, cudaDevAttrComputeCapabilityMinor, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&info->multiprocessor_count,
                                           cudaDevAttrMultiProcessorCount, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&info->l2_cache_bytes, cudaDevAttrL2CacheSize, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&info->max_shared_per_block_optin,
                                           cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    // Clock attributes are informational; a runtime that stops reporting them
    // gives 0 rather than an error.
    if (cudaDeviceGetAttribute(&info->memory_clock_khz, cudaDevAttrMemoryClockRate, device) !=
        cudaSuccess) {
        info->memory_clock_khz = 0;
        cudaGetLastError();
    }
    if (cudaDeviceGetAttribute(&info->sm_clock_khz, cudaDevAttrClockRate, device) != cudaSuccess) {
        info->sm_clock_khz = 0;
        cudaGetLastError();
    }

    cudaFuncAttributes attr;
    cudaError_t e = cudaFuncGetAttributes(&attr, int4mm_probe_kernel);
    if (e == cudaSuccess) {
        info->kernels_loadable = 1;
    } else if (is_unsupported_error(e)) {
        info->kernels_loadable = 0;
        cudaGetLastError();
    } else {
        return fail_cuda(e, "cudaFuncGetAttributes(probe kernel)");
    }
    return INT4MM_OK;
}

// ---- memory and streams --------------------------------------------------------

int4mm_status int4mm_pointer_info(const void *ptr, int *kind, int *device) {
    clear_error();
    if (kind == nullptr || device == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "kind or device is NULL");
    *kind = INT4MM_MEM_HOST;
    *device = -1;
    cudaPointerAttributes attr;
    cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
    if (e != cudaSuccess) {
        // Unknown pointer, or no driver at all: by contract, host memory.
        cudaGetLastError();
        return INT4MM_OK;
    }
    switch (attr.type) {
        case cudaMemoryTypeDevice:
            *kind = INT4MM_MEM_DEVICE;
            *device = attr.device;
            break;
        case cudaMemoryTypeManaged:
            *kind = INT4MM_MEM_MANAGED;
            *device = attr.device;
            break;
        case cudaMemoryTypeHost:
            *kind = INT4MM_MEM_HOST_PINNED;
            break;
        default:
            break;
    }
    return INT4MM_OK;
}

int4mm_status int4mm_malloc(int device, size_t bytes, void **ptr) {
    clear_error();
    if (ptr == nullptr) return fail(INT4MM_ERR_INVALID_ARGUMENT, "ptr is NULL");
    *ptr = nullptr;
    if (bytes == 0) return INT4MM_OK;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        int4mm_status s = fail_cuda(e, "cudaMalloc");
        if (e == cudaErrorMemoryAllocation)
            fail(s, "cudaMalloc of %zu bytes on device %d failed: out of GPU memory", bytes, device);
        return s;
    }
    *ptr = p;
    return INT4MM_OK;
}

int4mm_status int4mm_free(int device, void *ptr) {
    clear_error();
    if (ptr == nullptr) return INT4MM_OK;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    INT4MM_CUDA_TRY(cudaFree(ptr));
    return INT4MM_OK;
}

static int4mm_status blocking_copy(int device, void *dst, const void *src, size_t bytes,
                                   uintptr_t stream, cudaMemcpyKind kind, const char *what) {
    clear_error();
    if (bytes == 0) return INT4MM_OK;
    if (dst == nullptr || src == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: NULL pointer for a %zu-byte copy", what, bytes);
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaStream_t s = int4mm::as_stream(stream);
    INT4MM_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, kind, s));
    INT4MM_CUDA_TRY(cudaStreamSynchronize(s));
    return INT4MM_OK;
}

int4mm_status int4mm_memcpy_d2h(int device, void *dst, const void *src, size_t bytes,
                                uintptr_t stream) {
    return blocking_copy(device, dst, src, bytes, stream, cudaMemcpyDeviceToHost,
                         "int4mm_memcpy_d2h");
}

int4mm_status int4mm_memcpy_h2d(int device, void *dst, const void *src, size_t bytes,
                                uintptr_t stream) {
    return blocking_copy(device, dst, src, bytes, stream, cudaMemcpyHostToDevice,
                         "int4mm_memcpy_h2d");
}

int4mm_status int4mm_memset_async(int device, void *dst, int value, size_t bytes,
                                  uintptr_t stream) {
    clear_error();
    if (bytes == 0) return INT4MM_OK;
    if (dst == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "int4mm_memset_async: dst is NULL");
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    INT4MM_CUDA_TRY(cudaMemsetAsync(dst, value, bytes, int4mm::as_stream(stream)));
    return INT4MM_OK;
}

int4mm_status int4mm_stream_wait(int device, uintptr_t waiter, uintptr_t producer) {
    clear_error();
    if (canonical_stream(waiter) == canonical_stream(producer)) return INT4MM_OK;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaEvent_t ev = nullptr;
    if (int4mm_status s = take_event(device, &ev)) return s;
    cudaError_t e = cudaEventRecord(ev, int4mm::as_stream(producer));
    if (e == cudaSuccess) e = cudaStreamWaitEvent(int4mm::as_stream(waiter), ev, 0);
    if (e != cudaSuccess) {
        cudaEventDestroy(ev);  // state unknown: do not pool it
        return fail_cuda(e, "cudaEventRecord/cudaStreamWaitEvent (stream_wait)");
    }
    give_event(device, ev);
    return INT4MM_OK;
}

int4mm_status int4mm_stream_synchronize(int device, uintptr_t stream) {
    clear_error();
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    INT4MM_CUDA_TRY(cudaStreamSynchronize(int4mm::as_stream(stream)));
    return INT4MM_OK;
}

}  // extern "C"

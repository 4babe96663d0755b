// Shared host-side helpers for every int4mm translation unit: one error path
// (status + per-thread message), a scoped device switch, and the alignment
// rule.  Device code lives in the kernel files, not here.
#ifndef INT4MM_COMMON_CUH_
#define INT4MM_COMMON_CUH_

#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>

#include "int4mm.h"

namespace int4mm {

// Records a message for int4mm_last_error_message() and returns `status`.
// Defined in runtime.cu.
int4mm_status fail(int4mm_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// Records a CUDA failure (error code, name, and where) and returns INT4MM_ERR_CUDA,
// or INT4MM_ERR_NO_DEVICE for "no driver / no device" errors.  Clears the
// sticky-free last error so a later call does not see it again.
int4mm_status fail_cuda(cudaError_t err, const char *what);
// Clears the per-thread message (called at the start of each entry point).
void clear_error();

// Compute capability and SM count of `device`, queried once and cached
// (thread-safe; lock-free after the first call).  Defined in runtime.cu.
struct DeviceAttrs {
    int major = 0, minor = 0, sms = 0;
    double dram_bytes_per_s = 0.0;  // peak DRAM bandwidth (memory clock x bus width x 2); 0 if unknown
};
int4mm_status device_attrs(int device, DeviceAttrs *out);

// Whether the kernels that support it are launched with programmatic
// dependent launch on sm_90+ (they may start while the previous kernel of the
// stream finishes): yes unless the environment sets INT4MM_PDL=0 (read once).
// Defined in runtime.cu.
bool pdl_enabled();

inline bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Makes `device` current for a scope and restores the caller's device after.
class DeviceGuard {
  public:
    DeviceGuard() = default;
    // Returns INT4MM_OK or the failure (already recorded).
    int4mm_status enter(int device) {
        cudaError_t e = cudaGetDevice(&previous_);
        if (e != cudaSuccess) return fail_cuda(e, "cudaGetDevice");
        if (previous_ != device) {
            e = cudaSetDevice(device);
            if (e != cudaSuccess) return fail_cuda(e, "cudaSetDevice");
            switched_ = true;
        }
        return INT4MM_OK;
    }
    ~DeviceGuard() {
        if (switched_) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard &) = delete;
    DeviceGuard &operator=(const DeviceGuard &) = delete;

  private:
    int previous_ = 0;
    bool switched_ = false;
};

}  // namespace int4mm

// Evaluate a CUDA runtime call; on failure record it and return from the
// enclosing entry point.
#define INT4MM_CUDA_TRY(call)                                   \
    do {                                                        \
        cudaError_t int4mm_err_ = (call);                       \
        if (int4mm_err_ != cudaSuccess)                         \
            return ::int4mm::fail_cuda(int4mm_err_, #call);     \
    } while (0)

// After a launch: surface configuration errors (bad grid, no kernel image).
#define INT4MM_LAUNCH_CHECK(what)                               \
    do {                                                        \
        cudaError_t int4mm_err_ = cudaGetLastError();           \
        if (int4mm_err_ != cudaSuccess)                         \
            return ::int4mm::fail_cuda(int4mm_err_, what);      \
    } while (0)

#endif  // INT4MM_COMMON_CUH_

// The wgmma kernels with fp16 activations (see matmul_wgmma.cu), configs 0-3
// (x tiles of 256 rows, for M > 128).
// One element type and one group of the configs per file: the CUTLASS
// instantiations are the slowest part of the build and compile in parallel
// this way.
#include "matmul_wgmma_gemm.cuh"

namespace int4mm {
namespace wgmma {
namespace detail {

template <>
int4mm_status run_large<cutlass::half_t>(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits) {
    return run_large_impl<cutlass::half_t>(cfg, a, stream, sm_count, splits);
}

}  // namespace detail
}  // namespace wgmma
}  // namespace int4mm

// Device helpers shared by the mma.sync kernel families (matmul_mma_small.cu,
// matmul_decode.cu): the m16n8k16 mma in fp16 / bf16 with fp32 accumulation,
// packed-pair FMA on raw words, and the L2 evict-first policy for weights
// that are read once.
#ifndef INT4MM_MMA_PTX_CUH_
#define INT4MM_MMA_PTX_CUH_

#include <type_traits>

#include "matmul_kernels.cuh"

namespace int4mm {

__device__ __forceinline__ uint64_t evict_first_policy() {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
    return policy;
}

// c += a * b, one m16n8k16 tile, element type T (__half or __nv_bfloat16).
template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// Packed-pair a * b + c on raw words, in T.
template <class T>
__device__ __forceinline__ uint32_t fma2_bits(uint32_t a, uint32_t b, uint32_t c) {
    using P = typename Elem<T>::Pair;
    return as_bits(__hfma2(bits_as<P>(a), bits_as<P>(b), bits_as<P>(c)));
}

}  // namespace int4mm

#endif  // INT4MM_MMA_PTX_CUH_

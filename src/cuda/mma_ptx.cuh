// Device helpers shared by the tensor-core kernel families (matmul_mma_small.cu,
// matmul_decode.cu; also the v10 experiment in benchmarks/decode_harness):
// the m16n8k16 mma in fp16 / bf16 with fp32 accumulation, packed-pair FMA on
// raw words, the L2 evict-first policy for weights that are read once,
// 16-byte cp.async, the cluster primitives of a K split over a cluster, and
// the dequantization of one fragment word.
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

// 16 bytes global -> shared, asynchronously (L1 bypassed, L2 evict-first).
__device__ __forceinline__ void cp_async16(uint32_t *dst, const uint32_t *src, uint64_t policy) {
    const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "l"(policy)
                 : "memory");
}
// The same with the default L2 policy (data every CTA reads: x).
__device__ __forceinline__ void cp_async16_keep(uint32_t *dst, const uint32_t *src) {
    const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ int cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return static_cast<int>(r);
}
// The float at the same shared-memory offset as `p`, in CTA `rank` of the cluster.
__device__ __forceinline__ float ld_cluster(const float *p, int rank) {
    const uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    uint32_t remote;
    float v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(remote) : "memory");
    return v;
}
#endif

// (a & b) ^ c in one LOP3.
__device__ __forceinline__ uint32_t and_xor(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0x6A;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// One fragment word -> the four A registers holding q - 8 (exact).
template <class T>
__device__ __forceinline__ void dequant(uint32_t w, uint32_t (&a)[4]) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        constexpr uint32_t kMagic = 0x43084308u;  // (128 + 8) with the XOR of the stored q ^ 8
        constexpr uint32_t kOne = 0x3F803F80u, kMinus136 = 0xC308C308u;
        a[0] = fma2_bits<T>(and_xor(w, 0x000F000Fu, kMagic), kOne, kMinus136);
        a[1] = fma2_bits<T>(and_xor(w >> 4, 0x000F000Fu, kMagic), kOne, kMinus136);
        a[2] = fma2_bits<T>(and_xor(w >> 8, 0x000F000Fu, kMagic), kOne, kMinus136);
        a[3] = fma2_bits<T>(and_xor(w >> 12, 0x000F000Fu, kMagic), kOne, kMinus136);
    } else {
        constexpr uint32_t kLo = 0x64086408u;    // 1024 + q  (low nibble, XOR 8 folded in)
        constexpr uint32_t kHi = 0x64806480u;    // 1024 + 16 q
        constexpr uint32_t kOne = 0x3C003C00u, kMinus1032 = 0xE408E408u;
        constexpr uint32_t kSixteenth = 0x2C002C00u, kMinus72 = 0xD480D480u;
        const uint32_t v = w >> 8;
        a[0] = fma2_bits<T>(and_xor(w, 0x000F000Fu, kLo), kOne, kMinus1032);
        a[1] = fma2_bits<T>(and_xor(w, 0x00F000F0u, kHi), kSixteenth, kMinus72);
        a[2] = fma2_bits<T>(and_xor(v, 0x000F000Fu, kLo), kOne, kMinus1032);
        a[3] = fma2_bits<T>(and_xor(v, 0x00F000F0u, kHi), kSixteenth, kMinus72);
    }
}

// One fragment word -> the four A registers holding kBase + (q - 8) / kDiv,
// one LOP3 each (after a shift): the code goes into the top (fp16) or low
// (bf16) mantissa bits under the exponent of 1.0, with no subtraction.  The
// mma then sums (kBase + (q - 8) / kDiv) x, and
//   sum (q - 8) x = kDiv * acc - kDiv * kBase * sum x,
// with sum x from the all-ones mma.  The offset is small next to the codes
// (1.125 vs 1/64 per unit of q - 8 in fp16), so the fp32 sums lose ~4-7 bits
// to it; the decode kernel takes this form only where it takes the offset
// back out every 8 k16 steps or fewer (benchmarks/NOTES.md, v19), which
// bounds the error.
template <class T>
struct OffsetCodes {
    static constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
    static constexpr float kDiv = kBf16 ? 128.0f : 64.0f;          // 1 / weight of one unit of q
    static constexpr float kDivBase = kBf16 ? 136.0f : 72.0f;      // kDiv * kBase: 1.0625 * 128, 1.125 * 64
    static constexpr float kBase = kDivBase / kDiv;                // 1.0625, 1.125 (exact)
};
template <class T>
__device__ __forceinline__ void dequant_offset(uint32_t w, uint32_t (&a)[4]) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        // bits 0-3 of each bf16: 1 + q / 128 (the XOR undoes the stored q ^ 8)
        constexpr uint32_t kMagic = 0x3F883F88u;
        a[0] = and_xor(w, 0x000F000Fu, kMagic);
        a[1] = and_xor(w >> 4, 0x000F000Fu, kMagic);
        a[2] = and_xor(w >> 8, 0x000F000Fu, kMagic);
        a[3] = and_xor(w >> 12, 0x000F000Fu, kMagic);
    } else {
        // bits 4-7 of each fp16: 1 + q / 64
        constexpr uint32_t kMagic = 0x3C803C80u;
        a[0] = and_xor(w << 4, 0x00F000F0u, kMagic);
        a[1] = and_xor(w, 0x00F000F0u, kMagic);
        a[2] = and_xor(w >> 4, 0x00F000F0u, kMagic);
        a[3] = and_xor(w >> 8, 0x00F000F0u, kMagic);
    }
}

}  // namespace int4mm

#endif  // INT4MM_MMA_PTX_CUH_

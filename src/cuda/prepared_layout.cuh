// The prepared-weight buffer, described in one place (packer and kernels both
// read this).  int4mm_prepare() writes one device buffer holding up to two
// sections, each present when its bit is set in `layout`:
//
//   offset 0                        INT4MM_LAYOUT_SMALL_M_TILED
//       dense codes as 512-byte warp tiles (prepare_small_m.cu): the decode /
//       mid-M tensor-core kernel streams them with fully contiguous loads
//   offset align256(tiled bytes)    INT4MM_LAYOUT_SM90_WGMMA
//       int4 codes, scales and folded zeros in the order CUTLASS's Hopper
//       mixed-input collective loads them (matmul_wgmma.cu); the decode
//       kernel (matmul_decode.cu) reads the same section, and for grouped
//       weights its own copy of the scales there (scale records)
//
// int4mm_prepared_layout() picks one section per weight: SM90_WGMMA where the
// wgmma kernel runs (it serves every M), else SMALL_M_TILED.  A buffer with
// both (int4mm_prepare still accepts both bits) works too.
//
// Raw arrays stay valid and are still read by the kernels that have no
// prepared form (odd group sizes, 16:32 weights with fractional zero
// points).  A 16:32 weight with integer zero points gets the sections of its
// exact dense equivalent (int4mm_sparse_to_dense), flagged by the caller with
// INT4MM_LAYOUT_SPARSE_AS_DENSE; its raw arrays stay the sparse ones.
#ifndef INT4MM_PREPARED_LAYOUT_CUH_
#define INT4MM_PREPARED_LAYOUT_CUH_

#include <cstddef>
#include <cstdint>

#include "int4mm.h"

namespace int4mm {

struct PreparedSections {
    size_t tiled_offset = 0, tiled_bytes = 0;  // tiled_bytes == 0: absent
    size_t wgmma_offset = 0, wgmma_bytes = 0;  // wgmma_bytes == 0: absent
    size_t total = 0;
};

inline size_t align256(size_t v) { return (v + 255) & ~size_t(255); }

// Section sizes for `layout` bits; the sizes come from each kernel family.
PreparedSections prepared_sections(int layout, int64_t K, int64_t N, int64_t group_size);

}  // namespace int4mm

#endif  // INT4MM_PREPARED_LAYOUT_CUH_

// Matmul entry points: argument checks and the one dispatch table that picks
// a kernel family (SMALL_M: CUDA cores, LARGE_M: tensor cores).
#include "matmul_kernels.cuh"
#include "matmul_wgmma.cuh"
#include "prepared_layout.cuh"

#include <cinttypes>

namespace int4mm {
namespace {

bool is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

int log2_exact(int64_t v) {
    int s = 0;
    while ((int64_t(1) << s) < v) ++s;
    return s;
}

// A 16:32 weight whose prepared sections hold its exact dense equivalent
// (INT4MM_LAYOUT_SPARSE_AS_DENSE): the kernels that read those sections run
// it as dense; the others read its sparse raw arrays.
bool dense_equivalent(const int4mm_matmul_args &a) {
    return a.mask != nullptr && a.prepared != nullptr && (a.layout & INT4MM_LAYOUT_SPARSE_AS_DENSE) != 0;
}

// Whether the prepared sections (if any) describe the weight as the dense
// kernels see it.
bool sections_apply(const int4mm_matmul_args &a) {
    return a.prepared != nullptr && (a.mask == nullptr || dense_equivalent(a));
}

bool has_wgmma_layout(const int4mm_matmul_args &a) {
    return sections_apply(a) && (a.layout & INT4MM_LAYOUT_SM90_WGMMA) != 0;
}

// The path AUTO resolves to.  SMALL_M is the v2 tensor-core kernel on the raw
// layout when group_size % 32 == 0 (else the v1 CUDA-core kernel, which
// streams the weights once per 8 rows of x); LARGE_M's time is flat up to
// M = 128.  The thresholds are where they cross (measured).
int resolve_path(const int4mm_matmul_args &a) {
    if (a.path == INT4MM_PATH_SMALL_M || a.path == INT4MM_PATH_LARGE_M) return a.path;
    // A weight prepared for Hopper's wgmma kernel: that kernel wins above
    // kWgmmaMinM rows (it reads the weights once per wave of tiles at
    // near-fp16 tensor-core speed); up to there the decode kernel streams the
    // same prepared codes faster.
    // Weights under kDecodeMaxMBytes: the decode kernel up to kDecodeMaxM rows.
    if (has_wgmma_layout(a)) {
        const bool small = a.K * a.N / 2 < kDecodeMaxMBytes;
        return a.M > (small ? kDecodeMaxM : kWgmmaMinM) ? INT4MM_PATH_LARGE_M : INT4MM_PATH_SMALL_M;
    }
    // group_size % 32 == 0: the v2 tensor-core SMALL_M kernel applies and
    // beats the LARGE_M tile kernel up to kSmallMThresholdMma rows.
    const int64_t limit = a.group_size % 32 == 0 ? kSmallMThresholdMma : kSmallMThreshold;
    return a.M <= limit ? INT4MM_PATH_SMALL_M : INT4MM_PATH_LARGE_M;
}

// Scalar rules (shapes, strides, dtype, path).  Pointers are checked later so
// that M == 0 with empty (null) arrays is a valid no-op.
int4mm_status check_shapes(const int4mm_matmul_args &a) {
    const bool sparse = a.mask != nullptr;
    if (a.dtype != INT4MM_DTYPE_FP16 && a.dtype != INT4MM_DTYPE_BF16)
        return fail(INT4MM_ERR_INVALID_ARGUMENT,
                    "matmul: dtype must be INT4MM_DTYPE_FP16 (%d) or INT4MM_DTYPE_BF16 (%d), got %d",
                    INT4MM_DTYPE_FP16, INT4MM_DTYPE_BF16, a.dtype);
    if (a.path != INT4MM_PATH_AUTO && a.path != INT4MM_PATH_SMALL_M && a.path != INT4MM_PATH_LARGE_M)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: path must be AUTO (0), SMALL_M (1) or LARGE_M (2), got %d",
                    a.path);
    if (a.M < 0) return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: M must be >= 0, got %" PRId64, a.M);
    if (a.N < 8 || a.N % 8 != 0)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: N must be a positive multiple of 8, got %" PRId64, a.N);
    const int64_t k_multiple = sparse ? 32 : 8;
    if (a.K < k_multiple || a.K % k_multiple != 0)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: K must be a positive multiple of %" PRId64
                    " for %s weights, got %" PRId64, k_multiple, sparse ? "16:32 sparse" : "dense", a.K);
    if (a.group_size < k_multiple || a.group_size % k_multiple != 0 || a.K % a.group_size != 0)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: group_size must be a multiple of %" PRId64
                    " that divides K = %" PRId64 ", got %" PRId64, k_multiple, a.K, a.group_size);
    if (a.M > kMaxMatmulDim || a.N > kMaxMatmulDim || a.K > kMaxMatmulDim)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul: M, N, K must each be <= %" PRId64 ", got M=%" PRId64
                    " N=%" PRId64 " K=%" PRId64, kMaxMatmulDim, a.M, a.N, a.K);
    if (resolve_path(a) == INT4MM_PATH_LARGE_M && a.N > kTcMaxN)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul: the LARGE_M path supports N <= %" PRId64 ", got %" PRId64,
                    kTcMaxN, a.N);
    if (a.ldx < a.K || a.ldx % 8 != 0)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: ldx must be >= K = %" PRId64
                    " and a multiple of 8, got %" PRId64, a.K, a.ldx);
    if (a.ldy < a.N || a.ldy % 8 != 0)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: ldy must be >= N = %" PRId64
                    " and a multiple of 8, got %" PRId64, a.N, a.ldy);
    return INT4MM_OK;
}

int4mm_status check_pointer(const void *p, const char *name, bool optional) {
    if (p == nullptr) {
        if (optional) return INT4MM_OK;
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: %s must not be NULL", name);
    }
    if (!aligned16(p))
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: %s must be 16-byte aligned, got address %p", name, p);
    return INT4MM_OK;
}

int4mm_status check_pointers(const int4mm_matmul_args &a) {
    int4mm_status st;
    if ((st = check_pointer(a.x, "x", false)) != INT4MM_OK) return st;
    if ((st = check_pointer(a.qweight, "qweight", false)) != INT4MM_OK) return st;
    if ((st = check_pointer(a.mask, "mask", true)) != INT4MM_OK) return st;
    if ((st = check_pointer(a.scales, "scales", false)) != INT4MM_OK) return st;
    if ((st = check_pointer(a.zeros, "zeros", false)) != INT4MM_OK) return st;
    if ((st = check_pointer(a.bias, "bias", true)) != INT4MM_OK) return st;
    if ((st = check_pointer(a.y, "y", false)) != INT4MM_OK) return st;
    return INT4MM_OK;
}

// The wgmma kernel sees only its own section (and, for a dense equivalent,
// no mask: the section is the whole weight).
int4mm_status launch_wgmma_section(const int4mm_matmul_args &a, const PreparedSections &sec,
                                   cudaStream_t stream) {
    int4mm_matmul_args w = a;
    w.mask = nullptr;
    w.prepared = static_cast<const char *>(a.prepared) + sec.wgmma_offset;
    w.layout = INT4MM_LAYOUT_SM90_WGMMA;
    return launch_matmul_wgmma(w, stream);
}

MatmulProblem make_problem(const int4mm_matmul_args &a) {
    MatmulProblem p;
    p.x = a.x;
    p.qweight = reinterpret_cast<const uint32_t *>(a.qweight);
    p.mask = reinterpret_cast<const uint32_t *>(a.mask);
    p.scales = a.scales;
    p.zeros = a.zeros;
    p.bias = a.bias;
    p.y = a.y;
    p.dtype = a.dtype;
    p.device = a.device;
    p.ldx = a.ldx;
    p.ldy = a.ldy;
    p.M = static_cast<int>(a.M);
    p.N = static_cast<int>(a.N);
    p.K = static_cast<int>(a.K);
    p.group_size = static_cast<int>(a.group_size);
    p.group_shift = is_power_of_two(a.group_size) ? log2_exact(a.group_size) : -1;
    return p;
}

// make_problem plus the prepared sections that apply (sec: where they are).
MatmulProblem make_problem(const int4mm_matmul_args &a, PreparedSections *sec) {
    MatmulProblem p = make_problem(a);
    *sec = sections_apply(a) ? prepared_sections(a.layout, a.K, a.N, a.group_size) : PreparedSections{};
    if (sec->tiled_bytes) p.tiled = static_cast<const char *>(a.prepared) + sec->tiled_offset;
    if (sec->wgmma_bytes) {
        const char *base = static_cast<const char *>(a.prepared) + sec->wgmma_offset;
        const wgmma::PreparedParts parts = wgmma::parts(a.K, a.N, a.group_size);
        p.frag.codes = reinterpret_cast<const uint32_t *>(base);
        p.frag.scales = base + parts.soff;
        p.frag.zero_c = base + parts.zoff;
        if (parts.rbytes) p.frag.records = reinterpret_cast<const uint32_t *>(base + parts.roff);
    }
    return p;
}

// Whether the decode kernel runs problem p (make_problem(a, ...)) on `path`,
// and if so the problem it sees (*d): on the SMALL_M path only, on the wgmma
// section's codes only (a dense weight, or a 16:32 weight's dense
// equivalent, whose raw dense arrays do not exist), and where
// decode_supported holds.  int4mm_matmul and int4mm_matmul_decode_config both
// ask here, so that the reported config is the launched one.
bool decode_problem(const int4mm_matmul_args &a, const MatmulProblem &p, int path, MatmulProblem *d) {
    if (path != INT4MM_PATH_SMALL_M || p.frag.codes == nullptr) return false;
    *d = p;
    d->mask = nullptr;
    if (dense_equivalent(a)) d->qweight = nullptr;
    return decode_supported(*d);
}

}  // namespace
}  // namespace int4mm

extern "C" int4mm_status int4mm_matmul(const int4mm_matmul_args *args) {
    using namespace int4mm;
    clear_error();
    if (args == nullptr) return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul: args must not be NULL");
    const int4mm_matmul_args &a = *args;
    int4mm_status st = check_shapes(a);
    if (st != INT4MM_OK) return st;
    if (a.M == 0) return INT4MM_OK;
    if ((st = check_pointers(a)) != INT4MM_OK) return st;

    DeviceGuard guard;
    if ((st = guard.enter(a.device)) != INT4MM_OK) return st;
    PreparedSections sec;
    MatmulProblem p = make_problem(a, &sec);
    const cudaStream_t stream = as_stream(a.stream);
    const int path = resolve_path(a);
    MatmulProblem d;
    if (decode_problem(a, p, path, &d)) return launch_matmul_decode(d, stream);
    if (dense_equivalent(a)) {
        // Only kernels that read nothing but the prepared sections may see the
        // dense equivalent (its dense qweight does not exist); the rest run
        // on the sparse raw arrays below, with the sections ignored.
        d = p;
        d.mask = nullptr;
        d.qweight = nullptr;
        if (path == INT4MM_PATH_SMALL_M) {
            if (d.tiled != nullptr && mma_small_supported(d)) return launch_matmul_mma_small(d, stream, 0, 0);
        } else if (has_wgmma_layout(a)) {
            return launch_wgmma_section(a, sec, stream);
        }
        p.tiled = nullptr;
        p.frag = FragWeights{};
        return path == INT4MM_PATH_SMALL_M ? launch_matmul_small_m(p, stream) : launch_matmul_tc(p, stream);
    }
    switch (path) {
        case INT4MM_PATH_SMALL_M:
            return launch_matmul_small_m(p, stream);
        default:
            if (has_wgmma_layout(a)) return launch_wgmma_section(a, sec, stream);
            return launch_matmul_tc(p, stream);
    }
}

extern "C" int int4mm_matmul_chosen_path(const int4mm_matmul_args *args) {
    if (args == nullptr) return -1;
    const int path = args->path;
    if (path != INT4MM_PATH_AUTO && path != INT4MM_PATH_SMALL_M && path != INT4MM_PATH_LARGE_M) return -1;
    return int4mm::resolve_path(*args);
}

extern "C" int4mm_status int4mm_matmul_decode_config(const int4mm_matmul_args *args, int *config) {
    using namespace int4mm;
    clear_error();
    if (args == nullptr || config == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul_decode_config: args and config must not be NULL");
    for (int i = 0; i < 6; ++i) config[i] = 0;
    const int4mm_matmul_args &a = *args;
    int4mm_status st = check_shapes(a);
    if (st != INT4MM_OK) return st;
    // The same question as int4mm_matmul's (decode_problem).  Nothing is read:
    // the section pointers make_problem derives from args->prepared (a
    // placeholder from the bridge) are only tested against NULL.
    PreparedSections sec;
    MatmulProblem d;
    if (a.M == 0 || !decode_problem(a, make_problem(a, &sec), resolve_path(a), &d)) return INT4MM_OK;
    DeviceGuard guard;
    if ((st = guard.enter(a.device)) != INT4MM_OK) return st;
    DecodeConfig c;
    if ((st = decode_default_config(d, a.device, &c)) != INT4MM_OK) return st;
    const int v[6] = {c.nb, c.mt, c.u, c.wk, c.ks, c.stages};
    for (int i = 0; i < 6; ++i) config[i] = v[i];
    return INT4MM_OK;
}

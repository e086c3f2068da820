#pragma once
// The SIMD building blocks of the fused kernels, chosen once per process by the CPU's features:
// AVX-512 or AVX2+FMA (explicit intrinsics, the same algorithms at 16 and 8 lanes) or portable
// (plain C++ for baseline x86-64). The fused kernels only ever call through this table (and
// its bfloat16 companion, bf16_microkernels.hpp).
//
// The ISA: the best the CPU has, or the one the environment variable LLM_UTILS_ISA names
// (portable, avx2, avx512, avx512_bf16 or amx), read once at the first kernel call; a name the
// CPU cannot run makes every kernel call throw ArgumentError saying so. avx512_bf16 is avx512
// for float32 and vdpbf16ps for bfloat16; amx is avx512_bf16 with the bfloat16 GEMM on AMX
// tiles. amx is only run when named: it has not yet been run on a CPU with AMX (none was
// available), so detected_isa() stops at avx512_bf16.

#include <cstdint>
#include <optional>

namespace llm_utils::cpu {

enum class Isa { portable, avx2, avx512, avx512_bf16, amx };

// The SIMD exp's constants (AVX2 and AVX-512 use the same, for the same bits): clamps, and the
// polynomial p(r) = 1 + r + c2 r^2 + ... + c6 r^6 for exp(r) on |r| <= ln(2)/2, its coefficients
// fitted (iterated weighted least squares) for relative error: 3.1e-9 at most, an eighteenth of
// a float ulp, against the 6e-9 of the degree-7 Taylor polynomial it replaced with one FMA less.
constexpr float kExpClampLow = -150.0f;  // 2^-216 * p rounds to 0: no separate underflow test
constexpr float kExpClampHigh = 88.72f;
constexpr float kExpC2 = 0.4999999403953552f;
constexpr float kExpC3 = 0.1666652113199234f;
constexpr float kExpC4 = 0.04166838899254799f;
constexpr float kExpC5 = 0.008368710055947304f;
constexpr float kExpC6 = 0.001381462556309998f;

const char* isa_name(Isa isa);

struct Microkernels {
  Isa isa;

  /// C (m x n) = (accumulate ? C : 0) + alpha * A (m x k) B (k x n); all row-major with the
  /// given leading dimensions (in elements). No aliasing between C and A or B.
  void (*gemm)(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);

  /// dst (cols x rows, leading dimension ldd) = the transpose of src (rows x cols, leading
  /// dimension lds). Exact (a copy).
  void (*transpose)(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst,
                    int64_t ldd);

  /// sum_p a[p] * b[p], rounded exactly as one element of `gemm` with k = n and alpha = 1 (same
  /// order, same fused or separate multiply-add). The backward's D = dO . O then cancels
  /// exactly against dP = dO . V_j where a row of P is one-hot (O == V_j), as PyTorch's
  /// P (dP - sum(P dP)) does; a differently rounded D would leave noise there that the
  /// (possibly large) keys amplify.
  float (*dot)(const float* a, const float* b, int64_t n);

  /// Largest of x[0..n), n >= 1; NaN if any element is NaN.
  float (*row_max)(const float* x, int64_t n);

  /// x[j] = exp((x[j] - center) * scale - offset) for j < n; returns the sum of the new x
  /// (float). The product is rounded before `offset` is subtracted (no fused multiply-add), so
  /// an element equal to the row max (center) gives exactly exp(-offset) however large it is.
  float (*exp_centered_sum)(float* x, int64_t n, float scale, float center, float offset);

  /// x[j] = exp((x[j] - centers[j]) * scale - offsets[j]) for j < n, with 0 where offsets[j] is
  /// -inf (a fully masked query row). `centers` may be null (all 0). Rounded as
  /// exp_centered_sum.
  void (*exp_centered_each)(float* x, int64_t n, float scale, const float* centers,
                            const float* offsets);

  /// The softmax backward for one key-major row: dp[j] = p[j] * (dp[j] - dsum[j]).
  void (*softmax_grad)(const float* p, float* dp, const float* dsum, int64_t n);

  /// The online-softmax step of the fused forward on one tile of scores s (rows x cols,
  /// leading dimension ld), each row r with its running max m[r] and sum l[r]:
  ///   m' = max(m, max_j s_rj) (NaN if a score is NaN),  s_rj = exp((s_rj - m') * scale)
  ///   (rounded as exp_centered_sum),  c = exp((m - m') * scale) (0 while m is -inf),
  ///   l = l * c + sum_j s_rj,  acc_r *= c (acc (rows x acc_cols), leading dimension ld_acc;
  ///   skipped when c is 1),  m = m'.
  /// A row whose m' is -inf (no key visible yet) gets s = 0 and keeps m, l and acc. c is 1 exactly
  /// when m' = m.
  void (*online_softmax)(float* s, int64_t ld, int64_t rows, int64_t cols, float scale, float* m,
                         float* l, float* acc, int64_t ld_acc, int64_t acc_cols);

  /// The logit softcap on n scores: with y = x[j] * scale and t = tanh(y / cap),
  /// x[j] = cap * t, and grad[j] = 1 - t * t (the derivative by y) when grad is not null.
  /// The SIMD tables take tanh(z) from its Taylor polynomial to z^9 for |z| < 0.25 and from
  /// sign(z) (1 - e) / (1 + e), e = exp(-2 |z|) (their exp) above: within 4e-7 relative of tanh
  /// (tests/test_flash.cpp); portable calls std::tanh. +-inf gives +-cap, NaN stays NaN.
  void (*softcap)(float* x, int64_t n, float scale, float cap, float* grad);
};

// tanh's Taylor coefficients after z (z^3, z^5, z^7, z^9) for the SIMD softcap, and where the
// polynomial hands over to the exponential form.
constexpr float kTanhC3 = -1.0f / 3.0f;
constexpr float kTanhC5 = 2.0f / 15.0f;
constexpr float kTanhC7 = -17.0f / 315.0f;
constexpr float kTanhC9 = 62.0f / 2835.0f;
constexpr float kTanhPolynomialBelow = 0.25f;

/// The float32 table of the ISA in use (selected_isa()).
const Microkernels& microkernels();

/// The best ISA this CPU supports.
Isa detected_isa();

/// Whether this CPU can run the ISA's tables.
bool cpu_supports(Isa isa);

/// The ISA the kernels use: force_isa()'s, else LLM_UTILS_ISA's, else detected_isa(). Throws
/// ArgumentError when LLM_UTILS_ISA names an unknown ISA or one this CPU cannot run.
Isa selected_isa();

/// Parses an ISA name as LLM_UTILS_ISA takes it; throws ArgumentError naming the choices.
Isa parse_isa(const char* name);

/// Forces a table (for tests and benchmarks); nullopt restores LLM_UTILS_ISA or detection.
/// Throws ArgumentError if the CPU lacks the ISA. Not thread-safe: call between computations.
void force_isa(std::optional<Isa> isa);

// One table per ISA, defined in their own translation units.
const Microkernels& portable_microkernels();
const Microkernels& avx2_microkernels();
const Microkernels& avx512_microkernels();

}  // namespace llm_utils::cpu

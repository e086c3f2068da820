#pragma once
// The bfloat16 building blocks of the fused kernels: a GEMM on bfloat16 operands accumulating in
// float32, and the conversions around it. One table per ISA, chosen with the float32 table
// (microkernels.hpp): `avx512_bf16` runs vdpbf16ps; `avx512`, `avx2` and `portable` compute the
// same sums with float32 multiply-adds on the widened operands, bit for bit; `amx` is
// `avx512_bf16` with its GEMM on AMX tiles (amx_gemm.hpp: the same sums in the hardware's order).
//
// The pairs layout. vdpbf16ps multiplies pairs of adjacent bfloat16s, so the GEMM's B operand
// (k x n) is stored with rows 2p and 2p + 1 interleaved: element (r, c) at
//   b[(r / 2) * ldb + 2 * c + r % 2],   ldb >= 2 n (in bfloat16 elements),
// "pair row" p holding n pairs. With k odd the last pair row's second elements must be zero.
// A (m x k) is plain row-major: a row's consecutive elements already form the pairs.

#include <cstdint>

#include "cpu/microkernels.hpp"
#include "llm_utils/bfloat16.hpp"

namespace llm_utils::cpu {

struct Bf16Microkernels {
  Isa isa;

  /// C (m x n) = (accumulate ? C : 0) + alpha * A (m x k) B (k x n): A row-major (lda), B in
  /// pairs (ldb), C float32 row-major (ldc). Each element of A B is summed in float32 from zero,
  /// pair after pair, the pair's second product first, each one multiply-add rounded once
  /// (vdpbf16ps's order; a product of two bfloat16s is exact in float32), then times alpha.
  /// avx512_bf16 treats subnormal inputs and results as zero (the instruction's DAZ / FTZ); the
  /// other tables keep them. amx: the same from zero, 32 of k per tdpbf16ps, in an order within
  /// the 32 that Intel does not promise (amx_gemm.hpp); subnormals as avx512_bf16.
  void (*gemm)(int64_t m, int64_t n, int64_t k, float alpha, const bfloat16* a, int64_t lda,
               const bfloat16* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);

  /// dst[j] = src[j] rounded to bfloat16 (bfloat16.hpp: PyTorch's rounding), j < n.
  void (*round)(const float* src, int64_t n, bfloat16* dst);

  /// One pair row from two float32 rows: dst[2j] = row0[j], dst[2j + 1] = row1[j] (0 when row1
  /// is null), rounded, j < n.
  void (*round_pairs)(const float* row0, const float* row1, int64_t n, bfloat16* dst);

  /// The same from two bfloat16 rows (a copy).
  void (*interleave)(const bfloat16* row0, const bfloat16* row1, int64_t n, bfloat16* dst);

  /// dst[j] = src[j] as float32 (exact), j < n.
  void (*widen)(const bfloat16* src, int64_t n, float* dst);

  /// Microkernels::online_softmax on a float32 tile of scores s, the probabilities stored
  /// rounded into p (rows x cols, leading dimension ld_p) instead of back into s (left
  /// unspecified). m, l and acc as there, l summing the float32 exponentials. The AVX-512
  /// tables' exponential is a cheaper one, exp(x) = 2^(x log2 e) by a degree-5 polynomial
  /// (within 2e-7 relative, where float32's is within 1.2e-7): P is rounded to 2^-9 anyway.
  void (*online_softmax)(float* s, int64_t ld, int64_t rows, int64_t cols, float scale, float* m,
                         float* l, float* acc, int64_t ld_acc, int64_t acc_cols, bfloat16* p,
                         int64_t ld_p);

  /// Microkernels::exp_centered_each (x[j] = exp((x[j] - centers[j]) * scale - offsets[j]),
  /// 0 where offsets[j] is -inf), also storing x rounded into p[j]; the exponential as
  /// online_softmax's.
  void (*exp_centered_each)(float* x, int64_t n, float scale, const float* centers,
                            const float* offsets, bfloat16* p);

  /// The softmax backward of two key-major rows at once, rounded: ds_r[j] = p_r[j] (dp_r[j] -
  /// dsum[j]) for r = 0, 1 (row 1 absent, and taken as zeros, when p1 is null), stored as
  /// bfloat16 rows a0, a1 (a1 untouched when p1 is null) and as one pair row
  /// pairs[2j + r] = ds_r[j]. The float32 dS is not kept.
  void (*softmax_grad_pairs)(const float* p0, const float* p1, const float* dp0, const float* dp1,
                             const float* dsum, int64_t n, bfloat16* a0, bfloat16* a1,
                             bfloat16* pairs);
};

/// The table for the ISA microkernels() runs (ISA avx512_bf16 runs its own; see
/// microkernels.hpp for how the ISA is chosen).
const Bf16Microkernels& bf16_microkernels();

/// Tests only: bf16_microkernels() returns `table` until called again with null (the ISA's
/// table again), e.g. the AMX blocking over emulated tiles on a CPU without AMX. Set it while no
/// kernel runs.
void override_bf16_microkernels_for_testing(const Bf16Microkernels* table);

/// The pairs layout of the transpose of src (rows x cols, cols even, leading dimension lds): the
/// (cols x rows) matrix whose element (c, r) is src's (r, c), as B operand, leading dimension
/// ldd. Element pairs (2p, 2p + 1) of a row of src stay adjacent, so this is the transpose of
/// src viewed as (rows x cols / 2) 32-bit units: the float32 table's transpose, moving bits.
void transpose_to_pairs(const bfloat16* src, int64_t rows, int64_t cols, int64_t lds, bfloat16* dst,
                        int64_t ldd);

// One table per ISA, defined in their own translation units.
const Bf16Microkernels& portable_bf16_microkernels();
const Bf16Microkernels& avx2_bf16_microkernels();
const Bf16Microkernels& avx512_bf16_emulated_microkernels();
const Bf16Microkernels& avx512_bf16_native_microkernels();
const Bf16Microkernels& amx_bf16_microkernels();

}  // namespace llm_utils::cpu

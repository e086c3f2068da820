#pragma once
// The GEMM the modules' projections use: tiny products on the fused kernels' microkernel (no
// call, packing or buffer overhead), the rest on oneDNN's SGEMM (cmake/llm_utilsOneDNN.cmake),
// or CBLAS in a build without it. Same arguments as blas::sgemm.

#include <cstdint>
#include <string>

#include "detail/gemm_types.hpp"
#include "llm_utils/bfloat16.hpp"

namespace llm_utils::kernels {

using detail::Trans;

/// C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C, row-major, leading dimensions
/// in elements; k == 0 gives beta * C. Products of m * n * k <= tiny_gemm_volume() sum in the
/// order OpenBLAS's kernels use at such sizes (one fused multiply-add per k in order), so they
/// give PyTorch's bits there.
void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);

/// The same on bfloat16 operands, accumulating in float32 into a float32 C: oneDNN's bfloat16
/// matmul where oneDNN has a native kernel for this CPU, else the float32 GEMM on the widened
/// operands (exact products either way; the sums' order differs).
void gemm_bf16(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const bfloat16* a, int64_t lda, const bfloat16* b, int64_t ldb, float beta, float* c,
               int64_t ldc);

/// C (m x n, bfloat16) = op(A) op(B) + bias (n; null for none), accumulated in float32 and
/// rounded once to nearest even (by oneDNN, when it runs the product): a bfloat16 projection
/// without a float32 pass over its output.
void gemm_bf16_rounded(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k,
                       const bfloat16* a, int64_t lda, const bfloat16* b, int64_t ldb,
                       const float* bias, bfloat16* c, int64_t ldc);

/// dst[i] = src[i] rounded to bfloat16 (PyTorch's rounding), i < n: vectorised and in
/// parallel, for the modules' large arrays.
void round_to_bf16(const float* src, int64_t n, bfloat16* dst);

/// The largest m * n * k that runs on the microkernel.
int64_t tiny_gemm_volume();

/// What runs the products above that size: "oneDNN 2.6.3 SGEMM" or "CBLAS SGEMM".
std::string gemm_description();

}  // namespace llm_utils::kernels

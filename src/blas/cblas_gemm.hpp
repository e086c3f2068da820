#pragma once
// A thin row-major wrapper over CBLAS SGEMM, so that no other file sees a CBLAS type: the
// reference kernels' only GEMM, and the large-product path of the modules' GEMM
// (kernels/gemm.hpp).

#include <cstdint>

#include "detail/gemm_types.hpp"

namespace llm_utils::blas {

using detail::Trans;

/// C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C, row-major, leading dimensions
/// in elements. k == 0 gives C = beta * C (0 when beta is 0), as the BLAS standard leaves open.
/// Throws ArgumentError when a size exceeds CBLAS's 32-bit int.
void sgemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

}  // namespace llm_utils::blas

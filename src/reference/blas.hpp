#pragma once
// Thin row-major wrappers over CBLAS, so the rest of the code never sees a CBLAS type.

#include <cstdint>

namespace llm_utils::blas {

enum class Trans : bool { no = false, yes = true };

/// C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C, row-major, leading dimensions
/// given in elements.
void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);

}  // namespace llm_utils::blas

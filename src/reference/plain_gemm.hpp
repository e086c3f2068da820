#pragma once
// The reference kernels' GEMM: plain loops for tiny products, CBLAS for the rest. Its own code,
// so that the oracle shares nothing with the fast path (src/cpu) it checks.

#include <cstdint>

#include "detail/gemm_types.hpp"

namespace llm_utils::reference {

using detail::Trans;

/// As blas::sgemm: C (m x n) = alpha * op(A) op(B) + beta * C, row-major.
void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);

}  // namespace llm_utils::reference

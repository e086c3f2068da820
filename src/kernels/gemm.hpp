#pragma once
// The GEMM the modules' projections use: tiny products on the fused kernels' microkernel (no
// call, packing or buffer overhead), the rest on oneDNN's SGEMM (cmake/llm_utilsOneDNN.cmake),
// or CBLAS in a build without it. Same arguments as blas::sgemm.

#include <cstdint>
#include <string>

#include "detail/gemm_types.hpp"

namespace llm_utils::kernels {

using detail::Trans;

/// C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C, row-major, leading dimensions
/// in elements; k == 0 gives beta * C. Products of m * n * k <= tiny_gemm_volume() sum in the
/// order OpenBLAS's kernels use at such sizes (one fused multiply-add per k in order), so they
/// give PyTorch's bits there.
void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);

/// The largest m * n * k that runs on the microkernel.
int64_t tiny_gemm_volume();

/// What runs the products above that size: "oneDNN 2.6.3 SGEMM" or "CBLAS SGEMM".
std::string gemm_description();

}  // namespace llm_utils::kernels

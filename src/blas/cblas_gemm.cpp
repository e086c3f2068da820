#include "blas/cblas_gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <limits>
#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils::blas {

void sgemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // BLAS leaves C untouched when k == 0 only if beta == 1; make the k == 0 case explicit.
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    }
    return;
  }
  // OpenBLAS sums in the order PyTorch's own CPU matmul (OpenBLAS in Debian) does, which keeps
  // ill-conditioned cases (scores in the hundreds) within the parity tolerance.
  // CBLAS takes 32-bit ints and insists on leading dimensions >= 1.
  const auto i32 = [](int64_t x) {
    if (x > std::numeric_limits<int>::max()) {
      throw ArgumentError("gemm: dimension " + std::to_string(x) + " exceeds the BLAS int range");
    }
    return static_cast<int>(std::max<int64_t>(x, 1));
  };
  cblas_sgemm(CblasRowMajor, trans_a == Trans::yes ? CblasTrans : CblasNoTrans,
              trans_b == Trans::yes ? CblasTrans : CblasNoTrans, i32(m), i32(n), i32(k), alpha, a,
              i32(lda), b, i32(ldb), beta, c, i32(ldc));
}

}  // namespace llm_utils::blas

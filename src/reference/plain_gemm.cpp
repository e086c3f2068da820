#include "reference/plain_gemm.hpp"

#include <cmath>

#include "blas/cblas_gemm.hpp"

namespace llm_utils::reference {
namespace {

// Below this m * n * k (the book's 6 x 6 scores are 72) a CBLAS call costs more than the
// arithmetic. The loops sum as OpenBLAS's kernels do when k needs no blocking: one accumulator
// per element, one fused multiply-add per p in order, then C = beta * C + alpha * acc (C set to
// +0 first when beta is 0).
constexpr int64_t kPlainGemmVolume = 4096;

// The loops, compiled into both functions below: with FMA instructions and without. std::fma is
// exact either way, so both give the same bits.
__attribute__((always_inline)) inline void plain_gemm_loops(Trans trans_a, Trans trans_b, int64_t m,
                                                            int64_t n, int64_t k, float alpha,
                                                            const float* a, int64_t lda,
                                                            const float* b, int64_t ldb, float beta,
                                                            float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p) {
        const float a_ip = trans_a == Trans::yes ? a[p * lda + i] : a[i * lda + p];
        const float b_pj = trans_b == Trans::yes ? b[j * ldb + p] : b[p * ldb + j];
        acc = std::fma(a_ip, b_pj, acc);
      }
      float& out = c[i * ldc + j];
      const float scaled = beta == 0.0f ? 0.0f : (beta == 1.0f ? out : beta * out);
      out = scaled + alpha * acc;
    }
  }
}

__attribute__((target("fma"))) void plain_gemm_fma(Trans trans_a, Trans trans_b, int64_t m,
                                                   int64_t n, int64_t k, float alpha,
                                                   const float* a, int64_t lda, const float* b,
                                                   int64_t ldb, float beta, float* c, int64_t ldc) {
  plain_gemm_loops(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void plain_gemm_baseline(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                         const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                         float* c, int64_t ldc) {
  plain_gemm_loops(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Chosen at the first call (not by an ifunc resolver, which would run before a sanitizer's
// runtime is up).
void plain_gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc) {
  static const bool has_fma = __builtin_cpu_supports("fma");
  (has_fma ? plain_gemm_fma : plain_gemm_baseline)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                                                   beta, c, ldc);
}

}  // namespace

void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  if (m > 0 && n > 0 && k > 0 && m * n * k <= kPlainGemmVolume) {
    plain_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  blas::sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace llm_utils::reference

#include "kernels/gemm.hpp"

#if LLM_UTILS_HAVE_ONEDNN
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#endif

#include <string>

#include "blas/cblas_gemm.hpp"
#include "cpu/microkernels.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils::kernels {
namespace {

// Products this small (the book's 6 x 3 example: 6 x 2 x 3) cost OpenBLAS more in its call,
// packing and buffer management than in arithmetic: the book's forward spent ~40% of its 2 us
// there (perf, 2 cores AVX2). Below this m * n * k they run on the fused kernels' GEMM
// microkernel, which sums as OpenBLAS's kernels do for a k that needs no blocking: one
// accumulator per element, a fused multiply-add per p in order (plain multiply-add without
// FMA, as OpenBLAS's SSE kernels), then alpha * acc added to beta * C.
constexpr int64_t kTinyGemmVolume = 4096;

void tiny_gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc) {
  const cpu::Microkernels& mk = cpu::microkernels();
  // The microkernel takes row-major, untransposed operands: transposed ones are copied.
  float a_copy[kTinyGemmVolume], b_copy[kTinyGemmVolume];  // (m, k) and (k, n), m*k, k*n <= volume
  if (trans_a == Trans::yes) {                             // a holds A^T (k, m)
    mk.transpose(a, k, m, lda, a_copy, k);
    a = a_copy;
    lda = k;
  }
  if (trans_b == Trans::yes) {  // b holds B^T (n, k)
    mk.transpose(b, n, k, ldb, b_copy, n);
    b = b_copy;
    ldb = n;
  }
  // As OpenBLAS: C scaled by beta first (set to +0 when beta is 0, so an exact -0 product
  // comes out +0 as it does there), then alpha * acc added.
  if (beta != 1.0f) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    }
  }
  mk.gemm(m, n, k, alpha, a, lda, b, ldb, c, ldc, /*accumulate=*/true);
}

#if LLM_UTILS_HAVE_ONEDNN
// oneDNN's SGEMM, row-major as ours. It sizes its OpenMP team by the calling thread's
// omp_get_max_threads(), which set_num_threads() set only in the thread that called it: set it
// here too, so the count holds in every thread, as for the fused kernels.
void onednn_gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  const int threads = get_num_threads();
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
  const dnnl_status_t status =
      dnnl_sgemm(trans_a == Trans::yes ? 'T' : 'N', trans_b == Trans::yes ? 'T' : 'N', m, n, k,
                 alpha, a, lda, b, ldb, beta, c, ldc);
  if (status != dnnl_success) {
    throw Error("gemm: oneDNN's sgemm failed (status " + std::to_string(status) + ") on " +
                std::to_string(m) + " x " + std::to_string(n) + " x " + std::to_string(k));
  }
}
#endif

}  // namespace

void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  if (m > 0 && n > 0 && k > 0 && m * n * k <= kTinyGemmVolume) {
    tiny_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
#if LLM_UTILS_HAVE_ONEDNN
  if (m > 0 && n > 0 && k > 0) {
    onednn_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
#endif
  blas::sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

std::string gemm_description() {
#if LLM_UTILS_HAVE_ONEDNN
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) + " SGEMM";
#else
  return "CBLAS SGEMM";
#endif
}

int64_t tiny_gemm_volume() {
  return kTinyGemmVolume;
}

}  // namespace llm_utils::kernels

// The projections' bfloat16 GEMM (gemm.hpp): oneDNN's matmul primitive on bfloat16 operands with
// a float32 result where oneDNN has a native kernel for this CPU (AVX512_BF16, AMX, or its
// AVX-512 emulation), else the float32 GEMM on the widened operands (the products of two
// bfloat16s are exact in float32, so both are bfloat16 inputs with float32 accumulation).

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/gemm.hpp"

#if LLM_UTILS_HAVE_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "cpu/bf16_microkernels.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils::kernels {
namespace {

// op(X) (rows x cols) of a bfloat16 matrix held as X (ld) or X^T, widened into a contiguous
// (rows x cols) float32 one.
std::vector<float> widened(Trans trans, int64_t rows, int64_t cols, const bfloat16* x, int64_t ld) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  if (trans == Trans::no) {
    const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
    for (int64_t r = 0; r < rows; ++r) mk.widen(x + r * ld, cols, out.data() + r * cols);
  } else {
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t r = 0; r < rows; ++r) out[r * cols + c] = static_cast<float>(x[c * ld + r]);
    }
  }
  return out;
}

void widened_gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const bfloat16* a, int64_t lda, const bfloat16* b, int64_t ldb, float beta,
                  float* c, int64_t ldc) {
  const std::vector<float> a32 = widened(trans_a, m, k, a, lda);  // (m, k)
  const std::vector<float> b32 = widened(trans_b, k, n, b, ldb);  // (k, n)
  gemm(Trans::no, Trans::no, m, n, k, alpha, a32.data(), k, b32.data(), n, beta, c, ldc);
}

#if LLM_UTILS_HAVE_ONEDNN
// One matmul primitive per shape, layout and scaling, built once (building one JIT-compiles
// its kernel); null where oneDNN has only its reference implementation for this CPU.
// (trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta, with bias, bfloat16 C)
using MatmulKey = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                             float, float, bool, bool>;

struct MatmulCache {
  std::mutex mutex;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::map<MatmulKey, std::shared_ptr<dnnl::matmul>> primitives;
};

MatmulCache& matmul_cache() {
  static MatmulCache cache;
  return cache;
}

dnnl::memory::desc matrix_desc(dnnl::memory::data_type type, int64_t rows, int64_t cols,
                               bool transposed, int64_t ld) {
  const dnnl::memory::dims strides =
      transposed ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  return dnnl::memory::desc({rows, cols}, type, strides);
}

std::shared_ptr<dnnl::matmul> matmul_for(const MatmulKey& key) {
  MatmulCache& cache = matmul_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  const auto found = cache.primitives.find(key);
  if (found != cache.primitives.end()) return found->second;
  const auto [ta, tb, m, n, k, lda, ldb, ldc, alpha, beta, bias, bf16_out] = key;
  using dt = dnnl::memory::data_type;
  const dnnl::memory::desc c_desc = matrix_desc(bf16_out ? dt::bf16 : dt::f32, m, n, false, ldc);
  const dnnl::matmul::desc desc =
      bias ? dnnl::matmul::desc(matrix_desc(dt::bf16, m, k, ta, lda),
                                matrix_desc(dt::bf16, k, n, tb, ldb),
                                matrix_desc(dt::f32, 1, n, false, n), c_desc)
           : dnnl::matmul::desc(matrix_desc(dt::bf16, m, k, ta, lda),
                                matrix_desc(dt::bf16, k, n, tb, ldb), c_desc);
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  std::shared_ptr<dnnl::matmul> prim;
  try {
    const dnnl::matmul::primitive_desc pd(desc, attr, cache.engine);
    if (std::string(pd.impl_info_str()).rfind("ref", 0) != 0) {
      prim = std::make_shared<dnnl::matmul>(pd);
    }
  } catch (const dnnl::error& e) {
    // No implementation at all (oneDNN 2.6 on an AVX2-only CPU has none for bfloat16): the
    // caller falls back to the widened float32 GEMM. Any other failure is an error.
    if (e.status != dnnl_unimplemented) throw;
  }
  cache.primitives.emplace(key, prim);
  return prim;
}

// False when oneDNN has no native kernel for this product on this CPU. C is float32 or, with
// c_bf16, bfloat16 (rounded by oneDNN: to nearest even); bias (n) or null.
bool onednn_gemm_bf16(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const bfloat16* a, int64_t lda, const bfloat16* b, int64_t ldb, float beta,
                      const float* bias, void* c, int64_t ldc, bool c_bf16) {
  const MatmulKey key{trans_a == Trans::yes,
                      trans_b == Trans::yes,
                      m,
                      n,
                      k,
                      lda,
                      ldb,
                      ldc,
                      alpha,
                      beta,
                      bias != nullptr,
                      c_bf16};
  const std::shared_ptr<dnnl::matmul> prim = matmul_for(key);
  if (!prim) return false;
  // oneDNN sizes its OpenMP team by this thread's omp_get_max_threads() (gemm.cpp).
  const int threads = get_num_threads();
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
  using dt = dnnl::memory::data_type;
  const dnnl::engine& engine = matmul_cache().engine;
  dnnl::memory ma(matrix_desc(dt::bf16, m, k, trans_a == Trans::yes, lda), engine,
                  const_cast<bfloat16*>(a));
  dnnl::memory mb(matrix_desc(dt::bf16, k, n, trans_b == Trans::yes, ldb), engine,
                  const_cast<bfloat16*>(b));
  dnnl::memory mc(matrix_desc(c_bf16 ? dt::bf16 : dt::f32, m, n, false, ldc), engine, c);
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  if (bias != nullptr) {
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(matrix_desc(dt::f32, 1, n, false, n), engine,
                                             const_cast<float*>(bias)));
  }
  dnnl::stream stream(engine);
  prim->execute(stream, args);
  stream.wait();
  return true;
}
#endif

}  // namespace

void gemm_bf16(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const bfloat16* a, int64_t lda, const bfloat16* b, int64_t ldb, float beta, float* c,
               int64_t ldc) {
  if (m == 0 || n == 0) return;
#if LLM_UTILS_HAVE_ONEDNN
  if (k > 0 && m * n * k > tiny_gemm_volume()) {
    try {
      if (onednn_gemm_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, nullptr, c, ldc,
                           false)) {
        return;
      }
    } catch (const dnnl::error& e) {
      throw Error(std::string("gemm_bf16: oneDNN's matmul failed: ") + e.what());
    }
  }
#endif
  widened_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_bf16_rounded(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k,
                       const bfloat16* a, int64_t lda, const bfloat16* b, int64_t ldb,
                       const float* bias, bfloat16* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
#if LLM_UTILS_HAVE_ONEDNN
  if (k > 0 && m * n * k > tiny_gemm_volume()) {
    try {
      if (onednn_gemm_bf16(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, bias, c, ldc,
                           true)) {
        return;
      }
    } catch (const dnnl::error& e) {
      throw Error(std::string("gemm_bf16_rounded: oneDNN's matmul failed: ") + e.what());
    }
  }
#endif
  // float32 C (m, n) = bias + A B, then rounded row by row.
  std::vector<float> c32(static_cast<size_t>(m * n));
  if (bias != nullptr) {
    for (int64_t i = 0; i < m; ++i) std::copy(bias, bias + n, c32.data() + i * n);
  }
  widened_gemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, bias != nullptr ? 1.0f : 0.0f,
               c32.data(), n);
  const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
  for (int64_t i = 0; i < m; ++i) mk.round(c32.data() + i * n, n, c + i * ldc);
}

void round_to_bf16(const float* src, int64_t n, bfloat16* dst) {
  constexpr int64_t kChunk = 1 << 16;
  const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) mk.round(src + c0, std::min(kChunk, n - c0), dst + c0);
}

}  // namespace llm_utils::kernels

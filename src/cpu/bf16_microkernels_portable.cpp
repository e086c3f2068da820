// The portable bfloat16 table: plain C++. A product of two bfloat16s is exact in float32, so
// `acc + a * b` in float32 rounds once, as a fused multiply-add would: the same bits as
// vdpbf16ps (bf16_microkernels.hpp) without needing FMA hardware.

#include <algorithm>

#include "cpu/bf16_microkernels.hpp"
#include "cpu/bf16_steps_by_rows.hpp"

namespace llm_utils::cpu {
namespace {

constexpr int64_t kColumnChunk = 256;

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const bfloat16* a, int64_t lda,
          const bfloat16* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  float acc[kColumnChunk];  // one row of the product, a chunk of columns at a time
  for (int64_t j0 = 0; j0 < n; j0 += kColumnChunk) {
    const int64_t nc = std::min(kColumnChunk, n - j0);
    for (int64_t i = 0; i < m; ++i) {
      std::fill(acc, acc + nc, 0.0f);
      const bfloat16* a_row = a + i * lda;
      for (int64_t p = 0; 2 * p < k; ++p) {
        const bool half = 2 * p + 1 == k;
        const float a0 = static_cast<float>(a_row[2 * p]);
        const float a1 = half ? 0.0f : static_cast<float>(a_row[2 * p + 1]);
        const bfloat16* b_row = b + p * ldb + 2 * j0;
        for (int64_t j = 0; j < nc; ++j) {
          acc[j] += a1 * static_cast<float>(b_row[2 * j + 1]);
          acc[j] += a0 * static_cast<float>(b_row[2 * j]);
        }
      }
      float* c_row = c + i * ldc + j0;
      for (int64_t j = 0; j < nc; ++j) {
        const float scaled = acc[j] * alpha;
        c_row[j] = accumulate ? c_row[j] + scaled : scaled;
      }
    }
  }
}

void round(const float* src, int64_t n, bfloat16* dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = bfloat16(src[j]);
}

void round_pairs(const float* row0, const float* row1, int64_t n, bfloat16* dst) {
  for (int64_t j = 0; j < n; ++j) {
    dst[2 * j] = bfloat16(row0[j]);
    dst[2 * j + 1] = row1 != nullptr ? bfloat16(row1[j]) : bfloat16();
  }
}

void interleave(const bfloat16* row0, const bfloat16* row1, int64_t n, bfloat16* dst) {
  for (int64_t j = 0; j < n; ++j) {
    dst[2 * j] = row0[j];
    dst[2 * j + 1] = row1 != nullptr ? row1[j] : bfloat16();
  }
}

void widen(const bfloat16* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
}

using Steps = Bf16StepsByRows<portable_microkernels, round, round_pairs>;

}  // namespace

const Bf16Microkernels& portable_bf16_microkernels() {
  static const Bf16Microkernels table{Isa::portable,
                                      gemm,
                                      round,
                                      round_pairs,
                                      interleave,
                                      widen,
                                      Steps::online_softmax,
                                      Steps::exp_centered_each,
                                      Steps::softmax_grad_pairs};
  return table;
}

// Defined here, with the portable table, for every ISA: it only moves bits.
void transpose_to_pairs(const bfloat16* src, int64_t rows, int64_t cols, int64_t lds, bfloat16* dst,
                        int64_t ldd) {
  const int64_t pairs = cols / 2;
  if (lds % 2 != 0 || ldd % 2 != 0) {  // rows not on 32-bit units: element by element
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) dst[(c / 2) * ldd + 2 * r + c % 2] = src[r * lds + c];
    }
  } else if (pairs > 0) {
    // The float32 transpose on 32-bit units: it loads and stores, never computes, so NaN bit
    // patterns pass unchanged.
    microkernels().transpose(reinterpret_cast<const float*>(src), rows, pairs, lds / 2,
                             reinterpret_cast<float*>(dst), ldd / 2);
  }
  if (cols % 2 == 1) {  // the last pair row holds the last column alone: second elements zero
    for (int64_t r = 0; r < rows; ++r) {
      dst[pairs * ldd + 2 * r] = src[r * lds + cols - 1];
      dst[pairs * ldd + 2 * r + 1] = bfloat16();
    }
  }
}

}  // namespace llm_utils::cpu

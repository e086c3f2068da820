#pragma once
// The fused bfloat16 steps of Bf16Microkernels (online_softmax, exp_centered_each,
// softmax_grad_pairs) for the tables without their own (AVX2, portable): the ISA's float32
// step, then its results rounded with the ISA's bfloat16 rounding. Included by those tables'
// files only, so it compiles with their flags; each gets its own copy.

#include <algorithm>
#include <cstdint>

#include "cpu/bf16_microkernels.hpp"

namespace llm_utils::cpu {
namespace {

// `Round` and `RoundPairs` are the including table's round and round_pairs.
template <auto Float32Table, auto Round, auto RoundPairs>
struct Bf16StepsByRows {
  static void online_softmax(float* s, int64_t ld, int64_t rows, int64_t cols, float scale,
                             float* m, float* l, float* acc, int64_t ld_acc, int64_t acc_cols,
                             bfloat16* p, int64_t ld_p) {
    Float32Table().online_softmax(s, ld, rows, cols, scale, m, l, acc, ld_acc, acc_cols);
    for (int64_t r = 0; r < rows; ++r) Round(s + r * ld, cols, p + r * ld_p);
  }

  static void exp_centered_each(float* x, int64_t n, float scale, const float* centers,
                                const float* offsets, bfloat16* p) {
    Float32Table().exp_centered_each(x, n, scale, centers, offsets);
    Round(x, n, p);
  }

  static void softmax_grad_pairs(const float* p0, const float* p1, const float* dp0,
                                 const float* dp1, const float* dsum, int64_t n, bfloat16* a0,
                                 bfloat16* a1, bfloat16* pairs) {
    constexpr int64_t kChunk = 256;
    float ds0[kChunk], ds1[kChunk];  // one chunk of each row's dS
    for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
      const int64_t len = std::min(kChunk, n - j0);
      std::copy(dp0 + j0, dp0 + j0 + len, ds0);
      Float32Table().softmax_grad(p0 + j0, ds0, dsum + j0, len);
      Round(ds0, len, a0 + j0);
      if (p1 != nullptr) {
        std::copy(dp1 + j0, dp1 + j0 + len, ds1);
        Float32Table().softmax_grad(p1 + j0, ds1, dsum + j0, len);
        Round(ds1, len, a1 + j0);
      }
      RoundPairs(ds0, p1 != nullptr ? ds1 : nullptr, len, pairs + 2 * j0);
    }
  }
};

}  // namespace
}  // namespace llm_utils::cpu

#pragma once
// One attention call on raw pointers, after the public entry points (attention.cpp) checked the
// shapes: what the reference and the fused kernels both receive.
//
// Shapes (row-major, contiguous): q (B, N, d), k (B, M, d), v (B, M, dv), out (B, N, dv),
// lse (B, N), mask (N, M) shared or (B, N, M). Scores are S = (Q K^T) / divisor (+ mask), with
// key j hidden from query i when causal and j > i.

#include <cstdint>

namespace llm_utils::detail {

struct AttentionProblem {
  int64_t batch = 0;
  int64_t n = 0;   // queries per batch element
  int64_t m = 0;   // keys per batch element
  int64_t d = 0;   // head dim of q and k
  int64_t dv = 0;  // head dim of v
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float divisor = 1.0f;  // scores are divided by it (the reference) or multiplied by `scale`
  float scale = 1.0f;    // 1 / divisor
  bool causal = false;
  const float* mask = nullptr;    // additive, in scaled units; nullptr for none
  int64_t mask_batch_stride = 0;  // 0 when one (N, M) mask serves every batch element
};

}  // namespace llm_utils::detail

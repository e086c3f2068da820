#pragma once
// One attention call on raw pointers, after the public entry points (attention.cpp) or a module
// checked the shapes: what the reference and the fused kernels both receive.
//
// Shapes (row-major): q (B, N, d) contiguous; k and v hold B / kv_group batch elements of
// (M, d) and (M, dv) rows, `k_stride` / `v_stride` elements apart (M * d and M * dv when
// contiguous; larger for a KV cache with spare capacity). Query batch element b reads k/v
// element b / kv_group: grouped-query attention when kv_group > 1, heads h of a group
// consecutive. Outputs are contiguous: out (B, N, dv), lse (B, N); gradients dq as q, dk
// (B / kv_group, M, d), dv (B / kv_group, M, dv).
//
// Scores are S = (Q K^T) / divisor (+ mask), with key j hidden from query i when causal and
// j > i + query_offset (query i sits at key position i + query_offset, as after a KV cache's
// query_offset earlier tokens).

#include <algorithm>
#include <cstdint>

namespace llm_utils::detail {

struct AttentionProblem {
  int64_t batch = 0;  // query batch elements B (batch x heads, flattened)
  int64_t n = 0;      // queries per batch element
  int64_t m = 0;      // keys per batch element
  int64_t d = 0;      // head dim of q and k
  int64_t dv = 0;     // head dim of v
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t k_stride = 0;  // elements between k batch elements
  int64_t v_stride = 0;  // elements between v batch elements
  int64_t kv_group = 1;  // query batch elements per k/v batch element
  float divisor = 1.0f;  // scores are divided by it (the reference) or multiplied by `scale`
  float scale = 1.0f;    // 1 / divisor
  bool causal = false;
  int64_t query_offset = 0;  // >= 0; the key position of query 0 for the causal mask
  // Additive mask in scaled units, nullptr for none. Its element for (b, i, j) is
  //   mask[(b / mask_heads) * mask_stride_outer + (b % mask_heads) * mask_stride_head
  //        + i * mask_stride_row + j * mask_stride_col],
  // so a stride of 0 broadcasts that dimension; mask_heads splits b into (outer, head) as a
  // module flattens (batch, heads).
  const float* mask = nullptr;
  int64_t mask_heads = 1;
  int64_t mask_stride_outer = 0;
  int64_t mask_stride_head = 0;
  int64_t mask_stride_row = 0;
  int64_t mask_stride_col = 0;

  int64_t kv_batch() const { return batch / kv_group; }
  /// The (M, d) keys and (M, dv) values that query batch element b attends to.
  const float* k_of(int64_t b) const { return k + (b / kv_group) * k_stride; }
  const float* v_of(int64_t b) const { return v + (b / kv_group) * v_stride; }
  /// The mask's element (b, 0, 0); index it with mask_index(i, j). Only when mask != nullptr.
  const float* mask_of(int64_t b) const {
    return mask + (b / mask_heads) * mask_stride_outer + (b % mask_heads) * mask_stride_head;
  }
  int64_t mask_index(int64_t i, int64_t j) const {
    return i * mask_stride_row + j * mask_stride_col;
  }
  /// Keys [0, visible_end(i)) are not hidden from query i by the causal mask.
  int64_t visible_end(int64_t i) const {
    return causal ? std::min(m, std::max<int64_t>(0, i + query_offset + 1)) : m;
  }
};

/// Per query row softmax statistics that the fused forward can leave for the fused backward and
/// attention weights: the row max m (in the units the kernel exponentiates: raw scores, or
/// scaled scores plus mask when a mask is present) and log(l), l = sum_j exp((s_j - m) * scale).
/// P = exp((s - m) * scale - log l) is then exact near the row max however large the scores,
/// where exp(s * scale - lse) loses |lse| * 6e-8 to the rounding of lse (PyTorch's own
/// recomputation from saved probabilities has no such loss). Each (B, N); both or neither.
struct RowStats {
  float* row_max = nullptr;
  float* log_sum = nullptr;
  bool given() const { return row_max != nullptr; }
};

/// What a module hands its backward: the statistics it saved when its last forward ran the
/// fused kernel (which wrote them), else none (the kernels then use lse). Only read from here.
inline RowStats saved_row_stats(const float* row_max, const float* log_sum, bool fused_forward) {
  if (!fused_forward) return {};
  return {const_cast<float*>(row_max), const_cast<float*>(log_sum)};
}

}  // namespace llm_utils::detail

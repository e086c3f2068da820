#pragma once
// One attention call on raw pointers, after the public entry points (kernels/attention.cpp) or a
// module checked every shape: what the reference and the fused kernels both receive.
//
// Every tensor is a set of (batch, head) matrices with contiguous rows and arbitrary batch, head
// and row strides (Strided), so a module can point q, k and v at the heads of one packed
// projection (B, N, (H + 2G) * hd) and write the merged (B, N, H * hd) output in place:
//
//   q (B, H, N, d)     k (B, G, M, d)     v (B, G, M, dv)     out (B, H, N, dv)     lse (B, H, N)
//   dout, dq, dk, dv as out, q, k, v.
//
// Query head h of batch element b attends to key/value head h / (H / G) of b: grouped-query
// attention when G < H, the H / G heads of a group consecutive (PyTorch's repeat_interleave).
// Kernels loop over the B * H query heads as one flattened index g = b * H + h.
//
// Scores, in this order (each step only when asked for):
//   S = (Q K^T) / divisor;  S = softcap * tanh(S / softcap);  S += -alibi_slope_h * |pos_i - j|;
//   S += mask;  S = -inf for keys outside query i's visible range;
// and the softmax's denominator may add exp(sink_h) (an attention sink: a logit with no value).
// Query i sits at key position pos_i = i + query_offset (as after a KV cache's query_offset
// earlier tokens); with packed sequences (seq_starts_q / seq_starts_k, cu_seqlens) it sits at
// the same distance from its sequence's last key as from its sequence's last query. Its visible
// keys are those of its own sequence (all of them without packing) at positions <= pos_i when
// causal and >= pos_i - window_left with a sliding window.

#include <algorithm>
#include <cstdint>

#include "llm_utils/bfloat16.hpp"

namespace llm_utils::detail {

/// A (batch, heads, rows, cols) array whose rows are contiguous: row r of matrix (b, h) starts
/// at data + b * batch_stride + h * head_stride + r * row_stride. For lse-like (B, H, N) arrays
/// each "row" is one element, row_stride 1.
template <typename T>
struct Strided {
  T* data = nullptr;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t row_stride = 0;

  T* matrix(int64_t b, int64_t h) const { return data + b * batch_stride + h * head_stride; }
  T* row(int64_t b, int64_t h, int64_t r) const { return matrix(b, h) + r * row_stride; }
  /// The same array read-only.
  Strided<const T> as_const() const { return {data, batch_stride, head_stride, row_stride}; }
  /// A contiguous (batch, heads, rows, cols) array.
  static Strided contiguous(T* data, int64_t heads, int64_t rows, int64_t cols) {
    return {data, heads * rows * cols, rows * cols, cols};
  }
};

/// Everything about one attention call but its q, k, v: sizes, scale, masks, and where each
/// (batch, head) matrix of a query-like or key-like array starts.
struct AttentionShape {
  int64_t batch = 0;     // B
  int64_t heads = 0;     // H: query heads per batch element
  int64_t kv_heads = 0;  // G: key/value heads per batch element, a divisor of H
  int64_t n = 0;         // queries per head
  int64_t m = 0;         // keys per head
  int64_t d = 0;         // head dim of q and k
  int64_t dv = 0;        // head dim of v
  float divisor = 1.0f;  // scores are divided by it (the reference) or multiplied by `scale`
  float scale = 1.0f;    // 1 / divisor
  bool causal = false;
  int64_t query_offset = 0;  // >= 0; the key position of query 0 for the causal mask
  // Additive mask in scaled units, nullptr for none. Its element for (g, i, j), g = b * H + h
  // the flattened query head, is
  //   mask[(g / mask_heads) * mask_stride_outer + (g % mask_heads) * mask_stride_head
  //        + i * mask_stride_row + j * mask_stride_col],
  // so a stride of 0 broadcasts that dimension; mask_heads splits g into (outer, head), as H does
  // for a (B, H, N, M) mask.
  const float* mask = nullptr;
  int64_t mask_heads = 1;
  int64_t mask_stride_outer = 0;
  int64_t mask_stride_head = 0;
  int64_t mask_stride_row = 0;
  int64_t mask_stride_col = 0;
  // Sliding window: keys before pos_i - window_left are hidden; < 0 for none.
  int64_t window_left = -1;
  // Logit softcap (Gemma 2), 0 for none.
  float softcap = 0.0f;
  // Per query head h = g % heads, nullptr for none: ALiBi slopes and sink logits (scaled units).
  const float* alibi_slopes = nullptr;
  const float* sinks = nullptr;
  // Packed sequences, nullptr for none (then batch = 1): sequence s holds queries
  // [seq_starts_q[s], seq_starts_q[s + 1]) and keys [seq_starts_k[s], seq_starts_k[s + 1]),
  // `sequences` + 1 nondecreasing entries each, from 0 to n and to m.
  const int64_t* seq_starts_q = nullptr;
  const int64_t* seq_starts_k = nullptr;
  int64_t sequences = 0;

  /// B * H, the flattened query heads g the kernels loop over.
  int64_t query_heads() const { return batch * heads; }
  /// B * G, the flattened key/value heads.
  int64_t kv_count() const { return batch * kv_heads; }
  /// H / G: query heads per key/value head.
  int64_t kv_group() const { return heads / kv_heads; }
  /// The flattened key/value head that query head g attends to.
  int64_t kv_of(int64_t g) const { return (g / heads) * kv_heads + (g % heads) / kv_group(); }
  /// The first of the kv_group() consecutive query heads that attend to key/value head kv.
  int64_t first_query_head(int64_t kv) const {
    return (kv / kv_heads) * heads + (kv % kv_heads) * kv_group();
  }

  /// Matrix g of a (B, H, ...) array: q, out, lse, dout, dq.
  template <typename T>
  T* query_matrix(const Strided<T>& a, int64_t g) const {
    return a.matrix(g / heads, g % heads);
  }
  /// Matrix kv of a (B, G, ...) array: k, v, dk, dv.
  template <typename T>
  T* kv_matrix(const Strided<T>& a, int64_t kv) const {
    return a.matrix(kv / kv_heads, kv % kv_heads);
  }

  /// The mask's element (g, 0, 0); index it with mask_index(i, j). Only when mask != nullptr.
  const float* mask_of(int64_t g) const {
    return mask + (g / mask_heads) * mask_stride_outer + (g % mask_heads) * mask_stride_head;
  }
  int64_t mask_index(int64_t i, int64_t j) const {
    return i * mask_stride_row + j * mask_stride_col;
  }
  /// Query i's key position and its visible keys [begin, end) (begin == end: none). Both ends
  /// are nondecreasing in i, which the kernels' block skipping relies on.
  struct KeyRange {
    int64_t pos, begin, end;
  };
  KeyRange key_range(int64_t i) const {
    int64_t first = 0, last = m, pos = i + query_offset;
    if (seq_starts_q != nullptr) {
      // The sequence holding query i: the last start <= i (empty sequences skipped).
      const int64_t s =
          std::upper_bound(seq_starts_q, seq_starts_q + sequences + 1, i) - seq_starts_q - 1;
      first = seq_starts_k[s];
      last = seq_starts_k[s + 1];
      pos = last - (seq_starts_q[s + 1] - i) + query_offset;
    }
    int64_t begin = first, end = last;
    if (causal) end = std::clamp<int64_t>(pos + 1, first, last);
    if (window_left >= 0) begin = std::clamp<int64_t>(pos - window_left, first, end);
    return {pos, begin, end};
  }
  /// Whether any score needs more than the scale and the key range: then the kernels scale
  /// scores before the exponent and use scale 1 in it.
  bool modifies_scores() const {
    return mask != nullptr || softcap != 0.0f || alibi_slopes != nullptr || sinks != nullptr;
  }
  /// Whether some key may be hidden by the key range (causal, window or packing).
  bool limits_keys() const { return causal || window_left >= 0 || seq_starts_q != nullptr; }
  /// True when there is nothing to compute: no query head or no query.
  bool no_queries() const { return batch == 0 || heads == 0 || n == 0; }
};

/// One attention call on q, k, v of element type T: float, or bfloat16 (whose kernels
/// accumulate and take the softmax in float32; the mask, lse and statistics stay float32).
template <typename T>
struct BasicAttentionProblem : AttentionShape {
  Strided<const T> q, k, v;
  // Paged keys and values (attention_forward_paged; batch 1), null for none: key j of key/value
  // head kv is row j % page_size of page pages[j / page_size], the pages k.batch_stride (v's:
  // v.batch_stride) elements apart, the heads head_stride apart within a row. Only the fused
  // forward reads such a problem (through key_rows / value_rows).
  const int64_t* pages = nullptr;
  int64_t page_size = 0;

  /// The (M, d) keys and (M, dv) values query head g attends to; rows k.row_stride apart.
  /// Not for a paged problem.
  const T* k_of(int64_t g) const { return kv_matrix(k, kv_of(g)); }
  const T* v_of(int64_t g) const { return kv_matrix(v, kv_of(g)); }
  /// The (N, d) queries of head g, rows q.row_stride apart.
  const T* q_of(int64_t g) const { return query_matrix(q, g); }

  /// Key j of query head g, the first of keys_in_run(j) rows k.row_stride apart (every key to
  /// the end without paging, the rest of j's page with it); likewise the value rows.
  const T* key_rows(int64_t g, int64_t j) const { return rows_of(k, g, j); }
  const T* value_rows(int64_t g, int64_t j) const { return rows_of(v, g, j); }
  int64_t keys_in_run(int64_t j) const {
    return pages == nullptr ? m - j : page_size - j % page_size;
  }

 private:
  const T* rows_of(const Strided<const T>& a, int64_t g, int64_t j) const {
    if (pages == nullptr) return kv_matrix(a, kv_of(g)) + j * a.row_stride;
    return a.data + pages[j / page_size] * a.batch_stride + kv_of(g) * a.head_stride +
           (j % page_size) * a.row_stride;
  }
};

using AttentionProblem = BasicAttentionProblem<float>;
using Bf16AttentionProblem = BasicAttentionProblem<bfloat16>;

/// Per query row softmax statistics that the fused forward can leave for the fused backward and
/// attention weights: the row max m (in the units the kernel exponentiates: raw scores, or
/// scaled scores plus mask when a mask is present) and log(l), l = sum_j exp((s_j - m) * scale).
/// P = exp((s - m) * scale - log l) is then exact near the row max however large the scores,
/// where exp(s * scale - lse) loses |lse| * 6e-8 to the rounding of lse (PyTorch's own
/// recomputation from saved probabilities has no such loss). Each contiguous (B * H, N), both or
/// neither.
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

/// The forward's outputs: out (B, H, N, dv) and lse (B, H, N).
template <typename T>
struct BasicForwardOutputs {
  Strided<T> out;
  Strided<float> lse;
  RowStats stats;  // written when given and the fused kernel runs
};
using ForwardOutputs = BasicForwardOutputs<float>;

/// What the backward reads and writes: the forward's out and lse (and its row statistics, when
/// the fused forward wrote them), dout; dq, dk may have data == nullptr when not wanted; dv is
/// required. Each given gradient is overwritten.
template <typename T>
struct BasicBackwardTensors {
  Strided<const T> out;
  Strided<const float> lse;
  RowStats stats;
  Strided<const T> dout;
  Strided<T> dq, dk, dv;
};
using BackwardTensors = BasicBackwardTensors<float>;

}  // namespace llm_utils::detail

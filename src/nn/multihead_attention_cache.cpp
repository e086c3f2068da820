// MultiHeadAttention's inference path with a KV cache: each call projects its tokens' keys and
// values straight into their slots of the cache and attends its queries over everything cached.
// The new queries sit at positions size .. size + n - 1, so the causal mask is the kernels' with
// query_offset = size; a decode step (n = 1) costs O(size * d) and the fused kernel splits it
// over the key length.

#include <algorithm>
#include <cstring>

#include "kernels/attention_checks.hpp"
#include "kernels/attention_dispatch.hpp"
#include "kernels/gemm.hpp"
#include "kernels/rope.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/multihead_attention.hpp"
#include "nn/attention_layer.hpp"
#include "nn/attention_module_util.hpp"
#include "nn/broadcast_mask.hpp"

namespace llm_utils {

using kernels::Trans;

Tensor MultiHeadAttention::forward_cached(ConstTensorView x, const Input& in,
                                          const AttentionForwardOptions& options) {
  const std::string where = "MultiHeadAttention.forward(use_cache)";
  if (executor_) {
    throw ArgumentError(where + ": the KV cache runs in this process; " + executor_->describe() +
                        " is set (set_attention_executor(nullptr) first)");
  }
  if (training() && dropout_ > 0.0) {
    throw StateError(where + ": dropout=" + std::to_string(dropout_) +
                     " is active in training mode; call eval() before decoding with the KV cache");
  }
  if (!options.cu_seqlens.empty()) {
    throw ArgumentError(where +
                        ": cu_seqlens packs sequences for a forward without the KV "
                        "cache, or for a paged_cache");
  }
  const int64_t b = in.batch, n = in.seq, h = num_heads_, g = num_kv_groups_, hd = head_dim();
  if (cache_.size > 0 && b != cache_.batch) {
    throw ArgumentError(where + ": x has batch " + std::to_string(b) +
                        ", the KV cache holds batch " + std::to_string(cache_.batch) +
                        "; call reset_cache() first");
  }
  const int64_t past = cache_.size, total = past + n;
  if (total > context_length()) {
    throw ArgumentError(where + ": the KV cache holds " + std::to_string(past) +
                        " tokens and x adds " + std::to_string(n) + ", more than context_length=" +
                        std::to_string(context_length()) + "; call reset_cache()");
  }
  detail::BroadcastMask mask =
      detail::merge_masks(where, options.attn_mask, options.key_padding_mask, {b, h, n, total});
  check_call(where, options);

  // Everything is checked: from here on the call succeeds (short of memory).
  const int64_t kv_width = 2 * g * hd;  // a cached token: G key heads, then G value heads
  if (past == 0) cache_.batch = b;
  if (total > cache_.capacity || cache_.kv.size(0) != b) {
    // Grow geometrically (at most to context_length), so decoding copies O(total) rows overall.
    const int64_t capacity =
        std::min(context_length(), std::max({total, 2 * cache_.capacity, int64_t{16}}));
    Tensor kv({b, capacity, kv_width});  // (B, capacity, 2 * G * hd)
    for (int64_t i = 0; i < b && past > 0; ++i) {
      std::memcpy(kv.data() + i * capacity * kv_width,
                  cache_.kv.data() + i * cache_.capacity * kv_width,
                  sizeof(float) * static_cast<size_t>(past * kv_width));
    }
    cache_.kv = std::move(kv);
    cache_.capacity = capacity;
  }
  // Queries into q; keys and values straight into the cache rows past .. past + n of each batch
  // element. One GEMM per projection, on the parameters themselves: packing the weights would
  // copy all of them every step, more than a decode step's GEMVs read.
  layer_->clear_saved();  // this call's state replaces the last forward's (no backward follows)
  const int64_t d_model = d_in(), q_width = h * hd, gh = g * hd;
  // RoPE: the new tokens sit at positions past .. total - 1, in every batch element.
  std::vector<int64_t> positions;
  if (rope_) {
    positions.resize(static_cast<size_t>(b * n));
    for (int64_t r = 0; r < b * n; ++r) positions[static_cast<size_t>(r)] = past + r % n;
  }
  Tensor q({b * n, q_width});  // (B*n, H*hd)
  detail::project_rows(W_query, x.data(), b * n, q.data(), q_width);
  if (rope_) detail::rope_rows(q.data(), b * n, q_width, h, positions.data(), *rope_, false);
  for (int64_t i = 0; i < b; ++i) {
    float* slot = cache_.kv.data() + (i * cache_.capacity + past) * kv_width;  // (n, 2 * G * hd)
    detail::project_rows(W_key, x.data() + i * n * d_model, n, slot, kv_width);
    detail::project_rows(W_value, x.data() + i * n * d_model, n, slot + gh, kv_width);
    // The cache holds keys rotated (as q K^T needs them), so each is rotated once.
    if (rope_) detail::rope_rows(slot, n, kv_width, g, positions.data(), *rope_, false);
  }
  cache_.size = total;

  AttentionOptions kernel_options = variant_options();
  kernel_options.query_offset = past;
  using detail::Strided;
  const int64_t kv_batch_stride = cache_.capacity * kv_width;
  const Strided<const float> keys{cache_.kv.data(), kv_batch_stride, hd, kv_width};
  const Strided<const float> values{cache_.kv.data() + g * hd, kv_batch_stride, hd, kv_width};
  detail::AttentionProblem p =
      detail::make_attention_problem(detail::heads_view(q.data(), n, q_width, 0, hd).as_const(),
                                     keys, values, b, h, g, n, total, hd, hd, kernel_options);
  detail::apply_mask(mask, p);
  detail::set_variants(where.c_str(), kernel_options, p);
  Tensor context({b * n, q_width});  // (B*n, H*hd): the heads' outputs side by side
  Tensor lse({b, h, n});             // unused: nothing to differentiate
  // `automatic` judges the size of one head's problem; a decode step has B * H of them, one
  // query each, which together fill the fused kernel's tiles (B = 16, 12 heads, 2048 cached
  // tokens: 16.3 ms fused against 31.1 ms materialised, Zen 4, 2 threads).
  const Backend used = choose_backend(backend(), b * h * n, total, hd);
  detail::attention_forward(p, used,
                            {detail::heads_view(context.data(), n, q_width, 0, hd),
                             Strided<float>::contiguous(lse.data(), h, n, 1),
                             {}});
  forbid_backward(
      "the last forward used the KV cache, which is for inference; run forward without "
      "use_cache to train");
  Tensor out({b * n, d_out()});  // (B*n, d_out)
  out_proj.forward_into(context.data(), b * n, out.data());
  return out;
}

}  // namespace llm_utils

// MultiHeadAttention's inference path with a KV cache: each call appends its tokens' keys and
// values and attends its queries over everything cached. The new queries sit at positions
// size .. size + n - 1, so the causal mask is the kernels' with query_offset = size; a decode
// step (n = 1) costs O(size * d) and the fused kernel splits it over the key length.

#include <algorithm>
#include <cstring>

#include "kernels/attention_dispatch.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/multihead_attention.hpp"
#include "nn/attention_module_util.hpp"
#include "nn/broadcast_mask.hpp"

namespace llm_utils {
namespace {

// Copies rows [0, tokens) of each of `heads` (capacity_from, hd) blocks into blocks of
// capacity_to rows.
void copy_cached_rows(const Tensor& from, int64_t heads, int64_t tokens, int64_t capacity_from,
                      int64_t hd, Tensor& to, int64_t capacity_to) {
  for (int64_t h = 0; h < heads; ++h) {
    std::memcpy(to.data() + h * capacity_to * hd, from.data() + h * capacity_from * hd,
                sizeof(float) * static_cast<size_t>(tokens * hd));
  }
}

}  // namespace

Tensor MultiHeadAttention::forward_cached(ConstTensorView x,
                                          const AttentionForwardOptions& options) {
  const std::string where = "MultiHeadAttention.forward(use_cache)";
  if (training_ && dropout_ > 0.0) {
    throw StateError(where + ": dropout=" + std::to_string(dropout_) +
                     " is active in training mode; call eval() before decoding with the KV cache");
  }
  const detail::InputShape in = detail::check_input(where, x, d_in(), context_length());
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
  detail::CoreOptions core = core_options();
  core.mask =
      detail::merge_masks(where, options.attn_mask, options.key_padding_mask, {b, h, n, total});

  // Everything is checked: from here on the call succeeds (short of memory).
  const Tensor input = Tensor::from_view(x).reshape({b * n, d_in()});         // (B*n, d_in)
  const Tensor q = detail::split_heads(W_query.forward(input), b, n, h);      // (B*H, n, hd)
  const Tensor k_new = detail::split_heads(W_key.forward(input), b, n, g);    // (B*G, n, hd)
  const Tensor v_new = detail::split_heads(W_value.forward(input), b, n, g);  // (B*G, n, hd)

  if (past == 0) cache_.batch = b;
  if (total > cache_.capacity || cache_.keys.empty() || cache_.keys.size(0) != b * g) {
    // Grow geometrically (at most to context_length), so decoding copies O(total) rows overall.
    const int64_t capacity =
        std::min(context_length(), std::max({total, 2 * cache_.capacity, int64_t{16}}));
    Tensor keys({b * g, capacity, hd}), values({b * g, capacity, hd});  // (B*G, capacity, hd)
    if (past > 0) {
      copy_cached_rows(cache_.keys, b * g, past, cache_.capacity, hd, keys, capacity);
      copy_cached_rows(cache_.values, b * g, past, cache_.capacity, hd, values, capacity);
    }
    cache_.keys = std::move(keys);
    cache_.values = std::move(values);
    cache_.capacity = capacity;
  }
  for (int64_t kv = 0; kv < b * g; ++kv) {
    const size_t bytes = sizeof(float) * static_cast<size_t>(n * hd);
    std::memcpy(cache_.keys.data() + (kv * cache_.capacity + past) * hd, k_new.data() + kv * n * hd,
                bytes);
    std::memcpy(cache_.values.data() + (kv * cache_.capacity + past) * hd,
                v_new.data() + kv * n * hd, bytes);
  }
  cache_.size = total;

  AttentionOptions kernel_options;
  kernel_options.causal = core.causal;
  kernel_options.query_offset = past;
  kernel_options.scale_divisor = core.scale_divisor;
  using detail::Strided;
  // The cache holds (B*G, capacity, hd) of which the first `total` rows of each head are used.
  const Strided<const float> keys{cache_.keys.data(), 0, cache_.capacity * hd, hd};
  const Strided<const float> values{cache_.values.data(), 0, cache_.capacity * hd, hd};
  detail::AttentionProblem p =
      detail::make_attention_problem(Strided<const float>::contiguous(q.data(), b * h, n, hd), keys,
                                     values, 1, b * h, b * g, n, total, hd, hd, kernel_options);
  detail::apply_mask(core.mask, h, p);
  Tensor heads({b * h, n, hd});  // (B*H, n, hd)
  Tensor lse({b * h, n});        // (B*H, n), unused: nothing to differentiate
  detail::attention_forward(p, backend_,
                            {Strided<float>::contiguous(heads.data(), b * h, n, hd),
                             Strided<float>::contiguous(lse.data(), b * h, n, 1),
                             {}});

  batch_ = 0;
  last_forward_cached_ = true;
  Tensor out = out_proj.forward(detail::merge_heads(heads, b, n, h));  // (B*n, d_out)
  return in.was_2d ? std::move(out).reshape({n, d_out()}) : std::move(out).reshape({b, n, d_out()});
}

}  // namespace llm_utils

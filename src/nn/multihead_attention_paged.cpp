// MultiHeadAttention over a paged KV cache (AttentionForwardOptions::paged_cache): the new
// tokens of several sequences are projected together, their keys and values written into each
// sequence's pages, and their queries attend over everything each sequence holds through
// attention_forward_paged. Inference only, in float32 (as the contiguous KV cache).

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "kernels/rope.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/multihead_attention.hpp"
#include "nn/attention_layer.hpp"
#include "nn/attention_module_util.hpp"

namespace llm_utils {

namespace {

// How many new tokens each sequence brings: from cu_seqlens over x (T, d_in), else n for each
// of the batch's sequences. No sequence brings more than the context length.
std::vector<int64_t> new_token_counts(const std::string& where, std::span<const int64_t> cu,
                                      int64_t batch, int64_t seq, bool was_2d,
                                      int64_t context_length) {
  if (cu.empty()) return std::vector<int64_t>(static_cast<size_t>(batch), seq);
  if (!was_2d) {
    throw ArgumentError(where + ": with cu_seqlens x must be (T, d_in), got batch " +
                        std::to_string(batch));
  }
  detail::check_cu_seqlens(where, cu, seq, context_length);
  std::vector<int64_t> counts;
  for (size_t s = 1; s < cu.size(); ++s) counts.push_back(cu[s] - cu[s - 1]);
  return counts;
}

}  // namespace

Tensor MultiHeadAttention::forward_paged(ConstTensorView x, const Input& in,
                                         const AttentionForwardOptions& options) {
  const std::string where = "MultiHeadAttention.forward(paged_cache)";
  PagedKVCache& cache = *options.paged_cache;
  if (executor_) {
    throw ArgumentError(where + ": the paged cache runs in this process; " + executor_->describe() +
                        " is set (set_attention_executor(nullptr) first)");
  }
  if (options.use_cache) {
    throw ArgumentError(where + ": use_cache and paged_cache are two different caches; pick one");
  }
  if (!options.attn_mask.empty() || !options.key_padding_mask.empty()) {
    throw ArgumentError(where + ": takes no attn_mask or key_padding_mask");
  }
  if (training() && dropout_ > 0.0) {
    throw StateError(where + ": dropout=" + std::to_string(dropout_) +
                     " is active in training mode; call eval() before decoding");
  }
  const int64_t h = num_heads_, g = num_kv_groups_, hd = head_dim();
  if (cache.kv_heads() != g || cache.head_dim() != hd) {
    throw ArgumentError(where + ": the cache holds " + std::to_string(cache.kv_heads()) +
                        " key/value heads of " + std::to_string(cache.head_dim()) +
                        " features, the module has " + std::to_string(g) + " of " +
                        std::to_string(hd));
  }
  const std::vector<int64_t> counts =
      new_token_counts(where, options.cu_seqlens, in.batch, in.seq, in.was_2d, context_length());
  const std::span<const int64_t> ids = options.sequence_ids;
  if (ids.size() != counts.size()) {
    throw ArgumentError(where + ": sequence_ids has " + std::to_string(ids.size()) +
                        " entries for x's " + std::to_string(counts.size()) + " sequences");
  }
  std::vector<int64_t> old_lengths;  // (S) tokens held before this call
  for (size_t s = 0; s < ids.size(); ++s) {
    if (!cache.contains(ids[s])) {
      throw ArgumentError(where + ": the cache has no sequence with id " + std::to_string(ids[s]));
    }
    if (std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(s), ids[s]) !=
        ids.begin() + static_cast<std::ptrdiff_t>(s)) {
      throw ArgumentError(where + ": sequence_ids lists sequence " + std::to_string(ids[s]) +
                          " twice");
    }
    old_lengths.push_back(cache.length(ids[s]));
    if (old_lengths.back() + counts[s] > context_length()) {
      throw ArgumentError(where + ": sequence " + std::to_string(ids[s]) + " holds " +
                          std::to_string(old_lengths.back()) + " tokens and x adds " +
                          std::to_string(counts[s]) +
                          ", more than context_length=" + std::to_string(context_length()));
    }
  }
  check_call(where, options);

  // The new tokens' projections, RoPE at their positions in their sequences.
  const int64_t rows = in.batch * in.seq, q_width = h * hd, kv_width = g * hd;
  Tensor q({rows, q_width});   // (T, H*hd)
  Tensor k({rows, kv_width});  // (T, G*hd)
  Tensor v({rows, kv_width});  // (T, G*hd)
  detail::project_rows(W_query, x.data(), rows, q.data(), q_width);
  detail::project_rows(W_key, x.data(), rows, k.data(), kv_width);
  detail::project_rows(W_value, x.data(), rows, v.data(), kv_width);
  std::vector<int64_t> cu_q = {0};  // (S + 1) the new tokens of each sequence, packed
  for (const int64_t c : counts) cu_q.push_back(cu_q.back() + c);
  if (rope_) {
    std::vector<int64_t> positions(static_cast<size_t>(rows));
    for (size_t s = 0; s < counts.size(); ++s) {
      for (int64_t t = 0; t < counts[s]; ++t) {
        positions[static_cast<size_t>(cu_q[s] + t)] = old_lengths[s] + t;
      }
    }
    detail::rope_rows(q.data(), rows, q_width, h, positions.data(), *rope_, false);
    detail::rope_rows(k.data(), rows, kv_width, g, positions.data(), *rope_, false);
  }

  // The last check and the first change: the pages (all or nothing), then the rows into them.
  const std::vector<int64_t> slots = cache.append(ids, counts);  // (T) pool rows
  float* keys = cache.keys_mut().data();                         // (pool rows, G*hd)
  float* values = cache.values_mut().data();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t slot = slots[static_cast<size_t>(r)];
    std::copy(k.data() + r * kv_width, k.data() + (r + 1) * kv_width, keys + slot * kv_width);
    std::copy(v.data() + r * kv_width, v.data() + (r + 1) * kv_width, values + slot * kv_width);
  }
  layer_->clear_saved();  // this call's state replaces the last forward's (no backward follows)

  // The block table (S, most pages of any sequence) and the lengths after this call.
  int64_t widest = 0;
  for (const int64_t id : ids) widest = std::max<int64_t>(widest, cache.pages(id).size());
  std::vector<int64_t> table(ids.size() * static_cast<size_t>(widest), 0);
  std::vector<int64_t> lengths;
  for (size_t s = 0; s < ids.size(); ++s) {
    const std::span<const int64_t> pages = cache.pages(ids[s]);
    std::copy(pages.begin(), pages.end(), table.begin() + static_cast<int64_t>(s) * widest);
    lengths.push_back(cache.length(ids[s]));
  }
  const PagedKeys kv{cache.keys(), cache.values(), table, widest, lengths};
  AttentionOptions kernel_options = variant_options();
  kernel_options.backend = backend();
  Tensor context({rows, h, hd});  // (T, H, hd): the heads' outputs side by side
  Tensor lse({h, rows});          // unused: nothing to differentiate
  attention_forward_paged(ConstTensorView(q.data(), {rows, h, hd}), kv, cu_q, context, lse,
                          kernel_options);
  forbid_backward(
      "the last forward used the paged KV cache, which is for inference; run forward without it "
      "to train");
  Tensor out({rows, d_out()});  // (T, d_out)
  out_proj.forward_into(context.data(), rows, out.data());
  return out;
}

}  // namespace llm_utils

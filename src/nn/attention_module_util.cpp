// Checks and state entries shared by the attention modules.

#include "nn/attention_module_util.hpp"

#include <algorithm>

#include "kernels/gemm.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::detail {

void check_module_args(const std::string& cls, int64_t d_in, int64_t d_out, int64_t context_length,
                       double dropout, int64_t num_heads, bool heads_split_d_out) {
  if (d_in <= 0 || d_out <= 0 || context_length <= 0 || num_heads <= 0) {
    throw ArgumentError(cls + ": d_in, d_out, context_length and num_heads must be positive, got " +
                        "d_in=" + std::to_string(d_in) + ", d_out=" + std::to_string(d_out) +
                        ", context_length=" + std::to_string(context_length) +
                        ", num_heads=" + std::to_string(num_heads));
  }
  if (heads_split_d_out && d_out % num_heads != 0) {
    throw ArgumentError(cls + ": d_out must be divisible by num_heads, got d_out=" +
                        std::to_string(d_out) + ", num_heads=" + std::to_string(num_heads));
  }
  // Written so that NaN fails too.
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw ArgumentError(cls + ": dropout must be in [0, 1), got " + std::to_string(dropout));
  }
}

Tensor causal_mask_buffer(int64_t n) {
  Tensor mask({n, n});  // (n, n)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) mask[i * n + j] = 1.0f;
  }
  return mask;
}

void add_linear_entries(std::vector<StateEntry>& out, const std::string& prefix,
                        const Linear& layer) {
  out.push_back(StateEntry{prefix + ".weight", layer.weight, nullptr});
  if (layer.bias) out.push_back(StateEntry{prefix + ".bias", *layer.bias, nullptr});
}

QkvWeights linear_qkv_weights(const Linear& query, const Linear& key, const Linear& value) {
  QkvWeights w{true, {&query.weight, &key.weight, &value.weight}, {}};
  const Linear* layers[3] = {&query, &key, &value};
  for (int i = 0; i < 3; ++i) {
    if (layers[i]->bias) w.bias[i] = &*layers[i]->bias;
  }
  return w;
}

void project_rows(const Linear& layer, const float* x, int64_t rows, float* y, int64_t ldy) {
  const int64_t width = layer.out_features(), d_in = layer.in_features();
  if (layer.bias) {
    const ConstTensorView bias = layer.bias->data();  // (width)
    for (int64_t r = 0; r < rows; ++r) std::copy(bias.data(), bias.data() + width, y + r * ldy);
  }
  // y (rows, width) = x (rows, d_in) W^T (+ bias)
  kernels::gemm(kernels::Trans::no, kernels::Trans::yes, rows, width, d_in, 1.0f, x, d_in,
                layer.weight.data().data(), d_in, layer.bias ? 1.0f : 0.0f, y, ldy);
}

void check_cu_seqlens(const std::string& where, std::span<const int64_t> cu, int64_t rows,
                      int64_t context_length) {
  if (cu.empty() || cu.front() != 0 || cu.back() != rows) {
    throw ArgumentError(
        where + ": cu_seqlens must run from 0 to x's " + std::to_string(rows) + " rows, got " +
        std::to_string(cu.size()) + " entries" +
        (cu.empty() ? std::string()
                    : " from " + std::to_string(cu.front()) + " to " + std::to_string(cu.back())));
  }
  for (size_t s = 1; s < cu.size(); ++s) {
    const int64_t len = cu[s] - cu[s - 1];
    if (len < 0 || len > context_length) {
      throw ArgumentError(where + ": sequence " + std::to_string(s - 1) + " of cu_seqlens has " +
                          std::to_string(len) + " tokens, outside [0, context_length=" +
                          std::to_string(context_length) + "]");
    }
  }
}

}  // namespace llm_utils::detail

#pragma once
// What the attention modules' files share (private to the library): argument checks, the book's
// mask buffer, and the state entries and packed-projection weights of Linear layers.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "llm_utils/nn/linear.hpp"
#include "llm_utils/nn/module.hpp"
#include "llm_utils/tensor.hpp"
#include "nn/attention_layer.hpp"

namespace llm_utils::detail {

/// Throws ArgumentError naming `cls` on d_in, d_out, context_length or num_heads < 1, on d_out
/// not divisible by num_heads (when `heads_split_d_out`), or dropout outside [0, 1).
void check_module_args(const std::string& cls, int64_t d_in, int64_t d_out, int64_t context_length,
                       double dropout, int64_t num_heads, bool heads_split_d_out);

/// The book's buffer: triu(ones(n, n), diagonal=1), float 0/1.
Tensor causal_mask_buffer(int64_t n);

/// `<prefix>.weight` and, when the layer has one, `<prefix>.bias`.
void add_linear_entries(std::vector<StateEntry>& out, const std::string& prefix,
                        const Linear& layer);

/// y (rows, out) = x (rows, in) W^T + b, rows of y `ldy` apart: one GEMM on the layer's own
/// parameters (the KV-cache paths project a few tokens, where packing the weights would cost
/// more than the GEMV).
void project_rows(const Linear& layer, const float* x, int64_t rows, float* y, int64_t ldy);

/// ArgumentError naming `where` unless cu_seqlens (packed sequences) runs from 0 to x's `rows`
/// and every sequence has 0 to max_len tokens.
void check_cu_seqlens(const std::string& where, std::span<const int64_t> cu, int64_t rows,
                      int64_t max_len);

/// The projection weights of three Linear layers, for the attention layer.
QkvWeights linear_qkv_weights(const Linear& query, const Linear& key, const Linear& value);

}  // namespace llm_utils::detail

#pragma once
// Checks and tensor shuffles shared by CausalAttention, MultiHeadAttentionWrapper and
// MultiHeadAttention (private to the library).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llm_utils/nn/state_dict.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils::detail {

/// Throws ArgumentError naming `cls` on d_in, d_out, context_length or num_heads < 1, on d_out
/// not divisible by num_heads (when `heads_split_d_out`), or dropout outside [0, 1).
void check_module_args(const std::string& cls, int64_t d_in, int64_t d_out, int64_t context_length,
                       double dropout, int64_t num_heads, bool heads_split_d_out);

/// The book's buffer: triu(ones(n, n), diagonal=1), float 0/1.
Tensor causal_mask_buffer(int64_t n);

struct InputShape {
  int64_t batch;
  int64_t seq;
  bool was_2d;
};
/// x must be (N, d_in) or (B, N, d_in) with B >= 1 and 1 <= N <= context_length.
InputShape check_input(const std::string& where, ConstTensorView x, int64_t d_in,
                       int64_t context_length);

/// (B*N, H*hd) -> (B*H, N, hd): the book's `view(b, n, H, hd).transpose(1, 2)`, made contiguous.
Tensor split_heads(ConstTensorView x, int64_t batch, int64_t seq, int64_t heads);
/// (B*H, N, hd) -> (B*N, H*hd): the book's `transpose(1, 2).contiguous().view(b, n, d_out)`.
Tensor merge_heads(ConstTensorView x, int64_t batch, int64_t seq, int64_t heads);

/// Where each state-dict key loads into.
using NamedTensors = std::vector<std::pair<std::string, Tensor*>>;
/// Loads every target from `state`, all or nothing: a missing key, an unexpected key (when
/// `strict`), a wrong shape, or a mask buffer (a target named `mask` or `*.mask`) that is not
/// the causal one throws ArgumentError naming the key, leaving the targets unchanged. A
/// missing mask buffer is fine: it is derived from context_length.
void load_named(const std::string& where, const StateDict& state, bool strict,
                const NamedTensors& targets);

}  // namespace llm_utils::detail

#pragma once
/// \file attention.hpp
/// The attention kernels: free functions over non-owning views, inputs first, then outputs,
/// then options. One head, one batch element per call:
///
///   S = (Q K^T) / sqrt_scale_divisor,  P = softmax_rows(S),  O = P V
///
/// Shapes: q (N, d), k (M, d), v (M, d_v), out (N, d_v), probs (N, M).
///
/// The reference backend materialises P (returned in `probs`), computes it stably (row max
/// subtracted) and gives an all-zero row where every score of a row is -inf. NaN anywhere in a
/// row of scores makes that row's probabilities and outputs NaN, as in PyTorch.
///
/// Example:
/// \code
///   llm_utils::Tensor out({6, 2}), probs({6, 6});
///   llm_utils::attention_forward(q, k, v, out, probs, {});
/// \endcode

#include <cstdint>
#include <optional>
#include <string>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// Which implementation runs a kernel: `reference` materialises the (N, M) scores with BLAS,
/// `flash` is the fused CPU kernel that never does, `automatic` picks by shape.
enum class Backend { reference, flash, automatic };

/// "reference", "flash" or "auto".
const char* backend_name(Backend backend);
/// Parses "reference", "flash" or "auto"; throws ArgumentError naming the value otherwise.
Backend parse_backend(const std::string& name);

struct AttentionOptions {
  /// Scores are divided by this. Default: sqrt(d), the head dimension of q and k, which is what
  /// the original's `attn_scores / keys.shape[-1]**0.5` does.
  std::optional<float> scale_divisor;
  Backend backend = Backend::automatic;
};

/// Forward pass. `probs` receives P (N, M); `out` receives O (N, d_v).
void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out,
                       TensorView probs, const AttentionOptions& options);

/// Backward pass from the saved probabilities. Any of `dq`, `dk`, `dv` may be an empty view
/// (data() == nullptr) when that gradient is not needed; the others are overwritten.
/// Shapes: dout (N, d_v), dq (N, d), dk (M, d), dv (M, d_v).
void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView probs, ConstTensorView dout, TensorView dq, TensorView dk,
                        TensorView dv, const AttentionOptions& options);

/// Row-wise stable softmax in place over a (rows, cols) matrix. Rows that are entirely -inf
/// become zeros.
void softmax_rows_inplace(TensorView scores);

}  // namespace llm_utils

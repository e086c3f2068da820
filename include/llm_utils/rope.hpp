#pragma once
/// \file rope.hpp
/// Rotary position embedding (RoPE, Su et al. 2021, "RoFormer") in the "rotate half" layout of
/// the book's Llama code and Hugging Face's Llama: a head vector x of even size hd at position p
/// is split into halves x1 = x[:hd/2], x2 = x[hd/2:], and with angle_i = p * inv_freq_i,
/// inv_freq_i = theta^(-2i / hd),
///
///   y1 = x1 * cos(angle) - x2 * sin(angle),   y2 = x2 * cos(angle) + x1 * sin(angle).
///
/// The rotation is orthogonal, so its backward is the rotation by -angle:
/// dx1 = dy1 cos + dy2 sin, dx2 = dy2 cos - dy1 sin.
///
/// The tables are computed as the book's `compute_rope_params` computes them in float32
/// (inv_freq = 1 / theta^(arange(0, hd, 2) / hd), angles = position * inv_freq), with the sine
/// and cosine of each float32 angle rounded from double, so they agree with PyTorch's to an ulp.
///
/// Example:
/// \code
///   llm_utils::RopeTable rope(/*head_dim=*/64, /*max_positions=*/4096, {.theta = 500000.0});
///   llm_utils::rope_forward(q, rope);   // q (B, H, N, 64): row n of every head at position n
/// \endcode

#include <cstdint>
#include <optional>
#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// Llama 3.1's frequency scaling (the book's Llama 3.2 code's `freq_config`): wavelengths
/// 2 pi / inv_freq longer than original_context_length / low_freq_factor are divided by
/// `factor`, those shorter than original_context_length / high_freq_factor are kept, and those
/// between are interpolated smoothly.
struct RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_context_length = 8192;
};

struct RopeOptions {
  /// The base of the frequencies (the book's `theta_base`): 10000 in GPT-NeoX and Llama 2,
  /// 500000 in Llama 3. Positive and finite.
  double theta = 10000.0;
  /// Llama 3.1 / 3.2 frequency scaling; none by default.
  std::optional<RopeScaling> scaling{};
};

/// cos and sin of every (position, frequency) pair for positions [0, max_positions).
class RopeTable {
 public:
  /// Throws ArgumentError when head_dim is not positive and even, max_positions is negative,
  /// theta is not positive and finite, or the scaling's factors are not (factor >= 1,
  /// 0 < low_freq_factor < high_freq_factor, original_context_length > 0).
  RopeTable(int64_t head_dim, int64_t max_positions, RopeOptions options = {});

  int64_t head_dim() const { return head_dim_; }
  int64_t max_positions() const { return max_positions_; }
  const RopeOptions& options() const { return options_; }
  /// (head_dim / 2) values for `position` (0 <= position < max_positions).
  const float* cos(int64_t position) const { return cos_.data() + position * (head_dim_ / 2); }
  const float* sin(int64_t position) const { return sin_.data() + position * (head_dim_ / 2); }
  /// (head_dim / 2) inverse frequencies, after the scaling.
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  int64_t head_dim_;
  int64_t max_positions_;
  RopeOptions options_;
  std::vector<float> inv_freq_;  // (hd / 2)
  std::vector<float> cos_;       // (max_positions, hd / 2)
  std::vector<float> sin_;       // (max_positions, hd / 2)
};

/// Rotates x (..., N, head_dim) in place, row n at position first_position + n (any rank >= 2,
/// rows contiguous, any other strides). ArgumentError when the last dimension is not the
/// table's head_dim or a position falls outside the table.
void rope_forward(TensorView x, const RopeTable& table, int64_t first_position = 0);
/// The backward of rope_forward: rotates the gradient dy (..., N, head_dim) in place by minus
/// the same angles, giving dx.
void rope_backward(TensorView dy, const RopeTable& table, int64_t first_position = 0);

/// The ALiBi slopes of Press et al. (2022) for `heads` heads: for heads a power of two,
/// slope_h = 2^(-8 (h + 1) / heads); otherwise the slopes of the nearest lower power of two n,
/// then every other slope of 2n, as the paper's reference code (and Hugging Face's BLOOM) does.
/// Shape (heads). ArgumentError when heads < 1.
Tensor alibi_slopes(int64_t heads);

}  // namespace llm_utils

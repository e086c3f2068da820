#pragma once
/// \file attention_executor.hpp
/// Where a MultiHeadAttention's attention runs when not in this process alone: an executor
/// takes the (B, H, N, hd) heads of the module's projections, read in place, and computes the
/// attention and its backward, for instance over the ranks of an MPI job that each hold a part
/// of the sequence (llm_utils/dist/sequence_parallel.hpp: dist::sequence_parallel_executor).
///
/// Views: q (B, H, N, hd), k and v (B, G, N, hd), out and dout (B, H, N, hd), lse (B, H, N),
/// dq, dk, dv shaped as q, k, v; strided views with contiguous rows, as attention.hpp takes.
/// The options carry the module's causal flag and scale. The projections, out_proj and every
/// parameter gradient stay the module's: over a split sequence each rank's gradients are its
/// tokens' share, to be summed over the ranks (dist::GradientAverager, GradientReduction::sum).
///
/// Example:
/// \code
///   mha.set_attention_executor(llm_utils::dist::sequence_parallel_executor(world));
///   llm_utils::Tensor y_local = mha.forward(x_local);   // x_local: this rank's tokens
/// \endcode

#include <string>

#include "llm_utils/attention.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

class AttentionExecutor {
 public:
  virtual ~AttentionExecutor() = default;
  virtual void forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out,
                       TensorView lse, const AttentionOptions& options) = 0;
  virtual void backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                        TensorView dq, TensorView dk, TensorView dv,
                        const AttentionOptions& options) = 0;
  /// One line for messages and reports, e.g. "ring attention over 4 ranks (zigzag)".
  virtual std::string describe() const = 0;
};

}  // namespace llm_utils

#pragma once
// The message buffers of ring attention: one rank's K and V shards packed one after the other
// (and, in backward, its dK and dV sums), contiguous so they travel as one message.

#include <cstdint>

#include "dist/sequence_problem.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils::dist::detail {

// `shape` with `rows` at dimension `dim`.
Shape with_rows(Shape shape, int64_t dim, int64_t rows);

class KvBlock {
 public:
  KvBlock() = default;
  // Rank `owner`'s K and V shapes, zero-filled: a receive buffer or a gradient sum. Without
  // `with_k`, only V's part (dK not wanted).
  static KvBlock empty(const SequenceProblem& p, int owner, bool with_k = true);
  // A copy of k and v (rank `owner`'s shards).
  static KvBlock packed(const SequenceProblem& p, int owner, ConstTensorView k, ConstTensorView v);

  float* data() { return storage_.data(); }
  int64_t numel() const { return storage_.numel(); }
  TensorView k() { return {storage_.data(), k_shape_}; }             // (.., rows, d)
  TensorView v() { return {storage_.data() + k_numel_, v_shape_}; }  // (.., rows, dv)

 private:
  Tensor storage_;  // (k_numel + v_numel)
  Shape k_shape_, v_shape_;
  int64_t k_numel_ = 0;
};

}  // namespace llm_utils::dist::detail

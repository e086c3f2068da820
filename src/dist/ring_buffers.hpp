#pragma once
// The message buffers of ring attention: one rank's K and V shards packed one after the other
// (and, in backward, its dK and dV sums), contiguous so they travel as one message.

#include <chrono>
#include <cstdint>

#include "dist/sequence_problem.hpp"
#include "llm_utils/dist/sequence_parallel.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils::dist::detail {

// Adds the time since the last mark to RingStats' compute_s or wait_s (nothing without stats).
class StepClock {
 public:
  explicit StepClock(RingStats* stats) : stats_(stats), mark_(std::chrono::steady_clock::now()) {}
  void computed() { add(stats_ ? &stats_->compute_s : nullptr); }
  void waited() { add(stats_ ? &stats_->wait_s : nullptr); }

 private:
  void add(double* to) {
    const auto now = std::chrono::steady_clock::now();
    if (to != nullptr) *to += std::chrono::duration<double>(now - mark_).count();
    mark_ = now;
  }
  RingStats* stats_;
  std::chrono::steady_clock::time_point mark_;
};

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

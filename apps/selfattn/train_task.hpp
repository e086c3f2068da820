#pragma once
// What `selfattn train` fits a module to: batches of inputs with their targets, and the MSE loss
// with its gradient.

#include <cstdint>
#include <string>

#include "llm_utils/llm_utils.hpp"

namespace selfattn {

enum class Task {
  /// Match a module of the same class built from other weights.
  teacher,
  /// Every token outputs the first d_out features of the one token whose last feature is 1:
  /// the attention has to find that token and copy it, wherever it is in the sequence.
  recall,
};

Task parse_task(const std::string& name);

struct Batch {
  llm_utils::Tensor x;       // (B, N, d_in)
  llm_utils::Tensor target;  // (B, N, d_out)
};

/// Draws fresh batches from its own generator, so the modules' default generator is untouched.
class TaskSampler {
 public:
  /// `teacher` is required for Task::teacher and is run on each batch.
  TaskSampler(Task task, llm_utils::SelfAttentionBase* teacher, int64_t batch, int64_t seq,
              int64_t d_in, int64_t d_out, uint64_t data_seed);
  Batch next();

 private:
  Task task_;
  llm_utils::SelfAttentionBase* teacher_;
  int64_t batch_, seq_, d_in_, d_out_;
  llm_utils::Generator generator_;
};

/// mean((y - target)^2) over all elements, accumulated in double; writes dL/dy = 2 (y - t) / n
/// into `grad` (resized to y's shape).
double mse_loss(llm_utils::ConstTensorView y, llm_utils::ConstTensorView target,
                llm_utils::Tensor* grad);

}  // namespace selfattn

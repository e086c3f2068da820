#include "train_task.hpp"

namespace selfattn {

Task parse_task(const std::string& name) {
  if (name == "teacher") return Task::teacher;
  if (name == "recall") return Task::recall;
  throw llm_utils::ArgumentError("--task must be teacher or recall, got '" + name + "'");
}

TaskSampler::TaskSampler(Task task, llm_utils::SelfAttentionBase* teacher, int64_t batch,
                         int64_t seq, int64_t d_in, int64_t d_out, uint64_t data_seed)
    : task_(task),
      teacher_(teacher),
      batch_(batch),
      seq_(seq),
      d_in_(d_in),
      d_out_(d_out),
      generator_(data_seed) {
  if (task == Task::teacher && teacher == nullptr) {
    throw llm_utils::ArgumentError("the teacher task needs a teacher module");
  }
  if (task == Task::recall && d_in < d_out + 1) {
    throw llm_utils::ArgumentError(
        "--task recall needs --d-in >= --d-out + 1 (the last input feature marks the token to "
        "recall), got d_in=" +
        std::to_string(d_in) + ", d_out=" + std::to_string(d_out));
  }
}

Batch TaskSampler::next() {
  // Features in [0, 1), like the book's embeddings.
  llm_utils::Tensor x = generator_.rand({batch_, seq_, d_in_});
  if (task_ == Task::teacher) {
    llm_utils::Tensor target = teacher_->forward(x);
    return {std::move(x), std::move(target)};
  }
  llm_utils::Tensor target({batch_, seq_, d_out_});
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t marked =
        static_cast<int64_t>(generator_.next_u32() % static_cast<uint32_t>(seq_));
    float* xb = x.data() + b * seq_ * d_in_;
    for (int64_t i = 0; i < seq_; ++i) xb[i * d_in_ + d_in_ - 1] = i == marked ? 1.0f : 0.0f;
    for (int64_t i = 0; i < seq_; ++i) {
      for (int64_t j = 0; j < d_out_; ++j) {
        target.data()[(b * seq_ + i) * d_out_ + j] = xb[marked * d_in_ + j];
      }
    }
  }
  return {std::move(x), std::move(target)};
}

double mse_loss(llm_utils::ConstTensorView y, llm_utils::ConstTensorView target,
                llm_utils::Tensor* grad) {
  if (y.shape() != target.shape()) {
    throw llm_utils::ArgumentError("mse_loss: output " + llm_utils::shape_to_string(y.shape()) +
                                   " and target " + llm_utils::shape_to_string(target.shape()) +
                                   " differ");
  }
  const int64_t n = y.numel();
  *grad = llm_utils::Tensor(y.shape());
  double sum = 0;
  // loss = (1/n) sum (y - t)^2, so dL/dy_i = (2/n) (y_i - t_i).
  const float scale = 2.0f / static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) {
    const float d = y.data()[i] - target.data()[i];
    sum += static_cast<double>(d) * d;
    (*grad)[i] = scale * d;
  }
  return sum / static_cast<double>(n);
}

}  // namespace selfattn

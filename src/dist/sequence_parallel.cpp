// Strategy names and the dispatch by strategy (sequence_parallel.hpp).

#include "llm_utils/dist/sequence_parallel.hpp"

#include "llm_utils/error.hpp"

namespace llm_utils::dist {

const char* strategy_name(SequenceStrategy strategy) {
  return strategy == SequenceStrategy::ulysses ? "ulysses" : "ring";
}

SequenceStrategy parse_strategy(const std::string& name) {
  if (name == "ring") return SequenceStrategy::ring;
  if (name == "ulysses") return SequenceStrategy::ulysses;
  throw ArgumentError("unknown sequence-parallel strategy '" + name +
                      "' (expected ring or ulysses)");
}

void sequence_parallel_forward(SequenceStrategy strategy, const Communicator& comm,
                               ConstTensorView q, ConstTensorView k, ConstTensorView v,
                               TensorView out, TensorView lse, const AttentionOptions& options,
                               SequenceLayout layout) {
  if (strategy == SequenceStrategy::ulysses) {
    ulysses_attention_forward(comm, q, k, v, out, lse, options, layout);
  } else {
    ring_attention_forward(comm, q, k, v, out, lse, options, layout);
  }
}

void sequence_parallel_backward(SequenceStrategy strategy, const Communicator& comm,
                                ConstTensorView q, ConstTensorView k, ConstTensorView v,
                                ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                                TensorView dq, TensorView dk, TensorView dv,
                                const AttentionOptions& options, SequenceLayout layout) {
  if (strategy == SequenceStrategy::ulysses) {
    ulysses_attention_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options, layout);
  } else {
    ring_attention_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options, layout);
  }
}

namespace {

class SequenceParallelExecutor : public AttentionExecutor {
 public:
  SequenceParallelExecutor(Communicator comm, SequenceStrategy strategy, SequenceLayout layout)
      : comm_(std::move(comm)), strategy_(strategy), layout_(layout) {}
  void forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out,
               TensorView lse, const AttentionOptions& options) override {
    sequence_parallel_forward(strategy_, comm_, q, k, v, out, lse, options, layout_);
  }
  void backward(ConstTensorView q, ConstTensorView k, ConstTensorView v, ConstTensorView out,
                ConstTensorView lse, ConstTensorView dout, TensorView dq, TensorView dk,
                TensorView dv, const AttentionOptions& options) override {
    sequence_parallel_backward(strategy_, comm_, q, k, v, out, lse, dout, dq, dk, dv, options,
                               layout_);
  }
  std::string describe() const override {
    return std::string(strategy_name(strategy_)) + " attention over " +
           std::to_string(comm_.size()) + " ranks (" + layout_name(layout_) + ")";
  }

 private:
  Communicator comm_;
  SequenceStrategy strategy_;
  SequenceLayout layout_;
};

}  // namespace

std::shared_ptr<AttentionExecutor> sequence_parallel_executor(Communicator comm,
                                                              SequenceStrategy strategy,
                                                              SequenceLayout layout) {
  return std::make_shared<SequenceParallelExecutor>(std::move(comm), strategy, layout);
}

}  // namespace llm_utils::dist

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

}  // namespace llm_utils::dist

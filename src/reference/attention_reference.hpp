#pragma once
// The reference attention: plain BLAS GEMMs and a materialised (N, M) score matrix per batch
// element. The oracle the fused kernels are tested against; never tuned.

#include "detail/attention_problem.hpp"

namespace llm_utils::reference {

using detail::AttentionProblem;
using detail::BackwardTensors;
using detail::ForwardOutputs;
using detail::Strided;

// The reference recomputes P with the same softmax as its forward, not from lse or the row
// statistics (which it neither reads nor writes): see attention.cpp. Its forward still returns
// lse, for the API's sake and for the fused kernels.
void attention_forward(const AttentionProblem& p, const ForwardOutputs& o);
void attention_backward(const AttentionProblem& p, const BackwardTensors& t);
void attention_probabilities(const AttentionProblem& p, Strided<float> probs);

}  // namespace llm_utils::reference

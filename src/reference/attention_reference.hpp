#pragma once
// The reference attention: plain BLAS GEMMs and a materialised (N, M) score matrix per batch
// element. The oracle the fused kernels are tested against; never tuned.

#include "detail/attention_problem.hpp"

namespace llm_utils::reference {

using detail::AttentionProblem;

// The reference recomputes P with the same softmax as its forward, not from lse: see
// attention.cpp. Its forward still returns lse, for the API's sake and for the fused kernels.
void attention_forward(const AttentionProblem& p, float* out, float* lse);
void attention_backward(const AttentionProblem& p, const float* dout, float* dq, float* dk,
                        float* dv);
void attention_probabilities(const AttentionProblem& p, float* probs);

}  // namespace llm_utils::reference

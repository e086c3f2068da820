#pragma once
// The attention entry points below the public API's shape checks, for callers that built a
// valid AttentionProblem themselves (the modules): no Shape vectors, no allocations beyond the
// kernels' own, which matters for tiny inputs such as the book's 6 x 3 example.

#include "attention_problem.hpp"
#include "llm_utils/attention.hpp"

namespace llm_utils::detail {

/// A problem over contiguous (B, N, d) q, (B, M, d) k, (B, M, dv) v with the options' scale
/// and masks. The mask's shape must already have been checked.
AttentionProblem make_attention_problem(const float* q, const float* k, const float* v,
                                        int64_t batch, int64_t n, int64_t m, int64_t d, int64_t dv,
                                        const AttentionOptions& options);

/// attention_forward on a checked problem: out (B, N, dv), lse (B, N).
void attention_forward(const AttentionProblem& p, Backend backend, float* out, float* lse);

}  // namespace llm_utils::detail

#pragma once
// The attention entry points below the public API's shape checks, for callers that built a
// valid AttentionProblem themselves (the modules): no Shape vectors, no allocations beyond the
// kernels' own, which matters for tiny inputs such as the book's 6 x 3 example.

#include "detail/attention_problem.hpp"
#include "llm_utils/attention.hpp"

namespace llm_utils::detail {

/// A problem over contiguous (B, N, d) q, (B, M, d) k, (B, M, dv) v with the options' scale,
/// causal offset and mask. The mask's shape must already have been checked.
AttentionProblem make_attention_problem(const float* q, const float* k, const float* v,
                                        int64_t batch, int64_t n, int64_t m, int64_t d, int64_t dv,
                                        const AttentionOptions& options);

/// Points p's mask at a contiguous (N|1, M|1) or (Bm|1, N|1, M|1) tensor whose shape was
/// checked against p (attention.hpp's broadcast rules).
void set_broadcast_mask(AttentionProblem& p, const ConstTensorView& mask);

/// attention_forward on a checked problem: out (B, N, dv), lse (B, N), and the row statistics
/// when given and the fused kernel runs. Returns the backend that ran: only after `flash` do the
/// statistics hold anything, and only then may they be passed on below.
Backend attention_forward(const AttentionProblem& p, Backend backend, float* out, float* lse,
                          RowStats stats = {});

/// attention_backward on a checked problem (shapes: attention_problem.hpp); dq, dk may be null.
/// `stats`: those a flash forward wrote for this problem, or none.
void attention_backward(const AttentionProblem& p, Backend backend, const float* out,
                        const float* lse, RowStats stats, const float* dout, float* dq, float* dk,
                        float* dv);

/// attention_probabilities on a checked problem: probs (B, N, M). `stats` as for backward.
void attention_probabilities(const AttentionProblem& p, Backend backend, const float* lse,
                             RowStats stats, float* probs);

}  // namespace llm_utils::detail

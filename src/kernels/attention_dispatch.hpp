#pragma once
// The attention entry points below the public API's shape checks, for callers that built a
// valid AttentionProblem themselves (the modules): no Shape vectors, no allocations beyond the
// kernels' own, which matters for tiny inputs such as the book's 6 x 3 example.

#include "detail/attention_problem.hpp"
#include "llm_utils/attention.hpp"

namespace llm_utils::detail {

/// The scale divisor when none is given: sqrt(d), or 1 for d = 0 (every score is then 0).
float default_divisor(int64_t d);

/// The sizes, scale and causal offset of a problem (no mask).
AttentionShape make_attention_shape(int64_t batch, int64_t heads, int64_t kv_heads, int64_t n,
                                    int64_t m, int64_t d, int64_t dv,
                                    const AttentionOptions& options);

/// A problem over q (B, H, N, d), k (B, G, M, d), v (B, G, M, dv) with the options' scale and
/// causal offset; the options' additive_mask is not read (set one with set_broadcast_mask or
/// the modules' apply_mask).
AttentionProblem make_attention_problem(Strided<const float> q, Strided<const float> k,
                                        Strided<const float> v, int64_t batch, int64_t heads,
                                        int64_t kv_heads, int64_t n, int64_t m, int64_t d,
                                        int64_t dv, const AttentionOptions& options);

/// The same over contiguous (B, N, d) q, (B, M, d) k, (B, M, dv) v: one head per batch element.
AttentionProblem make_attention_problem(const float* q, const float* k, const float* v,
                                        int64_t batch, int64_t n, int64_t m, int64_t d, int64_t dv,
                                        const AttentionOptions& options);

/// Which backend runs a problem: `requested`, or for `automatic` the choice by size.
Backend resolve_backend(const AttentionShape& p, Backend requested);

/// attention_forward on a checked problem. Returns the backend that ran: only after `flash` do
/// the row statistics hold anything, and only then may they be passed on below.
Backend attention_forward(const AttentionProblem& p, Backend backend, const ForwardOutputs& o);

/// attention_backward on a checked problem (shapes: attention_problem.hpp). `t.stats`: those a
/// flash forward wrote for this problem, or none.
void attention_backward(const AttentionProblem& p, Backend backend, const BackwardTensors& t);

/// attention_probabilities on a checked problem: probs (B, H, N, M). `stats` as for backward.
void attention_probabilities(const AttentionProblem& p, Backend backend, Strided<const float> lse,
                             RowStats stats, Strided<float> probs);

/// The sinks' gradient dsinks (H) (overwritten) from the forward's out and lse and dout, for a
/// problem with p.sinks (attention_sinks.cpp).
void sink_gradients(const AttentionShape& p, Strided<const float> out, Strided<const float> lse,
                    Strided<const float> dout, float* dsinks);
/// The same from a bfloat16 out and dout (each product in float32).
void sink_gradients(const AttentionShape& p, Strided<const bfloat16> out, Strided<const float> lse,
                    Strided<const bfloat16> dout, float* dsinks);

}  // namespace llm_utils::detail

namespace llm_utils::detail {

// The same three on bfloat16 q, k, v (attention_bf16.cpp): `flash` runs the bfloat16 kernels;
// `reference` widens every input to float32, runs the float32 reference and rounds its outputs
// (the oracle: P and dS are not rounded there).
Backend attention_forward(const Bf16AttentionProblem& p, Backend backend,
                          const BasicForwardOutputs<bfloat16>& o);
void attention_backward(const Bf16AttentionProblem& p, Backend backend,
                        const BasicBackwardTensors<bfloat16>& t);
void attention_probabilities(const Bf16AttentionProblem& p, Backend backend,
                             Strided<const float> lse, RowStats stats, Strided<float> probs);

}  // namespace llm_utils::detail

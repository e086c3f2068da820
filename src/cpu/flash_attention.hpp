#pragma once
// The fused (flash) attention kernels on raw pointers (shapes and strides: attention_problem.hpp).
// The public entry points in src/kernels/attention.cpp check shapes and choose between these and
// the reference.

#include <cstdint>
#include <span>

#include "detail/attention_problem.hpp"

namespace llm_utils::cpu {

using FlashProblem = detail::AttentionProblem;
using detail::BackwardTensors;
using detail::BasicAttentionProblem;
using detail::BasicBackwardTensors;
using detail::BasicForwardOutputs;
using detail::Bf16AttentionProblem;
using detail::ForwardOutputs;
using detail::RowStats;
using detail::Strided;

// Each kernel comes in float32 and bfloat16 (q, k, v, out and the gradients in bfloat16; the
// products accumulate in float32, the softmax, lse and row statistics are float32; P and dS
// are rounded to bfloat16 before their products, as FlashAttention does).

/// Forward: out (B, H, N, dv) and the log-sum-exp of each row of scores, lse (B, H, N), plus the
/// row statistics when given. A row with no visible key (every key masked, or M = 0) gets
/// out = 0, lse = -inf (and row_max = 0, log_sum = -inf).
void flash_forward(const FlashProblem& p, const ForwardOutputs& o);
void flash_forward(const Bf16AttentionProblem& p, const BasicForwardOutputs<bfloat16>& o);

/// The forward over paged keys and values (attention_forward_paged): one problem per sequence
/// (batch 1, p.pages set), outputs[s] its out and lse (no row statistics). Problems without
/// queries are skipped; all share d and dv.
void flash_forward_paged(std::span<const FlashProblem> sequences,
                         std::span<const ForwardOutputs> outputs);

/// Backward by recomputation (FlashAttention-2) from the forward's row statistics when given,
/// else from lse. dq, dk may be absent (data == nullptr); dv must not be. Each output is
/// overwritten; keys no query sees get zero gradients.
void flash_backward(const FlashProblem& p, const BackwardTensors& t);
void flash_backward(const Bf16AttentionProblem& p, const BasicBackwardTensors<bfloat16>& t);

/// The attention weights probs (B, H, N, M) from the saved row statistics (or lse), without a
/// softmax pass.
void flash_probabilities(const FlashProblem& p, Strided<const float> lse, RowStats stats,
                         Strided<float> probs);
void flash_probabilities(const Bf16AttentionProblem& p, Strided<const float> lse, RowStats stats,
                         Strided<float> probs);

}  // namespace llm_utils::cpu

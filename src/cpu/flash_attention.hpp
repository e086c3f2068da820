#pragma once
// The fused (flash) attention kernels on raw pointers (shapes: attention_problem.hpp). The
// public entry points in src/attention.cpp check shapes and choose between these and the
// reference.

#include <cstdint>

#include "attention_problem.hpp"

namespace llm_utils::cpu {

using FlashProblem = detail::AttentionProblem;

/// Forward: out (B, N, dv) and the log-sum-exp of each row of scores, lse (B, N). A row with
/// no visible key gets out = 0 and lse = -inf.
void flash_forward(const FlashProblem& p, float* out, float* lse);

/// Backward by recomputation from lse (FlashAttention-2). dq, dk may be null when not needed;
/// dv must not be null. Each output is overwritten.
void flash_backward(const FlashProblem& p, const float* out, const float* lse, const float* dout,
                    float* dq, float* dk, float* dv);

/// The attention weights (B, N, M) from the saved lse, without a softmax pass.
void flash_probabilities(const FlashProblem& p, const float* lse, float* probs);

}  // namespace llm_utils::cpu

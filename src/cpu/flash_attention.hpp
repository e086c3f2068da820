#pragma once
// The fused (flash) attention kernels on raw pointers (shapes: attention_problem.hpp). The
// public entry points in src/attention.cpp check shapes and choose between these and the
// reference.

#include <cstdint>

#include "detail/attention_problem.hpp"

namespace llm_utils::cpu {

using FlashProblem = detail::AttentionProblem;
using detail::RowStats;

/// Forward: out (B, N, dv) and the log-sum-exp of each row of scores, lse (B, N), plus the row
/// statistics when `stats` is given. A row with no visible key gets out = 0, lse = -inf (and
/// row_max = 0, log_sum = -inf).
void flash_forward(const FlashProblem& p, float* out, float* lse, RowStats stats = {});

/// Backward by recomputation (FlashAttention-2) from the forward's row statistics when given,
/// else from lse. dq, dk may be null when not needed; dv must not be null. Each output is
/// overwritten.
void flash_backward(const FlashProblem& p, const float* out, const float* lse, RowStats stats,
                    const float* dout, float* dq, float* dk, float* dv);

/// The attention weights (B, N, M) from the saved row statistics (or lse), without a softmax
/// pass.
void flash_probabilities(const FlashProblem& p, const float* lse, RowStats stats, float* probs);

}  // namespace llm_utils::cpu

#pragma once
// Backend::cuda below the public entry points (attention_dispatch.hpp): a checked problem's host
// tensors copied to the GPU, the kernels of src/cuda run there, the results copied back. Throws
// ArgumentError for what the CUDA kernels do not take (the variants), in a build without CUDA,
// and without a device; Error for a CUDA failure, with CUDA's message.

#include <cstdint>
#include <string>

#include "detail/attention_problem.hpp"
#include "llm_utils/attention.hpp"

namespace llm_utils::detail {

void cuda_attention_forward(const AttentionProblem& p, const ForwardOutputs& o);
void cuda_attention_forward(const Bf16AttentionProblem& p, const BasicForwardOutputs<bfloat16>& o);
void cuda_attention_backward(const AttentionProblem& p, const BackwardTensors& t);
void cuda_attention_backward(const Bf16AttentionProblem& p,
                             const BasicBackwardTensors<bfloat16>& t);

/// ArgumentError naming `fn` when `backend` is cuda: for the entry points the CUDA kernels do
/// not cover (packed and paged sequences).
void refuse_cuda(const char* fn, Backend backend);

/// The checks a call on Backend::cuda makes before anything else, for callers that change state
/// before the kernels run (the modules): ArgumentError when the call uses a variant the CUDA
/// kernels lack (`uses_variants`: window, softcap, ALiBi, sinks, packed sequences) or a head dim
/// above 256, in a build without CUDA, or without a device.
void cuda_check_available(const std::string& where, bool uses_variants, int64_t head_dim);

}  // namespace llm_utils::detail

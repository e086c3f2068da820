#pragma once
/// \file llm_utils.hpp
/// Everything the library offers, in one include:
///
/// \code
///   #include <llm_utils/llm_utils.hpp>
///   llm_utils::manual_seed(123);
///   llm_utils::SelfAttention_Params sa(3, 2);
///   llm_utils::Tensor ctx = sa(x);
/// \endcode

#include "llm_utils/attention.hpp"
#include "llm_utils/cuda.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/io/files.hpp"
#include "llm_utils/io/npy.hpp"
#include "llm_utils/io/safetensors.hpp"
#include "llm_utils/nn/attention_executor.hpp"
#include "llm_utils/nn/attention_mask.hpp"
#include "llm_utils/nn/causal_attention.hpp"
#include "llm_utils/nn/linear.hpp"
#include "llm_utils/nn/module.hpp"
#include "llm_utils/nn/multihead_attention.hpp"
#include "llm_utils/nn/optim.hpp"
#include "llm_utils/nn/paged_kv_cache.hpp"
#include "llm_utils/nn/parameter.hpp"
#include "llm_utils/nn/self_attention.hpp"
#include "llm_utils/nn/state_dict.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/rope.hpp"
#include "llm_utils/runtime.hpp"
#include "llm_utils/tensor.hpp"
#include "llm_utils/threads.hpp"
#include "llm_utils/version.hpp"

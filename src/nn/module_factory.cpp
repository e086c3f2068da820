// make_module: the seven classes by name, built from one spec.

#include <algorithm>
#include <string>
#include <vector>

#include "llm_utils/error.hpp"
#include "llm_utils/nn/causal_attention.hpp"
#include "llm_utils/nn/multihead_attention.hpp"
#include "llm_utils/nn/self_attention.hpp"

namespace llm_utils {

const std::vector<std::string>& module_names() {
  static const std::vector<std::string> names = {"params", "linear",      "linear4", "linear5",
                                                 "causal", "mha-wrapper", "mha"};
  return names;
}

std::unique_ptr<Module> make_module(const ModuleSpec& s, Generator* generator) {
  const std::string& name = s.name;
  if (name == "causal" || name == "CausalAttention") {
    return std::make_unique<CausalAttention>(s.d_in, s.d_out, s.context_length, s.dropout,
                                             s.qkv_bias, generator);
  }
  if (name == "mha-wrapper" || name == "MultiHeadAttentionWrapper") {
    return std::make_unique<MultiHeadAttentionWrapper>(s.d_in, s.d_out, s.context_length, s.dropout,
                                                       s.num_heads, s.qkv_bias, generator);
  }
  if (name == "mha" || name == "MultiHeadAttention") {
    MultiHeadAttentionOptions options;
    options.num_kv_groups = s.num_kv_groups;
    options.scale = s.scale;
    options.causal = s.causal;
    options.window_left = s.window_left;
    options.softcap = s.softcap;
    options.alibi = s.alibi;
    options.sinks = s.sinks;
    options.rope = s.rope;
    return std::make_unique<MultiHeadAttention>(s.d_in, s.d_out, s.context_length, s.dropout,
                                                s.num_heads, s.qkv_bias, options, generator);
  }
  const std::vector<std::string>& all = module_names();
  const bool self_attention = std::find(all.begin(), all.begin() + 4, name) != all.begin() + 4 ||
                              name.rfind("SelfAttention_", 0) == 0;
  if (!self_attention) {
    throw ArgumentError(
        "unknown module '" + name +
        "' (expected params, linear, linear4, linear5, causal, mha-wrapper or mha)");
  }
  return make_self_attention(name, s.d_in, s.d_out, s.qkv_bias, generator);
}

}  // namespace llm_utils

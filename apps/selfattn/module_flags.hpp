#pragma once
// The flags that pick and build a module, as `selfattn run` has them (--module, --d-in, --d-out,
// --qkv-bias, --seed, --weights, --backend, --threads), for the subcommands that run one.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "llm_utils/llm_utils.hpp"

namespace selfattn {

struct ModuleFlags {
  std::string module;
  int64_t d_in = 0;
  int64_t d_out = 0;
  bool qkv_bias = false;
  std::optional<uint64_t> seed;
  std::string weights;
  std::string backend = "auto";
  std::string dtype = "fp32";
  int threads = 0;
};

/// d_in, d_out and the bias from a state dict's W_query entry (SelfAttention_Params layout
/// (d_in, d_out) or nn.Linear layout (d_out, d_in)), filling only what is still 0 / false.
void infer_sizes_from_weights(const llm_utils::StateDict& sd, int64_t& d_in, int64_t& d_out,
                              bool& qkv_bias);

/// Registers the flags on `cmd`; returns the --module option (for needs/excludes).
CLI::Option* add_module_flags(CLI::App* cmd, ModuleFlags& flags);

/// Sets the thread count, seeds as torch.manual_seed(seed) (PyTorch's default seed if none),
/// builds the module and loads --weights; sizes and bias left out come from the weights file.
std::unique_ptr<llm_utils::SelfAttentionBase> build_module(ModuleFlags flags);

}  // namespace selfattn

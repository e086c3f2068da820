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
  int threads = 0;
};

/// Registers the flags on `cmd`; returns the --module option (for needs/excludes).
CLI::Option* add_module_flags(CLI::App* cmd, ModuleFlags& flags);

/// Sets the thread count, seeds as torch.manual_seed(seed) (PyTorch's default seed if none),
/// builds the module and loads --weights; sizes and bias left out come from the weights file.
std::unique_ptr<llm_utils::SelfAttentionBase> build_module(ModuleFlags flags);

}  // namespace selfattn

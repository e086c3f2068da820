#include "module_flags.hpp"

#include "validators.hpp"

namespace selfattn {

CLI::Option* add_module_flags(CLI::App* cmd, ModuleFlags& f) {
  CLI::Option* module =
      cmd->add_option("--module", f.module, "Which class: params, linear, linear4 or linear5")
          ->check(CLI::IsMember({"params", "linear", "linear4", "linear5"}));
  cmd->add_option("--d-in", f.d_in, "Input width d_in (read from --weights if omitted)")
      ->check(positive_integer());
  cmd->add_option("--d-out", f.d_out, "Output width d_out (read from --weights if omitted)")
      ->check(positive_integer());
  cmd->add_flag("--qkv-bias", f.qkv_bias, "Give the linear projections a bias");
  cmd->add_option("--seed", f.seed,
                  "Seed the weights as torch.manual_seed(S) would (default: PyTorch's default "
                  "seed 67280421310721)")
      ->check(seed_integer());
  cmd->add_option("--weights", f.weights, "Load weights from a safetensors file")
      ->check(CLI::ExistingFile);
  cmd->add_option("--backend", f.backend,
                  "Attention kernel: auto, reference, flash or cuda (an NVIDIA GPU)")
      ->check(CLI::IsMember({"auto", "reference", "flash", "cuda"}));
  add_dtype_option(cmd, f.dtype);
  cmd->add_option("--threads", f.threads, "Threads for the computation (default: all cores)")
      ->check(positive_integer(std::numeric_limits<int>::max()));
  return module;
}

void infer_sizes_from_weights(const llm_utils::StateDict& sd, int64_t& d_in, int64_t& d_out,
                              bool& qkv_bias) {
  if (const auto* w = sd.find("W_query"); w != nullptr && w->dim() == 2) {  // (d_in, d_out)
    if (d_in == 0) d_in = w->size(0);
    if (d_out == 0) d_out = w->size(1);
  } else if (const auto* lw = sd.find("W_query.weight"); lw != nullptr && lw->dim() == 2) {
    if (d_in == 0) d_in = lw->size(1);  // nn.Linear layout (d_out, d_in)
    if (d_out == 0) d_out = lw->size(0);
  }
  if (sd.contains("W_query.bias")) qkv_bias = true;
}

std::unique_ptr<llm_utils::SelfAttentionBase> build_module(ModuleFlags f) {
  if (f.module.empty()) throw llm_utils::ArgumentError("--module is required");
  if (f.threads > 0) llm_utils::set_num_threads(f.threads);
  std::optional<llm_utils::StateDict> weights;
  if (!f.weights.empty()) {
    weights = llm_utils::io::load_safetensors(f.weights);
    infer_sizes_from_weights(*weights, f.d_in, f.d_out, f.qkv_bias);
  }
  if (f.d_in <= 0 || f.d_out <= 0) {
    throw llm_utils::ArgumentError(
        "--d-in and --d-out are required (and must be positive) unless --weights gives them");
  }
  llm_utils::manual_seed(f.seed.value_or(llm_utils::Generator::kDefaultSeed));
  auto module = llm_utils::make_self_attention(f.module, f.d_in, f.d_out, f.qkv_bias);
  module->set_backend(llm_utils::parse_backend(f.backend));
  module->set_dtype(llm_utils::parse_dtype(f.dtype));
  if (weights) module->load_state_dict(*weights);
  return module;
}

}  // namespace selfattn

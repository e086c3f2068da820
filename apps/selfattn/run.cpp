// selfattn run: one forward pass of a module on a .npy input, weights from a seed or a file.

#include <optional>
#include <string>

#include "commands.hpp"
#include "llm_utils/llm_utils.hpp"

namespace selfattn {
namespace {

struct RunOptions {
  std::string module;
  int64_t d_in = 0;
  int64_t d_out = 0;
  bool qkv_bias = false;
  std::optional<uint64_t> seed;
  std::string weights;
  std::string input;
  std::string output;
  std::string attn_weights;
  std::string save_weights;
  int threads = 0;
  std::string backend = "auto";
};

// d_in and d_out of the W_query entry of a state dict, for when the flags leave them out.
void infer_sizes(const llm_utils::StateDict& sd, RunOptions& o) {
  if (const auto* w = sd.find("W_query")) {  // SelfAttention_Params: (d_in, d_out)
    if (w->dim() == 2) {
      if (o.d_in == 0) o.d_in = w->size(0);
      if (o.d_out == 0) o.d_out = w->size(1);
    }
  } else if (const auto* lw = sd.find("W_query.weight")) {  // nn.Linear: (d_out, d_in)
    if (lw->dim() == 2) {
      if (o.d_in == 0) o.d_in = lw->size(1);
      if (o.d_out == 0) o.d_out = lw->size(0);
    }
  }
  if (o.qkv_bias == false && sd.contains("W_query.bias")) o.qkv_bias = true;
}

void run(RunOptions o, std::ostream& out) {
  if (o.threads > 0) llm_utils::set_num_threads(o.threads);
  std::optional<llm_utils::StateDict> weights;
  if (!o.weights.empty()) {
    weights = llm_utils::io::load_safetensors(o.weights);
    infer_sizes(*weights, o);
  }
  if (o.d_in <= 0 || o.d_out <= 0) {
    throw llm_utils::ArgumentError(
        "--d-in and --d-out are required (and must be positive) "
        "unless --weights gives them");
  }
  // Read the input before building anything, so a bad file fails first and fast.
  const llm_utils::Tensor x = llm_utils::io::load_npy(o.input);

  llm_utils::manual_seed(o.seed.value_or(llm_utils::Generator::kDefaultSeed));
  auto module = llm_utils::make_self_attention(o.module, o.d_in, o.d_out, o.qkv_bias);
  module->set_backend(llm_utils::parse_backend(o.backend));
  if (weights) module->load_state_dict(*weights);

  const llm_utils::Tensor y = module->forward(x);
  llm_utils::io::save_npy(o.output, y);
  if (!o.attn_weights.empty()) llm_utils::io::save_npy(o.attn_weights, module->attn_weights());
  if (!o.save_weights.empty()) {
    llm_utils::io::save_safetensors(o.save_weights, module->state_dict(),
                                    {{"format", "pt"}, {"module", module->class_name()}});
  }
  out << module->class_name() << ": " << llm_utils::shape_to_string(x.shape()) << " -> "
      << llm_utils::shape_to_string(y.shape()) << ", wrote " << o.output << "\n";
}

}  // namespace

Command add_run_command(CLI::App& app, std::ostream& out) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run one forward pass: read x from .npy, write the context vectors as .npy.");
  cmd->add_option("--module", options->module, "Which class")
      ->required()
      ->check(CLI::IsMember({"params", "linear", "linear4", "linear5"}));
  cmd->add_option("--d-in", options->d_in, "Input width d_in (read from --weights if omitted)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--d-out", options->d_out, "Output width d_out (read from --weights if omitted)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--qkv-bias", options->qkv_bias, "Give the linear projections a bias");
  cmd->add_option("--seed", options->seed,
                  "Seed the weights as torch.manual_seed(S) would (default: PyTorch's "
                  "default seed 67280421310721)");
  cmd->add_option("--weights", options->weights, "Load weights from a safetensors file")
      ->check(CLI::ExistingFile);
  cmd->add_option("--input", options->input,
                  "float32 .npy, shape (seq, d_in) or (batch, seq, d_in)")
      ->required();
  cmd->add_option("--output", options->output, "Where to write the context vectors (.npy)")
      ->required();
  cmd->add_option("--attn-weights", options->attn_weights,
                  "Also write the attention weights (.npy)");
  cmd->add_option("--save-weights", options->save_weights,
                  "Also write the module's weights (safetensors, PyTorch names)");
  cmd->add_option("--threads", options->threads, "Threads for the computation (default: all cores)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--backend", options->backend, "Attention kernel")
      ->check(CLI::IsMember({"auto", "reference", "flash"}));
  cmd->footer(
      "Examples:\n"
      "  selfattn run --module linear --d-in 3 --d-out 2 --seed 789 --input x.npy --output y.npy\n"
      "  selfattn run --module linear4 --weights w.safetensors --input x.npy --output y.npy "
      "--attn-weights a.npy");
  return [options, &out] { run(*options, out); };
}

}  // namespace selfattn

// selfattn run: one forward pass of a module on a .npy input, weights from a seed or a file.

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "llm_utils/llm_utils.hpp"
#include "module_flags.hpp"
#include "validators.hpp"

namespace selfattn {
namespace {

using OutputFiles = std::vector<std::pair<std::string, std::string>>;  // (path, bytes)

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
  std::string dtype = "fp32";
  // The book's causal and multi-head classes only.
  int64_t context_length = 0;  // 0: the input's sequence length, as the book's example
  int64_t num_heads = 1;
  int64_t num_kv_groups = 0;  // 0: num_heads, or what the weights' W_key gives
  double dropout = 0.0;
  // mha's variants (docs/variants.md).
  int64_t window = -1;
  float softcap = 0.0f;
  bool alibi = false;
  bool sinks = false;  // also when the weights hold `sinks`
  bool rope = false;
  double rope_theta = 10000.0;
  std::vector<int64_t> cu_seqlens;  // packed sequences: --input (T, d_in)
};

bool uses_variants(const RunOptions& o) {
  return o.window >= 0 || o.softcap != 0.0f || o.alibi || o.sinks || o.rope ||
         !o.cu_seqlens.empty();
}

bool is_book_module(const std::string& name) {
  return name == "causal" || name == "mha-wrapper" || name == "mha";
}

// Sizes a state dict of the book's classes gives: the wrapper's are under heads.<h>.
void infer_book_sizes(const llm_utils::StateDict& sd, RunOptions& o) {
  const std::string prefix = o.module == "mha-wrapper" ? "heads.0." : "";
  if (const auto* w = sd.find(prefix + "W_query.weight"); w != nullptr && w->dim() == 2) {
    if (o.d_in == 0) o.d_in = w->size(1);
    if (o.d_out == 0) o.d_out = w->size(0);
  }
  if (const auto* mask = sd.find(prefix + "mask"); mask != nullptr && o.context_length == 0) {
    o.context_length = mask->size(0);
  }
  if (!o.qkv_bias && sd.contains(prefix + "W_query.bias")) o.qkv_bias = true;
  // Grouped-query weights: W_key has num_kv_groups * head_dim rows.
  const auto* w_key = sd.find("W_key.weight");
  if (o.module == "mha" && o.num_kv_groups == 0 && w_key != nullptr && w_key->dim() == 2 &&
      o.num_heads > 0 && o.d_out % o.num_heads == 0 && w_key->size(0) != o.d_out) {
    o.num_kv_groups = w_key->size(0) / (o.d_out / o.num_heads);
  }
  if (o.module == "mha" && sd.contains("sinks")) o.sinks = true;
  if (o.module == "mha-wrapper") {
    int64_t heads = 0;
    while (sd.contains("heads." + std::to_string(heads) + ".W_query.weight")) ++heads;
    if (heads > 0) o.num_heads = heads;
  }
}

// The attention weights a module keeps for inspection: (N, N) or (B, N, N) for the one-head
// classes, (H, N, N) or (B, H, N, N) for MultiHeadAttention.
llm_utils::ConstTensorView attention_weights_of(const llm_utils::Module& m,
                                                const std::string& name) {
  if (const auto* s = dynamic_cast<const llm_utils::SelfAttentionBase*>(&m)) {
    return s->attn_weights();
  }
  if (const auto* c = dynamic_cast<const llm_utils::CausalAttention*>(&m)) {
    return c->attn_weights();
  }
  if (const auto* h = dynamic_cast<const llm_utils::MultiHeadAttention*>(&m)) {
    return h->attn_weights();
  }
  throw llm_utils::ArgumentError("--attn-weights is not available for --module " + name +
                                 " (its heads are modules of their own)");
}

void run(RunOptions o, std::ostream& out) {
  if (o.threads > 0) llm_utils::set_num_threads(o.threads);
  std::optional<llm_utils::StateDict> weights;
  if (!o.weights.empty()) {
    weights = llm_utils::io::load_safetensors(o.weights);
    if (is_book_module(o.module)) {
      infer_book_sizes(*weights, o);
    } else {
      infer_sizes_from_weights(*weights, o.d_in, o.d_out, o.qkv_bias);
    }
  }
  if (o.d_in <= 0 || o.d_out <= 0) {
    throw llm_utils::ArgumentError(
        "--d-in and --d-out are required (and must be positive) "
        "unless --weights gives them");
  }
  if (o.module != "mha" && uses_variants(o)) {
    throw llm_utils::ArgumentError(
        "--window, --softcap, --alibi, --sinks, --rope and --cu-seqlens apply to --module mha");
  }
  // Read the input before building anything, so a bad file fails first and fast.
  const llm_utils::Tensor x = llm_utils::io::load_npy(o.input);
  if (o.context_length == 0 && x.dim() >= 2) {
    o.context_length = x.size(-2);
    if (!o.cu_seqlens.empty()) {  // packed sequences: the longest one
      int64_t longest = 1;
      for (size_t s = 1; s < o.cu_seqlens.size(); ++s) {
        longest = std::max(longest, o.cu_seqlens[s] - o.cu_seqlens[s - 1]);
      }
      o.context_length = longest;
    }
  }

  llm_utils::manual_seed(o.seed.value_or(llm_utils::Generator::kDefaultSeed));
  llm_utils::ModuleSpec spec;
  spec.name = o.module;
  spec.d_in = o.d_in;
  spec.d_out = o.d_out;
  spec.qkv_bias = o.qkv_bias;
  spec.context_length = o.context_length;
  spec.dropout = o.dropout;
  spec.num_heads = o.num_heads;
  spec.num_kv_groups = o.num_kv_groups;
  spec.window_left = o.window;
  spec.softcap = o.softcap;
  spec.alibi = o.alibi;
  spec.sinks = o.sinks;
  if (o.rope) {
    spec.rope = llm_utils::RopeOptions{};
    spec.rope->theta = o.rope_theta;
  }
  const std::unique_ptr<llm_utils::Module> module = llm_utils::make_module(spec);
  module->set_backend(llm_utils::parse_backend(o.backend));
  module->set_dtype(llm_utils::parse_dtype(o.dtype));
  if (weights) module->load_state_dict(*weights);

  llm_utils::Tensor y;
  if (!o.cu_seqlens.empty()) {
    llm_utils::AttentionForwardOptions packed;
    packed.cu_seqlens = o.cu_seqlens;
    y = dynamic_cast<llm_utils::MultiHeadAttention&>(*module).forward(x, packed);
  } else {
    y = module->forward(x);
  }
  // All outputs are written as one step: a failure on any leaves none behind.
  OutputFiles files = {{o.output, llm_utils::io::serialize_npy(y)}};
  if (!o.attn_weights.empty()) {
    files.emplace_back(o.attn_weights,
                       llm_utils::io::serialize_npy(attention_weights_of(*module, o.module)));
  }
  if (!o.save_weights.empty()) {
    files.emplace_back(o.save_weights, llm_utils::io::serialize_safetensors(
                                           module->state_dict(),
                                           {{"format", "pt"}, {"module", module->class_name()}}));
  }
  llm_utils::io::write_files(files);
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
      ->check(CLI::IsMember(
          {"params", "linear", "linear4", "linear5", "causal", "mha-wrapper", "mha"}));
  cmd->add_option("--d-in", options->d_in, "Input width d_in (read from --weights if omitted)")
      ->check(positive_integer());
  cmd->add_option("--d-out", options->d_out, "Output width d_out (read from --weights if omitted)")
      ->check(positive_integer());
  cmd->add_flag("--qkv-bias", options->qkv_bias, "Give the linear projections a bias");
  cmd->add_option("--seed", options->seed,
                  "Seed the weights as torch.manual_seed(S) would (default: PyTorch's "
                  "default seed 67280421310721)")
      ->check(seed_integer());
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
      ->check(positive_integer(std::numeric_limits<int>::max()));
  cmd->add_option("--backend", options->backend, "Attention kernel")
      ->check(CLI::IsMember({"auto", "reference", "flash", "cuda"}));
  add_dtype_option(cmd, options->dtype);
  cmd->add_option("--context-length", options->context_length,
                  "causal, mha-wrapper, mha: the longest sequence (default: the input's, or the "
                  "mask in --weights)")
      ->check(positive_integer());
  cmd->add_option("--num-heads", options->num_heads,
                  "mha-wrapper, mha: number of heads (default 1; mha needs d_out divisible by it)")
      ->check(positive_integer());
  cmd->add_option("--num-kv-groups", options->num_kv_groups,
                  "mha: key/value heads for grouped-query attention (default: --num-heads, "
                  "or what --weights holds; num_heads must be a multiple of it)")
      ->check(positive_integer());
  cmd->add_option("--dropout", options->dropout,
                  "causal, mha-wrapper, mha: dropout on the attention weights, in [0, 1); applied, "
                  "since a fresh module is in training mode as in PyTorch (masks from --seed)");
  cmd->add_option("--window", options->window,
                  "mha: sliding window, token i also stops seeing tokens before i - WINDOW")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--softcap", options->softcap,
                  "mha: logit softcap, scores become cap * tanh(score / cap)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--alibi", options->alibi, "mha: ALiBi, the paper's slope per head");
  cmd->add_flag("--sinks", options->sinks,
                "mha: a learnable sink logit per head (zeros, or from --weights, which turn it "
                "on when they hold `sinks`)");
  cmd->add_flag("--rope", options->rope, "mha: rotary position embedding on q and k");
  cmd->add_option("--rope-theta", options->rope_theta, "mha --rope: the frequencies' base")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--cu-seqlens", options->cu_seqlens,
                  "mha: packed sequences, --input (T, d_in) holds sequence s in rows "
                  "[c_s, c_s+1), e.g. --cu-seqlens 0,5,12 (each attends within itself)")
      ->delimiter(',');
  cmd->footer(
      "Examples:\n"
      "  selfattn run --module linear --d-in 3 --d-out 2 --seed 789 --input x.npy --output y.npy\n"
      "  selfattn run --module linear4 --weights w.safetensors --input x.npy --output y.npy "
      "--attn-weights a.npy\n"
      "  selfattn run --module mha --d-in 3 --d-out 2 --num-heads 2 --seed 123 --input x.npy "
      "--output y.npy\n"
      "  selfattn run --module mha --d-in 64 --d-out 64 --num-heads 4 --rope --window 128 --sinks "
      "--input x.npy --output y.npy\n"
      "  selfattn run --module mha --d-in 8 --d-out 8 --num-heads 2 --cu-seqlens 0,5,12 "
      "--input packed.npy --output y.npy");
  return [options, &out] { run(*options, out); };
}

}  // namespace selfattn

// selfattn heatmap: the attention weights of a run (or of a saved .npy) as a labelled PNG.

#include <optional>
#include <string>

#include "commands.hpp"
#include "llm_utils/llm_utils.hpp"
#include "module_flags.hpp"
#include "pictures.hpp"

namespace selfattn {
namespace {

struct HeatmapFlags {
  ModuleFlags module;
  std::string input;
  std::string attn_weights;
  std::string output;
  std::string tokens;
  std::optional<int64_t> batch_index;
  std::string title;
  std::optional<double> vmin, vmax;
  std::string cell_values = "auto";
};

// One (N, N) matrix out of (N, N) or (B, N, N) weights.
llm_utils::ConstTensorView pick_matrix(const llm_utils::Tensor& w,
                                       const std::optional<int64_t>& batch_index,
                                       std::string* which) {
  const bool square = w.dim() >= 2 && w.size(-1) == w.size(-2);
  if ((w.dim() != 2 && w.dim() != 3) || !square || w.numel() == 0) {
    throw llm_utils::ArgumentError(
        "attention weights must be (N, N) or (batch, N, N) with N >= 1, "
        "got shape " +
        llm_utils::shape_to_string(w.shape()));
  }
  if (w.dim() == 2) {
    if (batch_index.value_or(0) != 0) {
      throw llm_utils::ArgumentError("--batch-index " + std::to_string(*batch_index) +
                                     ": the input is 2-D, there is only batch element 0");
    }
    return w.view();
  }
  const int64_t b = batch_index.value_or(0);
  if (b < 0 || b >= w.size(0)) {
    throw llm_utils::ArgumentError("--batch-index " + std::to_string(b) + " is out of range: " +
                                   "the batch has " + std::to_string(w.size(0)) + " elements");
  }
  *which = " (batch element " + std::to_string(b) + " of " + std::to_string(w.size(0)) + ")";
  return w.select(b);
}

void heatmap(const HeatmapFlags& o, std::ostream& out) {
  if (o.input.empty() == o.attn_weights.empty()) {
    throw llm_utils::ArgumentError(
        "give either --input X.npy (with --module and its flags) or --attn-weights A.npy");
  }
  check_output_folder(o.output, "--output");
  llm_utils::Tensor weights;
  std::string title;
  if (!o.attn_weights.empty()) {
    weights = llm_utils::io::load_npy(o.attn_weights);
    title = "attention weights from " + o.attn_weights;
  } else {
    // Read the input before building anything, so a bad file fails first and fast (as run).
    const llm_utils::Tensor x = llm_utils::io::load_npy(o.input);
    auto module = build_module(o.module);
    module->forward(x);
    weights = llm_utils::Tensor::from_view(module->attn_weights());
    title = module->class_name() + "(d_in=" + std::to_string(module->d_in()) +
            ", d_out=" + std::to_string(module->d_out()) + ") attention weights";
  }
  std::string which;
  const llm_utils::ConstTensorView m = pick_matrix(weights, o.batch_index, &which);

  plot::HeatmapOptions opts;
  opts.title = o.title.empty() ? title + which : o.title;
  if (!o.tokens.empty()) {
    const std::vector<std::string> tokens = split_tokens(o.tokens);
    if (static_cast<int64_t>(tokens.size()) != m.size(0)) {
      throw llm_utils::ArgumentError("--tokens has " + std::to_string(tokens.size()) +
                                     " labels, the attention weights have " +
                                     std::to_string(m.size(0)) + " tokens");
    }
    opts.row_labels = opts.col_labels = tokens;
  }
  opts.vmin = o.vmin;
  opts.vmax = o.vmax;
  if (o.vmin && o.vmax && !(*o.vmin < *o.vmax)) {
    throw llm_utils::ArgumentError("--vmin must be below --vmax");
  }
  opts.cell_values = o.cell_values == "always"  ? plot::CellValues::always
                     : o.cell_values == "never" ? plot::CellValues::never
                                                : plot::CellValues::automatic;
  write_attention_heatmap(o.output, m, opts);
  out << "wrote " << o.output << ": attention weights of " << m.size(0) << " x " << m.size(1)
      << " tokens" << which << "\n";
}

}  // namespace

Command add_heatmap_command(CLI::App& app, std::ostream& out) {
  auto flags = std::make_shared<HeatmapFlags>();
  CLI::App* cmd = app.add_subcommand(
      "heatmap", "Draw the attention weights of a run as a PNG heatmap with token labels.");
  CLI::Option* module = add_module_flags(cmd, flags->module);
  CLI::Option* input =
      cmd->add_option("--input", flags->input,
                      "float32 .npy, shape (seq, d_in) or (batch, seq, d_in), to run the module on")
          ->needs(module);
  cmd->add_option("--attn-weights", flags->attn_weights,
                  "Draw an existing (N, N) or (batch, N, N) .npy instead of running a module")
      ->excludes(input)
      ->excludes(module);
  cmd->add_option("--output,-o", flags->output, "Where to write the picture (.png)")->required();
  cmd->add_option("--tokens", flags->tokens,
                  "Comma-separated token labels for both axes, one per token (default: 0..N-1)");
  cmd->add_option("--batch-index", flags->batch_index,
                  "Which batch element to draw for 3-D input (default: 0)");
  cmd->add_option("--title", flags->title, "Title above the picture");
  cmd->add_option("--vmin", flags->vmin,
                  "Value at the dark end of the colour scale (default: min)");
  cmd->add_option("--vmax", flags->vmax,
                  "Value at the bright end of the colour scale (default: max)");
  cmd->add_option("--cell-values", flags->cell_values,
                  "Print each weight in its cell: auto (up to 16 x 16), always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}));
  cmd->footer(
      "Rows are query tokens, columns the key tokens they attend to; each row sums to 1.\n"
      "The colour scale (viridis) runs from the smallest to the largest weight unless --vmin /\n"
      "--vmax fix it (e.g. --vmin 0 --vmax 1 to compare pictures).\n\n"
      "Examples:\n"
      "  selfattn heatmap --module linear --d-in 3 --d-out 2 --seed 789 --input x.npy \\\n"
      "      --tokens \"Your,journey,starts,with,one,step\" --output attn.png\n"
      "  selfattn heatmap --module linear4 --weights w.safetensors --input x3d.npy \\\n"
      "      --batch-index 1 --output attn1.png\n"
      "  selfattn heatmap --attn-weights a.npy --vmin 0 --vmax 1 --output attn.png");
  return [flags, &out] { heatmap(*flags, out); };
}

}  // namespace selfattn

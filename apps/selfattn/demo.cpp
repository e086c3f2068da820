// selfattn demo: the book's sentence through all four classes, seeded as the book seeds them,
// printed step by step with token labels.

#include <cstdio>
#include <string>
#include <vector>

#include "commands.hpp"
#include "llm_utils/llm_utils.hpp"
#include "pictures.hpp"

namespace selfattn {
namespace {

const std::vector<std::string> kTokens = {"Your", "journey", "starts", "with", "one", "step"};

// The book's embeddings, rows in token order: (6, 3).
llm_utils::Tensor book_inputs() {
  return llm_utils::Tensor({6, 3}, {0.43f, 0.15f, 0.89f, 0.55f, 0.87f, 0.66f, 0.57f, 0.85f, 0.64f,
                                    0.22f, 0.58f, 0.33f, 0.77f, 0.25f, 0.10f, 0.05f, 0.80f, 0.55f});
}

std::string cell(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%9.4f", static_cast<double>(v));
  return buf;
}

std::string padded(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

// A (rows, cols) matrix with optional row labels and column headers, four decimals as PyTorch.
void print_matrix(std::ostream& out, llm_utils::ConstTensorView m,
                  const std::vector<std::string>& row_labels,
                  const std::vector<std::string>& col_labels, const std::string& indent = "    ") {
  const int64_t rows = m.size(0), cols = m.size(1);
  const size_t label_width = row_labels.empty() ? 0 : 9;
  if (!col_labels.empty()) {
    out << indent << std::string(label_width, ' ');
    for (const std::string& c : col_labels) {
      const std::string head = c.size() > 8 ? c.substr(0, 8) : c;
      out << std::string(9 - head.size(), ' ') << head;
    }
    out << "\n";
  }
  for (int64_t i = 0; i < rows; ++i) {
    out << indent;
    if (!row_labels.empty()) out << padded(row_labels[static_cast<size_t>(i)], label_width);
    for (int64_t j = 0; j < cols; ++j) out << cell(m.at({i, j}));
    out << "\n";
  }
}

std::vector<std::string> numbered(const std::string& prefix, int64_t n) {
  std::vector<std::string> out;
  for (int64_t i = 1; i <= n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

// Columns of several (rows, c_i) matrices side by side: (rows, sum c_i).
llm_utils::Tensor side_by_side(const std::vector<llm_utils::ConstTensorView>& parts) {
  const int64_t rows = parts.front().size(0);
  int64_t cols = 0;
  for (const auto& p : parts) cols += p.size(1);
  llm_utils::Tensor out({rows, cols});
  int64_t offset = 0;
  for (const auto& p : parts) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < p.size(1); ++j) out.at({i, offset + j}) = p.at({i, j});
    }
    offset += p.size(1);
  }
  return out;
}

// (rows, inner) @ (inner, cols), plain loops: the demo's matrices are tiny.
llm_utils::Tensor matmul(llm_utils::ConstTensorView a, llm_utils::ConstTensorView b) {
  const int64_t rows = a.size(0), inner = a.size(1), cols = b.size(1);
  llm_utils::Tensor out({rows, cols});
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < inner; ++k) acc += a.at({i, k}) * b.at({k, j});
      out.at({i, j}) = acc;
    }
  }
  return out;
}

void print_named_matrices(
    std::ostream& out, const std::string& title,
    const std::vector<std::pair<std::string, llm_utils::ConstTensorView>>& ms) {
  out << "  " << title << "\n";
  for (const auto& [name, m] : ms) {
    out << "    " << name << " " << llm_utils::shape_to_string(m.shape()) << ":\n";
    print_matrix(out, m, {}, {}, "      ");
  }
}

void print_qkv(std::ostream& out, llm_utils::ConstTensorView q, llm_utils::ConstTensorView k,
               llm_utils::ConstTensorView v) {
  out << "  queries, keys and values, one row per token:\n";
  std::vector<std::string> cols = {"query1", "query2", "key1", "key2", "value1", "value2"};
  print_matrix(out, side_by_side({q, k, v}), kTokens, cols);
}

void print_results(std::ostream& out, const llm_utils::SelfAttentionBase& m,
                   llm_utils::ConstTensorView context) {
  out << "  attention weights = softmax(queries @ keys^T / sqrt(2)): row = the query token, "
         "column = the\n  token it attends to; each row sums to 1:\n";
  print_matrix(out, m.attn_weights(), kTokens, kTokens);
  out << "  context vectors = attention weights @ values, one per token:\n";
  print_matrix(out, context, kTokens, numbered("z", context.size(1)));
  out << "\n";
}

void demo_params(std::ostream& out, const llm_utils::Tensor& x) {
  out << "1. SelfAttention_Params(d_in=3, d_out=2), built after manual_seed(123)\n"
         "   Weights are bare (d_in x d_out) matrices drawn with torch.rand, applied as x @ W.\n";
  llm_utils::manual_seed(123);
  llm_utils::SelfAttention_Params m(3, 2);
  print_named_matrices(
      out, "weights:",
      {{"W_query", m.W_query.data()}, {"W_key", m.W_key.data()}, {"W_value", m.W_value.data()}});
  const llm_utils::Tensor context = m(x);
  print_qkv(out, matmul(x, m.W_query.data()), matmul(x, m.W_key.data()), m.values());
  print_results(out, m, context);
}

void demo_linear(std::ostream& out, const llm_utils::Tensor& x,
                 llm_utils::SelfAttentionLinearProjections& m) {
  print_named_matrices(out, "weights, nn.Linear layout (d_out x d_in), applied as x @ W^T:",
                       {{"W_query.weight", m.W_query.weight.data()},
                        {"W_key.weight", m.W_key.weight.data()},
                        {"W_value.weight", m.W_value.weight.data()}});
  const llm_utils::Tensor context = m(x);
  print_qkv(out, m.W_query(x), m.W_key(x), m.values());
  print_results(out, m, context);
}

void demo(std::ostream& out) {
  const llm_utils::Tensor x = book_inputs();
  out << "Self-attention on \"Your journey starts with one step\"\n"
         "(Sebastian Raschka, Build a Large Language Model (From Scratch), chapter 3)\n\n"
         "Inputs x: 6 tokens, each a 3-dimensional embedding (d_in = 3). Every class below "
         "projects\nthem to queries, keys and values of width d_out = 2.\n";
  print_matrix(out, x, kTokens, numbered("x", 3));
  out << "\n";

  demo_params(out, x);

  out << "2. SelfAttention_Linear(d_in=3, d_out=2), built after manual_seed(789)\n"
         "   Queries, keys and values come from three nn.Linear layers (no bias), whose "
         "initialisation\n   PyTorch draws in the order query, key, value.\n";
  llm_utils::manual_seed(789);
  llm_utils::SelfAttention_Linear linear(3, 2);
  demo_linear(out, x, linear);

  out << "3. SelfAttention_Linear4(d_in=3, d_out=2), built after manual_seed(789)\n"
         "   The same weights as 2. The last product is written as a layer instead:\n"
         "   attnValues2ContextL = nn.Linear(6, 6, bias=False) whose weight IS the attention "
         "matrix,\n   and context = attnValues2ContextL(values^T)^T: attention is a linear layer "
         "with\n   data-dependent weights. (The layer is frozen: in training only W_value "
         "learns.)\n";
  llm_utils::manual_seed(789);
  llm_utils::SelfAttention_Linear4 linear4(3, 2);
  const llm_utils::Tensor context4 = linear4(x);
  out << "  attnValues2ContextL.weight (6 x 6), the attention weights of this input:\n";
  print_matrix(out, linear4.attnValues2ContextL().weight.data(), kTokens, kTokens);
  out << "  context vectors = attnValues2ContextL(values^T)^T, the same as in 2:\n";
  print_matrix(out, context4, kTokens, numbered("z", 2));
  out << "\n";

  out << "4. SelfAttention_Linear5(d_in=3, d_out=2), built after manual_seed(789)\n"
         "   As 3, and the scores too come from a layer: attnQueries2ScoresL = nn.Linear(2, 6, "
         "bias=False)\n   whose weight IS the key matrix, so scores = "
         "attnQueries2ScoresL(queries) = queries @ keys^T.\n";
  llm_utils::manual_seed(789);
  llm_utils::SelfAttention_Linear5 linear5(3, 2);
  const llm_utils::Tensor context5 = linear5(x);
  out << "  attnQueries2ScoresL.weight (6 x 2), the keys of this input:\n";
  print_matrix(out, linear5.attnQueries2ScoresL().weight.data(), kTokens, {"key1", "key2"});
  out << "  context vectors, the same again:\n";
  print_matrix(out, context5, kTokens, numbered("z", 2));
  out << "\nAll four agree with PyTorch running the original llm_utils.selfAttn code on the same "
         "seeds.\n";
}

// The attention weights of part 2 (SelfAttention_Linear, seed 789) as a picture.
void demo_heatmap(std::ostream& out, const std::string& path) {
  check_output_folder(path, "--heatmap");
  llm_utils::manual_seed(789);
  llm_utils::SelfAttention_Linear m(3, 2);
  m(book_inputs());
  plot::HeatmapOptions opts;
  opts.title =
      "SelfAttention_Linear(3, 2), manual_seed(789): \"Your journey starts with one step\"";
  opts.row_labels = opts.col_labels = kTokens;
  write_attention_heatmap(path, m.attn_weights(), opts);
  out << "\nwrote the attention weights of 2. (SelfAttention_Linear, seed 789) to " << path << "\n";
}

}  // namespace

Command add_demo_command(CLI::App& app, std::ostream& out) {
  auto heatmap = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Walk the book's example sentence through all four classes, step by step.");
  cmd->add_option("--heatmap", *heatmap,
                  "Also draw the attention weights of SelfAttention_Linear (seed 789) as a PNG, "
                  "with the six words as labels");
  cmd->footer("Examples:\n  selfattn demo\n  selfattn demo --heatmap attn.png");
  return [&out, heatmap] {
    demo(out);
    if (!heatmap->empty()) demo_heatmap(out, *heatmap);
  };
}

}  // namespace selfattn

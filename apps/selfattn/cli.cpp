#include "cli.hpp"

#include <algorithm>

#include "llm_utils/version.hpp"

namespace selfattn {

Cli::Cli(std::ostream& out)
    : app_{
          "selfattn: self-attention from Raschka's \"Build a Large Language Model (From "
          "Scratch)\", chapter 3, in C++ with PyTorch-identical numbers.",
          "selfattn"} {
  app_.set_version_flag("--version", llm_utils::kVersion);
  app_.require_subcommand(1);
  app_.footer(
      "Examples:\n"
      "  selfattn demo\n"
      "  selfattn demo --heatmap attn.png\n"
      "  selfattn run --module linear --d-in 3 --d-out 2 --seed 789 --input x.npy --output y.npy\n"
      "  selfattn heatmap --module linear --d-in 3 --d-out 2 --seed 789 --input x.npy "
      "--output attn.png\n"
      "  selfattn train --module linear --steps 300 --loss-plot loss.png\n"
      "  selfattn bench --module linear --seq 4096 --d-in 768 --d-out 64 --threads 2\n"
      "Run 'selfattn SUBCOMMAND --help' for a subcommand's options.");

  // One line per subcommand.
  commands_.emplace_back("demo", add_demo_command(app_, out));
  commands_.emplace_back("run", add_run_command(app_, out));
  commands_.emplace_back("heatmap", add_heatmap_command(app_, out));
  commands_.emplace_back("train", add_train_command(app_, out));
  commands_.emplace_back("bench", add_bench_command(app_, out));
}

void Cli::parse(std::vector<std::string> args) {
  // CLI11 consumes the vector from the back.
  std::reverse(args.begin(), args.end());
  app_.parse(args);
}

std::string one_line(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

void Cli::run() const {
  for (const CLI::App* sub : app_.get_subcommands()) {
    for (const auto& [name, command] : commands_) {
      if (sub->get_name() == name) command();
    }
  }
}

}  // namespace selfattn

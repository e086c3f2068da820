// selfattn: the llm_utils self-attention classes from the shell.
// Errors go to stderr as one line starting with "error:", with a non-zero exit status.

#include <exception>
#include <iostream>

#include "commands.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "selfattn: self-attention from Raschka's \"Build a Large Language Model (From Scratch)\", "
      "chapter 3, in C++ with PyTorch-identical numbers.",
      "selfattn"};
  app.set_version_flag("--version", llm_utils::kVersion);
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  selfattn demo\n"
      "  selfattn run --module linear --d-in 3 --d-out 2 --seed 789 --input x.npy --output y.npy\n"
      "Run 'selfattn SUBCOMMAND --help' for a subcommand's options.");

  selfattn::Command demo = selfattn::add_demo_command(app, std::cout);
  selfattn::Command run = selfattn::add_run_command(app, std::cout);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << " (see 'selfattn --help')\n";
    return 2;
  }

  try {
    for (const CLI::App* sub : app.get_subcommands()) {
      if (sub->get_name() == "demo") demo();
      if (sub->get_name() == "run") run();
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

#pragma once
// The selfattn command line as an object: every subcommand registered on one CLI11 app. main()
// and the argument fuzzer (fuzz/fuzz_cli.cpp) both go through it, so the fuzzer parses exactly
// what users type, without running anything or exiting.

#include <CLI/CLI.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commands.hpp"

namespace selfattn {

class Cli {
 public:
  /// Registers every subcommand; they print to `out` when run.
  explicit Cli(std::ostream& out);

  /// Parses the process arguments. Throws what CLI11 throws: CLI::ParseError and its
  /// subclasses, CLI::CallForHelp and CLI::CallForVersion included. Runs nothing.
  void parse(int argc, const char* const* argv) { app_.parse(argc, argv); }
  /// The same for arguments without the program name, in the order typed.
  void parse(std::vector<std::string> args);

  /// Runs the subcommand the last parse chose.
  void run() const;

  /// For main() to print help and errors as CLI11 formats them.
  CLI::App& app() { return app_; }

 private:
  CLI::App app_;
  std::vector<std::pair<std::string, Command>> commands_;
};

/// An error message as the one line main() prints after "error: ": arguments and paths are
/// echoed in messages, and a newline or terminal escape in them must not break that line, so
/// control characters are shown escaped (\n, \x1b).
std::string one_line(std::string_view message);

}  // namespace selfattn

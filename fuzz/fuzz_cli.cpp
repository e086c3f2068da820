// libFuzzer harness for selfattn's argument handling: the input is the argument list, split at
// NUL bytes. Parsing runs every subcommand's option checks in-process; nothing is run, nothing
// written. Every outcome must be a successful parse, a request for help or the version, or a
// CLI::ParseError whose message, as main() prints it, is one line.

#include <cstdint>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "fuzz_check.hpp"

namespace {

// Far more than any real command line; keeps each run cheap.
constexpr size_t kMaxArgs = 64;

std::vector<std::string> split_args(const uint8_t* data, size_t size) {
  std::vector<std::string> args(1);
  for (size_t i = 0; i < size && args.size() <= kMaxArgs; ++i) {
    if (data[i] == 0) {
      args.emplace_back();
    } else {
      args.back() += static_cast<char>(data[i]);
    }
  }
  if (args.size() > kMaxArgs) args.resize(kMaxArgs);
  return args;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::ostringstream out;
  selfattn::Cli cli(out);
  try {
    cli.parse(split_args(data, size));
  } catch (const CLI::Success& e) {
    // --help and --version: format them as main() would, to cover that code too.
    std::ostringstream help, err;
    cli.app().exit(e, help, err);
  } catch (const CLI::ParseError& e) {
    // CLI11 echoes arguments, control characters included; main() prints them through one_line.
    const std::string line = selfattn::one_line(e.what());
    if (line.empty()) fuzz::fail("empty error message", line);
    fuzz::check_message(line, "", /*max_bytes=*/size_t{1} << 20);
  }
  return 0;
}

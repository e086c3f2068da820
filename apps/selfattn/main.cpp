// selfattn: the llm_utils self-attention classes from the shell.
// Errors go to stderr as one line starting with "error:", with a non-zero exit status.

#include <exception>
#include <iostream>

#include "cli.hpp"
#if SELFATTN_HAVE_MPI
#include "bench_dist.hpp"
#endif
#include "llm_utils/error.hpp"

int main(int argc, char** argv) {
  // The subcommands are registered in cli.cpp, shared with the argument fuzzer.
  selfattn::Cli cli(std::cout);
  CLI::App& app = cli.app();

  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << selfattn::one_line(e.what()) << " (see 'selfattn --help')\n";
    return 2;
  }

  try {
    cli.run();
#if SELFATTN_HAVE_MPI
  } catch (const selfattn::QuietExit& e) {
    return e.status;  // another rank reported the error
#endif
  } catch (const std::exception& e) {
    std::cerr << "error: " << selfattn::one_line(e.what()) << "\n";
    return 1;
  }
  return 0;
}

#pragma once
// The selfattn subcommands. Each registers its options on a CLI11 app and returns the function
// that runs it once parsing succeeded.

#include <CLI/CLI.hpp>
#include <functional>
#include <ostream>

namespace selfattn {

using Command = std::function<void()>;

Command add_demo_command(CLI::App& app, std::ostream& out);
Command add_run_command(CLI::App& app, std::ostream& out);
Command add_heatmap_command(CLI::App& app, std::ostream& out);
Command add_train_command(CLI::App& app, std::ostream& out);
Command add_bench_command(CLI::App& app, std::ostream& out);

}  // namespace selfattn

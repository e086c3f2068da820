// selfattn bench: time one workload, report median ms, GFLOP/s, % of this machine's SGEMM rate
// measured in the same run, and peak resident memory.

#include <cstdio>
#include <limits>
#include <string>

#include "commands.hpp"
#include "llm_utils/llm_utils.hpp"
#include "validators.hpp"
#include "workload.hpp"

namespace selfattn {
namespace {

struct BenchOptions {
  llm_utils::bench::Workload workload;
  std::string backend = "auto";
  int threads = 0;
  int repeat = 5;
  bool json = false;
  int64_t sgemm_size = 2048;
};

void bench(BenchOptions o, std::ostream& out) {
  if (o.threads > 0) llm_utils::set_num_threads(o.threads);
  llm_utils::bench::Workload& w = o.workload;
  w.backend = llm_utils::parse_backend(o.backend);
  const int64_t d = w.d_out;
  const llm_utils::Backend used = llm_utils::choose_backend(w.backend, w.seq, w.seq, d);
  llm_utils::bench::WorkloadRunner runner(w);
  const llm_utils::bench::Timing t = llm_utils::bench::time_runs(runner, o.repeat);
  const double rss = llm_utils::bench::peak_rss_mib();  // before the SGEMM's own buffers
  const double flops = llm_utils::bench::workload_flops(w);
  const double gflops = flops / (t.median_ms * 1e6);
  const double sgemm = llm_utils::bench::sgemm_gflops(o.sgemm_size, 3);
  char line[1024];
  if (o.json) {
    std::snprintf(line, sizeof line,
                  "{\"module\": \"%s\", \"batch\": %lld, \"seq\": %lld, \"d_in\": %lld, "
                  "\"d_out\": %lld, \"causal\": %s, \"backward\": %s, \"backend\": \"%s\", "
                  "\"threads\": %d, \"repeat\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f, "
                  "\"gflops\": %.2f, \"sgemm_gflops\": %.2f, \"percent_of_sgemm\": %.1f, "
                  "\"peak_rss_mib\": %.1f}\n",
                  w.module.c_str(), static_cast<long long>(w.batch), static_cast<long long>(w.seq),
                  static_cast<long long>(w.d_in), static_cast<long long>(w.d_out),
                  w.causal ? "true" : "false", w.backward ? "true" : "false",
                  llm_utils::backend_name(used), llm_utils::get_num_threads(), o.repeat,
                  t.median_ms, t.min_ms, gflops, sgemm, 100.0 * gflops / sgemm, rss);
  } else {
    std::snprintf(line, sizeof line,
                  "%s%s B=%lld N=%lld d_in=%lld d_out=%lld%s, backend %s, %d threads, %d runs\n"
                  "  median %.3f ms (min %.3f), %.1f GFLOP/s = %.0f%% of SGEMM (%.1f GFLOP/s "
                  "at %lld^3)\n  peak resident memory %.1f MiB\n",
                  w.module.c_str(), w.backward ? " forward+backward" : " forward",
                  static_cast<long long>(w.batch), static_cast<long long>(w.seq),
                  static_cast<long long>(w.d_in), static_cast<long long>(w.d_out),
                  w.causal ? " causal" : "", llm_utils::backend_name(used),
                  llm_utils::get_num_threads(), o.repeat, t.median_ms, t.min_ms, gflops,
                  100.0 * gflops / sgemm, sgemm, static_cast<long long>(o.sgemm_size), rss);
  }
  out << line;
}

}  // namespace

Command add_bench_command(CLI::App& app, std::ostream& out) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Time a module (or the bare attention core) and report GFLOP/s against SGEMM.");
  cmd->add_option("--module", o->workload.module, "Which class, or core for the kernel alone")
      ->check(CLI::IsMember({"params", "linear", "linear4", "linear5", "core"}))
      ->capture_default_str();
  cmd->add_option("--batch", o->workload.batch, "Batch size")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--seq", o->workload.seq, "Sequence length N")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--d-in", o->workload.d_in, "Input width")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--d-out", o->workload.d_out, "Output width = head dimension")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_flag("--causal", o->workload.causal, "Causal mask (core only)");
  cmd->add_flag("--backward", o->workload.backward, "Time forward + backward");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)")
      ->check(positive_integer(std::numeric_limits<int>::max()));
  cmd->add_option("--backend", o->backend, "Attention kernel")
      ->check(CLI::IsMember({"auto", "reference", "flash"}))
      ->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "Timed runs (after one warm-up); the median is reported")
      ->check(positive_integer(std::numeric_limits<int>::max()))
      ->capture_default_str();
  cmd->add_option("--sgemm-size", o->sgemm_size, "Size of the square SGEMM measured alongside")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object instead of text");
  cmd->footer(
      "FLOPs count a multiply-add as 2: projections 6*B*N*d_in*d_out, attention core "
      "4*B*N^2*d_out\n(half with --causal); a backward adds 2.5x the core and 2x the "
      "projections (Linear4/5: the value path only).\n"
      "Examples:\n"
      "  selfattn bench --module linear --seq 4096 --d-in 768 --d-out 64 --threads 2\n"
      "  selfattn bench --module core --seq 4096 --d-out 64 --backward --json\n"
      "  selfattn bench --module core --seq 65536 --d-out 64 --repeat 1");
  return [o, &out] { bench(*o, out); };
}

}  // namespace selfattn

// selfattn bench: time one workload, report median ms, GFLOP/s, % of this machine's SGEMM rate
// and of its FP32 FMA peak, both measured in the same run, and peak resident memory.

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>

#include "commands.hpp"
#if SELFATTN_HAVE_MPI
#include "bench_dist.hpp"
#endif
#include "fma_peak.hpp"
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
  std::string dtype = "fp32";
  std::string seq_parallel;  // ring | ulysses: the core over an mpirun job's ranks
  std::string layout = "zigzag";
  bool data_parallel = false;  // mha under mpirun: a training step with averaged gradients
};

const char* pass_name(const llm_utils::bench::Workload& w) {
  if (w.decode) return " decode step";
  if (w.backward_only) return " backward";
  return w.backward ? " forward+backward" : " forward";
}

// "B=1 N=4096 d_in=768 d_out=64": the sizes that matter to the workload.
std::string sizes(const llm_utils::bench::Workload& w) {
  std::string s =
      "B=" + std::to_string(w.batch) + (w.decode ? " cache=" : " N=") + std::to_string(w.seq);
  if (w.module != "core") s += " d_in=" + std::to_string(w.d_in);
  s += (w.module == "core" ? " d=" : " d_out=") + std::to_string(w.d_out);
  if (w.module == "mha") {
    s += " heads=" + std::to_string(w.num_heads);
    if (w.num_kv_groups != 0) s += " kv_groups=" + std::to_string(w.num_kv_groups);
  }
  s += w.causal || w.module == "mha" ? " causal" : "";
  if (w.window_left >= 0) s += " window=" + std::to_string(w.window_left);
  if (w.softcap != 0.0f) s += " softcap=" + std::to_string(w.softcap).substr(0, 5);
  if (w.alibi) s += " alibi";
  if (w.sinks) s += " sinks";
  if (w.rope) s += " rope";
  if (w.paged) s += " paged(" + std::to_string(w.page_size) + ")";
  return s;
}

// A time in the unit that shows its digits: us below 1 ms.
std::string duration(double ms) {
  char buf[64];
  if (ms < 1.0) {
    std::snprintf(buf, sizeof buf, "%.3f us", ms * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.3f ms", ms);
  }
  return buf;
}

// ", 41% of the BF16 peak (...)" when a bfloat16 peak was measured.
std::string bf16_line(double bf16_peak, double gflops) {
  if (bf16_peak <= 0.0) return "";
  const bool amx = std::string(llm_utils::bench::bf16_peak_isa()) == "amx";
  char buf[160];
  std::snprintf(buf, sizeof buf, "\n  = %.0f%% of the BF16 peak (%.1f GFLOP/s, %s, measured)",
                100.0 * gflops / bf16_peak, bf16_peak, amx ? "tdpbf16ps" : "vdpbf16ps");
  return buf;
}

#if !SELFATTN_HAVE_MPI
// What --seq-parallel and --data-parallel say in a build without MPI.
llm_utils::ArgumentError no_mpi(const char* option) {
  return llm_utils::ArgumentError(std::string("bench: ") + option +
                                  " needs llm_utils::dist, and this build has no MPI (install "
                                  "libopenmpi-dev and reconfigure)");
}
#endif

// --seq-parallel: the core's shards over the ranks (bench_dist.cpp).
void bench_distributed(const BenchOptions& o, std::ostream& out) {
  const llm_utils::bench::Workload& w = o.workload;
  if (w.module != "core" || w.decode || w.backward_only || o.dtype != "fp32" ||
      o.backend == "reference") {
    throw llm_utils::ArgumentError(
        "bench: --seq-parallel times the float32 attention core on the fused kernels: use "
        "--module core, no --decode, --backward-only, --dtype bf16 or --backend reference");
  }
#if SELFATTN_HAVE_MPI
  SeqParallelBench b;
  b.strategy = o.seq_parallel;
  b.layout = o.layout;
  b.batch = w.batch;
  b.heads = w.num_heads;
  b.seq = w.seq;
  b.head_dim = w.d_out;
  b.causal = w.causal;
  b.backward = w.backward;
  b.json = o.json;
  b.repeat = o.repeat;
  bench_sequence_parallel(b, out);
#else
  (void)out;
  throw no_mpi("--seq-parallel");
#endif
}

// --data-parallel: a MultiHeadAttention training step over the ranks (bench_dist.cpp).
void bench_data_parallel_step(const BenchOptions& o, std::ostream& out) {
  const llm_utils::bench::Workload& w = o.workload;
  if (w.module != "mha" || w.decode || o.dtype != "fp32" || !o.seq_parallel.empty()) {
    throw llm_utils::ArgumentError(
        "bench: --data-parallel times a float32 mha training step: use --module mha, no "
        "--decode, --dtype bf16 or --seq-parallel");
  }
#if SELFATTN_HAVE_MPI
  DataParallelBench b;
  b.batch = w.batch;
  b.seq = w.seq;
  b.d_in = w.d_in;
  b.d_out = w.d_out;
  b.heads = w.num_heads;
  b.repeat = o.repeat;
  b.json = o.json;
  bench_data_parallel(b, out);
#else
  (void)out;
  throw no_mpi("--data-parallel");
#endif
}

void bench(BenchOptions o, std::ostream& out) {
  if (o.threads > 0) llm_utils::set_num_threads(o.threads);
  if (o.data_parallel) {
    bench_data_parallel_step(o, out);
    return;
  }
  if (!o.seq_parallel.empty()) {
    bench_distributed(o, out);
    return;
  }
  llm_utils::bench::Workload& w = o.workload;
  w.backend = llm_utils::parse_backend(o.backend);
  w.bf16 = llm_utils::parse_dtype(o.dtype) == llm_utils::DType::bfloat16;
  const int64_t head_dim =
      w.module == "mha" ? w.d_out / std::max<int64_t>(1, w.num_heads) : w.d_out;
  // A decode step's heads count together (MultiHeadAttention's KV-cache path chooses so); the
  // paged cache always runs the fused kernel unless told otherwise.
  const int64_t queries = w.decode ? w.batch * w.num_heads : w.seq;
  const int64_t keys = w.decode ? w.seq + 1 : w.seq;
  llm_utils::Backend used = llm_utils::choose_backend(w.backend, queries, keys, head_dim);
  if (w.paged && w.backend != llm_utils::Backend::reference) used = llm_utils::Backend::flash;
  w.decode_steps = o.repeat + 1;  // the warm-up and the timed runs
  llm_utils::bench::WorkloadRunner runner(w);
  const llm_utils::bench::Timing t = llm_utils::bench::time_runs(runner, o.repeat);
  const double rss = llm_utils::bench::peak_rss_mib();  // before the SGEMM's own buffers
  const double flops = llm_utils::bench::workload_flops(w);
  const double gflops = flops / (t.median_ms * 1e6);
  const double sgemm = llm_utils::bench::sgemm_gflops(o.sgemm_size, 3);
  const int threads = llm_utils::get_num_threads();
  const double peak = llm_utils::bench::fma_peak_gflops(threads);
  const double percent_of_peak = peak > 0.0 ? 100.0 * gflops / peak : 0.0;
  // The bfloat16 peak where the CPU has one (vdpbf16ps, or tdpbf16ps on the amx table),
  // measured the same way.
  const double bf16_peak = w.bf16 ? llm_utils::bench::bf16_peak_gflops(threads) : 0.0;
  const double percent_of_bf16_peak = bf16_peak > 0.0 ? 100.0 * gflops / bf16_peak : 0.0;
  const char* dtype = w.bf16 ? "bfloat16" : "float32";
  // Tokens per second: one per sequence per decode step, else every token of the batch.
  const double tokens_per_s =
      static_cast<double>(w.batch * (w.decode ? 1 : w.seq)) / (t.median_ms * 1e-3);
  char line[2048];
  if (o.json) {
    std::snprintf(line, sizeof line,
                  "{\"module\": \"%s\", \"batch\": %lld, \"seq\": %lld, \"d_in\": %lld, "
                  "\"d_out\": %lld, \"num_heads\": %lld, \"num_kv_groups\": %lld, "
                  "\"causal\": %s, \"backward\": %s, \"backward_only\": %s, \"decode\": %s, "
                  "\"backend\": \"%s\", \"threads\": %d, \"repeat\": %d, "
                  "\"median_ms\": %.6f, \"min_ms\": %.6f, \"gflops\": %.2f, "
                  "\"sgemm_gflops\": %.2f, \"percent_of_sgemm\": %.1f, "
                  "\"fma_peak_gflops\": %.2f, \"fma_peak_isa\": \"%s\", "
                  "\"percent_of_peak\": %.1f, \"dtype\": \"%s\", \"bf16_peak_gflops\": %.2f, "
                  "\"bf16_peak_isa\": \"%s\", \"percent_of_bf16_peak\": %.1f, "
                  "\"tokens_per_s\": %.1f, \"peak_rss_mib\": %.1f, \"blas\": \"%s\", "
                  "\"kernel_isa\": \"%s\", \"window_left\": %lld, \"softcap\": %g, "
                  "\"alibi\": %s, \"sinks\": %s, \"rope\": %s, \"paged\": %s, "
                  "\"page_size\": %lld, \"flops\": %.17g}\n",
                  w.module.c_str(), static_cast<long long>(w.batch), static_cast<long long>(w.seq),
                  static_cast<long long>(w.d_in), static_cast<long long>(w.d_out),
                  static_cast<long long>(w.num_heads), static_cast<long long>(w.num_kv_groups),
                  w.causal || w.module == "mha" ? "true" : "false", w.backward ? "true" : "false",
                  w.backward_only ? "true" : "false", w.decode ? "true" : "false",
                  llm_utils::backend_name(used), threads, o.repeat, t.median_ms, t.min_ms, gflops,
                  sgemm, 100.0 * gflops / sgemm, peak, llm_utils::bench::fma_peak_isa(),
                  percent_of_peak, dtype, bf16_peak,
                  bf16_peak > 0.0 ? llm_utils::bench::bf16_peak_isa() : "none",
                  percent_of_bf16_peak, tokens_per_s, rss, llm_utils::blas_description().c_str(),
                  llm_utils::kernel_isa().c_str(), static_cast<long long>(w.window_left),
                  static_cast<double>(w.softcap), w.alibi ? "true" : "false",
                  w.sinks ? "true" : "false", w.rope ? "true" : "false", w.paged ? "true" : "false",
                  static_cast<long long>(w.page_size), flops);
  } else {
    std::snprintf(
        line, sizeof line,
        "%s%s %s, %s, backend %s, %d thread%s, %d runs\n"
        "  median %s (min %s), %.1f GFLOP/s = %.0f%% of SGEMM (%.1f GFLOP/s "
        "at %lld^3)%s\n  = %.0f%% of the FP32 FMA peak (%.1f GFLOP/s, %s, measured)%s\n"
        "  peak resident memory %.1f MiB\n  BLAS: %s; fused kernels: %s\n",
        w.module.c_str(), pass_name(w), sizes(w).c_str(), dtype, llm_utils::backend_name(used),
        threads, threads == 1 ? "" : "s", o.repeat, duration(t.median_ms).c_str(),
        duration(t.min_ms).c_str(), gflops, 100.0 * gflops / sgemm, sgemm,
        static_cast<long long>(o.sgemm_size),
        w.decode
            ? (", " + std::to_string(static_cast<long long>(tokens_per_s)) + " tokens/s").c_str()
            : "",
        percent_of_peak, peak, llm_utils::bench::fma_peak_isa(),
        bf16_line(bf16_peak, gflops).c_str(), rss, llm_utils::blas_description().c_str(),
        llm_utils::kernel_isa().c_str());
  }
  out << line;
}

}  // namespace

Command add_bench_command(CLI::App& app, std::ostream& out) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Time a module (or the bare attention core) and report GFLOP/s against SGEMM.");
  cmd->add_option("--module", o->workload.module, "Which class, or core for the kernel alone")
      ->check(CLI::IsMember({"params", "linear", "linear4", "linear5", "mha", "core"}))
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
  cmd->add_option("--d-out", o->workload.d_out,
                  "Output width: the head dimension, or for mha all heads together")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--num-heads", o->workload.num_heads, "mha: heads (d_out divisible by it)")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--num-kv-groups", o->workload.num_kv_groups,
                  "mha: key/value heads, grouped-query attention (default: --num-heads)")
      ->check(positive_integer());
  cmd->add_flag("--causal", o->workload.causal, "Causal mask (core only; mha always is)");
  cmd->add_flag("--backward", o->workload.backward, "Time forward + backward");
  cmd->add_flag("--backward-only", o->workload.backward_only,
                "Time the backward alone (after one untimed forward)")
      ->excludes("--backward");
  cmd->add_flag("--decode", o->workload.decode,
                "mha: time one decode step (one new token per sequence) with --seq tokens "
                "already in the KV cache; reports tokens/s");
  cmd->add_option("--window", o->workload.window_left,
                  "core, mha: sliding window, each query also stops seeing keys more than this "
                  "many positions back (FLOPs count the visible pairs)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--softcap", o->workload.softcap,
                  "core, mha: logit softcap, scores become cap * tanh(score / cap)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--alibi", o->workload.alibi, "core, mha: ALiBi, the paper's slope per head");
  cmd->add_flag("--sinks", o->workload.sinks, "core, mha: an attention sink logit per head");
  cmd->add_flag("--rope", o->workload.rope, "mha: rotary position embedding on q and k");
  cmd->add_flag("--paged", o->workload.paged,
                "mha --decode: the KV cache in pages (PagedKVCache), one sequence per batch "
                "element");
  cmd->add_option("--page-size", o->workload.page_size, "--paged: tokens per page")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)")
      ->check(positive_integer(std::numeric_limits<int>::max()));
  cmd->add_option("--backend", o->backend, "Attention kernel")
      ->check(CLI::IsMember({"auto", "reference", "flash", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "Timed runs (after one warm-up); the median is reported")
      ->check(positive_integer(std::numeric_limits<int>::max()))
      ->capture_default_str();
  cmd->add_option("--sgemm-size", o->sgemm_size, "Size of the square SGEMM measured alongside")
      ->check(positive_integer())
      ->capture_default_str();
  add_dtype_option(cmd, o->dtype);
  cmd->add_option("--seq-parallel", o->seq_parallel,
                  "core under mpirun: split the sequence over the ranks, ring or ulysses "
                  "(--num-heads sets the heads; ulysses needs one per rank)")
      ->check(CLI::IsMember({"ring", "ulysses"}));
  cmd->add_flag("--data-parallel", o->data_parallel,
                "mha under mpirun: a training step on --batch sequences per rank, gradients "
                "averaged, with the sums started during backward and after it");
  cmd->add_option("--layout", o->layout, "--seq-parallel: how the sequence is split")
      ->check(CLI::IsMember({"zigzag", "contiguous"}))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object instead of text");
  cmd->footer(
      "FLOPs count a multiply-add as 2: projections 6*B*N*d_in*d_out, attention core "
      "4*B*N^2*d_out\n(half with --causal); a backward adds 2.5x the core and 2x the "
      "projections (Linear4/5: the value path only).\n"
      "mha adds out_proj (2*B*N*d_out^2) and is causal; a decode step counts one query "
      "against N + 1 keys.\n"
      "Examples:\n"
      "  selfattn bench --module mha --batch 8 --seq 1024 --d-in 768 --d-out 768 "
      "--num-heads 12 --backward\n"
      "  selfattn bench --module mha --batch 1 --seq 4096 --d-in 768 --d-out 768 "
      "--num-heads 12 --decode --repeat 50\n"
      "  selfattn bench --module linear --seq 4096 --d-in 768 --d-out 64 --threads 2\n"
      "  selfattn bench --module core --seq 4096 --d-out 64 --backward --json\n"
      "  selfattn bench --module core --seq 65536 --d-out 64 --repeat 1\n"
      "  selfattn bench --module core --seq 16384 --d-out 64 --causal --window 1024\n"
      "  selfattn bench --module mha --batch 16 --seq 2048 --d-in 768 --d-out 768 "
      "--num-heads 12 --decode --paged --page-size 128");
  return [o, &out] { bench(*o, out); };
}

}  // namespace selfattn

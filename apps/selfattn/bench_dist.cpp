// selfattn bench --seq-parallel (bench_dist.hpp). Each rank makes its shard of q, k, v (B, H,
// N / P, d) from the same seed; the timed runs are separated by barriers, so a run's time is
// the slowest rank's. For the ring it also reports where rank 0's time went (kernels, waits)
// and the same ring without its sends, and the transfers alone.

#include "bench_dist.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "llm_utils/dist.hpp"
#include "llm_utils/llm_utils.hpp"
#include "mpi_ranks.hpp"

namespace selfattn {
namespace {

using namespace llm_utils;

struct Shards {
  Tensor q, k, v, out, lse, dout, dq, dk, dv;  // this rank's (B, H, rows, d), lse (B, H, rows)
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One timed run (forward, + backward when asked) between barriers; `stats` for the ring.
double run_once(const SeqParallelBench& b, dist::SequenceStrategy strategy,
                const dist::Communicator& comm, Shards& s, const AttentionOptions& opts,
                dist::SequenceLayout layout, dist::RingStats* stats) {
  comm.barrier();
  const auto start = std::chrono::steady_clock::now();
  if (strategy == dist::SequenceStrategy::ring) {
    dist::ring_attention_forward(comm, s.q, s.k, s.v, s.out, s.lse, opts, layout, stats);
    if (b.backward) {
      dist::ring_attention_backward(comm, s.q, s.k, s.v, s.out, s.lse, s.dout, s.dq, s.dk, s.dv,
                                    opts, layout, stats);
    }
  } else {
    dist::ulysses_attention_forward(comm, s.q, s.k, s.v, s.out, s.lse, opts, layout);
    if (b.backward) {
      dist::ulysses_attention_backward(comm, s.q, s.k, s.v, s.out, s.lse, s.dout, s.dq, s.dk, s.dv,
                                       opts, layout);
    }
  }
  comm.barrier();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

void run(const SeqParallelBench& b, std::ostream& out) {
  const dist::Communicator comm = dist::Communicator::world();
  const dist::SequenceStrategy strategy = dist::parse_strategy(b.strategy);
  const dist::SequenceLayout layout = dist::parse_layout(b.layout);
  const int P = comm.size(), me = comm.rank();
  const int64_t rows = dist::shard_length(b.seq, P, me, layout);
  Generator g(1234 + static_cast<uint64_t>(me));  // each rank its own rows; the values don't matter
  Shards s;
  const Shape shape = {b.batch, b.heads, rows, b.head_dim};
  s.q = g.uniform(shape, -1.0, 1.0);
  s.k = g.uniform(shape, -1.0, 1.0);
  s.v = g.uniform(shape, -1.0, 1.0);
  s.dout = g.uniform(shape, -1.0, 1.0);
  s.out = Tensor(shape);
  s.lse = Tensor({b.batch, b.heads, rows});
  s.dq = Tensor(shape);
  s.dk = Tensor(shape);
  s.dv = Tensor(shape);
  AttentionOptions opts;
  opts.causal = b.causal;
  opts.backend = Backend::flash;

  run_once(b, strategy, comm, s, opts, layout, nullptr);  // warm-up
  std::vector<double> ms, compute, wait, alone;
  for (int i = 0; i < b.repeat; ++i) {
    dist::RingStats stats;
    ms.push_back(run_once(b, strategy, comm, s, opts, layout, &stats));
    compute.push_back(stats.compute_s * 1e3);
    wait.push_back(stats.wait_s * 1e3);
  }
  double no_sends = 0.0, transfers = 0.0;
  const bool ring = strategy == dist::SequenceStrategy::ring;
  if (ring) {
    for (int i = 0; i < b.repeat; ++i) {
      dist::RingStats skip;
      skip.skip_transfers = true;
      alone.push_back(run_once(b, strategy, comm, s, opts, layout, &skip));
    }
    no_sends = median(alone);
    // The forward's K/V traffic: P - 1 steps of one shard's k and v.
    const int64_t floats = 2 * b.batch * b.heads * rows * b.head_dim;
    std::vector<double> t;
    for (int i = 0; i < b.repeat; ++i) {
      t.push_back(1e3 * dist::ring_transfer_seconds(comm, floats, P - 1));
    }
    transfers = median(t);
  }
  // FlashAttention's count: 4 N^2 d per head forward (half causal), backward 2.5x that.
  const double pairs =
      static_cast<double>(b.seq) * static_cast<double>(b.seq) * (b.causal ? 0.5 : 1.0);
  const double flops =
      4.0 * pairs * static_cast<double>(b.head_dim * b.batch * b.heads) * (b.backward ? 3.5 : 1.0);
  const double t_ms = median(ms);
  const double gflops = flops / (t_ms * 1e6);
  if (me != 0) return;
  const double block_mib =
      2.0 * static_cast<double>(b.batch * b.heads * rows * b.head_dim) * 4.0 / (1 << 20);
  char line[1024];
  if (b.json) {
    std::snprintf(line, sizeof line,
                  "{\"strategy\": \"%s\", \"layout\": \"%s\", \"ranks\": %d, \"threads\": %d, "
                  "\"batch\": %lld, \"heads\": %lld, \"seq\": %lld, \"head_dim\": %lld, "
                  "\"causal\": %s, \"backward\": %s, \"median_ms\": %.4f, \"gflops\": %.2f, "
                  "\"rank0_compute_ms\": %.4f, \"rank0_wait_ms\": %.4f, "
                  "\"no_sends_ms\": %.4f, \"transfers_alone_ms\": %.4f, \"block_mib\": %.3f}\n",
                  b.strategy.c_str(), b.layout.c_str(), P, get_num_threads(),
                  static_cast<long long>(b.batch), static_cast<long long>(b.heads),
                  static_cast<long long>(b.seq), static_cast<long long>(b.head_dim),
                  b.causal ? "true" : "false", b.backward ? "true" : "false", t_ms, gflops,
                  median(compute), median(wait), no_sends, transfers, block_mib);
  } else {
    std::snprintf(line, sizeof line,
                  "%s attention (%s layout) over %d rank%s, %d thread%s each: B=%lld H=%lld "
                  "N=%lld d=%lld%s%s\n  median %.3f ms, %.1f GFLOP/s over all ranks\n",
                  b.strategy.c_str(), b.layout.c_str(), P, P == 1 ? "" : "s", get_num_threads(),
                  get_num_threads() == 1 ? "" : "s", static_cast<long long>(b.batch),
                  static_cast<long long>(b.heads), static_cast<long long>(b.seq),
                  static_cast<long long>(b.head_dim), b.causal ? " causal" : "",
                  b.backward ? ", forward+backward" : ", forward", t_ms, gflops);
    out << line;
    if (ring) {
      std::snprintf(line, sizeof line,
                    "  rank 0: %.3f ms in the kernels, %.3f ms waiting on transfers\n"
                    "  the same ring without its sends: %.3f ms; the forward's transfers alone "
                    "(%d steps of %.2f MiB): %.3f ms\n",
                    median(compute), median(wait), no_sends, P - 1, block_mib, transfers);
    } else {
      line[0] = '\0';
    }
  }
  out << line;
}

}  // namespace

// Median ms of a data-parallel step, the gradient sums started during backward or after it.
double data_parallel_step_ms(const DataParallelBench& b, const dist::Communicator& comm,
                             bool overlap) {
  MultiHeadAttention m(b.d_in, b.d_out, b.seq, 0.0, b.heads, true);
  dist::broadcast_parameters(comm, m.named_parameters());
  dist::GradientAverager averager(comm, m.named_parameters());
  if (overlap) m.set_gradient_hook([&] { averager.start(); });
  Generator g(99 + static_cast<uint64_t>(comm.rank()));
  const Tensor x = g.uniform({b.batch, b.seq, b.d_in}, -1.0, 1.0);
  const Tensor dy = g.uniform({b.batch, b.seq, b.d_out}, -1.0, 1.0);
  std::vector<double> ms;
  for (int i = 0; i <= b.repeat; ++i) {  // the first is the warm-up
    m.zero_grad();
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    m.forward(x);
    m.backward(dy);
    averager.finish();
    comm.barrier();
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) ms.push_back(t);
  }
  return median(ms);
}

void run_data_parallel(const DataParallelBench& b, std::ostream& out) {
  const dist::Communicator comm = dist::Communicator::world();
  // Interleaved, so that the machine's moods hit both alike.
  std::vector<double> with, without;
  for (int round = 0; round < 3; ++round) {
    with.push_back(data_parallel_step_ms(b, comm, true));
    without.push_back(data_parallel_step_ms(b, comm, false));
  }
  const double w = *std::min_element(with.begin(), with.end());
  const double wo = *std::min_element(without.begin(), without.end());
  if (comm.rank() != 0) return;
  // W_query, W_key, W_value (d_out, d_in) and out_proj (d_out, d_out), each with its bias.
  const double params_mib =
      static_cast<double>(3 * b.d_out * b.d_in + b.d_out * b.d_out + 4 * b.d_out) * 4.0 / (1 << 20);
  char line[512];
  if (b.json) {
    std::snprintf(line, sizeof line,
                  "{\"data_parallel\": true, \"ranks\": %d, \"threads\": %d, \"batch_per_rank\": "
                  "%lld, \"seq\": %lld, \"d_in\": %lld, \"d_out\": %lld, \"heads\": %lld, "
                  "\"step_ms_overlapped\": %.3f, \"step_ms_after_backward\": %.3f, "
                  "\"gradient_mib\": %.2f}\n",
                  comm.size(), get_num_threads(), static_cast<long long>(b.batch),
                  static_cast<long long>(b.seq), static_cast<long long>(b.d_in),
                  static_cast<long long>(b.d_out), static_cast<long long>(b.heads), w, wo,
                  params_mib);
  } else {
    std::snprintf(line, sizeof line,
                  "mha data-parallel training step over %d ranks, %d thread%s each: B=%lld per "
                  "rank N=%lld d_in=%lld d_out=%lld heads=%lld (%.1f MiB of gradients)\n"
                  "  best of 3 rounds of median-of-%d steps: %.3f ms with the sums started during "
                  "backward, %.3f ms with them after it\n",
                  comm.size(), get_num_threads(), get_num_threads() == 1 ? "" : "s",
                  static_cast<long long>(b.batch), static_cast<long long>(b.seq),
                  static_cast<long long>(b.d_in), static_cast<long long>(b.d_out),
                  static_cast<long long>(b.heads), params_mib, b.repeat, w, wo);
  }
  out << line;
}

void bench_data_parallel(const DataParallelBench& b, std::ostream& out) {
  dist::Environment mpi(nullptr, nullptr);
  run_on_every_rank([&] { run_data_parallel(b, out); });
}

void bench_sequence_parallel(const SeqParallelBench& b, std::ostream& out) {
  dist::Environment mpi(nullptr, nullptr);
  run_on_every_rank([&] { run(b, out); });
}

}  // namespace selfattn

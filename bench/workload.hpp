#pragma once
// What `selfattn bench` and the Google Benchmark binary measure: one attention workload (a
// module's forward, optionally its backward, or the bare attention core), its FLOP count, and
// the machine's SGEMM rate measured the same way, so results can be read as "% of SGEMM".

#include <cstdint>
#include <memory>
#include <string>

#include "llm_utils/llm_utils.hpp"

namespace llm_utils::bench {

struct Workload {
  std::string module = "linear";  ///< params | linear | linear4 | linear5 | mha | core
  int64_t batch = 1;
  int64_t seq = 4096;          ///< tokens; with `decode`, the tokens already in the KV cache
  int64_t d_in = 768;          ///< unused by `core`
  int64_t d_out = 64;          ///< the head dimension; for `mha` the width of all heads together
  int64_t num_heads = 1;       ///< `mha` only
  int64_t num_kv_groups = 0;   ///< `mha` only; 0 = num_heads
  bool causal = false;         ///< `core` only (`mha` is always causal)
  bool backward = false;       ///< forward + backward
  bool backward_only = false;  ///< the backward alone, after one untimed forward
  bool decode = false;         ///< `mha` only: one token per sequence against a cache of `seq`
  int64_t decode_steps = 64;   ///< room in the cache (context_length) for this many run()s
  Backend backend = Backend::automatic;
  bool bf16 = false;  ///< bfloat16 storage (core: q, k, v and the outputs; modules: their dtype)
  // The variants (docs/variants.md), for `core` and `mha`.
  int64_t window_left = -1;  ///< sliding window; -1 none
  float softcap = 0.0f;      ///< logit softcap; 0 none
  bool alibi = false;        ///< ALiBi slopes of the paper, one per head
  bool sinks = false;        ///< one sink logit per head
  bool rope = false;         ///< `mha` only: RoPE on q and k
  bool paged = false;        ///< `mha --decode`: the cache in pages (PagedKVCache)
  int64_t page_size = 256;   ///< tokens per page with `paged`
};

/// Floating-point operations of one run (forward, plus backward when asked), counting a
/// multiply-add as 2 and skipping the work a causal mask or a frozen path avoids.
double workload_flops(const Workload& w);

/// Owns inputs, module and outputs; run() performs one forward (+ backward).
class WorkloadRunner {
 public:
  explicit WorkloadRunner(const Workload& w);
  ~WorkloadRunner();
  WorkloadRunner(const WorkloadRunner&) = delete;
  WorkloadRunner& operator=(const WorkloadRunner&) = delete;
  void run();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// Median and minimum wall time of `repeats` calls of run() after one warm-up call.
struct Timing {
  double median_ms = 0;
  double min_ms = 0;
};
Timing time_runs(WorkloadRunner& runner, int repeats);

/// GFLOP/s of the projections' SGEMM (oneDNN, or CBLAS without it) on (n x n) @ (n x n), the best
/// of `repeats`, current threads.
double sgemm_gflops(int64_t n, int repeats);

/// Peak resident memory of this process so far, in MiB.
double peak_rss_mib();

}  // namespace llm_utils::bench

// Google Benchmark: the attention core (fused vs reference) and SelfAttention_Linear, with
// GFLOP/s counters. Run: build/bin/bench_attention [--benchmark_filter=...]
// Thread count: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, or all cores.

#include <benchmark/benchmark.h>

#include "workload.hpp"

namespace {

using llm_utils::Backend;
using llm_utils::bench::Workload;

void run_workload(benchmark::State& state, Workload w) {
  llm_utils::bench::WorkloadRunner runner(w);
  runner.run();
  for (auto _ : state) runner.run();
  state.counters["GFLOP/s"] = benchmark::Counter(llm_utils::bench::workload_flops(w) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Core(benchmark::State& state) {
  Workload w{.module = "core",
             .seq = state.range(0),
             .d_out = state.range(1),
             .causal = state.range(2) != 0,
             .backward = state.range(3) != 0,
             .backend = state.range(4) != 0 ? Backend::flash : Backend::reference};
  run_workload(state, w);
}
// args: seq, head dim, causal, backward, flash
BENCHMARK(BM_Core)
    ->ArgNames({"seq", "d", "causal", "bwd", "flash"})
    ->Args({1024, 64, 0, 0, 0})
    ->Args({1024, 64, 0, 0, 1})
    ->Args({4096, 64, 0, 0, 1})
    ->Args({4096, 64, 1, 0, 1})
    ->Args({4096, 64, 0, 1, 1})
    ->Args({4096, 128, 0, 0, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Linear(benchmark::State& state) {
  Workload w{.module = "linear",
             .seq = state.range(0),
             .d_in = 768,
             .d_out = 64,
             .backward = state.range(1) != 0};
  run_workload(state, w);
}
BENCHMARK(BM_Linear)
    ->ArgNames({"seq", "bwd"})
    ->Args({4096, 0})
    ->Args({4096, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_BookExample(benchmark::State& state) {
  Workload w{.module = "linear", .seq = 6, .d_in = 3, .d_out = 2};
  run_workload(state, w);
}
BENCHMARK(BM_BookExample)->Unit(benchmark::kNanosecond);

void BM_Sgemm(benchmark::State& state) {
  for (auto _ : state)
    state.counters["GFLOP/s"] = llm_utils::bench::sgemm_gflops(state.range(0), 1);
}
BENCHMARK(BM_Sgemm)->Arg(2048)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();

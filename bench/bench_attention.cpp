// Google Benchmark: the attention core (fused vs reference), SelfAttention_Linear, and the
// fused kernels' microkernels one ISA at a time (one thread), with GFLOP/s counters.
// Run: build/bin/bench_attention [--benchmark_filter=...]
// Thread count: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, or all cores.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <vector>

#include "cpu/bf16_microkernels.hpp"
#include "cpu/microkernels.hpp"
#include "fma_peak.hpp"
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

void BM_FmaPeak(benchmark::State& state) {
  for (auto _ : state) {
    state.counters["GFLOP/s"] = llm_utils::bench::fma_peak_gflops(llm_utils::get_num_threads());
  }
  state.SetLabel(llm_utils::bench::fma_peak_isa());
}
BENCHMARK(BM_FmaPeak)->Unit(benchmark::kMillisecond)->Iterations(1);

// The microkernels at the fused kernels' tile shapes, on one core. Arg 0 is the ISA
// (0 portable, 1 avx2, 2 avx512, 3 avx512_bf16); an ISA this CPU lacks is skipped with a message.
bool force_isa_or_skip(benchmark::State& state) {
  const auto isa = static_cast<llm_utils::cpu::Isa>(state.range(0));
  try {
    llm_utils::cpu::force_isa(isa);
  } catch (const llm_utils::ArgumentError&) {
    state.SkipWithError("this CPU lacks the ISA");
    return false;
  }
  state.SetLabel(llm_utils::cpu::isa_name(isa));
  return true;
}

void BM_MicrokernelGemm(benchmark::State& state) {
  if (!force_isa_or_skip(state)) return;
  const int64_t m = state.range(1), n = state.range(2), k = state.range(3);
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f);   // (m, k)
  std::vector<float> b(static_cast<size_t>(k * n), 0.25f);  // (k, n)
  std::vector<float> c(static_cast<size_t>(m * n), 0.0f);   // (m, n)
  const auto& mk = llm_utils::cpu::microkernels();
  for (auto _ : state) {
    mk.gemm(m, n, k, 1.0f, a.data(), k, b.data(), n, c.data(), n, true);
    benchmark::DoNotOptimize(c.data());
  }
  llm_utils::cpu::force_isa(std::nullopt);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
// args: isa, m, n, k: the forward's S = Q K^T and O += P V tiles, one backward dQ^T tile
BENCHMARK(BM_MicrokernelGemm)
    ->ArgNames({"isa", "m", "n", "k"})
    ->ArgsProduct({{0, 1, 2}, {64}, {64}, {64}})
    ->ArgsProduct({{1, 2}, {64}, {64}, {128}})
    ->ArgsProduct({{1, 2}, {6}, {16}, {64}});  // one register tile, all in L1

void BM_MicrokernelGemmBf16(benchmark::State& state) {
  if (!force_isa_or_skip(state)) return;
  const int64_t m = state.range(1), n = state.range(2), k = state.range(3);
  const llm_utils::bfloat16 half(0.5f), quarter(0.25f);
  std::vector<llm_utils::bfloat16> a(static_cast<size_t>(m * k), half);     // (m, k)
  std::vector<llm_utils::bfloat16> b(static_cast<size_t>(k * n), quarter);  // (k / 2, 2 n) pairs
  std::vector<float> c(static_cast<size_t>(m * n), 0.0f);                   // (m, n)
  const auto& mk = llm_utils::cpu::bf16_microkernels();
  for (auto _ : state) {
    mk.gemm(m, n, k, 1.0f, a.data(), k, b.data(), 2 * n, c.data(), n, true);
    benchmark::DoNotOptimize(c.data());
  }
  llm_utils::cpu::force_isa(std::nullopt);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
// args: isa (3 avx512_bf16), m, n, k: the tiles as above, in bfloat16
BENCHMARK(BM_MicrokernelGemmBf16)
    ->ArgNames({"isa", "m", "n", "k"})
    ->ArgsProduct({{2, 3}, {64}, {64}, {64}})
    ->ArgsProduct({{2, 3}, {64}, {64}, {128}})
    ->ArgsProduct({{3}, {6}, {64}, {64}});

// One online-softmax step on a 64 x 64 tile of scores (in [-4, 4], the running max already
// above them so no correction), float32 in place or bfloat16 out.
void BM_MicrokernelSoftmax(benchmark::State& state) {
  if (!force_isa_or_skip(state)) return;
  const bool bf16 = state.range(1) != 0;
  constexpr int64_t kTile = 64;
  std::vector<float> scores(kTile * kTile), s(kTile * kTile);  // (64, 64)
  for (size_t j = 0; j < scores.size(); ++j) scores[j] = static_cast<float>(j % 97) * 0.08f - 4.0f;
  std::vector<float> m(kTile, 5.0f), l(kTile, 1.0f), acc(kTile * kTile, 1.0f);  // (64), (64, 64)
  std::vector<llm_utils::bfloat16> p(kTile * kTile);                            // (64, 64)
  for (auto _ : state) {
    std::copy(scores.begin(), scores.end(), s.begin());
    if (bf16) {
      llm_utils::cpu::bf16_microkernels().online_softmax(s.data(), kTile, kTile, kTile, 0.125f,
                                                         m.data(), l.data(), acc.data(), kTile,
                                                         kTile, p.data(), kTile);
    } else {
      llm_utils::cpu::microkernels().online_softmax(s.data(), kTile, kTile, kTile, 0.125f, m.data(),
                                                    l.data(), acc.data(), kTile, kTile);
    }
    benchmark::DoNotOptimize(p.data());
    benchmark::DoNotOptimize(s.data());
  }
  llm_utils::cpu::force_isa(std::nullopt);
  state.counters["elements/s"] = benchmark::Counter(static_cast<double>(kTile * kTile),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MicrokernelSoftmax)->ArgNames({"isa", "bf16"})->ArgsProduct({{2, 3}, {0, 1}});

void BM_MicrokernelExp(benchmark::State& state) {
  if (!force_isa_or_skip(state)) return;
  const int64_t n = 64 * 64;                          // one score tile
  std::vector<float> scores(static_cast<size_t>(n));  // (n) in [-4.1, 0]
  for (int64_t j = 0; j < n; ++j) scores[static_cast<size_t>(j)] = -0.001f * static_cast<float>(j);
  std::vector<float> x(scores.size());  // (n) a copy, overwritten by exp
  const auto& mk = llm_utils::cpu::microkernels();
  for (auto _ : state) {
    std::copy(scores.begin(), scores.end(), x.begin());
    benchmark::DoNotOptimize(mk.exp_centered_sum(x.data(), n, 0.125f, 0.0f, 0.0f));
  }
  llm_utils::cpu::force_isa(std::nullopt);
  state.counters["elements/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MicrokernelExp)->ArgName("isa")->DenseRange(0, 2);

}  // namespace

BENCHMARK_MAIN();

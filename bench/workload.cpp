#include "workload.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

namespace llm_utils::bench {

double workload_flops(const Workload& w) {
  const double b = static_cast<double>(w.batch), n = static_cast<double>(w.seq);
  const double d = static_cast<double>(w.d_out), d_in = static_cast<double>(w.d_in);
  const double core_mult = w.causal ? 0.5 : 1.0;  // a causal mask skips half of the tiles
  const double core_fwd = 4.0 * b * n * n * d * core_mult;
  if (w.module == "core") return core_fwd + (w.backward ? 2.5 * core_fwd : 0.0);
  const double proj_fwd = 3.0 * 2.0 * b * n * d_in * d;
  double total = proj_fwd + core_fwd;
  if (!w.backward) return total;
  if (w.module == "linear4" || w.module == "linear5") {
    // Only the value path: recompute S, then dV = P^T dO (core); dW_v and dx (projection).
    total += 2.0 * core_fwd / 2.0 + 2.0 * (2.0 * b * n * d_in * d);
  } else {
    // Core: S, dV, dP, dQ, dK; projections: dW and dx for each of q, k, v.
    total += 2.5 * core_fwd + 2.0 * proj_fwd;
  }
  return total;
}

struct WorkloadRunner::State {
  Workload w;
  std::unique_ptr<SelfAttentionBase> module;
  Tensor x, grad_out;              // module inputs
  Tensor q, k, v, out, lse, dout;  // core inputs / outputs
  Tensor dq, dk, dv;
  AttentionOptions options;
};

WorkloadRunner::WorkloadRunner(const Workload& w) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.w = w;
  Generator g(2024);
  if (w.module == "core") {
    const Shape qs{w.batch, w.seq, w.d_out};
    s.q = g.uniform(qs, -1, 1);
    s.k = g.uniform(qs, -1, 1);
    s.v = g.uniform(qs, -1, 1);
    s.dout = g.uniform(qs, -1, 1);
    s.out = Tensor(qs);
    s.lse = Tensor({w.batch, w.seq});
    if (w.backward) {
      s.dq = Tensor(qs);
      s.dk = Tensor(qs);
      s.dv = Tensor(qs);
    }
    s.options = {.causal = w.causal, .backend = w.backend};
    return;
  }
  if (w.causal) throw ArgumentError("bench: --causal applies to --module core only");
  s.module = make_self_attention(w.module, w.d_in, w.d_out, w.module != "params", &g);
  s.module->set_backend(w.backend);
  s.x = g.uniform({w.batch, w.seq, w.d_in}, -1, 1);
  s.grad_out = g.uniform({w.batch, w.seq, w.d_out}, -1, 1);
}

WorkloadRunner::~WorkloadRunner() = default;

void WorkloadRunner::run() {
  State& s = *state_;
  if (s.module) {
    s.module->forward(s.x);
    if (s.w.backward) {
      s.module->zero_grad();
      s.module->backward(s.grad_out);
    }
    return;
  }
  attention_forward(s.q, s.k, s.v, s.out, s.lse, s.options);
  if (s.w.backward) {
    attention_backward(s.q, s.k, s.v, s.out, s.lse, s.dout, s.dq, s.dk, s.dv, s.options);
  }
}

namespace {
template <typename Fn>
std::vector<double> repeat_ms(Fn&& fn, int repeats) {
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms;
}
}  // namespace

Timing time_runs(WorkloadRunner& runner, int repeats) {
  runner.run();  // warm-up: first-touch of buffers, thread pools
  const std::vector<double> ms = repeat_ms([&] { runner.run(); }, std::max(repeats, 1));
  return {ms[ms.size() / 2], ms.front()};
}

double sgemm_gflops(int64_t n, int repeats) {
  std::vector<float> a(static_cast<size_t>(n * n), 0.5f), b(a), c(a);
  const int ni = static_cast<int>(n);
  const auto gemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0f, a.data(), ni, b.data(),
                ni, 0.0f, c.data(), ni);
  };
  gemm();
  const std::vector<double> ms = repeat_ms(gemm, std::max(repeats, 1));
  return 2.0 * static_cast<double>(n) * n * n / (ms[ms.size() / 2] * 1e6);
}

double peak_rss_mib() {
  // VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across execve, so a process
  // started from a large parent (a Python script holding PyTorch tensors) would report the
  // parent's peak. VmHWM belongs to this address space only.
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // in kB
  }
  return 0.0;
}

}  // namespace llm_utils::bench

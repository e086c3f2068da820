#include "workload.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kernels/gemm.hpp"

namespace llm_utils::bench {

namespace {
// The (query, key) pairs of an N x N problem: N^2, half of it under a causal mask (the tiles
// the kernel visits, as it is counted elsewhere), and with a sliding window the visible pairs
// exactly.
double visible_pairs(int64_t n, bool causal, int64_t window_left) {
  const double nn = static_cast<double>(n);
  if (window_left < 0) return causal ? 0.5 * nn * nn : nn * nn;
  double pairs = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t end = causal ? i + 1 : n, begin = std::max<int64_t>(0, i - window_left);
    pairs += static_cast<double>(std::max<int64_t>(0, end - begin));
  }
  return pairs;
}

// MultiHeadAttention: the four projections and the causal core per head; a decode step is one
// query per sequence against seq + 1 keys (at most window_left + 1 with a window).
double mha_flops(const Workload& w) {
  const double b = static_cast<double>(w.batch), n = static_cast<double>(w.seq);
  const double d_in = static_cast<double>(w.d_in), d = static_cast<double>(w.d_out);
  const int64_t groups = w.num_kv_groups == 0 ? w.num_heads : w.num_kv_groups;
  const double kv = d / static_cast<double>(w.num_heads) * static_cast<double>(groups);
  if (w.decode) {
    const double keys =
        w.window_left >= 0 ? std::min(n + 1.0, static_cast<double>(w.window_left) + 1.0) : n + 1.0;
    return 2.0 * b * (d_in * (d + 2.0 * kv) + d * d) + 4.0 * b * keys * d;
  }
  const double proj = 2.0 * b * n * (d_in * (d + 2.0 * kv) + d * d);
  const double core = 4.0 * b * visible_pairs(w.seq, true, w.window_left) * d;
  if (w.backward_only) return 2.5 * core + 2.0 * proj;
  return proj + core + (w.backward ? 2.5 * core + 2.0 * proj : 0.0);
}
}  // namespace

double workload_flops(const Workload& w) {
  if (w.module == "mha") return mha_flops(w);
  const double b = static_cast<double>(w.batch), n = static_cast<double>(w.seq);
  const double d = static_cast<double>(w.d_out), d_in = static_cast<double>(w.d_in);
  const double core_fwd = w.module == "core"
                              ? 4.0 * b * visible_pairs(w.seq, w.causal, w.window_left) * d
                              : 4.0 * b * n * n * d;
  const double proj_fwd = w.module == "core" ? 0.0 : 3.0 * 2.0 * b * n * d_in * d;
  const bool value_path_only = w.module == "linear4" || w.module == "linear5";
  // Backward: core S, dV, dP, dQ, dK (Linear4/5: S and dV only); projections dW and dx for
  // each of q, k, v (Linear4/5: the value path only).
  const double core_bwd = value_path_only ? core_fwd : 2.5 * core_fwd;
  const double proj_bwd = value_path_only ? 2.0 * (2.0 * b * n * d_in * d) : 2.0 * proj_fwd;
  if (w.backward_only) return core_bwd + proj_bwd;
  return proj_fwd + core_fwd + (w.backward ? core_bwd + proj_bwd : 0.0);
}

struct WorkloadRunner::State {
  Workload w;
  std::unique_ptr<SelfAttentionBase> module;
  std::unique_ptr<MultiHeadAttention> mha;
  Tensor x, grad_out;              // module inputs
  Tensor q, k, v, out, lse, dout;  // core inputs / outputs
  Tensor dq, dk, dv;
  Tensor slopes, sinks, dsinks;         // (heads) the core's ALiBi slopes and sink logits
  std::unique_ptr<PagedKVCache> cache;  // mha --decode --paged
  std::vector<int64_t> sequence_ids;    // the cache's sequences, one per batch element
  // The core in bfloat16: the same tensors rounded.
  BFloat16Tensor bq, bk, bv, bout, bdout, bdq, bdk, bdv;
  AttentionOptions options;

  void core_forward() {
    if (w.bf16) {
      attention_forward(bq, bk, bv, bout, lse, options);
    } else {
      attention_forward(q, k, v, out, lse, options);
    }
  }
  void core_backward() {
    const TensorView ds = w.sinks ? dsinks.view() : TensorView();
    if (w.bf16) {
      attention_backward(bq, bk, bv, bout, lse, bdout, bdq, bdk, bdv, ds, options);
    } else {
      attention_backward(q, k, v, out, lse, dout, dq, dk, dv, ds, options);
    }
  }
  // One decode step: a token for each sequence, through the contiguous or the paged cache.
  void decode_step() { decode(x); }
  // Tokens x (B, n, d_in) appended to each sequence's cache, attending over it.
  void decode(ConstTensorView tokens) {
    AttentionForwardOptions o;
    if (cache) {
      o.paged_cache = cache.get();
      o.sequence_ids = sequence_ids;
    } else {
      o.use_cache = true;
    }
    mha->forward(tokens, o);
  }
};

namespace {
// The module options a workload's variants ask for.
MultiHeadAttentionOptions mha_options(const Workload& w) {
  MultiHeadAttentionOptions options;
  options.num_kv_groups = w.num_kv_groups;
  options.window_left = w.window_left;
  options.softcap = w.softcap;
  options.alibi = w.alibi;
  options.sinks = w.sinks;
  if (w.rope) options.rope = RopeOptions{};
  return options;
}
}  // namespace

WorkloadRunner::WorkloadRunner(const Workload& w) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.w = w;
  Generator g(2024);
  if (w.paged && !(w.module == "mha" && w.decode)) {
    throw ArgumentError("bench: --paged applies to --module mha --decode only");
  }
  if (w.module == "core") {
    const Shape qs{w.batch, w.seq, w.d_out};
    s.q = g.uniform(qs, -1, 1);
    s.k = g.uniform(qs, -1, 1);
    s.v = g.uniform(qs, -1, 1);
    s.dout = g.uniform(qs, -1, 1);
    s.out = Tensor(qs);
    s.lse = Tensor({w.batch, w.seq});
    if (w.backward || w.backward_only) {
      s.dq = Tensor(qs);
      s.dk = Tensor(qs);
      s.dv = Tensor(qs);
    }
    s.options = {.causal = w.causal, .backend = w.backend};
    // Rank 3: every batch element is a head of its own (its slope and sink).
    s.options.window_left = w.window_left;
    s.options.softcap = w.softcap;
    if (w.alibi) {
      s.slopes = alibi_slopes(w.batch);
      s.options.alibi_slopes = s.slopes;
    }
    if (w.sinks) {
      s.sinks = g.uniform({w.batch}, -1, 1);
      s.dsinks = Tensor({w.batch});
      s.options.sinks = s.sinks;
    }
    if (w.rope) throw ArgumentError("bench: --rope applies to --module mha only");
    if (w.bf16) {
      s.bq = BFloat16Tensor::from_float(s.q);
      s.bk = BFloat16Tensor::from_float(s.k);
      s.bv = BFloat16Tensor::from_float(s.v);
      s.bdout = BFloat16Tensor::from_float(s.dout);
      s.bout = BFloat16Tensor(qs);
      if (w.backward || w.backward_only) {
        s.bdq = BFloat16Tensor(qs);
        s.bdk = BFloat16Tensor(qs);
        s.bdv = BFloat16Tensor(qs);
      }
    }
    if (w.backward_only) s.core_forward();
    return;
  }
  if (w.causal) throw ArgumentError("bench: --causal applies to --module core only");
  if (w.module == "mha") {
    if (w.decode && (w.backward || w.backward_only)) {
      throw ArgumentError("bench: --decode times inference; it has no backward");
    }
    // Room for the cache and the decode steps: the book's mask buffer is context_length^2
    // floats, so no more than that.
    const int64_t context = w.decode ? w.seq + w.decode_steps : w.seq;
    s.mha = std::make_unique<MultiHeadAttention>(w.d_in, w.d_out, context, 0.0, w.num_heads, false,
                                                 mha_options(w), &g);
    s.mha->set_backend(w.backend);
    if (w.bf16) s.mha->set_dtype(DType::bfloat16);
    if (w.decode) {
      s.mha->eval();
      s.x = g.uniform({w.batch, 1, w.d_in}, -1, 1);
      if (w.paged) {
        // Every sequence's pages for the cache and the steps, from one pool.
        const int64_t pages = w.batch * ((context + w.page_size - 1) / w.page_size);
        s.cache = std::make_unique<PagedKVCache>(pages, w.page_size, s.mha->num_kv_groups(),
                                                 s.mha->head_dim());
        for (int64_t b = 0; b < w.batch; ++b) s.sequence_ids.push_back(s.cache->add_sequence());
      }
      // Fill the cache with `seq` tokens, in chunks that keep the prefill's memory small.
      for (int64_t done = 0; done < w.seq;) {
        const int64_t n = std::min<int64_t>(1024, w.seq - done);
        s.decode(g.uniform({w.batch, n, w.d_in}, -1, 1));
        done += n;
      }
      return;
    }
    s.x = g.uniform({w.batch, w.seq, w.d_in}, -1, 1);
    s.grad_out = g.uniform({w.batch, w.seq, w.d_out}, -1, 1);
    if (w.backward_only) s.mha->forward(s.x);
    return;
  }
  if (w.decode) throw ArgumentError("bench: --decode applies to --module mha only");
  if (w.window_left >= 0 || w.softcap != 0.0f || w.alibi || w.sinks || w.rope) {
    throw ArgumentError(
        "bench: --window, --softcap, --alibi, --sinks and --rope apply to --module core or mha");
  }
  s.module = make_self_attention(w.module, w.d_in, w.d_out, w.module != "params", &g);
  s.module->set_backend(w.backend);
  if (w.bf16) s.module->set_dtype(DType::bfloat16);
  s.x = g.uniform({w.batch, w.seq, w.d_in}, -1, 1);
  s.grad_out = g.uniform({w.batch, w.seq, w.d_out}, -1, 1);
  if (w.backward_only) s.module->forward(s.x);
}

WorkloadRunner::~WorkloadRunner() = default;

void WorkloadRunner::run() {
  State& s = *state_;
  const bool forward = !s.w.backward_only;
  const bool backward = s.w.backward || s.w.backward_only;
  if (s.mha) {
    if (s.w.decode) {
      s.decode_step();
      return;
    }
    if (forward) s.mha->forward(s.x);
    if (backward) {
      s.mha->zero_grad();
      s.mha->backward(s.grad_out);
    }
    return;
  }
  if (s.module) {
    if (forward) s.module->forward(s.x);
    if (backward) {
      s.module->zero_grad();
      s.module->backward(s.grad_out);
    }
    return;
  }
  if (forward) s.core_forward();
  if (backward) s.core_backward();
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
  // The GEMM the projections run on (oneDNN's, or CBLAS in a build without it).
  const auto gemm = [&] {
    kernels::gemm(kernels::Trans::no, kernels::Trans::no, n, n, n, 1.0f, a.data(), n, b.data(), n,
                  0.0f, c.data(), n);
  };
  gemm();
  // The best of the runs: the rate this machine reaches; on a shared VM the others only add
  // its neighbours' noise.
  const std::vector<double> ms = repeat_ms(gemm, std::max(repeats, 1));
  return 2.0 * static_cast<double>(n) * n * n / (ms.front() * 1e6);
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

// Separate modules on separate threads give exactly the serial results. Run by `make test` and,
// built with -fsanitize=thread, by the TSan stage (label tsan), which also reports any data race
// the threads provoke, e.g. on shared state inside the library.
//
// Each job builds its module from its own Generator and turns off Linear4/5's advancing of the
// default generator: that is the documented way to use modules from several threads (README,
// Threads).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "cpu/microkernels.hpp"
#include "llm_utils/llm_utils.hpp"

namespace llm_utils {
namespace {

struct Job {
  std::string module;
  bool bias;
  Shape x_shape;  // (N, d_in) or (B, N, d_in)
  int64_t d_out;
  Backend backend;
  uint64_t seed;
};

struct Result {
  std::vector<Tensor> tensors;  // output, attention weights, dx, every gradient present
};

// x and the output gradient come from the job's seed too, so a job is a pure function of itself.
Result run_job(const Job& job) {
  Generator gen(job.seed);
  auto m = make_self_attention(job.module, job.x_shape.back(), job.d_out, job.bias, &gen);
  if (auto* l4 = dynamic_cast<SelfAttention_Linear4*>(m.get())) l4->set_advance_generator(false);
  m->set_backend(job.backend);
  const Tensor x = gen.uniform(job.x_shape, -2.0, 2.0);
  Result r;
  r.tensors.push_back(m->forward(x));
  r.tensors.push_back(Tensor::from_view(m->attn_weights()));
  const Tensor dout = gen.uniform(r.tensors[0].shape(), -1.0, 1.0);
  r.tensors.push_back(m->backward(dout));
  for (const auto& [name, p] : m->named_parameters()) {
    if (p.has_grad()) r.tensors.push_back(Tensor::from_view(p.grad()));
  }
  return r;
}

// Bit for bit, or, with `bitwise` false, to within rounding: 1e-5 of the largest magnitude.
bool same(const Result& a, const Result& b, bool bitwise) {
  if (a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const Tensor& x = a.tensors[i];
    const Tensor& y = b.tensors[i];
    if (x.shape() != y.shape()) return false;
    if (bitwise) {
      if (std::memcmp(x.data(), y.data(), static_cast<size_t>(x.numel()) * sizeof(float)) != 0) {
        return false;
      }
      continue;
    }
    float scale = 1.0f;
    for (float v : y) scale = std::max(scale, std::fabs(v));
    for (int64_t k = 0; k < x.numel(); ++k) {
      if (!(std::fabs(x[k] - y[k]) <= 1e-5f * scale)) return false;
    }
  }
  return true;
}

// Whether this build has the backend: an unbuilt one makes forward throw ArgumentError.
bool backend_available(Backend backend) {
  try {
    run_job({"linear", false, {4, 3}, 2, backend, 1});
    return true;
  } catch (const ArgumentError&) {
    return false;
  }
}

// Every class, bias on and off, 2-D and 3-D, sizes on both sides of the automatic backend's
// switch to the fused kernel; small enough that a TSan build runs them in seconds.
std::vector<Job> all_jobs() {
  std::vector<Job> jobs;
  uint64_t seed = 100;
  for (Backend backend : {Backend::reference, Backend::automatic, Backend::flash}) {
    if (!backend_available(backend)) continue;
    for (const char* module : {"params", "linear", "linear4", "linear5"}) {
      for (bool bias : {false, true}) {
        if (bias && std::string(module) == "params") continue;
        jobs.push_back({module, bias, {7, 5}, 3, backend, seed++});
        jobs.push_back({module, bias, {2, 70, 24}, 16, backend, seed++});
      }
    }
  }
  return jobs;
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LLM_UTILS_UNDER_TSAN 1
#endif
#endif

// Restores the process-wide thread count when a test ends, whatever it set. Under TSan it also
// switches the fused kernels to their portable microkernels for the test: Clang 14's TSan does
// not instrument 256- and 512-bit loads and stores, so a race through the AVX2 / AVX-512 tables
// would go unseen, while the threading around them is the same for every table.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(get_num_threads()) {
#ifdef LLM_UTILS_UNDER_TSAN
    cpu::force_isa(cpu::Isa::portable);
#endif
  }
  ~ThreadCountGuard() {
    set_num_threads(saved_);
#ifdef LLM_UTILS_UNDER_TSAN
    cpu::force_isa(std::nullopt);
#endif
  }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int saved_;
};

// `exact_fused`: whether the fused kernels must match bit for bit too. With more than one compute
// thread they need not: the fused backward adds per-thread partial sums of dQ over key blocks
// that are scheduled dynamically, reproducible to rounding only (docs/hardening.md).
//
// Each thread sets the thread count too: OpenMP keeps the team size per calling thread, so a
// thread started here would otherwise run the fused kernels on OpenMP's default team.
void expect_threads_match_serial(int num_threads, int repeats, bool exact_fused) {
  const int compute_threads = get_num_threads();
  const std::vector<Job> jobs = all_jobs();
  std::vector<Result> serial;
  for (const Job& job : jobs) serial.push_back(run_job(job));

  // Every thread runs every job, starting at a different one, so different jobs overlap.
  std::vector<std::vector<char>> ok(static_cast<size_t>(num_threads),
                                    std::vector<char>(jobs.size(), 1));
  std::vector<std::thread> threads;
  for (int t = 0; t < num_threads; ++t) {
    threads.emplace_back([&, t] {
      set_num_threads(compute_threads);
      for (int rep = 0; rep < repeats; ++rep) {
        for (size_t k = 0; k < jobs.size(); ++k) {
          const size_t j = (k + static_cast<size_t>(t) * 3) % jobs.size();
          const bool bitwise = exact_fused || jobs[j].backend == Backend::reference;
          if (!same(run_job(jobs[j]), serial[j], bitwise)) ok[static_cast<size_t>(t)][j] = 0;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (size_t t = 0; t < ok.size(); ++t) {
    for (size_t j = 0; j < jobs.size(); ++j) {
      EXPECT_TRUE(ok[t][j]) << "thread " << t << ", job " << j << ": " << jobs[j].module
                            << " bias=" << jobs[j].bias << " x=" << shape_to_string(jobs[j].x_shape)
                            << " backend=" << backend_name(jobs[j].backend);
    }
  }
}

// One compute thread per module: how to run many modules at once without oversubscribing the
// cores, and bitwise reproducible for every kernel.
TEST(Concurrency, ManyThreadsOnSeparateModulesMatchSerialBitwise) {
  ThreadCountGuard guard;
  set_num_threads(1);
  expect_threads_match_serial(/*num_threads=*/8, /*repeats=*/2, /*exact_fused=*/true);
}

// The same with the library's own pools (OpenBLAS, OpenMP) at two threads each, entered from
// several threads at once.
TEST(Concurrency, ConcurrentCallersShareThePoolsSafely) {
  ThreadCountGuard guard;
  set_num_threads(2);
  expect_threads_match_serial(/*num_threads=*/4, /*repeats=*/1, /*exact_fused=*/false);
}

}  // namespace
}  // namespace llm_utils

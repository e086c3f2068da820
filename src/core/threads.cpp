#include "llm_utils/threads.hpp"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils {
namespace {
// 0 until set_num_threads: then OpenMP's own default (OMP_NUM_THREADS or the cores) applies.
// OpenMP keeps its thread count per calling thread; the kernels pass this one to every
// parallel region instead, so a count set once holds in threads the user starts too.
std::atomic<int> g_threads{0};
}  // namespace

void set_num_threads(int n) {
  if (n < 1) throw ArgumentError("set_num_threads: n must be >= 1, got " + std::to_string(n));
  // The fused kernels run on OpenMP's pool, the projections on OpenBLAS's: never both at once,
  // so giving each n threads does not oversubscribe the cores.
  g_threads.store(n, std::memory_order_relaxed);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int get_num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

}  // namespace llm_utils

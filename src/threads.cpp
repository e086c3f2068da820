#include "llm_utils/threads.hpp"

#include <cblas.h>
#include <omp.h>

#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils {

void set_num_threads(int n) {
  if (n < 1) throw ArgumentError("set_num_threads: n must be >= 1, got " + std::to_string(n));
  // The fused kernels run on OpenMP's pool, the projections on OpenBLAS's: never both at once,
  // so giving each n threads does not oversubscribe the cores.
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int get_num_threads() {
  return omp_get_max_threads();
}

}  // namespace llm_utils

#include "llm_utils/threads.hpp"

#include <cblas.h>

#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils {

void set_num_threads(int n) {
  if (n < 1) throw ArgumentError("set_num_threads: n must be >= 1, got " + std::to_string(n));
  openblas_set_num_threads(n);
}

int get_num_threads() {
  return openblas_get_num_threads();
}

}  // namespace llm_utils

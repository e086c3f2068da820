#pragma once
// Helpers for the suites that compare the fused kernels with the reference: the ISAs this CPU
// can run, restoring the ISA and thread count a test changed, and a comparison that treats
// equal infinities (lse of fully hidden rows) as equal.

#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "bf16_test_data.hpp"
#include "cpu/microkernels.hpp"
#include "test_util.hpp"

namespace llm_utils::testing {

/// The float32 tables this CPU runs (avx512_bf16's float32 table is avx512's).
inline std::vector<cpu::Isa> available_isas() {
  std::vector<cpu::Isa> out;
  for (cpu::Isa isa : {cpu::Isa::portable, cpu::Isa::avx2, cpu::Isa::avx512}) {
    if (cpu::cpu_supports(isa)) out.push_back(isa);
  }
  return out;
}

/// Every bfloat16 table this CPU runs: the float32 ISAs' emulations, avx512_bf16 and amx.
inline std::vector<cpu::Isa> available_bf16_isas() {
  std::vector<cpu::Isa> out = available_isas();
  for (cpu::Isa isa : {cpu::Isa::avx512_bf16, cpu::Isa::amx}) {
    if (cpu::cpu_supports(isa)) out.push_back(isa);
  }
  return out;
}

// Restores the ISA and thread count a test changed.
struct KernelEnvironment {
  ~KernelEnvironment() {
    cpu::force_isa(std::nullopt);
    set_num_threads(threads);
  }
  int threads = get_num_threads();
};

/// Within 2e-5 relative (and 2e-5 of the largest |expected|), infinities equal.
inline ::testing::AssertionResult kernel_close(const Tensor& actual, const Tensor& expected) {
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure() << "shape " << shape_to_string(actual.shape())
                                         << " != expected " << shape_to_string(expected.shape());
  }
  for (int64_t i = 0; i < expected.numel(); ++i) {
    if (std::isinf(expected[i]) && actual[i] != expected[i]) {
      return ::testing::AssertionFailure()
             << "element " << i << ": " << actual[i] << " vs " << expected[i];
    }
  }
  Tensor a = actual, e = expected;
  for (int64_t i = 0; i < e.numel(); ++i) {
    if (std::isinf(e[i])) a[i] = e[i] = 0.0f;
  }
  return all_close(a, e, 2e-5, 2e-5 * std::max(1.0, max_abs(e)));
}

}  // namespace llm_utils::testing

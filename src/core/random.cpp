#include "llm_utils/random.hpp"

#include "llm_utils/error.hpp"

namespace llm_utils {

void Generator::manual_seed(uint64_t seed) {
  seed_ = seed;
  // std::mt19937's one-value seeding is MT19937's init_genrand, the routine PyTorch uses.
  engine_.seed(static_cast<std::mt19937::result_type>(seed & 0xFFFFFFFFULL));
}

void Generator::uniform_(TensorView out, double a, double b) {
  if (!out.is_contiguous()) {
    throw ArgumentError(
        "uniform_: out must be contiguous (draws fill it in memory order), got "
        "shape " +
        shape_to_string(out.shape()) + " with strides " + shape_to_string(out.strides()));
  }
  // PyTorch casts the bounds to the tensor's dtype first, subtracts them in float, and does the
  // affine map in double (its "accumulate type" for float on the CPU).
  const auto from = static_cast<float>(a);
  const auto to = static_cast<float>(b);
  const auto range = static_cast<double>(to - from);
  constexpr double kInv2Pow24 = 1.0 / 16777216.0;
  float* p = out.data();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(next_u32() & 0xFFFFFFu) * kInv2Pow24;
    p[i] = static_cast<float>(x * range + static_cast<double>(from));
  }
}

Tensor Generator::rand(const Shape& shape) {
  return uniform(shape, 0.0, 1.0);
}

Tensor Generator::uniform(const Shape& shape, double a, double b) {
  Tensor t(shape);
  uniform_(t, a, b);
  return t;
}

Generator& default_generator() {
  static Generator generator;
  return generator;
}

void manual_seed(uint64_t seed) {
  default_generator().manual_seed(seed);
}

Tensor rand(const Shape& shape) {
  return default_generator().rand(shape);
}

}  // namespace llm_utils

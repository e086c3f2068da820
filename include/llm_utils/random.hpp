#pragma once
/// \file random.hpp
/// A random generator that reproduces PyTorch's CPU generator bit for bit for float32 `rand`
/// and `uniform_`, so that the same seed gives the same weights as PyTorch.
///
/// PyTorch seeds an MT19937 with the low 32 bits of the seed (`init_genrand`) and turns one
/// 32-bit output into one float32 draw: `x = (u32 & 0xFFFFFF) * 2^-24` (in double), and
/// `uniform_(a, b)` stores `float(x * double(b - a) + a)` with `b - a` computed in float.
///
/// Example:
/// \code
///   llm_utils::manual_seed(123);
///   llm_utils::Tensor w = llm_utils::rand({3, 2});   // == torch.rand(3, 2) after seed 123
/// \endcode

#include <cstdint>
#include <random>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// PyTorch-compatible MT19937 generator. Not thread-safe: give each thread its own, or guard it.
class Generator {
 public:
  /// PyTorch's default seed (`torch.initial_seed()` of a fresh process).
  static constexpr uint64_t kDefaultSeed = 67280421310721ULL;

  explicit Generator(uint64_t seed = kDefaultSeed) { manual_seed(seed); }

  /// Re-seeds as `torch.manual_seed(seed)` does (only the low 32 bits reach the engine).
  void manual_seed(uint64_t seed);
  uint64_t initial_seed() const { return seed_; }

  /// The next raw 32-bit output of the engine.
  uint32_t next_u32() { return static_cast<uint32_t>(engine_()); }
  /// Skips `n` draws, exactly as if `n` float32 values had been drawn.
  void discard(uint64_t n) { engine_.discard(n); }

  /// Fills `out` with U[a, b) draws, as `tensor.uniform_(a, b)` does on a float32 tensor.
  void uniform_(TensorView out, double a, double b);
  /// A tensor of U[0, 1) draws, as `torch.rand(shape)`.
  Tensor rand(const Shape& shape);
  /// A tensor of U[a, b) draws, as `torch.empty(shape).uniform_(a, b)`.
  Tensor uniform(const Shape& shape, double a, double b);

 private:
  std::mt19937 engine_;
  uint64_t seed_ = kDefaultSeed;
};

/// The process-wide default generator that modules draw from unless given another.
/// Shared by all threads: seed and construct modules from one thread at a time.
Generator& default_generator();

/// Seeds the default generator, as `torch.manual_seed(seed)`.
void manual_seed(uint64_t seed);

/// `torch.rand(shape)` from the default generator.
Tensor rand(const Shape& shape);

}  // namespace llm_utils

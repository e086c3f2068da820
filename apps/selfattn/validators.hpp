#pragma once
// Checks of numeric flags with messages a person can act on ("--d-in must be a positive
// integer, got 'abc'"), run on the text before CLI11 converts it, so that a value out of the
// target type's range is refused rather than clamped.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <limits>
#include <string>

namespace selfattn {

/// A whole number in [1, max].
CLI::Validator positive_integer(int64_t max = std::numeric_limits<int64_t>::max());
/// A finite number > 0.
CLI::Validator positive_real();
/// A finite number >= 0.
CLI::Validator non_negative_real();
/// A seed as torch.manual_seed takes it: an integer in [-2^63, 2^64 - 1] (negative values wrap
/// to their low 64 bits, as PyTorch's).
CLI::Validator seed_integer();

/// Registers --dtype (fp32 / float32 or bf16 / bfloat16) on `cmd`, into `dtype`.
CLI::Option* add_dtype_option(CLI::App* cmd, std::string& dtype);

}  // namespace selfattn

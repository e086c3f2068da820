#pragma once
/// \file error.hpp
/// The exception types every check at an API boundary throws. Messages name the argument, what
/// was expected and what came, e.g.
/// `forward: x has d_in=4, module expects d_in=3 (x.shape = [6, 4])`.
///
/// Python bindings map them: ArgumentError -> ValueError, IoError -> OSError,
/// everything else -> RuntimeError.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace llm_utils {

/// Base of every exception the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A caller passed a bad argument: wrong shape, rank, size or option value.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// A file could not be opened, read, written or renamed.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A file was read but its content is malformed (bad magic, dtype, lengths, offsets, JSON).
class FormatError : public IoError {
 public:
  using IoError::IoError;
};

/// A call came in the wrong state, e.g. `backward` before any `forward`.
class StateError : public Error {
 public:
  using Error::Error;
};

/// Formats a shape as `[6, 4]`, the form every message uses.
std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace llm_utils

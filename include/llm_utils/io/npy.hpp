#pragma once
/// \file npy.hpp
/// Reading and writing float32 NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
///
/// Files are untrusted: magic, version, header length, dtype (`<f4` only, the spelling numpy
/// writes for float32; `>f4`, `=f4`, `|f4` are refused), `fortran_order` (False only), shape
/// (int64 overflow) and the data length (exactly numel * 4 bytes, no trailing bytes) are all
/// checked before any allocation, and a bad file throws FormatError whose message starts with
/// `npy 'PATH': `. Writing goes to a temporary file in the same folder that is renamed into place,
/// so a failed write never leaves a half-written file behind.
///
/// Example:
/// \code
///   llm_utils::Tensor x = llm_utils::io::load_npy("inputs.npy");
///   llm_utils::io::save_npy("copy.npy", x);
/// \endcode

#include <string>

#include "llm_utils/tensor.hpp"

namespace llm_utils::io {

/// Reads a float32 array. Throws IoError (missing/unreadable) or FormatError (malformed).
Tensor load_npy(const std::string& path);

/// Parses the bytes of a whole .npy file; `source` names it in error messages.
Tensor parse_npy(const std::string& bytes, const std::string& source);

/// Writes `tensor` as a version 1.0 `<f4` C-order .npy file, atomically, with the header padded
/// so the data starts at a multiple of 64 bytes, as numpy does. Like numpy, it falls back to
/// version 2.0 only when the header outgrows 64 KiB (ranks in the tens of thousands). Throws
/// IoError naming the path and the OS reason when the file cannot be written.
void save_npy(const std::string& path, ConstTensorView tensor);

/// The bytes save_npy would write.
std::string serialize_npy(ConstTensorView tensor);

}  // namespace llm_utils::io

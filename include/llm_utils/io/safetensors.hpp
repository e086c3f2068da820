#pragma once
/// \file safetensors.hpp
/// Reading and writing safetensors files: an 8-byte little-endian header length, a JSON header
/// `{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
/// {...}}`, then the tensor bytes. Files written by `safetensors.torch.save_file` load here, and
/// ours load there.
///
/// Files are untrusted: the header length (at most 100 MB, inside the file), the JSON (an object;
/// duplicate keys and NUL bytes are refused), every entry (exactly dtype, shape, data_offsets),
/// dtype (F32 only), shape (int64 overflow), offset pair (inside the data, matching the shape, no
/// overlaps, no gaps) and `__metadata__` (strings only) are checked before any tensor is
/// allocated; a bad file throws FormatError whose message starts with `safetensors 'PATH': ` and
/// names the tensor and what is wrong. Writing is atomic (temporary file, then rename).
///
/// Example:
/// \code
///   llm_utils::io::save_safetensors("w.safetensors", module.state_dict());
///   module.load_state_dict(llm_utils::io::load_safetensors("w.safetensors"));
/// \endcode

#include <map>
#include <string>

#include "llm_utils/nn/state_dict.hpp"

namespace llm_utils::io {

/// String-to-string metadata stored under "__metadata__".
using Metadata = std::map<std::string, std::string>;

/// Reads every tensor, in the order of their data offsets. Throws IoError or FormatError.
/// On success `*metadata` (when given) is replaced by the file's metadata, empty when it has
/// none; on failure it is left unchanged.
StateDict load_safetensors(const std::string& path, Metadata* metadata = nullptr);

/// Parses the bytes of a whole file; `source` names it in error messages.
StateDict parse_safetensors(const std::string& bytes, const std::string& source,
                            Metadata* metadata = nullptr);

/// Writes the tensors (F32) in the state dict's order with contiguous offsets, atomically;
/// `__metadata__` only when `metadata` is non-empty. Throws ArgumentError for a tensor named
/// `__metadata__` or a name or metadata string that is not valid UTF-8, IoError when the file
/// cannot be written.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const Metadata& metadata = {});

/// The bytes save_safetensors would write.
std::string serialize_safetensors(const StateDict& tensors, const Metadata& metadata = {});

}  // namespace llm_utils::io

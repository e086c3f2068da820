#pragma once
/// \file files.hpp
/// Writing several output files as one step, for programs whose outputs belong together (the
/// CLI's `run` writes the context vectors, the attention weights and the weights).
///
/// Example:
/// \code
///   llm_utils::io::write_files({{"y.npy", llm_utils::io::serialize_npy(y)},
///                               {"w.safetensors", llm_utils::io::serialize_safetensors(sd)}});
/// \endcode

#include <string>
#include <utility>
#include <vector>

namespace llm_utils::io {

/// (path, bytes) pairs. Every file is first written and flushed to a temporary file beside its
/// path; only when all of them succeeded are they renamed into place. So a failure to write any
/// (a missing folder, a full disk) throws IoError naming that path and leaves every path as it
/// was. Only a rename failing between the renames, which stay within one folder each, could
/// leave some files replaced and not others.
void write_files(const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace llm_utils::io

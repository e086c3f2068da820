#pragma once
/// \file atomic_file.hpp
/// Whole-file reads and crash-safe whole-file writes, shared by the npy and safetensors code.
/// Internal: not installed, not part of the public API.

#include <string>

namespace llm_utils::io::detail {

/// Returns the whole content of `path`. Throws IoError naming the path and the OS reason when it
/// cannot be opened or read, or when it is a directory.
std::string read_file(const std::string& path);

/// Replaces `path` with `bytes`: writes a temporary file in the same folder, flushes it to disk
/// and renames it over `path`, so readers see either the old file or the complete new one.
/// On failure the temporary file is removed, `path` is left as it was, and IoError names the path
/// and the OS reason. A symlink at `path` is replaced by a regular file, not followed.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace llm_utils::io::detail

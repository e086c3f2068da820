#pragma once
/// \file atomic_file.hpp
/// Whole-file reads and crash-safe whole-file writes, shared by the npy and safetensors code.
/// Internal: not installed, not part of the public API.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llm_utils::io::detail {

/// Given the first bytes of a file, the size its header says the whole file has, or nullopt
/// while those bytes do not hold the whole header yet. Throws FormatError for bytes no valid
/// file starts with.
using SizeFromHeader = std::function<std::optional<uint64_t>(std::string_view prefix)>;

/// Returns the whole content of `path`. Throws IoError naming the path and the OS reason when it
/// cannot be opened or read, or when it is a directory. With `size_from_header`, the header is
/// checked before the rest is read (a wrong file fails at once), and a pipe or device is read
/// no further than one byte past the size the header gives (/dev/zero does not hang).
std::string read_file(const std::string& path, const SizeFromHeader& size_from_header = {});

/// Replaces `path` with `bytes`: writes a temporary file in the same folder, flushes it to disk
/// and renames it over `path`, so readers see either the old file or the complete new one.
/// On failure the temporary file is removed, `path` is left as it was, and IoError names the path
/// and the OS reason. A symlink at `path` is replaced by a regular file, not followed.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// Writes several files as one step: every temporary file is written and flushed before any is
/// renamed into place, so a failure to write any of them (a missing folder, a full disk) leaves
/// every destination as it was. Only a rename failing between the renames (rare: each is within
/// one folder) could leave some files replaced and others not.
void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace llm_utils::io::detail

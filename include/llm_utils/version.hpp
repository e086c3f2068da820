#pragma once
/// \file version.hpp

namespace llm_utils {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace llm_utils

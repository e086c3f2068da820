#pragma once
// What every harness checks beyond "no crash": a rejected input gives an llm_utils error whose
// message can be printed as the CLI's one `error:` line.

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace fuzz {

// Long enough for any real message, short enough that no input can flood a terminal.
constexpr size_t kMaxMessageBytes = 2048;

[[noreturn]] inline void fail(const char* what, std::string_view message) {
  std::fprintf(stderr, "fuzz check failed: %s\nmessage: %.*s\n", what,
               static_cast<int>(message.size()), message.data());
  std::abort();
}

// `max_bytes`: messages of the readers quote the file in short excerpts; the CLI's may echo a
// whole argument.
inline void check_message(std::string_view message, std::string_view prefix,
                          size_t max_bytes = kMaxMessageBytes) {
  if (message.substr(0, prefix.size()) != prefix) fail("message lacks its prefix", message);
  if (message.size() > max_bytes) fail("message is too long", message);
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) fail("message has a control character", message);
  }
}

}  // namespace fuzz

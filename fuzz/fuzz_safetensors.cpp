// libFuzzer harness for the safetensors reader: any bytes either parse or give a FormatError
// with a printable one-line message; what parses can be written back and reads the same.

#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_check.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/io/safetensors.hpp"

namespace {

bool same(const llm_utils::StateDict& a, const llm_utils::StateDict& b) {
  if (a.size() != b.size()) return false;
  auto it = b.begin();
  for (const auto& [name, tensor] : a) {
    const auto& [other_name, other] = *it++;
    if (name != other_name || tensor.shape() != other.shape()) return false;
    const auto bytes = static_cast<size_t>(tensor.numel()) * sizeof(float);
    if (bytes > 0 && std::memcmp(tensor.data(), other.data(), bytes) != 0) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  llm_utils::io::Metadata metadata{{"untouched", "on failure"}};
  llm_utils::StateDict tensors;
  try {
    tensors = llm_utils::io::parse_safetensors(bytes, "fuzz", &metadata);
  } catch (const llm_utils::FormatError& e) {
    fuzz::check_message(e.what(), "safetensors 'fuzz': ");
    if (metadata.size() != 1 || !metadata.contains("untouched")) {
      fuzz::fail("a failed parse changed the metadata", e.what());
    }
    return 0;
  }
  // A file we read must be one we can write: names and metadata came through the JSON parser.
  llm_utils::io::Metadata metadata_again;
  const llm_utils::StateDict again = llm_utils::io::parse_safetensors(
      llm_utils::io::serialize_safetensors(tensors, metadata), "again", &metadata_again);
  if (!same(tensors, again)) fuzz::fail("round trip changed the tensors", "");
  if (metadata_again != metadata) fuzz::fail("round trip changed the metadata", "");
  return 0;
}

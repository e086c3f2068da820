// libFuzzer harness for the .npy reader: any bytes either parse or give a FormatError with a
// printable one-line message; what parses survives serialize + parse bit for bit.

#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_check.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  llm_utils::Tensor tensor;
  try {
    tensor = llm_utils::io::parse_npy(bytes, "fuzz");
  } catch (const llm_utils::FormatError& e) {
    fuzz::check_message(e.what(), "npy 'fuzz': ");
    return 0;
  }
  // Anything else thrown (bad_alloc, length_error, ...) escapes and libFuzzer reports it.
  const llm_utils::Tensor again =
      llm_utils::io::parse_npy(llm_utils::io::serialize_npy(tensor), "again");
  if (again.shape() != tensor.shape()) fuzz::fail("round trip changed the shape", "");
  if (tensor.numel() > 0 &&
      std::memcmp(again.data(), tensor.data(), static_cast<size_t>(tensor.numel()) * 4) != 0) {
    fuzz::fail("round trip changed the data", "");
  }
  return 0;
}

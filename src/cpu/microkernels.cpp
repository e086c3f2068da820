#include "cpu/microkernels.hpp"

#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils::cpu {
namespace {

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      // Every extension microkernels_avx512.cpp is compiled with (CMakeLists.txt).
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return false;
}

const Microkernels& table_for(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return avx512_microkernels();
    case Isa::avx2:
      return avx2_microkernels();
    case Isa::portable:
      break;
  }
  return portable_microkernels();
}

const Microkernels* forced = nullptr;

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return "portable";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "?";
}

Isa detected_isa() {
  static const Isa best = [] {
    if (cpu_has(Isa::avx512)) return Isa::avx512;
    if (cpu_has(Isa::avx2)) return Isa::avx2;
    return Isa::portable;
  }();
  return best;
}

const Microkernels& microkernels() {
  if (forced != nullptr) return *forced;
  static const Microkernels& best = table_for(detected_isa());
  return best;
}

void force_isa(std::optional<Isa> isa) {
  if (!isa) {
    forced = nullptr;
    return;
  }
  if (!cpu_has(*isa)) {
    throw ArgumentError(std::string("force_isa: this CPU does not support ") + isa_name(*isa));
  }
  forced = &table_for(*isa);
}

}  // namespace llm_utils::cpu

#include "cpu/microkernels.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu/bf16_microkernels.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::cpu {
namespace {

const Microkernels& table_for(Isa isa) {
  switch (isa) {
    case Isa::avx512:
    case Isa::avx512_bf16:  // float32 has nothing faster to use from AVX512_BF16
      return avx512_microkernels();
    case Isa::avx2:
      return avx2_microkernels();
    case Isa::portable:
      break;
  }
  return portable_microkernels();
}

const Bf16Microkernels& bf16_table_for(Isa isa) {
  switch (isa) {
    case Isa::avx512_bf16:
      return avx512_bf16_native_microkernels();
    case Isa::avx512:
      return avx512_bf16_emulated_microkernels();
    case Isa::avx2:
      return avx2_bf16_microkernels();
    case Isa::portable:
      break;
  }
  return portable_bf16_microkernels();
}

// What LLM_UTILS_ISA selects, once per process: an ISA, or the error every kernel call reports.
struct EnvironmentChoice {
  Isa isa = Isa::portable;
  std::string error;
};

const EnvironmentChoice& environment_choice() {
  static const EnvironmentChoice choice = [] {
    EnvironmentChoice c;
    const char* value = std::getenv("LLM_UTILS_ISA");
    if (value == nullptr || *value == '\0') {
      c.isa = detected_isa();
      return c;
    }
    try {
      c.isa = parse_isa(value);
      if (!cpu_supports(c.isa)) {
        c.error = std::string("LLM_UTILS_ISA=") + value + ": this CPU does not support " + value +
                  " (the best it runs is " + isa_name(detected_isa()) + ")";
      }
    } catch (const ArgumentError& e) {
      c.error = e.what();
    }
    return c;
  }();
  return choice;
}

bool forced = false;
Isa forced_isa = Isa::portable;

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return "portable";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    case Isa::avx512_bf16:
      return "avx512_bf16";
  }
  return "?";
}

Isa parse_isa(const char* name) {
  for (Isa isa : {Isa::portable, Isa::avx2, Isa::avx512, Isa::avx512_bf16}) {
    if (std::strcmp(name, isa_name(isa)) == 0) return isa;
  }
  if (std::strcmp(name, "amx") == 0) {
    throw ArgumentError(
        "LLM_UTILS_ISA=amx: no AMX tables are built (no machine with AMX was available to verify "
        "them); use avx512_bf16, avx512, avx2 or portable");
  }
  throw ArgumentError(std::string("LLM_UTILS_ISA=") + name +
                      ": unknown ISA (expected portable, avx2, avx512, avx512_bf16 or amx)");
}

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      // Every extension microkernels_avx512.cpp and bf16_microkernels_avx512.cpp are compiled
      // with (CMakeLists.txt): every AVX-512 CPU since Skylake-SP has them.
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512_bf16:
      return cpu_supports(Isa::avx512) && __builtin_cpu_supports("avx512bf16");
  }
  return false;
}

Isa detected_isa() {
  static const Isa best = [] {
    for (Isa isa : {Isa::avx512_bf16, Isa::avx512, Isa::avx2}) {
      if (cpu_supports(isa)) return isa;
    }
    return Isa::portable;
  }();
  return best;
}

Isa selected_isa() {
  if (forced) return forced_isa;
  const EnvironmentChoice& c = environment_choice();
  if (!c.error.empty()) throw ArgumentError(c.error);
  return c.isa;
}

const Microkernels& microkernels() {
  return table_for(selected_isa());
}

const Bf16Microkernels& bf16_microkernels() {
  return bf16_table_for(selected_isa());
}

void force_isa(std::optional<Isa> isa) {
  if (!isa) {
    forced = false;
    return;
  }
  if (!cpu_supports(*isa)) {
    throw ArgumentError(std::string("force_isa: this CPU does not support ") + isa_name(*isa));
  }
  forced = true;
  forced_isa = *isa;
}

}  // namespace llm_utils::cpu

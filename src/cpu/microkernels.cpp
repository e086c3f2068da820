#include "cpu/microkernels.hpp"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

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
    case Isa::amx:          // nor from AMX (its float32 tiles are TF32 or FP16, not float32)
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
    case Isa::amx:
      return amx_bf16_microkernels();
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

// CPUID leaf 7, subleaf 0: EDX bit 24 is AMX-TILE, bit 22 AMX-BF16 (Intel SDM, "CPUID").
// Asked directly: Clang 14's __builtin_cpu_supports knows no AMX feature names.
bool cpu_has_amx_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (edx >> 24 & 1u) != 0 && (edx >> 22 & 1u) != 0;
}

// Linux (5.16 and later) hands a process the 8 KiB tile state only on request; without it the
// first tile instruction faults. ARCH_REQ_XCOMP_PERM is 0x1023 and XFEATURE_XTILEDATA 18
// (arch/x86/include/uapi/asm/prctl.h, arch/x86/include/asm/fpu/types.h); older kernels refuse
// the unknown request with EINVAL. Asked once, and only when amx is named: the grant is the
// whole process's, and from then on a sigaltstack() smaller than the larger signal frame fails.
bool amx_tile_permission() {
#ifdef __linux__
  static const bool granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return granted;
#else
  return false;
#endif
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
    case Isa::amx:
      return "amx";
  }
  return "?";
}

Isa parse_isa(const char* name) {
  for (Isa isa : {Isa::portable, Isa::avx2, Isa::avx512, Isa::avx512_bf16, Isa::amx}) {
    if (std::strcmp(name, isa_name(isa)) == 0) return isa;
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
    case Isa::amx:
      return cpu_supports(Isa::avx512_bf16) && cpu_has_amx_bf16() && amx_tile_permission();
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

namespace {
const Bf16Microkernels* bf16_override = nullptr;  // override_bf16_microkernels_for_testing's
}  // namespace

const Bf16Microkernels& bf16_microkernels() {
  if (bf16_override != nullptr) return *bf16_override;
  return bf16_table_for(selected_isa());
}

void override_bf16_microkernels_for_testing(const Bf16Microkernels* table) {
  bf16_override = table;
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

#pragma once
// The AMX tile instructions as amx_gemm.hpp's `Tiles` backend: the register plan there (tmm0..7,
// each 16 rows x 64 bytes), one inline-asm statement per instruction. Included only by files
// compiled for AMX (-mamx-tile -mamx-bf16) and run only where cpu_supports(Isa::amx) said yes
// (the CPU has AMX-TILE and AMX-BF16 and Linux granted the tile state).
//
// Why not GCC 12's _tile_* intrinsics: they are macros that paste the tile number into the
// instruction's text (so it must be a literal), and their asm statements do not tell the
// compiler what memory they read. _tile_loadconfig declares 8 of its 64 bytes and _tile_loadd
// none, so the stores that fill a configuration or a padded tile could be dropped or moved past
// the instruction as dead. Here ldtilecfg declares the whole configuration as read, and
// tileloadd and tilestored clobber memory.

#include <cstdint>

namespace llm_utils::cpu::amx {
namespace {  // each unit compiled for AMX keeps its own copy

// The 64-byte operand of ldtilecfg (Intel SDM, "LDTILECFG"): palette 1, then each tile's bytes
// per row and rows.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // (16,) bytes per row of tmm0..15 (0: unused)
  uint8_t rows[16] = {};    // (16,) rows of tmm0..15
};
static_assert(sizeof(TileConfig) == 64);

// One case per register: the tile number is part of the instruction's text.
#define LLM_UTILS_FOR_TILE(T, OP)                \
  static_assert(0 <= (T) && (T) < 8, "tmm0..7"); \
  if constexpr ((T) == 0) OP("0");               \
  if constexpr ((T) == 1) OP("1");               \
  if constexpr ((T) == 2) OP("2");               \
  if constexpr ((T) == 3) OP("3");               \
  if constexpr ((T) == 4) OP("4");               \
  if constexpr ((T) == 5) OP("5");               \
  if constexpr ((T) == 6) OP("6");               \
  if constexpr ((T) == 7) OP("7")

struct HardwareTiles {
  /// ldtilecfg: palette 1, tmm0..7 each 16 rows x 64 bytes (and zeroed).
  static void configure() {
    TileConfig config;
    for (int t = 0; t < 8; ++t) {
      config.colsb[t] = 64;
      config.rows[t] = 16;
    }
    // The address in a register, the struct as a memory input: every byte read, and no
    // operand modifier (Clang knows no %X).
    asm volatile("{ldtilecfg (%0)|ldtilecfg [%0]}" ::"r"(&config), "m"(config));
  }
  /// tilerelease: the tiles back to their initial state (nothing for the OS to save).
  static void release() { asm volatile("tilerelease" ::); }
  template <int T>
  static void zero() {
#define LLM_UTILS_TILE_ZERO(t) asm volatile("{tilezero %%tmm" t "|tilezero tmm" t "}" ::)
    LLM_UTILS_FOR_TILE(T, LLM_UTILS_TILE_ZERO);
#undef LLM_UTILS_TILE_ZERO
  }
  /// tileloadd: row r from base + r * stride bytes.
  template <int T>
  static void load(const void* base, int64_t stride) {
#define LLM_UTILS_TILE_LOAD(t)                                                                \
  asm volatile("{tileloadd (%0,%1,1), %%tmm" t "|tileloadd tmm" t ", [%0+%1*1]}" ::"r"(base), \
               "r"(stride)                                                                    \
               : "memory")
    LLM_UTILS_FOR_TILE(T, LLM_UTILS_TILE_LOAD);
#undef LLM_UTILS_TILE_LOAD
  }
  /// tilestored: row r to base + r * stride bytes.
  template <int T>
  static void store(void* base, int64_t stride) {
#define LLM_UTILS_TILE_STORE(t)                                                                 \
  asm volatile("{tilestored %%tmm" t ", (%0,%1,1)|tilestored [%0+%1*1], tmm" t "}" ::"r"(base), \
               "r"(stride)                                                                      \
               : "memory")
    LLM_UTILS_FOR_TILE(T, LLM_UTILS_TILE_STORE);
#undef LLM_UTILS_TILE_STORE
  }
  /// tdpbf16ps: tmmC += tmmA tmmB, the four products of amx_gemm.hpp's plan (each string in
  /// AT&T order, B, A, C, then Intel's, C, A, B, for -masm=intel).
  template <int C, int A, int B>
  static void dot() {
    static_assert(0 <= C && C < 4 && A == 4 + C / 2 && B == 6 + C % 2,
                  "amx_gemm.hpp's register plan");
    if constexpr (C == 0)
      asm volatile("{tdpbf16ps %%tmm6, %%tmm4, %%tmm0|tdpbf16ps tmm0, tmm4, tmm6}" ::);
    if constexpr (C == 1)
      asm volatile("{tdpbf16ps %%tmm7, %%tmm4, %%tmm1|tdpbf16ps tmm1, tmm4, tmm7}" ::);
    if constexpr (C == 2)
      asm volatile("{tdpbf16ps %%tmm6, %%tmm5, %%tmm2|tdpbf16ps tmm2, tmm5, tmm6}" ::);
    if constexpr (C == 3)
      asm volatile("{tdpbf16ps %%tmm7, %%tmm5, %%tmm3|tdpbf16ps tmm3, tmm5, tmm7}" ::);
  }
};

#undef LLM_UTILS_FOR_TILE

/// Floating-point operations of one round of dot_rounds_from_registers: four tdpbf16ps, each
/// 16 x 16 outputs x 32 multiply-adds.
constexpr double kDotRoundFlops = 4.0 * 16 * 16 * 32 * 2;

/// The tdpbf16ps peak loop (bench/fma_peak_amx.cpp, tests/amx/amx_hardware_check.cpp): the
/// register plan's four products, independent chains from registers, `rounds` times, on
/// operands of 2^-12 (bfloat16 0x3980: each instruction adds 32 * 2^-24 to an output, no
/// overflow and no subnormals, which tdpbf16ps would flush). Returns one output, so that the
/// work is kept.
inline float dot_rounds_from_registers(long long rounds) {
  using Tiles = HardwareTiles;
  Tiles::configure();
  alignas(64) uint16_t operand[16 * 32];  // (16, 32) bfloat16 bits
  for (uint16_t& x : operand) x = 0x3980;
  Tiles::load<4>(operand, 64);
  Tiles::load<5>(operand, 64);
  Tiles::load<6>(operand, 64);
  Tiles::load<7>(operand, 64);
  Tiles::zero<0>();
  Tiles::zero<1>();
  Tiles::zero<2>();
  Tiles::zero<3>();
  for (long long it = 0; it < rounds; ++it) {
    Tiles::dot<0, 4, 6>();
    Tiles::dot<1, 4, 7>();
    Tiles::dot<2, 5, 6>();
    Tiles::dot<3, 5, 7>();
  }
  alignas(64) float out[4][16 * 16];  // (4, 16, 16) the C tiles
  Tiles::store<0>(out[0], 64);
  Tiles::store<1>(out[1], 64);
  Tiles::store<2>(out[2], 64);
  Tiles::store<3>(out[3], 64);
  Tiles::release();
  return out[0][0] + out[1][0] + out[2][0] + out[3][0];
}

}  // namespace
}  // namespace llm_utils::cpu::amx

#pragma once
// An emulator of the AMX instructions amx_gemm.hpp uses, as the `Tiles` backend of
// cpu::amx::gemm, so that its blocking (in-place and padded tiles, edges, the epilogue) runs
// and is checked on CPUs without AMX. Each instruction as the Intel SDM describes it: ldtilecfg
// sets every tile's shape and zeroes the tiles; a tile instruction before it, or after
// tilerelease, is an error (#UD on the hardware); tileloadd and tilestored touch exactly rows x
// colsb bytes, row r at base + r * stride (so AddressSanitizer sees what the hardware would read
// and write); tdpbf16ps checks its operands' shapes (#UD on the hardware when A's colsb / 4
// differs from B's rows, or C's rows or colsb from A's rows or B's colsb) and, per element of
// C, sums the pairs' first products and their second products apart, each from zero by float32
// fused multiply-adds, adds the two sums and then adds that to C (the SDM's pseudocode; the
// Intrinsics Guide's older one adds both products of each pair straight into C), every step
// rounded to nearest even with subnormal inputs and results taken as zero. Whether the
// hardware follows the SDM to the bit is what tests/amx/amx_hardware_check.cpp reports.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "llm_utils/bfloat16.hpp"

namespace llm_utils::testing {

struct EmulatedTiles {
  struct Tile {
    int rows = 0;
    int colsb = 0;
    alignas(64) unsigned char bytes[16 * 64] = {};  // (16, 64) the register
  };
  struct State {
    bool configured = false;
    Tile tiles[8];
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  static Tile& tile(int t, const char* instruction) {
    if (!state().configured) {
      throw std::logic_error(std::string(instruction) +
                             " with no tile configuration (#UD on the hardware)");
    }
    return state().tiles[t];
  }

  /// tdpbf16ps instructions run, on every thread.
  static std::atomic<int64_t>& dots_run() {
    static std::atomic<int64_t> count{0};
    return count;
  }

  static void configure() {
    State& s = state();
    s.configured = true;
    for (Tile& t : s.tiles) {
      t.rows = 16;
      t.colsb = 64;
      std::memset(t.bytes, 0, sizeof t.bytes);
    }
  }
  static void release() { state() = State{}; }
  template <int T>
  static void zero() {
    std::memset(tile(T, "tilezero").bytes, 0, sizeof(Tile::bytes));
  }
  template <int T>
  static void load(const void* base, int64_t stride) {
    Tile& t = tile(T, "tileloadd");
    for (int r = 0; r < t.rows; ++r) {
      std::memcpy(t.bytes + r * 64, static_cast<const unsigned char*>(base) + r * stride,
                  static_cast<size_t>(t.colsb));
    }
  }
  template <int T>
  static void store(void* base, int64_t stride) {
    Tile& t = tile(T, "tilestored");
    for (int r = 0; r < t.rows; ++r) {
      std::memcpy(static_cast<unsigned char*>(base) + r * stride, t.bytes + r * 64,
                  static_cast<size_t>(t.colsb));
    }
  }
  template <int C, int A, int B>
  static void dot() {
    static_assert(C != A && C != B && A != B, "tdpbf16ps needs three distinct tiles");
    Tile& c = tile(C, "tdpbf16ps");
    const Tile& a = tile(A, "tdpbf16ps");
    const Tile& b = tile(B, "tdpbf16ps");
    if (a.colsb / 4 != b.rows || c.rows != a.rows || c.colsb != b.colsb) {
      throw std::logic_error("tdpbf16ps: tile shapes do not match (#UD on the hardware)");
    }
    dots_run().fetch_add(1, std::memory_order_relaxed);
    for (int m = 0; m < c.rows; ++m) {
      for (int n = 0; n < c.colsb / 4; ++n) {
        // The SDM's order: the pairs' first products summed apart from their second ones, each
        // from zero by float32 FMAs, then the two sums added, then that into C.
        float first = 0.0f, second = 0.0f;
        for (int p = 0; p < a.colsb / 4; ++p) {
          first = flush(std::fma(input(a, m, 2 * p), input(b, p, 2 * n), first));
          second = flush(std::fma(input(a, m, 2 * p + 1), input(b, p, 2 * n + 1), second));
        }
        const float sum = flush(element<float>(c, m, n) + flush(first + second));
        std::memcpy(c.bytes + m * 64 + n * 4, &sum, sizeof sum);
      }
    }
  }

 private:
  template <class T>
  static T element(const Tile& t, int row, int index) {
    T value;
    std::memcpy(&value, t.bytes + row * 64 + index * sizeof(T), sizeof value);
    return value;
  }
  static float flush(float x) {
    return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x;
  }
  // A bfloat16 operand as float32, subnormals taken as zero.
  static float input(const Tile& t, int row, int index) {
    return flush(static_cast<float>(element<bfloat16>(t, row, index)));
  }
};

}  // namespace llm_utils::testing

#pragma once
// The AMX bfloat16 GEMM (Bf16Microkernels::gemm's contract, bf16_microkernels.hpp), written once
// over a tile backend so that the same blocking runs on the hardware (bf16_microkernels_amx.cpp:
// amx_tiles.hpp) and, in the tests, on an emulator of the instructions' documented
// semantics (tests/amx_emulator.hpp) on CPUs without AMX.
//
// The backend, `Tiles`, has static members
//   configure()                 ldtilecfg: palette 1, tmm0..7 each 16 rows x 64 bytes
//   release()                   tilerelease
//   zero<T>()                   tilezero tmmT
//   load<T>(base, stride)       tileloadd: 16 rows of 64 bytes, row r at base + r * stride bytes
//   store<T>(base, stride)      tilestored, the same addressing
//   dot<C, A, B>()              tdpbf16ps: tmmC += tmmA (16 x 32 bfloat16) tmmB (16 pair rows
//                               x 16 pairs)
//
// The registers, one configuration for the whole call: C is taken in 32 x 32 blocks,
//   tmm0 = C rows 0-15, columns 0-15      tmm1 = rows 0-15, columns 16-31
//   tmm2 = C rows 16-31, columns 0-15     tmm3 = rows 16-31, columns 16-31
//   tmm4, tmm5 = A rows 0-15 and 16-31, 32 k each (a 16 x 32 bfloat16 tile)
//   tmm6, tmm7 = B columns 0-15 and 16-31, the same 32 k as 16 pair rows: the pairs layout of
//                bf16_microkernels.hpp is AMX's own layout for B, so B is loaded as it lies.
// A tile lying wholly inside its operand is loaded in place; at an edge (fewer than 16 rows or
// columns, or fewer than 32 of k left) it is first copied into a zero-padded 16 x 64-byte buffer,
// so no tile load reads outside an operand and the padding only adds exact zeros. C tiles go
// straight to C when whole, alpha is 1 and not accumulating, else through a buffer and the
// epilogue (alpha, accumulate, only the rows and columns inside C).
//
// The sums: each element from zero, its k in chunks of 32 (16 pairs) in order, into one float32
// accumulator, each tdpbf16ps adding a chunk in the hardware's order; the chunk order and the
// zero start are this file's. Within a chunk the SDM's pseudocode sums the pairs' first and
// second products apart and adds the two sums to C (the Intrinsics Guide's older one adds both
// products of each pair to C in turn), every step rounded to nearest even with subnormal inputs
// and results taken as zero; which of these the hardware follows bit for bit is unverified, so
// the AMX table is checked within a summation error bound, not bit for bit.
// The tiles are configured and released on every call: safe next to other AMX users on the
// thread (oneDNN configures them itself), at a cost per call no one has measured yet
// (tests/amx/amx_hardware_check.cpp times it, and the lazy alternative, on an AMX CPU).

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "llm_utils/bfloat16.hpp"

// Everything in an anonymous namespace: the AMX unit (compiled with AVX-512 and AMX flags) and
// the tests (baseline flags) each keep their own copies; an inline function shared between them
// could be linked from the AVX-512 unit into code run on a CPU without AVX-512.
namespace llm_utils::cpu::amx {
namespace {

constexpr int64_t kTileRows = 16;   // rows of every tile; pair rows of a B tile
constexpr int64_t kTileBytes = 64;  // bytes of every tile row
constexpr int64_t kTileK = 32;      // bfloat16 elements of k per A tile row
constexpr int64_t kTileCols = 16;   // float32 columns of a C tile; pairs per B tile row
constexpr int64_t kBlock = 32;      // rows and columns of C per block of four C tiles

/// The A tile of rows [row0, row0 + 16) and k [k0, k0 + 32) of A (m x k, leading dimension lda):
/// in place when whole, else copied into pad (16 x 32 bfloat16s) with zeros outside A. Sets
/// stride (bytes between tile rows).
inline const bfloat16* a_tile(const bfloat16* a, int64_t lda, int64_t m, int64_t k, int64_t row0,
                              int64_t k0, bfloat16* pad, int64_t& stride) {
  const int64_t rows = std::min(kTileRows, m - row0);
  const int64_t cols = std::min(kTileK, k - k0);
  if (rows == kTileRows && cols == kTileK) {
    stride = lda * static_cast<int64_t>(sizeof(bfloat16));
    return a + row0 * lda + k0;
  }
  std::memset(static_cast<void*>(pad), 0, kTileRows * kTileBytes);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(pad + r * kTileK, a + (row0 + r) * lda + k0,
                static_cast<size_t>(cols) * sizeof(bfloat16));
  }
  stride = kTileBytes;
  return pad;
}

/// The B tile of columns [col0, col0 + 16) and k [k0, k0 + 32) of B (k x n in pairs, leading
/// dimension ldb in bfloat16s): pair rows k0 / 2 .. k0 / 2 + 15, in place when whole, else copied
/// into pad (16 pair rows x 16 pairs) with zeros outside B. Sets stride (bytes).
inline const bfloat16* b_tile(const bfloat16* b, int64_t ldb, int64_t n, int64_t k, int64_t col0,
                              int64_t k0, bfloat16* pad, int64_t& stride) {
  const int64_t cols = std::min(kTileCols, n - col0);
  const int64_t pair_rows = std::min(kTileRows, (k - k0 + 1) / 2);
  const bfloat16* first = b + (k0 / 2) * ldb + 2 * col0;
  if (cols == kTileCols && pair_rows == kTileRows) {
    stride = ldb * static_cast<int64_t>(sizeof(bfloat16));
    return first;
  }
  std::memset(static_cast<void*>(pad), 0, kTileRows * kTileBytes);
  for (int64_t p = 0; p < pair_rows; ++p) {
    std::memcpy(pad + p * 2 * kTileCols, first + p * ldb,
                static_cast<size_t>(2 * cols) * sizeof(bfloat16));
  }
  stride = kTileBytes;
  return pad;
}

/// C rows [row0, row0 + 16) x columns [col0, col0 + 16), clipped to C, from tile T: stored in
/// place when whole with alpha 1 and no accumulation, else through buffer (16 x 16 float32).
template <class Tiles, int T>
void store_c_tile(int64_t m, int64_t n, int64_t row0, int64_t col0, float alpha, float* c,
                  int64_t ldc, bool accumulate, float* buffer) {
  const int64_t rows = std::min(kTileRows, m - row0);
  const int64_t cols = std::min(kTileCols, n - col0);
  float* out = c + row0 * ldc + col0;
  if (rows == kTileRows && cols == kTileCols && alpha == 1.0f && !accumulate) {
    Tiles::template store<T>(out, ldc * static_cast<int64_t>(sizeof(float)));
    return;
  }
  Tiles::template store<T>(buffer, kTileBytes);
  for (int64_t r = 0; r < rows; ++r) {
    const float* sums = buffer + r * kTileCols;  // (16,) this row's sums
    float* row = out + r * ldc;
    for (int64_t j = 0; j < cols; ++j) {
      const float value = alpha == 1.0f ? sums[j] : alpha * sums[j];
      row[j] = accumulate ? row[j] + value : value;
    }
  }
}

/// Bf16Microkernels::gemm on AMX tiles: C (m x n) = (accumulate ? C : 0) + alpha * A B.
template <class Tiles>
void gemm(int64_t m, int64_t n, int64_t k, float alpha, const bfloat16* a, int64_t lda,
          const bfloat16* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  alignas(64) bfloat16 a_pad[2][kTileRows * kTileK];         // (2, 16, 32) edge A tiles
  alignas(64) bfloat16 b_pad[2][kTileRows * 2 * kTileCols];  // (2, 16, 32) edge B tiles
  alignas(64) float c_buffer[kTileRows * kTileCols];         // (16, 16) one C tile's sums
  Tiles::configure();
  for (int64_t i0 = 0; i0 < m; i0 += kBlock) {
    const bool lower = i0 + kTileRows < m;  // the block has C rows 16-31
    for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
      const bool right = j0 + kTileCols < n;  // the block has C columns 16-31
      Tiles::template zero<0>();
      if (right) Tiles::template zero<1>();
      if (lower) Tiles::template zero<2>();
      if (lower && right) Tiles::template zero<3>();
      for (int64_t k0 = 0; k0 < k; k0 += kTileK) {
        // Each tile's pointer before its load: a_tile and b_tile set the stride it reads.
        int64_t stride = 0;
        const bfloat16* tile = a_tile(a, lda, m, k, i0, k0, a_pad[0], stride);
        Tiles::template load<4>(tile, stride);
        if (lower) {
          tile = a_tile(a, lda, m, k, i0 + kTileRows, k0, a_pad[1], stride);
          Tiles::template load<5>(tile, stride);
        }
        tile = b_tile(b, ldb, n, k, j0, k0, b_pad[0], stride);
        Tiles::template load<6>(tile, stride);
        if (right) {
          tile = b_tile(b, ldb, n, k, j0 + kTileCols, k0, b_pad[1], stride);
          Tiles::template load<7>(tile, stride);
        }
        Tiles::template dot<0, 4, 6>();
        if (right) Tiles::template dot<1, 4, 7>();
        if (lower) Tiles::template dot<2, 5, 6>();
        if (lower && right) Tiles::template dot<3, 5, 7>();
      }
      store_c_tile<Tiles, 0>(m, n, i0, j0, alpha, c, ldc, accumulate, c_buffer);
      if (right) {
        store_c_tile<Tiles, 1>(m, n, i0, j0 + kTileCols, alpha, c, ldc, accumulate, c_buffer);
      }
      if (lower) {
        store_c_tile<Tiles, 2>(m, n, i0 + kTileRows, j0, alpha, c, ldc, accumulate, c_buffer);
      }
      if (lower && right) {
        store_c_tile<Tiles, 3>(m, n, i0 + kTileRows, j0 + kTileCols, alpha, c, ldc, accumulate,
                               c_buffer);
      }
    }
  }
  Tiles::release();
}

}  // namespace
}  // namespace llm_utils::cpu::amx

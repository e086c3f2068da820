#pragma once
// The register layout of mma.sync.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
// floating point type") and the fragment loads of the forward kernel, written once for the
// device and the host: tests/test_cuda_layout.cpp runs them for all 32 lanes on the CPU against
// a plain matrix product, so the index arithmetic is checked without a GPU.
//
// With g = lane / 4 and t = lane % 4 (PTX's groupID and threadID_in_group):
//   A (16 x 16, row-major), 4 registers of two 16-bit elements, element `half` of register r:
//     row g + 8 (r % 2), column 2 t + half + 8 (r / 2);
//   B (16 x 8, "col": k down, n across), 2 registers: row (k) 2 t + half + 8 r, column (n) g;
//   C, D (16 x 8, float32), 4 elements: row g + 8 (e / 2), column 2 t + e % 2.
// So the C fragments of two neighbouring 8-column tiles of S = Q K^T are, element for element,
// the A fragment of the 16-column block of P that P V needs (FlashAttention-2's register reuse).

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LLM_UTILS_HD __host__ __device__ __forceinline__
#else
#define LLM_UTILS_HD inline
#endif

namespace llm_utils::cuda_kernels::mma {

struct Coord {
  int row;
  int col;
};

LLM_UTILS_HD Coord a_coord(int lane, int reg, int half) {
  return {lane / 4 + 8 * (reg % 2), 2 * (lane % 4) + half + 8 * (reg / 2)};
}
LLM_UTILS_HD Coord b_coord(int lane, int reg, int half) {
  return {2 * (lane % 4) + half + 8 * reg, lane / 4};
}
LLM_UTILS_HD Coord c_coord(int lane, int element) {
  return {lane / 4 + 8 * (element / 2), 2 * (lane % 4) + element % 2};
}

// Two 16-bit elements packed into one register, `lo` in the low half (S: the storage type,
// 2 bytes; uint16_t on the host).
template <typename S>
LLM_UTILS_HD uint32_t pack_bits(S lo, S hi) {
  static_assert(sizeof(S) == 2, "16-bit elements");
  uint16_t l, h;
  memcpy(&l, &lo, 2);
  memcpy(&h, &hi, 2);
  return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
}

/// A fragment of the 16 x 16 block at `base` of a row-major matrix with leading dimension ld
/// (Q rows: row r, column c at base[r * ld + c]).
template <typename S>
LLM_UTILS_HD void load_a(const S* base, int ld, int lane, uint32_t (&a)[4]) {
  for (int r = 0; r < 4; ++r) {
    const Coord c = a_coord(lane, r, 0);
    a[r] = pack_bits(base[c.row * ld + c.col], base[c.row * ld + c.col + 1]);
  }
}

/// B fragment of B = X^T for a 16 x 8 block, X stored row-major with leading dimension ld: B's
/// (k, n) is X[n][k] (K rows for S = Q K^T: k runs along a key's features, n over keys).
template <typename S>
LLM_UTILS_HD void load_b_transposed(const S* base, int ld, int lane, uint32_t (&b)[2]) {
  for (int r = 0; r < 2; ++r) {
    const Coord c = b_coord(lane, r, 0);  // (k, n); k and k + 1 are neighbours in X's row n
    b[r] = pack_bits(base[c.col * ld + c.row], base[c.col * ld + c.row + 1]);
  }
}

/// B fragment of a 16 x 8 block of B itself, row-major with leading dimension ld: (k, n) at
/// base[k * ld + n] (V rows for O = P V: k runs over keys, n along the value's features).
template <typename S>
LLM_UTILS_HD void load_b(const S* base, int ld, int lane, uint32_t (&b)[2]) {
  for (int r = 0; r < 2; ++r) {
    const Coord c0 = b_coord(lane, r, 0), c1 = b_coord(lane, r, 1);
    b[r] = pack_bits(base[c0.row * ld + c0.col], base[c1.row * ld + c1.col]);
  }
}

/// The A fragment of columns [16 kk, 16 kk + 16) of P from the C fragments of S's 8-column
/// tiles 2 kk and 2 kk + 1 (p[tile][element], already exponentiated), each pair narrowed by
/// `pack` (float, float) -> uint32_t.
template <typename Pack>
LLM_UTILS_HD void a_from_c(const float (&left)[4], const float (&right)[4], Pack pack,
                           uint32_t (&a)[4]) {
  // Register r: rows g (r even) or g + 8 (r odd), columns 2t, 2t + 1 of the left tile (r < 2)
  // or of the right one: C elements 0, 1 (row g) and 2, 3 (row g + 8).
  a[0] = pack(left[0], left[1]);
  a[1] = pack(left[2], left[3]);
  a[2] = pack(right[0], right[1]);
  a[3] = pack(right[2], right[3]);
}

}  // namespace llm_utils::cuda_kernels::mma

// The CUDA forward's tensor-core fragment loads (src/cuda/mma_layout.hpp), run for all 32 lanes
// on the CPU: an emulated mma.sync.m16n8k16, written here from the PTX ISA's description of its
// fragments, fed by the kernel's own load functions, must give the plain matrix products the
// kernel needs (S = Q K^T from Q and K rows, O = P V from V rows, and P's A fragments built from
// S's C fragments). No GPU needed: this checks the index arithmetic everywhere.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "cuda/mma_layout.hpp"

namespace llm_utils::cuda_kernels::mma {
namespace {

// 16-bit "elements" that are small integers, so products and sums are exact in float.
uint16_t element(int value) {
  return static_cast<uint16_t>(value & 0xFFFF);
}
float value_of(uint16_t bits) {
  return static_cast<float>(static_cast<int16_t>(bits));
}
uint16_t low(uint32_t reg) {
  return static_cast<uint16_t>(reg & 0xFFFF);
}
uint16_t high(uint32_t reg) {
  return static_cast<uint16_t>(reg >> 16);
}

// The PTX ISA's m16n8k16 fragments, restated independently of mma_layout.hpp (groupID g =
// lane >> 2, threadID_in_group t = lane % 4):
//   A: a0, a1 (register 0) row g, cols 2t, 2t+1; a2, a3 (register 1) row g+8; a4..a7
//      (registers 2, 3) the same rows, cols + 8.
//   B: b0, b1 (register 0) rows 2t, 2t+1, col g; b2, b3 (register 1) rows + 8.
//   C: c0, c1 row g, cols 2t, 2t+1; c2, c3 row g+8.
struct Fragments {
  uint32_t a[32][4];
  uint32_t b[32][2];
};

// D (16 x 8) = A B from the 32 lanes' fragments, as the hardware would.
void emulated_mma(const uint32_t (&a)[32][4], const uint32_t (&b)[32][2], float (&d)[16][8]) {
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane % 4;
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; ++r) {
      A[rows[r]][cols[r]] = value_of(low(a[lane][r]));
      A[rows[r]][cols[r] + 1] = value_of(high(a[lane][r]));
    }
    for (int r = 0; r < 2; ++r) {
      B[2 * t + 8 * r][g] = value_of(low(b[lane][r]));
      B[2 * t + 8 * r + 1][g] = value_of(high(b[lane][r]));
    }
  }
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      float sum = 0;
      for (int k = 0; k < 16; ++k) sum += A[i][k] * B[k][j];
      d[i][j] = sum;
    }
  }
}

// Where lane `lane`'s accumulator element e lives, per the PTX ISA.
void c_position(int lane, int e, int& row, int& col) {
  row = (lane >> 2) + 8 * (e / 2);
  col = 2 * (lane % 4) + e % 2;
}

TEST(CudaLayout, CoordinatesAreThePtxFragments) {
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 4; ++e) {
      int row, col;
      c_position(lane, e, row, col);
      EXPECT_EQ(c_coord(lane, e).row, row);
      EXPECT_EQ(c_coord(lane, e).col, col);
    }
  }
}

TEST(CudaLayout, QueriesAndKeyRowsGiveQTimesKTransposed) {
  // Q (16 x 16) and K (8 keys x 16 features) in row-major storage with padded rows, as the
  // kernel stages them in shared memory.
  constexpr int ld = 24;
  std::vector<uint16_t> q(16 * ld), k(8 * ld);
  for (int i = 0; i < 16; ++i) {
    for (int c = 0; c < 16; ++c) q[i * ld + c] = element((i * 7 + c * 3) % 11 - 5);
  }
  for (int j = 0; j < 8; ++j) {
    for (int c = 0; c < 16; ++c) k[j * ld + c] = element((j * 5 + c * 2) % 9 - 4);
  }
  Fragments f;
  for (int lane = 0; lane < 32; ++lane) {
    load_a(q.data(), ld, lane, f.a[lane]);
    load_b_transposed(k.data(), ld, lane, f.b[lane]);
  }
  float s[16][8];
  emulated_mma(f.a, f.b, s);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      float want = 0;
      for (int c = 0; c < 16; ++c) want += value_of(q[i * ld + c]) * value_of(k[j * ld + c]);
      EXPECT_EQ(s[i][j], want) << i << ", " << j;
    }
  }
}

TEST(CudaLayout, ProbabilitiesFromAccumulatorsTimesValueRowsGivePTimesV) {
  // P (16 x 16) as it comes out of two 8-column S tiles (C fragments), V (16 keys x 8 features)
  // in row-major storage: the A fragments a_from_c builds and load_b's B give P V.
  constexpr int ld = 16;
  float p[16][16];
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) p[i][j] = static_cast<float>((i * 3 + j * 5) % 7 - 3);
  }
  std::vector<uint16_t> v(16 * ld);
  for (int j = 0; j < 16; ++j) {
    for (int c = 0; c < 8; ++c) v[j * ld + c] = element((j + 2 * c) % 5 - 2);
  }
  const auto pack = [](float lo, float hi) {
    return pack_bits(element(static_cast<int>(lo)), element(static_cast<int>(hi)));
  };
  Fragments f;
  for (int lane = 0; lane < 32; ++lane) {
    float left[4], right[4];  // this lane's C elements of S's tiles 0 (keys 0-7) and 1 (8-15)
    for (int e = 0; e < 4; ++e) {
      left[e] = p[c_coord(lane, e).row][c_coord(lane, e).col];
      right[e] = p[c_coord(lane, e).row][8 + c_coord(lane, e).col];
    }
    a_from_c(left, right, pack, f.a[lane]);
    load_b(v.data(), ld, lane, f.b[lane]);
  }
  float o[16][8];
  emulated_mma(f.a, f.b, o);
  for (int i = 0; i < 16; ++i) {
    for (int c = 0; c < 8; ++c) {
      float want = 0;
      for (int j = 0; j < 16; ++j) want += p[i][j] * value_of(v[j * ld + c]);
      EXPECT_EQ(o[i][c], want) << i << ", " << c;
    }
  }
}

}  // namespace
}  // namespace llm_utils::cuda_kernels::mma

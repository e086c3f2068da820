// The AMX-BF16 peak loop (compiled with -mamx-tile -mamx-bf16; called only when the kernels run
// the amx table, whose check asked Linux for the tile state): four independent tdpbf16ps chains
// on the register plan of src/cpu/amx_gemm.hpp, each instruction 16 x 16 outputs x 32
// multiply-adds, operands loaded once.

#include <cstdint>

#include "cpu/amx_tiles.hpp"
#include "fma_peak.hpp"

namespace llm_utils::bench {

double dpbf16_loop_amx(long long iterations, float* sink) {
  using Tiles = cpu::amx::HardwareTiles;
  Tiles::configure();
  // Operands of 2^-12 (bfloat16 0x3980): each instruction adds 32 * 2^-24 to an output, about 5
  // over a run: no overflow, no subnormals (which tdpbf16ps would flush).
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
  // One tdpbf16ps is 16 times the work of one vdpbf16ps step of the other loops: as many
  // instructions per iteration, a sixteenth of the iterations.
  const long long rounds = iterations / 16;
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
  *sink = out[0][0] + out[1][0] + out[2][0] + out[3][0];
  return 4.0 * 16.0 * 16.0 * 32.0 * 2.0 * static_cast<double>(rounds);
}

}  // namespace llm_utils::bench

// The AMX-BF16 peak loop (compiled with -mamx-tile -mamx-bf16; called only when the kernels run
// the amx table, whose check asked Linux for the tile state): src/cpu/amx_tiles.hpp's
// dot_rounds_from_registers.

#include "cpu/amx_tiles.hpp"
#include "fma_peak.hpp"

namespace llm_utils::bench {

double dpbf16_loop_amx(long long iterations, float* sink) {
  // One tdpbf16ps is 16 times the work of one vdpbf16ps step of the other loops: as many
  // instructions per iteration, a sixteenth of the iterations.
  const long long rounds = iterations / 16;
  *sink = cpu::amx::dot_rounds_from_registers(rounds);
  return cpu::amx::kDotRoundFlops * static_cast<double>(rounds);
}

}  // namespace llm_utils::bench

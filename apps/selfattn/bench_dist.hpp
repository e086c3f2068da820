#pragma once
// selfattn bench --seq-parallel ring|ulysses: the attention core over the ranks of an mpirun
// job (bench_dist.cpp, built with MPI; without it the option is refused).

#include <cstdint>
#include <ostream>
#include <string>

namespace selfattn {

struct SeqParallelBench {
  std::string strategy;  // ring | ulysses
  std::string layout = "zigzag";
  int64_t batch = 1, heads = 1, seq = 4096, head_dim = 64;
  bool causal = false, backward = false, json = false;
  int repeat = 5;
};

// Thrown on the ranks other than 0 after an error every rank saw (rank 0 reports it): main
// exits with this status and prints nothing.
struct QuietExit {
  int status = 1;
};

void bench_sequence_parallel(const SeqParallelBench& b, std::ostream& out);

}  // namespace selfattn

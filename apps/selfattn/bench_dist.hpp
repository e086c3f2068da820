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

struct DataParallelBench {
  int64_t batch = 8, seq = 1024, d_in = 768, d_out = 768, heads = 12;  // batch: per rank
  int repeat = 5;
  bool json = false;
};

/// selfattn bench --module mha --data-parallel: a MultiHeadAttention training step (forward,
/// backward, gradients averaged over the ranks) with the sums started during backward
/// (Module::set_gradient_hook) and, for comparison, after it.
void bench_data_parallel(const DataParallelBench& b, std::ostream& out);

}  // namespace selfattn

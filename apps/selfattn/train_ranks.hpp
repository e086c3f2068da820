#pragma once
// The ranks `selfattn train` runs on: under mpirun (in a build with MPI) every rank takes its
// equal part of each batch and the gradients are averaged over the ranks (data parallel), so
// the trained weights are those of one process on the whole batch; otherwise one rank.

#include <functional>
#include <memory>

#include "llm_utils/llm_utils.hpp"

namespace selfattn {

class TrainRanks {
 public:
  virtual ~TrainRanks() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  /// Gives every rank rank 0's parameter values and prepares the gradient averaging.
  virtual void start(const llm_utils::NamedParameters& /*parameters*/) {}
  /// The gradients averaged over the ranks (in place).
  virtual void average_gradients() {}
  /// The mean over the ranks of each rank's `value`.
  virtual double mean(double value) { return value; }
  /// Runs `body` with the ranks' error rules: an error every rank saw is reported by rank 0
  /// alone (QuietExit on the others); a CommError ends the job.
  virtual void run(const std::function<void()>& body) { body(); }
};

/// MPI ranks when this process was started by mpirun and the build has MPI, else one rank.
std::unique_ptr<TrainRanks> train_ranks();

}  // namespace selfattn

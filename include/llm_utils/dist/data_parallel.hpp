#pragma once
/// \file data_parallel.hpp
/// Data-parallel training: every rank runs the same module on its own part of the batch, then
/// the gradients are averaged over the ranks, so that every rank's optimizer takes the step the
/// whole batch would give (with equal parts and a loss that is a mean over the batch).
///
/// The gradients go in buckets of about `bucket_bytes`, from the last parameter to the first
/// (the order a backward finishes them in), each bucket one MPI_Iallreduce, started in bucket
/// order on every rank (as MPI requires): start() launches the buckets up to the first whose
/// parameters are not all ready, so a caller
/// that knows when a module's last gradients are final (or a model of several modules) can
/// overlap the sums with the rest of its backward; finish() waits and divides.
///
/// Example:
/// \code
///   dist::broadcast_parameters(world, model.named_parameters());   // the same start everywhere
///   dist::GradientAverager averager(world, model.named_parameters());
///   model.backward(dy);
///   averager.average();        // start() then finish()
///   optimizer.step();
/// \endcode

#include <cstdint>
#include <vector>

#include "llm_utils/dist/communicator.hpp"
#include "llm_utils/nn/parameter.hpp"

namespace llm_utils::dist {

/// What finish() writes: the mean over the ranks (data parallel: each rank's gradient is of
/// its own mean loss) or the sum (sequence parallel: each rank's is its tokens' share).
enum class GradientReduction { mean, sum };

/// Copies rank `root`'s parameter values to every rank (shapes must agree; ArgumentError on
/// every rank if they do not).
void broadcast_parameters(const Communicator& comm, const NamedParameters& parameters,
                          int root = 0);

class GradientAverager {
 public:
  /// Buckets over the parameters that require a gradient. Every rank must pass the same
  /// parameters (names and shapes, checked on every rank at construction).
  GradientAverager(Communicator comm, NamedParameters parameters,
                   int64_t bucket_bytes = int64_t{4} << 20);
  GradientAverager(Communicator comm, NamedParameters parameters, GradientReduction reduction,
                   int64_t bucket_bytes = int64_t{4} << 20);
  ~GradientAverager();
  GradientAverager(const GradientAverager&) = delete;
  GradientAverager& operator=(const GradientAverager&) = delete;

  /// Starts the sums of the buckets not started yet, in order, up to the first with a parameter
  /// that has no gradient yet (one that still has none at finish() counts as zeros), and lets
  /// MPI move the sums already started (Open MPI progresses them only inside MPI calls, so
  /// calling this between parts of a backward is what overlaps them with it).
  /// Module::set_gradient_hook([&] { averager.start(); }) does that during backward.
  void start();
  /// Buckets started since the last finish() (for tests and reports).
  int64_t buckets_started() const;
  /// Starts what is left, waits for every bucket and writes the averages into the gradients:
  /// the sum over the ranks that have one, divided by the number of ranks (not divided, with
  /// GradientReduction::sum). A parameter that
  /// got a gradient on no rank keeps none (as PyTorch's None: Linear4/5's W_query and W_key).
  void finish();
  /// start() and finish().
  void average() {
    start();
    finish();
  }
  int64_t bucket_count() const;

 private:
  struct Bucket;
  void launch(Bucket& bucket);
  Communicator comm_;
  NamedParameters parameters_;
  GradientReduction reduction_ = GradientReduction::mean;
  std::vector<Bucket> buckets_;
};

}  // namespace llm_utils::dist

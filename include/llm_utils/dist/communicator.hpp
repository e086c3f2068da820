#pragma once
/// \file communicator.hpp
/// The ranks of an MPI job as the distributed kernels see them (llm_utils::dist, built when
/// MPI is found; target llm_utils::dist). No MPI type appears here: llm_utils/dist/mpi.hpp wraps
/// an MPI_Comm of your own.
///
/// Every wait is bounded: a rank that fails or stops answering makes the others throw CommError
/// after `timeout()` seconds instead of hanging. Arguments are checked on every rank and the
/// verdict is shared before any message moves, so a bad argument on one rank makes every rank
/// throw the same ArgumentError ("rank 2: ..."), none of them left waiting.
///
/// Example:
/// \code
///   llm_utils::dist::Environment mpi(&argc, &argv);      // MPI_Init_thread .. MPI_Finalize
///   llm_utils::dist::Communicator world = llm_utils::dist::Communicator::world();
///   if (world.rank() == 0) std::printf("%d ranks\n", world.size());
/// \endcode

#include <cstdint>
#include <memory>
#include <span>

#include "llm_utils/error.hpp"

namespace llm_utils::dist {

/// A peer failed or did not answer within the communicator's timeout, or MPI reported an
/// error. The communicator is unusable afterwards (its messages may be half delivered): end the
/// job (Communicator::abort).
class CommError : public Error {
 public:
  using Error::Error;
};

/// MPI started for the lifetime of this object (MPI_Init_thread with MPI_THREAD_FUNNELED: the
/// kernels' OpenMP threads never call MPI) and finalized by its destructor. Does nothing when
/// MPI is already initialized by someone else.
class Environment {
 public:
  Environment(int* argc, char*** argv);
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

 private:
  bool owns_ = false;
};

/// Whether MPI has been initialized (and not finalized) in this process.
bool mpi_initialized();

/// A group of ranks: a duplicate of an MPI communicator, so the library's messages never match
/// the caller's. Cheap to copy (copies share the duplicate).
class Communicator {
 public:
  /// MPI_COMM_WORLD's ranks. Throws StateError when MPI is not initialized (Environment).
  static Communicator world();

  int rank() const;
  int size() const;

  /// Seconds any one wait may last before CommError. Default 120, or the environment variable
  /// LLM_UTILS_DIST_TIMEOUT (seconds) when set.
  double timeout() const;
  /// Throws ArgumentError unless seconds > 0.
  void set_timeout(double seconds);

  /// `values` summed over the ranks, in place, on every rank (the same bits everywhere).
  void allreduce_sum(std::span<float> values) const;
  /// Waits until every rank has called it.
  void barrier() const;
  /// Ends every rank of the job with `exit_code` (MPI_Abort): what a program does after a
  /// CommError. Does not return.
  [[noreturn]] void abort(int exit_code) const;

  /// The implementation (src/dist/communicator_impl.hpp); not part of the API.
  struct Impl;
  Impl& impl() const { return *impl_; }
  explicit Communicator(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace llm_utils::dist

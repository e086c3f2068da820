#pragma once
// What the distributed kernels share: the duplicated MPI communicator, waits with a deadline,
// and the agreement that turns one rank's bad argument into the same error on every rank.

#include <mpi.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "llm_utils/dist/communicator.hpp"

namespace llm_utils::dist {

struct Communicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;  // our duplicate, errors returned (MPI_ERRORS_RETURN)
  int rank = 0;
  int size = 1;
  double timeout_s = 120.0;
  bool broken = false;  // a wait timed out or MPI failed: its messages may be half delivered

  explicit Impl(MPI_Comm parent);
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // Throws CommError when the communicator is broken.
  void expect_usable(const char* fn) const;
  // Throws CommError (and marks the communicator broken) unless rc is MPI_SUCCESS.
  void check(int rc, const char* fn, const char* call);
  // Completes every request (null ones are skipped) or throws CommError after timeout_s,
  // naming `what` ("the K/V block of step 2 from rank 1"). On a timeout, point-to-point
  // requests are cancelled and freed; a collective's cannot be (MPI forbids it), so it stays
  // pending and may still write its buffers later: a caller whose collective buffer is its own
  // must keep it alive (leak it) when this throws.
  enum class Kind { point_to_point, collective };
  void wait_all(std::span<MPI_Request> requests, const char* fn, const std::string& what,
                Kind kind = Kind::point_to_point);

  // Non-blocking point-to-point transfers of float32 elements (tag 0 unless given).
  MPI_Request isend(const float* data, int64_t count, int to, const char* fn, int tag = 0);
  MPI_Request irecv(float* data, int64_t count, int from, const char* fn, int tag = 0);
};

namespace detail {

// What each rank tells the others before a collective kernel moves any data: whether its own
// checks passed (and if not, the error), and a few numbers (its shard lengths, its shapes) the
// others check against theirs.
struct RankReport {
  static constexpr int kValues = 24;
  enum Failure : int64_t { none = 0, argument = 1, state = 2, other = 3 };
  int64_t failure = none;
  std::array<int64_t, kValues> values{};
  std::array<char, 480> message{};

  void set_failure(Failure kind, const char* what);
};

// Every rank's report, gathered on every rank (bounded). When some rank failed, every rank
// throws the error of the lowest such rank, as "fn: rank r: message", with its type
// (ArgumentError, StateError or Error).
std::vector<RankReport> agree(Communicator::Impl& comm, const RankReport& mine, const char* fn);

// Runs `local_checks` (which may throw llm_utils errors and fill `mine.values`), then agree():
// the checks' errors become every rank's error.
template <typename Checks>
std::vector<RankReport> checked_on_every_rank(Communicator::Impl& comm, const char* fn,
                                              Checks&& local_checks) {
  RankReport mine;
  try {
    local_checks(mine);
  } catch (const ArgumentError& e) {
    mine.set_failure(RankReport::argument, e.what());
  } catch (const StateError& e) {
    mine.set_failure(RankReport::state, e.what());
  } catch (const Error& e) {
    mine.set_failure(RankReport::other, e.what());
  }
  return agree(comm, mine, fn);
}

// Throws ArgumentError "fn: <message>" on every rank (the condition must be computed from the
// agreed reports, so that every rank reaches the same verdict).
[[noreturn]] void fail_everywhere(const char* fn, const std::string& message);

}  // namespace detail
}  // namespace llm_utils::dist

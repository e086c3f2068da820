// Communicator, Environment and the bounded waits (communicator.hpp, communicator_impl.hpp).

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "dist/communicator_impl.hpp"
#include "llm_utils/dist/mpi.hpp"

namespace llm_utils::dist {
namespace {

double default_timeout() {
  const char* env = std::getenv("LLM_UTILS_DIST_TIMEOUT");
  if (env == nullptr || *env == '\0') return 120.0;
  char* end = nullptr;
  const double s = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(s > 0.0)) {
    throw ArgumentError(std::string("LLM_UTILS_DIST_TIMEOUT must be a positive number of ") +
                        "seconds, got '" + env + "'");
  }
  return s;
}

std::string mpi_error_string(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  return std::string(text, static_cast<size_t>(length));
}

int checked_count(int64_t count, const char* fn) {
  if (count < 0 || count > INT_MAX) {
    throw ArgumentError(std::string(fn) + ": a message of " + std::to_string(count) +
                        " elements is beyond MPI's int count");
  }
  return static_cast<int>(count);
}

}  // namespace

bool mpi_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized != 0 && finalized == 0;
}

Environment::Environment(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized != 0) return;
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    throw CommError("MPI_Init_thread failed");
  }
  owns_ = true;
}

Environment::~Environment() {
  if (owns_ && mpi_initialized()) MPI_Finalize();
}

Communicator::Impl::Impl(MPI_Comm parent) : timeout_s(default_timeout()) {
  if (!mpi_initialized()) {
    throw StateError("dist: MPI is not initialized (create a llm_utils::dist::Environment first)");
  }
  if (MPI_Comm_dup(parent, &comm) != MPI_SUCCESS) throw CommError("dist: MPI_Comm_dup failed");
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
}

Communicator::Impl::~Impl() {
  // A broken communicator may still have requests in flight: leave it to MPI_Finalize/Abort.
  if (comm != MPI_COMM_NULL && !broken && mpi_initialized()) MPI_Comm_free(&comm);
}

void Communicator::Impl::expect_usable(const char* fn) const {
  if (broken) {
    throw CommError(std::string(fn) + ": the communicator is broken by an earlier failure " +
                    "(a timeout or an MPI error); end the job");
  }
}

void Communicator::Impl::check(int rc, const char* fn, const char* call) {
  if (rc == MPI_SUCCESS) return;
  broken = true;
  throw CommError(std::string(fn) + ": rank " + std::to_string(rank) + ": " + call +
                  " failed: " + mpi_error_string(rc));
}

void Communicator::Impl::wait_all(std::span<MPI_Request> requests, const char* fn,
                                  const std::string& what, Kind kind) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (int spins = 0;; ++spins) {
    int done = 0;
    check(
        MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE),
        fn, "MPI_Testall");
    if (done != 0) return;
    if (Clock::now() > deadline) break;
    // Spin briefly (a message due any moment), then give the core to the other ranks.
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  broken = true;
  if (kind == Kind::point_to_point) {
    // A cancelled receive completes at once and will not write its buffer; a send that cannot
    // be cancelled is freed (the message may still go out).
    for (MPI_Request& r : requests) {
      if (r == MPI_REQUEST_NULL) continue;
      MPI_Cancel(&r);
      int done = 0;
      MPI_Test(&r, &done, MPI_STATUS_IGNORE);
      if (done == 0) MPI_Request_free(&r);
    }
  }
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", timeout_s);
  throw CommError(std::string(fn) + ": rank " + std::to_string(rank) + " waited " + seconds +
                  " s for " + what + " (a rank failed or is stuck; LLM_UTILS_DIST_TIMEOUT sets " +
                  "the limit)");
}

MPI_Request Communicator::Impl::isend(const float* data, int64_t count, int to, const char* fn,
                                      int tag) {
  MPI_Request r = MPI_REQUEST_NULL;
  check(MPI_Isend(data, checked_count(count, fn), MPI_FLOAT, to, tag, comm, &r), fn, "MPI_Isend");
  return r;
}

MPI_Request Communicator::Impl::irecv(float* data, int64_t count, int from, const char* fn,
                                      int tag) {
  MPI_Request r = MPI_REQUEST_NULL;
  check(MPI_Irecv(data, checked_count(count, fn), MPI_FLOAT, from, tag, comm, &r), fn, "MPI_Irecv");
  return r;
}

Communicator Communicator::world() {
  return Communicator(std::make_shared<Impl>(MPI_COMM_WORLD));
}

Communicator from_mpi(MPI_Comm comm) {
  return Communicator(std::make_shared<Communicator::Impl>(comm));
}

int Communicator::rank() const {
  return impl_->rank;
}
int Communicator::size() const {
  return impl_->size;
}
double Communicator::timeout() const {
  return impl_->timeout_s;
}

void Communicator::set_timeout(double seconds) {
  if (!(seconds > 0.0)) {
    throw ArgumentError("Communicator::set_timeout: seconds must be > 0, got " +
                        std::to_string(seconds));
  }
  impl_->timeout_s = seconds;
}

void Communicator::allreduce_sum(std::span<float> values) const {
  constexpr const char* fn = "Communicator::allreduce_sum";
  impl_->expect_usable(fn);
  MPI_Request r = MPI_REQUEST_NULL;
  impl_->check(MPI_Iallreduce(MPI_IN_PLACE, values.data(), checked_count(values.size(), fn),
                              MPI_FLOAT, MPI_SUM, impl_->comm, &r),
               fn, "MPI_Iallreduce");
  impl_->wait_all({&r, 1}, fn, "the sum of every rank's values", Impl::Kind::collective);
}

void Communicator::barrier() const {
  constexpr const char* fn = "Communicator::barrier";
  impl_->expect_usable(fn);
  MPI_Request r = MPI_REQUEST_NULL;
  impl_->check(MPI_Ibarrier(impl_->comm, &r), fn, "MPI_Ibarrier");
  impl_->wait_all({&r, 1}, fn, "every rank to reach the barrier", Impl::Kind::collective);
}

void Communicator::abort(int exit_code) const {
  MPI_Abort(impl_->comm == MPI_COMM_NULL ? MPI_COMM_WORLD : impl_->comm, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

namespace detail {

void RankReport::set_failure(Failure kind, const char* what) {
  failure = kind;
  std::strncpy(message.data(), what, message.size() - 1);
  message.back() = '\0';
}

std::vector<RankReport> agree(Communicator::Impl& comm, const RankReport& mine, const char* fn) {
  comm.expect_usable(fn);
  // The send and receive buffers live on the heap: if the wait times out, the gather stays
  // pending (a collective cannot be cancelled) and both are left to it, leaked.
  auto sent = std::make_unique<RankReport>(mine);
  auto gathered = std::make_unique<std::vector<RankReport>>(static_cast<size_t>(comm.size));
  MPI_Request r = MPI_REQUEST_NULL;
  comm.check(MPI_Iallgather(sent.get(), sizeof(RankReport), MPI_BYTE, gathered->data(),
                            sizeof(RankReport), MPI_BYTE, comm.comm, &r),
             fn, "MPI_Iallgather");
  try {
    comm.wait_all({&r, 1}, fn, "every rank's argument check", Communicator::Impl::Kind::collective);
  } catch (const CommError&) {
    (void)sent.release();
    (void)gathered.release();
    throw;
  }
  std::vector<RankReport> all = std::move(*gathered);
  for (int i = 0; i < comm.size; ++i) {
    const RankReport& report = all[static_cast<size_t>(i)];
    if (report.failure == RankReport::none) continue;
    // The message already starts with fn (the rank's own check named it): keep one copy.
    std::string message = report.message.data();
    const std::string prefix = std::string(fn) + ": ";
    if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
    message = prefix + "rank " + std::to_string(i) + ": " + message;
    if (report.failure == RankReport::argument) throw ArgumentError(message);
    if (report.failure == RankReport::state) throw StateError(message);
    throw Error(message);
  }
  return all;
}

void fail_everywhere(const char* fn, const std::string& message) {
  throw ArgumentError(std::string(fn) + ": " + message);
}

}  // namespace detail
}  // namespace llm_utils::dist

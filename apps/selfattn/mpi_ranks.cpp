// launched_by_mpirun and run_on_every_rank (mpi_ranks.hpp).

#include "mpi_ranks.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_dist.hpp"
#include "cli.hpp"
#include "llm_utils/dist.hpp"

namespace selfattn {

bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

void run_on_every_rank(const std::function<void()>& body) {
  const llm_utils::dist::Communicator world = llm_utils::dist::Communicator::world();
  std::string failure;  // this rank's error, if any
  bool failed = false;
  try {
    body();
  } catch (const llm_utils::dist::CommError& e) {
    std::fprintf(stderr, "error: rank %d: %s\n", world.rank(), e.what());
    world.abort(1);
  } catch (const llm_utils::Error& e) {
    failed = true;
    failure = one_line(e.what());
  }
  // Every rank says whether it failed; the lowest failing rank prints its error (an error every
  // rank saw, the collective checks', is then rank 0's), and only after that does any rank
  // exit: mpirun kills the job at the first non-zero exit.
  std::vector<float> failed_ranks(static_cast<size_t>(world.size()), 0.0f);
  failed_ranks[static_cast<size_t>(world.rank())] = failed ? 1.0f : 0.0f;
  world.allreduce_sum(failed_ranks);
  const auto first = std::find(failed_ranks.begin(), failed_ranks.end(), 1.0f);
  if (first == failed_ranks.end()) return;
  if (first - failed_ranks.begin() == world.rank()) {
    const bool everyone = std::count(failed_ranks.begin(), failed_ranks.end(), 1.0f) ==
                          static_cast<std::ptrdiff_t>(failed_ranks.size());
    if (everyone || world.size() == 1) {
      std::fprintf(stderr, "error: %s\n", failure.c_str());
    } else {
      std::fprintf(stderr, "error: rank %d: %s\n", world.rank(), failure.c_str());
    }
    std::fflush(stderr);
  }
  world.barrier();
  throw QuietExit{1};
}

}  // namespace selfattn

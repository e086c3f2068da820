#pragma once
// What the CLI's commands share under mpirun (builds with MPI only).

#include <functional>

namespace selfattn {

/// Whether an MPI launcher started this process (Open MPI's or a PMI's rank variables).
bool launched_by_mpirun();

/// Runs `body` on this rank (MPI initialized). Afterwards the ranks tell each other whether
/// they failed with an llm_utils::Error: the lowest failing rank prints the one `error:` line
/// (an error every rank saw, as the collective checks make sure, is rank 0's; one rank's alone
/// is prefixed "rank r:"), and every rank exits 1 (QuietExit) after a barrier. A CommError
/// prints this rank's error and ends the job at once (MPI_Abort).
void run_on_every_rank(const std::function<void()>& body);

}  // namespace selfattn

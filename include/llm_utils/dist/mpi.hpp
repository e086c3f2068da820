#pragma once
/// \file mpi.hpp
/// A Communicator over an MPI communicator of your own (this header includes <mpi.h>).
///
/// Example:
/// \code
///   MPI_Comm half;
///   MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
///   llm_utils::dist::Communicator comm = llm_utils::dist::from_mpi(half);
/// \endcode

#include <mpi.h>

#include "llm_utils/dist/communicator.hpp"

namespace llm_utils::dist {

/// The ranks of `comm`, duplicated (MPI_Comm_dup; `comm` stays yours).
Communicator from_mpi(MPI_Comm comm);

}  // namespace llm_utils::dist

#pragma once
/// \file dist.hpp
/// llm_utils::dist, the distributed part of the library (built when MPI is found; link
/// llm_utils::dist): communicators with bounded waits, sequence shards, ring and Ulysses
/// attention, data-parallel gradient averaging. docs/distributed.md explains the algorithms and
/// their cost model.

#include "llm_utils/dist/communicator.hpp"
#include "llm_utils/dist/data_parallel.hpp"
#include "llm_utils/dist/sequence_parallel.hpp"
#include "llm_utils/dist/sequence_shards.hpp"

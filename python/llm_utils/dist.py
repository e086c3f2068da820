"""llm_utils.dist: attention over the ranks of an ``mpirun`` job (docs/distributed.md), in
builds with MPI. Run a script with ``mpirun -np 4 /usr/bin/python3 script.py``::

    import numpy as np
    import llm_utils
    from llm_utils import dist

    world = dist.Communicator.world()
    mha = llm_utils.MultiHeadAttention(64, 64, 4096, 0.0, num_heads=8)
    dist.broadcast_parameters(world, mha)           # the same weights everywhere
    dist.sequence_parallel(mha, world)              # ring attention over the ranks
    x_local = dist.shard_sequence(x, 1, world.size, world.rank)
    y_local = mha(x_local)                          # this rank's tokens' outputs
    dx_local = mha.backward(dy_local)
    dist.GradientAverager(world, mha, reduction="sum").average()

Also ``attention_forward`` / ``attention_backward`` on sequence shards of q, k, v (ring or
Ulysses), ``gather_sequence``, ``Communicator.allreduce_sum`` and data-parallel averaging
(``GradientAverager(world, module)``). Every wait is bounded (``CommError`` after
``Communicator.timeout`` seconds); a bad argument on one rank raises the same ValueError on
every rank.
"""

from . import _core

if not hasattr(_core, "dist"):
    raise ImportError("llm_utils.dist needs a build with MPI (libopenmpi-dev): this one has none")

CommError = _core.dist.CommError
Communicator = _core.dist.Communicator
GradientAverager = _core.dist.GradientAverager
attention_backward = _core.dist.attention_backward
attention_forward = _core.dist.attention_forward
broadcast_parameters = _core.dist.broadcast_parameters
gather_sequence = _core.dist.gather_sequence
init = _core.dist.init
local = _core.dist.local
sequence_parallel = _core.dist.sequence_parallel
shard_sequence = _core.dist.shard_sequence

__all__ = ["CommError", "Communicator", "GradientAverager", "attention_backward",
           "attention_forward", "broadcast_parameters", "gather_sequence", "init", "local",
           "sequence_parallel", "shard_sequence"]

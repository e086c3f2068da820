"""Run under mpirun by test_dist.py: llm_utils.dist on this rank's shards against PyTorch (the
whole sequence, plain autograd ops) and against one process's MultiHeadAttention. Exits non-zero
with a message on the first mismatch; rank 0 prints "ok P of P ranks" otherwise."""

import sys

import numpy as np
import torch

import llm_utils
from llm_utils import dist

world = dist.Communicator.world()
P, me = world.size, world.rank
TOL = 1e-5


def close(what, actual, expected):
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(np.asarray(actual, np.float64) - expected).max()) / scale
    if not err <= TOL:
        sys.exit(f"rank {me}: {what}: error {err:.3g} > {TOL}")


def torch_attention(q, k, v, causal, scale):
    """out, lse and (dq, dk, dv) for dout, by autograd on the materialised softmax."""
    s = (q @ k.transpose(-1, -2)) * scale
    if causal:
        n, m = s.shape[-2], s.shape[-1]
        s = s.masked_fill(torch.ones(n, m, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


rng = np.random.default_rng(3)
for strategy in ("ring", "ulysses"):
    for causal in (False, True):
        q, k, v, dout = (rng.uniform(-1, 1, (1, 4, 53, 16)).astype(np.float32) for _ in range(4))
        tq, tk, tv = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (q, k, v))
        out_t, lse_t = torch_attention(tq, tk, tv, causal, 0.25)
        out_t.backward(torch.from_numpy(dout.astype(np.float64)))

        def shard(a):
            return dist.shard_sequence(a, 2, P, me)

        out, lse = dist.attention_forward(world, shard(q), shard(k), shard(v), causal=causal,
                                          scale=0.25, strategy=strategy)
        dq, dk, dv = dist.attention_backward(world, shard(q), shard(k), shard(v), out, lse,
                                             shard(dout), causal=causal, scale=0.25,
                                             strategy=strategy)
        name = f"{strategy} causal={causal}"
        for what, ours, theirs in (("out", out, out_t), ("lse", lse, lse_t),
                                   ("dq", dq, tq.grad), ("dk", dk, tk.grad), ("dv", dv, tv.grad)):
            close(f"{name} {what}", dist.gather_sequence(world, ours, 2),
                  theirs.detach().numpy())

# MultiHeadAttention over the split sequence against one process's.
llm_utils.manual_seed(5)
whole = llm_utils.MultiHeadAttention(16, 32, 64, 0.0, num_heads=4, qkv_bias=True)
llm_utils.manual_seed(5)
split = llm_utils.MultiHeadAttention(16, 32, 64, 0.0, num_heads=4, qkv_bias=True)
dist.broadcast_parameters(world, split)
dist.sequence_parallel(split, world)
x = rng.uniform(-1, 1, (2, 41, 16)).astype(np.float32)
dy = rng.uniform(-1, 1, (2, 41, 32)).astype(np.float32)
y, dx = whole(x), None
dx = whole.backward(dy)
y_l = split(dist.shard_sequence(x, 1, P, me))
dx_l = split.backward(dist.shard_sequence(dy, 1, P, me))
dist.GradientAverager(world, split, reduction="sum").average()
close("mha out", dist.gather_sequence(world, y_l, 1), y)
close("mha dx", dist.gather_sequence(world, dx_l, 1), dx)
for (name, p), (_, q) in zip(split.named_parameters(), whole.named_parameters()):
    close(f"mha {name}.grad", p.grad, q.grad)

# A bad argument on one rank is the same ValueError on every rank.
try:
    n_local = dist.shard_sequence(np.zeros((8 * P, 1)), 0, P, me).shape[0]
    good = np.zeros((1, 4, n_local, 16), np.float32)
    q_bad = np.zeros((1, 4, n_local, 8 if me == P - 1 else 16), np.float32)  # d != k's d
    dist.attention_forward(world, q_bad, good, good)
    sys.exit(f"rank {me}: no error for a bad shape on rank {P - 1}")
except ValueError as e:
    if f"rank {P - 1}:" not in str(e):
        sys.exit(f"rank {me}: the error does not name rank {P - 1}: {e}")
# Every rank got here: rank 0 says so for all (the ranks' output would interleave).
passed = int(world.allreduce_sum([1.0])[0])
if me == 0:
    print(f"ok {passed} of {P} ranks")

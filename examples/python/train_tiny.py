#!/usr/bin/python3
"""Chapter 3 of "Build a Large Language Model (From Scratch)" with llm_utils instead of torch:
the book's six-token sentence through SelfAttention_Linear, then a few AdamW steps that teach
the module to reproduce the context vectors of a teacher with other weights.

Run it after `make` from the repository root:

    PYTHONPATH=build/python /usr/bin/python3 examples/python/train_tiny.py

Exits non-zero if training does not reduce the loss (CTest runs it).
"""

import sys

import numpy as np

import llm_utils
from llm_utils.optim import AdamW
from llm_utils.selfAttn import SelfAttention_Linear

tokens = ["Your", "journey", "starts", "with", "one", "step"]
inputs = np.array([[0.43, 0.15, 0.89],   # Your     (x^1)
                   [0.55, 0.87, 0.66],   # journey  (x^2)
                   [0.57, 0.85, 0.64],   # starts   (x^3)
                   [0.22, 0.58, 0.33],   # with     (x^4)
                   [0.77, 0.25, 0.10],   # one      (x^5)
                   [0.05, 0.80, 0.55]],  # step     (x^6)
                  dtype=np.float32)

# As in the book: seed 789, then the class with nn.Linear projections.
llm_utils.manual_seed(789)
sa = SelfAttention_Linear(d_in=3, d_out=2)
print(sa)
context = sa(inputs)
print("\ncontext vectors (the book prints [-0.0739, 0.0713] for 'Your'):")
for token, row in zip(tokens, context):
    print(f"  {token:8s} {row[0]:8.4f} {row[1]:8.4f}")
print("\nattention weights of 'journey' over the sentence:")
print("  " + "  ".join(f"{t}={w:.3f}" for t, w in zip(tokens, sa.attn_weights[1])))

# A teacher with other weights gives the targets; the student learns to match them.
llm_utils.manual_seed(123)
teacher = SelfAttention_Linear(3, 2, qkv_bias=True)
target = teacher(inputs)

optimizer = AdamW(sa.parameters(), lr=0.05)
losses = []
print("\ntraining the student toward the teacher's context vectors (mean squared error):")
for step in range(1, 151):
    optimizer.zero_grad()
    out = sa(inputs)
    diff = out - target
    losses.append(float(np.mean(diff ** 2)))
    sa.backward(2.0 * diff / diff.size)  # d(mean((out - target)^2)) / d(out)
    optimizer.step()
    if step == 1 or step % 25 == 0:
        print(f"  step {step:3d}  loss {losses[-1]:.6f}")

for name, p in sa.named_parameters():
    print(f"  {name:15s} grad norm {np.linalg.norm(p.grad):.2e}")

if not losses[-1] < 0.1 * losses[0]:
    sys.exit(f"error: the loss did not decrease enough ({losses[0]:.6f} -> {losses[-1]:.6f})")
print(f"\nloss {losses[0]:.6f} -> {losses[-1]:.6f}")

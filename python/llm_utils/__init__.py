"""llm_utils: the self-attention classes of chapter 3 of Sebastian Raschka's "Build a Large
Language Model (From Scratch)", computed in C++, with the original's Python API on numpy arrays.

Code written for the original runs with torch swapped for numpy::

    import numpy as np
    import llm_utils
    from llm_utils.selfAttn import SelfAttention_Linear

    x = np.array([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                  [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]], np.float32)
    llm_utils.manual_seed(789)              # torch.manual_seed(789)
    sa = SelfAttention_Linear(3, 2)         # the same weights as PyTorch's
    ctx = sa(x)                             # the book's context vectors
    dx = sa.backward(np.ones_like(ctx))     # what loss.backward() would give x

Contents: ``selfAttn`` (the four classes), ``optim`` (SGD, AdamW), ``safetensors`` (save_file,
load_file), ``kernels`` (the fused attention kernels on numpy arrays), ``torch`` (the kernels as
torch.autograd Functions, ``scaled_dot_product_attention`` and the book's modules on torch
Parameters; import it explicitly, it imports torch), and here ``manual_seed``, ``rand``, ``Generator``, ``set_num_threads``, the
book's later classes ``CausalAttention``, ``MultiHeadAttentionWrapper``, ``MultiHeadAttention``,
and ``Module``, the base all seven share (``help(llm_utils.Module)``).

Errors from the library arrive as ValueError (bad shapes and arguments), OSError (files) and
RuntimeError (calls in the wrong state, e.g. backward before forward), with its message.
"""

import operator
from typing import Optional, Sequence, Union

import numpy as np

from ._core import (
    Backend,
    CausalAttention,
    Generator,
    IncompatibleKeys,
    Linear,
    Module,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    PagedKVCache,
    Parameter,
    SelfAttentionBase,
    __version__,
    _rand,
    cached_memory_bytes,
    cuda_built,
    cuda_device_count,
    cuda_device_description,
    default_generator,
    get_num_threads,
    initial_seed,
    manual_seed,
    release_cached_memory,
    set_num_threads,
)
from . import kernels, optim, safetensors, selfAttn  # noqa: E402  (submodules, after _core)

for _cls in (Backend, CausalAttention, Generator, Linear, Module, MultiHeadAttention,
             MultiHeadAttentionWrapper, PagedKVCache, Parameter, SelfAttentionBase):
    _cls.__module__ = __name__
del _cls


def rand(*size: Union[int, Sequence[int]], generator: Optional[Generator] = None) -> np.ndarray:
    """A float32 array of U[0, 1) draws, as ``torch.rand``: the same numbers for the same seed.

    The size is given as integers or as one sequence: ``rand(2, 3)`` or ``rand((2, 3))``.
    ``generator`` defaults to the default generator (``manual_seed`` seeds it).
    """
    if not size:
        raise TypeError("rand() needs a size, e.g. rand(2, 3) or rand((2, 3))")
    if len(size) == 1 and not isinstance(size[0], (int, np.integer)):
        size = tuple(size[0])  # type: ignore[assignment]
    try:
        shape = [operator.index(s) for s in size]  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"rand(): size must be integers, got {size!r}") from None
    return _rand(shape, generator)


__all__ = [
    "Backend",
    "CausalAttention",
    "Generator",
    "IncompatibleKeys",
    "Linear",
    "Module",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "PagedKVCache",
    "Parameter",
    "SelfAttentionBase",
    "__version__",
    "cached_memory_bytes",
    "cuda_built",
    "cuda_device_count",
    "cuda_device_description",
    "default_generator",
    "get_num_threads",
    "initial_seed",
    "kernels",
    "manual_seed",
    "optim",
    "rand",
    "release_cached_memory",
    "safetensors",
    "selfAttn",
    "set_num_threads",
]

"""Self-attention mechanism classes, upon "Build a Large Language Model (From Scratch)" by
Sebastian Raschka, chapter 3: the original's import path, on numpy arrays.

- ``SelfAttention_Params(d_in, d_out)``: bare parameter matrices W_query, W_key, W_value.
- ``SelfAttention_Linear(d_in, d_out, qkv_bias=False)``: nn.Linear projections; keeps
  ``values``, ``attn_weights`` and ``context_vec`` of the last forward.
- ``SelfAttention_Linear4``: the context through ``attnValues2ContextL`` (also ``model``), a
  frozen linear layer whose weight is the attention-weight matrix.
- ``SelfAttention_Linear5``: also the scores through ``attnQueries2ScoresL``, a frozen linear
  layer whose weight is the keys.

All take x of shape (seq_len, d_in) or (batch, seq_len, d_in) and return (seq_len, d_out) or
(batch, seq_len, d_out); see ``help(SelfAttentionBase)`` for what they share.
"""

from ._core import (
    SelfAttention_Linear,
    SelfAttention_Linear4,
    SelfAttention_Linear5,
    SelfAttention_Params,
)

for _cls in (SelfAttention_Params, SelfAttention_Linear, SelfAttention_Linear4,
             SelfAttention_Linear5):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "SelfAttention_Params",
    "SelfAttention_Linear",
    "SelfAttention_Linear4",
    "SelfAttention_Linear5",
]

"""llm_utils.kernels: the fused attention kernels (C++ ``llm_utils/attention.hpp``) on numpy arrays.

Per batch element and head, with q (N, d), k (M, d), v (M, d_v)::

    S = q k^T * scale  (softcap * tanh(S / softcap))  (- slope_h |pos_i - j|)  (+ attn_mask)
    keys outside query i's range hidden (causal, sliding window, packed sequences)
    P = softmax(S) (+ a sink logit in each denominator);  out = P v;  lse = log-sum-exp of S

Shapes: q (N, d), (B, N, d) or (B, H, N, d) (PyTorch SDPA's layout); k and v of the same rank,
(B, G, M, d) with G dividing H for grouped-query attention; out has q's leading dimensions and
v's last; lse q's leading dimensions. ``docs/variants.md`` explains every option.

Arrays are read and written in place when they are float32 (or bfloat16, see below) with
contiguous rows: strided views (a transposed ``(B, N, H, d)`` array as ``(B, H, N, d)``) cost no
copy. Anything else numpy can convert is copied to float32 first. bfloat16 travels as its 16-bit
patterns, since numpy has no bfloat16: a uint16 or int16 array, such as
``tensor.view(torch.int16).numpy()`` of a torch.bfloat16 tensor; q, k, v (and out, dout) must
then all be bfloat16; lse, masks, slopes and sinks stay float32.

Common keyword arguments:

- ``causal``: hide key j from query i when j > i + query_offset (top-left aligned, as SDPA's
  ``is_causal``); ``query_offset``: the key position of query 0 (bottom-right alignment after
  a KV cache of that many tokens).
- ``scale``: multiplies the scores (default 1 / sqrt(d)), as SDPA's.
- ``attn_mask``: float, added to the scaled scores, or bool, True where a query may attend (as
  SDPA); broadcast to (B, H, N, M).
- ``window_left``: sliding window, hide keys before pos_i - window_left (-1: none).
- ``softcap``: scores become softcap * tanh(s / softcap) (Gemma 2; 0: none).
- ``alibi_slopes``: (H) ALiBi slopes (``alibi_slopes(H)`` gives the paper's).
- ``sinks``: (H) sink logits (gpt-oss); attention_backward then also returns their gradient.
- ``backend``: 'auto', 'flash' (the fused kernel) or 'reference' (materialised scores).

Errors: ValueError naming the argument for bad shapes and values, TypeError for bad dtypes.
"""

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ._core import kernels as _k

RopeTable = _k.RopeTable
RopeTable.__module__ = __name__

ArrayLike = Union[np.ndarray, Sequence]


def _options(causal, scale, query_offset, attn_mask, window_left, softcap, alibi_slopes, sinks,
             backend):
    return dict(causal=causal, scale=scale, query_offset=query_offset, attn_mask=attn_mask,
                window_left=window_left, softcap=softcap, alibi_slopes=alibi_slopes,
                sinks=sinks, backend=backend)


def attention_forward(q: ArrayLike, k: ArrayLike, v: ArrayLike, *, causal: bool = False,
                      scale: Optional[float] = None, query_offset: int = 0,
                      attn_mask: Optional[ArrayLike] = None, window_left: int = -1,
                      softcap: float = 0.0, alibi_slopes: Optional[ArrayLike] = None,
                      sinks: Optional[ArrayLike] = None, backend: str = "auto",
                      out: Optional[np.ndarray] = None,
                      lse: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (out, lse). ``out`` and ``lse``, when given, are written in place (their rows
    contiguous: e.g. a transposed view of a (B, N, H, d_v) array) and returned."""
    return _k.forward(q, k, v, _options(causal, scale, query_offset, attn_mask, window_left,
                                        softcap, alibi_slopes, sinks, backend), out, lse)


def attention_backward(q: ArrayLike, k: ArrayLike, v: ArrayLike, out: ArrayLike, lse: ArrayLike,
                       dout: ArrayLike, *, causal: bool = False, scale: Optional[float] = None,
                       query_offset: int = 0, attn_mask: Optional[ArrayLike] = None,
                       window_left: int = -1, softcap: float = 0.0,
                       alibi_slopes: Optional[ArrayLike] = None,
                       sinks: Optional[ArrayLike] = None, backend: str = "auto",
                       need_dq: bool = True, need_dk: bool = True,
                       dq: Optional[np.ndarray] = None, dk: Optional[np.ndarray] = None,
                       dv: Optional[np.ndarray] = None):
    """The backward of attention_forward from its out and lse (same options): returns
    (dq, dk, dv, dsinks). dq / dk are None when not needed (which skips most of their work),
    dsinks None without sinks. dq, dk, dv, when given, are written in place."""
    return _k.backward(q, k, v, out, lse, dout,
                       _options(causal, scale, query_offset, attn_mask, window_left, softcap,
                                alibi_slopes, sinks, backend), need_dq, need_dk, dq, dk, dv)


def attention_probabilities(q: ArrayLike, k: ArrayLike, lse: ArrayLike, *, causal: bool = False,
                            scale: Optional[float] = None, query_offset: int = 0,
                            attn_mask: Optional[ArrayLike] = None, window_left: int = -1,
                            softcap: float = 0.0, alibi_slopes: Optional[ArrayLike] = None,
                            sinks: Optional[ArrayLike] = None,
                            backend: str = "auto") -> np.ndarray:
    """The attention weights P (..., N, M), recomputed from a forward's lse (float32)."""
    return _k.probabilities(q, k, lse, _options(causal, scale, query_offset, attn_mask,
                                                window_left, softcap, alibi_slopes, sinks,
                                                backend))


def attention_forward_varlen(q: ArrayLike, k: ArrayLike, v: ArrayLike,
                             cu_seqlens_q: Sequence[int], cu_seqlens_k: Sequence[int], *,
                             causal: bool = False, scale: Optional[float] = None,
                             window_left: int = -1, softcap: float = 0.0,
                             alibi_slopes: Optional[ArrayLike] = None,
                             sinks: Optional[ArrayLike] = None,
                             backend: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """Packed variable-length sequences (FlashAttention's varlen layout), float32: q (T_q, H, d),
    k (T_k, G, d), v (T_k, G, d_v); sequence s holds rows [cu_seqlens_q[s], cu_seqlens_q[s+1])
    of q and [cu_seqlens_k[s], cu_seqlens_k[s+1]) of k and v, and attends within itself
    (causal and the window bottom-right aligned per sequence). Returns out (T_q, H, d_v) and
    lse (H, T_q)."""
    return _k.forward_varlen(q, k, v, list(cu_seqlens_q), list(cu_seqlens_k),
                             _options(causal, scale, 0, None, window_left, softcap, alibi_slopes,
                                      sinks, backend))


def attention_backward_varlen(q: ArrayLike, k: ArrayLike, v: ArrayLike,
                              cu_seqlens_q: Sequence[int], cu_seqlens_k: Sequence[int],
                              out: ArrayLike, lse: ArrayLike, dout: ArrayLike, *,
                              causal: bool = False, scale: Optional[float] = None,
                              window_left: int = -1, softcap: float = 0.0,
                              alibi_slopes: Optional[ArrayLike] = None,
                              sinks: Optional[ArrayLike] = None, backend: str = "auto"):
    """The backward of attention_forward_varlen: (dq, dk, dv, dsinks or None)."""
    return _k.backward_varlen(q, k, v, list(cu_seqlens_q), list(cu_seqlens_k), out, lse, dout,
                              _options(causal, scale, 0, None, window_left, softcap,
                                       alibi_slopes, sinks, backend))


def attention_forward_paged(q: ArrayLike, k_pages: ArrayLike, v_pages: ArrayLike,
                            block_table: ArrayLike, seqlens_k: Sequence[int],
                            cu_seqlens_q: Sequence[int], *, causal: bool = False,
                            scale: Optional[float] = None, window_left: int = -1,
                            softcap: float = 0.0, alibi_slopes: Optional[ArrayLike] = None,
                            sinks: Optional[ArrayLike] = None,
                            backend: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """Packed queries over paged keys and values (decoding; float32, forward only): k_pages
    (P, page_size, G, d), v_pages (P, page_size, G, d_v); sequence s holds seqlens_k[s] tokens,
    token t at row t % page_size of page block_table[s, t // page_size]; its queries, rows
    [cu_seqlens_q[s], cu_seqlens_q[s+1]) of q (T_q, H, d), are its last tokens. Returns out
    (T_q, H, d_v) and lse (H, T_q)."""
    return _k.forward_paged(q, k_pages, v_pages, np.asarray(block_table, dtype=np.int64),
                            list(seqlens_k), list(cu_seqlens_q),
                            _options(causal, scale, 0, None, window_left, softcap, alibi_slopes,
                                     sinks, backend))


def rope_forward(x: np.ndarray, table: RopeTable, first_position: int = 0) -> np.ndarray:
    """Rotates x (..., N, head_dim), a writable float32 array, in place (row n at position
    first_position + n: the rotate-half RoPE of the book's Llama code); returns x."""
    return _k.rope_forward(x, table, first_position)


def rope_backward(dy: np.ndarray, table: RopeTable, first_position: int = 0) -> np.ndarray:
    """The backward of rope_forward (the inverse rotation), in place on dy; returns it."""
    return _k.rope_backward(dy, table, first_position)


def alibi_slopes(heads: int) -> np.ndarray:
    """The ALiBi slopes of Press et al. for ``heads`` heads, float32 (heads)."""
    return _k.alibi_slopes(heads)


__all__ = ["RopeTable", "alibi_slopes", "attention_backward", "attention_backward_varlen",
           "attention_forward", "attention_forward_paged", "attention_forward_varlen",
           "attention_probabilities", "rope_backward", "rope_forward"]

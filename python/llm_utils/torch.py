"""llm_utils.torch: the fused attention kernels inside PyTorch.

- ``scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
  is_causal=False, scale=None, enable_gqa=False)``: PyTorch 2.5's function (which the PyTorch
  1.13 Debian ships lacks), on our fused CPU kernels, differentiable; with keyword-only extras
  for the variants (``window_left``, ``softcap``, ``alibi_slopes``, ``sinks``).
- ``attention(q, k, v, ...)``: the same on (B, H, N, d) tensors with every variant, the one the
  modules call; ``varlen_attention`` for packed variable-length sequences.
- ``CausalAttention`` and ``MultiHeadAttention``: drop-in ``torch.nn.Module`` s with the book's
  constructor signatures (chapter 3), parameters that are torch Parameters (any torch
  optimizer), and state dicts identical to the book's classes; built in the same order, so
  ``torch.manual_seed(123)`` gives them the book's weights. ``MultiHeadAttention`` also takes
  the variants of later models as keyword-only arguments (grouped-query attention, RoPE, a
  sliding window, softcapping, ALiBi, learnable sinks).

The fused kernels run on CPU float32 and bfloat16 tensors, reading and writing the tensors'
memory in place (zero-copy: q, k, v may be strided views, such as the transposed heads of a
projection, as long as their last dimension is contiguous). Elsewhere PyTorch's own operations
compute the same formula (``can_use_fused`` says which applies): other dtypes or devices, an
``attn_mask`` that requires a gradient, and dropout (``dropout_p > 0``; in the modules, training
mode with dropout > 0), whose mask is drawn from PyTorch's generator exactly as the book's code
draws it. A query that sees no key gives a zero row here, where PyTorch's softmax gives NaN.

Example::

    import torch
    from llm_utils.torch import MultiHeadAttention, scaled_dot_product_attention

    torch.manual_seed(123)
    mha = MultiHeadAttention(768, 768, context_length=1024, dropout=0.0, num_heads=12)
    y = mha(x)                     # x (B, N, 768), as the book's class, on the fused kernel
    y.sum().backward()             # mha.W_query.weight.grad, ... as PyTorch autograd's
"""

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._core import kernels as _k

__all__ = ["CausalAttention", "MultiHeadAttention", "apply_rope", "attention", "can_use_fused",
           "rope_cos_sin", "scaled_dot_product_attention", "varlen_attention"]

_FUSED_DTYPES = (torch.float32, torch.bfloat16)


def _array(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU float32 or bfloat16 tensor's memory (bfloat16 as int16 bits)."""
    t = t.detach()
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def can_use_fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0) -> bool:
    """Whether ``attention`` (and ``scaled_dot_product_attention``) runs the fused kernels for
    these arguments, rather than PyTorch's own operations."""
    tensors = [query, key, value]
    if any(t.device.type != "cpu" for t in tensors):
        return False
    if query.dtype not in _FUSED_DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        return False
    if attn_mask is not None and (attn_mask.requires_grad or attn_mask.device.type != "cpu"):
        return False
    return dropout_p == 0.0


def _add_sinks(call, sinks):
    """The sink logits, when there are any, as the kernels read them (float32)."""
    if sinks is not None:
        call["sinks"] = _array(sinks.detach().float().contiguous())


def _kernel_options(causal, scale, attn_mask, window_left, softcap, alibi_slopes):
    options = dict(causal=causal, scale=scale, window_left=window_left, softcap=softcap)
    if attn_mask is not None:
        mask = attn_mask.detach()
        options["attn_mask"] = mask.numpy() if mask.dtype == torch.bool else _array(mask.float())
    if alibi_slopes is not None:
        options["alibi_slopes"] = _array(alibi_slopes.detach().float().contiguous())
    return options


def _refuse_second_derivative():
    """Autograd runs a backward with gradients enabled only when asked for a graph of it
    (create_graph=True): the kernels' gradients have none, and a graph missing them would
    silently drop every term built on them."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "llm_utils.torch: the fused attention kernels have no second derivative "
            "(create_graph=True); float64 tensors run the same formula in PyTorch operations, "
            "which have one")


class _FusedAttention(torch.autograd.Function):
    """The fused forward and backward on (B, H, N, d) q, (B, G, M, d) k, v: out (B, H, N, d_v)
    is allocated as the transposed view of a (B, N, H, d_v) tensor when `heads_last`, so that
    a module's merge of the heads is free."""

    @staticmethod
    def forward(ctx, q, k, v, sinks, options, heads_last):  # noqa: D401
        batch, heads, n = q.shape[0], q.shape[1], q.shape[2]
        dv = v.shape[-1]
        if heads_last:
            out = torch.empty(batch, n, heads, dv, dtype=q.dtype).transpose(1, 2)
        else:
            out = torch.empty(batch, heads, n, dv, dtype=q.dtype)
        lse = torch.empty(batch, heads, n, dtype=torch.float32)
        call = dict(options)
        _add_sinks(call, sinks)
        _k.forward(_array(q), _array(k), _array(v), call, _array(out), lse.numpy())
        ctx.save_for_backward(q, k, v, out, lse, sinks)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, dout):
        _refuse_second_derivative()
        q, k, v, out, lse, sinks = ctx.saved_tensors
        dout = _rows_contiguous(dout.to(q.dtype))
        need_dq, need_dk = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dq = torch.empty_like(q) if need_dq else None
        dk = torch.empty_like(k) if need_dk else None
        dv = torch.empty_like(v)
        call = dict(ctx.options)
        _add_sinks(call, sinks)
        _, _, _, dsinks = _k.backward(
            _array(q), _array(k), _array(v), _array(out), lse.numpy(), _array(dout), call,
            need_dq, need_dk, None if dq is None else _array(dq),
            None if dk is None else _array(dk), _array(dv))
        dsinks_t = None
        if sinks is not None and ctx.needs_input_grad[3]:
            dsinks_t = torch.from_numpy(dsinks).to(sinks.dtype)
        return dq, dk, dv, dsinks_t, None, None


def _math_attention(q, k, v, *, causal, scale, attn_mask, window_left, softcap, alibi_slopes,
                    sinks, dropout):
    """The same formula in PyTorch operations on (B, H, N, d) tensors (any dtype or device),
    materialising the scores; `dropout` (a callable or None) acts on the attention weights."""
    heads, kv_heads = q.shape[1], k.shape[1]
    if kv_heads != heads:  # grouped-query attention: each key/value head serves H / G heads
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    n, m = q.shape[-2], k.shape[-2]
    s = torch.matmul(q, k.transpose(-1, -2)) * (scale if scale is not None
                                                 else 1.0 / math.sqrt(q.shape[-1]))
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    pos = torch.arange(n, device=q.device).unsqueeze(1)  # query i at key position i
    key = torch.arange(m, device=q.device).unsqueeze(0)
    if alibi_slopes is not None:
        distance = (pos - key).abs().to(s.dtype)
        s = s - alibi_slopes.to(s.dtype).view(1, heads, 1, 1) * distance
    if attn_mask is not None:
        s = s + (torch.zeros_like(attn_mask, dtype=s.dtype).masked_fill(~attn_mask, -math.inf)
                 if attn_mask.dtype == torch.bool else attn_mask.to(s.dtype))
    hidden = torch.zeros(n, m, dtype=torch.bool, device=q.device)
    if causal:
        hidden |= key > pos
    if window_left >= 0:
        hidden |= key < pos - window_left
    s = s.masked_fill(hidden, -math.inf)
    row_max = s.amax(dim=-1, keepdim=True).detach()
    if sinks is not None:
        sink = sinks.to(s.dtype).view(1, heads, 1, 1).expand(*s.shape[:-1], 1)
        row_max = torch.maximum(row_max, sink.detach())
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(s - row_max)
    total = e.sum(dim=-1, keepdim=True)
    if sinks is not None:
        total = total + torch.exp(sink - row_max)
    p = e / torch.where(total > 0, total, torch.ones_like(total))  # rows with no key: zeros
    if dropout is not None:
        p = dropout(p)
    return torch.matmul(p, v)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
              scale: Optional[float] = None, attn_mask: Optional[torch.Tensor] = None,
              window_left: int = -1, softcap: float = 0.0,
              alibi_slopes: Optional[torch.Tensor] = None, sinks: Optional[torch.Tensor] = None,
              dropout_p: float = 0.0, dropout=None, heads_last: bool = False) -> torch.Tensor:
    """Attention on q (B, H, N, d), k and v (B, G, M, d / d_v) with G dividing H (grouped-query
    attention), differentiable in q, k, v and sinks: the formula of ``llm_utils.kernels``
    (``docs/variants.md``). ``dropout``: a callable applied to the attention weights (such as a
    module's nn.Dropout, in training mode), which, like ``dropout_p > 0``, makes it run in
    PyTorch operations. ``heads_last``: return the output as the (B, H, N, d_v) transposed view
    of a contiguous (B, N, H, d_v) tensor (what a module merges its heads from)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention: q, k, v must be (B, H, N, d), got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if scale is not None and not (scale > 0.0 and math.isfinite(scale)):
        raise ValueError(f"attention: scale must be positive and finite, got {scale}")
    if dropout is None and dropout_p > 0.0:
        dropout = lambda p: torch.nn.functional.dropout(p, dropout_p)  # noqa: E731
    # The kernels give no gradient to ALiBi's slopes: slopes that want one take the other path.
    slopes_need_grad = alibi_slopes is not None and alibi_slopes.requires_grad
    if dropout is not None or slopes_need_grad or not can_use_fused(q, k, v, attn_mask):
        out = _math_attention(q, k, v, causal=causal, scale=scale, attn_mask=attn_mask,
                              window_left=window_left, softcap=softcap,
                              alibi_slopes=alibi_slopes, sinks=sinks, dropout=dropout)
        return out.transpose(1, 2).contiguous().transpose(1, 2) if heads_last else out
    options = _kernel_options(causal, scale, attn_mask, window_left, softcap, alibi_slopes)
    return _FusedAttention.apply(_rows_contiguous(q), _rows_contiguous(k), _rows_contiguous(v),
                                 sinks, options, heads_last)


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: Optional[float] = None, enable_gqa: bool = False, *,
                                 window_left: int = -1, softcap: float = 0.0,
                                 alibi_slopes: Optional[torch.Tensor] = None,
                                 sinks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` (PyTorch 2.5's signature) on the
    fused kernels: query (..., H, L, E), key (..., G, S, E), value (..., G, S, Ev) -> (..., H, L,
    Ev). G must equal H unless ``enable_gqa`` (then G divides H). ``attn_mask``: bool (True =
    take part) or float added to the scores, broadcast to (..., H, L, S); ``is_causal``: the
    top-left causal mask (both may be given). Dropout, a mask that needs a gradient, or tensors
    the kernels do not take run in PyTorch operations (``can_use_fused``). Keyword-only extras:
    the variants of ``attention``, per head."""
    if query.dim() < 2 or key.dim() != query.dim() or value.dim() != query.dim():
        raise ValueError("scaled_dot_product_attention: query, key and value must have the same "
                         f"rank >= 2, got shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}")
    lead = query.shape[:-3] if query.dim() >= 3 else ()
    heads = query.shape[-3] if query.dim() >= 3 else 1
    kv_heads = key.shape[-3] if key.dim() >= 3 else 1
    if kv_heads != heads and not (enable_gqa and kv_heads > 0 and heads % kv_heads == 0):
        raise ValueError(f"scaled_dot_product_attention: key has {kv_heads} heads, query {heads}"
                         + ("" if enable_gqa else " (grouped heads need enable_gqa=True)")
                         + ("; they must divide" if enable_gqa else ""))
    if key.shape[:-3] != lead or value.shape[:-3] != lead:
        raise ValueError("scaled_dot_product_attention: query, key and value must share their "
                         f"batch dimensions, got shapes {tuple(query.shape)}, "
                         f"{tuple(key.shape)}, {tuple(value.shape)}")
    if value.shape[:-1] != key.shape[:-1]:
        raise ValueError("scaled_dot_product_attention: value must have key's heads and length, "
                         f"got key {tuple(key.shape)}, value {tuple(value.shape)}")
    batch = int(np.prod(lead)) if lead else 1
    L, S = query.shape[-2], key.shape[-2]

    def as4(t, h):
        return t.reshape(batch, h, t.shape[-2], t.shape[-1])

    mask = None
    if attn_mask is not None:
        full = (*lead, heads, L, S)
        if attn_mask.dim() > len(full):
            raise ValueError(f"scaled_dot_product_attention: attn_mask {tuple(attn_mask.shape)} "
                             f"has more dimensions than the scores {full}")
        if attn_mask.dtype == torch.bool and not attn_mask.requires_grad:
            # Additive before it is broadcast, so the view below stays a view (stride 0).
            attn_mask = torch.zeros(attn_mask.shape, device=attn_mask.device).masked_fill(
                ~attn_mask, -math.inf)
        try:
            mask = torch.broadcast_to(attn_mask, full).reshape(batch, heads, L, S)
        except RuntimeError:
            raise ValueError(f"scaled_dot_product_attention: attn_mask {tuple(attn_mask.shape)} "
                             f"does not broadcast to the scores {full}") from None
    out = attention(as4(query, heads), as4(key, kv_heads), as4(value, kv_heads),
                    causal=is_causal, scale=scale, attn_mask=mask, window_left=window_left,
                    softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks, dropout_p=dropout_p)
    return out.reshape(*query.shape[:-1], value.shape[-1])


class _FusedVarlen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sinks, cu_q, cu_k, options):  # noqa: D401
        call = dict(options)
        _add_sinks(call, sinks)
        out, lse = _k.forward_varlen(_array(q), _array(k), _array(v), cu_q, cu_k, call)
        out, lse = torch.from_numpy(out), torch.from_numpy(lse)
        ctx.save_for_backward(q, k, v, out, lse, sinks)
        ctx.cu, ctx.options = (cu_q, cu_k), options
        return out

    @staticmethod
    def backward(ctx, dout):
        _refuse_second_derivative()
        q, k, v, out, lse, sinks = ctx.saved_tensors
        call = dict(ctx.options)
        _add_sinks(call, sinks)
        dq, dk, dv, dsinks = _k.backward_varlen(
            _array(q), _array(k), _array(v), *ctx.cu, _array(out), lse.numpy(),
            _array(_rows_contiguous(dout.float())), call)
        dsinks_t = torch.from_numpy(dsinks) if sinks is not None else None
        return (torch.from_numpy(dq), torch.from_numpy(dk), torch.from_numpy(dv), dsinks_t, None,
                None, None)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     cu_seqlens_q: Sequence[int], cu_seqlens_k: Sequence[int], *,
                     causal: bool = False, scale: Optional[float] = None, window_left: int = -1,
                     softcap: float = 0.0, alibi_slopes: Optional[torch.Tensor] = None,
                     sinks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Packed variable-length sequences (FlashAttention's ``flash_attn_varlen_func`` layout), CPU
    float32, differentiable: q (T_q, H, d), k (T_k, G, d), v (T_k, G, d_v); sequence s holds rows
    [cu_seqlens_q[s], cu_seqlens_q[s+1]) of q and [cu_seqlens_k[s], cu_seqlens_k[s+1]) of k and
    v and attends within itself (causal and the window bottom-right aligned per sequence).
    Returns out (T_q, H, d_v)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise TypeError(f"varlen_attention: {name} must be a CPU float32 tensor, got "
                            f"{t.dtype} on {t.device}")
    options = _kernel_options(causal, scale, None, window_left, softcap, alibi_slopes)
    return _FusedVarlen.apply(_rows_contiguous(q), _rows_contiguous(k), _rows_contiguous(v), sinks,
                              [int(c) for c in cu_seqlens_q], [int(c) for c in cu_seqlens_k],
                              options)


def rope_cos_sin(head_dim: int, context_length: int, theta: float = 10000.0,
                 scaling: Optional[dict] = None):
    """RoPE's (context_length, head_dim) cos and sin tables as the book's Llama code builds
    them (``compute_rope_params``; ``scaling``: Llama 3.1's ``freq_config``), from the same
    float32 steps as the C++ tables (llm_utils.kernels.RopeTable)."""
    table = _k.RopeTable(head_dim, 1, theta, scaling)
    inv_freq = torch.from_numpy(table.inv_freq)
    angles = torch.arange(context_length, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=1)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, N, heads, head_dim) rotated at positions 0..N-1 (rotate-half, as the book's Llama
    code, there on (B, heads, N, head_dim))."""
    n, half = x.shape[1], x.shape[-1] // 2
    cos, sin = cos[:n, None, :].to(x.dtype), sin[:n, None, :].to(x.dtype)
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _as_batch(cls, x, context_length):
    """x (B, N, d_in) as it is, or (N, d_in) as a batch of one (the book's classes unpack
    `b, num_tokens, d_in = x.shape`; its documented input includes the 2-D case)."""
    if x.dim() not in (2, 3):
        raise ValueError(f"{cls}: x must be (num_tokens, d_in) or (batch, num_tokens, d_in), got "
                         f"shape {tuple(x.shape)}")
    if x.shape[-2] > context_length:
        raise ValueError(f"{cls}: x has {x.shape[-2]} tokens, more than context_length="
                         f"{context_length}")
    return (x.unsqueeze(0), True) if x.dim() == 2 else (x, False)


def _check_sizes(cls, d_in, d_out, context_length, dropout, num_heads):
    if min(d_in, d_out, context_length, num_heads) < 1:
        raise ValueError(f"{cls}: d_in, d_out, context_length and num_heads must be positive, "
                         f"got {d_in}, {d_out}, {context_length}, {num_heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{cls}: dropout must be in [0, 1), got {dropout}")


class CausalAttention(nn.Module):
    """The book's ``CausalAttention`` (chapter 3.5) on the fused kernel: the same constructor,
    Parameters, ``mask`` buffer and state dict, built in the same order (so the same seed gives
    the same weights). Forward x (B, N, d_in) or (N, d_in) -> (B, N, d_out) or (N, d_out); in
    training mode with dropout > 0 the weights are materialised and dropped by
    ``self.dropout``, as the book does. The ``mask`` buffer is kept for the state dict; the
    kernels' causal flag does the masking (the book's buffer is always this causal mask)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 qkv_bias: bool = False):
        super().__init__()
        _check_sizes("CausalAttention", d_in, d_out, context_length, dropout, 1)
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length),
                                                diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, was_2d = _as_batch("CausalAttention", x, self.mask.shape[0])
        q, k, v = (layer(x).unsqueeze(1) for layer in (self.W_query, self.W_key, self.W_value))
        dropping = self.training and self.dropout.p > 0.0
        out = attention(q, k, v, causal=True, dropout=self.dropout if dropping else None)
        out = out.squeeze(1)
        return out.squeeze(0) if was_2d else out


class MultiHeadAttention(nn.Module):
    """The book's ``MultiHeadAttention`` (chapter 3.6.2) on the fused kernel: the same
    constructor, Parameters (W_query, W_key, W_value, out_proj), ``mask`` buffer and state
    dict, built in the same order. Keyword-only beyond the book (docs/variants.md):
    ``num_kv_groups`` (grouped-query attention: W_key and W_value have num_kv_groups * head_dim
    outputs), ``window_left``, ``softcap``, ``alibi`` (the paper's slopes), ``sinks`` (the
    Parameter ``sinks`` (num_heads), zeros at first, first in the state dict as PyTorch orders
    a module's own parameters), ``rope``, ``rope_theta``, ``rope_scaling`` (rotary embedding of
    q and k, the book's Llama code). Forward x (B, N, d_in) -> (B, N, d_out)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False, *, num_kv_groups: Optional[int] = None,
                 window_left: int = -1, softcap: float = 0.0, alibi: bool = False,
                 sinks: bool = False, rope: bool = False, rope_theta: float = 10000.0,
                 rope_scaling: Optional[dict] = None):
        super().__init__()
        _check_sizes("MultiHeadAttention", d_in, d_out, context_length, dropout, num_heads)
        if d_out % num_heads != 0:
            raise ValueError(f"MultiHeadAttention: d_out must be divisible by num_heads, got "
                             f"d_out={d_out}, num_heads={num_heads}")
        groups = num_heads if num_kv_groups is None else num_kv_groups
        if groups < 1 or num_heads % groups != 0:
            raise ValueError(f"MultiHeadAttention: num_heads must be a multiple of "
                             f"num_kv_groups, got {num_heads} and {num_kv_groups}")
        if window_left < -1 or not (softcap >= 0.0 and math.isfinite(softcap)):
            raise ValueError(f"MultiHeadAttention: window_left must be >= -1 and softcap >= 0, "
                             f"got {window_left} and {softcap}")
        self.d_out = d_out
        self.num_heads = num_heads
        self.num_kv_groups = groups
        self.head_dim = d_out // num_heads
        if rope and self.head_dim % 2 != 0:
            raise ValueError(f"MultiHeadAttention: rope needs an even head_dim, got "
                             f"{self.head_dim}")
        self.window_left, self.softcap = window_left, softcap
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, groups * self.head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, groups * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length),
                                                diagonal=1))
        self.sinks = nn.Parameter(torch.zeros(num_heads)) if sinks else None
        slopes = torch.from_numpy(_k.alibi_slopes(num_heads)) if alibi else None
        self.register_buffer("alibi_slopes", slopes, persistent=False)
        cos, sin = (rope_cos_sin(self.head_dim, context_length, rope_theta, rope_scaling)
                    if rope else (None, None))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, was_2d = _as_batch("MultiHeadAttention", x, self.mask.shape[0])
        b, n, _ = x.shape
        q = self.W_query(x).view(b, n, self.num_heads, self.head_dim)     # (B, N, H, hd)
        k = self.W_key(x).view(b, n, self.num_kv_groups, self.head_dim)   # (B, N, G, hd)
        v = self.W_value(x).view(b, n, self.num_kv_groups, self.head_dim)
        if self.rope_cos is not None:
            q = apply_rope(q, self.rope_cos, self.rope_sin)
            k = apply_rope(k, self.rope_cos, self.rope_sin)
        dropping = self.training and self.dropout.p > 0.0
        # The heads read in place as (B, H, N, hd) views; the output written as (B, N, H, hd).
        context = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True,
                            window_left=self.window_left, softcap=self.softcap,
                            alibi_slopes=self.alibi_slopes, sinks=self.sinks,
                            dropout=self.dropout if dropping else None, heads_last=True)
        out = self.out_proj(context.transpose(1, 2).reshape(b, n, self.d_out))
        return out.squeeze(0) if was_2d else out

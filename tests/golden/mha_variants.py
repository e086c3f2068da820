"""The book's MultiHeadAttention (chapter 3.6.2) with the variants of later models, written here in
plain PyTorch operations as an oracle for the C++ module, the CLI and llm_utils.torch:
grouped-query attention (the book's Llama 3 code: keys and values repeat_interleave'd), RoPE
(the book's compute_rope_params / apply_rope, on (b, heads, n, head_dim)), a sliding window,
logit softcapping (Gemma 2), ALiBi (the slopes of Press et al.'s reference code) and attention
sinks (gpt-oss: one learnable logit per head in every softmax's denominator).

Built in the book's order (W_query, W_key, W_value, out_proj, the mask buffer), so
torch.manual_seed(s) gives the weights llm_utils gives for the same seed; `sinks` is a Parameter
of zeros, first in the state dict, as PyTorch orders a module's own parameters.
"""

import math

import torch
import torch.nn as nn


def alibi_slopes(heads):
    """Press et al.'s slopes: 2^(-8 i / n) for a power of two n; otherwise those of the nearest
    lower power of two, then every other slope of twice that."""
    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]
    if math.log2(heads).is_integer():
        return power_of_two(heads)
    n = 2 ** math.floor(math.log2(heads))
    return power_of_two(n) + alibi_slopes(2 * n)[0::2][:heads - n]


def compute_rope_params(head_dim, theta_base, context_length):
    inv_freq = 1.0 / (theta_base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float()
                                     / head_dim))
    positions = torch.arange(context_length)
    angles = positions[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=1)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    n, half = x.shape[2], x.shape[3] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:n][None, None] + rotated * sin[:n][None, None]


class MultiHeadAttentionVariants(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, *,
                 num_kv_groups=None, window_left=-1, softcap=0.0, alibi=False, sinks=False,
                 rope=False, rope_theta=10000.0):
        super().__init__()
        self.d_out, self.num_heads = d_out, num_heads
        self.num_kv_groups = num_kv_groups or num_heads
        self.head_dim = d_out // num_heads
        self.window_left, self.softcap = window_left, softcap
        kv_width = self.num_kv_groups * self.head_dim
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, kv_width, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, kv_width, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length),
                                                diagonal=1))
        self.sinks = nn.Parameter(torch.zeros(num_heads)) if sinks else None
        self.slopes = torch.tensor(alibi_slopes(num_heads)) if alibi else None
        self.rope = compute_rope_params(self.head_dim, rope_theta, context_length) if rope \
            else None

    def forward(self, x):
        b, n, _ = x.shape
        q = self.W_query(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.W_key(x).view(b, n, self.num_kv_groups, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, n, self.num_kv_groups, self.head_dim).transpose(1, 2)
        if self.rope is not None:
            q, k = apply_rope(q, *self.rope), apply_rope(k, *self.rope)
        group = self.num_heads // self.num_kv_groups
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(2, 3) / self.head_dim ** 0.5
        if self.softcap:
            scores = self.softcap * torch.tanh(scores / self.softcap)
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        if self.slopes is not None:
            scores = scores - self.slopes.view(1, -1, 1, 1) * (i - j).abs()
        hidden = self.mask.bool()[:n, :n]
        if self.window_left >= 0:
            hidden = hidden | (j < i - self.window_left)
        scores = scores.masked_fill(hidden, -torch.inf)
        if self.sinks is not None:  # an extra logit per row with no value
            sink = self.sinks.view(1, -1, 1, 1).expand(b, -1, n, 1)
            weights = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
        else:
            weights = torch.softmax(scores, dim=-1)
        context = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, n, self.d_out)
        return self.out_proj(context)

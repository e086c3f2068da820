"""The book's MultiHeadAttention (tests/golden/book_attention.py) with what llm_utils adds for
inference, written here in PyTorch as the parity oracle (PyTorch 1.13 has no
scaled_dot_product_attention, so the masks are applied by hand):

- num_kv_groups: grouped-query attention as in the book's later Llama code (keys and values
  projected to num_kv_groups heads, then `repeat_interleave`d to num_heads), but built in the
  book MultiHeadAttention's order (W_query, W_key, W_value, out_proj);
- scale: the scores are multiplied by it instead of divided by sqrt(head_dim);
- causal=False: no causal mask;
- attn_mask (broadcast to (b, num_heads, queries, keys); bool True = may attend, SDPA's
  convention; float added) and key_padding_mask ((b, keys); bool True = padding);
- a KV cache in the style of the book's KV-cache bonus code: torch.cat of the new keys and
  values, the causal mask rows ptr_current_pos .. ptr_current_pos + num_tokens.

A query row whose keys are all hidden gives zeros here (as llm_utils documents), where plain
PyTorch would give NaN.
"""

import torch
import torch.nn as nn


def _additive(mask, true_hides):
    if mask.dtype == torch.bool:
        hidden = mask if true_hides else ~mask
        return torch.zeros(mask.shape).masked_fill(hidden, -torch.inf)
    return mask.float()


class MultiHeadAttentionExt(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False,
                 num_kv_groups=None, scale=None, causal=True):
        super().__init__()
        assert d_out % num_heads == 0
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.num_kv_groups = num_heads if num_kv_groups is None else num_kv_groups
        assert num_heads % self.num_kv_groups == 0
        self.scale = scale
        self.causal = causal
        kv_out = self.num_kv_groups * self.head_dim
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, kv_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, kv_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))
        self.cache_k = None
        self.cache_v = None
        self.ptr_current_pos = 0

    def reset_cache(self):
        self.cache_k, self.cache_v, self.ptr_current_pos = None, None, 0

    def forward(self, x, attn_mask=None, key_padding_mask=None, use_cache=False):
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)
        b, num_tokens, _ = x.shape
        g, hd = self.num_kv_groups, self.head_dim
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, hd).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, g, hd).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, g, hd).transpose(1, 2)
        start = 0
        if use_cache:
            start = self.ptr_current_pos
            if self.cache_k is not None:
                keys = torch.cat([self.cache_k, keys], dim=2)
                values = torch.cat([self.cache_v, values], dim=2)
            self.cache_k, self.cache_v = keys, values
            self.ptr_current_pos += num_tokens
        keys = keys.repeat_interleave(self.num_heads // g, dim=1)
        values = values.repeat_interleave(self.num_heads // g, dim=1)
        num_keys = keys.shape[2]
        scores = queries @ keys.transpose(2, 3)
        if self.scale is None:
            scores = scores / keys.shape[-1] ** 0.5
        else:
            scores = scores * self.scale
        bias = torch.zeros(1, 1, num_tokens, num_keys)
        if self.causal:
            hidden = self.mask.bool()[start:start + num_tokens, :num_keys]
            bias = bias.masked_fill(hidden, -torch.inf)
        if attn_mask is not None:
            bias = bias + _additive(attn_mask, true_hides=False)
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, true_hides=True)
            bias = bias + (pad.view(-1, 1, 1, num_keys))
        scores = scores + bias
        weights = torch.softmax(scores, dim=-1)
        weights = torch.nan_to_num(weights, nan=0.0)  # fully hidden rows: zeros
        weights = self.dropout(weights)
        context = (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        out = self.out_proj(context)
        return out.squeeze(0) if squeeze else out

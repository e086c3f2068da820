"""The behaviour of the original `llm_utils.selfAttn`, written here as the parity oracle.

The four classes follow the original line by line in what matters for numbers: parameter
creation order, `x @ W` / `nn.Linear` projections, `attn_scores / keys.shape[-1]**0.5`, softmax
over the last dimension, and in Linear4/Linear5 the frozen `nn.Linear` layers that are built in
every forward (drawing from the default generator) and whose weights are the attention weights
and the keys.

`documented=True` gives the behaviour the original's docs promise for 3-D input
(batch, seq_len, d_in): the original transposes with `.T`, which fails there, so 3-D input is
run as the docs describe: keys transposed on their last two dimensions, and Linear4/Linear5
applied to each batch element in turn (one derived layer per element).
"""

import torch
import torch.nn as nn


class SelfAttention_Params(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x):
        keys = x @ self.W_key
        queries = x @ self.W_query
        values = x @ self.W_value
        attn_scores = queries @ keys.transpose(-2, -1)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        self.attn_weights = attn_weights  # kept for the fixtures only
        self.values = values
        return attn_weights @ values


class SelfAttention_Linear(nn.Module):
    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        keys = self.W_key(x)
        queries = self.W_query(x)
        self.values = self.W_value(x)
        attn_scores = queries @ keys.transpose(-2, -1)
        self.attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        self.context_vec = self.attn_weights @ self.values
        return self.context_vec


class _DerivedLayers(nn.Module):
    """Linear4 (scores_layer=False) and Linear5 (scores_layer=True)."""

    scores_layer = False

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def _forward_2d(self, x):
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)
        if self.scores_layer:
            self.attnQueries2ScoresL = nn.Linear(queries.shape[1], queries.shape[0], bias=False)
            self.attnQueries2ScoresL.weight = nn.Parameter(keys, requires_grad=False)
            attn_scores = self.attnQueries2ScoresL(queries)
        else:
            attn_scores = queries @ keys.T
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        self.attnValues2ContextL = nn.Linear(attn_weights.shape[0], values.shape[0], bias=False)
        self.attnValues2ContextL.weight = nn.Parameter(attn_weights, requires_grad=False)
        context_vec = self.attnValues2ContextL(values.T)
        self.model = self.attnValues2ContextL
        return values, attn_weights, context_vec.T

    def forward(self, x):
        if x.dim() == 2:
            self.values, self.attn_weights, out = self._forward_2d(x)
            return out
        parts = [self._forward_2d(x[b]) for b in range(x.shape[0])]
        self.values = torch.stack([p[0] for p in parts])
        self.attn_weights = torch.stack([p[1] for p in parts])
        return torch.stack([p[2] for p in parts])


class SelfAttention_Linear4(_DerivedLayers):
    scores_layer = False


class SelfAttention_Linear5(_DerivedLayers):
    scores_layer = True


CLASSES = {
    "SelfAttention_Params": SelfAttention_Params,
    "SelfAttention_Linear": SelfAttention_Linear,
    "SelfAttention_Linear4": SelfAttention_Linear4,
    "SelfAttention_Linear5": SelfAttention_Linear5,
}


def build(class_name, d_in, d_out, qkv_bias):
    cls = CLASSES[class_name]
    if class_name == "SelfAttention_Params":
        return cls(d_in, d_out)
    return cls(d_in, d_out, qkv_bias=qkv_bias)

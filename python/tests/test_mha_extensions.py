"""MultiHeadAttention beyond the book (grouped-query attention, scale, causal=False, attention
and key-padding masks, the KV cache) against the PyTorch oracle in
tests/golden/mha_extensions.py: weights bit for bit from the same seed, outputs and every
gradient on both kernels, the cache against full forwards, and the errors."""

import numpy as np
import pytest
import torch

import llm_utils
import support  # also puts tests/golden on sys.path
import mha_extensions  # noqa: E402


def build_pair(seed=7, d_in=12, d_out=16, context_length=90, num_heads=4, qkv_bias=True, **ext):
    llm_utils.manual_seed(seed)
    ours = llm_utils.MultiHeadAttention(d_in, d_out, context_length=context_length, dropout=0.0,
                                        num_heads=num_heads, qkv_bias=qkv_bias, **ext)
    torch.manual_seed(seed)
    ref = mha_extensions.MultiHeadAttentionExt(d_in, d_out, context_length, 0.0, num_heads,
                                               qkv_bias, **ext)
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy(), err_msg=key)
    return ours, ref


def check_forward_backward(ours, ref, x, **forward_kwargs):
    torch_kwargs = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                    for k, v in forward_kwargs.items()}
    xt = torch.from_numpy(x).requires_grad_(True)
    out_ref = ref(xt, **torch_kwargs)
    out = ours(x, **forward_kwargs)
    np.testing.assert_allclose(out, out_ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    out_ref.backward(torch.from_numpy(g))
    ours.zero_grad()
    dx = ours.backward(g)
    support.assert_module_grads_close(ours, ref, dx, xt)


def inputs(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("backend", ["reference", "flash"])
@pytest.mark.parametrize("num_kv_groups", [1, 2, 4])
@pytest.mark.parametrize("causal", [True, False])
def test_grouped_query_attention_matches_pytorch(backend, num_kv_groups, causal):
    ours, ref = build_pair(num_kv_groups=num_kv_groups, causal=causal)
    assert ours.W_key.weight.shape == (num_kv_groups * 4, 12)
    assert ours.num_kv_groups == num_kv_groups
    ours.set_backend(backend)
    check_forward_backward(ours, ref, inputs((2, 70, 12)))


@pytest.mark.parametrize("backend", ["reference", "flash"])
def test_scale_override_matches_pytorch(backend):
    ours, ref = build_pair(scale=0.3)
    ours.set_backend(backend)
    check_forward_backward(ours, ref, inputs((2, 70, 12)))


def test_default_options_are_the_books_class():
    llm_utils.manual_seed(3)
    plain = llm_utils.MultiHeadAttention(12, 16, context_length=20, dropout=0.0, num_heads=4)
    llm_utils.manual_seed(3)
    same = llm_utils.MultiHeadAttention(12, 16, context_length=20, dropout=0.0, num_heads=4,
                                        num_kv_groups=4, scale=None, causal=True)
    x = inputs((2, 9, 12))
    np.testing.assert_array_equal(plain(x), same(x))


ATTN_MASK_SHAPES = [(70, 70), (1, 70), (2, 1, 70, 70), (4, 70, 70), (2, 4, 1, 70)]


@pytest.mark.parametrize("backend", ["reference", "flash"])
@pytest.mark.parametrize("shape", ATTN_MASK_SHAPES)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_attn_mask_matches_pytorch(backend, shape, kind):
    ours, ref = build_pair(num_kv_groups=2)
    ours.set_backend(backend)
    rng = np.random.default_rng(5)
    if kind == "bool":
        mask = rng.random(shape) > 0.3
        mask[..., 0] = True  # every query keeps key 0 (the causal mask keeps it too)
    else:
        mask = rng.uniform(-2, 2, shape).astype(np.float32)
    check_forward_backward(ours, ref, inputs((2, 70, 12)), attn_mask=mask)


@pytest.mark.parametrize("backend", ["reference", "flash"])
@pytest.mark.parametrize("with_attn_mask", [False, True])
def test_key_padding_mask_matches_pytorch(backend, with_attn_mask):
    ours, ref = build_pair(causal=False)
    ours.set_backend(backend)
    pad = np.zeros((2, 70), bool)
    pad[1, 50:] = True  # the second sequence has 50 tokens
    kwargs = {"key_padding_mask": pad}
    if with_attn_mask:
        kwargs["attn_mask"] = np.random.default_rng(6).uniform(-1, 1, (70, 70)).astype(np.float32)
    check_forward_backward(ours, ref, inputs((2, 70, 12)), **kwargs)


def test_padded_sequence_equals_the_sequence_alone():
    ours, _ = build_pair()
    x = inputs((2, 10, 12))
    pad = np.zeros((2, 10), bool)
    pad[1, 6:] = True
    out = ours(x, key_padding_mask=pad)
    alone = ours(x[1, :6])
    np.testing.assert_allclose(out[1, :6], alone, rtol=1e-5, atol=1e-6)


def test_fully_hidden_rows_are_zero_not_nan():
    ours, _ = build_pair(causal=False)
    ours.out_proj.bias = np.zeros(16, np.float32)
    allowed = np.ones((5, 5), bool)
    allowed[2] = False
    out = ours(inputs((5, 12)), attn_mask=allowed)
    np.testing.assert_array_equal(out[2], np.zeros(16, np.float32))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("backend", ["reference", "flash"])
@pytest.mark.parametrize("num_kv_groups", [2, 4])
@pytest.mark.parametrize("chunks", [[1] * 40, [5, 1, 13, 21]])
def test_kv_cache_matches_pytorch_and_the_full_forward(backend, num_kv_groups, chunks):
    ours, ref = build_pair(num_kv_groups=num_kv_groups)
    ours.set_backend(backend)
    ours.eval()
    x = inputs((2, sum(chunks), 12))
    full = ours(x)
    start = 0
    with torch.no_grad():
        for n in chunks:
            part = x[:, start:start + n]
            out = ours(part, use_cache=True)
            out_ref = ref(torch.from_numpy(part), use_cache=True).numpy()
            np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(out, full[:, start:start + n], rtol=1e-5, atol=1e-5)
            start += n
    assert ours.cache_size == sum(chunks)
    ours.reset_cache()
    assert ours.cache_size == 0
    np.testing.assert_allclose(ours(x[:, :3], use_cache=True), full[:, :3], rtol=1e-5, atol=1e-5)


def test_kv_cache_with_left_padding():
    # Batched generation: the shorter prompt is padded on the left and stays masked as the
    # cache grows.
    ours, ref = build_pair()
    ours.eval()
    x = inputs((2, 12, 12))
    pad = np.zeros((2, 12), bool)
    pad[0, :4] = True
    with torch.no_grad():
        out = ours(x[:, :8], key_padding_mask=pad[:, :8], use_cache=True)
        out_ref = ref(torch.from_numpy(x[:, :8]), key_padding_mask=torch.from_numpy(pad[:, :8]),
                      use_cache=True)
        np.testing.assert_allclose(out[:, 4:], out_ref.numpy()[:, 4:], rtol=1e-5, atol=1e-5)
        for t in range(8, 12):
            out = ours(x[:, t:t + 1], key_padding_mask=pad[:, :t + 1], use_cache=True)
            out_ref = ref(torch.from_numpy(x[:, t:t + 1]),
                          key_padding_mask=torch.from_numpy(pad[:, :t + 1]), use_cache=True)
            np.testing.assert_allclose(out, out_ref.numpy(), rtol=1e-5, atol=1e-5)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="num_heads must be a multiple of num_kv_groups"):
        llm_utils.MultiHeadAttention(12, 16, context_length=8, dropout=0.0, num_heads=4,
                                     num_kv_groups=3)
    with pytest.raises(ValueError, match="scale must be positive"):
        llm_utils.MultiHeadAttention(12, 16, context_length=8, dropout=0.0, num_heads=4,
                                     scale=-1.0)
    ours, _ = build_pair(context_length=8)
    x = inputs((2, 5, 12))
    with pytest.raises(ValueError, match=r"attn_mask must broadcast to .*\[2, 4, 5, 5\]"):
        ours(x, attn_mask=np.ones((3, 5), bool))
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        ours(x, key_padding_mask=np.zeros((2, 4), bool))
    ours.eval()
    ours(x, use_cache=True)
    with pytest.raises(ValueError, match="more than context_length=8; call reset_cache"):
        ours(x, use_cache=True)
    assert ours.cache_size == 5  # the failed call changed nothing
    with pytest.raises(ValueError, match="the KV cache holds batch 2"):
        ours(x[:1, :1], use_cache=True)
    with pytest.raises(RuntimeError, match="the last forward used the KV cache"):
        ours.backward(np.ones((2, 5, 16), np.float32))
    dropping = llm_utils.MultiHeadAttention(12, 16, context_length=8, dropout=0.1, num_heads=4)
    with pytest.raises(RuntimeError, match="call eval"):
        dropping(x, use_cache=True)


def test_load_state_dict_empties_the_cache():
    ours, _ = build_pair()
    ours.eval()
    ours(inputs((1, 4, 12)), use_cache=True)
    ours.load_state_dict(ours.state_dict())
    assert ours.cache_size == 0

"""CausalAttention, MultiHeadAttentionWrapper and MultiHeadAttention at the top of llm_utils,
against the book's PyTorch classes (tests/golden/book_attention.py): the book's keyword
arguments, weights bit for bit from the same seed, outputs and every gradient on both kernels,
state dicts with the mask buffer, train()/eval() and dropout, and ValueError messages."""

import numpy as np
import pytest
import torch

import llm_utils
import support  # also puts tests/golden on sys.path
import book_attention  # noqa: E402

CLASSES = ["CausalAttention", "MultiHeadAttentionWrapper", "MultiHeadAttention"]


def build_pair(name, d_in, d_out, context_length, num_heads, bias, seed):
    kwargs = dict(d_in=d_in, d_out=d_out, context_length=context_length, dropout=0.0,
                  qkv_bias=bias)
    if name != "CausalAttention":
        kwargs["num_heads"] = num_heads
    llm_utils.manual_seed(seed)
    ours = getattr(llm_utils, name)(**kwargs)
    torch.manual_seed(seed)
    ref = book_attention.build(name, d_in, d_out, context_length, 0.0, num_heads, bias)
    return ours, ref


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("backend", ["reference", "flash"])
@pytest.mark.parametrize("shape", [(7, 5), (2, 70, 5)])
def test_matches_pytorch(name, backend, shape):
    ours, ref = build_pair(name, 5, 4, 80, 2, True, 42)
    ours.set_backend(backend)
    ref_state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    our_state = ours.state_dict()
    assert list(our_state) == list(ref_state)
    for key, value in ref_state.items():
        np.testing.assert_array_equal(our_state[key], value, err_msg=key)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    out_ref = ref(xt)
    out = ours(x)
    np.testing.assert_allclose(out, out_ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    out_ref.backward(torch.from_numpy(g))
    dx = ours.backward(g)
    support.assert_module_grads_close(ours, ref, dx, xt)


def test_the_books_numbers():
    x = np.array([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                  [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]], np.float32)
    batch = np.stack([x, x])
    llm_utils.manual_seed(123)
    mha = llm_utils.MultiHeadAttention(3, 2, context_length=6, dropout=0.0, num_heads=2)
    np.testing.assert_allclose(mha(batch)[0, 0], [0.3190, 0.4858], atol=5e-5)
    llm_utils.manual_seed(123)
    ca = llm_utils.CausalAttention(3, 2, 6, 0.0)
    np.testing.assert_allclose(ca(batch)[1, 5], [-0.5299, -0.1081], atol=5e-5)


@pytest.mark.parametrize("name", CLASSES)
def test_pytorch_state_dict_loads(name):
    ours, ref = build_pair(name, 3, 4, 6, 2, False, 5)
    torch.manual_seed(6)
    other = book_attention.build(name, 3, 4, 6, 0.0, 2, False)
    aliases = [p.data for _, p in ours.named_parameters()]
    result = ours.load_state_dict(other.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (key, value), alias in zip(other.named_parameters(), aliases):
        np.testing.assert_array_equal(alias, value.detach().numpy(), err_msg=key)
    x = np.random.default_rng(3).standard_normal((2, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(x), other(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_dropout_in_training_mode_only():
    x = np.random.default_rng(4).standard_normal((2, 6, 3)).astype(np.float32)
    llm_utils.manual_seed(9)
    m = llm_utils.MultiHeadAttention(3, 4, 6, dropout=0.5, num_heads=2)
    assert m.training and m.dropout == 0.5
    a, b = m(x), m(x)
    assert not np.allclose(a, b)  # a new mask each forward
    assert m.eval() is m and not m.training
    np.testing.assert_array_equal(m(x), m(x))
    m.train()
    llm_utils.manual_seed(1)
    c = m(x)
    llm_utils.manual_seed(1)
    np.testing.assert_array_equal(m(x), c)  # reproducible from the seed


@pytest.mark.parametrize("make, text", [
    (lambda: llm_utils.MultiHeadAttention(3, 5, 6, 0.0, num_heads=2),
     "d_out must be divisible by num_heads"),
    (lambda: llm_utils.CausalAttention(3, 2, 6, dropout=1.0), "dropout must be in [0, 1)"),
    (lambda: llm_utils.MultiHeadAttentionWrapper(3, 2, 6, -0.5, 2), "dropout must be in [0, 1)"),
    (lambda: llm_utils.CausalAttention(3, 2, 4, 0.0)(np.zeros((5, 3), np.float32)),
     "more than context_length=4"),
])
def test_errors_are_value_errors(make, text):
    with pytest.raises(ValueError, match=text.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        make()

"""Live parity with PyTorch running the original's code (tests/golden/original_selfattn.py):
every class and bias setting, 2-D and 3-D input, random shapes and seeds. Checks the initial
weights (bit for bit), outputs, attention weights, values, context vectors, derived layers, the
generator after forward, the repr, and every gradient, including which ones are None."""

import numpy as np
import pytest
import torch

import llm_utils
from support import (CLASS_BIAS, DETACHED, assert_forward_close, assert_grad_close, build,
                     random_input, to_numpy)

SEEDS = [0, 1, 2]


def case_shape(class_name, bias, rank, seed):
    """A random shape for this case, reproducible from its parameters."""
    rng = np.random.default_rng([seed, rank, bias, len(class_name)])
    d_in, d_out, seq = (int(v) for v in rng.integers(1, [10, 9, 13]))
    batch = int(rng.integers(1, 4))
    shape = (seq, d_in) if rank == 2 else (batch, seq, d_in)
    return d_in, d_out, shape, rng


CASES = [(c, b, r, s) for c, b in CLASS_BIAS for r in (2, 3) for s in SEEDS]


@pytest.mark.parametrize("class_name,bias,rank,seed", CASES)
def test_forward_and_backward_match_pytorch(class_name, bias, rank, seed):
    d_in, d_out, shape, rng = case_shape(class_name, bias, rank, seed)
    torch_seed = int(rng.integers(0, 2**31))
    ours, ref = build(class_name, d_in, d_out, bias, torch_seed)

    # The same seed gives the same weights, bit for bit.
    ref_state = {k: to_numpy(v) for k, v in ref.state_dict().items()}
    our_state = ours.state_dict()
    assert list(our_state) == list(ref_state)
    for name, value in ref_state.items():
        np.testing.assert_array_equal(our_state[name], value, err_msg=name)

    x = random_input(rng, shape)
    x_ref = torch.from_numpy(x.copy()).requires_grad_(True)
    out_ref = ref(x_ref)
    out = ours(x)
    assert_forward_close(out, to_numpy(out_ref), "output")
    assert_forward_close(ours.attn_weights, to_numpy(ref.attn_weights), "attn_weights")
    assert_forward_close(ours.values, to_numpy(ref.values), "values")
    assert_forward_close(ours.context_vec, to_numpy(out_ref), "context_vec")
    assert repr(ours) == repr(ref)

    if class_name in DETACHED:
        # For 3-D input the oracle's per-element loop leaves the last element's layers.
        np.testing.assert_array_equal(ours.model.weight, ours.attnValues2ContextL.weight)
        assert_forward_close(ours.attnValues2ContextL.weight,
                             to_numpy(ref.attnValues2ContextL.weight), "attnValues2ContextL")
        assert ours.attnValues2ContextL.bias is None
        if class_name == "SelfAttention_Linear5":
            assert_forward_close(ours.attnQueries2ScoresL.weight,
                                 to_numpy(ref.attnQueries2ScoresL.weight), "attnQueries2ScoresL")

    # The original's Linear4/Linear5 forward draws from the generator; ours skips as many draws.
    np.testing.assert_array_equal(llm_utils.rand(7), torch.rand(7).numpy())

    grad_out = random_input(rng, out.shape)
    out_ref.backward(torch.from_numpy(grad_out))
    dx = ours.backward(grad_out)
    assert_grad_close(dx, to_numpy(x_ref.grad), "dx")
    ref_params = dict(ref.named_parameters())
    our_params = dict(ours.named_parameters())
    assert list(our_params) == [n for n, p in ref.named_parameters() if p.requires_grad]
    for name, p in our_params.items():
        expected = ref_params[name].grad
        if expected is None:
            assert p.grad is None, f"{name}: PyTorch's grad is None"
        else:
            assert p.grad is not None, f"{name}: PyTorch has a gradient"
            assert_grad_close(p.grad, to_numpy(expected), f"grad of {name}")
    if class_name in DETACHED:
        assert all(our_params[n].grad is None for n in our_params if not n.startswith("W_value"))


@pytest.mark.parametrize("class_name,bias", CLASS_BIAS)
def test_state_dict_after_forward_has_the_originals_keys(class_name, bias):
    ours, ref = build(class_name, 4, 3, bias, seed=5)
    x = random_input(np.random.default_rng(5), (6, 4))
    ours(x)
    ref(torch.from_numpy(x))
    expected = {k: to_numpy(v) for k, v in ref.state_dict().items()}
    actual = ours.state_dict(include_derived=True)
    assert list(actual) == list(expected)
    for name in expected:
        assert_forward_close(actual[name], expected[name], name)


def test_the_books_numbers():
    x = np.array([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                  [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]], np.float32)
    llm_utils.manual_seed(123)
    params = llm_utils.selfAttn.SelfAttention_Params(3, 2)
    np.testing.assert_allclose(params(x)[1], [0.3061, 0.8210], atol=5e-5)
    llm_utils.manual_seed(789)
    linear = llm_utils.selfAttn.SelfAttention_Linear(3, 2)
    np.testing.assert_allclose(linear(x)[0], [-0.0739, 0.0713], atol=5e-5)


@pytest.mark.parametrize("class_name,bias", CLASS_BIAS)
def test_gradients_accumulate_like_autograd(class_name, bias):
    ours, ref = build(class_name, 3, 2, bias, seed=11)
    rng = np.random.default_rng(11)
    for _ in range(2):  # two forward/backward pairs without zero_grad: gradients add up
        x = random_input(rng, (2, 5, 3))
        g = random_input(rng, (2, 5, 2))
        ref(torch.from_numpy(x)).backward(torch.from_numpy(g))
        ours(x)
        ours.backward(g)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        if ref_params[name].grad is None:
            assert p.grad is None
        else:
            assert_grad_close(p.grad, to_numpy(ref_params[name].grad), name)
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def assert_param_grads_close(ours, ref):
    """Every parameter gradient against autograd's; None where autograd's is None."""
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        if ref_params[name].grad is None:
            assert p.grad is None, name
        else:
            assert_grad_close(p.grad, to_numpy(ref_params[name].grad), name)


@pytest.mark.parametrize("backend", ["reference", "flash"])
@pytest.mark.parametrize("class_name,bias", CLASS_BIAS)
def test_each_backend_matches_pytorch(class_name, bias, backend):
    # Past 64 x 64 scores "auto" takes the fused kernel; force each one on such a shape.
    ours, ref = build(class_name, 16, 8, bias, seed=13)
    ours.set_backend(backend)
    rng = np.random.default_rng(13)
    x = random_input(rng, (2, 70, 16))
    x_ref = torch.from_numpy(x.copy()).requires_grad_(True)
    out_ref = ref(x_ref)
    assert_forward_close(ours(x), to_numpy(out_ref), "output")
    assert_forward_close(ours.attn_weights, to_numpy(ref.attn_weights), "attn_weights")
    grad_out = random_input(rng, (2, 70, 8))
    out_ref.backward(torch.from_numpy(grad_out))
    assert_grad_close(ours.backward(grad_out), to_numpy(x_ref.grad), "dx")
    assert_param_grads_close(ours, ref)


@pytest.mark.parametrize("class_name,bias", [c for c in CLASS_BIAS if c[0] != "SelfAttention_Params"])
def test_packed_projection_matches_pytorch(class_name, bias):
    # d_in >= 256 and >= 256 rows: Q, K, V come from one GEMM with the packed weight.
    ours, ref = build(class_name, 300, 8, bias, seed=14)
    rng = np.random.default_rng(14)
    x = random_input(rng, (2, 150, 300))
    x_ref = torch.from_numpy(x.copy()).requires_grad_(True)
    out_ref = ref(x_ref)
    assert_forward_close(ours(x), to_numpy(out_ref), "output")
    assert_forward_close(ours.values, to_numpy(ref.values), "values")
    grad_out = random_input(rng, (2, 150, 8))
    out_ref.backward(torch.from_numpy(grad_out))
    assert_grad_close(ours.backward(grad_out), to_numpy(x_ref.grad), "dx")
    # The packed backward's weight and bias gradients: each layer's rows of one dW GEMM.
    assert_param_grads_close(ours, ref)
    # The weights change in place between calls (an optimizer step): the packed copy follows.
    ours.W_value.weight[:] = 0.0
    ref.W_value.weight.data.zero_()
    assert_forward_close(ours(x), to_numpy(ref(x_ref)), "output after a weight change")

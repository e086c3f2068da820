"""What the test files share: the PyTorch oracle (tests/golden, our restatement of the original,
imported from there rather than copied), building a module and its oracle from one seed, and the
parity tolerances of DESIGN.md section 5."""

import os
import sys

import numpy as np
import torch

import llm_utils
from llm_utils import selfAttn

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden")
sys.path.insert(0, GOLDEN_DIR)
import original_selfattn as orig  # noqa: E402
import safetensors_io  # noqa: E402

CLASSES = ["SelfAttention_Params", "SelfAttention_Linear", "SelfAttention_Linear4",
           "SelfAttention_Linear5"]
# (class, qkv_bias): SelfAttention_Params has no bias.
CLASS_BIAS = [(c, b) for c in CLASSES for b in (False, True)
              if not (c == "SelfAttention_Params" and b)]
# Only W_value (and its bias) gets gradients in these: the attention weights are frozen layers.
DETACHED = {"SelfAttention_Linear4", "SelfAttention_Linear5"}


def build(class_name, d_in, d_out, bias, seed):
    """Our module and the oracle, each built after seeding its framework with `seed`."""
    torch.manual_seed(seed)
    ref = orig.build(class_name, d_in, d_out, bias)
    llm_utils.manual_seed(seed)
    cls = getattr(selfAttn, class_name)
    ours = cls(d_in, d_out) if class_name == "SelfAttention_Params" else cls(d_in, d_out,
                                                                              qkv_bias=bias)
    return ours, ref


def to_numpy(t):
    return t.detach().numpy()


def assert_forward_close(actual, expected, what=""):
    """max abs error <= 1e-5 * max(1, |ref|), element by element."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == np.float32, (what, actual.dtype)
    bound = 1e-5 * np.maximum(1.0, np.abs(expected))
    err = np.abs(actual.astype(np.float64) - expected)
    assert np.all(err <= bound), f"{what}: max error {err.max():.3g} (bound {bound.max():.3g})"


def assert_grad_close(actual, expected, what=""):
    """max abs error <= 1e-5 * max(1, max |ref|): gradients are sums over the sequence."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    bound = 1e-5 * max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= bound, f"{what}: max error {err:.3g} (bound {bound:.3g})"


def random_input(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_module_grads_close(ours, ref, dx, x_ref):
    """dx against autograd's x_ref.grad, and every parameter gradient against ref's (the
    tolerances of the book-class suites: gradients are sums over the sequence)."""
    np.testing.assert_allclose(dx, x_ref.grad.numpy(), rtol=1e-5, atol=1e-4)
    ref_grads = dict(ref.named_parameters())
    for key, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, ref_grads[key].grad.numpy(), rtol=1e-5, atol=1e-4,
                                   err_msg=key)

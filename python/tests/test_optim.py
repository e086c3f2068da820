"""llm_utils.optim.SGD / AdamW against torch.optim, stepping the same modules built from one seed.

Two ways of obtaining each step's gradients, as tests/test_optim.cpp does:
- PyTorch's, copied into our parameters (`p.grad = ...`): isolates the optimizer's arithmetic,
  which must match to 1e-6;
- our own backward: training end to end, compared at the parity tolerance.
"""

import numpy as np
import pytest
import torch

import llm_utils
from llm_utils.optim import SGD, AdamW
from support import CLASS_BIAS, assert_grad_close, build, random_input, to_numpy

# name -> (keyword arguments, shared by both frameworks)
CONFIGS = {
    "sgd_plain": ("sgd", dict(lr=0.1)),
    "sgd_momentum": ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd_nesterov": ("sgd", dict(lr=0.01, momentum=0.9, weight_decay=0.001, nesterov=True)),
    "sgd_maximize": ("sgd", dict(lr=0.05, momentum=0.5, maximize=True)),
    "adamw_default": ("adamw", dict()),
    "adamw_amsgrad": ("adamw", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1,
                                    amsgrad=True)),
    "adamw_maximize": ("adamw", dict(lr=0.01, weight_decay=0.0, maximize=True)),
}
STEPS = 3


def make_optimizers(config, ours, ref):
    kind, kwargs = CONFIGS[config]
    if kind == "sgd":
        return SGD(ours.parameters(), **kwargs), torch.optim.SGD(ref.parameters(), **kwargs)
    return AdamW(ours.parameters(), **kwargs), torch.optim.AdamW(ref.parameters(), **kwargs)


def run(class_name, bias, config, pytorchs_gradients):
    ours, ref = build(class_name, 4, 3, bias, seed=21)
    opt, ref_opt = make_optimizers(config, ours, ref)
    rng = np.random.default_rng(21)
    for step in range(STEPS):
        x = random_input(rng, (2, 5, 4))
        g = random_input(rng, (2, 5, 3))
        opt.zero_grad()
        ref_opt.zero_grad(set_to_none=True)
        ref(torch.from_numpy(x)).backward(torch.from_numpy(g))
        ours(x)
        ours.backward(g)
        ref_params = dict(ref.named_parameters())
        for name, p in ours.named_parameters():
            ref_grad = ref_params[name].grad
            assert (p.grad is None) == (ref_grad is None), f"step {step} {name}"
            if pytorchs_gradients and ref_grad is not None:
                p.grad = to_numpy(ref_grad)
        opt.step()
        ref_opt.step()
        for name, p in ours.named_parameters():
            expected = to_numpy(ref_params[name])
            where = f"step {step} {name}"
            if pytorchs_gradients:
                np.testing.assert_allclose(p.data, expected, rtol=0, atol=1e-6, err_msg=where)
            elif name == "W_key.bias" and config.startswith("adamw") and p.grad is not None:
                # Its exact gradient is zero (a per-row constant added to the scores leaves the
                # softmax unchanged): both frameworks compute rounding noise, which Adam's
                # normalisation scales up to +-lr. Only that the noise is tiny is comparable.
                assert np.abs(p.grad).max() < 1e-5, where
            else:
                assert_grad_close(p.data, expected, where)


CASES = [(c, b, o) for c, b in CLASS_BIAS if b or c == "SelfAttention_Params" for o in CONFIGS]


@pytest.mark.parametrize("class_name,bias,config", CASES)
def test_steps_match_torch_optim_on_the_same_gradients(class_name, bias, config):
    run(class_name, bias, config, pytorchs_gradients=True)


@pytest.mark.parametrize("class_name,bias,config", CASES)
def test_training_with_our_gradients_follows_pytorch(class_name, bias, config):
    run(class_name, bias, config, pytorchs_gradients=False)


def test_parameters_without_gradient_are_skipped_even_with_weight_decay():
    llm_utils.manual_seed(1)
    m = llm_utils.selfAttn.SelfAttention_Linear4(3, 2)
    w_query = m.W_query.weight.copy()
    opt = AdamW(m.parameters(), lr=0.1, weight_decay=0.5)
    m(np.arange(12, dtype=np.float32).reshape(4, 3))
    m.backward(np.ones((4, 2), np.float32))
    opt.step()
    np.testing.assert_array_equal(m.W_query.weight, w_query)


def test_zero_grad_and_closure():
    llm_utils.manual_seed(2)
    m = llm_utils.selfAttn.SelfAttention_Linear(3, 2)
    opt = SGD(m.parameters(), lr=0.1)
    x = np.ones((4, 3), np.float32)

    def closure():
        opt.zero_grad()
        y = m(x)
        m.backward(2 * y)
        return float((y ** 2).sum())

    loss = opt.step(closure)
    assert isinstance(loss, float)
    assert all(p.grad is not None for p in m.parameters())
    opt.zero_grad(set_to_none=False)
    assert all(np.all(p.grad == 0) for p in m.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_optimizer_keeps_the_module_alive():
    llm_utils.manual_seed(3)
    m = llm_utils.selfAttn.SelfAttention_Linear(3, 2)
    x = np.ones((2, 3), np.float32)
    opt = AdamW(m.parameters(), lr=0.1)
    params = opt.params
    m(x)
    m.backward(np.ones((2, 2), np.float32))
    del m
    import gc
    gc.collect()
    before = params[0].data.copy()
    opt.step()
    assert not np.array_equal(params[0].data, before)


def test_defaults_and_repr():
    llm_utils.manual_seed(4)
    m = llm_utils.selfAttn.SelfAttention_Params(3, 2)
    opt = AdamW(m.parameters(), lr=0.01, betas=[0.8, 0.9])
    assert opt.defaults == dict(lr=0.01, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.01,
                                amsgrad=False, maximize=False)
    assert repr(opt).startswith("AdamW(lr=0.01, betas=(0.8, 0.9)")
    sgd = SGD(m.parameters(), 0.5)
    assert sgd.defaults["lr"] == 0.5 and sgd.defaults["momentum"] == 0.0
    assert len(sgd.params) == 3

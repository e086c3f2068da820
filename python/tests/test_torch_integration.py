"""llm_utils.torch inside PyTorch: scaled_dot_product_attention against the attention formula
written here in float64 PyTorch operations (outputs and the gradients autograd gives), that the
fused kernels read and write the tensors' own memory, the fallbacks to PyTorch operations
(dropout drawn as PyTorch draws it), CausalAttention and MultiHeadAttention against the book's
classes (tests/golden/book_attention.py: weights from the same seed, state dicts, outputs,
gradients, a few AdamW steps), MultiHeadAttention's variants against the C++ module
(llm_utils.MultiHeadAttention) with the same weights, and varlen_attention against one call per
sequence."""

import math

import numpy as np
import pytest
import torch

import llm_utils
import llm_utils.torch as lt
import support  # noqa: F401  (puts tests/golden on sys.path)
import book_attention as book  # noqa: E402
import mha_variants  # noqa: E402


def reference_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """softmax(q k^T * scale + mask) v in float64, heads of k and v repeated for GQA."""
    q, k, v = q.double(), k.double(), v.double()
    if q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        repeat = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeat, dim=-3), v.repeat_interleave(repeat, dim=-3)
    s = q @ k.transpose(-1, -2) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool \
            else s + attn_mask.double()
    if is_causal:
        n, m = s.shape[-2:]
        s = s.masked_fill(torch.ones(n, m, dtype=torch.bool).triu(1), -math.inf)
    return torch.softmax(s, dim=-1) @ v


def assert_close(actual, expected, rel, what):
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = (actual - expected).abs().max().item()
    bound = rel * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def leaves(*shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes]


SDPA_CASES = [
    # (query, key, value shapes, enable_gqa)
    ((70, 16), (90, 16), (90, 8), False),                       # rank 2
    ((3, 70, 16), (3, 70, 16), (3, 70, 16), False),             # rank 3
    ((2, 8, 67, 32), (2, 2, 130, 32), (2, 2, 130, 24), True),   # rank 4, GQA 8/2
    ((2, 3, 2, 33, 16), (2, 3, 2, 33, 16), (2, 3, 2, 33, 16), False),  # rank 5
]


@pytest.mark.parametrize("shapes", SDPA_CASES, ids=["rank2", "rank3", "rank4-gqa", "rank5"])
@pytest.mark.parametrize("variant", ["plain", "causal", "bool-mask", "float-mask", "scale"])
def test_sdpa_matches_the_formula_and_its_gradients(shapes, variant):
    q_shape, k_shape, v_shape, gqa = shapes
    q, k, v = leaves(q_shape, k_shape, v_shape, seed=1)
    n, m = q_shape[-2], k_shape[-2]
    mask, causal, scale = None, False, None
    g = torch.Generator().manual_seed(2)
    if variant == "causal":
        causal = True
    elif variant == "bool-mask":  # key padding, broadcast over the queries
        mask = torch.rand(m, generator=g) > 0.3
        mask[0] = True
    elif variant == "float-mask":
        mask = torch.randn(n, m, generator=g)
    elif variant == "scale":
        scale = 0.3
    assert lt.can_use_fused(q, k, v, mask)
    out = lt.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale,
                                          enable_gqa=gqa)
    want = reference_sdpa(q, k, v, mask, causal, scale)
    assert_close(out, want, 1e-5, "out")
    dout = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    want_grads = torch.autograd.grad(want, (q, k, v), dout.double())
    for name, got, exp in zip("qkv", grads, want_grads):
        assert_close(got, exp, 3e-5, f"d{name}")


def test_sdpa_hands_the_tensors_memory_to_the_kernels(monkeypatch):
    # q, k, v as the transposed heads of (B, N, H, d) projections: the kernel gets views of the
    # same memory, and writes the output and the gradients into tensors without a copy.
    base = [t.detach() for t in leaves((2, 40, 4, 16), (2, 40, 2, 16), (2, 40, 2, 16), seed=3)]
    q, k, v = (t.transpose(1, 2).requires_grad_() for t in base)
    seen = {}
    forward, backward = lt._k.forward, lt._k.backward

    def spy_forward(qa, ka, va, options, out, lse):
        seen["forward"] = (qa, ka, va, out)
        return forward(qa, ka, va, options, out, lse)

    def spy_backward(qa, ka, va, out, lse, dout, options, need_dq, need_dk, dq, dk, dv):
        seen["backward"] = (dq, dk, dv)
        return backward(qa, ka, va, out, lse, dout, options, need_dq, need_dk, dq, dk, dv)

    monkeypatch.setattr(lt._k, "forward", spy_forward)
    monkeypatch.setattr(lt._k, "backward", spy_backward)
    out = lt.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    for arr, tensor in zip(seen["forward"][:3], base):
        assert np.shares_memory(arr, tensor.numpy())
    assert np.shares_memory(seen["forward"][3], out.detach().numpy())
    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
    for arr, grad in zip(seen["backward"], (dq, dk, dv)):
        assert np.shares_memory(arr, grad.numpy())
    assert_close(out, reference_sdpa(q, k, v, is_causal=True), 1e-5, "out")


def test_what_the_kernels_do_not_take_runs_in_pytorch_operations():
    q, k, v = leaves((2, 4, 30, 16), (2, 4, 30, 16), (2, 4, 30, 16), dtype=torch.float64, seed=4)
    assert not lt.can_use_fused(q, k, v)
    out = lt.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.dtype == torch.float64
    assert_close(out, reference_sdpa(q, k, v, is_causal=True), 1e-12, "float64 out")
    # Dropout: the weights dropped by torch's dropout, drawing what F.dropout draws.
    q32, k32, v32 = (t.detach().float() for t in (q, k, v))
    assert not lt.can_use_fused(q32, k32, v32, dropout_p=0.25)
    torch.manual_seed(5)
    out = lt.scaled_dot_product_attention(q32, k32, v32, dropout_p=0.25)
    torch.manual_seed(5)
    p = torch.softmax(q32 @ k32.transpose(-1, -2) / 4.0, dim=-1)
    want = torch.nn.functional.dropout(p, 0.25) @ v32
    assert_close(out, want, 1e-6, "dropout out")
    # A mask that needs its gradient.
    mask = torch.zeros(30, 30, requires_grad=True)
    assert not lt.can_use_fused(q32, k32, v32, mask)
    (lt.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask) ** 2).sum().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0


def test_bfloat16_tensors_run_the_bfloat16_kernels():
    q, k, v = leaves((2, 4, 70, 32), (2, 4, 70, 32), (2, 4, 70, 32), dtype=torch.bfloat16, seed=6)
    assert lt.can_use_fused(q, k, v)
    out = lt.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.dtype == torch.bfloat16
    want = reference_sdpa(q, k, v, is_causal=True)
    # bfloat16 storage of q, k, v, P and out: a few units of 2^-8 (docs/numerics.md).
    assert_close(out, want, 2e-2, "bf16 out")
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    want_grads = torch.autograd.grad(want.sum(), (q, k, v))
    for name, got, exp in zip("qkv", grads, want_grads):
        assert got.dtype == torch.bfloat16
        assert_close(got, exp, 5e-2, f"bf16 d{name}")


def test_sdpa_errors_name_the_problem():
    q, k, v = leaves((2, 8, 10, 16), (2, 2, 10, 16), (2, 2, 10, 16), seed=7)
    with pytest.raises(ValueError, match="enable_gqa"):
        lt.scaled_dot_product_attention(q, k, v)
    with pytest.raises(ValueError, match="batch dimensions"):
        lt.scaled_dot_product_attention(q, k[:1], v[:1], enable_gqa=True)
    with pytest.raises(ValueError, match="window_left"):
        lt.scaled_dot_product_attention(q, k, v, enable_gqa=True, window_left=-2)
    with pytest.raises(ValueError, match="value must have key's heads"):
        lt.scaled_dot_product_attention(q, k, v[:, :1], enable_gqa=True)
    with pytest.raises(ValueError, match="more dimensions than the scores"):
        lt.scaled_dot_product_attention(q, k, v, enable_gqa=True,
                                        attn_mask=torch.zeros(1, 2, 8, 10, 10))
    with pytest.raises(ValueError, match="does not broadcast"):
        lt.scaled_dot_product_attention(q, k, v, enable_gqa=True, attn_mask=torch.zeros(3, 10))
    for dtype in (torch.float32, torch.float64):  # the same on either path
        with pytest.raises(ValueError, match="scale must be positive"):
            lt.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype),
                                            enable_gqa=True, scale=-1.0)


def test_the_kernels_backward_refuses_a_second_derivative():
    q, k, v = leaves((1, 2, 12, 8), (1, 2, 12, 8), (1, 2, 12, 8), seed=19)
    out = lt.scaled_dot_product_attention(q, k, v)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(out.sum(), q, create_graph=True)
    (dq,) = torch.autograd.grad(out.sum(), q)  # a first derivative is fine
    assert dq.abs().sum() > 0


def test_alibi_slopes_that_need_a_gradient_get_one():
    q, k, v = leaves((1, 2, 12, 8), (1, 2, 12, 8), (1, 2, 12, 8), seed=20)
    slopes = torch.tensor([0.5, 0.25], requires_grad=True)
    lt.attention(q, k, v, alibi_slopes=slopes).sum().backward()
    q64, k64, v64 = (t.detach().double() for t in (q, k, v))
    slopes64 = slopes.detach().double().requires_grad_()
    lt.attention(q64, k64, v64, alibi_slopes=slopes64).sum().backward()
    assert_close(slopes.grad, slopes64.grad, 1e-5, "dslopes")


def test_a_bool_mask_stays_a_broadcast_view(monkeypatch):
    # A (L, S) key mask for (B, H, L, S) scores reaches the kernel as a stride-0 view, not as a
    # materialised (B, H, L, S) array.
    q, k, v = leaves((2, 4, 30, 8), (2, 4, 30, 8), (2, 4, 30, 8), seed=21)
    mask = torch.rand(30, 30, generator=torch.Generator().manual_seed(22)) > 0.3
    mask[:, 0] = True
    seen = {}
    forward = lt._k.forward

    def spy(qa, ka, va, options, out, lse):
        seen["mask"] = options["attn_mask"]
        return forward(qa, ka, va, options, out, lse)

    monkeypatch.setattr(lt._k, "forward", spy)
    out = lt.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert seen["mask"].strides[:2] == (0, 0) and seen["mask"].dtype == np.float32
    assert_close(out, reference_sdpa(q, k, v, mask), 1e-5, "out")


def build_pair(name, seed, **kwargs):
    torch.manual_seed(seed)
    ref = getattr(book, name)(**kwargs)
    torch.manual_seed(seed)
    ours = getattr(lt, name)(**kwargs)
    return ref, ours


MODULES = [
    ("CausalAttention", dict(d_in=48, d_out=32, context_length=80, dropout=0.0, qkv_bias=True)),
    ("MultiHeadAttention", dict(d_in=48, d_out=64, context_length=80, dropout=0.0, num_heads=4)),
]


@pytest.mark.parametrize("name,kwargs", MODULES, ids=[m[0] for m in MODULES])
def test_modules_are_the_books_classes(name, kwargs):
    ref, ours = build_pair(name, 123, **kwargs)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(ref_sd) == list(our_sd)
    for key in ref_sd:
        assert torch.equal(ref_sd[key], our_sd[key]), key
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in ours.named_parameters()]
    x = torch.randn(3, 75, 48, generator=torch.Generator().manual_seed(8))
    for inp in (x, x[0]):  # (B, N, d_in) and (N, d_in)
        assert_close(ours(inp), ref(inp), 1e-5, "forward")
    # Gradients of x and of every parameter, then five AdamW steps on both.
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-2)
    for step in range(5):
        xs = x.clone().requires_grad_()
        xo = x.clone().requires_grad_()
        loss_ref = (ref(xs) ** 2).mean()
        loss_ours = (ours(xo) ** 2).mean()
        for opt in (opt_ref, opt_ours):
            opt.zero_grad()
        loss_ref.backward()
        loss_ours.backward()
        assert_close(loss_ours, loss_ref, 1e-5, f"loss at step {step}")
        if step == 0:
            assert_close(xo.grad, xs.grad, 1e-5, "dx")
            for (n, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters()):
                assert_close(b.grad, a.grad, 1e-5, f"d{n}")
        opt_ref.step()
        opt_ours.step()
    for (n, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters()):
        # The key bias's exact gradient is 0 (it adds q . b_k to every score of a row, which the
        # softmax ignores): what both get is rounding noise, which Adam scales to steps of ~lr.
        if n != "W_key.bias":
            assert_close(b, a, 1e-4, f"{n} after 5 AdamW steps")
    # Each loads the other's state dict.
    ours.load_state_dict(ref.state_dict())
    ref.load_state_dict(ours.state_dict())


def test_dropout_in_training_draws_as_the_book_does():
    ref, ours = build_pair("MultiHeadAttention", 9, d_in=16, d_out=16, context_length=20,
                           dropout=0.3, num_heads=2)
    x = torch.randn(2, 20, 16, generator=torch.Generator().manual_seed(10))
    torch.manual_seed(11)
    y_ref = ref(x)
    torch.manual_seed(11)
    y_ours = ours(x)
    assert_close(y_ours, y_ref, 1e-5, "training forward with dropout")
    ref.eval()
    ours.eval()
    assert_close(ours(x), ref(x), 1e-5, "eval forward")


@pytest.mark.parametrize("kwargs", [
    dict(rope=True, rope_theta=500.0), dict(window_left=5), dict(softcap=1.5), dict(alibi=True),
    dict(sinks=True), dict(num_kv_groups=2, rope=True, window_left=7, softcap=3.0, alibi=True,
                           sinks=True)], ids=["rope", "window", "softcap", "alibi", "sinks", "all"])
def test_multihead_variants_equal_the_oracle(kwargs):
    # tests/golden/mha_variants.py: the book's class with each variant in plain PyTorch
    # operations (RoPE as the book's Llama code, the sink as an extra logit).
    torch.manual_seed(16)
    ref = mha_variants.MultiHeadAttentionVariants(24, 32, 40, 0.0, 4, True, **kwargs)
    torch.manual_seed(16)
    ours = lt.MultiHeadAttention(24, 32, 40, 0.0, 4, True, **kwargs)
    assert list(ref.state_dict()) == list(ours.state_dict())
    if ref.sinks is not None:
        with torch.no_grad():
            ref.sinks.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
            ours.sinks.copy_(ref.sinks)
    for key, value in ref.state_dict().items():
        assert torch.equal(value, ours.state_dict()[key]), key
    x = torch.randn(2, 40, 24, generator=torch.Generator().manual_seed(17))
    y_ref, y_ours = ref(x), ours(x)
    assert_close(y_ours, y_ref, 1e-5, "forward")
    dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(18))
    y_ref.backward(dy)
    y_ours.backward(dy)
    for (name, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert_close(b.grad, a.grad, 2e-5, f"d{name}")


def test_multihead_variants_equal_the_cpp_module():
    # The same weights in llm_utils.MultiHeadAttention (C++: RoPE, the variants and their
    # backward inside the module) and llm_utils.torch.MultiHeadAttention (RoPE in PyTorch
    # operations, the fused kernel through autograd).
    kwargs = dict(num_kv_groups=2, window_left=9, softcap=2.5, alibi=True, sinks=True, rope=True,
                  rope_theta=500.0)
    torch.manual_seed(12)
    ours = lt.MultiHeadAttention(24, 32, 64, 0.0, 4, True, **kwargs)
    with torch.no_grad():
        ours.sinks.copy_(torch.linspace(-1, 1, 4))
    cpp = llm_utils.MultiHeadAttention(24, 32, 64, 0.0, 4, True, **kwargs)
    assert list(cpp.state_dict()) == list(ours.state_dict())
    cpp.load_state_dict({k: v.numpy() for k, v in ours.state_dict().items()})
    x = torch.randn(2, 50, 24, generator=torch.Generator().manual_seed(13), requires_grad=True)
    y = ours(x)
    y_cpp = cpp(x.detach().numpy())
    assert_close(torch.from_numpy(y_cpp), y, 1e-5, "forward")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(14))
    y.backward(dy)
    dx_cpp = cpp.backward(dy.numpy())
    assert_close(torch.from_numpy(dx_cpp), x.grad, 1e-5, "dx")
    cpp_grads = dict(cpp.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(torch.tensor(cpp_grads[name].grad), p.grad, 2e-5, f"d{name}")


def test_varlen_attention_is_one_call_per_sequence():
    cu = [0, 7, 7, 90, 130]
    q, k, v = leaves((130, 4, 16), (130, 2, 16), (130, 2, 16), seed=15)
    sinks = torch.tensor([0.5, -1.0, 0.0, 2.0], requires_grad=True)
    out = lt.varlen_attention(q, k, v, cu, cu, causal=True, window_left=20, sinks=sinks)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(16))
    grads = torch.autograd.grad(out, (q, k, v, sinks), dout)
    # Each sequence alone, through attention() on (1, H, n, d) views.
    pieces = []
    for s in range(len(cu) - 1):
        rows = slice(cu[s], cu[s + 1])
        as4 = [t[rows].transpose(0, 1).unsqueeze(0) for t in (q, k, v)]
        pieces.append(lt.attention(*as4, causal=True, window_left=20, sinks=sinks)[0]
                      .transpose(0, 1))
    want = torch.cat(pieces)
    assert_close(out, want, 1e-5, "out")
    want_grads = torch.autograd.grad(want, (q, k, v, sinks), dout)
    for name, got, exp in zip(["q", "k", "v", "sinks"], grads, want_grads):
        assert_close(got, exp, 2e-5, f"d{name}")


def test_the_cuda_backend_runs_on_a_gpu_or_says_there_is_none():
    llm_utils.manual_seed(23)
    mha = llm_utils.MultiHeadAttention(16, 16, 20, 0.0, 2)
    x = np.random.default_rng(24).standard_normal((2, 20, 16)).astype(np.float32)
    y = mha(x)
    mha.set_backend("cuda")
    if llm_utils.cuda_device_count() > 0:
        assert llm_utils.cuda_device_description()
        np.testing.assert_allclose(mha(x), y, rtol=1e-5, atol=1e-5)
        return
    assert llm_utils.cuda_built() in (True, False)
    with pytest.raises(ValueError, match="no CUDA device|this build has no CUDA"):
        mha(x)
    with pytest.raises(ValueError, match="no CUDA device"):
        llm_utils.cuda_device_description()

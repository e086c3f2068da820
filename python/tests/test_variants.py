"""The attention kernels of llm_utils.kernels against a float64 reference written here from
plain PyTorch ops (matmul, tanh, exp, ...) and differentiated by torch autograd.

Checked, on both backends ('reference' and 'flash'): out, lse, the attention weights and dq, dk,
dv, dsinks of every variant of docs/variants.md alone (causal, sliding window, softcap, ALiBi,
sinks, float and bool masks, scale) and combined with grouped-query heads in one call; packed
(varlen) sequences against the reference run per sequence; the paged forward against the
reference on the gathered keys; bfloat16 inputs against float64 on the same rounded inputs;
strided in-place I/O; the argument errors; and RoPE against the book's rotate-half formula and
its autograd gradient.

Tolerances (DESIGN.md section 5, docs/numerics.md):
- float32 out, lse, probabilities: |ours - ref| <= 1e-5 * max(1, |ref|), element by element;
- float32 gradients: within GRAD_TOL * max(1, max |ref|) of the tensor (each is a sum over up
  to 150 keys or queries of float32 products);
- bfloat16 (stored in bfloat16, float32 arithmetic): out within 2^-7, and dq, dk, dv, dsinks
  within 2^-6, of the largest reference element; lse within 1e-6 * max(1, |ref|): the bounds
  docs/numerics.md states for the flash kernels against the float32 oracle, whose own distance
  to float64 is far below them. dsinks is also checked tightly against its documented formula
  evaluated in float64 on the kernel's own out and lse.
"""

import math

import numpy as np
import pytest
import torch

from llm_utils import kernels as K
from llm_utils._core import kernels as _core_kernels

BACKENDS = ["reference", "flash"]
FORWARD_TOL = 1e-5
GRAD_TOL = 1e-5
BF16_OUT, BF16_GRAD, BF16_LSE = 2.0**-7, 2.0**-6, 1e-6


# ---------------------------------------------------------------- the float64 reference

def torch_attention(q, k, v, *, causal=False, scale=None, query_offset=0, attn_mask=None,
                    window_left=-1, softcap=0.0, alibi_slopes=None, sinks=None):
    """docs/variants.md in float64 torch ops. q (B, H, N, d), k (B, G, M, d), v (B, G, M, dv);
    attn_mask a numpy float (added) or bool (True: attend) array broadcasting to (B, H, N, M);
    alibi_slopes numpy (H); sinks a torch tensor (H). query_offset may be negative (packed
    sequences with more queries than keys). Returns out (B, H, N, dv), lse (B, H, N) and
    P (B, H, N, M); fully hidden rows give P = 0, out = 0 and lse = -inf (the sink with one)."""
    B, H, N, d = q.shape
    M = k.shape[2]
    group = H // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d) if scale is None else scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    pos = torch.arange(N, dtype=torch.float64)[:, None] + query_offset
    j = torch.arange(M, dtype=torch.float64)[None, :]
    if alibi_slopes is not None:
        slopes = torch.tensor(alibi_slopes, dtype=torch.float64).view(1, H, 1, 1)
        s = s - slopes * (pos - j).abs()
    if attn_mask is not None:
        mask = torch.from_numpy(np.asarray(attn_mask))
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, -math.inf)
        else:
            s = s + mask.double()
    visible = torch.ones(N, M, dtype=torch.bool)
    if causal:
        visible &= j <= pos
    if window_left >= 0:
        visible &= j >= pos - window_left
    s = s.masked_fill(~visible, -math.inf)
    logits = s
    if sinks is not None:
        logits = torch.cat([s, sinks.view(1, H, 1, 1).expand(B, H, N, 1)], dim=-1)
    if logits.shape[-1] > 0:
        shift = logits.detach().amax(dim=-1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    else:
        shift = torch.zeros(B, H, N, 1, dtype=torch.float64)
    e = torch.exp(logits - shift)
    denom = e.sum(dim=-1, keepdim=True)
    lse = (shift + torch.log(denom)).squeeze(-1)
    p = e[..., :M] / torch.where(denom > 0, denom, torch.ones_like(denom))
    return p @ v, lse, p


def leaf(x):
    return torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)


def grad_of(t):
    return np.zeros(t.shape) if t.grad is None else t.grad.numpy()


# ---------------------------------------------------------------- assertions

def assert_close_elementwise(actual, expected, tol, what):
    """|actual - expected| <= tol * max(1, |expected|) element by element; infinities must
    match exactly (lse of fully hidden rows)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite], err_msg=what)
    err = np.abs(actual[finite] - expected[finite])
    bound = tol * np.maximum(1.0, np.abs(expected[finite]))
    assert np.all(err <= bound), f"{what}: max error {err.max():.3g} (bound {bound.max():.3g})"


def assert_close_to_max(actual, expected, tol, what, floor=1.0):
    """max |actual - expected| <= tol * max(floor, max |expected|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    bound = tol * max(floor, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= bound, f"{what}: max error {err:.3g} (bound {bound:.3g})"


def random(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def check_kernels(q, k, v, backend, seed=0, **options):
    """Forward, probabilities and backward of the rank-4 kernels against autograd of
    torch_attention with the same options (sinks and slopes as numpy arrays)."""
    rng = np.random.default_rng(seed)
    sinks = options.get("sinks")
    qt, kt, vt = leaf(q), leaf(k), leaf(v)
    st = leaf(sinks) if sinks is not None else None
    out_ref, lse_ref, p_ref = torch_attention(qt, kt, vt, **{**options, "sinks": st})
    dout = random(rng, out_ref.shape)
    (out_ref * torch.from_numpy(dout).double()).sum().backward()

    out, lse = K.attention_forward(q, k, v, backend=backend, **options)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    assert_close_elementwise(out, out_ref.detach().numpy(), FORWARD_TOL, "out")
    assert_close_elementwise(lse, lse_ref.detach().numpy(), FORWARD_TOL, "lse")
    probs = K.attention_probabilities(q, k, lse, backend=backend, **options)
    assert_close_elementwise(probs, p_ref.detach().numpy(), FORWARD_TOL, "probs")

    dq, dk, dv, dsinks = K.attention_backward(q, k, v, out, lse, dout, backend=backend,
                                              **options)
    assert_close_to_max(dq, grad_of(qt), GRAD_TOL, "dq")
    assert_close_to_max(dk, grad_of(kt), GRAD_TOL, "dk")
    assert_close_to_max(dv, grad_of(vt), GRAD_TOL, "dv")
    if st is None:
        assert dsinks is None
    else:
        assert_close_to_max(dsinks, grad_of(st), GRAD_TOL, "dsinks")
    # Without dq and dk (which skips most of their work), dv and dsinks stay the same.
    no_dq, no_dk, dv_only, dsinks_only = K.attention_backward(
        q, k, v, out, lse, dout, backend=backend, need_dq=False, need_dk=False, **options)
    assert no_dq is None and no_dk is None
    assert_close_to_max(dv_only, grad_of(vt), GRAD_TOL, "dv without dq, dk")
    if st is not None:
        assert_close_to_max(dsinks_only, grad_of(st), GRAD_TOL, "dsinks without dq, dk")
    return out, lse, dq


# ---------------------------------------------------------------- 1. each variant alone

B, H, N, M, D, DV = 2, 4, 70, 130, 24, 16  # N, M not multiples of 64; M spans three key tiles
SINKS = np.array([-2.0, 0.0, 1.5, 4.0], np.float32)


def bool_mask():
    """(N, M), True where a query may attend, with row 3 fully hidden."""
    m = np.random.default_rng(11).random((N, M)) < 0.7
    m[3] = False
    return m


VARIANTS = {
    "plain": {},
    "causal": dict(causal=True),
    "causal_offset": dict(causal=True, query_offset=M - N),
    "window": dict(window_left=17),
    "window_offset": dict(window_left=0, query_offset=40),
    "window_hides_rows": dict(window_left=10, query_offset=100),  # rows 40.. see no key
    "window_causal": dict(causal=True, window_left=17),
    "window_causal_offset": dict(causal=True, window_left=5, query_offset=M - N),
    "softcap": dict(softcap=1.5),
    "alibi": dict(alibi_slopes=K.alibi_slopes(H)),
    "alibi_causal_offset": dict(alibi_slopes=K.alibi_slopes(H), causal=True, query_offset=25),
    "sinks": dict(sinks=SINKS),
    "sinks_causal": dict(sinks=SINKS, causal=True),
    "sinks_hidden_rows": dict(sinks=SINKS, window_left=10, query_offset=100),
    "mask_float": dict(attn_mask=random(np.random.default_rng(12), (B, 1, N, M), 2.0)),
    "mask_bool": dict(attn_mask=bool_mask()),
    "mask_bool_sinks": dict(attn_mask=bool_mask(), sinks=SINKS),
    "scale": dict(scale=0.37),
}
HIDDEN_ROWS = {"window_hides_rows": slice(40, None), "sinks_hidden_rows": slice(40, None),
               "mask_bool": slice(3, 4), "mask_bool_sinks": slice(3, 4)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_matches_torch(variant, backend):
    rng = np.random.default_rng(1)
    q, k, v = random(rng, (B, H, N, D), 1.5), random(rng, (B, H, M, D)), random(rng, (B, H, M, DV))
    options = VARIANTS[variant]
    out, lse, dq = check_kernels(q, k, v, backend, **options)
    if variant in HIDDEN_ROWS:  # rows that see no key: out 0, lse -inf or the sink, dq 0
        rows = HIDDEN_ROWS[variant]
        assert np.all(out[:, :, rows] == 0) and np.all(dq[:, :, rows] == 0)
        sink = SINKS[None, :, None] if "sinks" in options else -np.inf
        assert np.all(lse[:, :, rows] == sink)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_2_and_3_layouts(backend):
    """Rank 3 is (B * H, N, d) against (B * G, M, d), slopes and sinks per q batch element;
    rank 2 is one head: the same numbers as the rank-4 reference."""
    rng = np.random.default_rng(2)
    q, k, v = random(rng, (2, 4, 33, 16)), random(rng, (2, 2, 90, 16)), random(rng, (2, 2, 90, 8))
    options = dict(causal=True, query_offset=57, softcap=3.0, window_left=40)
    slopes, sinks = K.alibi_slopes(4), SINKS
    qt, kt, vt, st = leaf(q), leaf(k), leaf(v), leaf(sinks)
    out_ref, lse_ref, _ = torch_attention(qt, kt, vt, alibi_slopes=slopes, sinks=st, **options)
    dout = random(rng, out_ref.shape)
    (out_ref * torch.from_numpy(dout).double()).sum().backward()

    flat = dict(options, alibi_slopes=np.tile(slopes, 2), sinks=np.tile(sinks, 2),
                backend=backend)
    q3, k3, v3, dout3 = (x.reshape(-1, *x.shape[2:]) for x in (q, k, v, dout))
    out, lse = K.attention_forward(q3, k3, v3, **flat)
    assert_close_elementwise(out.reshape(out_ref.shape), out_ref.detach(), FORWARD_TOL, "out")
    assert_close_elementwise(lse.reshape(lse_ref.shape), lse_ref.detach(), FORWARD_TOL, "lse")
    dq, dk, dv, dsinks = K.attention_backward(q3, k3, v3, out, lse, dout3, **flat)
    assert_close_to_max(dq.reshape(q.shape), grad_of(qt), GRAD_TOL, "dq")
    assert_close_to_max(dk.reshape(k.shape), grad_of(kt), GRAD_TOL, "dk")
    assert_close_to_max(dv.reshape(v.shape), grad_of(vt), GRAD_TOL, "dv")
    assert_close_to_max(dsinks.reshape(2, 4).sum(0), grad_of(st), GRAD_TOL, "dsinks")

    # Rank 2: batch 0, head 1 (kv head 0) alone.
    one = dict(options, alibi_slopes=slopes[1:2], sinks=sinks[1:2], backend=backend)
    out2, lse2 = K.attention_forward(q[0, 1], k[0, 0], v[0, 0], **one)
    assert_close_elementwise(out2, out_ref.detach()[0, 1], FORWARD_TOL, "out (rank 2)")
    assert_close_elementwise(lse2, lse_ref.detach()[0, 1], FORWARD_TOL, "lse (rank 2)")


# ---------------------------------------------------------------- 2. combined, GQA 8/2

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
def test_gqa_with_every_variant_in_one_call(backend, causal):
    rng = np.random.default_rng(3)
    heads, kv_heads, n, m = 8, 2, 100, 150
    q = random(rng, (2, heads, n, 32), 2.0)
    k, v = random(rng, (2, kv_heads, m, 32)), random(rng, (2, kv_heads, m, 20))
    sinks = random(rng, (heads,), 2.0)
    check_kernels(q, k, v, backend, causal=causal, query_offset=m - n, window_left=40,
                  softcap=2.5, alibi_slopes=K.alibi_slopes(heads), sinks=sinks)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window_left", [-1, 700, 100])
def test_decode_step_over_split_keys(window_left, backend):
    """3 queries on 1100 keys: the fused forward splits the keys into chunks merged by their
    log-sum-exp (attention.hpp); the sink and the window must survive the merge, also when the
    window leaves the first chunk empty (window_left = 100)."""
    rng = np.random.default_rng(13)
    n, m = 3, 1100
    q, k, v = random(rng, (1, 4, n, 16), 1.5), random(rng, (1, 2, m, 16)), random(rng, (1, 2, m, 8))
    options = dict(causal=True, window_left=window_left, softcap=4.0,
                   alibi_slopes=K.alibi_slopes(4) / 64, sinks=SINKS)
    check_kernels(q, k, v, backend, query_offset=m - n, **options)

    # The same step with the keys in pages of 16 (the paged kernel splits them too).
    with torch.no_grad():
        out_ref, lse_ref, _ = torch_attention(
            torch.from_numpy(q).double(), torch.from_numpy(k).double(),
            torch.from_numpy(v).double(), query_offset=m - n,
            **{**options, "sinks": torch.from_numpy(SINKS).double()})
    k_pages, v_pages, table = paged_layout(rng, k[0].transpose(1, 0, 2), v[0].transpose(1, 0, 2),
                                           [m], 16)
    out, lse = K.attention_forward_paged(q[0].transpose(1, 0, 2), k_pages, v_pages, table, [m],
                                         [0, n], backend=backend, **options)
    assert_close_elementwise(out, out_ref[0].transpose(0, 1), FORWARD_TOL, "paged out")
    assert_close_elementwise(lse, lse_ref[0], FORWARD_TOL, "paged lse")


# ---------------------------------------------------------------- 3. packed sequences

# (queries, keys) per sequence: empty ones, fewer queries than keys (a decode-like one), more
# queries than keys (bottom-right alignment hides the first rows under causal), keys only,
# queries only.
VARLEN_SEQUENCES = [(5, 5), (0, 0), (1, 130), (70, 90), (0, 7), (4, 0), (20, 12)]
VARLEN_OPTIONS = {
    "causal": dict(causal=True),
    "window": dict(window_left=9),
    "causal_window_sinks": dict(causal=True, window_left=9, sinks=SINKS),
    "softcap_alibi_sinks": dict(softcap=2.0, alibi_slopes=K.alibi_slopes(4), sinks=SINKS),
}


def cumulative(lengths):
    return [0] + np.cumsum(lengths).tolist()


def torch_packed(qt, kt, vt, cu_q, cu_k, sinks=None, **options):
    """The reference per sequence of packed q (T_q, H, d), k (T_k, G, d): out (T_q, H, dv) and
    lse (H, T_q), each sequence bottom-right aligned (query_offset = n_k - n_q)."""
    outs, lses = [], []
    for s in range(len(cu_q) - 1):
        qs = qt[cu_q[s]:cu_q[s + 1]].transpose(0, 1)[None]
        ks = kt[cu_k[s]:cu_k[s + 1]].transpose(0, 1)[None]
        vs = vt[cu_k[s]:cu_k[s + 1]].transpose(0, 1)[None]
        offset = (cu_k[s + 1] - cu_k[s]) - (cu_q[s + 1] - cu_q[s])
        out, lse, _ = torch_attention(qs, ks, vs, query_offset=offset, sinks=sinks, **options)
        outs.append(out[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs, dim=0), torch.cat(lses, dim=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(VARLEN_OPTIONS))
def test_varlen_matches_torch_per_sequence(name, backend):
    options = VARLEN_OPTIONS[name]
    rng = np.random.default_rng(4)
    cu_q = cumulative([nq for nq, _ in VARLEN_SEQUENCES])
    cu_k = cumulative([nk for _, nk in VARLEN_SEQUENCES])
    q = random(rng, (cu_q[-1], 4, 16), 1.5)
    k, v = random(rng, (cu_k[-1], 2, 16)), random(rng, (cu_k[-1], 2, 12))
    qt, kt, vt = leaf(q), leaf(k), leaf(v)
    st = leaf(options["sinks"]) if "sinks" in options else None
    out_ref, lse_ref = torch_packed(qt, kt, vt, cu_q, cu_k, **{**options, "sinks": st})
    dout = random(rng, out_ref.shape)
    (out_ref * torch.from_numpy(dout).double()).sum().backward()

    out, lse = K.attention_forward_varlen(q, k, v, cu_q, cu_k, backend=backend, **options)
    assert_close_elementwise(out, out_ref.detach(), FORWARD_TOL, "out")
    assert_close_elementwise(lse, lse_ref.detach(), FORWARD_TOL, "lse")
    dq, dk, dv, dsinks = K.attention_backward_varlen(q, k, v, cu_q, cu_k, out, lse, dout,
                                                     backend=backend, **options)
    assert_close_to_max(dq, grad_of(qt), GRAD_TOL, "dq")
    assert_close_to_max(dk, grad_of(kt), GRAD_TOL, "dk")
    assert_close_to_max(dv, grad_of(vt), GRAD_TOL, "dv")
    if st is None:
        assert dsinks is None
    else:
        assert_close_to_max(dsinks, grad_of(st), GRAD_TOL, "dsinks")
    # The sequence of 4 queries and no keys: out 0, lse -inf (or the sink).
    rows = slice(cu_q[5], cu_q[6])
    assert np.all(out[rows] == 0)
    expected = options["sinks"][:, None] if st is not None else -np.inf
    assert np.all(lse[:, rows] == expected)


# ---------------------------------------------------------------- 4. paged forward

PAGED_SEQUENCES = [(1, 150), (7, 37), (0, 12), (12, 12), (3, 64), (0, 0)]  # (queries, keys)
PAGED_OPTIONS = {
    "causal_sinks": dict(causal=True, sinks=SINKS),
    "window_softcap_alibi_sinks": dict(causal=True, window_left=20, softcap=3.0,
                                       alibi_slopes=K.alibi_slopes(4), sinks=SINKS),
}


def paged_layout(rng, k, v, lengths, page_size):
    """Scatters packed k, v (T_k, G, dim) into a shuffled pool of pages with two spare pages;
    unused block_table entries are -1 (documented as never read)."""
    pages = [-(-n // page_size) for n in lengths]
    per_sequence = max(pages)
    pool = sum(pages) + 2
    order = rng.permutation(pool)
    k_pages = random(rng, (pool, page_size) + k.shape[1:])  # garbage where no token lives
    v_pages = random(rng, (pool, page_size) + v.shape[1:])
    table = np.full((len(lengths), per_sequence), -1, np.int64)
    next_page, start = 0, 0
    for s, n in enumerate(lengths):
        for t in range(n):
            if t % page_size == 0:
                table[s, t // page_size] = order[next_page]
                next_page += 1
            page = table[s, t // page_size]
            k_pages[page, t % page_size] = k[start + t]
            v_pages[page, t % page_size] = v[start + t]
        start += n
    return k_pages, v_pages, table


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(PAGED_OPTIONS))
@pytest.mark.parametrize("page_size", [1, 5, 64])
def test_paged_forward_matches_torch_on_gathered_keys(page_size, name, backend):
    options = PAGED_OPTIONS[name]
    rng = np.random.default_rng(5)
    seqlens_k = [nk for _, nk in PAGED_SEQUENCES]
    cu_q = cumulative([nq for nq, _ in PAGED_SEQUENCES])
    cu_k = cumulative(seqlens_k)
    q = random(rng, (cu_q[-1], 4, 16), 1.5)
    k, v = random(rng, (cu_k[-1], 2, 16)), random(rng, (cu_k[-1], 2, 12))
    k_pages, v_pages, table = paged_layout(rng, k, v, seqlens_k, page_size)
    with torch.no_grad():
        out_ref, lse_ref = torch_packed(
            torch.from_numpy(q).double(), torch.from_numpy(k).double(),
            torch.from_numpy(v).double(), cu_q, cu_k,
            **{**options, "sinks": torch.from_numpy(options["sinks"]).double()})
    out, lse = K.attention_forward_paged(q, k_pages, v_pages, table, seqlens_k, cu_q,
                                         backend=backend, **options)
    assert_close_elementwise(out, out_ref, FORWARD_TOL, "out")
    assert_close_elementwise(lse, lse_ref, FORWARD_TOL, "lse")


# ---------------------------------------------------------------- 5. bfloat16

def to_bf16_bits(x):
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy()


def from_bf16_bits(bits):
    assert bits.dtype in (np.uint16, np.int16), bits.dtype
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).double().numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["causal", "combined"])
def test_bfloat16_matches_float64_on_rounded_inputs(name, backend):
    rng = np.random.default_rng(6)
    heads, kv_heads, n, m = 8, 2, 70, 100
    q = to_bf16_bits(random(rng, (2, heads, n, 32), 1.5))
    k = to_bf16_bits(random(rng, (2, kv_heads, m, 32)))
    v = to_bf16_bits(random(rng, (2, kv_heads, m, 24)))
    dout = to_bf16_bits(random(rng, (2, heads, n, 24)))
    options = dict(causal=True)
    if name == "combined":
        options.update(query_offset=m - n, window_left=30, softcap=2.5,
                       alibi_slopes=K.alibi_slopes(heads), sinks=random(rng, (heads,), 2.0))
    qt, kt, vt = (leaf(from_bf16_bits(x)) for x in (q, k, v))
    st = leaf(options["sinks"]) if "sinks" in options else None
    out_ref, lse_ref, _ = torch_attention(qt, kt, vt, **{**options, "sinks": st})
    (out_ref * torch.from_numpy(from_bf16_bits(dout))).sum().backward()

    out, lse = K.attention_forward(q, k, v, backend=backend, **options)
    assert out.dtype == np.uint16 and lse.dtype == np.float32
    assert_close_to_max(from_bf16_bits(out), out_ref.detach(), BF16_OUT, "out", floor=0.0)
    assert_close_elementwise(lse, lse_ref.detach(), BF16_LSE, "lse")
    dq, dk, dv, dsinks = K.attention_backward(q, k, v, out, lse, dout, backend=backend, **options)
    for what, ours, t in (("dq", dq, qt), ("dk", dk, kt), ("dv", dv, vt)):
        assert ours.dtype == np.uint16, what
        assert_close_to_max(from_bf16_bits(ours), grad_of(t), BF16_GRAD, what, floor=0.0)
    if st is None:
        assert dsinks is None
    else:
        assert dsinks.dtype == np.float32
        assert_close_to_max(dsinks, grad_of(st), BF16_GRAD, "dsinks", floor=0.0)
        # docs/variants.md: dsinks_h = -sum over rows of head h of P_sink * (dout . out), with
        # P_sink = exp(sink_h - lse), from the out and lse it was given (summed in double).
        terms = (np.exp(options["sinks"][None, :, None] - lse.astype(np.float64))
                 * (from_bf16_bits(dout) * from_bf16_bits(out)).sum(-1))
        scale = np.abs(terms).sum(axis=(0, 2)).max()
        assert_close_to_max(dsinks, -terms.sum(axis=(0, 2)), FORWARD_TOL,
                            "dsinks against its formula", floor=scale)


# ---------------------------------------------------------------- 6. strided in-place I/O

@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_views_are_read_and_written_in_place(backend):
    """q, k, v, dout as transposed (B, N, H, d) arrays; out, lse, dq, dk, dv written into given
    strided views, which come back as the very objects passed."""
    rng = np.random.default_rng(7)
    b, heads, kv_heads, n, m, d = 2, 4, 2, 67, 75, 16
    q_bnhd = random(rng, (b, n, heads, d))
    k_bmgd, v_bmgd = random(rng, (b, m, kv_heads, d)), random(rng, (b, m, kv_heads, d))
    dout_bnhd = random(rng, (b, n, heads, d))
    q, k, v, dout = (x.transpose(0, 2, 1, 3) for x in (q_bnhd, k_bmgd, v_bmgd, dout_bnhd))
    assert not q.flags.c_contiguous and q.base is q_bnhd
    options = dict(causal=True, query_offset=m - n, sinks=SINKS)

    qt, kt, vt, st = leaf(q), leaf(k), leaf(v), leaf(SINKS)
    out_ref, lse_ref, _ = torch_attention(qt, kt, vt, **{**options, "sinks": st})
    (out_ref * torch.from_numpy(dout).double()).sum().backward()

    out_buffer = np.full((b, n, heads, d), np.nan, np.float32)
    lse_buffer = np.full((b, n, heads), np.nan, np.float32)
    out_view, lse_view = out_buffer.transpose(0, 2, 1, 3), lse_buffer.transpose(0, 2, 1)
    out, lse = K.attention_forward(q, k, v, out=out_view, lse=lse_view, backend=backend,
                                   **options)
    assert out is out_view and lse is lse_view
    assert np.shares_memory(out, out_buffer) and np.shares_memory(lse, lse_buffer)
    assert_close_elementwise(out_buffer.transpose(0, 2, 1, 3), out_ref.detach(), FORWARD_TOL,
                             "out")
    assert_close_elementwise(lse_buffer.transpose(0, 2, 1), lse_ref.detach(), FORWARD_TOL, "lse")

    buffers = [np.full(x.shape, np.nan, np.float32) for x in (q_bnhd, k_bmgd, v_bmgd)]
    views = [x.transpose(0, 2, 1, 3) for x in buffers]
    dq, dk, dv, dsinks = K.attention_backward(q, k, v, out, lse, dout, dq=views[0],
                                              dk=views[1], dv=views[2], backend=backend,
                                              **options)
    for what, ours, view, buffer, t in zip(("dq", "dk", "dv"), (dq, dk, dv), views, buffers,
                                           (qt, kt, vt)):
        assert ours is view, what
        assert np.shares_memory(ours, buffer), what
        assert_close_to_max(buffer.transpose(0, 2, 1, 3), grad_of(t), GRAD_TOL, what)
    assert_close_to_max(dsinks, grad_of(st), GRAD_TOL, "dsinks")


# ---------------------------------------------------------------- 7. errors

def _qkv():
    rng = np.random.default_rng(8)
    return random(rng, (1, 4, 5, 8)), random(rng, (1, 2, 6, 8)), random(rng, (1, 2, 6, 8))


def _bad_paged_table():
    rng = np.random.default_rng(9)
    q, pages = random(rng, (3, 4, 8)), random(rng, (4, 5, 2, 8))
    return K.attention_forward_paged(q, pages, pages, [[0, 1], [2, 7]], [10, 8], [0, 1, 3])


def _bad_varlen():
    rng = np.random.default_rng(10)
    q, k = random(rng, (10, 4, 8)), random(rng, (12, 2, 8))
    return K.attention_forward_varlen(q, k, k, [0, 5, 9], [0, 6, 12])


ERRORS = {
    "window_left": (lambda: K.attention_forward(*_qkv(), window_left=-2), ValueError,
                    "window_left"),
    "softcap": (lambda: K.attention_forward(*_qkv(), softcap=-1.0), ValueError, "softcap"),
    "sinks_size": (lambda: K.attention_forward(*_qkv(), sinks=np.zeros(3, np.float32)),
                   ValueError, "sinks"),
    "slopes_size": (lambda: K.attention_forward(*_qkv(), alibi_slopes=np.ones(2, np.float32)),
                    ValueError, "alibi_slopes"),
    "dtype_mismatch": (lambda: K.attention_forward(_qkv()[0], to_bf16_bits(_qkv()[1]), _qkv()[2]),
                       TypeError, "k is bfloat16 but q is float32"),
    "unknown_option": (lambda: _core_kernels.forward(*_qkv(), {"causal": True, "windw": 3}),
                       TypeError, "windw"),
    "cu_seqlens": (_bad_varlen, ValueError, "cu_seqlens_q"),
    "block_table": (_bad_paged_table, ValueError, "page 7"),
    "scale": (lambda: K.attention_forward(*_qkv(), scale=-1.0), ValueError, "scale"),
    "query_offset": (lambda: K.attention_forward(*_qkv(), causal=True, query_offset=-1),
                     ValueError, "query_offset"),
    "rope_head_dim": (lambda: K.RopeTable(15, 10), ValueError, "head_dim"),
    "rope_positions": (lambda: K.rope_forward(np.zeros((5, 16), np.float32), K.RopeTable(16, 10),
                                              6), ValueError, "positions [6, 11)"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_arguments_name_the_argument(name):
    call, exc_type, needle = ERRORS[name]
    with pytest.raises(exc_type) as info:
        call()
    assert needle in str(info.value), str(info.value)


# ---------------------------------------------------------------- 8. RoPE

LLAMA31_SCALING = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_context_length": 8192}


def book_inv_freq(head_dim, theta, scaling):
    """compute_rope_params of the book's Llama 3.2 code, float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    if scaling is not None:
        low_wavelen = scaling["original_context_length"] / scaling["low_freq_factor"]
        high_wavelen = scaling["original_context_length"] / scaling["high_freq_factor"]
        wavelen = 2 * torch.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling["factor"], inv_freq)
        smooth = ((scaling["original_context_length"] / wavelen - scaling["low_freq_factor"])
                  / (scaling["high_freq_factor"] - scaling["low_freq_factor"]))
        smoothed = (1 - smooth) * (inv_freq / scaling["factor"]) + smooth * inv_freq
        medium = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def book_rope(x, inv_freq, first_position):
    """The book's compute_rope in float64 on float32 angles (as the book forms them)."""
    n, head_dim = x.shape[-2], x.shape[-1]
    positions = torch.arange(first_position, first_position + n, dtype=torch.float32)
    angles = positions[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=1).double()
    x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * torch.cos(angles) + rotated * torch.sin(angles)


@pytest.mark.parametrize("theta,scaling,head_dim", [(10000.0, None, 16),
                                                    (500000.0, LLAMA31_SCALING, 32)])
def test_rope_matches_the_book_and_its_autograd_gradient(theta, scaling, head_dim):
    n, first = 45, 100
    table = K.RopeTable(head_dim, 160, theta=theta, scaling=scaling)
    inv_freq = book_inv_freq(head_dim, theta, scaling)
    # Every band of the Llama 3.1 scaling is exercised: kept, smoothed and divided.
    if scaling is not None:
        wavelen = 2 * math.pi / book_inv_freq(head_dim, theta, None).double()
        assert (wavelen < 2048).any() and ((wavelen > 2048) & (wavelen < 8192)).any()
        assert (wavelen > 8192).any()
    np.testing.assert_allclose(table.inv_freq, inv_freq.numpy(), rtol=2e-7, atol=0)

    rng = np.random.default_rng(11)
    x = random(rng, (2, 3, n, head_dim))
    xt = leaf(x)
    y_ref = book_rope(xt, torch.from_numpy(table.inv_freq), first)
    dy = random(rng, x.shape)
    (y_ref * torch.from_numpy(dy).double()).sum().backward()

    # With the table's frequencies (checked above) the angles are the same float32 products,
    # so the rotation agrees within a few float32 ulps.
    y = K.rope_forward(x.copy(), table, first)
    assert_close_elementwise(y, y_ref.detach(), 1e-6, "rope_forward")
    dx = K.rope_backward(dy.copy(), table, first)
    assert_close_elementwise(dx, grad_of(xt), 1e-6, "rope_backward")
    # Against the book's own float32 frequencies: an ulp of inv_freq (libm's pow may differ)
    # moves an angle at position <= 145 by up to ~1e-5, hence the looser bound.
    assert_close_elementwise(y, book_rope(torch.from_numpy(x).double(), inv_freq, first), 2e-5,
                             "rope_forward against the book's frequencies")

    # In place on a transposed (B, N, H, hd) array.
    x_bnhd = x.transpose(0, 2, 1, 3).copy()
    view = x_bnhd.transpose(0, 2, 1, 3)
    assert K.rope_forward(view, table, first) is view
    np.testing.assert_array_equal(x_bnhd.transpose(0, 2, 1, 3), y)


def test_probabilities_refuse_a_16_bit_lse():
    q = np.zeros((1, 2, 4, 8), np.float32)
    lse = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(TypeError, match="lse must be float32"):
        K.attention_probabilities(q, q, lse.astype(np.int16))


def test_an_unpickled_float32_array_is_written_in_place():
    import pickle
    rng = np.random.default_rng(30)
    q = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)
    out = pickle.loads(pickle.dumps(np.zeros((1, 2, 5, 8), np.float32)))
    got, _ = K.attention_forward(q, q, q, out=out)
    assert got is out and np.abs(out).sum() > 0


"""The package as a user meets it: import paths, docstrings and stubs, the generator, how
arrays go in (converted once, not copied when already float32) and come out (owning, or
aliasing the parameters with the module kept alive), copying modules, and the GIL."""

import ast
import copy
import gc
import inspect
import os
import pydoc
import threading
import time

import numpy as np
import pytest
import torch

import llm_utils
from llm_utils import _core
from llm_utils.selfAttn import (SelfAttention_Linear, SelfAttention_Linear4,
                                SelfAttention_Linear5, SelfAttention_Params)
from support import CLASSES, assert_forward_close, build, random_input, to_numpy

PACKAGE_DIR = os.path.dirname(llm_utils.__file__)


def public_members(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


# ---------------------------------------------------------------- import paths, docs, stubs

def test_the_originals_import_path():
    import llm_utils.selfAttn as sa
    assert sa.__all__ == CLASSES
    assert all(getattr(sa, name).__module__ == "llm_utils.selfAttn" for name in CLASSES)
    assert llm_utils.__version__ and llm_utils.optim.SGD and llm_utils.safetensors.save_file


def test_every_public_name_has_a_docstring():
    objects = [llm_utils, llm_utils.selfAttn, llm_utils.optim, llm_utils.safetensors]
    for module in list(objects):
        for name in getattr(module, "__all__", []):
            objects.append(getattr(module, name))
    missing = []
    for obj in objects:
        if not (getattr(obj, "__doc__", None) or "").strip():
            missing.append(repr(obj))
        if inspect.isclass(obj) and obj.__module__.startswith("llm_utils"):
            for name in public_members(obj):
                member = getattr(obj, name)
                if isinstance(member, llm_utils.Backend) or issubclass(obj, llm_utils.Backend):
                    continue  # pybind11's enum machinery
                if not (getattr(member, "__doc__", None) or "").strip():
                    missing.append(f"{obj.__name__}.{name}")
    assert not missing


def test_help_shows_the_signatures():
    text = pydoc.render_doc(SelfAttention_Linear, renderer=pydoc.plaintext)
    assert "qkv_bias: bool = False" in text
    assert "backward(self" in text and "named_parameters(self" in text
    assert "grad_output" in pydoc.render_doc(SelfAttention_Linear.backward)


def stub_tree():
    with open(os.path.join(PACKAGE_DIR, "_core.pyi")) as f:
        tree = ast.parse(f.read())
    classes, functions = {}, set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} | {
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign)} | {
                t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets}
        elif isinstance(node, ast.FunctionDef):
            functions.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            functions.add(node.target.id)
    return classes, functions


def test_the_stubs_describe_the_compiled_module():
    assert os.path.exists(os.path.join(PACKAGE_DIR, "py.typed"))
    classes, names = stub_tree()
    runtime = {n for n in dir(_core) if not n.startswith("__") or n == "__version__"}
    runtime_classes = {n for n in runtime if inspect.isclass(getattr(_core, n))}
    if "dist" not in runtime:
        names = names - {"dist"}  # a build without MPI has no llm_utils._core.dist
    assert set(classes) == runtime_classes
    assert names | set(classes) == runtime
    for name, members in classes.items():
        cls = getattr(_core, name)
        if issubclass(cls, tuple):
            continue  # IncompatibleKeys: a namedtuple
        expected = {m for m in public_members(cls)
                    if not isinstance(getattr(cls, m), cls)}  # not enum values
        if issubclass(cls, llm_utils.Backend):
            expected -= {"name", "value"}  # enum.Enum's, in the stub too
        inherited = set()
        for base in cls.__mro__[1:]:
            inherited |= classes.get(base.__name__, set())
        stubbed = members | inherited
        assert expected <= stubbed, (name, expected - stubbed)
        assert {m for m in members if not m.startswith("_")} <= public_members(cls), name


# ---------------------------------------------------------------- generator

def test_generator_draws_as_pytorch():
    for seed in [0, 123, 2**40 + 7, -1]:
        llm_utils.manual_seed(seed)
        torch.manual_seed(seed)
        np.testing.assert_array_equal(llm_utils.rand(3, 4), torch.rand(3, 4).numpy())
        np.testing.assert_array_equal(llm_utils.rand((2,)), torch.rand((2,)).numpy())
        g, tg = llm_utils.Generator(seed), torch.Generator().manual_seed(seed)
        np.testing.assert_array_equal(llm_utils.rand([5], generator=g),
                                      torch.rand(5, generator=tg).numpy())
    assert llm_utils.manual_seed(9) is llm_utils.default_generator
    assert llm_utils.initial_seed() == 9
    assert llm_utils.Generator().initial_seed() == torch.Generator().initial_seed()
    g = llm_utils.Generator(1)
    assert g.manual_seed(5) is g and g.initial_seed() == 5
    assert llm_utils.rand(()).shape == ()


def test_modules_draw_from_a_given_generator():
    g = llm_utils.Generator(789)
    llm_utils.manual_seed(1)
    ours = SelfAttention_Linear(3, 2, generator=g)
    torch.manual_seed(789)
    ref = torch.nn.Linear(3, 2, bias=False)
    np.testing.assert_array_equal(ours.W_query.weight, ref.weight.detach().numpy())
    np.testing.assert_array_equal(llm_utils.rand(2), llm_utils.Generator(1).manual_seed(1) and
                                  llm_utils.rand(2, generator=llm_utils.Generator(1)))


def test_threads_setting():
    n = llm_utils.get_num_threads()
    llm_utils.set_num_threads(1)
    assert llm_utils.get_num_threads() == 1
    llm_utils.set_num_threads(n)


def test_kernel_buffer_cache_is_kept_and_released():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 1024, 64), dtype=np.float32) for _ in range(3))
    llm_utils.release_cached_memory()
    assert llm_utils.cached_memory_bytes() == 0
    out1, _ = llm_utils.kernels.attention_forward(q, k, v, causal=True, backend="flash")
    # Packed K^T (1024 x 64 float32, 256 KiB) stays cached for this thread's next call.
    cached = llm_utils.cached_memory_bytes()
    assert cached >= 1024 * 64 * 4
    out2, _ = llm_utils.kernels.attention_forward(q, k, v, causal=True, backend="flash")
    np.testing.assert_array_equal(out1, out2)
    assert llm_utils.cached_memory_bytes() == cached  # reused, not allocated again
    llm_utils.release_cached_memory()
    assert llm_utils.cached_memory_bytes() == 0


def test_backend_setting():
    m = SelfAttention_Linear(3, 2)
    assert m.backend == "auto"
    m.set_backend("reference")
    assert m.backend == "reference"
    m.set_backend(llm_utils.Backend.auto)
    assert m.backend == "auto"
    x = random_input(np.random.default_rng(0), (5, 3))
    m.set_backend("reference")
    reference = m(x)
    m.set_backend("auto")
    assert_forward_close(m(x), reference)


# ---------------------------------------------------------------- arrays in

def test_float32_c_contiguous_input_is_not_copied():
    x = np.ones((4, 3), np.float32)
    assert _core._as_float32(x) is x
    for other in [x.astype(np.float64), x.T.copy().T, x[:, :2], x.astype(">f4")]:
        y = _core._as_float32(other)
        assert y.dtype == np.float32 and y.flags.c_contiguous and not np.shares_memory(x, y)


@pytest.mark.parametrize("convert", [
    lambda x: x.astype(np.float64),
    lambda x: x.astype(np.float16).astype(np.float32),  # compare on exactly representable input
    lambda x: torch.from_numpy(x),
    lambda x: torch.from_numpy(x).double(),
    lambda x: torch.from_numpy(np.ascontiguousarray(x.swapaxes(0, 1))).transpose(0, 1),
    lambda x: x.tolist(),
])
def test_anything_numpy_converts_is_accepted(convert):
    llm_utils.manual_seed(0)
    m = SelfAttention_Linear(3, 2)
    x = random_input(np.random.default_rng(1), (5, 3))
    converted = convert(x)
    expected = m(np.asarray(converted, dtype=np.float32))
    np.testing.assert_array_equal(m(converted), expected)


def test_integer_input():
    llm_utils.manual_seed(0)
    m = SelfAttention_Params(3, 2)
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(m(x), m(x.astype(np.float32)))


# ---------------------------------------------------------------- arrays out

def test_outputs_are_owning_float32_arrays():
    llm_utils.manual_seed(0)
    m = SelfAttention_Linear(3, 2)
    x = random_input(np.random.default_rng(2), (5, 3))
    y = m(x)
    first = y.copy()
    attn = m.attn_weights
    m(x * 2)  # the module's buffers are replaced; earlier outputs keep their values
    np.testing.assert_array_equal(y, first)
    assert y.dtype == np.float32 and y.flags.writeable and y.flags.owndata is False
    assert not np.shares_memory(attn, m.attn_weights)
    dx = m.backward(np.ones_like(m(x)))
    assert dx.shape == x.shape and dx.dtype == np.float32


def test_parameter_data_aliases_the_module():
    llm_utils.manual_seed(0)
    m = SelfAttention_Params(3, 2)
    x = random_input(np.random.default_rng(3), (4, 3))
    params = dict(m.named_parameters())
    assert params["W_value"].data.base is not None
    params["W_value"].data[:] = 0  # in place: the module computes with zeros now
    np.testing.assert_array_equal(m(x), np.zeros((4, 2), np.float32))
    m.W_value[:, 0] = 1
    assert np.all(params["W_value"].data[:, 0] == 1)
    m.W_value = np.full((3, 2), 2.0)  # assignment copies into the same memory
    assert np.all(params["W_value"].data == 2)
    np.testing.assert_array_equal(np.asarray(params["W_value"]), params["W_value"].data)
    assert params["W_value"].shape == (3, 2) and params["W_value"].requires_grad


def test_arrays_keep_their_module_alive():
    llm_utils.manual_seed(0)
    w = SelfAttention_Params(3, 2).W_query
    weight = SelfAttention_Linear(3, 2).W_key.weight
    p = next(SelfAttention_Linear(3, 2, qkv_bias=True).parameters())
    data = p.data
    del p
    gc.collect()
    llm_utils.manual_seed(0)
    np.testing.assert_array_equal(w, llm_utils.rand(3, 2))
    assert weight.shape == (2, 3) and data.shape == (2, 3)
    data[:] = 1.0  # writing the memory of a module nothing else refers to: still valid


def test_gradients_are_read_only_copies_and_can_be_assigned():
    llm_utils.manual_seed(0)
    m = SelfAttention_Linear(3, 2)
    m(np.ones((4, 3), np.float32))
    m.backward(np.ones((4, 2), np.float32))
    p = dict(m.named_parameters())["W_value.weight"]
    g = p.grad
    with pytest.raises(ValueError, match="read-only"):
        g[0, 0] = 1
    p.grad = np.full((2, 3), 0.5)
    np.testing.assert_array_equal(p.grad, np.full((2, 3), 0.5, np.float32))
    m.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(g, g)  # the earlier copy is unaffected and valid
    p.grad = None
    assert p.grad is None


def test_linear_layers():
    ours, ref = build("SelfAttention_Linear", 4, 3, True, seed=4)
    x = random_input(np.random.default_rng(4), (2, 5, 4))
    assert repr(ours.W_query) == repr(ref.W_query)
    assert (ours.W_query.in_features, ours.W_query.out_features) == (4, 3)
    assert_forward_close(ours.W_query(x), to_numpy(ref.W_query(torch.from_numpy(x))))
    np.testing.assert_array_equal(ours.W_value.bias, to_numpy(ref.W_value.bias))
    assert SelfAttention_Linear(4, 3).W_query.bias is None


def test_derived_layers_are_snapshots():
    llm_utils.manual_seed(5)
    m = SelfAttention_Linear4(3, 2)
    x = random_input(np.random.default_rng(5), (4, 3))
    m(x)
    layer = m.attnValues2ContextL
    assert repr(layer) == "Linear(in_features=4, out_features=4, bias=False)"
    np.testing.assert_array_equal(layer.weight, m.attn_weights)
    m(random_input(np.random.default_rng(6), (2, 3)))  # the next forward does not disturb it
    assert layer.weight.shape == (4, 4)
    assert m.model.weight.shape == (2, 2)


def test_copies_are_independent():
    for cls in [SelfAttention_Params, SelfAttention_Linear, SelfAttention_Linear4,
                SelfAttention_Linear5]:
        m = cls(3, 2)
        x = random_input(np.random.default_rng(7), (4, 3))
        y = m(x)
        clone = copy.deepcopy(m)
        assert type(clone) is cls
        np.testing.assert_array_equal(clone.attn_weights, m.attn_weights)
        next(clone.parameters()).data[:] = 0
        np.testing.assert_array_equal(m(x), y)
        assert type(copy.copy(m)) is cls


def test_subclasses_override_forward_as_in_pytorch():
    class Doubled(SelfAttention_Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    llm_utils.manual_seed(0)
    m = Doubled(3, 2)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(m(x), 2 * m.context_vec)


# ---------------------------------------------------------------- the GIL

def test_the_gil_is_released_while_computing():
    llm_utils.manual_seed(0)
    m = SelfAttention_Linear(64, 64)
    x = random_input(np.random.default_rng(8), (2048, 64))
    start = time.perf_counter()
    m(x)
    duration = time.perf_counter() - start
    worker = threading.Thread(target=m, args=(x,))
    ticks = 0
    worker.start()
    while worker.is_alive():  # only runs while the worker's forward does not hold the GIL
        ticks += 1
        time.sleep(0.001)
    worker.join()
    # Holding the GIL for the whole forward would allow a couple of ticks at its edges.
    assert ticks >= min(10, int(duration / 0.001) // 4), (ticks, duration)


# ---------------------------------------------------------------- the README's example

def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    with open(readme) as f:
        text = f.read()
    section = text[text.index("\n## Python\n"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert "(6, 6) (6, 2) (6, 2)" in capsys.readouterr().out
    assert (tmp_path / "w.safetensors").exists()


# ---------------------------------------------------------------- the shared Module core

BOOK_CLASSES = {
    "CausalAttention": lambda: llm_utils.CausalAttention(3, 4, 6, 0.0),
    "MultiHeadAttentionWrapper": lambda: llm_utils.MultiHeadAttentionWrapper(3, 4, 6, 0.0, 2),
    "MultiHeadAttention": lambda: llm_utils.MultiHeadAttention(3, 4, 6, 0.0, 2),
}


def all_modules():
    llm_utils.manual_seed(50)
    return [build(name, 3, 4, False, seed=51)[0] for name in CLASSES] + [
        make() for make in BOOK_CLASSES.values()]


def test_every_class_is_a_module():
    for m in all_modules():
        assert isinstance(m, llm_utils.Module), type(m)
        x = random_input(np.random.default_rng(0), (2, 5, 3))
        y = m(x)
        dx = m.backward(np.ones_like(y))
        assert dx.shape == x.shape
        frozen_qk = type(m).__name__ in ("SelfAttention_Linear4", "SelfAttention_Linear5")
        for name, p in m.named_parameters():
            assert (p.grad is not None) == (not frozen_qk or name.startswith("W_value")), name
        clone = copy.deepcopy(m)
        assert type(clone) is type(m)
        next(clone.parameters()).data[...] = 0
        np.testing.assert_array_equal(m(x), y)


def test_named_parameters_recurse_false_keeps_the_modules_own():
    llm_utils.manual_seed(52)
    assert [n for n, _ in SelfAttention_Params(3, 2).named_parameters(recurse=False)] == [
        "W_query", "W_key", "W_value"]
    # The Linear classes' parameters all belong to their W_query, W_key, W_value layers, as
    # in PyTorch.
    assert list(SelfAttention_Linear(3, 2).named_parameters(recurse=False)) == []
    assert list(llm_utils.MultiHeadAttention(3, 4, 6, 0.0, 2).parameters(recurse=False)) == []
    names = [n for n, _ in SelfAttention_Linear(3, 2, qkv_bias=True).named_parameters("sa")]
    assert names[0] == "sa.W_query.weight" and len(names) == 6


def test_parameters_and_their_arrays_outlive_the_module():
    llm_utils.manual_seed(53)
    m = llm_utils.MultiHeadAttention(3, 4, 6, 0.0, 2)
    p = next(m.parameters())
    alias = m.W_query.weight
    opt = llm_utils.optim.SGD(m.parameters(), lr=0.1)
    y = m(random_input(np.random.default_rng(1), (1, 4, 3)))
    m.backward(np.ones_like(y))
    before = alias.copy()
    del m
    gc.collect()
    opt.step()  # the parameters live on in the optimizer, the Parameter and the array
    assert not np.array_equal(alias, before)
    np.testing.assert_array_equal(p.data, alias)
    assert p == opt.params[0] and hash(p) == hash(opt.params[0])


def test_book_modules_keep_attention_weights():
    llm_utils.manual_seed(54)
    x = random_input(np.random.default_rng(2), (2, 5, 3))
    ca = llm_utils.CausalAttention(3, 4, 6, 0.0)
    with pytest.raises(AttributeError, match="no forward has run yet"):
        ca.attn_weights
    ca(x)
    w = ca.attn_weights
    assert w.shape == (2, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-6)
    assert np.all(np.triu(w[0], 1) == 0)  # causal: nothing above the diagonal
    mha = llm_utils.MultiHeadAttention(3, 4, 6, 0.0, 2)
    mha(x[0])
    assert mha.attn_weights.shape == (2, 5, 5)  # (heads, N, N) for 2-D input

"""Every error a user can run into: the exception type Python code catches (ValueError for
shapes and arguments, OSError for files, RuntimeError for calls in the wrong state, TypeError
for wrong Python types, AttributeError for what exists only after a forward) and its message,
which is the library's own."""

import re

import numpy as np
import pytest

import llm_utils
from llm_utils.optim import SGD, AdamW
from llm_utils.safetensors import load_file, load_metadata, save_file
from llm_utils.selfAttn import (SelfAttention_Linear, SelfAttention_Linear4,
                                SelfAttention_Linear5, SelfAttention_Params)


def raises(exc_type, message):
    """pytest.raises for the whole message, compared literally."""
    return pytest.raises(exc_type, match="^" + re.escape(message) + "$")


@pytest.fixture
def module():
    llm_utils.manual_seed(0)
    return SelfAttention_Linear(3, 2)


# ---------------------------------------------------------------- forward and backward

@pytest.mark.parametrize("shape,message", [
    ((3,), "x must be (seq_len, d_in) or (batch, seq_len, d_in), got 1-D input (x.shape = [3])"),
    ((1, 2, 3, 3), "x must be (seq_len, d_in) or (batch, seq_len, d_in), got 4-D input "
                   "(x.shape = [1, 2, 3, 3])"),
    ((6, 4), "x has d_in=4, module expects d_in=3 (x.shape = [6, 4])"),
    ((2, 6, 4), "x has d_in=4, module expects d_in=3 (x.shape = [2, 6, 4])"),
    ((0, 3), "x has a zero-length sequence (x.shape = [0, 3])"),
    ((2, 0, 3), "x has a zero-length sequence (x.shape = [2, 0, 3])"),
    ((0, 4, 3), "x has an empty batch (x.shape = [0, 4, 3])"),
])
@pytest.mark.parametrize("class_name", ["SelfAttention_Params", "SelfAttention_Linear5"])
def test_bad_input_shapes(shape, message, class_name):
    m = getattr(llm_utils.selfAttn, class_name)(3, 2)
    with raises(ValueError, f"{class_name}.forward: {message}"):
        m(np.zeros(shape, np.float32))
    assert not hasattr(m, "attn_weights")  # a failed forward leaves nothing behind


@pytest.mark.parametrize("value,dtype", [
    (np.zeros((4, 3), complex), "complex128"),
    (np.zeros((4, 3), bool), "bool"),
    ("abc", "<U3"),
    (np.array([object()] * 3), "object"),
])
def test_non_numeric_input_is_a_type_error(module, value, dtype):
    with raises(TypeError, "SelfAttention_Linear.forward: x: expected real numbers (float32 "
                           f"preferred), got an array of dtype {dtype}"):
        module(value)


def test_none_and_ragged_input(module):
    with raises(TypeError, "SelfAttention_Linear.forward: x: expected an array of numbers, "
                           "got None"):
        module(None)
    with pytest.raises(ValueError, match="inhomogeneous"):  # numpy's own message
        module([[1.0, 2.0, 3.0], [1.0, 2.0]])


def test_backward_before_forward(module):
    with raises(RuntimeError, "SelfAttention_Linear.backward: called before any forward"):
        module.backward(np.zeros((4, 2), np.float32))


def test_backward_with_the_wrong_shape(module):
    module(np.zeros((4, 3), np.float32))
    with raises(ValueError, "SelfAttention_Linear.backward: grad_output has shape [4, 3], the "
                            "forward output had shape [4, 2]"):
        module.backward(np.zeros((4, 3), np.float32))
    with raises(ValueError, "SelfAttention_Linear.backward: grad_output has shape [1, 4, 2], the "
                            "forward output had shape [4, 2]"):
        module.backward(np.zeros((1, 4, 2), np.float32))


def test_backward_after_loading_weights(module):
    module(np.zeros((4, 3), np.float32))
    module.load_state_dict(module.state_dict())
    with raises(RuntimeError, "SelfAttention_Linear.backward: the weights were loaded after the "
                              "last forward; run forward again"):
        module.backward(np.zeros((4, 2), np.float32))


def test_what_exists_only_after_a_forward():
    llm_utils.manual_seed(0)
    m = SelfAttention_Linear5(3, 2)
    for name in ["values", "attn_weights", "context_vec", "attnValues2ContextL", "model",
                 "attnQueries2ScoresL"]:
        with raises(AttributeError, f"SelfAttention_Linear5.{name}: no forward has run yet"):
            getattr(m, name)
        assert not hasattr(m, name)


# ---------------------------------------------------------------- construction and settings

@pytest.mark.parametrize("cls", [SelfAttention_Params, SelfAttention_Linear,
                                 SelfAttention_Linear4])
def test_non_positive_sizes(cls):
    with raises(ValueError, f"{cls.__name__}: d_in and d_out must be positive, got d_in=0, "
                            "d_out=2"):
        cls(0, 2)
    with raises(ValueError, f"{cls.__name__}: d_in and d_out must be positive, got d_in=3, "
                            "d_out=-1"):
        cls(3, -1)


def test_wrong_constructor_arguments():
    with pytest.raises(TypeError):
        SelfAttention_Params(3, 2, qkv_bias=True)  # the original has no such argument either
    with pytest.raises(TypeError):
        SelfAttention_Linear(3.5, 2)


def test_settings(module):
    with raises(ValueError, "set_num_threads: n must be >= 1, got 0"):
        llm_utils.set_num_threads(0)
    with raises(ValueError, "unknown backend 'bogus' (expected reference, flash, auto or cuda)"):
        module.set_backend("bogus")
    with raises(TypeError, "set_backend: expected 'reference', 'flash', 'auto' or a Backend, "
                           "got 3"):
        module.set_backend(3)


def test_seeds_and_sizes():
    with raises(TypeError, "manual_seed: seed must be an int, got str"):
        llm_utils.manual_seed("1")
    with raises(ValueError, "manual_seed: seed must be in [-2**63, 2**64), got "
                            "18446744073709551616"):
        llm_utils.manual_seed(2**64)
    with raises(ValueError, "shape [2, -1] has a negative size"):
        llm_utils.rand(2, -1)
    with raises(TypeError, "rand() needs a size, e.g. rand(2, 3) or rand((2, 3))"):
        llm_utils.rand()


# ---------------------------------------------------------------- parameters and state dicts

def test_assigning_arrays_of_the_wrong_shape(module):
    with raises(ValueError, "Linear.weight: expected shape [2, 3], got [3, 2]"):
        module.W_query.weight = np.zeros((3, 2))
    with raises(ValueError, "Linear.bias: this layer was built without a bias"):
        module.W_query.bias = np.zeros(2)
    p = next(module.parameters())
    with raises(ValueError, "Parameter.grad: expected shape [2, 3], got [2]"):
        p.grad = np.zeros(2)
    with raises(ValueError, "Parameter.data: expected shape [2, 3], got [6]"):
        p.data = np.zeros(6)
    params = SelfAttention_Params(3, 2)
    with raises(ValueError, "W_value: expected shape [3, 2], got [2, 3]"):
        params.W_value = np.zeros((2, 3))


def test_load_state_dict_errors(module):
    good = module.state_dict()
    where = "SelfAttention_Linear.load_state_dict"
    with raises(ValueError, f"{where}: missing key 'W_key.weight'"):
        module.load_state_dict({k: v for k, v in good.items() if k != "W_key.weight"})
    with raises(ValueError, f"{where}: unexpected key 'W_query.bias'"):
        module.load_state_dict(dict(good, **{"W_query.bias": np.zeros(2)}))
    with raises(ValueError, f"{where}: key 'W_value.weight' has shape [3, 2], expected [2, 3]"):
        module.load_state_dict(dict(good, **{"W_value.weight": np.zeros((3, 2))}))
    with raises(TypeError, f"{where}: expected a mapping of name -> array, got <class 'int'>"):
        module.load_state_dict(5)
    with raises(TypeError, f"{where}: keys must be str, got 1"):
        module.load_state_dict({1: np.zeros(2)})
    with raises(TypeError, f"{where}: 'W_key.weight': expected real numbers (float32 "
                           "preferred), got an array of dtype <U1"):
        module.load_state_dict(dict(good, **{"W_key.weight": "x"}))


def test_derived_state_after_a_batch():
    llm_utils.manual_seed(0)
    m = SelfAttention_Linear4(3, 2)
    m(np.zeros((2, 4, 3), np.float32))
    with raises(ValueError, "SelfAttention_Linear4.state_dict: derived layers exist once per "
                            "batch element after a 3-D forward; include_derived needs the last "
                            "forward to be 2-D"):
        m.state_dict(include_derived=True)
    with raises(ValueError, "SelfAttention_Linear4.load_state_dict: derived key 'model.weight' "
                            "must be a matrix, got shape [2, 4, 4]"):
        m.load_state_dict(dict(m.state_dict(), **{"model.weight": np.zeros((2, 4, 4))}))


# ---------------------------------------------------------------- optimizers

def test_optimizer_arguments(module):
    with raises(ValueError, "SGD: invalid learning rate lr=-1.000000"):
        SGD(module.parameters(), lr=-1)
    with raises(ValueError, "SGD: nesterov momentum requires a momentum and zero dampening"):
        SGD(module.parameters(), lr=0.1, nesterov=True)
    with raises(ValueError, "AdamW: invalid beta parameter at index 0: 1.000000"):
        AdamW(module.parameters(), betas=(1.0, 0.9))
    with raises(ValueError, "AdamW: invalid epsilon value eps=-1.000000"):
        AdamW(module.parameters(), eps=-1)
    with raises(ValueError, "optimizer got an empty parameter list"):
        AdamW([])
    with raises(TypeError, "AdamW: parameter groups (dicts) are not supported; pass "
                           "module.parameters()"):
        AdamW([{"params": list(module.parameters())}])
    with raises(TypeError, "SGD: params must be Parameters, as module.parameters() yields, got "
                           "<class 'numpy.ndarray'>"):
        SGD([np.zeros(3)], lr=0.1)
    with raises(ValueError, "AdamW: a parameter appears more than once"):
        AdamW(list(module.parameters()) * 2)


# ---------------------------------------------------------------- files

def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with raises(OSError, f"cannot open '{missing}': No such file or directory"):
        load_file(missing)
    with raises(OSError, f"cannot read '{tmp_path}': it is a directory, not a file"):
        load_metadata(tmp_path)
    target = tmp_path / "no" / "w.safetensors"
    with raises(OSError, f"cannot write '{target}': cannot create a temporary file in its "
                         "folder: No such file or directory"):
        save_file({"a": np.zeros(2)}, target)


@pytest.mark.parametrize("content,message", [
    (b"abc", "file is 3 bytes, too short for the 8-byte header length"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{}", None),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00[]", None),
    (b"\x1c\x00\x00\x00\x00\x00\x00\x00" + b'{"a":{"dtype":"F16","shape":[1],'
     b'"data_offsets":[0,2]}}', None),
])
def test_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    expected = re.escape(f"safetensors '{path}': ") + (re.escape(message) if message else ".+")
    with pytest.raises(OSError, match="^" + expected + "$"):
        load_file(path)


def test_save_file_arguments(tmp_path):
    path = tmp_path / "w.safetensors"
    with raises(ValueError, "save_safetensors: a tensor cannot be named '__metadata__'"):
        save_file({"__metadata__": np.zeros(2)}, path)
    with raises(TypeError, "save_file: metadata must map str to str, got 'format': 1"):
        save_file({"a": np.zeros(2)}, path, metadata={"format": 1})
    with raises(TypeError, "save_file: tensor names must be str, got 1"):
        save_file({1: np.zeros(2)}, path)
    with raises(TypeError, "save_file: expected a mapping of name -> array, got <class 'list'>"):
        save_file([np.zeros(2)], path)
    assert not path.exists()  # nothing was written by any of these


# ---------------------------------------------------------------- untrusted files, through Python

def safetensors_bytes(header, data=b""):
    import json
    import struct
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def entry(shape, begin, end, dtype="F32"):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize("header,data,message", [
    ({"a": entry([2, 3], 0, 24), "b": entry([2, 3], 12, 36)}, b"\0" * 36, "overlaps"),
    ({"a": entry([2, 3], 0, 24), "b": entry([2, 3], 24, 48)}, b"\0" * 30, "beyond the end"),
    ({"a": entry([4294967296, 4294967296], 0, 0)}, b"", "int64"),
    ({"a": entry([1 << 62, 4], 0, 0)}, b"", "int64"),
    # 10^12 elements claimed: refused from the header, nothing allocated.
    ({"a": entry([1000000, 1000000], 0, 4 * 10**12)}, b"", "beyond the end"),
])
def test_untrusted_safetensors_headers(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors_bytes(header, data))
    with pytest.raises(OSError, match=message):
        load_file(path)


def test_a_failed_load_state_dict_from_a_file_changes_nothing(module, tmp_path):
    before = {k: v.copy() for k, v in module.state_dict().items()}
    path = tmp_path / "w.safetensors"
    good = module.state_dict()
    good["W_key.weight"] = np.zeros((2, 5), np.float32)  # wrong shape
    save_file(good, path)
    with pytest.raises(ValueError, match="W_key.weight"):
        module.load_state_dict(load_file(path))
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_nan_and_inf_input_are_not_errors():
    # As in PyTorch: a NaN or Inf token reaches every query of its sequence through its key, so
    # that sequence's outputs are NaN; the other sequences are untouched.
    llm_utils.manual_seed(1)
    m = SelfAttention_Linear(3, 2)
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    clean = m(x)
    for bad in (np.nan, np.inf):
        x_bad = x.copy()
        x_bad[0, 1, 0] = bad
        y = m(x_bad)
        assert np.isnan(y[0]).all()
        np.testing.assert_array_equal(y[1], clean[1])

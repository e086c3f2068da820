"""State dicts both ways between llm_utils and PyTorch through safetensors files (written and
read on the PyTorch side by tests/golden/safetensors_io.py), and what loading guarantees: all or
nothing, and arrays that alias the parameters stay valid and see the new values."""

import numpy as np
import pytest
import torch

import llm_utils
from llm_utils.safetensors import load_file, load_metadata, save_file
from support import (CLASS_BIAS, assert_forward_close, build, random_input, safetensors_io,
                     to_numpy)


@pytest.mark.parametrize("class_name,bias", CLASS_BIAS)
def test_our_weights_load_into_pytorch(tmp_path, class_name, bias):
    ours, _ = build(class_name, 5, 3, bias, seed=31)
    path = tmp_path / "w.safetensors"
    save_file(ours.state_dict(), path, metadata={"format": "pt"})
    tensors, metadata = safetensors_io.load(path)
    assert metadata == {"format": "pt"}
    _, ref = build(class_name, 5, 3, bias, seed=0)  # other weights, replaced by the file's
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    x = random_input(np.random.default_rng(31), (7, 5))
    assert_forward_close(ours(x), to_numpy(ref(torch.from_numpy(x))))


@pytest.mark.parametrize("class_name,bias", CLASS_BIAS)
@pytest.mark.parametrize("after_forward", [False, True])
def test_pytorch_weights_load_here(tmp_path, class_name, bias, after_forward):
    _, ref = build(class_name, 5, 3, bias, seed=32)
    x = random_input(np.random.default_rng(32), (2, 6, 5))
    if after_forward:  # Linear4/Linear5's state dict then holds the derived layers too
        ref(torch.from_numpy(x[0]))
    path = tmp_path / "w.safetensors"
    safetensors_io.save(path, {k: to_numpy(v) for k, v in ref.state_dict().items()},
                        metadata={"format": "pt"})
    assert load_metadata(path) == {"format": "pt"}
    ours, _ = build(class_name, 5, 3, bias, seed=0)
    result = ours.load_state_dict(load_file(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_forward_close(ours(x), to_numpy(ref(torch.from_numpy(x))))


def test_load_state_dict_takes_torch_tensors_directly():
    ours, ref = build("SelfAttention_Linear", 4, 2, True, seed=33)
    _, other = build("SelfAttention_Linear", 4, 2, True, seed=34)
    ours.load_state_dict(other.state_dict())
    for name, value in other.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[name], value.numpy())


def test_files_keep_order_names_and_values(tmp_path):
    rng = np.random.default_rng(35)
    tensors = {"b": rng.random((2, 3)), "a": rng.random(4).astype(np.float32),
               "scalar": np.float32(1.5), "empty": np.zeros((0, 3), np.float32)}
    save_file(tensors, str(tmp_path / "t.safetensors"))
    loaded = load_file(tmp_path / "t.safetensors")
    assert list(loaded) == list(tensors)
    for name, value in tensors.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], np.asarray(value, np.float32))
    assert load_metadata(tmp_path / "t.safetensors") == {}
    # The PyTorch side reads the same file.
    theirs, _ = safetensors_io.load(tmp_path / "t.safetensors")
    assert sorted(theirs) == sorted(tensors)


def test_loading_writes_into_the_arrays_that_alias_the_parameters():
    ours, _ = build("SelfAttention_Linear", 3, 2, True, seed=36)
    other, _ = build("SelfAttention_Linear", 3, 2, True, seed=37)
    alias = dict(ours.named_parameters())["W_key.weight"].data
    weight = ours.W_key.weight
    ours.load_state_dict(other.state_dict())
    np.testing.assert_array_equal(alias, other.W_key.weight)
    np.testing.assert_array_equal(weight, other.W_key.weight)
    alias[0, 0] = 42.0  # still the module's memory
    assert ours.state_dict()["W_key.weight"][0, 0] == 42.0


def test_a_failed_load_changes_nothing():
    ours, _ = build("SelfAttention_Linear", 3, 2, True, seed=38)
    before = ours.state_dict()
    bad = {k: v + 1 for k, v in before.items()}
    bad["W_value.bias"] = np.zeros(5, np.float32)  # wrong shape, checked after the others
    with pytest.raises(ValueError, match="W_value.bias"):
        ours.load_state_dict(bad)
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_non_strict_load_reports_missing_and_unexpected_keys():
    ours, _ = build("SelfAttention_Linear4", 3, 2, False, seed=39)
    state = ours.state_dict()
    del state["W_key.weight"]
    state["extra"] = np.zeros(2, np.float32)
    state["model.weight"] = np.zeros((4, 4), np.float32)  # derived: accepted, not unexpected
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert missing == ["W_key.weight"] and unexpected == ["extra"]


def test_state_dict_is_a_snapshot():
    llm_utils.manual_seed(40)
    m = llm_utils.selfAttn.SelfAttention_Params(3, 2)
    sd = m.state_dict()
    sd["W_query"][:] = 0
    assert m.W_query.any()

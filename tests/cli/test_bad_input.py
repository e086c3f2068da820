"""Bad input through `selfattn run`, beyond what test_cli.py covers (issue 6, part 3).

Every case must end with exactly one stderr line starting with `error:`, a non-zero exit status
(not a signal), within a time limit, and with the folder exactly as before: no output, no
half-written file, no temporary file. NaN and Inf input are not errors: they behave as the
README's Numerics section says, checked against PyTorch on the original code.

The sanitizer stage (make test-asan) runs this file against the instrumented binary too. Bad
input for the Python package is tested with the package (python/tests).
"""

import json
import os
import resource
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import original_selfattn as orig  # noqa: E402
import safetensors_io  # noqa: E402

SELFATTN = os.environ.get("SELFATTN", os.path.join(HERE, "..", "..", "build", "bin", "selfattn"))
TIMEOUT = 60
MEMORY_LIMIT = 1 << 30  # address space for the "fails without allocating" cases
INT64_MAX = (1 << 63) - 1


def asan_instrumented():
    # ASan reserves terabytes of address space, so RLIMIT_AS cannot bound it; under ASan a huge
    # allocation is caught by max_allocation_size_mb instead.
    with open(SELFATTN, "rb") as f:
        return b"__asan_init" in f.read()


def run(args, limit_memory=False):
    env = dict(os.environ)
    preexec = None
    if limit_memory:
        if asan_instrumented():
            env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":max_allocation_size_mb=1024"
        else:
            def preexec():
                resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    start = time.monotonic()
    r = subprocess.run([SELFATTN, *map(str, args)], capture_output=True, text=True,
                       timeout=TIMEOUT, env=env, preexec_fn=preexec)
    return r, time.monotonic() - start


def expect_error(folder, args, text, limit_memory=False, max_seconds=None):
    before = sorted(os.listdir(folder))
    r, seconds = run(args, limit_memory)
    assert r.returncode > 0, (r.returncode, r.stderr)  # < 0 would be a signal: a crash
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:"), r.stderr
    assert text in lines[0], lines[0]
    assert sorted(os.listdir(folder)) == before, "an output or temporary file was left behind"
    if max_seconds is not None:
        assert seconds < max_seconds, f"took {seconds:.1f} s"
    return lines[0]


def run_args(tmp_path, x, *extra, module="linear"):
    return ["run", "--module", module, "--d-in", 3, "--d-out", 2, "--input", x,
            "--output", tmp_path / "y.npy", *extra]


def npy_header(descr="<f4", shape="(2, 3)", major=1):
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    text += " " * ((64 - (10 + len(text) + 1) % 64) % 64) + "\n"
    if major == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()
    return b"\x93NUMPY" + bytes([major, 0]) + struct.pack("<I", len(text)) + text.encode()


def safetensors_bytes(header, data=b""):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def entry(shape, begin, end, dtype="F32"):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.fixture
def x_path(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((4, 3), dtype=np.float32))
    return path


def write(path, data):
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------- npy input

def test_npy_header_length_beyond_the_file(tmp_path):
    x = write(tmp_path / "x.npy", b"\x93NUMPY\x01\x00\xff\x7f{'descr': '<f4'")
    expect_error(tmp_path, run_args(tmp_path, x), "beyond the end of the file")


def test_npy_version2_header_length_beyond_the_file(tmp_path):
    x = write(tmp_path / "x.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{}")
    expect_error(tmp_path, run_args(tmp_path, x), "beyond the end of the file")


def test_npy_ending_inside_the_preamble(tmp_path):
    x = write(tmp_path / "x.npy", b"\x93NUMPY\x01\x00\x10")
    expect_error(tmp_path, run_args(tmp_path, x), "x.npy")


@pytest.mark.parametrize("dtype", ["<f2", "<f8", "<i4", "<i8", "|u1", "|b1", "<c8", "<U3"])
def test_npy_dtypes_other_than_float32(tmp_path, dtype):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 3), dtype=dtype))
    expect_error(tmp_path, run_args(tmp_path, x), "only float32")


def test_npy_big_endian_float32(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 3), dtype=">f4"))
    expect_error(tmp_path, run_args(tmp_path, x), ">f4")


def test_npy_object_array(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    expect_error(tmp_path, run_args(tmp_path, x), "only float32")


@pytest.mark.parametrize("shape", ["(4611686018427387904, 4)", "(4294967296, 4294967296)",
                                   "(%d, %d)" % (INT64_MAX, INT64_MAX), "(%d,)" % INT64_MAX,
                                   "(99999999999999999999, 3)"])
def test_npy_shape_overflowing_int64(tmp_path, shape):
    x = write(tmp_path / "x.npy", npy_header(shape=shape))
    line = expect_error(tmp_path, run_args(tmp_path, x), "x.npy", limit_memory=True,
                        max_seconds=10)
    assert "int64" in line, line


def test_npy_trillion_elements_fail_at_once_without_allocating(tmp_path):
    # 10^12 float32 elements would be 4 TB; the process may not even map 1 GiB.
    x = write(tmp_path / "x.npy", npy_header(shape="(1000000, 1000000)"))
    expect_error(tmp_path, run_args(tmp_path, x), "truncated", limit_memory=True, max_seconds=10)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_input_device_fails_at_once(tmp_path, device):
    expect_error(tmp_path, run_args(tmp_path, device), "not a .npy file", limit_memory=True,
                 max_seconds=10)


def test_empty_input_file(tmp_path):
    x = write(tmp_path / "x.npy", b"")
    expect_error(tmp_path, run_args(tmp_path, x), "empty")


def test_input_is_a_directory(tmp_path):
    (tmp_path / "in").mkdir()
    expect_error(tmp_path, run_args(tmp_path, tmp_path / "in"), "directory")


@pytest.mark.parametrize("shape,text", [((4, 0), "d_in=0"), ((0, 4, 3), "empty batch"),
                                        ((2, 0, 3), "zero-length sequence"),
                                        ((0,), "1-D"), ((), "0-D"), ((1, 2, 4, 3), "4-D")])
def test_empty_and_misshapen_arrays(tmp_path, shape, text):
    x = tmp_path / "x.npy"
    np.save(x, np.ones(shape, dtype=np.float32))
    expect_error(tmp_path, run_args(tmp_path, x), text)


# ----------------------------------------------------------------- safetensors weights

def weights_error(tmp_path, x_path, data, text, **kw):
    w = write(tmp_path / "w.safetensors", data)
    return expect_error(tmp_path, run_args(tmp_path, x_path, "--weights", w), text, **kw)


def test_weights_header_length_beyond_the_file(tmp_path, x_path):
    weights_error(tmp_path, x_path, struct.pack("<Q", 5000) + b"{}", "beyond the end of the file")


@pytest.mark.parametrize("data", [b"", b"\x01\x02\x03"])
def test_weights_too_short(tmp_path, x_path, data):
    weights_error(tmp_path, x_path, data, "w.safetensors")


def test_weights_not_json(tmp_path, x_path):
    weights_error(tmp_path, x_path, safetensors_bytes(b'{"W_query.weight": '), "JSON")


def test_weights_overlapping_offsets(tmp_path, x_path):
    header = {"W_query.weight": entry([2, 3], 0, 24), "W_key.weight": entry([2, 3], 12, 36),
              "W_value.weight": entry([2, 3], 36, 60)}
    weights_error(tmp_path, x_path, safetensors_bytes(header, b"\0" * 60), "overlaps")


def test_weights_offsets_leaving_the_file(tmp_path, x_path):
    header = {"W_query.weight": entry([2, 3], 0, 24), "W_key.weight": entry([2, 3], 24, 48),
              "W_value.weight": entry([2, 3], 48, 72)}
    weights_error(tmp_path, x_path, safetensors_bytes(header, b"\0" * 50), "beyond the end")


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F64", "I64", "U8", "BOOL", "Q4"])
def test_weights_dtypes_other_than_f32(tmp_path, x_path, dtype):
    header = {"W_query.weight": entry([2, 3], 0, 24, dtype)}
    weights_error(tmp_path, x_path, safetensors_bytes(header, b"\0" * 24), "only F32")


@pytest.mark.parametrize("shape", [[4294967296, 4294967296], [INT64_MAX, 2], [1 << 62, 4]])
def test_weights_shape_overflowing_int64(tmp_path, x_path, shape):
    header = {"W_query.weight": entry(shape, 0, 0)}
    line = weights_error(tmp_path, x_path, safetensors_bytes(header), "W_query.weight",
                         limit_memory=True, max_seconds=10)
    assert "int64" in line, line


def test_weights_trillion_elements_fail_at_once_without_allocating(tmp_path, x_path):
    header = {"W_query.weight": entry([1000000, 1000000], 0, 4 * 10**12)}
    weights_error(tmp_path, x_path, safetensors_bytes(header), "beyond the end",
                  limit_memory=True, max_seconds=10)


def test_weights_from_an_endless_device_fail_at_once(tmp_path, x_path):
    expect_error(tmp_path, run_args(tmp_path, x_path, "--weights", "/dev/zero"), "JSON",
                 limit_memory=True, max_seconds=10)


# ----------------------------------------------------------------- outputs

def test_output_is_a_directory(tmp_path, x_path):
    (tmp_path / "out").mkdir()
    expect_error(tmp_path, run_args(tmp_path, x_path)[:-1] + [tmp_path / "out"], "out")


def test_output_below_a_regular_file(tmp_path, x_path):
    expect_error(tmp_path, run_args(tmp_path, x_path)[:-1] + [x_path / "y.npy"], "Not a directory")


def test_empty_output_path(tmp_path, x_path):
    expect_error(tmp_path, run_args(tmp_path, x_path)[:-1] + [""], "empty")


# A failed run leaves no output at all: `run` writes its outputs as one step
# (llm_utils::io::write_files), so an unwritable --attn-weights or --save-weights keeps --output
# from appearing too.
def test_unwritable_attn_weights_leaves_no_output(tmp_path, x_path):
    expect_error(tmp_path, run_args(tmp_path, x_path, "--attn-weights",
                                    tmp_path / "missing" / "a.npy"), "missing")


def test_unwritable_save_weights_leaves_no_output(tmp_path, x_path):
    expect_error(tmp_path, run_args(tmp_path, x_path, "--save-weights",
                                    tmp_path / "missing" / "w.safetensors"), "missing")


# ----------------------------------------------------------------- flags

@pytest.mark.parametrize("drop,text", [("--output", "--output"), ("--module", "--module")])
def test_missing_required_flag(tmp_path, x_path, drop, text):
    args = run_args(tmp_path, x_path)
    i = args.index(drop)
    expect_error(tmp_path, args[:i] + args[i + 2:], text)


def test_missing_sizes_without_weights(tmp_path, x_path):
    expect_error(tmp_path, ["run", "--module", "linear", "--d-in", 3, "--input", x_path,
                            "--output", tmp_path / "y.npy"], "--d-out")


def test_flag_without_its_value(tmp_path, x_path):
    expect_error(tmp_path, run_args(tmp_path, x_path)[:-1], "--output")


# Numbers are checked as text before conversion: out of range is refused, not clamped.
@pytest.mark.parametrize("flag,value,text", [
    ("--d-in", "0", "--d-in: must be a positive integer, got '0'"),
    ("--d-out", "abc", "--d-out: must be a positive integer, got 'abc'"),
    ("--d-in", "99999999999999999999", "--d-in: must be at most 9223372036854775807"),
    ("--threads", "3000000000", "--threads: must be at most 2147483647"),
    ("--seed", "99999999999999999999999", "--seed: must be an integer from"),
    ("--seed", "-9223372036854775809", "--seed: must be an integer from"),
    ("--seed", "1.5", "--seed: must be an integer from"),
])
def test_bad_numbers_are_named(tmp_path, x_path, flag, value, text):
    args = run_args(tmp_path, x_path)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    expect_error(tmp_path, args, text)


@pytest.mark.parametrize("args,text", [
    (["train", "--lr", "-1"], "--lr: must be positive, got '-1'"),
    (["train", "--momentum", "nan"], "--momentum: must be a finite number"),
    (["train", "--steps", "0"], "--steps: must be a positive integer"),
    (["bench", "--seq", "x"], "--seq: must be a positive integer, got 'x'"),
])
def test_bad_numbers_in_other_subcommands(tmp_path, args, text):
    expect_error(tmp_path, args, text)


def test_unknown_subcommand(tmp_path):
    expect_error(tmp_path, ["frobnicate"], "subcommand")


# Found by fuzz_cli: CLI11 echoes arguments, and a newline in one split the error line in two.
@pytest.mark.parametrize("bad", ["linear\nerror: forged", "linear\x1b[31m"])
def test_control_characters_in_arguments_stay_on_one_line(tmp_path, x_path, bad):
    args = run_args(tmp_path, x_path)
    args[args.index("--module") + 1] = bad
    expect_error(tmp_path, args, "--module")


def test_newline_in_a_path_stays_on_one_line(tmp_path):
    expect_error(tmp_path, run_args(tmp_path, tmp_path / "a\nb.npy"), "a\\nb.npy")


# ----------------------------------------------------------------- NaN and Inf: not errors

MODULES = {"params": "SelfAttention_Params", "linear": "SelfAttention_Linear",
           "linear4": "SelfAttention_Linear4", "linear5": "SelfAttention_Linear5"}


@pytest.mark.parametrize("module", sorted(MODULES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_behaves_as_pytorch(tmp_path, module, bad):
    # (batch 2, seq 5, d_in 3) with one bad value in token 2 of the first sequence. README: a
    # NaN reaches every query of its sequence through its key, so that whole sequence is NaN;
    # the other batch element is untouched. Inf gives what PyTorch gives.
    x = np.random.default_rng(6).standard_normal((2, 5, 3)).astype(np.float32)
    x[0, 2, 1] = bad
    np.save(tmp_path / "x.npy", x)
    r, _ = run(["run", "--module", module, "--d-in", 3, "--d-out", 2, "--seed", 11, "--input",
                tmp_path / "x.npy", "--output", tmp_path / "y.npy"])
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    torch.manual_seed(11)
    m = orig.build(MODULES[module], 3, 2, False)
    expected = m(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)  # NaNs compare equal here
    if np.isnan(bad):
        assert np.isnan(y[0]).all()
    assert np.isfinite(y[1]).all()

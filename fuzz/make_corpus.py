"""Writes the seed corpus in fuzz/corpus/ (committed; rerun only to change the seeds).

    /usr/bin/python3 fuzz/make_corpus.py

Seeds are small valid files and one of each kind of invalid file, so the fuzzer starts next to
every check. Inputs that found bugs are added by hand under names that say what they found, and
are not touched here.
"""

import io
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def write(harness, name, data):
    folder = os.path.join(HERE, "corpus", harness)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def numpy_npy(array, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def npy(header, body=b"", major=1):
    text = header.encode("latin1")
    if major == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body
    return b"\x93NUMPY" + bytes([major, 0]) + struct.pack("<I", len(text)) + text + body


def npy_seeds():
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    write("fuzz_npy", "valid_2x3", numpy_npy(f32(2, 3)))
    write("fuzz_npy", "valid_batch_2x3x4", numpy_npy(f32(2, 3, 4)))
    write("fuzz_npy", "valid_vector", numpy_npy(f32(5)))
    write("fuzz_npy", "valid_scalar", numpy_npy(np.float32(1.5)))
    write("fuzz_npy", "valid_empty_0x3", numpy_npy(np.zeros((0, 3), np.float32)))
    write("fuzz_npy", "valid_nan_inf", numpy_npy(np.array([np.nan, np.inf, -np.inf, 0], np.float32)))
    write("fuzz_npy", "valid_version2", numpy_npy(f32(2, 2), version=(2, 0)))
    write("fuzz_npy", "valid_version3", numpy_npy(f32(2, 2), version=(3, 0)))
    write("fuzz_npy", "valid_py2_long_dims", npy("{'descr': '<f4', 'fortran_order': False, "
                                                 "'shape': (1L, 2L), }\n", b"\0" * 8))
    write("fuzz_npy", "bad_float64", numpy_npy(np.ones((2, 2))))
    write("fuzz_npy", "bad_int32", numpy_npy(np.ones((2, 2), np.int32)))
    write("fuzz_npy", "bad_fortran", numpy_npy(np.asfortranarray(f32(2, 3))))
    write("fuzz_npy", "bad_truncated", numpy_npy(f32(4, 4))[:-7])
    write("fuzz_npy", "bad_trailing", numpy_npy(f32(2)) + b"junk")
    write("fuzz_npy", "bad_magic", b"\x93NUMPZ" + numpy_npy(f32(2))[6:])
    write("fuzz_npy", "bad_header_len_beyond_file", b"\x93NUMPY\x01\x00\xff\xff{'descr'")
    write("fuzz_npy", "bad_huge_shape", npy("{'descr': '<f4', 'fortran_order': False, "
                                            "'shape': (1000000, 1000000), }\n"))
    write("fuzz_npy", "bad_overflow_shape", npy("{'descr': '<f4', 'fortran_order': False, "
                                                "'shape': (4294967296, 4294967296), }\n"))
    write("fuzz_npy", "bad_negative_shape", npy("{'descr': '<f4', 'fortran_order': False, "
                                                "'shape': (-1, 2), }\n"))
    write("fuzz_npy", "bad_dict", npy("{'descr': '<f4', 'shape': (2,), 'shape': (2,)}\n"))


def safetensors(header, body=b"", pad=True):
    text = json.dumps(header, separators=(",", ":")).encode() if isinstance(header, dict) else header
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + body


def entry(shape, begin, end, dtype="F32"):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def safetensors_seeds():
    z = lambda n: b"\0" * n  # noqa: E731
    write("fuzz_safetensors", "valid_two_tensors",
          safetensors({"__metadata__": {"format": "pt"}, "a.weight": entry([2, 3], 0, 24),
                       "a.bias": entry([2], 24, 32)}, z(32)))
    write("fuzz_safetensors", "valid_empty", safetensors({}))
    write("fuzz_safetensors", "valid_zero_size", safetensors({"e": entry([0, 3], 0, 0),
                                                               "s": entry([], 0, 4)}, z(4)))
    golden = os.path.join(HERE, "..", "tests", "golden", "state_dicts",
                          "SelfAttention_Linear.safetensors")
    with open(golden, "rb") as f:
        write("fuzz_safetensors", "valid_pytorch_linear", f.read())
    write("fuzz_safetensors", "bad_f16", safetensors({"a": entry([2], 0, 4, "F16")}, z(4)))
    write("fuzz_safetensors", "bad_overlap", safetensors({"a": entry([2], 0, 8),
                                                          "b": entry([2], 4, 12)}, z(12)))
    write("fuzz_safetensors", "bad_beyond_file", safetensors({"a": entry([4], 0, 16)}, z(8)))
    write("fuzz_safetensors", "bad_gap", safetensors({"a": entry([1], 4, 8)}, z(8)))
    write("fuzz_safetensors", "bad_huge_shape",
          safetensors({"a": entry([1000000, 1000000], 0, 4000000000000)}))
    write("fuzz_safetensors", "bad_overflow_shape",
          safetensors({"a": entry([4294967296, 4294967296], 0, 0)}))
    write("fuzz_safetensors", "bad_header_len_beyond_file", struct.pack("<Q", 1 << 40) + b"{}")
    write("fuzz_safetensors", "bad_duplicate_key", safetensors(b'{"a":{},"a":{}}'))
    write("fuzz_safetensors", "bad_metadata", safetensors({"__metadata__": {"n": 1}}))
    write("fuzz_safetensors", "bad_nesting", safetensors(b'{"a":{"shape":[[[1]]]}}'))
    write("fuzz_safetensors", "bad_json", safetensors(b'{"a":'))


def cli_seeds():
    args = lambda *a: b"\0".join(x.encode() for x in a)  # noqa: E731
    write("fuzz_cli", "run_seeded", args("run", "--module", "linear", "--d-in", "3", "--d-out",
                                         "2", "--seed", "789", "--input", "x.npy", "--output",
                                         "y.npy", "--attn-weights", "a.npy"))
    write("fuzz_cli", "run_weights", args("run", "--module", "linear4", "--weights",
                                          "/dev/null", "--input", "x.npy", "--output", "y.npy",
                                          "--threads", "2", "--backend", "reference"))
    write("fuzz_cli", "run_bias", args("run", "--module=params", "--qkv-bias", "--d-in=4",
                                       "--d-out", "-1", "--input", "x", "--output", "y"))
    write("fuzz_cli", "demo", args("demo"))
    write("fuzz_cli", "help", args("run", "--help"))
    write("fuzz_cli", "version", args("--version"))
    write("fuzz_cli", "unknown", args("frobnicate", "--d-in", "99999999999999999999999"))


if __name__ == "__main__":
    npy_seeds()
    safetensors_seeds()
    cli_seeds()

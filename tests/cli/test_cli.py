"""The selfattn CLI end to end, against PyTorch running the original code (live, not fixtures).

Run by ctest (see tests/CMakeLists.txt) as:
    SELFATTN=build/bin/selfattn /usr/bin/python3 -m pytest tests/cli
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import original_selfattn as orig  # noqa: E402
import safetensors_io  # noqa: E402

SELFATTN = os.environ.get("SELFATTN", os.path.join(HERE, "..", "..", "build", "bin", "selfattn"))
MODULES = {"params": "SelfAttention_Params", "linear": "SelfAttention_Linear",
           "linear4": "SelfAttention_Linear4", "linear5": "SelfAttention_Linear5"}


def selfattn(*args):
    return subprocess.run([SELFATTN, *map(str, args)], capture_output=True, text=True, timeout=60)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def torch_reference(module, d_in, d_out, bias, seed, x):
    torch.manual_seed(seed)
    m = orig.build(MODULES[module], d_in, d_out, bias)
    out = m(torch.from_numpy(x))
    return m, out.detach().numpy(), m.attn_weights.detach().numpy()


def test_demo_prints_the_books_numbers():
    r = selfattn("demo")
    assert r.returncode == 0, r.stderr
    assert "0.2996   0.8053" in r.stdout  # SelfAttention_Params, seed 123
    assert "-0.0739   0.0713" in r.stdout  # SelfAttention_Linear, seed 789
    for token in ["Your", "journey", "starts", "with", "one", "step"]:
        assert token in r.stdout


@pytest.mark.parametrize("module", sorted(MODULES))
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5)])
def test_run_matches_pytorch_for_a_seed(tmp_path, module, shape):
    bias = module != "params"
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["run", "--module", module, "--d-in", 5, "--d-out", 3, "--seed", 42,
            "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
            "--attn-weights", tmp_path / "a.npy"]
    r = selfattn(*args, *(["--qkv-bias"] if bias else []))
    assert r.returncode == 0, r.stderr
    _, out, attn = torch_reference(module, 5, 3, bias, 42, x)
    close(np.load(tmp_path / "y.npy"), out)
    close(np.load(tmp_path / "a.npy"), attn)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_saved_weights_load_into_pytorch(tmp_path, module):
    bias = module != "params"
    x = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = selfattn("run", "--module", module, "--d-in", 3, "--d-out", 2, "--seed", 9,
                 "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                 "--save-weights", tmp_path / "w.safetensors", *(["--qkv-bias"] if bias else []))
    assert r.returncode == 0, r.stderr
    tensors, metadata = safetensors_io.load(tmp_path / "w.safetensors")
    assert metadata.get("format") == "pt"
    torch.manual_seed(0)  # other weights, replaced by the file's
    m = orig.build(MODULES[module], 3, 2, bias)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    close(np.load(tmp_path / "y.npy"), m(torch.from_numpy(x)).detach().numpy())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_pytorch_state_dict_after_forward_loads_here(tmp_path, module):
    bias = module != "params"
    x = np.random.default_rng(5).standard_normal((4, 6)).astype(np.float32)
    m, out, _ = torch_reference(module, 6, 3, bias, 77, x)
    # After a forward, Linear4/5's state dict also holds the derived layers' weights.
    safetensors_io.save(tmp_path / "w.safetensors",
                        {k: v.detach().numpy() for k, v in m.state_dict().items()})
    np.save(tmp_path / "x.npy", x)
    # d_in, d_out and the bias come from the file.
    r = selfattn("run", "--module", module, "--weights", tmp_path / "w.safetensors",
                 "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    close(np.load(tmp_path / "y.npy"), out)


def test_help_has_examples():
    for args in [["--help"], ["run", "--help"], ["demo", "--help"]]:
        r = selfattn(*args)
        assert r.returncode == 0
        assert "Example" in r.stdout


# ------------------------------------------------------------------------ errors

def write_bytes(path, data):
    path.write_bytes(data)
    return path


def npy_bytes(descr="<f4", shape=(2, 3), data=None, magic=b"\x93NUMPY"):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    header = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    body = data if data is not None else np.zeros(shape, dtype=np.float32).tobytes()
    return magic + b"\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def expect_error(tmp_path, args, text):
    before = set(os.listdir(tmp_path))
    r = selfattn(*args)
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:"), r.stderr
    assert text in lines[0], lines[0]
    assert set(os.listdir(tmp_path)) == before, "an output or temporary file was left behind"


def run_args(tmp_path, x_path, *extra):
    return ["run", "--module", "linear", "--d-in", 3, "--d-out", 2, "--input", x_path,
            "--output", tmp_path / "y.npy", *extra]


@pytest.fixture
def good_x(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((4, 3), dtype=np.float32))
    return path


def test_error_missing_required_flag(tmp_path):
    expect_error(tmp_path, ["run", "--module", "linear", "--d-in", 3, "--d-out", 2,
                            "--output", tmp_path / "y.npy"], "--input")


def test_error_unknown_flag(tmp_path, good_x):
    expect_error(tmp_path, run_args(tmp_path, good_x, "--frobnicate"), "frobnicate")


def test_error_malformed_number(tmp_path, good_x):
    expect_error(tmp_path, ["run", "--module", "linear", "--d-in", "three", "--d-out", 2,
                            "--input", good_x, "--output", tmp_path / "y.npy"], "d-in")


def test_error_non_positive_size(tmp_path, good_x):
    expect_error(tmp_path, ["run", "--module", "linear", "--d-in", 0, "--d-out", 2,
                            "--input", good_x, "--output", tmp_path / "y.npy"], "d-in")


def test_error_unknown_module(tmp_path, good_x):
    expect_error(tmp_path, ["run", "--module", "linear9", "--d-in", 3, "--d-out", 2,
                            "--input", good_x, "--output", tmp_path / "y.npy"], "linear9")


def test_error_no_subcommand(tmp_path):
    expect_error(tmp_path, [], "subcommand")


def test_error_missing_input_file(tmp_path):
    expect_error(tmp_path, run_args(tmp_path, tmp_path / "nope.npy"), "nope.npy")


def test_error_truncated_npy(tmp_path):
    x = write_bytes(tmp_path / "x.npy", npy_bytes(data=b"\0" * 10))
    expect_error(tmp_path, run_args(tmp_path, x), "truncated")


def test_error_wrong_magic(tmp_path):
    x = write_bytes(tmp_path / "x.npy", npy_bytes(magic=b"\x93NUMPZ"))
    expect_error(tmp_path, run_args(tmp_path, x), "magic")


def test_error_wrong_dtype(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((4, 3), dtype=np.float64))
    expect_error(tmp_path, run_args(tmp_path, x), "<f8")


def test_error_huge_shape_fails_fast(tmp_path):
    x = write_bytes(tmp_path / "x.npy", npy_bytes(shape=(1000000, 1000000), data=b""))
    expect_error(tmp_path, run_args(tmp_path, x), "x.npy")


def test_error_wrong_d_in(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((6, 4), dtype=np.float32))
    expect_error(tmp_path, run_args(tmp_path, x), "x has d_in=4, module expects d_in=3")


def test_error_zero_length_sequence(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((0, 3), dtype=np.float32))
    expect_error(tmp_path, run_args(tmp_path, x), "zero-length sequence")


def test_error_unwritable_output(tmp_path, good_x):
    expect_error(tmp_path, ["run", "--module", "linear", "--d-in", 3, "--d-out", 2, "--input",
                            good_x, "--output", tmp_path / "no-such-dir" / "y.npy"], "no-such-dir")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_backends_agree_with_pytorch(tmp_path, module):
    # 80 tokens: past one 64-token tile, so the fused kernel runs several tiles and a tail.
    bias = module != "params"
    x = np.random.default_rng(6).standard_normal((2, 80, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    _, out, attn = torch_reference(module, 5, 4, bias, 11, x)
    for backend in ["reference", "flash", "auto"]:
        r = selfattn("run", "--module", module, "--d-in", 5, "--d-out", 4, "--seed", 11,
                     "--backend", backend, "--input", tmp_path / "x.npy",
                     "--output", tmp_path / "y.npy", "--attn-weights", tmp_path / "a.npy",
                     *(["--qkv-bias"] if bias else []))
        assert r.returncode == 0, r.stderr
        close(np.load(tmp_path / "y.npy"), out)
        close(np.load(tmp_path / "a.npy"), attn)


def test_error_unknown_backend(tmp_path, good_x):
    expect_error(tmp_path, run_args(tmp_path, good_x, "--backend", "cuda"), "cuda")


def test_error_bad_weights_file(tmp_path, good_x):
    w = write_bytes(tmp_path / "w.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    expect_error(tmp_path, run_args(tmp_path, good_x, "--weights", w), "w.safetensors")


def test_error_weights_with_wrong_shape(tmp_path, good_x):
    w = tmp_path / "w.safetensors"
    safetensors_io.save(w, {"W_query.weight": np.zeros((2, 3), np.float32),
                            "W_key.weight": np.zeros((2, 3), np.float32),
                            "W_value.weight": np.zeros((2, 4), np.float32)})
    expect_error(tmp_path, run_args(tmp_path, good_x, "--weights", w), "W_value.weight")


def test_failed_run_leaves_existing_output_untouched(tmp_path, good_x):
    y = tmp_path / "y.npy"
    np.save(y, np.full((2, 2), 7, dtype=np.float32))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((6, 4), dtype=np.float32))
    r = selfattn(*run_args(tmp_path, bad))
    assert r.returncode != 0
    np.testing.assert_array_equal(np.load(y), np.full((2, 2), 7, dtype=np.float32))


# ------------------------------------------------------- the book's causal and multi-head classes

import book_attention  # noqa: E402

BOOK_MODULES = {"causal": "CausalAttention", "mha-wrapper": "MultiHeadAttentionWrapper",
                "mha": "MultiHeadAttention"}


@pytest.mark.parametrize("module", sorted(BOOK_MODULES))
@pytest.mark.parametrize("shape", [(7, 5), (3, 6, 5)])
def test_run_book_modules_match_pytorch(tmp_path, module, shape):
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = selfattn("run", "--module", module, "--d-in", 5, "--d-out", 4, "--num-heads", 2,
                 "--context-length", 8, "--qkv-bias", "--seed", 42, "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy", "--save-weights", tmp_path / "w.safetensors")
    assert r.returncode == 0, r.stderr
    assert BOOK_MODULES[module] in r.stdout
    torch.manual_seed(42)
    m = book_attention.build(BOOK_MODULES[module], 5, 4, 8, 0.0, 2, True)
    close(np.load(tmp_path / "y.npy"), m(torch.from_numpy(x)).detach().numpy())
    # The saved weights, mask buffer included, load into PyTorch strictly.
    tensors, _ = safetensors_io.load(tmp_path / "w.safetensors")
    m.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)


@pytest.mark.parametrize("module", sorted(BOOK_MODULES))
def test_pytorch_book_state_dict_loads_here(tmp_path, module):
    x = np.random.default_rng(7).standard_normal((2, 5, 3)).astype(np.float32)
    torch.manual_seed(8)
    m = book_attention.build(BOOK_MODULES[module], 3, 4, 6, 0.0, 2, False)
    safetensors_io.save(tmp_path / "w.safetensors",
                        {k: v.detach().numpy() for k, v in m.state_dict().items()})
    np.save(tmp_path / "x.npy", x)
    # d_in, d_out, context_length (from the mask) and the wrapper's heads come from the file.
    r = selfattn("run", "--module", module, "--weights", tmp_path / "w.safetensors",
                 *(["--num-heads", 2] if module == "mha" else []),
                 "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    close(np.load(tmp_path / "y.npy"), m(torch.from_numpy(x)).detach().numpy())


def test_run_grouped_query_attention_both_ways(tmp_path):
    import mha_extensions
    x = np.random.default_rng(9).standard_normal((2, 6, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = selfattn("run", "--module", "mha", "--d-in", 5, "--d-out", 8, "--num-heads", 4,
                 "--num-kv-groups", 2, "--seed", 3, "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    torch.manual_seed(3)
    m = mha_extensions.MultiHeadAttentionExt(5, 8, 6, 0.0, 4, num_kv_groups=2)
    close(np.load(tmp_path / "y.npy"), m(torch.from_numpy(x)).detach().numpy())
    # A PyTorch GQA state dict: num_kv_groups comes from W_key's shape.
    torch.manual_seed(4)
    m = mha_extensions.MultiHeadAttentionExt(5, 8, 6, 0.0, 4, num_kv_groups=1)
    safetensors_io.save(tmp_path / "w.safetensors",
                        {k: v.detach().numpy() for k, v in m.state_dict().items()})
    r = selfattn("run", "--module", "mha", "--num-heads", 4, "--weights",
                 tmp_path / "w.safetensors", "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    close(np.load(tmp_path / "y.npy"), m(torch.from_numpy(x)).detach().numpy())


@pytest.mark.parametrize("args, text", [
    (["--module", "causal", "--context-length", 3], "more than context_length=3"),
    (["--module", "mha", "--num-heads", 3], "d_out must be divisible by num_heads"),
    (["--module", "mha-wrapper", "--dropout", 1.0], "dropout must be in [0, 1)"),
    (["--module", "mha", "--num-heads", 2, "--num-kv-groups", 3],
     "num_heads must be a multiple of num_kv_groups"),
])
def test_book_module_errors(tmp_path, good_x, args, text):
    base = ["run", "--d-in", 3, "--d-out", 2, "--input", good_x, "--output", tmp_path / "y.npy"]
    expect_error(tmp_path, base + args, text)


def test_bench_reports_time_rates_and_memory():
    # A tiny workload: what is checked is the report, not the speed.
    common = ["bench", "--module", "core", "--seq", "128", "--d-out", "16", "--repeat", "2",
              "--threads", "1", "--sgemm-size", "128"]
    r = selfattn(*common, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["module"] == "core" and report["seq"] == 128 and report["threads"] == 1
    assert 0 < report["min_ms"] <= report["median_ms"]
    # 4 N^2 d flops over the median time, and the two percentages against the same run's rates.
    flops = 4 * 128 * 128 * 16
    # (The JSON rounds GFLOP/s to 0.01 and percentages to 0.1.)
    assert report["gflops"] == pytest.approx(flops / (report["median_ms"] * 1e6), rel=0.02,
                                             abs=0.01)
    assert report["sgemm_gflops"] > 0
    assert report["percent_of_sgemm"] == pytest.approx(
        100 * report["gflops"] / report["sgemm_gflops"], rel=0.02, abs=0.1)
    assert report["fma_peak_isa"] in ("avx512", "avx2", "none")
    if report["fma_peak_isa"] != "none":
        assert report["fma_peak_gflops"] > 0
        assert report["percent_of_peak"] == pytest.approx(
            100 * report["gflops"] / report["fma_peak_gflops"], rel=0.02, abs=0.1)
    assert report["peak_rss_mib"] > 0
    text = selfattn(*common)
    assert text.returncode == 0, text.stderr
    assert "of SGEMM" in text.stdout and "FP32 FMA peak" in text.stdout
    assert "peak resident memory" in text.stdout


def test_bench_in_bfloat16_reports_the_bf16_peak():
    common = ["bench", "--module", "core", "--seq", "128", "--d-out", "16", "--repeat", "2",
              "--threads", "1", "--sgemm-size", "128", "--dtype", "bf16"]
    r = selfattn(*common, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["dtype"] == "bfloat16"
    if report["kernel_isa"] in ("avx512_bf16", "amx"):  # vdpbf16ps or tdpbf16ps: measured
        assert report["bf16_peak_gflops"] > 0
        assert report["bf16_peak_isa"] == report["kernel_isa"]
        assert report["percent_of_bf16_peak"] == pytest.approx(
            100 * report["gflops"] / report["bf16_peak_gflops"], rel=0.02, abs=0.1)
    text = selfattn(*common)
    assert text.returncode == 0 and "bfloat16" in text.stdout, text.stderr


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def isas_of_this_cpu():
    flags = cpu_flags()
    isas = ["portable"]
    if {"avx2", "fma"} <= flags:
        isas.append("avx2")
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        isas.append("avx512")
        if "avx512_bf16" in flags:
            isas.append("avx512_bf16")
            if {"amx_tile", "amx_bf16"} <= flags:
                isas.append("amx")
    return isas


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512", "avx512_bf16", "amx"])
def test_llm_utils_isa_forces_a_table(isa):
    env = dict(os.environ, LLM_UTILS_ISA=isa)
    args = [SELFATTN, "bench", "--module", "core", "--seq", "128", "--d-out", "16", "--repeat",
            "1", "--threads", "1", "--sgemm-size", "64", "--dtype", "bf16", "--json"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    if isa in isas_of_this_cpu():
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["kernel_isa"] == isa
    else:
        assert r.returncode > 0
        assert f"LLM_UTILS_ISA={isa}: this CPU does not support {isa}" in r.stderr


@pytest.mark.parametrize("value,text", [
    ("sse9", "unknown ISA (expected portable, avx2, avx512, avx512_bf16 or amx)"),
])
def test_llm_utils_isa_refuses_what_cannot_run(value, text):
    env = dict(os.environ, LLM_UTILS_ISA=value)
    r = subprocess.run([SELFATTN, "bench", "--module", "core", "--seq", "64", "--d-out", "8",
                        "--repeat", "1", "--sgemm-size", "64"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode > 0
    assert text in r.stderr


def test_the_default_isa_is_the_best_but_never_amx_by_itself():
    # amx runs only when named until it has been run on a CPU with AMX (docs/numerics.md).
    env = {k: v for k, v in os.environ.items() if k != "LLM_UTILS_ISA"}
    r = subprocess.run([SELFATTN, "bench", "--module", "core", "--seq", "64", "--d-out", "8",
                        "--repeat", "1", "--sgemm-size", "64", "--json"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    best = [isa for isa in isas_of_this_cpu() if isa != "amx"][-1]
    assert json.loads(r.stdout)["kernel_isa"] == best


def test_run_in_bfloat16_tracks_pytorch_bfloat16(tmp_path):
    x = np.random.default_rng(4).standard_normal((2, 70, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for dtype in ("fp32", "bf16"):
        r = selfattn("run", "--module", "mha", "--d-in", 16, "--d-out", 16, "--num-heads", 2,
                     "--qkv-bias", "--seed", 5, "--input", tmp_path / "x.npy", "--output",
                     tmp_path / f"{dtype}.npy", "--dtype", dtype)
        assert r.returncode == 0, r.stderr
        outputs[dtype] = np.load(tmp_path / f"{dtype}.npy")
    sys.path.insert(0, os.path.join(HERE, "..", "golden"))
    import book_attention  # noqa: E402
    torch.manual_seed(5)
    ref = book_attention.build("MultiHeadAttention", 16, 16, 70, 0.0, 2, True)
    exact = ref(torch.from_numpy(x)).detach().numpy()
    scale = np.abs(exact).max()
    close(outputs["fp32"], exact)
    torch_bf16 = ref.to(torch.bfloat16)(torch.from_numpy(x).to(torch.bfloat16)).detach()
    torch_bf16 = torch_bf16.float().numpy()
    assert np.abs(outputs["bf16"] - torch_bf16).max() <= 2.0**-6 * scale
    assert np.abs(outputs["bf16"] - exact).max() > 0  # it did round

"""selfattn run and bench with MultiHeadAttention's variants (--rope, --window, --softcap,
--alibi, --sinks, --cu-seqlens; bench's --paged decode), against the oracle in
tests/golden/mha_variants.py (plain PyTorch operations, the same weights from the same seed)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import mha_variants  # noqa: E402
import safetensors_io  # noqa: E402

SELFATTN = os.environ.get("SELFATTN", os.path.join(HERE, "..", "..", "build", "bin", "selfattn"))

VARIANTS = {  # CLI flags -> the oracle's keyword arguments
    "rope": (["--rope", "--rope-theta", "500"], dict(rope=True, rope_theta=500.0)),
    "window": (["--window", "3"], dict(window_left=3)),
    "softcap": (["--softcap", "2.5"], dict(softcap=2.5)),
    "alibi": (["--alibi"], dict(alibi=True)),
    "all": (["--rope", "--window", "4", "--softcap", "3", "--alibi", "--num-kv-groups", "2"],
            dict(rope=True, window_left=4, softcap=3.0, alibi=True, num_kv_groups=2)),
}


def selfattn(*args):
    return subprocess.run([SELFATTN, *map(str, args)], capture_output=True, text=True, timeout=60)


def oracle(seed, **kwargs):
    torch.manual_seed(seed)
    return mha_variants.MultiHeadAttentionVariants(8, 8, 12, 0.0, 4, **kwargs)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_run_gives_the_oracles_output_for_a_seed(tmp_path, name):
    flags, kwargs = VARIANTS[name]
    x = np.random.default_rng(1).standard_normal((2, 12, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = selfattn("run", "--module", "mha", "--d-in", 8, "--d-out", 8, "--num-heads", 4, "--seed",
                 5, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", *flags)
    assert r.returncode == 0, r.stderr
    want = oracle(5, **kwargs)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-5, atol=1e-5)


def test_sinks_come_from_the_weights(tmp_path):
    # A state dict holding `sinks` turns them on; their values are the file's.
    ref = oracle(6, sinks=True, rope=True)
    with torch.no_grad():
        ref.sinks.copy_(torch.tensor([1.0, -0.5, 0.0, 2.0]))
    safetensors_io.save(tmp_path / "w.safetensors",
                        {k: v.numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((12, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = selfattn("run", "--module", "mha", "--num-heads", 4, "--rope", "--weights",
                 tmp_path / "w.safetensors", "--input", tmp_path / "x.npy", "--output",
                 tmp_path / "y.npy", "--save-weights", tmp_path / "again.safetensors")
    assert r.returncode == 0, r.stderr
    want = ref(torch.from_numpy(x)[None])[0].detach().numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-5, atol=1e-5)
    saved, _ = safetensors_io.load(tmp_path / "again.safetensors")
    np.testing.assert_array_equal(saved["sinks"], [1.0, -0.5, 0.0, 2.0])


def test_packed_sequences_each_attend_within_themselves(tmp_path):
    x = np.random.default_rng(3).standard_normal((12, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    common = ["--module", "mha", "--d-in", 8, "--d-out", 8, "--num-heads", 4, "--seed", 7,
              "--rope", "--window", 2, "--context-length", 12]
    r = selfattn("run", *common, "--cu-seqlens", "0,5,5,12", "--input", tmp_path / "x.npy",
                 "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    ref = oracle(7, rope=True, window_left=2)
    for start, end in [(0, 5), (5, 12)]:
        want = ref(torch.from_numpy(x[start:end])[None])[0].detach().numpy()
        np.testing.assert_allclose(y[start:end], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args,message", [
    (["--module", "linear", "--d-in", 8, "--d-out", 8, "--window", 3], "apply to --module mha"),
    (["--module", "mha", "--d-in", 8, "--d-out", 8, "--cu-seqlens", "0,5,11"],
     "cu_seqlens must run from 0 to x's 12 rows"),
    (["--module", "mha", "--d-in", 8, "--d-out", 6, "--num-heads", 2, "--rope"], "even head_dim"),
    (["--module", "mha", "--d-in", 8, "--d-out", 8, "--softcap", "-1"], "--softcap"),
])
def test_bad_variant_flags_give_one_error_line(tmp_path, args, message):
    np.save(tmp_path / "x.npy", np.zeros((12, 8), np.float32))
    r = selfattn("run", *args, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "y.npy").exists()


def test_bench_reports_the_variants():
    r = selfattn("bench", "--module", "core", "--seq", 300, "--d-out", 32, "--causal", "--window",
                 64, "--softcap", 20, "--alibi", "--sinks", "--backward", "--repeat", 1,
                 "--sgemm-size", 64, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["window_left"] == 64 and report["alibi"] and report["sinks"]
    assert report["softcap"] == 20
    # FLOPs count the visible pairs: 300 queries, each with at most 65 keys.
    pairs = sum(min(i + 1, 65) for i in range(300))
    flops = 3.5 * 4 * pairs * 32
    assert report["flops"] == pytest.approx(flops, rel=1e-12)


def test_bench_decodes_through_pages():
    common = ["bench", "--module", "mha", "--batch", 3, "--seq", 200, "--d-in", 64, "--d-out",
              64, "--num-heads", 4, "--decode", "--repeat", 2, "--sgemm-size", 64, "--json"]
    paged = json.loads(selfattn(*common, "--paged", "--page-size", 16).stdout)
    assert paged["paged"] and paged["page_size"] == 16 and paged["tokens_per_s"] > 0
    r = selfattn("bench", "--module", "core", "--paged")
    assert r.returncode != 0 and "--paged applies to --module mha --decode" in r.stderr


def test_backend_cuda_runs_on_a_gpu_or_says_there_is_none(tmp_path):
    # With a GPU the CLI's output equals the CPU run's; without one it is one error line that
    # says so (and writes nothing).
    x = np.random.default_rng(4).standard_normal((2, 12, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    common = ["run", "--module", "mha", "--d-in", 8, "--d-out", 8, "--num-heads", 2, "--seed", 3,
              "--input", tmp_path / "x.npy"]
    cpu = selfattn(*common, "--output", tmp_path / "cpu.npy")
    assert cpu.returncode == 0, cpu.stderr
    gpu = selfattn(*common, "--output", tmp_path / "gpu.npy", "--backend", "cuda")
    if gpu.returncode == 0:
        np.testing.assert_allclose(np.load(tmp_path / "gpu.npy"), np.load(tmp_path / "cpu.npy"),
                                   rtol=1e-5, atol=1e-5)
    else:
        lines = gpu.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), gpu.stderr
        assert "no CUDA device" in lines[0] or "this build has no CUDA" in lines[0], lines[0]
        assert not (tmp_path / "gpu.npy").exists()

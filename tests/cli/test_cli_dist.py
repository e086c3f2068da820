"""selfattn bench --seq-parallel under mpirun (built with MPI): the report, and one error line
when every rank sees the same bad argument. A build without MPI (the sanitizer stages) refuses
the option instead, and that is what is tested there."""

import json
import os
import shutil
import subprocess

import pytest

SELFATTN = os.environ.get("SELFATTN", "build/bin/selfattn")
MPIRUN = shutil.which("mpirun")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def refusal():
    """stderr of --seq-parallel run without mpirun: a build without MPI refuses it."""
    r = subprocess.run([SELFATTN, "bench", "--module", "core", "--seq", "8", "--seq-parallel",
                        "ring"], capture_output=True, text=True, env=ENV, timeout=60)
    return r.stderr


BUILD_HAS_MPI = "has no MPI" not in refusal()


def mpirun(ranks, *args):
    return subprocess.run([MPIRUN, "-np", str(ranks), SELFATTN, *args], capture_output=True,
                          text=True, env=ENV, timeout=120)


if not BUILD_HAS_MPI:
    def test_without_mpi_the_option_is_refused():
        assert refusal().startswith("error: bench: --seq-parallel needs llm_utils::dist")


def test_a_build_with_mpi_has_mpirun():
    # make installs openmpi-bin with libopenmpi-dev: an MPI build without mpirun is a setup bug.
    assert not BUILD_HAS_MPI or MPIRUN is not None


@pytest.mark.parametrize("strategy", ["ring", "ulysses"])
def test_bench_reports_the_run(strategy):
    if not BUILD_HAS_MPI:
        return test_without_mpi_the_option_is_refused()
    r = mpirun(2, "bench", "--module", "core", "--seq", "256", "--d-out", "16", "--num-heads",
               "2", "--causal", "--backward", "--seq-parallel", strategy, "--repeat", "2",
               "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, r.stdout  # rank 0 reports
    report = json.loads(lines[0])
    assert report["strategy"] == strategy and report["ranks"] == 2 and report["causal"]
    assert report["median_ms"] > 0 and report["gflops"] > 0
    if strategy == "ring":
        assert report["rank0_compute_ms"] > 0 and report["transfers_alone_ms"] > 0


def test_an_error_every_rank_sees_is_one_line():
    if not BUILD_HAS_MPI:
        return test_without_mpi_the_option_is_refused()
    r = mpirun(2, "bench", "--module", "core", "--seq", "64", "--d-out", "16",
               "--seq-parallel", "ulysses", "--threads", "1")
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "needs at least one per rank" in errors[0] and "use the ring" in errors[0]


def test_other_workloads_are_refused():
    r = subprocess.run([SELFATTN, "bench", "--module", "mha", "--seq-parallel", "ring"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode != 0
    assert r.stderr.startswith("error: bench: --seq-parallel times the float32 attention core")


def train(tmp_path, name, ranks, *args):
    """Trains and returns the saved weights; ranks 0 means one process without mpirun."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
    import safetensors_io

    path = tmp_path / f"{name}.safetensors"
    cmd = [SELFATTN, "train", *args, "--save-weights", str(path), "--threads", "1"]
    r = (subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120) if ranks == 0
         else subprocess.run([MPIRUN, "-np", str(ranks), *cmd], capture_output=True, text=True,
                             env=ENV, timeout=120))
    assert r.returncode == 0, r.stderr
    return safetensors_io.load(path)[0], r.stdout


def relative(a, b):
    import numpy as np
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))


if BUILD_HAS_MPI:
    @pytest.mark.parametrize("ranks", [1, 2, 4])
    @pytest.mark.parametrize("module", ["linear", "linear5"])
    def test_data_parallel_training_gives_the_single_process_weights(tmp_path, ranks, module):
        args = ["--module", module, "--qkv-bias", "--optimizer", "sgd", "--momentum", "0.9",
                "--steps", "20", "--batch", "8", "--seq", "6"]
        alone, _ = train(tmp_path, "alone", 0, *args)
        spread, stdout = train(tmp_path, "spread", ranks, *args)
        assert stdout.count("wrote the trained weights") == 1  # rank 0 alone writes
        if ranks > 1:
            assert f"data parallel over {ranks} ranks: {8 // ranks} sequences each" in stdout
        for key in alone:
            assert relative(spread[key], alone[key]) <= 1e-5, key
        if module == "linear5":  # no rank gave W_query a gradient: it stays as it was
            assert "no gradient, unchanged: W_query.weight" in stdout

    def test_adamw_data_parallel_matches_but_for_the_key_bias(tmp_path):
        # The key bias's exact gradient is 0 (softmax ignores a shift shared by every key): its
        # computed gradient is rounding noise, which AdamW normalises into steps of ~lr, so its
        # trajectory depends on the summation order. Every other weight must match.
        args = ["--module", "linear", "--qkv-bias", "--steps", "20", "--batch", "8"]
        alone, _ = train(tmp_path, "alone", 0, *args)
        spread, _ = train(tmp_path, "spread", 4, *args)
        for key in alone:
            bound = 20 * 0.01 if key == "W_key.bias" else 1e-5
            assert relative(spread[key], alone[key]) <= bound, key

    def test_a_batch_the_ranks_cannot_share_is_one_error():
        r = mpirun(3, "train", "--batch", "8", "--steps", "2")
        assert r.returncode != 0
        errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
        assert errors == ["error: --batch 8 must be divisible by the 3 ranks (each trains on an "
                          "equal part of every batch)"], r.stderr


if BUILD_HAS_MPI:
    def test_data_parallel_bench_reports_both_schedules():
        r = mpirun(2, "bench", "--module", "mha", "--batch", "1", "--seq", "32", "--d-in", "32",
                   "--d-out", "32", "--num-heads", "4", "--data-parallel", "--repeat", "2",
                   "--threads", "1", "--json")
        assert r.returncode == 0, r.stderr
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        assert len(lines) == 1, r.stdout
        report = json.loads(lines[0])
        assert report["ranks"] == 2 and report["data_parallel"]
        assert report["step_ms_overlapped"] > 0 and report["step_ms_after_backward"] > 0

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

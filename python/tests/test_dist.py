"""llm_utils.dist under mpirun on 1 to 4 ranks (dist_check.py: against PyTorch and one process),
and the ImportError of a build without MPI."""

import os
import shutil
import subprocess
import sys

import pytest

import llm_utils

HAS_DIST = hasattr(llm_utils._core, "dist")
HERE = os.path.dirname(os.path.abspath(__file__))


if HAS_DIST:
    @pytest.mark.parametrize("ranks", [1, 2, 3, 4])
    def test_dist_matches_pytorch_and_one_process(ranks):
        mpirun = shutil.which("mpirun")
        assert mpirun is not None, "a build with MPI needs mpirun (make installs openmpi-bin)"
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1",
                   LLM_UTILS_DIST_TIMEOUT="60")
        r = subprocess.run([mpirun, "-np", str(ranks), sys.executable,
                            os.path.join(HERE, "dist_check.py")],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"ok {ranks} of {ranks} ranks" in r.stdout, r.stdout

    def test_bad_options_are_value_errors():
        from llm_utils import dist
        with pytest.raises(ValueError, match="unknown sequence layout 'diagonal'"):
            dist.shard_sequence([[1.0]], 0, 1, 0, layout="diagonal")
        world = dist.Communicator.world()
        with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
            dist.GradientAverager(world, llm_utils.MultiHeadAttention(4, 4, 4, 0.0, 2),
                                  reduction="max")
else:
    def test_without_mpi_dist_is_an_import_error():
        with pytest.raises(ImportError, match="needs a build with MPI"):
            import llm_utils.dist  # noqa: F401

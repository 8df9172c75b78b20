"""The GPU benchmark script refuses clearly where it cannot run (its GPU stages themselves need a CUDA machine)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_bench.sh"


def bench(*args):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def test_gpu_bench_without_a_stage_prints_its_usage_and_exits_2():
    r = bench()
    assert r.returncode == 2
    for stage in ("image", "shape MESH", "nerf PARAM", "tancik PARAM"):
        assert f"gpu_bench.sh {stage}" in r.stdout
    assert "set -uo" not in r.stdout  # the usage ends with the comment block


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_bench_without_cuda_refuses_with_one_line_and_exit_2():
    r = bench("nerf", "rwf")
    assert r.returncode == 2
    assert "no CUDA device" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr

"""Backends: import never compiles, a missing kernel falls back with one warning, the build command, the CUDA source
compiles (where nvcc is), and the CUDA kernel agrees with the twin (where a GPU is)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch

import rwf_render.raymarch as rm
from rwf_render.raymarch.march import mip_pyramid
from rwf_render.raymarch import OccupancyGrid, _backend

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "rwf_render" / "raymarch" / "csrc"
NVCC = shutil.which("nvcc")


def run_python(code, env_extra, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_importing_never_compiles_nor_touches_cuda(tmp_path):
    code = ("import torch, rwf_render.raymarch as rm; g = rm.OccupancyGrid([0, 0, 0, 1, 1, 1], 8); repr(g); "
            "print(torch.cuda.is_initialized())")
    out = run_python(code, {"RWF_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert "building" not in out.stderr and not (tmp_path / "cache").exists()


@pytest.fixture
def no_kernel(monkeypatch, tmp_path):
    """A process state in which the CPU kernel is neither cached nor allowed to build."""
    monkeypatch.setenv("RWF_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("RWF_NO_BUILD", "1")
    monkeypatch.setattr(_backend, "_loaded", {})
    monkeypatch.setattr(_backend, "_reasons", {})
    monkeypatch.setattr(_backend, "_warned", set())


def test_without_a_kernel_auto_falls_back_to_torch_with_one_warning(no_kernel):
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8).fill_(True)
    o, d = torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = grid.sampling(o, d, step_size=0.25)
        grid.sampling(o, d, step_size=0.25)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "RWF_NO_BUILD=1" in messages[0] and "pure-torch" in messages[0]
    assert "--cone-angle 0" in messages[0]  # where its slowness shows most (a review measured 60x at 5 cascades)
    assert first.t_starts.tolist() == [1.0, 1.25, 1.5, 1.75]
    assert rm.available_backends() == ["torch"] or torch.cuda.is_available()
    with pytest.raises(RuntimeError, match="RWF_NO_BUILD"):
        grid.sampling(o, d, step_size=0.25, backend="cpu")


def test_the_first_build_says_so_on_stderr(monkeypatch, tmp_path, capsys):
    """The message is printed before compiling (compilation itself replaced by a stub here)."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("RWF_CACHE", str(tmp_path))
    monkeypatch.delenv("RWF_NO_BUILD", raising=False)
    if _backend._cannot_build("cpu"):
        pytest.skip(f"cannot build here: {_backend._cannot_build('cpu')}")
    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: calls.append(kw) or "module")
    assert _backend.build("cpu") == "module"
    err = capsys.readouterr().err
    assert "building the ray marcher's CPU kernel (once" in err and str(tmp_path) in err
    assert calls[0]["build_directory"].startswith(str(tmp_path)) and "-ffp-contract=off" in calls[0]["extra_cflags"]


def test_build_command_reports_success_or_the_reason(tmp_path):
    if _backend.load("cpu") is None:
        pytest.skip(f"no CPU kernel here: {_backend.reason('cpu')}")
    ok = run_python("from rwf_render.raymarch.build import main; raise SystemExit(main(['--only', 'cpu']))", {},
                    timeout=300)
    assert ok.returncode == 0 and "cpu kernel ready in" in ok.stdout, ok.stderr
    refused = run_python("from rwf_render.raymarch.build import main; raise SystemExit(main([]))",
                         {"RWF_CACHE": str(tmp_path), "RWF_NO_BUILD": "1"})
    assert refused.returncode == 1 and "RWF_NO_BUILD" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: the CUDA source cannot be compiled here")
def test_the_cuda_kernel_compiles_to_an_object(tmp_path):
    """nvcc compiles the kernel translation unit (march.h + cuda.cu, no torch headers); needs no GPU."""
    obj = tmp_path / "cuda.o"
    out = subprocess.run([NVCC, "-c", str(CSRC / "cuda.cu"), "-o", str(obj), "-std=c++17", "--fmad=false", "-O3",
                          "-Werror", "all-warnings"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert obj.stat().st_size > 0


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: no CUDA headers to check the bindings against")
def test_the_bindings_cuda_branch_type_checks(tmp_path):
    """bindings.cpp with RWF_WITH_CUDA against torch's headers (syntax and types only). A CPU torch ships the
    c10/cuda headers but not the generated cuda_cmake_macros.h; a stub stands in for it."""
    from torch.utils import cpp_extension

    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), Path(NVCC).resolve().parents[1],
             "/usr/local/cuda"]
    cuda_include = next((Path(h) / "include" for h in homes if h and (Path(h) / "include/cuda_runtime.h").is_file()),
                        None)
    if cuda_include is None:
        pytest.skip(f"nvcc is at {NVCC} but no CUDA include directory with cuda_runtime.h was found")
    includes = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"], str(cuda_include)]
    if not any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").exists() for p in includes):
        stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
        stub.parent.mkdir(parents=True)
        stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.append(str(tmp_path))
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    out = subprocess.run([cxx, "-fsyntax-only", "-std=c++20", "-DRWF_WITH_CUDA", "-DTORCH_EXTENSION_NAME=check",
                          *[f"-I{p}" for p in includes], str(CSRC / "bindings.cpp")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


# -- on a GPU -----------------------------------------------------------------------------------------------------

def _cuda_case(seed, levels, cone, stratified):
    gen = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid([-0.3, 0.1, -1.0, 0.7, 0.6, 0.2], resolution=32, levels=levels)
    grid.occupancy.copy_(torch.rand(grid.occupancy.shape, generator=gen) < 0.2)
    n = 20000
    o = (torch.rand(n, 3, generator=gen) - 0.5) * 4
    d = torch.randn(n, 3, generator=gen)
    lo, hi = grid.aabb[:3], grid.aabb[3:]  # half the rays aimed at a point of the box: most of those cross it
    aim = lo + torch.rand(n // 2, 3, generator=gen) * (hi - lo)
    d[: n // 2] = aim - o[: n // 2]
    d = d / d.norm(dim=1, keepdim=True)
    kw = dict(step_size=0.009, cone_angle=cone, max_samples=300, stratified=stratified, seed=seed,
              near=torch.rand(n, generator=gen) * 0.3, far=2 + torch.rand(n, generator=gen) * 4)
    nan, inf = float("nan"), float("inf")  # spoiled rays (a NaN pose, a zero focal): no samples on any backend
    o[0, 0], d[1, 2], d[2] = nan, inf, nan
    kw["near"][3], kw["far"][4] = nan, nan
    return grid, o, d, kw


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA kernel cannot run here")
@pytest.mark.parametrize("levels,cone,stratified", [(1, 0.0, False), (1, 0.0, True), (2, 0.02, True)])
def test_cuda_kernel_returns_the_twins_samples(levels, cone, stratified):
    if _backend.load("cuda") is None:
        pytest.fail(f"a GPU is present but the CUDA kernel did not build: {_backend.reason('cuda')}")
    grid, o, d, kw = _cuda_case(levels, levels, cone, stratified)
    twin = grid.sampling(o, d, backend="torch", **kw)  # on the CPU
    kw_gpu = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}  # the same seed
    gpu_grid = grid.cuda()
    fast = gpu_grid.sampling(o.cuda(), d.cuda(), backend="cuda", **kw_gpu)
    twin_gpu = gpu_grid.sampling(o.cuda(), d.cuda(), backend="torch", **kw_gpu)
    assert twin.ray_indices.numel() > 10000
    for other in (fast, twin_gpu):
        assert torch.equal(other.ray_indices.cpu(), twin.ray_indices)
        assert (other.t_starts.cpu() - twin.t_starts).abs().max() <= 1e-6
        assert (other.t_ends.cpu() - twin.t_ends).abs().max() <= 1e-6


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA kernel cannot run here")
def test_auto_picks_the_cuda_kernel_for_cuda_tensors():
    assert rm.resolve_backend("auto", torch.device("cuda")) == "cuda"
    assert "cuda" in rm.available_backends()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA kernel cannot run here")
def test_the_cuda_kernel_refuses_inputs_on_another_device():
    """A host pointer handed to the kernel would be an illegal access: the bindings check every input's device."""
    ext = _backend.load("cuda")
    if ext is None:
        pytest.fail(f"a GPU is present but the CUDA kernel did not build: {_backend.reason('cuda')}")
    grid, o, d, kw = _cuda_case(0, 1, 0.0, False)
    occ = grid.occupancy.to(torch.uint8).cuda()
    mip, n_mip = mip_pyramid(occ)
    n = len(o)
    args = [o.cuda(), d.cuda(), torch.zeros(n, device="cuda"), torch.full((n,), 3.0, device="cuda"), None, occ, mip,
            n_mip, grid.aabb[:3].tolist(), (32 / (grid.aabb[3:] - grid.aabb[:3])).tolist(), 1, 0.01, 0.0,
            float("inf"), 100, True, 1]
    args[4] = torch.rand(n, device="cuda")
    assert ext.march(*args)[0].numel() > 0
    args[4] = torch.rand(n)  # jitter on the host
    with pytest.raises(RuntimeError, match="jitter is on cpu"):
        ext.march(*args)

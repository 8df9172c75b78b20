"""The CUDA marcher's threads per block ($RWF_CUDA_BLOCK, a tuning knob of benchmarks/raymarch.py): parsed with one
clear message, and without effect on the CPU kernel's samples."""

import pytest
import torch

from rwf_render.errors import UserError
from rwf_render.raymarch import OccupancyGrid, available_backends
from rwf_render.raymarch.march import cuda_block


def test_the_block_size_defaults_to_256_and_takes_multiples_of_32(monkeypatch):
    monkeypatch.delenv("RWF_CUDA_BLOCK", raising=False)
    assert cuda_block() == 256
    for ok in ("32", "128", " 512 ", "1024"):
        monkeypatch.setenv("RWF_CUDA_BLOCK", ok)
        assert cuda_block() == int(ok)
    for bad in ("100", "0", "2048", "-64", "abc", "1e2"):
        monkeypatch.setenv("RWF_CUDA_BLOCK", bad)
        with pytest.raises(UserError, match="multiple of 32 from 32 to 1024"):
            cuda_block()


@pytest.mark.skipif("cpu" not in available_backends(), reason="the compiled CPU kernel is not available here")
def test_the_cpu_kernel_ignores_the_cuda_block_size(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=32)
    grid.occupancy.copy_(torch.rand(grid.occupancy.shape, generator=gen) < 0.3)
    o = torch.randn(500, 3, generator=gen) * 2
    d = -o / o.norm(dim=1, keepdim=True)
    monkeypatch.delenv("RWF_CUDA_BLOCK", raising=False)
    a = grid.sampling(o, d, backend="cpu", step_size=0.01, max_samples=64)
    monkeypatch.setenv("RWF_CUDA_BLOCK", "not a number")  # never read for the CPU kernel
    b = grid.sampling(o, d, backend="cpu", step_size=0.01, max_samples=64)
    assert a.ray_indices.numel() > 1000 and torch.equal(a.ray_indices, b.ray_indices)
    assert torch.equal(a.t_starts, b.t_starts)

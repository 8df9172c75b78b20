"""Occupancy-grid ray marcher: where along each ray to evaluate a field, and how to composite what it returns.

    grid = OccupancyGrid(aabb, resolution=128, levels=1)        # which cells may hold anything
    grid.update(step, density_fn, step_size)                    # ... refreshed from the field during training
    ray_indices, t_starts, t_ends = grid.sampling(rays_o, rays_d, step_size=..., max_samples=...)
    colors, opacities, depths, extras = volume_render(t_starts, t_ends, ray_indices, n_rays, rgb_sigma_fn)

Three marchers produce the same samples (``backend="auto" | "cuda" | "cpu" | "torch"``): a CUDA kernel, a compiled
C++ kernel (OpenMP), both from the per-ray code in ``csrc/march.h``, and their pure-torch twin in ``march.py``, which
always works and is the tests' oracle. Importing never compiles: the C++ kernel is built ahead of time by
``python -m rwf_render.raymarch.build``, or on first use (once, with a message), into ``$RWF_CACHE`` or
``~/.cache/rwf_render``; where it cannot be built the torch marcher runs after one warning that says why.

On a CPU, marching and compositing turn on ``torch.set_flush_denormal(True)`` for the process (densities near 0
otherwise slow float math by up to 2.5x); torch has no way to read the setting back, so it stays on: numbers
below about 1e-38 (float32) and 1e-308 (float64) then compute as 0 in the caller's code as well.
"""

from .composite import accumulate_along_rays, composite, exclusive_sum, render_weight_from_density, volume_render
from .grid import OccupancyGrid
from .march import BACKENDS, GridSpec, RaySamples, march, march_torch, resolve_backend


def available_backends(build: bool = True) -> list[str]:
    """Backends that can march here: "torch" always, "cpu" if the C++ kernel loads (building it when ``build``),
    "cuda" if a GPU is visible and the CUDA kernel loads. Never raises."""
    import torch  # noqa: PLC0415

    from . import _backend  # noqa: PLC0415

    names = ["torch"]
    if _backend.load("cpu", allow_build=build) is not None:
        names.append("cpu")
    if torch.cuda.is_available() and _backend.load("cuda", allow_build=build) is not None:
        names.append("cuda")
    return names


__all__ = [
    "OccupancyGrid", "march", "march_torch", "RaySamples", "GridSpec", "BACKENDS", "resolve_backend",
    "available_backends", "render_weight_from_density", "accumulate_along_rays", "exclusive_sum", "composite",
    "volume_render",
]

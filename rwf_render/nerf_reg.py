"""Regularizers for views no training photo sees, for captures with few photos (BENCHMARKS.md, "bartoszek").

Occlusion regularization (FreeNeRF, Yang et al. 2023, sec. 3.2): with few photos a field can explain each one by
density floating just in front of its own camera, which the other cameras barely see. The loss is the mean opacity
of points in the first stretch of each training ray, from its near bound to ``near (1 + margin)``; with per-frame
near bounds just short of the nearest observed point, nothing true lies there.

FreeNeRF penalizes the raw density of its first samples; here it is each point's opacity over its share of the
stretch, ``1 - exp(-sigma delta)``: bounded, so one exploding density cannot swamp the colour loss, and sampled at
stratified points of its own (density only, no colour) rather than read off the marcher's samples, which skip
cells the occupancy grid already marks empty.

Its weight rises linearly from 0 over the first ``--occlusion-warmup`` steps (:func:`occlusion_ramp`). At full weight
from the first step and with no depth loss to hold the surfaces, the bartoszek fit emptied by step 500 and every view
became the learned background; ramped in over 300 steps, it kept its field and beat the fit without the loss
(BENCHMARKS.md, "Warming the occlusion loss up").
"""

from __future__ import annotations

from typing import Callable

import torch


def near_opacity(density_fn: Callable[[torch.Tensor], torch.Tensor], rays_o: torch.Tensor, rays_d: torch.Tensor,
                 near: torch.Tensor, margin: float, jitter: torch.Tensor) -> torch.Tensor:
    """Mean opacity of the first stretch [near, near (1 + margin)] of rays, at S stratified points per ray.

    Args:
        density_fn: points (N, 3) -> sigma (N,).
        rays_o, rays_d: (R, 3) origins and unit directions; near: (R,) ray starts.
        margin: the stretch's length as a fraction of near.
        jitter: (R, S) in [0, 1): each point's place in its stratum.
    Returns:
        () mean over the R * S points of alpha = 1 - exp(-sigma delta), delta = near margin / S.
    Example:
        >>> o, d = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
        >>> float(near_opacity(lambda x: torch.zeros(len(x)), o, d, torch.ones(1), 0.1, torch.rand(1, 4)))
        0.0
    """
    n_samples = jitter.shape[1]
    u = (torch.arange(n_samples, dtype=near.dtype, device=near.device) + jitter) / n_samples  # (R, S)
    t = near[:, None] * (1 + margin * u)  # (R, S)
    x = rays_o[:, None, :] + rays_d[:, None, :] * t[..., None]  # (R, S, 3)
    sigma = density_fn(x.reshape(-1, 3)).reshape(t.shape).float()
    delta = (near * margin / n_samples)[:, None]  # (R, 1)
    return (1 - torch.exp(-sigma * delta)).mean()


def occlusion_ramp(step: int, warmup: int) -> float:
    """The factor on the occlusion loss at training step ``step`` (0-based): ``step / warmup``, 1 from step
    ``warmup`` on (and always, for ``warmup`` 0).

    Example:
        >>> [occlusion_ramp(s, 4) for s in (0, 1, 4, 9)], occlusion_ramp(0, 0)
        ([0.0, 0.25, 1.0, 1.0], 1.0)
    """
    return 1.0 if step >= warmup else step / warmup

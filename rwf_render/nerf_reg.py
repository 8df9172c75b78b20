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

Distortion loss (mip-NeRF 360, Barron et al. 2022, eq. 15; the one nerfstudio's nerfacto and nerfacc ship): for the
weights of one ray, each spread uniformly over its interval, the expected distance between two points drawn from
them. It is small when the weight sits in one short stretch (a surface) and large when it is smeared along the ray
or split between a surface and floaters, which pulls floaters and background haze into the surface.
:func:`distortion_loss` computes it on the marcher's packed samples in O(S).
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


def _ray_exclusive_sum(values: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Per-ray exclusive cumulative sum of packed (S,) ``values``, in float64 (big batches lose no precision);
    ``first`` (S,) is the position of the first sample of each sample's ray. Returns float64 (S,)."""
    ahead = torch.cumsum(values.double(), dim=0) - values.double()  # (S,) sum of all samples packed before i
    return ahead - ahead[first]


def distortion_loss(weights: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor,
                    n_rays: int, scale: float | torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's distortion loss of each ray (Barron et al. 2022, eq. 15) over packed samples.

    For the samples i, j of one ray, with midpoints m = (t_start + t_end) / 2 and widths delta = t_end - t_start,
    all divided by ``scale``:

        L = sum_{i,j} w_i w_j |m_i - m_j|  +  1/3 sum_i w_i^2 delta_i

    The double sum runs in O(S) as 2 sum_i w_i (m_i W_i - (wm)_i), with W_i and (wm)_i the sums of w and w m over
    the samples ahead of i on its ray (midpoints increase along a ray, so every |m_i - m_j| is m_i - m_j for j
    ahead of i). Midpoints are measured from the ray's first t_start (the loss does not change), so the two
    products stay small and do not cancel far from the origin.

    Distances: the loss grows linearly with them, so one loss weight only fits scenes of every size if they are
    divided by a length of the scene's own. ``scale`` is that length: a number for all rays (the scene box's
    diagonal, ``NeRFModel.diagonal``, is the recommended one: always defined, also for rays with no far bound, and
    the same for every ray, so the loss compares rays of different lengths fairly), or (n_rays,) per ray, e.g.
    ``far - near`` (mip-NeRF 360's normalized distance, for a linear spacing). It must be positive and finite.

    Args:
        weights: (S,) compositing weights (differentiable; gradients also reach t_starts and t_ends).
        t_starts, t_ends: (S,) each sample's interval along its ray.
        ray_indices: (S,) int64; each ray's samples contiguous and in increasing t (what the marcher returns; the
            rays themselves may come in any order).
        n_rays: number of rays. scale: a number or (n_rays,) tensor, the length distances are divided by.
    Returns:
        (n_rays,) loss per ray, 0 for rays without samples; dtype that of the weights, at least float32 (float64 for
        float64 inputs). Training sums or averages it over the rays.
    Example:
        >>> w, ri = torch.tensor([0.5, 0.5]), torch.zeros(2, dtype=torch.long)
        >>> distortion_loss(w, torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0]), ri, 2, scale=2.0).tolist()
        [0.5, 0.0]
    """
    dtype = torch.promote_types(weights.dtype, torch.float32)
    w = weights.to(dtype)
    t0, t1 = t_starts.to(dtype), t_ends.to(dtype)
    out = torch.zeros(n_rays, dtype=dtype, device=weights.device)
    if w.numel() == 0:
        return out
    pos = torch.arange(w.numel(), device=w.device)  # (S,)
    first = torch.full((n_rays,), w.numel(), dtype=torch.long, device=w.device)  # (n_rays,) first sample's position
    first = first.scatter_reduce(0, ray_indices, pos, reduce="amin")[ray_indices]  # (S,) ... of each sample's ray
    origin = t0[first]  # (S,) each ray's first t_start: distances from it (L is unchanged) stay small, and
    mid = ((t0 - origin) + (t1 - origin)) * 0.5  # (S,) subtracting before adding keeps their float32 bits
    w_ahead = _ray_exclusive_sum(w, first).to(dtype)  # (S,) W_i
    wm_ahead = _ray_exclusive_sum(w * mid, first).to(dtype)  # (S,) (wm)_i
    per_sample = 2.0 * w * (mid * w_ahead - wm_ahead) + w * w * (t1 - t0) / 3.0  # (S,)
    out = out.index_add(0, ray_indices, per_sample)
    scale = torch.as_tensor(scale, dtype=dtype, device=weights.device)
    return out / scale

"""Volume compositing over packed samples (Max 1995; NeRF, Mildenhall et al. 2020, eq. 3), differentiable.

For the samples i of one ray, in t order, with delta_i = t_end_i - t_start_i:

    alpha_i = 1 - exp(-sigma_i delta_i)
    trans_i = exp(-sum_{j<i} sigma_j delta_j) = prod_{j<i} (1 - alpha_j)     (light reaching sample i)
    weight_i = trans_i alpha_i
    color = sum_i weight_i rgb_i + (1 - opacity) background,  opacity = sum_i weight_i,  depth = sum_i weight_i t_i

with t_i the interval's midpoint. Samples must be packed: grouped by ray, in t order within a ray (what
:func:`~rwf_render.raymarch.march` returns). Everything is plain torch autograd; the per-ray exclusive sum runs
as a cumulative sum in float64, so rays late in a big batch lose no precision.
"""

from __future__ import annotations

from typing import Callable

import torch


def exclusive_sum(values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray exclusive cumulative sum of packed ``values`` (S,): out_i = sum of the earlier samples of i's ray.
    Each ray's samples lie together, in order; the rays themselves may come in any order."""
    if values.numel() == 0:
        return values.clone()
    ahead = torch.cumsum(values.double(), dim=0) - values.double()  # (S,) sum of every sample packed before i
    position = torch.arange(values.numel(), device=values.device)
    starts = torch.ones_like(ray_indices, dtype=torch.bool)
    starts[1:] = ray_indices[1:] != ray_indices[:-1]  # where each ray's samples begin
    first = torch.cummax(torch.where(starts, position, torch.zeros_like(position)), 0).values  # (S,) its ray's start
    return (ahead - ahead[first]).to(values.dtype)


MAX_THICKNESS = 100.0
"""optical thickness a sample counts with at most: exp(-100) is 0 in float32 once denormals are flushed, so the
alpha (1) and the transmittance behind it (0) are unchanged, while the batch-wide cumulative sum of
:func:`exclusive_sum` stays small enough for float64 to resolve every ray's own sum. Unclamped, one ray's huge or
infinite density (an exp(x) field output overflows past x = 88) spoiled the transmittance of every ray packed
after it: opacities above 1, then NaN (a fit of a real capture diverged so)."""


def optical_thickness(sigmas: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor) -> torch.Tensor:
    """(S,) sigma x (t_end - t_start) of packed samples, in [0, :data:`MAX_THICKNESS`]; 0 for a sample of no width
    (float32 cannot part t_start from t_end far along a ray with a fine step), even at an infinite density, whose
    product inf x 0 = NaN would spoil every ray packed after it as an unclamped inf did. A NaN density counts as
    opaque (its ray ends there; its colour still shows the NaN) and a negative one as empty: through the batch-wide
    sum either spoiled every ray packed after it too (NaN opacities, or opacities above 1)."""
    delta = t_ends - t_starts
    thickness = torch.where(delta > 0, sigmas * delta, torch.zeros_like(sigmas))
    return torch.nan_to_num(thickness, nan=MAX_THICKNESS, posinf=MAX_THICKNESS, neginf=0.0).clamp(0.0, MAX_THICKNESS)


def render_weight_from_density(t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor,
                               ray_indices: torch.Tensor, n_rays: int):
    """Weights, transmittance and alphas from densities.

    Args:
        t_starts, t_ends, sigmas: (S,) packed samples; ray_indices (S,) int64; n_rays: number of rays.
    Returns:
        ``weights, trans, alphas``, each (S,).
    """
    sigma_delta = optical_thickness(sigmas, t_starts, t_ends)  # (S,) of each interval
    trans = torch.exp(-exclusive_sum(sigma_delta, ray_indices, n_rays))
    alphas = 1.0 - torch.exp(-sigma_delta)
    return trans * alphas, trans, alphas


def accumulate_along_rays(weights: torch.Tensor, ray_indices: torch.Tensor, n_rays: int,
                          values: torch.Tensor | None = None) -> torch.Tensor:
    """sum_i weight_i value_i per ray: (S,) weights, (S, C) values (None: the weights themselves) -> (n_rays, C)."""
    src = weights[:, None] if values is None else weights[:, None] * values  # (S, C)
    out = torch.zeros(n_rays, src.shape[1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def composite(rgbs: torch.Tensor, sigmas: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor,
              ray_indices: torch.Tensor, n_rays: int, background: torch.Tensor | float | None = None,
              early_stop_eps: float = 0.0):
    """Composite packed colors and densities into per-ray color, opacity and depth.

    Args:
        rgbs: (S, C) colors (or any features); sigmas, t_starts, t_ends: (S,); ray_indices: (S,) int64.
        n_rays: number of rays.
        background: None (black), a number, (C,) or (n_rays, C); blended with (1 - opacity).
        early_stop_eps: samples whose transmittance fell below this get zero weight (rendering: the march's
            ``sigma_fn`` pruning drops them before their colors are ever computed).
    Returns:
        ``colors (n_rays, C), opacities (n_rays, 1), depths (n_rays, 1), extras`` with extras a dict of the
        per-sample ``weights, trans, alphas`` (S,).

    Example:
        >>> ri = torch.zeros(2, dtype=torch.long); ts = torch.tensor([0., 1.]); te = torch.tensor([1., 2.])
        >>> colors, opacity, depth, _ = composite(torch.eye(3)[:2], torch.full((2,), 1e4), ts, te, ri, 1)
        >>> colors.tolist()  # the first slab is opaque: it hides the second
        [[1.0, 0.0, 0.0]]
    """
    n = t_starts.shape[0]
    if sigmas.numel() == n and sigmas.dim() == 2:  # (S, 1), as a field's density head returns it
        sigmas = sigmas.reshape(-1)
    if sigmas.shape != (n,) or t_ends.shape != (n,) or ray_indices.shape != (n,):
        raise ValueError(f"sigmas, t_starts, t_ends and ray_indices must each be (S,): got {tuple(sigmas.shape)}, "
                         f"{tuple(t_starts.shape)}, {tuple(t_ends.shape)}, {tuple(ray_indices.shape)}")
    if rgbs.dim() != 2 or rgbs.shape[0] != n:  # an (S,) colour broadcast against the rays silently
        raise ValueError(f"rgbs must be (S, C) with S = {n} samples, got {tuple(rgbs.shape)}")
    weights, trans, alphas = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    if early_stop_eps > 0:
        weights = torch.where(trans >= early_stop_eps, weights, torch.zeros_like(weights))
    colors = accumulate_along_rays(weights, ray_indices, n_rays, rgbs)
    opacities = accumulate_along_rays(weights, ray_indices, n_rays)
    depths = accumulate_along_rays(weights, ray_indices, n_rays, ((t_starts + t_ends) * 0.5)[:, None])
    if background is not None:
        colors = colors + (1.0 - opacities) * torch.as_tensor(background, dtype=colors.dtype, device=colors.device)
    return colors, opacities, depths, {"weights": weights, "trans": trans, "alphas": alphas}


def volume_render(t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor, n_rays: int,
                  rgb_sigma_fn: Callable, background: torch.Tensor | float | None = None,
                  early_stop_eps: float = 0.0):
    """Evaluate ``rgb_sigma_fn(t_starts, t_ends, ray_indices) -> (rgbs (S, C), sigmas (S,))`` and composite.

    The callable sees the packed samples and returns their colors and densities; see :func:`composite` for the
    rest of the arguments and the returned tuple. Without samples the callable is not called, and the colors
    are the background (3 channels).
    """
    if t_starts.device.type == "cpu":
        torch.set_flush_denormal(True)
    n_channels = 3
    if t_starts.numel() == 0:
        zeros = t_starts.new_zeros(n_rays, 1)
        colors = zeros.expand(n_rays, n_channels).clone()
        if background is not None:
            colors = colors + torch.as_tensor(background, dtype=colors.dtype, device=colors.device)
        empty = t_starts.new_zeros(0)
        return colors, zeros, zeros.clone(), {"weights": empty, "trans": empty, "alphas": empty}
    rgbs, sigmas = rgb_sigma_fn(t_starts, t_ends, ray_indices)
    return composite(rgbs, sigmas.reshape(-1), t_starts, t_ends, ray_indices, n_rays, background, early_stop_eps)

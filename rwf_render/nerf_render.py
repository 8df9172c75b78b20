"""Volume rendering of a radiance field through the occupancy-grid ray marcher.

    rays -> OccupancyGrid.sampling (packed samples, occupied cells only) -> field(x, d) -> composite

:class:`NeRFModel` owns everything a checkpoint must restore: the field, the occupancy grid (its buffers) and the
optional background model. Rendering a whole camera works in chunks of rays with early ray termination, so memory
is bounded at any resolution.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .cameras import Cameras, pixel_rays
from .encodings import SphericalHarmonics
from .evalchunk import eval_chunk
from .nerf_field import NeRFField, NeRFFieldConfig
from .raymarch import OccupancyGrid, RaySamples, volume_render
from .raymarch.march import prune_keep


@dataclass
class RenderConfig:
    grid_resolution: int = 128
    """occupancy cells per axis"""
    grid_levels: int = 1
    """cascades, each doubling the box (real captures: scenes reaching beyond the box)"""
    steps_per_diagonal: int = 1024
    """marching step = box diagonal / this (instant-ngp: 1024 over the unit cube's diagonal)"""
    cone_angle: float = 0.0
    """> 0: steps grow with distance (1/256 for unbounded real captures)"""
    max_samples: int = 1024
    """cap on samples per ray"""
    near: float | None = None
    """ray start, over the per-image near passed to render_rays (None: that, else 2% of the box diagonal)"""
    far: float | None = None
    """ray end, over the per-image far passed to render_rays (None: that, else where the ray leaves the grid)"""
    far_bounds: bool = True
    """use the per-image far passed to render_rays; off, rays end where they leave the grid (orbit captures whose
    background lies beyond the farthest triangulated point)"""
    early_stop_eps: float = 1e-4
    """rendering: stop a ray once its transmittance falls below this"""
    alpha_thre: float = 0.0
    """rendering: skip samples whose alpha is below this"""
    sampler: str = "grid"
    """grid: occupancy-grid marching; dense: every lattice point (grid kept full, never updated): the stratified
    sampling of the simplified NeRF protocol"""
    chunk: int = 8192
    """rays per chunk when rendering whole images"""

    def to_dict(self) -> dict:
        return asdict(self)


SAMPLE_CHUNK = 1 << 18  # field evaluations per call when rendering without gradients


def pixel_radius(cams: Cameras) -> torch.Tensor:
    """(N,) cone radius per unit distance of each camera's pixels: a pixel's width over sqrt(3), as in mip-NeRF,
    from the focal lengths (at the image centre; off-centre pixels are taken as the same)."""
    return 1.0 / (math.sqrt(3.0) * (cams.fx * cams.fy).sqrt())


def frustum_cov(rays_d: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, radius: torch.Tensor | None) -> torch.Tensor:
    """(N, 3, 3) world covariance of samples [t0, t1] along unit rays ``rays_d`` (N, 3) in cones of ``radius`` (N,)
    per unit distance (None: lines): the first two moments of the uniform distribution over each conical frustum,
    along the ray and across it (mip-NeRF, eq. 7), centred at the interval's midpoint."""
    mid, half = (t0 + t1) * 0.5, (t1 - t0) * 0.5
    mid2, half2 = mid * mid, half * half
    denom = 3.0 * mid2 + half2
    var_t = half2 / 3.0 - (4.0 / 15.0) * half2 * half2 * (12.0 * mid2 - half2) / denom**2
    outer = rays_d[:, :, None] * rays_d[:, None, :]
    cov = var_t[:, None, None] * outer
    if radius is not None:
        var_r = radius**2 * (mid2 / 4.0 + (5.0 / 12.0) * half2 - (4.0 / 15.0) * half2 * half2 / denom)
        cov = cov + var_r[:, None, None] * (torch.eye(3, dtype=cov.dtype, device=cov.device) - outer)
    return cov


def _slices(n: int, step: int | None) -> list[slice]:
    """[0, n) in pieces of ``step`` (one piece when None); at least one (possibly empty) piece."""
    if step is None or n <= step:
        return [slice(0, n)]
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


class _Clock:
    """Accumulates wall time between laps into a dict (a no-op without one)."""

    def __init__(self, sink: dict | None, device: torch.device):
        self.sink, self.cuda = sink, device.type == "cuda"
        if sink is not None:
            self.t = self._now()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def lap(self, name: str) -> None:
        if self.sink is not None:
            now = self._now()
            self.sink[name] = self.sink.get(name, 0.0) + now - self.t
            self.t = now


class NeRFModel(nn.Module):
    """Field + occupancy grid + background.

    Args:
        aabb: (6,) scene box. field_cfg, render_cfg: configs. background: white | black | random | learned.
        seed: model seed.
    """

    def __init__(self, aabb, field_cfg: NeRFFieldConfig, render_cfg: RenderConfig, background: str = "white",
                 seed: int = 0):
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(-1)
        self.render_cfg, self.background = render_cfg, background
        self.field = NeRFField(aabb, field_cfg, seed=seed)
        self.grid = OccupancyGrid(aabb, render_cfg.grid_resolution, render_cfg.grid_levels)
        if render_cfg.sampler == "dense":
            self.grid.fill_(True)
        self.bg_model = None
        self.pose_correction = None  # camera_opt.PoseCorrection of the training cameras (--optimize-cameras)
        if background == "learned":  # colour of what lies beyond the box, by direction
            self.bg_enc = SphericalHarmonics(degree=3)
            self.bg_model = nn.Linear(self.bg_enc.out_dim, 3)
            nn.init.zeros_(self.bg_model.weight)
            nn.init.zeros_(self.bg_model.bias)
        extent = aabb[3:] - aabb[:3]
        self.diagonal = float(extent.norm())
        self.step_size = self.diagonal / render_cfg.steps_per_diagonal

    @property
    def aabb(self) -> torch.Tensor:
        return self.field.aabb

    def default_near(self) -> float:
        return 0.02 * self.diagonal if self.render_cfg.near is None else self.render_cfg.near

    def background_rgb(self, rays_d: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor | None:
        """(R, 3) background for rays: the learned model, else ``given`` (training colours), else the fixed one:
        black for "black", white otherwise ("random" runs train on random colours and are shown and scored on white,
        as their targets are)."""
        if self.bg_model is not None:
            return torch.sigmoid(self.bg_model(self.bg_enc(rays_d)))
        if given is not None:
            return given
        return None if self.background == "black" else torch.ones(3, device=rays_d.device)

    def cell_cov(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 3) covariance of a uniform point in the occupancy cell holding each world point x (N, 3): the
        scale at which a ``mip`` field is asked for the density of a cell."""
        level = self.grid.cells_of(x)[0].clamp(min=0)
        res = torch.tensor(self.grid.resolution, dtype=x.dtype, device=x.device)
        size = (self.aabb[3:] - self.aabb[:3]).to(x) / res * (2.0 ** level.to(x.dtype))[:, None]  # (N, 3)
        return torch.diag_embed(size**2 / 12.0)

    def density_at_cells(self, x: torch.Tensor) -> torch.Tensor:
        """sigma (N,) at world points, over their occupancy cell with a ``mip`` field, else at the points."""
        return self.field.density(x, self.cell_cov(x) if self.field.cfg.mip else None)

    @torch.no_grad()
    def update_grid(self, step: int, generator: torch.Generator | None = None) -> bool:
        """Refresh the occupancy grid from the field's density (no-op with the dense sampler)."""
        if self.render_cfg.sampler == "dense":
            return False
        return self.grid.update(step, self.density_at_cells, step_size=self.step_size, generator=generator)

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, near=None, far=None,
                    background: torch.Tensor | None = None, image_idx: torch.Tensor | None = None,
                    jitter: torch.Tensor | None = None, train: bool = False,
                    timings: dict | None = None, radii: torch.Tensor | None = None) -> dict:
        """Render rays (R, 3) (unit directions): rgb (R, 3) on the background, premultiplied (R, 3) (the same on
        black: sum_i w_i c_i), depth (R,) along the ray, opacity (R,), n_samples.

        ``radii`` (R,): each ray's pixel radius per unit distance (:func:`pixel_radius`), read by a ``mip`` field
        (None: the samples' length along the ray only).

        ``train`` marches every occupied lattice point (gradients flow to all of them); otherwise samples with
        alpha below ``alpha_thre`` or behind an opaque surface (transmittance < ``early_stop_eps``) are dropped
        before colours are computed. ``timings``: a dict that accumulates the seconds spent marching
        ("march"), in the field's forward pass ("field") and compositing ("composite").
        """
        clock = _Clock(timings, rays_o.device)
        cfg = self.render_cfg
        # --near / --far, when set, win over the bounds passed in (a dataset's per-image bounds)
        near = cfg.near if cfg.near is not None else self.default_near() if near is None else near
        far = cfg.far if cfg.far is not None else far if cfg.far_bounds else None

        # without gradients, the field runs on at most SAMPLE_CHUNK samples at a time: memory stays bounded even
        # when a chunk of rays holds up to max_samples samples each
        step = None if train else eval_chunk(rays_o.device, SAMPLE_CHUNK)
        mip = self.field.cfg.mip

        def cov(t0, t1, ri):
            return frustum_cov(rays_d[ri], t0, t1, None if radii is None else radii[ri]) if mip else None

        def point(t0, t1, ri):  # each sample's midpoint
            return rays_o[ri] + rays_d[ri] * ((t0 + t1) * 0.5)[:, None]

        def rgb_sigma_fn(t_starts, t_ends, ray_indices):  # training, or rendering without pruning: the whole field
            clock.lap("march")
            rgbs, sigmas = [], []
            for sl in _slices(t_starts.shape[0], step):
                ri = ray_indices[sl]
                x = point(t_starts[sl], t_ends[sl], ri)
                rgb, sigma = self.field(x, rays_d[ri], None if image_idx is None else image_idx[ri],
                                        cov(t_starts[sl], t_ends[sl], ri))
                rgbs.append(rgb.float())
                sigmas.append(sigma.float())
            clock.lap("field")
            return torch.cat(rgbs), torch.cat(sigmas)

        def sigma_fn(t_starts, t_ends, ray_indices):  # pruning by density alone (a field without trunk features)
            out = []
            for sl in _slices(t_starts.shape[0], step):
                ri = ray_indices[sl]
                x = point(t_starts[sl], t_ends[sl], ri)
                out.append(self.field.density(x, cov(t_starts[sl], t_ends[sl], ri)))
            return torch.cat(out) if out else t_starts.new_zeros(0)

        prune = not train and (cfg.early_stop_eps > 0 or cfg.alpha_thre > 0)
        reuse = prune and hasattr(self.field, "trunk_features")  # NeRFField's; a field of one's own may lack them
        samples = self.grid.sampling(rays_o, rays_d, near=near, far=far, step_size=self.step_size,
                                     cone_angle=cfg.cone_angle, max_samples=cfg.max_samples, jitter=jitter,
                                     sigma_fn=sigma_fn if prune and not reuse else None, alpha_thre=cfg.alpha_thre,
                                     early_stop_eps=cfg.early_stop_eps if prune and not reuse else 0.0)
        if reuse:  # the trunk's features of the samples the pruning evaluates are kept: the colour pass needs
            # only the head then (the trunk ran twice on nearly every kept sample: 31 % of a test-view render)
            evaluated, features = [], []

            def sigma_kept(t_starts, t_ends, ray_indices, idx):
                out = []
                for sl in _slices(t_starts.shape[0], step):
                    ri = ray_indices[sl]
                    x = point(t_starts[sl], t_ends[sl], ri)
                    h = self.field.trunk_features(x, cov(t_starts[sl], t_ends[sl], ri))
                    features.append(h)
                    out.append(self.field.density_of(h))
                evaluated.append(idx)
                return torch.cat(out) if out else t_starts.new_zeros(0)

            keep = prune_keep(samples, rays_o.shape[0], sigma_kept, cfg.alpha_thre, cfg.early_stop_eps,
                              with_index=True)
            row = torch.full_like(samples.ray_indices, -1)
            if evaluated:
                done = torch.cat(evaluated)
                row[done] = torch.arange(done.numel(), device=done.device)
            kept_rows = row[keep]
            kept_h = torch.cat(features)[kept_rows] if features else None
            samples = RaySamples(*(v[keep] for v in samples))

            def rgb_sigma_fn(t_starts, t_ends, ray_indices):  # noqa: F811  (the kept samples: the head only)
                clock.lap("march")
                rgbs, sigmas = [], []
                for sl in _slices(t_starts.shape[0], step):
                    ri, h = ray_indices[sl], kept_h[sl]
                    rgbs.append(self.field.colour(h, rays_d[ri], None if image_idx is None else image_idx[ri]).float())
                    sigmas.append(self.field.density_of(h).float())
                clock.lap("field")
                return torch.cat(rgbs), torch.cat(sigmas)

        bg = self.background_rgb(rays_d, background)
        # composited on black: the premultiplied colour sum_i w_i c_i, then the background where the samples leave
        # the ray uncovered, as composite() would add it (the same floats): one composite gives both
        fg, opacity, depth, extras = volume_render(samples.t_starts, samples.t_ends, samples.ray_indices,
                                                   rays_o.shape[0], rgb_sigma_fn, background=None)
        rgb = fg if bg is None else fg + (1.0 - opacity) * torch.as_tensor(bg, dtype=fg.dtype, device=fg.device)
        clock.lap("composite")
        out = {"rgb": rgb, "premultiplied": fg, "depth": depth[:, 0], "opacity": opacity[:, 0],
               "n_samples": int(samples.t_starts.numel())}
        if train:  # the packed samples and their weights, for losses on the weights (distortion)
            out.update(weights=extras["weights"], t_starts=samples.t_starts, t_ends=samples.t_ends,
                       ray_indices=samples.ray_indices)
        return out

    @torch.no_grad()
    def render_camera(self, cam: Cameras, image_idx: int | None = None, near=None, far=None,
                      premultiplied: bool = False) -> dict:
        """Render one camera in chunks: rgb (H, W, 3), depth (H, W), opacity (H, W) on the model's device; with
        ``premultiplied`` also that (H, W, 3): the colour on black, sum_i w_i c_i, from the same samples."""
        device = self.aabb.device
        cam = cam[:1].to(device=device, dtype=torch.float32)
        w, h = int(cam.width[0]), int(cam.height[0])
        radius = pixel_radius(cam).reshape(-1)[:1]
        # the rays are made chunk by chunk and the results written into place: the memory of a frame is its outputs
        # (whole-frame rays and a concatenation of the chunks took about 100 bytes a pixel: 7 GB at 8000 x 8000)
        res = {"rgb": torch.empty(h * w, 3, device=device), "depth": torch.empty(h * w, device=device),
               "opacity": torch.empty(h * w, device=device),
               **({"premultiplied": torch.empty(h * w, 3, device=device)} if premultiplied else {})}
        for i in range(0, h * w, self.render_cfg.chunk):
            flat = torch.arange(i, min(i + self.render_cfg.chunk, h * w), device=device)
            pixels = torch.stack([(flat % w).float() + 0.5, torch.div(flat, w, rounding_mode="floor").float() + 0.5], -1)
            rays_o, rays_d = pixel_rays(cam, pixels)
            idx = None if image_idx is None else torch.full((len(flat),), image_idx, device=device)
            out = self.render_rays(rays_o, rays_d, near=near, far=far, image_idx=idx,
                                   radii=radius.expand(len(flat)))
            for k in res:
                res[k][i:i + len(flat)] = out[k]
        res = {k: v.reshape(h, w, *v.shape[1:]) for k, v in res.items()}
        for k in ("rgb", "premultiplied"):
            if k in res:
                res[k].clamp_(0, 1)
        return res

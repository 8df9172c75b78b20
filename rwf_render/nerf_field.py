"""The radiance field of the NeRF pipeline.

    x (world) -> box-normalized [0, 1]^3 -> position encoding -> trunk MLP -> density, features
    d (unit)  -> direction encoding ---------------------------------------+-> color head MLP -> rgb
    image index -> appearance embedding (optional) ------------------------+

With ``mip`` the position encoding is integrated over each sample's Gaussian footprint (``cov``, world units; see
:mod:`rwf_render.encodings`), as in mip-NeRF: features finer than a sample fade instead of aliasing. Every linear
layer (trunk and head) follows ``param = plain | wn | rwf``. With ``view_dependent=False`` the color
comes straight from the trunk (the simplified NeRF of Tancik et al. 2020: one MLP, RGB + density).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .encodings import make_encoding
from .fields import MLP, EncodingConfig, MLPConfig, build_encoding, config_dict, from_dict, typed_settings

DENSITY_ACTIVATIONS = ("trunc_exp", "softplus", "relu")
REFERENCE_DIAGONAL = 3 ** 0.5 / 0.33
"""the diagonal of instant-ngp's unit cube at its default scale 0.33 (+-1.515 about the origin): the box of the
Blender scenes and of every built-in scene. A field's density is per this length (see ``density_scale``)."""


def density_scale_of(aabb) -> float:
    """``REFERENCE_DIAGONAL`` / the box's diagonal, to 6 significant digits (1 for the +-1.515 box): the factor that
    turns the field's density, per reference length, into density per unit of the scene's own coordinates."""
    box = torch.as_tensor(aabb, dtype=torch.float64).flatten()
    return float(f"{REFERENCE_DIAGONAL / float((box[3:] - box[:3]).norm()):.6g}")


class _TruncExp(torch.autograd.Function):
    """exp(x) with its gradient computed from exp(min(x, 15)): no overflow in the backward pass (instant-ngp)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def density_activation(name: str, raw: torch.Tensor) -> torch.Tensor:
    if name == "trunc_exp":
        return _TruncExp.apply(raw)
    if name == "softplus":
        return torch.nn.functional.softplus(raw - 1.0)
    if name == "relu":
        return torch.relu(raw)
    raise ValueError(f"unknown density activation {name!r}; expected one of {', '.join(DENSITY_ACTIVATIONS)}")


@dataclass
class NeRFFieldConfig:
    pos: EncodingConfig = field(default_factory=lambda: EncodingConfig(kind="fourier", m=128, sigma=8.0,
                                                                        include_input=True))
    """encoding of box-normalized positions in [0, 1]^3 (sigma in cycles per box side)"""
    dirs: EncodingConfig = field(default_factory=lambda: EncodingConfig(kind="sh", degree=3))
    """encoding of view directions (sh or pe)"""
    trunk: MLPConfig = field(default_factory=lambda: MLPConfig(depth=4, width=128, param="rwf"))
    """position MLP; its output is 1 density + ``features``"""
    head: MLPConfig = field(default_factory=lambda: MLPConfig(depth=2, width=64, param="rwf"))
    """color MLP on features + encoded direction (+ appearance)"""
    features: int = 15
    """trunk features passed to the color head"""
    view_dependent: bool = True
    """False: rgb comes from the trunk (no direction input), as in the simplified NeRF protocol"""
    density_act: str = "trunc_exp"
    """trunc_exp | softplus | relu"""
    appearance_dim: int = 0
    """per-image appearance embedding size (0: off); for real captures with changing exposure"""
    n_images: int = 0
    """number of training images (size of the appearance table)"""
    mip: bool = False
    """integrate the position encoding over each sample's footprint (mip-NeRF); off: point samples"""
    pos_extent: float = 1.0
    """the encoding sees the box scaled by this about its centre (a hash grid spans the occupancy grid's cascades:
    2^(levels - 1)); 1: the box itself"""
    density_scale: float | None = None
    """the density in scene units is the activation's output times this. None: ``density_scale_of`` the box, so
    that one scene in other units (millimetres, an instant-ngp file's ``scale``) starts as transparent and trains
    alike, as the field sees box-normalized positions (instant-ngp's density is per unit of its unit cube). A run's
    config.json records the number; runs fitted before it existed read 1 (their density per scene unit)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trunk"], d["head"] = config_dict(self.trunk), config_dict(self.head)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NeRFFieldConfig":
        d = {"density_scale": 1.0, **d}  # a run fitted before the density was per reference length
        simple = typed_settings(cls, {k: v for k, v in d.items() if k not in ("pos", "dirs", "trunk", "head")})
        return cls(pos=from_dict(EncodingConfig, d.get("pos")), dirs=from_dict(EncodingConfig, d.get("dirs")),
                   trunk=from_dict(MLPConfig, d.get("trunk")), head=from_dict(MLPConfig, d.get("head")), **simple)

    def set_param(self, param: str) -> None:
        self.trunk.param = self.head.param = param


class NeRFField(nn.Module):
    """Density and color at world points.

    Args:
        aabb: (6,) scene box (xmin, ymin, zmin, xmax, ymax, zmax); positions are normalized by it.
        cfg: NeRFFieldConfig; seed: model seed (Fourier matrix, W0, RWF scales).
    Shapes: x (N, 3), d (N, 3), image_idx (N,) or None, cov (N, 3, 3), one (3, 3) for every point, or None (read
        only with ``mip``)
        -> rgb (N, 3) in [0, 1], sigma (N,) >= 0.
    """

    def __init__(self, aabb, cfg: NeRFFieldConfig | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg = NeRFFieldConfig() if cfg is None else cfg  # a shared default changed every later field
        aabb = torch.as_tensor(aabb, dtype=torch.float32).flatten()
        self.register_buffer("aabb", aabb)
        self.density_scale = density_scale_of(aabb) if cfg.density_scale is None else cfg.density_scale
        if isinstance(self.density_scale, bool) or not (isinstance(self.density_scale, (int, float))
                                                        and 0 < self.density_scale < float("inf")):
            raise ValueError(f"density_scale must be a positive number, not {self.density_scale!r}")
        gen = torch.Generator().manual_seed(seed + 104729)
        p = cfg.pos
        self.pos_enc = build_encoding(p, 3, gen)
        out = 1 + (cfg.features if cfg.view_dependent else 3)
        self.trunk = MLP(self.pos_enc.out_dim, out, cfg.trunk, seed=seed)
        self.dir_enc = None
        self.appearance = None
        if cfg.view_dependent:
            d = cfg.dirs
            self.dir_enc = make_encoding(d.kind, 3, n_freqs=d.n_freqs, include_input=d.include_input,
                                         degree=d.degree, backend=d.backend)
            if cfg.appearance_dim > 0:
                self.appearance = nn.Embedding(max(cfg.n_images, 1), cfg.appearance_dim)
                nn.init.zeros_(self.appearance.weight)
            head_in = cfg.features + self.dir_enc.out_dim + max(cfg.appearance_dim, 0)
            head_cfg = MLPConfig(**{**config_dict(cfg.head), "out_activation": "sigmoid"})
            self.head = MLP(head_in, 3, head_cfg, seed=seed + 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.aabb[:3], self.aabb[3:]
        if self.cfg.pos_extent != 1.0:
            return (x - (lo + hi) / 2) / ((hi - lo) * self.cfg.pos_extent) + 0.5
        return (x - lo) / (hi - lo)

    def trunk_features(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's output at x (N, 3): (N, 1 + features) (the density before its activation first), from which
        :meth:`density_of` and :meth:`colour` give what ``forward`` gives, without running the trunk again."""
        if cov is None or not self.cfg.mip:
            return self.trunk(self.pos_enc(self.normalize(x)))
        inv = 1.0 / ((self.aabb[3:] - self.aabb[:3]) * self.cfg.pos_extent)  # the covariance in encoding units
        return self.trunk(self.pos_enc(self.normalize(x), cov * (inv[:, None] * inv[None, :])))

    def density(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """sigma (N,) at world points x (N, 3), or (``mip``) over Gaussians N(x, cov (N, 3, 3)): what the occupancy
        grid and mesh export query."""
        return self.density_of(self.trunk_features(x, cov))

    def density_of(self, h: torch.Tensor) -> torch.Tensor:
        """sigma (N,) from :meth:`trunk_features`."""
        sigma = density_activation(self.cfg.density_act, h[..., 0])
        return sigma if self.density_scale == 1 else sigma * self.density_scale

    def forward(self, x: torch.Tensor, d: torch.Tensor | None = None, image_idx: torch.Tensor | None = None,
                cov: torch.Tensor | None = None):
        h = self.trunk_features(x, cov)
        if d is None and self.cfg.view_dependent:  # colour without a view (mesh vertex colours): +z
            d = torch.zeros_like(x)
            d[..., 2] = 1.0
        return self.colour(h, d, image_idx), self.density_of(h)

    def colour(self, h: torch.Tensor, d: torch.Tensor | None, image_idx: torch.Tensor | None = None) -> torch.Tensor:
        """rgb (N, 3) from :meth:`trunk_features` ``h`` and unit view directions d (N, 3)."""
        if not self.cfg.view_dependent:
            return torch.sigmoid(h[..., 1:4])
        parts = [h[..., 1:], self.dir_enc(d)]
        if self.appearance is not None:
            if image_idx is None:  # novel views: the mean appearance
                parts.append(self.appearance.weight.mean(0).expand(h.shape[0], -1))
            else:
                parts.append(self.appearance(image_idx))
        return self.head(torch.cat(parts, dim=-1))

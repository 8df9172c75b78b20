"""Coordinate MLPs: an encoding followed by an MLP whose linear layers follow ``param = plain | wn | rwf``.

Hidden activations are the usual ones or SIREN's sine (Sitzmann et al. 2020): with ``activation="sine"`` each
hidden layer computes sin(omega0 (W x + b)) and every parameterization starts from SIREN's uniform draw
(``layers.siren_uniform``) instead of the Glorot one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral
from typing import Sequence

import torch
from torch import nn

from .encodings import make_encoding
from .layers import PARAMS, make_linear, siren_uniform


class Sine(nn.Module):
    """SIREN's activation: sin(omega0 z), z the layer's W x + b (Sitzmann et al. 2020, sec. 3.2)."""

    def __init__(self, omega0: float = 30.0):
        super().__init__()
        self.omega0 = float(omega0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * z)

    def extra_repr(self) -> str:
        return f"omega0={self.omega0:g}"


ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "gelu": nn.GELU, "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid, "none": nn.Identity,
}
HIDDEN_ACTIVATIONS = (*ACTIVATIONS, "sine")
"""hidden activations: ACTIVATIONS and SIREN's sine (not an output activation: the output layer stays linear)"""


@dataclass
class EncodingConfig:
    kind: str = "fourier"
    """fourier | pe | sh | hashgrid | identity"""
    m: int = 256
    """fourier: number of random frequencies (out_dim = 2 m)"""
    sigma: float = 10.0
    """fourier: std of the frequencies, 2-pi convention"""
    trainable: bool = False
    """fourier: learn the frequency matrix B"""
    n_freqs: int = 10
    """pe: number of octaves"""
    include_input: bool = False
    """fourier/pe: append the raw input to the features"""
    degree: int = 3
    """sh: highest degree l (0..4)"""
    backend: str = "torch"
    """pe/sh/hashgrid: torch | tcnn"""
    levels: int = 16
    """hashgrid: number of resolution levels"""
    level_features: int = 2
    """hashgrid: features per level (out_dim = levels x level_features)"""
    log2_size: int = 19
    """hashgrid: log2 of the entries of a hashed level's table"""
    base_res: int = 16
    """hashgrid: the coarsest level's resolution"""
    max_res: int = 2048
    """hashgrid: the finest level's resolution"""
    origin: float = 0.0
    """hashgrid: the tables cover [origin, origin + 1]^d (images: 0, shapes: -0.5)"""


@dataclass
class MLPConfig:
    depth: int = 4
    """number of linear layers, output layer included (Tancik's "4 layers" = 3 hidden + output)"""
    width: int = 256
    """hidden features"""
    activation: str = "relu"
    """hidden activation: relu | tanh | softplus | gelu | silu | sine (SIREN: sin(omega0 (W x + b)), SIREN init)"""
    out_activation: str = "none"
    """output activation: none | sigmoid | relu | softplus"""
    skips: Sequence[int] = field(default_factory=tuple)
    """indices of hidden layers whose input also gets the MLP input concatenated (NeRF: (4,))"""
    param: str = "plain"
    """plain | wn | rwf"""
    rwf_mu: float = 1.0
    """rwf: mean of the log-scale draw"""
    rwf_sigma: float = 0.1
    """rwf: std of the log-scale draw"""
    rwf_log_scale: bool = False
    """rwf: train log s instead of s"""
    omega0: float = 30.0
    """sine: the frequency factor omega0 of sin(omega0 (W x + b)) and of SIREN's init (runs saved before: 30)"""


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def typed_settings(cls, d: dict) -> dict:
    """The entries of ``d`` that are fields of the dataclass ``cls`` (unknown keys, a newer version's, are left
    out), or TypeError naming the first whose value does not have its field's scalar type (``int``, ``float``,
    ``bool``, ``str``, optionally ``| None``; 16.0 is not an int, true is not a number). A hand-edited config.json
    fails here, not with a traceback deep in a render."""
    out = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        value, kinds = d[f.name], str(f.type).replace(" ", "").split("|")
        scalar = [k for k in kinds if k != "None"]
        if len(scalar) == 1 and scalar[0] in _SCALARS and not (value is None and "None" in kinds):
            allowed = _SCALARS[scalar[0]]
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise TypeError(f"{cls.__name__}.{f.name} must be {str(f.type)}, got {value!r}")
        out[f.name] = value
    return out


def from_dict(cls, d: dict | None):
    """Build a config dataclass from a plain dict (:func:`typed_settings`: unknown keys ignored, types checked)."""
    if d is None:
        return cls()
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__}: expected an object of settings, got {type(d).__name__}")
    return cls(**typed_settings(cls, d))


class MLP(nn.Module):
    """depth linear layers of ``width`` features (``param`` picks the layer type), activation between them.

    Every layer starts from one W0 draw whatever ``param`` is: Glorot-normal, or for ``activation="sine"`` SIREN's
    (``siren_uniform``: the first layer U(+-1/fan_in), the later ones, output included, U(+-sqrt(6/fan_in)/omega0)).
    Biases start at zero in both cases. The output layer is linear (then ``out_activation``).

    Shapes: x (..., in_dim) -> (..., out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: MLPConfig | None = None, seed: int = 0):
        super().__init__()
        cfg = MLPConfig() if cfg is None else cfg  # one object per model: a shared default changed every later one
        if cfg.param not in PARAMS:
            raise ValueError(f"unknown param {cfg.param!r}; expected one of {', '.join(PARAMS)}")
        if cfg.depth < 1 or cfg.width < 1:
            raise ValueError("MLP depth and width must be positive")
        for name, known in ((cfg.activation, HIDDEN_ACTIVATIONS), (cfg.out_activation, ACTIVATIONS)):
            if name not in known:
                raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(known)}")
        sine = cfg.activation == "sine"
        if sine and not (isinstance(cfg.omega0, (int, float)) and math.isfinite(cfg.omega0) and cfg.omega0 > 0):
            raise ValueError(f"omega0 must be a finite number > 0, got {cfg.omega0!r}")
        self.in_dim, self.out_dim, self.cfg = in_dim, out_dim, cfg
        bad = [k for k in cfg.skips if not (isinstance(k, Integral) and not isinstance(k, bool) and 1 <= k < cfg.depth)]
        if bad:  # 0, the depth or beyond, negative or 2.7 (read as 2) were ignored or changed without a word
            raise ValueError(f"skips must be layer indices 1 .. depth - 1 = {cfg.depth - 1}, got {list(cfg.skips)}")
        self.skips = tuple(int(k) for k in cfg.skips)
        # Separate streams for W0 and the RWF scales: the same seed gives the same W0 for plain, wn and rwf,
        # so the three start from one function.
        gen_w = torch.Generator().manual_seed(seed)
        gen_s = torch.Generator().manual_seed(seed + 7919)
        dims = [in_dim] + [cfg.width] * (cfg.depth - 1) + [out_dim]
        self.layers = nn.ModuleList()
        for i in range(cfg.depth):
            d_in = dims[i] + (in_dim if i in self.skips else 0)  # skips are 1 .. depth - 1
            w0 = siren_uniform(dims[i + 1], d_in, cfg.omega0, i == 0, gen_w) if sine else None  # None: Glorot
            self.layers.append(make_linear(d_in, dims[i + 1], cfg.param, generator=gen_w, scale_generator=gen_s,
                                           rwf_mu=cfg.rwf_mu, rwf_sigma=cfg.rwf_sigma,
                                           rwf_log_scale=cfg.rwf_log_scale, w0=w0))
        self.act = Sine(cfg.omega0) if sine else ACTIVATIONS[cfg.activation]()
        self.out_act = ACTIVATIONS[cfg.out_activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            if i in self.skips:
                h = torch.cat([h, x], dim=-1)
            h = layer(h)
            h = self.act(h) if i < len(self.layers) - 1 else self.out_act(h)
        return h


def build_encoding(enc: EncodingConfig, in_dim: int, generator: torch.Generator | None = None) -> nn.Module:
    """The encoding module of ``enc`` for ``in_dim``-dimensional inputs."""
    return make_encoding(enc.kind, in_dim, m=enc.m, sigma=enc.sigma, trainable=enc.trainable, n_freqs=enc.n_freqs,
                         include_input=enc.include_input, degree=enc.degree, backend=enc.backend,
                         levels=enc.levels, level_features=enc.level_features, log2_size=enc.log2_size,
                         base_res=enc.base_res, max_res=enc.max_res, origin=enc.origin, generator=generator)


class NeuralField(nn.Module):
    """encoding -> MLP: the coordinate network used by the image and SDF pipelines.

    Args:
        in_dim: coordinate size (2 for images, 3 for shapes); out_dim: channels.
        enc, mlp: configs; seed: makes B, W0 and the RWF scales reproducible.
    Shapes: x (..., in_dim) -> (..., out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, enc: EncodingConfig | None = None, mlp: MLPConfig | None = None,
                 seed: int = 0):
        super().__init__()
        enc = EncodingConfig() if enc is None else enc
        gen_b = torch.Generator().manual_seed(seed + 104729)
        self.encoding = build_encoding(enc, in_dim, gen_b)
        self.mlp = MLP(self.encoding.out_dim, out_dim, mlp, seed)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoding(x))


def config_dict(cfg) -> dict:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

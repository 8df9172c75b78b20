"""Linear layers: plain, weight-normalized and randomly factorized (RWF), with one shared initialization.

All three start from the same draw ``W0`` (Glorot-normal by default, given the same generator; or a ``w0`` passed
in, such as SIREN's ``siren_uniform``), so at step 0 they compute the same function and a comparison between them
changes the parameterization and nothing else (``../shared/docs/RWF.md``).

    plain:  W = W0                                   parameters: weight, bias
    wn:     W = g * v / ||v||   (Salimans & Kingma 2016), v = W0, g = ||W0 row||    parameters: g, v, bias
    rwf:    W = diag(s) V       (Wang et al. 2022), s = exp(N(mu, sigma)), V = W0 / s   parameters: scale, v, bias
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .encodings import HashGrid

PARAMS = ("plain", "wn", "rwf")


def glorot_normal(d_out: int, d_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Glorot/Xavier normal init (Glorot & Bengio 2010): W ~ N(0, 2 / (fan_in + fan_out)), shape (d_out, d_in).

    The variance of JAX's ``glorot_normal``, the default of the ``stax.Dense`` used by Tancik et al. and of jaxpi's
    ``Dense`` used by the RWF authors; JAX draws it from a normal truncated at two standard deviations (rescaled to
    keep the variance), so only the tails differ: 4.6 % of this normal's draws lie beyond the truncation.
    """
    std = math.sqrt(2.0 / (d_in + d_out))
    return torch.randn(d_out, d_in, generator=generator) * std


def siren_uniform(d_out: int, d_in: int, omega0: float, first: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """SIREN's weight init (Sitzmann et al. 2020, sec. 3.2), shape (d_out, d_in).

    For layers computing sin(omega0 (W x + b)) -- omega0 multiplies the whole pre-activation, bias included, in
    every hidden layer -- W is drawn uniform in [-c, c] with
        first layer:  c = 1 / d_in
        later layers: c = sqrt(6 / d_in) / omega0   (the output layer included)
    so that omega0 W ~ U(-sqrt(6/n), sqrt(6/n)) in every layer after the first: with sine inputs (arcsine
    distributed, variance 1/2) each hidden pre-activation omega0 W x is then close to N(0, 1), in every layer.
    Biases are not drawn here: the MLP starts them at zero, as every layer of this project (the paper's analysis
    leaves them out; its reference code keeps PyTorch's U(+-1/sqrt(fan_in)), which times omega0 would add a
    variance omega0^2 / (3 fan_in), 1.2 at 256 features, to each hidden pre-activation).
    """
    bound = 1.0 / d_in if first else math.sqrt(6.0 / d_in) / omega0
    return (torch.rand(d_out, d_in, generator=generator) * 2.0 - 1.0) * bound


def _initial(d_out: int, d_in: int, generator: torch.Generator | None, w0: torch.Tensor | None) -> torch.Tensor:
    if w0 is None:
        return glorot_normal(d_out, d_in, generator)
    if tuple(w0.shape) != (d_out, d_in):
        raise ValueError(f"w0 has shape {tuple(w0.shape)}, expected {(d_out, d_in)}")
    return w0


class PlainLinear(nn.Module):
    """y = x W^T + b with W initialized Glorot-normal and b = 0.

    Args:
        d_in, d_out: feature sizes.
        generator: RNG for W0 (None: torch's global RNG).
        w0: the initial weight (d_out, d_in) instead of a Glorot draw (nothing is drawn from ``generator``).
    Shapes: x (..., d_in) -> y (..., d_out).
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = True, generator: torch.Generator | None = None,
                 w0: torch.Tensor | None = None):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.reset_parameters(_initial(d_out, d_in, generator, w0))

    @torch.no_grad()
    def reset_parameters(self, w0: torch.Tensor | None = None) -> None:
        """Start from ``w0`` (None: a Glorot-normal draw from torch's global RNG, as ``nn.Linear`` draws)."""
        w0 = _initial(self.d_out, self.d_in, None, w0)
        self.weight.copy_(w0)
        if self.bias is not None:
            self.bias.zero_()

    def effective_weight(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, param=plain"


class WeightNormLinear(PlainLinear):
    """Weight normalization (Salimans & Kingma 2016, eq. 2): w_k = g_k v_k / ||v_k|| per output neuron k.

    Initialized so that W == W0 at step 0: v = W0 and g = ||W0 row|| (instead of the paper's data-dependent init,
    so the three parameterizations start from one function).
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = True, generator: torch.Generator | None = None,
                 w0: torch.Tensor | None = None):
        nn.Module.__init__(self)
        self.d_in, self.d_out = d_in, d_out
        self.g = nn.Parameter(torch.empty(d_out))
        self.v = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.reset_parameters(_initial(d_out, d_in, generator, w0))

    @torch.no_grad()
    def reset_parameters(self, w0: torch.Tensor | None = None) -> None:
        w0 = _initial(self.d_out, self.d_in, None, w0)
        self.v.copy_(w0)
        self.g.copy_(w0.norm(dim=1))
        if self.bias is not None:
            self.bias.zero_()

    def effective_weight(self) -> torch.Tensor:
        # a zero row of W0 (an output layer started at 0) is 0 / 0: kept at 0, as the plain and rwf layers keep it
        return self.v * (self.g / self.v.norm(dim=1).clamp_min(torch.finfo(self.v.dtype).tiny))[:, None]

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, param=wn"


class FactorizedLinear(PlainLinear):
    """Random weight factorization (RWF; Wang, Wang, Seidman & Perdikaris 2022, sec. 3): W = diag(s) V.

    ``reset_parameters`` takes W0 (Glorot-normal unless ``w0`` is given), draws g ~ N(mu, sigma) per output
    neuron, sets s = exp(g) and V = W0 / s row-wise, so diag(s) V == W0 and the layer starts as the plain one. As
    in the authors' code (jaxpi ``archs.Dense``, PhysicsNeMo ``WeightFactLinear``) the scale s itself is the trained
    parameter; with ``log_scale=True`` the parameter is g and the forward pass uses exp(g) instead.

    Args:
        d_in, d_out: feature sizes.
        mu, sigma: mean and std of the log-scale draw (defaults 1.0 and 0.1, RWF.md).
        log_scale: train g = log s instead of s.
        generator: RNG for W0; scale_generator: RNG for g (separate, so W0 matches the plain layer's draw).
        w0: the initial weight instead of a Glorot draw.
    Shapes: x (..., d_in) -> y (..., d_out).

    Example:
        >>> layer = FactorizedLinear(2, 3)
        >>> torch.allclose(layer.effective_weight(), layer.scale[:, None] * layer.v)
        True
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = True, mu: float = 1.0, sigma: float = 0.1,
                 log_scale: bool = False, generator: torch.Generator | None = None,
                 scale_generator: torch.Generator | None = None, w0: torch.Tensor | None = None):
        nn.Module.__init__(self)
        self.d_in, self.d_out = d_in, d_out
        self.mu, self.sigma, self.log_scale = mu, sigma, log_scale
        self.scale = nn.Parameter(torch.empty(d_out))  # holds s, or g = log s when log_scale
        self.v = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.reset_parameters(_initial(d_out, d_in, generator, w0), scale_generator)

    @torch.no_grad()
    def reset_parameters(self, w0: torch.Tensor | None = None, scale_generator: torch.Generator | None = None) -> None:
        w0 = _initial(self.d_out, self.d_in, None, w0)
        g = self.mu + self.sigma * torch.randn(self.d_out, generator=scale_generator)
        s = torch.exp(g)
        if not (math.isfinite(self.mu) and math.isfinite(self.sigma) and self.sigma >= 0
                and bool(torch.isfinite(s).all() and (s > 0).all())):
            raise ValueError(f"RWF scales exp(N(mu={self.mu}, sigma={self.sigma})) must be finite and positive in "
                             "float32 (|mu| well below 87)")
        self.v.copy_(w0 / s[:, None])
        self.scale.copy_(g if self.log_scale else s)
        if self.bias is not None:
            self.bias.zero_()

    def s(self) -> torch.Tensor:
        """The per-neuron scale s, shape (d_out,)."""
        return torch.exp(self.scale) if self.log_scale else self.scale

    def effective_weight(self) -> torch.Tensor:
        return self.s()[:, None] * self.v  # diag(s) V: O(d_out * d_in), negligible beside the matmul

    def get_extra_state(self) -> torch.Tensor:
        # Saved beside the weights (as a tensor, like them) so that a state dict says which ``scale`` it holds.
        return torch.tensor(int(self.log_scale))

    def set_extra_state(self, state: torch.Tensor) -> None:
        if bool(state) != self.log_scale:
            held, wanted = ("g = log s", "s") if bool(state) else ("s", "g = log s")
            raise ValueError(f"this state's RWF scale holds {held} but the layer trains {wanted}: build the layer "
                             f"with log_scale={bool(state)}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # State dicts saved before the flag was have none; the CLI kept the choice in config.json then.
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, param=rwf, mu={self.mu}, sigma={self.sigma}, "
                f"log_scale={self.log_scale}")


def make_linear(d_in: int, d_out: int, param: str = "plain", bias: bool = True,
                generator: torch.Generator | None = None, scale_generator: torch.Generator | None = None,
                rwf_mu: float = 1.0, rwf_sigma: float = 0.1, rwf_log_scale: bool = False,
                w0: torch.Tensor | None = None) -> PlainLinear:
    """The one switch every MLP in the project goes through: ``param = "plain" | "wn" | "rwf"``; ``w0`` replaces
    the Glorot draw (every parameterization starts from it)."""
    if param == "plain":
        return PlainLinear(d_in, d_out, bias, generator, w0)
    if param == "wn":
        return WeightNormLinear(d_in, d_out, bias, generator, w0)
    if param == "rwf":
        return FactorizedLinear(d_in, d_out, bias, rwf_mu, rwf_sigma, rwf_log_scale, generator, scale_generator,
                                w0)
    raise ValueError(f"unknown param {param!r}; expected one of {', '.join(PARAMS)}")


def rwf_scale_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The scale parameters (s, or log s) of every FactorizedLinear inside ``module``."""
    for m in module.modules():
        if isinstance(m, FactorizedLinear):
            yield m.scale


def param_groups(module: nn.Module, lr: float, scale_lr: float | None = None) -> list[dict]:
    """Optimizer parameter groups: ``{"name": "rwf_scales"}`` for the RWF scales, ``{"name": "hash_tables"}`` for
    hash grid tables, the group a module declares in its ``param_group`` attribute (a dict with ``name`` and ``lr``,
    as the camera corrections' ``camera_poses``) for that module's parameters, ``{"name": "main"}`` for the rest.

    ``scale_lr`` (default: ``lr``) gives the scales their own learning rate. Hash tables get Adam's epsilon 1e-15
    (instant-ngp's): most entries see a gradient now and then, and a larger epsilon would mute their rare, small
    updates. They take Adam's fused step: on a CPU it updates millions of entries about 10x faster than the default
    loop (measured on 10^7: 0.017 against 0.19 s).
    """
    # a module's declared group comes first and claims its parameters, so none is listed in two groups (Adam
    # refuses that); frozen parameters are in none
    own, claimed = [], set()
    for m in module.modules():
        if isinstance(getattr(m, "param_group", None), dict):
            params = [p for p in m.parameters() if p.requires_grad and id(p) not in claimed]
            claimed |= {id(p) for p in params}
            own.append((m.param_group, params))
    scales = [p for p in rwf_scale_parameters(module) if p.requires_grad and id(p) not in claimed]
    tables = [m.table for m in module.modules()
              if isinstance(m, HashGrid) and m.table.requires_grad and id(m.table) not in claimed]
    ids = {id(p) for p in scales + tables} | claimed
    rest = [p for p in module.parameters() if id(p) not in ids and p.requires_grad]
    groups = [{"name": "main", "params": rest, "lr": lr}]
    if scales:
        groups.append({"name": "rwf_scales", "params": scales, "lr": lr if scale_lr is None else scale_lr})
    if tables:
        groups.append({"name": "hash_tables", "params": tables, "lr": lr, "eps": 1e-15, "fused": True})
    return groups + [{**group, "params": params} for group, params in own if params]


def count_parameters(modules: Iterable[nn.Module] | nn.Module) -> int:
    if isinstance(modules, nn.Module):
        modules = [modules]
    return sum(p.numel() for m in modules for p in m.parameters())

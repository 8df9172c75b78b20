"""Input encodings. Each is an ``nn.Module`` mapping (..., in_dim) -> (..., out_dim) and reporting ``out_dim``.

    fourier   Gaussian Fourier features (Tancik et al. 2020): [sin(2 pi x B^T), cos(2 pi x B^T)], B ~ N(0, sigma^2)
    pe        NeRF positional encoding (Mildenhall et al. 2020, eq. 4): sin/cos(2^k pi x), k = 0 .. n_freqs-1
    sh        real spherical harmonics of a unit direction, degrees l = 0 .. degree (degree <= 4)
    identity  x itself

Both sinusoidal encodings also take a covariance: ``enc(x, cov)`` is the expected encoding of a Gaussian
x ~ N(mean, cov) (the integrated positional encoding of mip-NeRF, Barron et al. 2021), exact in closed form:
E[sin(w.x)] = sin(w.mean) exp(-w^T cov w / 2), and the same for cos. Each sinusoid is damped by how far its
phase spreads over the Gaussian, so a frequency finer than a sample's footprint fades instead of aliasing.

Positional encoding and spherical harmonics can run through tiny-cuda-nn (``backend="tcnn"``) when it is
importable on a CUDA machine; they fall back to torch with one warning otherwise. The torch versions use
tiny-cuda-nn's output layout, so the two are interchangeable.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

ENCODINGS = ("fourier", "pe", "sh", "identity")


def _tcnn_or_none(backend: str, what: str):
    """Return the tinycudann module when ``backend == "tcnn"`` and it can run here, else None (with a warning)."""
    if backend == "torch":
        return None
    if backend != "tcnn":
        raise ValueError(f"unknown backend {backend!r}; expected 'torch' or 'tcnn'")
    try:
        import tinycudann as tcnn  # noqa: PLC0415  (optional accelerated backend)
    except ImportError as e:
        reason = f"tinycudann is not importable ({e})"
    else:
        if torch.cuda.is_available():
            return tcnn
        reason = "no CUDA device"
    warnings.warn(f"{what}: backend='tcnn' unavailable: {reason}; using the torch implementation", stacklevel=3)
    return None


class Identity(nn.Module):
    """x -> x. Shapes: (..., in_dim) -> (..., in_dim)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.in_dim = self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features, Tancik et al. 2020 (sec. 6): gamma(x) = [sin(2 pi x B^T), cos(2 pi x B^T)].

    Args:
        in_dim: input size d.
        m: number of frequencies (rows of B); out_dim = 2 m (+ in_dim with include_input).
        sigma: std of B's entries, in the 2-pi convention above (a paper quoting "scale 26 without 2 pi" means
            sigma = 26 / (2 pi) here).
        trainable: learn B (default: a fixed buffer, as in the paper).
        generator: RNG for B.
    Shapes: x (..., d) -> (..., out_dim).

    Example:
        >>> enc = GaussianFourierFeatures(2, m=4, sigma=10.0)
        >>> enc(torch.zeros(5, 2)).shape
        torch.Size([5, 8])
    """

    def __init__(self, in_dim: int, m: int = 256, sigma: float = 10.0, trainable: bool = False,
                 include_input: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.in_dim, self.m, self.sigma, self.include_input = in_dim, m, sigma, include_input
        b = torch.randn(m, in_dim, generator=generator) * sigma
        if trainable:
            self.B = nn.Parameter(b)
        else:
            self.register_buffer("B", b)
        self.out_dim = 2 * m + (in_dim if include_input else 0)

    def forward(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., d); cov (..., d, d) (broadcast over x) or None: the expected features of x ~ N(x, cov) (see the
        module doc).

        Computed in float32 (or float64) also under autocast: a bfloat16 product x B^T (8 bits of mantissa) puts
        the phase of a feature of 20 cycles off by up to half a turn."""
        with torch.autocast(x.device.type, enabled=False):
            dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 kept
            x, b = x.to(dtype), self.B.to(dtype)
            proj = (2 * math.pi) * (x @ b.T)  # (..., m)
            parts = [x] if self.include_input else []
            sin, cos = torch.sin(proj), torch.cos(proj)
            if cov is not None:
                outer = (b[:, :, None] * b[:, None, :]).flatten(1)  # (m, d*d): w^T cov w as one product
                var = (2 * math.pi) ** 2 * (cov.to(dtype).flatten(-2) @ outer.T)  # (..., m): each phase's variance
                damp = torch.exp(-0.5 * var)
                sin, cos = sin * damp, cos * damp
            return torch.cat(parts + [sin, cos], dim=-1)

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, m={self.m}, sigma={self.sigma}, "
                f"trainable={isinstance(self.B, nn.Parameter)}, out_dim={self.out_dim}")


class PositionalEncoding(nn.Module):
    """NeRF's positional encoding: for each input dim and k = 0..n_freqs-1, sin(2^k pi x) and cos(2^k pi x).

    Output layout (tiny-cuda-nn's "Frequency" layout, after the optional raw input):
        [x, sin(x_0), cos(x_0), sin(2 pi x_0), ..., sin(x_1), cos(x_1), ...]   (with pi folded in: 2^k pi x)
    out_dim = in_dim * 2 * n_freqs (+ in_dim with include_input).
    """

    def __init__(self, in_dim: int, n_freqs: int = 10, include_input: bool = True, backend: str = "torch"):
        super().__init__()
        self.in_dim, self.n_freqs, self.include_input = in_dim, n_freqs, include_input
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freqs, dtype=torch.float32))
        self.out_dim = in_dim * 2 * n_freqs + (in_dim if include_input else 0)
        tcnn = _tcnn_or_none(backend, "PositionalEncoding")
        self.backend = "tcnn" if tcnn else "torch"
        self._tcnn = (tcnn.Encoding(in_dim, {"otype": "Frequency", "n_frequencies": n_freqs}, dtype=torch.float32)
                      if tcnn else None)

    def encode_torch(self, x: torch.Tensor) -> torch.Tensor:
        arg = x[..., :, None] * self.freqs  # (..., d, F)
        sc = torch.stack([torch.sin(arg), torch.cos(arg)], dim=-1)  # (..., d, F, 2)
        return sc.flatten(-3)  # (..., d * F * 2)

    def forward(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., d); cov (..., d, d) (broadcast over x) or None: the expected encoding of x ~ N(x, cov) (see the
        module doc). Each sinusoid reads one axis, so only the variances (the diagonal of ``cov``) matter."""
        if self._tcnn is not None:
            enc = self._tcnn(x.reshape(-1, self.in_dim)).float().reshape(*x.shape[:-1], -1)
        else:
            enc = self.encode_torch(x)
        if cov is not None:
            var = torch.diagonal(cov, dim1=-2, dim2=-1)[..., :, None] * self.freqs**2  # (..., d, F)
            enc = (enc.unflatten(-1, (self.in_dim, self.n_freqs, 2)) * torch.exp(-0.5 * var)[..., None]).flatten(-3)
        return torch.cat([x, enc], dim=-1) if self.include_input else enc

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, n_freqs={self.n_freqs}, out_dim={self.out_dim}, backend={self.backend}"


# Real spherical harmonics Y_lm of a unit vector (x, y, z), orthonormal on the sphere, in the order and sign
# convention of tiny-cuda-nn / instant-ngp (l = 0..4, m = -l..l). Each entry: (polynomial, constant).
def _sh_terms(x, y, z):
    xx, yy, zz = x * x, y * y, z * z
    xy, yz, xz = x * y, y * z, x * z
    return [
        # l = 0
        0.28209479177387814 * torch.ones_like(x),
        # l = 1
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        # l = 2
        1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * zz - 0.31539156525251999,
        -1.0925484305920792 * xz, 0.54627421529603959 * (xx - yy),
        # l = 3
        0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
        0.59004358992664352 * x * (-xx + 3.0 * yy),
        # l = 4
        2.5033429417967046 * xy * (xx - yy), 1.7701307697799304 * yz * (-3.0 * xx + yy),
        0.94617469575756008 * xy * (7.0 * zz - 1.0), 0.66904654355728921 * yz * (3.0 - 7.0 * zz),
        0.10578554691520431 * (-30.0 * zz + 35.0 * zz * zz + 3.0), 0.66904654355728921 * xz * (3.0 - 7.0 * zz),
        0.47308734787878004 * (xx - yy) * (7.0 * zz - 1.0), 1.7701307697799304 * xz * (-xx + 3.0 * yy),
        0.62583573544917614 * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy)),
    ]


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics of unit directions, all degrees l = 0..degree (degree <= 4): out_dim = (degree+1)^2.

    Directions are normalized inside. With ``backend="tcnn"`` tiny-cuda-nn's "SphericalHarmonics" encoding is used
    (its "degree" counts bands, i.e. degree + 1 here; it takes directions mapped to [0, 1]).
    Shapes: dirs (..., 3) -> (..., (degree+1)^2).
    """

    def __init__(self, degree: int = 3, backend: str = "torch"):
        super().__init__()
        if not 0 <= degree <= 4:
            raise ValueError(f"spherical harmonics degree must be in 0..4, got {degree}")
        self.in_dim, self.degree = 3, degree
        self.out_dim = (degree + 1) ** 2
        tcnn = _tcnn_or_none(backend, "SphericalHarmonics")
        self.backend = "tcnn" if tcnn else "torch"
        self._tcnn = (tcnn.Encoding(3, {"otype": "SphericalHarmonics", "degree": degree + 1}, dtype=torch.float32)
                      if tcnn else None)

    def encode_torch(self, d: torch.Tensor) -> torch.Tensor:
        d = torch.nn.functional.normalize(d, dim=-1)
        terms = _sh_terms(d[..., 0], d[..., 1], d[..., 2])[: self.out_dim]
        return torch.stack(terms, dim=-1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        if self._tcnn is not None:
            d = torch.nn.functional.normalize(d, dim=-1)
            return self._tcnn(((d + 1) / 2).reshape(-1, 3)).float().reshape(*d.shape[:-1], self.out_dim)
        return self.encode_torch(d)

    def extra_repr(self) -> str:
        return f"degree={self.degree}, out_dim={self.out_dim}, backend={self.backend}"


def make_encoding(kind: str, in_dim: int, *, m: int = 256, sigma: float = 10.0, trainable: bool = False,
                  n_freqs: int = 10, include_input: bool = False, degree: int = 3, backend: str = "torch",
                  generator: torch.Generator | None = None) -> nn.Module:
    """Build an encoding by name (see ``ENCODINGS``); options that do not apply to ``kind`` are ignored."""
    if kind == "fourier":
        return GaussianFourierFeatures(in_dim, m, sigma, trainable, include_input, generator)
    if kind == "pe":
        return PositionalEncoding(in_dim, n_freqs, include_input, backend)
    if kind == "sh":
        if in_dim != 3:
            raise ValueError("spherical harmonics take 3D directions")
        return SphericalHarmonics(degree, backend)
    if kind == "identity":
        return Identity(in_dim)
    raise ValueError(f"unknown encoding {kind!r}; expected one of {', '.join(ENCODINGS)}")

"""Input encodings. Each is an ``nn.Module`` mapping (..., in_dim) -> (..., out_dim) and reporting ``out_dim``.

    fourier   Gaussian Fourier features (Tancik et al. 2020): [sin(2 pi x B^T), cos(2 pi x B^T)], B ~ N(0, sigma^2)
    pe        NeRF positional encoding (Mildenhall et al. 2020, eq. 4): sin/cos(2^k pi x), k = 0 .. n_freqs-1
    sh        real spherical harmonics of a unit direction, degrees l = 0 .. degree (degree <= 4)
    hashgrid  multiresolution hash encoding (Mueller et al. 2022, instant-ngp): trainable feature tables at L grid
              resolutions, trilinearly interpolated at x in [0, 1]^d; coarse levels dense, fine ones hashed
    identity  x itself

Both sinusoidal encodings also take a covariance: ``enc(x, cov)`` is the expected encoding of a Gaussian
x ~ N(mean, cov) (the integrated positional encoding of mip-NeRF, Barron et al. 2021), exact in closed form:
E[sin(w.x)] = sin(w.mean) exp(-w^T cov w / 2), and the same for cos. Each sinusoid is damped by how far its
phase spreads over the Gaussian, so a frequency finer than a sample's footprint fades instead of aliasing.

Positional encoding, spherical harmonics and the hash grid can run through tiny-cuda-nn (``backend="tcnn"``) when it is
importable on a CUDA machine; they fall back to torch with one warning otherwise. The torch versions use
tiny-cuda-nn's output layout, so the two are interchangeable.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .errors import RwfWarning

ENCODINGS = ("fourier", "pe", "sh", "hashgrid", "identity")


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
    warnings.warn(f"{what}: backend='tcnn' unavailable: {reason}; using the torch implementation", RwfWarning,
                  stacklevel=3)
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

    def _apply(self, fn, recurse: bool = True):
        """``.half()`` / ``.to(torch.bfloat16)`` leave a fixed B in float32: 8 bits of mantissa put the phase of a
        feature of 20 cycles off by up to half a turn (the features are computed in float32 anyway)."""
        b = self.B
        super()._apply(fn, recurse)
        if not isinstance(b, nn.Parameter) and self.B.dtype in (torch.float16, torch.bfloat16):
            self.B = b.to(device=self.B.device, dtype=torch.promote_types(b.dtype, torch.float32))
        return self

    def forward(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., d); cov (..., d, d) (broadcast over x) or None: the expected features of x ~ N(x, cov) (see the
        module doc).

        Computed in float32 (or float64) also under autocast: a bfloat16 product x B^T (8 bits of mantissa) puts
        the phase of a feature of 20 cycles off by up to half a turn."""
        x_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 kept
            x, b = x.to(dtype), self.B.to(dtype)
            if cov is None and not (torch.is_grad_enabled() and (x.requires_grad or b.requires_grad)) \
                    and not _transformed(x):
                return _as_input(self._features_into_place(x, b), x_dtype)
            proj = (2 * math.pi) * (x @ b.T)  # (..., m)
            parts = [x] if self.include_input else []
            sin, cos = torch.sin(proj), torch.cos(proj)
            if cov is not None:
                outer = (b[:, :, None] * b[:, None, :]).flatten(1)  # (m, d*d): w^T cov w as one product
                var = (2 * math.pi) ** 2 * (cov.to(dtype).flatten(-2) @ outer.T)  # (..., m): each phase's variance
                damp = torch.exp(-0.5 * var)
                sin, cos = sin * damp, cos * damp
            return _as_input(torch.cat(parts + [sin, cos], dim=-1), x_dtype)

    def _features_into_place(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The features without autograd (rendering, grid updates, mesh export, training samples whose positions
        need no gradient): sin and cos written into one output, no concatenation; the same floats as forward's
        (a 262k-point density pass 0.86x the time)."""
        proj = x @ b.T  # (..., m)
        proj.mul_(2 * math.pi)
        k = x.shape[-1] if self.include_input else 0
        out = proj.new_empty(*proj.shape[:-1], k + 2 * self.m)
        if k:
            out[..., :k] = x
        torch.sin(proj, out=out[..., k:k + self.m])
        torch.cos(proj, out=out[..., k + self.m:])
        return out

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

    def _freqs_like(self, x: torch.Tensor) -> torch.Tensor:
        """The frequencies 2^k pi in x's precision: the float32 buffer would round pi for a float64 x, and after
        ``.double()`` it holds those rounded values in float64 (kept for the checkpoints that hold it)."""
        if x.dtype == torch.float32 and self.freqs.dtype == torch.float32:
            return self.freqs
        return math.pi * 2.0 ** torch.arange(self.n_freqs, dtype=x.dtype, device=x.device)

    def encode_torch(self, x: torch.Tensor) -> torch.Tensor:
        arg = x[..., :, None] * self._freqs_like(x)  # (..., d, F)
        sc = torch.stack([torch.sin(arg), torch.cos(arg)], dim=-1)  # (..., d, F, 2)
        return sc.flatten(-3)  # (..., d * F * 2)

    def forward(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., d); cov (..., d, d) (broadcast over x) or None: the expected encoding of x ~ N(x, cov) (see the
        module doc). Each sinusoid reads one axis, so only the variances (the diagonal of ``cov``) matter."""
        x_dtype = x.dtype
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # a half input's phases: float32 (as the Fourier's)
        if self._tcnn is not None:
            enc = self._tcnn(x.reshape(-1, self.in_dim)).float().reshape(*x.shape[:-1], -1)
        else:
            enc = self.encode_torch(x)
        if cov is not None:
            cov = cov.to(x.dtype)
            var = torch.diagonal(cov, dim1=-2, dim2=-1)[..., :, None] * self._freqs_like(cov)**2  # (..., d, F)
            enc = (enc.unflatten(-1, (self.in_dim, self.n_freqs, 2)) * torch.exp(-0.5 * var)[..., None]).flatten(-3)
        return _as_input(torch.cat([x, enc], dim=-1) if self.include_input else enc, x_dtype)

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

    @staticmethod
    def _check(d: torch.Tensor) -> None:
        if d.dim() < 1 or d.shape[-1] != 3:  # another size was normalized whole and read by its first 3 entries
            raise ValueError(f"spherical harmonics take 3-D directions (..., 3), got shape {tuple(d.shape)}")

    def encode_torch(self, d: torch.Tensor) -> torch.Tensor:
        self._check(d)
        d = torch.nn.functional.normalize(d, dim=-1)
        terms = _sh_terms(d[..., 0], d[..., 1], d[..., 2])[: self.out_dim]
        return torch.stack(terms, dim=-1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        if self._tcnn is not None:
            self._check(d)
            d = torch.nn.functional.normalize(d, dim=-1)
            return self._tcnn(((d + 1) / 2).reshape(-1, 3)).float().reshape(*d.shape[:-1], self.out_dim)
        return self.encode_torch(d)

    def extra_repr(self) -> str:
        return f"degree={self.degree}, out_dim={self.out_dim}, backend={self.backend}"


# Hash primes of instant-ngp / tiny-cuda-nn (the first is 1, so the first axis stays coherent in memory).
_HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)


class HashGrid(nn.Module):
    """Multiresolution hash encoding (Mueller et al. 2022): L levels of trainable features, interpolated.

    Level l has grid scale s_l = base_res * b^l - 1, with b such that the last level has max_res (tiny-cuda-nn's
    ``per_level_scale``), and (ceil(s_l) + 1)^d vertices. A level with at most 2^log2_size vertices stores one
    feature vector per vertex (dense, no collisions); a finer one hashes its vertices into 2^log2_size entries
    (xor of coordinate x prime). A point x in [0, 1]^d reads the 2^d vertices around x s_l + 0.5 and interpolates
    them (d-linear). Outputs are level-major: [level 0 features, level 1 features, ...], as tiny-cuda-nn's.

    The table is one parameter, (sum of the levels' sizes, level_features), in tiny-cuda-nn's parameter order, drawn
    from U(-1e-4, 1e-4). The tables cover [origin, origin + 1]^d; x - origin is clamped to [0, 1]^d. On a CPU the
    lookup runs in the compiled kernel of :mod:`rwf_render.raymarch` when it is available and x needs no gradient;
    otherwise in torch (the reference). With ``backend="tcnn"`` tiny-cuda-nn's HashGrid runs instead (CUDA only).

    Shapes: x (..., d) -> (..., levels * level_features).
    """

    def __init__(self, in_dim: int, levels: int = 16, level_features: int = 2, log2_size: int = 19,
                 base_res: int = 16, max_res: int = 2048, backend: str = "torch", origin: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if not 1 <= in_dim <= len(_HASH_PRIMES):
            raise ValueError(f"hash grid: in_dim must be 1..{len(_HASH_PRIMES)}, got {in_dim}")
        if not 1 <= levels <= 32:
            raise ValueError(f"hash grid: levels must be 1..32, got {levels}")
        if level_features not in (1, 2, 4, 8):
            raise ValueError(f"hash grid: level_features must be 1, 2, 4 or 8, got {level_features}")
        if not 4 <= log2_size <= 26:
            raise ValueError(f"hash grid: log2_size must be 4..26, got {log2_size}")
        if not 2 <= base_res <= max_res:
            raise ValueError(f"hash grid: need 2 <= base_res <= max_res, got {base_res} and {max_res}")
        self.in_dim, self.levels, self.level_features = in_dim, levels, level_features
        self.log2_size, self.base_res, self.max_res, self.origin = log2_size, base_res, max_res, float(origin)
        self.per_level_scale = math.exp(math.log(max_res / base_res) / (levels - 1)) if levels > 1 else 1.0
        log2_b, cap = math.log2(self.per_level_scale), 1 << log2_size
        scales, res, sizes, offsets = [], [], [], [0]
        for lv in range(levels):  # tiny-cuda-nn's grid_scale / grid_resolution / params_in_level, in float32
            s = float(torch.tensor(2.0 ** (lv * log2_b) * base_res - 1.0, dtype=torch.float32))
            r = math.ceil(s) + 1
            size = min(r**in_dim, cap)
            size = (size + 7) // 8 * 8
            scales.append(s), res.append(r), sizes.append(size), offsets.append(offsets[-1] + size)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("resolutions", torch.tensor(res, dtype=torch.int64), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        self.register_buffer("hashed", torch.tensor([r**in_dim > sz for r, sz in zip(res, sizes)]),
                             persistent=False)
        corners = torch.tensor([[(c >> i) & 1 for i in range(in_dim)] for c in range(1 << in_dim)])
        self.register_buffer("corners", corners, persistent=False)  # (2^d, d), bit i of corner c on axis i
        self.register_buffer("primes", torch.tensor(_HASH_PRIMES[:in_dim], dtype=torch.int64), persistent=False)
        self.n_params = offsets[-1]
        table = torch.rand(self.n_params, level_features, generator=generator) * 2e-4 - 1e-4
        self.table = nn.Parameter(table)
        self.out_dim = levels * level_features
        self.position_weights: torch.Tensor | None = None  # (L,) from open_levels; None: every level in full
        tcnn = _tcnn_or_none(backend, "HashGrid")
        self.backend = "tcnn" if tcnn else "torch"
        self._tcnn = None
        if tcnn:
            # tiny-cuda-nn's module owns a flat parameter of its own; it is dropped, and each call hands the module
            # a flat view of ``table`` instead, so a grid keeps one (n_params, F) parameter on either backend: the
            # same state dict (a checkpoint loads into either) and the torch paths (open_levels, torch.func) work.
            self._tcnn = tcnn.Encoding(in_dim, self.tcnn_config(), dtype=torch.float32)
            if self._tcnn.params.numel() != self.table.numel():
                raise ValueError(f"hash grid: tiny-cuda-nn's table has {self._tcnn.params.numel()} values, this "
                                 f"layout {self.table.numel()}; use backend='torch'")
            del self._tcnn.params

    def tcnn_config(self) -> dict:
        return {"otype": "HashGrid", "n_levels": self.levels, "n_features_per_level": self.level_features,
                "log2_hashmap_size": self.log2_size, "base_resolution": self.base_res,
                "per_level_scale": self.per_level_scale}

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows and weights of the 2^d vertices around each point, per level: (N, L, 2^d) int64 and float."""
        pos = x[:, None, :] * self.scales[:, None] + 0.5  # (N, L, d)
        cell = torch.floor(pos)
        frac = pos - cell
        if self.position_weights is not None and frac.requires_grad:  # same value, each level's d/dx scaled
            frac = frac.detach() + self.position_weights[:, None] * (frac - frac.detach())
        vert = cell.long()[:, :, None, :] + self.corners  # (N, L, 2^d, d)
        stride = self.resolutions[:, None] ** torch.arange(self.in_dim, device=x.device)  # (L, d)
        dense = (vert * stride[:, None, :]).sum(-1)  # (N, L, 2^d)
        hashed = vert[..., 0] * self.primes[0]
        for i in range(1, self.in_dim):
            hashed = hashed ^ (vert[..., i] * self.primes[i])
        hashed = hashed & 0xFFFFFFFF  # tiny-cuda-nn hashes in uint32
        index = torch.where(self.hashed[:, None], hashed, dense) % self.sizes[:, None] + self.offsets[:, None]
        w = torch.where(self.corners.bool(), frac[:, :, None, :], 1.0 - frac[:, :, None, :]).prod(-1)
        return index, w

    def encode_torch(self, x: torch.Tensor) -> torch.Tensor:
        """The reference: (N, d) in [0, 1] -> (N, L * F), differentiable in the table and in x."""
        index, w = self.lookup(x)
        feats = (self.table[index] * w[..., None]).sum(2)  # (N, L, F)
        return feats.flatten(1)

    def open_levels(self, alpha: float | None) -> None:
        """A coarse-to-fine schedule on the levels' gradient with respect to x, the one that reaches camera poses
        (BARF's window, Lin et al. 2021, applied as Heo et al. 2023 do on hash grids): level 0 always counts, level
        l >= 1 is weighted by (1 - cos(pi clamp(alpha - l + 1, 0, 1))) / 2, so ``alpha`` = 0 lets only the
        coarsest level move x and ``alpha`` >= levels - 1 (or None, the default) every level in full.

        The encoding's value and its table's gradient stay whole: the field learns at every level from the start.
        (BARF's own form, scaling the outputs, blurred the field itself, and the blurred field pulled exact cameras
        off by 0.21 degrees: BENCHMARKS.md.) A weighted x-gradient runs in torch (the compiled lookup and
        tiny-cuda-nn give no per-level d/dx)."""
        self.position_weights = None
        if alpha is None or alpha >= self.levels - 1:
            return
        t = (float(alpha) - torch.arange(self.levels, dtype=torch.float32) + 1.0).clamp(0.0, 1.0)
        w = ((1.0 - torch.cos(math.pi * t)) / 2.0).to(self.scales.device)
        w[0] = 1.0
        self.position_weights = w

    def forward(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., d); ``cov`` is not supported (an integrated hash encoding is not defined here)."""
        if cov is not None:
            raise ValueError("the hash grid encoding does not integrate over a footprint (mip); use fourier or pe")
        lead = x.shape[:-1]
        with torch.autocast(x.device.type, enabled=False):
            flat = (x.reshape(-1, self.in_dim).float() - self.origin).clamp(0.0, 1.0)
            if (self.position_weights is not None and flat.requires_grad) or _transformed(flat):
                out = self.encode_torch(flat)
            elif self._tcnn is not None:
                self._tcnn.params = self.table.reshape(-1)  # read by tiny-cuda-nn's forward; gradients reach table
                try:
                    out = self._tcnn(flat).float()
                finally:  # not left on the module: a non-leaf tensor there broke copy.deepcopy (viewer snapshots)
                    del self._tcnn.params
            else:
                out = _hashgrid_kernel(self, flat)
                if out is None:
                    out = self.encode_torch(flat)
        return _as_input(out.reshape(*lead, self.out_dim), x.dtype)

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, origin={self.origin:g}, levels={self.levels}, "
                f"level_features={self.level_features}, "
                f"log2_size={self.log2_size}, base_res={self.base_res}, max_res={self.max_res}, "
                f"params={self.n_params * self.level_features}, backend={self.backend}")


def _as_input(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An encoding computed in float32 for accuracy, back in a half-precision input's dtype (the MLP of a
    ``.half()`` or bfloat16 model takes that; float32 features failed its first product)."""
    return out.to(dtype) if dtype in (torch.float16, torch.bfloat16) else out


def _transformed(x: torch.Tensor) -> bool:
    """Whether ``x`` is seen through torch.func (vmap, grad, jvp), forward-mode AD or a trace: the compiled
    lookup (an autograd Function with no vmap or jvp rule) fails there, the torch lookup works."""
    import torch.autograd.forward_ad as fwad  # noqa: PLC0415

    functorch = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return (torch.jit.is_tracing() or (functorch is not None and functorch(x))
            or fwad.unpack_dual(x).tangent is not None)


def _hashgrid_kernel(enc: HashGrid, x: torch.Tensor) -> torch.Tensor | None:
    """The compiled CPU lookup, or None where it does not apply (GPU tensors, x needing a gradient, no kernel)."""
    if x.device.type != "cpu" or x.requires_grad or enc.table.dtype != torch.float32:
        return None
    from .raymarch import _backend  # noqa: PLC0415  (loads the compiled extension on first use)

    ext = _backend.load("cpu")
    if ext is None or not hasattr(ext, "hashgrid_forward"):
        return None
    return _HashGridFn.apply(enc.table, x.contiguous(), enc, ext)


class _HashGridFn(torch.autograd.Function):
    """Table -> features through the compiled kernel; the backward scatters into the table's gradient."""

    @staticmethod
    def forward(ctx, table, x, enc, ext):
        ctx.save_for_backward(x)
        ctx.enc, ctx.ext = enc, ext
        return ext.hashgrid_forward(x, table.contiguous(), enc.scales, enc.resolutions, enc.sizes, enc.offsets,
                                    enc.hashed.to(torch.uint8), torch.get_num_threads())

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        enc = ctx.enc
        g_table = ctx.ext.hashgrid_backward(x, grad.contiguous().float(), enc.n_params, enc.level_features,
                                            enc.scales, enc.resolutions, enc.sizes, enc.offsets,
                                            enc.hashed.to(torch.uint8), torch.get_num_threads())
        return g_table, None, None, None


def make_encoding(kind: str, in_dim: int, *, m: int = 256, sigma: float = 10.0, trainable: bool = False,
                  n_freqs: int = 10, include_input: bool = False, degree: int = 3, backend: str = "torch",
                  levels: int = 16, level_features: int = 2, log2_size: int = 19, base_res: int = 16,
                  max_res: int = 2048, origin: float = 0.0, generator: torch.Generator | None = None) -> nn.Module:
    """Build an encoding by name (see ``ENCODINGS``); options that do not apply to ``kind`` are ignored."""
    if kind == "hashgrid":
        return HashGrid(in_dim, levels, level_features, log2_size, base_res, max_res, backend, origin, generator)
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

"""Lens distortion in normalized image coordinates: the OPENCV and OPENCV_FISHEYE models of ``cameras`` (their
formulas are written down there), their inversion, and the test that a lens has one ray for every pixel of its
image (``cameras.check_lenses`` calls it).

The fisheye is also handled by angle (:func:`fisheye_directions`, :func:`fisheye_distort_dirs`): its rays are built
from theta, the angle from the optical axis, never through X / Z, so lenses seeing up to 180 degrees off axis (a
field of view up to 360 degrees) have rays and projections.

Models are given as indices (0 PINHOLE, 1 OPENCV, 2 OPENCV_FISHEYE) and ``dist`` as (k1, k2, k3, k4, p1, p2).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _t(x, dtype=None, device=None) -> torch.Tensor:
    """Tensor from a tensor, numpy array or number (numpy float64 stays float64)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    x = torch.as_tensor(np.asarray(x))
    return x.to(dtype=dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype()), device=device)


def distort(xy: torch.Tensor, model: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Apply lens distortion to normalized OpenCV image coordinates.

    Args:
        xy: (..., 2) undistorted (X / Z, Y / Z).
        model: (...) int64 model indices (broadcastable to xy[..., 0]).
        dist: (..., 6) distortion (k1, k2, k3, k4, p1, p2), broadcastable.
    Returns:
        (..., 2) distorted coordinates; PINHOLE entries are returned unchanged.
    """
    xy = _t(xy)
    dist, model = _t(dist, xy.dtype, xy.device), _t(model, torch.long, xy.device)
    out = xy
    if not bool((model != 0).any()):
        return out
    k1, k2, k3, k4, p1, p2 = dist.unbind(-1)
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    model = model[..., None]
    if bool((model == 1).any()):
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        cv = torch.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                          y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], -1)
        out = torch.where(model == 1, cv, out)
    if bool((model == 2).any()):
        r = torch.sqrt(r2)
        theta = torch.atan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        ratio = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))  # -> 1 as r -> 0
        out = torch.where(model == 2, xy * ratio[..., None], out)
    return out


def undistort(xy_d: torch.Tensor, model: torch.Tensor, dist: torch.Tensor, iters: int = 20,
              turn: torch.Tensor | None = None) -> torch.Tensor:
    """Invert :func:`distort` by Newton iterations.

    OPENCV: the radius first, r (1 + k1 r^2 + ... + k4 r^8) = |xy_d| by Newton steps kept between the axis and
    the radius where that polynomial first stops rising (:func:`_radial_turn`; COLMAP's inverse lies on that rising
    stretch: beyond it a second root reprojects to the same pixel); then 2-D Newton on ``distort(xy) = xy_d`` with
    the analytic Jacobian from there, each step halved until the residual shrinks (tangential terms; where that
    stalls, the tangential terms are brought in by quarters from the radial solution).
    OPENCV_FISHEYE: 1-D Newton on ``theta_d(theta) = |xy_d|`` (:func:`fisheye_theta`), then r = tan(theta), short of
    90 degrees (X / Z ends there; rays by angle: :func:`fisheye_directions`).
    Valid inside the region where the distortion is monotonic (the usable image of a calibrated lens).

    Args:
        xy_d: (..., 2) distorted normalized coordinates; model: (...); dist: (..., 6) as in :func:`distort`.
        turn: (...) each point's lens's :func:`_radial_turn` when the caller has it (once per camera: rays of many
            cameras otherwise find the distinct lenses among all their rows, a sort of the whole batch).
    Returns:
        (..., 2) undistorted coordinates.
    """
    xy_d = _t(xy_d)
    dist, model = _t(dist, xy_d.dtype, xy_d.device), _t(model, torch.long, xy_d.device)
    model = torch.broadcast_to(model, xy_d.shape[:-1])
    out = xy_d
    if not bool((model != 0).any()):
        return out
    k1, k2, k3, k4, p1, p2 = torch.broadcast_to(dist, (*xy_d.shape[:-1], 6)).unbind(-1)
    if bool((model == 1).any()):  # OPENCV
        xy = _undistort_opencv(xy_d, k1, k2, k3, k4, p1, p2, iters, turn)
        out = torch.where((model == 1)[..., None], xy, out)
    if bool((model == 2).any()):  # OPENCV_FISHEYE: X / Z exists only short of 90 degrees off axis
        rd = xy_d.norm(dim=-1)
        theta = fisheye_theta(rd, torch.stack([k1, k2, k3, k4], -1), iters).clamp(max=math.pi / 2 - 1e-6)
        ratio = torch.where(rd > 1e-12, torch.tan(theta) / rd.clamp_min(1e-12), torch.ones_like(rd))
        out = torch.where((model == 2)[..., None], xy_d * ratio[..., None], out)
    return out


def _radial_turn(k: torch.Tensor) -> torch.Tensor:
    """The smallest r > 0 where r (1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8) stops rising (its derivative
    1 + 3 k1 s + 5 k2 s^2 + 7 k3 s^3 + 9 k4 s^4, s = r^2, reaches 0), inf where it never does: (...) for k (..., 4).
    The roots are found once per distinct lens (a batch of rays holds a few)."""
    flat = k.detach().reshape(-1, 4).double().cpu()
    if len(flat) and bool((flat == flat[0]).all()):  # one lens (the usual batch): no sort
        lenses, which = flat[:1], torch.zeros(len(flat), dtype=torch.long)
    else:
        lenses, which = torch.unique(flat, dim=0, return_inverse=True)
    turns = []
    for k1, k2, k3, k4 in lenses.tolist():
        roots = np.roots([9 * k4, 7 * k3, 5 * k2, 3 * k1, 1.0])  # in s; leading zeros are dropped
        s = [z.real for z in roots if abs(z.imag) <= 1e-9 * max(1.0, abs(z)) and z.real > 0]
        turns.append(math.sqrt(min(s)) if s else math.inf)
    return torch.tensor(turns, dtype=k.dtype, device=k.device)[which.to(k.device)].reshape(k.shape[:-1])


def _undistort_opencv(xy_d, k1, k2, k3, k4, p1, p2, iters: int, turn=None) -> torch.Tensor:
    """:func:`undistort` of the OPENCV model (see there)."""
    rd = xy_d.norm(dim=-1)
    tol = 8 * torch.finfo(rd.dtype).eps
    if turn is None:
        turn = _radial_turn(torch.stack([k1, k2, k3, k4], -1))
    lo, hi = torch.zeros_like(rd), torch.broadcast_to(turn.to(device=rd.device, dtype=rd.dtype), rd.shape).clone()
    r = torch.where(rd < hi, rd, 0.5 * hi)  # a start on the rising stretch (the turn is finite there)

    def radial(r):
        s = r * r
        return (r * (1 + s * (k1 + s * (k2 + s * (k3 + s * k4)))) - rd,
                1 + s * (3 * k1 + s * (5 * k2 + s * (7 * k3 + s * 9 * k4))))
    r = _safe_newton(radial, r, lo, hi, max(iters, 60), tol * (1 + rd))
    xy = xy_d * torch.where(rd > 0, r / rd.clamp_min(torch.finfo(rd.dtype).tiny), torch.ones_like(rd))[..., None]
    if not bool(((p1 != 0) | (p2 != 0)).any()):
        return xy
    radial_xy = xy
    xy, f = _polish(radial_xy, xy_d, k1, k2, k3, k4, p1, p2, iters, tol * (1 + rd))
    stuck = f.norm(dim=-1) > 1e3 * tol * (1 + rd)
    if bool(stuck.any()):
        # strong tangential terms: from the radial solution the Newton steps can stall in a valley (an accepted
        # lens with p1 = -0.8 left a pixel 17.6 px off); there the tangential terms are brought in by quarters,
        # each solve starting from the last (a homotopy), and the better of the two answers kept
        i = stuck.nonzero(as_tuple=True)
        sub = [v[i] for v in (xy_d, k1, k2, k3, k4, p1, p2, rd)]
        cont = radial_xy[i]
        for t in (0.25, 0.5, 0.75, 1.0):
            cont, f_cont = _polish(cont, sub[0], *sub[1:5], t * sub[5], t * sub[6], iters, tol * (1 + sub[7]))
        better = (f_cont.norm(dim=-1) < f[i].norm(dim=-1))[..., None]
        xy = xy.index_put(i, torch.where(better, cont, xy[i]))
    return xy


def _polish(xy, xy_d, k1, k2, k3, k4, p1, p2, iters: int, tol):
    """2-D Newton on the OPENCV model's ``distort(xy) = xy_d`` from ``xy``, each step halved until the residual
    shrinks; (xy, residual) where every point stopped (its residual under ``tol``, or ``iters`` steps)."""

    def residual(xy):
        x, y = xy.unbind(-1)
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        return torch.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xy_d[..., 0],
                            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - xy_d[..., 1]], -1)

    f = residual(xy)
    for _ in range(iters):  # each step halved until the residual shrinks
        norm = f.norm(dim=-1)
        live = norm > tol
        if not bool(live.any()):
            break
        x, y = xy.unbind(-1)
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        d_radial = k1 + r2 * (2 * k2 + r2 * (3 * k3 + r2 * 4 * k4))  # d radial / d r2
        j11 = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
        j12 = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y  # = j21
        j22 = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
        det = j11 * j22 - j12 * j12
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        delta = torch.stack([(j22 * f[..., 0] - j12 * f[..., 1]) / det, (j11 * f[..., 1] - j12 * f[..., 0]) / det], -1)
        t = torch.ones_like(norm)
        cand = xy - delta
        f_cand = residual(cand)
        for _ in range(12):
            worse = live & ~(f_cand.norm(dim=-1) < norm)
            if not bool(worse.any()):
                break
            t = torch.where(worse, 0.5 * t, t)
            cand = xy - t[..., None] * delta
            f_cand = residual(cand)
        better = (f_cand.norm(dim=-1) < norm)[..., None]
        xy, f = torch.where(better, cand, xy), torch.where(better, f_cand, f)
    return xy, f


# ----------------------------------------------------------------------------------------------- fisheye by angle
def fisheye_theta_d(theta: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The fisheye's distorted radius theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8).

    Args:
        theta: (...) angles from the optical axis (radians); k: (..., 4) (k1, k2, k3, k4), broadcastable.
    """
    k1, k2, k3, k4 = k.unbind(-1)
    t2 = theta * theta
    return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))


def fisheye_theta(theta_d: torch.Tensor, k: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """Invert :func:`fisheye_theta_d` for theta in [0, pi]: Newton steps kept inside a bracket [lo, hi] that
    every evaluation narrows (a step leaving it, or a non-positive slope, bisects instead), so it converges
    wherever theta_d increases from the axis to the root; a radius beyond theta_d(pi) gives pi.

    Args:
        theta_d: (...) distorted radii |(xd, yd)| >= 0; k: (..., 4) (k1, k2, k3, k4), broadcastable.
    Returns:
        (...) theta in [0, pi].
    """
    k1, k2, k3, k4 = k.unbind(-1)
    lo, hi = torch.zeros_like(theta_d), torch.full_like(theta_d, math.pi)

    def distorted(theta):
        t2 = theta * theta
        return (theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d,
                1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4))))
    tol = 8 * torch.finfo(theta_d.dtype).eps * (1 + theta_d)
    return _safe_newton(distorted, theta_d.clamp(0, math.pi), lo, hi, iters, tol)


def _safe_newton(fn, x, lo, hi, iters: int, tol):
    """A root of ``fn`` (x -> (f, df/dx), f rising through its root) in [lo, hi] elementwise, from ``x``: Newton
    steps inside a bracket that every evaluation narrows, bisecting instead when a step would leave it, the slope is
    not positive, or the step is not under half the one before last (Numerical Recipes' rtsafe: plain bracketed
    Newton can bounce between two points for ever, 60 px off on a pincushion lens). ``hi`` may be infinite (a lens
    without a turning point: Newton alone). ``tol``: where |f| is below it x stays (a rounding-sized residual after
    a zero step would bisect away from the root); the loop stops once every |f| is (checked every 4 steps)."""
    dx_old = dx = hi - lo
    for i in range(iters):
        f, df = fn(x)
        live = f.abs() > tol
        if i % 4 == 3 and not bool(live.any()):
            break
        lo, hi = torch.where(f < 0, x, lo), torch.where(f > 0, x, hi)
        step = x - f / torch.where(df > 0, df, torch.ones_like(df))
        ok = (df > 0) & (step >= lo) & (step <= hi) & ~(2 * f.abs() > (dx_old * df).abs())  # False for NaN too
        new = torch.where(ok, step, torch.where(torch.isfinite(hi), 0.5 * (lo + hi), step))
        new = torch.where(live, new, x)
        dx_old, dx, x = dx, (new - x).abs(), new
    return x


def fisheye_directions(xy_d: torch.Tensor, dist: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """Unit ray directions in the OpenCV camera frame (x right, y down, z forward) of distorted fisheye
    coordinates: theta from :func:`fisheye_theta`, then (sin(theta) xd / rd, sin(theta) yd / rd, cos(theta)) with
    rd = |(xd, yd)|; theta may exceed 90 degrees (z < 0).

    Args:
        xy_d: (..., 2) distorted normalized coordinates ((u - cx) / fx, (v - cy) / fy); dist: (..., 6).
    Returns:
        (..., 3) unit directions.
    """
    rd = xy_d.norm(dim=-1)
    theta = fisheye_theta(rd, dist[..., :4], iters)
    s = torch.where(rd > 1e-12, torch.sin(theta) / rd.clamp_min(1e-12), torch.ones_like(rd))
    return torch.cat([xy_d * s[..., None], torch.cos(theta)[..., None]], -1)


def fisheye_distort_dirs(p_cv: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Distorted fisheye coordinates (xd, yd) of OpenCV camera-frame points or directions (X, Y, Z) anywhere
    around the camera: theta = atan2(|(X, Y)|, Z) in [0, pi], then theta_d(theta) (X, Y) / |(X, Y)|. A point
    straight behind (X = Y = 0, Z < 0) is at theta = pi in every direction; (theta_d(pi), 0) is returned for it.

    Args:
        p_cv: (..., 3); dist: (..., 6), broadcastable.
    Returns:
        (..., 2).
    """
    X, Y, Z = p_cv.unbind(-1)
    r = torch.hypot(X, Y)
    theta_d = fisheye_theta_d(torch.atan2(r, Z), dist[..., :4])
    axis = r <= 1e-300
    unit = torch.stack([torch.where(axis, torch.ones_like(X), X), torch.where(axis, torch.zeros_like(Y), Y)], -1)
    return unit / torch.where(axis, torch.ones_like(r), r)[..., None] * theta_d[..., None]


def _border_pixels(width: torch.Tensor, height: torch.Tensor, per_side: int = 64) -> torch.Tensor:
    """(L, 4 * per_side, 2) float64 positions along the border of L images through their outermost pixel centres
    (corners included), per_side evenly spaced on each side."""
    t = torch.linspace(0, 1, per_side, dtype=torch.float64)
    u = 0.5 + t * (width.double()[:, None] - 1)  # (L, per_side)
    v = 0.5 + t * (height.double()[:, None] - 1)
    w, h = width.double()[:, None].expand_as(u) - 0.5, height.double()[:, None].expand_as(v) - 0.5
    return torch.cat([torch.stack([u, torch.full_like(u, 0.5)], -1), torch.stack([u, h], -1),
                      torch.stack([torch.full_like(v, 0.5), v], -1), torch.stack([w, v], -1)], 1)


def lens_problems(cams) -> list[str | None]:
    """Why each of L distorted lenses (all OPENCV or OPENCV_FISHEYE) has no ray for some of its pixels, or None.

    At the border pixels, in float64 and in float32 (the training precision), the inversion (:func:`undistort`;
    :func:`fisheye_theta` for the fisheye) must give finite values that distort back to the pixel (within 0.05
    pixel). The distortion must be monotonic between the optical axis and those pixels (OPENCV: positive Jacobian
    determinant and trace along each ray; OPENCV_FISHEYE: theta_d increasing in theta up to the angle the border
    needs), as otherwise two directions share a pixel and the inversion may pick either; and a fisheye's border must
    need no angle beyond 180 degrees off axis (theta_d(pi) at least its largest radius).
    """
    pix = _border_pixels(cams.width, cams.height)  # (L, P, 2)
    f = torch.stack([cams.fx, cams.fy], -1).double()[:, None]
    xy_d = (pix - torch.stack([cams.cx, cams.cy], -1).double()[:, None]) / f
    model, dist = cams.model[:, None], cams.dist.double()[:, None]  # (L, 1), (L, 1, 6)
    fish = cams.model == 2
    why: list[str | None] = [None] * len(cams)

    def flag(bad: torch.Tensor, message) -> None:
        for i in torch.nonzero(bad).flatten().tolist():
            why[i] = why[i] or (message(i) if callable(message) else message)

    fold = "its distortion is not monotonic inside the image (it folds back: some pixels see two directions), " \
           "so its rays are undefined there"
    rd = xy_d.norm(dim=-1)  # (L, P)
    if bool(fish.any()):  # theta_d on a fine grid of [0, pi]: where it stops rising, and what it reaches before
        theta = torch.linspace(0, math.pi, 2049, dtype=torch.float64)
        k = dist[:, :, :4]  # (L, 1, 4)
        k1, k2, k3, k4 = k.unbind(-1)
        t2 = theta * theta
        rising = (1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))) > 0  # (L, S)
        before_fold = torch.cumprod(rising.long(), -1).bool()
        td = fisheye_theta_d(theta, k)
        reach = torch.where(before_fold, td, torch.full_like(td, -math.inf)).amax(-1)  # (L,)
        need = rd.amax(-1)
        flag(fish & ~before_fold[:, -1] & (need >= reach), fold)
        flag(fish & before_fold[:, -1] & (need > td[:, -1]),
             "its image border lies more than 180 degrees from the optical axis (a field of view over 360 degrees), "
             "where the OPENCV_FISHEYE model has no ray")
    past = torch.zeros_like(fish)  # OPENCV: the border lies beyond where r (1 + k1 r^2 + ...) stops rising, and the
    if bool((cams.model == 1).any()):  # polynomial rises again (two directions share those pixels)
        k = dist[:, 0, :4]
        turn = _radial_turn(k)
        t2 = turn * turn
        reach = turn * (1 + t2 * (k[:, 0] + t2 * (k[:, 1] + t2 * (k[:, 2] + t2 * k[:, 3]))))
        lead = torch.tensor([next((c for c in reversed(row) if c != 0), 0.0) for row in k.tolist()],
                            dtype=torch.float64)  # the highest power's coefficient: > 0 rises again
        past = (cams.model == 1) & torch.isfinite(turn) & (lead > 0) & (rd.amax(-1) > reach)
    xy64 = None
    for dtype in (torch.float64, torch.float32):
        xy = undistort(xy_d.to(dtype), model, dist.to(dtype)).double()
        xy64 = xy if xy64 is None else xy64
        back = distort(xy, model, dist)
        if bool(fish.any()):  # the fisheye by angle: theta for each radius, and the radius of that theta
            theta = fisheye_theta(rd.to(dtype), dist[:, :, :4].to(dtype)).double()
            scale = torch.where(rd > 1e-12, fisheye_theta_d(theta, dist[:, :, :4]) / rd.clamp_min(1e-12), 1.0)
            back = torch.where(fish[:, None, None], xy_d * scale[..., None], back)
            xy = torch.where(fish[:, None, None], theta[..., None].expand_as(xy), xy)
        err = ((back - xy_d) * f).norm(dim=-1)
        bad = ~(torch.isfinite(xy).all(-1) & torch.isfinite(err) & (err < 0.05))  # (L, P)
        name = str(dtype).replace("torch.", "")
        flag(past & bad.any(-1), fold)
        flag(bad.any(-1), lambda i, bad=bad, name=name: (
            "its distortion cannot be inverted at pixel ({:g}, {:g}) of the image border (in {}): no ray through "
            "it").format(*pix[i, int(bad[i].nonzero()[0])].tolist(), name))
    k1, k2, k3, k4, p1, p2 = dist[:, :, None].unbind(-1)  # (L, 1, 1) each
    s = torch.linspace(0, 1, 129, dtype=torch.float64)[1:, None]  # (S, 1) steps from the axis to the border
    # OPENCV: the Jacobian of distort() along the segments from the optical axis to the border's rays, (L, S, P)
    safe = torch.nan_to_num(xy64)
    x, y = s * safe[:, None, :, 0], s * safe[:, None, :, 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    d_radial = k1 + r2 * (2 * k2 + r2 * (3 * k3 + r2 * 4 * k4))
    j11 = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
    j12 = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
    j22 = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
    flag((cams.model == 1) & ~((j11 * j22 - j12 * j12 > 0) & (j11 + j22 > 0)).flatten(1).all(-1), fold)
    return why

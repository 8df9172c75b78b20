"""Gaps that a mutation hunt found: for each, a change to one line (a dropped argument, a flipped sign or
comparison, argmax for argmin, a rounding) left every other test passing. Each test here fails on that change.

    export of an occupancy run     the field's inside is above the level: exported as the fit's own mesh.ply
    preview renders                no hit behind a camera inside the box; y up in the image; normals face the camera
    remove_small_components        with no piece above the fraction, the largest one stays
    rwf data downscale / llff      floor(w / K) for an odd size; --factor 1 refused; a near bound of 0 refused
    shape samples                  the near shell's spread is near_sigmas[0]; occupancy has no surface samples;
                                   the remainder of a split never goes to a share of 0
"""

import json
import math
import warnings

import numpy as np
import pytest
import torch
import trimesh

from data_tools.cli import main as data_main
from data_tools.common import load_image, save_image
from data_tools.llff import write_poses_bounds
from rwf_render import cli
from rwf_render.errors import RwfWarning
from rwf_render.mesh import remove_small_components
from rwf_render.shape_samples import draw_samples, split_counts
from rwf_render.spheretrace import FOV, RADIUS, render_field, sphere_trace

R = 0.3  # radius of the spheres of the sampling tests
NORMAL_MEDIAN = 0.6744897501960817  # median of |N(0, 1)|: Phi^-1(0.75)


def ball(center, radius):
    """Exact signed distance of a ball: points (N, 3) -> (N,)."""
    c = torch.tensor(center, dtype=torch.float32)
    return lambda x: (x - c).norm(dim=-1) - radius


class SphereQuery:
    """Closed-form stand-in for ``MeshQuery`` of the sphere of radius R about the origin."""

    @staticmethod
    def signed_distance(points):
        return np.linalg.norm(points, axis=1) - R

    @staticmethod
    def inside(points):
        return np.linalg.norm(points, axis=1) < R


# -- export of an occupancy run ------------------------------------------------------------------------------------
def test_export_of_an_occupancy_run_is_the_fits_own_mesh(tmp_path):
    """``rwf export mesh`` of an occupancy fit (logits, inside above 0) at the fit's --mesh-res extracts the same
    surface as the fit's mesh.ply: equal volumes and bounds (measured: the same 4646 faces, volume 16.68 in the
    trefoil's units) and no capped warning. Extracted with the distance convention (inside below) it was the box
    minus the knot, capped on all six faces: volume 338.1 = 7.079^3 (the box) - 16.68."""
    run = tmp_path / "run"  # --sigma 1: with the default 3 a fit this short left floaters capped at the box faces
    fit = ["fit", "sdf", "--target", "occupancy", "--out", str(run), "--steps", "300", "--pool", "8192",
           "--batch", "1024", "--width", "64", "--features", "32", "--sigma", "1", "--mesh-res", "32",
           "--preview-res", "16", "--eval-points", "4096", "--metric-points", "2000", "--quiet", "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(fit) == 0
    out = tmp_path / "export.ply"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["export", "mesh", str(run), "--res", "32", "--out", str(out), "--quiet"]) == 0
    assert not [w for w in caught if issubclass(w.category, RwfWarning) and "capped" in str(w.message)]
    fitted, exported = (trimesh.load(p, process=False) for p in (run / "mesh.ply", out))
    assert fitted.volume > 0 and exported.is_watertight
    assert exported.volume == pytest.approx(fitted.volume, rel=0.01)
    assert np.allclose(exported.bounds, fitted.bounds, atol=1e-3 * float(np.ptp(fitted.bounds)))


# -- preview renders -----------------------------------------------------------------------------------------------
def test_sphere_trace_from_inside_the_box_sees_nothing_behind_the_camera():
    """A camera at the centre of the unit box looking +z: the ray's box interval starts at t = 0, not at the box
    face behind it (t = -0.5), so a ball centred at z = -0.3 (radius 0.1) is not hit (inf), and one at z = +0.3 is
    hit at t = 0.2 (without the clamp the first was hit at t = -0.4, its side toward the face behind the camera)."""
    o, d = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    assert sphere_trace(ball([0.0, 0.0, -0.3], 0.1), o, d).tolist() == [math.inf]
    assert sphere_trace(ball([0.0, 0.0, 0.3], 0.1), o, d).item() == pytest.approx(0.2, abs=1e-3)


def _ball_above_centre(res=32):
    """render_field of a ball of radius 0.15 at y = +0.25 seen from +z (azimuth 0, elevation 0): image, hit mask."""
    img = render_field(ball([0.0, 0.25, 0.0], 0.15), res, "sdf", views=((0.0, 0.0),))[0]
    return img, (img != 1).any(-1)


def test_preview_has_y_up_with_row_zero_at_the_top():
    """Camera at (0, 0, RADIUS) looking at the origin, y up: the ball's centre projects tan(a) / tan(FOV / 2) above
    the image centre, a = atan(0.25 / RADIUS), i.e. row (1 - 0.125 / tan(17.5 deg)) * 16 = 9.65 of 32 (rows count
    from the top); the hit pixels' mean row is within a pixel of it (measured 9.5) and every hit row is in the top
    half, the mean column at the centre. Upside down it was row 22.5."""
    res = 32
    _, hit = _ball_above_centre(res)
    rows, cols = np.nonzero(hit)
    expected = (1 - (0.25 / RADIUS) / math.tan(math.radians(FOV) / 2)) * res / 2
    assert len(rows) > 20 and rows.max() < res // 2
    assert abs((rows + 0.5).mean() - expected) < 1.0
    assert abs((cols + 0.5).mean() - res / 2) < 0.5


def test_preview_normals_face_the_camera():
    """Normal colours 0.5 + 0.5 n with n turned toward the camera: from +z every visible point of the ball has a
    normal with n_z > 0 up to the silhouette, and over a sphere's visible disc the mean n_z is about 2/3 (uniform
    in projected area): the blue channel averages about 0.83 on the hit pixels (measured 0.831, every one above
    0.6); turned away it was 0.17."""
    img, hit = _ball_above_centre()
    blue = img[hit][:, 2]
    assert blue.mean() > 0.75
    assert (blue > 0.5).all()


# -- remove_small_components ---------------------------------------------------------------------------------------
def test_remove_small_components_keeps_the_largest_piece_when_none_reaches_the_fraction():
    """A sphere of 1280 faces and a separate one of 320: neither holds 90 % of the 1600 faces, so with fraction 0.9
    the fallback keeps the largest piece, the big sphere (extent 2), never the small one (extent 0.6)."""
    big = trimesh.creation.icosphere(3, radius=1.0)
    small = trimesh.creation.icosphere(2, radius=0.3)
    small.apply_translation([3.0, 0.0, 0.0])
    kept = remove_small_components(trimesh.util.concatenate([big, small]), 0.9)
    assert len(kept.faces) == len(big.faces)
    assert np.allclose(kept.bounds, big.bounds)


# -- rwf data downscale / llff -------------------------------------------------------------------------------------
def test_downscale_of_an_odd_size_floors_w_and_h(tmp_path, capsys):
    """A 19 px synthetic scene downscaled by 2: images are cropped to 18 px and box-filtered to 9, and the written
    w, h are floor(19 / 2) = 9 (not round(9.5) = 10) in every split, so ``rwf data check`` finds no error."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    assert data_main(["data", "synth", "demo", str(src), "--res", "19", "--views", "2", "--val", "1",
                      "--test", "1"]) == 0
    assert json.loads((src / "transforms_train.json").read_text())["w"] == 19
    assert data_main(["data", "downscale", str(src), str(dst), "--factor", "2"]) == 0
    for split in ("train", "val", "test"):
        meta = json.loads((dst / f"transforms_{split}.json").read_text())
        assert (meta["w"], meta["h"]) == (9, 9)
        assert meta["cx"] == pytest.approx(19 / 2 / 2)
    assert load_image(dst / "train" / "r_0.png").shape[:2] == (9, 9)
    capsys.readouterr()
    assert data_main(["data", "check", str(dst)]) == 0


def test_downscale_factor_one_is_refused(tmp_path, capsys):
    """--factor 1 would copy the dataset unchanged: exit 2, one line on stderr, nothing written."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    assert data_main(["data", "synth", "demo", str(src), "--res", "8", "--views", "1", "--val", "0",
                      "--test", "0"]) == 0
    capsys.readouterr()
    assert data_main(["data", "downscale", str(src), str(dst), "--factor", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--factor" in err and "Traceback" not in err, err
    assert not dst.exists()


def test_llff_near_bound_zero_is_refused(tmp_path, capsys):
    """poses_bounds.npy with a near bound of 0 (a depth range touching the camera) is refused with the message of
    any other bad bound, 'expected 0 < near < far', exit 2 and one stderr line; no output is written."""
    src = tmp_path / "scene"
    (src / "images").mkdir(parents=True)
    n = 3
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, 3] = np.stack([np.linspace(-0.5, 0.5, n), np.zeros(n), np.full(n, 4.0)], 1)
    for i in range(n):
        save_image(src / "images" / f"{i}.png", np.zeros((30, 40, 3), np.uint8))
    write_poses_bounds(src / "poses_bounds.npy", c2w, [30.0, 40.0, 35.0], np.array([[0.0, 8.0]] * n))
    capsys.readouterr()
    assert data_main(["data", "llff", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected 0 < near < far" in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


# -- shape samples -------------------------------------------------------------------------------------------------
def test_near_shell_spread_is_the_first_sigma():
    """Near samples are surface points plus N(0, s^2) per axis with s = near_sigmas[0] = 0.005: on a sphere of
    radius 0.3 their distance to it is the normal component of the offset up to |e_t|^2 / (2 R) (1e-4), so its
    median |d| is 0.6745 s = 0.00337 (measured within 2 %); with near_sigmas[1] it was ten times that."""
    mesh = trimesh.creation.icosphere(4, radius=R)
    mix = (0.25, 0.25, 0.2, 0.3)
    s = draw_samples(mesh, SphereQuery(), 8000, mix=mix, near_sigmas=(0.005, 0.05), seed=0)
    n_surf, n_near, _, _ = split_counts(8000, mix)
    near = s.sdf[n_surf:n_surf + n_near].abs().numpy()
    assert np.median(near) == pytest.approx(NORMAL_MEDIAN * 0.005, rel=0.1)
    assert not s.surface[n_surf:].any() and s.surface[:n_surf].all()


def test_occupancy_samples_have_no_surface_points():
    """distances=False (occupancy: a point on the surface has no inside/outside label) moves the surface share into
    the near shell: no sample is flagged as on the surface, no sample carries a normal, and the labels are the
    closed-form inside of the sphere."""
    mesh = trimesh.creation.icosphere(4, radius=R)
    s = draw_samples(mesh, SphereQuery(), 4000, distances=False, seed=0)
    assert not s.surface.any()
    assert not s.normals.any()
    assert torch.equal(s.inside, torch.from_numpy(SphereQuery.inside(s.points.numpy())))


def test_split_counts_never_gives_the_remainder_to_an_empty_share():
    """split_counts(10, [0, 1, 1, 1]): floor(10 / 3) = 3 each, and the remaining 1 goes to a share that was asked
    for (the largest), never to the share of 0."""
    counts = split_counts(10, [0, 1, 1, 1])
    assert counts[0] == 0 and sum(counts) == 10 and sorted(counts[1:]) == [3, 3, 4]

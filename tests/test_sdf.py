"""The SDF pipeline: eikonal gradients against finite differences, the run contract through the ``rwf`` command,
eval agreement, export in source units, resume, --compare, open meshes, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

from rwf_render import cli
from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField
from rwf_render.layers import rwf_scale_parameters
from rwf_render.mesh import winding_number
from rwf_render.mesh_io import load_mesh
from rwf_render.rundir import read_history
from rwf_render.shape_task import eikonal_loss, sdf_gradient

TINY = ["--steps", "20", "--width", "32", "--features", "16", "--eval-every", "5", "--mesh-res", "32",
        "--preview-res", "16", "--eval-points", "4096", "--metric-points", "5000", "--pool", "4096", "--batch", "512",
        "--refresh-every", "10", "--quiet"]


def rwf(*args, cwd=None):
    """Run the command in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "rwf_render", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _model(param, activation="softplus"):
    enc, mlp = EncodingConfig(m=8, sigma=1.0), MLPConfig(depth=3, width=16, activation=activation, param=param)
    return NeuralField(3, 1, enc, mlp, seed=1).double()


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_field_gradient_through_rwf_mlp_equals_finite_differences(activation):
    model = _model("rwf", activation)
    x = (torch.rand(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5).requires_grad_()
    grad = sdf_gradient(model(x)[:, 0], x)
    h = 1e-6
    with torch.no_grad():
        fd = torch.stack([(model(x + h * e)[:, 0] - model(x - h * e)[:, 0]) / (2 * h)
                          for e in torch.eye(3, dtype=torch.float64)], -1)
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("param", ["plain", "wn", "rwf"])
def test_eikonal_loss_gradient_equals_finite_differences(param):
    """d/dtheta of mean (|grad_x f| - 1)^2 needs second derivatives through every layer type (for RWF: through the
    scale s and the direction V); backprop through create_graph must match central differences (float64)."""
    model = _model(param)
    x = (torch.rand(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) - 0.5).requires_grad_()

    def loss():
        return eikonal_loss(sdf_gradient(model(x)[:, 0], x, create_graph=True))

    model.zero_grad()
    loss().backward()
    params = list(rwf_scale_parameters(model)) if param == "rwf" else []
    params += [layer.weight if param == "plain" else layer.v for layer in (model.mlp.layers[0], model.mlp.layers[-1])]
    if param == "wn":
        params.append(model.mlp.layers[1].g)
    assert_grads_match_finite_differences(loss, params, h=1e-6, rel=1e-5, abs_tol=1e-9)


def assert_grads_match_finite_differences(loss, params, h: float, rel: float, abs_tol: float) -> None:
    """Each parameter's .grad at its first and last entry equals the central difference of ``loss()``."""
    for p in params:
        for idx in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            with torch.no_grad():
                p[idx] += h
            up = loss().item()
            with torch.no_grad():
                p[idx] -= 2 * h
            down = loss().item()
            with torch.no_grad():
                p[idx] += h
            assert p.grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=rel, abs=abs_tol)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny fit of the built-in shape, shared by the tests that read a finished run."""
    run = tmp_path_factory.mktemp("sdf") / "run"
    assert cli.main(["fit", "sdf", "--out", str(run), *TINY]) == 0
    return run


def test_fit_builtin_writes_the_contract_and_eval_matches(tiny_run, capsys):
    run = tiny_run
    for name in ("config.json", "metrics.json", "history.csv", "checkpoint.pt", "mesh.ply", "preview.png",
                 "curve.png"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == "sdf" and cfg["path"] is None and cfg["source"]["name"] == "trefoil"
    assert cfg["source"]["watertight"] and {"center", "scale"} <= cfg["normalization"].keys()
    metrics = json.loads((run / "metrics.json").read_text())
    keys = ("iou", "iou_surface", "chamfer_l1", "chamfer_l2", "fscore", "normal_consistency")
    assert set(keys) | {"steps", "seconds", "param"} <= metrics.keys()
    assert metrics["steps"] == 20 and metrics["param"] == "rwf" and "psnr" not in metrics
    history = read_history(run / "history.csv")
    assert [row["step"] for row in history] == [5, 10, 15, 20]
    assert {"step", "seconds", "loss", "iou", "iou_surface"} <= history[0].keys()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 20
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 0
    out, err = capsys.readouterr()
    again = json.loads(out.strip().splitlines()[-1])
    for key in (*keys, "steps"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-6), key
    assert "differ" not in err


def test_exports_are_in_source_units_and_every_format(tiny_run, tmp_path):
    """The export maps the unit cube back: vertices lie in the box around the source's own coordinates, and the
    fit's mesh.ply is the same extraction as ``rwf export mesh`` at the same resolution."""
    cfg = json.loads((tiny_run / "config.json").read_text())
    center, scale = np.array(cfg["normalization"]["center"]), cfg["normalization"]["scale"]
    for fmt in ("ply", "obj", "glb"):
        out = tmp_path / f"m.{fmt}"
        assert cli.main(["export", "mesh", str(tiny_run), "--res", "32", "--out", str(out)]) == 0
        mesh = load_mesh(out)
        assert (np.abs(mesh.vertices - center) <= 0.5 / scale + 1e-4).all()
    fit_mesh, again = load_mesh(tiny_run / "mesh.ply"), load_mesh(tmp_path / "m.ply")
    assert len(fit_mesh.faces) == len(again.faces) and np.allclose(fit_mesh.bounds, again.bounds, atol=1e-5)
    assert cli.main(["export", "mesh", str(tiny_run), "--res", "24", "--format", "obj", "--min-component", "0.1",
                     "--out", str(tmp_path / "clean.obj")]) == 0
    assert cli.main(["render", str(tiny_run), "--scale", "2"]) == 0
    assert (tiny_run / "render_x2.png").is_file()


def test_open_bunny_warns_and_exports_in_its_units(data_dir, tmp_path):
    run = tmp_path / "bunny"
    r = rwf("fit", "sdf", data_dir / "meshes" / "bunny.obj", "--out", run, *TINY)
    assert r.returncode == 0, r.stderr
    assert "not watertight" in r.stderr and "ray-parity" in r.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["source"]["watertight"] is False and "15 directions" in cfg["source"]["inside_method"]
    assert len(cfg["source"]["sha256"]) == 64
    source = load_mesh(data_dir / "meshes" / "bunny.obj")
    center = np.asarray(cfg["normalization"]["center"])
    assert np.allclose(center, source.bounds.mean(0))
    half = 0.5 / cfg["normalization"]["scale"]  # the unit cube's half side in bunny units (~0.09)
    assert half == pytest.approx(0.5 / 0.9 * source.extents.max())
    exported = load_mesh(run / "mesh.ply")  # unit-cube coordinates (up to 0.5) would not fit in there
    assert (np.abs(exported.vertices - center) <= half + 1e-6).all()


def test_glb_of_overlapping_parts_fits_their_union(tmp_path):
    """Two overlapping balls as two parts of a GLB scene: the fit learns their union. With ray parity the lens
    where they overlap was labelled outside, and the extracted surface held a hollow lens there."""
    a, b = trimesh.creation.icosphere(3), trimesh.creation.icosphere(3)
    scene = trimesh.Scene()
    scene.add_geometry(a)
    scene.add_geometry(b, transform=trimesh.transformations.translation_matrix([1.0, 0.0, 0.0]))
    scene.export(tmp_path / "two.glb")
    run = tmp_path / "run"
    assert cli.main(["fit", "sdf", str(tmp_path / "two.glb"), "--out", str(run), "--target", "occupancy",
                     *TINY[:-1], "--steps", "300", "--eval-every", "100", "--width", "64", "--features", "32",
                     "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert "union of 2 closed parts" in cfg["source"]["inside_method"]
    extracted = load_mesh(run / "mesh.ply")  # in the scene's units
    lens = np.array([[0.5, 0.0, 0.0], [0.5, 0.3, 0.0], [0.5, 0.0, -0.3]])
    assert (winding_number(extracted, lens) > 0.5).all()
    assert json.loads((run / "metrics.json").read_text())["iou"] > 0.8


def test_occupancy_target_and_training_progress(data_dir, tmp_path):
    """The paper's occupancy task on spot: logits trained with BCE reach a much better IoU than where they start."""
    run = tmp_path / "occ"
    args = ["fit", "sdf", str(data_dir / "meshes" / "spot.obj"), "--out", str(run), "--target", "occupancy",
            *TINY[:-1], "--steps", "150", "--eval-every", "10", "--width", "64", "--features", "32", "--quiet"]
    assert cli.main(args) == 0
    history = read_history(run / "history.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["target"] == "occupancy" and "bce" in history[0]
    assert metrics["iou"] > history[0]["iou"] + 0.1 and metrics["iou"] > 0.6


def test_resume_reaches_the_same_parameters_as_an_uninterrupted_fit(tmp_path):
    """The resumed half starts inside a pool (redrawn every 4 steps): the pool is a function of (seed, step).
    A constant learning rate, since a decaying schedule depends on the total steps, which the first half lacks."""
    common = [*TINY, "--deterministic", "--ckpt-every", "5", "--refresh-every", "4", "--schedule", "const",
              "--eikonal", "0.1", "--normal", "0.1"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["fit", "sdf", "--out", str(a), *common]) == 0
    assert cli.main(["fit", "sdf", "--out", str(b), *common[:1], "10", *common[2:]]) == 0
    assert cli.main(["fit", "sdf", "--out", str(b), "--resume", "--steps", "20", "--quiet"]) == 0
    sa = torch.load(a / "checkpoint.pt", weights_only=True)
    sb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert sb["step"] == 20
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    assert [r["step"] for r in read_history(b / "history.csv")] == [5, 10, 15, 20]
    assert "eikonal" in read_history(b / "history.csv")[0]


def test_compare_trains_three_params_at_equal_budget(tmp_path):
    run = tmp_path / "cmp"
    assert cli.main(["fit", "sdf", "--out", str(run), "--compare", *TINY]) == 0
    result = json.loads((run / "compare.json").read_text())
    assert list(result) == ["plain", "wn", "rwf"]
    assert {m["steps"] for m in result.values()} == {20}
    table = (run / "compare.md").read_text()
    assert all(f"| {p} |" in table for p in ("plain", "wn", "rwf"))
    assert (run / "compare.png").stat().st_size > 10_000
    for p in ("plain", "wn", "rwf"):
        assert json.loads((run / p / "config.json").read_text())["mlp"]["param"] == p


def _write_bad(tmp_path, case):
    path = tmp_path / "bad.obj"
    if case == "missing":
        return tmp_path / "nope.obj"
    if case == "not_mesh":
        path.write_text("this is a shopping list, not a mesh\n")
    elif case == "empty_mesh":
        path.write_text("# no faces\nv 0 0 0\nv 1 0 0\n")
    elif case == "nan_vertices":
        path.write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    elif case == "degenerate":
        path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
    elif case == "unreadable":
        path = tmp_path / "bad.ply"
        trimesh.creation.icosphere(2).export(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif case == "directory":
        path = tmp_path / "folder.obj"
        path.mkdir()
    elif case == "wrong_suffix":
        path = tmp_path / "mesh.txt"
        path.write_text("v 0 0 0\n")
    return path


@pytest.mark.parametrize("case", ["missing", "not_mesh", "empty_mesh", "nan_vertices", "degenerate", "unreadable",
                                  "directory", "wrong_suffix", "exists", "occupancy_eikonal", "fill"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, case):
    run = tmp_path / "run"
    good = tmp_path / "good.obj"
    trimesh.creation.icosphere(1).export(good)
    args = ["fit", "sdf", good, "--out", run, "--steps", "2", "--quiet"]
    if case == "exists":
        run.mkdir()
        (run / "precious.txt").write_text("keep me")
    elif case == "occupancy_eikonal":
        args += ["--target", "occupancy", "--eikonal", "0.1"]
    elif case == "fill":
        args += ["--fill", "1.5"]
    else:
        args[2] = _write_bad(tmp_path, case)
    r = rwf(*args)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rwf: error:"), r.stderr
    if case == "exists":
        assert sorted(p.name for p in run.iterdir()) == ["precious.txt"]
    else:
        assert not run.exists()


def test_bad_export_options_are_user_errors(tiny_run, tmp_path, capsys):
    for extra in (["--out", str(tmp_path / "m.stl")], ["--format", "ply", "--out", str(tmp_path / "m.obj")],
                  ["--out", str(tmp_path / "no" / "m.ply")], ["--min-component", "2"]):
        assert cli.main(["export", "mesh", str(tiny_run), "--res", "8", *extra]) == 2, extra
    assert "rwf: error:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_preview_normals_average_a_fields_grain_over_a_pixel():
    """A sphere with a fine sawtooth on it (slopes of 0.4 in every direction, a ReLU network's facets writ large):
    the preview's normals, central differences over a pixel's footprint, shade it as the sphere (measured: mean
    colour error 0.011); exact gradients (normal_h=0, the preview before) shade the grain (0.07 to 0.20)."""
    from rwf_render.mesh import MeshQuery
    from rwf_render.spheretrace import render_field, render_mesh

    def grain(x):
        return x.norm(dim=-1) - 0.3 + 0.002 * torch.frac(200 * x).sum(-1)

    reference = render_mesh(MeshQuery(trimesh.creation.icosphere(5, 0.3)), res=32)
    for h, bound in ((None, lambda e: e < 0.02), (0.0, lambda e: e > 0.05)):
        for img, ref in zip(render_field(grain, 32, "sdf", normal_h=h), reference):
            both = ~(img == 1).all(-1) & ~(ref == 1).all(-1)
            assert both.sum() > 100 and bound(np.abs(img[both] - ref[both]).mean()), h


def test_sphere_tracing_finds_the_surface_of_a_field_steeper_than_a_distance():
    """A learned field is not a distance: 3 (|x| - r) made every 0.9 f step overshoot 2.7 times the distance, jump
    over the sphere or oscillate away, and the preview was blank. render_field shortens its steps by the field's
    slope (``field_slope``: 3 here), and sphere_trace bisects a step that lands inside: the silhouette is the
    sphere's (to its rim) and a ray through the centre stops at the surface."""
    from scipy.ndimage import binary_dilation, binary_erosion

    from rwf_render.mesh import MeshQuery
    from rwf_render.spheretrace import field_slope, render_field, render_mesh, sphere_trace

    def steep(x):
        return 3 * (x.norm(dim=-1) - 0.3)

    assert field_slope(steep) == pytest.approx(3.0, rel=1e-3)
    reference = render_mesh(MeshQuery(trimesh.creation.icosphere(5, 0.3)), res=32)
    for img, ref in zip(render_field(steep, 32, "sdf"), reference):
        bg, ref_bg = (img == 1).all(-1), (ref == 1).all(-1)
        rim = binary_dilation(~ref_bg) & ~binary_erosion(~ref_bg)
        assert (~ref_bg).sum() > 100 and not ((bg != ref_bg) & ~rim).any()
    # a plain 0.9 f step from x = -0.5 lands at x = +0.04, inside: bisected back to the surface at -0.3
    t = sphere_trace(steep, torch.tensor([[-2.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]), eps=1e-4)
    assert float(t[0]) == pytest.approx(1.7, abs=1e-4)


def test_preview_renders_of_closed_form_fields_match_the_ray_cast_mesh():
    """Sphere tracing an exact sphere SDF, and the first crossing of sphere occupancy logits, show the same
    silhouette (to one pixel) and normals as open3d ray casting a fine icosphere."""
    from scipy.ndimage import binary_dilation, binary_erosion

    from rwf_render.mesh import MeshQuery
    from rwf_render.spheretrace import render_field, render_mesh

    r = 0.3

    def sdf(x):
        return x.norm(dim=-1) - r

    def logits(x):
        return -20 * sdf(x)

    reference = render_mesh(MeshQuery(trimesh.creation.icosphere(5, r)), res=32)
    for images in (render_field(sdf, 32, "sdf"), render_field(logits, 32, "occupancy")):
        for img, ref in zip(images, reference):
            bg, ref_bg = (img == 1).all(-1), (ref == 1).all(-1)
            rim = binary_dilation(~ref_bg) & ~binary_erosion(~ref_bg)
            assert not ((bg != ref_bg) & ~rim).any()
            both = ~bg & ~ref_bg & ~rim
            assert np.abs(img[both] - ref[both]).mean() < 0.01

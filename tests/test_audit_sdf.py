"""Audit of the SDF pipeline and mesh I/O with unusual input: exports far from the origin or at tiny scales keep
their precision, truncated or 0-based mesh files are refused instead of silently fitted, a surface stored twice or
parts of opposite winding are read as the solid they are, and a refused fit prints one line. All small and
in-process (one tiny fit)."""

import warnings

import numpy as np
import pytest
import torch
import trimesh

from rwf_render.errors import UserError
from rwf_render.mesh import MeshQuery, Normalization
from rwf_render.mesh_io import checked_mesh, load_mesh, save_mesh
from rwf_render.shape_samples import orient_outward

from test_shape_image_bad_input_more import SDF_TINY, assert_one_error, run_cli  # noqa: E402  (tests/ on sys.path)


# -- export precision -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["ply", "obj", "glb"])
@pytest.mark.parametrize("radius,offset", [(1.0, (5e6, 5e5, 0.0)), (1e-6, (0.0, 0.0, 0.0)), (1e-9, (3e-6, 0, 0))])
def test_exports_keep_the_precision_of_the_mesh(tmp_path, fmt, radius, offset):
    """PLY and GLB stored float32 vertices: a 2 m object at UTM coordinates (x = 5e6 m) came back on a 0.5 m lattice,
    its vertices collapsed onto each other. OBJ stored 8 decimals: a mesh of micrometre size kept 2 digits."""
    mesh = trimesh.creation.icosphere(2, radius).apply_translation(offset)
    back = load_mesh(save_mesh(mesh, tmp_path / f"m.{fmt}"))
    assert len(back.vertices) == len(mesh.vertices) and len(back.faces) == len(mesh.faces)
    assert np.allclose(np.sort(back.vertices, 0), np.sort(mesh.vertices, 0), rtol=0, atol=1e-6 * radius)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m.{fmt}"]


def test_float64_ply_keeps_vertex_colours(tmp_path):
    mesh = trimesh.creation.icosphere(1, 1.0).apply_translation([4e6, 0, 0])
    colours = np.random.default_rng(0).integers(0, 256, (len(mesh.vertices), 4), dtype=np.uint8)
    mesh.visual.vertex_colors = colours
    back = trimesh.load(save_mesh(mesh, tmp_path / "c.ply"), process=False)
    assert np.array_equal(np.asarray(back.visual.vertex_colors), colours)
    assert np.allclose(back.vertices, mesh.vertices, rtol=0, atol=1e-9)


def test_fit_and_export_far_from_the_origin_come_back_in_source_units(tmp_path, capsys):
    src = tmp_path / "site.obj"
    trimesh.creation.icosphere(2, 1.0).apply_translation([5e6, 5e5, 10.0]).export(src)
    run = tmp_path / "run"
    assert run_cli(capsys, "fit", "sdf", src, "--out", run, *SDF_TINY)[0] == 0
    for name, fmt in (("a.ply", "ply"), ("b.glb", "glb")):
        assert run_cli(capsys, "export", "mesh", run, "--res", "12", "--out", tmp_path / name)[0] == 0
        out = trimesh.load(tmp_path / name, force="mesh", process=False)
        unique = len(np.unique(np.asarray(out.vertices), axis=0))
        assert unique == len(out.vertices), fmt  # float32 merged vertices on its 0.5 m lattice
        assert (np.abs(out.vertices - [5e6, 5e5, 10.0]) <= 0.5 / 0.9 * 2 + 1e-6).all()
    fit_mesh = trimesh.load(run / "mesh.ply", process=False)
    assert len(np.unique(np.asarray(fit_mesh.vertices), axis=0)) == len(fit_mesh.vertices)


# -- corrupt files that loaded as something else --------------------------------------------------------------------
CUBE_V = "-1 -1 -1\n1 -1 -1\n1 1 -1\n-1 1 -1\n-1 -1 1\n1 -1 1\n1 1 1\n-1 1 1\n"
CUBE_F = "4 0 3 2 1\n4 4 5 6 7\n4 0 1 5 4\n4 1 2 6 5\n4 2 3 7 6\n4 3 0 4 7\n"
PLY_HEADER = ("ply\nformat ascii 1.0\nelement vertex 8\nproperty float x\nproperty float y\nproperty float z\n"
              "element face 6\nproperty list uchar int vertex_indices\nend_header\n")


def _bad_file(tmp_path, case):
    if case == "obj_zero_based":  # indices from 0: trimesh read 0 as -1, the last vertex, and shifted every face
        path = tmp_path / "zero.obj"
        box = trimesh.creation.box()
        path.write_text("".join("v %g %g %g\n" % tuple(v) for v in box.vertices)
                        + "".join("f %d %d %d\n" % tuple(f) for f in box.faces))
    elif case == "ply_truncated":  # an ASCII PLY cut off after 3 of its 6 faces loaded as an open box
        path = tmp_path / "cut.ply"
        path.write_text(PLY_HEADER + CUBE_V + CUBE_F[:30])
    elif case == "off_truncated":
        path = tmp_path / "cut.off"
        path.write_text("OFF\n8 6 0\n" + CUBE_V + CUBE_F[:30])
    elif case == "off_short_face":  # the last face line lost its last index
        path = tmp_path / "short.off"
        path.write_text("OFF\n8 6 0\n" + CUBE_V + CUBE_F[:-3] + "\n")
    return path


@pytest.mark.parametrize("case", ["obj_zero_based", "ply_truncated", "off_truncated", "off_short_face"])
def test_corrupt_files_are_refused_not_fitted(tmp_path, capsys, case):
    path = _bad_file(tmp_path, case)
    with pytest.raises(UserError):
        load_mesh(path)
    run = tmp_path / "run"
    line = assert_one_error(*run_cli(capsys, "fit", "sdf", path, "--out", run, *SDF_TINY))
    assert str(path) in line
    assert not run.exists()


@pytest.mark.parametrize("count", [0, 5, 10_000])
def test_binary_stl_with_a_wrong_triangle_count_says_so(tmp_path, count):
    """It was tried as ASCII and reported as "no triangles (not a mesh, or an empty one)"."""
    path = tmp_path / "part.stl"
    trimesh.creation.icosphere(1).export(path)
    data = bytearray(path.read_bytes())
    data[80:84] = count.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"declares {count} triangles"):
        load_mesh(path)


def test_a_stray_vertex_far_away_does_not_flatten_the_mesh():
    """Coincident vertices were merged in a frame sized by every vertex, used or not: one unused vertex at 1e9 made
    a unit sphere "degenerate"."""
    sphere = trimesh.creation.icosphere(2)
    mesh = checked_mesh(np.vstack([sphere.vertices, [[1e9, 1e9, 1e9]]]), sphere.faces)
    assert mesh.is_watertight and np.allclose(mesh.bounds, sphere.bounds)


def test_complete_ascii_ply_and_off_with_quads_still_load(tmp_path):
    (tmp_path / "q.ply").write_text(PLY_HEADER + CUBE_V + CUBE_F)
    (tmp_path / "q.off").write_text("OFF\n# a comment\n8 6 0\n" + CUBE_V + CUBE_F)
    (tmp_path / "q.obj").write_text("".join("v " + line + "\n" for line in CUBE_V.splitlines())
                                    + "".join("f " + " ".join(str(int(i) - 8) for i in line.split()[1:]) + "\n"
                                              for line in CUBE_F.splitlines()))  # negative (relative) indices
    for name in ("q.ply", "q.off", "q.obj"):
        mesh = load_mesh(tmp_path / name)
        assert mesh.is_watertight and len(mesh.faces) == 12 and mesh.volume == pytest.approx(8.0), name


# -- surfaces stored twice, parts of opposite winding ------------------------------------------------------------------
def test_parts_of_opposite_winding_are_a_solid_with_outward_normals(tmp_path, capsys):
    """Two separate spheres, one wound inside-out (a mirrored part of an assembly): their signed volumes cancel and
    the mesh was refused as "encloses zero volume"; each part is now turned outward on its own."""
    a = trimesh.creation.icosphere(2, 0.5)
    b = trimesh.creation.icosphere(2, 0.5).apply_translation([2.0, 0, 0])
    b.invert()
    path = tmp_path / "parts.obj"
    trimesh.util.concatenate([a, b]).export(path)
    mesh = load_mesh(path)
    assert mesh.is_watertight
    unit = Normalization.fit(mesh).apply(mesh)
    oriented, agree = orient_outward(unit, MeshQuery(unit))
    assert agree > 0.99
    assert [round(part.volume, 6) > 0 for part in oriented.split(only_watertight=False)] == [True, True]
    assert run_cli(capsys, "fit", "sdf", path, "--out", tmp_path / "run", *SDF_TINY)[0] == 0


def test_cavity_keeps_its_inward_normals():
    """A hollow ball (outer sphere, inner sphere wound inward): per-part orientation must not turn the cavity out."""
    outer, inner = trimesh.creation.icosphere(3, 1.0), trimesh.creation.icosphere(3, 0.5)
    inner.invert()
    shell = trimesh.util.concatenate([outer, inner])
    unit = Normalization.fit(shell).apply(shell)
    oriented, agree = orient_outward(unit, MeshQuery(unit))
    assert agree > 0.99 and oriented.volume == pytest.approx(unit.volume)


def test_a_surface_stored_twice_is_one_closed_surface(tmp_path):
    """The same sphere twice in one file (an exporter writing a part twice) was reported open, so the fit warned and
    voted over 15 rays; without open3d, whose rays cross both copies, every point read outside."""
    sphere = trimesh.creation.icosphere(2, 1.0)
    path = tmp_path / "twice.stl"
    trimesh.util.concatenate([sphere, sphere]).export(path)
    mesh = load_mesh(path)
    assert mesh.is_watertight and len(mesh.faces) == len(sphere.faces)


@pytest.mark.parametrize("radius", [1e110, 1e150])
def test_astronomical_coordinates_load_without_overflow(tmp_path, radius):
    """Volumes of meshes over 1e103 units overflowed float64 (RuntimeWarnings on stderr, "encloses zero volume")."""
    path = tmp_path / "big.obj"
    trimesh.creation.icosphere(1, radius).export(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mesh = load_mesh(path)
    assert mesh.is_watertight and np.allclose(mesh.bounds, [[-radius] * 3, [radius] * 3], rtol=1e-9, atol=0)


# -- one line for a refused fit -------------------------------------------------------------------------------------
def test_refused_fit_of_an_open_mesh_is_one_line(tmp_path, capsys):
    """The "not watertight" warning came before the refusal of the run folder: two lines for one error."""
    path = tmp_path / "open.obj"
    sphere = trimesh.creation.icosphere(2)
    trimesh.Trimesh(sphere.vertices, sphere.faces[:-4]).export(path)  # a hole
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep")
    assert_one_error(*run_cli(capsys, "fit", "sdf", path, "--out", run, *SDF_TINY))
    assert [p.name for p in run.iterdir()] == ["precious.txt"]
    code, err = run_cli(capsys, "fit", "sdf", path, "--out", tmp_path / "new", *SDF_TINY)
    assert code == 0 and "not watertight" in err


def test_a_field_that_overflows_is_refused_before_the_run_folder(tmp_path, capsys):
    """--sigma 1e38 made a Fourier encoding of inf: the fit wrote a run folder and trained NaNs."""
    run = tmp_path / "run"
    assert "not finite" in assert_one_error(*run_cli(capsys, "fit", "sdf", "--out", run, "--sigma", "1e38",
                                                     *SDF_TINY))
    assert not run.exists()


def test_eval_of_a_checkpoint_without_its_training_state_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "fit", "sdf", "--out", run, *SDF_TINY)[0] == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["step"]
    torch.save(state, run / "checkpoint.pt")
    assert "checkpoint.pt" in assert_one_error(*run_cli(capsys, "eval", run))


def test_an_output_name_near_the_file_name_limit_is_written(tmp_path):
    """The temporary file beside the output took the name plus some 14 characters: over 255, 'File name too long'."""
    path = tmp_path / ("a" * 245 + ".ply")
    save_mesh(trimesh.creation.icosphere(1), path)
    assert len(load_mesh(path).faces) == 80 and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_an_export_that_cannot_be_written_is_a_machine_failure_naming_the_output(tmp_path, capsys, monkeypatch):
    """A full disk during a mesh export exited 2 (bad input) naming the temporary file beside the output."""
    run = tmp_path / "run"
    assert run_cli(capsys, "fit", "sdf", "--out", run, *SDF_TINY)[0] == 0

    def full(self, file_obj=None, file_type=None, **kw):
        raise OSError(28, "No space left on device", str(file_obj))

    monkeypatch.setattr(trimesh.Trimesh, "export", full)
    out = tmp_path / "m.ply"
    code, err = run_cli(capsys, "export", "mesh", run, "--res", "16", "--out", out, "--quiet")  # no progress bar
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and f"{out}: No space left on device" in lines[0] and ".tmp" not in err
    assert not out.exists()

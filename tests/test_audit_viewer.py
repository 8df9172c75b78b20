"""Audit of the viewer: a run whose extracted mesh is empty or unreadable still opens (the field is what matters)."""

import types

import numpy as np
import pytest
import torch
import trimesh

from rwf_render.mesh import Normalization
from rwf_render.mesh_io import save_mesh
from viewer.nerf_source import NeRFSource
from viewer.sources import render_view

from test_viewer_sources import Sphere, StandInAPI, views  # noqa: E402  (tests/ is on sys.path under pytest)

CPU = torch.device("cpu")


def _empty_mesh(path):
    """What an SDF fit whose field has no zero crossing yet writes as mesh.ply ("no surface extracted")."""
    save_mesh(trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), path)


@pytest.mark.parametrize("write", [_empty_mesh, lambda p: p.write_text("not a ply file")], ids=["empty", "corrupt"])
def test_a_nerf_run_with_a_bad_mesh_opens_without_it(tmp_path, capsys, write):
    write(tmp_path / "mesh.ply")
    source = NeRFSource.from_run(tmp_path, {"kind": "nerf"}, CPU, api=StandInAPI)  # was a UserError: no view
    assert source.mesh is None
    assert "extracted mesh left out" in capsys.readouterr().err
    frame = render_view(source, views(source, aspects=(1.0,))[0], 32, "rgb")
    assert frame.rgb.shape == (32, 32, 3)


def test_an_sdf_run_without_a_surface_yet_opens(tmp_path, capsys, monkeypatch):
    """``rwf fit sdf`` saves the marching-cubes mesh even when it is empty (a short fit, metrics "no surface
    extracted"); ``rwf view`` on that run stopped at "mesh.ply: no triangles" instead of showing the field."""
    import rwf_render.sdf
    import viewer.sdf_source as sdf_source
    from viewer.sources import open_run

    (tmp_path / "config.json").write_text('{"kind": "sdf"}')
    _empty_mesh(tmp_path / "mesh.ply")
    scfg = types.SimpleNamespace(target="sdf")
    monkeypatch.setattr(rwf_render.sdf, "load_run",
                        lambda run, cfg, device: (scfg, Sphere(0.3), Normalization((0.0, 0.0, 0.0), 1.0), None, CPU))
    monkeypatch.setattr(sdf_source, "_source_mesh", lambda scfg, run=None: None)
    source = open_run(tmp_path, CPU)
    assert source.kind == "sdf" and source.extracted is None and source.default_mode == "shaded"
    assert "extracted mesh left out" in capsys.readouterr().err
    frame = render_view(source, views(source, aspects=(1.0,))[0], 32, "shaded")
    assert (frame.depth < 1e4).any()  # the sphere is seen


def test_a_good_extracted_mesh_is_still_shown(tmp_path):
    save_mesh(trimesh.creation.icosphere(1, 0.4), tmp_path / "mesh.ply")
    source = NeRFSource.from_run(tmp_path, {"kind": "nerf"}, CPU, api=StandInAPI)
    assert source.mesh is not None and len(source.mesh.faces) == 80


@pytest.mark.parametrize("max_res", [32, 33, 4096])
def test_every_max_res_the_command_accepts_builds_the_page(max_res):
    """``rwf view RUN --max-res N`` accepts 32..4096, but the page's slider spanned 64..2048 and viser refuses a
    start value outside its range: --max-res 4096 (or 32) ended in a ValueError traceback after the server started."""
    pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
    from viewer.app import ViewerApp
    from viewer.cli import side

    from test_viewer_app import tiny_image_source

    assert side(str(max_res)) == max_res  # the command accepts it
    app = ViewerApp(tiny_image_source(), port=0, max_res=max_res)
    try:
        app.start()
        assert app.settings.max_res == max_res
    finally:
        app.stop()

"""`rwf export mesh RUN --level D` of an SDF run: a level whose surface leaves the box the field was fitted in (the
unit cube around the source) was capped flat on the box's faces without a word (a helper's hunt, 30 Nov 2026: 17 %
of the area of a --level 0.5 export). Marching cubes still closes the mesh there; the export now warns."""

import warnings

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.errors import RwfWarning
from rwf_render.mesh import capped_vertices, extract_mesh

from test_shape_image_bad_input_more import SDF_TINY  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.mark.parametrize("radius, capped", [(0.3, False), (0.45, False), (0.6, True)])
def test_capped_vertices_are_those_on_the_box_faces(radius, capped):
    """A sphere inside the unit box has none; one of radius 0.6 is cut by every face, its caps flat on them."""
    mesh = extract_mesh(lambda x: x.norm(dim=-1) - radius, res=48)
    n = capped_vertices(mesh)
    assert (n > 0) == capped, n
    if capped:
        v = np.asarray(mesh.vertices)
        assert np.isclose(np.abs(v).max(1), 0.5).sum() == n  # exactly the vertices on a face
        assert (np.abs(v) < 0.5 - 1e-9).all(1).sum() == len(v) - n


def test_an_export_at_a_level_beyond_the_box_warns(tmp_path, capsys):
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "sdf", "--out", str(run), *SDF_TINY, "--device", "cpu"]) == 0
    with pytest.warns(RwfWarning, match=r"the surface at level 1000 reaches the box the field was fitted in and is "
                                        r"capped flat on its faces \(\d+ of \d+ vertices\)"):
        assert cli.main(["export", "mesh", str(run), "--res", "16", "--level", "1000", "--out",
                         str(tmp_path / "far.ply"), "--quiet"]) == 0
    assert (tmp_path / "far.ply").is_file()
    assert torch.load(run / "checkpoint.pt", weights_only=True)  # (the run is untouched and loads)
